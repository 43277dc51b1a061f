//! How large the next fragment may be: bulk frames grow while nothing more urgent has been sent for a while,
//! and drop back to the small size the moment something more urgent goes out.
//!
//! A frame handed to the transport cannot be taken back, so a message decided on later waits behind the frame
//! on the air and the one queued after it (docs/sessions.md, priority). Small frames keep that wait short;
//! large frames save the per-SDU costs of the link (a partly filled last baseband packet per SDU on BR/EDR, the
//! kernel's work per write). The rule: a bulk class (images, data) uses the large size only while every
//! higher class has sent nothing for `grow_after`; a class that sends resets the clock for the classes below
//! it. So while messages flow, bulk frames stay small and each message waits behind at most two small frames;
//! the first message after a quiet stretch waits behind at most two large ones.
//!
//! Loss caps every frame but control ones ([`LossEstimate`]): a frame of `f` bytes survives a byte error rate
//! `q` with probability `(1 − q)^f`, so under loss large frames waste more in resends than they save in
//! per-frame costs. From the frame loss seen lately the sender estimates `q` and caps frames at the size that
//! maximises the expected goodput per byte on the air; with no loss seen there is no cap.

use std::time::{Duration, Instant};

use colink_frame::{FrameKind, Mtu};

use super::CLASSES;

/// The frame sizes a fragment may take, as the connection knows them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameSizes {
    /// The size of every frame while classes share the link (`Config::max_frame` within the link's limits).
    pub(crate) small: Mtu,
    /// The size bulk frames grow to while they run alone (`Config::max_bulk_frame` within the link's limits;
    /// at most `small` turns growth off).
    pub(crate) large: Mtu,
    /// How long higher classes must have been silent before bulk frames grow.
    pub(crate) grow_after: Duration,
}

impl FrameSizes {
    /// One size for every frame.
    #[cfg(test)]
    pub(crate) fn fixed(mtu: Mtu) -> Self {
        Self { small: mtu, large: mtu, grow_after: Duration::ZERO }
    }

    /// The largest frame any class may send.
    pub(crate) fn largest(&self) -> Mtu {
        self.small.max(self.large)
    }
}

/// Per-frame cost assumed when sizing frames under loss, in bytes: the frame header and checksum plus what an
/// SDU costs the link besides its bytes (a partly filled last baseband packet, per-SDU headers and scheduling).
pub(crate) const PER_FRAME_COST: f64 = 64.0;

/// Frames never shrink below this many bytes for loss (nor below the link's own frame size, if smaller).
pub(crate) const MIN_LOSS_FRAME: usize = 128;

/// Frames resolved (acknowledged or lost) that an estimate starts from as if clean, so one early loss does not
/// shrink frames to the floor.
const PRIOR_FRAMES: f64 = 64.0;

/// Frames acknowledged, with no loss remembered, before bulk frames may grow beyond the small size.
pub(crate) const CLEAN_BEFORE_GROWTH: f64 = 64.0;

/// Once this many frames were resolved, the counts halve: the estimate follows the recent past, and frames
/// grow back on a link that turned clean.
const DECAY_FRAMES: f64 = 2048.0;

/// The frame loss seen lately, as counts that decay, and the frame size it makes best.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossEstimate {
    /// Frames acknowledged (decayed).
    delivered: f64,
    /// Frames declared lost (decayed).
    lost: f64,
    /// Average size on the wire of the frames sent lately (exponentially weighted).
    avg_len: f64,
}

impl LossEstimate {
    /// A frame of `len` bytes went out.
    pub(crate) fn on_sent(&mut self, len: usize) {
        let len = len as f64;
        self.avg_len = if self.avg_len == 0.0 { len } else { self.avg_len + (len - self.avg_len) / 64.0 };
    }

    /// `n` frames were acknowledged.
    pub(crate) fn on_delivered(&mut self, n: u64) {
        self.delivered += n as f64;
        self.decay();
    }

    /// `n` frames were declared lost.
    pub(crate) fn on_lost(&mut self, n: u64) {
        self.lost += n as f64;
        self.decay();
    }

    fn decay(&mut self) {
        if self.delivered + self.lost > DECAY_FRAMES {
            self.delivered /= 2.0;
            self.lost /= 2.0;
        }
    }

    /// Whether bulk frames may grow beyond the small size: the link showed itself clean — at least
    /// [`CLEAN_BEFORE_GROWTH`] frames acknowledged and no loss remembered. A fragment keeps its cut when it is
    /// resent (docs/sessions.md §4.3), so a large frame cut before loss was seen could take many attempts on a
    /// noisy link; small frames first limit that.
    pub(crate) fn allows_growth(&self) -> bool {
        self.lost < 0.5 && self.delivered >= CLEAN_BEFORE_GROWTH
    }

    /// The estimated byte error rate: `1 − (1 − q)^avg_len` is the frame loss rate seen.
    pub(crate) fn byte_error_rate(&self) -> f64 {
        if self.lost < 0.5 || self.avg_len < 1.0 {
            return 0.0;
        }
        let frame_loss = (self.lost / (self.delivered + self.lost + PRIOR_FRAMES)).min(0.99);
        -(1.0 - frame_loss).ln() / self.avg_len
    }

    /// The frame size (bytes on the wire) that maximises `(f − c) / f · (1 − q)^f`, the payload share of the
    /// bytes on the air, for the per-frame cost `c` = [`PER_FRAME_COST`] and the estimated byte error rate `q`:
    /// `f = (c + √(c² + 4c/q)) / 2`. `None` while no loss was seen.
    pub(crate) fn best_frame(&self) -> Option<usize> {
        let q = self.byte_error_rate();
        if q <= 0.0 {
            return None;
        }
        let c = PER_FRAME_COST;
        let f = (c + (c * c + 4.0 * c / q).sqrt()) / 2.0;
        Some(if f >= 65_535.0 { 65_535 } else { (f as usize).max(MIN_LOSS_FRAME) })
    }
}

/// `mtu` capped at `cap` bytes (never below the smallest MTU).
pub(crate) fn capped(mtu: Mtu, cap: usize) -> Mtu {
    if cap >= mtu.get() { mtu } else { Mtu::new(cap).unwrap_or(mtu) }
}

/// Remembers when each priority class last sent, and sizes fragments by it.
#[derive(Debug, Default)]
pub(super) struct FrameSizer {
    /// Per class (index into `CLASSES`), when it last handed out a fragment.
    last_sent: [Option<Instant>; CLASSES.len()],
}

impl FrameSizer {
    /// A fragment of class `class` (index into `CLASSES`) went out at `now`.
    pub(super) fn sent(&mut self, class: usize, now: Instant) {
        if let Some(t) = self.last_sent.get_mut(class) {
            *t = Some(now);
        }
    }

    /// Forgets every class's history (a fresh link).
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The size of the next fragment of class `class` at `now`.
    pub(super) fn mtu(&self, class: usize, now: Instant, sizes: FrameSizes) -> Mtu {
        let bulk = matches!(CLASSES.get(class), Some(FrameKind::Image | FrameKind::Data));
        if !bulk || sizes.large <= sizes.small {
            return sizes.small;
        }
        let quiet =
            self.last_sent[..class].iter().flatten().all(|t| now.saturating_duration_since(*t) >= sizes.grow_after);
        if quiet { sizes.large } else { sizes.small }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: usize = 1;
    const IMAGE: usize = 3;
    const DATA: usize = 4;
    const MS: Duration = Duration::from_millis(1);

    fn sizes() -> FrameSizes {
        FrameSizes { small: Mtu::new(4096).unwrap(), large: Mtu::new(16384).unwrap(), grow_after: 200 * MS }
    }

    #[test]
    fn bulk_alone_uses_large_frames_and_drops_back_when_a_message_goes_out() {
        let t0 = Instant::now();
        let mut s = FrameSizer::default();
        assert_eq!(s.mtu(DATA, t0, sizes()), sizes().large);
        s.sent(DATA, t0);
        // Bulk sending does not hold itself back.
        assert_eq!(s.mtu(DATA, t0 + MS, sizes()), sizes().large);
        s.sent(MESSAGE, t0 + 10 * MS);
        assert_eq!(s.mtu(DATA, t0 + 10 * MS, sizes()), sizes().small);
        assert_eq!(s.mtu(DATA, t0 + 209 * MS, sizes()), sizes().small);
        assert_eq!(s.mtu(DATA, t0 + 210 * MS, sizes()), sizes().large);
    }

    #[test]
    fn only_bulk_classes_grow_and_only_below_a_busy_class() {
        let t0 = Instant::now();
        let mut s = FrameSizer::default();
        for class in 0..IMAGE {
            assert_eq!(s.mtu(class, t0, sizes()), sizes().small, "class {class}");
        }
        // Images sending keep data frames small, but images themselves grow.
        s.sent(IMAGE, t0);
        assert_eq!(s.mtu(DATA, t0, sizes()), sizes().small);
        assert_eq!(s.mtu(IMAGE, t0, sizes()), sizes().large);
        // Data sending holds nothing back.
        s.sent(DATA, t0);
        assert_eq!(s.mtu(IMAGE, t0, sizes()), sizes().large);
        s.reset();
        assert_eq!(s.mtu(DATA, t0, sizes()), sizes().large);
    }

    #[test]
    fn loss_shrinks_frames_towards_the_best_size_and_a_clean_link_grows_them_back() {
        let mut l = LossEstimate::default();
        assert_eq!(l.best_frame(), None);
        // 16 KiB frames at a byte error rate of 1e-4: about 80 % are lost.
        for _ in 0..100 {
            l.on_sent(16384);
        }
        l.on_delivered(20);
        l.on_lost(80);
        let first = l.best_frame().unwrap();
        assert!(first < 4096, "{first}");
        // Smaller frames then lose about 8 %, and the estimate settles near the best size for 1e-4 (~830).
        for _ in 0..2000 {
            l.on_sent(800);
        }
        for _ in 0..20 {
            l.on_delivered(92);
            l.on_lost(8);
        }
        let settled = l.best_frame().unwrap();
        assert!((600..1100).contains(&settled), "{settled}");
        // A clean stretch lifts the cap step by step (each 2048 frames halve the losses remembered).
        for _ in 0..40 {
            l.on_delivered(100);
        }
        let lifting = l.best_frame().unwrap_or(usize::MAX);
        assert!(lifting > 2 * settled, "{lifting}");
        for _ in 0..200 {
            l.on_delivered(100);
        }
        assert_eq!(l.best_frame(), None);
        // A cap never grows a frame, nor goes below the smallest MTU.
        assert_eq!(capped(Mtu::new(1000).unwrap(), 5000).get(), 1000);
        assert_eq!(capped(Mtu::new(1000).unwrap(), 500).get(), 500);
    }

    #[test]
    fn a_large_size_at_most_the_small_one_turns_growth_off() {
        let s = FrameSizer::default();
        let t0 = Instant::now();
        let off = FrameSizes { large: Mtu::new(1000).unwrap(), ..sizes() };
        assert_eq!(s.mtu(DATA, t0, off), sizes().small);
        assert_eq!(off.largest(), sizes().small);
    }
}
