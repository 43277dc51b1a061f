//! `colink demo`: two simulated laptops in one process walk the whole API, step by step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use colink::api::{
    ConnectOptions, EventStream, ReferenceEnum, StreamParam, StreamRole, SurfaceParam, VideoPixelFormat,
};
use colink::files::{FileSink, FileSource};
use colink::media::PixelFormat;
use colink::trust::{Account, Security};
use colink::{Event, Manager};
use colink_ble::{Adapter, ScanEvent, ScanFilter};
use colink_media::pattern::test_pattern;
use colink_sim::{PhyProfile, Position, SimAir};
use futures::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::app::{AppName, Confirm, SERVICE, Screen};
use crate::digest::sha256;
use crate::error::{CliError, CliResult};
use crate::media::{FPS, FrameLog};
use crate::report::{Report, figures, round3};

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
    if o.json {
        let report = json!({
            "command": "demo",
            "ok": ok,
            "mode": mode,
            "seed": o.seed,
            "elapsed_s": round3(elapsed),
            "steps": r.steps,
            "not_included": Vec::<Value>::new(),
        });
        println!("{}", serde_json::to_string_pretty(&report).map_err(CliError::failure)?);
    } else {
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
        "image" => format!(
            "{}x{} q{}, {} bytes JPEG, PSNR {:.1} dB",
            f("width"),
            f("height"),
            f("quality"),
            f("jpeg_bytes"),
            f("psnr_db").as_f64().unwrap_or(f64::NAN)
        ),
        "stream" => format!(
            "{}/{} frames, {} dropped, p50 {:.0} ms p99 {:.0} ms, PSNR {:.1} dB",
            f("frames_shown"),
            f("frames_pushed"),
            f("frames_dropped"),
            f("latency_p50_ms").as_f64().unwrap_or(f64::NAN),
            f("latency_p99_ms").as_f64().unwrap_or(f64::NAN),
            f("psnr_db").as_f64().unwrap_or(f64::NAN)
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
    // Two laptops of one person: each its own identity key (drawn from the seed, so runs repeat), one account.
    let account = Account::from_secret(o.seed.to_be_bytes().repeat(2).try_into().unwrap_or([7; 16]));
    let key = |who: u8| {
        let mut secret = [who; 32];
        secret[..8].copy_from_slice(&o.seed.to_be_bytes());
        Security::from_secret(secret).with_account(Some(account.clone()))
    };
    let (alice_sec, bob_sec) = (key(1), key(2));
    let (alice_id, bob_id) = (alice_sec.device_id(), bob_sec.device_id());

    // Both devices start a Manager: each listens on an LE PSM and advertises it with its short id.
    let (alice, bob) = step(r, "start", async {
        let alice = crate::app::manager(Arc::new(alice_ad.clone()), alice_sec, Some(o.seed)).await?;
        let bob = crate::app::manager(Arc::new(bob_ad.clone()), bob_sec, Some(o.seed + 1)).await?;
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
                Some(ScanEvent::DeviceFound { peer, rssi, advert })
                    if bob_id
                        .advert_ids_around(colink_ble::advert_slot(std::time::SystemTime::now()))
                        .contains(&advert.short_id) =>
                {
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
        let alice_screen = Arc::new(Screen::new("alice", false, Confirm::Accept));
        let bob_screen = Arc::new(Screen::new("bob", false, Confirm::Accept));
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
        // Alice will also stream to bob: her session may send a stream, bob's (below) receive one.
        let options = ConnectOptions { need_send_data: true, need_send_stream: true, ..ConnectOptions::default() };
        let sa = alice.create_session(&caller, SERVICE, app.peer_on(bob_id), options)?;
        let alice_events = alice.events(sa)?;
        let (bob2, caller2) = (bob.clone(), caller.clone());
        let responder = tokio::spawn(async move {
            let request = requests.next().await.ok_or_else(|| anyhow!("bob's app got no request"))?;
            let options =
                ConnectOptions { need_receive_stream: request.options.need_send_stream, ..ConnectOptions::default() };
            let sb = bob2.create_session(&caller2, SERVICE, request.peer.clone(), options)?;
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

    // 1 MB as a file (send_file / accept_file) with a receiver-side progress bar.
    step(r, "data", async {
        let capacity = PhyProfile::le_2m().capacity_bps(u16::MAX) / 1000.0;
        let (secs, intact) = transfer_with_progress(o, (&alice, &bob), (sa, sb), &mut bob_events, 1, o.size, None).await?;
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

    // An image: JPEG at quality 30 on the image lane; bob decodes it back to the same size.
    step(r, "image", async {
        let image = test_pattern(IMAGE_SIZE.0, IMAGE_SIZE.1, 0, PixelFormat::Rgb888);
        let jpeg_bytes = colink_media::jpeg::encode(&image, IMAGE_QUALITY as u8).map(|j| j.len()).unwrap_or(0);
        let t = Instant::now();
        alice.send_image(sa, &image, IMAGE_QUALITY).await?;
        let got = loop {
            match bob_events.next().await {
                Some(Event::ReceiveImage { image, .. }) => break image,
                Some(Event::Disconnect { reason, .. }) => {
                    bail!("bob's app saw a disconnect ({})", reason.reference_name())
                }
                Some(_) => {}
                None => bail!("bob's events ended"),
            }
        };
        let secs = t.elapsed().as_secs_f64();
        if (got.width(), got.height()) != (image.width(), image.height()) {
            bail!("bob got {}x{}, alice sent {}x{}", got.width(), got.height(), image.width(), image.height());
        }
        let db = colink_media::pixel::psnr(&image, &got)?;
        let summary = format!(
            "alice sends a {}x{} picture as JPEG quality {IMAGE_QUALITY} ({} bytes); bob's app gets `receiveImage` \
             after {:.0} ms: {}x{}, PSNR {db:.1} dB",
            image.width(),
            image.height(),
            grouped(jpeg_bytes as u64),
            secs * 1000.0,
            got.width(),
            got.height()
        );
        let figs = figures! {
            "width" => got.width(), "height" => got.height(), "format" => crate::media::format_name(got.format()),
            "quality" => IMAGE_QUALITY, "jpeg_bytes" => jpeg_bytes, "seconds" => round3(secs),
            "psnr_db" => round3(db),
        };
        Ok(((), summary, figs))
    })
    .await?;

    // A short video stream: bob's SINK starts, alice's SOURCE pushes the moving test pattern at 30 fps.
    step(r, "stream", stream_step(&alice, sa, &bob, sb)).await?;

    // A link drop in the middle of a transfer: the session resumes on a new link, the apps see nothing.
    step(r, "link-drop", async {
        let size = (o.size / 2).max(1);
        let (a, b) = (alice_ad.address().address, bob_ad.address().address);
        let faults = air.faults();
        let drop_at = Duration::from_millis(800);
        let (secs, intact) =
            transfer_with_progress(o, (&alice, &bob), (sa, sb), &mut bob_events, 2, size, Some((drop_at, &faults, a, b))).await?;
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

/// The demo's image: the test pattern's first frame, sent at the API's default quality.
const IMAGE_SIZE: (u32, u32) = (640, 480);
const IMAGE_QUALITY: i32 = colink::DEFAULT_IMAGE_QUALITY;
/// The demo's stream: 3 s of 640x480 at 500 kbit/s.
const STREAM_SIZE: (u32, u32) = (640, 480);
const STREAM_SECONDS: u64 = 3;
const STREAM_BITRATE: u32 = 500_000;

/// Streams [`STREAM_SECONDS`] of the test pattern from alice to bob and measures what bob's surface shows.
async fn stream_step(
    alice: &Manager,
    sa: colink::SessionId,
    bob: &Manager,
    sb: colink::SessionId,
) -> anyhow::Result<((), String, Map<String, Value>)> {
    let (w, h) = STREAM_SIZE;
    let mut nv12 = SurfaceParam::new(w, h);
    nv12.format = VideoPixelFormat::Nv12;
    let sink = bob.create_stream(sb, StreamParam::new("demo-camera", StreamRole::Sink))?;
    let mut surface = bob.create_surface();
    bob.set_surface_id(sink, &surface.id(), nv12)?;
    bob.start_stream(sink).await?;
    let mut param = StreamParam::new("demo-camera", StreamRole::Source);
    param.bitrate = STREAM_BITRATE;
    let source = alice.create_stream(sa, param)?;
    let producer = alice.producer_surface(&alice.get_surface_id(source, nv12)?)?;
    alice.start_stream(source).await?;

    let frames = STREAM_SECONDS * u64::from(FPS);
    let t0 = Instant::now();
    let last = u32::try_from(frames)?;
    let mut reader = tokio::spawn(async move {
        let mut log = FrameLog::default();
        while let Some(f) = surface.next_frame().await {
            log.add(&f, t0.elapsed().checked_sub(f.timestamp));
            if f.seq >= last {
                break;
            }
        }
        log
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1) / FPS);
    for i in 0..frames {
        tick.tick().await;
        producer.push(&test_pattern(w, h, i, PixelFormat::Nv12), t0.elapsed())?;
    }
    let pushed_s = t0.elapsed().as_secs_f64();
    // The last frames are on their way; if one of them was dropped, ending the sink ends the reader.
    let log = match tokio::time::timeout(Duration::from_secs(5), &mut reader).await {
        Ok(log) => log?,
        Err(_) => {
            bob.stop_stream(sink).await?;
            bob.destroy_stream(sink).await?;
            reader.await?
        }
    };
    let sent = alice.stream_stats(source)?;
    let got = bob.stream_stats(sink).unwrap_or_default();
    let _ = alice.destroy_stream(source).await;
    let _ = bob.destroy_stream(sink).await;
    let (p50, p99) = (log.latency_ms(50).unwrap_or(f64::NAN), log.latency_ms(99).unwrap_or(f64::NAN));
    let db = log.mean_psnr().unwrap_or(f64::NAN);
    let dropped = sent.frames_dropped + got.frames_dropped;
    let kbit = sent.bytes as f64 * 8.0 / pushed_s / 1000.0;
    if log.frames == 0 {
        bail!("bob's surface showed no frame of {frames}");
    }
    let summary = format!(
        "{STREAM_SECONDS} s of {w}x{h} test pattern at {FPS} fps, H.264 at {} kbit/s: bob shows {} of {frames} frames \
         ({dropped} dropped), latency p50 {p50:.0} ms p99 {p99:.0} ms, PSNR {db:.1} dB, {kbit:.0} kbit/s sent",
        STREAM_BITRATE / 1000,
        log.frames
    );
    let figs = figures! {
        "width" => w, "height" => h, "fps" => FPS, "bitrate" => STREAM_BITRATE, "frames_pushed" => sent.frames_pushed,
        "frames_sent" => sent.frames_sent_or_received, "frames_received" => got.frames_sent_or_received,
        "frames_shown" => log.frames, "frames_dropped" => dropped, "frames_missing" => log.missing(),
        "key_frames" => sent.key_frames, "bytes" => sent.bytes, "kbit_s" => kbit.round() as i64,
        "bitrate_end" => sent.bitrate, "latency_p50_ms" => round3(p50), "latency_p99_ms" => round3(p99),
        "psnr_db" => round3(db),
    };
    Ok(((), summary, figs))
}

/// Sends `size` bytes as a file (colink's file API) and follows it on bob's side with a progress bar; bob's
/// app accepts the offer into a sink that only counts (the API hashes what it writes). Optionally drops the
/// radio link `drop.0` into it. Returns (seconds, intact: both receipts carry the SHA-256 of the data sent).
async fn transfer_with_progress(
    o: &DemoOptions,
    (alice, bob): (&Manager, &Manager),
    (sa, sb): (colink::SessionId, colink::SessionId),
    bob_events: &mut EventStream,
    id: u64,
    size: usize,
    drop: Option<(Duration, &colink_sim::Faults, colink_ble::Address, colink_ble::Address)>,
) -> anyhow::Result<(f64, bool)> {
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    let want = sha256(&data);
    let bar = progress_bar(o, size as u64, if drop.is_some() { "bob holds (link drops)" } else { "bob holds" });
    let t = Instant::now();
    let name = format!("demo-{id}.bin");
    let sender = async {
        let transfer = alice.send_file(sa, FileSource::new(name, size as u64, std::io::Cursor::new(data))).await?;
        transfer.finish().await
    };
    let receiver = async {
        let offer = loop {
            match bob_events.next().await {
                Some(Event::FileOffered { offer, .. }) => break offer,
                Some(Event::Disconnect { reason, .. }) => {
                    bail!("bob's app saw a disconnect ({})", reason.reference_name())
                }
                Some(_) => {}
                None => bail!("bob's events ended"),
            }
        };
        let transfer = bob.accept_file(sb, offer.transfer, FileSink::new(tokio::io::sink())).await?;
        let mut progress = transfer.progress();
        let follow = async {
            while progress.changed().await.is_ok() {
                bar.set_position(progress.borrow_and_update().bytes);
            }
        };
        let (receipt, ()) = tokio::join!(transfer.finish(), follow);
        Ok(receipt?)
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
    let sent = sent.context("send_file failed")?;
    dropped?;
    let got = got?;
    let intact = crate::digest::hex(&sent.sha256) == want && got.sha256 == sent.sha256 && got.size == size as u64;
    Ok((secs, intact))
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
