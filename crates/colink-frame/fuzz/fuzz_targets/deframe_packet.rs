//! Fuzzes packet-mode decoding: any SDU either decodes to a frame that re-encodes to the same bytes, or is a
//! typed error.
#![no_main]

use bytes::{Bytes, BytesMut};
use colink_frame::{LinkMode, decode_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sdu = Bytes::copy_from_slice(data);
    if let Ok(frame) = decode_packet(sdu.clone()) {
        // Canonical encoding: decoding is the exact inverse of encoding.
        let mut again = BytesMut::new();
        frame.encode(LinkMode::Packet, &mut again).expect("a decoded frame re-encodes");
        assert_eq!(&again[..], &sdu[..]);
    }
});
