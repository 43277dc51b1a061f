//! The colink advert as BlueZ wants it (a bluer `Advertisement`) and as BlueZ reports it (a device's
//! `ServiceData` property).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bluer::Uuid;
use bluer::adv::{Advertisement, Type};

use crate::{Advert, COLINK_SERVICE_UUID, LEGACY_ADV_MAX, Rssi};

/// The colink service UUID as bluer's `Uuid`.
pub(crate) fn colink_uuid() -> Uuid {
    Uuid::from_u128(COLINK_SERVICE_UUID)
}

/// Fastest advertising interval asked for (BlueZ may clamp it).
const ADV_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Slowest advertising interval asked for.
const ADV_MAX_INTERVAL: Duration = Duration::from_millis(40);

/// The bluer advertisement for a colink advert: connectable, general discoverable, the colink UUID **only** as
/// the service-data key.
///
/// Quirk (vm-rig.md, "31-byte advert limit"): a 128-bit UUID in `service_uuids` plus the service data under the
/// same UUID is 47 bytes and BlueZ refuses it ("Advertising data too long"). So `service_uuids` stays empty and
/// the advertising data is flags (3 bytes) + service data (2 + 16 + 10 bytes) = 31 bytes. No local name either:
/// it would not fit.
pub(crate) fn to_advertisement(advert: &Advert) -> Advertisement {
    Advertisement {
        advertisement_type: Type::Peripheral,
        service_data: BTreeMap::from([(colink_uuid(), advert.to_service_data().to_vec())]),
        discoverable: Some(true),
        min_interval: Some(ADV_MIN_INTERVAL),
        max_interval: Some(ADV_MAX_INTERVAL),
        ..Default::default()
    }
}

/// The legacy advertising-data length BlueZ will build for `adv` (flags + service UUID lists + service data +
/// manufacturer data + name), to check it against [`LEGACY_ADV_MAX`] before registering.
pub(crate) fn legacy_ad_len(adv: &Advertisement) -> usize {
    let uuid_len = |u: &Uuid| if u.as_u128() >> 96 == 0 || is_sig_base(u) { 2 } else { 16 };
    let flags = if adv.discoverable.is_some() { 3 } else { 0 };
    let uuids: usize = if adv.service_uuids.is_empty() {
        0
    } else {
        // one list per UUID size, each with its own 2-byte header
        let (short, long): (Vec<&Uuid>, Vec<&Uuid>) = adv.service_uuids.iter().partition(|u| uuid_len(u) == 2);
        let list = |v: &[&Uuid], size| if v.is_empty() { 0 } else { 2 + v.len() * size };
        list(&short, 2) + list(&long, 16)
    };
    let service_data: usize = adv.service_data.iter().map(|(u, d)| 2 + uuid_len(u) + d.len()).sum();
    let manufacturer: usize = adv.manufacturer_data.values().map(|d| 2 + 2 + d.len()).sum();
    let name = adv.local_name.as_ref().map_or(0, |n| 2 + n.len());
    flags + uuids + service_data + manufacturer + name
}

fn is_sig_base(u: &Uuid) -> bool {
    // 0000xxxx-0000-1000-8000-00805f9b34fb
    const BASE: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;
    u.as_u128() & !(0xffff_u128 << 96) == BASE
}

/// Whether `adv` fits legacy advertising.
pub(crate) fn fits_legacy(adv: &Advertisement) -> bool {
    legacy_ad_len(adv) <= LEGACY_ADV_MAX
}

/// The colink advert in a device's `ServiceData` property, if it carries a valid one.
///
/// This is colink's own post-filter. Quirk (bluez.md): BlueZ merges the discovery filters of every D-Bus client,
/// and its UUID filter can drop adverts that carry the UUID only as a service-data key, so scans set no UUID filter
/// and every device BlueZ reports passes through here.
pub(crate) fn colink_advert(service_data: Option<&HashMap<Uuid, Vec<u8>>>) -> Option<Advert> {
    let data = service_data?.get(&colink_uuid())?;
    Advert::from_service_data(data).ok()
}

/// Maps BlueZ's RSSI property. Quirk (vm-rig.md): BlueZ reports 127 ("not available", always so on btvirt
/// controllers); that and a missing property become [`Rssi::UNKNOWN`].
pub(crate) fn rssi_from_bluez(rssi: Option<i16>) -> Rssi {
    rssi.map_or(Rssi::UNKNOWN, Rssi::from_dbm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Psm, ServiceFilter, ShortDeviceId};

    fn advert() -> Advert {
        Advert::new(ShortDeviceId::from_bytes([1, 2, 3, 4]))
            .with_psm(Psm::new(0x81).unwrap())
            .with_services(ServiceFilter::EMPTY.with("chat"))
    }

    #[test]
    fn advertisement_carries_uuid_only_as_service_data_key() {
        let adv = to_advertisement(&advert());
        assert!(adv.service_uuids.is_empty(), "UUID128 list + service data would not fit 31 bytes");
        assert_eq!(adv.advertisement_type, Type::Peripheral, "must be connectable");
        assert_eq!(adv.discoverable, Some(true));
        assert_eq!(adv.service_data.get(&colink_uuid()).map(Vec::as_slice), Some(&advert().to_service_data()[..]));
        assert_eq!(legacy_ad_len(&adv), advert().to_ad_bytes().len());
        assert!(fits_legacy(&adv));
        // the layout the quirk forbids really is too long
        let mut both = adv;
        both.service_uuids.insert(colink_uuid());
        assert_eq!(legacy_ad_len(&both), 49);
        assert!(!fits_legacy(&both));
    }

    #[test]
    fn advert_round_trips_through_bluez_service_data() {
        let adv = to_advertisement(&advert());
        let reported: HashMap<Uuid, Vec<u8>> = adv.service_data.into_iter().collect();
        assert_eq!(colink_advert(Some(&reported)), Some(advert()));
    }

    #[test]
    fn post_filter_drops_non_colink_devices() {
        assert_eq!(colink_advert(None), None);
        let other: HashMap<Uuid, Vec<u8>> =
            HashMap::from([(Uuid::from_u128(0x1234), advert().to_service_data().to_vec())]);
        assert_eq!(colink_advert(Some(&other)), None, "colink bytes under another UUID");
        let garbage: HashMap<Uuid, Vec<u8>> = HashMap::from([(colink_uuid(), vec![0; 10])]);
        assert_eq!(colink_advert(Some(&garbage)), None, "reserved version 0");
        let short: HashMap<Uuid, Vec<u8>> = HashMap::from([(colink_uuid(), vec![1, 2])]);
        assert_eq!(colink_advert(Some(&short)), None);
    }

    #[test]
    fn rssi_127_is_unknown() {
        assert_eq!(rssi_from_bluez(Some(127)), Rssi::UNKNOWN);
        assert_eq!(rssi_from_bluez(None), Rssi::UNKNOWN);
        assert_eq!(rssi_from_bluez(Some(-60)).dbm(), Some(-60));
    }
}
