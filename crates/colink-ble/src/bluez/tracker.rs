//! Found / updated / lost bookkeeping shared by the BlueZ and btleplug scans (declared from lib.rs so both
//! backends use one copy).

use std::collections::HashMap;
use std::time::Duration;

use crate::{Advert, PeerAddress, Rssi, ScanEvent, ScanFilter};

/// Found / updated / lost bookkeeping of one scan. Sans-IO: times are offsets from the scan's start.
#[derive(Debug)]
pub(crate) struct ScanTracker {
    filter: ScanFilter,
    known: HashMap<PeerAddress, Known>,
}

#[derive(Debug)]
struct Known {
    advert: Advert,
    heard: Duration,
    reported: Duration,
}

impl ScanTracker {
    pub(crate) fn new(filter: ScanFilter) -> Self {
        Self { filter, known: HashMap::new() }
    }

    /// A device was heard with `advert` (already post-filtered to colink adverts). Returns the event to report.
    pub(crate) fn heard(&mut self, now: Duration, peer: PeerAddress, rssi: Rssi, advert: Advert) -> Option<ScanEvent> {
        if !self.filter.accepts(rssi, &advert) {
            return None;
        }
        match self.known.get_mut(&peer) {
            None => {
                self.known.insert(peer, Known { advert, heard: now, reported: now });
                Some(ScanEvent::DeviceFound { peer, rssi, advert })
            }
            Some(k) => {
                k.heard = now;
                let due = now.saturating_sub(k.reported) >= self.filter.update_interval;
                if k.advert != advert || due {
                    k.advert = advert;
                    k.reported = now;
                    Some(ScanEvent::DeviceUpdated { peer, rssi, advert })
                } else {
                    None
                }
            }
        }
    }

    /// BlueZ forgot the device (its own expiry, or removal): report it lost if it was reported found.
    pub(crate) fn removed(&mut self, peer: PeerAddress) -> Option<ScanEvent> {
        self.known.remove(&peer).map(|_| ScanEvent::DeviceLost { peer })
    }

    /// Devices not heard for the filter's `lost_after`, reported lost (and forgotten).
    pub(crate) fn expire(&mut self, now: Duration) -> Vec<ScanEvent> {
        let lost_after = self.filter.lost_after;
        let mut lost: Vec<PeerAddress> =
            self.known.iter().filter(|(_, k)| now.saturating_sub(k.heard) >= lost_after).map(|(p, _)| *p).collect();
        lost.sort();
        for p in &lost {
            self.known.remove(p);
        }
        lost.into_iter().map(|peer| ScanEvent::DeviceLost { peer }).collect()
    }

    /// When the next device would be lost, if any.
    pub(crate) fn next_expiry(&self) -> Option<Duration> {
        self.known.values().map(|k| k.heard + self.filter.lost_after).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Psm, ServiceFilter, ShortDeviceId};

    fn advert() -> Advert {
        Advert::new(ShortDeviceId::from_bytes([1, 2, 3, 4]))
            .with_psm(Psm::new(0x81).unwrap())
            .with_services(ServiceFilter::EMPTY.with("chat"))
    }

    #[test]
    fn tracker_reports_found_updated_lost() {
        let s = Duration::from_secs;
        let filter = ScanFilter::default().with_lost_after(s(10)).with_update_interval(s(1));
        let mut t = ScanTracker::new(filter);
        let peer = PeerAddress::le_public(Address::new([1; 6]));
        let rssi = Rssi::from_dbm(-50);
        assert!(matches!(t.heard(s(0), peer, rssi, advert()), Some(ScanEvent::DeviceFound { .. })));
        // same advert within the update interval: quiet
        assert_eq!(t.heard(Duration::from_millis(500), peer, rssi, advert()), None);
        // changed advert: reported at once
        let changed = advert().with_services(ServiceFilter::EMPTY.with("files"));
        assert!(matches!(
            t.heard(Duration::from_millis(600), peer, rssi, changed),
            Some(ScanEvent::DeviceUpdated { .. })
        ));
        // unchanged after the interval: reported
        assert!(matches!(t.heard(s(2), peer, rssi, changed), Some(ScanEvent::DeviceUpdated { .. })));
        assert_eq!(t.next_expiry(), Some(s(12)));
        assert!(t.expire(s(11)).is_empty());
        assert_eq!(t.expire(s(12)), vec![ScanEvent::DeviceLost { peer }]);
        assert_eq!(t.next_expiry(), None);
        // heard again after being lost: found again
        assert!(matches!(t.heard(s(13), peer, rssi, advert()), Some(ScanEvent::DeviceFound { .. })));
        assert_eq!(t.removed(peer), Some(ScanEvent::DeviceLost { peer }));
        assert_eq!(t.removed(peer), None);
    }

    #[test]
    fn tracker_applies_filter() {
        let mut t = ScanTracker::new(ScanFilter::default().with_min_rssi(-70).with_service("files"));
        let peer = PeerAddress::le_public(Address::new([2; 6]));
        assert_eq!(t.heard(Duration::ZERO, peer, Rssi::from_dbm(-90), advert()), None, "too weak");
        assert_eq!(t.heard(Duration::ZERO, peer, Rssi::from_dbm(-50), advert()), None, "service absent");
        let files = advert().with_services(ServiceFilter::EMPTY.with("files"));
        assert!(t.heard(Duration::ZERO, peer, Rssi::UNKNOWN, files).is_some(), "unknown RSSI passes");
    }
}
