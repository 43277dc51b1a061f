//! The media payloads sessions carry (docs/media.md §Wire): one image per message on the image lane, and
//! stream signalling plus one encoded video frame per message on the stream-media lane.
//!
//! The engine delivers each payload whole, once and in order per lane, so these formats need no sequence
//! numbers or checksums of their own. Every decoder here takes untrusted bytes and answers a typed
//! [`WireError`]; nothing panics and nothing allocates beyond the payload it was given.

use bytes::{BufMut, Bytes, BytesMut};
use colink_media::PixelFormat;

use crate::api::{FlipOptions, Rotation};

use colink_proto::MAX_STRING_LEN;

/// The media wire version these codecs speak (the first byte of every media payload).
pub const MEDIA_VERSION: u8 = 1;

/// Why a media payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The payload is shorter than its fixed fields.
    #[error("media payload truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the fields need.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The first byte names a media version this side does not speak.
    #[error("unsupported media wire version {0}")]
    Version(u8),
    /// An unknown stream message type.
    #[error("unknown stream message type {0}")]
    UnknownType(u8),
    /// A stream name that is not UTF-8 or is too long.
    #[error("bad stream name: {0}")]
    BadName(&'static str),
    /// An image header names an unknown pixel format or a zero dimension.
    #[error("bad image header: {0}")]
    BadImage(&'static str),
    /// A frame's transform byte names a reserved flip.
    #[error("reserved flip value {0} in a frame's transform")]
    BadTransform(u8),
    /// Bytes left over after a fixed-size message.
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
}

/// A picture transform carried with each frame: the source surface's rotation and flip (the API's types; the
/// wire's clockwise quarter turns and flip code are translated here), which the receiver applies after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WireTransform {
    /// The rotation (clockwise quarter turns on the wire: 0 = none, 1 = 90°, 2 = 180°, 3 = 270°).
    pub rotation: Rotation,
    /// The flip (on the wire: 0 = none, 1 = horizontal, 2 = vertical; 3 is reserved and does not decode).
    pub flip: Option<FlipOptions>,
}

impl WireTransform {
    fn to_byte(self) -> u8 {
        let quarter_turns = match self.rotation {
            Rotation::None => 0,
            Rotation::Deg90 => 1,
            Rotation::Deg180 => 2,
            Rotation::Deg270 => 3,
        };
        let flip = match self.flip {
            None => 0,
            Some(FlipOptions::Horizontal) => 1,
            Some(FlipOptions::Vertical) => 2,
        };
        quarter_turns | (flip << 2)
    }

    fn from_byte(b: u8) -> Result<Self, WireError> {
        let rotation = match b & 3 {
            0 => Rotation::None,
            1 => Rotation::Deg90,
            2 => Rotation::Deg180,
            _ => Rotation::Deg270,
        };
        let flip = match (b >> 2) & 3 {
            0 => None,
            1 => Some(FlipOptions::Horizontal),
            2 => Some(FlipOptions::Vertical),
            reserved => return Err(WireError::BadTransform(reserved)),
        };
        Ok(Self { rotation, flip })
    }
}

/// One message on a session's stream-media lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// Sink → source: the sink stream `name` started; the source may start sending.
    SinkStarted {
        /// The stream's name (streams pair by name).
        name: String,
    },
    /// Sink → source: the sink stream `name` stopped or was destroyed; the source must stop sending.
    SinkStopped {
        /// The stream's name.
        name: String,
    },
    /// Source → sink: the source stream `name` stopped or was destroyed; no frames follow.
    SourceStopped {
        /// The stream's name.
        name: String,
    },
    /// Sink → source: send a key frame next (the sink dropped frames or its decoder failed).
    KeyFrameRequest {
        /// The stream's name.
        name: String,
    },
    /// Source → sink: one encoded video frame (an H.264 Annex B access unit).
    Frame(VideoFrameHeader, Bytes),
}

/// The fixed fields of a [`StreamMessage::Frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFrameHeader {
    /// The source's frame number: it counts every frame the application pushed, so a gap is the number of
    /// frames the source dropped.
    pub seq: u32,
    /// The application's timestamp of the frame, in microseconds.
    pub timestamp_us: u64,
    /// Whether the frame is a key frame (decodable without earlier frames).
    pub key: bool,
    /// Whether the picture's YUV uses the BT.709 matrix (else BT.601), both limited range.
    pub bt709: bool,
    /// The source surface's transform at the time of the frame.
    pub transform: WireTransform,
}

const T_SINK_STARTED: u8 = 1;
const T_SINK_STOPPED: u8 = 2;
const T_SOURCE_STOPPED: u8 = 3;
const T_KEY_FRAME_REQUEST: u8 = 4;
const T_FRAME: u8 = 5;
/// version, type, seq (4), timestamp (8), flags, transform.
const FRAME_HEADER_LEN: usize = 2 + 4 + 8 + 1 + 1;

impl StreamMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Bytes {
        match self {
            Self::SinkStarted { name } => named(T_SINK_STARTED, name),
            Self::SinkStopped { name } => named(T_SINK_STOPPED, name),
            Self::SourceStopped { name } => named(T_SOURCE_STOPPED, name),
            Self::KeyFrameRequest { name } => named(T_KEY_FRAME_REQUEST, name),
            Self::Frame(h, data) => {
                let mut b = BytesMut::with_capacity(FRAME_HEADER_LEN + data.len());
                b.put_u8(MEDIA_VERSION);
                b.put_u8(T_FRAME);
                b.put_u32(h.seq);
                b.put_u64(h.timestamp_us);
                b.put_u8(u8::from(h.key) | (u8::from(h.bt709) << 1));
                b.put_u8(h.transform.to_byte());
                b.extend_from_slice(data);
                b.freeze()
            }
        }
    }

    /// Decodes one stream-media payload. A frame's data is a zero-copy slice of `payload`.
    pub fn decode(payload: &Bytes) -> Result<Self, WireError> {
        need(payload, 2)?;
        if payload[0] != MEDIA_VERSION {
            return Err(WireError::Version(payload[0]));
        }
        let name = || -> Result<String, WireError> {
            need(payload, 4)?;
            let len = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
            if len > MAX_STRING_LEN {
                return Err(WireError::BadName("longer than 1023 bytes"));
            }
            need(payload, 4 + len)?;
            if payload.len() > 4 + len {
                return Err(WireError::Trailing(payload.len() - 4 - len));
            }
            std::str::from_utf8(&payload[4..4 + len]).map(str::to_owned).map_err(|_| WireError::BadName("not UTF-8"))
        };
        Ok(match payload[1] {
            T_SINK_STARTED => Self::SinkStarted { name: name()? },
            T_SINK_STOPPED => Self::SinkStopped { name: name()? },
            T_SOURCE_STOPPED => Self::SourceStopped { name: name()? },
            T_KEY_FRAME_REQUEST => Self::KeyFrameRequest { name: name()? },
            T_FRAME => {
                need(payload, FRAME_HEADER_LEN)?;
                let p = &payload[..];
                let header = VideoFrameHeader {
                    seq: u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                    timestamp_us: u64::from_be_bytes([p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13]]),
                    key: p[14] & 1 == 1,
                    bt709: p[14] & 2 == 2,
                    transform: WireTransform::from_byte(p[15])?,
                };
                Self::Frame(header, payload.slice(FRAME_HEADER_LEN..))
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

fn named(kind: u8, name: &str) -> Bytes {
    // Names are validated (< 1024 bytes) before they reach the wire; clip defensively at a char boundary.
    let mut end = name.len().min(MAX_STRING_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    let mut b = BytesMut::with_capacity(4 + name.len());
    b.put_u8(MEDIA_VERSION);
    b.put_u8(kind);
    b.put_u16(name.len() as u16);
    b.extend_from_slice(name.as_bytes());
    b.freeze()
}

fn need(p: &[u8], n: usize) -> Result<(), WireError> {
    if p.len() < n { Err(WireError::Truncated { need: n, have: p.len() }) } else { Ok(()) }
}

/// The header of an image-lane payload; the JPEG follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// The sender's pixel format, so the receiver hands back the same layout (a code on the wire, see
    /// `docs/media.md`; an unknown code does not decode).
    pub format: PixelFormat,
    /// The image's width in pixels (the JPEG's must match).
    pub width: u32,
    /// The image's height in pixels (the JPEG's must match).
    pub height: u32,
}

/// version, format, width (4), height (4).
const IMAGE_HEADER_LEN: usize = 2 + 4 + 4;

impl ImageHeader {
    /// The header followed by `jpeg`; an error for a pixel format that has no wire code.
    pub fn encode(&self, jpeg: &[u8]) -> Result<Bytes, WireError> {
        let format = format_code(self.format).ok_or(WireError::BadImage("pixel format without a wire code"))?;
        let mut b = BytesMut::with_capacity(IMAGE_HEADER_LEN + jpeg.len());
        b.put_u8(MEDIA_VERSION);
        b.put_u8(format);
        b.put_u32(self.width);
        b.put_u32(self.height);
        b.extend_from_slice(jpeg);
        Ok(b.freeze())
    }

    /// Splits an image payload into its header and the JPEG bytes (a zero-copy slice).
    pub fn decode(payload: &Bytes) -> Result<(Self, Bytes), WireError> {
        need(payload, IMAGE_HEADER_LEN)?;
        let p = &payload[..];
        if p[0] != MEDIA_VERSION {
            return Err(WireError::Version(p[0]));
        }
        let format = format_from_code(p[1]).ok_or(WireError::BadImage("unknown pixel format"))?;
        let header = Self {
            format,
            width: u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            height: u32::from_be_bytes([p[6], p[7], p[8], p[9]]),
        };
        if header.width == 0 || header.height == 0 {
            return Err(WireError::BadImage("zero width or height"));
        }
        Ok((header, payload.slice(IMAGE_HEADER_LEN..)))
    }
}

/// Pixel format codes on the wire (docs/media.md §3.2).
fn format_code(f: PixelFormat) -> Option<u8> {
    Some(match f {
        PixelFormat::Rgba8888 => 0,
        PixelFormat::Bgra8888 => 1,
        PixelFormat::Rgb888 => 2,
        PixelFormat::Nv21 => 3,
        PixelFormat::Nv12 => 4,
        PixelFormat::I420 => 5,
        _ => return None,
    })
}

/// The pixel format of a wire code; `None` for a reserved one.
fn format_from_code(c: u8) -> Option<PixelFormat> {
    Some(match c {
        0 => PixelFormat::Rgba8888,
        1 => PixelFormat::Bgra8888,
        2 => PixelFormat::Rgb888,
        3 => PixelFormat::Nv21,
        4 => PixelFormat::Nv12,
        5 => PixelFormat::I420,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_stream_message_round_trips() {
        let frame = VideoFrameHeader {
            seq: 7,
            timestamp_us: 1_234_567,
            key: true,
            bt709: true,
            transform: WireTransform { rotation: Rotation::Deg270, flip: Some(FlipOptions::Vertical) },
        };
        for m in [
            StreamMessage::SinkStarted { name: "cam".into() },
            StreamMessage::SinkStopped { name: "".into() },
            StreamMessage::SourceStopped { name: "ü".repeat(300) },
            StreamMessage::KeyFrameRequest { name: "screen".into() },
            StreamMessage::Frame(frame, Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3])),
        ] {
            assert_eq!(StreamMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn bad_stream_payloads_are_typed_errors() {
        assert_eq!(StreamMessage::decode(&Bytes::new()), Err(WireError::Truncated { need: 2, have: 0 }));
        assert_eq!(StreamMessage::decode(&Bytes::from_static(&[2, 1])), Err(WireError::Version(2)));
        assert_eq!(StreamMessage::decode(&Bytes::from_static(&[1, 9])), Err(WireError::UnknownType(9)));
        assert_eq!(
            StreamMessage::decode(&Bytes::from_static(&[1, 1, 0, 3, b'a'])),
            Err(WireError::Truncated { need: 7, have: 5 })
        );
        assert_eq!(StreamMessage::decode(&Bytes::from_static(&[1, 1, 0, 1, b'a', 0])), Err(WireError::Trailing(1)));
        assert_eq!(
            StreamMessage::decode(&Bytes::from_static(&[1, 1, 0, 1, 0xff])),
            Err(WireError::BadName("not UTF-8"))
        );
        let mut long = vec![1, 1, 0x04, 0x00];
        long.extend(std::iter::repeat_n(b'a', 1024));
        assert_eq!(StreamMessage::decode(&Bytes::from(long)), Err(WireError::BadName("longer than 1023 bytes")));
        assert!(matches!(StreamMessage::decode(&Bytes::from_static(&[1, 5, 0])), Err(WireError::Truncated { .. })));
    }

    #[test]
    fn image_header_round_trips_and_rejects_zero_sizes() {
        let h = ImageHeader { format: PixelFormat::Rgb888, width: 4000, height: 3000 };
        let (back, jpeg) = ImageHeader::decode(&h.encode(b"\xff\xd8jpeg").unwrap()).unwrap();
        assert_eq!((back, &jpeg[..]), (h, &b"\xff\xd8jpeg"[..]));
        let zero = ImageHeader { format: PixelFormat::Rgba8888, width: 0, height: 1 }.encode(b"").unwrap();
        assert_eq!(ImageHeader::decode(&zero), Err(WireError::BadImage("zero width or height")));
        assert_eq!(
            ImageHeader::decode(&Bytes::from_static(&[1, 0, 0])),
            Err(WireError::Truncated { need: 10, have: 3 })
        );
    }

    #[test]
    fn every_pixel_format_has_a_code_and_reserved_codes_do_not_decode() {
        for f in PixelFormat::ALL {
            let h = ImageHeader { format: f, width: 2, height: 2 };
            assert_eq!(ImageHeader::decode(&h.encode(b"").unwrap()).unwrap().0, h);
        }
        for code in [6u8, 7, 255] {
            let p = Bytes::from(vec![1, code, 0, 0, 0, 1, 0, 0, 0, 1]);
            assert_eq!(ImageHeader::decode(&p), Err(WireError::BadImage("unknown pixel format")));
        }
    }

    #[test]
    fn a_reserved_flip_does_not_decode() {
        let frame =
            VideoFrameHeader { seq: 1, timestamp_us: 0, key: true, bt709: false, transform: WireTransform::default() };
        let mut bytes = StreamMessage::Frame(frame, Bytes::new()).encode().to_vec();
        bytes[15] = 3 << 2;
        assert_eq!(StreamMessage::decode(&Bytes::from(bytes)), Err(WireError::BadTransform(3)));
        // Reserved high bits are ignored.
        assert_eq!(WireTransform::from_byte(0xF1), Ok(WireTransform { rotation: Rotation::Deg90, flip: None }));
    }
    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = Bytes::from(bytes);
            let _ = StreamMessage::decode(&b);
            let _ = ImageHeader::decode(&b);
        }

        #[test]
        fn frames_round_trip(seq: u32, ts: u64, key: bool, bt709: bool, q in 0u8..4, flip in 0u8..3,
                             data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let transform = WireTransform::from_byte(q | (flip << 2)).unwrap();
            let h = VideoFrameHeader { seq, timestamp_us: ts, key, bt709, transform };
            let m = StreamMessage::Frame(h, Bytes::from(data));
            prop_assert_eq!(StreamMessage::decode(&m.encode()), Ok(m));
        }
    }
}
