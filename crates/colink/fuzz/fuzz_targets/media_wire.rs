//! Fuzzes the media payload decoders with what a hostile peer could put on a session's image and stream-media
//! lanes: `StreamMessage::decode`, `ImageHeader::decode` and `ImageVerdict::decode` never panic, and whatever
//! they accept re-encodes to a payload that decodes to the same value. Image payloads and stream signalling re-encode byte for byte; a
//! frame re-encodes byte for byte except its flags and transform bytes, whose reserved bits are normalised.
#![no_main]

use bytes::Bytes;
use colink::image_verdict::ImageVerdict;
use colink::media::wire::{ImageHeader, StreamMessage};
use libfuzzer_sys::fuzz_target;

/// Offsets of a frame's flags and transform bytes (docs/media.md, stream messages).
const FLAGS: usize = 14;
const TRANSFORM: usize = 15;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);

    // The receiver's image verdicts travel on the same lane: whatever decodes re-encodes byte for byte.
    if let Ok(verdict) = ImageVerdict::decode(data) {
        assert_eq!(&verdict.encode()[..], data, "verdict round trip");
    }

    if let Ok(message) = StreamMessage::decode(&payload) {
        let again = message.encode();
        assert_eq!(StreamMessage::decode(&again).as_ref(), Ok(&message), "stream message round trip");
        assert_eq!(again.len(), data.len());
        match &message {
            StreamMessage::Frame(_, unit) => {
                assert_eq!(&unit[..], &data[16..]);
                assert_eq!(again[FLAGS], data[FLAGS] & 3);
                assert_eq!(again[TRANSFORM] & 3, data[TRANSFORM] & 3);
                assert_ne!((data[TRANSFORM] >> 2) & 3, 3, "a reserved flip does not decode");
                for (i, (a, b)) in again.iter().zip(data).enumerate() {
                    if i != FLAGS && i != TRANSFORM {
                        assert_eq!(a, b, "byte {i}");
                    }
                }
            }
            _ => assert_eq!(&again[..], data, "signalling re-encodes byte for byte"),
        }
    }

    if let Ok((header, jpeg)) = ImageHeader::decode(&payload) {
        assert!(header.width > 0 && header.height > 0);
        let again = header.encode(&jpeg).expect("a decoded header re-encodes");
        assert_eq!(&again[..], data, "image payload re-encodes byte for byte");
        assert_eq!(ImageHeader::decode(&again), Ok((header, jpeg)));
    }
});
