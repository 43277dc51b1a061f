//! `colink bench`: goodput and message latency through colink, next to the raw link of the same radio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use colink::Event;
use colink::api::ConnectOptions;
use colink_ble::{Adapter, Advert, DeviceId, LinkMode, LinkParams, Port};
use colink_sim::hub::HubAdapter;
use colink_sim::{Position, SimAir};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use crate::app::{self, SERVICE};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::error::{CliError, CliResult};

pub(crate) struct BenchOptions {
    pub(crate) backend: Backend,
    pub(crate) peer_adapter: Option<String>,
    pub(crate) size: usize,
    pub(crate) rounds: usize,
    pub(crate) real_time: bool,
    pub(crate) json: bool,
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy)]
struct Figures {
    goodput_kbit_s: f64,
    rtt_median_ms: f64,
    rtt_p95_ms: f64,
}

pub(crate) fn run(o: &BenchOptions) -> CliResult {
    let virtual_time = o.backend == Backend::Sim && !o.real_time;
    let rt = if virtual_time {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?
    };
    rt.block_on(bench(o, virtual_time))
}

async fn bench(o: &BenchOptions, virtual_time: bool) -> CliResult {
    let (a, b, _air): (Arc<dyn Adapter>, Arc<dyn Adapter>, Option<SimAir>) = match &o.backend {
        Backend::Sim => {
            let air = SimAir::new(1);
            let a = air.adapter("bench-a", Position::new(0.0, 0.0));
            let b = air.adapter("bench-b", Position::new(1.5, 0.0));
            (Arc::new(a), Arc::new(b), Some(air))
        }
        Backend::SimHub(path) => {
            let join = |name: &'static str, x: f64| async move {
                HubAdapter::connect(path, name, Position::new(x, 0.0))
                    .await
                    .map_err(|e| CliError::not_supported(format_args!("no simulator hub at {} ({e})", path.display())))
            };
            (Arc::new(join("bench-a", 0.0).await?), Arc::new(join("bench-b", 1.5).await?), None)
        }
        Backend::Bluez(name) => {
            let Some(peer) = &o.peer_adapter else {
                return Err(CliError::not_supported(
                    "bench on BlueZ needs two local adapters: --backend bluez:hci0 --peer-adapter hci1",
                ));
            };
            let id = DeviceId::from_bytes([0xbe; 16]);
            let a = Backend::Bluez(name.clone()).open("bench-a", id).await?;
            let b = Backend::Bluez(Some(peer.clone())).open("bench-b", id).await?;
            (a, b, None)
        }
    };
    let clock = if virtual_time { "virtual time" } else { "real time" };
    if !o.json {
        println!(
            "colink bench on {} ({clock}): {} bytes one way, {} message round trips",
            o.backend,
            grouped(o.size as u64),
            o.rounds
        );
    }
    let fail = |what: &str, e: anyhow::Error| CliError::failure(format_args!("{what}: {e:#}"));
    let (raw, mtu) = raw(&a, &b, o.size, o.rounds).await.map_err(|e| fail("raw link", e))?;
    let colink = through_colink(a, b, o.size, o.rounds).await.map_err(|e| fail("colink", e))?;
    let ratio = colink.goodput_kbit_s / raw.goodput_kbit_s;
    if o.json {
        let side = |f: Figures| {
            json!({"goodput_kbit_s": f.goodput_kbit_s.round() as i64, "rtt_median_ms": r2(f.rtt_median_ms),
                   "rtt_p95_ms": r2(f.rtt_p95_ms)})
        };
        let report = json!({
            "command": "bench", "backend": o.backend.to_string(), "clock": clock, "bytes": o.size,
            "rounds": o.rounds, "link_mtu": mtu, "raw": side(raw), "colink": side(colink),
            "goodput_ratio_colink_over_raw": r2(ratio),
        });
        println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::failure)?);
    } else {
        println!("                            raw link (MTU {mtu})   colink session");
        println!(
            "  goodput                   {:>12.0} kbit/s   {:>9.0} kbit/s",
            raw.goodput_kbit_s, colink.goodput_kbit_s
        );
        println!("  round trip, median        {:>15.2} ms   {:>12.2} ms", raw.rtt_median_ms, colink.rtt_median_ms);
        println!("  round trip, 95th pct      {:>15.2} ms   {:>12.2} ms", raw.rtt_p95_ms, colink.rtt_p95_ms);
        println!("ratio colink/raw goodput: {ratio:.2}");
    }
    Ok(())
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The raw packet link: one SDU per MTU, and 16-byte ping-pongs.
async fn raw(
    a: &Arc<dyn Adapter>,
    b: &Arc<dyn Adapter>,
    size: usize,
    rounds: usize,
) -> anyhow::Result<(Figures, usize)> {
    let listener = b.listen(None, LinkMode::Packet, LinkParams::default()).await?;
    let Port::L2cap(psm) = listener.port() else { bail!("the listener has no PSM") };
    let _advert = b.advertise(Advert::new(DeviceId::from_bytes([0xb0; 16]).short()).with_psm(psm)).await?;
    let (link, peer) = tokio::join!(
        a.connect(b.address(), Port::L2cap(psm), LinkMode::Packet, LinkParams::default()),
        listener.accept()
    );
    let (link, peer) = (link.context("connect")?, peer.context("accept")?);
    let mtu = link.mtu().bytes().min(peer.mtu().bytes());
    let data: Bytes = (0..size).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let sender = async {
        for at in (0..size).step_by(mtu) {
            link.send(data.slice(at..(at + mtu).min(size))).await?;
        }
        anyhow::Ok(())
    };
    let receiver = async {
        let mut got = 0;
        while got < size {
            got += peer.recv().await?.len();
        }
        anyhow::Ok(())
    };
    let (s, r) = tokio::join!(sender, receiver);
    s?;
    r?;
    let goodput = size as f64 * 8.0 / t.elapsed().as_secs_f64() / 1000.0;
    let ping = Bytes::from_static(b"colink-bench-rtt");
    let mut rtts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        link.send(ping.clone()).await?;
        let echo = peer.recv().await?;
        peer.send(echo).await?;
        link.recv().await?;
        rtts.push(t.elapsed());
    }
    link.close().await;
    Ok((stats(goodput, &mut rtts), mtu))
}

/// The same through two Managers: one `send_data` of `size` bytes, and message echoes.
async fn through_colink(
    a: Arc<dyn Adapter>,
    b: Arc<dyn Adapter>,
    size: usize,
    rounds: usize,
) -> anyhow::Result<Figures> {
    let (ida, idb) = (DeviceId::from_bytes(*b"colink-bench-aaa"), DeviceId::from_bytes(*b"colink-bench-bbb"));
    let alice = app::manager(a, ida, Some(1)).await?;
    let bob = app::manager(b, idb, Some(2)).await?;
    let appname: app::AppName = "org.colink.bench/entry/Bench".parse().map_err(|e: String| anyhow!(e))?;
    let caller = appname.caller();
    let mut requests = bob.incoming(&caller)?;
    let options = ConnectOptions { need_send_data: true, ..ConnectOptions::default() };
    let sa = alice.create_session(&caller, SERVICE, appname.peer_on(idb), options)?;
    let mut alice_events = alice.events(sa)?;
    let (bob2, caller2) = (bob.clone(), caller.clone());
    let echo = tokio::spawn(async move {
        let request = requests.next().await.ok_or_else(|| anyhow!("no request"))?;
        let sb = bob2.create_session(&caller2, SERVICE, request.peer.clone(), ConnectOptions::default())?;
        let mut events = bob2.events(sb)?;
        bob2.accept_connect(sb, &request.token).await?;
        // Bob echoes every message and reports each data payload's size. The last echo's acknowledgement may
        // race alice's disconnect, so a failed echo is not an error here (alice checks what she receives).
        let mut sizes = Vec::new();
        while let Some(e) = events.next().await {
            match e {
                Event::ReceiveMessage { msg, .. } => {
                    let _ = bob2.send_message(sb, &msg).await;
                }
                Event::ReceiveData { data, .. } => {
                    sizes.push(data.len());
                    let _ = bob2.send_message(sb, "got-data").await;
                }
                Event::Disconnect { .. } => break,
                _ => {}
            }
        }
        anyhow::Ok(sizes)
    });
    let result = alice.connect(sa).await?;
    if !result.is_connected {
        bail!("connect failed: {:?}", result.error_code);
    }
    let data: Bytes = (0..size).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    alice.send_data(sa, data).await?;
    // send_data resolves once bob holds it all.
    let goodput = size as f64 * 8.0 / t.elapsed().as_secs_f64() / 1000.0;
    expect_message(&mut alice_events, "got-data").await?;
    let mut rtts = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        let msg = format!("ping {i}");
        alice.send_message(sa, &msg).await?;
        expect_message(&mut alice_events, &msg).await?;
        rtts.push(t.elapsed());
    }
    alice.disconnect(sa).await?;
    let sizes =
        tokio::time::timeout(Duration::from_secs(15), echo).await.context("bob did not see the disconnect")???;
    if sizes != [size] {
        bail!("bob received {sizes:?} bytes, not [{size}]");
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(stats(goodput, &mut rtts))
}

async fn expect_message(events: &mut colink::api::EventStream, want: &str) -> anyhow::Result<()> {
    loop {
        match events.next().await {
            Some(Event::ReceiveMessage { msg, .. }) if msg == want => return Ok(()),
            Some(Event::Disconnect { .. }) | None => bail!("the session ended"),
            Some(_) => {}
        }
    }
}

fn stats(goodput_kbit_s: f64, rtts: &mut [Duration]) -> Figures {
    rtts.sort();
    let at = |q: f64| {
        let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
        rtts.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Figures { goodput_kbit_s, rtt_median_ms: at(0.5), rtt_p95_ms: at(0.95) }
}
