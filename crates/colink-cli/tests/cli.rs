//! The `colink` binary end to end: the demo's JSON report, a file moved between two processes through
//! `colink sim-hub`, and one-line errors with the documented exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// Spawns `cmd` and waits until a line of its stdout contains `ready`; the rest of stdout goes to the channel.
fn spawn_until(mut cmd: Command, ready: &str) -> (Running, mpsc::Receiver<String>) {
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
    let running = Running(child);
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no line with {ready:?}"));
        if line.contains(ready) {
            return (running, rx);
        }
    }
}

#[test]
fn demo_fast_json_reports_every_step_ok() {
    let out = colink().args(["demo", "--fast", "--json"]).output().expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["mode"], "virtual time");
    let steps = report["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["start", "discovery", "pairing", "connect", "messages", "data", "link-drop", "disconnect"]);
    for s in steps {
        assert_eq!(s["ok"], true, "{s}");
    }
    let by = |name: &str| steps.iter().find(|s| s["step"] == name).expect(name)["figures"].clone();
    // Figures a user reads: a plausible RSSI at 1.5 m, equal passkeys, 1 MB intact at a rate near the LE 2M model.
    let rssi = by("discovery")["rssi_dbm"].as_i64().expect("rssi");
    assert!((-80..=-20).contains(&rssi), "{rssi}");
    assert_eq!(by("pairing")["alice_shown"], by("pairing")["bob_shown"]);
    let data = by("data");
    assert_eq!(data["bytes"], 1_000_000);
    assert_eq!(data["intact"], true);
    let (kbit, model) = (data["kbit_s"].as_f64().unwrap(), data["model_capacity_kbit_s"].as_f64().unwrap());
    assert!(kbit > model * 0.5 && kbit <= model, "{kbit} kbit/s against a model capacity of {model}");
    assert_eq!(by("link-drop")["intact"], true);
    assert_eq!(by("disconnect")["reason"], "PEER_APP_CLOSE_COLLABORATION");
}

#[test]
fn a_20_mb_file_crosses_two_processes_through_the_sim_hub_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let (_hub, _) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_until(c, "join it with")
    };
    let inbox = dir.path().join("inbox");
    let server_id = "5e7e5e7e000000000000000000000001";
    let (_serve, serve_out) = {
        let mut c = colink();
        c.args(["serve", "--backend", &hub_arg, "--device-id", server_id, "--sessions", "1", "--save-dir"])
            .arg(&inbox)
            .arg("--state-dir")
            .arg(dir.path().join("state-serve"));
        spawn_until(c, "serving app")
    };
    let file = dir.path().join("payload.bin");
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let out = colink()
        .args(["send", "file"])
        .arg(&file)
        .args(["--to", server_id, "--backend", &hub_arg, "--json", "--state-dir"])
        .arg(dir.path().join("state-send"))
        .output()
        .expect("run send");
    assert!(out.status.success(), "send failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(result["bytes"], 20_000_000);
    // serve reports the saved file, then the session's end.
    let saved = inbox.join("payload.bin");
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("disconnected")) {
        lines.push(serve_out.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("serve said {lines:?}")));
    }
    assert!(lines.iter().any(|l| l.contains("saved") && l.contains("payload.bin")), "{lines:?}");
    assert!(std::fs::read(&saved).expect("saved file") == data, "the saved file differs from the sent one");
}

fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got {err:?}");
    assert!(err.starts_with("colink: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn bad_arguments_give_one_line_and_exit_code_2() {
    let out = colink().args(["demo", "--sise", "3"]).output().unwrap();
    assert_one_line_error(&out, 2, "--sise");
    let out = colink().args(["scan", "--backend", "wifi"]).output().unwrap();
    assert_one_line_error(&out, 2, "sim, sim-hub[:PATH] or bluez[:hciN]");
    let out = colink().args(["send", "message", "hi", "--to", "not-hex"]).output().unwrap();
    assert_one_line_error(&out, 2, "--to");
    let out = colink().args(["serve", "--backend", "sim"]).output().unwrap();
    assert_one_line_error(&out, 2, "sim-hub");
    let out = colink().arg("launch").output().unwrap();
    assert_one_line_error(&out, 2, "launch");
}

#[test]
fn a_missing_radio_is_named_with_801_and_exit_code_3() {
    // No hub listens here.
    let out = colink()
        .args(["send", "message", "hi", "--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/air.sock"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 3, "no simulator hub at /nonexistent/air.sock");
    assert!(String::from_utf8_lossy(&out.stderr).contains("801"));
    // The media layer has not landed: a clear "not supported".
    let out = colink().args(["stream", "send"]).output().unwrap();
    assert_one_line_error(&out, 3, "media layer");
}

#[test]
fn bluez_without_bluetoothd_is_a_one_line_801() {
    if Path::new("/run/dbus/system_bus_socket").exists() || Path::new("/var/run/dbus/system_bus_socket").exists() {
        // A system bus exists here; whether BlueZ answers depends on the machine. Nothing to assert.
        return;
    }
    let out = colink().args(["scan", "--backend", "bluez", "--duration", "1"]).output().unwrap();
    assert_one_line_error(&out, 3, "BlueZ is not available");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["demo", "scan", "serve", "connect", "send", "pair", "sim-hub", "bench", "stream"] {
        let out = colink().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{sub} --help has no example:\n{text}");
    }
}
