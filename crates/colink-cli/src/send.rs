//! `colink connect` (interactive) and `colink send message|data|file|image` (one payload, then disconnect).

use std::io::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use colink::api::{ConnectOptions, EventStream, ReferenceEnum};
use colink::files::{FileProgress, FileSource};
use colink::media::PixelMap;
use colink::{Event, Manager, SessionId};
use colink_ble::DeviceId;
use futures::StreamExt;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use colink::trust::Strangers;

use crate::app::{self, AppName, SERVICE};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::digest::{hex, sha256};
use crate::error::{CliError, CliResult};
use crate::{media, term};

/// Who talks to whom, over what.
pub(crate) struct Context {
    pub(crate) backend: Backend,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) app: AppName,
    pub(crate) peer_app: AppName,
    pub(crate) to: DeviceId,
    pub(crate) json: bool,
}

/// What `send` sends.
pub(crate) enum What {
    Message(String),
    Data(Vec<u8>),
    Pattern(u64),
    File(PathBuf),
    /// A PNG or JPEG file, sent with `send_image` at a JPEG quality.
    Image {
        path: PathBuf,
        quality: i32,
    },
}

/// A connected session.
pub(crate) struct Connected {
    pub(crate) manager: Manager,
    pub(crate) session: SessionId,
    pub(crate) events: EventStream,
    pub(crate) connect_s: f64,
}

/// The most bytes `send data` sends as one payload: the reference receiver's limit (api.md: it rejects more than
/// 100 MiB in all), so every peer takes what the CLI sends. `send file` has no such limit (colink's file API
/// streams it).
pub(crate) const MAX_DATA: usize = 100 * 1024 * 1024;

/// A data payload checked against the API's rules before any radio work: not empty, at most [`MAX_DATA`].
pub(crate) fn checked_payload(data: Vec<u8>, what: &str) -> CliResult<Vec<u8>> {
    if data.is_empty() {
        return Err(CliError::usage(format_args!("{what} is empty: there is nothing to send")));
    }
    if data.len() > MAX_DATA {
        return Err(CliError::usage(format_args!(
            "{what} is more than {MAX_DATA} bytes (100 MiB, the most a data payload may carry); use `colink send \
             file` for more"
        )));
    }
    Ok(data)
}

/// `send data -`: stdin's bytes, read to its end but never more than [`MAX_DATA`] + 1 of them.
pub(crate) fn read_stdin_payload() -> CliResult<Vec<u8>> {
    use std::io::Read as _;
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_DATA as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| CliError::failure(format_args!("cannot read stdin: {e}")))?;
    checked_payload(data, "stdin")
}

async fn connect(ctx: &Context) -> CliResult<Connected> {
    connect_with(ctx, ConnectOptions { need_send_data: true, ..ConnectOptions::default() }).await
}

/// Starts a Manager on the context's radio and connects a session with `options` to the peer app. On any
/// failure the Manager is shut down before returning.
pub(crate) async fn connect_with(ctx: &Context, options: ConnectOptions) -> CliResult<Connected> {
    let state = app::state_dir(ctx.state_dir.as_deref());
    // A client needs a stable identity only on a real adapter; on the simulator each run is a new device.
    let persistent = matches!(ctx.backend, Backend::Bluez(_));
    // A stranger (neither in the account nor paired) is paired on the terminal, when there is one.
    let answer = app::interactive().then_some(app::Answer::Terminal);
    let strangers = if answer.is_some() { Strangers::Ask } else { Strangers::Refuse };
    let security = app::security(&state, persistent, strangers)?;
    let device = security.device_id();
    if device == ctx.to {
        return Err(CliError::usage("--to names this device itself; give the device id `colink serve` printed"));
    }
    let adapter = ctx.backend.open(&format!("cli-{}", device.short()), device).await?;
    let manager = app::manager(adapter, security, None).await?;
    let _trust = answer.and_then(|a| app::answer_trust_requests(&manager, a, false));
    let t = Instant::now();
    let session = async {
        let session = manager.create_session(&ctx.app.caller(), SERVICE, ctx.peer_app.peer_on(ctx.to), options)?;
        let events = manager.events(session)?;
        let result = manager.connect(session).await?;
        if result.is_connected { Ok((session, events)) } else { Err(app::connect_failed(ctx.to, &result)) }
    }
    .await;
    match session {
        Ok((session, events)) => Ok(Connected { manager, session, events, connect_s: t.elapsed().as_secs_f64() }),
        Err(e) => {
            manager.shutdown().await;
            Err(e)
        }
    }
}

impl Connected {
    /// Ends the session and the Manager, whatever happened before: disconnects (so the peer hears
    /// `PEER_APP_CLOSE_COLLABORATION`, not a timeout), lingers, shuts down. Every path out of a connected
    /// command goes through here; `result` is what the command did, and wins over a failed disconnect.
    pub(crate) async fn finish<T>(self, result: CliResult<T>) -> CliResult<T> {
        let disconnected = self.manager.disconnect(self.session).await;
        close(&self.manager).await;
        let value = result?;
        disconnected?;
        Ok(value)
    }
}

/// What `once` sent, for its report.
struct Sent {
    kind: &'static str,
    bytes: usize,
    sha: Option<String>,
    secs: f64,
    /// The JPEG quality, for an image.
    quality: Option<i32>,
    /// A file's name and the byte its transfer resumed from (0 when it started afresh).
    file: Option<(String, u64)>,
}

/// Connects, sends `what`, disconnects. Every argument is checked before connecting (usage errors exit 2 with
/// no radio work); once connected, every path disconnects.
pub(crate) async fn once(ctx: Context, what: What) -> CliResult {
    // Open the file first: a missing file, or a name colink cannot offer, should not cost a connection.
    let file = match &what {
        What::File(path) => {
            let source = FileSource::open(path)
                .await
                .map_err(|e| CliError::failure(format_args!("cannot read {}: {e}", path.display())))?;
            colink::files::check_name(source.name()).map_err(|rule| {
                CliError::usage(format_args!(
                    "cannot send {}: its name is not one colink offers ({rule})",
                    path.display()
                ))
            })?;
            Some(source)
        }
        _ => None,
    };
    let image = match &what {
        What::Image { path, quality } => {
            // A bad quality is a bad argument: say so with the API's own 401 before connecting.
            colink::api::validate::image_quality(*quality).map_err(CliError::usage)?;
            Some(media::load_image(path)?)
        }
        _ => None,
    };
    match &what {
        What::Message(text) => colink::api::validate::message(text).map_err(CliError::usage)?,
        What::Pattern(n) if *n == 0 || *n > MAX_DATA as u64 => {
            return Err(CliError::usage(format_args!("--size must be 1 to {MAX_DATA} bytes, got {n}")));
        }
        _ => {}
    }
    let c = connect(&ctx).await?;
    if !ctx.json {
        println!("connected to {} in {:.2} s (session {})", ctx.to, c.connect_s, c.session);
    }
    let sent = deliver(&ctx, &c, what, file, image.as_ref()).await;
    let connect_s = c.connect_s;
    let sent = c.finish(sent).await?;
    let Sent { kind, bytes, sha, secs, quality, file } = sent;
    if ctx.json {
        let report = match &image {
            Some(image) => json!({
                "ok": true, "sent": "image", "width": image.width(), "height": image.height(),
                "format": media::format_name(image.format()), "quality": quality, "seconds": secs,
                "to": ctx.to.to_string(), "connect_s": connect_s,
            }),
            None => {
                let moved = bytes as u64 - file.as_ref().map_or(0, |f| f.1);
                let kbit = if secs > 0.0 { moved as f64 * 8.0 / secs / 1000.0 } else { 0.0 };
                let mut report = json!({
                    "ok": true, "sent": kind, "bytes": bytes, "seconds": secs, "kbit_s": kbit.round() as i64,
                    "sha256": sha, "to": ctx.to.to_string(), "connect_s": connect_s,
                });
                if let Some((name, resumed_from)) = file {
                    report["name"] = name.into();
                    report["resumed_from"] = resumed_from.into();
                }
                report
            }
        };
        println!("{report}");
    }
    Ok(())
}

/// Sends `what` on the connected session and prints the human line.
async fn deliver(
    ctx: &Context,
    c: &Connected,
    what: What,
    file: Option<FileSource>,
    image: Option<&PixelMap>,
) -> CliResult<Sent> {
    let say = |line: String| {
        if !ctx.json {
            println!("{line}");
        }
    };
    let t = Instant::now();
    let (kind, bytes, sha) = match what {
        What::Message(text) => {
            c.manager.send_message(c.session, &text).await?;
            ("message", text.len(), None)
        }
        What::Data(data) => {
            let sha = sha256(&data);
            let len = data.len();
            c.manager.send_data(c.session, Bytes::from(data)).await?;
            ("data", len, Some(sha))
        }
        What::Pattern(n) => {
            let n = usize::try_from(n).map_err(CliError::usage)?;
            let data: Bytes = (0..n).map(|i| (i % 251) as u8).collect();
            let sha = sha256(&data);
            c.manager.send_data(c.session, data).await?;
            ("data", n, Some(sha))
        }
        What::File(_) => {
            let Some(source) = file else { return Err(CliError::failure("no file")) };
            return send_file(c, source, ctx.json, t).await;
        }
        What::Image { quality, .. } => {
            let Some(image) = image else { return Err(CliError::failure("no image")) };
            c.manager.send_image(c.session, image, quality).await?;
            let secs = t.elapsed().as_secs_f64();
            say(format!(
                "sent image {}x{} {} as JPEG quality {quality} in {secs:.2} s; the peer holds it",
                image.width(),
                image.height(),
                media::format_name(image.format())
            ));
            return Ok(Sent { kind: "image", bytes: 0, sha: None, secs, quality: Some(quality), file: None });
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let kbit = if secs > 0.0 { bytes as f64 * 8.0 / secs / 1000.0 } else { 0.0 };
    let sha_text = sha.as_deref().map(|s| format!(", sha256 {s}")).unwrap_or_default();
    if kind == "message" {
        say(format!("sent message ({bytes} bytes): the peer holds it after {:.1} ms", secs * 1000.0));
    } else {
        say(format!(
            "sent {kind}: {} bytes in {secs:.2} s ({kbit:.0} kbit/s){sha_text}; the peer holds it",
            grouped(bytes as u64)
        ));
    }
    Ok(Sent { kind, bytes, sha, secs, quality: None, file: None })
}

/// Sends a file with colink's file API, following its progress on a bar; succeeds once the peer verified
/// every byte (its SHA-256 is the receipt's).
async fn send_file(c: &Connected, source: FileSource, json: bool, t: Instant) -> CliResult<Sent> {
    let (name, size) = (source.name().to_owned(), source.size());
    let not_delivered = |e: colink::Error| {
        let mut e = CliError::from(e);
        e.message = format!("{name} was not delivered: {}", e.message);
        e
    };
    let transfer = c.manager.send_file(c.session, source).await.map_err(not_delivered)?;
    let bar = bar(size, json, &name);
    let mut progress = transfer.progress();
    let canceller = transfer.canceller();
    let finish = transfer.finish();
    let stop = crate::hub::shutdown_signal();
    tokio::pin!(finish, stop);
    let mut stopped = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut finish => break outcome,
            changed = progress.changed() => match changed {
                Ok(()) => show(&bar, &progress.borrow_and_update()),
                // The transfer's task ended: its outcome is ready.
                Err(_) => break (&mut finish).await,
            },
            // Ctrl-C (or SIGTERM): the peer is told, keeps what it has, and the next send resumes from there.
            () = &mut stop, if !stopped => {
                stopped = true;
                canceller.cancel();
            }
        }
    };
    bar.finish_and_clear();
    if stopped && outcome.is_err() {
        return Err(CliError::failure(format_args!(
            "{} was not delivered: interrupted; sending it again resumes where it stopped",
            term::printable(&name)
        )));
    }
    let receipt = outcome.map_err(not_delivered)?;
    let secs = t.elapsed().as_secs_f64();
    let moved = receipt.size - receipt.resumed_from;
    let kbit = if secs > 0.0 { moved as f64 * 8.0 / secs / 1000.0 } else { 0.0 };
    let sha = hex(&receipt.sha256);
    if !json {
        let resumed = if receipt.resumed_from > 0 {
            format!(", resumed after the {} bytes the peer kept", grouped(receipt.resumed_from))
        } else {
            String::new()
        };
        println!(
            "sent file {}: {} bytes in {secs:.2} s ({kbit:.0} kbit/s{resumed}), sha256 {sha}; the peer verified it",
            term::printable(&name),
            grouped(receipt.size)
        );
    }
    let bytes = usize::try_from(receipt.size).unwrap_or(usize::MAX);
    Ok(Sent { kind: "file", bytes, sha: Some(sha), secs, quality: None, file: Some((name, receipt.resumed_from)) })
}

/// Moves the bar to where the transfer stands, with colink's rate and time left.
fn show(bar: &ProgressBar, p: &FileProgress) {
    bar.set_position(p.bytes);
    let eta = p.eta.map(|d| format!(", {} left", HumanDuration(d))).unwrap_or_default();
    bar.set_message(format!("{}/s{eta}", HumanBytes(p.rate as u64)));
}

/// Connects and stays: each stdin line is sent as a message, arriving messages and data are printed.
pub(crate) async fn interactive(ctx: Context) -> CliResult {
    let mut c = connect(&ctx).await?;
    println!(
        "connected to {} in {:.2} s (session {}); each line you type is sent as a message, Ctrl-D disconnects",
        ctx.to, c.connect_s, c.session
    );
    flush();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let stop = crate::hub::shutdown_signal();
    tokio::pin!(stop);
    let mut peer_left = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.is_empty() => {}
                Ok(Some(line)) => {
                    if let Err(e) = c.manager.send_message(c.session, &line).await {
                        println!("not sent: {e}");
                    }
                }
                _ => break,
            },
            event = c.events.next() => match event {
                Some(Event::ReceiveMessage { msg, .. }) => println!("< {}", term::printable(&msg)),
                Some(Event::ReceiveData { data, .. }) => {
                    println!("< data: {} bytes, sha256 {}", grouped(data.len() as u64), sha256(&data));
                }
                Some(Event::FileOffered { offer, .. }) => {
                    let reason = "colink connect takes no files; send them to colink serve --save-dir";
                    println!("< file {} ({} bytes) offered; refused: {reason}", term::printable(&offer.name), grouped(offer.size));
                    if let Err(e) = c.manager.reject_file(c.session, offer.transfer, reason).await {
                        println!("cannot refuse it: {e}");
                    }
                }
                Some(Event::ReceiveImage { image, .. }) => {
                    println!("< image: {}x{} {}", image.width(), image.height(), media::format_name(image.format()));
                }
                Some(Event::Disconnect { reason, .. }) => {
                    println!("the peer ended the session: {}", reason.reference_name());
                    peer_left = true;
                    break;
                }
                Some(Event::Reconnecting { .. }) => println!("link lost; reconnecting (what you type waits)"),
                Some(Event::Reconnected { .. }) => println!("link back; nothing lost"),
                Some(_) => {}
                None => break,
            },
            () = &mut stop => break,
        }
        flush();
    }
    if peer_left {
        close(&c.manager).await;
        return Ok(());
    }
    c.finish(Ok(())).await?;
    println!("disconnected");
    Ok(())
}

/// How long a process lingers after `Manager::shutdown` so its link tasks can put the session's goodbye on the
/// air: `shutdown` only queues the close, and a process that exits at once leaves the peer to find out by
/// timeout (`NETWORK_DISCONNECTED` after the 10 s grace period) instead of `PEER_APP_CLOSE_COLLABORATION`.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(300);

pub(crate) async fn close(manager: &Manager) {
    tokio::time::sleep(LINGER).await;
    manager.shutdown().await;
    tokio::time::sleep(LINGER).await;
}

fn bar(total: u64, json: bool, name: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    // The rate and time left are colink's (FileProgress), in the message.
    let template = "{prefix} [{bar:32}] {bytes}/{total_bytes} {msg} (bytes the peer holds)";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(term::printable(name));
    bar
}

fn flush() {
    let _ = std::io::stdout().flush();
}
