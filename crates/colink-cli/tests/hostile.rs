//! A hostile peer against the `colink` command: every string a peer chooses — its app's bundle name, messages,
//! file names, a rejection's reason — reaches the terminal with control characters escaped (no escape sequence,
//! bell or bidirectional override gets through), whichever command prints it.
//!
//! The hostile device is this test process itself, a `colink::Manager` on the same `colink sim-hub` air as the
//! `colink` processes under test — a device of the same account turned hostile (the account admits it; what it
//! says must still be harmless on a terminal).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use colink::api::{ConnectOptions, Permission};
use colink::files::FileSource;
use colink::trust::{Account, Security};
use colink::{Caller, Manager, PeerInfo};
use colink_sim::Position;
use colink_sim::hub::HubAdapter;

/// What a hostile peer puts in its strings: an OSC title change ending in a bell, a screen clear, a colour, a
/// right-to-left override, a newline that would forge a second output line.
const EVIL: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31m\u{202e}txt.exe\nFORGED LINE";
/// The app endpoint the CLI serves and dials by default.
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
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
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

/// No raw control character, and no forged line: the escaped forms are what shows.
fn assert_escaped(lines: &[String]) {
    for l in lines {
        assert!(
            !l.chars().any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "a raw control character reached the terminal: {l:?}"
        );
        assert!(!l.starts_with("FORGED LINE"), "a peer forged an output line: {lines:#?}");
    }
}

fn hub(dir: &Path) -> (Running, String) {
    let sock = dir.join("air.sock");
    let (hub, rx) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_lines(c)
    };
    wait_for(&rx, "join it with", &mut Vec::new());
    (hub, sock.display().to_string())
}

/// Creates an account in the state directory `state` with the CLI, and returns it.
fn account_in(state: &Path) -> Account {
    let out = colink().args(["account", "create", "--state-dir"]).arg(state).output().expect("account create");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.lines().find_map(|l| l.strip_prefix("join code: ")).expect("a join code");
    Account::from_join_code(code).expect("the code reads back")
}

async fn hostile(sock: &str, name: &str, account: Account) -> Manager {
    let adapter = HubAdapter::connect(sock, name, Position::new(1.0, 0.0)).await.expect("join the hub");
    let security = Security::ephemeral().expect("a key").with_account(Some(account));
    Manager::builder().adapter(adapter).security(security).build().await.expect("a manager")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_escapes_the_bundle_name_messages_and_file_names_of_a_hostile_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_hub, sock) = hub(dir.path());
    let account = account_in(&dir.path().join("state"));
    let (_serve, out) = {
        let mut c = colink();
        c.args(["serve", "--backend", &format!("sim-hub:{sock}"), "--sessions", "1"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--save-dir")
            .arg(dir.path().join("inbox"));
        spawn_lines(c)
    };
    let mut seen = Vec::new();
    wait_for(&out, "serving app", &mut seen);
    let server = seen
        .iter()
        .find_map(|l| l.strip_prefix("colink serve: device ").and_then(|r| r.split(' ').next()))
        .expect("serve's device id")
        .to_owned();
    let server = server.as_str();

    let evil = hostile(&sock, "evil", account).await;
    let bundle = format!("com.{EVIL}");
    let caller = Caller::new(&bundle, CLI_APP.1, CLI_APP.2).grant(Permission::DistributedDatasync);
    let peer = PeerInfo::new(server, CLI_APP.0, CLI_APP.1, CLI_APP.2);
    let options = ConnectOptions { need_send_data: true, ..ConnectOptions::default() };
    let session = evil.create_session(&caller, "colink-cli", peer, options).expect("a session");
    let result = evil.connect(session).await.expect("connect");
    assert!(result.is_connected, "{result:?}");
    evil.send_message(session, EVIL).await.expect("a message");
    // colink refuses control characters in file names; what it lets through (a right-to-left override that
    // makes `exe.txt` read `txt.exe`) is still escaped, in the saved file's path and in a refused name.
    let name = "invoice\u{202e}txt.exe";
    let sent = evil.send_file(session, FileSource::new(name, 3, std::io::Cursor::new(b"abc".to_vec()))).await;
    sent.expect("an offer").finish().await.expect("serve saves it");
    let hidden = ".\u{202e}bashrc";
    let sent = evil.send_file(session, FileSource::new(hidden, 3, std::io::Cursor::new(b"abc".to_vec()))).await;
    let refused = sent.expect("an offer").finish().await.expect_err("serve refuses a dotfile");
    assert!(refused.message().contains("starts with a dot"), "{refused}");
    evil.disconnect(session).await.expect("disconnect");
    wait_for(&out, "disconnected", &mut seen);

    let text = seen.join("\n");
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "the message is shown, escaped: {text}");
    assert!(text.contains("saved") && text.contains("invoice\\u{202e}txt.exe"), "{text}");
    assert!(text.contains("refused file .\\u{202e}bashrc"), "{text}");
    assert!(std::fs::read(dir.path().join("inbox").join(name)).expect("saved") == b"abc");
    assert_escaped(&seen);
    evil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_escapes_a_hostile_rejection_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_hub, sock) = hub(dir.path());
    let evil = hostile(&sock, "evil", account_in(&dir.path().join("state-send"))).await;
    let app = Caller::new(CLI_APP.0, CLI_APP.1, CLI_APP.2).grant(Permission::DistributedDatasync);
    let mut requests = evil.incoming(&app).expect("incoming");
    let rejecter = evil.clone();
    let task = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        rejecter.reject(&request.token, EVIL).await.expect("reject");
    });
    let out = tokio::task::spawn_blocking({
        let (sock, device) = (sock.clone(), evil.device_id().to_string());
        let state = dir.path().join("state-send");
        move || {
            colink()
                .args(["send", "message", "hi", "--to", &device, "--backend", &format!("sim-hub:{sock}")])
                .arg("--state-dir")
                .arg(state)
                .output()
                .expect("run send")
        }
    })
    .await
    .expect("send ran");
    task.await.expect("the rejecter");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "one error line: {lines:#?}");
    assert!(lines[0].contains("\\u{1b}[2J"), "{lines:?}");
    assert_escaped(&lines);
    assert_escaped(&String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<Vec<_>>());
    evil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_escapes_what_a_hostile_app_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_hub, sock) = hub(dir.path());
    let evil = hostile(&sock, "evil", account_in(&dir.path().join("state-connect"))).await;
    let app = Caller::new(CLI_APP.0, CLI_APP.1, CLI_APP.2).grant(Permission::DistributedDatasync);
    let mut requests = evil.incoming(&app).expect("incoming");
    let server = evil.clone();
    let task = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let session = server
            .create_session(&app, "colink-cli", request.peer.clone(), ConnectOptions::default())
            .expect("a session");
        server.accept_connect(session, &request.token).await.expect("accept");
        server.send_message(session, EVIL).await.expect("a message");
        server.disconnect(session).await.expect("disconnect");
    });
    let (_connect, out) = {
        let mut c = colink();
        c.args(["connect", &evil.device_id().to_string(), "--backend", &format!("sim-hub:{sock}")])
            .arg("--state-dir")
            .arg(dir.path().join("state-connect"))
            .stdin(Stdio::piped());
        spawn_lines(c)
    };
    let mut seen = Vec::new();
    wait_for(&out, "ended the session", &mut seen);
    task.await.expect("the server");
    assert!(seen.join("\n").contains("\\u{1b}]0;pwned"), "{seen:#?}");
    assert_escaped(&seen);
    evil.shutdown().await;
}
