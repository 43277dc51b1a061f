//! Step-by-step reports: a human line per step as it finishes, a summary table, and the `--json` form.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

/// One step of a tour.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    /// Short name (`discovery`, `pairing`, ...).
    pub(crate) step: String,
    /// Whether it did what it should.
    pub(crate) ok: bool,
    /// When it finished, seconds since the tour started.
    pub(crate) at_s: f64,
    /// How long it took, seconds.
    pub(crate) duration_s: f64,
    /// The human line.
    pub(crate) summary: String,
    /// Its figures.
    pub(crate) figures: Map<String, Value>,
}

/// Collects steps and prints them.
pub(crate) struct Report {
    started: Instant,
    pub(crate) json: bool,
    pub(crate) steps: Vec<Step>,
}

impl Report {
    pub(crate) fn new(json: bool) -> Self {
        Self { started: Instant::now(), json, steps: Vec::new() }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records a finished step and prints its line.
    pub(crate) fn record(
        &mut self,
        step: &str,
        began: Instant,
        ok: bool,
        summary: String,
        figures: Map<String, Value>,
    ) {
        let at = self.started.elapsed().as_secs_f64();
        if !self.json {
            let mark = if ok { "ok  " } else { "FAIL" };
            println!("[{at:>6.2} s] {mark} {step:<11} {summary}");
        }
        self.steps.push(Step {
            step: step.to_owned(),
            ok,
            at_s: round3(at),
            duration_s: round3(began.elapsed().as_secs_f64()),
            summary,
            figures,
        });
    }

    pub(crate) fn all_ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// The summary table (human mode).
    pub(crate) fn print_table(&self, title: &str, key_figures: impl Fn(&Step) -> String) {
        if self.json {
            return;
        }
        println!();
        println!("{title}");
        println!("  {:<11} {:<4} {:>8}  figures", "step", "ok", "took");
        for s in &self.steps {
            let ok = if s.ok { "yes" } else { "NO" };
            println!("  {:<11} {:<4} {:>6.2} s  {}", s.step, ok, s.duration_s, key_figures(s));
        }
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Builds a figures map: `figures!{"rssi_dbm" => -45, "psm" => 128}`.
macro_rules! figures {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::json!($v)); )*
        m
    }};
}
pub(crate) use figures;
