//! colink's hardware test suite: runs against real BlueZ adapters, either two adapters of one host (the default;
//! what the VM rig in `hw-tests/vm/` provides: hci0 ↔ hci1 on Debian's kernel) or two hosts running the same
//! binary with `--role responder` / `--role initiator --peer ADDR`.
//!
//! Every test needs bluetoothd and adapters; when they are missing it is skipped with a message naming what it
//! needed, so the binary passes (all skipped) on a machine without Bluetooth. The `raw::` tests use bluer's
//! sockets directly and are the baseline colink's BlueZ backend is compared with; they do not test colink
//! itself yet. Throughput is printed, never asserted. See docs/vm-rig.md.

mod advert;
mod bt;
mod cli;
mod echo;
mod harness;
mod raw;
mod rig;

use std::process::ExitCode;
use std::sync::Arc;

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
        for t in harness::select(raw::TESTS, &opts) {
            println!("{}: {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("colink-hw-tests: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failed = runtime.block_on(async {
        let selected = harness::select(raw::TESTS, &opts);
        let rig = rig::Rig::new(opts.setup.clone()).await;
        let ctx = Arc::new(harness::Ctx::new(opts, rig));
        let (_, failed, _) = harness::run(ctx, selected).await;
        failed
    });
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
