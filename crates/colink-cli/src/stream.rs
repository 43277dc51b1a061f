//! `colink stream send`: connects, opens a SOURCE stream and pushes the moving test pattern at 30 fps into its
//! producer surface, then prints the stream's figures. (`colink stream recv` is `colink serve`.)

use std::time::Duration;

use colink::api::{ConnectOptions, StreamParam, StreamRole, SurfaceParam, VideoPixelFormat};
use colink::media::{PixelFormat, StreamStats};
use colink::{ErrorCode, Manager, SessionId};
use colink_media::pattern::test_pattern;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::time::Instant;

use crate::demo::grouped;
use crate::error::{CliError, CliResult};
use crate::media::{self, FPS};
use crate::send::{self, Context};

/// What `stream send` was asked for.
pub(crate) struct SendOptions {
    pub(crate) seconds: u32,
    pub(crate) bitrate: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) name: String,
}

/// How long `stream send` waits for the peer's SINK of the same name to start.
const SINK_WAIT: Duration = Duration::from_secs(5);
/// How long it waits, after the last frame, for the peer to acknowledge what was sent.
const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// What a finished stream did.
struct Outcome {
    stats: StreamStats,
    pushed_s: f64,
    /// Pushes refused because the peer's SINK stopped or the session ended, with the reason.
    stopped: Option<colink::Error>,
}

pub(crate) async fn send(ctx: Context, o: SendOptions) -> CliResult {
    let c = send::connect_with(&ctx, ConnectOptions { need_send_stream: true, ..ConnectOptions::default() }).await?;
    if !ctx.json {
        println!("connected to {} in {:.2} s (session {})", ctx.to, c.connect_s, c.session);
    }
    let result = stream(&c.manager, c.session, &ctx, &o).await;
    let connect_s = c.connect_s;
    let out = c.finish(result).await?;
    let s = out.stats;
    let kbit = if out.pushed_s > 0.0 { s.bytes as f64 * 8.0 / out.pushed_s / 1000.0 } else { 0.0 };
    if ctx.json {
        let report = json!({
            "ok": out.stopped.is_none(), "sent": "stream", "name": o.name, "width": o.width, "height": o.height,
            "fps": FPS, "seconds": out.pushed_s, "frames_pushed": s.frames_pushed,
            "frames_sent": s.frames_sent_or_received, "frames_dropped": s.frames_dropped,
            "frames_acknowledged": s.frames_delivered, "key_frames": s.key_frames,
            "key_frame_requests": s.key_frame_requests, "bytes": s.bytes, "kbit_s": kbit.round() as i64,
            "bitrate_start": o.bitrate, "bitrate_end": s.bitrate, "bitrate_decreases": s.bitrate_decreases,
            "to": ctx.to.to_string(), "connect_s": connect_s,
        });
        println!("{report}");
    } else {
        println!(
            "streamed {:.1} s of {}x{} test pattern at {FPS} fps: {} frames pushed, {} sent ({} key frames), {} \
             dropped for congestion, {} acknowledged by the peer",
            out.pushed_s,
            o.width,
            o.height,
            s.frames_pushed,
            s.frames_sent_or_received,
            s.key_frames,
            s.frames_dropped,
            s.frames_delivered
        );
        println!(
            "{} bytes of H.264 ({kbit:.0} kbit/s); encoder bitrate {} → {} kbit/s, {} decreases, {} key frame \
             requests from the peer",
            grouped(s.bytes),
            o.bitrate / 1000,
            s.bitrate / 1000,
            s.bitrate_decreases,
            s.key_frame_requests
        );
    }
    match out.stopped {
        Some(e) => Err(CliError::failure(format_args!("the stream stopped early: {e}"))),
        None => Ok(()),
    }
}

async fn stream(manager: &Manager, session: SessionId, ctx: &Context, o: &SendOptions) -> CliResult<Outcome> {
    let mut param = StreamParam::new(o.name.clone(), StreamRole::Source);
    param.bitrate = o.bitrate;
    let source = manager.create_stream(session, param)?;
    let mut surface = SurfaceParam::new(o.width, o.height);
    surface.format = VideoPixelFormat::Nv12;
    let producer = manager.producer_surface(&manager.get_surface_id(source, surface)?)?;

    // The peer's SINK of the same name must be started first; `serve` starts its own right after accepting.
    let waited = Instant::now();
    loop {
        match manager.start_stream(source).await {
            Ok(()) => break,
            Err(e) if e.error_code() == ErrorCode::ReceiveStreamNotStarted && waited.elapsed() < SINK_WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.error_code() == ErrorCode::ReceiveStreamNotStarted => {
                let _ = manager.destroy_stream(source).await;
                return Err(CliError::unreachable(format_args!(
                    "the peer started no SINK stream named {:?} within {} s (is it `colink serve` with \
                     --stream-name {}?): {e}",
                    o.name,
                    SINK_WAIT.as_secs(),
                    o.name
                )));
            }
            Err(e) => {
                let _ = manager.destroy_stream(source).await;
                return Err(e.into());
            }
        }
    }

    let frames = u64::from(o.seconds) * u64::from(FPS);
    let bar = progress(ctx.json, frames, o);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / FPS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut stopped = None;
    for i in 0..frames {
        tick.tick().await;
        let frame = test_pattern(o.width, o.height, i, PixelFormat::Nv12);
        // Stamped with the wall clock: a receiver on the same clock (same machine, or NTP) measures latency.
        // A frame dropped for congestion is counted in the stats; an error ends the stream.
        if let Err(e) = producer.push(&frame, media::wall_clock()) {
            stopped = Some(e);
            break;
        }
        bar.set_position(i + 1);
        if i % u64::from(FPS) == 0
            && let Ok(s) = manager.stream_stats(source)
        {
            bar.set_message(format!("{} kbit/s, {} dropped", s.bitrate / 1000, s.frames_dropped));
        }
    }
    let pushed_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Give the peer a moment to acknowledge the last frames.
    let drained = Instant::now();
    while drained.elapsed() < DRAIN_WAIT {
        match manager.stream_stats(source) {
            Ok(s) if s.frames_delivered < s.frames_sent_or_received => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    let stats = manager.stream_stats(source)?;
    let _ = manager.stop_stream(source).await;
    let _ = manager.destroy_stream(source).await;
    Ok(Outcome { stats, pushed_s, stopped })
}

fn progress(json: bool, frames: u64, o: &SendOptions) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(frames);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:32}] {pos}/{len} frames, {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("streaming {:?} {}x{}", o.name, o.width, o.height));
    bar.set_message(format!("{} kbit/s", o.bitrate / 1000));
    bar
}
