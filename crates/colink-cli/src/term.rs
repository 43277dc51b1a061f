//! What the CLI writes to a terminal and what it writes elsewhere: colours only on a terminal and never with
//! `NO_COLOR`, the one error prefix, the tracing filter fed by `-v`/`-q` (`RUST_LOG` wins), the terminal's
//! width, and peer-supplied strings made safe to print.

use std::io::IsTerminal as _;

/// Whether to colour what goes to stderr (errors, log lines): only when it is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>). Nothing the CLI writes to stdout is coloured; clap colours its help the
/// same way (a terminal, no `NO_COLOR`).
pub(crate) fn colour_stderr() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// The prefix of every error line, the CLI's own and clap's: `colink: error: ` (with `error:` in bold red on a
/// colour terminal, as clap draws it).
pub(crate) fn error_prefix() -> &'static str {
    if colour_stderr() { "colink: \x1b[1m\x1b[31merror:\x1b[0m " } else { "colink: error: " }
}

/// Prints one of the CLI's own errors: `colink: error: MESSAGE`.
pub(crate) fn print_error(message: &str) {
    eprintln!("{}{message}", error_prefix());
}

/// Prints a clap usage error whole (its context, suggestions and usage kept, clap's own formatting), under the
/// same prefix as the CLI's own errors.
pub(crate) fn print_clap_error(e: &clap::Error) {
    let rendered = e.render();
    let text = if colour_stderr() { rendered.ansi().to_string() } else { rendered.to_string() };
    // clap starts its rendering with its own `error: ` (possibly styled); the prefix replaces it.
    let body = strip_clap_prefix(&text);
    eprint!("{}{body}", error_prefix());
    if !body.ends_with('\n') {
        eprintln!();
    }
}

/// `text` without clap's leading `error:` label, styled or plain.
fn strip_clap_prefix(text: &str) -> &str {
    let Some(at) = text.find("error:") else { return text };
    let (before, rest) = text.split_at(at);
    // Only escape sequences may precede the label.
    if !before.chars().all(|c| c == '\x1b' || c == '[' || c == ';' || c.is_ascii_digit() || c == 'm') {
        return text;
    }
    let rest = &rest["error:".len()..];
    // A style reset may follow the label.
    let rest = rest.strip_prefix("\x1b[0m").unwrap_or(rest);
    rest.strip_prefix(' ').unwrap_or(rest)
}

/// Installs the tracing subscriber on stderr. `RUST_LOG`, when set, decides; otherwise `-q` shows errors only,
/// no flag warnings, `-v` colink's info lines, `-vv` debug, `-vvv` trace. Colour only on a terminal.
pub(crate) fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let from_env =
        std::env::var_os("RUST_LOG").filter(|v| !v.is_empty()).and_then(|_| EnvFilter::try_from_default_env().ok());
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(filter_for(verbose, quiet)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_stderr())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The crates whose lines `-v` turns up (others stay at `warn`).
const OWN_CRATES: [&str; 6] = ["colink", "colink_cli", "colink_ble", "colink_sim", "colink_media", "colink_proto"];

/// The filter directives for `-v` (counted) and `-q`.
fn filter_for(verbose: u8, quiet: bool) -> String {
    if quiet {
        return "error".to_owned();
    }
    let level = match verbose {
        0 => return "warn".to_owned(),
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut directives = vec!["warn".to_owned()];
    directives.extend(OWN_CRATES.iter().map(|c| format!("{c}={level}")));
    directives.join(",")
}

/// The terminal's width in columns when stdout is a terminal.
pub(crate) fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout().size_checked().map(|(_rows, cols)| usize::from(cols)).filter(|c| *c > 0)
}

/// A string a peer sent (a name, a message), made safe to print on one line: control characters (escape
/// sequences, newlines, bidirectional overrides) are shown escaped, as Rust's `escape_debug` writes them.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode's bidirectional formatting characters, which can make a printed line read differently from its bytes.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `s` cut to at most `width` display columns, ending with `…` when something was cut.
pub(crate) fn elide(s: &str, width: usize) -> String {
    if console::measure_text_width(s) <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    console::truncate_str(s, width, "…").into_owned()
}

/// `s` padded with spaces (or elided) to exactly `width` display columns.
pub(crate) fn fit(s: &str, width: usize) -> String {
    let cut = elide(s, width);
    let pad = width.saturating_sub(console::measure_text_width(&cut));
    format!("{cut}{}", " ".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_filters() {
        assert_eq!(filter_for(0, false), "warn");
        assert_eq!(filter_for(3, true), "error");
        let v = filter_for(1, false);
        assert!(v.starts_with("warn,") && v.contains("colink=info") && v.contains("colink_cli=info"), "{v}");
        assert!(filter_for(2, false).contains("colink_ble=debug"));
        assert!(filter_for(7, false).contains("colink_sim=trace"));
    }

    #[test]
    fn peer_strings_lose_their_control_characters() {
        assert_eq!(printable("phone"), "phone");
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("two\nlines"), "two\\nlines");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("café"), "café");
    }

    #[test]
    fn elide_and_fit_count_columns() {
        assert_eq!(elide("sim-tablet", 20), "sim-tablet");
        assert_eq!(elide("sim-tablet", 5), "sim-…");
        assert_eq!(console::measure_text_width(&elide("sim-tablet", 5)), 5);
        assert_eq!(fit("ab", 4), "ab  ");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(elide("abc", 0), "");
    }

    #[test]
    fn clap_labels_are_replaced_not_doubled() {
        assert_eq!(strip_clap_prefix("error: unexpected argument"), "unexpected argument");
        assert_eq!(strip_clap_prefix("\x1b[1m\x1b[31merror:\x1b[0m bad"), "bad");
        assert_eq!(strip_clap_prefix("no label here"), "no label here");
    }
}
