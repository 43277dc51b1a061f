//! Loss recovery on the deterministic harness: per-fragment retransmission timers, selective acknowledgement
//! (session protocol version 3) and its interoperation with versions 1 and 2, frame sizes under byte errors, and
//! the bound on what a receiver holds beyond a gap.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair, Which};
use colink_proto::secure::{Keypair, SecureConfig};
use colink_proto::{ChannelKind, Config, ConnectOptions, Event, LinkState, SeededEntropy, SessionKey};
use proptest::prelude::*;

fn link(mtu: usize, errors_per_billion: u64, seed: u64) -> LinkModel {
    LinkModel {
        mtu: Mtu::new(mtu).unwrap(),
        byte_errors_per_billion: errors_per_billion,
        error_seed: seed,
        ..LinkModel::default()
    }
}

fn pattern(len: usize, seed: u32) -> Bytes {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)).to_be_bytes()[0]).collect()
}

/// An established pair with versions `a` and `b` offered and one session that may send data; byte errors
/// start after the handshake.
fn pair(a: std::ops::RangeInclusive<u8>, b: std::ops::RangeInclusive<u8>, errored: LinkModel) -> (Pair, SessionKey) {
    let (mut ca, mut cb) = (Config::new("A"), Config::new("B"));
    ca.versions = a;
    cb.versions = b;
    let mut p = Pair::with_configs(LinkModel { byte_errors_per_billion: 0, ..errored }, ca, cb);
    p.drive();
    assert_eq!(p.a.conn.state(), LinkState::Established);
    let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
    p.link = errored;
    (p, key)
}

fn received(p: &Pair, since: usize, kind: ChannelKind) -> Vec<(Instant, Bytes)> {
    p.b.events[since..]
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Received { kind: k, payload, .. } if *k == kind => Some((*t, payload.clone())),
            _ => None,
        })
        .collect()
}

/// Sends `n` data messages of `len` bytes (and, every `every` data messages, a short message) from A to B until
/// all arrived or `max` virtual time passed; checks exactly once, in order, byte-identical.
fn transfer(p: &mut Pair, key: SessionKey, n: usize, len: usize, every: usize, max: Duration) {
    let since = p.b.events.len();
    let (mut data, mut msgs) = (0, 0);
    let until = p.now + max;
    while received(p, since, ChannelKind::Data).len() < n || received(p, since, ChannelKind::Message).len() < msgs {
        assert!(
            p.now < until,
            "transfer unfinished after {max:?}: {} of {n} data, {} of {msgs} messages; A {:?}, in flight {}; B {:?}, \
             held {:?}",
            received(p, since, ChannelKind::Data).len(),
            received(p, since, ChannelKind::Message).len(),
            p.a.conn.stats(),
            p.a.conn.inflight_bytes(),
            p.b.conn.stats(),
            p.b.conn.held_beyond_gaps()
        );
        while data < n && p.a.conn.send(key, ChannelKind::Data, pattern(len, data as u32)).is_ok() {
            data += 1;
            if every > 0 && data % every == 0 {
                p.a.conn.send(key, ChannelKind::Message, pattern(100 + msgs, 1000 + msgs as u32)).unwrap();
                msgs += 1;
            }
        }
        p.drive_for(Duration::from_millis(50));
    }
    let got = received(p, since, ChannelKind::Data);
    assert_eq!(got.len(), n, "every data message exactly once");
    for (i, (_, m)) in got.iter().enumerate() {
        assert!(*m == pattern(len, i as u32), "data message {i} intact and in order");
    }
    let got = received(p, since, ChannelKind::Message);
    assert_eq!(got.len(), msgs, "every message exactly once");
    for (i, (_, m)) in got.iter().enumerate() {
        assert!(*m == pattern(100 + i, 1000 + i as u32), "message {i} intact and in order");
    }
}

#[test]
fn a_corrupted_single_frame_message_is_recovered_within_the_retransmission_timeout_during_a_bulk_transfer() {
    for mtu in [247, 65535] {
        let (mut p, key) = pair(1..=3, 1..=3, link(mtu, 0, 0));
        let since = p.b.events.len();
        // 8 MiB of 64 KiB data messages; a quarter of the way in, a 100-byte message whose one frame is
        // corrupted.
        let (n, len) = (128, 64 * 1024);
        let (mut data, mut sent_at) = (0, None);
        while received(&p, since, ChannelKind::Data).len() < n {
            while data < n && p.a.conn.send(key, ChannelKind::Data, pattern(len, data as u32)).is_ok() {
                data += 1;
            }
            if sent_at.is_none() && received(&p, since, ChannelKind::Data).len() >= n / 4 {
                let next = p.frames_on_air(Which::A);
                p.corrupt_frame(Which::A, next);
                p.a.conn.send(key, ChannelKind::Message, Bytes::from_static(b"lost once")).unwrap();
                sent_at = Some((p.now, p.b.conn.stats().bad_frames));
            }
            p.drive_for(Duration::from_millis(50));
        }
        let (sent_at, bad_before) = sent_at.unwrap();
        assert!(p.b.conn.stats().bad_frames > bad_before, "MTU {mtu}: the message's frame was corrupted");
        let msgs = received(&p, since, ChannelKind::Message);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].1, Bytes::from_static(b"lost once"));
        // Delivered long before the transfer ended, within the timeout and a few air-times of the largest
        // frame (16 KiB bulk frames at MTU 65535).
        let latency = msgs[0].0 - sent_at;
        let air = p.link.air_time(mtu.min(16 * 1024));
        let bound = Config::default().retransmit_timeout + 3 * air + 2 * p.link.latency_ab;
        assert!(latency <= bound, "MTU {mtu}: latency {latency:?} > {bound:?}");
        let data = received(&p, since, ChannelKind::Data);
        assert!(msgs[0].0 < data[n / 2].0, "MTU {mtu}: recovered while the transfer still ran");
        for (i, (_, m)) in data.iter().enumerate() {
            assert!(*m == pattern(len, i as u32), "MTU {mtu}: data message {i}");
        }
        assert_eq!(p.a.conn.stats().fragments_resent, 1, "MTU {mtu}: only the message's fragment went again");
    }
}

#[test]
fn bulk_data_and_messages_arrive_exactly_once_in_order_under_byte_errors() {
    for mtu in [247, 4096, 65535] {
        let (mut p, key) = pair(1..=3, 1..=3, link(mtu, 100_000, mtu as u64));
        transfer(&mut p, key, 24, 64 * 1024, 3, Duration::from_secs(120));
        assert!(p.frames_errored(Which::A) > 0, "MTU {mtu}: errors happened");
        assert_eq!(p.a.conn.state(), LinkState::Established);
    }
}

#[test]
fn frames_shrink_under_byte_errors() {
    let (mut p, key) = pair(1..=3, 1..=3, link(65535, 100_000, 3));
    let frames = p.frames_on_air(Which::A);
    transfer(&mut p, key, 32, 64 * 1024, 0, Duration::from_secs(120));
    // 2 MiB in frames of at most 16 KiB would take about 130 frames; frames sized for 1e-4 take far more.
    let sent = p.frames_on_air(Which::A) - frames;
    assert!(sent > 1000, "{sent} frames");
    // Few are lost: about one in ten rather than four in five.
    assert!(p.frames_errored(Which::A) * 5 < sent, "{} of {sent} lost", p.frames_errored(Which::A));
}

/// Bytes A resends when exactly one data fragment of a clean bulk transfer is corrupted, with versions
/// `versions` on both sides.
fn resent_after_one_loss(versions: std::ops::RangeInclusive<u8>) -> (u64, u64) {
    let (mut p, key) = pair(versions.clone(), versions, link(247, 0, 0));
    let next = p.frames_on_air(Which::A);
    p.corrupt_frame(Which::A, next + 200);
    transfer(&mut p, key, 8, 64 * 1024, 0, Duration::from_secs(30));
    let s = p.a.conn.stats();
    (s.bytes_resent, s.fragments_resent)
}

#[test]
fn selective_acknowledgement_resends_about_one_frame_for_one_loss() {
    let (bytes, frames) = resent_after_one_loss(1..=3);
    assert!(frames == 1 && bytes <= 247, "version 3 resent {frames} fragments, {bytes} bytes");
    // Version 2 goes back to the gap: everything sent since then goes again.
    let (bytes2, frames2) = resent_after_one_loss(1..=2);
    assert!(frames2 > 4 && bytes2 > 4 * bytes, "version 2 resent {frames2} fragments, {bytes2} bytes");
}

#[test]
fn version_3_talks_to_version_2_and_version_1_peers_under_byte_errors() {
    for (a, b, agreed) in
        [(1..=3, 1..=2, 2), (1..=2, 1..=3, 2), (1..=3, 1..=1, 1), (1..=1, 1..=3, 1), (1..=3, 1..=3, 3)]
    {
        let (mut p, key) = pair(a, b, link(247, 30_000, 11));
        assert_eq!((p.a.conn.version(), p.b.conn.version()), (agreed, agreed));
        transfer(&mut p, key, 6, 32 * 1024, 2, Duration::from_secs(60));
        // Nothing is held beyond a gap below version 3.
        if agreed < 3 {
            assert_eq!(p.b.conn.stats().held_fragments, 0);
        } else {
            assert!(p.b.conn.stats().held_fragments > 0);
        }
    }
}

#[test]
fn a_version_3_receiver_that_holds_nothing_still_gets_everything() {
    let mut cb = Config::new("B");
    cb.reorder_buffer = 0;
    let mut p = Pair::with_configs(link(672, 0, 0), Config::new("A"), cb);
    p.drive();
    let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
    p.link = link(672, 100_000, 13);
    transfer(&mut p, key, 8, 64 * 1024, 2, Duration::from_secs(60));
    assert_eq!(p.b.conn.stats().held_fragments, 0);
    assert!(p.a.conn.stats().fragments_lost > 0);
}

#[test]
fn an_authenticated_link_recovers_selectively_under_byte_errors() {
    let config = |seed| {
        let mut c = SecureConfig::new(Keypair::generate(&mut SeededEntropy::new(seed)));
        c.account = Some([42; 32]);
        c
    };
    let mut p = Pair::secured(link(247, 0, 0), config(1), config(2));
    p.drive();
    assert!(p.a.conn.version() >= 3, "selective acknowledgement needs version 3");
    let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
    p.link = link(247, 100_000, 21);
    transfer(&mut p, key, 8, 64 * 1024, 2, Duration::from_secs(60));
    // Sealed acknowledgements carry the SACK blocks: what was lost went again, little more.
    let s = p.a.conn.stats();
    assert!(p.b.conn.stats().held_fragments > 0);
    assert!(s.fragments_resent <= s.fragments_lost + 2, "{s:?}");
}

#[test]
fn a_peer_that_never_fills_a_gap_cannot_grow_what_the_receiver_holds() {
    for (payload, bound) in [(200usize, 64 * 1024u64), (20, 1 << 20)] {
        let mut cb = Config::new("B");
        cb.reorder_buffer = bound;
        let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), cb);
        p.drive();
        let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
        let channel = p.b.conn.wire_channel(key, ChannelKind::Data).unwrap(); // docs/sessions.md §1.1
        // Endless single-frame data messages 1, 2, 3, … on B's data channel: message 0 never comes.
        let mut most = (0, 0);
        for seq in 1..20_000u32 {
            let frame = Frame::single(FrameKind::Data, channel, seq, pattern(payload, seq)).unwrap();
            let mut out = BytesMut::new();
            frame.encode(LinkMode::Packet, &mut out).unwrap();
            let now = p.now;
            p.b.conn.handle_input(now, out.freeze());
            let held = p.b.conn.held_beyond_gaps();
            most = (most.0.max(held.0), most.1.max(held.1));
            if seq % 1000 == 0 {
                p.drive_for(Duration::from_millis(10));
            }
        }
        assert!(most.0 <= bound && most.1 <= 1024, "held {most:?} with a bound of {bound} bytes");
        assert!(most.0 >= bound - payload as u64 || most.1 == 1024, "the buffer was used: {most:?}");
        assert!(p.b.conn.reassembly_bytes() <= bound);
        assert!(!p.b.saw(|e| matches!(e, Event::Received { .. })), "nothing delivered past the gap");
    }
}

#[test]
fn a_link_cut_with_fragments_held_beyond_a_gap_resumes_exactly_once() {
    let (mut p, key) = pair(1..=3, 1..=3, link(247, 50_000, 5));
    let since = p.b.events.len();
    for i in 0..6 {
        p.a.conn.send(key, ChannelKind::Data, pattern(40_000, i)).unwrap();
    }
    p.drive_until(Duration::from_secs(5), |p| p.b.conn.held_beyond_gaps().1 > 0);
    assert!(p.b.conn.held_beyond_gaps().1 > 0, "something held when the link goes");
    p.cut();
    assert_eq!(p.b.conn.held_beyond_gaps(), (0, 0), "held fragments go with the transport");
    p.drive_for(Duration::from_millis(600));
    p.reattach();
    p.drive_until(Duration::from_secs(60), |p| received(p, since, ChannelKind::Data).len() == 6);
    let got = received(&p, since, ChannelKind::Data);
    assert_eq!(got.len(), 6);
    for (i, (_, m)) in got.iter().enumerate() {
        assert!(*m == pattern(40_000, i as u32), "data message {i}");
    }
}

/// Found by the property test: a retransmission timeout rewound a lane behind what the receiver held, and the
/// fragments after it were cut at another size (frames had shrunk for loss), so the message reassembled
/// misaligned. Resent fragments now keep their cuts on the same transport.
#[test]
fn resends_behind_the_receivers_position_keep_their_cuts() {
    let (mut p, key) = pair(1..=2, 1..=2, link(2048, 190_997, 17666842369513409165));
    transfer(&mut p, key, 5, 20_000, 2, Duration::from_secs(300));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_error_rate_mtu_and_versions_deliver_exactly_once_in_order(
        seed in any::<u64>(),
        mtu in prop::sample::select(vec![64usize, 247, 672, 2048, 16384]),
        errors in 0u64..400_000,
        a in 1u8..=3,
        b in 1u8..=3,
    ) {
        let (mut p, key) = pair(1..=a, 1..=b, link(mtu, errors, seed));
        transfer(&mut p, key, 5, 20_000, 2, Duration::from_secs(300));
    }
}
