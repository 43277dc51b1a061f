//! Radio addresses and the stable device identity.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Bluetooth device address (`BD_ADDR`), most significant byte first as written
/// (`AA:BB:CC:DD:EE:FF`).
///
/// ```
/// use colink_ble::Address;
/// let a: Address = "C0:FF:EE:00:00:01".parse().unwrap();
/// assert_eq!(a.to_string(), "C0:FF:EE:00:00:01");
/// assert_eq!(a.octets()[0], 0xC0);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Address([u8; 6]);

impl Address {
    /// The address with the given octets, most significant first.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The octets, most significant first.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(f, "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}", o[0], o[1], o[2], o[3], o[4], o[5])
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not an [`Address`] or a [`DeviceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressParseError {
    /// The text does not have the expected shape (six `:`-separated hex octets, or 32 hex digits).
    #[error("malformed address or id: expected {expected}")]
    Malformed {
        /// What shape was expected.
        expected: &'static str,
    },
}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = AddressParseError::Malformed { expected: "six ':'-separated hex octets" };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or_else(|| err.clone())?;
            if part.len() != 2 {
                return Err(err);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| err.clone())?;
        }
        if parts.next().is_some() {
            return Err(err);
        }
        Ok(Self(out))
    }
}

/// The kind of an [`Address`], as needed to open an L2CAP socket to it (mirrors bluer's `AddressType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum AddressType {
    /// Classic BR/EDR.
    BrEdr,
    /// LE public (IEEE-assigned) address.
    LePublic,
    /// LE random address (static or resolvable private; the latter rotates).
    LeRandom,
}

/// A peer as the radio sees it: an address and its type.
///
/// This is what scans report and what [`Adapter::connect`](crate::Adapter::connect) dials. It is *not* a stable
/// identity: LE privacy rotates random addresses. Use [`DeviceId`] (carried in the advert) to recognise a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PeerAddress {
    /// The radio address.
    pub address: Address,
    /// Its type.
    pub address_type: AddressType,
}

impl PeerAddress {
    /// A peer with an LE public address.
    pub const fn le_public(address: Address) -> Self {
        Self { address, address_type: AddressType::LePublic }
    }

    /// A peer with an LE random address.
    pub const fn le_random(address: Address) -> Self {
        Self { address, address_type: AddressType::LeRandom }
    }

    /// A BR/EDR peer.
    pub const fn br_edr(address: Address) -> Self {
        Self { address, address_type: AddressType::BrEdr }
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.address_type {
            AddressType::BrEdr => "br/edr",
            AddressType::LePublic => "le-public",
            AddressType::LeRandom => "le-random",
        };
        write!(f, "{} ({kind})", self.address)
    }
}

/// A device's stable 128-bit identity, independent of its (possibly rotating) radio address.
///
/// colink derives it from the device identity key; the advert carries only its [`ShortDeviceId`] and the full id is
/// confirmed over the link.
///
/// ```
/// use colink_ble::DeviceId;
/// let id = DeviceId::from_bytes([7; 16]);
/// assert_eq!(id.to_string().parse::<DeviceId>().unwrap(), id);
/// assert_eq!(id.short().to_bytes(), [7; 4]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn to_bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The first four bytes: a stable short form for people and logs. Adverts carry [`advert_id`](Self::advert_id)
    /// instead, which rotates.
    pub const fn short(&self) -> ShortDeviceId {
        ShortDeviceId([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The short id this device advertises during rotation slot `slot` ([`advert_slot`]): the first 4 bytes of
    /// SHA-256(`"colink advert id v1\0"` ‖ device id ‖ slot as u64 big-endian). Whoever knows the device id
    /// (the devices that dial it) recognises its adverts; an observer who does not cannot link the adverts of
    /// two slots (docs/security.md, privacy).
    pub fn advert_id(&self, slot: u64) -> ShortDeviceId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"colink advert id v1\0");
        h.update(self.0);
        h.update(slot.to_be_bytes());
        let d = h.finalize();
        ShortDeviceId([d[0], d[1], d[2], d[3]])
    }

    /// The advert ids a dialler accepts for this device at `slot`: the slot's and its neighbours' (clocks of two
    /// devices may differ by up to a slot).
    pub fn advert_ids_around(&self, slot: u64) -> [ShortDeviceId; 3] {
        [self.advert_id(slot), self.advert_id(slot.saturating_sub(1)), self.advert_id(slot.saturating_add(1))]
    }
}

/// How long an advert id lasts ([`DeviceId::advert_id`]).
pub const ADVERT_ID_PERIOD: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The rotation slot `at` falls in: whole [`ADVERT_ID_PERIOD`]s since the Unix epoch.
pub fn advert_slot(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / ADVERT_ID_PERIOD.as_secs())
}

/// How long from `at` until the next slot begins.
pub fn until_next_advert_slot(at: std::time::SystemTime) -> std::time::Duration {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let period = ADVERT_ID_PERIOD.as_secs();
    std::time::Duration::from_secs(period - secs % period)
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = AddressParseError::Malformed { expected: "32 hex digits" };
        if s.len() != 32 || !s.is_ascii() {
            return Err(err);
        }
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            let pair = s.get(i * 2..i * 2 + 2).ok_or_else(|| err.clone())?;
            *slot = u8::from_str_radix(pair, 16).map_err(|_| err.clone())?;
        }
        Ok(Self(out))
    }
}

/// The advert-sized prefix of a [`DeviceId`] (4 bytes). Collisions are possible (one in ~4 billion per pair); the
/// full id is checked over the link.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShortDeviceId([u8; 4]);

impl ShortDeviceId {
    /// The short id with these bytes.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub const fn to_bytes(&self) -> [u8; 4] {
        self.0
    }

    /// Whether `id` starts with this short id.
    pub fn matches(&self, id: &DeviceId) -> bool {
        id.short() == *self
    }
}

impl fmt::Display for ShortDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShortDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortDeviceId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_and_rejects_garbage() {
        let a = Address::new([0, 1, 0xab, 0xcd, 0xef, 0xff]);
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
        for bad in ["", "00:11", "00:11:22:33:44:55:66", "0:11:22:33:44:55", "zz:11:22:33:44:55"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_id_rejects_bad_text() {
        assert!("abc".parse::<DeviceId>().is_err());
        assert!("é".repeat(16).parse::<DeviceId>().is_err());
        assert!("g".repeat(32).parse::<DeviceId>().is_err());
    }
}
