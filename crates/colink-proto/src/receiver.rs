//! The receive position of every channel: whether an arriving fragment is the next one (take it), one the
//! receiver already holds (a duplicate) or one beyond a gap (ask for a resend, once per gap); bounded
//! reassembly; the positions that acknowledgements and resume report; and the receive credit of every session
//! channel: the bytes handed towards the app and not yet read by it, and the room that leaves (docs/sessions.md
//! §4.5).

use std::collections::BTreeMap;
use std::time::Instant;

use colink_frame::{
    Frame, FrameKind, Limits, Message, Position as FramePosition, Reassembler, ReassemblyError, Stalled,
};

use super::error::ProtocolError;
use super::wire::{AckEntry, CH_CONTROL, Credit, MAX_SACK_BLOCKS, Position};

/// Most fragments held beyond gaps on one link (version 3), whatever their size.
pub(crate) const MAX_HELD_FRAGMENTS: usize = 1024;

/// What to do with an arriving session-lane fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No receive lane for this channel.
    Unknown,
    /// The next fragment in order: [`Receiver::take`] it.
    Take,
    /// Already held: drop it (and acknowledge again, the peer may have missed our ACK).
    Duplicate,
    /// Beyond a gap: drop it; `new` when the gap was not reported yet (report it at once).
    Gap {
        /// The gap was not reported yet.
        new: bool,
    },
    /// Beyond a gap, and kept until the gap fills (version 3); `new` as for [`Gap`](Self::Gap).
    Held {
        /// The gap was not reported yet.
        new: bool,
    },
}

/// Receive side of one channel.
#[derive(Debug)]
struct RecvLane {
    kind: FrameKind,
    /// The next message to deliver; earlier ones were delivered.
    next_seq: u32,
    /// The position last reported as a gap (one report per gap).
    nacked: Option<Position>,
    /// A gap report is waiting to be sent.
    nack_pending: bool,
    /// Payload bytes of whole messages handed towards the app and not yet read by it.
    unread: u64,
    /// The credit last sent in an ACK entry.
    advertised: Credit,
    /// Window updates still to repeat (an ACK may be lost and nothing else would tell the waiting sender).
    repeats: u8,
    /// A first fragment may restart the partial message: nothing was taken on this channel since the transport
    /// changed (a resumed sender restarts a message whose fragments no longer fit). Otherwise, while fragments
    /// are held (version 3), a first fragment of the partial message is a duplicate — a resend after a lost
    /// acknowledgement — and must not throw away what the partial message and the held fragments hold.
    restartable: bool,
}

impl RecvLane {
    fn new(kind: FrameKind, window: u64) -> Self {
        let advertised = Credit { room: clamp(window), empty: true };
        Self {
            kind,
            next_seq: 0,
            nacked: None,
            nack_pending: false,
            unread: 0,
            advertised,
            repeats: 0,
            restartable: true,
        }
    }
}

/// How often a window update is repeated (one retransmission timeout apart) while no fragment arrives on its
/// channel: ACKs are not acknowledged, and a sender waiting for credit has nothing in flight to time out.
const CREDIT_REPEATS: u8 = 3;

/// A credit figure as the wire carries it (at most `u32::MAX`).
fn clamp(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Every channel's receive position on one link, and the reassembly of their messages.
#[derive(Debug)]
pub(crate) struct Receiver {
    lanes: BTreeMap<u32, RecvLane>,
    reassembler: Reassembler,
    limits: Limits,
    /// The receive window of every session channel (payload bytes the app may leave unread).
    window: u64,
    /// The peer follows the credit (version 2): a message beyond it is a protocol error.
    enforce: bool,
    /// Fragments kept beyond a gap (version 3), by channel, sequence number and fragment index.
    held: BTreeMap<(u32, u32, u32), Frame>,
    /// Payload bytes in `held`.
    held_bytes: u64,
    /// Most payload bytes `held` may take (0: nothing is held, as in versions 1 and 2).
    hold_limit: u64,
}

impl Receiver {
    /// A receiver enforcing `limits` on what the peer sends; no lanes until [`reset`](Self::reset).
    /// `window` is the receive window of every session channel (clamped to `u32::MAX`).
    pub(crate) fn new(limits: Limits, window: u64) -> Self {
        let window = u64::from(clamp(window));
        Self {
            lanes: BTreeMap::new(),
            reassembler: Reassembler::new(limits.clone()),
            limits,
            window,
            enforce: false,
            held: BTreeMap::new(),
            held_bytes: 0,
            hold_limit: 0,
        }
    }

    /// Version 3: keep fragments beyond a gap, up to `limit` payload bytes (and [`MAX_HELD_FRAGMENTS`]) per
    /// link; 0 keeps none (versions 1 and 2).
    pub(crate) fn set_hold_limit(&mut self, limit: u64) {
        self.hold_limit = limit;
        if limit == 0 {
            self.drop_held();
        }
    }

    /// The transport is gone: fragments held beyond gaps go (the peer resends from the positions), and the
    /// first fragment of each channel on the next transport may restart its partial message.
    pub(crate) fn transport_lost(&mut self) {
        self.drop_held();
        for rl in self.lanes.values_mut() {
            rl.restartable = true;
        }
    }

    /// Forgets every fragment held beyond a gap.
    fn drop_held(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
    }

    /// Forgets the fragments held beyond a gap on `channel`.
    fn drop_held_channel(&mut self, channel: u32) {
        let keys: Vec<_> = self.held.range((channel, 0, 0)..=(channel, u32::MAX, u32::MAX)).map(|(k, _)| *k).collect();
        for k in keys {
            if let Some(f) = self.held.remove(&k) {
                self.held_bytes -= (f.payload.len() as u64).min(self.held_bytes);
            }
        }
    }

    /// Payload bytes held beyond gaps (version 3).
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Fragments held beyond gaps (version 3).
    pub(crate) fn held_fragments(&self) -> usize {
        self.held.len()
    }

    /// The receive window of every session channel.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Whether the peer must follow the credit (version 2 agreed); messages beyond it then close the link.
    pub(crate) fn set_enforce(&mut self, enforce: bool) {
        self.enforce = enforce;
    }

    /// Fresh numbering on the link: only the control lane, nothing buffered.
    pub(crate) fn reset(&mut self) {
        self.lanes.clear();
        self.lanes.insert(CH_CONTROL, RecvLane::new(FrameKind::Control, 0));
        self.reassembler = Reassembler::new(self.limits.clone());
        self.drop_held();
    }

    /// Lets every message kind be `extra` bytes longer (sealed messages carry a tag). Call before anything was
    /// received: the reassembly state starts afresh.
    pub(crate) fn grow_limits(&mut self, extra: u32) {
        for kind in [
            FrameKind::Control,
            FrameKind::Message,
            FrameKind::Data,
            FrameKind::Image,
            FrameKind::StreamMedia,
            FrameKind::File,
        ] {
            let len = self.limits.max_message_len(kind).saturating_add(extra);
            self.limits.set_max_message_len(kind, len);
        }
        self.reassembler = Reassembler::new(self.limits.clone());
    }

    /// Opens the lane of `channel` for frames of `kind`.
    pub(crate) fn open(&mut self, channel: u32, kind: FrameKind) {
        self.lanes.insert(channel, RecvLane::new(kind, self.window));
    }

    /// Closes the lane of `channel` and drops its partial messages.
    pub(crate) fn close(&mut self, channel: u32) {
        if self.lanes.remove(&channel).is_some() {
            self.reassembler.discard_channel(channel);
            self.drop_held_channel(channel);
        }
    }

    /// Reassembles a handshake-channel frame (no ordering or acknowledgement: the handshake retries instead).
    pub(crate) fn reassemble_handshake(
        &mut self,
        now: Instant,
        frame: Frame,
    ) -> Result<Option<Message>, ReassemblyError> {
        self.reassembler.push(now, frame)
    }

    /// Classifies a session-lane fragment against the channel's position, and keeps it if it lies beyond a
    /// gap and may be held (version 3, see [`hold`](Self::hold)). A frame of the wrong kind for its channel is
    /// a protocol error. A gap is reported once: a second fragment beyond the same gap is not new.
    pub(crate) fn classify_and_hold(&mut self, frame: Frame) -> Result<(Verdict, Option<Frame>), ProtocolError> {
        let verdict = self.classify(&frame)?;
        match verdict {
            Verdict::Gap { new } => {
                let key = (frame.header.channel, frame.header.seq, frame.header.position.index());
                if self.held.contains_key(&key) {
                    return Ok((Verdict::Duplicate, None));
                }
                match self.hold(frame) {
                    Ok(()) => Ok((Verdict::Held { new }, None)),
                    Err(frame) => Ok((verdict, Some(frame))),
                }
            }
            _ => Ok((verdict, Some(frame))),
        }
    }

    /// Keeps a fragment beyond a gap while the bounds allow: at most the hold limit of payload bytes and
    /// [`MAX_HELD_FRAGMENTS`] fragments on the link, and, with the partial messages, at most the reassembly
    /// limit of buffered bytes. Otherwise it is handed back (dropped; the peer resends it).
    fn hold(&mut self, frame: Frame) -> Result<(), Frame> {
        let len = frame.payload.len() as u64;
        let fits = self.hold_limit > 0
            && self.held.len() < MAX_HELD_FRAGMENTS
            && self.held_bytes + len <= self.hold_limit
            && self.held_bytes + len + self.reassembler.buffered_bytes() <= self.limits.max_buffered_bytes;
        if !fits {
            return Err(frame);
        }
        let key = (frame.header.channel, frame.header.seq, frame.header.position.index());
        self.held_bytes += len;
        self.held.insert(key, frame);
        Ok(())
    }

    /// The held fragment of `channel` that comes next at its receive position, if any; held fragments the
    /// position has passed are dropped.
    pub(crate) fn next_held(&mut self, channel: u32) -> Option<Frame> {
        let rl = self.lanes.get(&channel)?;
        let next_seq = rl.next_seq;
        let frag = self.reassembler.next_expected(channel, next_seq).unwrap_or(0);
        loop {
            let (key, _) = self.held.range((channel, 0, 0)..=(channel, u32::MAX, u32::MAX)).next()?;
            let key = *key;
            if (key.1, key.2) > (next_seq, frag) {
                return None;
            }
            let f = self.held.remove(&key)?;
            self.held_bytes -= (f.payload.len() as u64).min(self.held_bytes);
            if (key.1, key.2) == (next_seq, frag) {
                return Some(f);
            }
        }
    }

    /// The ranges of positions `[from, to)` held beyond the receive position of `channel`, first ones first
    /// (at most [`MAX_SACK_BLOCKS`]).
    /// Also whether more ranges are held than fit.
    fn sack_blocks(&self, channel: u32) -> (Vec<(Position, Position)>, bool) {
        let mut blocks: Vec<(Position, Position)> = Vec::new();
        for ((_, seq, index), f) in self.held.range((channel, 0, 0)..=(channel, u32::MAX, u32::MAX)) {
            let at = Position { seq: *seq, frag: *index };
            let end = if f.header.last {
                Position { seq: seq.saturating_add(1), frag: 0 }
            } else {
                Position { seq: *seq, frag: index.saturating_add(1) }
            };
            if let Some((_, to)) = blocks.last_mut()
                && *to == at
            {
                *to = end;
            } else if blocks.len() == MAX_SACK_BLOCKS {
                return (blocks, true);
            } else {
                blocks.push((at, end));
            }
        }
        (blocks, false)
    }

    /// Classifies a session-lane fragment against the channel's position. A frame of the wrong kind for its
    /// channel is a protocol error. A gap is reported once: a second fragment beyond the same gap is not new.
    pub(crate) fn classify(&mut self, frame: &Frame) -> Result<Verdict, ProtocolError> {
        let ch = frame.header.channel;
        let Some(rl) = self.lanes.get_mut(&ch) else { return Ok(Verdict::Unknown) };
        if rl.kind != frame.header.kind {
            return Err(ProtocolError::WrongKind { kind: frame.header.kind as u8, channel: ch });
        }
        let seq = frame.header.seq;
        let index = frame.header.position.index();
        let expected = self.reassembler.next_expected(ch, rl.next_seq);
        let gap = if seq < rl.next_seq {
            return Ok(Verdict::Duplicate);
        } else if seq > rl.next_seq {
            Position { seq: rl.next_seq, frag: expected.unwrap_or(0) }
        } else {
            match (matches!(frame.header.position, FramePosition::First { .. }), expected) {
                (true, Some(e)) if e > 0 && self.hold_limit > 0 && !rl.restartable => {
                    return Ok(Verdict::Duplicate);
                }
                (true, _) => return Ok(Verdict::Take),
                (false, Some(e)) if index == e => return Ok(Verdict::Take),
                (false, Some(e)) if index < e => return Ok(Verdict::Duplicate),
                (false, e) => Position { seq, frag: e.unwrap_or(0) },
            }
        };
        let new = rl.nacked != Some(gap);
        if new {
            rl.nacked = Some(gap);
            rl.nack_pending = true;
        }
        Ok(Verdict::Gap { new })
    }

    /// Takes a fragment [`classify`](Self::classify) judged [`Verdict::Take`]; returns the message it
    /// completed, if any (the channel then expects the next message).
    pub(crate) fn take(&mut self, now: Instant, frame: Frame) -> Result<Option<Message>, ProtocolError> {
        let ch = frame.header.channel;
        let done = self.reassembler.push(now, frame)?;
        if let Some(rl) = self.lanes.get_mut(&ch) {
            rl.nacked = None;
            rl.restartable = false;
            rl.repeats = 0; // the sender is sending: it has credit
            if done.is_some() {
                rl.next_seq = rl.next_seq.wrapping_add(1);
            }
        }
        Ok(done)
    }

    /// A whole message of `len` payload bytes on session channel `channel` goes to the app: it counts as unread
    /// until [`consumed`](Self::consumed). With the credit enforced, a message that did not fit the credit the
    /// peer was granted (more than the window unread, unless it arrived when nothing was unread) is a protocol
    /// error.
    pub(crate) fn deliver(&mut self, channel: u32, len: u64) -> Result<(), ProtocolError> {
        let window = self.window;
        let Some(rl) = self.lanes.get_mut(&channel) else { return Ok(()) };
        if self.enforce && rl.unread > 0 && rl.unread.saturating_add(len) > window {
            return Err(ProtocolError::CreditExceeded { channel, unread: rl.unread, len, window });
        }
        rl.unread = rl.unread.saturating_add(len);
        Ok(())
    }

    /// The app read `len` payload bytes of `channel`. Returns whether the peer should hear of the new room at
    /// once: it grew by a quarter of the window since the last ACK entry, or everything was read.
    pub(crate) fn consumed(&mut self, channel: u32, len: u64) -> bool {
        let window = self.window;
        let Some(rl) = self.lanes.get_mut(&channel) else { return false };
        rl.unread = rl.unread.saturating_sub(len);
        let room = window.saturating_sub(rl.unread);
        let update =
            (rl.unread == 0 && !rl.advertised.empty) || room >= u64::from(rl.advertised.room) + (window / 4).max(1);
        if update {
            rl.repeats = CREDIT_REPEATS;
        }
        update
    }

    /// The channels whose last window update is to be repeated now (each at most [`CREDIT_REPEATS`] times,
    /// until a fragment arrives on it).
    pub(crate) fn credit_repeats(&mut self) -> Vec<u32> {
        let mut due = Vec::new();
        for (ch, rl) in &mut self.lanes {
            if rl.repeats > 0 {
                rl.repeats -= 1;
                due.push(*ch);
            }
        }
        due
    }

    /// Every session channel (what a resume re-announces the credit of).
    pub(crate) fn session_channels(&self) -> Vec<u32> {
        self.lanes.keys().copied().filter(|ch| *ch != CH_CONTROL).collect()
    }

    /// Whether a window update waits to be repeated.
    pub(crate) fn repeats_pending(&self) -> bool {
        self.lanes.values().any(|rl| rl.repeats > 0)
    }

    /// Payload bytes of `channel` handed towards the app and not yet read.
    pub(crate) fn unread(&self, channel: u32) -> Option<u64> {
        self.lanes.get(&channel).map(|rl| rl.unread)
    }

    fn credit(&self, rl: &RecvLane) -> Credit {
        Credit { room: clamp(self.window.saturating_sub(rl.unread)), empty: rl.unread == 0 }
    }

    /// The position of `channel`, or the gap awaiting its report.
    fn position(&self, channel: u32, rl: &RecvLane) -> Position {
        let frag = self.reassembler.next_expected(channel, rl.next_seq).unwrap_or(0);
        Position { seq: rl.next_seq, frag }
    }

    /// The ACK entry `channel` owes: its position, or the gap when a report is pending.
    pub(crate) fn ack_entry(&self, channel: u32) -> Option<AckEntry> {
        let rl = self.lanes.get(&channel)?;
        let pos = self.position(channel, rl);
        let nack = rl.nack_pending;
        let credit = if channel == CH_CONTROL { Credit::default() } else { self.credit(rl) };
        let (sacks, more) = if self.hold_limit > 0 { self.sack_blocks(channel) } else { (Vec::new(), false) };
        let pos = if nack { rl.nacked.unwrap_or(pos) } else { pos };
        let sacks = sacks.into_iter().filter(|(from, _)| *from > pos).collect();
        Some(AckEntry { channel, pos, nack, credit, sacks, more })
    }

    /// The entry of `channel` went out: a pending gap report is sent.
    pub(crate) fn entry_sent(&mut self, channel: u32) {
        let credit = self.lanes.get(&channel).map(|rl| self.credit(rl));
        if let (Some(rl), Some(credit)) = (self.lanes.get_mut(&channel), credit) {
            rl.nack_pending = false;
            rl.advertised = credit;
        }
    }

    /// Every channel's position (what the peer may skip on resume).
    pub(crate) fn resume_state(&self) -> Vec<(u32, Position)> {
        self.lanes.iter().map(|(ch, rl)| (*ch, self.position(*ch, rl))).collect()
    }

    /// Payload bytes held by partial messages.
    pub(crate) fn buffered_bytes(&self) -> u64 {
        self.reassembler.buffered_bytes()
    }

    /// When a partial message stalls.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.reassembler.poll_timeout()
    }

    /// Drops partial messages stalled at `now`, and what their channels held beyond them (the sender starts
    /// such a message over, possibly cut differently).
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<Stalled> {
        let stalled = self.reassembler.handle_timeout(now);
        for s in &stalled {
            self.drop_held_channel(s.channel);
        }
        stalled
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use colink_frame::{Fragmenter, LinkMode, Mtu, decode_packet};

    use super::*;

    const CH: u32 = 5;

    fn receiver() -> Receiver {
        let mut r = Receiver::new(Limits::default(), 1000);
        r.reset();
        r.open(CH, FrameKind::Data);
        r
    }

    /// The frames of message `seq` (`len` bytes) on `CH` at MTU 100.
    fn frames(seq: u32, len: usize) -> Vec<Frame> {
        let payload = Bytes::from(vec![seq as u8; len]);
        let mtu = Mtu::new(100).unwrap();
        let mut f = Fragmenter::new(FrameKind::Data, CH, seq, payload, LinkMode::Packet, mtu).unwrap();
        let mut out = BytesMut::new();
        let mut v = Vec::new();
        while f.next_frame(&mut out).is_some() {
            v.push(decode_packet(out.split().freeze()).unwrap());
        }
        v
    }

    #[test]
    fn in_order_fragments_are_taken_and_complete_messages() {
        let t = Instant::now();
        let mut r = receiver();
        let fs = frames(0, 250);
        assert!(fs.len() > 2);
        let last = fs.len() - 1;
        for (i, f) in fs.into_iter().enumerate() {
            assert_eq!(r.classify(&f).unwrap(), Verdict::Take);
            let done = r.take(t, f).unwrap();
            assert_eq!(done.is_some(), i == last);
        }
        assert_eq!(
            r.ack_entry(CH).unwrap(),
            AckEntry {
                channel: CH,
                pos: Position { seq: 1, frag: 0 },
                nack: false,
                credit: Credit { room: 1000, empty: true },
                sacks: Vec::new(),
                more: false,
            }
        );
    }

    #[test]
    fn fragments_already_held_are_duplicates() {
        let t = Instant::now();
        let mut r = receiver();
        let fs = frames(0, 250);
        r.take(t, fs[0].clone()).unwrap();
        r.take(t, fs[1].clone()).unwrap();
        assert_eq!(r.classify(&fs[1]).unwrap(), Verdict::Duplicate);
        for f in frames(0, 250).into_iter().skip(2) {
            r.take(t, f).unwrap();
        }
        // The whole message is delivered: any of its fragments is a duplicate now.
        assert_eq!(r.classify(&fs[0]).unwrap(), Verdict::Duplicate);
    }

    #[test]
    fn a_gap_is_reported_once_with_the_missing_position() {
        let t = Instant::now();
        let mut r = receiver();
        let fs = frames(0, 250);
        r.take(t, fs[0].clone()).unwrap();
        // Fragment 1 is lost; 2 arrives.
        assert_eq!(r.classify(&fs[2]).unwrap(), Verdict::Gap { new: true });
        let gap = AckEntry {
            channel: CH,
            pos: Position { seq: 0, frag: 1 },
            nack: true,
            credit: Credit { room: 1000, empty: true },
            sacks: Vec::new(),
            more: false,
        };
        assert_eq!(r.ack_entry(CH).unwrap(), gap);
        assert_eq!(r.classify(&fs[2]).unwrap(), Verdict::Gap { new: false });
        r.entry_sent(CH);
        assert!(!r.ack_entry(CH).unwrap().nack);
        // A later message is beyond the same gap.
        assert_eq!(r.classify(&frames(1, 10)[0]).unwrap(), Verdict::Gap { new: false });
        // The resend fills the gap; a new gap later is reported again.
        assert_eq!(r.classify(&fs[1]).unwrap(), Verdict::Take);
        r.take(t, fs[1].clone()).unwrap();
        assert_eq!(r.classify(&frames(1, 10)[0]).unwrap(), Verdict::Gap { new: true });
    }

    #[test]
    fn wrong_kinds_and_unknown_channels() {
        let mut r = receiver();
        let msg = Frame::single(FrameKind::Message, CH, 0, Bytes::from_static(b"x")).unwrap();
        assert!(matches!(r.classify(&msg), Err(ProtocolError::WrongKind { channel: CH, .. })));
        let other = Frame::single(FrameKind::Data, 9, 0, Bytes::from_static(b"x")).unwrap();
        assert_eq!(r.classify(&other).unwrap(), Verdict::Unknown);
        r.close(CH);
        assert_eq!(r.classify(&frames(0, 10)[0]).unwrap(), Verdict::Unknown);
    }

    #[test]
    fn resume_reports_every_position_including_partial_messages() {
        let t = Instant::now();
        let mut r = receiver();
        let fs = frames(0, 250);
        r.take(t, fs[0].clone()).unwrap();
        assert_eq!(
            r.resume_state(),
            vec![(CH_CONTROL, Position { seq: 0, frag: 0 }), (CH, Position { seq: 0, frag: 1 })]
        );
        assert!(r.buffered_bytes() > 0);
        r.close(CH);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn version_3_holds_fragments_beyond_a_gap_reports_them_and_takes_them_when_it_fills() {
        let t = Instant::now();
        let mut r = receiver();
        r.set_hold_limit(10_000);
        let p = |seq, frag| Position { seq, frag };
        // Message 0 has 3 fragments (100-byte frames), message 1 one. Fragment (0,1) is lost.
        let m0 = frames(0, 250);
        let m1 = frames(1, 10);
        assert_eq!(m0.len(), 3);
        let (v, f) = r.classify_and_hold(m0[0].clone()).unwrap();
        assert_eq!(v, Verdict::Take);
        r.take(t, f.unwrap()).unwrap();
        assert_eq!(r.classify_and_hold(m0[2].clone()).unwrap().0, Verdict::Held { new: true });
        assert_eq!(r.classify_and_hold(m1[0].clone()).unwrap().0, Verdict::Held { new: false });
        // A copy of a held fragment is a duplicate.
        assert_eq!(r.classify_and_hold(m1[0].clone()).unwrap().0, Verdict::Duplicate);
        // One block: (0,2) was the last fragment of message 0, so it runs on into message 1.
        let e = r.ack_entry(CH).unwrap();
        assert_eq!((e.pos, e.nack, e.sacks), (p(0, 1), true, vec![(p(0, 2), p(2, 0))]));
        assert_eq!(r.held_fragments(), 2);
        // The resend fills the gap; the held fragments follow in order and complete both messages.
        let (v, f) = r.classify_and_hold(m0[1].clone()).unwrap();
        assert_eq!(v, Verdict::Take);
        assert!(r.take(t, f.unwrap()).unwrap().is_none());
        let mut done = Vec::new();
        while let Some(f) = r.next_held(CH) {
            if let Some(m) = r.take(t, f).unwrap() {
                done.push(m.seq);
            }
        }
        assert_eq!(done, vec![0, 1]);
        assert_eq!((r.held_bytes(), r.held_fragments()), (0, 0));
        assert!(r.ack_entry(CH).unwrap().sacks.is_empty());
    }

    #[test]
    fn more_held_ranges_than_blocks_are_flagged() {
        let mut r = receiver();
        r.set_hold_limit(100_000);
        // Messages 1, 3, 5, … 39 held: 20 separate ranges.
        for seq in (1..40).step_by(2) {
            assert!(matches!(r.classify_and_hold(frames(seq, 10)[0].clone()).unwrap().0, Verdict::Held { .. }));
        }
        let e = r.ack_entry(CH).unwrap();
        assert_eq!(e.sacks.len(), MAX_SACK_BLOCKS);
        assert!(e.more);
        assert_eq!(e.sacks[0], (Position { seq: 1, frag: 0 }, Position { seq: 2, frag: 0 }));
    }

    #[test]
    fn held_fragments_stay_within_the_bound_and_go_with_the_transport() {
        let mut r = receiver();
        r.set_hold_limit(500);
        // Message 0 never comes; messages 1.. of 90 payload bytes each are held until 500 bytes would be passed.
        let mut held = 0;
        for seq in 1..20 {
            match r.classify_and_hold(frames(seq, 90)[0].clone()).unwrap().0 {
                Verdict::Held { .. } => held += 1,
                Verdict::Gap { .. } => {}
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(held, 5);
        assert_eq!(r.held_bytes(), 450);
        r.transport_lost();
        assert_eq!((r.held_bytes(), r.held_fragments()), (0, 0));
        // Version 2 holds nothing.
        r.set_hold_limit(0);
        assert!(matches!(r.classify_and_hold(frames(1, 90)[0].clone()).unwrap().0, Verdict::Gap { .. }));
    }

    #[test]
    fn credit_counts_unread_bytes_and_is_enforced_once_agreed() {
        let mut r = receiver();
        r.set_enforce(true);
        r.deliver(CH, 600).unwrap();
        assert_eq!(r.unread(CH), Some(600));
        assert_eq!(r.ack_entry(CH).unwrap().credit, Credit { room: 400, empty: false });
        r.entry_sent(CH);
        // 400 more fit; one byte beyond the window does not.
        r.deliver(CH, 400).unwrap();
        let over = r.deliver(CH, 1);
        assert!(
            matches!(over, Err(ProtocolError::CreditExceeded { unread: 1000, len: 1, window: 1000, .. })),
            "{over:?}"
        );
        // Reading less than a quarter of the window is not worth an update; reading it all is.
        assert!(!r.consumed(CH, 100));
        assert!(r.consumed(CH, 900));
        assert_eq!(r.ack_entry(CH).unwrap().credit, Credit { room: 1000, empty: true });
        // With nothing unread, one message of any size fits (a payload larger than the window must get through).
        r.deliver(CH, 5000).unwrap();
        r.entry_sent(CH);
        assert!(r.consumed(CH, 5000));
    }
}
