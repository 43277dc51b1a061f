//! The `colink` binary end to end: the demo's JSON report, a file, an image and a video stream moved between
//! processes through `colink sim-hub`, and one-line errors with the documented exit codes.

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

/// Puts the state directories `dirs` (created as needed) into one account: the first creates it, the others
/// join with its code, as a person does on their laptops.
fn same_account(dirs: &[&Path]) {
    let created = colink().args(["account", "create", "--state-dir"]).arg(dirs[0]).output().expect("account create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let text = String::from_utf8_lossy(&created.stdout).into_owned();
    let code = text.lines().find_map(|l| l.strip_prefix("join code: ")).expect("a join code").to_owned();
    for dir in &dirs[1..] {
        let joined = colink().args(["account", "join", &code, "--state-dir"]).arg(dir).output().expect("account join");
        assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    }
}

/// Spawns a `serve` (text or `--json`) and waits until it serves; returns its device id, read from its output.
fn spawn_serve(mut cmd: Command, json: bool) -> (Running, mpsc::Receiver<String>, String) {
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
    let mut device = None;
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("serve never served"));
        if json {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if v["event"] == "serving" {
                return (running, rx, v["device"].as_str().expect("device").to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("colink serve: device ") {
            device = rest.split(' ').next().map(str::to_owned);
        } else if line.contains("serving app") {
            return (running, rx, device.expect("the device line comes first"));
        }
    }
}

#[test]
fn demo_fast_json_reports_every_step_ok() {
    let out = colink().args(["demo", "--fast", "--json"]).output().expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    // The H.264 encoder's start-up warnings go to tracing (debug), not to the terminal.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("OpenH264") && !stderr.contains("bEnableFrameSkip"), "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["mode"], "virtual time");
    let steps = report["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap_or("")).collect();
    assert_eq!(
        names,
        ["start", "discovery", "pairing", "connect", "messages", "data", "image", "stream", "link-drop", "disconnect"]
    );
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
    // The image comes back the same size, with the quality JPEG 30 gives a synthetic picture.
    let image = by("image");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64(), image["quality"].as_u64()),
        (Some(640), Some(480), Some(30))
    );
    let db = image["psnr_db"].as_f64().expect("image PSNR");
    assert!((25.0..60.0).contains(&db), "image PSNR {db}");
    assert!(image["jpeg_bytes"].as_u64().expect("jpeg bytes") > 1000);
    // 3 s at 30 fps and 500 kbit/s over LE 2M: nearly every frame shown, a plausible latency, a good picture.
    let stream = by("stream");
    assert_eq!(stream["frames_pushed"], 90);
    let shown = stream["frames_shown"].as_u64().expect("frames shown");
    assert!((80..=90).contains(&shown), "{shown} of 90 frames shown");
    let (p50, p99) = (stream["latency_p50_ms"].as_f64().unwrap(), stream["latency_p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 1000.0, "latency p50 {p50} p99 {p99}");
    let db = stream["psnr_db"].as_f64().expect("stream PSNR");
    assert!(db >= 30.0, "stream PSNR {db}");
    assert!(report["not_included"].as_array().is_some_and(Vec::is_empty));
}

/// A `sim-hub --profile fast` and a `serve` on it (extra serve arguments `extra`), its state directory and
/// `dir/state-send` in one account; also the hub argument and serve's device id.
fn hub_and_serve(dir: &Path, extra: &[&str]) -> (Running, Running, mpsc::Receiver<String>, String, String) {
    same_account(&[&dir.join("state-serve"), &dir.join("state-send")]);
    let sock = dir.join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let (hub, _) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_until(c, "join it with")
    };
    let (serve, out, server_id) = {
        let mut c = colink();
        c.args(["serve", "--backend", &hub_arg, "--sessions", "1", "--state-dir"])
            .arg(dir.join("state-serve"))
            .args(extra);
        spawn_serve(c, false)
    };
    (hub, serve, out, hub_arg, server_id)
}

/// serve's lines up to and including the session's end.
fn lines_until_disconnected(out: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("disconnected")) {
        lines.push(out.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("serve said {lines:?}")));
    }
    lines
}

#[test]
fn an_image_sent_to_serve_is_saved_as_png_of_the_same_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    let (_hub, _serve, serve_out, hub_arg, server_id) =
        hub_and_serve(dir.path(), &["--save-dir", inbox.to_str().expect("utf-8 path")]);
    let server_id = server_id.as_str();
    // A 120x80 RGBA picture with a gradient and a hard edge.
    let png = dir.path().join("picture.png");
    let picture = image::RgbaImage::from_fn(120, 80, |x, y| {
        image::Rgba([(x * 2) as u8, (y * 3) as u8, if x > 60 { 255 } else { 0 }, 255])
    });
    picture.save(&png).expect("write the PNG");
    let out = colink()
        .args(["send", "image"])
        .arg(&png)
        .args(["--quality", "90", "--to", server_id, "--backend", &hub_arg, "--json", "--state-dir"])
        .arg(dir.path().join("state-send"))
        .output()
        .expect("run send image");
    assert!(out.status.success(), "send image failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(
        (result["sent"].as_str(), result["width"].as_u64(), result["height"].as_u64()),
        (Some("image"), Some(120), Some(80))
    );
    assert_eq!((result["format"].as_str(), result["quality"].as_u64()), (Some("RGBA8888"), Some(90)));
    let lines = lines_until_disconnected(&serve_out);
    let saved =
        lines.iter().find(|l| l.contains("image 120x80 RGBA8888: saved")).unwrap_or_else(|| panic!("{lines:?}"));
    let path = saved.rsplit("saved ").next().expect("a path");
    let back = image::open(path).expect("the saved PNG opens").into_rgba8();
    assert_eq!(back.dimensions(), (120, 80));
    // JPEG at 90 keeps the picture close: the mean absolute error per channel is small.
    let err: u64 = back.as_raw().iter().zip(picture.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
    assert!(err / back.as_raw().len() as u64 <= 4, "mean error {}", err / back.as_raw().len() as u64);
}

#[test]
fn a_stream_sent_to_serve_is_received_and_measured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames_dir = dir.path().join("frames");
    let (_hub, _serve, serve_out, hub_arg, server_id) = hub_and_serve(
        dir.path(),
        &["--save-dir", frames_dir.to_str().expect("utf-8 path"), "--save-frames", "30", "--stream-name", "cam"],
    );
    let server_id = server_id.as_str();
    let out = colink()
        .args(["stream", "send", "--seconds", "2", "--size", "320x240", "--name", "cam", "--bitrate", "300000"])
        .args(["--to", server_id, "--backend", &hub_arg, "--json", "--state-dir"])
        .arg(dir.path().join("state-send"))
        .output()
        .expect("run stream send");
    assert!(out.status.success(), "stream send failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(result["frames_pushed"], 60);
    let sent = result["frames_sent"].as_u64().expect("frames sent");
    assert!(sent > 0 && sent <= 60, "{result}");
    assert!(result["key_frames"].as_u64().expect("key frames") >= 1);
    assert!(result["bytes"].as_u64().expect("bytes") > 0);
    let lines = lines_until_disconnected(&serve_out);
    let end = lines.iter().find(|l| l.contains("stream \"cam\" ended")).unwrap_or_else(|| panic!("{lines:?}"));
    // "... ended: N frames received (K key), M shown 320x240, ..."
    let received: u64 = end
        .split("ended: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{end}"));
    assert!(received > 0 && received <= sent, "{end}");
    assert!(end.contains("shown 320x240"), "{end}");
    assert!(end.contains("dB against the test pattern"), "{end}");
    assert!(lines.iter().any(|l| l.contains("saved") && l.contains("frames as PNG")), "{lines:?}");
    let saved: Vec<_> = std::fs::read_dir(&frames_dir).expect("frames dir").map_while(Result::ok).collect();
    assert!(!saved.is_empty() && saved.len() <= 2, "every 30th of at most 60 frames: {saved:?}");
    for entry in saved {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(name.starts_with("frame-") && name.ends_with(".png"), "{name}");
        let frame = image::open(entry.path()).expect("a saved frame opens");
        assert_eq!((frame.width(), frame.height()), (320, 240));
    }
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
    same_account(&[&dir.path().join("state-serve"), &dir.path().join("state-send")]);
    let (_serve, serve_out, server_id) = {
        let mut c = colink();
        c.args(["serve", "--backend", &hub_arg, "--sessions", "1", "--save-dir"])
            .arg(&inbox)
            .arg("--state-dir")
            .arg(dir.path().join("state-serve"));
        spawn_serve(c, false)
    };
    let server_id = server_id.as_str();
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

/// One of the CLI's own errors: one line, `colink: error: ...`, the exit code.
fn assert_one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got {err:?}");
    assert!(err.starts_with("colink: error: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

/// A usage error found by clap: printed whole under the same `colink: error: ` prefix, exit code 2.
fn assert_usage_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "stdout {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("colink: error: "), "{err:?}");
    assert_eq!(err.matches("error:").count(), 1, "one prefix: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn bad_arguments_give_one_error_and_exit_code_2() {
    let out = colink().args(["demo", "--sise", "3"]).output().unwrap();
    assert_usage_error(&out, "--sise");
    let out = colink().args(["scan", "--backend", "wifi"]).output().unwrap();
    assert_usage_error(&out, "sim, sim-hub[:PATH] or bluez[:hciN]");
    let out = colink().args(["send", "message", "hi", "--to", "not-hex"]).output().unwrap();
    assert_usage_error(&out, "--to");
    let out = colink().args(["serve", "--backend", "sim"]).output().unwrap();
    assert_one_line_error(&out, 2, "sim-hub");
    let out = colink().arg("launch").output().unwrap();
    assert_usage_error(&out, "launch");
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
    let out = colink()
        .args(["stream", "send", "--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/air.sock"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 3, "no simulator hub at /nonexistent/air.sock");
}

#[test]
fn bad_images_and_qualities_are_refused_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("p.png");
    image::RgbImage::new(8, 8).save(&png).expect("write");
    let to = ["--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/air.sock"];
    for q in ["101", "-1"] {
        let out = colink().args(["send", "image"]).arg(&png).args(["--quality", q]).args(to).output().unwrap();
        assert_one_line_error(&out, 2, "401");
        assert!(String::from_utf8_lossy(&out.stderr).contains("quality"));
    }
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"no picture here").expect("write");
    let out = colink().args(["send", "image"]).arg(&junk).args(to).output().unwrap();
    assert_one_line_error(&out, 1, "cannot read image");
    let out = colink().args(["send", "image"]).arg(dir.path().join("absent.png")).args(to).output().unwrap();
    assert_one_line_error(&out, 1, "cannot read image");
    let out = colink().args(["stream", "send", "--size", "641x480"]).args(to).output().unwrap();
    assert_usage_error(&out, "641x480");
    let out = colink().args(["stream", "send", "--bitrate", "5000"]).args(to).output().unwrap();
    assert_one_line_error(&out, 2, "32300003");
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
    for (sub, what) in [("send", "image"), ("stream", "send"), ("stream", "recv")] {
        let out = colink().args([sub, what, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} {what}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Example"), "{sub} {what} --help has no example");
    }
}

/// serve's `--json` lines up to and including `stopped`, each parsed (a line that is not JSON fails the test).
fn json_events_until_stopped(out: &mpsc::Receiver<String>) -> Vec<serde_json::Value> {
    let mut events: Vec<serde_json::Value> = Vec::new();
    while !events.iter().any(|e| e["event"] == "stopped") {
        let line = out.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("serve said {events:?}"));
        let event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        events.push(event);
    }
    events
}

#[test]
fn serve_json_reports_every_session_and_a_refused_message_never_connects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let (_hub, _) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_until(c, "join it with")
    };
    same_account(&[&dir.path().join("state-serve"), &dir.path().join("state-send")]);
    let (_serve, serve_out, server_id) = {
        let mut c = colink();
        c.args(["serve", "--json", "--backend", &hub_arg, "--sessions", "2"])
            .arg("--state-dir")
            .arg(dir.path().join("state-serve"));
        spawn_serve(c, true)
    };
    let server_id = server_id.as_str();
    let send = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = colink();
        c.arg("send").args(args).args(["--to", server_id, "--backend", &hub_arg, "--state-dir"]);
        c.arg(dir.path().join("state-send"));
        match stdin {
            Some(bytes) => {
                let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                let mut input = child.stdin.take().expect("stdin");
                std::io::Write::write_all(&mut input, bytes).expect("write stdin");
                drop(input);
                child.wait_with_output().expect("run send")
            }
            None => c.output().expect("run send"),
        }
    };
    // 1024 bytes: the API's limit is < 1024. Refused as a usage error, before any radio work.
    let long = "x".repeat(1024);
    let out = send(&["message", &long], None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "colink: error: 401 (parameter error): invalid argument `msg`: must be shorter than 1024 bytes of UTF-8, \
         got 1024 bytes\n"
    );
    assert!(out.stdout.is_empty(), "nothing printed: no connection");
    // A message whose text needs escaping, then data from stdin.
    let tricky = "a \"quoted\" word, a \\ and an escape \u{1b}[31m";
    let out = send(&["message", tricky], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let payload = b"bytes from stdin\x00\xff\n";
    let out = send(&["data", "-", "--json"], Some(payload));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(sent["bytes"], payload.len());

    let events = json_events_until_stopped(&serve_out);
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).collect::<Vec<_>>();
    // Two sessions, not three: the refused message never connected.
    assert_eq!(of("connected").len(), 2, "{events:#?}");
    let messages = of("message");
    assert_eq!(messages.len(), 1, "{events:#?}");
    assert_eq!(messages[0]["text"], tricky);
    let data = of("data");
    assert_eq!(data.len(), 1, "{events:#?}");
    assert_eq!(data[0]["bytes"], payload.len());
    assert_eq!(data[0]["sha256"], sent["sha256"]);
    // Both senders said goodbye: the peer learns it from them, not from a timeout.
    let reasons: Vec<_> = of("disconnected").iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(reasons, ["PEER_APP_CLOSE_COLLABORATION", "PEER_APP_CLOSE_COLLABORATION"], "{events:#?}");
    assert_eq!(of("stopped")[0]["sessions"], 2);
    assert!(of("error").is_empty(), "{events:#?}");
}

#[test]
fn send_data_from_stdin_over_the_limit_is_a_usage_error_before_any_radio() {
    // 100 MiB + 1 byte; no hub listens at the path, so reaching the radio would exit 3.
    let mut child = colink()
        .args(["send", "data", "-", "--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/air.sock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let block = vec![7u8; 1 << 20];
        for _ in 0..100 {
            if std::io::Write::write_all(&mut input, &block).is_err() {
                return;
            }
        }
        let _ = std::io::Write::write_all(&mut input, &[7]);
    });
    let out = child.wait_with_output().expect("run");
    let _ = writer.join();
    assert_one_line_error(&out, 2, "stdin is more than 104857600 bytes");
    let out = colink()
        .args(["send", "data", "-", "--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/air.sock"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_one_line_error(&out, 2, "stdin is empty");
}

#[test]
fn bench_compares_round_trips_on_equal_intervals_and_says_so() {
    let out = colink().args(["bench", "--size", "20000", "--rounds", "5", "--json"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["same_conn_interval"], true, "{report}");
    let (raw, session) = (&report["raw"], &report["colink"]);
    assert_eq!(raw["conn_interval_ms"], session["conn_interval_ms"]);
    // On the same interval colink's round trip cannot beat the raw link it runs on.
    let (r, c) = (raw["rtt_median_ms"].as_f64().expect("raw rtt"), session["rtt_median_ms"].as_f64().expect("rtt"));
    assert!(c >= r, "colink {c} ms below raw {r} ms");
    let text = report["explanation"].as_str().expect("explanation");
    assert!(text.contains("connection intervals") && text.contains("same 40.00 ms interval"), "{text}");
    // The same bytes as a verified file: a figure of its own, beside send_data's, and their ratio.
    let file = report["file_goodput_kbit_s"].as_f64().expect("file goodput");
    let data = session["goodput_kbit_s"].as_f64().expect("data goodput");
    let ratio = report["goodput_ratio_file_over_data"].as_f64().expect("ratio");
    assert!(file > 0.0 && (ratio - file / data).abs() < 0.02, "{report}");
    let out = colink().args(["bench", "--size", "20000", "--rounds", "5"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connection interval                 40.00 ms          40.00 ms"), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("a round trip waits")), "{text}");
}

#[test]
fn a_send_that_fails_after_connecting_still_says_goodbye() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("air.sock");
    let hub_arg = format!("sim-hub:{}", sock.display());
    let (_hub, _) = {
        let mut c = colink();
        c.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock);
        spawn_until(c, "join it with")
    };
    same_account(&[&dir.path().join("state-serve"), &dir.path().join("state-send")]);
    let (_serve, serve_out, server_id) = {
        let mut c = colink();
        c.args(["serve", "--json", "--backend", &hub_arg, "--sessions", "1"])
            .args(["--stream-name", "camera", "--state-dir"])
            .arg(dir.path().join("state-serve"));
        spawn_serve(c, true)
    };
    let server_id = server_id.as_str();
    // Connected, then refused: serve's SINK is "camera", not "other" (exit 4 after 5 s of retries).
    let out = colink()
        .args(["stream", "send", "--seconds", "1", "--name", "other", "--to", server_id, "--backend", &hub_arg])
        .arg("--state-dir")
        .arg(dir.path().join("state-send"))
        .output()
        .expect("run stream send");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("connected to "), "it did connect");
    let events = json_events_until_stopped(&serve_out);
    let disconnected: Vec<_> = events.iter().filter(|e| e["event"] == "disconnected").collect();
    // The peer hears the goodbye, not a timeout.
    assert_eq!(disconnected.len(), 1, "{events:#?}");
    assert_eq!(disconnected[0]["reason"], "PEER_APP_CLOSE_COLLABORATION", "{events:#?}");
}

/// `send file` to `serve --save-dir`: returns send's output.
fn send_file(dir: &Path, hub_arg: &str, server_id: &str, file: &Path) -> std::process::Output {
    colink()
        .args(["send", "file"])
        .arg(file)
        .args(["--to", server_id, "--backend", hub_arg, "--state-dir"])
        .arg(dir.join("state-send"))
        .output()
        .expect("run send")
}

#[test]
fn a_file_sent_to_serve_never_replaces_a_file_of_the_same_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).expect("inbox");
    std::fs::write(inbox.join("notes.txt"), b"the user's own notes").expect("an existing file");
    let (_hub, _serve, out, hub_arg, server_id) =
        hub_and_serve(dir.path(), &["--save-dir", inbox.to_str().expect("utf-8 path")]);
    let file = dir.path().join("notes.txt");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let sent = send_file(dir.path(), &hub_arg, &server_id, &file);
    assert!(sent.status.success(), "send failed: {}", String::from_utf8_lossy(&sent.stderr));
    // The sender prints the SHA-256 both sides verified.
    let stdout = String::from_utf8_lossy(&sent.stdout);
    let want = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(stdout.contains(&format!("sha256 {want}; the peer verified it")), "{stdout}");
    let lines = lines_until_disconnected(&out);
    let copy = inbox.join("notes (1).txt");
    assert!(lines.iter().any(|l| l.contains(&format!("saved {}", copy.display()))), "{lines:?}");
    assert_eq!(std::fs::read(inbox.join("notes.txt")).expect("the old file"), b"the user's own notes");
    assert!(std::fs::read(&copy).expect("the new one") == data, "the saved file differs from the sent one");
    // Nothing is left half-written or kept.
    let partials = std::fs::read_dir(inbox.join(".colink-partial")).expect("the partial directory").count();
    assert_eq!(partials, 0);
}

#[test]
fn a_dotfile_is_refused_and_the_sender_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    let (_hub, _serve, out, hub_arg, server_id) =
        hub_and_serve(dir.path(), &["--save-dir", inbox.to_str().expect("utf-8 path")]);
    let file = dir.path().join(".bashrc");
    std::fs::write(&file, b"alias ls='rm -rf ~'\n").expect("write");
    let sent = send_file(dir.path(), &hub_arg, &server_id, &file);
    assert_eq!(sent.status.code(), Some(1), "{sent:?}");
    let stderr = String::from_utf8_lossy(&sent.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    assert!(lines[0].starts_with("colink: error: .bashrc was not delivered: "), "{stderr}");
    assert!(lines[0].contains("declined") && lines[0].contains("starts with a dot"), "{stderr}");
    let lines = lines_until_disconnected(&out);
    assert!(lines.iter().any(|l| l.contains("refused file .bashrc") && l.contains("starts with a dot")), "{lines:?}");
    let saved: Vec<_> =
        std::fs::read_dir(&inbox).expect("inbox").map_while(Result::ok).map(|e| e.file_name()).collect();
    assert!(saved.iter().all(|n| n != ".bashrc"), "{saved:?}");
}
