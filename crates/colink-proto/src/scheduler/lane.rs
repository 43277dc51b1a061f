//! One ordered channel's send state: the messages not yet acknowledged and the fragments in flight.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use colink_frame::{Fragmenter, FrameKind, LinkMode, Mtu};

use crate::error::SendError;
use crate::secure::LinkCipher;
use crate::types::SendId;
use crate::wire::Position;

/// A message accepted for sending and not yet acknowledged.
#[derive(Debug)]
pub(super) struct Outgoing {
    /// `None` for internal (control) messages.
    pub(super) id: Option<SendId>,
    pub(super) seq: u32,
    payload: Bytes,
    /// On an authenticated link: the payload sealed with the epoch key, made when the message first goes on
    /// the wire and resent as it is (same nonce, same bytes) after a resume.
    sealed: Option<Bytes>,
    /// Created when the message first goes on the wire, for the link's mode and frame size at that time.
    frag: Option<(Fragmenter, LinkMode)>,
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
    /// Fragments sent and not yet acknowledged, in sending order, with their size on the wire.
    inflight: VecDeque<(Position, u32)>,
    pub(super) inflight_bytes: u64,
    next_seq: u32,
    /// Payload bytes of queued (unacknowledged) messages.
    pub(super) queued_bytes: u64,
    /// `send` answered `WouldBlock`; report `Writable` when room appears.
    pub(super) blocked: bool,
    /// The furthest fragment ever sent (to count retransmissions).
    sent_high: Option<Position>,
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
            inflight_bytes: 0,
            next_seq: 0,
            queued_bytes: 0,
            blocked: false,
            sent_high: None,
        }
    }

    /// Queues a message; returns its sequence number.
    pub(super) fn push(&mut self, id: Option<SendId>, payload: Bytes) -> Result<u32, SendError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(SendError::Exhausted)?;
        self.queued_bytes += payload.len() as u64;
        self.queue.push_back(Outgoing { id, seq, payload, sealed: None, frag: None });
        Ok(seq)
    }

    /// Whether a fragment is ready to go.
    pub(super) fn has_pending(&self) -> bool {
        self.send_idx < self.queue.len()
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

    /// Appends the next fragment's frame to `out`; returns its size on the wire and whether it is a
    /// retransmission.
    pub(super) fn next_frame(
        &mut self,
        mode: LinkMode,
        mtu: Mtu,
        out: &mut BytesMut,
        epoch: Option<&LinkCipher>,
    ) -> Option<(usize, bool)> {
        let msg = self.queue.get_mut(self.send_idx)?;
        if msg.frag.is_none() {
            let body = match epoch {
                Some(cipher) => {
                    if msg.sealed.is_none() {
                        let nonce = lane_nonce(self.channel, msg.seq);
                        msg.sealed = Some(Bytes::from(cipher.seal(nonce, &[self.kind as u8], &msg.payload).ok()?));
                    }
                    msg.sealed.clone()?
                }
                None => msg.payload.clone(),
            };
            let f = Fragmenter::new(self.kind, self.channel, msg.seq, body, mode, mtu).ok()?;
            msg.frag = Some((f, mode));
        }
        let (frag, _) = msg.frag.as_mut()?;
        let info = frag.next_frame(out)?;
        let pos = Position { seq: msg.seq, frag: info.index };
        if frag.is_done() {
            self.send_idx += 1;
        }
        let retransmit = self.sent_high.is_some_and(|h| pos <= h);
        if !retransmit {
            self.sent_high = Some(pos);
        }
        self.inflight.push_back((pos, info.wire_len as u32));
        self.inflight_bytes += info.wire_len as u64;
        Some((info.wire_len, retransmit))
    }

    /// The peer holds everything before `pos`. Returns the messages now complete and the in-flight bytes
    /// released, and whether the acknowledged position advanced.
    pub(super) fn ack(&mut self, pos: Position) -> (Vec<Outgoing>, u64, bool) {
        let mut done = Vec::new();
        while self.queue.front().is_some_and(|m| m.seq < pos.seq) {
            if let Some(m) = self.queue.pop_front() {
                self.queued_bytes -= m.payload.len() as u64;
                self.send_idx = self.send_idx.saturating_sub(1);
                done.push(m);
            }
        }
        let advanced = pos > self.acked;
        if advanced {
            self.acked = pos;
        }
        let mut freed = 0;
        while self.inflight.front().is_some_and(|(p, _)| *p < self.acked) {
            if let Some((_, len)) = self.inflight.pop_front() {
                freed += u64::from(len);
            }
        }
        self.inflight_bytes -= freed;
        (done, freed, advanced)
    }

    /// Resends from `pos` (after a gap report, a retransmission timeout or a resume), framing for `mode` and
    /// `mtu`. A partly sent message whose frames no longer fit is restarted from fragment 0. Returns the
    /// in-flight bytes released.
    pub(super) fn rewind(&mut self, pos: Position, mode: LinkMode, mtu: Mtu) -> u64 {
        let idx = self.queue.iter().position(|m| m.seq >= pos.seq).unwrap_or(self.queue.len());
        for (i, msg) in self.queue.iter_mut().enumerate().skip(idx) {
            let keep =
                i == idx && msg.seq == pos.seq && msg.frag.as_ref().is_some_and(|(f, m)| *m == mode && f.mtu() <= mtu);
            if keep {
                if let Some((f, _)) = msg.frag.as_mut()
                    && f.seek(pos.frag.min(f.fragment_count())).is_err()
                {
                    msg.frag = None;
                }
            } else {
                msg.frag = None;
            }
        }
        self.send_idx = idx;
        // A message restarted from fragment 0 is held by the peer only up to its start.
        if let Some(msg) = self.queue.get(idx) {
            let from = msg.frag.as_ref().map_or(0, |(f, _)| f.next_index());
            self.acked = self.acked.min(Position { seq: msg.seq, frag: from });
        }
        self.clear_inflight()
    }

    /// Forgets the fragments in flight (they were lost with the transport, or will be resent); returns the
    /// bytes released.
    pub(super) fn clear_inflight(&mut self) -> u64 {
        let freed = self.inflight_bytes;
        self.inflight.clear();
        self.inflight_bytes = 0;
        freed
    }

    /// Empties the lane; returns the ids of the sends that will never complete and the in-flight bytes released.
    pub(super) fn fail_all(&mut self) -> (Vec<SendId>, u64) {
        let ids = self.queue.drain(..).filter_map(|m| m.id).collect();
        let freed = self.inflight_bytes;
        *self = Self::new(self.channel, self.kind);
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
        while l.next_frame(LinkMode::Packet, Mtu::new(mtu).unwrap(), &mut out, None).is_some() {
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
        l.rewind(Position { seq: 0, frag: 4 }, LinkMode::Packet, Mtu::new(100).unwrap());
        let again = drain(&mut l, 100);
        assert_eq!(again, first[4..]);
        // A smaller MTU restarts the message from fragment 0.
        l.rewind(Position { seq: 0, frag: 4 }, LinkMode::Packet, Mtu::new(50).unwrap());
        let smaller = drain(&mut l, 50);
        assert!(smaller.len() > first.len());
    }
}
