//! One ordered channel's send state: the messages not yet acknowledged and the fragments in flight.
//!
//! Each fragment is sized when it goes out, so one message may mix frame sizes (the scheduler's
//! [`FrameSizer`](super::sizing::FrameSizer) grows bulk frames while nothing more urgent waits). The receiver
//! needs nothing for that: it reassembles fragments by index, in order, whatever their sizes. To resend from a
//! fragment index the lane remembers where each fragment not yet acknowledged began.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, Header, LinkMode, Mtu};

use crate::error::SendError;
use crate::secure::LinkCipher;
use crate::types::SendId;
use crate::wire::{Credit, Position};

/// A message accepted for sending and not yet acknowledged.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// `None` for internal (control) messages.
    pub(super) id: Option<SendId>,
    pub(super) seq: u32,
    payload: Bytes,
    /// On an authenticated link: the payload sealed with the epoch key, made when the message first goes on
    /// the wire and resent as it is (same nonce, same bytes) after a resume. Fragments cut this, not `payload`.
    sealed: Option<Bytes>,
    /// Where its fragments begin.
    cuts: Cuts,
}

/// Where the fragments of one message begin in its payload, from the first fragment the peer may not hold
/// yet up to the furthest one cut, and which fragment goes next. A fragment, once cut, keeps its bytes when it
/// is sent again on the same transport — the receiver may hold the fragments around it, cut as they were.
#[derive(Debug)]
struct Cuts {
    /// Fragment index of `starts[0]`.
    base: u32,
    /// `starts[i]` is the payload offset of fragment `base + i`; the last entry is where the first fragment
    /// not cut yet begins (never empty).
    starts: VecDeque<usize>,
    /// Index of the next fragment to send (at most the first one not cut yet).
    cursor: u32,
}

impl Cuts {
    /// Whether every fragment of a `total`-byte body went out and none is to go again in order.
    fn wholly_sent(&self, total: usize) -> bool {
        self.cursor == self.uncut() && self.cursor > 0 && self.next_offset() >= total
    }

    fn new() -> Self {
        Self { base: 0, starts: VecDeque::from([0]), cursor: 0 }
    }

    /// Index of the next fragment to send.
    fn next_index(&self) -> u32 {
        self.cursor
    }

    /// Index of the first fragment not cut yet.
    fn uncut(&self) -> u32 {
        self.base + self.starts.len().saturating_sub(1) as u32
    }

    /// Payload offset of the next fragment to send.
    fn next_offset(&self) -> usize {
        let i = self.cursor.saturating_sub(self.base) as usize;
        self.starts.get(i).or(self.starts.back()).copied().unwrap_or(0)
    }

    /// Where the next fragment ends if it was cut before (it is sent again as it was).
    fn known_end(&self) -> Option<usize> {
        self.range(self.cursor).map(|(_, end)| end)
    }

    /// Where fragment `index`, already cut and not yet known to be held, begins and ends; `None` if it is not
    /// remembered (held, or not cut yet).
    fn range(&self, index: u32) -> Option<(usize, usize)> {
        let i = usize::try_from(index.checked_sub(self.base)?).ok()?;
        Some((*self.starts.get(i)?, *self.starts.get(i + 1)?))
    }

    /// The next fragment went out, ending at `end`.
    fn sent(&mut self, end: usize) {
        if self.cursor == self.uncut() {
            self.starts.push_back(end);
        }
        self.cursor += 1;
    }

    /// The peer holds fragments before `index`: their starts are no longer needed, nor are they sent again.
    fn held(&mut self, index: u32) {
        while self.base < index && self.starts.len() > 1 {
            self.starts.pop_front();
            self.base += 1;
        }
        self.cursor = self.cursor.max(self.base);
    }

    /// Sends again from fragment `index`; from fragment 0 if `index` is no longer known (the receiver treats a
    /// new first fragment as a restart of the message). With `recut` (a new transport: the receiver holds
    /// nothing beyond `index`) the fragments from `index` on are cut afresh for the new link; otherwise they
    /// keep their cuts. Returns the index the next fragment will have.
    fn seek(&mut self, index: u32, recut: bool) -> u32 {
        if index < self.base {
            *self = Self::new();
        } else {
            let index = index.min(self.uncut());
            if recut {
                let keep = (index - self.base) as usize + 1;
                self.starts.truncate(keep.max(1));
            }
            self.cursor = index;
        }
        self.next_index()
    }
}

impl Outgoing {
    /// Whether every fragment went out and none is to go again in order.
    fn wholly_sent(&self) -> bool {
        let total = self.sealed.as_ref().map_or(self.payload.len(), Bytes::len);
        self.cuts.wholly_sent(total)
    }
}

/// A fragment on the wire and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InFlight {
    /// Which fragment.
    pub(super) pos: Position,
    /// Its size on the wire.
    pub(super) len: u32,
    /// When it was handed to the transport (its own retransmission timer runs from here).
    pub(super) sent_at: Instant,
    /// Link-wide transmission number: later sends have larger numbers.
    pub(super) tx: u64,
    /// The peer reported holding it beyond its receive position (version 3 SACK).
    pub(super) sacked: bool,
}

/// What declaring fragments lost did to one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lost {
    /// Fragments declared lost.
    pub(super) fragments: u64,
    /// Their bytes on the wire.
    pub(super) bytes: u64,
    /// In-flight bytes released (the lost fragments, or everything after them when the lane went back).
    pub(super) freed: u64,
}

/// Send side of one channel: messages leave strictly in sequence order; a message is removed only when the
/// peer acknowledged all of it.
#[derive(Debug)]
pub(super) struct SendLane {
    pub(super) channel: u32,
    pub(super) kind: FrameKind,
    queue: VecDeque<Outgoing>,
    /// Index in `queue` of the message being transmitted (`queue.len()` when everything was sent).
    send_idx: usize,
    /// Everything before this position is held by the peer.
    pub(super) acked: Position,
    /// Fragments sent and not yet acknowledged, in sending order.
    inflight: VecDeque<InFlight>,
    /// Fragments to send again, by themselves, before anything new (version 3: the peer holds what follows).
    resend: BTreeSet<Position>,
    /// The largest transmission number among the fragments the peer acknowledged or reported holding: in
    /// order delivery means a fragment sent before it and still unacknowledged was lost.
    delivered_tx: u64,
    /// Version 3: the last entry left out some of what the peer holds beyond this position (inclusive bound of
    /// what loss may be inferred for); `None` when the entry told everything.
    known_until: Option<Position>,
    /// The largest fragment sent since nothing was in flight (an upper bound of the largest in flight).
    inflight_max: u32,
    pub(super) inflight_bytes: u64,
    next_seq: u32,
    /// Payload bytes of queued (unacknowledged) messages.
    pub(super) queued_bytes: u64,
    /// `send` answered `WouldBlock`; report `Writable` when room appears.
    pub(super) blocked: bool,
    /// The furthest fragment ever sent (to count retransmissions).
    sent_high: Option<Position>,
    /// The receive credit the peer granted (version 2) with the position whose `seq` it names; `None` when the
    /// peer grants none (version 1, the control lane): messages start whenever the window allows.
    credit: Option<(u32, Credit)>,
    /// Messages before this one have sent their first fragment (they never wait for credit again).
    started: u32,
    /// Credit the queued messages before `started` take: their payload bytes plus `charge` each.
    started_bytes: u64,
    /// What each message costs in credit beyond its payload bytes ([`crate::MESSAGE_CHARGE`] in version 3, else
    /// 0), so that empty messages are bounded by credit too.
    pub(super) charge: u64,
    /// Fragments the peer acknowledged since the scheduler last took the count (loss estimation).
    pub(super) delivered: u64,
}

impl SendLane {
    pub(super) fn new(channel: u32, kind: FrameKind) -> Self {
        Self {
            channel,
            kind,
            queue: VecDeque::new(),
            send_idx: 0,
            acked: Position { seq: 0, frag: 0 },
            inflight: VecDeque::new(),
            resend: BTreeSet::new(),
            delivered_tx: 0,
            known_until: None,
            inflight_max: 0,
            inflight_bytes: 0,
            next_seq: 0,
            queued_bytes: 0,
            blocked: false,
            sent_high: None,
            credit: None,
            started: 0,
            started_bytes: 0,
            charge: 0,
            delivered: 0,
        }
    }

    /// The peer's credit as of its acknowledgement of message `seq` (docs/sessions.md §4.5).
    pub(super) fn set_credit(&mut self, seq: u32, credit: Credit) {
        self.credit = Some((seq, credit));
    }

    /// Whether a fragment may go now: one is pending and, for a message not started yet, the peer's credit
    /// covers it — the payload bytes from the credit's message up to and including this one fit its room, or
    /// the peer's app has read everything and this is the message right after what it acknowledged.
    pub(super) fn can_send(&self) -> bool {
        if !self.resend.is_empty() {
            return true;
        }
        let Some(msg) = self.pending_idx().and_then(|i| self.queue.get(i)) else { return false };
        let Some((seq, credit)) = self.credit else { return true };
        if msg.seq < self.started {
            return true;
        }
        // The queue starts at the acknowledged message, so the started messages are the ones the credit's room
        // must already hold (messages before the credit's `seq` left the queue with that acknowledgement).
        let need = self.started_bytes + msg.payload.len() as u64 + self.charge;
        need <= u64::from(credit.room) || (credit.empty && msg.seq == seq)
    }

    /// Queues a message; returns its sequence number. A payload longer than the 32-bit length field is
    /// refused.
    pub(super) fn push(&mut self, id: Option<SendId>, payload: Bytes) -> Result<u32, SendError> {
        if u32::try_from(payload.len()).is_err() {
            return Err(SendError::TooLarge { len: payload.len() as u64, max: u64::from(u32::MAX) });
        }
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(SendError::Exhausted)?;
        self.queued_bytes += payload.len() as u64;
        self.queue.push_back(Outgoing { id, seq, payload, sealed: None, cuts: Cuts::new() });
        Ok(seq)
    }

    /// Whether a fragment is ready to go.
    #[cfg(test)]
    pub(super) fn has_pending(&self) -> bool {
        self.pending_idx().is_some()
    }

    /// Index in the queue of the message whose next new fragment goes out next: from `send_idx` on, the first
    /// one not wholly sent (after a resume re-cut a message, it sends again before those after it).
    fn pending_idx(&self) -> Option<usize> {
        (self.send_idx..self.queue.len()).find(|i| self.queue.get(*i).is_some_and(|m| !m.wholly_sent()))
    }

    /// Whether every message was acknowledged.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next sequence number to be assigned (used to validate acknowledgements).
    pub(super) fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Appends the next fragment's frame, at most `mtu` bytes on the wire for a `mode` link, to `out`; returns
    /// its size on the wire and whether it is a retransmission. `None` when nothing is pending or `mtu` leaves
    /// no room for payload. With `epoch` (an authenticated link) the fragments carry the sealed message.
    ///
    /// Fragments queued by [`lose_selectively`](Self::lose_selectively) go first, each by itself with the
    /// bytes and size it had (the peer may hold the fragments after it, cut where they were cut).
    pub(super) fn next_frame(
        &mut self,
        mode: LinkMode,
        mtu: Mtu,
        out: &mut BytesMut,
        epoch: Option<&LinkCipher>,
        now: Instant,
        tx: u64,
    ) -> Option<(usize, bool)> {
        while let Some(pos) = self.resend.pop_first() {
            if let Some(len) = self.resend_frame(mode, pos, out, now, tx) {
                return Some((len, true));
            }
        }
        self.send_idx = self.pending_idx()?;
        let msg = self.queue.get_mut(self.send_idx)?;
        if let Some(cipher) = epoch
            && msg.sealed.is_none()
        {
            let nonce = lane_nonce(self.channel, msg.seq);
            msg.sealed = Some(Bytes::from(cipher.seal(nonce, &[self.kind as u8], &msg.payload).ok()?));
        }
        let body = msg.sealed.clone().unwrap_or_else(|| msg.payload.clone());
        let (index, offset, known_end) = (msg.cuts.next_index(), msg.cuts.next_offset(), msg.cuts.known_end());
        let total = body.len();
        let position = match NonZeroU32::new(index) {
            None => colink_frame::Position::First { total_len: u32::try_from(total).ok()? },
            Some(index) => colink_frame::Position::Continuation { index },
        };
        let header = Header { kind: self.kind, channel: self.channel, seq: msg.seq, position, last: false };
        let room = mtu.get().checked_sub(header.encoded_len() + mode.framing_overhead())?;
        let len = match known_end {
            Some(end) => end.checked_sub(offset)?,
            None => room.min(total - offset),
        };
        if len == 0 && offset < total {
            return None;
        }
        let last = offset + len == total;
        let frame = Frame { header: Header { last, ..header }, payload: body.slice(offset..offset + len) };
        let before = out.len();
        frame.encode(mode, out).ok()?;
        let wire_len = out.len() - before;
        msg.cuts.sent(offset + len);
        if msg.seq >= self.started {
            self.started = msg.seq + 1;
            self.started_bytes += msg.payload.len() as u64 + self.charge;
        }
        let pos = Position { seq: msg.seq, frag: index };
        if last {
            self.send_idx += 1;
        }
        let retransmit = self.sent_high.is_some_and(|h| pos <= h);
        if !retransmit {
            self.sent_high = Some(pos);
        }
        if self.inflight.is_empty() {
            self.inflight_max = 0;
        }
        self.inflight_max = self.inflight_max.max(wire_len as u32);
        self.inflight.push_back(InFlight { pos, len: wire_len as u32, sent_at: now, tx, sacked: false });
        self.inflight_bytes += wire_len as u64;
        Some((wire_len, retransmit))
    }

    /// Frames fragment `pos` again exactly as it was first cut; `None` when it is no longer needed (the peer
    /// acknowledged it meanwhile) or not known.
    fn resend_frame(
        &mut self,
        mode: LinkMode,
        pos: Position,
        out: &mut BytesMut,
        now: Instant,
        tx: u64,
    ) -> Option<usize> {
        if pos < self.acked {
            return None;
        }
        let msg = self.queue.iter().find(|m| m.seq == pos.seq)?;
        let (start, end) = msg.cuts.range(pos.frag)?;
        let body = msg.sealed.clone().unwrap_or_else(|| msg.payload.clone());
        let total = body.len();
        let position = match NonZeroU32::new(pos.frag) {
            None => colink_frame::Position::First { total_len: u32::try_from(total).ok()? },
            Some(index) => colink_frame::Position::Continuation { index },
        };
        let header = Header { kind: self.kind, channel: self.channel, seq: msg.seq, position, last: end == total };
        let frame = Frame { header, payload: body.get(start..end).map(|_| body.slice(start..end))? };
        let before = out.len();
        frame.encode(mode, out).ok()?;
        let wire_len = out.len() - before;
        if self.inflight.is_empty() {
            self.inflight_max = 0;
        }
        self.inflight_max = self.inflight_max.max(wire_len as u32);
        self.inflight.push_back(InFlight { pos, len: wire_len as u32, sent_at: now, tx, sacked: false });
        self.inflight_bytes += wire_len as u64;
        Some(wire_len)
    }

    /// The largest fragment in flight, in bytes on the wire.
    pub(super) fn largest_in_flight(&self) -> usize {
        if self.inflight.is_empty() { 0 } else { self.inflight_max as usize }
    }

    /// When the oldest fragment in flight that the peer does not hold was sent.
    pub(super) fn oldest_unacked(&self) -> Option<Instant> {
        // Fragments are appended as they go out, so send times ascend through the queue.
        self.inflight.iter().find(|f| !f.sacked).map(|f| f.sent_at)
    }

    /// The peer reports holding the fragments in `[from, to)` beyond its receive position (version 3).
    pub(super) fn sack(&mut self, from: Position, to: Position) {
        for f in &mut self.inflight {
            if f.pos >= from && f.pos < to && !f.sacked {
                f.sacked = true;
                self.delivered_tx = self.delivered_tx.max(f.tx);
            }
        }
    }

    /// The peer's entry ended its blocks at `last_to` (`None`: no blocks) and, with `more`, holds more beyond
    /// it than it said. The position `last_to` itself (or the receive position) is not held: a block is a
    /// maximal run. Beyond it nothing may be judged lost until an entry tells everything.
    pub(super) fn reported(&mut self, last_to: Option<Position>, more: bool) {
        self.known_until = more.then(|| last_to.unwrap_or(self.acked).max(self.acked));
    }

    /// Whether loss may be inferred for a fragment at `pos` (the peer's last entry covered it).
    fn judgeable(known_until: Option<Position>, pos: Position) -> bool {
        known_until.is_none_or(|k| pos <= k)
    }

    /// Version 3: every fragment in flight that the peer does not hold and that was sent before one it holds
    /// is lost (the link delivers in order); those go back to be resent by themselves. Returns what was lost.
    pub(super) fn infer_losses(&mut self) -> Lost {
        let (high, known) = (self.delivered_tx, self.known_until);
        self.lose_selectively(|f| f.tx < high && Self::judgeable(known, f.pos))
    }

    /// Whether a fragment sent before transmission `tx` is in flight and not held by the peer.
    pub(super) fn missing_before(&self, tx: u64) -> bool {
        self.inflight.iter().any(|f| !f.sacked && f.tx < tx)
    }

    /// The largest transmission number the peer acknowledged or reported holding on this lane.
    pub(super) fn delivered_tx(&self) -> u64 {
        self.delivered_tx
    }

    /// Version 3: every fragment in flight that the peer does not hold and that was sent before transmission
    /// `tx` is lost (a fragment sent after it, on another lane, arrived) and resent by itself.
    pub(super) fn lose_before(&mut self, tx: u64) -> Lost {
        let known = self.known_until;
        self.lose_selectively(|f| f.tx < tx && Self::judgeable(known, f.pos))
    }

    /// Version 3: every fragment in flight that the peer does not hold and that was sent at or before
    /// `deadline` is lost and resent by itself.
    pub(super) fn expire_selectively(&mut self, deadline: Instant) -> Lost {
        self.lose_selectively(|f| f.sent_at <= deadline)
    }

    /// Versions 1 and 2 (the peer keeps nothing beyond a gap): if the oldest fragment the peer does not hold
    /// was sent at or before `deadline`, the lane goes back to its acknowledged position.
    pub(super) fn expire_go_back(&mut self, deadline: Instant) -> Lost {
        let Some(oldest) = self.inflight.iter().filter(|f| !f.sacked).min_by_key(|f| f.sent_at) else {
            return Lost::default();
        };
        if oldest.sent_at > deadline {
            return Lost::default();
        }
        let (bytes, acked) = (u64::from(oldest.len), self.acked);
        let freed = self.rewind(acked, false);
        Lost { fragments: 1, bytes, freed }
    }

    /// Version 3: every fragment from `pos` on still in flight and not held by the peer is resent by itself.
    pub(super) fn resend_from(&mut self, pos: Position) -> Lost {
        self.lose_selectively(|f| f.pos >= pos)
    }

    fn lose_selectively(&mut self, lost: impl Fn(&InFlight) -> bool) -> Lost {
        let mut out = Lost::default();
        let acked = self.acked;
        let resend = &mut self.resend;
        self.inflight.retain(|f| {
            if f.sacked || !lost(f) {
                return true;
            }
            if f.pos >= acked {
                resend.insert(f.pos);
            }
            out.fragments += 1;
            out.bytes += u64::from(f.len);
            false
        });
        out.freed = out.bytes;
        self.inflight_bytes -= out.freed.min(self.inflight_bytes);
        out
    }

    /// The peer holds everything before `pos`. Returns the messages now complete and the in-flight bytes
    /// released, and whether the acknowledged position advanced.
    pub(super) fn ack(&mut self, pos: Position) -> (Vec<Outgoing>, u64, bool) {
        let mut done = Vec::new();
        while self.queue.front().is_some_and(|m| m.seq < pos.seq) {
            if let Some(m) = self.queue.pop_front() {
                self.queued_bytes -= m.payload.len() as u64;
                if m.seq < self.started {
                    self.started_bytes -= m.payload.len() as u64 + self.charge;
                }
                // A message the credit covered leaves the queue: the peer holds it, maybe unread, so it keeps
                // counting against the credit's room until an entry with fresh credit says otherwise (an
                // acknowledgement without credit — a resume position — must not free room).
                if let Some((seq, credit)) = &mut self.credit
                    && m.seq >= *seq
                {
                    let len = u32::try_from(m.payload.len() as u64 + self.charge).unwrap_or(u32::MAX);
                    credit.room = credit.room.saturating_sub(len);
                    credit.empty = false;
                    *seq = m.seq + 1;
                }
                self.send_idx = self.send_idx.saturating_sub(1);
                done.push(m);
            }
        }
        if let Some(m) = self.queue.front_mut()
            && m.seq == pos.seq
        {
            m.cuts.held(pos.frag);
        }
        let advanced = pos > self.acked;
        if advanced {
            self.acked = pos;
        }
        let (acked, mut freed, mut delivered) = (self.acked, 0, 0u64);
        let mut high = self.delivered_tx;
        self.inflight.retain(|f| {
            if f.pos < acked {
                freed += u64::from(f.len);
                delivered += 1;
                high = high.max(f.tx);
                false
            } else {
                true
            }
        });
        self.delivered_tx = high;
        self.resend.retain(|p| *p >= acked);
        self.inflight_bytes -= freed.min(self.inflight_bytes);
        self.delivered += delivered;
        (done, freed, advanced)
    }

    /// Resends from `pos` (after a gap report, a retransmission timeout or a resume). Resent fragments are
    /// framed when they go out, for the link and frame size of that moment, so a new transport with another
    /// mode or a smaller MTU continues a partly sent message where the peer stopped. Returns the in-flight
    /// bytes released.
    ///
    /// With `recut` (a resume on a new transport) fragments from `pos` on are cut afresh for the new link;
    /// otherwise (a gap report, a timeout) every fragment keeps the cut it went out with, since the peer may
    /// hold fragments after `pos` that this side does not know of yet.
    pub(super) fn rewind(&mut self, pos: Position, recut: bool) -> u64 {
        let idx = self.queue.iter().position(|m| m.seq >= pos.seq).unwrap_or(self.queue.len());
        for (i, msg) in self.queue.iter_mut().enumerate().skip(idx) {
            let from = if i == idx && msg.seq == pos.seq { pos.frag } else { 0 };
            msg.cuts.seek(from, recut);
        }
        self.send_idx = idx;
        self.resend.clear();
        // A message restarted from an earlier fragment is held by the peer only up to there.
        if let Some(msg) = self.queue.get(idx) {
            let from = msg.cuts.next_index();
            self.acked = self.acked.min(Position { seq: msg.seq, frag: from });
        }
        self.clear_inflight()
    }

    /// Forgets the fragments in flight (they were lost with the transport, or will be resent); returns the
    /// bytes released.
    pub(super) fn clear_inflight(&mut self) -> u64 {
        let freed = self.inflight_bytes;
        self.inflight.clear();
        self.resend.clear();
        self.known_until = None;
        self.inflight_bytes = 0;
        freed
    }

    /// Empties the lane; returns the ids of the sends that will never complete and the in-flight bytes released.
    pub(super) fn fail_all(&mut self) -> (Vec<SendId>, u64) {
        let ids = self.queue.drain(..).filter_map(|m| m.id).collect();
        let freed = self.inflight_bytes;
        let credit = self.credit;
        *self = Self::new(self.channel, self.kind);
        self.credit = credit.map(|(_, c)| (0, c));
        (ids, freed)
    }
}

/// The nonce of lane message `seq` on `channel` under the epoch key: unique per direction for the life of the
/// epoch (channels are never reused within one; sequence numbers only grow).
pub(crate) fn lane_nonce(channel: u32, seq: u32) -> u64 {
    (u64::from(channel) << 32) | u64::from(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane_with(lens: &[usize]) -> SendLane {
        let mut l = SendLane::new(4, FrameKind::Data);
        for (i, len) in lens.iter().enumerate() {
            l.push(Some(SendId(i as u64)), Bytes::from(vec![i as u8; *len])).unwrap();
        }
        l
    }

    fn drain(l: &mut SendLane, mtu: usize) -> Vec<Bytes> {
        let mut out = BytesMut::new();
        let mut v = Vec::new();
        while l.next_frame(LinkMode::Packet, Mtu::new(mtu).unwrap(), &mut out, None, Instant::now(), 0).is_some() {
            v.push(out.split().freeze());
        }
        v
    }

    #[test]
    fn ack_releases_messages_and_inflight() {
        let mut l = lane_with(&[1000, 10]);
        let frames = drain(&mut l, 100);
        assert_eq!(l.inflight_bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
        let (done, _, advanced) = l.ack(Position { seq: 0, frag: 3 });
        assert!(done.is_empty() && advanced);
        let (done, _, _) = l.ack(Position { seq: 2, frag: 0 });
        assert_eq!(done.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!((l.inflight_bytes, l.queued_bytes), (0, 0));
        assert!(l.is_idle());
    }

    #[test]
    fn rewind_resends_identical_frames() {
        let mut l = lane_with(&[1000]);
        let first = drain(&mut l, 100);
        l.ack(Position { seq: 0, frag: 4 });
        l.rewind(Position { seq: 0, frag: 4 }, true);
        let again = drain(&mut l, 100);
        assert_eq!(again, first[4..]);
    }

    /// Reassembles `frames` (packet mode) and returns the one message they complete.
    fn reassemble(frames: &[Bytes]) -> Bytes {
        let mut r = colink_frame::Reassembler::default();
        let now = Instant::now();
        let mut done = None;
        for f in frames {
            let frame = colink_frame::decode_packet(f.clone()).unwrap();
            if let Some(m) = r.push(now, frame).unwrap() {
                assert!(done.is_none(), "one message");
                done = Some(m.payload);
            }
        }
        done.unwrap()
    }

    #[test]
    fn frame_sizes_may_change_within_a_message() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut l = SendLane::new(4, FrameKind::Data);
        l.push(Some(SendId(0)), Bytes::from(payload.clone())).unwrap();
        let mut out = BytesMut::new();
        let mut frames = Vec::new();
        for mtu in [100, 100, 1000, 1000, 60, 2000, 100, 4000] {
            if l.next_frame(LinkMode::Packet, Mtu::new(mtu).unwrap(), &mut out, None, Instant::now(), 0).is_some() {
                let f = out.split().freeze();
                assert!(f.len() <= mtu);
                frames.push(f);
            }
        }
        assert!(!l.has_pending());
        assert_eq!(reassemble(&frames), payload);
        // The peer held four fragments; resent from there with other sizes, the message is still whole.
        l.ack(Position { seq: 0, frag: 4 });
        l.rewind(Position { seq: 0, frag: 4 }, true);
        let rest = drain(&mut l, 333);
        assert!(rest.iter().all(|f| f.len() <= 333));
        let mut mixed = frames[..4].to_vec();
        mixed.extend(rest);
        assert_eq!(reassemble(&mixed), payload);
    }

    #[test]
    fn resends_on_the_same_transport_keep_their_cuts_whatever_the_frame_size_now() {
        let mut l = lane_with(&[1000]);
        let first = drain(&mut l, 100);
        // Acknowledged up to fragment 2 (the peer may hold more): the rest goes again cut as before, even
        // though frames are 300 bytes now; beyond what was cut, the new size applies.
        l.ack(Position { seq: 0, frag: 2 });
        l.rewind(Position { seq: 0, frag: 2 }, false);
        let again = drain(&mut l, 300);
        assert_eq!(again, first[2..]);
        // Selective resend of one fragment: the same bytes.
        l.ack(Position { seq: 0, frag: 3 });
        l.resend.insert(Position { seq: 0, frag: 5 });
        let mut out = BytesMut::new();
        l.next_frame(LinkMode::Packet, Mtu::new(60).unwrap(), &mut out, None, Instant::now(), 9).unwrap();
        assert_eq!(out.freeze(), first[5]);
    }

    #[test]
    fn holes_before_what_the_peer_holds_are_resent_alone_and_held_fragments_never() {
        let mut l = lane_with(&[1000]);
        let t0 = Instant::now();
        let mut out = BytesMut::new();
        let mut frames = Vec::new();
        for tx in 1..=11 {
            l.next_frame(LinkMode::Packet, Mtu::new(100).unwrap(), &mut out, None, t0, tx).unwrap();
            frames.push(out.split().freeze());
        }
        let p = |frag| Position { seq: 0, frag };
        // The peer holds 0..3, lacks 3, holds 4..6, lacks 6 and 7, holds 8: 3, 6 and 7 were lost.
        l.ack(p(3));
        l.sack(p(4), p(6));
        l.sack(p(8), p(9));
        let lost = l.infer_losses();
        assert_eq!(lost.fragments, 3);
        // 9 and 10 were sent after 8: not known lost yet.
        assert_eq!(l.oldest_unacked(), Some(t0));
        let mut again = Vec::new();
        for _ in 0..3 {
            let (_, resent) = l.next_frame(LinkMode::Packet, Mtu::new(100).unwrap(), &mut out, None, t0, 20).unwrap();
            assert!(resent);
            again.push(out.split().freeze());
        }
        assert_eq!(again, vec![frames[3].clone(), frames[6].clone(), frames[7].clone()]);
        // Had the entry left blocks out beyond (0,9), fragments after it could not be judged lost yet.
        // (0,9) itself ends the block, so it is not held and may be judged; (0,10) may not.
        l.reported(Some(p(9)), true);
        assert_eq!(l.lose_before(12).fragments, 1);
        assert!(l.resend.contains(&p(9)) && !l.resend.contains(&p(10)));
        l.reported(Some(p(9)), false);
        // A timeout resends only what is neither acknowledged nor held: 10 and the three resends (a fragment
        // after 10 may still be unsent).
        let later = t0 + std::time::Duration::from_secs(1);
        assert_eq!(l.expire_selectively(later).fragments, 4);
        assert!(l.resend.iter().all(|pos| ![p(4), p(5), p(8)].contains(pos)));
    }

    #[test]
    fn a_rewind_before_what_the_lane_remembers_restarts_the_message() {
        let mut l = lane_with(&[1000]);
        drain(&mut l, 100);
        l.ack(Position { seq: 0, frag: 4 });
        // Fragments 0..4 were acknowledged and forgotten: resending from 2 means resending from the start.
        l.rewind(Position { seq: 0, frag: 2 }, true);
        assert_eq!(l.acked, Position { seq: 0, frag: 0 });
        let again = drain(&mut l, 200);
        let first = colink_frame::decode_packet(again[0].clone()).unwrap();
        assert_eq!(first.header.position.index(), 0);
        assert_eq!(reassemble(&again), Bytes::from(vec![0u8; 1000]));
    }

    #[test]
    fn credit_holds_back_messages_that_do_not_fit_and_an_empty_peer_takes_any_size() {
        let mut l = lane_with(&[400, 400, 400]);
        l.set_credit(0, Credit { room: 1000, empty: true });
        // As the scheduler does: only while the credit allows.
        let drain = |l: &mut SendLane, mtu: usize| {
            let mut out = BytesMut::new();
            let mut v = Vec::new();
            while l.can_send() {
                l.next_frame(LinkMode::Packet, Mtu::new(mtu).unwrap(), &mut out, None, Instant::now(), 0).unwrap();
                v.push(out.split().freeze());
            }
            v
        };
        // Two messages fit (800 <= 1000), the third does not (1200).
        let frames = drain(&mut l, 100);
        assert_eq!(frames.len(), 10);
        assert!(!l.can_send() && l.has_pending());
        // The peer holds both but its app read nothing: room 200, not empty.
        l.ack(Position { seq: 2, frag: 0 });
        l.set_credit(2, Credit { room: 200, empty: false });
        assert!(!l.can_send());
        // Its app read them: the third may go, and a larger one after it once the app read it too.
        l.set_credit(2, Credit { room: 1000, empty: true });
        assert!(l.can_send());
        drain(&mut l, 100);
        l.push(Some(SendId(9)), Bytes::from(vec![9u8; 5000])).unwrap();
        l.ack(Position { seq: 3, frag: 0 });
        l.set_credit(3, Credit { room: 600, empty: false });
        assert!(!l.can_send());
        l.set_credit(3, Credit { room: 1000, empty: true });
        assert!(l.can_send());
        // A message already started is finished whatever the credit says.
        let mut out = BytesMut::new();
        l.next_frame(LinkMode::Packet, Mtu::new(100).unwrap(), &mut out, None, Instant::now(), 0).unwrap();
        l.set_credit(3, Credit { room: 0, empty: false });
        assert!(l.can_send());
    }

    #[test]
    fn an_acknowledgement_without_credit_keeps_the_acknowledged_bytes_counted() {
        let mut l = lane_with(&[400, 400, 400, 400]);
        l.set_credit(0, Credit { room: 1000, empty: true });
        let mut out = BytesMut::new();
        while l.can_send() {
            l.next_frame(LinkMode::Packet, Mtu::new(100).unwrap(), &mut out, None, Instant::now(), 0).unwrap();
        }
        // Two messages went out. A resume position says the peer holds both (no credit with it): they may be
        // unread, so only 200 bytes of room remain and the third (400) must wait.
        l.ack(Position { seq: 2, frag: 0 });
        assert!(!l.can_send());
        assert_eq!(l.credit, Some((2, Credit { room: 200, empty: false })));
    }
}
