//! What a new user meets first: clap's errors printed whole under the one `colink: error: ` prefix, help for a
//! bare `colink`, range errors for negative numbers, no escape bytes off a terminal or with `NO_COLOR`, and the
//! generated shell completions and man page.

use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;

fn colink() -> Command {
    let mut c = Command::cargo_bin("colink").expect("the colink binary");
    c.env_remove("RUST_LOG").env_remove("NO_COLOR");
    c
}

fn run(args: &[&str]) -> Output {
    colink().args(args).output().expect("run colink")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn send_message_without_to_names_the_missing_to() {
    let out = run(&["send", "message", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "colink: error: the following required arguments were not provided:\n  --to <DEVICE>\n\n\
         Usage: colink send message --to <DEVICE> <TEXT>\n\nFor more information, try '--help'.\n"
    );
}

#[test]
fn a_misspelt_subcommand_suggests_send() {
    let out = run(&["sned"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("colink: error: unrecognized subcommand 'sned'\n"), "{err}");
    assert!(err.contains("tip: a similar subcommand exists: 'send'"), "{err}");
}

#[test]
fn bare_colink_prints_its_help_and_exits_2() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("Usage: colink [OPTIONS] <COMMAND>"), "{err}");
    assert!(err.contains("Commands:") && err.contains("  send "), "{err}");
    assert!(!err.contains("error:"), "help, not an error: {err}");
}

#[test]
fn a_negative_distance_reaches_the_range_check() {
    let out = run(&["demo", "--distance", "-3"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "colink: error: invalid value '-3' for '--distance <METRES>': must be more than 0 and at most 100 metres, \
         got -3\n\nFor more information, try '--help'.\n"
    );
    let out = run(&["scan", "--duration", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("must be more than 0 and at most 86400 seconds, got -1"), "{}", stderr(&out));
}

#[test]
fn clap_errors_and_colink_errors_share_one_prefix() {
    let missing_hub = ["send", "message", "hi", "--to", "00112233445566778899aabbccddeeff", "--hub", "/nonexistent/a"];
    for (args, code) in [(&["sned"][..], 2), (&["send", "message", "hi"][..], 2), (&missing_hub[..], 3)] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("colink: error: "), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
        assert!(!err.contains("colink: colink"), "{err}");
    }
}

#[test]
fn the_bluez_hint_names_what_really_works() {
    // Whether BlueZ answers here depends on the machine; the hint's words do not.
    let out = run(&["scan", "--backend", "bluez", "--duration", "1"]);
    let err = stderr(&out);
    if out.status.code() == Some(3) && err.contains("BlueZ is not available") {
        assert!(err.contains("`colink demo`") && err.contains("--backend sim-hub"), "{err}");
        assert!(!err.contains("--backend sim "), "{err}");
    } else {
        eprintln!("skipped: bluetoothd answers on this machine, so there is no hint to read ({err})");
    }
}

/// Runs `colink` with stdout and stderr captured (not a terminal), `NO_COLOR` as given, and logging turned up.
fn no_escape_bytes(no_color: Option<&str>) {
    let mut c = colink();
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    // -v: the Managers' info lines go to stderr (a short bench in virtual time); a clap error and a colink error
    // too.
    let out = c.args(["-v", "bench", "--size", "10000", "--rounds", "2"]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains(" INFO colink::manager: manager started"), "-v logs the Managers: {log:?}");
    for out in [out, run(&["sned"]), run(&["send", "message", "", "--to", "00112233445566778899aabbccddeeff"])] {
        assert!(!out.stdout.contains(&0x1b), "stdout: {:?}", String::from_utf8_lossy(&out.stdout));
        assert!(!out.stderr.contains(&0x1b), "stderr: {:?}", stderr(&out));
    }
}

#[test]
fn piped_output_has_no_escape_bytes() {
    no_escape_bytes(None);
}

#[test]
fn no_color_output_has_no_escape_bytes() {
    no_escape_bytes(Some("1"));
}

/// On a terminal (through `script`, when the machine has it): colours without `NO_COLOR`, none with it.
#[test]
fn no_color_turns_colours_off_on_a_terminal() {
    let bin = assert_cmd::cargo::cargo_bin("colink");
    let has_script = Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: needs util-linux `script` to run colink on a pseudo-terminal");
        return;
    }
    let on_tty = |no_color: bool| {
        let mut c = Command::new("script");
        c.args(["-qec"]).arg(format!("{} sned", bin.display())).arg("/dev/null").env_remove("RUST_LOG");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        c.output().expect("run script")
    };
    let coloured = on_tty(false);
    let plain = on_tty(true);
    assert!(String::from_utf8_lossy(&coloured.stdout).contains("similar subcommand"), "{coloured:?}");
    assert!(
        coloured.stdout.contains(&0x1b),
        "a terminal gets colours: {:?}",
        String::from_utf8_lossy(&coloured.stdout)
    );
    assert!(String::from_utf8_lossy(&plain.stdout).contains("colink: error: unrecognized subcommand 'sned'"));
    assert!(!plain.stdout.contains(&0x1b), "NO_COLOR: {:?}", String::from_utf8_lossy(&plain.stdout));
}

#[test]
fn completions_are_generated_for_every_shell_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in ["serve", "send", "scan", "sim-hub", "completions", "man"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_is_generated_and_names_the_subcommands() {
    let out = run(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH colink"), "{page}");
    for sub in ["demo", "scan", "serve", "connect", "send", "pair", "sim\\-hub", "bench", "stream", "completions"] {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = colink().arg("man").arg("--dir").arg(dir.path()).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    for page in ["colink.1", "colink-send.1", "colink-serve.1", "colink-send-message.1"] {
        let len = std::fs::metadata(dir.path().join(page)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 100, "{page}: {len} bytes");
    }
}

#[test]
fn verbosity_flags_feed_the_log_and_rust_log_wins() {
    let bench = ["bench", "--size", "10000", "--rounds", "2"];
    let quiet = colink().arg("-q").args(bench).output().expect("run");
    assert!(quiet.status.success() && !stderr(&quiet).contains(" INFO "), "{}", stderr(&quiet));
    let verbose = colink().arg("-v").args(bench).output().expect("run");
    assert!(stderr(&verbose).contains(" INFO colink::manager"), "{}", stderr(&verbose));
    // RUST_LOG set: it decides, whatever -v says.
    let overridden = colink().env("RUST_LOG", "error").arg("-vv").args(bench).output().expect("run");
    assert!(overridden.status.success(), "{}", stderr(&overridden));
    assert!(
        !stderr(&overridden).contains(" INFO ") && !stderr(&overridden).contains("DEBUG"),
        "{}",
        stderr(&overridden)
    );
}

/// `text` without ANSI escape sequences (`ESC [ … letter`) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// On a 50-column pseudo-terminal (through `script`), every line of scan's live table fits: nothing wraps.
#[test]
fn the_live_scan_table_fits_the_terminal_width() {
    let bin = assert_cmd::cargo::cargo_bin("colink");
    let has_script = Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: needs util-linux `script` to run colink on a pseudo-terminal");
        return;
    }
    for cols in [50, 72] {
        let out = Command::new("script")
            .args(["-qec"])
            .arg(format!("stty cols {cols} rows 24; {} scan --duration 2", bin.display()))
            .arg("/dev/null")
            .env_remove("RUST_LOG")
            .output()
            .expect("run script");
        let text = strip_escapes(&String::from_utf8_lossy(&out.stdout));
        let table: Vec<&str> = text.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
        assert!(table.iter().any(|l| l.starts_with("device")), "a live table: {text}");
        assert!(table.iter().filter(|l| l.contains("sim-") || l.contains('…')).count() >= 3, "three rows: {text}");
        for line in table {
            assert!(line.chars().count() <= cols, "{cols} columns: {} in {line:?}", line.chars().count());
        }
    }
}
