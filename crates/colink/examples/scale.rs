//! Memory per idle session and session set-up time, with 64 simulated devices and 1,024 sessions.
//!
//! Run: `cargo run --release -p colink --example scale`. Heap bytes are counted by a counting allocator around
//! the global one; set-up time is virtual (the simulator's clock), so it reflects the protocol, not this
//! machine. The idle-session figure is (heap with every session connected − heap with the managers started)
//! / sessions: it includes both ends' session state and the per-session share of link state.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

#[path = "../tests/common/scale.rs"]
mod scale;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let mut idle = 0isize;
    let report = runtime.block_on(scale::run(32, 32, |_| idle = LIVE.load(Ordering::Relaxed)));
    let per_session = (idle - before) as f64 / report.sessions as f64;
    println!("devices: {}, sessions: {}", report.devices, report.sessions);
    println!("session set-up (all at once, virtual time): {:.2} s", report.setup.as_secs_f64());
    println!("heap with every session connected and idle: {:.1} MiB", (idle - before) as f64 / 1048576.0);
    println!("memory per idle session: {:.1} KiB (both ends, links and managers included)", per_session / 1024.0);
}
