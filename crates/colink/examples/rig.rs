//! The simulator's prediction of the VM rig's one-way LE CoC goodput, raw socket and colink, from its kernel model.
//!
//! Run: `cargo run --release -p colink --example rig`. The simulated link is the rig's (docs/vm-rig.md: LE CoC
//! between two `btvirt` controllers in one TCG guest): `PhyProfile::btvirt_le()` (no air limit) with
//! `KernelProfile::vm_rig()` (SO_SNDBUF 4 MiB charged in skb truesize, TIOCOUTQ queue depth, CPU time per write
//! and per KiB). The kernel's costs come from raw-socket figures only (docs/performance.md, "Teaching the
//! simulator the real link"); the colink figure it predicts is then compared with the rig's measured one. Each
//! transfer is the rig's: 2 MiB one way, raw in 65535-byte SDUs (timed until the receiver holds every byte),
//! colink as one data message (`send` until the peer holds it, as `Manager::send_data`) on a 62790-byte MTU.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink::driver::{Node, NodeConfig, NodeEvents};
use colink_ble::{Adapter, Advert, DeviceId, LinkMode, LinkParams, Mtu, Phy};
use colink_proto::{ChannelKind, ConnectOptions, Event, PeerInfo, SessionKey};
use colink_sim::{Environment, KernelProfile, PhyProfile, Position, SimAir};
use tokio::time::Instant;

/// Bytes per transfer (the rig's `--throughput-bytes` default).
const TOTAL: usize = 2 << 20;
/// The rig's raw figure in the run predicted (docs/performance.md: quiet CI run, kernel 6.1): the calibration.
const RIG_RAW_KIB_S: f64 = 1057.0;
/// The rig's colink figure in the same run: what the prediction is checked against.
const RIG_COLINK_KIB_S: f64 = 1066.0;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let k = KernelProfile::vm_rig();
    println!(
        "rig link model: KernelProfile::vm_rig() (per write {:.0} µs, per KiB {:.0} µs, SO_SNDBUF {} KiB, MPS {}) on \
         PhyProfile::btvirt_le()",
        k.per_write.as_secs_f64() * 1e6,
        k.per_kib.as_secs_f64() * 1e6,
        k.sndbuf / 1024,
        k.mps
    );
    let raw_kib_s = runtime.block_on(raw(k.clone()));
    println!(
        "raw LE CoC one-way (65535-byte SDUs, 2 MiB): predicted {raw_kib_s:.0} KiB/s; rig {RIG_RAW_KIB_S:.0} KiB/s (its \
         calibration point)"
    );
    // The build the rig measured: 4096-byte frames, no growth.
    let mut then = colink_proto::Config::default();
    then.max_bulk_frame = then.max_frame;
    let colink = runtime.block_on(session(k.clone(), then.clone()));
    println!(
        "colink one-way as the rig ran it (frames 4096 B, MTU 62790, send of 2 MiB): predicted {colink:.0} KiB/s; \
         rig {RIG_COLINK_KIB_S:.0} KiB/s; predicted/measured {:.2}; predicted colink/raw {:.2}",
        colink / RIG_COLINK_KIB_S,
        colink / raw_kib_s
    );
    let now = colink_proto::Config::default();
    let (small, bulk) = (now.max_frame, now.max_bulk_frame);
    let colink = runtime.block_on(session(k.clone(), now));
    println!(
        "colink one-way with today's defaults (frames {small} B, bulk alone {bulk} B): predicted {colink:.0} KiB/s, \
         colink/raw {:.2} (for the next rig run to check)",
        colink / raw_kib_s
    );
    // The rig's real MPS is not visible from user space; with 247-byte PDUs a 64 KiB SDU is charged 340 KB
    // instead of 2.1 MB, so several fit the send buffer at once.
    let k247 = k.with_mps(247);
    let (raw247, colink) = (runtime.block_on(raw(k247.clone())), runtime.block_on(session(k247, then)));
    println!(
        "sensitivity, MPS 247 instead of 23: raw {raw247:.0} KiB/s, colink as the rig ran it {colink:.0} KiB/s \
         (predicted/measured {:.2})",
        colink / RIG_COLINK_KIB_S
    );
}

/// The rig's air with `kernel`, receive buffers raised to 4 MiB as the rig raises them.
fn air(kernel: KernelProfile) -> SimAir {
    let mut env = Environment::default();
    env.kernel = Some(kernel);
    env.rx_buffer = 4 * 1024 * 1024;
    SimAir::builder(1).environment(env).profile(PhyProfile::btvirt_le()).build()
}

/// KiB/s of 2 MiB in 65535-byte SDUs on a raw packet link, until the receiver holds every byte.
async fn raw(kernel: KernelProfile) -> f64 {
    let air = air(kernel);
    let a = air.adapter("a", Position::new(0.0, 0.0));
    let b = air.adapter("b", Position::new(1.0, 0.0));
    let params = LinkParams::default().with_mtu(Mtu::MAX);
    let listener = b.listen(None, LinkMode::Packet, params).await.unwrap();
    let colink_ble::Port::L2cap(psm) = listener.port() else { unreachable!("a packet listener has a PSM") };
    let _adv = b.advertise(Advert::new(DeviceId::from_bytes([2; 16]).short()).with_psm(psm)).await.unwrap();
    let (la, lb) = tokio::join!(a.connect(b.address(), listener.port(), LinkMode::Packet, params), listener.accept());
    let (la, lb) = (la.unwrap(), lb.unwrap());
    let sdu = Bytes::from(vec![0x5A; 65535]);
    let start = Instant::now();
    let send = async {
        let mut sent = 0;
        while sent < TOTAL {
            let n = sdu.len().min(TOTAL - sent);
            la.send(sdu.slice(..n)).await.unwrap();
            sent += n;
        }
    };
    let recv = async {
        let mut got = 0;
        while got < TOTAL {
            got += lb.recv().await.unwrap().len();
        }
    };
    tokio::join!(send, recv);
    TOTAL as f64 / 1024.0 / start.elapsed().as_secs_f64()
}

/// KiB/s of one 2 MiB data message between two driver nodes with engine configuration `engine`, until the
/// sender learns that the peer holds it.
async fn session(kernel: KernelProfile, engine: colink_proto::Config) -> f64 {
    let air = air(kernel);
    let params = LinkParams::default().with_phy(Phy::Le2M).with_mtu(Mtu::new(62790).unwrap());
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
    let payload = Bytes::from(vec![0xA5; TOTAL]);
    let begin = Instant::now();
    let (sent, ()) = tokio::join!(a.send(link, session, ChannelKind::Data, payload), drain(&mut eb));
    sent.unwrap();
    let kib_s = TOTAL as f64 / 1024.0 / begin.elapsed().as_secs_f64();
    a.shutdown().await;
    b.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    kib_s
}

/// Reads `events` until the data message arrived.
async fn drain(events: &mut NodeEvents) {
    loop {
        let e = events.recv().await.unwrap();
        if let Event::Received { kind: ChannelKind::Data, payload, .. } = e.event {
            assert_eq!(payload.len(), TOTAL);
            return;
        }
    }
}

fn app(d: DeviceId) -> PeerInfo {
    PeerInfo {
        device_id: d.to_string(),
        bundle_name: "bench".into(),
        module_name: "m".into(),
        ability_name: "a".into(),
        service_name: "rig".into(),
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
