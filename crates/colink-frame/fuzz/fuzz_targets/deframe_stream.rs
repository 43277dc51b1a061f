//! Fuzzes stream-mode decoding: arbitrary bytes, fed in arbitrary pieces, give frames that re-encode to the
//! bytes they came from, `Ok(None)` (need more), or an error; never a panic or an oversized frame.
#![no_main]

use bytes::BytesMut;
use colink_frame::{LinkMode, StreamCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut codec = StreamCodec::new(4096);
    let mut src = BytesMut::new();
    let mut consumed = 0usize;
    for chunk in rest.chunks(piece) {
        src.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(frame)) => {
                    let mut again = BytesMut::new();
                    frame.encode(LinkMode::Stream, &mut again).expect("a decoded frame re-encodes");
                    assert!(again.len() <= 4096);
                    assert_eq!(&again[..], &rest[consumed..consumed + again.len()]);
                    consumed += again.len();
                }
                Ok(None) => break,
                Err(_) => return, // fatal for the link
            }
        }
    }
});
