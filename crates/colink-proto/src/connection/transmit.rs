//! The sending half of a [`Connection`]: which frame goes out next — handshake frames, then an ACK when the
//! acknowledgement timer says so, then a KEEP_ALIVE when keep-alive says so, then the send scheduler's next
//! fragment within the send window — and rewinding the lanes for resume.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, Mtu};
use tracing::trace;

use super::secured::{T_LINK_ACK, T_LINK_KEEPALIVE};
use super::{Connection, LinkState};

/// Most bytes of acknowledgement entries in one sealed link message (well inside the handshake channel's
/// 1024-byte reassembly limit with the seal around it).
const SEALED_ACK_ROOM: usize = 512;
use crate::error::ProtocolError;
use crate::scheduler::FrameSizes;
use crate::wire::{self, AckEntry, CH_ACK, CH_KEEPALIVE, Position};

impl Connection {
    /// Completes everything the peer already holds and resends the rest (resume and retransmission).
    pub(super) fn rewind_lanes(
        &mut self,
        now: Instant,
        positions: &BTreeMap<u32, Position>,
    ) -> Result<(), ProtocolError> {
        for ch in self.scheduler.channels() {
            let (pos, from) = match positions.get(&ch) {
                Some(p) => (*p, *p),
                // No position from the peer for this channel (a HELLO answering a repeated one carries none):
                // it may hold more of a partly sent message than it acknowledged, cut as it was. Resending the
                // rest cut for the new link would misalign it; the message starts again from its first
                // fragment, which the receiver takes as a restart (docs/sessions.md §4.1, §6).
                None => {
                    let acked = self.scheduler.acked(ch).unwrap_or(Position { seq: 0, frag: 0 });
                    (acked, Position { seq: acked.seq, frag: 0 })
                }
            };
            self.apply_ack(now, ch, pos, None)?;
            self.scheduler.rewind(ch, from, true);
        }
        self.scheduler.forget_inflight();
        Ok(())
    }

    pub(super) fn next_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.transport?;
        if let Some(f) = self.hs_out.pop_front() {
            return Some(f);
        }
        if self.state != LinkState::Established {
            return None;
        }
        if self.acks.is_due(now)
            && let Some(f) = self.build_ack()
        {
            self.stats.acks_sent += 1;
            return Some(f);
        }
        if self.keep_alive.wants_keep_alive(now) {
            self.stats.keep_alives_sent += 1;
            if self.is_secured() {
                // Sealed like every link message, so nobody else can keep the link alive (docs/security.md §3).
                self.queue_handshake(Bytes::from_static(&[T_LINK_KEEPALIVE]));
                return self.hs_out.pop_front();
            }
            return self.single(FrameKind::KeepAlive, CH_KEEPALIVE, Bytes::from_static(&[0]));
        }
        self.next_fragment(now)
    }

    /// The next payload fragment, by priority within the send window (see [`Scheduler::next_fragment`]).
    ///
    /// [`Scheduler::next_fragment`]: crate::scheduler::Scheduler::next_fragment
    fn next_fragment(&mut self, now: Instant) -> Option<Bytes> {
        let window = self.send_window();
        let (mode, sizes) = (self.mode(), self.frame_sizes());
        let f = self.scheduler.next_fragment(now, window, mode, sizes, &mut self.tx_buf)?;
        if f.first_in_flight {
            self.retransmit.restart(now);
        }
        self.stats.max_inflight_bytes = self.stats.max_inflight_bytes.max(self.scheduler.inflight());
        self.stats.fragments_sent += 1;
        if f.resent {
            self.stats.fragments_resent += 1;
            self.stats.bytes_resent += f.len as u64;
        }
        Some(self.tx_buf.split().freeze())
    }

    fn single(&mut self, kind: FrameKind, channel: u32, payload: Bytes) -> Option<Bytes> {
        let frame = Frame::single(kind, channel, 0, payload).ok()?;
        frame.encode(self.mode(), &mut self.tx_buf).ok()?;
        Some(self.tx_buf.split().freeze())
    }

    fn build_ack(&mut self) -> Option<Bytes> {
        let entries: Vec<AckEntry> =
            self.acks.begin().into_iter().filter_map(|ch| self.receiver.ack_entry(ch)).collect();
        if entries.is_empty() {
            self.acks.nothing_owed();
            return None;
        }
        // On an authenticated link the entries travel as a sealed link message (type byte, counter and tag
        // around them; fragmented at small MTUs), so a forged acknowledgement cannot make data count as
        // delivered (docs/security.md §3). Plain: one ACK frame, header 2 + channel 1 + seq 1 + index 1 + total
        // length ≤ 3 bytes.
        let room = if self.is_secured() {
            SEALED_ACK_ROOM
        } else {
            self.frame_mtu.get().saturating_sub(self.mode().framing_overhead() + 8)
        };
        let (payload, taken) = wire::encode_ack(&entries, room, self.version);
        let sent: Vec<u32> = entries[..taken].iter().map(|e| e.channel).collect();
        for ch in &sent {
            self.receiver.entry_sent(*ch);
        }
        self.acks.sent(&sent);
        trace!(entries = taken, "ack");
        if self.is_secured() {
            let mut message = BytesMut::with_capacity(1 + payload.len());
            message.put_u8(T_LINK_ACK);
            message.extend_from_slice(&payload);
            self.queue_handshake(message.freeze());
            return self.hs_out.pop_front();
        }
        self.single(FrameKind::Ack, CH_ACK, payload)
    }

    /// The window in force: the configured one, but at least four of the largest frames, so links with large
    /// SDUs (an LE CoC MTU of 64 KiB) keep several frames in flight across an acknowledgement round trip.
    fn send_window(&self) -> u64 {
        self.config.send_window.max(4 * self.frame_sizes().largest().get() as u64)
    }

    /// The frame sizes in force: `Config::max_frame` while classes share the link, `Config::max_bulk_frame`
    /// for bulk running alone, both within what the transport and the peer allow (the scheduler caps both
    /// further under loss).
    fn frame_sizes(&self) -> FrameSizes {
        let bulk = self.link_frame_mtu.get().min(usize::from(self.config.max_bulk_frame));
        FrameSizes {
            small: self.frame_mtu,
            large: Mtu::new(bulk).unwrap_or(self.frame_mtu),
            grow_after: self.config.bulk_grow_after,
        }
    }

    /// The retransmission timeout in force (see [`RetransmitTimer::timeout`]), for the largest frame that
    /// may be on the air now: the largest the frame sizes allow (capped under loss), or a larger resend still
    /// in flight.
    ///
    /// [`RetransmitTimer::timeout`]: crate::retransmit::RetransmitTimer::timeout
    pub(super) fn retransmit_timeout(&self) -> std::time::Duration {
        let largest = self.frame_sizes().largest().get();
        let largest =
            self.scheduler.loss_cap().map_or(largest, |cap| cap.max(self.frame_mtu.get().min(largest)).min(largest));
        self.retransmit.timeout(largest.max(self.scheduler.largest_in_flight()))
    }

    /// When the oldest fragment in flight that the peer does not hold counts as lost: its own send time plus
    /// the retransmission timeout. `None` with nothing in flight.
    pub(super) fn retransmit_deadline(&self) -> Option<Instant> {
        Some(self.scheduler.oldest_unacked()? + self.retransmit_timeout())
    }
}
