//! Typed errors: one enum per operation family.

use colink_frame::{FrameError, ReassemblyError};

use super::types::{ConnectErrorCode, DisconnectReason, SessionKey};

/// Why a link ended for good (carried by [`Event::Closed`](super::Event::Closed)).
///
/// Not `colink_ble::LinkError`, which is one transport operation failing: a session link outlives its
/// transports (it resumes on a new one) and ends only for the reasons here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The two sides share no session-protocol version. Both sides report it, each with its own view.
    #[error("no common protocol version: we speak {local_min}..={local_max}, the peer {peer_min}..={peer_max}")]
    VersionMismatch {
        /// Lowest version this side speaks.
        local_min: u8,
        /// Highest version this side speaks.
        local_max: u8,
        /// Lowest version the peer speaks.
        peer_min: u8,
        /// Highest version the peer speaks.
        peer_max: u8,
    },
    /// The peer broke the protocol; the link was closed.
    #[error("protocol violation by the peer: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the link and said why.
    #[error("closed by the peer ({code:?}): {message}")]
    PeerClosed {
        /// The peer's close code.
        code: CloseCode,
        /// The peer's explanation.
        message: String,
    },
    /// The handshake's authenticator refused the peer.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The link was lost and no resume completed within the grace period.
    #[error("link lost and not resumed within the grace period")]
    GraceExpired,
    /// This side closed the link.
    #[error("closed locally")]
    LocalClose,
}

/// The reason code of a CLOSE message (docs/sessions.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum CloseCode {
    /// An orderly close: the application or process is going away.
    Normal = 0,
    /// No common protocol version.
    VersionMismatch = 1,
    /// The receiver of the close broke the protocol.
    ProtocolError = 2,
    /// Authentication failed.
    AuthFailed = 3,
    /// Secure handshake: the peer is not in this device's account (docs/security.md).
    NotInAccount = 4,
    /// Secure handshake: a person refused the pairing.
    UserRefused = 5,
    /// Secure handshake: unknown devices are not admitted.
    UnknownDevice = 6,
    /// Secure handshake: this device does not pair with strangers now.
    PairingNotAccepted = 7,
    /// Secure handshake: the peer is not the device that was dialled.
    UnexpectedPeer = 8,
    /// Secure handshake: it (or its approval) took too long.
    HandshakeTimeout = 9,
    /// Secure handshake: the responder admits no new transport from this caller now (too many unauthenticated
    /// transports, or its address is backing off after failed handshakes); retry after a second or more.
    Busy = 10,
    /// A code this version does not know.
    Unknown = 255,
}

impl CloseCode {
    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::VersionMismatch,
            2 => Self::ProtocolError,
            3 => Self::AuthFailed,
            4 => Self::NotInAccount,
            5 => Self::UserRefused,
            6 => Self::UnknownDevice,
            7 => Self::PairingNotAccepted,
            8 => Self::UnexpectedPeer,
            9 => Self::HandshakeTimeout,
            10 => Self::Busy,
            _ => Self::Unknown,
        }
    }
}

/// How the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be decoded (fatal in stream mode; in packet mode bad SDUs are dropped instead).
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A message broke the reassembly limits (too large, too many partial messages, too many bytes buffered).
    #[error("reassembly limit exceeded: {0}")]
    Limit(#[from] ReassemblyError),
    /// A control, ack or keep-alive payload is malformed.
    #[error("malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// A frame names a session that was never opened.
    #[error("frame for unknown channel {channel}")]
    UnknownChannel {
        /// The wire channel.
        channel: u32,
    },
    /// A frame's kind does not match its channel.
    #[error("frame of kind {kind} on channel {channel}")]
    WrongKind {
        /// The frame kind's numeric value.
        kind: u8,
        /// The wire channel.
        channel: u32,
    },
    /// A session message that makes no sense in the session's state or names a session number of the wrong
    /// parity.
    #[error("unexpected {what} for session {session}")]
    UnexpectedSessionMessage {
        /// The message.
        what: &'static str,
        /// The session number.
        session: u32,
    },
    /// An acknowledgement for data never sent.
    #[error("acknowledgement beyond what was sent on channel {channel}")]
    BogusAck {
        /// The wire channel.
        channel: u32,
    },
    /// The peer sent a message beyond the receive credit it was granted (version 2, docs/sessions.md §4.5).
    #[error(
        "a message of {len} bytes on channel {channel} exceeds the receive credit ({unread} bytes unread, window {window})"
    )]
    CreditExceeded {
        /// The wire channel.
        channel: u32,
        /// Payload bytes its app had not read yet.
        unread: u64,
        /// The message's payload length.
        len: u64,
        /// The channel's receive window.
        window: u64,
    },
    /// On an authenticated link: a sealed message failed to verify, arrived unsealed, or replayed an old
    /// counter. Nothing of it was delivered.
    #[error("a sealed {what} failed to verify")]
    Integrity {
        /// What was being opened.
        what: &'static str,
    },
    /// A HELLO or CONNECT names another device than the link's peer.
    #[error("the peer claims to be device {claimed}")]
    Impersonation {
        /// The device id it claimed.
        claimed: String,
    },
}

/// An authenticator's refusal (see [`Authenticator`](super::Authenticator)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer could not prove it is allowed to connect.
    #[error("peer not authenticated: {0}")]
    Rejected(String),
    /// The peer's authentication message is malformed or out of order.
    #[error("malformed authentication message: {0}")]
    Malformed(String),
}

/// Why [`Connection::connect`](super::Connection::connect) refused to start a session.
///
/// Not `colink_ble::ConnectError`, which is a radio failing to dial a device: this is the engine refusing to
/// start a session on a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A session between the same two app endpoints is already connecting or connected.
    #[error("a session {0} between these endpoints already exists")]
    SessionExists(SessionKey),
    /// The link is closed for good.
    #[error("the link is closed")]
    LinkClosed,
    /// A string is longer than the protocol allows.
    #[error("{field} is longer than 1023 bytes")]
    TooLong {
        /// The offending field.
        field: &'static str,
    },
    /// Session numbers on this link are exhausted (after 2^29 sessions).
    #[error("no session numbers left on this link")]
    Exhausted,
}

impl ConnectError {
    /// The reference's connect error code for this failure.
    pub const fn code(&self) -> ConnectErrorCode {
        match self {
            Self::SessionExists(_) => ConnectErrorCode::ConnectedSessionExists,
            _ => ConnectErrorCode::SystemInternalError,
        }
    }
}

/// Why accept / reject / disconnect could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The collaboration token is unknown, expired or already used.
    #[error("unknown or already used collaboration token")]
    UnknownToken,
    /// No such session on this link.
    #[error("unknown session {0}")]
    UnknownSession(SessionKey),
    /// The reason string is longer than 1023 bytes.
    #[error("reason is longer than 1023 bytes")]
    TooLong,
}

/// Why [`Connection::send`](super::Connection::send) did not accept a payload.
///
/// Not `colink::driver::SendError`, which is the whole life of a send through the driver (refused here, or
/// accepted and then failed): this is only the engine's immediate refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel's send buffer is full: wait for [`Event::Writable`](super::Event::Writable) and retry.
    #[error("send buffer full")]
    WouldBlock,
    /// No such session.
    #[error("unknown session {0}")]
    UnknownSession(SessionKey),
    /// The session is not connected (still connecting).
    #[error("session {0} is not connected")]
    NotConnected(SessionKey),
    /// The payload exceeds what one message may carry (u32::MAX bytes, or the peer's limits for the kind).
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// This channel has used all 2^32 sequence numbers.
    #[error("sequence numbers exhausted on this channel")]
    Exhausted,
    /// The link's session-protocol version has no such lane (files need version 4).
    #[error("the peer speaks session protocol version {version}, which has no {kind:?} lane")]
    Unsupported {
        /// The lane asked for.
        kind: crate::ChannelKind,
        /// The version the link agreed.
        version: u8,
    },
}

/// Why an accepted send did not reach the peer (carried by [`Event::SendFailed`](super::Event::SendFailed);
/// the API layer reports it as a `SEND_FAILURE` collaborate event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The session ended before the peer had the whole payload.
    #[error("session disconnected ({0:?}) before delivery")]
    Disconnected(DisconnectReason),
}
