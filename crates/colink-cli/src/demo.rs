//! `colink demo`: two simulated laptops in one process walk the whole API, step by step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use colink::api::{ConnectOptions, EventStream, ReferenceEnum};
use colink::{Event, Manager};
use colink_ble::{Adapter, DeviceId, ScanEvent, ScanFilter};
use colink_sim::{PhyProfile, Position, SimAir};
use futures::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::app::{AppName, SERVICE, Screen};
use crate::error::{CliError, CliResult};
use crate::report::{Report, figures, round3};
use crate::transfer::{self, Assembler, Progress};

/// What `colink demo` was asked for.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    pub(crate) fast: bool,
    pub(crate) json: bool,
    pub(crate) seed: u64,
    pub(crate) size: usize,
    pub(crate) distance: f64,
}

const APP: &str = "org.colink.demo/entry/ChatAbility";
/// The longest any one step may take before the demo calls it failed.
const STEP_LIMIT: Duration = Duration::from_secs(40);

/// Runs the tour on its own runtime: real time, or a paused (virtual) clock with `--fast`.
pub(crate) fn run(o: &DemoOptions) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(o.fast).build()?;
    rt.block_on(tour(o))
}

async fn tour(o: &DemoOptions) -> CliResult {
    let mode = if o.fast { "virtual time" } else { "real time" };
    let mut r = Report::new(o.json);
    if !o.json {
        println!(
            "colink demo: alice and bob, two simulated laptops {} m apart (LE 2M radio model, seed {}, {mode})",
            o.distance, o.seed
        );
    }
    let completed = steps(o, &mut r).await.is_ok();
    let ok = completed && r.all_ok();
    let elapsed = r.elapsed().as_secs_f64();
    let not_included = [
        ("image", "send_image needs the media layer, which has not landed yet"),
        ("stream", "media streams need the media layer, which has not landed yet"),
    ];
    if o.json {
        let report = json!({
            "command": "demo",
            "ok": ok,
            "mode": mode,
            "seed": o.seed,
            "elapsed_s": round3(elapsed),
            "steps": r.steps,
            "not_included": not_included.iter().map(|(s, why)| json!({"step": s, "reason": why})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::failure)?);
    } else {
        r.say("image, stream: not in this build (the media layer has not landed yet)");
        r.print_table(&format!("summary ({mode}, {elapsed:.2} s)"), brief);
        println!("{}", if ok { "demo complete: every step ok" } else { "demo FAILED" });
    }
    if ok { Ok(()) } else { Err(CliError::failure("the demo did not complete; see the failed step above")) }
}

/// The table's figures column.
fn brief(s: &crate::report::Step) -> String {
    let f = |k: &str| s.figures.get(k).cloned().unwrap_or(Value::Null);
    let text = |k: &str| f(k).as_str().map(str::to_owned).unwrap_or_else(|| f(k).to_string());
    match s.step.as_str() {
        "start" => format!("alice {} · bob {}", text("alice_short_id"), text("bob_short_id")),
        "discovery" => format!("RSSI {} dBm, PSM {}", f("rssi_dbm"), text("psm")),
        "pairing" => format!("passkey {}, {}", text("passkey"), text("method")),
        "connect" => format!("{} ms, sessions {} ↔ {}", f("connect_ms"), text("alice_session"), text("bob_session")),
        "messages" => {
            let num = |k: &str| f(k).as_f64().unwrap_or(f64::NAN);
            format!("{:.1} ms → / {:.1} ms ←", num("alice_to_bob_ms"), num("bob_to_alice_ms"))
        }
        "data" | "link-drop" => format!(
            "{} bytes, {} kbit/s, {}",
            f("bytes"),
            f("kbit_s"),
            if f("intact") == Value::Bool(true) { "intact" } else { "CORRUPT" }
        ),
        "disconnect" => format!("{:.1} ms, {}", f("latency_ms").as_f64().unwrap_or(f64::NAN), text("reason")),
        _ => String::new(),
    }
}

/// Runs one step under the step time limit and records it; `Err` stops the tour.
async fn step<T>(
    r: &mut Report,
    name: &str,
    body: impl Future<Output = anyhow::Result<(T, String, Map<String, Value>)>>,
) -> Result<T, ()> {
    let began = Instant::now();
    match tokio::time::timeout(STEP_LIMIT, body).await {
        Ok(Ok((value, summary, figures))) => {
            r.record(name, began, true, summary, figures);
            Ok(value)
        }
        Ok(Err(e)) => {
            r.record(name, began, false, format!("{e:#}"), Map::new());
            Err(())
        }
        Err(_) => {
            r.record(name, began, false, format!("no result after {} s", STEP_LIMIT.as_secs()), Map::new());
            Err(())
        }
    }
}

async fn steps(o: &DemoOptions, r: &mut Report) -> Result<(), ()> {
    let app: AppName = APP.parse().map_err(|_| ())?;
    let caller = app.caller();
    let air = SimAir::new(o.seed);
    let alice_ad = air.adapter("alice", Position::new(0.0, 0.0));
    let bob_ad = air.adapter("bob", Position::new(o.distance, 0.0));
    let alice_id = DeviceId::from_bytes(*b"alice-laptop-id!");
    let bob_id = DeviceId::from_bytes(*b"bob's-laptop-id!");

    // Both devices start a Manager: each listens on an LE PSM and advertises it with its short id.
    let (alice, bob) = step(r, "start", async {
        let alice = crate::app::manager(Arc::new(alice_ad.clone()), alice_id, Some(o.seed)).await?;
        let bob = crate::app::manager(Arc::new(bob_ad.clone()), bob_id, Some(o.seed + 1)).await?;
        let summary = format!(
            "alice ({}) and bob ({}) start a colink::Manager each: listen on an LE PSM, advertise it",
            alice_ad.address().address,
            bob_ad.address().address
        );
        let figs = figures! {
            "alice_device_id" => alice_id.to_string(), "alice_short_id" => alice_id.short().to_string(),
            "alice_address" => alice_ad.address().to_string(),
            "bob_device_id" => bob_id.to_string(), "bob_short_id" => bob_id.short().to_string(),
            "bob_address" => bob_ad.address().to_string(),
        };
        Ok(((alice, bob), summary, figs))
    })
    .await?;

    // Discovery: alice scans (colink-ble) for devices hosting the CLI's service.
    let peer = step(r, "discovery", async {
        let mut scan = alice_ad.scan(ScanFilter::default().with_service(SERVICE)).await?;
        let (peer, rssi, advert) = loop {
            match scan.next().await {
                Some(ScanEvent::DeviceFound { peer, rssi, advert }) if advert.short_id == bob_id.short() => {
                    break (peer, rssi, advert);
                }
                Some(_) => {}
                None => bail!("the scan ended before bob was heard"),
            }
        };
        let psm = advert.psm.map(|p| format!("{:#04x}", p.value())).unwrap_or_else(|| "none".into());
        let summary = format!("alice hears bob ({}) at {rssi}: device {}, PSM {psm}", peer.address, advert.short_id);
        let figs = figures! {
            "rssi_dbm" => rssi.dbm(), "address" => peer.to_string(), "short_id" => advert.short_id.to_string(),
            "psm" => psm, "distance_m" => o.distance,
        };
        Ok((peer, summary, figs))
    })
    .await?;

    // Pairing: numeric comparison through both sides' agents.
    step(r, "pairing", async {
        let alice_screen = Arc::new(Screen::new("alice", false, false));
        let bob_screen = Arc::new(Screen::new("bob", false, false));
        bob_ad.set_agent(Some(bob_screen.clone())).await?;
        alice_ad.pair(peer, alice_screen.clone()).await.context("pairing failed")?;
        let (a, b) = (alice_screen.passkey(), bob_screen.passkey());
        if let (Some(a), Some(b)) = (a, b)
            && a != b
        {
            bail!("the screens disagree: alice shows {a}, bob shows {b}");
        }
        let passkey = a.or(b).map(|p| p.to_string()).unwrap_or_else(|| "none".into());
        let authenticated = alice_ad.bond(peer).unwrap_or(false);
        let shown = |p: Option<colink_ble::Passkey>| p.map(|p| p.to_string()).unwrap_or_else(|| "nothing".into());
        let summary = format!(
            "numeric comparison: alice shows {}, bob shows {}, both confirm; bonded (authenticated: {authenticated})",
            shown(a),
            shown(b)
        );
        let figs = figures! {
            "method" => "numeric comparison", "passkey" => passkey, "alice_shown" => a.map(|p| p.value()),
            "bob_shown" => b.map(|p| p.value()), "authenticated" => authenticated,
        };
        Ok(((), summary, figs))
    })
    .await?;

    // Connect → incoming → accept.
    let (sa, sb, mut alice_events, mut bob_events) = step(r, "connect", async {
        let mut requests = bob.incoming(&caller)?;
        let options = ConnectOptions { need_send_data: true, ..ConnectOptions::default() };
        let sa = alice.create_session(&caller, SERVICE, app.peer_on(bob_id), options)?;
        let alice_events = alice.events(sa)?;
        let (bob2, caller2) = (bob.clone(), caller.clone());
        let responder = tokio::spawn(async move {
            let request = requests.next().await.ok_or_else(|| anyhow!("bob's app got no request"))?;
            let sb = bob2.create_session(&caller2, SERVICE, request.peer.clone(), ConnectOptions::default())?;
            let events = bob2.events(sb)?;
            bob2.accept_connect(sb, &request.token).await?;
            Ok::<_, anyhow::Error>((sb, events, request))
        });
        let t = Instant::now();
        let result = alice.connect(sa).await?;
        let connect_ms = t.elapsed().as_millis();
        if !result.is_connected {
            bail!("connect failed: {:?} {}", result.error_code, result.reason.unwrap_or_default());
        }
        let (sb, bob_events, request) = responder.await??;
        let summary = format!(
            "alice's session {sa} connects to {app} on bob; bob's app accepts (its session {sb}) in {connect_ms} ms"
        );
        let _ = request;
        let figs = figures! {
            "connect_ms" => connect_ms, "alice_session" => sa.to_string(), "bob_session" => sb.to_string(),
            "peer_app" => app.to_string(),
        };
        Ok(((sa, sb, alice_events, bob_events), summary, figs))
    })
    .await?;

    // Messages both ways.
    step(r, "messages", async {
        let t = Instant::now();
        alice.send_message(sa, "hello bob, it's alice").await?;
        let got = next_message(&mut bob_events).await?;
        let ab = t.elapsed();
        let t = Instant::now();
        bob.send_message(sb, "hi alice! ünïcode ok").await?;
        let back = next_message(&mut alice_events).await?;
        let ba = t.elapsed();
        let summary = format!("bob reads {got:?} after {:.1} ms; alice reads {back:?} after {:.1} ms", ms(ab), ms(ba));
        let figs = figures! {"alice_to_bob_ms" => round3(ms(ab)), "bob_to_alice_ms" => round3(ms(ba))};
        Ok(((), summary, figs))
    })
    .await?;

    // 1 MB of data with a receiver-side progress bar.
    step(r, "data", async {
        let capacity = PhyProfile::le_2m().capacity_bps(u16::MAX) / 1000.0;
        let (secs, intact) = transfer_with_progress(o, &alice, sa, &mut bob_events, 1, o.size, None).await?;
        let kbit = o.size as f64 * 8.0 / secs / 1000.0;
        let summary = format!(
            "{} bytes alice → bob in {secs:.2} s: {kbit:.0} kbit/s (LE 2M model at MTU 65535: {capacity:.0} kbit/s), \
             SHA-256 {}",
            grouped(o.size as u64),
            if intact { "matches" } else { "DIFFERS" }
        );
        if !intact {
            bail!("{summary}");
        }
        let figs = figures! {
            "bytes" => o.size, "seconds" => round3(secs), "kbit_s" => kbit.round() as i64, "model_capacity_kbit_s" => capacity.round() as i64,
            "intact" => intact,
        };
        Ok(((), summary, figs))
    })
    .await?;

    // A link drop in the middle of a transfer: the session resumes on a new link, the apps see nothing.
    step(r, "link-drop", async {
        let size = (o.size / 2).max(1);
        let (a, b) = (alice_ad.address().address, bob_ad.address().address);
        let faults = air.faults();
        let drop_at = Duration::from_millis(800);
        let (secs, intact) =
            transfer_with_progress(o, &alice, sa, &mut bob_events, 2, size, Some((drop_at, &faults, a, b))).await?;
        // Neither app saw a disconnect.
        while let Some(Some(e)) = alice_events.next().now_or_never() {
            if let Event::Disconnect { reason, .. } = e {
                bail!("alice's app saw a disconnect ({})", reason.reference_name());
            }
        }
        let kbit = size as f64 * 8.0 / secs / 1000.0;
        let summary = format!(
            "the radio link drops {:.1} s into {} bytes; colink re-dials and resumes: delivered intact in \
             {secs:.2} s, no disconnect event on either side",
            drop_at.as_secs_f64(),
            grouped(size as u64)
        );
        if !intact {
            bail!("the data differs after the resume");
        }
        let figs = figures! {
            "bytes" => size, "dropped_at_s" => drop_at.as_secs_f64(), "seconds" => round3(secs), "kbit_s" => kbit.round() as i64,
            "intact" => intact, "app_disconnect_events" => 0,
        };
        Ok(((), summary, figs))
    })
    .await?;

    // A clean disconnect.
    step(r, "disconnect", async {
        let t = Instant::now();
        alice.disconnect(sa).await?;
        let reason = loop {
            match bob_events.next().await {
                Some(Event::Disconnect { reason, .. }) => break reason,
                Some(_) => {}
                None => bail!("bob's events ended"),
            }
        };
        let latency = ms(t.elapsed());
        let summary = format!(
            "alice disconnects; bob's app gets `disconnect` with {} ({}) after {latency:.1} ms",
            reason.reference_name(),
            i32::from(reason)
        );
        let figs = figures! {"latency_ms" => round3(latency), "reason" => reason.reference_name(), "reason_code" => i32::from(reason)};
        Ok(((), summary, figs))
    })
    .await?;

    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// Sends `size` bytes as a transfer and follows it on bob's side with a progress bar; optionally drops the radio
/// link `drop.0` into it. Returns (seconds, intact).
async fn transfer_with_progress(
    o: &DemoOptions,
    alice: &Manager,
    session: colink::SessionId,
    bob_events: &mut EventStream,
    id: u64,
    size: usize,
    drop: Option<(Duration, &colink_sim::Faults, colink_ble::Address, colink_ble::Address)>,
) -> anyhow::Result<(f64, bool)> {
    let data: Bytes = (0..size).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    let bar = progress_bar(o, size as u64, if drop.is_some() { "bob holds (link drops)" } else { "bob holds" });
    let t = Instant::now();
    let name = format!("demo-{id}.bin");
    let sender = transfer::send(alice, session, id, &name, data.clone(), |_| {});
    let receiver = async {
        let mut assembler = Assembler::default();
        loop {
            match bob_events.next().await {
                Some(Event::ReceiveData { data, .. }) => match assembler.push(data) {
                    Progress::Advanced { received, .. } => bar.set_position(received),
                    Progress::Complete { data, .. } => return Ok(data),
                    Progress::Started { .. } => {}
                    Progress::Blob(_) => bail!("an unexpected data payload"),
                    Progress::Invalid(why) => bail!("{why}"),
                },
                Some(Event::Disconnect { reason, .. }) => {
                    bail!("bob's app saw a disconnect ({})", reason.reference_name())
                }
                Some(_) => {}
                None => bail!("bob's events ended"),
            }
        }
    };
    let dropper = async {
        if let Some((after, faults, a, b)) = drop {
            tokio::time::sleep(after).await;
            if faults.drop_links(a, b) == 0 {
                return Err(anyhow!("there was no link to drop"));
            }
        }
        Ok(())
    };
    let (sent, got, dropped) = tokio::join!(sender, receiver, dropper);
    let secs = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    sent.context("send_data failed")?;
    dropped?;
    let got = got?;
    Ok((secs, transfer::sha256(&got) == transfer::sha256(&data)))
}

fn progress_bar(o: &DemoOptions, total: u64, label: &'static str) -> ProgressBar {
    if o.json {
        return ProgressBar::hidden();
    }
    let template = if o.fast {
        // Virtual time: a rate measured on the wall clock would be meaningless.
        "{msg:>22} [{bar:32}] {bytes}/{total_bytes}"
    } else {
        "{msg:>22} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
    };
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar
}

async fn next_message(events: &mut EventStream) -> anyhow::Result<String> {
    loop {
        match events.next().await {
            Some(Event::ReceiveMessage { msg, .. }) => return Ok(msg),
            Some(Event::Disconnect { reason, .. }) => bail!("disconnected ({})", reason.reference_name()),
            Some(_) => {}
            None => bail!("the event stream ended"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `1000000` → `1,000,000`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
