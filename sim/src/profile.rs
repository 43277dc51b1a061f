//! The radio as data: PHY profiles (air time, intervals, latency) and the propagation environment.
//!
//! Every number here is a plain public field with its source noted, so a scenario can tune or add profiles.
//! See docs/simulator.md for the derivations.

use std::time::Duration;

use colink_ble::Phy;

use crate::kernel::KernelProfile;

/// How one PHY moves data: the per-packet air-time model plus connection timing.
///
/// An SDU of `n` bytes is cut into K-frames of at most [`mps`](Self::mps) payload (the first also carries
/// [`sdu_header`](Self::sdu_header) bytes), each K-frame gets [`l2cap_header`](Self::l2cap_header) bytes and is
/// carried in baseband/link-layer packets of at most [`max_packet_payload`](Self::max_packet_payload) bytes. A
/// packet of `p` bytes occupies the air for `packet_overhead + p·8/air_bit_rate + turnaround`.
///
/// ```
/// use colink_sim::PhyProfile;
/// let le2m = PhyProfile::le_2m();
/// let mbps = le2m.capacity_bps(65535) / 1e6;
/// assert!((1.35..1.45).contains(&mbps), "{mbps}"); // ≈ 1.4 Mbit/s application throughput at best
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PhyProfile {
    /// Which PHY this describes.
    pub phy: Phy,
    /// Symbol rate of the payload on air, bit/s.
    pub air_bit_rate: u64,
    /// Fixed air time of one packet besides its payload (preamble, access address/code, header, CRC/MIC).
    pub packet_overhead: Duration,
    /// Dead time per packet: inter-frame spaces and the peer's acknowledgement packet.
    pub turnaround: Duration,
    /// Largest payload of one packet (LE with data length extension: 251; 3-DH5: 1021).
    pub max_packet_payload: u16,
    /// L2CAP basic header per K-frame / PDU (length + channel id).
    pub l2cap_header: u16,
    /// Per-SDU framing (LE CoC SDU length field: 2; RFCOMM frame header + FCS: 5).
    pub sdu_header: u16,
    /// Largest K-frame payload (LE CoC MPS); `None`: the whole SDU goes in one L2CAP PDU.
    pub mps: Option<u16>,
    /// Connection interval range; each link draws one (in 1.25 ms steps) from the seeded RNG. `(0, 0)`: no
    /// connection events, an idle transmitter starts at once.
    pub conn_interval: (Duration, Duration),
    /// How long a link survives without hearing the peer (out of range).
    pub supervision_timeout: Duration,
    /// One-way host + controller latency added to every delivery.
    pub host_latency: Duration,
    /// Receiver sensitivity (dBm): weaker signals are not received.
    pub sensitivity_dbm: f64,
}

impl PhyProfile {
    /// LE 1M with data length extension: ≈ 0.80 Mbit/s goodput at best.
    pub fn le_1m() -> Self {
        Self {
            phy: Phy::Le1M,
            air_bit_rate: 1_000_000,
            // 1 B preamble + 4 B access address + 2 B header + 3 B CRC = 10 B at 1 Mbit/s.
            packet_overhead: Duration::from_micros(80),
            // T_IFS 150 µs + empty ack PDU 80 µs + T_IFS 150 µs.
            turnaround: Duration::from_micros(380),
            max_packet_payload: 251,
            l2cap_header: 4,
            sdu_header: 2,
            mps: Some(247),
            conn_interval: (Duration::from_millis(30), Duration::from_millis(50)),
            supervision_timeout: Duration::from_millis(420),
            host_latency: Duration::from_millis(1),
            sensitivity_dbm: -95.0,
        }
    }

    /// LE 2M with data length extension: ≈ 1.42 Mbit/s goodput at best.
    pub fn le_2m() -> Self {
        Self {
            phy: Phy::Le2M,
            air_bit_rate: 2_000_000,
            // 2 B preamble + 4 B access address + 2 B header + 3 B CRC = 11 B at 2 Mbit/s.
            packet_overhead: Duration::from_micros(44),
            // T_IFS 150 µs + empty ack PDU 44 µs + T_IFS 150 µs.
            turnaround: Duration::from_micros(344),
            sensitivity_dbm: -92.0,
            ..Self::le_1m()
        }
    }

    /// LE Coded S=8 (long range): ≈ 0.1 Mbit/s goodput, −103 dBm sensitivity.
    pub fn le_coded() -> Self {
        Self {
            phy: Phy::LeCoded,
            air_bit_rate: 125_000,
            // 80 µs preamble + 256 µs access address + 16 µs CI + 24 µs TERM1 + (header+CRC) 320 µs + 24 µs TERM2.
            packet_overhead: Duration::from_micros(720),
            // T_IFS + empty coded PDU (720 µs) + T_IFS.
            turnaround: Duration::from_micros(1020),
            sensitivity_dbm: -103.0,
            ..Self::le_1m()
        }
    }

    /// BR/EDR with 3-DH5 packets and RFCOMM framing: ≈ 2.15 Mbit/s goodput at best.
    pub fn br_edr() -> Self {
        Self {
            phy: Phy::BrEdr,
            air_bit_rate: 3_000_000,
            // A 5-slot packet lasts 3125 µs; 1021 B at 3 Mbit/s take 2722.7 µs, the rest is access code,
            // header, guard, sync and trailer.
            packet_overhead: Duration::from_nanos(402_333),
            // The peer's 1-slot POLL/NULL acknowledgement.
            turnaround: Duration::from_micros(625),
            max_packet_payload: 1021,
            l2cap_header: 4,
            sdu_header: 5,
            mps: None,
            conn_interval: (Duration::from_micros(1250), Duration::from_micros(1250)),
            // Linux default link supervision timeout 0x7D00 slots = 20 s.
            supervision_timeout: Duration::from_secs(20),
            host_latency: Duration::from_millis(1),
            sensitivity_dbm: -90.0,
        }
    }

    /// LE CoC between the VM rig's two `btvirt` controllers (docs/vm-rig.md): the emulator hands ACL data from
    /// one virtual controller to the other without radio timing, so the air takes no time worth modelling
    /// (1 Gbit/s, no packet overhead) and the link's rate is set by the host's CPU — pair it with
    /// [`KernelProfile::vm_rig`](crate::KernelProfile::vm_rig) in the [`Environment`]. Connection interval and
    /// host latency as LE 2M's shortest (1.25 ms, 1 ms); replaces the LE 2M profile when given to
    /// [`SimAirBuilder::profile`](crate::SimAirBuilder::profile).
    pub fn btvirt_le() -> Self {
        Self {
            air_bit_rate: 1_000_000_000,
            packet_overhead: Duration::ZERO,
            turnaround: Duration::ZERO,
            conn_interval: (Duration::from_micros(1250), Duration::from_micros(1250)),
            ..Self::le_2m()
        }
    }

    /// A link with no radio limit, for measuring the CPU cost of what runs above it: no air time to speak of
    /// (1 ns per SDU), no connection events, no host latency, whole SDUs in one PDU. Replaces the LE 2M profile
    /// when given to [`SimAirBuilder::profile`](crate::SimAirBuilder::profile); run it on a real-time runtime.
    pub fn unlimited() -> Self {
        Self {
            air_bit_rate: u64::MAX,
            packet_overhead: Duration::ZERO,
            turnaround: Duration::ZERO,
            max_packet_payload: u16::MAX,
            mps: None,
            conn_interval: (Duration::ZERO, Duration::ZERO),
            host_latency: Duration::ZERO,
            ..Self::le_2m()
        }
    }

    /// The built-in profile for `phy`.
    pub fn for_phy(phy: Phy) -> Self {
        match phy {
            Phy::Le1M => Self::le_1m(),
            Phy::LeCoded => Self::le_coded(),
            Phy::BrEdr => Self::br_edr(),
            _ => Self::le_2m(),
        }
    }

    /// The K-frame payload limit for a link of this MTU.
    pub fn mps_for(&self, mtu: u16) -> u32 {
        let sdu_max = u32::from(mtu) + u32::from(self.sdu_header);
        self.mps.map_or(sdu_max, |m| u32::from(m.min(mtu)))
    }

    /// How many K-frames (flow-control credits) an SDU of `len` bytes takes at this MTU.
    pub fn kframes(&self, len: usize, mtu: u16) -> u32 {
        let total = len as u64 + u64::from(self.sdu_header);
        let mps = u64::from(self.mps_for(mtu).max(1));
        u32::try_from(total.div_ceil(mps).max(1)).unwrap_or(u32::MAX)
    }

    /// Air time of one SDU of `len` bytes at this MTU.
    pub fn sdu_air_time(&self, len: usize, mtu: u16) -> Duration {
        let mps = u64::from(self.mps_for(mtu).max(1));
        let max_pkt = u64::from(self.max_packet_payload.max(1));
        let mut remaining = len as u64 + u64::from(self.sdu_header);
        let mut nanos: u64 = 0;
        loop {
            let kframe = remaining.min(mps);
            remaining -= kframe;
            let mut pdu = kframe + u64::from(self.l2cap_header);
            while pdu > 0 {
                let p = pdu.min(max_pkt);
                pdu -= p;
                nanos = nanos.saturating_add(self.packet_nanos(p));
            }
            if remaining == 0 {
                break;
            }
        }
        Duration::from_nanos(nanos)
    }

    /// Goodput (bit/s) of back-to-back full-MTU SDUs: the best a link with this MTU can do.
    pub fn capacity_bps(&self, mtu: u16) -> f64 {
        let t = self.sdu_air_time(usize::from(mtu), mtu).as_secs_f64();
        f64::from(mtu) * 8.0 / t
    }

    fn packet_nanos(&self, payload: u64) -> u64 {
        let bits = payload * 8 * 1_000_000_000;
        self.packet_overhead.as_nanos() as u64
            + bits.div_ceil(self.air_bit_rate.max(1))
            + self.turnaround.as_nanos() as u64
    }
}

/// A position on the simulated floor, metres.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// East, metres.
    pub x: f64,
    /// North, metres.
    pub y: f64,
}

impl Position {
    /// The point `(x, y)`.
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// Distance to `other`, metres.
    pub fn distance(&self, other: &Self) -> f64 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }
}

/// Propagation and advertising parameters of the simulated room.
///
/// RSSI = `tx_power_dbm − path_loss_1m_db − 10·path_loss_exponent·log10(d / 1 m) + N(0, shadowing_sigma_db)`
/// (the log-distance path-loss model), with `d` clamped to at least 0.1 m.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Environment {
    /// Transmit power, dBm (typical laptop/phone LE: 0 dBm).
    pub tx_power_dbm: f64,
    /// Free-space loss at 1 m at 2.4 GHz: 20·log10(4π·1 m/λ) ≈ 40 dB.
    pub path_loss_1m_db: f64,
    /// Path-loss exponent: 2 in free space, 2.5-3 indoors.
    pub path_loss_exponent: f64,
    /// Standard deviation of the per-packet shadowing/fading noise, dB.
    pub shadowing_sigma_db: f64,
    /// Probability that a scanner misses an advert it could hear (scan window gaps, collisions).
    pub advert_miss_probability: f64,
    /// Advertising interval (plus the spec's random 0-10 ms advDelay per event).
    pub advert_interval: Duration,
    /// Connection set-up after the initiator hears the peer's advert: CONNECT_IND, first connection events,
    /// L2CAP connection request/response; measured in connection intervals.
    pub connect_setup_intervals: u32,
    /// How long a connect waits for an unreachable peer before [`ConnectError::Timeout`](colink_ble::ConnectError::Timeout).
    pub connect_timeout: Duration,
    /// SMP exchange duration in connection intervals, on top of the agents' answers.
    pub pairing_intervals: u32,
    /// How long an agent may take to answer before pairing fails with a timeout.
    pub agent_timeout: Duration,
    /// Receive buffer per link end, bytes (sets the initial credits: buffer / MPS). Default 208 KiB, Linux's
    /// default `rmem_max`, which caps the socket receive buffer the kernel derives LE CoC credits from.
    pub rx_buffer: usize,
    /// Send buffer per link end, bytes: `send` waits while this much is queued and not yet on air.
    pub tx_buffer: usize,
    /// Maximum concurrent links per adapter (BR/EDR piconet: 7 active peripherals; common LE controllers 8+).
    pub max_links: usize,
    /// The host kernel between applications and the radio (send buffer in skb truesize, TIOCOUTQ, CPU per
    /// write). `None` (the default): `send` waits on `tx_buffer` payload bytes, `queued_bytes` counts payload
    /// not yet on the air, and data costs no CPU time.
    pub kernel: Option<KernelProfile>,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            tx_power_dbm: 0.0,
            path_loss_1m_db: 40.0,
            path_loss_exponent: 2.5,
            shadowing_sigma_db: 4.0,
            advert_miss_probability: 0.05,
            advert_interval: Duration::from_millis(100),
            connect_setup_intervals: 3,
            connect_timeout: Duration::from_secs(5),
            pairing_intervals: 6,
            agent_timeout: Duration::from_secs(30),
            rx_buffer: 208 * 1024,
            tx_buffer: 16 * 1024,
            max_links: 8,
            kernel: None,
        }
    }
}

impl Environment {
    /// Mean RSSI at `distance_m` metres (no noise).
    pub fn mean_rssi(&self, distance_m: f64) -> f64 {
        let d = distance_m.max(0.1);
        self.tx_power_dbm - self.path_loss_1m_db - 10.0 * self.path_loss_exponent * d.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_published_throughput() {
        let mbps = |p: PhyProfile, mtu| p.capacity_bps(mtu) / 1e6;
        assert!((0.70..=0.82).contains(&mbps(PhyProfile::le_1m(), 65535)));
        assert!((1.35..=1.45).contains(&mbps(PhyProfile::le_2m(), 65535)));
        let bredr = mbps(PhyProfile::br_edr(), 1011);
        assert!((2.0..=2.2).contains(&bredr), "{bredr}");
        assert!(mbps(PhyProfile::le_coded(), 65535) < 0.13);
    }

    #[test]
    fn unlimited_and_btvirt_profiles_take_no_air_time_worth_counting() {
        for p in [PhyProfile::unlimited(), PhyProfile::btvirt_le()] {
            assert!(p.capacity_bps(65535) > 5e8, "{:?}", p.capacity_bps(65535));
        }
        assert_eq!(PhyProfile::unlimited().kframes(65535, 65535), 1);
        assert_eq!(PhyProfile::unlimited().sdu_air_time(4096, 65535), Duration::from_nanos(1));
    }

    #[test]
    fn kframes_count_sdu_header() {
        let p = PhyProfile::le_2m();
        assert_eq!(p.kframes(245, 247), 1);
        assert_eq!(p.kframes(246, 247), 2);
        assert_eq!(p.kframes(0, 247), 1);
        assert_eq!(PhyProfile::br_edr().kframes(60000, 65535), 1);
    }

    #[test]
    fn rssi_falls_with_distance() {
        let e = Environment::default();
        assert!((e.mean_rssi(1.0) + 40.0).abs() < 1e-9);
        assert!(e.mean_rssi(10.0) < e.mean_rssi(2.0));
    }
}
