//! Command line of the suite.

use std::fmt;
use std::str::FromStr;

use bluer::Address;

/// How the two ends of every test are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setup {
    /// Both ends in this process, on two adapters of this host (the VM rig: hci0 responder, hci1 initiator).
    OneHost {
        /// Adapter of the responder (advertises, listens, echoes).
        responder: String,
        /// Adapter of the initiator (discovers, connects, pairs, measures).
        initiator: String,
    },
    /// One end on this host, the other on a second host running the same binary with the other role.
    TwoHost {
        /// Which end this host runs.
        role: Role,
        /// This host's adapter (`None`: BlueZ's default adapter).
        adapter: Option<String>,
        /// The other host's adapter address (required for the initiator; for the responder it restricts pairing).
        peer: Option<Address>,
    },
}

/// One end of a two-host run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Discovers the responder, connects, pairs and measures.
    Initiator,
    /// Advertises, listens, accepts and echoes.
    Responder,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "initiator" => Ok(Self::Initiator),
            "responder" => Ok(Self::Responder),
            other => Err(format!("--role must be initiator or responder, not {other:?}")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        })
    }
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) setup: Setup,
    /// Bytes echoed by each echo test.
    pub(crate) echo_bytes: u64,
    /// Bytes sent one way for each throughput figure.
    pub(crate) throughput_bytes: u64,
    /// Bytes each colink app sends the other in `colink::connect_messages_data`.
    pub(crate) data_bytes: u64,
    /// Bytes sent one way per round and implementation in the `bench::` tests.
    pub(crate) bench_bytes: u64,
    /// Rounds of the `bench::` tests (each: one raw and one colink transfer, back to back).
    pub(crate) bench_rounds: usize,
    /// Connects `bench::connect` times (each a fresh link: discovery or last sighting, connect, handshake, session).
    pub(crate) connects: usize,
    /// Diagnostics: the colink engine's `max_frame` in the `bench::` goodput tests (default: the engine's).
    pub(crate) colink_max_frame: Option<u16>,
    /// Diagnostics: the colink engine's `send_window` in the `bench::` goodput tests (default: the engine's).
    pub(crate) colink_window: Option<u64>,
    /// Diagnostics: `bench::coc_interleaved` also runs raw against raw by the same method (the noise floor).
    pub(crate) bench_control: bool,
    /// Receive MTU both ends of an LE CoC request (the largest by default).
    pub(crate) l2cap_mtu: u16,
    /// Cap on the initiator's LE CoC SDU size (diagnostics; default: as large as MTU and buffer allow).
    pub(crate) l2cap_sdu: Option<usize>,
    /// Run only tests whose name contains one of these (all when empty).
    pub(crate) filters: Vec<String>,
    /// Filters must equal the name.
    pub(crate) exact: bool,
    /// List the tests and exit.
    pub(crate) list: bool,
}

pub(crate) const USAGE: &str = "\
colink-hw-tests: colink's hardware suite against real BlueZ adapters

USAGE: colink-hw-tests [OPTIONS] [FILTER...]

Set-ups:
  one host, two adapters (default; the VM rig):
      --responder-adapter NAME   adapter that advertises/listens (default hci0)
      --initiator-adapter NAME   adapter that discovers/connects (default hci1)
  two hosts (run the same tests in the same order on both):
      --role responder [--adapter NAME] [--peer ADDR]
      --role initiator --peer ADDR [--adapter NAME]

Options:
      --echo-bytes N         bytes echoed per echo test (default 10485760)
      --throughput-bytes N   bytes sent one way per throughput figure (default 2097152)
      --data-bytes N         bytes each colink app sends the other (default 2097152)
      --bench-bytes N        bytes per round and implementation in bench:: tests (default 10485760)
      --bench-rounds N       rounds of the bench:: tests, raw and colink alternating (default 4: raw first in half)
      --connects N           connects timed by bench::connect, each on a fresh link (default 12)
      --colink-max-frame N   diagnostics: colink's largest frame in the bench:: goodput tests (default the engine's)
      --colink-window N      diagnostics: colink's send window in the bench:: goodput tests (default the engine's)
      --bench-control        diagnostics: bench::coc_interleaved also runs raw against raw (the method's noise floor)
      --l2cap-mtu N          LE CoC receive MTU of both ends, 23..=65535 (default 65535)
      --l2cap-sdu N          cap the LE CoC SDU size (default: MTU, within SO_SNDBUF)
      --exact                FILTERs must match test names exactly
      --list                 list the tests and exit
  -h, --help                 this text

Tests whose adapters (or bluetoothd) are missing are skipped with the reason.
Exit code: 0 when no test failed, 1 when one did, 2 on a usage error.";

/// Parses the arguments (without the program name).
pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Options>, String> {
    let mut responder = None;
    let mut initiator = None;
    let mut role = None;
    let mut adapter = None;
    let mut peer = None;
    let mut opts = Options {
        setup: Setup::OneHost { responder: String::new(), initiator: String::new() },
        echo_bytes: 10 * 1024 * 1024,
        throughput_bytes: 2 * 1024 * 1024,
        data_bytes: 2 * 1024 * 1024,
        bench_bytes: 10 * 1024 * 1024,
        bench_rounds: 4,
        connects: 12,
        colink_max_frame: None,
        colink_window: None,
        bench_control: false,
        l2cap_mtu: u16::MAX,
        l2cap_sdu: None,
        filters: Vec::new(),
        exact: false,
        list: false,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--list" => opts.list = true,
            "--exact" => opts.exact = true,
            "--responder-adapter" => responder = Some(value(&arg)?),
            "--initiator-adapter" => initiator = Some(value(&arg)?),
            "--adapter" => adapter = Some(value(&arg)?),
            "--role" => role = Some(value(&arg)?.parse::<Role>()?),
            "--peer" => {
                let v = value(&arg)?;
                peer = Some(v.parse::<Address>().map_err(|e| format!("--peer {v:?}: {e}"))?);
            }
            "--echo-bytes" => opts.echo_bytes = parse_bytes(&arg, &value(&arg)?)?,
            "--throughput-bytes" => opts.throughput_bytes = parse_bytes(&arg, &value(&arg)?)?,
            "--data-bytes" => opts.data_bytes = parse_bytes(&arg, &value(&arg)?)?,
            "--bench-bytes" => opts.bench_bytes = parse_bytes(&arg, &value(&arg)?)?,
            "--colink-max-frame" => {
                let v = value(&arg)?;
                opts.colink_max_frame = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n >= 64)
                        .ok_or_else(|| format!("--colink-max-frame {v:?}: 64 to 65535"))?,
                );
            }
            "--bench-control" => opts.bench_control = true,
            "--colink-window" => opts.colink_window = Some(parse_bytes(&arg, &value(&arg)?)?),
            "--connects" => {
                let v = value(&arg)?;
                opts.connects = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("--connects {v:?}: a number of connects from 1 to 1000"))?;
            }
            "--bench-rounds" => {
                let v = value(&arg)?;
                opts.bench_rounds = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| format!("--bench-rounds {v:?}: a number of rounds from 1 to 100"))?;
            }
            "--l2cap-sdu" => opts.l2cap_sdu = Some(parse_bytes(&arg, &value(&arg)?)? as usize),
            "--l2cap-mtu" => {
                let v = value(&arg)?;
                opts.l2cap_mtu = v.parse().map_err(|e| format!("--l2cap-mtu {v:?}: {e}"))?;
                // Quirk (vm-rig.md): the kernel silently accepts MTUs below the LE minimum of 23.
                if opts.l2cap_mtu < 23 {
                    return Err("--l2cap-mtu must be at least 23 (the LE minimum)".into());
                }
            }
            // libtest compatibility for `cargo test`-style invocations
            "--nocapture" | "--test-threads=1" => {}
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => opts.filters.push(arg),
        }
    }
    opts.setup = match role {
        None => {
            if adapter.is_some() || peer.is_some() {
                return Err("--adapter and --peer belong to the two-host set-up: give --role too".into());
            }
            Setup::OneHost {
                responder: responder.unwrap_or_else(|| "hci0".into()),
                initiator: initiator.unwrap_or_else(|| "hci1".into()),
            }
        }
        Some(role) => {
            if responder.is_some() || initiator.is_some() {
                return Err("--responder-adapter/--initiator-adapter are for one host; use --adapter".into());
            }
            if role == Role::Initiator && peer.is_none() {
                return Err("--role initiator needs --peer ADDR (the responder's adapter address)".into());
            }
            Setup::TwoHost { role, adapter, peer }
        }
    };
    Ok(Some(opts))
}

fn parse_bytes(name: &str, v: &str) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|e| format!("{name} {v:?}: {e}"))?;
    if n == 0 {
        return Err(format!("{name} must be positive"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Options>, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn default_is_one_host_hci0_responder_hci1_initiator() {
        let o = p(&[]).unwrap().unwrap();
        assert_eq!(o.setup, Setup::OneHost { responder: "hci0".into(), initiator: "hci1".into() });
        assert_eq!(o.echo_bytes, 10 * 1024 * 1024);
        assert_eq!((o.bench_bytes, o.bench_rounds, o.connects), (10 * 1024 * 1024, 4, 12));
    }

    #[test]
    fn two_host_roles() {
        let o = p(&["--role", "initiator", "--peer", "00:AA:01:00:00:23", "raw::l2cap"]).unwrap().unwrap();
        assert_eq!(
            o.setup,
            Setup::TwoHost { role: Role::Initiator, adapter: None, peer: Some("00:AA:01:00:00:23".parse().unwrap()) }
        );
        assert_eq!(o.filters, vec!["raw::l2cap".to_string()]);
        let o = p(&["--role", "responder", "--adapter", "hci2"]).unwrap().unwrap();
        assert!(
            matches!(o.setup, Setup::TwoHost { role: Role::Responder, adapter: Some(ref a), peer: None } if a == "hci2")
        );
    }

    #[test]
    fn usage_errors() {
        assert!(p(&["--role", "initiator"]).unwrap_err().contains("--peer"));
        assert!(p(&["--role", "central"]).is_err());
        assert!(p(&["--peer", "nonsense", "--role", "initiator"]).is_err());
        assert!(p(&["--peer", "00:AA:01:00:00:23"]).is_err());
        assert!(p(&["--echo-bytes", "0"]).is_err());
        assert!(p(&["--l2cap-mtu", "22"]).is_err());
        assert_eq!(p(&["--l2cap-mtu", "672"]).unwrap().unwrap().l2cap_mtu, 672);
        // bench:: rounds: at least one (a ratio needs a pair of transfers), at most 100.
        assert!(p(&["--bench-rounds", "0"]).unwrap_err().contains("1 to 100"));
        assert!(p(&["--bench-rounds", "101"]).is_err());
        let o = p(&["--bench-rounds", "5", "--bench-bytes", "1048576"]).unwrap().unwrap();
        assert_eq!((o.bench_rounds, o.bench_bytes), (5, 1_048_576));
        assert!(p(&["--bench-bytes", "0"]).is_err());
        assert_eq!(p(&["--connects", "20"]).unwrap().unwrap().connects, 20);
        let o = p(&["--colink-max-frame", "16384", "--colink-window", "524288"]).unwrap().unwrap();
        assert_eq!((o.colink_max_frame, o.colink_window), (Some(16384), Some(524_288)));
        assert!(p(&["--colink-max-frame", "70000"]).is_err());
        assert!(p(&["--connects", "0"]).unwrap_err().contains("1 to 1000"));
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--help"]).unwrap().is_none());
    }
}
