//! Link-level parameters: PSMs, channels, MTU, RSSI, PHY, security.

use std::fmt;
use std::time::Duration;

/// A value outside the range a parameter type allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidParam {
    /// Not an LE dynamic PSM (0x80..=0xFF) nor a valid BR/EDR PSM (odd, bit 8 clear).
    #[error("invalid PSM {0:#06x}")]
    Psm(u16),
    /// Not an RFCOMM server channel (1..=30).
    #[error("invalid RFCOMM channel {0}")]
    RfcommChannel(u8),
    /// Outside 23..=65535.
    #[error("invalid MTU {0} (L2CAP LE minimum is 23)")]
    Mtu(u16),
}

/// An L2CAP protocol/service multiplexer.
///
/// Only values a colink service may listen on are representable: LE dynamic PSMs `0x80..=0xFF` (what the Linux
/// kernel accepts for LE CoC) and BR/EDR PSMs (odd, least significant bit of the upper byte clear, e.g. `0x1001`).
///
/// ```
/// use colink_ble::Psm;
/// assert!(Psm::new(0x80).unwrap().is_le());
/// assert!(Psm::new(0x1001).is_ok());
/// assert!(Psm::new(0x1002).is_err()); // even
/// assert!(Psm::new(0x0100).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(try_from = "u16", into = "u16"))]
pub struct Psm(u16);

impl Psm {
    /// The first LE dynamic PSM.
    pub const LE_DYNAMIC_FIRST: u16 = 0x80;
    /// The last LE dynamic PSM.
    pub const LE_DYNAMIC_LAST: u16 = 0xFF;

    /// Checks `value` and wraps it.
    pub const fn new(value: u16) -> Result<Self, InvalidParam> {
        let le = value >= Self::LE_DYNAMIC_FIRST && value <= Self::LE_DYNAMIC_LAST;
        let br_edr = value & 1 == 1 && value & 0x0100 == 0 && value > 0xFF;
        if le || br_edr { Ok(Self(value)) } else { Err(InvalidParam::Psm(value)) }
    }

    /// The raw value.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// Whether this is an LE dynamic PSM (usable for LE credit-based channels).
    pub const fn is_le(self) -> bool {
        self.0 <= Self::LE_DYNAMIC_LAST
    }
}

impl TryFrom<u16> for Psm {
    type Error = InvalidParam;
    fn try_from(value: u16) -> Result<Self, InvalidParam> {
        Self::new(value)
    }
}

impl From<Psm> for u16 {
    fn from(p: Psm) -> Self {
        p.0
    }
}

impl fmt::Debug for Psm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psm({:#06x})", self.0)
    }
}

impl fmt::Display for Psm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// An RFCOMM server channel, 1..=30.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(try_from = "u8", into = "u8"))]
pub struct RfcommChannel(u8);

impl RfcommChannel {
    /// Checks `value` and wraps it.
    pub const fn new(value: u8) -> Result<Self, InvalidParam> {
        if value >= 1 && value <= 30 { Ok(Self(value)) } else { Err(InvalidParam::RfcommChannel(value)) }
    }

    /// The raw value.
    pub const fn value(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for RfcommChannel {
    type Error = InvalidParam;
    fn try_from(value: u8) -> Result<Self, InvalidParam> {
        Self::new(value)
    }
}

impl From<RfcommChannel> for u8 {
    fn from(c: RfcommChannel) -> Self {
        c.0
    }
}

/// Where a link is opened on the peer: an L2CAP PSM or an RFCOMM channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Port {
    /// An L2CAP channel (LE CoC for LE PSMs, basic mode for BR/EDR PSMs); packet or stream mode.
    L2cap(Psm),
    /// An RFCOMM channel (BR/EDR); stream mode only.
    Rfcomm(RfcommChannel),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::L2cap(p) => write!(f, "psm {p}"),
            Self::Rfcomm(c) => write!(f, "rfcomm {}", c.value()),
        }
    }
}

/// A maximum transmission unit: the largest SDU a packet link carries, 23..=65535 bytes.
///
/// ```
/// use colink_ble::Mtu;
/// assert_eq!(Mtu::new(247).unwrap().get(), 247);
/// assert!(Mtu::new(22).is_err());
/// ```
///
/// `colink_frame::Mtu` is the same range for the framing layer: the two crates stay independent of each other
/// (the radio knows no frames, framing knows no radio), and `colink`'s driver converts at the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(try_from = "u16", into = "u16"))]
pub struct Mtu(u16);

impl Mtu {
    /// The LE minimum, 23.
    pub const MIN: Self = Self(23);
    /// The largest L2CAP MTU, 65535 (what colink asks for by default: larger SDUs are far cheaper on Linux).
    pub const MAX: Self = Self(u16::MAX);

    /// Checks `value` and wraps it.
    pub const fn new(value: u16) -> Result<Self, InvalidParam> {
        if value >= 23 { Ok(Self(value)) } else { Err(InvalidParam::Mtu(value)) }
    }

    /// The MTU in bytes.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The MTU in bytes, as a `usize`.
    pub const fn bytes(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u16> for Mtu {
    type Error = InvalidParam;
    fn try_from(value: u16) -> Result<Self, InvalidParam> {
        Self::new(value)
    }
}

impl From<Mtu> for u16 {
    fn from(m: Mtu) -> Self {
        m.0
    }
}

/// A received signal strength in dBm, or unknown.
///
/// The raw value 127 means "not available" (HCI's convention, and what BlueZ reports on btvirt controllers).
///
/// ```
/// use colink_ble::Rssi;
/// assert_eq!(Rssi::from_raw(-60).dbm(), Some(-60));
/// assert_eq!(Rssi::from_raw(127), Rssi::UNKNOWN);
/// assert_eq!(Rssi::UNKNOWN.dbm(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rssi(i8);

impl Rssi {
    /// Unknown / not available.
    pub const UNKNOWN: Self = Self(127);

    /// Wraps a raw HCI RSSI (127 = unknown).
    pub const fn from_raw(raw: i8) -> Self {
        Self(raw)
    }

    /// Wraps a dBm value; values above +20 dBm are not physical for Bluetooth and become [`Rssi::UNKNOWN`].
    pub const fn from_dbm(dbm: i16) -> Self {
        if dbm > 20 {
            Self::UNKNOWN
        } else if dbm < -127 {
            Self(-127)
        } else {
            Self(dbm as i8)
        }
    }

    /// The raw value (127 = unknown).
    pub const fn raw(self) -> i8 {
        self.0
    }

    /// The strength in dBm, `None` when unknown.
    pub const fn dbm(self) -> Option<i8> {
        if self.0 == 127 { None } else { Some(self.0) }
    }
}

impl fmt::Display for Rssi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dbm() {
            Some(d) => write!(f, "{d} dBm"),
            None => f.write_str("unknown"),
        }
    }
}

/// A physical layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Phy {
    /// LE 1M (1 Msym/s), mandatory for every LE controller.
    Le1M,
    /// LE 2M (2 Msym/s), Bluetooth 5.
    Le2M,
    /// LE Coded (S=8), long range.
    LeCoded,
    /// Classic BR/EDR with EDR packets (up to 3 Mbit/s on air).
    BrEdr,
}

impl Phy {
    /// Whether this is an LE PHY.
    pub const fn is_le(self) -> bool {
        !matches!(self, Self::BrEdr)
    }
}

/// Link security, as the Linux `BT_SECURITY` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum SecurityLevel {
    /// No encryption required.
    #[default]
    Low,
    /// Encrypted, unauthenticated (Just Works) keys acceptable.
    Medium,
    /// Encrypted with authenticated (MITM-protected) keys: numeric comparison or passkey pairing.
    High,
    /// High, with LE Secure Connections only.
    Fips,
}

/// Whether a link keeps SDU boundaries.
///
/// `colink_frame::LinkMode` names the same two kinds of link for the framing layer; the crates stay
/// independent of each other and `colink`'s driver converts at the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum LinkMode {
    /// SDUs up to the MTU, boundaries kept (L2CAP CoC SeqPacket).
    Packet,
    /// A byte stream, boundaries not kept (RFCOMM, L2CAP stream sockets).
    Stream,
}

/// Parameters of a link: asked for in [`Adapter::connect`](crate::Adapter::connect) /
/// [`Adapter::listen`](crate::Adapter::listen), and reported as negotiated by [`Link::params`](crate::Link::params).
///
/// ```
/// use colink_ble::{LinkParams, Mtu, Phy};
/// let p = LinkParams::default().with_phy(Phy::Le2M).with_mtu(Mtu::new(247).unwrap());
/// assert_eq!(p.mtu.get(), 247);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct LinkParams {
    /// The PHY (asked for; the backend may fall back to what both controllers support).
    pub phy: Phy,
    /// The receive MTU asked for; on a link, the negotiated send MTU.
    pub mtu: Mtu,
    /// Required security.
    pub security: SecurityLevel,
    /// Connection interval: `None` asks for the stack default (30-50 ms on Linux); on a link, the value in use
    /// when the backend knows it.
    pub conn_interval: Option<Duration>,
}

impl Default for LinkParams {
    /// LE 2M, MTU 65535, [`SecurityLevel::Low`], default connection interval.
    fn default() -> Self {
        Self { phy: Phy::Le2M, mtu: Mtu::MAX, security: SecurityLevel::Low, conn_interval: None }
    }
}

impl LinkParams {
    /// With this PHY.
    pub const fn with_phy(mut self, phy: Phy) -> Self {
        self.phy = phy;
        self
    }

    /// With this MTU.
    pub const fn with_mtu(mut self, mtu: Mtu) -> Self {
        self.mtu = mtu;
        self
    }

    /// With this security level.
    pub const fn with_security(mut self, security: SecurityLevel) -> Self {
        self.security = security;
        self
    }

    /// With this connection interval.
    pub const fn with_conn_interval(mut self, interval: Duration) -> Self {
        self.conn_interval = Some(interval);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psm_ranges() {
        for ok in [0x80, 0xFF, 0x1001, 0x0201, 0xFEFF] {
            assert!(Psm::new(ok).is_ok(), "{ok:#x}");
        }
        for bad in [0, 1, 0x7F, 0x100, 0x1002, 0x0101, 0xFFFF] {
            assert!(Psm::new(bad).is_err(), "{bad:#x}");
        }
    }

    #[test]
    fn mtu_and_rfcomm_ranges() {
        assert!(Mtu::new(23).is_ok());
        assert!(Mtu::new(0).is_err());
        assert!(RfcommChannel::new(0).is_err());
        assert!(RfcommChannel::new(31).is_err());
        assert!(RfcommChannel::new(30).is_ok());
    }

    #[test]
    fn rssi_clamps() {
        assert_eq!(Rssi::from_dbm(-200).dbm(), Some(-127));
        assert_eq!(Rssi::from_dbm(50), Rssi::UNKNOWN);
    }
}
