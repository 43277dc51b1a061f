//! The delivery soak: random scenarios through the public `Manager` on the simulator, with random faults,
//! checking that nothing is lost, repeated, reordered or corrupted, that memory stays bounded and that
//! nothing deadlocks.
//!
//! Run: `cargo run --release -p colink --example soak -- --seeds 1000` (`--start S` for the first seed,
//! `--verbose` for one line per seed). Each seed is one scenario on a fresh simulated air in virtual time:
//! two devices (one app each), 1-3 sessions, a PHY (LE 1M, LE 2M, LE Coded, BR/EDR) and an MTU, a receive
//! buffer (64 KiB-4 MiB), sends in both directions on every session — text messages (up to 1023 bytes), data
//! (empty to 1 MiB) and images (up to 160×120) — with readers that are quick or slow, and 0-4 faults at
//! random times: links dropped, an adapter powered off for a while (shorter or, rarely, longer than the
//! grace period), links stalled, SDUs corrupted below the frame layer, a device walking out of range and
//! back.
//!
//! Invariants, per session, direction and kind: the receiver's payloads are the sender's, byte-identical, in
//! order, each at most once; every send that resolved `Ok` was received; every send that was not received
//! failed with an error its caller saw. An outage shorter than the grace period ends no session. No
//! receiver holds more unread bytes than its receive buffer allows; the process's heap never grows past a
//! bound; every scenario ends within 15 virtual minutes. It prints a table of faults and outcomes and, last,
//! `seeds failed: N` (exit status 1 if N > 0).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink::api::{ConnectOptions, Permission};
use colink::driver::NodeConfig;
use colink::media::PixelFormat;
use colink::{Caller, Error, Event, Manager, PeerInfo, SessionId};
use colink_ble::{Adapter, DeviceId, Mtu, Phy};
use colink_sim::{Position, SimAdapter, SimAir};
use futures::StreamExt;

/// Counts the heap in use, so a scenario can assert its peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The heap a scenario may add at its peak: its payloads are at most ~20 MiB in flight on both sides, each
/// held a few times over (sender, engine, receiver, app); anything unbounded blows far past this.
const HEAP_BOUND: usize = 512 << 20;

/// Virtual time within which a scenario must finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A fault the scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    DropLinks,
    PowerOff { responder: bool, ms: u64 },
    Stall { ms: u64 },
    Corrupt { n: u32 },
    OutOfRange { ms: u64 },
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Self::DropLinks => "links dropped",
            Self::PowerOff { ms, .. } if *ms >= LONG_OUTAGE_MS => "adapter off > grace",
            Self::PowerOff { .. } => "adapter off < grace",
            Self::Stall { .. } => "links stalled",
            Self::Corrupt { .. } => "SDUs corrupted",
            Self::OutOfRange { .. } => "out of range and back",
        }
    }
}

/// Outages at least this long end the sessions (grace 10 s + 5 s for a re-dial started within it).
const LONG_OUTAGE_MS: u64 = 16_000;

/// What a scenario is made of.
#[derive(Debug)]
struct Scenario {
    phy: Phy,
    mtu: u16,
    sessions: usize,
    receive_buffer: u64,
    slow_reader: bool,
    sends: usize,
    faults: Vec<(u64, Fault)>,
}

impl Scenario {
    fn draw(rng: &mut Rng) -> Self {
        let phy = [Phy::Le1M, Phy::Le2M, Phy::LeCoded, Phy::BrEdr][rng.below(4) as usize];
        let mtu = [247u16, 512, 672, 2048, 4096][rng.below(5) as usize];
        // Faults one after another, each starting once the previous one ended and the link had time to
        // come back (3-8 s), so each outage is what it says; at most one is longer than the grace period.
        let mut faults = Vec::new();
        let mut at = 200 + rng.below(3_000);
        let mut long = false;
        for _ in 0..rng.below(5) {
            let fault = match rng.below(11) {
                0..=2 => Fault::DropLinks,
                3 | 4 => Fault::PowerOff { responder: rng.chance(50), ms: 500 + rng.below(9_300) },
                5 if !long => {
                    long = true;
                    Fault::PowerOff { responder: rng.chance(50), ms: LONG_OUTAGE_MS + rng.below(4_000) }
                }
                5..=7 => Fault::Stall { ms: 100 + rng.below(3_000) },
                8 | 9 => Fault::Corrupt { n: 1 + rng.below(4) as u32 },
                _ => Fault::OutOfRange { ms: 500 + rng.below(5_000) },
            };
            faults.push((at, fault));
            let lasts = match fault {
                Fault::PowerOff { ms, .. } | Fault::Stall { ms } | Fault::OutOfRange { ms } => ms,
                Fault::DropLinks | Fault::Corrupt { .. } => 0,
            };
            at += lasts + 3_000 + rng.below(5_000);
        }
        Self {
            phy,
            mtu,
            sessions: 1 + rng.below(3) as usize,
            receive_buffer: [64u64 << 10, 256 << 10, 1 << 20, 4 << 20][rng.below(4) as usize],
            slow_reader: rng.chance(40),
            sends: 3 + rng.below(10) as usize,
            faults,
        }
    }

    fn has_long_outage(&self) -> bool {
        self.faults.iter().any(|(_, f)| matches!(f, Fault::PowerOff { ms, .. } if *ms >= LONG_OUTAGE_MS))
    }
}

/// The kinds of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Message,
    Data,
    Image,
}

/// A payload as the receiving app sees it, reduced to what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Message(String),
    Data(Bytes),
    Image { width: u32, height: u32 },
}

/// One send and how it ended for its caller.
type Sent = ((Kind, Seen), Result<(), Error>);

/// What a reader saw: the payloads, whether the session ended, how often it reconnected.
type Read = (Vec<(Kind, Seen)>, bool, usize);

/// What one seed produced.
#[derive(Debug, Default)]
struct Outcome {
    sends_ok: usize,
    sends_failed: usize,
    sessions_ended: usize,
    reconnects: usize,
}

/// The app of session `n` (a system app, so it may send images): the same two endpoints hold one session at a
/// time, so each session has its own ability.
fn app(n: usize) -> Caller {
    Caller::new("org.colink.soak", "entry", format!("Ability{n}")).system(true).grant(Permission::DistributedDatasync)
}

fn peer_of(m: &Manager, n: usize) -> PeerInfo {
    PeerInfo::new(m.device_id().to_string(), "org.colink.soak", "entry", format!("Ability{n}"))
}

async fn device(air: &SimAir, name: &str, x: f64, id: u8, s: &Scenario) -> (Manager, SimAdapter) {
    let adapter = air.adapter(name, Position::new(x, 0.0));
    let mut config = NodeConfig::default();
    config.link_params = config.link_params.with_phy(s.phy).with_mtu(Mtu::new(s.mtu).unwrap());
    if s.phy == Phy::BrEdr {
        config.transport = colink::driver::TransportPreference::BrEdr;
    }
    let m = Manager::builder()
        .adapter(adapter.clone())
        .device_id(DeviceId::from_bytes([id; 16]))
        .seed(u64::from(id))
        .node_config(config)
        .receive_buffer(s.receive_buffer)
        .build()
        .await
        .unwrap();
    (m, adapter)
}

/// The payloads one sender sends on one session, by kind, drawn from the seed.
fn payloads(rng: &mut Rng, tag: &str, n: usize, large: u64) -> Vec<(Kind, Seen)> {
    (0..n)
        .map(|i| match rng.below(10) {
            0..=3 => {
                let pad = "x".repeat(rng.below(980) as usize);
                (Kind::Message, Seen::Message(format!("{tag}#{i}:{pad}")))
            }
            4..=8 => {
                let len = match rng.below(10) {
                    0 => 0,
                    1..=6 => rng.below(64 << 10) as usize,
                    _ => rng.below(large) as usize,
                };
                let salt = rng.next();
                let mut data: Vec<u8> = (0..len).map(|j| (salt.wrapping_add(j as u64 * 31) >> 3) as u8).collect();
                // The index leads the payload, so a repeat or a swap cannot pass for the right one.
                for (b, x) in data.iter_mut().zip((i as u32).to_le_bytes()) {
                    *b = x;
                }
                (Kind::Data, Seen::Data(data.into()))
            }
            _ => (Kind::Image, Seen::Image { width: 16 + 2 * i as u32, height: (8 + rng.below(112) as u32) & !1 }),
        })
        .collect()
}

async fn send(m: &Manager, id: SessionId, what: &Seen) -> Result<(), Error> {
    match what {
        Seen::Message(text) => m.send_message(id, text).await,
        Seen::Data(data) => m.send_data(id, data.clone()).await,
        Seen::Image { width, height } => {
            let image = colink_media::pattern::test_pattern(*width, *height, 0, PixelFormat::Rgba8888);
            m.send_image(id, &image, 80).await
        }
    }
}

fn seen(event: &Event) -> Option<(Kind, Seen)> {
    Some(match event {
        Event::ReceiveMessage { msg, .. } => (Kind::Message, Seen::Message(msg.clone())),
        Event::ReceiveData { data, .. } => (Kind::Data, Seen::Data(data.clone())),
        Event::ReceiveImage { image, .. } => {
            (Kind::Image, Seen::Image { width: image.width(), height: image.height() })
        }
        _ => return None,
    })
}

/// Reads a session's events until it ends or `stop` fires; slowly if asked. Returns the payloads and whether
/// the session ended, and how many times it reconnected.
fn reader(
    m: &Manager,
    id: SessionId,
    slow: Option<u64>,
    limit: u64,
    violations: Arc<Mutex<Vec<String>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Read> {
    let mut events = m.events(id).unwrap();
    let m = m.clone();
    tokio::spawn(async move {
        let mut got = Vec::new();
        let (mut ended, mut reconnects) = (false, 0);
        let mut rng = Rng(slow.unwrap_or(0));
        loop {
            let unread = m.unread_bytes(id).unwrap_or(0);
            if unread > limit {
                violations.lock().unwrap().push(format!("session {id}: {unread} unread bytes > bound {limit}"));
            }
            // Read until the session ends; once the scenario is over, until nothing came for a while.
            let event = if *stop.borrow() {
                match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                    Ok(Some(event)) => event,
                    _ => break,
                }
            } else {
                tokio::select! {
                    event = events.next() => match event {
                        Some(event) => event,
                        None => break,
                    },
                    _ = stop.changed() => continue,
                }
            };
            match &event {
                Event::Disconnect { .. } => {
                    ended = true;
                    break;
                }
                Event::Reconnected { .. } => reconnects += 1,
                _ => {}
            }
            if let Some(s) = seen(&event) {
                got.push(s);
            }
            if slow.is_some() {
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            }
        }
        (got, ended, reconnects)
    })
}

/// Checks one direction of one session: `received` must be the sends of each kind, in order, byte-identical,
/// each at most once, containing every send that resolved `Ok`.
fn check(label: &str, sent: &[Sent], received: &[(Kind, Seen)]) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in [Kind::Message, Kind::Data, Kind::Image] {
        let sent: Vec<_> = sent.iter().filter(|((k, _), _)| *k == kind).collect();
        let got: Vec<_> = received.iter().filter(|(k, _)| *k == kind).map(|(_, s)| s).collect();
        let mut j = 0;
        for (i, ((_, payload), result)) in sent.iter().enumerate() {
            if got.get(j) == Some(&payload) {
                j += 1;
            } else if result.is_ok() {
                problems.push(format!("{label} {kind:?} #{i}: the send resolved Ok but the receiver never had it"));
            }
        }
        if j < got.len() {
            problems.push(format!(
                "{label} {kind:?}: {} payload(s) received that were not sent in this order (repeat, swap or corruption)",
                got.len() - j
            ));
        }
    }
    problems
}

async fn run(seed: u64, s: &Scenario) -> Result<Outcome, Vec<String>> {
    let mut rng = Rng(seed ^ 0x5eed);
    let air = SimAir::new(seed);
    let (alice, ada) = device(&air, "alice", 0.0, 1, s).await;
    let (bob, adb) = device(&air, "bob", 3.0, 2, s).await;
    let (a_addr, b_addr) = (ada.address().address, adb.address().address);

    // Sessions: Alice connects, Bob accepts.
    let mut pairs = Vec::new();
    for n in 0..s.sessions {
        let mut requests = bob.incoming(&app(n)).unwrap();
        let service = "soak";
        let sa = alice.create_session(&app(n), service, peer_of(&bob, n), ConnectOptions::default()).unwrap();
        let bob2 = bob.clone();
        let (connected, sb) = tokio::join!(alice.connect(sa), async {
            let request = tokio::time::timeout(Duration::from_secs(30), requests.next()).await.ok()??;
            let sb = bob2.create_session(&app(n), service, request.peer.clone(), ConnectOptions::default()).ok()?;
            bob2.accept_connect(sb, &request.token).await.ok()?;
            Some(sb)
        });
        match (connected, sb) {
            (Ok(r), Some(sb)) if r.is_connected => pairs.push((sa, sb)),
            (r, _) => {
                return Err(vec![format!(
                    "session {n} setup failed on a clean link ({:?} MTU {}): {r:?}",
                    s.phy, s.mtu
                )]);
            }
        }
    }

    let violations = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Unread bytes a receiver may hold: the buffer per channel kind, plus one larger payload alone.
    let limit = 4 * (s.receive_buffer + (1 << 20));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for (n, &(sa, sb)) in pairs.iter().enumerate() {
        for (from, to, fid, tid, dir) in [(&alice, &bob, sa, sb, "A→B"), (&bob, &alice, sb, sa, "B→A")] {
            let slow = (s.slow_reader && rng.chance(50)).then(|| rng.next());
            readers
                .push((format!("session {n} {dir}"), reader(to, tid, slow, limit, violations.clone(), stop.clone())));
            // Large payloads up to 1 MiB, less on slow PHYs (LE Coded carries ~12 kB/s).
            let large = match s.phy {
                Phy::LeCoded => 128 << 10,
                Phy::Le1M => 512 << 10,
                _ => 1 << 20,
            };
            let plan = payloads(&mut rng, &format!("{n}{dir}"), s.sends, large);
            let from = from.clone();
            // One task per kind: kinds travel on their own channels and keep their own order.
            let mut by_kind: BTreeMap<Kind, Vec<(Kind, Seen)>> = BTreeMap::new();
            for p in plan {
                by_kind.entry(p.0).or_default().push(p);
            }
            for (_, list) in by_kind {
                let from = from.clone();
                senders.push((
                    format!("session {n} {dir}"),
                    tokio::spawn(async move {
                        let mut results = Vec::new();
                        for p in list {
                            let r = send(&from, fid, &p.1).await;
                            results.push((p, r));
                        }
                        results
                    }),
                ));
            }
        }
    }

    // Faults, at their times.
    let faults = air.faults();
    let plan = s.faults.clone();
    let injector = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for (at, fault) in plan {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            match fault {
                Fault::DropLinks => {
                    faults.drop_links(a_addr, b_addr);
                }
                Fault::PowerOff { responder, ms } => {
                    let who = if responder { b_addr } else { a_addr };
                    faults.set_powered(who, false);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    faults.set_powered(who, true);
                }
                Fault::Stall { ms } => {
                    faults.stall_links(a_addr, b_addr, true);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    faults.stall_links(a_addr, b_addr, false);
                }
                Fault::Corrupt { n } => {
                    faults.corrupt_next(a_addr, b_addr, n);
                    faults.corrupt_next(b_addr, a_addr, n);
                }
                Fault::OutOfRange { ms } => {
                    faults.move_to(b_addr, Position::new(400.0, 0.0));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    faults.move_to(b_addr, Position::new(3.0, 0.0));
                }
            }
        }
    });

    let mut sent: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for (label, task) in senders {
        sent.entry(label).or_default().extend(task.await.unwrap());
    }
    injector.await.unwrap();
    // Let the last payloads reach slow readers, then end the sessions so every reader finishes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = stop_tx.send(true);
    let mut outcome = Outcome::default();
    let mut received = Vec::new();
    for (label, task) in readers {
        let (got, ended, reconnects) = task.await.unwrap();
        outcome.reconnects += reconnects;
        outcome.sessions_ended += usize::from(ended);
        received.push((label, got));
    }
    let mut problems = violations.lock().unwrap().clone();
    for (label, got) in &received {
        problems.extend(check(label, sent.get(label).map_or(&[][..], |v| &v[..]), got));
    }
    for results in sent.values() {
        for (_, r) in results {
            if r.is_ok() {
                outcome.sends_ok += 1;
            } else {
                outcome.sends_failed += 1;
            }
        }
    }
    // Without an outage longer than the grace period, no send may fail.
    if !s.has_long_outage() && outcome.sends_failed > 0 {
        let first = sent.values().flatten().find_map(|(_, r)| r.as_ref().err()).unwrap();
        problems.push(format!("{} send(s) failed without a long outage, first: {first}", outcome.sends_failed));
    }
    alice.shutdown().await;
    bob.shutdown().await;
    if problems.is_empty() { Ok(outcome) } else { Err(problems) }
}

fn main() {
    // `RUST_LOG=colink=debug` shows what a failing seed did.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => seeds = args.next().and_then(|v| v.parse().ok()).expect("--seeds N"),
            "--start" => start = args.next().and_then(|v| v.parse().ok()).expect("--start S"),
            "--verbose" => verbose = true,
            other => panic!("unknown argument {other:?} (use --seeds N, --start S, --verbose)"),
        }
    }
    // fault name → (seeds with it, seeds passed, sends ok, sends failed, reconnects)
    let mut table: BTreeMap<&'static str, [usize; 5]> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut peak = 0usize;
    for seed in start..start + seeds {
        let mut rng = Rng(seed);
        let scenario = Scenario::draw(&mut rng);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let base = IN_USE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let result = runtime.block_on(async {
            match tokio::time::timeout(DEADLINE, run(seed, &scenario)).await {
                Ok(r) => r,
                Err(_) => Err(vec![format!("no end within {} virtual s (deadlock?)", DEADLINE.as_secs())]),
            }
        });
        drop(runtime);
        let heap = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        peak = peak.max(heap);
        let result = match result {
            Ok(_) if heap > HEAP_BOUND => {
                Err(vec![format!("heap grew by {} MiB (bound {} MiB)", heap >> 20, HEAP_BOUND >> 20)])
            }
            other => other,
        };
        let mut names: Vec<&'static str> = scenario.faults.iter().map(|(_, f)| f.name()).collect();
        if names.is_empty() {
            names.push("none");
        }
        names.sort_unstable();
        names.dedup();
        for name in names {
            let row = table.entry(name).or_default();
            row[0] += 1;
            if let Ok(o) = &result {
                row[1] += 1;
                row[2] += o.sends_ok;
                row[3] += o.sends_failed;
                row[4] += o.reconnects;
            }
        }
        match &result {
            Ok(o) if verbose => println!(
                "seed {seed}: ok ({:?} MTU {}, {} sessions, {} faults) sends ok {} failed {}, reconnects {}, ended {}, heap +{} KiB",
                scenario.phy,
                scenario.mtu,
                scenario.sessions,
                scenario.faults.len(),
                o.sends_ok,
                o.sends_failed,
                o.reconnects,
                o.sessions_ended,
                heap >> 10
            ),
            Ok(_) => {}
            Err(problems) => {
                println!("seed {seed}: FAILED {scenario:?}");
                for p in problems.iter().take(8) {
                    println!("  {p}");
                }
                failed.push(seed);
            }
        }
    }
    println!();
    println!(
        "{:<24} {:>6} {:>7} {:>9} {:>12} {:>11}",
        "fault", "seeds", "passed", "sends ok", "sends failed", "reconnects"
    );
    for (name, [n, passed, ok, bad, rc]) in &table {
        println!("{name:<24} {n:>6} {passed:>7} {ok:>9} {bad:>12} {rc:>11}");
    }
    println!("peak heap growth of one scenario: {} MiB (bound {} MiB)", peak >> 20, HEAP_BOUND >> 20);
    if !failed.is_empty() {
        println!("failed seeds: {failed:?}");
    }
    println!("seeds failed: {}", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
