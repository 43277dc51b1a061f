//! `colink serve` (also `colink stream recv`): advertise, accept sessions for an app, print or save what
//! arrives: messages, data, files, images, and media streams (with their figures).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use colink::api::{ConnectOptions, ReferenceEnum, StreamId, StreamParam, StreamRole, SurfaceParam, VideoPixelFormat};
use colink::media::{ConsumerSurface, PixelMap};
use colink::{CollaborationRequest, Event, Manager, SessionId};
use colink_ble::DeviceId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::{self, AppName, SERVICE, Screen};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::error::{CliError, CliResult};
use crate::media::{self, FrameLog};
use crate::transfer::{Assembler, Progress, sha256};

pub(crate) struct ServeOptions {
    pub(crate) device: Option<DeviceId>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) app: AppName,
    pub(crate) backend: Backend,
    pub(crate) save_dir: Option<PathBuf>,
    pub(crate) sessions: Option<u64>,
    pub(crate) reject: bool,
    /// The name of the SINK stream opened for peers that stream (it must match the sender's).
    pub(crate) stream_name: String,
    /// Save every Nth decoded stream frame as PNG into `save_dir`.
    pub(crate) save_frames: Option<u64>,
}

/// What each session's task needs to know.
#[derive(Clone)]
struct SessionOptions {
    save_dir: Option<PathBuf>,
    stream_name: String,
    save_frames: Option<u64>,
}

/// How often a running stream's figures are printed.
const STREAM_REPORT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn run(o: ServeOptions) -> CliResult {
    let state = app::state_dir(o.state_dir.as_deref());
    let device = app::device_id(o.device, &state, &o.backend.state_key(), true)?;
    if let Some(dir) = &o.save_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failure(format_args!("cannot create {}: {e}", dir.display())))?;
    }
    let adapter = o.backend.open(&format!("serve-{}", device.short()), device).await?;
    adapter
        .set_agent(Some(Arc::new(Screen::new("serve", true, false))))
        .await
        .map_err(|e| CliError::failure(format_args!("cannot register the pairing agent: {e}")))?;
    let address = adapter.address();
    let manager = app::manager(adapter, device, None).await?;
    let caller = o.app.caller();
    let mut requests = manager.incoming(&caller)?;
    println!("colink serve: device {device} (short {}) at {} on {}", device.short(), address.address, o.backend);
    println!(
        "serving app {} (service {SERVICE}); try: colink send message hello --to {device} --backend {}",
        o.app, o.backend
    );
    flush();

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut ended = 0u64;
    let stop = crate::hub::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(request) = request else { break };
                if o.reject {
                    println!("rejecting a session from {}", peer_label(&request));
                    flush();
                    let _ = manager.reject(&request.token, "rejected by colink serve --reject").await;
                    continue;
                }
                let (m, c, done) = (manager.clone(), caller.clone(), done_tx.clone());
                let so = SessionOptions {
                    save_dir: o.save_dir.clone(),
                    stream_name: o.stream_name.clone(),
                    save_frames: o.save_frames,
                };
                tokio::spawn(async move {
                    if let Err(e) = session(&m, &c, request, &so).await {
                        println!("session failed: {e}");
                        flush();
                    }
                    let _ = done.send(());
                });
            }
            Some(()) = done_rx.recv() => {
                ended += 1;
                if o.sessions.is_some_and(|n| ended >= n) {
                    break;
                }
            }
            () = &mut stop => break,
        }
    }
    crate::send::close(&manager).await;
    println!("colink serve: stopped after {ended} session(s)");
    Ok(())
}

fn peer_label(r: &CollaborationRequest) -> String {
    let short: String = r.peer.device_id.chars().take(8).collect();
    format!("{short} ({})", r.peer.bundle_name)
}

async fn session(
    manager: &Manager,
    caller: &colink::Caller,
    request: CollaborationRequest,
    so: &SessionOptions,
) -> CliResult {
    let save_dir = so.save_dir.as_deref();
    // A peer that will stream gets a session that may receive one.
    let streams = request.options.need_send_stream;
    let options = ConnectOptions { need_receive_stream: streams, ..ConnectOptions::default() };
    let sid = manager.create_session(caller, SERVICE, request.peer.clone(), options)?;
    let mut events = manager.events(sid)?;
    manager.accept_connect(sid, &request.token).await?;
    let tag = format!("[session {sid}]");
    println!("{tag} connected: {}{}", peer_label(&request), if streams { " (it asks to stream)" } else { "" });
    flush();
    let mut sink = None;
    if streams {
        match open_sink(manager, sid, &tag, so).await {
            Ok(s) => sink = Some(s),
            Err(e) => println!("{tag} cannot receive its stream: {e}"),
        }
        flush();
    }
    let mut assembler = Assembler::default();
    let mut started: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut blobs = 0u64;
    let mut images = 0u64;
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        match event {
            Event::ReceiveMessage { msg, .. } => println!("{tag} message: {msg}"),
            Event::ReceiveImage { image, .. } => {
                images += 1;
                received_image(&tag, &image, save_dir.map(|d| d.join(format!("image-{sid}-{images}.png"))))?;
            }
            Event::ReceiveData { data, .. } => match assembler.push(data) {
                Progress::Started { id } => {
                    started.insert(id, Instant::now());
                    if let Some((name, size)) = assembler.describe(id) {
                        println!("{tag} receiving {name} ({} bytes)", grouped(size));
                    }
                }
                Progress::Advanced { .. } => {}
                Progress::Complete { id, name, data } => {
                    let secs = started.remove(&id).map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let rate = if secs > 0.0 { data.len() as f64 * 8.0 / secs / 1000.0 } else { 0.0 };
                    let figures = format!(
                        "{} bytes in {secs:.2} s ({rate:.0} kbit/s), sha256 {}",
                        grouped(data.len() as u64),
                        sha256(&data)
                    );
                    match save_dir {
                        Some(dir) => {
                            let path = dir.join(safe_name(&name, id));
                            std::fs::write(&path, &data)
                                .map_err(|e| CliError::failure(format_args!("cannot write {}: {e}", path.display())))?;
                            println!("{tag} saved {}: {figures}", path.display());
                        }
                        None => println!("{tag} received file {name}: {figures}"),
                    }
                }
                Progress::Blob(data) => {
                    blobs += 1;
                    let text = std::str::from_utf8(&data).ok().filter(|t| t.len() <= 80 && !t.contains('\n'));
                    let shown = text.map(|t| format!(" {t:?}")).unwrap_or_default();
                    let figures = format!("{} bytes{shown}, sha256 {}", grouped(data.len() as u64), sha256(&data));
                    match save_dir {
                        Some(dir) => {
                            let path = dir.join(format!("data-{sid}-{blobs}.bin"));
                            std::fs::write(&path, &data)
                                .map_err(|e| CliError::failure(format_args!("cannot write {}: {e}", path.display())))?;
                            println!("{tag} saved data {}: {figures}", path.display());
                        }
                        None => println!("{tag} data: {figures}"),
                    }
                }
                Progress::Invalid(why) => println!("{tag} dropped a payload: {why}"),
            },
            Event::Disconnect { reason, .. } => {
                if let Some(s) = sink.take() {
                    s.finish(manager, &tag).await;
                }
                println!("{tag} disconnected: {}", reason.reference_name());
                flush();
                break;
            }
            _ => {}
        }
        flush();
    }
    if let Some(s) = sink.take() {
        s.finish(manager, &tag).await;
    }
    let _ = manager.destroy_session(sid).await;
    Ok(())
}

/// Prints (and with a path, saves as PNG) an image that arrived.
fn received_image(tag: &str, image: &PixelMap, path: Option<PathBuf>) -> CliResult {
    let what = format!("{}x{} {}", image.width(), image.height(), media::format_name(image.format()));
    match path {
        Some(path) => {
            media::save_png(&path, image)?;
            println!("{tag} image {what}: saved {}", path.display());
        }
        None => println!("{tag} image {what} (not kept: give --save-dir to save images as PNG)"),
    }
    Ok(())
}

/// A SINK stream receiving a peer's stream, and the task reading its consumer surface.
struct Sink {
    stream: StreamId,
    name: String,
    reader: JoinHandle<FrameLog>,
}

/// Opens the SINK stream named `--stream-name`, binds a consumer surface and starts it (which tells the
/// peer's SOURCE it may start).
async fn open_sink(manager: &Manager, sid: SessionId, tag: &str, so: &SessionOptions) -> Result<Sink, colink::Error> {
    let stream = manager.create_stream(sid, StreamParam::new(so.stream_name.clone(), StreamRole::Sink))?;
    let surface = manager.create_surface();
    // The sink does not scale: frames come out at the source's size whatever width and height say here.
    let mut param = SurfaceParam::new(640, 480);
    param.format = VideoPixelFormat::Nv12;
    let bound = manager.set_surface_id(stream, &surface.id(), param);
    let started = match bound {
        Ok(()) => manager.start_stream(stream).await,
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        let _ = manager.destroy_stream(stream).await;
        return Err(e);
    }
    println!("{tag} receiving stream {:?} (SINK stream {stream}, surface {})", so.stream_name, surface.id());
    let saving = so.save_dir.clone().zip(so.save_frames);
    let reader = tokio::spawn(read_frames(manager.clone(), stream, surface, tag.to_owned(), saving, sid));
    Ok(Sink { stream, name: so.stream_name.clone(), reader })
}

/// Reads the consumer surface until it ends; prints the figures every [`STREAM_REPORT`]; saves every Nth frame.
async fn read_frames(
    manager: Manager,
    stream: StreamId,
    mut surface: ConsumerSurface,
    tag: String,
    saving: Option<(PathBuf, u64)>,
    sid: SessionId,
) -> FrameLog {
    let mut log = FrameLog::default();
    let mut saves = Vec::new();
    let mut report = tokio::time::interval(STREAM_REPORT);
    report.tick().await;
    let mut reported = 0;
    loop {
        tokio::select! {
            frame = surface.next_frame() => {
                let Some(f) = frame else { break };
                log.add(&f, media::wall_clock_latency(f.timestamp));
                if log.frames == 1 {
                    println!("{tag} first frame: {}x{}, frame number {}", f.pixels.width(), f.pixels.height(), f.seq);
                    flush();
                }
                if let Some((dir, every)) = &saving
                    && (log.frames - 1).is_multiple_of(*every)
                {
                    let path = dir.join(format!("frame-{sid}-{:06}.png", f.seq));
                    log.saved.push(path.clone());
                    let pixels = f.pixels;
                    saves.push(tokio::task::spawn_blocking(move || media::save_png(&path, &pixels)));
                }
            }
            _ = report.tick() => {
                if log.frames > reported {
                    reported = log.frames;
                    let received = manager.stream_stats(stream).map(|s| s.frames_sent_or_received).unwrap_or(0);
                    println!(
                        "{tag} stream: {received} frames received, {} shown, {} missing; {}",
                        log.frames,
                        log.missing(),
                        log.quality_text()
                    );
                    flush();
                }
            }
        }
    }
    for save in saves {
        if let Ok(Err(e)) = save.await {
            println!("{tag} {e}");
        }
    }
    log
}

impl Sink {
    /// Ends the stream (its surface ends with it) and prints its final figures.
    async fn finish(self, manager: &Manager, tag: &str) {
        let stats = manager.stream_stats(self.stream).unwrap_or_default();
        let _ = manager.destroy_stream(self.stream).await;
        let log = match tokio::time::timeout(std::time::Duration::from_secs(5), self.reader).await {
            Ok(Ok(log)) => log,
            _ => FrameLog::default(),
        };
        let span = log.span_s();
        let kbit = if span > 0.0 { stats.bytes as f64 * 8.0 / span / 1000.0 } else { 0.0 };
        let size = log.size.map(|(w, h)| format!(" {w}x{h}")).unwrap_or_default();
        if stats.frames_sent_or_received == 0 {
            println!("{tag} stream {:?} ended: no frames arrived", self.name);
            return;
        }
        println!(
            "{tag} stream {:?} ended: {} frames received ({} key), {} shown{size}, {} dropped at this end, {} \
             missing from the sequence; {}; {} bytes ({kbit:.0} kbit/s)",
            self.name,
            stats.frames_sent_or_received,
            stats.key_frames,
            log.frames,
            stats.frames_dropped,
            log.missing(),
            log.quality_text(),
            grouped(stats.bytes),
        );
        if let (Some(first), Some(last)) = (log.saved.first(), log.saved.last()) {
            println!("{tag} saved {} frames as PNG: {} … {}", log.saved.len(), first.display(), last.display());
        }
    }
}

/// The last path component of a name a peer sent, or a generated one when nothing usable is left.
fn safe_name(name: &str, id: u64) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." || base.chars().any(char::is_control) {
        format!("file-{id}.bin")
    } else {
        base.to_owned()
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_peers_cannot_escape_the_save_dir() {
        assert_eq!(safe_name("../../etc/passwd", 1), "passwd");
        assert_eq!(safe_name("..", 2), "file-2.bin");
        assert_eq!(safe_name("a\\b.txt", 3), "b.txt");
        assert_eq!(safe_name("dir/", 4), "file-4.bin");
        assert_eq!(safe_name("photo.raw", 5), "photo.raw");
    }
}
