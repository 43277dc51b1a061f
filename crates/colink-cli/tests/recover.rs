//! `colink serve` as a long-running service: when its radio (here the `colink sim-hub` process) goes away and
//! comes back, serve listens and advertises again and a later `send` reaches it; with `--exit-on-adapter-loss`
//! it exits with code 1 instead.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn colink() -> Command {
    let mut c = Command::cargo_bin("colink").expect("the colink binary");
    c.env_remove("RUST_LOG");
    c
}

/// Kills a spawned process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (stderr as `stderr` says) and waits until a line of its stdout contains `ready`; the rest of
/// stdout goes to the channel.
fn spawn_until(mut cmd: Command, stderr: Stdio, ready: &str) -> (Running, mpsc::Receiver<String>, Vec<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let running = Running(child);
    let seen = wait_for_line(&rx, ready);
    (running, rx, seen)
}

/// Waits (at most 20 s) for a line containing `needle`; returns the lines seen.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"));
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

fn hub(sock: &Path) -> Running {
    let mut c = colink();
    c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(sock);
    spawn_until(c, Stdio::inherit(), "join it with").0
}

/// A `serve` whose state directory is in one account with `dir/state-send`; also its device id.
fn serve(dir: &Path, hub_arg: &str, extra: &[&str], stderr: Stdio) -> (Running, mpsc::Receiver<String>, String) {
    let (serve_state, send_state) = (dir.join("state-serve"), dir.join("state-send"));
    let created = colink().args(["account", "create", "--state-dir"]).arg(&serve_state).output().expect("create");
    let text = String::from_utf8_lossy(&created.stdout).into_owned();
    let code = text.lines().find_map(|l| l.strip_prefix("join code: ")).expect("a join code").to_owned();
    let joined = colink().args(["account", "join", &code, "--state-dir"]).arg(&send_state).output().expect("join");
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    let mut c = colink();
    c.args(["serve", "--backend", hub_arg, "--sessions", "1", "--state-dir"]).arg(&serve_state).args(extra);
    let (running, rx, seen) = spawn_until(c, stderr, "serving app");
    let device = seen
        .iter()
        .find_map(|l| l.strip_prefix("colink serve: device ").and_then(|r| r.split(' ').next()))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no device line in {seen:?}"));
    (running, rx, device)
}

#[test]
fn serve_listens_again_after_the_hub_restarts_and_a_later_send_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let first = hub(&sock);
    let (mut serve, out, server) = serve(dir.path(), &hub_arg, &[], Stdio::inherit());

    drop(first);
    wait_for_line(&out, "radio lost; listening again once it is back");
    let _second = hub(&sock);
    wait_for_line(&out, "radio back; listening again");

    let sent = colink()
        .args(["send", "message", "hello after the restart", "--to", &server, "--backend", &hub_arg, "--state-dir"])
        .arg(dir.path().join("state-send"))
        .output()
        .expect("run send");
    assert!(sent.status.success(), "send failed: {}", String::from_utf8_lossy(&sent.stderr));
    let lines = wait_for_line(&out, "disconnected");
    assert!(lines.iter().any(|l| l.contains("hello after the restart")), "serve said {lines:?}");
    let status = wait_exit(&mut serve.0, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "serve ends after its one session");
}

#[test]
fn serve_with_exit_on_adapter_loss_exits_1_when_the_hub_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let hub = hub(&sock);
    let (mut serve, _out, _) = serve(dir.path(), &hub_arg, &["--exit-on-adapter-loss", "-q"], Stdio::piped());

    drop(hub);
    let status = wait_exit(&mut serve.0, Duration::from_secs(10));
    let mut err = String::new();
    serve.0.stderr.take().expect("stderr").read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got {err:?}");
    assert!(err.starts_with("colink: error: ") && err.contains("adapter was lost"), "{err:?}");
}

/// Waits at most `within` for `child` to exit.
fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(started.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
