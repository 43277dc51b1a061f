//! Connections on authenticated transports (the harness's `Pair::secured`): sessions work and resume, the air
//! carries no plaintext, and an attacker who edits a sealed frame (with a valid checksum) or replays frames into
//! a new link gets the link closed with nothing delivered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::{LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair, Which};
use colink_proto::secure::{Keypair, SecureConfig};
use colink_proto::{
    ChannelKind, ConnectOptions, Event, LinkError, LinkState, ProtocolError, SeededEntropy, SessionKey,
};

const SECRET: &[u8] = b"TOP-SECRET-PAYLOAD-7f3a";

fn model(mode: LinkMode, mtu: usize) -> LinkModel {
    LinkModel { mode, mtu: Mtu::new(mtu).unwrap(), ..LinkModel::default() }
}

fn config(seed: u64) -> SecureConfig {
    let mut c = SecureConfig::new(Keypair::generate(&mut SeededEntropy::new(seed)));
    c.account = Some([42; 32]);
    c
}

fn secured(mode: LinkMode, mtu: usize) -> Pair {
    let mut p = Pair::secured(model(mode, mtu), config(1), config(2));
    p.drive();
    assert_eq!(p.a.conn.state(), LinkState::Established);
    assert_eq!(p.b.conn.state(), LinkState::Established);
    p
}

fn received(events: &[(Instant, Event)], s: SessionKey) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Received { session, payload, .. } if *session == s => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn closed_for_integrity(events: &[(Instant, Event)]) -> bool {
    events.iter().any(|(_, e)| {
        matches!(e, Event::Closed(LinkError::Protocol(ProtocolError::Integrity { .. } | ProtocolError::Frame(_))))
    })
}

#[test]
fn sessions_work_and_resume_and_the_air_carries_no_plaintext() {
    for (mode, mtu) in [(LinkMode::Packet, 23), (LinkMode::Packet, 247), (LinkMode::Stream, 4096)] {
        let mut p = secured(mode, mtu);
        p.capture = Some(Vec::new());
        let s = p.open_session("chat", ConnectOptions::default());
        let now = p.now;
        let big: Vec<u8> = SECRET.iter().copied().cycle().take(5000).collect();
        p.a.conn.send(s, ChannelKind::Message, Bytes::from_static(SECRET)).unwrap();
        p.a.conn.send(s, ChannelKind::Data, Bytes::from(big.clone())).unwrap();
        p.drive();
        // Resume on a new transport (new transport keys, same epoch keys): the rest still arrives.
        p.cut();
        p.reattach();
        p.drive();
        p.a.conn.send(s, ChannelKind::Message, Bytes::from_static(b"after resume")).unwrap();
        p.drive();
        let got = received(&p.b.events, s);
        assert_eq!(got, vec![Bytes::from_static(SECRET), Bytes::from(big), Bytes::from_static(b"after resume")]);
        assert!(p.b.saw(|e| *e == Event::LinkResumed), "{mode:?}");
        let capture = p.capture.take().unwrap();
        let air: Vec<u8> = capture.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        assert!(air.len() > 5000);
        // Not the payload, not a prefix of it, not the apps' names or device ids, not the resume tokens' HELLO.
        for needle in [&SECRET[..8], b"chat-a".as_slice(), b"after resume", p.a.conn.device_id().as_bytes()] {
            assert!(!contains(&air, needle), "{:?} on the air ({mode:?} {mtu})", String::from_utf8_lossy(needle));
        }
        let _ = now;
    }
}

#[test]
fn a_tampered_hello_closes_the_link_before_it_comes_up() {
    for offset in [0, 1, 5, 9, 20, 40, 70] {
        let mut p = Pair::secured(model(LinkMode::Packet, 247), config(1), config(2));
        // The HELLO left A at attach; tamper with B's reply.
        p.tamper_frame(Which::B, 0, offset);
        p.drive();
        assert!(closed_for_integrity(&p.a.events), "offset {offset}: {:?}", p.a.events);
        assert!(!p.a.saw(|e| matches!(e, Event::LinkUp { .. })), "offset {offset}");
    }
}

#[test]
fn a_tampered_lane_frame_closes_the_link_and_delivers_nothing_of_it() {
    for offset in [0, 1, 7, 15, 16, 30, 60, 200] {
        let mut p = secured(LinkMode::Packet, 247);
        let s = p.open_session("chat", ConnectOptions::default());
        let before = received(&p.b.events, s).len();
        let n = p.frames_on_air(Which::A);
        // A 500-byte message spans three frames; edit the second one.
        p.tamper_frame(Which::A, n + 1, offset);
        p.a.conn.send(s, ChannelKind::Message, Bytes::from(SECRET.repeat(25))).unwrap();
        p.drive();
        assert_eq!(received(&p.b.events, s).len(), before, "offset {offset}: delivered");
        assert!(closed_for_integrity(&p.b.events), "offset {offset}: {:?}", p.b.events);
        assert_eq!(p.b.conn.state(), LinkState::Closed);
    }
}

#[test]
fn a_tampered_control_message_closes_the_link() {
    let mut p = secured(LinkMode::Packet, 247);
    let n = p.frames_on_air(Which::A);
    p.tamper_frame(Which::A, n, 12);
    let now = p.now;
    let (from, to) =
        (colink_proto::harness::app(p.a.conn.device_id(), "x"), colink_proto::harness::app(p.b.conn.device_id(), "y"));
    p.a.conn.connect(now, from, to, ConnectOptions::default()).unwrap();
    p.drive();
    assert!(!p.b.saw(|e| matches!(e, Event::IncomingConnect { .. })));
    assert!(closed_for_integrity(&p.b.events));
}

#[test]
fn frames_replayed_into_a_new_link_are_refused() {
    // Record a whole session on one link...
    let mut p = secured(LinkMode::Packet, 247);
    p.capture = Some(Vec::new());
    let s = p.open_session("chat", ConnectOptions::default());
    p.a.conn.send(s, ChannelKind::Message, Bytes::from_static(SECRET)).unwrap();
    p.drive();
    let old: Vec<Bytes> =
        p.capture.take().unwrap().into_iter().filter(|(w, _)| *w == Which::A).map(|(_, f)| f).collect();
    assert!(old.len() >= 3);
    // ...then play A's frames into B of a new link between the same two devices (new keys).
    let mut q = Pair::secured_seeded(model(LinkMode::Packet, 247), config(1), config(2), 7);
    q.drive();
    let now = q.now + Duration::from_millis(1);
    for f in old {
        q.b.conn.handle_input(now, f);
    }
    while let Some(e) = q.b.conn.poll_event() {
        q.b.events.push((now, e));
    }
    assert!(!q.b.saw(|e| matches!(e, Event::IncomingConnect { .. } | Event::Received { .. })));
    assert!(closed_for_integrity(&q.b.events), "{:?}", q.b.events);
}

#[test]
fn a_replayed_link_message_on_the_same_transport_is_refused() {
    let mut p = Pair::secured(model(LinkMode::Packet, 247), config(1), config(2));
    p.capture = Some(Vec::new());
    p.drive();
    let hello_b = p.capture.as_ref().unwrap().iter().find(|(w, _)| *w == Which::B).unwrap().1.clone();
    let now = p.now;
    p.a.conn.handle_input(now, hello_b);
    while let Some(e) = p.a.conn.poll_event() {
        p.a.events.push((now, e));
    }
    assert!(closed_for_integrity(&p.a.events), "{:?}", p.a.events);
}

#[test]
fn a_transport_proving_another_identity_never_reaches_the_connection() {
    // Resume hijack: an attacker with its own key (and even the victim's old tokens) cannot attach to the
    // victim's connection; the established link is untouched.
    let mut p = secured(LinkMode::Packet, 247);
    let s = p.open_session("chat", ConnectOptions::default());
    let victim = p.b.conn.peer_identity().unwrap().clone();
    let attacker = colink_proto::secure::PeerIdentity::of(Keypair::generate(&mut SeededEntropy::new(99)).public());
    let t = colink_proto::Transport { mode: LinkMode::Packet, mtu: Mtu::new(247).unwrap() };
    let keys = fake_keys();
    let err = p.b.conn.attach_secured(p.now, t, attacker, keys).unwrap_err();
    assert!(matches!(err, colink_proto::AttachError::OtherPeer { .. }), "{err}");
    assert_eq!(p.b.conn.peer_identity(), Some(&victim));
    p.a.conn.send(s, ChannelKind::Message, Bytes::from_static(b"still here")).unwrap();
    p.drive();
    assert_eq!(received(&p.b.events, s).last().unwrap(), &Bytes::from_static(b"still here"));
}

/// Transport keys from a real handshake between two other devices.
fn fake_keys() -> colink_proto::secure::TransportKeys {
    use colink_proto::secure::{AccountOnly, HandshakeMode, SecureEvent, SecureHandshake};
    let now = Instant::now();
    let t = colink_proto::Transport { mode: LinkMode::Packet, mtu: Mtu::new(247).unwrap() };
    let mut a =
        SecureHandshake::initiator(now, config(98), HandshakeMode::Account, None, t, &mut SeededEntropy::new(5))
            .unwrap();
    let mut b = SecureHandshake::responder(now, config(97), t, &mut SeededEntropy::new(6));
    for _ in 0..8 {
        while let Some(f) = a.poll_transmit() {
            b.handle_input(now, &f, &mut AccountOnly);
        }
        while let Some(f) = b.poll_transmit() {
            a.handle_input(now, &f, &mut AccountOnly);
        }
    }
    loop {
        match a.poll_event() {
            Some(SecureEvent::Established(e)) => return e.keys,
            Some(_) => {}
            None => panic!("no keys"),
        }
    }
}

#[test]
fn a_connect_from_another_device_closes_the_link_and_reaches_no_app() {
    let mut p = Pair::new(model(LinkMode::Packet, 247));
    p.drive();
    let now = p.now;
    let from = colink_proto::harness::app("C", "impostor");
    let to = colink_proto::harness::app("B", "victim");
    p.a.conn.connect(now, from, to, ConnectOptions::default()).unwrap();
    p.drive();
    assert!(!p.b.saw(|e| matches!(e, Event::IncomingConnect { .. })));
    assert!(p.b.saw(|e| matches!(e, Event::Closed(LinkError::Protocol(ProtocolError::Impersonation { .. })))));
}

#[test]
fn acknowledgements_and_keep_alives_travel_sealed_and_a_plain_one_is_a_forgery() {
    use bytes::BytesMut;
    use colink_frame::{Frame, FrameKind, decode_packet};
    for mtu in [23, 247] {
        let mut p = secured(LinkMode::Packet, mtu);
        p.capture = Some(Vec::new());
        let s = p.open_session("chat", ConnectOptions::default());
        p.a.conn.send(s, ChannelKind::Data, Bytes::from(vec![7u8; 3000])).unwrap();
        p.drive();
        // Idle long enough for keep-alives.
        p.drive_for(Duration::from_secs(12));
        let capture = p.capture.take().unwrap();
        let kinds: Vec<FrameKind> =
            capture.iter().filter_map(|(_, f)| decode_packet(f.clone()).ok()).map(|f| f.header.kind).collect();
        assert!(!kinds.is_empty());
        assert!(
            !kinds.iter().any(|k| matches!(k, FrameKind::Ack | FrameKind::KeepAlive)),
            "MTU {mtu}: a plain ACK or KEEP_ALIVE frame on an authenticated link"
        );
        assert!(p.a.conn.stats().acks_sent + p.b.conn.stats().acks_sent > 0, "acknowledgements were sent, sealed");
        assert!(p.a.conn.stats().keep_alives_sent > 0, "keep-alives were sent, sealed");
        assert_eq!(received(&p.b.events, s).len(), 1);
    }

    // An attacker injects a plain ACK claiming everything arrived: the link closes, the send never completes.
    let mut p = secured(LinkMode::Packet, 247);
    let s = p.open_session("chat", ConnectOptions::default());
    let id = p.a.conn.send(s, ChannelKind::Data, Bytes::from(vec![9u8; 20_000])).unwrap();
    let mut forged = BytesMut::new();
    let ack = [0x01, 0x05, 0x7f, 0x00];
    Frame::single(FrameKind::Ack, 2, 0, Bytes::copy_from_slice(&ack))
        .unwrap()
        .encode(LinkMode::Packet, &mut forged)
        .unwrap();
    let now = p.now;
    p.a.conn.handle_input(now, forged.freeze());
    p.drive();
    assert!(closed_for_integrity(&p.a.events), "{:?}", p.a.events);
    assert!(
        !p.a.saw(|e| matches!(e, Event::SendCompleted { id: done, .. } if *done == id)),
        "a forged acknowledgement made data count as delivered"
    );
}

#[test]
fn receive_credit_holds_on_a_sealed_link_and_across_a_resume() {
    let mut p = secured(LinkMode::Packet, 672);
    let key = p.open_session("credit", ConnectOptions::default());
    p.b.reading = false;
    // Each chunk costs its bytes plus MESSAGE_CHARGE (version 3): eight fill the default 4 MiB window exactly.
    let len = 512 * 1024 - colink_proto::MESSAGE_CHARGE as usize;
    let chunks: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; len])).collect();
    // The sender's own channel buffer (1 MiB) takes two chunks at a time: offer the rest as room appears.
    let mut next = 0;
    let offer = |p: &mut Pair, next: &mut usize| {
        while *next < chunks.len() && p.a.conn.send(key, ChannelKind::Data, chunks[*next].clone()).is_ok() {
            *next += 1;
        }
    };
    for _ in 0..120 {
        offer(&mut p, &mut next);
        p.drive_for(Duration::from_secs(1));
    }
    // The default 4 MiB window (counted in plaintext bytes) holds eight chunks; the rest wait at A.
    assert_eq!(received(&p.b.events, key).len(), 8);
    assert_eq!(p.b.conn.unread_bytes(key, ChannelKind::Data), Some(4 * 1024 * 1024));
    let completed = |p: &Pair| p.a.events.iter().filter(|(_, e)| matches!(e, Event::SendCompleted { .. })).count();
    assert_eq!(completed(&p), 8);
    // The link drops and resumes while B's app still reads nothing: the credit state survives.
    p.cut();
    p.drive_for(Duration::from_secs(1));
    p.reattach();
    p.drive_for(Duration::from_secs(5));
    assert!(p.a.saw(|e| *e == Event::LinkResumed) && p.b.saw(|e| *e == Event::LinkResumed));
    assert_eq!(received(&p.b.events, key).len(), 8);
    p.b.read_all(p.now);
    for _ in 0..120 {
        offer(&mut p, &mut next);
        p.drive_for(Duration::from_secs(1));
    }
    assert_eq!(next, chunks.len());
    assert_eq!(received(&p.b.events, key), chunks);
    assert_eq!(completed(&p), 10);
}
