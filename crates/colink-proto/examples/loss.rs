//! Bulk goodput with and without byte errors, and the latency of a small message whose frame is corrupted
//! during a bulk transfer, on the deterministic harness (virtual time, default `Config`).
//!
//! `cargo run --release -p colink-proto --example loss`

use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::{LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair, Which};
use colink_proto::{ChannelKind, ConnectOptions, Event, SessionKey};

/// Payload bytes of the bulk transfer.
const TOTAL: usize = 8 * 1024 * 1024;
/// Payload bytes of each data message.
const MESSAGE: usize = 64 * 1024;
/// The byte error rate of the lossy runs, in errors per 10⁹ bytes (1e-4).
const ERRORS_PER_BILLION: u64 = 100_000;

fn main() {
    println!(
        "bulk goodput, {} MiB of {} KiB data messages, default Config, LE 2M model (175 000 B/s, 10 ms)",
        TOTAL >> 20,
        MESSAGE >> 10
    );
    println!(
        "{:>6} | {:>12} | {:>12} | {:>6} | {:>14} | {:>10}",
        "MTU", "clean kB/s", "1e-4 kB/s", "ratio", "frames lost", "resent"
    );
    let mut min_ratio = f64::MAX;
    for mtu in [247, 672, 4096, 65535] {
        let clean = bulk(mtu, 0);
        let lossy = bulk(mtu, ERRORS_PER_BILLION);
        let ratio = lossy.goodput / clean.goodput;
        min_ratio = min_ratio.min(ratio);
        println!(
            "{mtu:>6} | {:>12.1} | {:>12.1} | {ratio:>6.3} | {:>6} of {:>6} | {:>10}",
            clean.goodput / 1000.0,
            lossy.goodput / 1000.0,
            lossy.errored,
            lossy.frames,
            lossy.resent,
        );
    }
    println!();
    println!(
        "latency of a 100-byte message whose frame is corrupted during the transfer (retransmission timeout 1 s):"
    );
    for mtu in [247, 65535] {
        let (clean, lost) = corrupted_message_latency(mtu);
        println!("  MTU {mtu:>5}: delivered {:.1} ms after the send (uncorrupted: {:.1} ms)", ms(lost), ms(clean));
    }
    println!();
    println!("latency of 100-byte messages sent every 100 ms during the transfer at 1e-4 (each frame may be hit):");
    for mtu in [247, 65535] {
        let mut l = messages_during_lossy_transfer(mtu);
        l.sort();
        let pick = |q: f64| ms(l[((l.len() - 1) as f64 * q) as usize]);
        println!(
            "  MTU {mtu:>5}: {} messages, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0)
        );
    }
    println!();
    println!("min goodput ratio at 1e-4: {min_ratio:.3}");
}

/// What one bulk run measured.
struct Run {
    /// Payload bytes per second of virtual time.
    goodput: f64,
    /// Frames A put on the air.
    frames: u64,
    /// Of which byte errors corrupted.
    errored: u64,
    /// Fragments A sent again.
    resent: u64,
}

fn link(mtu: usize, errors: u64) -> LinkModel {
    LinkModel {
        mode: LinkMode::Packet,
        mtu: Mtu::new(mtu).unwrap_or(Mtu::MIN),
        byte_errors_per_billion: errors,
        error_seed: 7,
        ..LinkModel::default()
    }
}

fn established(mtu: usize, errors: u64) -> (Pair, SessionKey) {
    let mut p = Pair::new(link(mtu, 0));
    p.drive();
    let key = p.open_session("bulk", ConnectOptions { need_send_data: true, ..ConnectOptions::default() });
    p.link = link(mtu, errors);
    (p, key)
}

fn payload(i: usize) -> Bytes {
    (0..MESSAGE).map(|j| (j as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ i as u8).collect()
}

/// Sends `TOTAL` bytes of data messages from A to B; returns when the last arrived.
fn transfer(p: &mut Pair, key: SessionKey, mut during: impl FnMut(&mut Pair, usize)) -> Instant {
    let n = TOTAL / MESSAGE;
    let mut sent = 0;
    let seen = p.b.events.len();
    let done = |p: &Pair| {
        p.b.events[seen..].iter().filter(|(_, e)| matches!(e, Event::Received { kind: ChannelKind::Data, .. })).count()
    };
    while done(p) < n {
        while sent < n && p.a.conn.send(key, ChannelKind::Data, payload(sent)).is_ok() {
            sent += 1;
        }
        during(p, done(p));
        p.drive_for(Duration::from_millis(50));
    }
    let got: Vec<(Instant, Bytes)> = p.b.events[seen..]
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Received { kind: ChannelKind::Data, payload, .. } => Some((*t, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), n, "every message exactly once");
    for (i, (_, m)) in got.iter().enumerate() {
        assert_eq!(*m, payload(i), "message {i} intact and in order");
    }
    got.last().map_or(p.now, |(t, _)| *t)
}

fn bulk(mtu: usize, errors: u64) -> Run {
    let (mut p, key) = established(mtu, errors);
    let start = p.now;
    let (frames0, resent0) = (p.frames_on_air(Which::A), p.a.conn.stats().fragments_resent);
    let end = transfer(&mut p, key, |_, _| {});
    Run {
        goodput: TOTAL as f64 / end.duration_since(start).as_secs_f64(),
        frames: p.frames_on_air(Which::A) - frames0,
        errored: p.frames_errored(Which::A),
        resent: p.a.conn.stats().fragments_resent - resent0,
    }
}

/// Sends a 100-byte message a quarter into a clean bulk transfer, once with its frame intact and once with its
/// frame corrupted; returns both latencies.
fn corrupted_message_latency(mtu: usize) -> (Duration, Duration) {
    let one = |corrupt: bool| {
        let (mut p, key) = established(mtu, 0);
        let mut sent_at = None;
        let quarter = TOTAL / MESSAGE / 4;
        let seen = p.b.events.len();
        transfer(&mut p, key, |p, done| {
            if done >= quarter && sent_at.is_none() {
                let now = p.now;
                if corrupt {
                    let next = p.frames_on_air(Which::A);
                    p.corrupt_frame(Which::A, next);
                }
                if p.a.conn.send(key, ChannelKind::Message, Bytes::from(vec![7u8; 100])).is_ok() {
                    sent_at = Some(now);
                }
            }
        });
        let message = |p: &Pair| {
            p.b.events[seen..].iter().any(|(_, e)| matches!(e, Event::Received { kind: ChannelKind::Message, .. }))
        };
        p.drive_until(Duration::from_secs(60), message);
        let arrived = p.b.events[seen..].iter().find_map(|(t, e)| match e {
            Event::Received { kind: ChannelKind::Message, .. } => Some(*t),
            _ => None,
        });
        match (sent_at, arrived) {
            (Some(s), Some(a)) => a.duration_since(s),
            _ => Duration::MAX,
        }
    };
    (one(false), one(true))
}

/// Latencies of small messages sent every 100 ms during a bulk transfer at a byte error rate of 1e-4.
fn messages_during_lossy_transfer(mtu: usize) -> Vec<Duration> {
    let (mut p, key) = established(mtu, ERRORS_PER_BILLION);
    let mut sent = Vec::new();
    let mut next = p.now;
    let seen = p.b.events.len();
    transfer(&mut p, key, |p, _| {
        if p.now >= next && p.a.conn.send(key, ChannelKind::Message, Bytes::from(vec![1u8; 100])).is_ok() {
            sent.push(p.now);
            next = p.now + Duration::from_millis(100);
        }
    });
    let message = |p: &Pair| {
        p.b.events[seen..]
            .iter()
            .filter(|(_, e)| matches!(e, Event::Received { kind: ChannelKind::Message, .. }))
            .count()
    };
    let n = sent.len();
    p.drive_until(Duration::from_secs(60), |p| message(p) == n);
    let arrived: Vec<Instant> = p.b.events[seen..]
        .iter()
        .filter_map(|(t, e)| matches!(e, Event::Received { kind: ChannelKind::Message, .. }).then_some(*t))
        .collect();
    sent.iter().zip(arrived).map(|(s, a)| a.duration_since(*s)).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
