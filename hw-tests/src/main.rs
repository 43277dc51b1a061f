//! colink's hardware test suite: runs against real BlueZ adapters, either two adapters of one host (the default;
//! what the VM rig in `hw-tests/vm/` provides: hci0 ↔ hci1 on Debian's kernel) or two hosts running the same
//! binary with `--role responder` / `--role initiator --peer ADDR`.
//!
//! Every test needs bluetoothd and adapters; when they are missing it is skipped with a message naming what it
//! needed, so the binary passes (all skipped) on a machine without Bluetooth. The `raw::` tests use bluer's
//! sockets directly and are the baseline; the `ble::` tests run the same exchanges through colink-ble's BlueZ
//! backend (the `Adapter`/`Link` traits), and the `colink::` tests go through the public API (two
//! `colink::Manager`s, one per adapter). Throughput is printed with colink/raw ratios from the same run, never
//! asserted. See docs/vm-rig.md.

mod advert;
mod bench;
mod ble;
mod blelink;
mod bt;
mod cli;
mod colink_api;
mod connect;
mod cpu;
mod echo;
mod harness;
mod raw;
mod rig;
mod timed;

use std::process::ExitCode;
use std::sync::Arc;

use harness::Test;

/// Every test, in the order they run: the raw baseline first, then colink-ble, then the colink API, then the
/// side-by-side benchmarks.
fn all_tests() -> impl Iterator<Item = &'static Test> {
    raw::TESTS.iter().chain(ble::TESTS).chain(colink_api::TESTS).chain(bench::TESTS)
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("colink-hw-tests: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    if opts.list {
        for t in harness::select(all_tests(), &opts) {
            println!("{}: {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    // Diagnostics: RUST_LOG=colink_ble=debug,colink=debug shows what colink's layers do (on stderr).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("colink-hw-tests: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failed = runtime.block_on(async {
        let selected = harness::select(all_tests(), &opts);
        let rig = rig::Rig::new(opts.setup.clone()).await;
        let ctx = Arc::new(harness::Ctx::new(opts, rig));
        let (_, failed, _) = harness::run(ctx, selected).await;
        failed
    });
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
