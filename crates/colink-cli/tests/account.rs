//! `colink account` and `colink trust` on a state directory: a join code made on one device joins another to
//! the same account, typos and a second account are refused with exit 2, files stay owner-only, and the trust
//! list escapes what peers named themselves.

use std::path::Path;
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;

fn run(state: &Path, args: &[&str]) -> Output {
    let mut c = Command::cargo_bin("colink").expect("the colink binary");
    c.env_remove("RUST_LOG").args(args).arg("--state-dir").arg(state);
    c.output().expect("run colink")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_join_code_from_one_device_joins_another_to_the_same_account() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let created = run(&a, &["account", "create"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let text = stdout(&created);
    let code = text.lines().find_map(|l| l.strip_prefix("join code: ")).expect("a join code line").to_string();
    let id = text.lines().find_map(|l| l.strip_prefix("created account ")).expect("the account id").to_string();
    assert_eq!(code.len(), 34, "{code}");
    // Typed sloppily on the other laptop.
    let joined = run(&b, &["account", "join", &code.to_lowercase().replace('-', " ")]);
    assert_eq!(joined.status.code(), Some(0), "{}", stderr(&joined));
    assert!(stdout(&joined).starts_with(&format!("joined account {id}")), "{}", stdout(&joined));
    assert_eq!(stdout(&run(&b, &["account", "show"])), format!("account {id}\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&b), 0o700);
        assert_eq!(mode(&b.join("account.key")), 0o600);
    }
    // The secret is not in the account file's name or in `show`'s output.
    assert!(!stdout(&run(&b, &["account", "show"])).contains(&code));
}

#[test]
fn typos_and_a_second_account_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("s");
    let out = run(&s, &["account", "join", "1HDM-V2A0-WMZ2-8EHZ-840Y-C4Y1-7GBY"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "colink: error: the join code's check characters do not match: a character was mistyped\n"
    );
    let out = run(&s, &["account", "join", "1HDM-V2A0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("a join code has 28 characters (dashes aside); this one has 8"), "{}", stderr(&out));
    assert_eq!(run(&s, &["account", "create"]).status.code(), Some(0));
    let out = run(&s, &["account", "create"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("add --force to replace it"), "{}", stderr(&out));
    assert_eq!(run(&s, &["account", "create", "--force"]).status.code(), Some(0));
    assert_eq!(stdout(&run(&s, &["account", "leave"])).lines().count(), 1);
    assert_eq!(
        stdout(&run(&s, &["account", "show"])),
        "not in an account (colink account create, or colink account join CODE)\n"
    );
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("s");
    assert_eq!(run(&s, &["account", "create"]).status.code(), Some(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.join("account.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(&s, &["account", "show"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("may be read or written by others (mode 644); run chmod 600 on it"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn removing_an_unknown_device_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("s");
    let out = run(&s, &["trust", "list"]);
    assert_eq!(stdout(&out), "no trusted devices yet (colink account join CODE, or pair on first connect)\n");
    let out = run(&s, &["trust", "remove", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "colink: error: 0123456789abcdef0123456789abcdef is not a trusted device (colink trust list)\n"
    );
}

/// A `colink serve` on a fresh hub, in its own account; returns the hub, serve, the hub argument and serve's id.
fn serving(dir: &Path) -> (Running, Running, String, String) {
    use std::io::{BufRead, BufReader};
    let sock = dir.join("air.sock");
    let mut hub = Command::cargo_bin("colink").expect("the colink binary");
    hub.args(["sim-hub", "--profile", "fast", "--socket"]).arg(&sock).stdout(Stdio::piped());
    let mut hub = hub.spawn().expect("hub");
    let mut lines = BufReader::new(hub.stdout.take().expect("stdout")).lines();
    while !lines.next().expect("a line").expect("text").contains("join it with") {}
    let state = dir.join("state-serve");
    assert_eq!(run(&state, &["account", "create"]).status.code(), Some(0));
    let hub_arg = format!("sim-hub:{}", sock.display());
    let mut serve = Command::cargo_bin("colink").expect("the colink binary");
    serve.args(["serve", "--backend", &hub_arg, "--state-dir"]).arg(&state).stdout(Stdio::piped()).stdin(Stdio::null());
    let mut serve = serve.spawn().expect("serve");
    let mut lines = BufReader::new(serve.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("text");
    let device =
        first.strip_prefix("colink serve: device ").and_then(|r| r.split(' ').next()).expect("the id").to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    (Running(hub), Running(serve), hub_arg, device)
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use std::process::Stdio;

#[test]
fn a_device_outside_the_account_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let (_hub, _serve, hub_arg, server) = serving(tmp.path());
    // No account on this side: a stranger to serve, which does not pair unasked.
    let out = run(&tmp.path().join("stranger"), &["send", "message", "hi", "--to", &server, "--backend", &hub_arg]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("colink: error: cannot connect to {server}: ")), "{err}");
    assert!(err.contains("colink account join"), "says what to do: {err}");
    // Another account: refused as such.
    let other = tmp.path().join("other");
    assert_eq!(run(&other, &["account", "create"]).status.code(), Some(0));
    let out = run(&other, &["send", "message", "hi", "--to", &server, "--backend", &hub_arg]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("it is not in this device's account"), "{}", stderr(&out));
}
