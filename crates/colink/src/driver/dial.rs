//! Finding a device by its id in adverts and connecting to the port it advertises: its LE PSM (L2CAP CoC,
//! packet mode) or its RFCOMM channel (BR/EDR, stream mode), in the order the node prefers. A device the adapter
//! heard lately ([`Adapter::last_seen`]) is connected to at once, without scanning; only when that fails does
//! the dial scan for a fresh advert.

use std::sync::Arc;
use std::time::Duration;

use colink_ble::{
    Adapter, Address, Advert, ConnectError, DeviceId, Link, LinkMode, LinkParams, PeerAddress, Phy, Port, ScanEvent,
    ScanFilter,
};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::debug;

use super::TransportPreference;
use colink_proto::ConnectErrorCode;

/// Why a device could not be dialled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The device id is not a colink device id (32 hex digits).
    #[error("{0:?} is not a device id")]
    BadDeviceId(String),
    /// The local adapter is off.
    #[error("the local Bluetooth adapter is powered off")]
    PoweredOff,
    /// No advert of the device was seen in time.
    #[error("device {0} not found nearby")]
    NotFound(String),
    /// The device was found but the link could not be opened.
    #[error("could not link to the device: {0}")]
    Connect(ConnectError),
    /// Scanning failed.
    #[error("scan failed: {0}")]
    Scan(colink_ble::AdapterError),
}

impl DialError {
    /// The reference's code for a connect that failed this way.
    pub fn connect_code(&self) -> ConnectErrorCode {
        match self {
            Self::PoweredOff | Self::Scan(colink_ble::AdapterError::PoweredOff) => ConnectErrorCode::LocalWifiNotOpen,
            Self::Connect(ConnectError::PoweredOff) => ConnectErrorCode::LocalWifiNotOpen,
            _ => ConnectErrorCode::SystemInternalError,
        }
    }
}

/// How old a sighting may be for a dial to connect without scanning first: a device heard within this long is
/// most likely still there with the same address and ports (a random address rotates after ~15 minutes).
const RECENT: Duration = Duration::from_secs(120);

/// How long the connect to a recently seen device may take before the dial scans instead: long enough for a
/// connect to a present device (tens of milliseconds), short enough that a device that left costs little.
const RECENT_CONNECT: Duration = Duration::from_secs(2);

/// One way to reach an advertised device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    peer: PeerAddress,
    port: Port,
    mode: LinkMode,
    params: LinkParams,
}

/// The ways to reach the device behind `advert`, preferred first: the LE PSM (packet mode) and the RFCOMM channel
/// (stream mode, over BR/EDR at the advert's address), whichever it advertises.
fn routes(peer: PeerAddress, advert: &Advert, params: LinkParams, prefer: TransportPreference) -> Vec<Route> {
    let le = advert.psm.map(|psm| Route {
        peer,
        port: Port::L2cap(psm),
        mode: LinkMode::Packet,
        params: if params.phy.is_le() { params } else { params.with_phy(Phy::Le2M) },
    });
    let br_edr = advert.rfcomm.map(|channel| Route {
        peer: PeerAddress::br_edr(peer.address),
        port: Port::Rfcomm(channel),
        mode: LinkMode::Stream,
        params: params.with_phy(Phy::BrEdr),
    });
    let ordered = match prefer {
        TransportPreference::BrEdr => [br_edr, le],
        _ => [le, br_edr],
    };
    ordered.into_iter().flatten().collect()
}

/// Scans for `device`'s advert and opens a link to it, all within `within`: over the preferred transport when the
/// advert offers it, else (or when that connect fails) over the other one. Adverts from the addresses in
/// `exclude` are passed over (they proved to be another device: a short id is only 4 bytes). With `sighted`, a
/// device the adapter heard lately is connected to first without a scan.
///
/// Re-dials after a lost link pass `sighted: false`. Quirk (docs/vm-rig.md, Debian's 6.1 kernel): connecting to
/// the peer at once after the local adapter's power came back, instead of after a scan, made the kernel's double
/// `hci_chan_del` (a BUG that stops the machine) hit every time in the rig's link-loss test, when the old L2CAP
/// socket was released.
pub(crate) async fn dial(
    adapter: &Arc<dyn Adapter>,
    device: &str,
    params: LinkParams,
    prefer: TransportPreference,
    within: Duration,
    exclude: &[Address],
    sighted: bool,
) -> Result<Arc<dyn Link>, DialError> {
    let id: DeviceId = device.parse().map_err(|_| DialError::BadDeviceId(device.to_owned()))?;
    // The advert carries a rotating id (docs/security.md): accept this slot's and its neighbours'.
    let ids = id.advert_ids_around(colink_ble::advert_slot(std::time::SystemTime::now()));
    let deadline = Instant::now() + within;
    let sighting = ids.iter().filter_map(|short| adapter.last_seen(*short)).find(|s| sighted && s.age <= RECENT);
    // A connect on an adapter that is off (or going off) is pointless: ask first, as the scan path below does.
    if sighting.is_some() && !adapter.is_powered().await.unwrap_or(false) {
        return Err(DialError::PoweredOff);
    }
    if let Some(seen) = sighting {
        let recent = Instant::now() + RECENT_CONNECT;
        for route in routes(seen.peer, &seen.advert, params, prefer) {
            debug!(peer = %route.peer, port = %route.port, age = ?seen.age, "seen lately; connecting without a scan");
            let connect = adapter.connect(route.peer, route.port, route.mode, route.params);
            match tokio::time::timeout_at(recent.min(deadline), connect).await {
                Ok(Ok(link)) => return Ok(Arc::from(link)),
                Ok(Err(e)) => debug!(error = %e, port = %route.port, "connect to the last-seen port failed"),
                Err(_) => debug!(port = %route.port, "connect to the last-seen port timed out"),
            }
        }
        debug!("scanning for a fresh advert");
    }
    let found = tokio::time::timeout_at(deadline, async {
        // A short `lost_after` makes the backend restart discovery every second: on BlueZ a device whose advert
        // was missed when discovery started stays hidden until the next restart (docs/bluez-backend.md).
        let filter = ScanFilter::default().with_lost_after(Duration::from_secs(3));
        let mut scan = match adapter.scan(filter).await {
            Ok(scan) => scan,
            Err(colink_ble::AdapterError::PoweredOff) => return Err(DialError::PoweredOff),
            Err(e) => return Err(DialError::Scan(e)),
        };
        while let Some(event) = scan.next().await {
            if let ScanEvent::DeviceFound { peer, advert, .. } | ScanEvent::DeviceUpdated { peer, advert, .. } = event
                && ids.contains(&advert.short_id)
                && !exclude.contains(&peer.address)
            {
                let routes = routes(peer, &advert, params, prefer);
                if !routes.is_empty() {
                    return Ok(routes);
                }
            }
        }
        Err(DialError::NotFound(device.to_owned()))
    })
    .await;
    let routes = match found {
        Ok(result) => result?,
        Err(_) => return Err(DialError::NotFound(device.to_owned())),
    };
    let mut failure = DialError::NotFound(device.to_owned());
    for route in routes {
        debug!(peer = %route.peer, port = %route.port, "found; connecting");
        // The connect shares the dial's deadline: a peer that stopped being connectable (its controller still
        // believes in the old link) must not hold a re-dial past the grace period; the caller retries instead.
        let connect = adapter.connect(route.peer, route.port, route.mode, route.params);
        match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(link)) => return Ok(Arc::from(link)),
            Ok(Err(e)) => {
                debug!(error = %e, port = %route.port, "connect failed; trying the next transport, if any");
                failure = DialError::Connect(e);
            }
            Err(_) => return Err(DialError::Connect(ConnectError::Timeout)),
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use colink_ble::Address;
    use colink_ble::{
        AdapterError, AdvertHandle, Agent, BoxFuture, Listener, PairingError, Psm, RfcommChannel, ScanStream,
        ShortDeviceId, Sighting,
    };
    use colink_sim::{Position, SimAir};

    /// A simulated adapter that claims to have seen a device lately, and counts its scans.
    struct Remembers {
        inner: Arc<dyn Adapter>,
        seen: Option<Sighting>,
        scans: AtomicUsize,
    }

    impl Adapter for Remembers {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn address(&self) -> PeerAddress {
            self.inner.address()
        }
        fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
            self.inner.is_powered()
        }
        fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
            self.inner.set_powered(on)
        }
        fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
            self.inner.advertise(advert)
        }
        fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
            self.scans.fetch_add(1, Ordering::Relaxed);
            self.inner.scan(filter)
        }
        fn connect(
            &self,
            peer: PeerAddress,
            port: Port,
            mode: LinkMode,
            params: LinkParams,
        ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
            self.inner.connect(peer, port, mode, params)
        }
        fn listen(
            &self,
            port: Option<Port>,
            mode: LinkMode,
            params: LinkParams,
        ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
            self.inner.listen(port, mode, params)
        }
        fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
            self.inner.set_agent(agent)
        }
        fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
            self.inner.pair(peer, agent)
        }
        fn last_seen(&self, id: ShortDeviceId) -> Option<Sighting> {
            self.seen.clone().filter(|s| s.advert.short_id == id)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_seen_lately_is_connected_to_without_a_scan_and_a_stale_sighting_falls_back_to_one() {
        let air = SimAir::new(7);
        let a: Arc<dyn Adapter> = Arc::new(air.adapter("a", Position::new(0.0, 0.0)));
        let b = air.adapter("b", Position::new(2.0, 0.0));
        let params = LinkParams::default();
        let listener = b.listen(None, LinkMode::Packet, params).await.unwrap();
        let Port::L2cap(psm) = listener.port() else { panic!("LE listener without a PSM") };
        let device = DeviceId::from_bytes([9; 16]);
        let id = device.to_string();
        let advert = Advert::new(device.advert_id(colink_ble::advert_slot(std::time::SystemTime::now()))).with_psm(psm);
        let fresh = Sighting::new(b.address(), advert, Duration::from_secs(5));
        // An LE peripheral is connectable only while it advertises.
        let on_air = b.advertise(advert).await.unwrap();
        let accept = || async { tokio::time::timeout(Duration::from_secs(20), listener.accept()).await };

        // Seen 5 s ago at the PSM it listens on: one connect, no scan.
        let remembers = Arc::new(Remembers { inner: a.clone(), seen: Some(fresh.clone()), scans: AtomicUsize::new(0) });
        let dialler: Arc<dyn Adapter> = remembers.clone();
        let (link, accepted) = tokio::join!(
            dial(&dialler, &id, params, TransportPreference::LeCoc, Duration::from_secs(10), &[], true),
            accept()
        );
        assert_eq!(link.unwrap().peer().address, b.address().address);
        assert!(matches!(accepted, Ok(Ok(_))));
        assert_eq!(remembers.scans.load(Ordering::Relaxed), 0);

        // Seen too long ago: the dial scans (and, with no advert on the air, finds nothing).
        drop(on_air);
        let old = Sighting::new(b.address(), advert, RECENT + Duration::from_secs(1));
        let remembers = Arc::new(Remembers { inner: a.clone(), seen: Some(old), scans: AtomicUsize::new(0) });
        let dialler: Arc<dyn Adapter> = remembers.clone();
        let r = dial(&dialler, &id, params, TransportPreference::LeCoc, Duration::from_secs(3), &[], true).await;
        assert!(matches!(r, Err(DialError::NotFound(_))), "{:?}", r.err());
        assert_eq!(remembers.scans.load(Ordering::Relaxed), 1);

        // Seen lately but at a port where nothing listens any more: the connect fails and the dial scans instead,
        // finding b's current advert.
        let _on_air = b.advertise(advert).await.unwrap();
        let stale = Sighting::new(b.address(), advert.with_psm(Psm::new(0x99).unwrap()), Duration::from_secs(1));
        let remembers = Arc::new(Remembers { inner: a, seen: Some(stale), scans: AtomicUsize::new(0) });
        let dialler: Arc<dyn Adapter> = remembers.clone();
        let (link, accepted) = tokio::join!(
            dial(&dialler, &id, params, TransportPreference::LeCoc, Duration::from_secs(10), &[], true),
            accept()
        );
        assert!(link.is_ok(), "{:?}", link.err());
        assert!(matches!(accepted, Ok(Ok(_))));
        assert_eq!(remembers.scans.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn routes_follow_the_preference_and_the_advert() {
        let peer = PeerAddress::le_random(Address::new([0xC1, 2, 3, 4, 5, 6]));
        let psm = Psm::new(0x81).unwrap();
        let ch = RfcommChannel::new(4).unwrap();
        let both = Advert::new(ShortDeviceId::from_bytes([1; 4])).with_psm(psm).with_rfcomm(ch);
        let params = LinkParams::default();
        let ports = |a: &Advert, p| routes(peer, a, params, p).iter().map(|r| r.port).collect::<Vec<_>>();
        assert_eq!(ports(&both, TransportPreference::LeCoc), [Port::L2cap(psm), Port::Rfcomm(ch)]);
        assert_eq!(ports(&both, TransportPreference::BrEdr), [Port::Rfcomm(ch), Port::L2cap(psm)]);
        let le_only = Advert::new(ShortDeviceId::from_bytes([1; 4])).with_psm(psm);
        assert_eq!(ports(&le_only, TransportPreference::BrEdr), [Port::L2cap(psm)]);
        let br = routes(peer, &both, params, TransportPreference::BrEdr)[0];
        assert_eq!((br.mode, br.params.phy, br.peer.address), (LinkMode::Stream, Phy::BrEdr, peer.address));
        assert!(
            routes(peer, &Advert::new(ShortDeviceId::from_bytes([1; 4])), params, TransportPreference::LeCoc)
                .is_empty()
        );
    }
}
