//! `colink serve` (also `colink stream recv`): advertise, accept sessions for an app, print or save what
//! arrives: messages, data, files, images, and media streams (with their figures), as text or (`--json`) as
//! one JSON object a line. Where saved files go, and how partial ones are kept for a resume, is inbox.rs.

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use colink::api::{ConnectOptions, ReferenceEnum, StreamId, StreamParam, StreamRole, SurfaceParam, VideoPixelFormat};
use colink::driver::{RadioLoss, RadioState};
use colink::files::{FileOffer, FileSink};
use colink::media::{ConsumerSurface, PixelMap};
use colink::{CollaborationRequest, Event, Manager, SessionId};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use colink::trust::Strangers;

use crate::app::{self, AppName, Confirm, SERVICE, Screen};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::digest::{hex, sha256};
use crate::error::{CliError, CliResult};
use crate::inbox::{self, Inbox, Receiving, save_new};
use crate::media::{self, FrameLog};
use crate::term;

pub(crate) struct ServeOptions {
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
    /// One JSON object a line instead of text.
    pub(crate) json: bool,
    /// Exit (code 1) when the radio is lost instead of listening again once it is back.
    pub(crate) exit_on_adapter_loss: bool,
    /// Pair with strangers without asking (still printing each code).
    pub(crate) accept_new: bool,
    pub(crate) pairing_agent: bool,
}

/// What each session's task needs to know.
#[derive(Clone)]
struct SessionOptions {
    save_dir: Option<PathBuf>,
    /// Where files go with `--save-dir` (shared by every session).
    inbox: Option<Inbox>,
    stream_name: String,
    save_frames: Option<u64>,
    out: Out,
}

/// How often a running stream's figures are printed.
const STREAM_REPORT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where serve's events go: a human line each, or (`--json`) one JSON object a line, `{"event": KIND, ...}`.
/// Strings a peer chose are escaped: `term::printable` in text, serde_json in JSON.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Prints one event: `human()` as text, or `{"event": kind, ...fields}` as a JSON line.
    fn emit(self, kind: &str, human: impl FnOnce() -> String, fields: impl FnOnce() -> Value) {
        if self.json {
            println!("{}", event_line(kind, fields()));
        } else {
            println!("{}", human());
        }
        flush();
    }

    /// An error that ends nothing but what it names (a save that failed, a stream that could not open).
    fn error(self, session: Option<SessionId>, human: String) {
        let message = human.clone();
        self.emit("error", || human, || json!({ "session": session.map(SessionId::get), "message": message }));
    }
}

/// `{"event":KIND,...fields}`: the kind first, for a reader scanning the lines; the fields in serde_json's order.
fn event_line(kind: &str, fields: Value) -> String {
    let kind = Value::from(kind);
    match fields {
        Value::Object(fields) if !fields.is_empty() => {
            let rest = Value::Object(fields).to_string();
            format!("{{\"event\":{kind},{}", &rest[1..])
        }
        _ => format!("{{\"event\":{kind}}}"),
    }
}

pub(crate) async fn run(o: ServeOptions) -> CliResult {
    let out = Out { json: o.json };
    let state = app::state_dir(o.state_dir.as_deref());
    // Strangers: paired without asking with --accept-new, asked about on a terminal, refused otherwise.
    let answer = if o.accept_new {
        Some(app::Answer::AcceptShowing)
    } else if app::interactive() {
        Some(app::Answer::Terminal)
    } else {
        None
    };
    let strangers = if answer.is_some() { Strangers::Ask } else { Strangers::Refuse };
    let security = app::security(&state, true, strangers)?;
    let device = security.device_id();
    if let Some(dir) = &o.save_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failure(format_args!("cannot create {}: {e}", dir.display())))?;
    }
    let adapter = o.backend.open(&format!("serve-{}", device.short()), device).await?;
    if o.pairing_agent {
        let confirm = Confirm::for_serve(o.accept_new, app::interactive());
        if confirm == Confirm::Refuse {
            tracing::warn!("--pairing-agent on no terminal and without --accept-new refuses every Bluetooth pairing");
        }
        adapter
            .set_agent(Some(Arc::new(Screen::new("serve", true, confirm).with_json(o.json))))
            .await
            .map_err(|e| CliError::failure(format_args!("cannot register the pairing agent: {e}")))?;
    }
    let address = adapter.address();
    let on_loss = if o.exit_on_adapter_loss { RadioLoss::Stop } else { RadioLoss::Recover };
    let manager = app::manager_with(adapter, security, None, on_loss).await?;
    let _trust = answer.and_then(|a| app::answer_trust_requests(&manager, a, o.json));
    let mut radio = manager.radio_state();
    let mut watching = true;
    let caller = o.app.caller();
    let mut requests = match manager.incoming(&caller) {
        Ok(r) => r,
        Err(e) => {
            manager.shutdown().await;
            return Err(e.into());
        }
    };
    // What `colink scan` shows for this device now: the advert's rotating id (it changes every 15 minutes).
    let advert_id = device.advert_id(colink_ble::advert_slot(std::time::SystemTime::now()));
    out.emit(
        "serving",
        || {
            format!(
                "colink serve: device {device} (advertised as {advert_id}) at {} on {}\nserving app {} (service \
                 {SERVICE}); try: colink send message hello --to {device} --backend {}",
                address.address, o.backend, o.app, o.backend
            )
        },
        || {
            json!({
                "device": device.to_string(), "short_id": advert_id.to_string(),
                "address": address.address.to_string(), "backend": o.backend.to_string(), "app": o.app.to_string(),
                "service": SERVICE,
            })
        },
    );

    let inbox = o.save_dir.clone().map(Inbox::new);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut ended = 0u64;
    let stop = crate::hub::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(request) = request else { break };
                if o.reject {
                    out.emit(
                        "rejected",
                        || format!("rejecting a session from {}", peer_label(&request)),
                        || peer_fields(&request),
                    );
                    let _ = manager.reject(&request.token, "rejected by colink serve --reject").await;
                    continue;
                }
                let (m, c, done) = (manager.clone(), caller.clone(), done_tx.clone());
                let so = SessionOptions {
                    save_dir: o.save_dir.clone(),
                    inbox: inbox.clone(),
                    stream_name: o.stream_name.clone(),
                    save_frames: o.save_frames,
                    out,
                };
                tokio::spawn(async move {
                    if let Err(e) = session(&m, &c, request, &so).await {
                        so.out.error(None, format!("session failed: {e}"));
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
            changed = radio.changed(), if watching => {
                // An error: the node stopped reporting (it is shutting down); stop watching.
                watching = changed.is_ok();
                let state = *radio.borrow_and_update();
                let (what, human) = match state {
                    RadioState::Recovering => ("lost", "colink serve: radio lost; listening again once it is back"),
                    RadioState::Up => ("up", "colink serve: radio back; listening again"),
                    _ => ("gone", "colink serve: radio lost"),
                };
                if watching {
                    out.emit("radio", || human.to_owned(), || json!({ "state": what }));
                }
                if watching && state == RadioState::Lost {
                    crate::send::close(&manager).await;
                    return Err(CliError::failure("the Bluetooth adapter was lost (--exit-on-adapter-loss)"));
                }
            }
        }
    }
    crate::send::close(&manager).await;
    out.emit("stopped", || format!("colink serve: stopped after {ended} session(s)"), || json!({ "sessions": ended }));
    Ok(())
}

/// `3294daf4 (org.colink.cli)`: the peer's short id and bundle, escaped for a terminal.
fn peer_label(r: &CollaborationRequest) -> String {
    let short: String = r.peer.device_id.chars().take(8).collect();
    format!("{} ({})", term::printable(&short), term::printable(&r.peer.bundle_name))
}

/// The peer's identity as JSON fields.
fn peer_fields(r: &CollaborationRequest) -> Value {
    json!({
        "peer_device": r.peer.device_id, "peer_bundle": r.peer.bundle_name, "peer_module": r.peer.module_name,
        "peer_ability": r.peer.ability_name,
    })
}

/// Accepts one session and reports what arrives on it until it ends. Once the session exists, every path
/// (including failures) destroys it.
async fn session(
    manager: &Manager,
    caller: &colink::Caller,
    request: CollaborationRequest,
    so: &SessionOptions,
) -> CliResult {
    // A peer that will stream gets a session that may receive one.
    let streams = request.options.need_send_stream;
    let options = ConnectOptions { need_receive_stream: streams, ..ConnectOptions::default() };
    let sid = manager.create_session(caller, SERVICE, request.peer.clone(), options)?;
    let result = accepted(manager, sid, request, so).await;
    let _ = manager.destroy_session(sid).await;
    result
}

/// The life of an accepted session: events until the peer or the link ends it.
async fn accepted(manager: &Manager, sid: SessionId, request: CollaborationRequest, so: &SessionOptions) -> CliResult {
    let (out, save_dir) = (so.out, so.save_dir.as_deref());
    let streams = request.options.need_send_stream;
    let mut events = manager.events(sid)?;
    manager.accept_connect(sid, &request.token).await?;
    let tag = format!("[session {sid}]");
    out.emit(
        "connected",
        || format!("{tag} connected: {}{}", peer_label(&request), if streams { " (it asks to stream)" } else { "" }),
        || {
            let mut fields = peer_fields(&request);
            fields["session"] = sid.get().into();
            fields["streams"] = streams.into();
            fields
        },
    );
    let mut sink = None;
    if streams {
        match open_sink(manager, sid, &tag, so).await {
            Ok(s) => sink = Some(s),
            Err(e) => out.error(Some(sid), format!("{tag} cannot receive its stream: {e}")),
        }
    }
    let mut files = JoinSet::new();
    let mut blobs = 0u64;
    let mut images = 0u64;
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        match event {
            Event::ReceiveMessage { msg, .. } => out.emit(
                "message",
                || format!("{tag} message: {}", term::printable(&msg)),
                || json!({ "session": sid.get(), "text": msg }),
            ),
            Event::ReceiveImage { image, .. } => {
                images += 1;
                received_image(out, sid, &tag, &image, save_dir.map(|d| d.join(format!("image-{sid}-{images}.png"))));
            }
            Event::FileOffered { offer, .. } => {
                if let Some(receiving) = offered(manager, sid, &tag, offer, so).await {
                    files.spawn(receiving);
                }
            }
            Event::ReceiveData { data, .. } => {
                blobs += 1;
                let text = std::str::from_utf8(&data).ok().filter(|t| t.len() <= 80 && !t.contains('\n'));
                let shown = text.map(|t| format!(" {t:?}")).unwrap_or_default();
                let sha = sha256(&data);
                let figures = format!("{} bytes{shown}, sha256 {sha}", grouped(data.len() as u64));
                let Some(saved) =
                    save(out, sid, &tag, save_dir.map(|dir| dir.join(format!("data-{sid}-{blobs}.bin"))), &data)
                else {
                    continue;
                };
                out.emit(
                    "data",
                    || match &saved {
                        Some(path) => format!("{tag} saved data {}: {figures}", path.display()),
                        None => format!("{tag} data: {figures}"),
                    },
                    || {
                        json!({
                            "session": sid.get(), "bytes": data.len(), "sha256": sha, "text": text,
                            "saved": saved.as_ref().map(|p| p.display().to_string()),
                        })
                    },
                );
            }
            Event::Disconnect { reason, .. } => {
                if let Some(s) = sink.take() {
                    s.finish(manager, &tag, out, sid).await;
                }
                // The session's transfers end with it: their outcome comes before the session's end.
                settle(&mut files).await;
                out.emit(
                    "disconnected",
                    || format!("{tag} disconnected: {}", reason.reference_name()),
                    || json!({ "session": sid.get(), "reason": reason.reference_name() }),
                );
                break;
            }
            Event::Reconnecting { .. } => out.emit(
                "reconnecting",
                || format!("{tag} link lost; reconnecting (sends wait)"),
                || json!({ "session": sid.get() }),
            ),
            Event::Reconnected { .. } => {
                out.emit(
                    "reconnected",
                    || format!("{tag} link back; nothing lost"),
                    || json!({ "session": sid.get() }),
                );
            }
            _ => {}
        }
    }
    if let Some(s) = sink.take() {
        s.finish(manager, &tag, out, sid).await;
    }
    settle(&mut files).await;
    Ok(())
}

/// How long a session's end waits for its file transfers to report (they fail at once when the session ends).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the file transfers in `files` to report, at most [`SETTLE`]; stops the rest.
async fn settle(files: &mut JoinSet<()>) {
    let all = async { while files.join_next().await.is_some() {} };
    if tokio::time::timeout(SETTLE, all).await.is_err() {
        files.abort_all();
    }
}

/// Answers a file offer: with `--save-dir`, refuses a name [`inbox::refusal`] refuses and otherwise accepts
/// into the offer's partial file (resuming what an earlier attempt kept); without it, accepts and only hashes
/// the bytes. Returns the task that waits for the outcome and reports it (saving the file when verified).
async fn offered(
    manager: &Manager,
    sid: SessionId,
    tag: &str,
    offer: FileOffer,
    so: &SessionOptions,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let out = so.out;
    let FileOffer { transfer, name, size, .. } = offer.clone();
    let refuse = |reason: String| async move {
        out.emit(
            "file_refused",
            || {
                format!(
                    "{tag} refused file {} ({} bytes): {}",
                    term::printable(&name),
                    grouped(size),
                    term::printable(&reason)
                )
            },
            || json!({ "session": sid.get(), "name": name, "bytes": size, "reason": reason }),
        );
        if let Err(e) = manager.reject_file(sid, transfer, &reason).await {
            out.error(Some(sid), format!("{tag} cannot refuse file {}: {e}", term::printable(&name)));
        }
    };
    let (receiving, sink) = match &so.inbox {
        None => (None, FileSink::new(tokio::io::sink())),
        Some(inbox) => {
            if let Some(reason) = inbox::refusal(&offer.name) {
                refuse(reason.to_owned()).await;
                return None;
            }
            match inbox.receive(offer.resume_key, size) {
                Ok((receiving, sink)) => (Some(receiving), sink),
                Err(e) => {
                    refuse(format!("the receiver cannot store it: {e}")).await;
                    return None;
                }
            }
        }
    };
    let name = offer.name;
    let kept = receiving.as_ref().map_or(0, |r| r.kept);
    let handle = match manager.accept_file(sid, transfer, sink).await {
        Ok(handle) => handle,
        Err(e) => {
            out.error(Some(sid), format!("{tag} cannot accept file {}: {e}", term::printable(&name)));
            if let Some(r) = receiving {
                let _kept = r.fail();
            }
            return None;
        }
    };
    out.emit(
        "file_started",
        || {
            let resumed =
                if kept > 0 { format!(", resuming after {} bytes kept", grouped(kept)) } else { String::new() };
            format!("{tag} receiving {} ({} bytes{resumed})", term::printable(&name), grouped(size))
        },
        || json!({ "session": sid.get(), "name": name, "bytes": size, "resumed_from": kept }),
    );
    let tag = tag.to_owned();
    let started = Instant::now();
    Some(async move {
        match handle.finish().await {
            Ok(receipt) => {
                let secs = started.elapsed().as_secs_f64();
                let moved = receipt.size - receipt.resumed_from;
                let rate = if secs > 0.0 { moved as f64 * 8.0 / secs / 1000.0 } else { 0.0 };
                let sha = hex(&receipt.sha256);
                let resumed = if receipt.resumed_from > 0 {
                    format!(", resumed after {} bytes", grouped(receipt.resumed_from))
                } else {
                    String::new()
                };
                let figures =
                    format!("{} bytes in {secs:.2} s ({rate:.0} kbit/s{resumed}), sha256 {sha}", grouped(size));
                let saved = match receiving {
                    None => None,
                    Some(r) => {
                        let file = name.clone();
                        match tokio::task::spawn_blocking(move || r.complete(&file)).await {
                            Ok(Ok(path)) => Some(path),
                            Ok(Err(e)) => {
                                out.error(Some(sid), format!("{tag} cannot save file {}: {e}", term::printable(&name)));
                                return;
                            }
                            Err(e) => {
                                out.error(Some(sid), format!("{tag} cannot save file {}: {e}", term::printable(&name)));
                                return;
                            }
                        }
                    }
                };
                out.emit(
                    "file",
                    || match &saved {
                        Some(path) => {
                            format!("{tag} saved {}: {figures}", term::printable(&path.display().to_string()))
                        }
                        None => format!(
                            "{tag} received file {}: {figures} (not kept: give --save-dir to save files)",
                            term::printable(&name)
                        ),
                    },
                    || {
                        json!({
                            "session": sid.get(), "name": name, "bytes": size, "seconds": secs,
                            "kbit_s": rate.round() as i64, "sha256": sha, "resumed_from": receipt.resumed_from,
                            "saved": saved.as_ref().map(|p| p.display().to_string()),
                        })
                    },
                );
            }
            Err(e) => {
                let kept = receiving.and_then(Receiving::fail);
                out.emit(
                    "file_failed",
                    || {
                        let kept = kept
                            .as_ref()
                            .map(|p| format!(" (the bytes received are kept in {} for a resume)", p.display()))
                            .unwrap_or_default();
                        format!(
                            "{tag} file {} failed: {}{kept}",
                            term::printable(&name),
                            term::printable(&e.to_string())
                        )
                    },
                    || {
                        json!({
                            "session": sid.get(), "name": name, "bytes": size, "message": e.to_string(),
                            "kept": kept.as_ref().map(|p| p.display().to_string()),
                        })
                    },
                );
            }
        }
    })
}

/// Reports (and with a path, saves as PNG) an image that arrived.
fn received_image(out: Out, sid: SessionId, tag: &str, image: &PixelMap, path: Option<PathBuf>) {
    let format = media::format_name(image.format());
    let what = format!("{}x{} {format}", image.width(), image.height());
    let saved = match path {
        Some(path) => match media::save_png(&path, image) {
            Ok(()) => Some(path),
            Err(e) => {
                out.error(Some(sid), format!("{tag} image {what}: {e}"));
                return;
            }
        },
        None => None,
    };
    out.emit(
        "image",
        || match &saved {
            Some(path) => format!("{tag} image {what}: saved {}", path.display()),
            None => format!("{tag} image {what} (not kept: give --save-dir to save images as PNG)"),
        },
        || {
            json!({
                "session": sid.get(), "width": image.width(), "height": image.height(), "format": format,
                "saved": saved.as_ref().map(|p| p.display().to_string()),
            })
        },
    );
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
    let surface_id = surface.id();
    so.out.emit(
        "stream_started",
        || format!("{tag} receiving stream {:?} (SINK stream {stream}, surface {surface_id})", so.stream_name),
        || json!({ "session": sid.get(), "name": so.stream_name, "stream": stream.get(), "surface": surface_id }),
    );
    let saving = so.save_dir.clone().zip(so.save_frames);
    let reader = tokio::spawn(read_frames(manager.clone(), stream, surface, tag.to_owned(), saving, sid, so.out));
    Ok(Sink { stream, name: so.stream_name.clone(), reader })
}

/// A stream's quality figures as JSON fields.
fn quality_fields(log: &FrameLog) -> Value {
    json!({
        "latency_p50_ms": log.latency_ms(50), "latency_p99_ms": log.latency_ms(99),
        "psnr_db": if log.pattern == Some(true) { log.mean_psnr() } else { None },
    })
}

/// Reads the consumer surface until it ends; prints the figures every [`STREAM_REPORT`]; saves every Nth frame.
async fn read_frames(
    manager: Manager,
    stream: StreamId,
    mut surface: ConsumerSurface,
    tag: String,
    saving: Option<(PathBuf, u64)>,
    sid: SessionId,
    out: Out,
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
                    let (w, h) = (f.pixels.width(), f.pixels.height());
                    out.emit(
                        "stream_first_frame",
                        || format!("{tag} first frame: {w}x{h}, frame number {}", f.seq),
                        || json!({ "session": sid.get(), "width": w, "height": h, "frame": f.seq }),
                    );
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
                    out.emit(
                        "stream_progress",
                        || format!(
                            "{tag} stream: {received} frames received, {} shown, {} missing; {}",
                            log.frames,
                            log.missing(),
                            log.quality_text()
                        ),
                        || {
                            let mut fields = quality_fields(&log);
                            fields["session"] = sid.get().into();
                            fields["frames_received"] = received.into();
                            fields["frames_shown"] = log.frames.into();
                            fields["frames_missing"] = log.missing().into();
                            fields
                        },
                    );
                }
            }
        }
    }
    for save in saves {
        if let Ok(Err(e)) = save.await {
            out.error(Some(sid), format!("{tag} {e}"));
        }
    }
    log
}

impl Sink {
    /// Ends the stream (its surface ends with it) and prints its final figures.
    async fn finish(self, manager: &Manager, tag: &str, out: Out, sid: SessionId) {
        let stats = manager.stream_stats(self.stream).unwrap_or_default();
        let _ = manager.destroy_stream(self.stream).await;
        let log = match tokio::time::timeout(std::time::Duration::from_secs(5), self.reader).await {
            Ok(Ok(log)) => log,
            _ => FrameLog::default(),
        };
        let span = log.span_s();
        let kbit = if span > 0.0 { stats.bytes as f64 * 8.0 / span / 1000.0 } else { 0.0 };
        let size = log.size.map(|(w, h)| format!(" {w}x{h}")).unwrap_or_default();
        let human = || {
            if stats.frames_sent_or_received == 0 {
                return format!("{tag} stream {:?} ended: no frames arrived", self.name);
            }
            let mut text = format!(
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
                text.push_str(&format!(
                    "\n{tag} saved {} frames as PNG: {} … {}",
                    log.saved.len(),
                    first.display(),
                    last.display()
                ));
            }
            text
        };
        out.emit("stream_ended", human, || {
            let mut fields = quality_fields(&log);
            fields["session"] = sid.get().into();
            fields["name"] = self.name.clone().into();
            fields["frames_received"] = stats.frames_sent_or_received.into();
            fields["key_frames"] = stats.key_frames.into();
            fields["frames_shown"] = log.frames.into();
            fields["width"] = log.size.map(|s| s.0).into();
            fields["height"] = log.size.map(|s| s.1).into();
            fields["frames_dropped"] = stats.frames_dropped.into();
            fields["frames_missing"] = log.missing().into();
            fields["bytes"] = stats.bytes.into();
            fields["kbit_s"] = (kbit.round() as i64).into();
            fields["saved_frames"] = log.saved.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().into();
            fields
        });
    }
}

/// Writes a received payload to `path` when serve saves (`Some(None)` when it does not), never overwriting
/// anything: see [`save_new`]. A failed write is reported as the session's error and gives `None`: the payload
/// is then not announced as received.
fn save(out: Out, sid: SessionId, tag: &str, path: Option<PathBuf>, data: &[u8]) -> Option<Option<PathBuf>> {
    let Some(path) = path else { return Some(None) };
    match save_new(&path, data) {
        Ok(saved) => Some(Some(saved)),
        Err(e) => {
            out.error(Some(sid), format!("{tag} cannot write {}: {e}", path.display()));
            None
        }
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_json_with_the_kind_first() {
        let line = event_line("message", json!({ "session": 100, "text": "a \"quote\"\n\u{1b}[2J" }));
        assert!(line.starts_with(r#"{"event":"message","#), "{line}");
        let back: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(back["text"], "a \"quote\"\n\u{1b}[2J");
        assert_eq!(back["session"], 100);
        assert_eq!(event_line("stopped", json!({})), r#"{"event":"stopped"}"#);
    }
}
