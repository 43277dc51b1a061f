//! The host's kernel between an application and the radio, as the real Linux stack showed it: a socket send
//! buffer charged in skb truesize, TIOCOUTQ reporting that charge until the controller has taken the data, and
//! CPU time per write and per byte on a slow (emulated) CPU. See docs/performance.md, "Teaching the simulator
//! the real link".

use std::time::Duration;

/// What a link's kernel costs: its send-buffer accounting and the CPU time each SDU takes.
///
/// With a `KernelProfile` in the [`Environment`](crate::Environment), every link:
/// - charges each queued SDU [`charge`](Self::charge) bytes of kernel memory (its L2CAP PDUs' skb truesize)
///   from the moment it is sent until its transmission ends, and makes `send` wait while a new SDU's charge
///   does not fit in [`sndbuf`](Self::sndbuf);
/// - reports that charge as `Link::queued_bytes` (what TIOCOUTQ yields: SO_SNDBUF minus free space), and
///   resolves `drain_to(max)` by the rule colink's BlueZ backend applies to TIOCOUTQ: at most the latest SDU's
///   charge plus `max` payload bytes at the same charge per byte still queued;
/// - spends [`cpu_time`](Self::cpu_time) per SDU (a fixed cost per write plus a cost per KiB) before its air
///   time, one SDU after another.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KernelProfile {
    /// SO_SNDBUF: kernel memory a socket may have charged for SDUs not yet transmitted.
    pub sndbuf: usize,
    /// The PDU payload size (LE CoC MPS) the kernel segments SDUs into; each PDU is one skb.
    pub mps: usize,
    /// CPU time per write (system call, segmentation into PDUs, HCI scheduling, the receiver's per-SDU work).
    pub per_write: Duration,
    /// CPU time per KiB of payload (copies and checks along the whole path, both sides).
    pub per_kib: Duration,
}

impl KernelProfile {
    /// The VM rig's LE CoC link (docs/vm-rig.md: Debian 6.1, BlueZ 5.66, two btvirt controllers in one TCG
    /// guest), from measured kernel behaviour and raw-socket figures only, never from a colink figure:
    ///
    /// - `sndbuf` 4 MiB: the rig raises `wmem_max` and SO_SNDBUF to 4 MiB (vm-rig.md).
    /// - `mps` 23: the charge colink's BlueZ backend assumes (`pdu_truesize` at the LE minimum MPS), which is
    ///   how the rig's MTU of 62790 comes about; truesize per PDU as `bluez::link::pdu_truesize`.
    /// - `per_write`, `per_kib`: one line `t(S) = per_kib + per_write / S` (time per KiB at SDU size `S` KiB)
    ///   through the two raw figures measured through bluer in one run (855 KiB/s with 4 KiB SDUs, 920 KiB/s with
    ///   64 KiB SDUs: 353 µs per write, 1081 µs per KiB), scaled by the speed of the guest in the run being
    ///   predicted: the raw single-shot figure of the quiet 6.1 run, 1057 KiB/s with 64 KiB SDUs (× 920/1057).
    pub fn vm_rig() -> Self {
        Self::from_raw_goodputs([(4096, 855.0), (65536, 920.0)], (65535, 1057.0))
            .with_sndbuf(4 * 1024 * 1024)
            .with_mps(23)
    }

    /// The costs that explain two raw goodputs measured in one run — `(SDU bytes, KiB/s)` each — with a fixed
    /// cost per write and a cost per byte, scaled so that SDUs of `scale.0` bytes reach `scale.1` KiB/s (the
    /// guest's speed in the run to predict). SO_SNDBUF 4 MiB, MPS 247 until set otherwise.
    pub fn from_raw_goodputs(points: [(usize, f64); 2], scale: (usize, f64)) -> Self {
        // Seconds per byte at SDU size s: a + b / s.
        let per_byte = |(sdu, kib_s): (usize, f64)| (1.0 / (kib_s * 1024.0), sdu as f64);
        let ((t0, s0), (t1, s1)) = (per_byte(points[0]), per_byte(points[1]));
        let b = ((t0 - t1) / (1.0 / s0 - 1.0 / s1)).max(0.0);
        let a = (t1 - b / s1).max(0.0);
        let (t_scale, s_scale) = per_byte(scale);
        let k = t_scale / (a + b / s_scale);
        Self {
            sndbuf: 4 * 1024 * 1024,
            mps: 247,
            per_write: Duration::from_secs_f64(b * k),
            per_kib: Duration::from_secs_f64(a * k * 1024.0),
        }
    }

    /// With SO_SNDBUF `sndbuf`.
    #[must_use]
    pub fn with_sndbuf(mut self, sndbuf: usize) -> Self {
        self.sndbuf = sndbuf;
        self
    }

    /// With PDUs of `mps` bytes.
    #[must_use]
    pub fn with_mps(mut self, mps: usize) -> Self {
        self.mps = mps.max(1);
        self
    }

    /// Kernel memory charged for an SDU of `len` bytes: one skb per PDU of at most [`mps`](Self::mps) bytes
    /// (the first carries the 2-byte SDU length), each costing [`pdu_truesize`].
    pub fn charge(&self, len: usize) -> usize {
        let mps = self.mps.max(1);
        let total = len + 2;
        let full = total / mps;
        let tail = total % mps;
        full * pdu_truesize(mps) + if tail > 0 { pdu_truesize(tail) } else { 0 }
    }

    /// CPU time an SDU of `len` bytes costs.
    pub fn cpu_time(&self, len: usize) -> Duration {
        self.per_write + self.per_kib.mul_f64(len as f64 / 1024.0)
    }
}

/// Kernel memory (skb truesize) of one L2CAP PDU with `payload` bytes: the data buffer (payload, L2CAP and
/// HCI headers, rounded to the 64-byte cache line, plus `skb_shared_info`) from a power-of-two slab, and the
/// `sk_buff` itself. The same formula as colink's BlueZ backend uses (`pdu_truesize` in
/// crates/colink-ble/src/bluez/link.rs).
pub fn pdu_truesize(payload: usize) -> usize {
    let data = (payload + 4 + 2 + 8).div_ceil(64) * 64 + 320;
    data.next_power_of_two() + 256
}

/// The kernel memory that may stay charged when at most `max` payload bytes wait behind the SDU on the air:
/// the latest SDU's `charge` (of `len` bytes) plus `max` bytes at the same charge per byte. The rule of colink's
/// BlueZ backend (`allowance` in crates/colink-ble/src/bluez/link.rs).
pub(crate) fn allowance(charge: usize, len: usize, max: usize) -> usize {
    let per_byte_max = if charge > 0 && len > 0 { max.saturating_mul(charge) / len } else { max };
    charge.saturating_add(per_byte_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truesize_matches_the_backend() {
        // The backend's own test values.
        assert_eq!(pdu_truesize(188), 1280);
        assert_eq!(pdu_truesize(247), 1280);
        // An SDU of 21 bytes plus its 2-byte length is one minimal PDU; 24 bytes take two.
        let k = KernelProfile::vm_rig();
        assert_eq!(k.charge(21), pdu_truesize(23));
        assert_eq!(k.charge(22), pdu_truesize(23) + pdu_truesize(1));
    }

    #[test]
    fn the_rig_profile_reproduces_its_inputs() {
        let k = KernelProfile::vm_rig();
        let kib_s = |sdu: usize| sdu as f64 / 1024.0 / k.cpu_time(sdu).as_secs_f64();
        // The raw figure it was scaled to ...
        assert!((kib_s(65535) - 1057.0).abs() < 1.0, "{}", kib_s(65535));
        // ... and the shape of the two measured points (4 KiB SDUs 855/920 of 64 KiB ones).
        let ratio = kib_s(4096) / kib_s(65536);
        assert!((ratio - 855.0 / 920.0).abs() < 0.001, "{ratio}");
        assert!((300..=320).contains(&k.per_write.as_micros()), "{:?}", k.per_write);
    }

    #[test]
    fn allowance_is_one_sdu_plus_max_at_its_rate() {
        assert_eq!(allowance(10_000, 4096, 0), 10_000);
        assert_eq!(allowance(10_000, 1000, 100), 11_000);
        assert_eq!(allowance(0, 0, 100), 100);
    }
}
