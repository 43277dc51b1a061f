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
    fn a_large_size_at_most_the_small_one_turns_growth_off() {
        let s = FrameSizer::default();
        let t0 = Instant::now();
        let off = FrameSizes { large: Mtu::new(1000).unwrap(), ..sizes() };
        assert_eq!(s.mtu(DATA, t0, off), sizes().small);
        assert_eq!(off.largest(), sizes().small);
    }
}
