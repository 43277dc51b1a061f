//! colink-proto: the sans-IO session engine of colink, one [`Connection`] per device link.
//!
//! **What it is.** A pure state machine in quinn-proto's shape: bytes and `now` go in, events, frames to send
//! and the next deadline come out. It speaks colink's session protocol (specified in `docs/sessions.md`) on top
//! of `colink-frame`'s framing: the link handshake (versions, identities, frame size, keep-alive, resume,
//! an authentication seam), sessions multiplexed on one link, priorities, acknowledged in-order delivery,
//! retransmission, keep-alive and resume after a lost transport. [`secure`] authenticates a fresh transport
//! with a Noise handshake (device keys, account membership, pairing by a short code) before any HELLO, and a
//! [`Connection`] attached with [`Connection::attach_secured`] seals every link and lane message
//! (docs/security.md). With the `harness` feature it also offers `harness`, a deterministic two-device test
//! harness in virtual time.
//!
//! **What it is not.** It does no I/O and depends on no async runtime, clock or global RNG: the compiler
//! enforces that, since this crate depends only on `colink-frame`, `bytes`, `thiserror`, `tracing` and the
//! cryptography (`snow`, whose randomness comes from the caller's [`Entropy`], and `chacha20poly1305`). Radios,
//! dialling and the tokio driver live in `colink` (over `colink-ble`); the `Manager` API, argument validation
//! by the reference's rules, images and media encoding live in `colink` and `colink-media`. Nothing here
//! reaches upward into those crates.
//!
//! # Driving a `Connection`
//!
//! Its driver (a tokio task over a `colink-ble` link in `colink`, or the harness's `Pair` in tests) loops:
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
//! acknowledged fragment.
//!
//! What the engine deliberately leaves to its callers: time, randomness ([`Entropy`]), deciding whether an app
//! exists (the responder's caller answers [`Event::IncomingConnect`]), radio state (`LOCAL/PEER_WIFI_NOT_OPEN`
//! come from the driver's dial result), images and media encoding, and the `Manager` API.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod ack;
mod auth;
mod config;
mod connection;
mod error;
mod event;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
mod identify;
mod keepalive;
mod numbering;
mod receiver;
mod resume;
mod retransmit;
mod scheduler;
pub mod secure;
mod types;
mod wire;

pub use auth::{Authenticator, NoAuth};
pub use config::{
    Config, DEFAULT_RECEIVE_BUFFER, DEFAULT_REORDER_BUFFER, Entropy, MAX_DEVICE_NAME, MESSAGE_CHARGE,
    SUPPORTED_VERSIONS, SeededEntropy, Transport,
};
pub use connection::{AttachError, Connection, LinkState, SessionState, Stats};
pub use error::{AuthError, CloseCode, ConnectError, LinkError, ProtocolError, SendError, SendFailure, SessionError};
pub use event::Event;
pub use identify::{CallingDevice, IDENTIFY_LIMIT, Identify, IdentifyError};
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
        for version in super::SUPPORTED_VERSIONS {
            let _ = super::wire::decode_ack(payload, version);
        }
    }
}
