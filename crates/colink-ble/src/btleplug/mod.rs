//! The btleplug backend (feature `btleplug`): discovery of colink adverts on platforms where BlueZ (bluer) is not
//! available: Windows, macOS, iOS, Android (and Linux, through bluetoothd).
//!
//! btleplug is a GATT central library: it cannot advertise, listen, open L2CAP or RFCOMM channels, or pair
//! (bluez.md: "no plans for l2cap"). [`BtleplugAdapter`] is therefore a **scan-only** [`Adapter`]: `scan` and
//! `is_powered` work; every other operation returns a typed `Unsupported` error
//! ([`AdapterError::Unsupported`], [`ConnectError::Unsupported`], [`PairingError::Unsupported`]).
//!
//! On Linux btleplug talks to bluetoothd over D-Bus with libdbus; the feature turns on libdbus-sys's `vendored`
//! build, so no libdbus-1-dev/pkg-config is needed there either.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{Central, CentralEvent, CentralState, Manager as _, Peripheral as _};
use btleplug::platform::{Adapter as PlatformAdapter, Manager};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use uuid::Uuid;

use crate::scan_tracker::ScanTracker;
use crate::{
    Adapter, AdapterError, Address, Advert, AdvertHandle, Agent, BoxFuture, COLINK_SERVICE_UUID, ConnectError, Link,
    LinkMode, LinkParams, Listener, PairingError, PeerAddress, Port, Rssi, ScanEvent, ScanFilter, ScanStream,
};

const SCAN_ONLY: &str = "the btleplug backend only scans";

/// A scan-only adapter through btleplug. Implements [`Adapter`].
///
/// ```no_run
/// # async fn demo() -> Result<(), colink_ble::AdapterError> {
/// use colink_ble::{Adapter, ScanFilter};
/// use colink_ble::btleplug::BtleplugAdapter;
/// use futures::StreamExt;
///
/// let adapter = BtleplugAdapter::first().await?;
/// let mut scan = adapter.scan(ScanFilter::default()).await?;
/// while let Some(event) = scan.next().await {
///     println!("{event:?}");
/// }
/// # Ok(()) }
/// ```
pub struct BtleplugAdapter {
    adapter: PlatformAdapter,
    name: String,
    address: PeerAddress,
}

impl std::fmt::Debug for BtleplugAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtleplugAdapter").field("name", &self.name).finish_non_exhaustive()
    }
}

impl BtleplugAdapter {
    /// Every adapter the platform offers.
    pub async fn all() -> Result<Vec<Self>, AdapterError> {
        let manager = Manager::new().await.map_err(backend)?;
        let mut out = Vec::new();
        for adapter in manager.adapters().await.map_err(backend)? {
            let name = adapter.adapter_info().await.unwrap_or_else(|_| "btleplug".into());
            let addr = adapter.adapter_address().await.ok().flatten().map(<[u8; 6]>::from).unwrap_or_default();
            out.push(Self { adapter, name, address: PeerAddress::le_public(Address::new(addr)) });
        }
        Ok(out)
    }

    /// The first adapter the platform offers ([`AdapterError::Gone`] when there is none).
    pub async fn first() -> Result<Self, AdapterError> {
        Self::all().await?.into_iter().next().ok_or(AdapterError::Gone)
    }

    async fn scan_impl(&self, filter: ScanFilter) -> Result<ScanStream, AdapterError> {
        let events = self.adapter.events().await.map_err(backend)?;
        // No service filter: on Linux it becomes a BlueZ UUID filter, which can drop adverts carrying the UUID only
        // as a service-data key (bluez.md); colink post-filters instead.
        self.adapter.start_scan(btleplug::api::ScanFilter::default()).await.map_err(backend)?;
        let (tx, rx) = futures::channel::mpsc::channel(crate::SCAN_QUEUE);
        let task = tokio::spawn(run_scan(self.adapter.clone(), events, filter, tx));
        Ok(Box::pin(Scan { rx, task, adapter: self.adapter.clone() }))
    }
}

struct Scan {
    rx: futures::channel::mpsc::Receiver<ScanEvent>,
    task: tokio::task::JoinHandle<()>,
    adapter: PlatformAdapter,
}

impl Stream for Scan {
    type Item = ScanEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ScanEvent>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.task.abort();
        let adapter = self.adapter.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = adapter.stop_scan().await;
            });
        }
    }
}

async fn run_scan(
    adapter: PlatformAdapter,
    events: impl Stream<Item = CentralEvent>,
    filter: ScanFilter,
    mut tx: futures::channel::mpsc::Sender<ScanEvent>,
) {
    futures::pin_mut!(events);
    let start = Instant::now();
    let mut tracker = ScanTracker::new(filter);
    let mut peers: HashMap<btleplug::platform::PeripheralId, PeerAddress> = HashMap::new();
    let far = Duration::from_secs(24 * 3600);
    loop {
        let wake = start + tracker.next_expiry().unwrap_or(far);
        let out: Vec<ScanEvent> = tokio::select! {
            ev = events.next() => match ev {
                None => break,
                Some(CentralEvent::ServiceDataAdvertisement { id, service_data }) => {
                    let Some(advert) = colink_advert(&service_data) else { continue };
                    let Ok(p) = adapter.peripheral(&id).await else { continue };
                    let Ok(Some(props)) = p.properties().await else { continue };
                    let peer = PeerAddress {
                        address: Address::new(props.address.into()),
                        address_type: match props.address_type {
                            Some(btleplug::api::AddressType::Random) => crate::AddressType::LeRandom,
                            _ => crate::AddressType::LePublic,
                        },
                    };
                    peers.insert(id, peer);
                    let rssi = props.rssi.map_or(Rssi::UNKNOWN, Rssi::from_dbm);
                    tracker.heard(start.elapsed(), peer, rssi, advert).into_iter().collect()
                }
                Some(CentralEvent::StateUpdate(CentralState::PoweredOff)) => break,
                Some(_) => continue,
            },
            () = tokio::time::sleep_until(wake) => tracker.expire(start.elapsed()),
        };
        for ev in out {
            if !crate::queue_scan_event(&mut tx, ev) {
                return;
            }
        }
    }
}

/// The colink advert among a device's service data.
fn colink_advert(service_data: &HashMap<Uuid, Vec<u8>>) -> Option<Advert> {
    Advert::from_service_data(service_data.get(&Uuid::from_u128(COLINK_SERVICE_UUID))?).ok()
}

fn backend(e: btleplug::Error) -> AdapterError {
    AdapterError::Backend(e.to_string())
}

impl Adapter for BtleplugAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> PeerAddress {
        self.address
    }

    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        Box::pin(async move {
            let state = self.adapter.adapter_state().await.map_err(backend)?;
            Ok(matches!(state, CentralState::PoweredOn))
        })
    }

    fn set_powered(&self, _on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async { Err(AdapterError::Unsupported(SCAN_ONLY)) })
    }

    fn advertise(&self, _advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        Box::pin(async { Err(AdapterError::Unsupported(SCAN_ONLY)) })
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        Box::pin(self.scan_impl(filter))
    }

    fn connect(
        &self,
        _peer: PeerAddress,
        _port: Port,
        _mode: LinkMode,
        _params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async { Err(ConnectError::Unsupported(SCAN_ONLY)) })
    }

    fn listen(
        &self,
        _port: Option<Port>,
        _mode: LinkMode,
        _params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        Box::pin(async { Err(AdapterError::Unsupported(SCAN_ONLY)) })
    }

    fn set_agent(&self, _agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async { Err(AdapterError::Unsupported(SCAN_ONLY)) })
    }

    fn pair(&self, _peer: PeerAddress, _agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        Box::pin(async { Err(PairingError::Unsupported(SCAN_ONLY)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShortDeviceId;

    #[test]
    fn finds_colink_service_data_only() {
        let advert = Advert::new(ShortDeviceId::from_bytes([5; 4]));
        let data = advert.to_service_data().to_vec();
        let ours = HashMap::from([(Uuid::from_u128(COLINK_SERVICE_UUID), data.clone())]);
        assert_eq!(colink_advert(&ours), Some(advert));
        let theirs = HashMap::from([(Uuid::from_u128(7), data)]);
        assert_eq!(colink_advert(&theirs), None);
    }
}
