//! Stream mode: frames delimited in a byte stream (RFCOMM), following tokio-util's `Decoder` contract.
//!
//! Each frame is `u16 BE length ‖ header ‖ payload ‖ CRC-32C`, where the length counts the bytes after the
//! prefix and the CRC covers the prefix too, so a corrupted length is detected like any other byte.

use bytes::{Buf, BytesMut};

use crate::frame::{self, Frame, FrameError, LinkMode, MIN_FRAME_LEN, STREAM_PREFIX_LEN};

/// Encoder and decoder of stream-mode frames.
///
/// [`decode`](Self::decode) returns `Ok(None)` when `src` does not yet hold a whole frame (read more bytes
/// and call again), `Ok(Some(frame))` for each frame, and `Err` when the stream is corrupt: every error is
/// fatal for the link, because frame boundaries can no longer be trusted.
#[derive(Debug, Clone)]
pub struct StreamCodec {
    max_frame_len: usize,
}

impl StreamCodec {
    /// A codec accepting frames of up to `max_frame_len` bytes, length prefix included (at most 65537,
    /// the largest the 16-bit prefix can describe).
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len: max_frame_len.min(STREAM_PREFIX_LEN + u16::MAX as usize) }
    }

    /// The largest frame accepted, length prefix included.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes the next whole frame off the front of `src`, if there is one.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < STREAM_PREFIX_LEN {
            return Ok(None);
        }
        let body_len = usize::from(u16::from_be_bytes([src[0], src[1]]));
        let frame_len = STREAM_PREFIX_LEN + body_len;
        if frame_len > self.max_frame_len {
            return Err(FrameError::TooLarge { len: frame_len, max: self.max_frame_len });
        }
        if body_len < MIN_FRAME_LEN {
            return Err(FrameError::Truncated { len: body_len });
        }
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let wire = src.split_to(frame_len).freeze();
        frame::decode_body(wire, STREAM_PREFIX_LEN).map(Some)
    }

    /// Like [`decode`](Self::decode), at the end of the stream: leftover bytes that do not form a whole frame
    /// are an error ([`FrameError::Truncated`]).
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let len = src.len();
                src.advance(len);
                Err(FrameError::Truncated { len })
            }
        }
    }

    /// Appends `frame` to `dst`, checking it against this codec's maximum frame length.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.encoded_len(LinkMode::Stream);
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge { len, max: self.max_frame_len });
        }
        frame.encode(LinkMode::Stream, dst)
    }
}

impl Default for StreamCodec {
    /// Accepts any frame the 16-bit length prefix can describe.
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

#[cfg(feature = "tokio-util")]
mod tokio_codec {
    use super::StreamCodec;
    use crate::{Frame, FrameError};
    use bytes::BytesMut;

    /// Errors of the tokio-util codec adapter: a frame error, or an I/O error from the transport.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum CodecError {
        /// The stream carried an invalid frame.
        #[error(transparent)]
        Frame(#[from] FrameError),
        /// The underlying transport failed.
        #[error(transparent)]
        Io(#[from] std::io::Error),
    }

    impl tokio_util::codec::Decoder for StreamCodec {
        type Item = Frame;
        type Error = CodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(Self::decode(self, src)?)
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
            Ok(Self::decode_eof(self, src)?)
        }
    }

    impl tokio_util::codec::Encoder<&Frame> for StreamCodec {
        type Error = CodecError;

        fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
            Ok(Self::encode(self, frame, dst)?)
        }
    }
}

#[cfg(feature = "tokio-util")]
pub use tokio_codec::CodecError;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameKind;
    use bytes::Bytes;

    fn frame(seq: u32, payload: &'static [u8]) -> Frame {
        Frame::single(FrameKind::Message, 7, seq, Bytes::from_static(payload)).unwrap()
    }

    #[test]
    fn need_more_bytes_then_frame() {
        let mut codec = StreamCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(&frame(1, b"first"), &mut wire).unwrap();
        codec.encode(&frame(2, b"second"), &mut wire).unwrap();
        let all = wire.clone();
        // Feed one byte at a time: exactly two frames come out, in order.
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for b in all.iter() {
            src.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![frame(1, b"first"), frame(2, b"second")]);
        assert!(src.is_empty());
    }

    #[test]
    fn corrupted_length_prefix_is_detected() {
        let mut codec = StreamCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(&frame(1, b"payload"), &mut wire).unwrap();
        let mut bad = wire.clone();
        bad[1] -= 1; // one byte shorter: the CRC is now read from the wrong place
        assert!(matches!(codec.decode(&mut bad), Err(FrameError::BadChecksum { .. })));
    }

    #[test]
    fn oversized_and_undersized_lengths_fail_before_buffering() {
        let mut codec = StreamCodec::new(64);
        let mut src = BytesMut::from(&[0x01, 0x00][..]);
        assert_eq!(codec.decode(&mut src), Err(FrameError::TooLarge { len: 258, max: 64 }));
        let mut src = BytesMut::from(&[0x00, 0x03, 1, 2, 3][..]);
        assert_eq!(codec.decode(&mut src), Err(FrameError::Truncated { len: 3 }));
    }

    #[test]
    fn encode_respects_the_limit() {
        let mut codec = StreamCodec::new(20);
        let mut dst = BytesMut::new();
        let big = Frame::single(FrameKind::Data, 0, 0, Bytes::from(vec![0u8; 64])).unwrap();
        assert!(matches!(codec.encode(&big, &mut dst), Err(FrameError::TooLarge { .. })));
        assert!(dst.is_empty());
    }

    #[test]
    fn eof_with_partial_frame_is_an_error() {
        let mut codec = StreamCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(&frame(1, b"payload"), &mut wire).unwrap();
        wire.truncate(wire.len() - 1);
        assert!(matches!(codec.decode_eof(&mut wire), Err(FrameError::Truncated { .. })));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()), Ok(None));
    }
}
