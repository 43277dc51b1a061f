//! Behaviour of the session engine on the deterministic two-device harness (virtual time).

use std::time::Duration;

use bytes::Bytes;
use colink_frame::{LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair, Which, app};
use colink_proto::{
    ChannelKind, Config, ConnectError, ConnectErrorCode, ConnectOptions, DisconnectReason, Event, LinkError, LinkState,
    SendError, SendFailure, SessionError, SessionKey, SessionState,
};

fn model(mode: LinkMode, mtu: usize) -> LinkModel {
    LinkModel { mode, mtu: Mtu::new(mtu).unwrap(), ..LinkModel::default() }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed).collect()
}

fn received(events: &[(std::time::Instant, Event)], s: SessionKey, k: ChannelKind) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Received { session, kind, payload } if *session == s && *kind == k => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

fn count(events: &[(std::time::Instant, Event)], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|(_, e)| f(e)).count()
}

fn established() -> Pair {
    let mut p = Pair::new(LinkModel::default());
    p.drive();
    assert_eq!(p.a.conn.state(), LinkState::Established);
    assert_eq!(p.b.conn.state(), LinkState::Established);
    p
}

#[test]
fn handshake_negotiates_identity_mtu_and_keep_alive() {
    let mut b = Config::new("B");
    b.keep_alive_interval = Duration::from_secs(3);
    b.idle_timeout = Duration::from_secs(20);
    let mut p = Pair::with_configs(model(LinkMode::Packet, 672), Config::new("A"), b);
    p.drive();
    for (side, peer) in [(&p.a, "B"), (&p.b, "A")] {
        assert!(side.saw(|e| matches!(e, Event::LinkUp { peer_device, version: 4, .. } if peer_device == peer)));
        assert_eq!(side.conn.peer_device(), Some(peer));
        // The shorter interval and the shorter idle timeout (docs/sessions.md §3.4).
        assert_eq!(side.conn.keep_alive(), (Duration::from_secs(3), Duration::from_secs(20)));
        assert_eq!(side.conn.frame_mtu().get(), 672);
    }
}

#[test]
fn handshake_survives_a_lost_hello() {
    let mut p = Pair::new(LinkModel::default());
    p.corrupt_frame(Which::A, 0);
    p.drive_for(Duration::from_secs(3));
    assert_eq!(p.a.conn.state(), LinkState::Established);
    assert_eq!(p.b.conn.state(), LinkState::Established);
}

#[test]
fn version_mismatch_is_a_clear_error_on_both_sides() {
    let mut b = Config::new("B");
    b.versions = 5..=6;
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    let a_err = p.a.events.iter().find_map(|(_, e)| match e {
        Event::Closed(err) => Some(err.clone()),
        _ => None,
    });
    let b_err = p.b.events.iter().find_map(|(_, e)| match e {
        Event::Closed(err) => Some(err.clone()),
        _ => None,
    });
    assert_eq!(
        a_err,
        Some(LinkError::VersionMismatch { local_min: 1, local_max: 4, peer_min: 5, peer_max: 6 }),
        "A: {:?}",
        p.a.events
    );
    assert_eq!(b_err, Some(LinkError::VersionMismatch { local_min: 5, local_max: 6, peer_min: 1, peer_max: 4 }));
    assert!(a_err.unwrap().to_string().contains("no common protocol version"));
    assert_eq!(p.a.conn.state(), LinkState::Closed);
    assert_eq!(p.b.conn.state(), LinkState::Closed);
}

#[test]
fn connect_then_accept_opens_the_session_on_both_sides() {
    let mut p = established();
    let mut options = ConnectOptions { need_send_data: true, ..ConnectOptions::default() };
    options.parameters.insert("ask".into(), "photos".into());
    let key = p.a.conn.connect(p.now, app("A", "notes"), app("B", "gallery"), options.clone()).unwrap();
    assert_eq!(p.a.conn.session_state(key), Some(SessionState::Connecting));
    p.drive();
    let (token, from, to, opts) =
        p.b.events
            .iter()
            .find_map(|(_, e)| match e {
                Event::IncomingConnect { session, token, from, to, options } if *session == key => {
                    Some((token.clone(), from.clone(), to.clone(), options.clone()))
                }
                _ => None,
            })
            .expect("incoming connect");
    assert_eq!((from, to, opts), (app("A", "notes"), app("B", "gallery"), options));
    assert_eq!(p.b.conn.session_state(key), Some(SessionState::AwaitingAnswer));
    p.b.conn.accept(p.now, &token).unwrap();
    assert_eq!(p.b.conn.accept(p.now, &token), Err(SessionError::UnknownToken), "tokens are single-use");
    p.drive();
    assert!(p.a.saw(|e| *e == Event::Connected { session: key }));
    assert!(p.b.saw(|e| *e == Event::Connected { session: key }));
    assert_eq!(p.a.conn.session_state(key), Some(SessionState::Connected));
    assert_eq!(p.b.conn.session_peer(key), Some(&app("A", "notes")));
}

fn incoming_token(p: &Pair, key: SessionKey) -> String {
    p.b.events
        .iter()
        .find_map(|(_, e)| match e {
            Event::IncomingConnect { session, token, .. } if *session == key => Some(token.clone()),
            _ => None,
        })
        .expect("incoming connect")
}

#[test]
fn reject_carries_code_and_reason() {
    let mut p = established();
    for (code, reason) in
        [(ConnectErrorCode::PeerAppRejected, "busy"), (ConnectErrorCode::PeerAbilityNoOncollaborate, "no such app")]
    {
        let key = p.a.conn.connect(p.now, app("A", reason), app("B", "x"), ConnectOptions::default()).unwrap();
        p.drive();
        let token = incoming_token(&p, key);
        p.b.conn.reject(p.now, &token, code, reason).unwrap();
        assert_eq!(p.b.conn.reject(p.now, &token, code, reason), Err(SessionError::UnknownToken));
        p.drive();
        assert!(p.a.saw(|e| *e == Event::ConnectFailed { session: key, code, reason: Some(reason.to_owned()) }));
        assert_eq!(p.a.conn.session_state(key), None);
    }
    assert_eq!(ConnectErrorCode::PeerAppRejected as u8, 1);
    assert_eq!(ConnectErrorCode::PeerAbilityNoOncollaborate as u8, 4);
}

#[test]
fn unanswered_connect_times_out_after_ten_seconds() {
    let mut p = established();
    let t0 = p.now;
    let key = p.a.conn.connect(p.now, app("A", "a"), app("B", "b"), ConnectOptions::default()).unwrap();
    p.drive_for(Duration::from_secs(9));
    assert!(!p.a.saw(|e| matches!(e, Event::ConnectFailed { .. })));
    p.drive_for(Duration::from_secs(2));
    let (at, code) =
        p.a.events
            .iter()
            .find_map(|(t, e)| match e {
                Event::ConnectFailed { session, code, .. } if *session == key => Some((*t, *code)),
                _ => None,
            })
            .expect("connect failed");
    assert_eq!(code, ConnectErrorCode::SystemInternalError);
    assert_eq!(at - t0, Duration::from_secs(10));
    let token = incoming_token(&p, key);
    assert!(p.b.saw(|e| matches!(e, Event::IncomingCancelled { session, .. } if *session == key)));
    assert_eq!(p.b.conn.accept(p.now, &token), Err(SessionError::UnknownToken));
}

#[test]
fn duplicate_connect_maps_to_connected_session_exists() {
    let mut p = established();
    let key = p.open_session("chat", ConnectOptions::default());
    let dup = p.a.conn.connect(p.now, app("A", "chat-a"), app("B", "chat-b"), ConnectOptions::default());
    assert_eq!(dup, Err(ConnectError::SessionExists(key)));
    assert_eq!(dup.unwrap_err().code(), ConnectErrorCode::ConnectedSessionExists);
    assert_eq!(ConnectErrorCode::ConnectedSessionExists as u8, 0);

    // Both apps dial each other at the same instant: each side refuses the other's request on the wire.
    let ka = p.a.conn.connect(p.now, app("A", "x"), app("B", "y"), ConnectOptions::default()).unwrap();
    let kb = p.b.conn.connect(p.now, app("B", "y"), app("A", "x"), ConnectOptions::default()).unwrap();
    p.drive();
    let code = ConnectErrorCode::ConnectedSessionExists;
    assert!(p.a.saw(|e| matches!(e, Event::ConnectFailed { session, code: c, .. } if *session == ka && *c == code)));
    assert!(p.b.saw(|e| matches!(e, Event::ConnectFailed { session, code: c, .. } if *session == kb && *c == code)));
}

#[test]
fn disconnect_reports_the_reason_and_fails_pending_sends() {
    let mut p = established();
    let key = p.open_session("chat", ConnectOptions::default());
    let id = p.a.conn.send(key, ChannelKind::Data, pattern(500_000, 1)).unwrap();
    p.drive_for(Duration::from_millis(100));
    p.a.conn.disconnect(p.now, key, DisconnectReason::PeerAppExit).unwrap();
    p.drive();
    assert!(p.b.saw(|e| *e == Event::Disconnected { session: key, reason: DisconnectReason::PeerAppExit }));
    assert!(p.a.saw(|e| *e
        == Event::SendFailed { session: key, id, error: SendFailure::Disconnected(DisconnectReason::PeerAppExit) }));
    assert_eq!(p.b.conn.session_state(key), None);
    assert_eq!(p.b.conn.reassembly_bytes(), 0, "partial data of the session is released");
    assert_eq!(
        p.a.conn.send(key, ChannelKind::Message, Bytes::from_static(b"late")),
        Err(SendError::UnknownSession(key))
    );
}

fn exchange(p: &mut Pair) {
    let s1 = p.open_session("one", ConnectOptions::default());
    let s2 = p.open_session("two", ConnectOptions::default());
    let msgs: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("message {i}"))).collect();
    let data_ab = [pattern(300_000, 1), pattern(1, 2), pattern(70_000, 3)];
    let data_ba = [pattern(200_000, 4), pattern(5_000, 5)];
    let mut ids = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let s = if i % 2 == 0 { s1 } else { s2 };
        ids.push(p.a.conn.send(s, ChannelKind::Message, m.clone()).unwrap());
        p.b.conn.send(s, ChannelKind::Message, m.clone()).unwrap();
    }
    for d in &data_ab {
        ids.push(p.a.conn.send(s1, ChannelKind::Data, d.clone()).unwrap());
    }
    for d in &data_ba {
        p.b.conn.send(s2, ChannelKind::Data, d.clone()).unwrap();
    }
    p.drive();
    let even: Vec<Bytes> = msgs.iter().step_by(2).cloned().collect();
    let odd: Vec<Bytes> = msgs.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(received(&p.b.events, s1, ChannelKind::Message), even);
    assert_eq!(received(&p.b.events, s2, ChannelKind::Message), odd);
    assert_eq!(received(&p.a.events, s1, ChannelKind::Message), even);
    assert_eq!(received(&p.b.events, s1, ChannelKind::Data), data_ab.to_vec());
    assert_eq!(received(&p.a.events, s2, ChannelKind::Data), data_ba.to_vec());
    for id in ids {
        assert!(p.a.saw(|e| matches!(e, Event::SendCompleted { id: i, .. } if *i == id)), "send {id:?} completed");
    }
    assert!(!p.a.saw(|e| matches!(e, Event::SendFailed { .. })));
}

#[test]
fn messages_and_data_flow_both_ways_byte_identical_packet_mode() {
    let mut p = established();
    exchange(&mut p);
}

#[test]
fn messages_and_data_flow_both_ways_byte_identical_stream_mode() {
    let mut p = Pair::new(model(LinkMode::Stream, 1024));
    p.drive();
    exchange(&mut p);
}

#[test]
fn messages_and_data_at_the_minimum_mtu() {
    let mut p = Pair::new(model(LinkMode::Packet, 23));
    p.drive();
    exchange(&mut p);
}

#[test]
fn a_message_overtakes_a_100_mb_transfer_within_two_fragments() {
    let mut p = established();
    let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
    let idle_latency = latency_of_message(&mut p, key, 0);

    let big = Bytes::from(vec![0xA5u8; 100 * 1024 * 1024]);
    p.a.conn.send(key, ChannelKind::Data, big).unwrap();
    p.drive_for(Duration::from_secs(2)); // the transfer is in full swing, the window full
    let mut worst = Duration::ZERO;
    for i in 1..=20 {
        worst = worst.max(latency_of_message(&mut p, key, i));
        p.drive_for(Duration::from_millis(37));
    }
    let fragment_air = p.link.air_time(p.link.mtu.get());
    let extra = worst.saturating_sub(idle_latency);
    eprintln!(
        "idle message latency {idle_latency:?}, worst under a 100 MB transfer {worst:?} (+{:.2} fragment air-times)",
        extra.as_secs_f64() / fragment_air.as_secs_f64()
    );
    assert!(extra <= fragment_air * 2, "message waited {extra:?}, more than 2 × {fragment_air:?}");
    assert!(p.b.conn.reassembly_bytes() > 0, "the transfer was running");
}

/// Sends one message from A and returns the virtual time until B delivers it.
fn latency_of_message(p: &mut Pair, key: SessionKey, i: u32) -> Duration {
    let text = Bytes::from(format!("ping {i}"));
    let t0 = p.now;
    p.a.conn.send(key, ChannelKind::Message, text.clone()).unwrap();
    let before = p.b.events.len();
    let got = p.drive_until(Duration::from_secs(5), |p| {
        p.b.events[before..].iter().any(|(_, e)| matches!(e, Event::Received { payload, .. } if *payload == text))
    });
    assert!(got, "message {i} not delivered");
    let at = p.b.events[before..]
        .iter()
        .find_map(|(t, e)| matches!(e, Event::Received { payload, .. } if *payload == text).then_some(*t))
        .unwrap();
    at - t0
}

#[test]
fn acks_are_far_fewer_than_fragments() {
    let mut p = established();
    let key = p.open_session("bulk", ConnectOptions::default());
    p.a.conn.send(key, ChannelKind::Data, pattern(2_000_000, 9)).unwrap();
    p.drive();
    let fragments = p.a.conn.stats().fragments_sent;
    let acks = p.b.conn.stats().acks_sent;
    eprintln!("{fragments} fragments, {acks} ack frames");
    assert!(fragments > 8000);
    assert!(acks * 50 < fragments, "{acks} acks for {fragments} fragments");
    assert!(p.a.saw(|e| matches!(e, Event::SendCompleted { .. })));
}

#[test]
fn back_pressure_bounds_inflight_and_queued_bytes() {
    let mut a = Config::new("A");
    a.send_window = 64 * 1024;
    a.channel_buffer = 1024 * 1024;
    let mut p = Pair::with_configs(LinkModel::default(), a, Config::new("B"));
    p.drive();
    let key = p.open_session("bulk", ConnectOptions::default());
    let first = p.a.conn.send(key, ChannelKind::Data, pattern(4_000_000, 1)).unwrap();
    // The channel holds 4 MB (by reference): a further send must wait.
    assert_eq!(p.a.conn.send(key, ChannelKind::Data, pattern(10, 2)), Err(SendError::WouldBlock));
    assert_eq!(p.a.conn.send_capacity(key, ChannelKind::Data), 0);
    // Other channels are not blocked by it.
    p.a.conn.send(key, ChannelKind::Message, Bytes::from_static(b"hi")).unwrap();
    let mut max_inflight = 0;
    while !p.a.saw(|e| matches!(e, Event::SendCompleted { id, .. } if *id == first)) {
        p.drive_for(Duration::from_millis(50));
        max_inflight = max_inflight.max(p.a.conn.inflight_bytes());
    }
    let mtu = p.link.mtu.get() as u64;
    assert!(p.a.conn.stats().max_inflight_bytes <= 64 * 1024 * 3 / 4 + mtu, "{:?}", p.a.conn.stats());
    assert!(max_inflight > 0);
    assert!(p.a.saw(|e| *e == Event::Writable { session: key, kind: ChannelKind::Data }));
    p.a.conn.send(key, ChannelKind::Data, pattern(10, 2)).unwrap();
}

#[test]
fn keep_alive_holds_an_idle_link_and_idle_timeout_detects_a_dead_one() {
    let mut p = established();
    let key = p.open_session("s", ConnectOptions::default());
    p.drive_for(Duration::from_secs(60));
    assert_eq!(p.a.conn.state(), LinkState::Established);
    assert!(p.a.conn.stats().keep_alives_sent >= 10);
    // Silent outage: nothing gets through any more.
    p.blackhole = true;
    let t0 = p.now;
    p.drive_until(Duration::from_secs(40), |p| p.a.saw(|e| matches!(e, Event::LinkLost { .. })));
    let lost_at = p.a.events.iter().find_map(|(t, e)| matches!(e, Event::LinkLost { .. }).then_some(*t)).unwrap();
    let idle = lost_at - t0;
    assert!(idle >= Duration::from_secs(25) && idle <= Duration::from_secs(31), "lost after {idle:?}");
    assert!(p.a.saw(|e| *e == Event::LinkLost { redial: true }));
    assert_eq!(p.a.conn.session_state(key), Some(SessionState::Reconnecting));
    // Re-dials keep failing; after the grace period and the re-dial allowance (and a last second for a
    // handshake then under way) the session is gone.
    p.drive_for(Duration::from_secs(17));
    assert!(p.a.saw(|e| *e == Event::Disconnected { session: key, reason: DisconnectReason::NetworkDisconnected }));
    assert!(p.a.saw(|e| *e == Event::Closed(LinkError::GraceExpired)));
}

struct Transfer {
    key: SessionKey,
    ab: Vec<Bytes>,
    ba: Vec<Bytes>,
    msgs: Vec<Bytes>,
}

fn start_transfer(p: &mut Pair) -> Transfer {
    let key = p.open_session("resume", ConnectOptions::default());
    let ab = vec![pattern(600_000, 1), pattern(3_000, 2), pattern(250_000, 3)];
    let ba = vec![pattern(200_000, 4)];
    let msgs: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("burst {i}"))).collect();
    for d in &ab {
        p.a.conn.send(key, ChannelKind::Data, d.clone()).unwrap();
    }
    for d in &ba {
        p.b.conn.send(key, ChannelKind::Data, d.clone()).unwrap();
    }
    for m in &msgs {
        p.a.conn.send(key, ChannelKind::Message, m.clone()).unwrap();
    }
    Transfer { key, ab, ba, msgs }
}

fn check_transfer(p: &Pair, t: &Transfer) {
    assert_eq!(received(&p.b.events, t.key, ChannelKind::Data), t.ab, "A→B data exactly once, in order");
    assert_eq!(received(&p.a.events, t.key, ChannelKind::Data), t.ba, "B→A data exactly once, in order");
    assert_eq!(received(&p.b.events, t.key, ChannelKind::Message), t.msgs, "messages exactly once, in order");
    let completed = count(&p.a.events, |e| matches!(e, Event::SendCompleted { .. }));
    assert_eq!(completed, t.ab.len() + t.msgs.len());
    assert!(!p.a.saw(|e| matches!(e, Event::SendFailed { .. } | Event::Disconnected { .. })));
    assert!(!p.b.saw(|e| matches!(e, Event::SendFailed { .. } | Event::Disconnected { .. })));
}

#[test]
fn link_cut_mid_transfer_resumes_without_loss_or_duplication() {
    for cut_after in [Duration::from_millis(30), Duration::from_secs(2), Duration::from_millis(4700)] {
        for mode in [LinkMode::Packet, LinkMode::Stream] {
            let mut p = Pair::new(model(mode, 247));
            p.drive();
            let t = start_transfer(&mut p);
            p.drive_for(cut_after);
            p.cut();
            assert!(p.a.saw(|e| *e == Event::LinkLost { redial: true }));
            assert!(p.b.saw(|e| *e == Event::LinkLost { redial: false }));
            assert_eq!(p.a.conn.session_state(t.key), Some(SessionState::Reconnecting));
            // Sends while reconnecting are accepted and delivered after the resume.
            p.drive_for(Duration::from_secs(3));
            p.reattach();
            p.drive();
            assert!(p.a.saw(|e| *e == Event::LinkResumed), "{mode:?} {cut_after:?}");
            assert!(p.b.saw(|e| *e == Event::LinkResumed));
            check_transfer(&p, &t);
            let s = p.a.conn.stats();
            eprintln!(
                "{mode:?} cut after {cut_after:?}: {} fragments, {} resent",
                s.fragments_sent, s.fragments_resent
            );
        }
    }
}

#[test]
fn a_transport_that_arrives_after_the_grace_but_within_the_allowance_resumes() {
    // An outage just shorter than the grace period: the re-dial starts in time, but dialling and the
    // handshake end after the grace period. The link must resume, not close.
    let mut p = established();
    let t = start_transfer(&mut p);
    p.drive_for(Duration::from_millis(500));
    p.cut();
    let lost = p.now;
    assert_eq!(p.a.conn.grace_deadline(), Some(lost + Duration::from_secs(10)));
    assert_eq!(p.a.conn.resume_deadline(), Some(lost + Duration::from_secs(15)));
    p.drive_for(Duration::from_millis(12_500));
    assert_eq!(p.a.conn.session_state(t.key), Some(SessionState::Reconnecting));
    p.reattach();
    p.drive();
    assert!(p.a.saw(|e| *e == Event::LinkResumed) && p.b.saw(|e| *e == Event::LinkResumed));
    check_transfer(&p, &t);
}

#[test]
fn resume_on_a_link_with_a_smaller_mtu_restarts_partial_messages() {
    let mut p = Pair::new(model(LinkMode::Packet, 672));
    p.drive();
    let t = start_transfer(&mut p);
    p.drive_for(Duration::from_millis(1500));
    p.cut();
    p.link.mtu = Mtu::new(100).unwrap();
    p.reattach();
    p.drive();
    check_transfer(&p, &t);
}

#[test]
fn link_cut_past_the_grace_period_disconnects_and_fails_sends() {
    let mut p = established();
    let t = start_transfer(&mut p);
    p.drive_for(Duration::from_millis(500));
    p.cut();
    let lost = p.now;
    p.drive_for(Duration::from_secs(14));
    assert!(!p.a.saw(|e| matches!(e, Event::Disconnected { .. })), "still within grace and allowance");
    p.drive_for(Duration::from_secs(2));
    for side in [&p.a, &p.b] {
        let at = side
            .events
            .iter()
            .find_map(|(at, e)| {
                (*e == Event::Disconnected { session: t.key, reason: DisconnectReason::NetworkDisconnected })
                    .then_some(*at)
            })
            .expect("NETWORK_DISCONNECTED");
        // The grace period (10 s) plus the allowance for a re-dial started within it (5 s).
        assert_eq!(at - lost, Duration::from_secs(15));
        assert!(side.saw(|e| *e == Event::Closed(LinkError::GraceExpired)));
    }
    let failed = count(&p.a.events, |e| {
        matches!(e, Event::SendFailed { error: SendFailure::Disconnected(DisconnectReason::NetworkDisconnected), .. })
    });
    let completed = count(&p.a.events, |e| matches!(e, Event::SendCompleted { .. }));
    assert!(failed > 0);
    assert_eq!(failed + completed, t.ab.len() + t.msgs.len(), "every send completed or failed, none lost");
    // A late transport does not revive the link.
    p.reattach();
    p.drive();
    assert_eq!(p.a.conn.state(), LinkState::Closed);
}

#[test]
fn a_fresh_peer_cannot_resume_and_old_sessions_end() {
    let mut p = established();
    let t = start_transfer(&mut p);
    p.drive_for(Duration::from_millis(500));
    p.cut();
    // B lost its state (process restart): a new connection object answers the re-dial.
    let now = p.now;
    p.b.conn = colink_proto::Connection::new(
        now,
        Config::new("B"),
        colink_proto::Role::Responder,
        Box::new(colink_proto::SeededEntropy::new(77)),
    );
    p.reattach();
    p.drive();
    assert!(p.a.saw(|e| *e == Event::Disconnected { session: t.key, reason: DisconnectReason::NetworkDisconnected }));
    assert!(p.a.saw(|e| matches!(e, Event::SendFailed { .. })));
    assert_eq!(p.a.conn.state(), LinkState::Established, "the link itself is fresh and usable");
    let k = p.open_session("again", ConnectOptions::default());
    assert_eq!(p.a.conn.session_state(k), Some(SessionState::Connected));
}

#[test]
fn corrupted_packets_are_dropped_and_recovered_by_retransmission() {
    let mut p = established();
    let t = start_transfer(&mut p);
    let base = p.frames_on_air(Which::A);
    for n in [3, 4, 40, 41, 42, 500, 2000, 3100] {
        p.corrupt_frame(Which::A, base + n);
    }
    let base_b = p.frames_on_air(Which::B);
    for n in [1, 2, 10, 300] {
        p.corrupt_frame(Which::B, base_b + n); // acks and B's data
    }
    p.drive();
    check_transfer(&p, &t);
    assert!(p.b.conn.stats().bad_frames >= 8);
    assert!(p.a.conn.stats().fragments_resent > 0);
    assert_eq!(p.a.conn.state(), LinkState::Established, "packet mode keeps the link");
}

#[test]
fn a_corrupted_stream_resets_the_transport_and_resumes() {
    let mut p = Pair::new(model(LinkMode::Stream, 512));
    p.drive();
    let t = start_transfer(&mut p);
    let base = p.frames_on_air(Which::A);
    p.corrupt_frame(Which::A, base + 700);
    p.drive();
    check_transfer(&p, &t);
    assert!(p.b.conn.stats().bad_frames >= 1);
    assert!(p.a.saw(|e| *e == Event::LinkResumed));
}

#[test]
fn peer_protocol_violation_closes_the_link() {
    let mut p = established();
    // A data frame for a session that was never opened.
    let frame =
        colink_frame::Frame::single(colink_frame::FrameKind::Data, 4 * 99 + 1, 0, Bytes::from_static(b"x")).unwrap();
    let mut wire = bytes::BytesMut::new();
    frame.encode(LinkMode::Packet, &mut wire).unwrap();
    let now = p.now;
    p.b.conn.handle_input(now, wire.freeze());
    p.drive();
    assert!(p.b.saw(|e| matches!(e, Event::Closed(LinkError::Protocol(_)))));
    assert!(p.a.saw(|e| matches!(e, Event::Closed(LinkError::PeerClosed { .. }))), "{:?}", p.a.events);
}

#[test]
fn orderly_close_ends_peer_sessions_with_app_exit() {
    let mut p = established();
    let key = p.open_session("s", ConnectOptions::default());
    let now = p.now;
    p.a.conn.close(now);
    p.drive();
    assert!(p.b.saw(|e| *e == Event::Disconnected { session: key, reason: DisconnectReason::PeerAppExit }));
    assert!(p.a.saw(|e| *e == Event::Closed(LinkError::LocalClose)));
}

/// The sends of `ids` that completed on `side`.
fn completed(p: &Pair, ids: &[colink_proto::SendId]) -> usize {
    ids.iter().filter(|id| p.a.saw(|e| matches!(e, Event::SendCompleted { id: i, .. } if i == *id))).count()
}

#[test]
fn an_app_that_does_not_read_stops_its_own_sender_only_and_gets_everything_once_it_reads() {
    let mut b = Config::new("B");
    // Ten 10 000-byte chunks, each also charged MESSAGE_CHARGE (version 3), fill it exactly.
    b.receive_buffer = 10 * (10_000 + colink_proto::MESSAGE_CHARGE);
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    let slow = p.open_session("slow", ConnectOptions::default());
    let busy = p.open_session("busy", ConnectOptions::default());
    // B's app stops reading.
    p.b.reading = false;
    let chunks: Vec<Bytes> = (0..30).map(|i| pattern(10_000, i)).collect();
    let ids: Vec<_> = chunks.iter().map(|c| p.a.conn.send(slow, ChannelKind::Data, c.clone()).unwrap()).collect();
    p.drive_for(Duration::from_secs(5));
    // Ten chunks fill B's 100 000-byte buffer; the rest wait at A, pending (neither completed nor failed).
    assert_eq!(completed(&p, &ids), 10);
    assert!(!p.a.saw(|e| matches!(e, Event::SendFailed { .. })));
    assert_eq!(p.b.conn.unread_bytes(slow, ChannelKind::Data), Some(10 * (10_000 + colink_proto::MESSAGE_CHARGE)));
    assert!(p.b.conn.reassembly_bytes() <= 10_000, "{}", p.b.conn.reassembly_bytes());
    assert_eq!(received(&p.b.events, slow, ChannelKind::Data).len(), 10);
    // The stalled channel holds nothing in flight: the other session on the link flows at full speed.
    assert_eq!(p.a.conn.inflight_bytes(), 0);
    let other = p.a.conn.send(busy, ChannelKind::Data, pattern(50_000, 99)).unwrap();
    p.drive_for(Duration::from_secs(2));
    assert!(p.a.saw(|e| matches!(e, Event::SendCompleted { id, .. } if *id == other)));
    // (B's app does not read `busy` either: it fits the buffer, which is per channel.)
    assert_eq!(received(&p.b.events, busy, ChannelKind::Data), vec![pattern(50_000, 99)]);
    // B's app reads: everything arrives, in order, exactly once.
    p.b.read_all(p.now);
    p.drive();
    assert_eq!(completed(&p, &ids), 30);
    assert_eq!(received(&p.b.events, slow, ChannelKind::Data), chunks);
    assert_eq!(p.b.conn.unread_bytes(slow, ChannelKind::Data), Some(0));
}

#[test]
fn a_payload_larger_than_the_receive_buffer_passes_once_the_app_read_everything_before_it() {
    let mut b = Config::new("B");
    b.receive_buffer = 64 * 1024;
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    let key = p.open_session("big", ConnectOptions::default());
    let payloads = [pattern(40_000, 1), pattern(300_000, 2), pattern(40_000, 3)];
    for d in &payloads {
        p.a.conn.send(key, ChannelKind::Data, d.clone()).unwrap();
    }
    p.drive();
    assert_eq!(received(&p.b.events, key, ChannelKind::Data), payloads.to_vec());
}

#[test]
fn a_version_1_peer_still_talks_without_credit() {
    let mut a = Config::new("A");
    a.versions = 1..=1;
    let mut p = Pair::with_configs(LinkModel::default(), a, Config::new("B"));
    p.drive();
    assert_eq!((p.a.conn.version(), p.b.conn.version()), (1, 1));
    exchange(&mut p);
}

#[test]
fn a_lost_window_update_is_repeated() {
    let mut b = Config::new("B");
    b.receive_buffer = 5 * (10_000 + colink_proto::MESSAGE_CHARGE);
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    let key = p.open_session("lossy", ConnectOptions::default());
    p.b.reading = false;
    let chunks: Vec<Bytes> = (0..10).map(|i| pattern(10_000, i)).collect();
    for c in &chunks {
        p.a.conn.send(key, ChannelKind::Data, c.clone()).unwrap();
    }
    p.drive_for(Duration::from_secs(3));
    assert_eq!(received(&p.b.events, key, ChannelKind::Data).len(), 5);
    // B's app reads; the ACK that tells A is lost. Nothing is in flight at A, so only B's repeat helps.
    let next = p.frames_on_air(Which::B);
    p.corrupt_frame(Which::B, next);
    p.b.read_all(p.now);
    p.drive();
    assert_eq!(received(&p.b.events, key, ChannelKind::Data), chunks);
}

#[test]
fn a_resume_announces_the_credit_that_lost_updates_did_not() {
    let mut b = Config::new("B");
    b.receive_buffer = 5 * (10_000 + colink_proto::MESSAGE_CHARGE);
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    let key = p.open_session("outage", ConnectOptions::default());
    p.b.reading = false;
    let chunks: Vec<Bytes> = (0..10).map(|i| pattern(10_000, i)).collect();
    for c in &chunks {
        p.a.conn.send(key, ChannelKind::Data, c.clone()).unwrap();
    }
    p.drive_for(Duration::from_secs(3));
    assert_eq!(received(&p.b.events, key, ChannelKind::Data).len(), 5);
    // B's app reads during a silent outage: the update and all its repeats are lost.
    p.blackhole = true;
    p.b.read_all(p.now);
    p.drive_for(Duration::from_secs(5));
    p.blackhole = false;
    assert_eq!(received(&p.b.events, key, ChannelKind::Data).len(), 5);
    // The transport is replaced; the resume handshake brings the credit across.
    p.cut();
    p.reattach();
    p.drive();
    assert!(p.a.saw(|e| *e == Event::LinkResumed));
    assert_eq!(received(&p.b.events, key, ChannelKind::Data), chunks);
}

#[test]
fn version_4_sessions_carry_files_on_their_own_lane_beside_every_other_lane() {
    let mut p = Pair::new(LinkModel::default());
    p.drive();
    assert_eq!((p.a.conn.version(), p.b.conn.version()), (4, 4));
    assert!(p.a.conn.has_lane(ChannelKind::File));
    // Three sessions (channel numbers 8·s + lane), every lane of each busy at once, both ways.
    let keys: Vec<SessionKey> = (0..3).map(|i| p.open_session(&format!("s{i}"), ConnectOptions::default())).collect();
    let mut sent = Vec::new();
    for (i, &key) in keys.iter().enumerate() {
        for (j, kind) in ChannelKind::ALL.into_iter().enumerate() {
            let payload = pattern(20_000 + 1000 * j, (i * 10 + j) as u8);
            p.a.conn.send(key, kind, payload.clone()).unwrap();
            sent.push((key, kind, payload));
        }
    }
    p.drive();
    for (key, kind, payload) in sent {
        assert_eq!(received(&p.b.events, key, kind), vec![payload], "{key:?} {kind:?}");
    }
}

#[test]
fn a_version_3_peer_has_no_file_lane_and_says_so() {
    let mut a = Config::new("A");
    a.versions = 1..=3;
    let mut p = Pair::with_configs(LinkModel::default(), a, Config::new("B"));
    p.drive();
    assert_eq!((p.a.conn.version(), p.b.conn.version()), (3, 3));
    assert!(!p.b.conn.has_lane(ChannelKind::File));
    let key = p.open_session("old", ConnectOptions::default());
    let err = p.a.conn.send(key, ChannelKind::File, Bytes::from_static(b"x")).unwrap_err();
    assert_eq!(err, SendError::Unsupported { kind: ChannelKind::File, version: 3 });
    assert_eq!(p.a.conn.send_capacity(key, ChannelKind::File), 0);
    // The four lanes of version 3 (channels 4·s + lane) still work.
    exchange(&mut p);
}
