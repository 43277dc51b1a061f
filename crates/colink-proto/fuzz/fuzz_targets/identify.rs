//! Fuzzes the link-identification reader: what a stranger's first bytes on an accepted transport do to
//! `Identify::push` (the driver feeds it before any handshake). The input picks the link mode and is cut into
//! chunks as a socket might deliver them. No panic; once it gives up (an error), it stays given up; it never
//! reads past `IDENTIFY_LIMIT` bytes without giving up.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::LinkMode;
use colink_proto::{IDENTIFY_LIMIT, Identify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else { return };
    let mode = if head & 1 == 0 { LinkMode::Packet } else { LinkMode::Stream };
    let mut identify = Identify::new(mode);
    let mut now = Instant::now();
    let mut fed = 0usize;
    let mut failed = false;
    // Records: [len][bytes...] (len 0 stands for 256, so chunks may reach a whole small SDU).
    while let [len, tail @ ..] = rest {
        let len = if *len == 0 { 256 } else { usize::from(*len) }.min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(1);
        fed += chunk.len();
        match identify.push(now, &Bytes::copy_from_slice(chunk)) {
            Ok(found) => {
                assert!(!failed, "an error is final");
                assert!(fed <= IDENTIFY_LIMIT, "read {fed} bytes without giving up");
                if found.is_some() {
                    return;
                }
            }
            Err(_) => failed = true,
        }
    }
});
