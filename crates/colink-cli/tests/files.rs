//! `colink serve --save-dir` against a sender that uses colink's file API directly (this test process, a
//! `colink::Manager` on the same `colink sim-hub` air): a transfer cut off by the session's end leaves its
//! bytes in a kept partial file, and the same file offered again resumes after them and is saved whole.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use colink::api::{ConnectOptions, Permission};
use colink::files::{FileSource, ResumeKey};
use colink::trust::{Account, Security};
use colink::{Caller, Manager, PeerInfo, SessionId};
use colink_sim::Position;
use colink_sim::hub::HubAdapter;
use tokio::io::{AsyncRead, ReadBuf};

const CLI_APP: (&str, &str, &str) = ("org.colink.cli", "entry", "MainAbility");

fn colink() -> Command {
    let mut c = Command::cargo_bin("colink").expect("the colink binary");
    c.env_remove("RUST_LOG").env("NO_COLOR", "1");
    c
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_lines(mut cmd: Command) -> (Running, mpsc::Receiver<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Running(child), rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) {
    while !seen.iter().any(|l| l.contains(what)) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {what:?}; got {seen:#?}"),
        }
    }
}

/// Reads `data`, but only its first `stop` bytes: then it waits forever (a sender cut off mid-file).
struct Stalls {
    data: Vec<u8>,
    at: usize,
    stop: usize,
}

impl AsyncRead for Stalls {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at >= self.stop {
            return Poll::Pending;
        }
        let n = (self.stop - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

async fn connect(m: &Manager, server: &str) -> SessionId {
    let caller = Caller::new(CLI_APP.0, CLI_APP.1, CLI_APP.2).grant(Permission::DistributedDatasync);
    let peer = PeerInfo::new(server, CLI_APP.0, CLI_APP.1, CLI_APP.2);
    let session = m.create_session(&caller, "colink-cli", peer, ConnectOptions::default()).expect("a session");
    assert!(m.connect(session).await.expect("connect").is_connected);
    session
}

/// The partial files in `inbox`, with their lengths.
fn partials(inbox: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(inbox.join(".colink-partial"))
        .map(|d| d.map_while(Result::ok).map(|e| (e.path(), e.metadata().map_or(0, |m| m.len()))).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_file_resumes_from_the_partial_serve_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("air.sock");
    let (_hub, hub_out) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_lines(c)
    };
    wait_for(&hub_out, "join it with", &mut Vec::new());
    let state = dir.path().join("state");
    let created = colink().args(["account", "create", "--state-dir"]).arg(&state).output().expect("account");
    let text = String::from_utf8_lossy(&created.stdout).into_owned();
    let code = text.lines().find_map(|l| l.strip_prefix("join code: ")).expect("a join code");
    let account = Account::from_join_code(code).expect("the code reads back");
    let inbox = dir.path().join("inbox");
    let (_serve, out) = {
        let mut c = colink();
        c.args(["serve", "--backend", &format!("sim-hub:{}", sock.display()), "--sessions", "2", "--state-dir"])
            .arg(&state)
            .arg("--save-dir")
            .arg(&inbox);
        spawn_lines(c)
    };
    let mut seen = Vec::new();
    wait_for(&out, "serving app", &mut seen);
    let server = seen
        .iter()
        .find_map(|l| l.strip_prefix("colink serve: device ").and_then(|r| r.split(' ').next()))
        .expect("serve's device id")
        .to_owned();

    let adapter =
        HubAdapter::connect(&sock.display().to_string(), "sender", Position::new(1.0, 0.0)).await.expect("hub");
    let security = Security::ephemeral().expect("a key").with_account(Some(account));
    let sender = Manager::builder().adapter(adapter).security(security).build().await.expect("a manager");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let key = ResumeKey::from_bytes([42; 16]);
    let size = data.len() as u64;

    // The first attempt stops after 1 MB: 15 whole 64 KiB chunks reach serve, then the session ends.
    let session = connect(&sender, &server).await;
    let stalls = Stalls { data: data.clone(), at: 0, stop: 1_000_000 };
    let first = sender.send_file(session, FileSource::new("big.bin", size, stalls).with_resume_key(key)).await;
    let _first = first.expect("an offer");
    let written = 15 * 64 * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while partials(&inbox).iter().map(|p| p.1).sum::<u64>() < written {
        assert!(tokio::time::Instant::now() < deadline, "serve wrote {:?}", partials(&inbox));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.disconnect(session).await.expect("disconnect");
    wait_for(&out, "failed", &mut seen);
    let failed = seen.iter().find(|l| l.contains("file big.bin failed")).expect("serve reports the failure");
    assert!(failed.contains("kept in") && failed.contains(".colink-partial"), "{failed}");
    let kept = partials(&inbox);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, written);
    assert!(kept[0].0.file_name().is_some_and(|n| n.to_string_lossy() == format!("{key}-{size}.part")), "{kept:?}");
    assert!(!inbox.join("big.bin").exists(), "nothing is saved under the file's name before it is whole");

    // The same content (same key and size) again, in a new session: serve resumes after what it kept.
    let session = connect(&sender, &server).await;
    let source = FileSource::new("big.bin", size, std::io::Cursor::new(data.clone())).with_resume_key(key);
    let receipt = sender.send_file(session, source).await.expect("an offer").finish().await.expect("delivered");
    assert_eq!(receipt.resumed_from, written);
    wait_for(&out, "saved", &mut seen);
    let resumed = format!("resuming after {} bytes kept", "983,040");
    assert!(seen.iter().any(|l| l.contains("receiving big.bin") && l.contains(&resumed)), "{seen:#?}");
    assert!(std::fs::read(inbox.join("big.bin")).expect("saved") == data, "kept bytes + the rest = the file");
    assert!(partials(&inbox).is_empty(), "the partial file is gone once the file is saved");
    sender.disconnect(session).await.expect("disconnect");
    wait_for(&out, "stopped after 2 session(s)", &mut seen);
    sender.shutdown().await;
}

#[test]
fn ctrl_c_stops_send_file_and_the_next_send_resumes() {
    // `colink send file` interrupted (SIGINT) part-way: it tells the peer, exits with one error line that
    // says how to go on, serve keeps what it has, and sending the same file again resumes after it.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let (_hub, hub_out) = {
        let mut c = colink();
        c.args(["sim-hub", "--socket"]).arg(&sock);
        spawn_lines(c)
    };
    wait_for(&hub_out, "join it with", &mut Vec::new());
    let state = dir.path().join("state");
    assert!(
        colink().args(["account", "create", "--state-dir"]).arg(&state).output().expect("account").status.success()
    );
    let inbox = dir.path().join("inbox");
    let (_serve, out) = {
        let mut c = colink();
        c.args(["serve", "--backend", &hub_arg, "--state-dir"]).arg(&state).arg("--save-dir").arg(&inbox);
        spawn_lines(c)
    };
    let mut seen = Vec::new();
    wait_for(&out, "serving app", &mut seen);
    let server = seen
        .iter()
        .find_map(|l| l.strip_prefix("colink serve: device ").and_then(|r| r.split(' ').next()))
        .expect("serve's device id")
        .to_owned();
    let file = dir.path().join("big.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &data).expect("write the file");
    let send = || {
        let mut c = colink();
        c.args(["send", "file"]).arg(&file).args(["--to", &server, "--backend", &hub_arg, "--state-dir"]).arg(&state);
        c
    };

    let first = send().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("send file");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partials(&inbox).iter().map(|p| p.1).sum::<u64>() < 400_000 {
        assert!(std::time::Instant::now() < deadline, "serve wrote {:?}", partials(&inbox));
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill").args(["-INT", &first.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let output = first.wait_with_output().expect("send exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted; sending it again resumes"), "{stderr}");
    wait_for(&out, "failed", &mut seen);
    let kept = partials(&inbox);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].1 >= 400_000 && kept[0].1 < data.len() as u64, "{kept:?}");

    let again = send().output().expect("send file again");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("resumed after the") && stdout.contains("the peer verified it"), "{stdout}");
    wait_for(&out, "saved", &mut seen);
    assert!(std::fs::read(inbox.join("big.bin")).expect("saved") == data);
}
