//! Fuzzes the engine past a completed handshake with several sessions, traffic, link cuts and resumes: the input
//! picks the link and the number of sessions (one to four, opened first), then is a script of operations on a
//! simulated pair of engines (send on a channel from either side, cut the link or attach a new transport,
//! corrupt a frame in flight, let time pass). No panic, no livelock,
//! and each side's reassembly buffers stay within the limits at every step.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use colink_frame::{LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair, Which};
use colink_proto::{ChannelKind, Config, ConnectOptions, LinkState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else { return };
    let mode = if head & 1 == 0 { LinkMode::Packet } else { LinkMode::Stream };
    let mtu = Mtu::new(if head & 2 == 0 { 247 } else { 2048 }).unwrap_or(Mtu::MIN);
    let limit = Config::new("fuzz-target").limits.max_buffered_bytes;
    let mut pair = Pair::new(LinkModel { mode, mtu, ..LinkModel::default() });
    let up = pair.drive_until(Duration::from_secs(5), |p| {
        p.a.conn.state() == LinkState::Established && p.b.conn.state() == LinkState::Established
    });
    assert!(up, "the handshake completes");
    // One to four sessions, opened on a clean link (the harness's opener insists that they open).
    let sessions: Vec<_> = (0..=(head >> 2) % 4)
        .map(|n| pair.open_session(&format!("s{n}"), ConnectOptions::default()))
        .collect();
    let mut linked = true;
    // Operations: [op][arg]...
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        match op % 5 {
            0 => {
                let session = sessions[usize::from(*arg) % sessions.len()];
                let kind = [ChannelKind::Message, ChannelKind::Data, ChannelKind::Image, ChannelKind::File]
                    [usize::from(*arg >> 4) % 4];
                let len = usize::from(*arg) * 97 % 20_000;
                let from = if arg & 8 == 0 { Which::A } else { Which::B };
                // Refusals (window full, session gone, too large) are expected answers, not failures.
                let _ = pair.side(from).conn.send(session, kind, Bytes::from(vec![*arg; len]));
            }
            1 if linked => {
                pair.cut();
                linked = false;
            }
            1 => {
                pair.reattach();
                linked = true;
            }
            2 => pair.corrupt_frame(if arg & 1 == 0 { Which::A } else { Which::B }, u64::from(*arg >> 1) % 8),
            _ => pair.drive_for(Duration::from_millis(u64::from(*arg) * 20)),
        }
        assert!(pair.drive_bounded(200_000).is_ok(), "the engines settle");
        assert!(pair.a.conn.reassembly_bytes() <= limit && pair.b.conn.reassembly_bytes() <= limit);
        for conn in [&pair.a.conn, &pair.b.conn] {
            let (held, fragments) = conn.held_beyond_gaps();
            assert!(held <= colink_proto::DEFAULT_REORDER_BUFFER && fragments <= 1024, "held beyond gaps: bounded");
        }
    }
});
