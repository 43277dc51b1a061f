//! The CPU ceiling of colink's session layer: goodput per core of two driver nodes over a link with no radio limit.
//!
//! Run: `cargo run --release -p colink --example ceiling`. Two `colink::driver::Node`s (engine, driver task,
//! framing, acknowledgements — everything above the `Link` trait) talk over the simulator with
//! `PhyProfile::unlimited()` (no air time, no connection events, no latency) on a real-time, single-threaded
//! tokio runtime, so everything — both nodes and the simulated link — runs on one core. One node sends
//! `TOTAL` bytes of data messages to the other; the figure is payload bytes divided by the process's CPU
//! seconds during the transfer (`/proc/self/task/*/schedstat`), next to wall-clock goodput. For comparison it
//! times colink-frame's own path (fragment, encode, decode, reassemble; what `cargo bench -p colink-frame
//! --bench codec` measures as `frame_path_4MiB/colink_stream/4096`) over the same bytes, per CPU second.
//! docs/performance.md ("The in-memory ceiling") says where the time goes.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink::driver::{Node, NodeConfig, NodeEvents};
use colink_ble::{DeviceId, LinkParams, Mtu, Phy};
use colink_frame::{Fragmenter, FrameKind, LinkMode, Reassembler, StreamCodec};
use colink_proto::{ChannelKind, ConnectOptions, Event, PeerInfo, SessionKey};
use colink_sim::{PhyProfile, Position, SimAir};

/// Payload bytes per run.
const TOTAL: usize = 256 << 20;
/// Bytes per data message.
const MESSAGE: usize = 64 << 10;
/// Sends queued and not yet delivered at most (2 MiB: twice the engine's per-channel buffer).
const OUTSTANDING: usize = 32;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut fixed = colink_proto::Config::default();
    fixed.max_bulk_frame = fixed.max_frame;
    let defaults = colink_proto::Config::default();
    let codec = codec_per_cpu_second(usize::from(defaults.max_frame));
    println!(
        "colink-frame path alone (fragment + encode + decode + reassemble, stream mode, {}-byte frames): {:.0} MiB \
         per CPU second",
        defaults.max_frame,
        codec / MIB
    );
    for (what, config) in [
        (format!("defaults (frames {} B, bulk alone {} B)", defaults.max_frame, defaults.max_bulk_frame), defaults),
        (format!("frames fixed at {} B", fixed.max_frame), fixed),
    ] {
        let (wall, cpu) = runtime.block_on(session(config));
        let per_core = TOTAL as f64 / cpu;
        println!(
            "session layer, two nodes on one core, packet mode MTU 65535, {what}: {:.0} MiB/s wall, {cpu:.2} CPU s \
             for {} MiB: {:.0} MiB per CPU second ({:.2} of the frame path alone)",
            TOTAL as f64 / wall / MIB,
            TOTAL >> 20,
            per_core / MIB,
            per_core / codec
        );
    }
    println!("criterion's figure for the frame path: cargo bench -p colink-frame --bench codec (frame_path_4MiB)");
}

const MIB: f64 = 1024.0 * 1024.0;

/// CPU seconds all threads of this process have run, from `/proc/self/task/*/schedstat` (nanoseconds; the
/// scheduler's own accounting, finer than `/proc/self/stat`'s 10 ms ticks).
fn cpu_seconds() -> f64 {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task (Linux only)") {
        let path = task.unwrap().path().join("schedstat");
        // A thread that ended meanwhile has no file any more.
        if let Ok(s) = std::fs::read_to_string(path) {
            nanos += s.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    nanos as f64 / 1e9
}

/// Bytes per CPU second of colink-frame's path alone over `TOTAL` bytes in `MESSAGE`-sized messages.
fn codec_per_cpu_second(frame: usize) -> f64 {
    let payload = Bytes::from(vec![0x5A; MESSAGE]);
    let mtu = colink_frame::Mtu::new(frame).unwrap();
    let mut codec = StreamCodec::default();
    let mut reassembler = Reassembler::default();
    let (cpu0, now) = (cpu_seconds(), Instant::now());
    let mut wire = BytesMut::new();
    let mut got = 0;
    for seq in 0..(TOTAL / MESSAGE) as u32 {
        let mut f = Fragmenter::new(FrameKind::Data, 5, seq, payload.clone(), LinkMode::Stream, mtu).unwrap();
        while f.next_frame(&mut wire).is_some() {
            let frame = codec.decode(&mut wire).unwrap().unwrap();
            if let Some(m) = reassembler.push(now, frame).unwrap() {
                got += m.payload.len();
            }
        }
    }
    assert_eq!(got, TOTAL);
    TOTAL as f64 / (cpu_seconds() - cpu0)
}

/// Wall and CPU seconds of `TOTAL` bytes from one node to the other with engine configuration `engine`.
async fn session(engine: colink_proto::Config) -> (f64, f64) {
    let air = SimAir::builder(1).profile(PhyProfile::unlimited()).build();
    let params = LinkParams::default().with_phy(Phy::Le2M).with_mtu(Mtu::MAX);
    let start = |name: &str, x: f64, id: u8| {
        let adapter = air.adapter(name, Position::new(x, 0.0));
        let mut config = NodeConfig::default();
        config.link_params = params;
        config.seed = Some(u64::from(id));
        config.engine = engine.clone();
        async move { Node::start(Arc::new(adapter), DeviceId::from_bytes([id; 16]), config).await.unwrap() }
    };
    let (a, mut ea) = start("a", 0.0, 1).await;
    let (b, mut eb) = start("b", 1.0, 2).await;
    let (link, session) = a.connect(app(a.device()), app(b.device()), ConnectOptions::default()).await.unwrap();
    let _peer = accept(&b, &mut eb).await;
    while ea.recv().await.unwrap().event != (Event::Connected { session }) {}
    let payload = Bytes::from(vec![0xA5; MESSAGE]);
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let send = async {
        // At most `OUTSTANDING` sends queued at once, as an application streaming a file would keep.
        let mut deliveries: std::collections::VecDeque<colink::driver::Delivery> = std::collections::VecDeque::new();
        for _ in 0..TOTAL / MESSAGE {
            if deliveries.len() == OUTSTANDING {
                deliveries.pop_front().unwrap().await.unwrap();
            }
            deliveries.push_back(a.enqueue(link, session, ChannelKind::Data, payload.clone()).await.unwrap());
        }
        for d in deliveries {
            d.await.unwrap();
        }
    };
    let ((), ()) = tokio::join!(send, receive(&mut eb));
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    a.shutdown().await;
    b.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    (wall, cpu)
}

/// Reads `events` until `TOTAL` bytes of data arrived.
async fn receive(events: &mut NodeEvents) {
    let mut got = 0;
    while got < TOTAL {
        if let Event::Received { kind: ChannelKind::Data, payload, .. } = events.recv().await.unwrap().event {
            got += payload.len();
        }
    }
}

fn app(d: DeviceId) -> PeerInfo {
    PeerInfo {
        device_id: d.to_string(),
        bundle_name: "bench".into(),
        module_name: "m".into(),
        ability_name: "a".into(),
        service_name: "ceiling".into(),
    }
}

async fn accept(b: &Node, events: &mut NodeEvents) -> SessionKey {
    loop {
        let e = events.recv().await.unwrap();
        if let Event::IncomingConnect { token, .. } = e.event {
            return b.accept(e.link, token).await.unwrap();
        }
    }
}
