//! The reference's record types in Rust shape: `PeerInfo`, `ConnectOptions`, `ConnectResult`,
//! `CollaborateEventInfo`.

use colink_proto as engine;

use super::enums::{CollaborateEventType, ConnectErrorCode};

pub use colink_proto::ConnectOptions;

/// An application endpoint on a device (the reference's `PeerInfo`): given to `create_session`, returned by
/// `peer_info` (`getPeerInfoById`) and carried by incoming collaboration requests. The only `PeerInfo` an app
/// sees; the engine's wire form (`colink_proto::PeerInfo`, an empty service name for "the session's") stays
/// inside colink.
///
/// Every field must be shorter than 1024 bytes of UTF-8; the four names must not be empty (see
/// [`validate::peer_info`](super::validate::peer_info)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerInfo {
    /// `deviceId`: the peer device's stable identity (not its rotating Bluetooth address).
    pub device_id: String,
    /// `bundleName`: the application's bundle.
    pub bundle_name: String,
    /// `moduleName`: the module within the bundle.
    pub module_name: String,
    /// `abilityName`: the ability (component) within the module.
    pub ability_name: String,
    /// `serviceName` (optional): the service on the peer; `None` falls back to the session's service name.
    pub service_name: Option<String>,
}

impl PeerInfo {
    /// A peer with the four required names and no service name of its own.
    pub fn new(
        device_id: impl Into<String>,
        bundle_name: impl Into<String>,
        module_name: impl Into<String>,
        ability_name: impl Into<String>,
    ) -> Self {
        Self {
            device_id: device_id.into(),
            bundle_name: bundle_name.into(),
            module_name: module_name.into(),
            ability_name: ability_name.into(),
            service_name: None,
        }
    }

    /// The same peer with `service_name` set.
    #[must_use]
    pub fn with_service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = Some(service_name.into());
        self
    }

    /// The engine's (wire) form, with the service name resolved: `self.service_name`, or `session_service_name`
    /// when `None`.
    pub(crate) fn to_engine(&self, session_service_name: &str) -> engine::PeerInfo {
        engine::PeerInfo {
            device_id: self.device_id.clone(),
            bundle_name: self.bundle_name.clone(),
            module_name: self.module_name.clone(),
            ability_name: self.ability_name.clone(),
            service_name: self.service_name.clone().unwrap_or_else(|| session_service_name.to_owned()),
        }
    }

    /// The API form of a peer the engine reported; the engine's empty service name ("the session's") becomes
    /// `None`.
    pub(crate) fn from_engine(p: engine::PeerInfo) -> Self {
        Self {
            device_id: p.device_id,
            bundle_name: p.bundle_name,
            module_name: p.module_name,
            ability_name: p.ability_name,
            service_name: (!p.service_name.is_empty()).then_some(p.service_name),
        }
    }
}

/// What `connect` resolves to (the reference's `ConnectResult`). A failed connect is a result, not an error:
/// e.g. an absent peer gives `is_connected: false` with [`ConnectErrorCode::SystemInternalError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectResult {
    /// `isConnected`: whether the session is now connected.
    pub is_connected: bool,
    /// `errorCode`: why not, when `is_connected` is false.
    pub error_code: Option<ConnectErrorCode>,
    /// `reason`: the peer app's reason, when it rejected.
    pub reason: Option<String>,
    /// colink's addition: when the secure handshake refused the link (not in the same account, a stranger
    /// refused, the peer's user said no, not the device dialled, ...), exactly why. docs/security.md.
    pub trust: Option<colink_proto::secure::SecureError>,
}

impl ConnectResult {
    /// A successful connect.
    pub const fn connected() -> Self {
        Self { is_connected: true, error_code: None, reason: None, trust: None }
    }

    /// A failed connect with `code` and, when the peer gave one, its `reason`.
    pub const fn failed(code: ConnectErrorCode, reason: Option<String>) -> Self {
        Self { is_connected: false, error_code: Some(code), reason, trust: None }
    }
}

/// What a `collaborateEvent` listener receives (the reference's `CollaborateEventInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollaborateEventInfo {
    /// `eventType`: what happened.
    pub event_type: CollaborateEventType,
    /// `eventMsg` (optional): details, e.g. which send failed and why.
    pub event_msg: Option<String>,
}

impl CollaborateEventInfo {
    /// An event of `event_type` with an optional message.
    pub fn new(event_type: CollaborateEventType, event_msg: Option<String>) -> Self {
        Self { event_type, event_msg }
    }
}

/// Where a session stands, from [`Manager::session_state`](crate::Manager::session_state) (colink; the
/// reference has no such query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// Created, not connected (or disconnected again): `connect` or `accept_connect` may be called.
    Idle,
    /// A `connect` or `accept_connect` is under way.
    Connecting,
    /// Connected: sends go out and payloads arrive.
    Connected,
    /// Connected, but the link was lost and is being re-established within the grace period: sends are
    /// accepted and wait; nothing is lost if the link comes back (`reconnected`), otherwise the session ends
    /// with `disconnect`.
    Reconnecting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_info_service_name_falls_back_to_the_session_s() {
        let p = PeerInfo::new("dev", "b", "m", "a");
        assert_eq!(p.to_engine("svc").service_name, "svc");
        let p = p.with_service_name("own");
        assert_eq!(p.to_engine("svc").service_name, "own");
    }

    #[test]
    fn peer_info_converts_both_ways() {
        let p = PeerInfo::new("dev", "b", "m", "a");
        let e = p.to_engine("");
        assert_eq!(e.service_name, "");
        assert_eq!(PeerInfo::from_engine(e), p);
        let p = p.with_service_name("svc");
        assert_eq!(PeerInfo::from_engine(p.to_engine("")), p);
    }

    #[test]
    fn connect_result_shapes() {
        assert_eq!(
            ConnectResult::connected(),
            ConnectResult { is_connected: true, error_code: None, reason: None, trust: None }
        );
        let r = ConnectResult::failed(ConnectErrorCode::PeerAppRejected, Some("busy".into()));
        assert!(!r.is_connected);
        assert_eq!(r.error_code, Some(ConnectErrorCode::PeerAppRejected));
        assert_eq!(r.reason.as_deref(), Some("busy"));
    }
}
