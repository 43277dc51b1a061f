//! The two pipelines compared by the `codec` benchmark and the `codec_bench` example: colink-frame, and the
//! baseline a Rust user would otherwise assemble (tokio-util's `LengthDelimitedCodec` + `crc32fast`).
//!
//! Both move one message through the full path a link would see, one frame at a time: split into chunks that
//! fit the MTU, add a length and a CRC-32, decode, check the CRC, and put the message back together.

use bytes::{BufMut, Bytes, BytesMut};
use colink_frame::{Fragmenter, FrameKind, LinkMode, Mtu, Reassembler, StreamCodec, decode_packet};
use std::time::Instant;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// colink-frame over a byte stream: fragment + encode + CRC-32C, decode + check, reassemble.
pub(crate) fn colink_stream(message: &Bytes, mtu: usize) -> Bytes {
    let mtu = Mtu::new(mtu).expect("valid MTU");
    let mut fragmenter =
        Fragmenter::new(FrameKind::Data, 1, 0, message.clone(), LinkMode::Stream, mtu).expect("fragmentable");
    let mut codec = StreamCodec::new(mtu.get());
    let mut reassembler = Reassembler::default();
    let mut wire = BytesMut::with_capacity(2 * mtu.get());
    let now = Instant::now();
    while fragmenter.next_frame(&mut wire).is_some() {
        while let Some(frame) = codec.decode(&mut wire).expect("valid frame") {
            if let Some(done) = reassembler.push(now, frame).expect("in order") {
                return done.payload;
            }
        }
    }
    unreachable!("the last fragment completes the message")
}

/// colink-frame in packet mode (one frame per SDU, as on an L2CAP CoC link).
pub(crate) fn colink_packet(message: &Bytes, mtu: usize) -> Bytes {
    let mtu = Mtu::new(mtu).expect("valid MTU");
    let mut fragmenter =
        Fragmenter::new(FrameKind::Data, 1, 0, message.clone(), LinkMode::Packet, mtu).expect("fragmentable");
    let mut reassembler = Reassembler::default();
    let mut sdu = BytesMut::with_capacity(2 * mtu.get());
    let now = Instant::now();
    while fragmenter.next_frame(&mut sdu).is_some() {
        let frame = decode_packet(sdu.split().freeze()).expect("valid frame");
        if let Some(done) = reassembler.push(now, frame).expect("in order") {
            return done.payload;
        }
    }
    unreachable!("the last fragment completes the message")
}

/// The baseline: chunks of `mtu - 8` bytes, each with a CRC-32 (crc32fast) appended and framed by
/// `LengthDelimitedCodec` (4-byte length), decoded, checked and appended to the output.
pub(crate) fn baseline(message: &Bytes, mtu: usize) -> Bytes {
    let chunk_len = mtu - 8;
    let mut codec = LengthDelimitedCodec::new();
    let mut wire = BytesMut::with_capacity(2 * mtu);
    let mut out = Vec::new();
    for chunk in message.chunks(chunk_len) {
        let mut frame = BytesMut::with_capacity(chunk.len() + 4);
        frame.extend_from_slice(chunk);
        frame.put_u32(crc32fast::hash(chunk));
        codec.encode(frame.freeze(), &mut wire).expect("encodable");
        while let Some(frame) = codec.decode(&mut wire).expect("valid frame") {
            let (body, crc) = frame.split_at(frame.len() - 4);
            assert_eq!(crc32fast::hash(body), u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]), "intact");
            out.extend_from_slice(body);
        }
    }
    Bytes::from(out)
}

/// A deterministic pseudo-random message of `len` bytes.
pub(crate) fn message(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
