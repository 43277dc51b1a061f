//! Session goodput on the simulator's PHY profiles (LE Coded, LE 1M, LE 2M over L2CAP LE CoC; BR/EDR over RFCOMM)
//! as a share of each profile's link capacity, and small-message latency during a bulk transfer.
//!
//! Run: `cargo run --release -p colink --example goodput`. Two simulated devices open a session through the
//! driver (`colink::driver::Node`; for BR/EDR with `TransportPreference::BrEdr`, so the link is an RFCOMM stream
//! to the channel in the peer's advert), and one streams 64 KiB data messages to the other for each PHY profile
//! and MTU. Goodput is measured at the receiver between the first and the last message (virtual time, so the
//! figures are exact and repeatable); capacity is what the profile's link can carry at that MTU
//! (`PhyProfile::capacity_bps`). The latency lines time small messages one way (send to receipt) on an idle
//! link and while a bulk transfer runs; "wait behind the transfer" is the loaded latency less the host latency
//! and the message's own air time, in air-times of one fragment of the engine's small frame size (the MTU, or
//! `Config::max_frame` when that is smaller) — the size bulk frames drop back to while messages flow. The
//! "defaults" lines run the engine's default configuration (bulk frames grow to `Config::max_bulk_frame` while
//! no message was sent for `Config::bulk_grow_after`) at MTU 65535 and print goodput and wait together; the
//! first message after bulk ran alone is reported apart, since it waits behind the large frames. The last line
//! is `min goodput/capacity: X`.
//!
//! `-- --encrypt` runs every link authenticated and sealed (both nodes in one account; docs/security.md), and
//! the `connect time` line shows what the secure handshake adds to opening the first session.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink::driver::{LinkId, Node, NodeConfig, NodeEvents, SecurityConfig, TransportPreference};
use colink_ble::{DeviceId, LinkParams, Mtu, Phy};
use colink_proto::secure::{AccountOnly, Keypair, SecureConfig};
use colink_proto::{ChannelKind, ConnectOptions, Event, PeerInfo, SessionKey};
use colink_sim::{PhyProfile, Position, SimAir};

const MESSAGE: usize = 64 * 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    println!("{:<12} {:>6} {:>14} {:>14} {:>8}", "profile", "MTU", "capacity", "goodput", "share");
    let mut min: f64 = f64::MAX;
    for (name, phy, total) in [
        ("LE Coded", Phy::LeCoded, 1 << 20),
        ("LE 1M", Phy::Le1M, 2 << 20),
        ("LE 2M", Phy::Le2M, 4 << 20),
        ("BR/EDR", Phy::BrEdr, 6 << 20),
    ] {
        for mtu in [247u16, 672, 4096, 65535] {
            // Frames as large as the link MTU: the throughput configuration this table measures.
            let (capacity, goodput) = runtime.block_on(measure(phy, mtu, Tuning::Fixed(mtu), total));
            let share = goodput / capacity;
            min = min.min(share);
            println!(
                "{name:<12} {mtu:>6} {:>9.0} kbit/s {:>9.0} kbit/s {:>7.1}%",
                capacity / 1000.0,
                goodput / 1000.0,
                share * 100.0
            );
        }
    }
    // The default engine keeps frames at `max_frame` while messages flow, so that a message never waits long
    // behind a frame on the air, and lets bulk frames grow to `max_bulk_frame` while bulk runs alone.
    let defaults = colink_proto::Config::default();
    let (cap, bulk) = (defaults.max_frame, defaults.max_bulk_frame);
    for (name, phy, total) in [("LE 2M", Phy::Le2M, 4 << 20), ("BR/EDR", Phy::BrEdr, 6 << 20)] {
        let (capacity, goodput) = runtime.block_on(measure(phy, 65535, Tuning::Defaults, total));
        let (_, loaded, frame, floor) = runtime.block_on(latency(phy, 65535, Tuning::Defaults));
        let frames = |d: Duration| d.as_secs_f64() / frame.as_secs_f64();
        let first = frames(loaded[0].saturating_sub(floor));
        let mut rest = loaded[1..].to_vec();
        rest.sort();
        println!(
            "defaults on {name} at MTU 65535 (frames {cap} B, bulk alone {bulk} B): goodput {:.0} kbit/s, {:.1}% of \
             capacity; wait behind the transfer p99 {:.2} {cap}-byte fragment air-times ({:.1} ms) while messages \
             flow, {first:.2} for the first message after bulk ran alone (not in the min)",
            goodput / 1000.0,
            goodput / capacity * 100.0,
            frames(p99(&rest).saturating_sub(floor)),
            ms(p99(&rest).saturating_sub(floor)),
        );
    }
    for (name, phy) in [("LE 2M", Phy::Le2M), ("BR/EDR", Phy::BrEdr)] {
        let mtu = 247;
        let (idle, mut loaded, frame, floor) = runtime.block_on(latency(phy, mtu, Tuning::Fixed(mtu)));
        loaded.sort();
        let frames = |d: f64| d / frame.as_secs_f64();
        println!(
            "message latency on {name}, MTU {mtu}: p50/p99 idle {:.1}/{:.1} ms, during a bulk transfer {:.1}/{:.1} ms \
             (p99 {:+.2} fragment air-times over idle; wait behind the transfer p99 {:.2} fragment air-times)",
            ms(idle[idle.len() / 2]),
            ms(p99(&idle)),
            ms(loaded[loaded.len() / 2]),
            ms(p99(&loaded)),
            frames(p99(&loaded).as_secs_f64() - p99(&idle).as_secs_f64()),
            frames(p99(&loaded).saturating_sub(floor).as_secs_f64()),
        );
    }
    let connect = runtime.block_on(async {
        let Open { a, b, connect, .. } = open(Phy::Le2M, 247, Tuning::Fixed(247)).await;
        a.shutdown().await;
        b.shutdown().await;
        connect
    });
    let (rtt, encrypted) = (2.0 * PhyProfile::for_phy(Phy::Le2M).host_latency.as_secs_f64() * 1000.0, encrypt());
    println!(
        "connect time (LE 2M, MTU 247, dial to Connected, encryption {}): {:.1} ms (host round trip {rtt:.1} ms)",
        if encrypted { "on" } else { "off" },
        ms(connect)
    );
    println!("min goodput/capacity: {min:.3}");
}

/// Whether `--encrypt` was given: links authenticated and sealed.
fn encrypt() -> bool {
    std::env::args().any(|a| a == "--encrypt")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p99(v: &[Duration]) -> Duration {
    v[v.len() * 99 / 100]
}

/// How the engine is configured for a measurement.
#[derive(Debug, Clone, Copy)]
enum Tuning {
    /// Frames of this size (growth off) and a 256 KiB window: the throughput configuration of the table.
    Fixed(u16),
    /// `colink_proto::Config::default()`'s frame sizes and window.
    Defaults,
}

impl Tuning {
    /// The small frame size in force at link MTU `mtu`.
    fn small_frame(self, mtu: u16) -> u16 {
        match self {
            Self::Fixed(f) => f.min(mtu),
            Self::Defaults => colink_proto::Config::default().max_frame.min(mtu),
        }
    }
}

/// One-way latencies of 100 small messages sent one after another, idle (sorted) and while a bulk transfer
/// runs (in sending order), the air time of one fragment of the small frame size, and the latency floor (host
/// latency plus a probe's own air time).
async fn latency(phy: Phy, mtu: u16, tuning: Tuning) -> (Vec<Duration>, Vec<Duration>, Duration, Duration) {
    let profile = PhyProfile::for_phy(phy);
    let small = tuning.small_frame(mtu);
    let frame = profile.sdu_air_time(usize::from(small), mtu);
    // A probe's frame: its payload plus at least the fixed frame fields.
    let floor = profile.host_latency + profile.sdu_air_time(PROBE_LEN + colink_frame::MIN_FRAME_LEN, mtu);
    let Open { a, b: _b, mut eb, link, session, .. } = open(phy, mtu, tuning).await;
    let mut idle = probe(&a, &mut eb, link, session, 100).await;
    idle.sort();
    let bulk = a.send(link, session, ChannelKind::Data, Bytes::from(vec![0xA5; 8 << 20]));
    let (loaded, _) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            probe(&a, &mut eb, link, session, 100).await
        },
        bulk
    );
    (idle, loaded, frame, floor)
}

async fn measure(phy: Phy, mtu: u16, tuning: Tuning, total: usize) -> (f64, f64) {
    let capacity = PhyProfile::for_phy(phy).capacity_bps(mtu);
    let Open { a, b, mut eb, link, session, peer_session, .. } = open(phy, mtu, tuning).await;
    let payload = Bytes::from(vec![0x5A; MESSAGE]);
    let count = total / MESSAGE;
    let sender = async {
        let sends: Vec<_> = (0..count).map(|_| a.send(link, session, ChannelKind::Data, payload.clone())).collect();
        for s in futures::future::join_all(sends).await {
            s.unwrap();
        }
    };
    let receiver = async {
        let mut first = None;
        let mut last = tokio::time::Instant::now();
        let mut n = 0;
        while n < count {
            let e = eb.recv().await.unwrap();
            if let Event::Received { session, kind: ChannelKind::Data, payload } = e.event {
                assert_eq!(session, peer_session);
                assert_eq!(payload.len(), MESSAGE);
                n += 1;
                last = tokio::time::Instant::now();
                first.get_or_insert(last);
            }
        }
        (first.unwrap(), last)
    };
    let ((), (first, last)) = tokio::join!(sender, receiver);
    let seconds = (last - first).as_secs_f64();
    let goodput = ((count - 1) * MESSAGE) as f64 * 8.0 / seconds;
    a.shutdown().await;
    b.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    (capacity, goodput)
}

/// Length of a probe message.
const PROBE_LEN: usize = 9;

/// Sends `n` small messages one after another and returns their one-way latencies (send to receipt), in
/// sending order.
async fn probe(a: &Node, eb: &mut NodeEvents, link: LinkId, session: SessionKey, n: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let sent = tokio::time::Instant::now();
        let payload = Bytes::from(format!("probe {i:03}"));
        assert_eq!(payload.len(), PROBE_LEN);
        let (delivered, received) = tokio::join!(a.send(link, session, ChannelKind::Message, payload), async {
            loop {
                let e = eb.recv().await.unwrap();
                if matches!(e.event, Event::Received { kind: ChannelKind::Message, .. }) {
                    return sent.elapsed();
                }
            }
        });
        delivered.unwrap();
        out.push(received);
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    out
}

fn app(d: DeviceId) -> PeerInfo {
    PeerInfo {
        device_id: d.to_string(),
        bundle_name: "bench".into(),
        module_name: "m".into(),
        ability_name: "a".into(),
        service_name: "goodput".into(),
    }
}

/// Two nodes with one connected session from `a` to `b`.
struct Open {
    a: Node,
    _ea: NodeEvents,
    b: Node,
    eb: NodeEvents,
    link: LinkId,
    session: SessionKey,
    peer_session: SessionKey,
    /// From the connect call to `Connected` (dial, handshakes, session request and answer).
    connect: Duration,
}

/// Starts two nodes (see [`pair`]) and connects a session from the first to the second.
async fn open(phy: Phy, mtu: u16, tuning: Tuning) -> Open {
    let (a, mut ea, b, mut eb) = pair(phy, mtu, tuning).await;
    let started = tokio::time::Instant::now();
    let (link, session) = a.connect(app(a.device()), app(b.device()), ConnectOptions::default()).await.unwrap();
    let peer_session = accept(&b, &mut eb).await;
    while ea.recv().await.unwrap().event != (Event::Connected { session }) {}
    let connect = started.elapsed();
    Open { a, _ea: ea, b, eb, link, session, peer_session, connect }
}

/// Two nodes on a fresh air whose links use `phy` and `mtu`.
async fn pair(phy: Phy, mtu: u16, tuning: Tuning) -> (Node, NodeEvents, Node, NodeEvents) {
    let air = SimAir::builder(1).profile(PhyProfile::for_phy(phy)).build();
    let params = LinkParams::default().with_phy(phy).with_mtu(Mtu::new(mtu).unwrap());
    let start = |name: &str, x: f64, id: u8| {
        let adapter = air.adapter(name, Position::new(x, 0.0));
        let mut config = NodeConfig::default();
        config.link_params = params;
        if phy == Phy::BrEdr {
            config.transport = TransportPreference::BrEdr;
        }
        config.seed = Some(u64::from(id));
        if let Tuning::Fixed(frame) = tuning {
            // A window of several SDUs keeps the link busy across acknowledgement round trips.
            config.engine.send_window = 256 * 1024;
            config.engine.max_frame = frame;
            config.engine.max_bulk_frame = frame;
        }
        if encrypt() {
            let keys = Keypair::generate(&mut colink_proto::SeededEntropy::new(u64::from(id)));
            let mut secure = SecureConfig::new(keys);
            secure.account = Some([7; 32]);
            config.security = Some(SecurityConfig::new(secure, Arc::new(Mutex::new(AccountOnly))));
        }
        async move { Node::start(Arc::new(adapter), DeviceId::from_bytes([id; 16]), config).await.unwrap() }
    };
    let (a, ea) = start("a", 0.0, 1).await;
    let (b, eb) = start("b", 1.0, 2).await;
    (a, ea, b, eb)
}

async fn accept(b: &Node, events: &mut NodeEvents) -> SessionKey {
    loop {
        let e = events.recv().await.unwrap();
        if let Event::IncomingConnect { token, .. } = e.event {
            return b.accept(e.link, token).await.unwrap();
        }
    }
}
