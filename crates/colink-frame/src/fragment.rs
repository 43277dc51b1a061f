//! Splitting a message into frames that fit the link MTU.

use bytes::{Bytes, BytesMut};
use std::num::NonZeroU32;

use crate::frame::{self, FrameKind, Header, LinkMode, Mtu, Position};
use crate::varint;

/// Why a message cannot be fragmented as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// The message is longer than the 32-bit length field allows.
    #[error("message of {len} bytes is longer than the maximum of {} bytes", u32::MAX)]
    MessageTooLarge {
        /// The message length.
        len: usize,
    },
    /// The MTU leaves no room for payload after the header (possible only with tiny MTUs and huge
    /// channel or sequence numbers).
    #[error("MTU {mtu} leaves no room for payload at fragment {index}")]
    MtuTooSmall {
        /// The MTU.
        mtu: usize,
        /// The first fragment index that would carry no payload.
        index: u32,
    },
    /// `seek` to a fragment beyond the end of the message.
    #[error("fragment index {index} is beyond the message's {count} fragments")]
    IndexOutOfRange {
        /// The requested index.
        index: u32,
        /// The message's fragment count.
        count: u32,
    },
}

/// Where one fragment produced by [`Fragmenter::next_frame`] sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Fragment index (0 = first).
    pub index: u32,
    /// Byte offset of the fragment's payload in the message.
    pub offset: usize,
    /// Payload bytes in this fragment.
    pub len: usize,
    /// Whether this is the last fragment.
    pub last: bool,
    /// Bytes the encoded frame occupies on the link.
    pub wire_len: usize,
}

/// Produces the frames of one message, each filling the MTU the message was started with.
///
/// Fragment sizes are a pure function of the MTU, link mode, channel, sequence number and message length, so
/// [`seek`](Self::seek) can restart at any fragment (resuming after link loss) and yields byte-identical
/// frames. A new MTU applies to the next message; to resend a partly sent message over a link with a
/// smaller MTU, start a new `Fragmenter` for it (the receiver treats a new first fragment as a restart).
#[derive(Debug, Clone)]
pub struct Fragmenter {
    kind: FrameKind,
    channel: u32,
    seq: u32,
    payload: Bytes,
    mode: LinkMode,
    mtu: Mtu,
    count: u32,
    next_index: u32,
    offset: usize,
}

impl Fragmenter {
    /// Prepares `payload` as message `seq` on `channel`, to be framed for a `mode` link of MTU `mtu`.
    pub fn new(
        kind: FrameKind,
        channel: u32,
        seq: u32,
        payload: Bytes,
        mode: LinkMode,
        mtu: Mtu,
    ) -> Result<Self, FragmentError> {
        let total = u32::try_from(payload.len()).map_err(|_| FragmentError::MessageTooLarge { len: payload.len() })?;
        let mut this = Self { kind, channel, seq, payload, mode, mtu, count: 0, next_index: 0, offset: 0 };
        this.count = this.compute_count(total)?;
        Ok(this)
    }

    /// Number of frames the message takes.
    pub fn fragment_count(&self) -> u32 {
        self.count
    }

    /// Whether every frame has been produced.
    pub fn is_done(&self) -> bool {
        self.next_index >= self.count
    }

    /// Index of the next frame [`next_frame`](Self::next_frame) will produce.
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// The message's kind.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The message's channel.
    pub fn channel(&self) -> u32 {
        self.channel
    }

    /// The message's sequence number.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The whole message payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The MTU this message is framed for.
    pub fn mtu(&self) -> Mtu {
        self.mtu
    }

    /// Bytes of payload not yet framed.
    pub fn remaining(&self) -> usize {
        self.payload.len() - self.offset
    }

    /// Appends the next frame to `out` and describes it, or returns `None` when the message is done.
    pub fn next_frame(&mut self, out: &mut BytesMut) -> Option<FragmentInfo> {
        if self.is_done() {
            return None;
        }
        let index = self.next_index;
        let total = self.payload.len();
        let len = self.capacity(index).min(total - self.offset);
        let last = index + 1 == self.count;
        let position = match NonZeroU32::new(index) {
            None => Position::First { total_len: total as u32 },
            Some(index) => Position::Continuation { index },
        };
        let header = Header { kind: self.kind, channel: self.channel, seq: self.seq, position, last };
        let before = out.len();
        frame::put_frame(&header, &self.payload[self.offset..self.offset + len], self.mode, out);
        let info = FragmentInfo { index, offset: self.offset, len, last, wire_len: out.len() - before };
        self.offset += len;
        self.next_index += 1;
        Some(info)
    }

    /// Restarts production at fragment `index` (0..=fragment_count), e.g. after the peer acknowledged
    /// fragments `0..index`.
    pub fn seek(&mut self, index: u32) -> Result<(), FragmentError> {
        if index > self.count {
            return Err(FragmentError::IndexOutOfRange { index, count: self.count });
        }
        self.offset = if index == self.count { self.payload.len() } else { self.offset_of(index) };
        self.next_index = index;
        Ok(())
    }

    /// Payload capacity of the frame with fragment index `index` (may be zero or negative as `i64`).
    fn raw_capacity(&self, index: u32) -> i64 {
        let fixed = 2 + varint::len(self.channel) + varint::len(self.seq) + self.mode.framing_overhead();
        let position = if index == 0 { 1 + varint::len(self.payload.len() as u32) } else { varint::len(index) };
        self.mtu.get() as i64 - (fixed + position) as i64
    }

    fn capacity(&self, index: u32) -> usize {
        self.raw_capacity(index).max(0) as usize
    }

    /// Payload bytes carried by the continuation fragments with indices in `[from, to)`, which must share one
    /// varint width.
    fn span(&self, from: u32, to: u32) -> u64 {
        u64::from(to - from) * self.capacity(from) as u64
    }

    /// Byte offset of fragment `index` (`index` < count).
    fn offset_of(&self, index: u32) -> usize {
        if index == 0 {
            return 0;
        }
        let mut offset = self.capacity(0) as u64;
        for (lo, hi) in WIDTH_RANGES {
            if lo >= index {
                break;
            }
            offset += self.span(lo, hi.min(index - 1) + 1);
        }
        offset as usize
    }

    fn compute_count(&self, total: u32) -> Result<u32, FragmentError> {
        let total = u64::from(total);
        let first = self.raw_capacity(0);
        if first < 1 && total > 0 || first < 0 {
            return Err(FragmentError::MtuTooSmall { mtu: self.mtu.get(), index: 0 });
        }
        let mut remaining = total.saturating_sub(first as u64);
        let mut count: u64 = 1;
        for (lo, hi) in WIDTH_RANGES {
            if remaining == 0 {
                break;
            }
            let cap = self.raw_capacity(lo);
            if cap < 1 {
                return Err(FragmentError::MtuTooSmall { mtu: self.mtu.get(), index: lo });
            }
            let cap = cap as u64;
            let in_range = u64::from(hi - lo) + 1;
            let needed = remaining.div_ceil(cap);
            if needed <= in_range {
                count += needed;
                remaining = 0;
            } else {
                count += in_range;
                remaining -= in_range * cap;
            }
        }
        // A message is at most u32::MAX bytes and every fragment carries at least one byte, so the count
        // fits in u32; the conversion cannot fail, but stay total rather than assume.
        u32::try_from(count).map_err(|_| FragmentError::MessageTooLarge { len: total as usize })
    }
}

/// Continuation fragment indices grouped by the width of their varint encoding.
const WIDTH_RANGES: [(u32, u32); 5] =
    [(1, 0x7F), (0x80, 0x3FFF), (0x4000, 0x1F_FFFF), (0x20_0000, 0x0FFF_FFFF), (0x1000_0000, u32::MAX)];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_packet;

    fn fragmenter(len: usize, mtu: usize) -> Fragmenter {
        let payload: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
        Fragmenter::new(FrameKind::Data, 1, 1, payload, LinkMode::Packet, Mtu::new(mtu).unwrap()).unwrap()
    }

    fn all_frames(f: &mut Fragmenter) -> Vec<(FragmentInfo, Bytes)> {
        let mut v = Vec::new();
        let mut out = BytesMut::new();
        while let Some(info) = f.next_frame(&mut out) {
            v.push((info, out.split().freeze()));
        }
        v
    }

    #[test]
    fn frames_fill_the_mtu_and_never_exceed_it() {
        for mtu in [23, 24, 100, 247, 672, 4096, 65535] {
            for len in [0, 1, 10, 246, 247, 1000, 40_000] {
                let mut f = fragmenter(len, mtu);
                let frames = all_frames(&mut f);
                assert_eq!(frames.len() as u32, f.fragment_count(), "mtu {mtu} len {len}");
                let mut joined = Vec::new();
                for (i, (info, wire)) in frames.iter().enumerate() {
                    assert!(wire.len() <= mtu);
                    assert_eq!(info.wire_len, wire.len());
                    assert_eq!(info.index as usize, i);
                    assert_eq!(info.offset, joined.len());
                    if !info.last {
                        assert_eq!(wire.len(), mtu, "non-final frames are full");
                    }
                    let frame = decode_packet(wire.clone()).unwrap();
                    joined.extend_from_slice(&frame.payload);
                }
                assert!(frames.last().unwrap().0.last);
                assert_eq!(&joined[..], &f.payload()[..]);
            }
        }
    }

    #[test]
    fn seek_reproduces_the_same_frames() {
        // Cross the 127 -> 128 varint width boundary of the fragment index.
        let mut f = fragmenter(300 * 240, 247);
        let frames = all_frames(&mut f);
        assert!(frames.len() > 200);
        for k in [0, 1, 2, 126, 127, 128, 129, frames.len() - 1, frames.len()] {
            f.seek(k as u32).unwrap();
            let again = all_frames(&mut f);
            assert_eq!(again.len(), frames.len() - k);
            for (a, b) in again.iter().zip(&frames[k..]) {
                assert_eq!(a, b);
            }
        }
        assert_eq!(
            f.seek(frames.len() as u32 + 1),
            Err(FragmentError::IndexOutOfRange { index: frames.len() as u32 + 1, count: frames.len() as u32 })
        );
    }

    #[test]
    fn tiny_mtu_with_huge_numbers_is_a_typed_error() {
        let r = Fragmenter::new(
            FrameKind::Data,
            u32::MAX,
            u32::MAX,
            // A 2 MiB message needs a 4-byte total length: 2 + 5 + 5 + 1 + 4 + 6 = 23 bytes of overhead.
            Bytes::from(vec![1; 1 << 21]),
            LinkMode::Stream,
            Mtu::MIN,
        );
        assert!(matches!(r, Err(FragmentError::MtuTooSmall { .. })));
    }

    #[test]
    fn count_matches_for_large_messages() {
        // 1 GiB at MTU 247 crosses three varint widths; count is computed without framing it.
        let len = 1usize << 30;
        let payload = Bytes::from(vec![0u8; len]);
        let f = Fragmenter::new(FrameKind::Data, 0, 0, payload, LinkMode::Packet, Mtu::new(247).unwrap()).unwrap();
        let mut f2 = f.clone();
        let last = f.fragment_count() - 1;
        f2.seek(last).unwrap();
        let mut out = BytesMut::new();
        let info = f2.next_frame(&mut out).unwrap();
        assert!(info.last);
        assert_eq!(info.offset + info.len, len);
        assert!(info.len >= 1);
    }
}
