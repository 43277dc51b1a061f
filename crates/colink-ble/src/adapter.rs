//! The `Adapter` and `Listener` traits, scan events and the errors of adapter operations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::{
    Advert, Agent, BoxFuture, InvalidParam, Link, LinkMode, LinkParams, PairingError, PeerAddress, Port, Rssi,
    ShortDeviceId,
};

/// A Bluetooth adapter (a local controller), as the rest of colink uses it.
///
/// Implemented by the simulator (`colink-sim`) and by the BlueZ backend. Dyn-compatible: hold an
/// `Arc<dyn Adapter>`. Every future is `Send`; dropping one cancels the operation.
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's name (`hci0`, or the simulated device's name).
    fn name(&self) -> &str;

    /// The adapter's own address, as peers see it.
    fn address(&self) -> PeerAddress;

    /// Whether the adapter is powered.
    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>>;

    /// Powers the adapter on or off. Powering off closes every link with [`CloseReason::AdapterOff`]
    /// (peers see [`CloseReason::PeerPowerOff`]) and ends every scan stream.
    ///
    /// [`CloseReason::AdapterOff`]: crate::CloseReason::AdapterOff
    /// [`CloseReason::PeerPowerOff`]: crate::CloseReason::PeerPowerOff
    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>>;

    /// Starts advertising `advert` (connectable). Advertising lasts until the handle is dropped.
    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>>;

    /// Starts scanning for colink adverts. Scanning lasts until the stream is dropped; the stream ends when the
    /// adapter powers off.
    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>>;

    /// Opens a link to `peer` at `port` in `mode`. Resolves when the link is usable (unlike a raw BlueZ socket
    /// connect, which returns before the channel is up).
    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>>;

    /// Accepts links on `port` (`None`: pick a free LE PSM when `params.phy` is an LE PHY, else a free
    /// BR/EDR PSM; see [`Listener::port`]). Listening lasts until the listener is dropped.
    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>>;

    /// Sets the agent that answers pairings *initiated by peers* (`None`: no agent).
    ///
    /// On BlueZ only the host's default pairing agent hears peer-initiated pairings, so setting one makes this
    /// process the default agent until every adapter's agent is cleared again (a desktop's agent is default again
    /// then); service authorisations the default agent is asked for are refused. With no agent set, the host's
    /// own default agent answers (a desktop asks its user) and, when there is none, bluetoothd refuses the
    /// pairing. The simulator without an agent behaves as a NoInputNoOutput device and accepts Just Works.
    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>>;

    /// Pairs (and bonds) with `peer`, driving `agent` for the local side; the peer's agent answers for it.
    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>>;

    /// The latest colink advert this adapter's own scans heard from the device `id`, and how long ago, so that a
    /// caller who saw a device recently can connect to it without scanning again. `None` when no scan of this
    /// adapter heard it, or a scan since reported it lost (the default: the backend keeps no record).
    ///
    /// Only a hint: the device may have moved, changed its port or gone; a connect to it can fail like any other.
    fn last_seen(&self, id: ShortDeviceId) -> Option<Sighting> {
        let _ = id;
        None
    }

    /// Resolves, saying why, as soon as the backend hears that the adapter went away under its user: powered
    /// off, removed, or reset (on BlueZ: bluetoothd restarted, which drops every advert and agent registered with
    /// it, however quickly it came back). Listeners and adverts opened before must then be opened again. The
    /// default never resolves: a backend without such news leaves its user to ask [`is_powered`](Self::is_powered)
    /// from time to time (as colink's driver also does).
    fn radio_lost(&self) -> BoxFuture<'_, String> {
        Box::pin(std::future::pending())
    }
}

/// A device's advert as a scan last heard it; see [`Adapter::last_seen`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sighting {
    /// Its radio address when it was heard.
    pub peer: PeerAddress,
    /// The advert it sent (its PSM and RFCOMM channel).
    pub advert: Advert,
    /// How long ago it was heard.
    pub age: Duration,
}

impl Sighting {
    /// A sighting of `advert` from `peer`, `age` ago.
    pub fn new(peer: PeerAddress, advert: Advert, age: Duration) -> Self {
        Self { peer, advert, age }
    }
}

/// Accepts incoming links on one port.
pub trait Listener: Send + Sync + 'static {
    /// The port it listens on (the assigned one when none was asked for); advertise it.
    fn port(&self) -> Port;

    /// The next incoming link. Cancel-safe: dropping the future loses no link.
    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Link>, AdapterError>>;
}

/// Keeps an advert on the air; dropping it stops advertising (like bluer's `AdvertisementHandle`).
#[must_use = "advertising stops when the handle is dropped"]
pub struct AdvertHandle {
    _guard: Box<dyn Send>,
}

impl AdvertHandle {
    /// Wraps a backend's guard; dropping the guard must stop the advert.
    pub fn new(guard: impl Send + 'static) -> Self {
        Self { _guard: Box::new(guard) }
    }
}

impl fmt::Debug for AdvertHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdvertHandle")
    }
}

/// A stream of [`ScanEvent`]s; dropping it stops the scan.
pub type ScanStream = BoxStream<'static, ScanEvent>;

/// The scan events a [`ScanStream`] holds for a reader that fell behind. Beyond them the newest events are
/// dropped, so a crowd of devices (or one hostile device changing its advert without end) never grows memory
/// for a scan nobody reads; a scan is lossy by nature, and a device dropped this way is reported again at
/// its next update. Every backend keeps to it.
pub const SCAN_QUEUE: usize = 256;

/// Queues `ev` on a scan stream of [`SCAN_QUEUE`] events: `false` once the stream is gone; a full stream
/// drops `ev`.
pub fn queue_scan_event(tx: &mut futures::channel::mpsc::Sender<ScanEvent>, ev: ScanEvent) -> bool {
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(e) => !e.is_disconnected(),
    }
}

/// What a scan reports. Only devices carrying a decodable colink advert are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ScanEvent {
    /// A device was seen for the first time (or again after [`ScanEvent::DeviceLost`]).
    DeviceFound {
        /// Its radio address.
        peer: PeerAddress,
        /// Signal strength of the advert.
        rssi: Rssi,
        /// The decoded advert.
        advert: Advert,
    },
    /// A known device was heard again: its advert changed or [`ScanFilter::update_interval`] elapsed.
    DeviceUpdated {
        /// Its radio address.
        peer: PeerAddress,
        /// Signal strength of the latest advert.
        rssi: Rssi,
        /// The decoded advert.
        advert: Advert,
    },
    /// A device was not heard for [`ScanFilter::lost_after`].
    DeviceLost {
        /// Its radio address.
        peer: PeerAddress,
    },
}

impl ScanEvent {
    /// The peer the event is about.
    pub fn peer(&self) -> PeerAddress {
        match self {
            Self::DeviceFound { peer, .. } | Self::DeviceUpdated { peer, .. } | Self::DeviceLost { peer } => *peer,
        }
    }
}

/// What a scan reports, and how often.
///
/// ```
/// use colink_ble::ScanFilter;
/// let f = ScanFilter::default().with_min_rssi(-80).with_service("chat");
/// assert_eq!(f.min_rssi, Some(-80));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ScanFilter {
    /// Ignore adverts weaker than this (dBm). Adverts of unknown strength always pass.
    pub min_rssi: Option<i8>,
    /// Only report devices whose service filter may contain this service name.
    pub service: Option<String>,
    /// Report [`ScanEvent::DeviceLost`] after this long without an advert (default 10 s).
    pub lost_after: Duration,
    /// Report [`ScanEvent::DeviceUpdated`] at most this often for an unchanged advert (default 1 s).
    pub update_interval: Duration,
}

impl Default for ScanFilter {
    fn default() -> Self {
        Self {
            min_rssi: None,
            service: None,
            lost_after: Duration::from_secs(10),
            update_interval: Duration::from_secs(1),
        }
    }
}

impl ScanFilter {
    /// With a minimum RSSI.
    #[must_use]
    pub fn with_min_rssi(mut self, dbm: i8) -> Self {
        self.min_rssi = Some(dbm);
        self
    }

    /// Only devices that may host `service`.
    #[must_use]
    pub fn with_service(mut self, service: &str) -> Self {
        self.service = Some(service.to_owned());
        self
    }

    /// With the lost timeout.
    #[must_use]
    pub fn with_lost_after(mut self, d: Duration) -> Self {
        self.lost_after = d;
        self
    }

    /// With the update interval.
    #[must_use]
    pub fn with_update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// Whether a sighting passes the filter.
    pub fn accepts(&self, rssi: Rssi, advert: &Advert) -> bool {
        let strong = match (self.min_rssi, rssi.dbm()) {
            (Some(min), Some(d)) => d >= min,
            _ => true,
        };
        let service = self.service.as_deref().is_none_or(|s| advert.services.may_contain(s));
        strong && service
    }
}

/// Why an adapter operation (power, advertise, scan, listen, accept) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The adapter is powered off.
    #[error("adapter is powered off")]
    PoweredOff,
    /// The port is already in use on this adapter.
    #[error("{0} is already in use")]
    PortInUse(Port),
    /// No free PSM / channel is left.
    #[error("no free port")]
    NoFreePort,
    /// A parameter is out of range.
    #[error(transparent)]
    InvalidParam(#[from] InvalidParam),
    /// The combination is not supported (e.g. packet mode on RFCOMM).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The adapter (or the simulator hub it lives in) is gone.
    #[error("adapter is gone")]
    Gone,
    /// A backend-specific failure.
    #[error("backend error: {0}")]
    Backend(String),
}

/// Why [`Adapter::connect`] failed.
///
/// Not `colink_proto::ConnectError`, which is the session engine refusing to start a session on a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The local adapter is powered off.
    #[error("adapter is powered off")]
    PoweredOff,
    /// The local adapter already has its maximum number of links.
    #[error("too many links on the local adapter")]
    TooManyLinks,
    /// The peer has no capacity for another link (HCI "limited resources").
    #[error("peer rejected the link: limited resources")]
    PeerBusy,
    /// Nothing listens on that port at the peer (L2CAP "PSM not supported").
    #[error("connection refused: nothing listens on that port")]
    Refused,
    /// The peer did not answer in time (absent, not advertising, or out of range).
    #[error("connection timed out")]
    Timeout,
    /// The listener requires more security than the devices' bond provides: pair first.
    #[error("insufficient authentication: pair with the peer first")]
    AuthenticationRequired,
    /// A parameter is out of range.
    #[error(transparent)]
    InvalidParam(#[from] InvalidParam),
    /// The combination is not supported (e.g. packet mode on RFCOMM).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The adapter is gone.
    #[error("adapter is gone")]
    Gone,
    /// A backend-specific failure.
    #[error("backend error: {0}")]
    Backend(String),
}
