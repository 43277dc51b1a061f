//! Fuzzes the session engine with what a hostile peer could send: the session-layer decoders directly, then a
//! responder `Connection` fed a sequence of frames (valid CRC, arbitrary kind, channel, sequence and payload,
//! so the input gets past the CRC into the handshake, control, ack and data paths) at advancing times. No
//! panic, and buffered memory stays within the reassembly limits.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink_proto::{Config, Connection, Role, SeededEntropy, Transport, fuzzing};
use colink_frame::{Frame, FrameKind, LinkMode, Mtu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::decode_payload(&Bytes::copy_from_slice(data));

    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mode = if mode & 1 == 0 { LinkMode::Packet } else { LinkMode::Stream };
    let start = Instant::now();
    let mut now = start;
    let config = Config::new("fuzz-target");
    let limit = config.limits.max_buffered_bytes;
    let mut conn = Connection::new(now, config, Role::Responder, Box::new(SeededEntropy::new(7)));
    conn.attach(now, Transport { mode, mtu: Mtu::new(247).unwrap_or(Mtu::MIN) });
    // Records: [kind][channel][seq][dt][len][payload...]
    while let [kind, channel, seq, dt, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*dt) * 4);
        let kind = FrameKind::from_u8(kind % 8).unwrap_or(FrameKind::Control);
        let Ok(frame) = Frame::single(kind, u32::from(*channel % 8), u32::from(*seq), Bytes::copy_from_slice(payload))
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
    }
});
