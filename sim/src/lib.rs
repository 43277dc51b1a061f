//! `colink-sim`: a deterministic simulated Bluetooth air implementing the [`colink_ble`] traits.
//!
//! - [`SimAir`] is the shared air: devices at [`Position`]s, adverts and scans at realistic intervals, RSSI from
//!   a log-distance path-loss model plus seeded noise, connection set-up delay, a per-adapter link limit,
//!   pairing through both sides' [`Agent`](colink_ble::Agent)s, and links with an MTU, credit-based flow control
//!   and the data rate and latency of a [`PhyProfile`]; optionally a host kernel in between ([`KernelProfile`]:
//!   send buffer charged in skb truesize, TIOCOUTQ queue depth, CPU time per write), e.g. the VM rig's.
//! - [`SimAdapter`] implements [`colink_ble::Adapter`]; code written against the trait runs unchanged here and
//!   on BlueZ.
//! - [`Faults`] injects failures: drop a link, power a device off, move it out of range, stall a link, corrupt
//!   bytes in flight.
//! - [`hub`] puts one air behind a Unix socket so several OS processes share it ([`hub::HubServer`],
//!   [`hub::HubAdapter`]).
//!
//! The model itself is a sans-IO state machine (`model`) driven by time; [`SimAir`] drives it on tokio's clock.
//! Under a paused clock a scenario runs in virtual time and, for a given seed, produces the identical event log
//! ([`SimAir::event_log_hash`]).
//!
//! What it deliberately does not do: model the radio bit by bit (air time is computed per packet from the
//! profile), share air time between links of one adapter, model interference between devices, or know
//! anything about colink frames or sessions. See docs/simulator.md.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use bytes::Bytes;
//! use colink_ble::{Adapter, LinkMode, LinkParams, Port};
//! use colink_sim::{Position, SimAir};
//!
//! let air = SimAir::new(7);
//! let a = air.adapter("a", Position::new(0.0, 0.0));
//! let b = air.adapter("b", Position::new(2.0, 0.0));
//! let listener = b.listen(None, LinkMode::Packet, LinkParams::default()).await.unwrap();
//! let advert = colink_ble::Advert::new(colink_ble::DeviceId::from_bytes([2; 16]).short());
//! let _adv = b.advertise(advert).await.unwrap();
//! let link = a.connect(b.address(), listener.port(), LinkMode::Packet, LinkParams::default()).await.unwrap();
//! let peer = listener.accept().await.unwrap();
//! link.send(Bytes::from_static(b"hello")).await.unwrap();
//! assert_eq!(&peer.recv().await.unwrap()[..], b"hello");
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod air;
pub mod hub;
mod kernel;
mod model;
mod profile;
mod rng;

pub use air::{Faults, SimAdapter, SimAir, SimAirBuilder};
pub use kernel::{KernelProfile, pdu_truesize};
pub use model::LinkSummary;
pub use profile::{Environment, PhyProfile, Position};
