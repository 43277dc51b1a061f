//! colink: sessions between applications on devices joined by Bluetooth, modelled on OpenHarmony's
//! `abilityConnectionManager`.
//!
//! - [`Manager`] is the public API: create a session from a local app ([`Caller`]) to an app on a nearby
//!   device ([`PeerInfo`]), `connect` it (the peer app answers through [`Manager::incoming`]), exchange
//!   messages and data, and follow what happens with `on`/`off` listeners or `events()` streams. Operations
//!   validate their arguments by the reference's rules and fail with its numeric codes ([`Error`]).
//! - [`api`] holds the building blocks: typed ids, the reference's records and enums, errors, callers and
//!   permissions, validation, event routing.
//! - [`driver`] runs the session engine (`colink-proto`'s `Connection`) over any `colink-ble` adapter (the
//!   simulator or BlueZ): one [`driver::Node`] per device, one task per link, dialling by advert, routing
//!   accepted transports by the caller's HELLO, re-dialling lost links so sessions resume. Its interface speaks
//!   the engine's types ([`colink_proto::Event`], [`colink_proto::SessionKey`], ...); use `colink-proto`
//!   directly for those, or stay with [`Manager`].
//!
//! What this crate is not: the protocol itself (handshake, acknowledgements, priorities, resume) is
//! `colink-proto`, a sans-IO crate with no async dependency; framing is `colink-frame`; radios are `colink-ble`;
//! pixel and H.264 codecs are `colink-media`. This crate joins them and adds the tokio runtime.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), colink::Error> {
//! use colink::api::{ConnectOptions, Permission};
//! use colink::{Caller, Event, Manager, PeerInfo};
//! use colink_sim::{Position, SimAir};
//! use futures::StreamExt;
//!
//! // Two devices on a simulated air (on Linux, `colink_ble::bluez::Bluez` gives real adapters).
//! let air = SimAir::new(1);
//! let alice = Manager::builder().adapter(air.adapter("alice", Position::new(0.0, 0.0))).build().await?;
//! let bob = Manager::builder().adapter(air.adapter("bob", Position::new(2.0, 0.0))).build().await?;
//! let notes = Caller::new("com.example.notes", "entry", "EntryAbility").grant(Permission::DistributedDatasync);
//!
//! // Bob's notes app waits for collaboration requests and accepts them.
//! let mut requests = bob.incoming(&notes)?;
//! let (bob2, notes2) = (bob.clone(), notes.clone());
//! let responder = tokio::spawn(async move {
//!     let request = requests.next().await.expect("a request");
//!     let session = bob2.create_session(&notes2, "notes", request.peer.clone(), ConnectOptions::default())?;
//!     let mut events = bob2.events(session)?;
//!     bob2.accept_connect(session, &request.token).await?;
//!     assert_eq!(events.next().await, Some(Event::Connect { session_id: session }));
//!     Ok::<_, colink::Error>(events.next().await)
//! });
//!
//! // Alice's notes app connects to Bob's and sends a message; the call resolves once Bob has it.
//! let bob_notes = PeerInfo::new(bob.device_id().to_string(), "com.example.notes", "entry", "EntryAbility");
//! let session = alice.create_session(&notes, "notes", bob_notes, ConnectOptions::default())?;
//! assert!(alice.connect(session).await?.is_connected);
//! alice.send_message(session, "hello").await?;
//! let received = responder.await.expect("responder")?;
//! assert!(matches!(received, Some(Event::ReceiveMessage { msg, .. }) if msg == "hello"));
//! # Ok(()) }
//! ```
//!
//! - `media` (feature `media`) carries images (JPEG) and live H.264 streams for system apps: `send_image`,
//!   `create_stream`, producer and consumer surfaces, congestion control.
//!
//! # Features
//!
//! - `media` (default): images and streams; pulls `colink-media` (openh264's C++ source, `image`). Without it
//!   colink carries messages and data only, and drops images and stream messages a peer sends.
//! - `bluez` (default): colink-ble's BlueZ backend (`colink_ble::bluez`; bluer, libdbus). Without it, bring an
//!   adapter of your own (the simulator, or another `colink_ble::Adapter`).
//!
//! `cargo build -p colink --no-default-features` needs neither a C++ compiler nor libdbus.
//!
//! The session protocol is specified in `docs/sessions.md`, the framing below it in `docs/protocol.md`, images
//! and streams in `docs/media.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod driver;
pub mod files;
pub mod image_verdict;
mod manager;
#[cfg(feature = "media")]
pub mod media;
pub mod trust;

/// Locks `m`, taking over a poisoned lock: every mutex in this crate guards state that no user code or
/// fallible step runs under, so a panic elsewhere cannot leave it half-updated.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use api::{Caller, Error, ErrorCode, ErrorKind, Event, EventKind, PeerInfo, SessionId, SessionState};
pub use manager::{CollaborationRequest, INCOMING_QUEUE, Incoming, Manager, ManagerBuilder};
#[cfg(feature = "media")]
pub use manager::{DEFAULT_IMAGE_QUALITY, IMAGE_DECODES, IMAGE_QUEUE, IMAGE_VERDICT_TIMEOUT};
