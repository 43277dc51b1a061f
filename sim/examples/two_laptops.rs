//! Two simulated laptops: discovery with RSSI, numeric-comparison pairing, a 1 MB transfer on LE 2M, a link drop.
//!
//! Run: `cargo run --release -p colink-sim --example two_laptops` (real time, about 10 s), or add `--fast` to run
//! the same scenario in virtual time. `--seed N` changes the simulated noise.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{
    Adapter, Advert, Agent, AgentResult, BoxFuture, DeviceId, IoCapability, LinkError, LinkMode, LinkParams, Passkey,
    PeerAddress, Port, ScanEvent, ScanFilter, ServiceFilter,
};
use colink_sim::{Position, SimAir};
use futures::StreamExt;
use tokio::time::Instant;

/// An agent that shows the passkey and confirms it, as a user comparing two screens would.
struct Screen(&'static str);

impl Agent for Screen {
    fn io_capability(&self) -> IoCapability {
        IoCapability::DisplayYesNo
    }
    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        println!("        {} shows {passkey} for {peer}: confirmed", self.0);
        Box::pin(async { Ok(()) })
    }
}

const TOTAL: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fast = args.iter().any(|a| a == "--fast");
    let seed = args.iter().position(|a| a == "--seed").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(fast).build().unwrap();
    runtime.block_on(run(seed, fast));
}

async fn run(seed: u64, fast: bool) {
    let started = Instant::now();
    let clock = move || format!("[{:>6.2} s]", started.elapsed().as_secs_f64());
    println!("colink-sim: two laptops 1.5 m apart, seed {seed}, {} time", if fast { "virtual" } else { "real" });
    let air = SimAir::new(seed);
    let alice = air.adapter("alice", Position::new(0.0, 0.0));
    let bob = air.adapter("bob", Position::new(1.5, 0.0));

    // Bob listens on an LE PSM and advertises it with the services he hosts.
    let listener = bob.listen(None, LinkMode::Packet, LinkParams::default()).await.unwrap();
    let Port::L2cap(psm) = listener.port() else { unreachable!("packet links listen on a PSM") };
    let bob_id = DeviceId::from_bytes(*b"bob's-laptop-id!");
    let services = ServiceFilter::EMPTY.with("com.example.chat");
    let _advert = bob.advertise(Advert::new(bob_id.short()).with_psm(psm).with_services(services)).await.unwrap();
    println!("{} bob advertises {} (PSM {:#04x})", clock(), bob_id.short(), psm.value());

    // Alice scans until she finds a colink device hosting the chat service.
    let mut scan = alice.scan(ScanFilter::default().with_service("com.example.chat")).await.unwrap();
    let (peer, rssi, advert) = loop {
        match scan.next().await.expect("scan ended") {
            ScanEvent::DeviceFound { peer, rssi, advert } => break (peer, rssi, advert),
            _ => continue,
        }
    };
    drop(scan);
    println!(
        "{} alice found {peer} at {rssi}: device {}, PSM {:?}",
        clock(),
        advert.short_id,
        advert.psm.map(|p| p.value())
    );

    // Pairing with numeric comparison: both screens show the same six digits.
    bob.set_agent(Some(Arc::new(Screen("bob")))).await.unwrap();
    alice.pair(peer, Arc::new(Screen("alice"))).await.unwrap();
    println!("{} paired (LE Secure Connections, numeric comparison)", clock());

    // A packet link (L2CAP CoC on LE 2M, the largest MTU both sides allow) and 1 MB through it.
    let params = LinkParams::default();
    let (link, accepted) =
        tokio::join!(alice.connect(peer, Port::L2cap(psm), LinkMode::Packet, params), listener.accept());
    let (link, remote) = (link.unwrap(), accepted.unwrap());
    let mtu = link.mtu().bytes();
    println!("{} link up: {:?}, MTU {mtu}", clock(), link.params().phy);
    let t0 = Instant::now();
    let sender = async {
        let payload: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        for chunk in payload.chunks(mtu) {
            link.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
    };
    let receiver = async {
        let mut got = Vec::with_capacity(TOTAL);
        while got.len() < TOTAL {
            got.extend_from_slice(&remote.recv().await.unwrap());
        }
        got
    };
    let ((), got) = tokio::join!(sender, receiver);
    let secs = t0.elapsed().as_secs_f64();
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "bytes arrived intact and in order");
    println!("{} 1 MB delivered intact in {secs:.2} s: {:.0} kbit/s", clock(), TOTAL as f64 * 8.0 / secs / 1000.0);

    // Bob walks away: the link dies with a supervision timeout on both ends.
    bob.move_to(Position::new(200.0, 0.0));
    let reason = |r: Result<Bytes, LinkError>| match r {
        Err(LinkError::Closed(reason)) => reason.to_string(),
        other => format!("unexpected {other:?}"),
    };
    let (a, b) = tokio::join!(link.recv(), remote.recv());
    println!("{} bob walked 200 m away: alice sees \"{}\", bob sees \"{}\"", clock(), reason(a), reason(b));
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("done in {:.2} s ({} time)", started.elapsed().as_secs_f64(), if fast { "virtual" } else { "real" });
}
