//! The hub protocol's messages: one JSON object per line over a Unix stream socket.

use colink_ble::{
    AdapterError, Advert, CloseReason, ConnectError, IoCapability, LinkError, LinkMode, LinkParams, PairingError,
    Passkey, PeerAddress, Port, ScanEvent, ScanFilter,
};
use serde::{Deserialize, Serialize};

/// Client → hub.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum ClientMsg {
    /// First message: join the air as a device.
    Hello { name: String, x: f64, y: f64 },
    /// A request; the hub answers with [`HubMsg::Reply`] carrying the same id.
    Req { id: u64, req: Request },
    /// The answer to a [`HubMsg::Agent`] call.
    AgentReply { id: u64, ok: bool, passkey: Option<Passkey> },
}

/// Requests, mirroring the `Adapter`, `Listener` and `Link` methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    IsPowered,
    SetPowered {
        on: bool,
    },
    MoveTo {
        x: f64,
        y: f64,
    },
    Advertise {
        advert: Advert,
    },
    StopAdvert {
        handle: u64,
    },
    /// `scan` is chosen by the client so events can never precede the registration.
    Scan {
        scan: u64,
        filter: ScanFilter,
    },
    StopScan {
        scan: u64,
    },
    Listen {
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    },
    Unlisten {
        listener: u64,
    },
    Accept {
        listener: u64,
    },
    Connect {
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    },
    /// `data` is hex.
    Send {
        link: u64,
        data: String,
    },
    Recv {
        link: u64,
    },
    /// Answered once the link's send queue holds at most `max` bytes not yet on the air.
    DrainTo {
        link: u64,
        max: usize,
    },
    Close {
        link: u64,
    },
    Closed {
        link: u64,
    },
    Release {
        link: u64,
    },
    /// `agent`: the client's agent id for peer-initiated pairings, or none.
    SetAgent {
        agent: Option<(u64, IoCapability)>,
    },
    Pair {
        peer: PeerAddress,
        agent: u64,
        cap: IoCapability,
    },
}

/// Hub → client.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum HubMsg {
    Welcome {
        address: PeerAddress,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
    Scan {
        scan: u64,
        event: ScanEvent,
    },
    ScanEnded {
        scan: u64,
    },
    /// Call agent `agent` of the client; answer with [`ClientMsg::AgentReply`] and this `id`.
    Agent {
        id: u64,
        agent: u64,
        call: AgentCall,
    },
}

/// A successful or failed answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub(crate) enum Reply {
    Ok,
    Bool { value: bool },
    Handle { handle: u64 },
    Listening { listener: u64, port: Port },
    Link { link: u64, peer: PeerAddress, mode: LinkMode, params: LinkParams },
    Data { data: String },
    Reason { reason: CloseReason },
    Err { error: WireError },
}

/// An agent callback.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub(crate) enum AgentCall {
    ConfirmJustWorks { peer: PeerAddress },
    ConfirmPasskey { peer: PeerAddress, passkey: Passkey },
    RequestPasskey { peer: PeerAddress },
    DisplayPasskey { peer: PeerAddress, passkey: Passkey },
}

/// Every error of the `colink-ble` operations, flattened for the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub(crate) enum WireError {
    PoweredOff,
    TooManyLinks,
    PeerBusy,
    Refused,
    Timeout,
    AuthenticationRequired,
    PortInUse {
        port: Port,
    },
    NoFreePort,
    Unsupported {
        what: String,
    },
    Gone,
    Closed {
        reason: CloseReason,
    },
    SduTooLarge {
        len: usize,
        mtu: u16,
    },
    Rejected {
        remote: bool,
    },
    AuthenticationFailed,
    PeerUnreachable,
    InProgress,
    /// A per-client bound of the hub (`what`: "scans", "adverts", "listeners", "links") is reached.
    Limit {
        what: String,
        max: usize,
    },
    Other {
        message: String,
    },
}

impl From<AdapterError> for WireError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::PoweredOff => Self::PoweredOff,
            AdapterError::PortInUse(port) => Self::PortInUse { port },
            AdapterError::NoFreePort => Self::NoFreePort,
            AdapterError::Unsupported(w) => Self::Unsupported { what: w.into() },
            AdapterError::Gone => Self::Gone,
            other => Self::Other { message: other.to_string() },
        }
    }
}

impl From<ConnectError> for WireError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::PoweredOff => Self::PoweredOff,
            ConnectError::TooManyLinks => Self::TooManyLinks,
            ConnectError::PeerBusy => Self::PeerBusy,
            ConnectError::Refused => Self::Refused,
            ConnectError::Timeout => Self::Timeout,
            ConnectError::AuthenticationRequired => Self::AuthenticationRequired,
            ConnectError::Unsupported(w) => Self::Unsupported { what: w.into() },
            ConnectError::Gone => Self::Gone,
            other => Self::Other { message: other.to_string() },
        }
    }
}

impl From<LinkError> for WireError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Closed(reason) => Self::Closed { reason },
            LinkError::SduTooLarge { len, mtu } => Self::SduTooLarge { len, mtu },
            other => Self::Other { message: other.to_string() },
        }
    }
}

impl From<PairingError> for WireError {
    fn from(e: PairingError) -> Self {
        match e {
            PairingError::PoweredOff => Self::PoweredOff,
            PairingError::PeerUnreachable => Self::PeerUnreachable,
            PairingError::Rejected { side } => Self::Rejected { remote: side == "remote" },
            PairingError::AuthenticationFailed => Self::AuthenticationFailed,
            PairingError::Timeout => Self::Timeout,
            PairingError::InProgress => Self::InProgress,
            other => Self::Other { message: other.to_string() },
        }
    }
}

impl WireError {
    pub(crate) fn adapter(self) -> AdapterError {
        match self {
            Self::PoweredOff => AdapterError::PoweredOff,
            Self::PortInUse { port } => AdapterError::PortInUse(port),
            Self::NoFreePort => AdapterError::NoFreePort,
            Self::Gone => AdapterError::Gone,
            Self::Unsupported { what } => AdapterError::Backend(format!("unsupported: {what}")),
            Self::Limit { what, max } => AdapterError::Backend(limit_message(&what, max)),
            other => AdapterError::Backend(format!("{other:?}")),
        }
    }

    pub(crate) fn connect(self) -> ConnectError {
        match self {
            Self::PoweredOff => ConnectError::PoweredOff,
            Self::TooManyLinks => ConnectError::TooManyLinks,
            Self::PeerBusy => ConnectError::PeerBusy,
            Self::Refused => ConnectError::Refused,
            Self::Timeout => ConnectError::Timeout,
            Self::AuthenticationRequired => ConnectError::AuthenticationRequired,
            Self::Gone => ConnectError::Gone,
            Self::Limit { what, .. } if what == "links" => ConnectError::TooManyLinks,
            other => ConnectError::Backend(format!("{other:?}")),
        }
    }

    pub(crate) fn link(self) -> LinkError {
        match self {
            Self::Closed { reason } => LinkError::Closed(reason),
            Self::SduTooLarge { len, mtu } => LinkError::SduTooLarge { len, mtu },
            Self::Gone => LinkError::Closed(CloseReason::Other("simulator hub is gone".into())),
            other => LinkError::Backend(format!("{other:?}")),
        }
    }

    pub(crate) fn pairing(self) -> PairingError {
        match self {
            Self::PoweredOff => PairingError::PoweredOff,
            Self::PeerUnreachable => PairingError::PeerUnreachable,
            Self::Rejected { remote } => PairingError::Rejected { side: if remote { "remote" } else { "local" } },
            Self::AuthenticationFailed => PairingError::AuthenticationFailed,
            Self::Timeout => PairingError::Timeout,
            Self::InProgress => PairingError::InProgress,
            other => PairingError::Backend(format!("{other:?}")),
        }
    }
}

/// The text of a [`WireError::Limit`] as a client's caller sees it.
fn limit_message(what: &str, max: usize) -> String {
    format!("simulator hub limit: a client may hold at most {max} {what}")
}

/// Lower-case hex of `data`.
pub(crate) fn to_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hex; `None` on odd length or a non-hex digit.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() & 1 == 1 {
        return None;
    }
    let nib = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    b.chunks_exact(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&data)), Some(data));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn messages_are_one_json_line() {
        let m = ClientMsg::Req { id: 7, req: Request::Send { link: 3, data: to_hex(b"hi") } };
        let line = serde_json::to_string(&m).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(line, r#"{"t":"req","id":7,"req":{"op":"send","link":3,"data":"6869"}}"#);
    }
}
