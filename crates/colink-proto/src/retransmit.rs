//! The retransmission timeout: how long a fragment may go unacknowledged, from its own send time, before it is
//! presumed lost. Each fragment runs on its own timer (the scheduler keeps the send times); this type decides
//! the timeout, with safeguards against resending what a slow link is still carrying.

use std::time::{Duration, Instant};

/// The slowest PHY colink runs on (LE Coded) carries about this many payload bits per second.
const SLOWEST_PHY_BITS_PER_SEC: f64 = 100_000.0;

/// Tracks acknowledgement progress and decides when data in flight is lost.
#[derive(Debug)]
pub(crate) struct RetransmitTimer {
    /// The configured floor of the timeout.
    min_timeout: Duration,
    /// When the acknowledged position last advanced (or data started to flow).
    last_progress: Instant,
    /// A decaying maximum of the time between acknowledgement advances while data was in flight.
    progress_gap: Duration,
}

impl RetransmitTimer {
    /// A timer with the configured timeout `min_timeout`, starting at `now`.
    pub(crate) fn new(now: Instant, min_timeout: Duration) -> Self {
        Self { min_timeout, last_progress: now, progress_gap: Duration::ZERO }
    }

    /// The acknowledged position advanced at `now`: the gap since the last advance feeds the decaying maximum
    /// (each advance keeps 7/8 of the old maximum).
    pub(crate) fn on_progress(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_progress);
        self.progress_gap = gap.max(self.progress_gap / 8 * 7);
        self.last_progress = now;
    }

    /// Data starts to flow at `now` after nothing was in flight (or everything in flight was just resent):
    /// the silence before does not count.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// The timeout in force: the configured one, but never less than twice the recent gaps between
    /// acknowledgement advances, nor than the time the slowest PHY needs for three frames of `frame_len`
    /// bytes — so one large SDU on a slow link is not mistaken for a loss.
    pub(crate) fn timeout(&self, frame_len: usize) -> Duration {
        let three_frames = Duration::from_secs_f64(3.0 * frame_len as f64 * 8.0 / SLOWEST_PHY_BITS_PER_SEC);
        self.min_timeout.max(three_frames).max(self.progress_gap * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_configured_timeout_is_a_floor() {
        let t0 = Instant::now();
        let r = RetransmitTimer::new(t0, 500 * MS);
        assert_eq!(r.timeout(247), 500 * MS);
        let _ = t0;
    }

    #[test]
    fn large_frames_on_a_slow_phy_get_time() {
        let r = RetransmitTimer::new(Instant::now(), 500 * MS);
        // Three 64 KiB frames at 100 kbit/s take about 15.7 s.
        let t = r.timeout(65535);
        assert!(t > 15 * 1000 * MS && t < 16 * 1000 * MS, "{t:?}");
    }

    #[test]
    fn slow_acknowledgements_stretch_the_timeout_and_the_stretch_decays() {
        let t0 = Instant::now();
        let mut r = RetransmitTimer::new(t0, 500 * MS);
        r.on_progress(t0 + 400 * MS);
        assert_eq!(r.timeout(247), 800 * MS);
        // Quick advances afterwards decay the remembered gap by 1/8 each.
        r.on_progress(t0 + 401 * MS);
        assert_eq!(r.timeout(247), 700 * MS);
        for i in 0..20 {
            r.on_progress(t0 + (402 + i) * MS);
        }
        assert_eq!(r.timeout(247), 500 * MS);
    }
}
