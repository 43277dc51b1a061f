//! Fuzzes the session engine with what a hostile peer could send: the session-layer decoders directly, then a
//! responder `Connection` that completed a real handshake with an initiator and accepted a session from it (so
//! session 1's lanes are open), fed a sequence of frames (valid CRC, arbitrary kind, channel, sequence and
//! payload, so the input gets past the CRC into the handshake, control, ack and data paths) at advancing
//! times. No panic, and buffered memory stays within the reassembly limits.
#![no_main]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair};
use colink_proto::{Config, ConnectOptions, LinkState, fuzzing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::decode_payload(&Bytes::copy_from_slice(data));

    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mode = if mode & 1 == 0 { LinkMode::Packet } else { LinkMode::Stream };
    let limit = Config::new("fuzz-target").limits.max_buffered_bytes;
    // A real handshake and an accepted session first: A (the initiator) connects, B (the target) accepts.
    let link = LinkModel { mode, mtu: Mtu::new(247).unwrap_or(Mtu::MIN), ..LinkModel::default() };
    let mut pair = Pair::new(link);
    let up = pair.drive_until(Duration::from_secs(5), |p| {
        p.a.conn.state() == LinkState::Established && p.b.conn.state() == LinkState::Established
    });
    assert!(up, "the handshake completes");
    let session = pair.open_session("fuzz", ConnectOptions::default());
    assert!(pair.b.conn.sessions().any(|s| s == session), "the session is open on the target");
    let mut now = pair.now;
    let mut conn = pair.b.conn;
    // Records: [kind][channel][seq][dt][len][payload...]
    while let [kind, channel, seq, dt, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*dt) * 4);
        let kind = FrameKind::from_u8(kind % 8).unwrap_or(FrameKind::Control);
        // Channels 0..16: the link channels, session 0's invalid lanes and session 1's six lanes and two
        // reserved ones (8·s + lane in version 4, docs/sessions.md §1.1).
        let Ok(frame) = Frame::single(kind, u32::from(*channel % 16), u32::from(*seq), Bytes::copy_from_slice(payload))
        else {
            continue;
        };
        let mut wire = BytesMut::new();
        if frame.encode(mode, &mut wire).is_err() {
            continue;
        }
        conn.handle_input(now, wire.freeze());
        conn.handle_timeout(now);
        while conn.poll_transmit(now).is_some() {}
        while conn.poll_event().is_some() {}
        assert!(conn.reassembly_bytes() <= limit);
        let (held, fragments) = conn.held_beyond_gaps();
        assert!(held <= colink_proto::DEFAULT_REORDER_BUFFER && fragments <= 1024, "held beyond gaps: bounded");
    }
});
