//! colink: sessions between applications on devices joined by Bluetooth, modelled on OpenHarmony's
//! `abilityConnectionManager`.
//!
//! This crate will host the public `Manager` API (sessions, events, messages, data, images, streams). Today it
//! contains the layers that API builds on:
//!
//! - [`engine`]: the sans-IO session engine — one [`engine::Connection`] state machine per device link doing the
//!   link handshake (version, identities, MTU, keep-alive, resume token, an authentication seam), multiplexed
//!   sessions (connect / accept / reject / disconnect), prioritised channels, acknowledged delivery with
//!   back-pressure, keep-alive and resume after link loss; plus [`engine::harness`], a deterministic two-device
//!   test harness in virtual time.
//! - [`driver`]: the tokio driver — a [`driver::Node`] per device runs one task per link over any
//!   `colink-ble` adapter (the simulator or BlueZ): it listens and advertises, dials peers found by their
//!   adverts, routes accepted transports by the caller's HELLO, and re-dials lost links so sessions resume.
//!
//! It never touches a radio directly, and does not (yet) contain the `Manager`, images or media streams. The
//! session protocol is specified in `docs/session-protocol.md`, the framing below it in `docs/protocol.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod driver;
pub mod engine;
mod manager;

pub use api::{Caller, Error, ErrorCode, Event, EventKind, PeerInfo, SessionId};
pub use manager::{CollaborationRequest, Incoming, Manager, ManagerBuilder};
