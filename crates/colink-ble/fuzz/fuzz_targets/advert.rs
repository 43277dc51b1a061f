//! Fuzzes the advert decoders: raw advertising data and bare service data from any peer in radio range
//! either decode to an advert that survives a re-encoding round trip, or give a typed error.
#![no_main]

use colink_ble::{Advert, LEGACY_ADV_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for decoded in [Advert::from_ad_bytes(data), Advert::from_service_data(data)] {
        if let Ok(advert) = decoded {
            assert!((1..=7).contains(&advert.version), "the version is the low three bits of byte 0");
            assert_eq!(Advert::from_service_data(&advert.to_service_data()), Ok(advert));
            let ad = advert.to_ad_bytes();
            assert!(ad.len() <= LEGACY_ADV_MAX);
            assert_eq!(Advert::from_ad_bytes(&ad), Ok(advert));
        }
    }
});
