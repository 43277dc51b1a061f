//! Finding a device by its id in adverts and connecting to the PSM it advertises.

use std::sync::Arc;
use std::time::Duration;

use colink_ble::{Adapter, ConnectError, DeviceId, Link, LinkMode, LinkParams, Port, ScanEvent, ScanFilter};
use futures::StreamExt;
use tracing::debug;

use crate::engine::ConnectErrorCode;

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

/// Scans for `device`'s advert and opens a packet link to the PSM it advertises, all within `within`.
pub(crate) async fn dial(
    adapter: &Arc<dyn Adapter>,
    device: &str,
    params: LinkParams,
    within: Duration,
) -> Result<Arc<dyn Link>, DialError> {
    let id: DeviceId = device.parse().map_err(|_| DialError::BadDeviceId(device.to_owned()))?;
    let short = id.short();
    let deadline = tokio::time::Instant::now() + within;
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
                && advert.short_id == short
                && let Some(psm) = advert.psm
            {
                return Ok((peer, psm));
            }
        }
        Err(DialError::NotFound(device.to_owned()))
    })
    .await;
    let (peer, psm) = match found {
        Ok(result) => result?,
        Err(_) => return Err(DialError::NotFound(device.to_owned())),
    };
    debug!(%peer, psm = psm.value(), "found; connecting");
    // The connect shares the dial's deadline: a peer that stopped being connectable (its controller still
    // believes in the old link) must not hold a re-dial past the grace period; the caller retries instead.
    let link = tokio::time::timeout_at(deadline, adapter.connect(peer, Port::L2cap(psm), LinkMode::Packet, params))
        .await
        .map_err(|_| DialError::Connect(ConnectError::Timeout))?
        .map_err(DialError::Connect)?;
    Ok(Arc::from(link))
}
