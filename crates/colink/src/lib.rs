//! colink: sessions between applications on devices joined by Bluetooth, modelled on OpenHarmony's
//! `abilityConnectionManager`.
//!
//! - [`Manager`] is the public API: create a session from a local app ([`Caller`]) to an app on a nearby
//!   device ([`PeerInfo`]), `connect` it (the peer app answers through [`Manager::incoming`]), exchange
//!   messages and data, and follow what happens with `on`/`off` listeners or `events()` streams. Operations
//!   validate their arguments by the reference's rules and fail with its numeric codes ([`Error`]).
//! - [`api`] holds the building blocks: typed ids, the reference's records and enums, errors, callers and
//!   permissions, validation, event routing.
//! - [`driver`] runs the engine over any `colink-ble` adapter (the simulator or BlueZ): one
//!   [`driver::Node`] per device, one task per link, dialling by advert, routing accepted transports by the
//!   caller's HELLO, re-dialling lost links so sessions resume.
//! - [`engine`] is the sans-IO session engine: one [`engine::Connection`] per device link (handshake,
//!   multiplexed sessions, priorities, acknowledged delivery, keep-alive, resume), with
//!   [`engine::harness`], a deterministic two-device test harness in virtual time.
//!
//! ```no_run
//! # async fn demo(adapter: colink_sim::SimAdapter) -> Result<(), colink::Error> {
//! use colink::api::{ConnectOptions, Permission};
//! use colink::{Caller, Manager, PeerInfo};
//!
//! let manager = Manager::builder().adapter(adapter).build().await?;
//! let app = Caller::new("com.example.notes", "entry", "EntryAbility").grant(Permission::DistributedDatasync);
//! let peer = PeerInfo::new("<the peer's device id>", "com.example.notes", "entry", "EntryAbility");
//! let session = manager.create_session(&app, "notes", peer, ConnectOptions::default())?;
//! if manager.connect(session).await?.is_connected {
//!     manager.send_message(session, "hello").await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Not here yet: images and media streams (their validation is in [`api`]). The session protocol is specified
//! in `docs/sessions.md`, the framing below it in `docs/protocol.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod driver;
pub mod engine;
mod manager;

pub use api::{Caller, Error, ErrorCode, Event, EventKind, PeerInfo, SessionId};
pub use manager::{CollaborationRequest, Incoming, Manager, ManagerBuilder};
