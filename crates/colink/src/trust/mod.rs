//! Who this device is and whom it trusts, kept on disk.
//!
//! - The **identity key**: a static X25519 key pair created on first use; the device id is derived from its
//!   public half, so a device proves its id in every link handshake instead of claiming it.
//! - The **account** ([`Account`]): a secret shared by one person's devices; devices holding the same one trust
//!   each other without asking. `colink account create` shows a join code, `colink account join CODE` takes it.
//! - The **trust store** ([`TrustStore`]): devices trusted so far (by account or by a confirmed pairing code),
//!   with their pinned keys, names and when they were last seen.
//!
//! Everything lives in one owner-only directory ([`StateDir`]): `0700`, files `0600`, written atomically. Files
//! that others may read are refused, not used. docs/security.md describes the threat model.

pub mod account;
mod files;
pub mod policy;
mod security;
pub mod store;

use std::path::{Path, PathBuf};

use colink_ble::DeviceId;

pub use account::{Account, JoinCodeError};
pub use policy::{StorePolicy, Strangers};
pub use security::Security;
pub use store::{KnownPeer, Pinned, TrustKind, TrustStore};

/// Why the identity, account or trust store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file or directory others can reach, or not a plain file: not used.
    #[error("{} {why}", path.display())]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A file that does not hold what it should.
    #[error("{} {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The device is known with another key; a person must remove it before it can be trusted again.
    #[error("device {device} is already trusted with a different key; remove it first (colink trust remove {device})")]
    KeyChanged {
        /// The device.
        device: DeviceId,
    },
    /// The trust store holds [`store::MAX_PEERS`] devices already.
    #[error("the trust store is full ({} devices); remove some first", store::MAX_PEERS)]
    Full,
}

impl TrustError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// `N` bytes from the operating system's random source (keys and account secrets).
pub(crate) fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(format!("no random source: {e}")))?;
    Ok(bytes)
}

/// Now, in seconds since the Unix epoch: the clock of the trust store's `added` and `last_seen`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The state directory holding the identity key (`identity.key`), the account (`account.key`) and the trust
/// store (`peers.json`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating it owner-only if needed) the state directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, TrustError> {
        let root = root.into();
        files::owner_only_dir(&root)?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The identity key's secret half, created (from the operating system's random source) on first use.
    pub fn identity_secret(&self) -> Result<[u8; 32], TrustError> {
        let path = self.root.join("identity.key");
        if let Some(text) = files::read_private(&path)? {
            return files::decode_key(&path, "identity key", &text);
        }
        let secret = random().map_err(|e| TrustError::io(&path, e))?;
        files::write_private(&path, &files::encode_key("identity key", &secret))?;
        tracing::info!(path = %path.display(), "created this device's identity key");
        Ok(secret)
    }

    /// The account this device belongs to, if any.
    pub fn account(&self) -> Result<Option<Account>, TrustError> {
        let path = self.account_path();
        match files::read_private(&path)? {
            Some(text) => Ok(Some(Account::from_secret(files::decode_key(&path, "account key", &text)?))),
            None => Ok(None),
        }
    }

    /// Makes `account` this device's account (replacing any other).
    pub fn set_account(&self, account: &Account) -> Result<(), TrustError> {
        files::write_private(&self.account_path(), &files::encode_key("account key", account.secret()))
    }

    /// Leaves the account: devices of it are no longer trusted by membership (those pinned stay pinned until
    /// removed).
    pub fn leave_account(&self) -> Result<(), TrustError> {
        files::remove(&self.account_path())
    }

    /// The trust store.
    pub fn trust_store(&self) -> Result<TrustStore, TrustError> {
        TrustStore::load(&self.root.join("peers.json"))
    }

    fn account_path(&self) -> PathBuf {
        self.root.join("account.key")
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn identity_is_created_once_and_kept_owner_only() {
        let root = std::env::temp_dir().join(format!("colink-statedir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = StateDir::open(&root).unwrap();
        let a = dir.identity_secret().unwrap();
        let b = StateDir::open(&root).unwrap().identity_secret().unwrap();
        assert_eq!(a, b);
        let mode = std::fs::metadata(root.join("identity.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.account().unwrap().is_none());
        let account = Account::from_secret([8; 16]);
        dir.set_account(&account).unwrap();
        assert_eq!(dir.account().unwrap(), Some(account));
        dir.leave_account().unwrap();
        assert!(dir.account().unwrap().is_none());
        dir.leave_account().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }
}
