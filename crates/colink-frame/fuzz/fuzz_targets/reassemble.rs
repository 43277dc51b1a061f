//! Fuzzes reassembly: a sequence of arbitrary packet-mode frames pushed at advancing times. Whatever the
//! peer sends, buffered memory stays within the limits, and any message delivered consists exactly of the
//! payloads of its fragments.
#![no_main]

use bytes::Bytes;
use colink_frame::{FrameKind, Limits, Reassembler, decode_packet};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut limits = Limits::default();
    limits.max_partials = 4;
    limits.max_buffered_bytes = 2048;
    limits.stall_timeout = Duration::from_millis(50);
    limits.set_max_message_len(FrameKind::Data, 1500);
    let mut r = Reassembler::new(limits);
    let start = Instant::now();
    let mut now = start;
    // Expected payload so far per (channel, seq), tracked independently of the reassembler.
    let mut shadow: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    // Input: records of [len: u8][dt: u8][frame bytes...]
    let mut rest = data;
    while let [len, dt, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame_bytes, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*dt));
        for s in r.handle_timeout(now) {
            shadow.remove(&(s.channel, s.seq));
        }
        let Ok(frame) = decode_packet(Bytes::copy_from_slice(frame_bytes)) else { continue };
        let key = (frame.header.channel, frame.header.seq);
        let payload = frame.payload.clone();
        let index = frame.header.position.index();
        match r.push(now, frame) {
            Ok(Some(message)) => {
                let mut expected = if index == 0 { Vec::new() } else { shadow.remove(&key).unwrap_or_default() };
                expected.extend_from_slice(&payload);
                assert_eq!(&message.payload[..], &expected[..]);
            }
            Ok(None) => {
                let entry = shadow.entry(key).or_default();
                if index == 0 {
                    entry.clear();
                }
                entry.extend_from_slice(&payload);
            }
            Err(_) => {
                if r.next_expected(key.0, key.1).is_none() {
                    shadow.remove(&key);
                }
            }
        }
        assert!(r.buffered_bytes() <= 2048);
        assert!(r.partial_count() <= 4);
    }
});
