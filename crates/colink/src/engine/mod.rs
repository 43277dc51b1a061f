//! The sans-IO session engine: one [`Connection`] per device link.
//!
//! A `Connection` is a pure state machine in quinn-proto's shape. Its driver (a tokio task over a
//! `colink-ble` link, or the [`harness::Pair`] in tests) loops:
//!
//! 1. [`Connection::handle_input`] with every received SDU (packet mode) or byte chunk (stream mode);
//! 2. [`Connection::poll_transmit`] whenever the link can take a frame, sending what it returns — one frame at a
//!    time, so the radio paces the engine and priorities stay sharp;
//! 3. [`Connection::poll_event`] until empty, turning events into API callbacks;
//! 4. [`Connection::handle_timeout`] at [`Connection::poll_timeout`].
//!
//! When the transport closes the driver calls [`Connection::link_lost`]; the side with
//! [`Role::Initiator`] re-dials and [`Connection::attach`]es the new transport (the responder attaches the
//! transport it accepts from the same device), and the handshake resumes every session from the last
//! acknowledged fragment. The wire protocol is specified in `docs/sessions.md`.
//!
//! What the engine deliberately leaves to its callers: time, randomness ([`Entropy`]), deciding whether an app
//! exists (the responder's caller answers [`Event::IncomingConnect`]), radio state (`LOCAL/PEER_WIFI_NOT_OPEN`
//! come from the driver's dial result), images and media encoding, and the `Manager` API.

mod auth;
mod config;
mod connection;
mod error;
mod event;
mod handshake;
pub mod harness;
mod identify;
mod lane;
mod receive;
mod session;
mod transmit;
mod types;
mod wire;

pub use auth::{Authenticator, NoAuth};
pub use config::{Config, Entropy, SUPPORTED_VERSIONS, SeededEntropy, Transport};
pub use connection::{Connection, LinkState, Stats};
pub use error::{AuthError, CloseCode, ConnectError, LinkError, ProtocolError, SendError, SendFailure, SessionError};
pub use event::Event;
pub use identify::{CallingDevice, IDENTIFY_LIMIT, Identify, IdentifyError};
pub use session::SessionState;
pub use types::{
    ChannelKind, ConnectErrorCode, ConnectOptions, DisconnectReason, MAX_STRING_LEN, PeerInfo, Role, SendId,
    SessionKey, StartOptions,
};

/// Decoder entry points for the cargo-fuzz targets (compiled only with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use bytes::Bytes;

    /// Runs every session-layer payload decoder on `payload`; none may panic.
    pub fn decode_payload(payload: &Bytes) {
        let _ = super::wire::HandshakeMsg::decode(payload);
        let _ = super::wire::ControlMsg::decode(payload);
        let _ = super::wire::decode_ack(payload);
    }
}
