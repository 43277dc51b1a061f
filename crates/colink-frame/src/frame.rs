//! The frame: header fields, kinds, and the packet-mode encoding (one frame per SDU).
//!
//! ```text
//! byte 0      version (high 4 bits, = 1) | kind (low 4 bits)
//! byte 1      flags: bit 0 LAST, bits 1-7 reserved (must be 0)
//! varint      channel
//! varint      message sequence number
//! varint      fragment index (0 = first fragment)
//! varint      total message length            (only when the fragment index is 0)
//! ...         payload
//! u32 BE      CRC-32C of every byte before it
//! ```
//! docs/protocol.md is the normative description.

use bytes::{BufMut, Bytes, BytesMut};
use std::num::NonZeroU32;

use crate::checksum::crc32c;
use crate::varint::{self, VarintError};

/// The wire-protocol version this crate speaks, carried in every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the CRC-32C trailer.
pub const CRC_LEN: usize = 4;

/// Bytes of the length prefix in stream mode.
pub const STREAM_PREFIX_LEN: usize = 2;

/// The smallest possible encoded frame (packet mode): version/kind, flags, three one-byte varints, CRC.
pub const MIN_FRAME_LEN: usize = 2 + 3 + CRC_LEN;

const FLAG_LAST: u8 = 0x01;

/// What a frame carries. The numeric value is the low nibble of the frame's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum FrameKind {
    /// Link and session control (handshake, connect, accept, disconnect, resume, ...).
    Control = 0,
    /// A text message (`send_message`).
    Message = 1,
    /// Bulk data (`send_data`).
    Data = 2,
    /// An encoded image (`send_image`).
    Image = 3,
    /// Live media stream units.
    StreamMedia = 4,
    /// Delivery acknowledgements.
    Ack = 5,
    /// Keep-alive probes and answers.
    KeepAlive = 6,
    /// A file transfer's offers, chunks and answers (session protocol version 4).
    File = 7,
}

impl FrameKind {
    /// Every kind, in numeric order.
    pub const ALL: [Self; 8] = [
        Self::Control,
        Self::Message,
        Self::Data,
        Self::Image,
        Self::StreamMedia,
        Self::Ack,
        Self::KeepAlive,
        Self::File,
    ];

    /// The kind with numeric value `v`, if any.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Control,
            1 => Self::Message,
            2 => Self::Data,
            3 => Self::Image,
            4 => Self::StreamMedia,
            5 => Self::Ack,
            6 => Self::KeepAlive,
            7 => Self::File,
            _ => return None,
        })
    }

    /// Dense index for per-kind tables (equal to the numeric value).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// The largest frame a link carries: the L2CAP SDU size in packet mode, the largest frame (length prefix
/// included) in stream mode. Always within 23..=65535, the range L2CAP allows.
///
/// `colink_ble::Mtu` is the same range for the radio's link: the two crates stay independent of each other
/// (framing knows no radio, the radio knows no frames), and `colink`'s driver converts at the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtu(u16);

impl Mtu {
    /// The smallest MTU Bluetooth LE allows.
    pub const MIN: Self = Self(23);
    /// The largest MTU L2CAP allows.
    pub const MAX: Self = Self(u16::MAX);

    /// An MTU of `n` bytes, or `None` outside 23..=65535.
    pub const fn new(n: usize) -> Option<Self> {
        if n >= 23 && n <= u16::MAX as usize { Some(Self(n as u16)) } else { None }
    }

    /// The MTU in bytes.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// How frames travel on a link.
///
/// `colink_ble::LinkMode` names the same two kinds of link for the radio; the crates stay independent of each
/// other and `colink`'s driver converts at the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkMode {
    /// One frame per SDU (L2CAP CoC SeqPacket): the SDU delimits the frame.
    Packet,
    /// A byte stream (RFCOMM): each frame is preceded by a 2-byte length, which the CRC also covers.
    Stream,
}

impl LinkMode {
    /// Bytes a frame needs in this mode beyond header and payload.
    pub const fn framing_overhead(self) -> usize {
        match self {
            Self::Packet => CRC_LEN,
            Self::Stream => CRC_LEN + STREAM_PREFIX_LEN,
        }
    }
}

/// Where a fragment sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// The first fragment (index 0); it announces the whole message's length.
    First {
        /// Length of the whole message payload in bytes.
        total_len: u32,
    },
    /// A later fragment.
    Continuation {
        /// The fragment's index within the message (1, 2, ...).
        index: NonZeroU32,
    },
}

impl Position {
    /// The fragment index (0 for the first fragment).
    pub const fn index(self) -> u32 {
        match self {
            Self::First { .. } => 0,
            Self::Continuation { index } => index.get(),
        }
    }
}

/// The decoded header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The channel (for colink: a session's channel) the message belongs to.
    pub channel: u32,
    /// The message's sequence number on its channel.
    pub seq: u32,
    /// Which fragment of the message this is.
    pub position: Position,
    /// Whether this is the message's last fragment.
    pub last: bool,
}

impl Header {
    /// The header of a message that fits one frame.
    pub const fn single(kind: FrameKind, channel: u32, seq: u32, len: u32) -> Self {
        Self { kind, channel, seq, position: Position::First { total_len: len }, last: true }
    }

    /// Encoded length of this header in bytes (without payload, CRC or stream prefix).
    pub const fn encoded_len(&self) -> usize {
        2 + varint::len(self.channel)
            + varint::len(self.seq)
            + match self.position {
                Position::First { total_len } => 1 + varint::len(total_len),
                Position::Continuation { index } => varint::len(index.get()),
            }
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_u8((PROTOCOL_VERSION << 4) | self.kind as u8);
        out.put_u8(if self.last { FLAG_LAST } else { 0 });
        varint::put(out, self.channel);
        varint::put(out, self.seq);
        match self.position {
            Position::First { total_len } => {
                varint::put(out, 0);
                varint::put(out, total_len);
            }
            Position::Continuation { index } => varint::put(out, index.get()),
        }
    }
}

/// One decoded frame: its header and its payload (a zero-copy slice of the received buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The payload bytes of this fragment.
    pub payload: Bytes,
}

impl Frame {
    /// A whole message in one frame. Fails if `payload` is longer than `u32::MAX`.
    pub fn single(kind: FrameKind, channel: u32, seq: u32, payload: Bytes) -> Result<Self, FrameError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| FrameError::TooLarge { len: payload.len(), max: u32::MAX as usize })?;
        Ok(Self { header: Header::single(kind, channel, seq, len), payload })
    }

    /// Bytes this frame occupies on a link in `mode`.
    pub fn encoded_len(&self, mode: LinkMode) -> usize {
        self.header.encoded_len() + self.payload.len() + mode.framing_overhead()
    }

    /// Appends the encoded frame to `out`.
    ///
    /// In stream mode the frame must fit the 16-bit length prefix ([`FrameError::TooLarge`] otherwise);
    /// in packet mode the caller keeps frames within the link MTU (the [`Fragmenter`](crate::Fragmenter)
    /// does).
    pub fn encode(&self, mode: LinkMode, out: &mut BytesMut) -> Result<(), FrameError> {
        encode_parts(&self.header, &self.payload, mode, out)
    }
}

/// Why bytes received from a peer are not a valid frame. In packet mode an error concerns one SDU; in stream
/// mode every error is fatal for the link (the byte stream can no longer be delimited with confidence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is shorter than its header says, or shorter than the smallest frame.
    #[error("frame truncated: {len} bytes")]
    Truncated {
        /// Length of the frame as received.
        len: usize,
    },
    /// The CRC-32C trailer does not match the frame's bytes: the frame was corrupted.
    #[error("frame checksum mismatch: computed {computed:#010x}, frame carries {carried:#010x}")]
    BadChecksum {
        /// CRC computed over the received bytes.
        computed: u32,
        /// CRC carried in the frame.
        carried: u32,
    },
    /// The frame is of a protocol version this implementation does not speak.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The frame's kind is not one this version defines.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Reserved flag bits are set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// A header integer is malformed (over 32 bits, non-minimal) or runs past the frame.
    #[error("malformed {field} field")]
    BadVarint {
        /// Which header field.
        field: &'static str,
    },
    /// A frame larger than allowed (stream mode: the configured maximum; any mode: 65535 on the wire, or a
    /// message longer than `u32::MAX`).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced or actual length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A single-fragment message whose payload length differs from its announced total, or a first fragment
    /// that is not the last yet already carries the whole announced length.
    #[error("fragment length {payload} is inconsistent with the announced message length {total}")]
    LengthMismatch {
        /// Payload bytes in this fragment.
        payload: usize,
        /// Announced message length.
        total: u32,
    },
    /// A fragment that is not the last carries no payload (which would let a peer send endless fragments).
    #[error("empty non-final fragment")]
    EmptyFragment,
}

pub(crate) fn encode_parts(
    header: &Header,
    payload: &[u8],
    mode: LinkMode,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let body_len = header.encoded_len() + payload.len() + CRC_LEN;
    if mode == LinkMode::Stream && body_len > u16::MAX as usize {
        return Err(FrameError::TooLarge {
            len: body_len + STREAM_PREFIX_LEN,
            max: STREAM_PREFIX_LEN + u16::MAX as usize,
        });
    }
    put_frame(header, payload, mode, out);
    Ok(())
}

/// Appends one encoded frame. In stream mode the caller guarantees that header, payload and CRC fit the
/// 16-bit length prefix (every caller derives the sizes from an [`Mtu`], which is at most 65535).
pub(crate) fn put_frame(header: &Header, payload: &[u8], mode: LinkMode, out: &mut BytesMut) {
    let body_len = header.encoded_len() + payload.len() + CRC_LEN;
    let start = out.len();
    match mode {
        LinkMode::Packet => out.reserve(body_len),
        LinkMode::Stream => {
            debug_assert!(body_len <= u16::MAX as usize);
            out.reserve(STREAM_PREFIX_LEN + body_len);
            out.put_u16(body_len as u16);
        }
    }
    header.put(out);
    out.extend_from_slice(payload);
    let crc = crc32c(&out[start..]);
    out.put_u32(crc);
}

/// Decodes one packet-mode frame (one whole SDU). The payload is a zero-copy slice of `sdu`.
pub fn decode_packet(sdu: Bytes) -> Result<Frame, FrameError> {
    decode_body(sdu, 0)
}

/// Decodes the frame in `buf`, whose header starts at `header_start`; the CRC covers every byte of `buf`
/// before the trailer (in stream mode that includes the length prefix).
pub(crate) fn decode_body(buf: Bytes, header_start: usize) -> Result<Frame, FrameError> {
    let len = buf.len();
    if len < header_start + MIN_FRAME_LEN {
        return Err(FrameError::Truncated { len });
    }
    let crc_at = len - CRC_LEN;
    let carried = u32::from_be_bytes([buf[crc_at], buf[crc_at + 1], buf[crc_at + 2], buf[crc_at + 3]]);
    let computed = crc32c(&buf[..crc_at]);
    if computed != carried {
        return Err(FrameError::BadChecksum { computed, carried });
    }
    let head = &buf[header_start..crc_at];
    let version = head[0] >> 4;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = FrameKind::from_u8(head[0] & 0x0F).ok_or(FrameError::UnknownKind(head[0] & 0x0F))?;
    let flags = head[1];
    if flags & !FLAG_LAST != 0 {
        return Err(FrameError::ReservedFlags(flags & !FLAG_LAST));
    }
    let last = flags & FLAG_LAST != 0;
    let mut pos = 2;
    let field = |field: &'static str| move |_: VarintError| FrameError::BadVarint { field };
    let channel = varint::get(head, &mut pos).map_err(field("channel"))?;
    let seq = varint::get(head, &mut pos).map_err(field("sequence"))?;
    let index = varint::get(head, &mut pos).map_err(field("fragment index"))?;
    let position = match NonZeroU32::new(index) {
        Some(index) => Position::Continuation { index },
        None => Position::First { total_len: varint::get(head, &mut pos).map_err(field("total length"))? },
    };
    let payload = buf.slice(header_start + pos..crc_at);
    match position {
        Position::First { total_len } if last && payload.len() != total_len as usize => {
            return Err(FrameError::LengthMismatch { payload: payload.len(), total: total_len });
        }
        Position::First { total_len } if !last && payload.len() >= total_len as usize => {
            return Err(FrameError::LengthMismatch { payload: payload.len(), total: total_len });
        }
        _ => {}
    }
    if !last && payload.is_empty() {
        return Err(FrameError::EmptyFragment);
    }
    Ok(Frame { header: Header { kind, channel, seq, position, last }, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(frame: &Frame) -> Bytes {
        let mut out = BytesMut::new();
        frame.encode(LinkMode::Packet, &mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn single_frame_round_trip() {
        let f = Frame::single(FrameKind::Message, 3, 42, Bytes::from_static(b"hello")).unwrap();
        let wire = packet(&f);
        assert_eq!(wire.len(), f.encoded_len(LinkMode::Packet));
        assert_eq!(wire[0], 0x11, "version 1, kind message");
        assert_eq!(decode_packet(wire).unwrap(), f);
    }

    #[test]
    fn worked_example_of_the_protocol_document() {
        let f = Frame::single(FrameKind::Data, 1, 0, Bytes::from_static(b"hi")).unwrap();
        assert_eq!(&packet(&f)[..], &[0x12, 0x01, 0x01, 0x00, 0x00, 0x02, 0x68, 0x69, 0x56, 0x86, 0xFA, 0xBC]);
        let mut out = BytesMut::new();
        f.encode(LinkMode::Stream, &mut out).unwrap();
        assert_eq!(&out[..], &[0x00, 0x0C, 0x12, 0x01, 0x01, 0x00, 0x00, 0x02, 0x68, 0x69, 0x5F, 0xCF, 0x88, 0xF9]);
    }

    #[test]
    fn typical_data_fragment_overhead_is_at_most_12_bytes() {
        // The 300 000th fragment of the 10 000th message on channel 5.
        let h = Header {
            kind: FrameKind::Data,
            channel: 5,
            seq: 10_000,
            position: Position::Continuation { index: NonZeroU32::new(300_000).unwrap() },
            last: false,
        };
        assert!(h.encoded_len() + CRC_LEN <= 12, "{}", h.encoded_len());
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in FrameKind::ALL {
            let f = Frame::single(kind, 0, 0, Bytes::new()).unwrap();
            assert_eq!(decode_packet(packet(&f)).unwrap().header.kind, kind);
            assert_eq!(FrameKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(FrameKind::from_u8(8), None);
    }

    /// Re-encodes `wire` with a fixed CRC so that header checks (not the CRC) are exercised.
    fn with_valid_crc(mut raw: Vec<u8>) -> Bytes {
        let n = raw.len() - CRC_LEN;
        let crc = crc32c(&raw[..n]);
        raw[n..].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(raw)
    }

    #[test]
    fn header_errors_are_typed() {
        let f = Frame::single(FrameKind::Data, 1, 1, Bytes::from_static(b"abc")).unwrap();
        let wire = packet(&f).to_vec();

        let mut v = wire.clone();
        v[0] = 0x21;
        assert_eq!(decode_packet(with_valid_crc(v)), Err(FrameError::UnsupportedVersion(2)));

        let mut v = wire.clone();
        v[0] = 0x1F;
        assert_eq!(decode_packet(with_valid_crc(v)), Err(FrameError::UnknownKind(15)));

        let mut v = wire.clone();
        v[1] |= 0x80;
        assert_eq!(decode_packet(with_valid_crc(v)), Err(FrameError::ReservedFlags(0x80)));

        let mut v = wire.clone();
        v[5] = 9; // total length 9, payload 3
        assert_eq!(decode_packet(with_valid_crc(v)), Err(FrameError::LengthMismatch { payload: 3, total: 9 }));

        let mut v = wire;
        v[3] = 0x80; // sequence varint continues into the index byte and beyond
        v[4] = 0x80;
        v[5] = 0x80;
        v[6] = 0x80;
        v[7] = 0x80;
        assert!(matches!(decode_packet(with_valid_crc(v)), Err(FrameError::BadVarint { .. })));

        assert_eq!(decode_packet(Bytes::from_static(&[0x11, 1, 0])), Err(FrameError::Truncated { len: 3 }));
    }

    #[test]
    fn empty_non_final_fragment_is_rejected() {
        let h = Header {
            kind: FrameKind::Data,
            channel: 0,
            seq: 0,
            position: Position::Continuation { index: NonZeroU32::MIN },
            last: false,
        };
        let mut out = BytesMut::new();
        encode_parts(&h, &[], LinkMode::Packet, &mut out).unwrap();
        assert_eq!(decode_packet(out.freeze()), Err(FrameError::EmptyFragment));
    }

    #[test]
    fn mtu_bounds() {
        assert_eq!(Mtu::new(22), None);
        assert_eq!(Mtu::new(23), Some(Mtu::MIN));
        assert_eq!(Mtu::new(65535), Some(Mtu::MAX));
        assert_eq!(Mtu::new(65536), None);
    }
}
