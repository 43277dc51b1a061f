//! Putting whole messages back together from the frames of many interleaved messages, within hard limits.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameKind, Position};

/// Hard limits on what a peer can make a [`Reassembler`] hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    max_message_len: [u32; 16],
    /// Most messages partly received at once.
    pub max_partials: usize,
    /// Most payload bytes held in partly received messages at once.
    pub max_buffered_bytes: u64,
    /// A partly received message that gets no fragment for this long is dropped.
    pub stall_timeout: Duration,
}

impl Limits {
    /// The largest message of `kind` accepted.
    pub fn max_message_len(&self, kind: FrameKind) -> u32 {
        self.max_message_len[kind.index()]
    }

    /// Sets the largest message of `kind` accepted.
    pub fn set_max_message_len(&mut self, kind: FrameKind, len: u32) -> &mut Self {
        self.max_message_len[kind.index()] = len;
        self
    }
}

impl Default for Limits {
    /// Defaults at least as generous as the reference implementation: text messages 64 KiB (reference:
    /// 4 KiB sent, 10 KiB received), data up to the full 32-bit length, images 64 MiB, stream media units
    /// 8 MiB, control and acks 64 KiB, keep-alives 64 bytes, file-lane messages 1 MiB; 64 partial messages; 4 GiB buffered (one maximal
    /// data message); 30 s stall timeout.
    fn default() -> Self {
        let mut max_message_len = [0u32; 16];
        max_message_len[FrameKind::Control.index()] = 64 * 1024;
        max_message_len[FrameKind::Message.index()] = 64 * 1024;
        max_message_len[FrameKind::Data.index()] = u32::MAX;
        max_message_len[FrameKind::Image.index()] = 64 * 1024 * 1024;
        max_message_len[FrameKind::StreamMedia.index()] = 8 * 1024 * 1024;
        max_message_len[FrameKind::Ack.index()] = 64 * 1024;
        max_message_len[FrameKind::KeepAlive.index()] = 64;
        max_message_len[FrameKind::File.index()] = 1024 * 1024;
        Self {
            max_message_len,
            max_partials: 64,
            max_buffered_bytes: u64::from(u32::MAX) + 1,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What the message carries.
    pub kind: FrameKind,
    /// Its channel.
    pub channel: u32,
    /// Its sequence number on the channel.
    pub seq: u32,
    /// The message bytes (zero-copy for single-frame messages).
    pub payload: Bytes,
}

/// A partly received message dropped by [`Reassembler::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// What the message carried.
    pub kind: FrameKind,
    /// Its channel.
    pub channel: u32,
    /// Its sequence number.
    pub seq: u32,
    /// Bytes received before it stalled.
    pub received: u32,
    /// Its announced length.
    pub total_len: u32,
}

/// Why a frame was not accepted. Every variant names the message concerned; unless the variant says the
/// partial message was kept, it has been dropped (its buffered bytes released) and the sender must resend it
/// from its first fragment, which is what colink's acknowledgements arrange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The announced length exceeds the limit for this kind. Nothing was buffered.
    #[error("{kind:?} message {channel}/{seq} of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Kind of the message.
        kind: FrameKind,
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Announced length.
        len: u32,
        /// Limit for the kind.
        max: u32,
    },
    /// Starting this message would exceed the number of partial messages allowed. Nothing was buffered.
    #[error("too many partial messages (limit {max}); message {channel}/{seq} refused")]
    TooManyPartials {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Limit.
        max: usize,
    },
    /// Buffering this fragment would exceed the limit on buffered bytes.
    #[error("buffer limit of {max} bytes reached; message {channel}/{seq} dropped")]
    BufferLimit {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Limit.
        max: u64,
    },
    /// A continuation fragment of a message whose first fragment was never seen (or was dropped).
    #[error("fragment {index} of unknown message {channel}/{seq}")]
    UnknownMessage {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Fragment index.
        index: u32,
    },
    /// A fragment that was already received (e.g. resent after a resume). The partial message was kept.
    #[error("duplicate fragment {index} of message {channel}/{seq} (expected {expected}); ignored")]
    Duplicate {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Fragment index received.
        index: u32,
        /// Fragment index expected next.
        expected: u32,
    },
    /// A fragment arrived ahead of one still missing.
    #[error("fragment {index} of message {channel}/{seq} arrived before fragment {expected}")]
    Gap {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Fragment index received.
        index: u32,
        /// Fragment index expected next.
        expected: u32,
    },
    /// A fragment's kind differs from its message's first fragment.
    #[error("fragment of message {channel}/{seq} has kind {got:?}, message is {expected:?}")]
    KindMismatch {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Kind of the first fragment.
        expected: FrameKind,
        /// Kind of this fragment.
        got: FrameKind,
    },
    /// The fragments carry more, or (at the last fragment) fewer, bytes than announced.
    #[error("message {channel}/{seq} carries {received} bytes, announced {total_len}")]
    LengthMismatch {
        /// Channel.
        channel: u32,
        /// Sequence number.
        seq: u32,
        /// Bytes received including this fragment.
        received: u64,
        /// Announced length.
        total_len: u32,
    },
}

/// Reassembles messages from frames of many interleaved messages on many channels.
///
/// Fragments of one message must arrive in order (links are ordered); messages may interleave freely.
/// Memory is bounded by [`Limits`]: a partial buffer grows with the bytes actually received (never to the
/// announced length up front), at most doubling, so held memory stays below twice
/// `max_buffered_bytes` plus 4 KiB per partial. Sans-IO: time comes in as `now`.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    partials: BTreeMap<(u32, u32), Partial>,
    buffered: u64,
}

#[derive(Debug)]
struct Partial {
    kind: FrameKind,
    total_len: u32,
    next_index: u32,
    buf: Vec<u8>,
    last_activity: Instant,
}

/// Initial capacity of a partial buffer (grown by doubling up to the announced length).
const INITIAL_CAPACITY: usize = 4096;

impl Reassembler {
    /// A reassembler enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, partials: BTreeMap::new(), buffered: 0 }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Payload bytes held in partial messages.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// Number of partly received messages.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// The index of the next fragment expected for message `seq` on `channel`, if it is partly received.
    pub fn next_expected(&self, channel: u32, seq: u32) -> Option<u32> {
        self.partials.get(&(channel, seq)).map(|p| p.next_index)
    }

    /// Accepts one frame received at `now`; returns the message it completes, if any.
    pub fn push(&mut self, now: Instant, frame: Frame) -> Result<Option<Message>, ReassemblyError> {
        let Frame { header, payload } = frame;
        let (channel, seq, kind) = (header.channel, header.seq, header.kind);
        match header.position {
            Position::First { total_len } => {
                // A new first fragment restarts the message (the sender restarted it).
                self.remove(channel, seq);
                let max = self.limits.max_message_len(kind);
                if total_len > max {
                    return Err(ReassemblyError::MessageTooLarge { kind, channel, seq, len: total_len, max });
                }
                if header.last {
                    // Decoding guarantees payload.len() == total_len for a single-frame message.
                    return Ok(Some(Message { kind, channel, seq, payload }));
                }
                if self.partials.len() >= self.limits.max_partials {
                    return Err(ReassemblyError::TooManyPartials { channel, seq, max: self.limits.max_partials });
                }
                self.check_budget(channel, seq, payload.len())?;
                let mut buf = Vec::with_capacity((total_len as usize).min(INITIAL_CAPACITY.max(payload.len())));
                buf.extend_from_slice(&payload);
                self.buffered += payload.len() as u64;
                let partial = Partial { kind, total_len, next_index: 1, buf, last_activity: now };
                self.partials.insert((channel, seq), partial);
                Ok(None)
            }
            Position::Continuation { index } => {
                let index = index.get();
                let Some(partial) = self.partials.get(&(channel, seq)) else {
                    return Err(ReassemblyError::UnknownMessage { channel, seq, index });
                };
                let expected = partial.next_index;
                if index < expected {
                    return Err(ReassemblyError::Duplicate { channel, seq, index, expected });
                }
                if index > expected {
                    self.remove(channel, seq);
                    return Err(ReassemblyError::Gap { channel, seq, index, expected });
                }
                if partial.kind != kind {
                    let expected = partial.kind;
                    self.remove(channel, seq);
                    return Err(ReassemblyError::KindMismatch { channel, seq, expected, got: kind });
                }
                let received = partial.buf.len() as u64 + payload.len() as u64;
                let total_len = partial.total_len;
                if received > u64::from(total_len) || (header.last && received != u64::from(total_len)) {
                    self.remove(channel, seq);
                    return Err(ReassemblyError::LengthMismatch { channel, seq, received, total_len });
                }
                self.check_budget(channel, seq, payload.len())?;
                let Some(partial) = self.partials.get_mut(&(channel, seq)) else {
                    return Err(ReassemblyError::UnknownMessage { channel, seq, index });
                };
                let free = partial.buf.capacity() - partial.buf.len();
                if free < payload.len() {
                    let target = (partial.buf.capacity() * 2).max(partial.buf.len() + payload.len());
                    let target = target.min(total_len as usize);
                    partial.buf.reserve_exact(target - partial.buf.len());
                }
                partial.buf.extend_from_slice(&payload);
                partial.next_index += 1;
                partial.last_activity = now;
                self.buffered += payload.len() as u64;
                if header.last {
                    let Some(done) = self.remove(channel, seq) else {
                        return Err(ReassemblyError::UnknownMessage { channel, seq, index });
                    };
                    return Ok(Some(Message { kind, channel, seq, payload: Bytes::from(done.buf) }));
                }
                Ok(None)
            }
        }
    }

    /// The earliest instant at which a partial message will count as stalled, if any is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.partials.values().map(|p| p.last_activity + self.limits.stall_timeout).min()
    }

    /// Drops every partial message stalled at `now` and reports them (in channel, sequence order).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Stalled> {
        let timeout = self.limits.stall_timeout;
        let stalled: Vec<(u32, u32)> =
            self.partials.iter().filter(|(_, p)| p.last_activity + timeout <= now).map(|(k, _)| *k).collect();
        stalled
            .into_iter()
            .filter_map(|(channel, seq)| {
                self.remove(channel, seq).map(|p| Stalled {
                    kind: p.kind,
                    channel,
                    seq,
                    received: p.buf.len() as u32,
                    total_len: p.total_len,
                })
            })
            .collect()
    }

    /// Drops every partial message on `channel` (e.g. when its session closes); returns how many.
    pub fn discard_channel(&mut self, channel: u32) -> usize {
        let keys: Vec<(u32, u32)> = self.partials.range((channel, 0)..=(channel, u32::MAX)).map(|(k, _)| *k).collect();
        for (c, s) in &keys {
            self.remove(*c, *s);
        }
        keys.len()
    }

    fn check_budget(&mut self, channel: u32, seq: u32, add: usize) -> Result<(), ReassemblyError> {
        let max = self.limits.max_buffered_bytes;
        if self.buffered + add as u64 > max {
            self.remove(channel, seq);
            return Err(ReassemblyError::BufferLimit { channel, seq, max });
        }
        Ok(())
    }

    fn remove(&mut self, channel: u32, seq: u32) -> Option<Partial> {
        let p = self.partials.remove(&(channel, seq))?;
        self.buffered -= p.buf.len() as u64;
        Some(p)
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fragmenter, LinkMode, Mtu, decode_packet};
    use bytes::BytesMut;

    fn frames(kind: FrameKind, channel: u32, seq: u32, len: usize, mtu: usize) -> Vec<Frame> {
        let payload: Bytes = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
        let mut f = Fragmenter::new(kind, channel, seq, payload, LinkMode::Packet, Mtu::new(mtu).unwrap()).unwrap();
        let mut out = BytesMut::new();
        let mut v = Vec::new();
        while f.next_frame(&mut out).is_some() {
            v.push(decode_packet(out.split().freeze()).unwrap());
        }
        v
    }

    fn expected(seq: u32, len: usize) -> Bytes {
        (0..len).map(|i| (i * 7 + seq as usize) as u8).collect()
    }

    #[test]
    fn interleaved_messages_reassemble() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let a = frames(FrameKind::Data, 1, 0, 5000, 100);
        let b = frames(FrameKind::Message, 2, 0, 700, 100);
        let mut done = Vec::new();
        let (mut ia, mut ib) = (a.into_iter(), b.into_iter());
        loop {
            let (fa, fb) = (ia.next(), ib.next());
            if fa.is_none() && fb.is_none() {
                break;
            }
            for f in [fa, fb].into_iter().flatten() {
                if let Some(m) = r.push(now, f).unwrap() {
                    done.push(m);
                }
            }
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].channel, 2, "the short message completes first");
        assert_eq!(done[0].payload, expected(0, 700));
        assert_eq!(done[1].payload, expected(0, 5000));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.partial_count(), 0);
    }

    #[test]
    fn single_frame_messages_are_zero_copy() {
        let f = frames(FrameKind::Message, 0, 3, 10, 247).remove(0);
        let ptr = f.payload.as_ptr();
        let m = Reassembler::default().push(Instant::now(), f).unwrap().unwrap();
        assert_eq!(m.payload.as_ptr(), ptr);
    }

    #[test]
    fn oversized_announcement_is_refused_before_buffering() {
        let mut limits = Limits::default();
        limits.set_max_message_len(FrameKind::Message, 1000);
        let mut r = Reassembler::new(limits);
        let f = frames(FrameKind::Message, 0, 0, 1001, 247).remove(0);
        assert!(matches!(
            r.push(Instant::now(), f),
            Err(ReassemblyError::MessageTooLarge { len: 1001, max: 1000, .. })
        ));
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn partial_and_buffer_limits() {
        let now = Instant::now();
        let limits = Limits { max_partials: 2, max_buffered_bytes: 500, ..Limits::default() };
        let mut r = Reassembler::new(limits);
        r.push(now, frames(FrameKind::Data, 0, 0, 1000, 100).remove(0)).unwrap();
        r.push(now, frames(FrameKind::Data, 0, 1, 1000, 100).remove(0)).unwrap();
        assert!(matches!(
            r.push(now, frames(FrameKind::Data, 0, 2, 1000, 100).remove(0)),
            Err(ReassemblyError::TooManyPartials { max: 2, .. })
        ));
        // Feed message 0 until the 500-byte budget runs out.
        let mut err = None;
        for f in frames(FrameKind::Data, 0, 0, 1000, 100).into_iter().skip(1) {
            if let Err(e) = r.push(now, f) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(ReassemblyError::BufferLimit { max: 500, seq: 0, .. })));
        assert!(r.buffered_bytes() <= 500);
        assert_eq!(r.partial_count(), 1, "the offending message was dropped");
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_drop_the_message() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let f = frames(FrameKind::Data, 4, 9, 1000, 100);
        r.push(now, f[0].clone()).unwrap();
        r.push(now, f[1].clone()).unwrap();
        assert!(matches!(r.push(now, f[1].clone()), Err(ReassemblyError::Duplicate { index: 1, expected: 2, .. })));
        assert_eq!(r.next_expected(4, 9), Some(2));
        assert!(matches!(r.push(now, f[3].clone()), Err(ReassemblyError::Gap { index: 3, expected: 2, .. })));
        assert_eq!(r.partial_count(), 0);
        assert!(matches!(r.push(now, f[2].clone()), Err(ReassemblyError::UnknownMessage { index: 2, .. })));
    }

    #[test]
    fn kind_and_length_mismatches() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let data = frames(FrameKind::Data, 0, 0, 1000, 100);
        let img = frames(FrameKind::Image, 0, 0, 1000, 100);
        r.push(now, data[0].clone()).unwrap();
        assert!(matches!(r.push(now, img[1].clone()), Err(ReassemblyError::KindMismatch { .. })));
        // A longer message's fragments under a shorter announcement overrun it.
        let short = frames(FrameKind::Data, 0, 1, 200, 100);
        let long = frames(FrameKind::Data, 0, 1, 1000, 100);
        r.push(now, short[0].clone()).unwrap();
        r.push(now, long[1].clone()).unwrap();
        assert!(matches!(r.push(now, long[2].clone()), Err(ReassemblyError::LengthMismatch { .. })));
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn a_new_first_fragment_restarts_the_message() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let f = frames(FrameKind::Data, 0, 0, 1000, 100);
        r.push(now, f[0].clone()).unwrap();
        r.push(now, f[1].clone()).unwrap();
        let mut out = None;
        for fr in f {
            out = r.push(now, fr).unwrap();
        }
        assert_eq!(out.unwrap().payload, expected(0, 1000));
    }

    #[test]
    fn stalled_partials_time_out() {
        let t0 = Instant::now();
        let limits = Limits { stall_timeout: Duration::from_secs(5), ..Limits::default() };
        let mut r = Reassembler::new(limits);
        assert_eq!(r.poll_timeout(), None);
        r.push(t0, frames(FrameKind::Data, 1, 0, 1000, 100).remove(0)).unwrap();
        r.push(t0 + Duration::from_secs(2), frames(FrameKind::Data, 2, 0, 1000, 100).remove(0)).unwrap();
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert!(r.handle_timeout(t0 + Duration::from_secs(4)).is_empty());
        let s = r.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].channel, s[0].seq, s[0].total_len), (1, 0, 1000));
        assert!(s[0].received > 0 && s[0].received < 1000);
        assert_eq!(r.partial_count(), 1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn discard_channel_releases_memory() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        for seq in 0..3 {
            r.push(now, frames(FrameKind::Data, 7, seq, 1000, 100).remove(0)).unwrap();
        }
        r.push(now, frames(FrameKind::Data, 8, 0, 1000, 100).remove(0)).unwrap();
        assert_eq!(r.discard_channel(7), 3);
        assert_eq!(r.partial_count(), 1);
        assert!(r.buffered_bytes() > 0);
    }
}
