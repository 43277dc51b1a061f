//! A small test harness: tests run one after the other (they share the adapters), each may pass, fail or skip
//! with the reason, and the closing line is `N passed, N failed, N skipped`.

use std::fmt::{self, Display};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::cli::Options;
use crate::rig::Rig;

/// Why a test stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Something the test needs is missing (adapters, bluetoothd, a peer): not a failure.
    Skip(String),
    /// The behaviour under test is wrong.
    Fail(String),
}

pub(crate) type TestResult = Result<(), Stop>;

/// Turns any error into a failure with what was being done.
pub(crate) trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, Stop>;
}

impl<T, E: Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

/// Fails with `what` when `cond` does not hold.
pub(crate) fn ensure(cond: bool, what: impl FnOnce() -> String) -> TestResult {
    if cond { Ok(()) } else { Err(Stop::Fail(what())) }
}

/// Runs `fut` with a deadline; a late future is a failure naming `what`.
pub(crate) async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = Result<T, Stop>>) -> Result<T, Stop> {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(r) => r,
        Err(_) => Err(Stop::Fail(format!("{what}: no result within {secs} s"))),
    }
}

pub(crate) type TestFn = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = TestResult> + 'a>>;

/// One test of the suite.
pub(crate) struct Test {
    /// `family::name`, e.g. `raw::l2cap_coc_echo`; colink's own tests will sit beside as `colink::...`.
    pub(crate) name: &'static str,
    /// What it proves, one line.
    pub(crate) about: &'static str,
    pub(crate) run: TestFn,
}

/// A measured transfer, printed in the summary.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// Link kind: `l2cap-coc` or `rfcomm`.
    pub(crate) link: &'static str,
    /// Implementation: `raw` (a bluer socket) or `colink-ble` (colink's BlueZ backend).
    pub(crate) imp: &'static str,
    /// What was measured (one-way goodput, echo).
    pub(crate) what: &'static str,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// MTU/SDU/chunk details.
    pub(crate) detail: String,
}

impl Figure {
    pub(crate) fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<9} {:<6} {:<16} {:>9.1} KiB/s  ({} bytes in {:.2} s; {})",
            self.link,
            self.imp,
            self.what,
            self.bytes_per_sec() / 1024.0,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.detail
        )
    }
}

/// What every test gets.
pub(crate) struct Ctx {
    pub(crate) opts: Options,
    pub(crate) rig: Rig,
    figures: Mutex<Vec<Figure>>,
    /// Lines for the end of the run, after the figures (the interleaved benchmarks' min/median ratios).
    summaries: Mutex<Vec<String>>,
    /// colink-ble's BlueZ backend, opened once for the `ble::` and `colink::` tests (or why it could not be).
    bluez: tokio::sync::OnceCell<Result<colink_ble::bluez::Bluez, String>>,
}

impl Ctx {
    pub(crate) fn new(opts: Options, rig: Rig) -> Self {
        Self {
            opts,
            rig,
            figures: Mutex::new(Vec::new()),
            summaries: Mutex::new(Vec::new()),
            bluez: tokio::sync::OnceCell::new(),
        }
    }

    /// colink-ble's BlueZ backend (one D-Bus connection for all tests); a skip naming bluetoothd without it.
    pub(crate) async fn bluez(&self) -> Result<colink_ble::bluez::Bluez, Stop> {
        let b =
            self.bluez.get_or_init(|| async { colink_ble::bluez::Bluez::new().await.map_err(|e| e.to_string()) }).await;
        b.clone().map_err(|e| {
            Stop::Skip(format!("needs bluetoothd (org.bluez) on the system D-Bus for colink-ble's BlueZ backend: {e}"))
        })
    }

    /// Records (and prints) a measurement.
    pub(crate) fn figure(&self, fig: Figure) {
        println!("    figure: {fig}");
        if let Ok(mut v) = self.figures.lock() {
            v.push(fig);
        }
    }

    fn figures(&self) -> Vec<Figure> {
        self.figures.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Prints `line` now and again at the end of the run, last among the figures.
    pub(crate) fn summary(&self, line: String) {
        println!("    {line}");
        if let Ok(mut v) = self.summaries.lock() {
            v.push(line);
        }
    }
}

/// One line per (link kind, measurement, implementation other than raw): its goodput over raw's, e.g.
/// `colink-ble/raw goodput (l2cap-coc, one-way goodput): 0.97  (412.0 vs 424.7 KiB/s)`.
pub(crate) fn ratios(figures: &[Figure]) -> Vec<String> {
    let mut out = Vec::new();
    for f in figures.iter().filter(|f| f.imp != "raw") {
        if let Some(raw) = figures.iter().find(|r| r.imp == "raw" && r.link == f.link && r.what == f.what) {
            out.push(format!(
                "{}/raw goodput ({}, {}): {:.2}  ({:.1} vs {:.1} KiB/s)",
                f.imp,
                f.link,
                f.what,
                f.bytes_per_sec() / raw.bytes_per_sec(),
                f.bytes_per_sec() / 1024.0,
                raw.bytes_per_sec() / 1024.0
            ));
        }
    }
    out
}

/// Selects the tests by the filters.
pub(crate) fn select<'t>(tests: impl IntoIterator<Item = &'t Test>, opts: &Options) -> Vec<&'t Test> {
    tests
        .into_iter()
        .filter(|t| {
            opts.filters.is_empty()
                || opts.filters.iter().any(|f| if opts.exact { t.name == f } else { t.name.contains(f.as_str()) })
        })
        .collect()
}

/// Runs the selected tests in order; returns (passed, failed, skipped).
pub(crate) async fn run(ctx: Arc<Ctx>, tests: Vec<&Test>) -> (usize, usize, usize) {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    println!("running {} tests ({})", tests.len(), ctx.rig.describe());
    for t in tests {
        println!("test {} ... ({})", t.name, t.about);
        let start = Instant::now();
        let fut = (t.run)(&ctx);
        let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Stop::Fail(format!("panicked: {msg}")))
            }
        };
        let secs = start.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({secs:.2} s)", t.name);
            }
            Err(Stop::Skip(why)) => {
                skipped += 1;
                println!("test {} ... SKIPPED: {why}", t.name);
            }
            Err(Stop::Fail(why)) => {
                failed += 1;
                println!("test {} ... FAILED ({secs:.2} s): {why}", t.name);
                failures.push((t.name, why));
            }
        }
    }
    let figures = ctx.figures();
    if !figures.is_empty() {
        println!("\nthroughput (raw figures are the baseline colink's BlueZ backend is compared with):");
        for f in &figures {
            println!("  {f}");
        }
        let ratios = ratios(&figures);
        if !ratios.is_empty() {
            println!("\nsame run, same link (goal >= 0.9):");
            for r in ratios {
                println!("  {r}");
            }
        }
    }
    let summaries = ctx.summaries.lock().map(|v| v.clone()).unwrap_or_default();
    if !summaries.is_empty() {
        println!("\nalternating rounds on one link (goal >= 0.9):");
        for line in summaries {
            println!("  {line}");
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, why) in &failures {
            println!("  {name}: {why}");
        }
    }
    println!("\ntest result: {}.", if failed == 0 { "ok" } else { "FAILED" });
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    (passed, failed, skipped)
}
