//! The source side's congestion control: a sans-IO state machine (time in, decisions out) that keeps a media
//! stream's queue on the link short, drops whole groups of frames when the link cannot keep up, and steers the
//! encoder's bitrate toward what the link delivers.
//!
//! Inputs: [`Congestion::admit`] before encoding each frame, [`Congestion::on_sent`] when an encoded frame is
//! handed to the session, [`Congestion::on_delivered`] when the peer acknowledged it. Outputs: whether to
//! encode the frame (and whether as a key frame) and the [`Congestion::target_bitrate`].
//!
//! The rules (docs/media.md §Congestion):
//! - **Queue budget.** The oldest frame sent and not yet acknowledged may not be older than
//!   [`CongestionConfig::latency_budget`], and the unacknowledged bytes may not exceed what the link delivered
//!   in that budget over the last second (but always room for twice the largest recent frame, so a key frame
//!   on an idle link is never a congestion signal), nor [`CongestionConfig::max_inflight`]. While any is
//!   exceeded no frame is encoded.
//! - **Whole groups.** Once a frame is skipped, every following frame is skipped until the oldest
//!   unacknowledged frame is younger than half the latency budget (or none is left) and the unacknowledged bytes
//!   are at most half the byte budget; the next frame is then encoded as a key frame, so the decoder never sees
//!   a broken reference chain.
//! - **Start.** A stream starts at [`CongestionConfig::start_bitrate`] (at most its configured bitrate) and,
//!   until the first congestion, grows by [`CongestionConfig::slow_start`] per `hold`: a link of unknown
//!   capacity is probed instead of flooded.
//! - **Bitrate.** A skip, or an acknowledged frame older than the budget, multiplies the target by
//!   [`CongestionConfig::decrease`] (at most once per [`CongestionConfig::hold`]), never below the minimum;
//!   after `hold` without congestion the target grows by [`CongestionConfig::increase`] per `hold`, up to the
//!   stream's configured bitrate. A decrease never goes below 90 % of the delivery rate measured just before it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of [`Congestion`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CongestionConfig {
    /// The longest a sent frame may wait for its acknowledgement before the link counts as congested
    /// (default 250 ms).
    pub latency_budget: Duration,
    /// The most unacknowledged bytes (default: one second at the maximum bitrate, at least 64 KiB).
    pub max_inflight: u64,
    /// Multiplier applied to the target bitrate on congestion (default 0.7).
    pub decrease: f64,
    /// Growth factor per `hold` without congestion (default 1.08).
    pub increase: f64,
    /// The bitrate a stream starts at, capped by `max_bitrate` (default 300 kbit/s).
    pub start_bitrate: u32,
    /// Growth factor per `hold` before the first congestion (default 1.5).
    pub slow_start: f64,
    /// Minimum time between two bitrate changes (default 500 ms).
    pub hold: Duration,
    /// The floor of the target bitrate, in bits per second.
    pub min_bitrate: u32,
    /// The ceiling (the stream's configured bitrate), in bits per second.
    pub max_bitrate: u32,
}

impl CongestionConfig {
    /// Defaults for a stream configured at `max_bitrate`, never going below `min_bitrate`.
    pub fn new(min_bitrate: u32, max_bitrate: u32) -> Self {
        Self {
            latency_budget: Duration::from_millis(250),
            max_inflight: (u64::from(max_bitrate) / 8).max(64 * 1024),
            decrease: 0.7,
            increase: 1.08,
            start_bitrate: 300_000,
            slow_start: 1.5,
            hold: Duration::from_millis(500),
            min_bitrate: min_bitrate.min(max_bitrate),
            max_bitrate,
        }
    }
}

/// What to do with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Encode it; `key` asks for a key frame.
    Encode {
        /// The frame must be a key frame (the group before it was dropped).
        key: bool,
    },
    /// Do not encode it: the link is congested (the frame counts as dropped).
    Drop,
}

/// Figures the controller keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CongestionStats {
    /// Frames admitted for encoding.
    pub admitted: u64,
    /// Frames dropped for congestion.
    pub dropped: u64,
    /// Groups of frames dropped (each ended by a key frame).
    pub dropped_groups: u64,
    /// Bitrate decreases.
    pub decreases: u64,
    /// Bitrate increases.
    pub increases: u64,
}

/// A stream's congestion controller (see the module docs).
#[derive(Debug, Clone)]
pub struct Congestion {
    config: CongestionConfig,
    target: u32,
    inflight: u64,
    /// Unacknowledged frames, oldest first: when each was sent, and its size.
    queue: VecDeque<(Instant, u64)>,
    dropping: bool,
    last_change: Option<Instant>,
    last_congestion: Option<Instant>,
    delivered: VecDeque<(Instant, u64)>,
    /// Frames sent over the last second: when, and their size (for the largest recent frame).
    recent: VecDeque<(Instant, u64)>,
    stats: CongestionStats,
}

/// Window over which the delivery rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Congestion {
    /// A controller starting at the configured start bitrate (capped by the maximum).
    pub fn new(config: CongestionConfig) -> Self {
        Self {
            target: config.start_bitrate.clamp(config.min_bitrate, config.max_bitrate),
            config,
            inflight: 0,
            queue: VecDeque::new(),
            dropping: false,
            last_change: None,
            last_congestion: None,
            delivered: VecDeque::new(),
            recent: VecDeque::new(),
            stats: CongestionStats::default(),
        }
    }

    /// The bitrate the encoder should run at now, in bits per second.
    pub fn target_bitrate(&self) -> u32 {
        self.target
    }

    /// Bytes sent and not yet acknowledged.
    pub fn inflight(&self) -> u64 {
        self.inflight
    }

    /// The figures so far.
    pub fn stats(&self) -> CongestionStats {
        self.stats
    }

    /// The delivery rate measured over the last second, in bytes per second (`None` until the acknowledgements
    /// in the window span at least half a second).
    pub fn delivery_rate(&self, now: Instant) -> Option<u64> {
        let first = self.delivered.front()?.0;
        let span = now.saturating_duration_since(first);
        if span < RATE_WINDOW / 2 {
            return None;
        }
        let bytes: u64 = self.delivered.iter().map(|(_, b)| b).sum();
        Some((bytes as f64 / span.as_secs_f64()) as u64)
    }

    /// The most unacknowledged bytes allowed now: the link's delivery over one latency budget (the target
    /// bitrate's before a rate is measured), at least twice the largest frame of the last second, at most
    /// [`CongestionConfig::max_inflight`].
    pub fn budget_bytes(&self, now: Instant) -> u64 {
        let rate = self.delivery_rate(now).unwrap_or(u64::from(self.target) / 8);
        let largest = self.recent.iter().map(|(_, b)| *b).max().unwrap_or(0);
        ((rate as f64 * self.config.latency_budget.as_secs_f64()) as u64).max(2 * largest).min(self.config.max_inflight)
    }

    /// How long the oldest unacknowledged frame has waited (zero when none waits).
    pub fn oldest_wait(&self, now: Instant) -> Duration {
        self.queue.front().map_or(Duration::ZERO, |(t, _)| now.saturating_duration_since(*t))
    }

    /// Decides about the next frame, before it is encoded.
    pub fn admit(&mut self, now: Instant) -> Admit {
        self.expire(now);
        let wait = self.oldest_wait(now);
        let budget = self.budget_bytes(now);
        if self.dropping {
            if wait < self.config.latency_budget / 2 && self.inflight <= budget / 2 {
                self.dropping = false;
                self.stats.admitted += 1;
                return Admit::Encode { key: true };
            }
            self.stats.dropped += 1;
            return Admit::Drop;
        }
        if wait > self.config.latency_budget || self.inflight >= budget {
            self.dropping = true;
            self.stats.dropped += 1;
            self.stats.dropped_groups += 1;
            self.congested(now);
            return Admit::Drop;
        }
        self.maybe_increase(now);
        self.stats.admitted += 1;
        Admit::Encode { key: false }
    }

    /// An encoded frame of `bytes` was handed to the session at `now`.
    pub fn on_sent(&mut self, now: Instant, bytes: u64) {
        self.inflight += bytes;
        self.queue.push_back((now, bytes));
        self.recent.push_back((now, bytes));
    }

    /// The peer acknowledged the oldest unacknowledged frame, of `bytes`, sent `latency` ago (frames are
    /// acknowledged in the order they were sent).
    pub fn on_delivered(&mut self, now: Instant, bytes: u64, latency: Duration) {
        self.inflight = self.inflight.saturating_sub(bytes);
        self.queue.pop_front();
        self.delivered.push_back((now, bytes));
        self.expire(now);
        if latency > self.config.latency_budget {
            self.congested(now);
        }
    }

    /// The oldest unacknowledged frame, of `bytes`, will never be acknowledged (the session ended).
    pub fn on_lost(&mut self, bytes: u64) {
        self.inflight = self.inflight.saturating_sub(bytes);
        self.queue.pop_front();
    }

    fn expire(&mut self, now: Instant) {
        for window in [&mut self.delivered, &mut self.recent] {
            while window.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW) {
                window.pop_front();
            }
        }
    }

    fn congested(&mut self, now: Instant) {
        self.last_congestion = Some(now);
        if self.last_change.is_some_and(|t| now.saturating_duration_since(t) < self.config.hold) {
            return;
        }
        let mut next = (f64::from(self.target) * self.config.decrease) as u32;
        // Never below what the link demonstrably carried: the queue, not the rate, was the problem then.
        if let Some(rate) = self.delivery_rate(now) {
            next = next.max(u32::try_from(rate.saturating_mul(8) * 9 / 10).unwrap_or(u32::MAX).min(self.target));
        }
        let next = next.clamp(self.config.min_bitrate, self.config.max_bitrate);
        if next < self.target {
            self.target = next;
            self.stats.decreases += 1;
        }
        self.last_change = Some(now);
    }

    fn maybe_increase(&mut self, now: Instant) {
        if self.target >= self.config.max_bitrate {
            return;
        }
        let quiet = |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= self.config.hold);
        if quiet(self.last_change) && quiet(self.last_congestion) {
            let factor = if self.stats.decreases == 0 && self.stats.dropped == 0 {
                self.config.slow_start
            } else {
                self.config.increase
            };
            let next = (f64::from(self.target) * factor) as u32 + 1000;
            self.target = next.min(self.config.max_bitrate);
            self.stats.increases += 1;
            self.last_change = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_micros(33_333);

    /// Runs a source producing `frame_bytes(bitrate)` per frame over a link that carries `link_bps`, for
    /// `frames` frames; returns the controller.
    fn run(link_bps: u64, max_bitrate: u32, frames: u32) -> (Congestion, Vec<Admit>) {
        let t0 = Instant::now();
        let mut c = Congestion::new(CongestionConfig::new(20_000, max_bitrate));
        // A FIFO link.
        let mut link_free = t0;
        let mut done: VecDeque<(Instant, u64, Instant)> = VecDeque::new();
        let mut decisions = Vec::new();
        for i in 0..frames {
            let now = t0 + FRAME * i;
            while let Some(&(at, bytes, sent)) = done.front() {
                if at > now {
                    break;
                }
                done.pop_front();
                c.on_delivered(at, bytes, at - sent);
            }
            let d = c.admit(now);
            decisions.push(d);
            if let Admit::Encode { key } = d {
                let per_frame = u64::from(c.target_bitrate()) / 8 / 30;
                let bytes = if key { per_frame * 4 } else { per_frame };
                c.on_sent(now, bytes);
                let start = link_free.max(now);
                let end = start + Duration::from_secs_f64(bytes as f64 * 8.0 / link_bps as f64);
                link_free = end;
                done.push_back((end, bytes, now));
            }
        }
        (c, decisions)
    }

    #[test]
    fn a_link_with_room_keeps_every_frame_at_full_bitrate() {
        let (c, decisions) = run(2_000_000, 500_000, 300);
        assert!(decisions.iter().all(|d| matches!(d, Admit::Encode { .. })));
        assert_eq!(c.target_bitrate(), 500_000);
        assert_eq!(c.stats().dropped, 0);
    }

    #[test]
    fn a_narrow_link_drops_whole_groups_and_lowers_the_bitrate_toward_its_capacity() {
        let (c, decisions) = run(150_000, 1_000_000, 600);
        let s = c.stats();
        assert!(s.dropped > 0 && s.dropped_groups > 0, "{s:?}");
        assert!(s.decreases > 0);
        // Ends near what the link carries: between a third of it and a little above it.
        let t = c.target_bitrate();
        assert!((50_000..=200_000).contains(&t), "target {t}");
        // After every drop the next encoded frame is a key frame.
        for w in decisions.windows(2) {
            if w[0] == Admit::Drop && w[1] != Admit::Drop {
                assert_eq!(w[1], Admit::Encode { key: true });
            }
        }
    }

    #[test]
    fn the_bitrate_recovers_once_the_link_has_room_again() {
        let t0 = Instant::now();
        let mut c = Congestion::new(CongestionConfig::new(20_000, 400_000));
        c.on_sent(t0, 100_000);
        assert_eq!(c.admit(t0 + Duration::from_millis(300)), Admit::Drop);
        let low = c.target_bitrate();
        assert!(low < 400_000);
        c.on_delivered(t0 + Duration::from_millis(310), 100_000, Duration::from_millis(310));
        assert_eq!(c.admit(t0 + Duration::from_millis(320)), Admit::Encode { key: true });
        let mut now = t0 + Duration::from_millis(320);
        for _ in 0..200 {
            now += FRAME;
            assert!(matches!(c.admit(now), Admit::Encode { key: false }));
        }
        assert_eq!(c.target_bitrate(), 400_000);
        assert!(c.stats().increases > 0);
    }

    #[test]
    fn the_bitrate_never_leaves_its_bounds() {
        let t0 = Instant::now();
        let mut c = Congestion::new(CongestionConfig::new(50_000, 80_000));
        c.on_sent(t0, u64::MAX / 4);
        for i in 0..100 {
            let _ = c.admit(t0 + Duration::from_secs(i));
            assert!((50_000..=80_000).contains(&c.target_bitrate()));
        }
        c.on_lost(u64::MAX);
        assert_eq!(c.inflight(), 0);
    }
}
