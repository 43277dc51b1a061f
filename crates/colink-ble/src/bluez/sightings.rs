//! What the adapter's scans heard lately, per device: the record behind [`Adapter::last_seen`], so that a dial
//! to a device seen moments ago can connect to its advertised port without another discovery.
//!
//! [`Adapter::last_seen`]: crate::Adapter::last_seen

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::{Advert, PeerAddress, ShortDeviceId, Sighting};

/// At most this many devices are remembered; the one heard longest ago makes room for a new one (adverts come
/// from anyone in range: the record must not grow with them).
const MAX_DEVICES: usize = 256;

/// The latest advert heard from each device, with when.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    by_id: Mutex<HashMap<ShortDeviceId, (PeerAddress, Advert, Instant)>>,
}

impl Sightings {
    /// `peer` was heard advertising `advert` at `now`.
    pub(crate) fn heard(&self, now: Instant, peer: PeerAddress, advert: Advert) {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&advert.short_id)
            && map.len() >= MAX_DEVICES
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, _, at))| *at).map(|(id, _)| *id)
        {
            map.remove(&oldest);
        }
        map.insert(advert.short_id, (peer, advert, now));
    }

    /// A scan reported `peer` lost (or BlueZ forgot it): it is no longer a device seen lately.
    pub(crate) fn lost(&self, peer: PeerAddress) {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, (p, _, _)| *p != peer);
    }

    /// The latest sighting of `id`, aged as of `now`.
    pub(crate) fn get(&self, now: Instant, id: ShortDeviceId) -> Option<Sighting> {
        let map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&id).map(|(peer, advert, at)| Sighting::new(*peer, *advert, now.saturating_duration_since(*at)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Address, Psm};

    fn advert(id: u8) -> Advert {
        Advert::new(ShortDeviceId::from_bytes([id, 0, 0, 1])).with_psm(Psm::new(0x81).unwrap())
    }

    fn peer(n: u8) -> PeerAddress {
        PeerAddress::le_random(Address::new([0xC0, 0, 0, 0, 0, n]))
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_the_latest_advert_with_its_age_until_lost() {
        let s = Sightings::default();
        let t0 = Instant::now();
        assert_eq!(s.get(t0, advert(1).short_id), None);
        s.heard(t0, peer(1), advert(1));
        let moved = advert(1).with_psm(Psm::new(0x90).unwrap());
        s.heard(t0 + Duration::from_secs(1), peer(2), moved);
        let got = s.get(t0 + Duration::from_secs(3), moved.short_id).unwrap();
        assert_eq!((got.peer, got.advert, got.age), (peer(2), moved, Duration::from_secs(2)));
        s.lost(peer(1));
        assert!(s.get(t0, moved.short_id).is_some(), "a different address going away does not matter");
        s.lost(peer(2));
        assert_eq!(s.get(t0, moved.short_id), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_dropping_the_oldest() {
        let s = Sightings::default();
        let t0 = Instant::now();
        for i in 0..=MAX_DEVICES {
            let id = ShortDeviceId::from_bytes((i as u32).to_be_bytes());
            s.heard(t0 + Duration::from_millis(i as u64), peer(1), Advert::new(id));
        }
        let map = s.by_id.lock().unwrap();
        assert_eq!(map.len(), MAX_DEVICES);
        assert!(!map.contains_key(&ShortDeviceId::from_bytes(0u32.to_be_bytes())), "the oldest made room");
    }
}
