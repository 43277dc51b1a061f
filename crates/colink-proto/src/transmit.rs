//! The sending half of a [`Connection`]: which frame goes out next (handshake, acknowledgements, control, then
//! session lanes by priority within the send window), acknowledgement scheduling, and rewinding lanes for
//! retransmission and resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::{Frame, FrameKind};
use tracing::trace;

use super::connection::{CLASSES, Connection, LinkState};
use super::error::ProtocolError;
use super::wire::{self, AckEntry, CH_ACK, CH_KEEPALIVE, Position};

impl Connection {
    /// Completes everything the peer already holds and resends the rest (resume and retransmission).
    pub(crate) fn rewind_lanes(
        &mut self,
        now: Instant,
        positions: &BTreeMap<u32, Position>,
    ) -> Result<(), ProtocolError> {
        let (mode, mtu) = (self.mode(), self.frame_mtu);
        let channels: Vec<u32> = self.lanes.keys().copied().collect();
        for ch in channels {
            let pos = match positions.get(&ch) {
                Some(p) => *p,
                None => self.lanes.get(&ch).map_or(Position { seq: 0, frag: 0 }, |l| l.acked),
            };
            self.apply_ack(now, ch, pos)?;
            if let Some(lane) = self.lanes.get_mut(&ch) {
                let freed = lane.rewind(pos, mode, mtu);
                self.inflight_bytes -= freed.min(self.inflight_bytes);
            }
        }
        self.inflight_bytes = 0;
        Ok(())
    }

    pub(crate) fn rewind_all_to_acked(&mut self) {
        let (mode, mtu) = (self.mode(), self.frame_mtu);
        for lane in self.lanes.values_mut() {
            if lane.inflight_bytes > 0 {
                let acked = lane.acked;
                lane.rewind(acked, mode, mtu);
            }
        }
        self.inflight_bytes = 0;
    }

    pub(crate) fn next_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.transport?;
        if let Some(f) = self.hs_out.pop_front() {
            return Some(f);
        }
        if self.state != LinkState::Established {
            return None;
        }
        if (self.ack_now || self.ack_deadline.is_some_and(|d| d <= now))
            && let Some(f) = self.build_ack()
        {
            self.stats.acks_sent += 1;
            return Some(f);
        }
        if self.keep_alive_due || self.last_sent + self.keep_alive <= now {
            self.stats.keep_alives_sent += 1;
            return self.single(FrameKind::KeepAlive, CH_KEEPALIVE, Bytes::from_static(&[0]));
        }
        self.next_fragment(now)
    }

    /// The next payload fragment, by priority class with per-class window limits, round robin within a class.
    fn next_fragment(&mut self, now: Instant) -> Option<Bytes> {
        let window = self.send_window();
        let (mode, mtu) = (self.mode(), self.frame_mtu);
        for (ci, class) in CLASSES.iter().enumerate() {
            let limit = match class {
                FrameKind::Control => u64::MAX,
                FrameKind::Message => window,
                FrameKind::StreamMedia => window / 8 * 7,
                _ => window / 4 * 3,
            };
            if self.inflight_bytes >= limit {
                continue;
            }
            let after = self.rr[ci];
            let pick = self
                .lanes
                .range(after + 1..)
                .chain(self.lanes.range(..=after))
                .find(|(_, l)| l.kind == *class && l.has_pending())
                .map(|(ch, _)| *ch);
            let Some(ch) = pick else { continue };
            self.rr[ci] = ch;
            let lane = self.lanes.get_mut(&ch)?;
            self.tx_buf.reserve(mtu.get());
            let (len, resent) = lane.next_frame(mode, mtu, &mut self.tx_buf)?;
            if self.inflight_bytes == 0 {
                self.last_progress = now;
            }
            self.inflight_bytes += len as u64;
            self.stats.max_inflight_bytes = self.stats.max_inflight_bytes.max(self.inflight_bytes);
            self.stats.fragments_sent += 1;
            if resent {
                self.stats.fragments_resent += 1;
            }
            return Some(self.tx_buf.split().freeze());
        }
        None
    }

    fn single(&mut self, kind: FrameKind, channel: u32, payload: Bytes) -> Option<Bytes> {
        let frame = Frame::single(kind, channel, 0, payload).ok()?;
        frame.encode(self.mode(), &mut self.tx_buf).ok()?;
        Some(self.tx_buf.split().freeze())
    }

    fn build_ack(&mut self) -> Option<Bytes> {
        let entries: Vec<AckEntry> = self
            .ack_dirty
            .iter()
            .filter_map(|ch| {
                let rl = self.recv.get(ch)?;
                let frag = self.reassembler.next_expected(*ch, rl.next_seq).unwrap_or(0);
                let pos = Position { seq: rl.next_seq, frag };
                let nack = rl.nack_pending;
                Some(AckEntry { channel: *ch, pos: if nack { rl.nacked.unwrap_or(pos) } else { pos }, nack })
            })
            .collect();
        self.ack_now = false;
        self.ack_deadline = None;
        self.ack_bytes = 0;
        if entries.is_empty() {
            self.ack_dirty.clear();
            return None;
        }
        // ACK header: 2 + channel 1 + seq 1 + index 1 + total length ≤ 3 bytes.
        let room = self.frame_mtu.get().saturating_sub(self.mode().framing_overhead() + 8);
        let (payload, taken) = wire::encode_ack(&entries, room);
        for e in &entries[..taken] {
            self.ack_dirty.remove(&e.channel);
            if let Some(rl) = self.recv.get_mut(&e.channel) {
                rl.nack_pending = false;
            }
        }
        if !self.ack_dirty.is_empty() {
            self.ack_now = true;
        }
        trace!(entries = taken, "ack");
        self.single(FrameKind::Ack, CH_ACK, payload)
    }

    /// The window in force: the configured one, but at least four frames, so links with large SDUs (an LE CoC
    /// MTU of 64 KiB) keep several frames in flight across an acknowledgement round trip.
    fn send_window(&self) -> u64 {
        self.config.send_window.max(4 * self.frame_mtu.get() as u64)
    }

    /// The retransmission timeout in force: the configured one, but never less than twice the recent gaps
    /// between acknowledgement advances, nor than the time the slowest PHY colink runs on (LE Coded, about
    /// 100 kbit/s of payload) needs for three frames — so one large SDU on a slow link is not mistaken for a loss.
    pub(crate) fn retransmit_timeout(&self) -> Duration {
        let three_frames = Duration::from_secs_f64(3.0 * self.frame_mtu.get() as f64 * 8.0 / 100_000.0);
        self.config.retransmit_timeout.max(three_frames).max(self.progress_gap * 2)
    }

    /// The retransmission timer runs from the later of the last acknowledgement progress and the last frame
    /// handed to the transport: while the link is still busy sending (a slow PHY, large SDUs), silence from the
    /// peer is not a sign of loss.
    pub(crate) fn retransmit_base(&self) -> Instant {
        self.last_progress.max(self.last_sent)
    }

    pub(crate) fn schedule_ack(&mut self, now: Instant) {
        let at = now + self.config.ack_delay;
        self.ack_deadline = Some(self.ack_deadline.map_or(at, |d| d.min(at)));
    }
}
