//! `colink`: the colink command — a guided demo on the simulator, and the tools a Bluetooth user reaches for
//! (scan, serve, connect/send, images and media streams, pair, a multi-process simulator hub, a benchmark).
//!
//! Every command that touches a radio takes `--backend sim | sim-hub[:PATH] | bluez[:hciN]`. Exit codes:
//! 0 ok, 1 failure, 2 usage, 3 not supported (colink error 801: no BlueZ, no adapter, no hub),
//! 4 peer unreachable or refused. Every error is printed under one prefix, `colink: error: ` (clap's whole, with
//! its suggestions); usage errors are found before any radio work. `-v`/`-q` (or `RUST_LOG`, which wins) set
//! the log on stderr; colours only on a terminal and never with `NO_COLOR`. `colink completions SHELL` and
//! `colink man` generate the shell completions and man pages from the same clap definitions.
//! See docs/cli.md.
#![forbid(unsafe_code)]

mod app;
mod backend;
mod bench;
mod demo;
mod digest;
mod error;
mod hub;
mod inbox;
mod media;
mod neighbours;
mod observe;
mod pair;
mod report;
mod scan;
mod send;
mod serve;
mod stream;
mod term;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory as _, Parser, Subcommand};
use colink_ble::DeviceId;

use crate::app::{AppName, DEFAULT_APP};
use crate::backend::Backend;
use crate::error::{CliError, CliResult};

const EXIT_CODES: &str = "Exit codes: 0 ok · 1 failure · 2 usage · 3 not supported (colink 801: no BlueZ/adapter/hub) \
                          · 4 peer unreachable or refused.\n\
                          -v/-vv/-vvv (or RUST_LOG, which wins, e.g. RUST_LOG=colink=debug) turn up the log on \
                          stderr; -q leaves errors only. NO_COLOR=1 turns colours off. See docs/cli.md.";

/// colink: sessions between apps on Bluetooth-connected devices.
#[derive(Debug, Parser)]
#[command(name = "colink", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log lines on stderr: -v colink's info lines, -vv debug, -vvv trace (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log on stderr (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Two simulated devices in this process walk the whole API: discovery, pairing, connect, messages, 1 MB of
    /// data, an image, a 3 s video stream, a link drop with resume, disconnect.
    #[command(after_help = "Example:\n  colink demo            # real time, about 15 s\n  colink demo --fast --json")]
    Demo(DemoArgs),
    /// Lists nearby colink devices: address, short device id, RSSI, services, PSM.
    #[command(after_help = "Example:\n  colink scan --duration 5\n  colink scan --backend bluez:hci0")]
    Scan(ScanArgs),
    /// Advertises this device and accepts sessions for an app; prints (or saves) what arrives: messages, data,
    /// files, images, and media streams (with frames, drops, latency and PSNR).
    #[command(
        after_help = "Example:\n  colink sim-hub &\n  colink serve --save-dir ./inbox    # on the default hub\n  \
                            colink serve --save-dir ./inbox --save-frames 30   # also every 30th stream frame"
    )]
    Serve(ServeArgs),
    /// Connects a session to an app on another device; sends each stdin line as a message and prints what arrives.
    #[command(after_help = "Example:\n  colink connect 5d3c...e1 --backend sim-hub")]
    Connect(ConnectArgs),
    /// Connects, sends one message, data payload, file or image, and disconnects.
    #[command(after_help = "Example:\n  colink send file ./photo.raw --to 5d3c...e1 --backend sim-hub\n  \
                            colink send image ./photo.png --quality 60 --to 5d3c...e1\n  \
                            colink send message 'hello' --to 5d3c...e1 --backend bluez")]
    Send(SendArgs),
    /// Pairs with a device (numeric comparison: confirm the six digits on both sides).
    #[command(after_help = "Example:\n  colink pair 5d3c1a2b --backend bluez --yes")]
    Pair(PairArgs),
    /// Serves one simulated air on a Unix socket so several processes share it (`--backend sim-hub:PATH`).
    #[command(name = "sim-hub", after_help = "Example:\n  colink sim-hub --socket /tmp/air.sock --profile le-2m")]
    SimHub(HubArgs),
    /// Measures goodput and message latency through colink, side by side with the raw link in the same run.
    #[command(
        after_help = "Example:\n  colink bench --size 2000000 --json\n  colink bench --backend bluez:hci0 --peer-adapter hci1"
    )]
    Bench(BenchArgs),
    /// Media streams: `send` streams a moving test pattern (H.264) to a peer; `recv` is `serve`.
    #[command(after_help = "Example:\n  colink stream recv --save-dir ./frames --save-frames 30\n  \
                            colink stream send --to 5d3c...e1 --seconds 10 --bitrate 500000 --size 640x480")]
    Stream {
        #[command(subcommand)]
        what: StreamWhat,
    },
    /// The shared account: devices in the same account trust each other without asking. `create` prints a join
    /// code (and a QR code on a terminal); `join CODE` on your other devices.
    #[command(
        after_help = "Example:\n  colink account create\n  colink account join 7F3K-Q9ZD-...   # on the other laptop\n  \
                            colink account show"
    )]
    Account {
        #[command(subcommand)]
        what: AccountWhat,
        /// Where the identity, account and trusted devices are kept (default: $XDG_STATE_HOME/colink).
        #[arg(long, value_name = "DIR", global = true)]
        state_dir: Option<PathBuf>,
    },
    /// Lists the devices this one knows and trusts: id, how trusted, last seen, name (same as `trust list`).
    #[command(after_help = "Example:\n  colink devices\n  colink devices --json")]
    Devices {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Where the identity, account and trusted devices are kept (default: $XDG_STATE_HOME/colink).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// The devices this one trusts (by account or by a confirmed pairing code), with their pinned keys.
    #[command(after_help = "Example:\n  colink trust list\n  colink trust remove 5d3c...e1")]
    Trust {
        #[command(subcommand)]
        what: TrustWhat,
        /// Where the identity, account and trusted devices are kept (default: $XDG_STATE_HOME/colink).
        #[arg(long, value_name = "DIR", global = true)]
        state_dir: Option<PathBuf>,
    },
    /// Prints a shell completion script, generated from this command's own definition.
    #[command(
        after_help = "Example:\n  colink completions bash > ~/.local/share/bash-completion/completions/colink\n  \
                            colink completions zsh > ~/.zfunc/_colink\n  \
                            colink completions fish > ~/.config/fish/completions/colink.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page colink(1) in roff, generated from this command's own definition; with --dir, writes
    /// colink.1 and one page per subcommand (colink-send.1, ...) into DIR.
    #[command(after_help = "Example:\n  colink man > ~/.local/share/man/man1/colink.1 && man colink\n  \
                            colink man --dir ~/.local/share/man/man1")]
    Man {
        /// Write every page into this directory instead of colink(1) to stdout.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountWhat {
    /// Creates a new account for this device and prints its join code.
    Create {
        /// Replace the account this device is in already.
        #[arg(long)]
        force: bool,
    },
    /// Joins the account of a join code (letters and digits; case, dashes and spaces do not matter).
    Join {
        /// The join code `colink account create` printed on another device.
        code: String,
        /// Replace the account this device is in already.
        #[arg(long)]
        force: bool,
    },
    /// Shows the account this device is in.
    Show {
        /// Also print the join code again (a secret: whoever has it joins).
        #[arg(long)]
        code: bool,
    },
    /// Leaves the account (devices trusted so far stay trusted until `colink trust remove`).
    Leave,
}

#[derive(Debug, Subcommand)]
enum TrustWhat {
    /// Lists trusted devices: id, how trusted, last seen, name.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forgets a device: it must join the account or pair again.
    Remove {
        /// The device id (32 hex digits).
        device: DeviceId,
    },
}

#[derive(Debug, Subcommand)]
enum StreamWhat {
    /// Connects (need_send_stream), opens a SOURCE stream and pushes the moving test pattern at 30 fps, then
    /// prints the stream's figures.
    #[command(after_help = "Example:\n  colink stream send --to 5d3c...e1 --seconds 10 --bitrate 500000 --json")]
    Send(StreamSendArgs),
    /// Receives streams: exactly `colink serve` (same options), which opens a SINK for every peer that streams.
    #[command(after_help = "Example:\n  colink stream recv --stream-name camera --save-dir ./frames --save-frames 30")]
    Recv(ServeArgs),
}

#[derive(Debug, Args)]
struct StreamSendArgs {
    #[command(flatten)]
    to: Target,
    /// How long to stream, seconds (30 frames a second).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    seconds: u32,
    /// The encoder's bitrate, bits per second (the API takes 10000..=20000000; it lowers it under congestion).
    #[arg(long, value_name = "BPS", default_value_t = 500_000)]
    bitrate: u32,
    /// The picture size, WIDTHxHEIGHT (even numbers).
    #[arg(long, value_name = "WxH", default_value = "640x480", value_parser = media::parse_size)]
    size: (u32, u32),
    /// The stream's name: the receiver's SINK must have the same (`serve --stream-name`); 1 to 1023 bytes.
    #[arg(long, default_value = DEFAULT_STREAM, value_parser = parse_stream_name)]
    name: String,
}

/// The stream name `stream send` and `serve` use unless told otherwise.
const DEFAULT_STREAM: &str = "colink";

/// Where and as whom: the radio, the app endpoint and the device identity.
#[derive(Debug, Args, Clone)]
struct Radio {
    /// The radio: `sim` (a private simulated air), `sim-hub[:PATH]` (the shared air of `colink sim-hub`),
    /// `bluez[:hciN]` (a real adapter). Default: `sim` for scan/pair, `sim-hub` for serve/connect/send.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<Backend>,
    /// Shorthand for `--backend sim-hub:PATH`.
    #[arg(long, value_name = "PATH")]
    hub: Option<PathBuf>,
}

impl Radio {
    fn backend(&self) -> Backend {
        Backend::resolve(self.backend.clone(), self.hub.clone())
    }

    /// For commands that talk to other processes: with no radio given, the default simulator hub.
    fn backend_or_hub(&self) -> Backend {
        match (&self.backend, &self.hub) {
            (None, None) => Backend::SimHub(backend::default_hub_path()),
            _ => self.backend(),
        }
    }
}

#[derive(Debug, Args, Clone)]
struct Identity {
    /// Where the identity key, the account and the trusted devices are kept (default: $XDG_STATE_HOME/colink
    /// or ~/.local/state/colink). The device id is derived from the identity key.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The local app endpoint, `bundle/module/ability` (the peer's is the same unless --peer-app).
    #[arg(long, value_name = "APP", default_value = DEFAULT_APP)]
    app: AppName,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Run the same tour in virtual time (tokio's paused clock): finishes in seconds.
    #[arg(long)]
    fast: bool,
    /// Print a machine-readable report (every step with ok and its figures) instead of text.
    #[arg(long)]
    json: bool,
    /// Seed of the simulated radio noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes in the data step (the link-drop step sends half as many).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    size: u64,
    /// Distance between the two laptops, metres: more than 0, at most 100.
    #[arg(long, value_name = "METRES", default_value_t = 1.5, allow_negative_numbers = true,
          value_parser = parse_distance)]
    distance: f64,
}

#[derive(Debug, Args)]
struct ScanArgs {
    #[command(flatten)]
    radio: Radio,
    /// How long to scan, seconds: more than 0, at most 86400.
    #[arg(long, value_name = "S", default_value_t = 5.0, allow_negative_numbers = true, value_parser = parse_seconds)]
    duration: f64,
    /// Only devices that may host this service name.
    #[arg(long)]
    service: Option<String>,
    /// Print the final table as JSON.
    #[arg(long)]
    json: bool,
    /// Where the trusted devices are kept (default: $XDG_STATE_HOME/colink): a trusted device's advert is shown
    /// with the name and device id it has there.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    radio: Radio,
    #[command(flatten)]
    id: Identity,
    /// Save received data and files into this directory (otherwise their size and SHA-256 are printed); files
    /// that fail part-way are kept in DIR/.colink-partial (at most 16, for 7 days) so that sending again resumes.
    #[arg(long, value_name = "DIR")]
    save_dir: Option<PathBuf>,
    /// Exit after this many sessions have ended (default: serve until Ctrl-C).
    #[arg(long, value_name = "N")]
    sessions: Option<u64>,
    /// Reject sessions instead of accepting them (for testing a peer's error handling).
    #[arg(long)]
    reject: bool,
    /// The name of the SINK stream opened for a peer that streams (must match the sender's `--name`).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM, value_parser = parse_stream_name)]
    stream_name: String,
    /// Also save every Nth decoded stream frame as PNG into --save-dir (`frame-SESSION-NUMBER.png`).
    #[arg(long, value_name = "N", requires = "save_dir", value_parser = clap::value_parser!(u64).range(1..))]
    save_frames: Option<u64>,
    /// Print one JSON object a line instead of text: serving, connected, message, data, file, image,
    /// stream_started/_first_frame/_progress/_ended, disconnected, pairing, rejected, dropped, error, radio,
    /// stopped.
    #[arg(long)]
    json: bool,
    /// Exit with code 1 when the radio goes away (adapter off or removed, bluetoothd or the sim hub restarted)
    /// instead of listening and advertising again once it is back.
    #[arg(long)]
    exit_on_adapter_loss: bool,
    /// Pair with devices that are neither in this device's account nor paired before, without asking: each
    /// pairing's six-digit code is still printed. (Without it, serve asks on its terminal, or refuses
    /// strangers when not run on one.)
    #[arg(long)]
    accept_new: bool,
    /// Answer the Bluetooth pairings other devices start with this computer while serve runs (for a machine
    /// without a desktop pairing agent): serve becomes the host's default pairing agent, asks on its terminal
    /// (accepts with --accept-new, showing the code; refuses when on no terminal) and authorises no other
    /// profile. Without it the desktop's agent answers them, and with none bluetoothd refuses them.
    #[arg(long)]
    pairing_agent: bool,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// The peer's device id (32 hex digits, as printed by `colink serve`).
    device: DeviceId,
    #[command(flatten)]
    radio: Radio,
    #[command(flatten)]
    id: Identity,
    /// The peer's app endpoint (default: the same as --app).
    #[arg(long, value_name = "APP")]
    peer_app: Option<AppName>,
}

#[derive(Debug, Args)]
struct SendArgs {
    #[command(subcommand)]
    what: SendWhat,
}

#[derive(Debug, Subcommand)]
enum SendWhat {
    /// A text message (1 to 1023 bytes of UTF-8).
    #[command(after_help = "Example:\n  colink send message 'hello' --to 5d3c...e1 --hub /tmp/air.sock")]
    Message {
        /// The text (1 to 1023 bytes of UTF-8: the API's limit, checked before connecting).
        text: String,
        #[command(flatten)]
        to: Target,
    },
    /// A data payload: the given text as bytes, stdin's bytes (`-`), or --size bytes of a test pattern; at
    /// most 100 MiB (the reference receiver's limit), checked before connecting.
    #[command(after_help = "Example:\n  colink send data --size 1000000 --to 5d3c...e1 --hub /tmp/air.sock\n  \
                            tar c notes | colink send data - --to 5d3c...e1")]
    Data {
        /// The payload: UTF-8 text, or `-` to read the bytes from stdin; omit and give --size for a generated
        /// pattern.
        payload: Option<String>,
        /// Bytes of a generated test pattern (1 to 104857600).
        #[arg(long, conflicts_with = "payload", value_parser = clap::value_parser!(u64).range(1..=send::MAX_DATA as u64))]
        size: Option<u64>,
        #[command(flatten)]
        to: Target,
    },
    /// A file, read from disk (progress bar with rate and ETA; the receiver saves it under its name).
    #[command(after_help = "Example:\n  colink send file ./notes.pdf --to 5d3c...e1 --hub /tmp/air.sock")]
    File {
        /// The file.
        path: PathBuf,
        #[command(flatten)]
        to: Target,
    },
    /// An image: a PNG or JPEG file, sent as JPEG with `send_image` (the receiver gets the same size).
    #[command(after_help = "Example:\n  colink send image ./photo.png --quality 60 --to 5d3c...e1 --hub /tmp/air.sock")]
    Image {
        /// The image file (PNG or JPEG).
        path: PathBuf,
        /// The JPEG quality, 0..=100 (the API's default is 30).
        #[arg(long, default_value_t = colink::DEFAULT_IMAGE_QUALITY, allow_negative_numbers = true)]
        quality: i32,
        #[command(flatten)]
        to: Target,
    },
}

#[derive(Debug, Args)]
struct Target {
    /// The peer's device id (32 hex digits, as printed by `colink serve`).
    #[arg(long, value_name = "DEVICE")]
    to: DeviceId,
    #[command(flatten)]
    radio: Radio,
    #[command(flatten)]
    id: Identity,
    /// The peer's app endpoint (default: the same as --app).
    #[arg(long, value_name = "APP")]
    peer_app: Option<AppName>,
    /// Print a JSON result line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PairArgs {
    /// The device: its short id (8 hex digits, as in `colink scan`) or full device id.
    device: String,
    #[command(flatten)]
    radio: Radio,
    /// Confirm the passkey without asking.
    #[arg(long)]
    yes: bool,
    /// How long to look for the device, seconds: more than 0, at most 3600.
    #[arg(long, value_name = "S", default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = parse_pair_timeout)]
    timeout: f64,
}

#[derive(Debug, Args)]
struct HubArgs {
    /// The Unix socket to serve (default: $XDG_RUNTIME_DIR/colink-sim.sock, else /tmp/colink-sim.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Seed of the simulated radio noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The LE 2M link model: `le-2m` (the modelled rate, ≈ 1.4 Mbit/s), or `fast` (LE 2M timing with a
    /// 100× faster air rate, for moving large files in tests).
    #[arg(long, default_value = "le-2m", value_parser = ["le-2m", "fast"])]
    profile: String,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The radio: `sim` (two devices on a private air, virtual time), `sim-hub[:PATH]` (two devices on the hub),
    /// or `bluez:hciN` together with --peer-adapter.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<Backend>,
    /// Shorthand for `--backend sim-hub:PATH`.
    #[arg(long, value_name = "PATH")]
    hub: Option<PathBuf>,
    /// With a BlueZ backend: the second local adapter, the other end of the links.
    #[arg(long, value_name = "hciN")]
    peer_adapter: Option<String>,
    /// Bytes per goodput run.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    size: u64,
    /// Round trips per latency run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rounds: u64,
    /// On `sim`: run on the wall clock instead of virtual time (same modelled figures, slower).
    #[arg(long)]
    real_time: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    term::init_tracing(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            term::print_error(&e.to_string());
            e.exit_code()
        }
    }
}

/// Help and version go to stdout (exit 0); bare `colink` (or a bare `colink send`) prints its help on stderr
/// (exit 2); every other clap error is printed whole, under the one error prefix (exit 2).
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(error::Code::Usage as u8)
        }
        _ => {
            term::print_clap_error(e);
            ExitCode::from(error::Code::Usage as u8)
        }
    }
}

/// `--distance`: metres, more than 0 and at most 100.
fn parse_distance(s: &str) -> Result<f64, String> {
    parse_range(s, 100.0, "metres")
}

/// `--duration` of `scan`: seconds, more than 0 and at most a day.
fn parse_seconds(s: &str) -> Result<f64, String> {
    parse_range(s, 86_400.0, "seconds")
}

/// `--timeout` of `pair`: seconds, more than 0 and at most an hour.
fn parse_pair_timeout(s: &str) -> Result<f64, String> {
    parse_range(s, 3600.0, "seconds")
}

/// A number in (0, max], named `unit` in the error.
fn parse_range(s: &str, max: f64, unit: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of {unit}"))?;
    if x > 0.0 && x <= max { Ok(x) } else { Err(format!("must be more than 0 and at most {max} {unit}, got {s}")) }
}

/// A stream name: not empty and shorter than 1024 bytes (the API's string rule).
fn parse_stream_name(s: &str) -> Result<String, String> {
    colink::api::validate::required_string_arg("name", s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo(a) => demo::run(&demo::DemoOptions {
            fast: a.fast,
            json: a.json,
            seed: a.seed,
            size: usize::try_from(a.size).map_err(CliError::usage)?,
            distance: a.distance,
        }),
        Command::Scan(a) => {
            let backend = a.radio.backend();
            let known = scan::Known::load(&app::state_dir(a.state_dir.as_deref()));
            runtime()?.block_on(scan::run(backend, a.duration, a.service, a.json, known))
        }
        Command::Serve(a) | Command::Stream { what: StreamWhat::Recv(a) } => serve(a),
        Command::Connect(a) => {
            let peer_app = a.peer_app.unwrap_or_else(|| a.id.app.clone());
            let ctx = send::Context {
                backend: a.radio.backend_or_hub(),
                state_dir: a.id.state_dir,
                app: a.id.app,
                peer_app,
                to: a.device,
                json: false,
            };
            runtime()?.block_on(send::interactive(ctx))
        }
        Command::Send(a) => {
            let (what, t) = match a.what {
                SendWhat::Message { text, to } => {
                    // The API's rule (not empty, < 1024 bytes), with its own 401 text, before any radio work.
                    colink::api::validate::message(&text).map_err(CliError::usage)?;
                    (send::What::Message(text), to)
                }
                SendWhat::Data { payload, size, to } => match (payload, size) {
                    (Some(p), None) if p == "-" => (send::What::Data(send::read_stdin_payload()?), to),
                    (Some(p), None) => (send::What::Data(send::checked_payload(p.into_bytes(), "the payload")?), to),
                    (None, Some(n)) => (send::What::Pattern(n), to),
                    _ => return Err(CliError::usage("`send data` needs a payload, `-` (stdin) or --size N")),
                },
                SendWhat::File { path, to } => (send::What::File(path), to),
                SendWhat::Image { path, quality, to } => (send::What::Image { path, quality }, to),
            };
            runtime()?.block_on(send::once(context(t), what))
        }
        Command::Pair(a) => {
            let backend = a.radio.backend();
            runtime()?.block_on(pair::run(backend, &a.device, a.yes, a.timeout))
        }
        Command::SimHub(a) => {
            let path = a.socket.unwrap_or_else(backend::default_hub_path);
            runtime()?.block_on(hub::run(path, a.seed, &a.profile))
        }
        Command::Bench(a) => {
            let backend = Backend::resolve(a.backend, a.hub);
            let o = bench::BenchOptions {
                backend,
                peer_adapter: a.peer_adapter,
                size: usize::try_from(a.size).map_err(CliError::usage)?,
                rounds: usize::try_from(a.rounds).map_err(CliError::usage)?,
                real_time: a.real_time,
                json: a.json,
            };
            bench::run(&o)
        }
        Command::Stream { what: StreamWhat::Send(a) } => {
            // A bitrate the encoder cannot do is a bad argument: say so with the API's 32300003 before connecting.
            let (min, max) = (colink_media::video::MIN_BITRATE, colink_media::video::MAX_BITRATE);
            if !(min..=max).contains(&a.bitrate) {
                return Err(CliError::usage(colink::Error::new(
                    colink::ErrorCode::BitrateNotSupported,
                    format!("--bitrate: {} bit/s is outside {min}..={max}", a.bitrate),
                )));
            }
            let o = stream::SendOptions {
                seconds: a.seconds,
                bitrate: a.bitrate,
                width: a.size.0,
                height: a.size.1,
                name: a.name,
            };
            runtime()?.block_on(stream::send(context(a.to), o))
        }
        Command::Account { what, state_dir } => {
            let op = match what {
                AccountWhat::Create { force } => trust::AccountOp::Create { force },
                AccountWhat::Join { code, force } => trust::AccountOp::Join { code, force },
                AccountWhat::Show { code } => trust::AccountOp::Show { code },
                AccountWhat::Leave => trust::AccountOp::Leave,
            };
            trust::account(&app::state_dir(state_dir.as_deref()), op)
        }
        Command::Devices { json, state_dir } => {
            trust::trust(&app::state_dir(state_dir.as_deref()), trust::TrustOp::List { json })
        }
        Command::Trust { what, state_dir } => {
            let op = match what {
                TrustWhat::List { json } => trust::TrustOp::List { json },
                TrustWhat::Remove { device } => trust::TrustOp::Remove { device },
            };
            trust::trust(&app::state_dir(state_dir.as_deref()), op)
        }
        Command::Completions { shell } => {
            // Generated into memory first: clap_complete panics on a failed write (e.g. `| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "colink", &mut script);
            write_stdout(&script)
        }
        Command::Man { dir } => man(dir),
    }
}

/// `colink man`: colink(1) on stdout, or every page into a directory.
fn man(dir: Option<PathBuf>) -> CliResult {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir)).map_err(|e| {
                CliError::failure(format_args!("cannot write the man pages into {}: {e}", dir.display()))
            })?;
            println!("wrote the man pages into {}", dir.display());
            Ok(())
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            write_stdout(&out)
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`colink man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> CliResult {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn serve(a: ServeArgs) -> CliResult {
    let backend = a.radio.backend_or_hub();
    runtime()?.block_on(serve::run(serve::ServeOptions {
        state_dir: a.id.state_dir,
        app: a.id.app,
        backend,
        save_dir: a.save_dir,
        sessions: a.sessions,
        reject: a.reject,
        stream_name: a.stream_name,
        save_frames: a.save_frames,
        json: a.json,
        exit_on_adapter_loss: a.exit_on_adapter_loss,
        accept_new: a.accept_new,
        pairing_agent: a.pairing_agent,
    }))
}

/// The session context of `send` and `stream send`.
fn context(t: Target) -> send::Context {
    let peer_app = t.peer_app.unwrap_or_else(|| t.id.app.clone());
    send::Context {
        backend: t.radio.backend_or_hub(),
        state_dir: t.id.state_dir,
        app: t.id.app,
        peer_app,
        to: t.to,
        json: t.json,
    }
}
