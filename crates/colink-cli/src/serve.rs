//! `colink serve`: advertise, accept sessions for an app, print or save what arrives.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use colink::api::{ConnectOptions, ReferenceEnum};
use colink::{CollaborationRequest, Event, Manager};
use colink_ble::DeviceId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{self, AppName, SERVICE, Screen};
use crate::backend::Backend;
use crate::demo::grouped;
use crate::error::{CliError, CliResult};
use crate::transfer::{Assembler, Progress, sha256};

pub(crate) struct ServeOptions {
    pub(crate) device: Option<DeviceId>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) app: AppName,
    pub(crate) backend: Backend,
    pub(crate) save_dir: Option<PathBuf>,
    pub(crate) sessions: Option<u64>,
    pub(crate) reject: bool,
}

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
                let (m, c, dir, done) = (manager.clone(), caller.clone(), o.save_dir.clone(), done_tx.clone());
                tokio::spawn(async move {
                    if let Err(e) = session(&m, &c, request, dir.as_deref()).await {
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
    save_dir: Option<&Path>,
) -> CliResult {
    let sid = manager.create_session(caller, SERVICE, request.peer.clone(), ConnectOptions::default())?;
    let mut events = manager.events(sid)?;
    manager.accept_connect(sid, &request.token).await?;
    let tag = format!("[session {sid}]");
    println!("{tag} connected: {}", peer_label(&request));
    flush();
    let mut assembler = Assembler::default();
    let mut started: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut blobs = 0u64;
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        match event {
            Event::ReceiveMessage { msg, .. } => println!("{tag} message: {msg}"),
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
                println!("{tag} disconnected: {}", reason.reference_name());
                flush();
                break;
            }
            _ => {}
        }
        flush();
    }
    let _ = manager.destroy_session(sid).await;
    Ok(())
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
