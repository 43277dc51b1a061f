//! Session numbers on a link: the initiator allocates odd numbers, the responder even ones, each side in
//! increasing order, so both can open sessions without coordination and a stale or forged number is spotted.

use super::types::Role;

/// The highest session number: a channel number holds the session number above two or three bits of lane.
const MAX_SESSION: u32 = super::types::LaneLayout::MAX_SESSION;

/// The session numbers of one link, as seen from one side.
#[derive(Debug)]
pub(crate) struct SessionNumbers {
    role: Role,
    /// The next number this side allocates.
    next_local: u32,
    /// The highest number the peer used so far.
    max_peer: u32,
}

impl SessionNumbers {
    /// Numbers for the side with `role`, none used yet.
    pub(crate) fn new(role: Role) -> Self {
        let mut this = Self { role, next_local: 0, max_peer: 0 };
        this.reset();
        this
    }

    /// Fresh numbering (a new link replaced a lost one).
    pub(crate) fn reset(&mut self) {
        self.next_local = if self.role == Role::Initiator { 1 } else { 2 };
        self.max_peer = 0;
    }

    /// The next local number; `None` once the numbers ran out.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        let n = self.next_local;
        if n > MAX_SESSION - 2 {
            return None;
        }
        self.next_local += 2;
        Some(n)
    }

    /// Whether this side allocates `s` (initiator: odd, responder: even).
    pub(crate) fn is_local(&self, s: u32) -> bool {
        (s % 2 == 1) == (self.role == Role::Initiator)
    }

    /// Whether `s` was ever allocated on this link, by either side.
    pub(crate) fn is_known(&self, s: u32) -> bool {
        if s == 0 {
            return false;
        }
        if self.is_local(s) { s < self.next_local } else { s <= self.max_peer }
    }

    /// The peer opens session `s`: accepted only if it is the peer's kind of number, higher than any it used
    /// before, and in range.
    pub(crate) fn accept_peer(&mut self, s: u32) -> bool {
        if s == 0 || self.is_local(s) || s <= self.max_peer || s > MAX_SESSION {
            return false;
        }
        self.max_peer = s;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_allocates_its_own_parity_in_order() {
        let mut i = SessionNumbers::new(Role::Initiator);
        let mut r = SessionNumbers::new(Role::Responder);
        assert_eq!([i.allocate(), i.allocate()], [Some(1), Some(3)]);
        assert_eq!([r.allocate(), r.allocate()], [Some(2), Some(4)]);
        assert!(i.is_local(5) && !i.is_local(4) && r.is_local(4));
        assert!(i.is_known(3) && !i.is_known(5) && !i.is_known(0));
    }

    #[test]
    fn the_peer_must_use_new_numbers_of_its_own_parity() {
        let mut r = SessionNumbers::new(Role::Responder);
        assert!(!r.accept_peer(0));
        assert!(!r.accept_peer(2), "the responder's own parity");
        assert!(r.accept_peer(3));
        assert!(r.is_known(1) && r.is_known(3) && !r.is_known(5));
        assert!(!r.accept_peer(3) && !r.accept_peer(1), "reused or going backwards");
        assert!(!r.accept_peer(MAX_SESSION + 2), "beyond a channel number's range");
        assert!(r.accept_peer(7));
        r.reset();
        assert!(!r.is_known(7));
        assert_eq!(r.allocate(), Some(2));
    }

    #[test]
    fn numbers_run_out_before_the_channel_range() {
        let mut i = SessionNumbers::new(Role::Initiator);
        i.next_local = MAX_SESSION - 2;
        assert_eq!(i.allocate(), Some(MAX_SESSION - 2));
        assert_eq!(i.allocate(), None);
    }
}
