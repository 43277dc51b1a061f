//! The receiving half of a [`Connection`]: routing each received frame (handshake, keep-alive, acknowledgements,
//! control and session lanes) to the part that decides about it — acknowledgements to the send scheduler,
//! session fragments to the receiver (take, duplicate or gap) and the acknowledgement timer — and delivering
//! completed payloads in order, exactly once.

use std::time::Instant;

use colink_frame::{Frame, FrameKind, ReassemblyError};
use tracing::{debug, trace, warn};

use super::{Connection, LinkState};
use crate::error::{CloseCode, LinkError, ProtocolError};
use crate::event::Event;
use crate::receiver::Verdict;
use crate::types::SessionKey;
use crate::wire::{self, CH_ACK, CH_CONTROL, CH_HANDSHAKE, CH_KEEPALIVE, Position};

impl Connection {
    pub(super) fn on_frame(&mut self, now: Instant, frame: Frame) {
        let (kind, channel) = (frame.header.kind, frame.header.channel);
        let result = match (kind, channel) {
            (FrameKind::Control, CH_HANDSHAKE) => {
                match self.receiver.reassemble_handshake(now, frame) {
                    Ok(Some(m)) => match self.open_link_message(m.payload) {
                        Ok(payload) => self.on_handshake_message(now, &payload),
                        Err(e) => Err(e),
                    },
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
            // On an authenticated link acknowledgements and keep-alives come sealed on the handshake channel; a
            // plain one is a forgery (docs/security.md §3).
            (FrameKind::Ack | FrameKind::KeepAlive, CH_ACK | CH_KEEPALIVE) if self.is_secured() => {
                Err(ProtocolError::Integrity { what: "plain acknowledgement or keep-alive on an authenticated link" })
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
        let entries =
            wire::decode_ack(&frame.payload, self.version).map_err(|m| ProtocolError::Malformed { what: m.0 })?;
        self.on_ack_entries(now, entries)
    }

    /// Acknowledgements received, from an ACK frame or a sealed link message.
    pub(super) fn on_ack_entries(&mut self, now: Instant, entries: Vec<wire::AckEntry>) -> Result<(), ProtocolError> {
        for e in entries {
            let credit = (self.version >= 2).then_some(e.credit);
            // Version 3 resends only what the peer lacks (below); a gap report behind what it acknowledged
            // before means it dropped a partial message (stalled), which starts over from there.
            let behind = self.scheduler.acked(e.channel).is_some_and(|acked| e.pos < acked);
            self.apply_ack(now, e.channel, e.pos, credit)?;
            if !self.scheduler.has_lane(e.channel) {
                continue;
            }
            if self.scheduler.is_selective() {
                let lost = self.scheduler.sack(e.channel, &e.sacks, e.more);
                if lost > 0 {
                    debug!(channel = e.channel, lost, "fragments the peer's SACK shows missing");
                }
                self.stats.fragments_lost += lost;
            }
            if e.nack && self.scheduler.is_selective() && !behind && e.sacks.is_empty() && !e.more {
                // The peer holds nothing beyond the gap (its bound was reached): everything from the gap on
                // goes again, each fragment cut as before.
                let lost = self.scheduler.resend_from(e.channel, e.pos);
                debug!(channel = e.channel, lost, "the peer holds nothing beyond a gap; resending from it");
                self.stats.fragments_lost += lost;
            } else if e.nack && (!self.scheduler.is_selective() || behind) {
                debug!(channel = e.channel, seq = e.pos.seq, frag = e.pos.frag, "gap reported; resending");
                self.scheduler.rewind(e.channel, e.pos, false);
                self.scheduler.gap_reported();
                self.stats.fragments_lost += 1;
            }
        }
        self.scheduler.acknowledged(now, self.config.ack_delay);
        Ok(())
    }

    /// The peer holds everything before `pos` on `channel`.
    /// With `credit` (version 2) the channel's receive credit follows the entry.
    pub(super) fn apply_ack(
        &mut self,
        now: Instant,
        channel: u32,
        pos: Position,
        credit: Option<wire::Credit>,
    ) -> Result<(), ProtocolError> {
        let Some(acked) = self.scheduler.ack(channel, pos, credit)? else {
            return Ok(()); // a session that ended meanwhile
        };
        if acked.advanced {
            self.retransmit.on_progress(now);
        }
        let session = SessionKey(self.layout().session(channel));
        for m in acked.done {
            if let Some(id) = m.id {
                self.events.push_back(Event::SendCompleted { session, id });
            }
            if channel == CH_CONTROL {
                trace!(seq = m.seq, "control message acknowledged");
            }
        }
        if acked.writable
            && let Some(kind) = self.layout().kind(channel)
        {
            self.events.push_back(Event::Writable { session, kind });
        }
        Ok(())
    }

    fn on_lane_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtocolError> {
        let ch = frame.header.channel;
        let wire_len = frame.encoded_len(self.mode()) as u64;
        let (verdict, frame) = self.receiver.classify_and_hold(frame)?;
        match (verdict, frame) {
            (Verdict::Take, Some(frame)) => {
                self.take_fragment(now, frame)?;
                // What was held beyond the gap follows, in order.
                while self.state == LinkState::Established
                    && let Some(next) = self.receiver.next_held(ch)
                {
                    self.take_fragment(now, next)?;
                }
                Ok(())
            }
            (Verdict::Take, None) => Ok(()),
            (Verdict::Held { new }, _) => {
                self.stats.held_fragments += 1;
                if new {
                    debug!(channel = ch, "gap; holding what follows it");
                    self.acks.on_gap(ch);
                } else {
                    self.acks.on_taken(now, ch, wire_len);
                }
                Ok(())
            }
            (Verdict::Unknown, _) => {
                if self.numbers.is_known(self.layout().session(ch)) {
                    self.stats.discarded_fragments += 1;
                    return Ok(()); // a session that ended, or whose ACCEPT was lost
                }
                Err(ProtocolError::UnknownChannel { channel: ch })
            }
            (Verdict::Duplicate, _) => {
                self.stats.discarded_fragments += 1;
                self.acks.on_duplicate(now, ch);
                Ok(())
            }
            (Verdict::Gap { new }, _) => {
                self.stats.discarded_fragments += 1;
                if new {
                    debug!(channel = ch, "gap; asking for a resend");
                    self.acks.on_gap(ch);
                }
                Ok(())
            }
        }
    }

    /// Takes the next fragment of its channel, delivering the message it completes.
    fn take_fragment(&mut self, now: Instant, frame: Frame) -> Result<(), ProtocolError> {
        let ch = frame.header.channel;
        let wire_len = frame.encoded_len(self.mode()) as u64;
        let done = self.receiver.take(now, frame)?;
        self.acks.on_taken(now, ch, wire_len);
        if let Some(m) = done {
            let payload = self.open_lane_message(ch, m.seq, m.kind, m.payload)?;
            self.acks.on_message(now);
            if ch == CH_CONTROL {
                self.on_control_message(now, &payload)?;
            } else {
                let layout = self.layout();
                let session = SessionKey(layout.session(ch));
                let Some(kind) = layout.kind(ch) else {
                    return Err(ProtocolError::UnknownChannel { channel: ch });
                };
                self.receiver.deliver(ch, payload.len() as u64 + self.message_charge)?;
                self.events.push_back(Event::Received { session, kind, payload });
            }
        }
        Ok(())
    }
}
