//! Keep-alive and idle detection: when the link must send something to stay alive, and when the peer's silence
//! means the transport is dead.

use std::time::{Duration, Instant};

/// The peer's keep-alive interval is never taken below this (a hostile or buggy HELLO cannot make us flood).
const MIN_PEER_INTERVAL: Duration = Duration::from_millis(100);

/// The keep-alive decision of one link: the agreed interval and idle timeout, and when we last sent and
/// received a frame.
#[derive(Debug)]
pub(crate) struct KeepAlive {
    interval: Duration,
    idle_timeout: Duration,
    last_sent: Instant,
    last_recv: Instant,
    /// The interval passed without a frame going out: the next transmission is a KEEP_ALIVE if nothing else is.
    due: bool,
}

/// What [`KeepAlive::handle_timeout`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The peer was heard recently enough.
    Alive,
    /// Nothing arrived for the idle timeout: the transport is dead.
    Idle,
}

impl KeepAlive {
    /// Our own interval and idle timeout until a handshake agrees on others; nothing sent or received yet.
    pub(crate) fn new(now: Instant, interval: Duration, idle_timeout: Duration) -> Self {
        Self { interval, idle_timeout, last_sent: now, last_recv: now, due: false }
    }

    /// Agrees on parameters with the peer's HELLO: the shorter interval (the peer's taken as at least 100 ms),
    /// and the shorter idle timeout, the peer's taken as at least two intervals. Our own idle timeout is the cap:
    /// a peer's huge proposal cannot make a silent link hold a slot longer than we chose.
    pub(crate) fn negotiate(
        &mut self,
        local_interval: Duration,
        local_idle: Duration,
        peer_interval: Duration,
        peer_idle: Duration,
    ) {
        self.interval = local_interval.min(peer_interval.max(MIN_PEER_INTERVAL));
        self.idle_timeout = local_idle.min(peer_idle).max(self.interval * 2);
    }

    /// The agreed interval and idle timeout.
    pub(crate) fn params(&self) -> (Duration, Duration) {
        (self.interval, self.idle_timeout)
    }

    /// A new transport came up at `now`: both clocks restart.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.last_sent = now;
        self.last_recv = now;
    }

    /// A frame went out at `now`.
    pub(crate) fn on_sent(&mut self, now: Instant) {
        self.last_sent = now;
        self.due = false;
    }

    /// A frame arrived at `now`.
    pub(crate) fn on_received(&mut self, now: Instant) {
        self.last_recv = now;
    }

    /// Whether the next transmission should be a KEEP_ALIVE (nothing went out for an interval).
    pub(crate) fn wants_keep_alive(&self, now: Instant) -> bool {
        self.due || self.last_sent + self.interval <= now
    }

    /// The earliest of the next keep-alive and the idle deadline.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let idle = self.last_recv + self.idle_timeout;
        if self.due { idle } else { idle.min(self.last_sent + self.interval) }
    }

    /// Runs the timers due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Liveness {
        if self.last_recv + self.idle_timeout <= now {
            return Liveness::Idle;
        }
        if self.last_sent + self.interval <= now {
            self.due = true;
        }
        Liveness::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn negotiation_takes_the_shorter_interval_and_the_shorter_timeout() {
        let mut k = KeepAlive::new(Instant::now(), 5 * S, 30 * S);
        k.negotiate(5 * S, 30 * S, 2 * S, 60 * S);
        assert_eq!(k.params(), (2 * S, 30 * S));
        k.negotiate(5 * S, 30 * S, 10 * S, 10 * S);
        assert_eq!(k.params(), (5 * S, 10 * S));
    }

    #[test]
    fn negotiation_bounds_a_hostile_peer() {
        let mut k = KeepAlive::new(Instant::now(), 5 * S, 30 * S);
        // An interval of 0 is taken as 100 ms, never as "send keep-alives all the time".
        k.negotiate(5 * S, S / 10, Duration::ZERO, Duration::ZERO);
        assert_eq!(k.params(), (MIN_PEER_INTERVAL, MIN_PEER_INTERVAL * 2));
        // The idle timeout is never shorter than two intervals.
        k.negotiate(5 * S, S, 10 * S, S);
        assert_eq!(k.params(), (5 * S, 10 * S));
        // A huge proposal does not hold a silent link's slot beyond our own timeout.
        k.negotiate(5 * S, 30 * S, 5 * S, Duration::from_secs(u64::from(u32::MAX)));
        assert_eq!(k.params(), (5 * S, 30 * S));
    }

    #[test]
    fn a_quiet_sender_owes_a_keep_alive() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0, 5 * S, 30 * S);
        assert_eq!(k.poll_timeout(), t0 + 5 * S);
        assert!(!k.wants_keep_alive(t0 + 4 * S));
        assert_eq!(k.handle_timeout(t0 + 5 * S), Liveness::Alive);
        assert!(k.wants_keep_alive(t0 + 5 * S));
        // While one is due, only the idle deadline remains.
        assert_eq!(k.poll_timeout(), t0 + 30 * S);
        k.on_sent(t0 + 6 * S);
        assert!(!k.wants_keep_alive(t0 + 6 * S));
        assert_eq!(k.poll_timeout(), t0 + 11 * S);
    }

    #[test]
    fn silence_from_the_peer_is_idle_and_traffic_is_not() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0, 5 * S, 30 * S);
        k.on_received(t0 + 20 * S);
        assert_eq!(k.handle_timeout(t0 + 30 * S), Liveness::Alive);
        assert_eq!(k.handle_timeout(t0 + 50 * S), Liveness::Idle);
        k.restart(t0 + 50 * S);
        assert_eq!(k.handle_timeout(t0 + 60 * S), Liveness::Alive);
    }
}
