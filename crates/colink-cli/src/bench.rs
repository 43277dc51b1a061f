//! `colink bench`: goodput and message latency through colink, next to the raw link of the same radio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use colink::Event;
use colink::api::ConnectOptions;
use colink_ble::{Adapter, Advert, DeviceId, LinkMode, LinkParams, Port};
use colink_sim::hub::HubAdapter;
use colink_sim::{PhyProfile, Position, SimAir};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use colink::trust::{Account, Security};

use crate::app::{self, SERVICE};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::error::{CliError, CliResult};
use crate::observe::Observed;

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
    /// The connection interval of the link the side ran on, when the backend knows it.
    conn_interval_ms: Option<f64>,
}

/// The LE 2M model with its connection interval range (30-50 ms, one drawn per link) pinned to its middle, so
/// the raw link and colink's link get the same interval. Round trips are counted in connection events (a
/// message waits for the next one each way), so two links drawn differently would compare their intervals,
/// not colink's cost.
fn pinned_le_2m() -> PhyProfile {
    let mut profile = PhyProfile::le_2m();
    let (lo, hi) = profile.conn_interval;
    let middle = (lo + hi) / 2;
    profile.conn_interval = (middle, middle);
    profile
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
            let air = SimAir::builder(1).profile(pinned_le_2m()).build();
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
    let (colink, file_kbit_s) = through_colink(a, b, o.size, o.rounds).await.map_err(|e| fail("colink", e))?;
    let ratio = colink.goodput_kbit_s / raw.goodput_kbit_s;
    let file_ratio = file_kbit_s / colink.goodput_kbit_s;
    let pinned = o.backend == Backend::Sim;
    if o.json {
        let side = |f: Figures| {
            json!({"goodput_kbit_s": f.goodput_kbit_s.round() as i64, "rtt_median_ms": r2(f.rtt_median_ms),
                   "rtt_p95_ms": r2(f.rtt_p95_ms), "conn_interval_ms": f.conn_interval_ms.map(r2),
                   "rtt_median_intervals": f.rtt_in_intervals().map(r2)})
        };
        let report = json!({
            "command": "bench", "backend": o.backend.to_string(), "clock": clock, "bytes": o.size,
            "rounds": o.rounds, "link_mtu": mtu, "raw": side(raw), "colink": side(colink),
            "goodput_ratio_colink_over_raw": r2(ratio), "same_conn_interval": same_interval(raw, colink),
            "file_goodput_kbit_s": file_kbit_s.round() as i64, "goodput_ratio_file_over_data": r2(file_ratio),
            "explanation": explanation(raw, colink, pinned),
        });
        println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::failure)?);
    } else {
        let interval = |f: Figures| f.conn_interval_ms.map_or_else(|| "unknown".to_owned(), |ms| format!("{ms:.2} ms"));
        println!("                            raw link (MTU {mtu})   colink session");
        println!(
            "  goodput                   {:>12.0} kbit/s   {:>9.0} kbit/s",
            raw.goodput_kbit_s, colink.goodput_kbit_s
        );
        println!("  round trip, median        {:>15.2} ms   {:>12.2} ms", raw.rtt_median_ms, colink.rtt_median_ms);
        println!("  round trip, 95th pct      {:>15.2} ms   {:>12.2} ms", raw.rtt_p95_ms, colink.rtt_p95_ms);
        println!("  connection interval       {:>18}   {:>15}", interval(raw), interval(colink));
        println!("  the same bytes as a file  {:>18}   {:>9.0} kbit/s (send_file, until verified)", "", file_kbit_s);
        println!("ratio colink/raw goodput: {ratio:.2}");
        println!("ratio colink file/data goodput: {file_ratio:.2}");
        println!("{}", explanation(raw, colink, pinned));
    }
    Ok(())
}

impl Figures {
    /// The median round trip counted in the link's connection intervals.
    fn rtt_in_intervals(self) -> Option<f64> {
        self.conn_interval_ms.filter(|i| *i > 0.0).map(|i| self.rtt_median_ms / i)
    }
}

/// Whether both sides ran on links with the same connection interval (`None`: unknown).
fn same_interval(raw: Figures, colink: Figures) -> Option<bool> {
    Some((raw.conn_interval_ms? - colink.conn_interval_ms?).abs() < 0.01)
}

/// The line under the table: what the round trips are made of, with the figures, and why colink's may read
/// below the raw link's.
fn explanation(raw: Figures, colink: Figures, pinned: bool) -> String {
    let counted = match (raw.rtt_in_intervals(), colink.rtt_in_intervals()) {
        (Some(r), Some(c)) => format!(" (raw {r:.2}, colink {c:.2} connection intervals)"),
        _ => String::new(),
    };
    let head = "a round trip waits for the link's next connection event each way, so it is counted in connection \
                intervals";
    let extra = colink.rtt_median_ms - raw.rtt_median_ms;
    match same_interval(raw, colink) {
        Some(true) if pinned => format!(
            "{head}{counted}; both links ran on the same {:.2} ms interval (the LE 2M model's 30-50 ms range pinned \
             to its middle for this comparison), so the difference, {extra:+.2} ms, is colink's own cost",
            raw.conn_interval_ms.unwrap_or_default()
        ),
        Some(true) => format!(
            "{head}{counted}; both links ran on the same {:.2} ms interval, so the difference, {extra:+.2} ms, is \
             colink's own cost",
            raw.conn_interval_ms.unwrap_or_default()
        ),
        Some(false) => format!(
            "{head}{counted}; the two ran on different links, which the radio gave different intervals (raw {:.2} \
             ms, colink {:.2} ms): compare the round trips in intervals, not in ms",
            raw.conn_interval_ms.unwrap_or_default(),
            colink.conn_interval_ms.unwrap_or_default()
        ),
        None => format!(
            "{head}; the two ran on different links whose intervals this radio does not report, so the round \
             trips may differ by the links' intervals rather than by colink's cost"
        ),
    }
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
    let interval = link.params().conn_interval;
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
    Ok((stats(goodput, &mut rtts, interval), mtu))
}

/// The same through two Managers: one `send_data` of `size` bytes, message echoes, and the same bytes again
/// with `send_file` (timed until the receiver verified them; its goodput is the second value).
async fn through_colink(
    a: Arc<dyn Adapter>,
    b: Arc<dyn Adapter>,
    size: usize,
    rounds: usize,
) -> anyhow::Result<(Figures, f64)> {
    // Two devices of one account, as colink is used: authenticated, encrypted links.
    let account = Account::create()?;
    let (sa, sb) = (Security::ephemeral()?, Security::ephemeral()?);
    let (sa, sb) = (sa.with_account(Some(account.clone())), sb.with_account(Some(account)));
    let idb = sb.device_id();
    // Alice dials; her adapter notes the link's parameters.
    let observed = Observed::new(a);
    let alice = app::manager(observed.clone(), sa, Some(1)).await?;
    let bob = app::manager(b, sb, Some(2)).await?;
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
                Event::FileOffered { offer, .. } => {
                    let receiving =
                        bob2.accept_file(sb, offer.transfer, colink::files::FileSink::new(tokio::io::sink())).await?;
                    tokio::spawn(receiving.finish());
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
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let source = colink::files::FileSource::new("bench.bin", size as u64, std::io::Cursor::new(data));
    alice.send_file(sa, source).await?.finish().await?;
    let file_goodput = size as f64 * 8.0 / t.elapsed().as_secs_f64() / 1000.0;
    alice.disconnect(sa).await?;
    let sizes =
        tokio::time::timeout(Duration::from_secs(15), echo).await.context("bob did not see the disconnect")???;
    if sizes != [size] {
        bail!("bob received {sizes:?} bytes, not [{size}]");
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok((stats(goodput, &mut rtts, observed.first_conn_interval()), file_goodput))
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

fn stats(goodput_kbit_s: f64, rtts: &mut [Duration], interval: Option<Duration>) -> Figures {
    rtts.sort();
    let at = |q: f64| {
        let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
        rtts.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        goodput_kbit_s,
        rtt_median_ms: at(0.5),
        rtt_p95_ms: at(0.95),
        conn_interval_ms: interval.map(|d| d.as_secs_f64() * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(rtt: f64, interval: Option<f64>) -> Figures {
        Figures { goodput_kbit_s: 1000.0, rtt_median_ms: rtt, rtt_p95_ms: rtt, conn_interval_ms: interval }
    }

    #[test]
    fn the_explanation_names_the_intervals_and_counts_in_them() {
        // The case a user met: colink below the raw link, on a link with a shorter interval.
        let text = explanation(side(100.0, Some(50.0)), side(82.5, Some(41.25)), false);
        assert!(text.contains("raw 2.00, colink 2.00 connection intervals"), "{text}");
        assert!(text.contains("different intervals (raw 50.00 ms, colink 41.25 ms)"), "{text}");
        let text = explanation(side(80.0, Some(40.0)), side(81.0, Some(40.0)), true);
        assert!(text.contains("same 40.00 ms interval") && text.contains("+1.00 ms"), "{text}");
        let text = explanation(side(80.0, None), side(81.0, None), false);
        assert!(text.contains("does not report"), "{text}");
    }

    #[test]
    fn the_pinned_profile_has_one_interval_in_the_le_2m_range() {
        let (lo, hi) = PhyProfile::le_2m().conn_interval;
        let (a, b) = pinned_le_2m().conn_interval;
        assert_eq!(a, b);
        assert!(lo <= a && a <= hi);
    }
}
