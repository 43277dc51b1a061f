//! Who is calling: the app's identity, whether it is a system app, and its granted permissions.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::error::Error;

/// A permission an app can be granted (OpenHarmony's `ohos.permission.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Permission {
    /// `ohos.permission.DISTRIBUTED_DATASYNC`: exchange data with other devices. Every session operation needs
    /// it; without it they fail with `201`.
    DistributedDatasync,
}

impl Permission {
    /// Every permission colink knows.
    pub const ALL: [Self; 1] = [Self::DistributedDatasync];

    /// The permission's OpenHarmony name (`"ohos.permission.DISTRIBUTED_DATASYNC"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DistributedDatasync => "ohos.permission.DISTRIBUTED_DATASYNC",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    /// The permission named `s` (its full OpenHarmony name); an unknown name is a 401 naming `permission`.
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::invalid_arg("permission", format_args!("unknown permission {s:?}")))
    }
}

/// The calling application (the reference's `context` argument plus what OpenHarmony's access-token service
/// knows about it): which app it is, whether it is a system app, and which permissions it holds. Given when a
/// session is created, so `201` and `202` are real checks against it.
///
/// ```
/// use colink::api::{Caller, Permission};
///
/// let app = Caller::new("com.example.notes", "entry", "EntryAbility").grant(Permission::DistributedDatasync);
/// assert!(app.check_permission(Permission::DistributedDatasync).is_ok());
/// assert_eq!(app.check_system("send_image").unwrap_err().code(), 202);
/// assert!(app.clone().system(true).check_system("send_image").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    bundle_name: String,
    module_name: String,
    ability_name: String,
    system: bool,
    permissions: BTreeSet<Permission>,
}

impl Caller {
    /// A third-party (non-system) app with no permissions granted yet.
    pub fn new(
        bundle_name: impl Into<String>,
        module_name: impl Into<String>,
        ability_name: impl Into<String>,
    ) -> Self {
        Self {
            bundle_name: bundle_name.into(),
            module_name: module_name.into(),
            ability_name: ability_name.into(),
            system: false,
            permissions: BTreeSet::new(),
        }
    }

    /// The same caller, marked as a system app (`true`) or not.
    #[must_use]
    pub fn system(mut self, system: bool) -> Self {
        self.system = system;
        self
    }

    /// The same caller with `permission` granted.
    #[must_use]
    pub fn grant(mut self, permission: Permission) -> Self {
        self.permissions.insert(permission);
        self
    }

    /// The same caller with `permission` revoked.
    #[must_use]
    pub fn revoke(mut self, permission: Permission) -> Self {
        self.permissions.remove(&permission);
        self
    }

    /// The app's bundle name.
    pub fn bundle_name(&self) -> &str {
        &self.bundle_name
    }

    /// The module within the bundle.
    pub fn module_name(&self) -> &str {
        &self.module_name
    }

    /// The ability (component) that calls.
    pub fn ability_name(&self) -> &str {
        &self.ability_name
    }

    /// Whether the caller is a system app.
    pub fn is_system(&self) -> bool {
        self.system
    }

    /// Whether `permission` is granted.
    pub fn has_permission(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The granted permissions.
    pub fn permissions(&self) -> impl Iterator<Item = Permission> + '_ {
        self.permissions.iter().copied()
    }

    /// `Ok` for a system app; `202` naming `what` (the operation, option or event) otherwise.
    pub fn check_system(&self, what: &str) -> Result<(), Error> {
        if self.system { Ok(()) } else { Err(Error::not_system_app(what)) }
    }

    /// `Ok` when `permission` is granted; `201` otherwise.
    pub fn check_permission(&self, permission: Permission) -> Result<(), Error> {
        self.check_permission_for("this operation", permission)
    }

    /// `Ok` when `permission` is granted; `201` naming `operation` otherwise.
    pub fn check_permission_for(&self, operation: &str, permission: Permission) -> Result<(), Error> {
        if self.has_permission(permission) { Ok(()) } else { Err(Error::permission_denied(operation, permission)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_string_form() {
        assert_eq!(Permission::DistributedDatasync.to_string(), "ohos.permission.DISTRIBUTED_DATASYNC");
        assert_eq!("ohos.permission.DISTRIBUTED_DATASYNC".parse::<Permission>(), Ok(Permission::DistributedDatasync));
        for bad in ["", "DISTRIBUTED_DATASYNC", "ohos.permission.distributed_datasync", "ohos.permission.INTERNET"] {
            let e = bad.parse::<Permission>().unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("permission")));
        }
    }

    #[test]
    fn missing_permission_is_201() {
        let c = Caller::new("b", "m", "a");
        let e = c.check_permission_for("connect", Permission::DistributedDatasync).unwrap_err();
        assert_eq!(e.code(), 201);
        assert!(e.message().contains("connect") && e.message().contains("DISTRIBUTED_DATASYNC"), "{e}");
        let c = c.grant(Permission::DistributedDatasync);
        assert!(c.has_permission(Permission::DistributedDatasync));
        assert_eq!(c.check_permission(Permission::DistributedDatasync), Ok(()));
        assert_eq!(c.permissions().collect::<Vec<_>>(), [Permission::DistributedDatasync]);
        let c = c.revoke(Permission::DistributedDatasync);
        assert_eq!(c.check_permission(Permission::DistributedDatasync).unwrap_err().code(), 201);
    }

    #[test]
    fn non_system_caller_is_202() {
        let c = Caller::new("b", "m", "a");
        assert!(!c.is_system());
        let e = c.check_system("create_stream").unwrap_err();
        assert_eq!(e.code(), 202);
        assert!(e.message().contains("create_stream"), "{e}");
        assert_eq!(c.system(true).check_system("create_stream"), Ok(()));
    }

    #[test]
    fn identity_is_kept() {
        let c = Caller::new("com.example", "entry", "Main");
        assert_eq!((c.bundle_name(), c.module_name(), c.ability_name()), ("com.example", "entry", "Main"));
    }
}
