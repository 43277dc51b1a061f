//! The colink advert: service data that fits the 31-byte legacy advertising payload.
//!
//! Layout of the service data (little-endian where multi-byte), keyed by [`COLINK_SERVICE_UUID`] in an AD
//! structure of type "Service Data - 128-bit UUID" (0x21). The UUID is carried *only* as that key, never also in a
//! service-UUID list: UUID128 list + service data would not fit (47 bytes, see docs/simulator.md).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | bits 0-2: advert version (1..=7); bits 3-7: RFCOMM channel the device accepts BR/EDR links on (1..=30), 0 = none |
//! | 1 | 4 | short device id (first 4 bytes of the [`DeviceId`](crate::DeviceId)) |
//! | 5 | 1 | LE PSM the device listens on (0x80..=0xFF), 0 = not listening |
//! | 6 | 4 | service filter: a 32-bit Bloom filter of hosted service names |
//!
//! The 31-byte budget leaves no room for another byte, so the RFCOMM channel shares byte 0 with the version.
//! Version 1 adverts (written before BR/EDR links) have byte 0 = 1: no channel, decoded as before. Version 2 (this
//! crate) adds the channel; decoders that read byte 0 as a plain version number still find the id, the PSM and
//! the filter at their offsets and simply see a different version number.
//!
//! Decoders accept trailing bytes (later protocol versions may append fields) and never panic.

use crate::{Psm, RfcommChannel, ShortDeviceId};

/// The colink service UUID (`c0111c00-5e55-4a1e-9b1e-c011c0de0001`), used as the service-data key.
pub const COLINK_SERVICE_UUID: u128 = 0xc011_1c00_5e55_4a1e_9b1e_c011_c0de_0001;
/// The advert protocol version this crate writes (1..=7: the low three bits of byte 0).
pub const PROTOCOL_VERSION: u8 = 2;
/// Length of the service data this crate writes.
pub const SERVICE_DATA_LEN: usize = 10;
/// Maximum length of legacy advertising data.
pub const LEGACY_ADV_MAX: usize = 31;
/// AD type: flags.
pub const AD_TYPE_FLAGS: u8 = 0x01;
/// The flags this crate advertises when the device also accepts BR/EDR links: LE General Discoverable and
/// simultaneous LE and BR/EDR (controller and host).
pub const FLAGS_LE_AND_BR_EDR: u8 = 0x1A;
/// The flags this crate advertises for an LE-only device: LE General Discoverable, BR/EDR not supported.
pub const FLAGS_LE_ONLY: u8 = 0x06;
/// AD type: service data with a 128-bit UUID.
pub const AD_TYPE_SERVICE_DATA_128: u8 = 0x21;

/// Why bytes are not a colink advert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// The service data is shorter than the fixed fields.
    #[error("colink service data too short: {len} bytes, need {SERVICE_DATA_LEN}")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The protocol version (the low three bits of byte 0) is 0 (reserved).
    #[error("advert protocol version 0 is reserved")]
    ReservedVersion,
    /// The RFCOMM channel bits of byte 0 hold 31, which is not an RFCOMM server channel.
    #[error("advertised RFCOMM channel {0} is not a server channel (1..=30)")]
    InvalidRfcommChannel(u8),
    /// The PSM byte is neither 0 nor an LE dynamic PSM.
    #[error("advertised PSM {0:#04x} is not an LE dynamic PSM")]
    InvalidPsm(u8),
    /// An AD structure claims more bytes than remain.
    #[error("AD structure at offset {offset} claims {len} bytes, only {remaining} remain")]
    TruncatedAdStructure {
        /// Offset of the structure's length byte.
        offset: usize,
        /// Claimed length.
        len: usize,
        /// Bytes remaining after the length byte.
        remaining: usize,
    },
    /// The advertising data has no colink service data.
    #[error("no colink service data in the advertising data")]
    NotColink,
}

/// A compact filter of the services a device hosts: a 32-bit Bloom filter (3 bits per name).
///
/// False positives are possible, false negatives are not; the full list is fetched over the link.
///
/// ```
/// use colink_ble::ServiceFilter;
/// let f = ServiceFilter::EMPTY.with("chat").with("files");
/// assert!(f.may_contain("chat") && f.may_contain("files"));
/// assert!(!ServiceFilter::EMPTY.may_contain("chat"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceFilter(u32);

impl ServiceFilter {
    /// The filter that contains nothing.
    pub const EMPTY: Self = Self(0);

    /// A filter from its raw bits.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// This filter plus `name`.
    #[must_use]
    pub fn with(self, name: &str) -> Self {
        Self(self.0 | Self::mask(name))
    }

    /// Adds `name`.
    pub fn insert(&mut self, name: &str) {
        self.0 |= Self::mask(name);
    }

    /// Whether `name` may be hosted (false positives possible).
    pub fn may_contain(self, name: &str) -> bool {
        let m = Self::mask(name);
        self.0 & m == m
    }

    fn mask(name: &str) -> u32 {
        // FNV-1a 64: stable across platforms and versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (0..3).fold(0u32, |m, i| m | 1 << ((h >> (i * 5)) & 31))
    }
}

/// The decoded colink advert.
///
/// ```
/// use colink_ble::{Advert, DeviceId, Psm, RfcommChannel, ServiceFilter};
/// let advert = Advert::new(DeviceId::from_bytes([9; 16]).short())
///     .with_psm(Psm::new(0x81).unwrap())
///     .with_rfcomm(RfcommChannel::new(3).unwrap())
///     .with_services(ServiceFilter::EMPTY.with("chat"));
/// let ad = advert.to_ad_bytes();
/// assert!(ad.len() <= colink_ble::LEGACY_ADV_MAX);
/// assert_eq!(Advert::from_ad_bytes(&ad), Ok(advert));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Advert {
    /// Advert protocol version (1..=7; only the low three bits are encoded).
    pub version: u8,
    /// The advertiser's short device id.
    pub short_id: ShortDeviceId,
    /// The LE PSM it accepts colink links on, if any.
    pub psm: Option<Psm>,
    /// The RFCOMM channel it accepts BR/EDR colink links on, if any (its BR/EDR address is the advert's address).
    #[cfg_attr(feature = "serde", serde(default))]
    pub rfcomm: Option<RfcommChannel>,
    /// The services it hosts.
    pub services: ServiceFilter,
}

impl Advert {
    /// An advert of the current protocol version, not listening, hosting nothing.
    pub const fn new(short_id: ShortDeviceId) -> Self {
        Self { version: PROTOCOL_VERSION, short_id, psm: None, rfcomm: None, services: ServiceFilter::EMPTY }
    }

    /// With the PSM it listens on. Only LE PSMs fit the advert; a BR/EDR PSM is recorded as not listening.
    #[must_use]
    pub const fn with_psm(mut self, psm: Psm) -> Self {
        self.psm = if psm.is_le() { Some(psm) } else { None };
        self
    }

    /// With the RFCOMM channel it accepts BR/EDR links on.
    #[must_use]
    pub const fn with_rfcomm(mut self, channel: RfcommChannel) -> Self {
        self.rfcomm = Some(channel);
        self
    }

    /// With this service filter.
    #[must_use]
    pub const fn with_services(mut self, services: ServiceFilter) -> Self {
        self.services = services;
        self
    }

    /// The service data (value of the AD structure keyed by [`COLINK_SERVICE_UUID`]), as BlueZ's
    /// `Advertisement::service_data` wants it.
    pub fn to_service_data(&self) -> [u8; SERVICE_DATA_LEN] {
        let mut out = [0u8; SERVICE_DATA_LEN];
        let channel = self.rfcomm.map_or(0, RfcommChannel::value);
        out[0] = (channel << 3) | (self.version & 0x07);
        out[1..5].copy_from_slice(&self.short_id.to_bytes());
        // `with_psm` keeps only LE PSMs, which fit one byte; anything else would be a bug, written as 0.
        out[5] = self.psm.and_then(|p| u8::try_from(p.value()).ok()).unwrap_or(0);
        out[6..10].copy_from_slice(&self.services.bits().to_le_bytes());
        out
    }

    /// Decodes service data (as found under [`COLINK_SERVICE_UUID`] in a scan result).
    pub fn from_service_data(data: &[u8]) -> Result<Self, AdvertError> {
        let Some(fixed) = data.get(..SERVICE_DATA_LEN) else {
            return Err(AdvertError::TooShort { len: data.len() });
        };
        let version = fixed[0] & 0x07;
        if version == 0 {
            return Err(AdvertError::ReservedVersion);
        }
        let rfcomm = match fixed[0] >> 3 {
            0 => None,
            c => Some(RfcommChannel::new(c).map_err(|_| AdvertError::InvalidRfcommChannel(c))?),
        };
        let short_id = ShortDeviceId::from_bytes([fixed[1], fixed[2], fixed[3], fixed[4]]);
        let psm = match fixed[5] {
            0 => None,
            b => Some(Psm::new(u16::from(b)).map_err(|_| AdvertError::InvalidPsm(b))?),
        };
        let services = ServiceFilter::from_bits(u32::from_le_bytes([fixed[6], fixed[7], fixed[8], fixed[9]]));
        Ok(Self { version, short_id, psm, rfcomm, services })
    }

    /// The complete legacy advertising data: a flags structure ([`FLAGS_LE_ONLY`], or [`FLAGS_LE_AND_BR_EDR`]
    /// when an RFCOMM channel is advertised) and the service data. Always [`LEGACY_ADV_MAX`] bytes or fewer.
    pub fn to_ad_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEGACY_ADV_MAX);
        let flags = if self.rfcomm.is_some() { FLAGS_LE_AND_BR_EDR } else { FLAGS_LE_ONLY };
        out.extend_from_slice(&[2, AD_TYPE_FLAGS, flags]);
        // Length byte counts the type byte, the 16 UUID bytes and the data: 1 + 16 + 10 = 27.
        out.push(27);
        out.push(AD_TYPE_SERVICE_DATA_128);
        out.extend_from_slice(&COLINK_SERVICE_UUID.to_le_bytes());
        out.extend_from_slice(&self.to_service_data());
        out
    }

    /// Finds and decodes the colink service data in raw advertising data (a sequence of AD structures).
    ///
    /// Returns [`AdvertError::NotColink`] when the data is well-formed but carries no colink advert.
    pub fn from_ad_bytes(ad: &[u8]) -> Result<Self, AdvertError> {
        let uuid = COLINK_SERVICE_UUID.to_le_bytes();
        let mut offset = 0;
        while offset < ad.len() {
            let len = usize::from(ad[offset]);
            if len == 0 {
                break; // zero padding ends the significant part
            }
            let remaining = ad.len() - offset - 1;
            let Some(body) = ad.get(offset + 1..offset + 1 + len) else {
                return Err(AdvertError::TruncatedAdStructure { offset, len, remaining });
            };
            if body[0] == AD_TYPE_SERVICE_DATA_128 && body.get(1..17) == Some(&uuid[..]) {
                return Self::from_service_data(&body[17..]);
            }
            offset += 1 + len;
        }
        Err(AdvertError::NotColink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn advert_strategy() -> impl Strategy<Value = Advert> {
        (1u8..=7, any::<[u8; 4]>(), proptest::option::of(0x80u16..=0xFF), proptest::option::of(1u8..=30), any::<u32>())
            .prop_map(|(version, id, psm, rfcomm, bits)| Advert {
                version,
                short_id: ShortDeviceId::from_bytes(id),
                psm: psm.and_then(|p| Psm::new(p).ok()),
                rfcomm: rfcomm.and_then(|c| RfcommChannel::new(c).ok()),
                services: ServiceFilter::from_bits(bits),
            })
    }

    proptest! {
        #[test]
        fn round_trips_and_fits_legacy(advert in advert_strategy()) {
            let ad = advert.to_ad_bytes();
            prop_assert_eq!(ad.len(), LEGACY_ADV_MAX);
            prop_assert_eq!(Advert::from_ad_bytes(&ad), Ok(advert));
            prop_assert_eq!(Advert::from_service_data(&advert.to_service_data()), Ok(advert));
        }

        #[test]
        fn version_1_adverts_still_decode(id in any::<[u8; 4]>(), psm in proptest::option::of(0x80u8..), bits in any::<u32>()) {
            // Exactly what a version-1 writer put on the air: byte 0 = 1.
            let mut v1 = vec![1u8];
            v1.extend_from_slice(&id);
            v1.push(psm.unwrap_or(0));
            v1.extend_from_slice(&bits.to_le_bytes());
            let advert = Advert::from_service_data(&v1).unwrap();
            prop_assert_eq!(advert.version, 1);
            prop_assert_eq!(advert.short_id, ShortDeviceId::from_bytes(id));
            prop_assert_eq!(advert.psm.map(|p| p.value()), psm.map(u16::from));
            prop_assert_eq!(advert.rfcomm, None);
            prop_assert_eq!(advert.services, ServiceFilter::from_bits(bits));
            prop_assert_eq!(advert.to_service_data().to_vec(), v1, "re-encodes to the same bytes");
        }

        #[test]
        fn a_version_1_reader_of_a_version_2_advert_finds_its_fields(advert in advert_strategy()) {
            // Offsets 1..10 are unchanged: a reader that knows only version 1 gets the id, PSM and filter right.
            let data = advert.to_service_data();
            prop_assert_eq!(&data[1..5], &advert.short_id.to_bytes()[..]);
            prop_assert_eq!(u16::from(data[5]), advert.psm.map_or(0, |p| p.value()));
            prop_assert_eq!(u32::from_le_bytes([data[6], data[7], data[8], data[9]]), advert.services.bits());
            prop_assert_ne!(data[0], 0, "never the reserved version byte");
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Advert::from_ad_bytes(&bytes);
            let _ = Advert::from_service_data(&bytes);
        }

        #[test]
        fn filter_has_no_false_negatives(names in proptest::collection::vec(".{0,12}", 0..8)) {
            let f = names.iter().fold(ServiceFilter::EMPTY, |f, n| f.with(n));
            for n in &names {
                prop_assert!(f.may_contain(n));
            }
        }
    }

    #[test]
    fn typed_errors() {
        assert_eq!(Advert::from_service_data(&[1, 2, 3]), Err(AdvertError::TooShort { len: 3 }));
        assert_eq!(Advert::from_service_data(&[0; 10]), Err(AdvertError::ReservedVersion));
        assert_eq!(Advert::from_service_data(&[3 << 3, 1, 2, 3, 4, 0, 0, 0, 0, 0]), Err(AdvertError::ReservedVersion));
        assert_eq!(
            Advert::from_service_data(&[(31 << 3) | 2, 1, 2, 3, 4, 0, 0, 0, 0, 0]),
            Err(AdvertError::InvalidRfcommChannel(31))
        );
        let bredr = Advert::new(ShortDeviceId::from_bytes([1; 4])).with_rfcomm(RfcommChannel::new(5).unwrap());
        assert_eq!(bredr.to_service_data()[0], (5 << 3) | PROTOCOL_VERSION);
        assert_eq!(bredr.to_ad_bytes()[2], FLAGS_LE_AND_BR_EDR);
        assert_eq!(Advert::new(ShortDeviceId::from_bytes([1; 4])).to_ad_bytes()[2], FLAGS_LE_ONLY);
        let mut d = [1u8; 10];
        d[5] = 0x10;
        assert_eq!(Advert::from_service_data(&d), Err(AdvertError::InvalidPsm(0x10)));
        assert_eq!(Advert::from_ad_bytes(&[2, 1, 6]), Err(AdvertError::NotColink));
        assert!(matches!(Advert::from_ad_bytes(&[5, 1, 6]), Err(AdvertError::TruncatedAdStructure { .. })));
        // Trailing bytes from a later version are accepted.
        let mut longer = Advert::new(ShortDeviceId::from_bytes([1; 4])).to_service_data().to_vec();
        longer.push(0xAA);
        assert!(Advert::from_service_data(&longer).is_ok());
    }
}
