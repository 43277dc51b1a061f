//! Pushes 64 MiB through colink-frame and through the tokio-util + crc32fast baseline at four MTUs, side by side.
//!
//! Run: `cargo run --release -p colink-frame --example codec_bench [MiB]`. Each cell is the best of seven
//! runs, alternating between the pipelines; the last line is the geometric mean over the MTUs of colink's stream-mode throughput divided by the
//! baseline's, measured in the same process one after the other, so machine noise affects both alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

#[path = "../benches/common/pipelines.rs"]
mod pipelines;

/// Times `f` once, checking that it returned the message intact.
fn time(f: impl FnOnce() -> bytes::Bytes, expect: &bytes::Bytes) -> Duration {
    let t = Instant::now();
    let out = f();
    let d = t.elapsed();
    assert!(out == *expect, "pipeline corrupted the message");
    d
}

/// Runs per pipeline and MTU; the best is reported.
const ROUNDS: usize = 7;

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let message = pipelines::message(mib << 20);
    let rate = |d: Duration| (message.len() as f64 / d.as_secs_f64()) / 1e6;
    println!(
        "colink-frame vs tokio-util LengthDelimitedCodec + crc32fast, {mib} MiB per run, best of {ROUNDS} alternating rounds (CRC-32C in hardware: {})",
        colink_frame::crc_hardware_available()
    );
    println!("{:>6} {:>16} {:>16} {:>16} {:>8}", "MTU", "colink stream", "colink packet", "baseline", "ratio");
    let mut log_sum = 0.0;
    let mtus = [247usize, 672, 4096, 65535];
    for mtu in mtus {
        // Rounds alternate between the pipelines so that drift in machine load hits all of them alike.
        let (mut s, mut p, mut b) = (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..ROUNDS {
            s = s.min(time(|| pipelines::colink_stream(&message, mtu), &message));
            p = p.min(time(|| pipelines::colink_packet(&message, mtu), &message));
            b = b.min(time(|| pipelines::baseline(&message, mtu), &message));
        }
        let ratio = rate(s) / rate(b);
        log_sum += ratio.ln();
        println!("{mtu:>6} {:>11.0} MB/s {:>11.0} MB/s {:>11.0} MB/s {:>8.2}", rate(s), rate(p), rate(b), ratio);
    }
    println!("ratio colink/baseline throughput: {:.2}", (log_sum / mtus.len() as f64).exp());
}
