//! Hostile peers against the engine: what they announce is never allocated, what they start is bounded, and a
//! peer that never acknowledges holds at most the configured window and buffers of the sender's memory. Each
//! bound is asserted through the engine's counters (`reassembly_bytes`, `inflight_bytes`, `send_capacity`).

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, Header, LinkMode, Position};
use colink_proto::harness::{LinkModel, Pair};
use colink_proto::{ChannelKind, Config, ConnectOptions, Event, LinkState, SendError, SessionKey};

/// The wire channel of `session`'s lane `kind` on `p`'s link (docs/sessions.md §1.1).
fn channel(p: &Pair, session: SessionKey, kind: ChannelKind) -> u32 {
    p.b.conn.wire_channel(session, kind).expect("an established link has the lane")
}

/// One packet-mode frame as a hostile peer would write it: any header it likes, a valid CRC.
fn frame(kind: FrameKind, channel: u32, seq: u32, position: Position, last: bool, payload: &[u8]) -> Bytes {
    let f = Frame { header: Header { kind, channel, seq, position, last }, payload: Bytes::copy_from_slice(payload) };
    let mut out = BytesMut::new();
    f.encode(LinkMode::Packet, &mut out).unwrap();
    out.freeze()
}

fn continuation(index: u32) -> Position {
    Position::Continuation { index: NonZeroU32::new(index).unwrap() }
}

fn established() -> Pair {
    let mut p = Pair::new(LinkModel::default());
    p.drive();
    assert_eq!(p.b.conn.state(), LinkState::Established);
    p
}

#[test]
fn a_huge_announced_size_allocates_only_what_arrived() {
    let mut p = established();
    let key = p.open_session("huge", ConnectOptions::default());
    let data = channel(&p, key, ChannelKind::Data);
    let chunk = [0x5Au8; 200];
    // A data message announcing 4 GiB (the data limit), of which only 50 fragments ever arrive.
    let now = p.now;
    p.b.conn.handle_input(now, frame(FrameKind::Data, data, 0, Position::First { total_len: u32::MAX }, false, &chunk));
    for i in 1..50 {
        p.b.conn.handle_input(now, frame(FrameKind::Data, data, 0, continuation(i), false, &chunk));
        // Held: what arrived, not what was announced.
        assert!(p.b.conn.reassembly_bytes() <= u64::from(i + 1) * 200, "{}", p.b.conn.reassembly_bytes());
    }
    assert_eq!(p.b.conn.reassembly_bytes(), 50 * 200);
    assert_eq!(p.b.conn.state(), LinkState::Established);
    // An image announcing more than the image limit (64 MiB) is a protocol error: the link closes at once,
    // having allocated nothing for it.
    let image = channel(&p, key, ChannelKind::Image);
    let before = p.b.conn.reassembly_bytes();
    p.b.conn
        .handle_input(now, frame(FrameKind::Image, image, 0, Position::First { total_len: 65 << 20 }, false, &chunk));
    assert!(p.b.conn.reassembly_bytes() <= before);
    let closed = std::iter::from_fn(|| p.b.conn.poll_event()).any(|e| matches!(e, Event::Closed(_)));
    assert!(closed && p.b.conn.state() == LinkState::Closed, "an over-limit announcement closes the link");
}

#[test]
fn many_partial_messages_are_bounded() {
    // 80 sessions, each with a data message started and never finished: the engine keeps at most 64 partial
    // messages (docs/protocol.md §4.3), then closes the link; memory never exceeds what those partials hold.
    let mut p = established();
    let keys: Vec<SessionKey> = (0..80).map(|i| p.open_session(&format!("s{i}"), ConnectOptions::default())).collect();
    let chunk = [1u8; 180];
    let now = p.now;
    let mut closed_at = None;
    for (n, key) in keys.iter().enumerate() {
        let f = frame(
            FrameKind::Data,
            channel(&p, *key, ChannelKind::Data),
            0,
            Position::First { total_len: 1 << 20 },
            false,
            &chunk,
        );
        p.b.conn.handle_input(now, f);
        assert!(p.b.conn.reassembly_bytes() <= 64 * 180, "{} bytes held", p.b.conn.reassembly_bytes());
        if p.b.conn.state() == LinkState::Closed {
            closed_at = Some(n + 1);
            break;
        }
    }
    assert_eq!(closed_at, Some(65), "the 65th partial message closes the link");
}

#[test]
fn a_peer_that_never_acknowledges_holds_at_most_the_window_and_the_channel_buffer() {
    let mut p = established();
    let key = p.open_session("mute", ConnectOptions::default());
    let defaults = Config::default();
    // From now on nothing B says arrives (it "never acknowledges"), and A keeps sending 64 KiB blocks.
    p.blackhole = true;
    let block = Bytes::from(vec![7u8; 64 << 10]);
    let mut accepted = 0u64;
    let mut max_inflight = 0;
    for _ in 0..400 {
        match p.a.conn.send(key, ChannelKind::Data, block.clone()) {
            Ok(_) => accepted += block.len() as u64,
            Err(SendError::WouldBlock) => {}
            Err(e) => panic!("{e}"),
        }
        p.drive_for(Duration::from_millis(50));
        max_inflight = max_inflight.max(p.a.conn.inflight_bytes());
        if p.a.conn.state() != LinkState::Established {
            break;
        }
    }
    // Accepted payload: the channel buffer (1 MiB) and the one block that may always enter an empty channel.
    assert!(accepted <= defaults.channel_buffer + block.len() as u64, "accepted {accepted} bytes");
    // On the wire: never more than the send window.
    assert!(max_inflight <= defaults.send_window, "in flight {max_inflight}");
    assert_eq!(p.a.conn.send_capacity(key, ChannelKind::Data), 0, "the channel is full, sends wait");
    // The silent peer is dropped after the idle timeout; the link then waits for a resume, holding no more.
    p.drive_for(Duration::from_secs(35));
    assert_ne!(p.a.conn.state(), LinkState::Established);
    assert_eq!(p.a.conn.inflight_bytes(), 0);
}

#[test]
fn empty_messages_to_an_app_that_does_not_read_are_bounded_by_credit_too() {
    // Version 3 charges every message MESSAGE_CHARGE bytes of credit beyond its payload: a peer sending endless
    // empty messages to an app that reads nothing gets window / MESSAGE_CHARGE of them through, then waits.
    let window = 64 * 1024;
    let mut b = Config::new("B");
    b.receive_buffer = window;
    let mut p = Pair::with_configs(LinkModel::default(), Config::new("A"), b);
    p.drive();
    assert!(p.a.conn.version() >= 3, "the per-message charge needs version 3");
    let key = p.open_session("empty", ConnectOptions::default());
    p.b.reading = false;
    const SENT: usize = 5000;
    for _ in 0..SENT {
        p.a.conn.send(key, ChannelKind::Data, Bytes::new()).unwrap();
    }
    p.drive_for(Duration::from_secs(20));
    let received = |p: &Pair| p.b.events.iter().filter(|(_, e)| matches!(e, Event::Received { .. })).count();
    let held = received(&p);
    let bound = (window / colink_proto::MESSAGE_CHARGE) as usize;
    assert!(held <= bound, "{held} empty messages queued for an app that reads nothing (bound {bound})");
    assert!(held >= bound / 2, "the window should still be used: {held}");
    assert_eq!(p.b.conn.unread_bytes(key, ChannelKind::Data), Some(held as u64 * colink_proto::MESSAGE_CHARGE));
    // The app reads: the rest follows, each message once.
    p.b.read_all(p.now);
    p.drive_for(Duration::from_secs(60));
    assert_eq!(received(&p), SENT);
    assert_eq!(p.b.conn.state(), LinkState::Established);
}
