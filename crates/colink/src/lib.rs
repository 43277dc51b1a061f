//! colink: sessions between applications on devices joined by Bluetooth, modelled on OpenHarmony's
//! `abilityConnectionManager`.
//!
//! This crate will host the public `Manager` API (sessions, events, messages, data, images, streams) and the
//! tokio driver that runs one link per device pair. Today it contains the layer those build on:
//!
//! - [`engine`]: the sans-IO session engine — one [`engine::Connection`] state machine per device link doing the
//!   link handshake (version, identities, MTU, keep-alive, resume token, an authentication seam), multiplexed
//!   sessions (connect / accept / reject / disconnect), prioritised channels, acknowledged delivery with
//!   back-pressure, keep-alive and resume after link loss; plus [`engine::harness`], a deterministic two-device
//!   test harness in virtual time.
//!
//! It deliberately does not (yet) contain the async driver, the `Manager`, images or media streams, and it never
//! touches a radio: the driver moves the engine's frames over a `colink-ble` link. The session protocol is
//! specified in `docs/session-protocol.md`, the framing below it in `docs/protocol.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod engine;
