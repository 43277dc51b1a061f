//! What the engine tells its driver.

use bytes::Bytes;

use super::error::{LinkError, SendFailure};
use super::types::{ChannelKind, ConnectErrorCode, ConnectOptions, DisconnectReason, PeerInfo, SendId, SessionKey};

/// Something that happened on the link, taken with [`Connection::poll_event`](super::Connection::poll_event).
///
/// Not `colink::Event`: this is the engine's per-link event (link up, lost and resumed, send ids, raw payloads
/// by channel kind, engine session keys); colink's `Manager` turns these into the reference's per-session
/// events that apps see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // each event is moved once to its consumer; boxing would only add allocations
pub enum Event {
    /// The handshake completed on a fresh link (no earlier state resumed).
    LinkUp {
        /// The peer's device identity.
        peer_device: String,
        /// The agreed session-protocol version.
        version: u8,
        /// The name the peer gave itself (HELLO extension 2), if any: a peer string, escape it before printing.
        peer_name: Option<String>,
    },
    /// The transport was lost; sessions are reconnecting. The initiator should re-dial (with back-off) and
    /// [`attach`](super::Connection::attach) the new transport before `grace_deadline`.
    LinkLost {
        /// Whether this side is the one that re-dials.
        redial: bool,
    },
    /// A new transport resumed the link: sessions continue where they stopped.
    LinkResumed,
    /// The link ended for good; every session was disconnected first. The driver should drop the transport.
    Closed(LinkError),
    /// The peer wants a session with a local app: answer with
    /// [`accept`](super::Connection::accept) or [`reject`](super::Connection::reject) and this single-use token.
    IncomingConnect {
        /// The session (already allocated by the initiator).
        session: SessionKey,
        /// The single-use token identifying this request.
        token: String,
        /// The initiating app.
        from: PeerInfo,
        /// The local app it addresses.
        to: PeerInfo,
        /// What the initiator asks for.
        options: ConnectOptions,
    },
    /// An unanswered incoming request was withdrawn by the initiator or expired; its token is void.
    IncomingCancelled {
        /// The session.
        session: SessionKey,
        /// The void token.
        token: String,
    },
    /// The session is open: the peer accepted (initiator) or this side accepted (responder).
    Connected {
        /// The session.
        session: SessionKey,
    },
    /// An outgoing connect failed.
    ConnectFailed {
        /// The session.
        session: SessionKey,
        /// The reference's error code.
        code: ConnectErrorCode,
        /// The peer's reason, when it rejected.
        reason: Option<String>,
    },
    /// The session ended.
    Disconnected {
        /// The session.
        session: SessionKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// A whole payload arrived, in order, exactly once. Its bytes count against the channel's receive
    /// credit (version 2, docs/sessions.md §4.5) until the driver reports the app read them with
    /// [`Connection::consumed`](super::Connection::consumed); a driver that never does stops the peer's sends
    /// on this channel once [`Config::receive_buffer`](super::Config::receive_buffer) is full.
    Received {
        /// The session.
        session: SessionKey,
        /// Its channel.
        kind: ChannelKind,
        /// The bytes.
        payload: Bytes,
    },
    /// The peer holds the whole payload of this send.
    SendCompleted {
        /// The session.
        session: SessionKey,
        /// The send.
        id: SendId,
    },
    /// This send will never complete.
    SendFailed {
        /// The session.
        session: SessionKey,
        /// The send.
        id: SendId,
        /// Why.
        error: SendFailure,
    },
    /// A channel that answered [`SendError::WouldBlock`](super::SendError::WouldBlock) has room again.
    Writable {
        /// The session.
        session: SessionKey,
        /// The channel.
        kind: ChannelKind,
    },
}
