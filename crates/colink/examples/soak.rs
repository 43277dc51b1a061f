//! The delivery soak: random scenarios through the public `Manager` on the simulator, with random faults,
//! checking that nothing is lost, repeated, reordered or corrupted, that memory stays bounded and that
//! nothing deadlocks.
//!
//! Run: `cargo run --release -p colink --example soak -- --seeds 1000` (`--start S` for the first seed,
//! `--verbose` for one line per seed). Each seed is one scenario on a fresh simulated air in virtual time:
//! two devices (one app each), or sometimes three (alice holds sessions with bob and with carol at once, on
//! separate links), 1-3 sessions per peer, a PHY (LE 1M, LE 2M, LE Coded, BR/EDR) and an MTU, a receive
//! buffer (64 KiB-4 MiB), sends in both directions on every session — text messages (up to 1023 bytes), data
//! (empty to 1 MiB), images (up to 160×120) and files (`send_file`: empty, tiny, around the 64 KiB chunk
//! boundaries, up to 3 MiB) — with readers that are quick or slow, file writers that are quick, slow or fail,
//! receiving apps that sometimes decline or cancel a file, and 0-4 faults at random times, each on one link
//! (or, for alice's adapter, on all of them): links dropped, an adapter powered off for a while (shorter or,
//! rarely, longer than the grace period), links stalled, SDUs corrupted below the frame layer, a device
//! walking out of range and back.
//!
//! Invariants, per session, direction and kind: the receiver's payloads are the sender's, byte-identical, in
//! order, each at most once; every send that resolved `Ok` was received; every send that was not received
//! failed with an error its caller saw. Per file: a sender's `finish()` `Ok` means the receiver's is `Ok` with
//! the same SHA-256 (that of the source) and its writer holds exactly the source bytes; a receiver that
//! declined, cancelled or whose writer failed leaves the sender's `finish()` failed; a transfer fails only
//! then or on a link that had an outage longer than the grace period; none hangs. An outage shorter than the
//! grace period ends no session and fails nothing; a link without faults has no reconnect. No receiver holds
//! more unread bytes than its receive buffer allows; the process's heap never grows past a bound; every
//! scenario ends within 15 virtual minutes. It prints a table of faults and outcomes and, last,
//! `seeds failed: N` (exit status 1 if N > 0).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use colink::api::{ConnectOptions, Permission};
use colink::driver::NodeConfig;
use colink::files::{CHUNK, FileOffer, FileReceipt, FileSink, FileSource};
use colink::media::PixelFormat;
use colink::{Caller, Error, Event, Manager, PeerInfo, SessionId};
use colink_ble::{Adapter, DeviceId, Mtu, Phy};
use colink_sim::{Position, SimAdapter, SimAir};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
/// held a few times over (sender, engine, receiver, app), plus the files its writers hold (a few MiB each);
/// anything unbounded blows far past this.
const HEAP_BOUND: usize = 512 << 20;

/// Virtual time within which a scenario must finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// Virtual time within which every file transfer must have an outcome on both sides (well inside
/// [`DEADLINE`], so a hung transfer is named rather than reported as a deadlock).
const FILE_DEADLINE: Duration = Duration::from_secs(600);

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

/// Alice's peers: bob always, carol in three-device scenarios. Each peer has its own link to alice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Bob,
    Carol,
}

impl Peer {
    /// Where the peer stands (alice is at 0): bob and carol on either side of her, 6 m apart.
    const fn x(self) -> f64 {
        match self {
            Self::Bob => 3.0,
            Self::Carol => -3.0,
        }
    }

    const fn letter(self) -> char {
        match self {
            Self::Bob => 'B',
            Self::Carol => 'C',
        }
    }
}

/// A fault the scenario injects, on the link between alice and one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    DropLinks,
    /// The peer's adapter (`responder`) or alice's (then every link is off) powered off for `ms`.
    PowerOff {
        responder: bool,
        ms: u64,
    },
    Stall {
        ms: u64,
    },
    Corrupt {
        n: u32,
    },
    /// The peer walks out of range for `ms`.
    OutOfRange {
        ms: u64,
    },
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

    /// Whether the fault, aimed at `target`'s link, reaches `peer`'s link: alice's adapter carries both.
    fn reaches(&self, target: Peer, peer: Peer) -> bool {
        target == peer || matches!(self, Self::PowerOff { responder: false, .. })
    }

    fn is_long_outage(&self) -> bool {
        matches!(self, Self::PowerOff { ms, .. } if *ms >= LONG_OUTAGE_MS)
    }
}

/// Salts the generator of what the soak drew after its first version (a third device, files).
const EXTRA: u64 = 0xF11E_5000_0000_0000;

/// Outages at least this long end the sessions (grace 10 s + 5 s for a re-dial started within it).
const LONG_OUTAGE_MS: u64 = 16_000;

/// What a scenario is made of.
#[derive(Debug)]
struct Scenario {
    phy: Phy,
    mtu: u16,
    /// Sessions between alice and bob.
    sessions: usize,
    /// Sessions between alice and carol (0: no carol, a two-device scenario).
    carol_sessions: usize,
    receive_buffer: u64,
    slow_reader: bool,
    sends: usize,
    /// Files sent per session and direction, at most (0: none).
    files: usize,
    faults: Vec<(u64, Peer, Fault)>,
}

impl Scenario {
    fn draw(rng: &mut Rng) -> Self {
        let phy = [Phy::Le1M, Phy::Le2M, Phy::LeCoded, Phy::BrEdr][rng.below(4) as usize];
        let mtu = [247u16, 512, 672, 2048, 4096][rng.below(5) as usize];
        // Carol, the faults' targets and the files come from a generator of their own, so each seed still
        // draws the two-device scenario it drew before they existed (the seeds named below stay meaningful).
        let mut extra = Rng(rng.0 ^ EXTRA);
        let carol_sessions = if extra.chance(35) { 1 + extra.below(2) as usize } else { 0 };
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
            // With carol, a fault hits her link or bob's (alice's adapter: both).
            let target = if carol_sessions > 0 && extra.chance(40) { Peer::Carol } else { Peer::Bob };
            faults.push((at, target, fault));
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
            carol_sessions,
            receive_buffer: [64u64 << 10, 256 << 10, 1 << 20, 4 << 20][rng.below(4) as usize],
            slow_reader: rng.chance(40),
            sends: 3 + rng.below(10) as usize,
            files: if extra.chance(70) { 1 + extra.below(2) as usize } else { 0 },
            faults,
        }
    }

    /// Whether `peer`'s link had an outage longer than the grace period (so its sessions may end).
    fn long_outage(&self, peer: Peer) -> bool {
        self.faults.iter().any(|(_, t, f)| f.is_long_outage() && f.reaches(*t, peer))
    }

    /// Whether any fault reached `peer`'s link.
    fn faulted(&self, peer: Peer) -> bool {
        self.faults.iter().any(|(_, t, f)| f.reaches(*t, peer))
    }

    /// The largest file one transfer sends: up to 3 MiB, less on slow PHYs (LE Coded carries ~12 kB/s).
    const fn file_cap(&self) -> u64 {
        match self.phy {
            Phy::LeCoded => 256 << 10,
            Phy::Le1M => 1 << 20,
            _ => 3 << 20,
        }
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

/// What a reader saw: the payloads, whether the session ended, how often it reconnected, and the files it
/// was offered (each answered in a task of its own).
type Read = (Vec<(Kind, Seen)>, bool, usize, Vec<tokio::task::JoinHandle<RxFile>>);

/// What one seed produced.
#[derive(Debug, Default)]
struct Outcome {
    sends_ok: usize,
    sends_failed: usize,
    sessions_ended: usize,
    reconnects: usize,
    /// Files whose sender's `finish()` was `Ok` / failed (or whose `send_file` failed).
    files_ok: usize,
    files_failed: usize,
    /// Bytes of verified files.
    file_bytes: u64,
    /// What the receiving apps did with the files, and how the transfers ended for them: [verified, failed].
    takes: BTreeMap<&'static str, [usize; 2]>,
    /// Three devices with faults on exactly one link: the sends and files that went `Ok` on the other.
    quiet_link: Option<(usize, usize)>,
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

/// What the receiving app does with a file offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Take {
    /// Accepts into a writer that takes every write at once.
    Quick,
    /// Accepts into a writer that sleeps up to 250 ms before each write (a slow disk: back-pressure).
    Slow,
    /// Accepts into a writer that fails (a full disk) before the last byte, or at shutdown for an empty file.
    WriteFails,
    /// Accepts, then cancels at a random byte or within 4 s, whichever comes first.
    Cancel,
    /// Declines the offer.
    Decline,
}

impl Take {
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..=5 => Self::Decline,
            6..=11 => Self::Cancel,
            12..=17 => Self::WriteFails,
            18..=49 => Self::Slow,
            _ => Self::Quick,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Quick => "quick writer",
            Self::Slow => "slow writer",
            Self::WriteFails => "writer fails",
            Self::Cancel => "cancelled",
            Self::Decline => "declined",
        }
    }

    /// Whether the receiving app itself may make the transfer fail.
    const fn may_fail(self) -> bool {
        matches!(self, Self::WriteFails | Self::Cancel | Self::Decline)
    }
}

/// Byte `j` of the file with `salt`: the position and the salt are both in every byte, so a repeated,
/// skipped or swapped chunk, or another file's, cannot pass for the right one.
fn file_byte(salt: u64, j: u64) -> u8 {
    (salt.wrapping_add(j).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u8
}

fn file_sha256(salt: u64, size: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(CHUNK);
    let mut at = 0;
    while at < size {
        let n = (size - at).min(CHUNK as u64);
        buf.clear();
        buf.extend((at..at + n).map(|j| file_byte(salt, j)));
        h.update(&buf);
        at += n;
    }
    h.finalize().into()
}

/// A file's content, generated as it is read (the soak never holds a source whole).
struct Pattern {
    salt: u64,
    at: u64,
    size: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.size - self.at);
        let (salt, at) = (self.salt, self.at);
        for (k, b) in buf.initialize_unfilled_to(n as usize).iter_mut().enumerate() {
            *b = file_byte(salt, at + k as u64);
        }
        buf.advance(n as usize);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// The receiving app's writer: keeps what it is given, maybe slowly, maybe failing.
struct Writer {
    bytes: Arc<Mutex<Vec<u8>>>,
    slow: Option<Rng>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Writes fail once they would take the file past this many bytes; shutdown fails too.
    fail_at: Option<u64>,
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(rng) = this.slow.as_mut() {
            let sleep =
                this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(rng.below(250)))));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let mut bytes = this.bytes.lock().unwrap();
        if this.fail_at.is_some_and(|n| (bytes.len() + buf.len()) as u64 > n) {
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "soak: the disk is full")));
        }
        bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.fail_at.is_some() {
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "soak: the disk is full")));
        }
        Poll::Ready(Ok(()))
    }
}

/// What a transfer's `finish()` said, or `HUNG` when it said nothing within [`FILE_DEADLINE`].
const HUNG: &str = "HUNG: no outcome within the file deadline";

/// A file as its sender saw it.
#[derive(Debug)]
struct TxFile {
    name: String,
    peer: Peer,
    size: u64,
    salt: u64,
    /// `Err` from `send_file` (prefixed so) or from `finish()`.
    result: Result<FileReceipt, String>,
    /// When it was offered and when `finish()` returned (virtual time since the scenario began).
    times: (Duration, Duration),
}

/// A file as its receiving app saw it.
#[derive(Debug)]
struct RxFile {
    name: String,
    take: Take,
    result: Result<FileReceipt, String>,
    bytes: Arc<Mutex<Vec<u8>>>,
    /// When the app answered the offer and when `finish()` returned (virtual time since the scenario began).
    times: (Duration, Duration),
}

async fn finish(t: colink::files::FileTransfer) -> Result<FileReceipt, String> {
    match tokio::time::timeout(FILE_DEADLINE, t.finish()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(HUNG.to_owned()),
    }
}

/// The files one sender sends on one session: (name, size, salt). Sizes: empty, tiny, one byte either side
/// of 1-3 chunks, or anything up to `cap`.
fn file_plan(rng: &mut Rng, tag: &str, n: usize, cap: u64) -> Vec<(String, u64, u64)> {
    (0..n)
        .map(|i| {
            let size = match rng.below(10) {
                0 => 0,
                1 | 2 => 1 + rng.below(300),
                3..=5 => ((1 + rng.below(3)) * CHUNK as u64 + rng.below(3)).saturating_sub(1),
                _ => rng.below(cap + 1),
            };
            (format!("{tag}-f{i}.bin"), size.min(cap), rng.next())
        })
        .collect()
}

/// Sends the planned files on session `id` after `delay`, one offer after another, the transfers then
/// running at once; returns each one's outcome.
fn file_sender(
    began: tokio::time::Instant,
    m: &Manager,
    id: SessionId,
    peer: Peer,
    delay: Duration,
    plan: Vec<(String, u64, u64)>,
) -> tokio::task::JoinHandle<Vec<TxFile>> {
    let m = m.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut out = Vec::new();
        let mut running = Vec::new();
        for (name, size, salt) in plan {
            let source = FileSource::new(name.clone(), size, Pattern { salt, at: 0, size });
            match m.send_file(id, source).await {
                Ok(t) => {
                    let offered = began.elapsed();
                    running.push(async move {
                        let result = finish(t).await;
                        TxFile { name, peer, size, salt, result, times: (offered, began.elapsed()) }
                    });
                }
                Err(e) => {
                    let times = (began.elapsed(), began.elapsed());
                    out.push(TxFile { name, peer, size, salt, result: Err(format!("send_file: {e}")), times });
                }
            }
        }
        out.extend(futures::future::join_all(running).await);
        out
    })
}

/// Answers an offer as `take` says, in a task of its own.
fn take_file(
    began: tokio::time::Instant,
    m: &Manager,
    id: SessionId,
    offer: FileOffer,
    take: Take,
    seed: u64,
) -> tokio::task::JoinHandle<RxFile> {
    let m = m.clone();
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let answered = began.elapsed();
        let result = if take == Take::Decline {
            match m.reject_file(id, offer.transfer, "the soak declines").await {
                Ok(()) => Err("declined".to_owned()),
                Err(e) => Err(format!("reject_file: {e}")),
            }
        } else {
            let writer = Writer {
                bytes: bytes.clone(),
                slow: (take == Take::Slow).then(|| Rng(rng.next())),
                sleep: None,
                fail_at: (take == Take::WriteFails).then(|| rng.below(offer.size)),
            };
            match m.accept_file(id, offer.transfer, FileSink::new(writer)).await {
                Err(e) => Err(format!("accept_file: {e}")),
                Ok(t) => {
                    if take == Take::Cancel {
                        let at = rng.below(offer.size + 1);
                        let mut progress = t.progress();
                        let within = Duration::from_millis(rng.below(4_000));
                        let _ = tokio::time::timeout(within, progress.wait_for(|p| p.bytes >= at)).await;
                        t.cancel();
                    }
                    finish(t).await
                }
            }
        };
        RxFile { name: offer.name, take, result, bytes, times: (answered, began.elapsed()) }
    })
}

/// Reads a session's events until it ends or `stop` fires; slowly if asked; flags more than `limit` unread
/// bytes. Answers file offers as `takes` draws (their times counted from `began`). Returns the payloads, whether the session ended, how many times it reconnected, and the files.
fn reader(
    (began, limit): (tokio::time::Instant, u64),
    m: &Manager,
    id: SessionId,
    slow: Option<u64>,
    mut takes: Rng,
    violations: Arc<Mutex<Vec<String>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Read> {
    let mut events = m.events(id).unwrap();
    let m = m.clone();
    tokio::spawn(async move {
        let mut got = Vec::new();
        let mut files = Vec::new();
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
                Event::FileOffered { offer, .. } => {
                    let take = Take::draw(&mut takes);
                    files.push(take_file(began, &m, id, offer.clone(), take, takes.next()));
                }
                _ => {}
            }
            if let Some(s) = seen(&event) {
                got.push(s);
            }
            if slow.is_some() {
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            }
        }
        (got, ended, reconnects, files)
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

/// Checks every file: a sender's `Ok` is the receiver's, with the source's hash and bytes; a receiving app
/// that declined, cancelled or failed to write leaves the sender failed; nothing fails without a long outage
/// on its link or the receiving app's doing; nothing hangs. Counts the outcomes into `outcome`.
fn check_files(
    s: &Scenario,
    sent: &[TxFile],
    received: &BTreeMap<String, RxFile>,
    outcome: &mut Outcome,
) -> Vec<String> {
    let mut problems = Vec::new();
    for tx in sent {
        let name = &tx.name;
        let rx = received.get(name);
        let outage = s.long_outage(tx.peer);
        if let Some(rx) = rx {
            let row = outcome.takes.entry(rx.take.name()).or_default();
            row[usize::from(rx.result.is_err())] += 1;
            if rx.result.as_ref().is_err_and(|e| e == HUNG) {
                problems.push(format!("file {name} ({} bytes): the receiver's finish() hung", tx.size));
            }
            if rx.take == Take::WriteFails && rx.result.is_ok() {
                problems.push(format!("file {name} ({} bytes): verified although its writer failed", tx.size));
            }
            if let Err(e) = &rx.result
                && !rx.take.may_fail()
                && !outage
            {
                problems.push(format!(
                    "file {name} ({} bytes, {}): the receiver failed without a long outage: {e}",
                    tx.size,
                    rx.take.name()
                ));
            }
        } else {
            // Not offered (send_file failed), or offered and never seen by the receiving app.
            let not_offered = tx.result.as_ref().is_err_and(|e| e.starts_with("send_file"));
            let take = if not_offered { "not offered" } else { "offer never seen" };
            outcome.takes.entry(take).or_default()[usize::from(tx.result.is_err())] += 1;
        }
        match &tx.result {
            Ok(receipt) => {
                outcome.files_ok += 1;
                outcome.file_bytes += tx.size;
                let want = file_sha256(tx.salt, tx.size);
                if receipt.sha256 != want || receipt.size != tx.size {
                    problems.push(format!("file {name}: the sender's receipt is not the source's size and SHA-256"));
                }
                match rx.map(|rx| (rx, &rx.result)) {
                    None => {
                        problems.push(format!("file {name}: the sender's finish() is Ok, the receiver never saw it"));
                    }
                    Some((rx, Err(e))) => problems.push(format!(
                        "file {name} ({} bytes): the sender's finish() is Ok but the receiver's ({}) failed: {e}",
                        tx.size,
                        rx.take.name()
                    )),
                    Some((rx, Ok(r))) => {
                        if r.sha256 != want {
                            problems.push(format!("file {name}: the receiver's SHA-256 is not the source's"));
                        }
                        let bytes = rx.bytes.lock().unwrap();
                        let same = bytes.len() as u64 == tx.size
                            && bytes.iter().enumerate().all(|(j, b)| *b == file_byte(tx.salt, j as u64));
                        if !same {
                            problems.push(format!(
                                "file {name}: verified on both sides, but the writer holds {} bytes that are not the {}-byte source",
                                bytes.len(),
                                tx.size
                            ));
                        }
                    }
                }
            }
            Err(e) => {
                outcome.files_failed += 1;
                if e == HUNG {
                    problems.push(format!("file {name} ({} bytes): the sender's finish() hung", tx.size));
                }
                let by_receiver = rx.is_some_and(|rx| rx.take.may_fail() && rx.result.is_err());
                if !outage && !by_receiver {
                    let theirs = rx.map_or("never offered".to_owned(), |rx| {
                        let (a, b) = rx.times;
                        format!(
                            "{}, answered at {:.1} s, ended at {:.1} s: {:?}",
                            rx.take.name(),
                            a.as_secs_f64(),
                            b.as_secs_f64(),
                            rx.result
                        )
                    });
                    let (a, b) = tx.times;
                    problems.push(format!(
                        "file {name} ({} bytes) failed without a long outage on its link or the receiver's doing: sender: offered at {:.1} s, ended at {:.1} s: {e}; receiver: {theirs}",
                        tx.size,
                        a.as_secs_f64(),
                        b.as_secs_f64()
                    ));
                }
            }
        }
    }
    problems
}

async fn run(seed: u64, s: &Scenario) -> Result<Outcome, Vec<String>> {
    let began = tokio::time::Instant::now();
    let mut rng = Rng(seed ^ 0x5eed);
    let mut extra = Rng(seed ^ 0x5eed ^ EXTRA);
    let air = SimAir::new(seed);
    let (alice, ada) = device(&air, "alice", 0.0, 1, s).await;
    let mut peers = vec![(Peer::Bob, device(&air, "bob", Peer::Bob.x(), 2, s).await, s.sessions)];
    if s.carol_sessions > 0 {
        peers.push((Peer::Carol, device(&air, "carol", Peer::Carol.x(), 3, s).await, s.carol_sessions));
    }
    let a_addr = ada.address().address;
    let addrs: BTreeMap<Peer, colink_ble::Address> =
        peers.iter().map(|(p, (_, adapter), _)| (*p, adapter.address().address)).collect();

    // Sessions: Alice connects, the peer accepts; each session has its own app (ability) on both ends.
    let mut pairs = Vec::new();
    let mut n = 0;
    for (peer, (pm, _), count) in &peers {
        for _ in 0..*count {
            let mut requests = pm.incoming(&app(n)).unwrap();
            let service = "soak";
            let sa = alice.create_session(&app(n), service, peer_of(pm, n), ConnectOptions::default()).unwrap();
            let pm2 = pm.clone();
            let (connected, sb) = tokio::join!(alice.connect(sa), async {
                let request = tokio::time::timeout(Duration::from_secs(30), requests.next()).await.ok()??;
                let sb = pm2.create_session(&app(n), service, request.peer.clone(), ConnectOptions::default()).ok()?;
                pm2.accept_connect(sb, &request.token).await.ok()?;
                Some(sb)
            });
            match (connected, sb) {
                (Ok(r), Some(sb)) if r.is_connected => pairs.push((n, *peer, pm.clone(), sa, sb)),
                (r, _) => {
                    return Err(vec![format!(
                        "session {n} with {peer:?} setup failed on a clean link ({:?} MTU {}): {r:?}",
                        s.phy, s.mtu
                    )]);
                }
            }
            n += 1;
        }
    }

    let violations = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Unread bytes a receiver may hold: the buffer per channel kind, plus one larger payload alone.
    let limit = 4 * (s.receive_buffer + (1 << 20));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut file_senders = Vec::new();
    let mut peer_of_label: BTreeMap<String, Peer> = BTreeMap::new();
    for (n, peer, pm, sa, sb) in &pairs {
        let (n, peer, sa, sb) = (*n, *peer, *sa, *sb);
        let c = peer.letter();
        for (from, to, fid, tid, dir) in
            [(&alice, pm, sa, sb, format!("A→{c}")), (pm, &alice, sb, sa, format!("{c}→A"))]
        {
            let label = format!("session {n} {dir}");
            peer_of_label.insert(label.clone(), peer);
            let slow = (s.slow_reader && rng.chance(50)).then(|| rng.next());
            let takes = Rng(extra.next());
            readers
                .push((label.clone(), reader((began, limit), to, tid, slow, takes, violations.clone(), stop.clone())));
            // Large payloads up to 1 MiB, less on slow PHYs (LE Coded carries ~12 kB/s).
            let large = match s.phy {
                Phy::LeCoded => 128 << 10,
                Phy::Le1M => 512 << 10,
                _ => 1 << 20,
            };
            let plan = payloads(&mut rng, &format!("{n}{dir}"), s.sends, large);
            // One task per kind: kinds travel on their own channels and keep their own order.
            let mut by_kind: BTreeMap<Kind, Vec<(Kind, Seen)>> = BTreeMap::new();
            for p in plan {
                by_kind.entry(p.0).or_default().push(p);
            }
            for (_, list) in by_kind {
                let from = from.clone();
                senders.push((
                    label.clone(),
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
            // Files, on their own lane, alongside the rest; some start later, amid the faults.
            let files = extra.below(s.files as u64 + 1) as usize;
            let tag = format!("s{n}{}", dir.replace('→', ""));
            let plan = file_plan(&mut extra, &tag, files, s.file_cap());
            let delay = Duration::from_millis(extra.below(10_000));
            file_senders.push(file_sender(began, from, fid, peer, delay, plan));
        }
    }

    // Faults, at their times, each on its target's link (alice's adapter: every link).
    let faults = air.faults();
    let plan = s.faults.clone();
    let injector = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for (at, target, fault) in plan {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            let b_addr = addrs[&target];
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
                    // Away from alice, and from the other peer too (they stand on either side of her).
                    faults.move_to(b_addr, Position::new(target.x() * 133.0, 0.0));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    faults.move_to(b_addr, Position::new(target.x(), 0.0));
                }
            }
        }
    });

    let mut sent: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for (label, task) in senders {
        sent.entry(label).or_default().extend(task.await.unwrap());
    }
    let mut files_sent = Vec::new();
    for task in file_senders {
        files_sent.extend(task.await.unwrap());
    }
    injector.await.unwrap();
    // Let the last payloads reach slow readers, then end the sessions so every reader finishes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = stop_tx.send(true);
    let mut outcome = Outcome::default();
    let mut received = Vec::new();
    let mut files_received = BTreeMap::new();
    // Per peer: sessions ended, reconnects, sends failed, sends ok.
    let mut per_peer: BTreeMap<Peer, [usize; 4]> = BTreeMap::new();
    for (label, task) in readers {
        let (got, ended, reconnects, files) = task.await.unwrap();
        outcome.reconnects += reconnects;
        outcome.sessions_ended += usize::from(ended);
        let row = per_peer.entry(peer_of_label[&label]).or_default();
        row[0] += usize::from(ended);
        row[1] += reconnects;
        received.push((label, got));
        for task in files {
            let rx = task.await.unwrap();
            files_received.insert(rx.name.clone(), rx);
        }
    }
    let mut problems = violations.lock().unwrap().clone();
    for (label, got) in &received {
        problems.extend(check(label, sent.get(label).map_or(&[][..], |v| &v[..]), got));
    }
    problems.extend(check_files(s, &files_sent, &files_received, &mut outcome));
    for (label, results) in &sent {
        let row = per_peer.entry(peer_of_label[label]).or_default();
        for (_, r) in results {
            if r.is_ok() {
                outcome.sends_ok += 1;
                row[3] += 1;
            } else {
                outcome.sends_failed += 1;
                row[2] += 1;
            }
        }
    }
    // Per link: without an outage longer than the grace period on it, no send fails and no session ends;
    // a link no fault reached does not even reconnect (whatever happens on the other link).
    for (&peer, &[ended, reconnects, failed, _]) in &per_peer {
        if !s.long_outage(peer) {
            if failed > 0 {
                let first = sent
                    .iter()
                    .filter(|(label, _)| peer_of_label[*label] == peer)
                    .flat_map(|(_, v)| v)
                    .find_map(|(_, r)| r.as_ref().err())
                    .unwrap();
                problems.push(format!("{peer:?}: {failed} send(s) failed without a long outage, first: {first}"));
            }
            if ended > 0 {
                problems.push(format!("{peer:?}: {ended} session end(s) seen without a long outage"));
            }
        }
        if !s.faulted(peer) && reconnects > 0 {
            problems.push(format!("{peer:?}: {reconnects} reconnect(s) on a link no fault reached"));
        }
    }
    if s.carol_sessions > 0 && s.faulted(Peer::Bob) != s.faulted(Peer::Carol) {
        let quiet = if s.faulted(Peer::Bob) { Peer::Carol } else { Peer::Bob };
        let files = files_sent.iter().filter(|f| f.peer == quiet && f.result.is_ok()).count();
        outcome.quiet_link = Some((per_peer.get(&quiet).map_or(0, |r| r[3]), files));
    }
    alice.shutdown().await;
    for (_, (m, _), _) in &peers {
        m.shutdown().await;
    }
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
    // fault name → (seeds with it, seeds passed, sends ok, sends failed, reconnects, files ok, files failed)
    let mut table: BTreeMap<&'static str, [usize; 7]> = BTreeMap::new();
    // what the receiving app did → (verified, failed)
    let mut takes: BTreeMap<&'static str, [usize; 2]> = BTreeMap::new();
    let (mut file_bytes, mut three, mut three_passed, mut quiet) = (0u64, 0usize, 0usize, (0usize, 0usize, 0usize));
    let mut failed = Vec::new();
    let mut peak = 0usize;
    let wall = std::time::Instant::now();
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
        let mut names: Vec<&'static str> = scenario.faults.iter().map(|(_, _, f)| f.name()).collect();
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
                row[5] += o.files_ok;
                row[6] += o.files_failed;
            }
        }
        if scenario.carol_sessions > 0 {
            three += 1;
            three_passed += usize::from(result.is_ok());
        }
        if let Ok(o) = &result {
            file_bytes += o.file_bytes;
            for (take, [ok, bad]) in &o.takes {
                let row = takes.entry(take).or_default();
                row[0] += ok;
                row[1] += bad;
            }
            if let Some((sends, files)) = o.quiet_link {
                quiet = (quiet.0 + 1, quiet.1 + sends, quiet.2 + files);
            }
        }
        match &result {
            Ok(o) if verbose => println!(
                "seed {seed}: ok ({:?} MTU {}, {}+{} sessions, {} faults) sends ok {} failed {}, files ok {} failed {}, reconnects {}, ended {}, heap +{} KiB",
                scenario.phy,
                scenario.mtu,
                scenario.sessions,
                scenario.carol_sessions,
                scenario.faults.len(),
                o.sends_ok,
                o.sends_failed,
                o.files_ok,
                o.files_failed,
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
        "{:<24} {:>6} {:>7} {:>9} {:>12} {:>11} {:>9} {:>12}",
        "fault", "seeds", "passed", "sends ok", "sends failed", "reconnects", "files ok", "files failed"
    );
    for (name, [n, passed, ok, bad, rc, fok, fbad]) in &table {
        println!("{name:<24} {n:>6} {passed:>7} {ok:>9} {bad:>12} {rc:>11} {fok:>9} {fbad:>12}");
    }
    let takes: Vec<String> = takes.iter().map(|(take, [ok, bad])| format!("{take} {ok}/{bad}")).collect();
    println!(
        "files verified/failed, by what the receiving app did: {} ({} MiB verified)",
        takes.join(", "),
        file_bytes >> 20
    );
    println!(
        "three devices: {three} seeds, {three_passed} passed; {} with faults on one link only, whose other link had {} sends and {} files ok",
        quiet.0, quiet.1, quiet.2
    );
    println!("peak heap growth of one scenario: {} MiB (bound {} MiB)", peak >> 20, HEAP_BOUND >> 20);
    println!("wall time: {:.0} s", wall.elapsed().as_secs_f64());
    if !failed.is_empty() {
        println!("failed seeds: {failed:?}");
    }
    println!("seeds failed: {}", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
