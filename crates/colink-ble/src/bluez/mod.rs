//! The BlueZ backend (feature `bluez`, Linux only): colink's [`Adapter`], [`Listener`] and [`Link`] on real
//! adapters through [bluer](https://docs.rs/bluer) (bluetoothd over D-Bus, kernel L2CAP and RFCOMM sockets).
//!
//! - [`Bluez`] is one D-Bus session: it lists adapters and opens [`BluezAdapter`]s (default, or by name such as
//!   `hci1`). One pairing agent serves every adapter of the process.
//! - Advertising registers the colink advert ([`Advert`]) with bluetoothd; scanning post-filters BlueZ's device
//!   reports down to colink adverts.
//! - Packet links are L2CAP LE credit-based (CoC) SeqPacket sockets on a dynamic PSM (0x80..=0xFF); stream links
//!   are RFCOMM (or L2CAP stream) sockets.
//!
//! Every kernel or BlueZ quirk this code works around is named in a comment where it is handled (the facts are
//! in vm-rig.md and bluez.md; docs/bluez-backend.md summarises them).
//!
//! What it does not do: GATT, LE audio, classic discovery (inquiry), ECRED channels, or anything that needs
//! bluetoothd's experimental interfaces.

mod advert;
mod agent;
mod link;
mod monitor;
mod sightings;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use bluer::{AdapterEvent, DiscoveryFilter, DiscoveryTransport, Session};
use futures::{Stream, StreamExt};
use tokio::time::Instant;

pub use link::{BluezLink, RFCOMM_WRITE_CHUNK};

use crate::scan_tracker::ScanTracker;
use crate::{
    Adapter, AdapterError, Address, AddressType, Advert, AdvertHandle, Agent, BoxFuture, ConnectError, Link, LinkMode,
    LinkParams, Listener, PairingError, PeerAddress, Port, ScanEvent, ScanFilter, ScanStream, ShortDeviceId, Sighting,
};
use advert::{colink_advert, fits_legacy, rssi_from_bluez, to_advertisement};
use agent::AgentHub;
use monitor::ColinkMonitor;
use sightings::Sightings;

/// Pairings made before giving up when bluetoothd keeps no bond.
const PAIR_ATTEMPTS: u32 = 2;

/// How long the pairing's link stays up after bluetoothd reports the bond, so that both sides store the keys.
const KEY_DISTRIBUTION: Duration = Duration::from_secs(1);

/// How long a completed pairing may take to show up as a bond in bluetoothd.
const BOND_WAIT: Duration = Duration::from_secs(3);

/// How long [`Adapter::pair`] waits for the whole pairing (agents included).
const PAIR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Adapter::pair`] scans for a peer bluetoothd does not know yet.
const PAIR_DISCOVERY: Duration = Duration::from_secs(10);

/// A connection to bluetoothd (one D-Bus session) from which adapters are opened.
///
/// ```no_run
/// # async fn demo() -> Result<(), colink_ble::AdapterError> {
/// use colink_ble::Adapter;
/// use colink_ble::bluez::Bluez;
///
/// let bluez = Bluez::new().await?;
/// for name in bluez.adapter_names().await? {
///     let adapter = bluez.adapter(&name).await?;
///     println!("{name}: {} powered={}", adapter.address(), adapter.is_powered().await?);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bluez {
    session: Session,
    agents: Arc<AgentHub>,
}

impl std::fmt::Debug for Bluez {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bluez").finish_non_exhaustive()
    }
}

impl Bluez {
    /// Connects to bluetoothd on the system bus. Fails with [`AdapterError::Backend`] when there is no system
    /// bus or no bluetoothd.
    pub async fn new() -> Result<Self, AdapterError> {
        let session = Session::new().await.map_err(adapter_error)?;
        let agents = AgentHub::new(session.clone());
        Ok(Self { session, agents })
    }

    /// The names of the adapters bluetoothd knows (`hci0`, ...), sorted.
    pub async fn adapter_names(&self) -> Result<Vec<String>, AdapterError> {
        let mut names = self.session.adapter_names().await.map_err(adapter_error)?;
        names.sort();
        Ok(names)
    }

    /// The default adapter (bluetoothd's first).
    pub async fn default_adapter(&self) -> Result<BluezAdapter, AdapterError> {
        let a = self.session.default_adapter().await.map_err(adapter_error)?;
        self.open(a).await
    }

    /// The adapter named `name` (e.g. `hci1`).
    pub async fn adapter(&self, name: &str) -> Result<BluezAdapter, AdapterError> {
        let a = self.session.adapter(name).map_err(adapter_error)?;
        self.open(a).await
    }

    async fn open(&self, adapter: bluer::Adapter) -> Result<BluezAdapter, AdapterError> {
        let addr = adapter.address().await.map_err(adapter_error)?;
        let kind = adapter.address_type().await.map_err(adapter_error)?;
        let address =
            PeerAddress { address: to_colink_address(addr), address_type: from_bluer_address_type(Some(kind)) };
        Ok(BluezAdapter {
            name: adapter.name().to_owned(),
            session: self.session.clone(),
            adapter,
            address,
            agents: self.agents.clone(),
            sightings: Arc::default(),
        })
    }
}

/// One local adapter through BlueZ. Implements [`Adapter`].
pub struct BluezAdapter {
    session: Session,
    adapter: bluer::Adapter,
    name: String,
    address: PeerAddress,
    agents: Arc<AgentHub>,
    /// The latest advert each device was heard with by this adapter's scans ([`Adapter::last_seen`]).
    sightings: Arc<Sightings>,
}

impl std::fmt::Debug for BluezAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BluezAdapter").field("name", &self.name).field("address", &self.address).finish()
    }
}

impl BluezAdapter {
    /// The underlying bluer adapter, for what colink's traits do not cover.
    pub fn bluer(&self) -> &bluer::Adapter {
        &self.adapter
    }

    /// Whether bluetoothd has a bond with `peer`.
    pub async fn is_paired(&self, peer: PeerAddress) -> bool {
        match self.adapter.device(to_bluer_address(peer.address)) {
            Ok(d) => d.is_paired().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Removes `peer` from bluetoothd (bond, cached adverts, connections). Missing is fine.
    pub async fn forget(&self, peer: PeerAddress) {
        let _ = self.adapter.remove_device(to_bluer_address(peer.address)).await;
    }

    async fn powered(&self) -> bool {
        self.adapter.is_powered().await.unwrap_or(false)
    }

    async fn scan_impl(&self, filter: ScanFilter) -> Result<ScanStream, AdapterError> {
        if !self.powered().await {
            return Err(AdapterError::PoweredOff);
        }
        // Quirk (bluez.md): BlueZ merges all clients' discovery filters and its UUID filter can drop adverts that
        // carry the UUID only as a service-data key: no UUID filter, colink post-filters (`colink_advert`).
        let df = DiscoveryFilter { transport: DiscoveryTransport::Le, duplicate_data: true, ..Default::default() };
        // Quirk (seen in the rig): bluetoothd refuses to change the discovery filter while a discovery session
        // of this D-Bus client is active ("cannot be changed while a discovery session is active"), which is the
        // case for a moment after an earlier scan was dropped (its StopDiscovery is still on its way, or its
        // task was restarting discovery). Retry for up to a second before giving up.
        let mut tries = 0;
        loop {
            match self.adapter.set_discovery_filter(df.clone()).await {
                Ok(()) => break,
                Err(e) if tries < 10 => {
                    tries += 1;
                    tracing::debug!("discovery filter refused ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(adapter_error(e)),
            }
        }
        let events = self.adapter.discover_devices_with_changes().await.map_err(adapter_error)?;
        let (tx, rx) = futures::channel::mpsc::channel(crate::SCAN_QUEUE);
        let span = tracing::debug_span!("bluez_scan", adapter = %self.name);
        let scan = run_scan(self.adapter.clone(), events, filter, self.sightings.clone(), tx);
        let task = tokio::spawn(tracing::Instrument::instrument(scan, span));
        Ok(Box::pin(BluezScan { rx, task }))
    }

    async fn pair_impl(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> Result<(), PairingError> {
        if !self.powered().await {
            return Err(PairingError::PoweredOff);
        }
        let addr = to_bluer_address(peer.address);
        let _route = self
            .agents
            .begin_pairing(&self.name, addr, agent)
            .await
            .map_err(|e| PairingError::Backend(format!("registering the pairing agent: {e}")))?;
        // Bonding needs the adapter bondable (BlueZ's Pairable); without it the pairing succeeds but no keys are
        // kept. Something else (a settings app, a pairable timeout) may have turned it off.
        self.ensure_pairable().await;
        // A pairing bluetoothd makes without bonding (seen now and then in the VM rig right after a default
        // agent was registered) reports success, but the keys are not kept: the bond is gone once the pairing's
        // link closes. It is checked after the close and the pairing made once more (the agents are asked
        // again); it never reports success without a bond that outlives the link.
        let mut outcome = Ok(());
        for attempt in 1..=PAIR_ATTEMPTS {
            // bluetoothd forgets a device whose pairing kept no bond: find it again first.
            if !self.knows(addr).await {
                self.discover_until_known(addr, PAIR_DISCOVERY).await;
            }
            outcome = self.pair_once(addr).await;
            if outcome.is_err() {
                break;
            }
            let dev = self.adapter.device(addr).map_err(|e| PairingError::Backend(e.to_string()))?;
            if dev.is_paired().await.unwrap_or(false) {
                break;
            }
            tracing::warn!(peer = %addr, attempt, "the pairing left no bond once its link closed; pairing again");
            outcome = Err(PairingError::Backend(
                "bluetoothd kept no bond after the pairing (it was made without bonding)".to_owned(),
            ));
        }
        outcome
    }

    /// Makes the adapter bondable (Pairable) if it is not; a failure is logged (the pairing then says what
    /// happened).
    async fn ensure_pairable(&self) {
        if !self.adapter.is_pairable().await.unwrap_or(false)
            && let Err(e) = self.adapter.set_pairable(true).await
        {
            tracing::warn!(adapter = %self.name, error = %e, "cannot make the adapter pairable");
        }
    }

    /// One pairing with `addr`, and the close of the LE link it opened.
    async fn pair_once(&self, addr: bluer::Address) -> Result<(), PairingError> {
        let dev = self.adapter.device(addr).map_err(|e| PairingError::Backend(e.to_string()))?;
        let was_connected = dev.is_connected().await.unwrap_or(true);
        let mut outcome = Ok(());
        if !dev.is_paired().await.unwrap_or(false) {
            let started = Instant::now();
            outcome = match tokio::time::timeout(PAIR_TIMEOUT, dev.pair()).await {
                Err(_) => Err(PairingError::Timeout),
                Ok(Err(e)) => Err(pairing_error(&e, self.agents.rejected_locally(&self.name, addr))),
                Ok(Ok(())) => {
                    tracing::debug!(peer = %addr, took = ?started.elapsed(), "paired");
                    // bluetoothd publishes the bond (Paired) once the keys are stored; the pairing's link must
                    // stay up until then, and a moment longer for the key distribution to finish on both sides
                    // (closing it at once lost the bond now and then in the VM rig).
                    let deadline = Instant::now() + BOND_WAIT;
                    loop {
                        if dev.is_paired().await.unwrap_or(false) {
                            tokio::time::sleep(KEY_DISTRIBUTION).await;
                            break Ok(());
                        }
                        if Instant::now() >= deadline {
                            break Err(PairingError::Backend(format!(
                                "the pairing completed but bluetoothd stored no bond within {} s",
                                BOND_WAIT.as_secs()
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
        }
        // Bonded, not Trusted: BlueZ's Trusted lets a device use every profile without asking; colink admits
        // devices by its own trust store (docs/security.md), so it never sets it.
        // Pairing had to open an LE link; bluetoothd keeps it up (GATT), and while it is up the peer does not
        // advertise (seen in the VM rig: `colink pair` then `colink send` found nothing for 10 s). Close what the
        // pairing opened, whether it succeeded or not; a link that was up before is someone else's.
        if !was_connected && dev.is_connected().await.unwrap_or(false) {
            if let Err(e) = dev.disconnect().await {
                tracing::debug!(peer = %addr, error = %e, "closing the pairing's link failed");
            }
            // A bond that was never stored disappears with the link (bluetoothd drops the temporary device):
            // wait until the link is down, so the caller's check sees what stays.
            let deadline = Instant::now() + BOND_WAIT;
            while dev.is_connected().await.unwrap_or(false) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        outcome
    }

    /// See [`Adapter::radio_lost`]: bluetoothd publishing this adapter again (it restarted), the adapter's
    /// removal, or its Powered property turning false, each heard at once over D-Bus.
    async fn radio_lost_impl(&self) -> String {
        let (Ok(session), Ok(adapter)) = (self.session.events().await, self.adapter.events().await) else {
            // Without the signals nothing is heard at once; the caller's own power checks still notice.
            return std::future::pending().await;
        };
        futures::pin_mut!(session, adapter);
        loop {
            tokio::select! {
                ev = session.next() => match ev {
                    Some(bluer::SessionEvent::AdapterAdded(name)) if name == self.name => {
                        // Everything registered with the old bluetoothd is gone; the pairing agent is this
                        // backend's to register again (adverts and listeners are the caller's).
                        if let Err(e) = self.agents.register_again().await {
                            tracing::warn!(error = %e, "registering the pairing agent with the new bluetoothd failed");
                        }
                        return "bluetoothd restarted (it published the adapter again)".to_owned();
                    }
                    Some(bluer::SessionEvent::AdapterRemoved(name)) if name == self.name => {
                        return "the adapter was removed".to_owned();
                    }
                    Some(_) => {}
                    None => return "the D-Bus connection to bluetoothd ended".to_owned(),
                },
                ev = adapter.next() => match ev {
                    Some(AdapterEvent::PropertyChanged(bluer::AdapterProperty::Powered(false))) => {
                        return "the adapter was powered off".to_owned();
                    }
                    Some(_) => {}
                    None => return std::future::pending().await,
                },
            }
        }
    }

    async fn knows(&self, addr: bluer::Address) -> bool {
        self.adapter.device_addresses().await.is_ok_and(|v| v.contains(&addr))
    }

    async fn discover_until_known(&self, addr: bluer::Address, limit: Duration) {
        // Held only for its effect on the kernel's scanning (see `monitor`): the peer's next advert is reported.
        let _monitor = ColinkMonitor::register(&self.adapter, MONITOR_ACTIVATION).await;
        let Ok(events) = self.adapter.discover_devices().await else { return };
        let found = async {
            futures::pin_mut!(events);
            while let Some(ev) = events.next().await {
                if matches!(ev, AdapterEvent::DeviceAdded(a) if a == addr) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, found).await;
    }
}

impl Adapter for BluezAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> PeerAddress {
        self.address
    }

    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        Box::pin(async move { self.adapter.is_powered().await.map_err(adapter_error) })
    }

    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move { self.adapter.set_powered(on).await.map_err(adapter_error) })
    }

    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        Box::pin(async move {
            if !self.powered().await {
                return Err(AdapterError::PoweredOff);
            }
            let adv = to_advertisement(&advert);
            if !fits_legacy(&adv) {
                return Err(AdapterError::Backend("advertising data exceeds 31 bytes".into()));
            }
            // Quirk (vm-rig.md, advertising): mgmt-level advertising (`btmgmt advertising on`) hides adverts
            // registered over D-Bus; nothing on D-Bus can turn it off, so the rig (and docs/bluez-backend.md)
            // leave it off. An LE peripheral is only connectable while it advertises: keep the handle while
            // listening.
            let handle = self.adapter.advertise(adv).await.map_err(adapter_error)?;
            tracing::debug!(adapter = %self.name, ?advert, "advertising");
            Ok(AdvertHandle::new(handle))
        })
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        Box::pin(self.scan_impl(filter))
    }

    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            if !self.powered().await {
                return Err(ConnectError::PoweredOff);
            }
            socket::connect(&self.adapter, self.address, peer, port, mode, params)
                .await
                .map(|l| Box::new(l) as Box<dyn Link>)
        })
    }

    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        Box::pin(async move {
            if !self.powered().await {
                return Err(AdapterError::PoweredOff);
            }
            socket::listen(&self.adapter, self.address, port, mode, params)
                .await
                .map(|l| Box::new(l) as Box<dyn Listener>)
        })
    }

    fn radio_lost(&self) -> BoxFuture<'_, String> {
        Box::pin(self.radio_lost_impl())
    }

    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            let answering = agent.is_some();
            self.agents.set_adapter_agent(&self.name, agent).await.map_err(adapter_error)?;
            // An adapter agent answers incoming pairings: they must be able to bond.
            if answering {
                self.ensure_pairable().await;
            }
            Ok(())
        })
    }

    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        Box::pin(self.pair_impl(peer, agent))
    }

    fn last_seen(&self, id: ShortDeviceId) -> Option<Sighting> {
        self.sightings.get(Instant::now(), id)
    }
}

/// The scan stream: events from the scan task; dropping it stops the task (and with it discovery).
struct BluezScan {
    rx: futures::channel::mpsc::Receiver<ScanEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for BluezScan {
    type Item = ScanEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ScanEvent>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Drop for BluezScan {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a scan restarts discovery: a third of `lost_after`, within 1..=10 s.
///
/// Quirk (seen in the VM rig, kernel 6.1 / BlueZ 5.66): Linux scans with the controller's duplicate filter on, so
/// within one discovery session an unchanged advert is reported once; bluetoothd then emits nothing more for a
/// device that keeps advertising the same data (and btvirt's RSSI never changes). Restarting discovery resets the
/// duplicate filter, and bluetoothd invalidates the RSSI of every device found when discovery stops, so each
/// device still advertising sets its RSSI again (a property change, hence an event) in the next session. That is
/// what makes `DeviceLost` after `lost_after` mean "not heard" rather than "unchanged".
pub(crate) fn discovery_cycle(lost_after: Duration) -> Duration {
    (lost_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Length of discovery session `n` (0-based) of a scan. Quirk (seen in the VM rig with btmon): an advert that
/// the controller reports at the very instant scanning is switched on is dropped by the kernel (discovery is not
/// yet active), and the controller's duplicate filter then hides that device for the rest of the session. The
/// first sessions are therefore short (0.5 s, 1 s), so a device advertising before the scan started is found
/// within about a second even when it loses that race, instead of after a whole cycle.
pub(crate) fn discovery_session(n: u32, cycle: Duration) -> Duration {
    match n {
        0 => Duration::from_millis(500),
        1 => Duration::from_secs(1),
        _ => cycle,
    }
    .min(cycle)
}

/// How long a scan waits for bluetoothd to activate its advertisement monitor (seen in the rig: well under a
/// second on an idle host, seconds under load).
const MONITOR_ACTIVATION: Duration = Duration::from_secs(10);

async fn run_scan(
    adapter: bluer::Adapter,
    first: impl Stream<Item = AdapterEvent> + Send + 'static,
    filter: ScanFilter,
    sightings: Arc<Sightings>,
    mut tx: futures::channel::mpsc::Sender<ScanEvent>,
) {
    // The advertisement monitor (see `monitor`) is registered beside the first discovery session, not before it:
    // bluetoothd can take seconds to activate it under load, and a device that advertises after discovery began
    // is reported without it. Once it is active, discovery starts again at once, now without the duplicate filter.
    let mut monitor: Option<ColinkMonitor> = None;
    let registration = ColinkMonitor::register(&adapter, MONITOR_ACTIVATION);
    tokio::pin!(registration);
    let mut registering = true;
    let start = Instant::now();
    let cycle = discovery_cycle(filter.lost_after);
    let mut tracker = ScanTracker::new(filter);
    let mut peers = std::collections::HashMap::new();
    let far = Duration::from_secs(24 * 3600);
    let mut events: std::pin::Pin<Box<dyn Stream<Item = AdapterEvent> + Send>> = Box::pin(first);
    let mut session = 0u32;
    loop {
        let restart = tokio::time::sleep(discovery_session(session, cycle));
        session = session.saturating_add(1);
        tokio::pin!(restart);
        // One discovery session.
        let ended = loop {
            let wake = start + tracker.next_expiry().unwrap_or(far);
            let monitored = async {
                match monitor.as_mut() {
                    Some(m) => m.found().await,
                    None => std::future::pending().await,
                }
            };
            let (addr, fresh) = tokio::select! {
                ev = events.next() => match ev {
                    // bluer ends the stream when discovery stops (Discovering = false), e.g. on power-off.
                    None => break true,
                    Some(AdapterEvent::DeviceAdded(addr)) => (addr, false),
                    Some(AdapterEvent::DeviceRemoved(addr)) => {
                        let lost = peers.remove(&addr).and_then(|p| tracker.removed(p));
                        if !forward(lost, &sightings, &mut tx) {
                            return;
                        }
                        continue;
                    }
                    Some(_) => continue,
                },
                found = monitored => match found {
                    Some(addr) => (addr, true),
                    None => {
                        tracing::debug!("advertisement monitor released by bluetoothd");
                        monitor = None;
                        continue;
                    }
                },
                registered = &mut registration, if registering => {
                    registering = false;
                    monitor = registered;
                    tracing::debug!(active = monitor.is_some(), after = ?start.elapsed(), "advertisement monitor");
                    if monitor.is_some() {
                        break false;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(wake) => {
                    let out = tracker.expire(start.elapsed());
                    if !out.into_iter().all(|ev| forward(Some(ev), &sightings, &mut tx)) {
                        return;
                    }
                    continue;
                }
                () = &mut restart => break false,
            };
            let Ok(dev) = adapter.device(addr) else { continue };
            // No RSSI: not heard in this discovery session (listed from bluetoothd's cache); such a device is
            // reported only while an LE link to it is up, or when the advertisement monitor just heard it
            // (`fresh`). A connected peripheral may stop advertising (seen in the VM rig: after one `colink
            // send`, bluetoothd kept the LE link for GATT and the next send found nothing), yet it is present and
            // reachable over that link: its last advert, which bluetoothd keeps, still names its PSM. Each
            // discovery session lists it again, well within `lost_after`.
            let raw_rssi = dev.rssi().await.ok().flatten();
            if !fresh && raw_rssi.is_none() && !dev.is_connected().await.unwrap_or(false) {
                continue;
            }
            let Some(advert) = colink_advert(dev.service_data().await.ok().flatten().as_ref()) else {
                continue;
            };
            let kind = dev.address_type().await.ok();
            let peer = PeerAddress { address: to_colink_address(addr), address_type: from_bluer_address_type(kind) };
            peers.insert(addr, peer);
            sightings.heard(Instant::now(), peer, advert);
            let heard = tracker.heard(start.elapsed(), peer, rssi_from_bluez(raw_rssi), advert);
            if !forward(heard, &sightings, &mut tx) {
                return;
            }
        };

        drop(events);
        // The stream ends when the adapter powers off (as the trait requires), or if it cannot scan any more.
        if ended && !adapter.is_powered().await.unwrap_or(false) {
            return;
        }
        // Let bluer's StopDiscovery (sent when the session's last stream drops) go out before starting again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut restarted = None;
        for _ in 0..10 {
            match adapter.discover_devices_with_changes().await {
                Ok(e) => {
                    restarted = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::debug!("restarting discovery failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let Some(e) = restarted else {
            tracing::warn!("restarting discovery failed ten times, scan ends");
            return;
        };
        events = Box::pin(e);
    }
}

/// Sends a scan event to the scan's stream (a lost device also leaves the sightings); false once the stream is
/// gone.
fn forward(ev: Option<ScanEvent>, sightings: &Sightings, tx: &mut futures::channel::mpsc::Sender<ScanEvent>) -> bool {
    let Some(ev) = ev else { return true };
    if let ScanEvent::DeviceLost { peer } = ev {
        sightings.lost(peer);
    }
    crate::queue_scan_event(tx, ev)
}

pub(crate) fn to_colink_address(a: bluer::Address) -> Address {
    Address::new(a.0)
}

pub(crate) fn to_bluer_address(a: Address) -> bluer::Address {
    bluer::Address(a.octets())
}

pub(crate) fn from_bluer_address_type(t: Option<bluer::AddressType>) -> AddressType {
    match t {
        Some(bluer::AddressType::BrEdr) => AddressType::BrEdr,
        Some(bluer::AddressType::LeRandom) => AddressType::LeRandom,
        _ => AddressType::LePublic,
    }
}

pub(crate) fn to_bluer_address_type(t: AddressType) -> bluer::AddressType {
    match t {
        AddressType::BrEdr => bluer::AddressType::BrEdr,
        AddressType::LeRandom => bluer::AddressType::LeRandom,
        _ => bluer::AddressType::LePublic,
    }
}

fn adapter_error(e: bluer::Error) -> AdapterError {
    match e.kind {
        bluer::ErrorKind::NotReady => AdapterError::PoweredOff,
        bluer::ErrorKind::NotFound | bluer::ErrorKind::DoesNotExist => AdapterError::Gone,
        bluer::ErrorKind::NotSupported => AdapterError::Unsupported("not supported by bluetoothd"),
        _ => AdapterError::Backend(e.to_string()),
    }
}

/// Maps bluetoothd's pairing errors; `local` says whether our own agent rejected a step.
fn pairing_error(e: &bluer::Error, local: bool) -> PairingError {
    use bluer::ErrorKind as K;
    match e.kind {
        K::AuthenticationRejected | K::AuthenticationCanceled => {
            PairingError::Rejected { side: if local { "local" } else { "remote" } }
        }
        K::AuthenticationFailed => PairingError::AuthenticationFailed,
        K::AuthenticationTimeout => PairingError::Timeout,
        K::ConnectionAttemptFailed | K::DoesNotExist | K::NotFound => PairingError::PeerUnreachable,
        K::InProgress => PairingError::InProgress,
        K::NotReady => PairingError::PoweredOff,
        _ => PairingError::Backend(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_restarts_often_enough_to_detect_loss() {
        for secs in [0, 1, 3, 10, 30, 600] {
            let lost_after = Duration::from_secs(secs);
            let c = discovery_cycle(lost_after);
            assert!(c >= Duration::from_secs(1) && c <= Duration::from_secs(10));
            if secs >= 3 {
                assert!(c * 3 <= lost_after, "a live device is heard at least twice before it counts as lost");
            }
        }
    }

    #[test]
    fn first_discovery_sessions_are_short_then_follow_the_cycle() {
        let cycle = discovery_cycle(Duration::from_secs(10));
        assert_eq!(discovery_session(0, cycle), Duration::from_millis(500));
        assert_eq!(discovery_session(1, cycle), Duration::from_secs(1));
        assert_eq!(discovery_session(2, cycle), cycle);
        assert_eq!(discovery_session(u32::MAX, cycle), cycle);
    }

    #[test]
    fn addresses_map_both_ways() {
        let a = Address::new([0xC0, 0xFF, 0xEE, 0, 0, 1]);
        assert_eq!(to_colink_address(to_bluer_address(a)), a);
        assert_eq!(to_bluer_address(a).to_string(), a.to_string());
        for t in [AddressType::BrEdr, AddressType::LePublic, AddressType::LeRandom] {
            assert_eq!(from_bluer_address_type(Some(to_bluer_address_type(t))), t);
        }
    }

    #[test]
    fn pairing_errors_name_the_side() {
        let e = |kind| bluer::Error { kind, message: String::new() };
        assert_eq!(
            pairing_error(&e(bluer::ErrorKind::AuthenticationRejected), true),
            PairingError::Rejected { side: "local" }
        );
        assert_eq!(
            pairing_error(&e(bluer::ErrorKind::AuthenticationCanceled), false),
            PairingError::Rejected { side: "remote" }
        );
        assert_eq!(
            pairing_error(&e(bluer::ErrorKind::AuthenticationFailed), false),
            PairingError::AuthenticationFailed
        );
        assert_eq!(pairing_error(&e(bluer::ErrorKind::ConnectionAttemptFailed), false), PairingError::PeerUnreachable);
    }
}
