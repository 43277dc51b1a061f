//! The suite's own advert: which test is running and where the responder listens.
//!
//! Carried as service data keyed by a 128-bit UUID and nothing else. Kernel/BlueZ quirk (vm-rig.md, "31-byte
//! advert limit"): legacy advertising data is 31 bytes; the UUID also listed in `service_uuids` plus 8 bytes of
//! service data is 47 bytes and registration fails with "Advertising data too long". Flags (3) + service data
//! header (2) + UUID (16) + 8 bytes = 29 bytes fits.

use bluer::Uuid;

/// Service-data key of the hw-tests advert (test-only; colink's own service UUID lives in colink-ble).
pub(crate) const TEST_UUID: Uuid = Uuid::from_u128(0xc011_4b00_7e57_4e11_a5e3_0000_6877_7473);

/// Format version in byte 0.
const VERSION: u8 = 1;

/// Encoded length.
pub(crate) const LEN: usize = 8;

/// Decoded advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Advert {
    /// Which test the responder is serving (so a stale advert of the previous test is not taken).
    pub(crate) test: u8,
    /// Random per advert.
    pub(crate) nonce: u32,
    /// LE CoC PSM the responder listens on (0: none).
    pub(crate) psm: u8,
    /// RFCOMM channel the responder listens on (0: none).
    pub(crate) channel: u8,
}

impl Advert {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LEN);
        v.push(VERSION);
        v.push(self.test);
        v.extend_from_slice(&self.nonce.to_be_bytes());
        v.push(self.psm);
        v.push(self.channel);
        v
    }

    /// `None` for anything that is not a version-1 hw-tests advert (peer input: never panics).
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < LEN || b[0] != VERSION {
            return None;
        }
        Some(Self { test: b[1], nonce: u32::from_be_bytes([b[2], b[3], b[4], b[5]]), psm: b[6], channel: b[7] })
    }
}

/// Test ids carried in [`Advert::test`].
pub(crate) mod test_id {
    pub(crate) const DISCOVER: u8 = 1;
    pub(crate) const L2CAP: u8 = 2;
    pub(crate) const RFCOMM: u8 = 3;
    pub(crate) const PAIR: u8 = 4;
}

/// A nonce that differs between adverts and runs (no crypto needed).
pub(crate) fn nonce() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    RandomState::new().hash_one(t) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fits_legacy_advert() {
        let a = Advert { test: test_id::L2CAP, nonce: 0xdead_beef, psm: 0x80, channel: 3 };
        let b = a.encode();
        assert_eq!(b.len(), LEN);
        // flags AD (3) + service data AD header (2) + 128-bit UUID (16) + payload must fit 31 bytes
        assert!(3 + 2 + 16 + b.len() <= 31);
        assert_eq!(Advert::decode(&b), Some(a));
    }

    #[test]
    fn rejects_foreign_or_short_data() {
        assert_eq!(Advert::decode(&[]), None);
        assert_eq!(Advert::decode(&[1, 2, 3]), None);
        assert_eq!(Advert::decode(&[9, 2, 0, 0, 0, 0, 0x80, 0]), None);
        // longer data from a later version-1 writer is accepted
        assert!(Advert::decode(&[1, 2, 0, 0, 0, 0, 0x80, 0, 7]).is_some());
    }
}
