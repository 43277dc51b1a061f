//! Every single-bit corruption of every byte of sample frames of every kind is detected; truncated, oversized,
//! duplicated, reordered and garbage input yields typed errors and never a panic or a delivery.

use bytes::{Bytes, BytesMut};
use colink_frame::{
    Fragmenter, FrameError, FrameKind, LinkMode, Mtu, Reassembler, ReassemblyError, StreamCodec, decode_packet,
};
use proptest::prelude::*;
use std::time::Instant;

/// Sample frames of every kind: single frames and the first, a middle and the last fragment of a long message.
fn samples(mode: LinkMode) -> Vec<Bytes> {
    let mut v = Vec::new();
    for kind in FrameKind::ALL {
        for (len, mtu) in [(0usize, 23usize), (5, 247), (3000, 247), (100_000, 4096)] {
            let payload: Bytes = (0..len).map(|i| (i * 31 + kind as usize) as u8).collect();
            let mut f = Fragmenter::new(kind, 300, 70_000, payload, mode, Mtu::new(mtu).unwrap()).unwrap();
            let mut frames = Vec::new();
            let mut out = BytesMut::new();
            while f.next_frame(&mut out).is_some() {
                frames.push(out.split().freeze());
            }
            let n = frames.len();
            for i in [0, n / 2, n - 1] {
                v.push(frames[i].clone());
            }
        }
    }
    v.dedup();
    v
}

fn decode(mode: LinkMode, wire: &Bytes) -> Result<Option<colink_frame::Frame>, FrameError> {
    match mode {
        LinkMode::Packet => decode_packet(wire.clone()).map(Some),
        _ => StreamCodec::default().decode(&mut BytesMut::from(&wire[..])),
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let mut flips = 0u64;
    for mode in [LinkMode::Packet, LinkMode::Stream] {
        for wire in samples(mode) {
            let original = decode(mode, &wire).unwrap().unwrap();
            for byte in 0..wire.len() {
                for bit in 0..8 {
                    let mut bad = wire.to_vec();
                    bad[byte] ^= 1 << bit;
                    flips += 1;
                    match decode(mode, &Bytes::from(bad)) {
                        // A stream-mode length flipped upwards waits for bytes that never come: no delivery.
                        Ok(None) => assert_eq!(mode, LinkMode::Stream),
                        Ok(Some(f)) => {
                            panic!("{mode:?} flip at byte {byte} bit {bit} delivered {f:?} (was {original:?})")
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
    assert!(flips > 100_000, "tested {flips} flips");
}

#[test]
fn every_byte_replacement_in_short_frames_is_detected() {
    // Any corruption of a single byte (all 255 wrong values), not only single bits.
    for mode in [LinkMode::Packet, LinkMode::Stream] {
        for wire in samples(mode).into_iter().filter(|w| w.len() <= 64) {
            for byte in 0..wire.len() {
                for value in 0..=255u8 {
                    if value == wire[byte] {
                        continue;
                    }
                    let mut bad = wire.to_vec();
                    bad[byte] = value;
                    assert!(!matches!(decode(mode, &Bytes::from(bad)), Ok(Some(_))), "{mode:?} byte {byte} = {value}");
                }
            }
        }
    }
}

#[test]
fn truncated_frames_are_rejected_in_packet_mode() {
    for wire in samples(LinkMode::Packet) {
        for cut in 0..wire.len() {
            assert!(decode_packet(wire.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn stream_mode_waits_for_truncated_frames_and_rejects_them_at_eof() {
    for wire in samples(LinkMode::Stream) {
        for cut in [1, wire.len() / 2, wire.len() - 1] {
            let mut src = BytesMut::from(&wire[..cut]);
            let mut codec = StreamCodec::default();
            assert_eq!(codec.decode(&mut src), Ok(None));
            assert!(codec.decode_eof(&mut src).is_err());
        }
    }
}

#[test]
fn reordered_and_duplicated_fragments_never_deliver_wrong_bytes() {
    let payload: Bytes = (0..20_000).map(|i| (i % 253) as u8).collect();
    let mut f =
        Fragmenter::new(FrameKind::Data, 1, 1, payload.clone(), LinkMode::Packet, Mtu::new(247).unwrap()).unwrap();
    let mut out = BytesMut::new();
    let mut frames = Vec::new();
    while f.next_frame(&mut out).is_some() {
        frames.push(decode_packet(out.split().freeze()).unwrap());
    }
    let now = Instant::now();
    // Swap two adjacent fragments: a gap error, and the message is never delivered.
    let mut r = Reassembler::default();
    let mut order = frames.clone();
    order.swap(10, 11);
    let mut errors = Vec::new();
    for fr in order {
        match r.push(now, fr) {
            Ok(Some(m)) => panic!("delivered {} bytes despite reordering", m.payload.len()),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    assert!(matches!(errors[0], ReassemblyError::Gap { index: 11, expected: 10, .. }));
    // Every fragment sent twice: duplicates are ignored and the message arrives once, intact.
    let mut r = Reassembler::default();
    let mut delivered = Vec::new();
    for fr in &frames {
        for _ in 0..2 {
            if let Ok(Some(m)) = r.push(now, fr.clone()) {
                delivered.push(m);
            }
        }
    }
    // The duplicate of the last fragment arrives after completion: it names an unknown message, not a delivery.
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, payload);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn garbage_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_packet(Bytes::from(bytes));
    }

    #[test]
    fn garbage_streams_never_panic_or_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..3000), max in 9usize..70000) {
        let mut codec = StreamCodec::new(max);
        let mut src = BytesMut::from(&bytes[..]);
        let mut r = Reassembler::default();
        while let Ok(Some(frame)) = codec.decode(&mut src) {
            prop_assert!(frame.payload.len() <= max);
            let _ = r.push(Instant::now(), frame);
        }
    }
}
