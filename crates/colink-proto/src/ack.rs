//! When to acknowledge: which channels owe the peer an ACK entry, and whether the ACK goes now (a gap, enough
//! bytes) or after a short delay (a completed message, or partial progress on a slow link).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The acknowledgement timer of one link's receiving side.
#[derive(Debug)]
pub(crate) struct AckTimer {
    /// Channels whose receive position changed since the last ACK.
    dirty: BTreeSet<u32>,
    /// Wire bytes taken since the last ACK.
    bytes: u64,
    /// An ACK is due at this time.
    deadline: Option<Instant>,
    /// An ACK is due now.
    now: bool,
    /// Send at once after this many wire bytes.
    threshold: u64,
    /// Delay after a completed message.
    delay: Duration,
    /// Longest delay for partial progress.
    max_delay: Duration,
}

impl AckTimer {
    /// A timer acknowledging after `threshold` bytes at once, a completed message within `delay`, and any
    /// progress within `max_delay`.
    pub(crate) fn new(threshold: u64, delay: Duration, max_delay: Duration) -> Self {
        Self { dirty: BTreeSet::new(), bytes: 0, deadline: None, now: false, threshold, delay, max_delay }
    }

    /// A fragment of `wire_len` bytes was taken on `channel`: acknowledge at once past the byte threshold,
    /// otherwise within the longest delay, so a slow link never looks stalled to the sender.
    pub(crate) fn on_taken(&mut self, now: Instant, channel: u32, wire_len: u64) {
        self.dirty.insert(channel);
        self.bytes += wire_len;
        if self.bytes >= self.threshold {
            self.now = true;
        } else if self.deadline.is_none() {
            self.deadline = Some(now + self.max_delay);
        }
    }

    /// A message completed: acknowledge within the short delay.
    pub(crate) fn on_message(&mut self, now: Instant) {
        self.schedule(now);
    }

    /// A duplicate arrived on `channel` (the peer may have missed our ACK): acknowledge within the short delay.
    pub(crate) fn on_duplicate(&mut self, now: Instant, channel: u32) {
        self.dirty.insert(channel);
        self.schedule(now);
    }

    /// A new gap on `channel`: report it at once.
    pub(crate) fn on_gap(&mut self, channel: u32) {
        self.dirty.insert(channel);
        self.now = true;
    }

    /// The app read enough on `channel` that the peer should hear of the new receive credit at once.
    pub(crate) fn on_credit(&mut self, channel: u32) {
        self.dirty.insert(channel);
        self.now = true;
    }

    /// Whether an ACK should go out at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.now || self.deadline.is_some_and(|d| d <= now)
    }

    /// The delayed ACK's deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Makes a delayed ACK whose time came due now.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.now = true;
            self.deadline = None;
        }
    }

    /// The channels that owe an entry, in order, for building an ACK; the timer restarts.
    pub(crate) fn begin(&mut self) -> Vec<u32> {
        self.now = false;
        self.deadline = None;
        self.bytes = 0;
        self.dirty.iter().copied().collect()
    }

    /// The ACK built after [`begin`](Self::begin) carried the entries of `sent`; channels still owed (no room
    /// in one frame) make the next ACK due at once.
    pub(crate) fn sent(&mut self, sent: &[u32]) {
        for ch in sent {
            self.dirty.remove(ch);
        }
        if !self.dirty.is_empty() {
            self.now = true;
        }
    }

    /// None of the channels from [`begin`](Self::begin) had an entry to give (they closed meanwhile): nothing
    /// is owed any more.
    pub(crate) fn nothing_owed(&mut self) {
        self.dirty.clear();
    }

    /// `channel` is gone (its session ended): it owes nothing.
    pub(crate) fn forget(&mut self, channel: u32) {
        self.dirty.remove(&channel);
    }

    /// Fresh numbering on the link: no channel owes anything.
    pub(crate) fn forget_all(&mut self) {
        self.dirty.clear();
    }

    /// Acknowledge within the short delay (or sooner, if already due sooner).
    fn schedule(&mut self, now: Instant) {
        let at = now + self.delay;
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// The transport was lost: nothing owed, no timer.
    pub(crate) fn reset(&mut self) {
        self.dirty.clear();
        self.now = false;
        self.deadline = None;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timer() -> AckTimer {
        AckTimer::new(1000, 5 * MS, 40 * MS)
    }

    #[test]
    fn partial_progress_is_acknowledged_within_the_longest_delay() {
        let t0 = Instant::now();
        let mut a = timer();
        a.on_taken(t0, 4, 100);
        a.on_taken(t0 + MS, 4, 100);
        assert_eq!(a.poll_timeout(), Some(t0 + 40 * MS));
        assert!(!a.is_due(t0 + 39 * MS));
        assert!(a.is_due(t0 + 40 * MS));
        a.handle_timeout(t0 + 40 * MS);
        assert_eq!(a.poll_timeout(), None);
        assert!(a.is_due(t0 + 40 * MS));
    }

    #[test]
    fn the_byte_threshold_acknowledges_at_once() {
        let t0 = Instant::now();
        let mut a = timer();
        a.on_taken(t0, 4, 600);
        assert!(!a.is_due(t0));
        a.on_taken(t0, 8, 400);
        assert!(a.is_due(t0));
        assert_eq!(a.begin(), vec![4, 8]);
        // The byte count restarts with the ACK.
        a.sent(&[4, 8]);
        a.on_taken(t0, 4, 600);
        assert!(!a.is_due(t0));
    }

    #[test]
    fn a_completed_message_or_duplicate_shortens_the_delay_and_a_gap_is_immediate() {
        let t0 = Instant::now();
        let mut a = timer();
        a.on_taken(t0, 4, 10);
        a.on_message(t0 + MS);
        assert_eq!(a.poll_timeout(), Some(t0 + 6 * MS));
        let mut b = timer();
        b.on_duplicate(t0, 12);
        assert_eq!((b.poll_timeout(), b.begin()), (Some(t0 + 5 * MS), vec![12]));
        let mut c = timer();
        c.on_gap(16);
        assert!(c.is_due(t0));
    }

    #[test]
    fn entries_left_over_make_the_next_ack_immediate() {
        let t0 = Instant::now();
        let mut a = timer();
        for ch in [4, 8, 12] {
            a.on_taken(t0, ch, 10);
        }
        assert_eq!(a.begin(), vec![4, 8, 12]);
        a.sent(&[4, 8]);
        assert!(a.is_due(t0));
        assert_eq!(a.begin(), vec![12]);
        // With no entry to give (every owed channel closed meanwhile) nothing is owed any more.
        a.nothing_owed();
        assert_eq!(a.begin(), Vec::<u32>::new());
        a.on_taken(t0, 4, 10);
        a.forget(4);
        assert_eq!(a.begin(), Vec::<u32>::new());
    }
}
