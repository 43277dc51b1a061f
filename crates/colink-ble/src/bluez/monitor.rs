//! An advertisement monitor for colink adverts (`org.bluez.AdvertisementMonitor1`), held while a scan runs.
//!
//! Why (docs/vm-rig.md, "adverts hidden by a kernel discovery race"): the kernel drops advertising reports that
//! arrive before its discovery state is active, and LE discovery runs with the controller's duplicate filter on,
//! so a device already advertising when discovery starts may not be reported for the whole discovery session.
//! While an advertisement monitor is registered, the kernel scans with the duplicate filter *off* and forwards
//! reports even when no discovery is active (passive scanning), so the next advert of such a device arrives.
//! The monitor's own `DeviceFound` events are treated as sightings too.
//!
//! bluetoothd offers the monitor API only where it is enabled (experimental in some BlueZ versions: `bluetoothd
//! -E` or `Experimental = true`); without it scans work as before, with discovery restarts as the only remedy.

use bluer::monitor::{Monitor, MonitorEvent, MonitorHandle, MonitorManager, Pattern};
use futures::StreamExt;

use super::advert::colink_uuid;

/// AD type "Service Data - 128-bit UUID" (Bluetooth Assigned Numbers, 2.3): the UUID, little-endian, then data.
const SERVICE_DATA_128: u8 = 0x21;

/// A registered monitor; dropping it unregisters it.
pub(crate) struct ColinkMonitor {
    // Field order is drop order: the target first, then the manager's root object.
    handle: MonitorHandle,
    _manager: MonitorManager,
}

impl ColinkMonitor {
    /// Registers a monitor for adverts carrying colink service data on `adapter`, waiting at most `limit` for
    /// bluetoothd to activate it; `None` when bluetoothd does not offer the API, refuses it or is slower, which
    /// is logged at debug level.
    pub(crate) async fn register(adapter: &bluer::Adapter, limit: std::time::Duration) -> Option<Self> {
        let manager = match adapter.monitor().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "no advertisement monitor (bluetoothd does not offer the API)");
                return None;
            }
        };
        let monitor = Monitor { patterns: Some(vec![colink_pattern()]), ..Default::default() };
        match tokio::time::timeout(limit, manager.register(monitor)).await {
            Ok(Ok(handle)) => {
                tracing::debug!("advertisement monitor for colink adverts active");
                Some(Self { handle, _manager: manager })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "advertisement monitor refused");
                None
            }
            Err(_) => {
                tracing::debug!(?limit, "advertisement monitor not activated in time");
                None
            }
        }
    }

    /// The address of the next device the monitor finds (a colink advert was just received from it); `None`
    /// once bluetoothd released the monitor.
    pub(crate) async fn found(&mut self) -> Option<bluer::Address> {
        loop {
            if let MonitorEvent::DeviceFound(id) = self.handle.next().await? {
                return Some(id.device);
            }
        }
    }
}

/// The pattern that matches colink adverts: service data under the colink UUID.
fn colink_pattern() -> Pattern {
    Pattern::new(SERVICE_DATA_128, 0, &colink_uuid().as_u128().to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_the_colink_uuid_as_it_is_on_the_air() {
        let p = colink_pattern();
        assert_eq!(p.data_type, 0x21);
        assert_eq!(p.start_position, 0);
        // On the air a 128-bit UUID is little-endian: the last byte of its text form comes first.
        let text = colink_uuid().to_string().replace('-', "");
        assert_eq!(format!("{:02x}", p.content[0]), text[30..32]);
        assert_eq!(format!("{:02x}", p.content[15]), text[0..2]);
        assert_eq!(p.content.len(), 16);
    }
}
