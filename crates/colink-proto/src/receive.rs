//! The receiving half of a [`Connection`]: routing each received frame (handshake, keep-alive, acknowledgements,
//! control and session lanes), applying acknowledgements, and reassembling and delivering session payloads in
//! order, exactly once.

use std::time::Instant;

use colink_frame::{Frame, FrameKind, Position as FramePosition, ReassemblyError};
use tracing::{debug, trace, warn};

use super::connection::{Connection, LinkState};
use super::error::{CloseCode, LinkError, ProtocolError};
use super::event::Event;
use super::types::{ChannelKind, SessionKey};
use super::wire::{self, CH_ACK, CH_CONTROL, CH_HANDSHAKE, CH_KEEPALIVE, Position};

impl Connection {
    pub(crate) fn on_frame(&mut self, now: Instant, frame: Frame) {
        let (kind, channel) = (frame.header.kind, frame.header.channel);
        let result = match (kind, channel) {
            (FrameKind::Control, CH_HANDSHAKE) => {
                match self.reassembler.push(now, frame) {
                    Ok(Some(m)) => self.on_handshake_message(now, &m.payload),
                    Ok(None) => Ok(()),
                    Err(
                        e @ (ReassemblyError::MessageTooLarge { .. }
                        | ReassemblyError::TooManyPartials { .. }
                        | ReassemblyError::BufferLimit { .. }),
                    ) => Err(ProtocolError::Limit(e)),
                    Err(_) => Ok(()), // a handshake message cut by corruption; the retry timer resends it
                }
            }
            _ if self.state != LinkState::Established => {
                trace!(?kind, channel, "frame before the handshake completed; dropped");
                Ok(())
            }
            (FrameKind::Ack, CH_ACK) => self.on_ack_frame(now, &frame),
            (FrameKind::KeepAlive, CH_KEEPALIVE) => Ok(()),
            (_, CH_HANDSHAKE..=CH_KEEPALIVE) if channel != CH_CONTROL => {
                Err(ProtocolError::WrongKind { kind: kind as u8, channel })
            }
            _ => self.on_lane_frame(now, frame),
        };
        if let Err(e) = result {
            warn!(error = %e, "protocol violation");
            self.close_with(now, CloseCode::ProtocolError, LinkError::Protocol(e));
        }
    }

    fn on_ack_frame(&mut self, now: Instant, frame: &Frame) -> Result<(), ProtocolError> {
        if !frame.header.last || frame.header.position.index() != 0 {
            return Err(ProtocolError::Malformed { what: "ACK (fragmented)" });
        }
        let entries = wire::decode_ack(&frame.payload).map_err(|m| ProtocolError::Malformed { what: m.0 })?;
        for e in entries {
            self.apply_ack(now, e.channel, e.pos)?;
            if e.nack {
                let (mode, mtu) = (self.mode(), self.frame_mtu);
                if let Some(lane) = self.lanes.get_mut(&e.channel) {
                    debug!(channel = e.channel, seq = e.pos.seq, frag = e.pos.frag, "gap reported; resending");
                    let freed = lane.rewind(e.pos, mode, mtu);
                    self.inflight_bytes -= freed.min(self.inflight_bytes);
                }
            }
        }
        Ok(())
    }

    /// The peer holds everything before `pos` on `channel`.
    pub(crate) fn apply_ack(&mut self, now: Instant, channel: u32, pos: Position) -> Result<(), ProtocolError> {
        let Some(lane) = self.lanes.get_mut(&channel) else {
            return Ok(()); // a session that ended meanwhile
        };
        if pos.seq > lane.next_seq() || (pos.seq == lane.next_seq() && pos.frag > 0) {
            return Err(ProtocolError::BogusAck { channel });
        }
        let (done, freed, advanced) = lane.ack(pos);
        self.inflight_bytes -= freed.min(self.inflight_bytes);
        if advanced {
            let gap = now.saturating_duration_since(self.last_progress);
            self.progress_gap = gap.max(self.progress_gap / 8 * 7);
            self.last_progress = now;
        }
        let writable = lane.blocked && lane.queued_bytes < self.config.channel_buffer;
        if writable {
            lane.blocked = false;
        }
        let session = SessionKey(channel >> 2);
        for m in done {
            if let Some(id) = m.id {
                self.events.push_back(Event::SendCompleted { session, id });
            }
            if channel == CH_CONTROL {
                trace!(seq = m.seq, "control message acknowledged");
            }
        }
        if writable {
            self.events.push_back(Event::Writable { session, kind: ChannelKind::from_lane(channel) });
        }
        Ok(())
    }

    fn on_lane_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtocolError> {
        let ch = frame.header.channel;
        let mode = self.mode();
        let Some(rl) = self.recv.get_mut(&ch) else {
            let s = ch >> 2;
            if self.session_number_known(s) {
                self.stats.discarded_fragments += 1;
                return Ok(()); // a session that ended, or whose ACCEPT was lost
            }
            return Err(ProtocolError::UnknownChannel { channel: ch });
        };
        if rl.kind != frame.header.kind {
            return Err(ProtocolError::WrongKind { kind: frame.header.kind as u8, channel: ch });
        }
        let seq = frame.header.seq;
        let index = frame.header.position.index();
        let expected = self.reassembler.next_expected(ch, rl.next_seq);
        enum Verdict {
            Take,
            Duplicate,
            Gap(Position),
        }
        let verdict = if seq < rl.next_seq {
            Verdict::Duplicate
        } else if seq > rl.next_seq {
            Verdict::Gap(Position { seq: rl.next_seq, frag: expected.unwrap_or(0) })
        } else {
            match (matches!(frame.header.position, FramePosition::First { .. }), expected) {
                (true, _) => Verdict::Take,
                (false, Some(e)) if index == e => Verdict::Take,
                (false, Some(e)) if index < e => Verdict::Duplicate,
                (false, e) => Verdict::Gap(Position { seq, frag: e.unwrap_or(0) }),
            }
        };
        match verdict {
            Verdict::Duplicate => {
                self.stats.discarded_fragments += 1;
                self.ack_dirty.insert(ch);
                self.schedule_ack(now);
                Ok(())
            }
            Verdict::Gap(pos) => {
                self.stats.discarded_fragments += 1;
                if rl.nacked != Some(pos) {
                    debug!(channel = ch, seq = pos.seq, frag = pos.frag, "gap; asking for a resend");
                    rl.nacked = Some(pos);
                    rl.nack_pending = true;
                    self.ack_dirty.insert(ch);
                    self.ack_now = true;
                }
                Ok(())
            }
            Verdict::Take => {
                let wire_len = frame.encoded_len(mode) as u64;
                let done = self.reassembler.push(now, frame)?;
                rl.nacked = None;
                self.ack_dirty.insert(ch);
                self.ack_bytes += wire_len;
                if self.ack_bytes >= self.config.ack_threshold {
                    self.ack_now = true;
                } else if self.ack_deadline.is_none() {
                    // Partial progress is acknowledged within `ack_max_delay` too, so a slow link never looks
                    // stalled to the sender's retransmission timer.
                    self.ack_deadline = Some(now + self.config.ack_max_delay);
                }
                if let Some(m) = done {
                    rl.next_seq = rl.next_seq.wrapping_add(1);
                    self.schedule_ack(now);
                    if ch == CH_CONTROL {
                        self.on_control_message(now, &m.payload)?;
                    } else {
                        let session = SessionKey(ch >> 2);
                        let kind = ChannelKind::from_lane(ch);
                        self.events.push_back(Event::Received { session, kind, payload: m.payload });
                    }
                }
                Ok(())
            }
        }
    }
}
