//! The Bluetooth model that the rest of colink programs against.
//!
//! This crate defines *what* a Bluetooth adapter and a link are for colink, independent of any backend:
//!
//! - identities and addressing: [`Address`], [`AddressType`], [`PeerAddress`], the stable [`DeviceId`] (distinct
//!   from the rotating radio address) and its advert-sized [`ShortDeviceId`];
//! - link parameters: [`Psm`], [`RfcommChannel`], [`Port`], [`Mtu`], [`Rssi`], [`Phy`], [`SecurityLevel`],
//!   [`LinkParams`], [`LinkMode`];
//! - the colink advert ([`Advert`]): service data under [`COLINK_SERVICE_UUID`] that fits the 31-byte legacy
//!   advertising payload, with a total, panic-free decoder;
//! - pairing: [`IoCapability`], [`PairingMethod`], [`Passkey`] and the async [`Agent`] callbacks;
//! - the traits a backend implements: [`Adapter`] (power, advertise, scan, connect, listen, pair), [`Listener`]
//!   and [`Link`] (packet mode like an L2CAP CoC SeqPacket socket, stream mode like RFCOMM), with typed errors and
//!   a [`CloseReason`] on every closed link.
//!
//! The traits are dyn-compatible (`Arc<dyn Adapter>`, `Box<dyn Link>`) and return boxed futures, so one binary can
//! switch between the simulator (`colink-sim`) and the BlueZ backend at run time.
//!
//! Backends, behind features: `bluez` (default; Linux only) adds the `bluez` module, the BlueZ backend over bluer
//! (D-Bus, L2CAP CoC and RFCOMM sockets; see docs/bluez-backend.md); `btleplug` adds the `btleplug` module, a
//! scan-only adapter for platforms without BlueZ.
//!
//! What this crate deliberately does **not** do: the model itself contains no backend (no D-Bus, no sockets, no
//! simulator: that is `colink-sim`), knows nothing of colink frames or sessions, and never spawns tasks or reads the
//! clock (only the backend modules do).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod adapter;
mod address;
mod advert;
mod link;
mod pairing;
mod params;

#[cfg(all(feature = "bluez", target_os = "linux"))]
pub mod bluez;
#[cfg(feature = "btleplug")]
pub mod btleplug;
#[cfg(any(all(feature = "bluez", target_os = "linux"), feature = "btleplug"))]
#[path = "bluez/tracker.rs"]
mod scan_tracker;

pub use adapter::{
    Adapter, AdapterError, AdvertHandle, ConnectError, Listener, SCAN_QUEUE, ScanEvent, ScanFilter, ScanStream,
    Sighting, queue_scan_event,
};
pub use address::{
    ADVERT_ID_PERIOD, Address, AddressParseError, AddressType, DeviceId, PeerAddress, ShortDeviceId, advert_slot,
    until_next_advert_slot,
};
pub use advert::{
    AD_TYPE_FLAGS, AD_TYPE_SERVICE_DATA_128, Advert, AdvertError, COLINK_SERVICE_UUID, FLAGS_LE_AND_BR_EDR,
    FLAGS_LE_ONLY, LEGACY_ADV_MAX, PROTOCOL_VERSION, SERVICE_DATA_LEN, ServiceFilter,
};
pub use link::{CloseReason, Link, LinkError};
pub use pairing::{Agent, AgentRejected, AgentResult, IoCapability, PairingError, PairingMethod, Passkey, PasskeyRole};
pub use params::{InvalidParam, LinkMode, LinkParams, Mtu, Phy, Port, Psm, RfcommChannel, Rssi, SecurityLevel};

/// A boxed, `Send` future, as returned by the dyn-compatible traits of this crate.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;
