//! Property tests: random messages at random MTUs on several channels, fragments interleaved at random,
//! come back byte-identical in both link modes.

use bytes::{Bytes, BytesMut};
use colink_frame::{Fragmenter, FrameKind, Limits, LinkMode, Mtu, Reassembler, StreamCodec, decode_packet};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::Instant;

/// A message to send: channel, kind and payload.
fn message() -> impl Strategy<Value = (u32, FrameKind, Vec<u8>)> {
    let len = prop_oneof![4 => 0usize..2048, 1 => 0usize..(1 << 20)];
    (0u32..5000, proptest::sample::select(FrameKind::ALL.to_vec()), len)
        .prop_flat_map(|(ch, kind, len)| (Just(ch), Just(kind), proptest::collection::vec(any::<u8>(), len)))
}

/// Sends `messages` over one simulated link of `mode`/`mtu`, interleaving their fragments in the order
/// `schedule` picks, and returns what the receiver delivered.
fn transfer(
    messages: &[(u32, FrameKind, Vec<u8>)],
    mode: LinkMode,
    mtu: Mtu,
    schedule: &[usize],
    chunking: usize,
) -> Vec<(u32, FrameKind, Bytes)> {
    let mut senders: VecDeque<Fragmenter> = messages
        .iter()
        .enumerate()
        .map(|(seq, (ch, kind, payload))| {
            Fragmenter::new(*kind, *ch, seq as u32, Bytes::from(payload.clone()), mode, mtu).unwrap()
        })
        .collect();
    // Framing is under test here, not the per-kind size limits: allow every kind any size.
    let mut limits = Limits::default();
    for kind in FrameKind::ALL {
        limits.set_max_message_len(kind, u32::MAX);
    }
    let mut reassembler = Reassembler::new(limits);
    let mut codec = StreamCodec::new(mtu.get());
    let mut wire = BytesMut::new();
    let mut rx = BytesMut::new();
    let mut delivered = Vec::new();
    let now = Instant::now();
    let mut pick = schedule.iter().cycle();
    while !senders.is_empty() {
        let i = pick.next().copied().unwrap_or(0) % senders.len();
        let info = senders[i].next_frame(&mut wire).unwrap();
        assert!(info.wire_len <= mtu.get(), "frame exceeds MTU");
        if senders[i].is_done() {
            senders.remove(i);
        }
        let frames: Vec<_> = match mode {
            LinkMode::Packet => vec![decode_packet(wire.split().freeze()).unwrap()],
            _ => {
                // The byte stream arrives in arbitrary pieces.
                let bytes = wire.split();
                let mut out = Vec::new();
                for piece in bytes.chunks(chunking.max(1)) {
                    rx.extend_from_slice(piece);
                    while let Some(f) = codec.decode(&mut rx).unwrap() {
                        out.push(f);
                    }
                }
                out
            }
        };
        for f in frames {
            if let Some(m) = reassembler.push(now, f).unwrap() {
                delivered.push((m.channel, m.kind, m.payload));
            }
        }
    }
    assert_eq!(reassembler.partial_count(), 0);
    assert_eq!(reassembler.buffered_bytes(), 0);
    delivered
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_messages_round_trip(
        messages in proptest::collection::vec(message(), 1..6),
        mtu in prop_oneof![Just(23usize), 23usize..300, 300usize..70000],
        stream in any::<bool>(),
        schedule in proptest::collection::vec(any::<usize>(), 1..32),
        chunking in 1usize..5000,
    ) {
        let mtu = Mtu::new(mtu.min(65535)).unwrap();
        let mode = if stream { LinkMode::Stream } else { LinkMode::Packet };
        let mut delivered = transfer(&messages, mode, mtu, &schedule, chunking);
        prop_assert_eq!(delivered.len(), messages.len());
        // Delivery order depends on interleaving; match each message by its sequence number's payload.
        delivered.sort_by_key(|(ch, _, p)| (*ch, p.len()));
        let mut expected: Vec<_> =
            messages.iter().map(|(ch, kind, p)| (*ch, *kind, Bytes::from(p.clone()))).collect();
        expected.sort_by_key(|(ch, _, p)| (*ch, p.len()));
        for (d, e) in delivered.iter().zip(&expected) {
            prop_assert_eq!(d.0, e.0);
            prop_assert!(d.2 == e.2, "payload differs on channel {}", d.0);
        }
    }
}

#[test]
fn many_channels_interleaved_round_robin() {
    let messages: Vec<_> = (0..40u32)
        .map(|i| {
            (i % 7, FrameKind::ALL[i as usize % 7], (0..(i as usize * 997)).map(|b| (b ^ i as usize) as u8).collect())
        })
        .collect();
    for mode in [LinkMode::Packet, LinkMode::Stream] {
        for mtu in [23, 247, 672, 4096, 65535] {
            let got = transfer(&messages, mode, Mtu::new(mtu).unwrap(), &[0, 1, 2, 3, 4, 5, 6, 7], 999);
            assert_eq!(got.len(), messages.len());
            for (ch, kind, payload) in &got {
                assert!(
                    messages.iter().any(|(c, k, p)| c == ch && k == kind && p[..] == payload[..]),
                    "unexpected message on channel {ch}"
                );
            }
        }
    }
}
