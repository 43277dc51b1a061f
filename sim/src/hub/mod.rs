//! Multi-process simulation: a hub owns a [`SimAir`] on a Unix socket; [`HubAdapter`]s in other processes join
//! it as devices.
//!
//! # Protocol
//!
//! A Unix stream socket carrying one JSON object per line (UTF-8, `\n`-terminated) in each direction.
//!
//! 1. The client sends `{"t":"hello","name":"laptop-b","x":3.0,"y":0.0}`; the hub adds a device at that
//!    position and answers `{"t":"welcome","address":{...}}`.
//! 2. The client sends requests `{"t":"req","id":N,"req":{"op":...}}` with a fresh `id`; the hub answers each,
//!    possibly out of order, with `{"t":"reply","id":N,"reply":{"r":...}}` where `r` is `ok`, `bool`, `handle`,
//!    `listening`, `link`, `data`, `reason` or `err` (a typed error, field `e`). Operations mirror the
//!    `Adapter`/`Listener`/`Link` methods: `is_powered`, `set_powered`, `move_to`, `advertise`/`stop_advert`,
//!    `scan`/`stop_scan` (scan ids are chosen by the client), `listen`/`unlisten`/`accept`, `connect`,
//!    `send`/`recv`/`drain_to`/`close`/`closed`/`release` on links, `set_agent`, `pair`. Link data travels as hex
//!    strings. `recv` and `accept` are answered when data or a link is available; a `send` is answered once the
//!    simulated link accepted the data, so flow control reaches across processes; `drain_to` (`max` bytes) is
//!    answered once the link's send queue holds at most that much not yet on the air.
//! 3. The hub pushes `{"t":"scan","scan":S,"event":{...}}` and `{"t":"scan_ended","scan":S}` for scans, and
//!    agent calls `{"t":"agent","id":N,"agent":A,"call":{"call":"confirm_passkey",...}}`, which the client
//!    answers with `{"t":"agent_reply","id":N,"ok":true,"passkey":null}`.
//!
//! When a client disconnects, its links and listeners are dropped and its device powers off.
//!
//! # Bounds
//!
//! The socket is owner-only and the hub removes nothing at its path but a stale socket (see
//! [`HubServer::bind`]). Per client: one device ([`MAX_CLIENTS`] clients), [`MAX_QUEUED_BYTES`] of messages
//! queued for it and [`MAX_REQUESTS`] requests in progress (over either it is disconnected, the others are
//! not affected), [`MAX_HANDLES`] scans, adverts and listeners and [`MAX_LINKS`] links (over those a request
//! fails with `{"r":"err","error":{"e":"limit","what":...,"max":...}}`).
//!
//! The hub runs in real time (a shared air across processes cannot share a paused clock).

mod wire;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use colink_ble::{
    Adapter, AdapterError, Advert, AdvertHandle, Agent, AgentRejected, AgentResult, BoxFuture, CloseReason,
    ConnectError, IoCapability, Link, LinkError, LinkMode, LinkParams, Listener, Mtu, PairingError, Passkey,
    PeerAddress, Port, ScanEvent, ScanFilter, ScanStream,
};
use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::{Position, SimAdapter, SimAir};
use wire::{AgentCall, ClientMsg, HubMsg, Reply, Request, WireError, from_hex, to_hex};

/// Serves a [`SimAir`] to other processes on a Unix socket.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use colink_sim::{SimAir, hub::HubServer};
/// let hub = HubServer::bind(SimAir::new(1), "/tmp/colink-sim.sock").await?;
/// // other processes: HubAdapter::connect("/tmp/colink-sim.sock", "laptop-b", Position::new(3.0, 0.0))
/// # drop(hub); Ok(()) }
/// ```
pub struct HubServer {
    air: SimAir,
    path: PathBuf,
    /// The socket file this server placed (device, inode), so dropping it never removes someone else's.
    identity: Option<(u64, u64)>,
    task: JoinHandle<()>,
}

impl HubServer {
    /// Binds `path` and starts serving `air`.
    ///
    /// The socket is owner-only (`0600`) from the moment anyone else could reach it: it is bound inside a fresh
    /// private directory (`0700`) beside `path`, restricted to `0600`, then hard-linked to `path` (which fails
    /// rather than replace anything that appeared there meanwhile) and the private directory removed.
    ///
    /// What is at `path` already is looked at without following symlinks. Only a stale socket (one nobody
    /// listens on: connecting is refused) is removed; anything else is left untouched and refused:
    /// a live hub's socket with [`io::ErrorKind::AddrInUse`] ("a hub is already running at PATH"), a regular
    /// file, directory, symlink or other file with [`io::ErrorKind::AlreadyExists`] ("PATH is a ...; not
    /// removing it"), a socket we may not connect to with that error (e.g. permission denied).
    pub async fn bind(air: SimAir, path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        clear_stale_socket(&path)?;
        let private = PrivateDir::beside(&path)?;
        let tmp = private.0.join("s");
        let listener = UnixListener::bind(&tmp)?;
        restrict_and_place(&tmp, &path)?;
        drop(private);
        let identity = socket_identity(&path);
        let served = air.clone();
        // The clients' tasks live in this task's set: dropping the server disconnects every client.
        let task = tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            if clients.len() >= MAX_CLIENTS {
                                tracing::warn!(target: "colink_sim::hub", "{MAX_CLIENTS} clients already; refusing one more");
                                drop(stream);
                                continue;
                            }
                            clients.spawn(serve_client(served.clone(), stream));
                        }
                        Err(_) => break,
                    },
                    Some(_) = clients.join_next() => {}
                }
            }
        });
        Ok(Self { air, path, identity, task })
    }

    /// The air being served (for faults and inspection).
    pub fn air(&self) -> &SimAir {
        &self.air
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Dropping the server stops it: it disconnects every client (their adapters see the hub gone) and removes the
/// socket file, if it is still the one this server placed.
impl Drop for HubServer {
    fn drop(&mut self) {
        self.task.abort();
        if self.identity.is_some() && socket_identity(&self.path) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes a stale socket at `path` (one nobody listens on); refuses a live one and anything that is not a socket.
/// Never follows a symlink.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is {what}; not removing it (give --socket a path that is free or a stale hub socket)",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a hub is already running at {}; stop it first", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Still the socket we looked at (not replaced in between): remove it.
            if socket_identity(path) != Some((meta.dev(), meta.ino())) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} changed while the hub looked at it; not removing it", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{} is a socket the hub cannot check ({e}); not removing it", path.display()),
        )),
    }
}

/// A fresh directory only its owner can enter (`0700`), beside a path; removed (with what is left in it) on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Creates one beside `path` under a name no one else can have created first (creation fails on an existing
    /// name, and then another name is tried).
    fn beside(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut last = None;
        for _ in 0..16 {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            // Short: the socket path inside it must stay within `sun_path` (108 bytes).
            let dir = path.with_file_name(format!(".{name}.{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let made = Self(dir);
                    // The umask can only have removed bits; make it exactly 0700 so the owner can bind in it.
                    std::fs::set_permissions(&made.0, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(made);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no private directory name was free")))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the socket at `tmp` (in a private directory) owner-only and links it at `path`; fails, leaving `path`
/// alone, when anything is there.
fn restrict_and_place(tmp: &Path, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::hard_link(tmp, path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} appeared while the hub was starting; not replacing it", path.display()),
        ),
        _ => e,
    })
}

/// The (device, inode) of the file at `path`.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Per-client state on the hub.
#[derive(Default)]
struct ClientState {
    adverts: BTreeMap<u64, AdvertHandle>,
    scans: BTreeMap<u64, JoinHandle<()>>,
    listeners: BTreeMap<u64, Arc<dyn Listener>>,
    links: BTreeMap<u64, Arc<dyn Link>>,
    /// Handles of each [`HandleKind`] being opened (reserved, not yet stored).
    opening: [usize; 3],
    next: u64,
}

/// The handles a client holds at most [`MAX_HANDLES`] of, each.
#[derive(Debug, Clone, Copy)]
enum HandleKind {
    Adverts = 0,
    Scans = 1,
    Listeners = 2,
}

impl HandleKind {
    fn name(self) -> &'static str {
        match self {
            Self::Adverts => "adverts",
            Self::Scans => "scans",
            Self::Listeners => "listeners",
        }
    }
}

/// Room reserved for one handle being opened; released on drop.
struct Opening {
    state: Arc<Mutex<ClientState>>,
    kind: HandleKind,
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.opening[self.kind as usize] = s.opening[self.kind as usize].saturating_sub(1);
    }
}

impl ClientState {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// Most clients one hub serves at once; more are refused at connect. A client is exactly one device (its first
/// `hello` adds it; a later `hello` on the same connection is ignored), so this is also the most devices a hub's
/// air holds for its clients, and one client can never add more than one.
pub const MAX_CLIENTS: usize = 256;
/// Most bytes of messages queued for one client that is not reading them: past this the client is
/// disconnected, so a client that never reads cannot grow the hub's memory.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Most requests of one client in progress at once (each waits for a link, a scan, an agent...); a client
/// that exceeds it is disconnected.
pub const MAX_REQUESTS: usize = 4096;
/// Most scans, adverts and listeners one client holds at once (each), counting those being opened by requests
/// still in progress; one more fails with a typed `limit` error (the client stays connected).
pub const MAX_HANDLES: usize = 16;
/// Most links one client holds at once; one more (from `connect` or `accept`) fails with a typed `limit` error
/// and the link is closed.
pub const MAX_LINKS: usize = 64;

/// The longest protocol line accepted (an SDU of 65535 bytes in hex plus the JSON around it): a peer that
/// sends a longer line is disconnected rather than buffered without bound.
const MAX_LINE: usize = 256 * 1024;

type Pending<T> = Arc<Mutex<BTreeMap<u64, oneshot::Sender<T>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The messages queued for one client, counted in bytes and bounded by [`MAX_QUEUED_BYTES`].
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    overflow: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Queues `msg`; fails when the client is gone or has let [`MAX_QUEUED_BYTES`] pile up (it is then cut off).
    fn send(&self, msg: HubMsg) -> Result<(), ()> {
        let Ok(mut line) = serde_json::to_string(&msg) else { return Ok(()) };
        line.push('\n');
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.overflow.notify_one();
            return Err(());
        }
        self.tx.send(line).map_err(|_| ())
    }
}

async fn serve_client(air: SimAir, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let (tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let out_tx = Outbox { tx, queued: Arc::default(), overflow: Arc::default() };
    let queued = out_tx.queued.clone();
    // Aborted when the client leaves or the hub is dropped.
    let writer = AbortOnDrop(vec![tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            let written = write.write_all(line.as_bytes()).await;
            queued.fetch_sub(line.len(), Ordering::AcqRel);
            if written.is_err() {
                break;
            }
        }
    })]);
    let adapter = match lines.next().await {
        Some(Ok(line)) => match serde_json::from_str::<ClientMsg>(&line) {
            Ok(ClientMsg::Hello { name, x, y }) => air.adapter(&name, Position::new(x, y)),
            _ => return,
        },
        _ => return,
    };
    let _ = out_tx.send(HubMsg::Welcome { address: adapter.address() });
    let state = Arc::new(Mutex::new(ClientState::default()));
    let agent_calls: Pending<AgentResult<Option<Passkey>>> = Arc::default();
    let agent_ids = Arc::new(AtomicU64::new(1));
    let mut tasks = AbortOnDrop(Vec::new());
    let overflow = out_tx.overflow.clone();
    loop {
        let line = tokio::select! {
            line = lines.next() => match line {
                Some(Ok(line)) => line,
                _ => break,
            },
            () = overflow.notified() => {
                tracing::warn!(
                    target: "colink_sim::hub",
                    "{} does not read what the hub sends ({MAX_QUEUED_BYTES} bytes queued); disconnecting it",
                    adapter.name()
                );
                break;
            }
        };
        let Ok(msg) = serde_json::from_str::<ClientMsg>(&line) else {
            tracing::warn!(target: "colink_sim::hub", "malformed message from {}", adapter.name());
            continue;
        };
        match msg {
            ClientMsg::Hello { .. } => {}
            ClientMsg::AgentReply { id, ok, passkey } => {
                if let Some(tx) = lock(&agent_calls).remove(&id) {
                    let _ = tx.send(if ok { Ok(passkey) } else { Err(AgentRejected) });
                }
            }
            ClientMsg::Req { id, req } => {
                let ctx = Ctx {
                    adapter: adapter.clone(),
                    state: state.clone(),
                    out: out_tx.clone(),
                    agent_calls: agent_calls.clone(),
                    agent_ids: agent_ids.clone(),
                };
                tasks.0.retain(|t| !t.is_finished());
                if tasks.0.len() >= MAX_REQUESTS {
                    tracing::warn!(
                        target: "colink_sim::hub",
                        "{} has {MAX_REQUESTS} requests in progress; disconnecting it",
                        adapter.name()
                    );
                    break;
                }
                tasks.0.push(tokio::spawn(async move {
                    let reply = ctx.handle(req).await;
                    let _ = ctx.out.send(HubMsg::Reply { id, reply });
                }));
            }
        }
    }
    // The client is gone: drop everything it held and power its device off.
    drop(tasks);
    {
        let mut s = lock(&state);
        for (_, t) in std::mem::take(&mut s.scans) {
            t.abort();
        }
        *s = ClientState::default();
    }
    let _ = adapter.set_powered(false).await;
    drop(writer);
}

/// Tasks aborted when dropped.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Ctx {
    adapter: SimAdapter,
    state: Arc<Mutex<ClientState>>,
    out: Outbox,
    agent_calls: Pending<AgentResult<Option<Passkey>>>,
    agent_ids: Arc<AtomicU64>,
}

impl Ctx {
    fn link(&self, id: u64) -> Result<Arc<dyn Link>, WireError> {
        lock(&self.state).links.get(&id).cloned().ok_or(WireError::Gone)
    }

    fn add_link(&self, link: Box<dyn Link>) -> Reply {
        let (peer, mode, params) = (link.peer(), link.mode(), link.params());
        let mut s = lock(&self.state);
        if s.links.len() >= MAX_LINKS {
            return Reply::Err { error: WireError::Limit { what: "links".into(), max: MAX_LINKS } };
        }
        let id = s.id();
        s.links.insert(id, Arc::from(link));
        Reply::Link { link: id, peer, mode, params }
    }

    /// Reserves room for one more handle of `kind`: fails with [`WireError::Limit`] when the client already holds
    /// or is opening [`MAX_HANDLES`] of them. Counting those being opened keeps the bound under requests that run
    /// concurrently; the reservation ends when the returned value is dropped (after the handle is stored).
    fn reserve(&self, kind: HandleKind) -> Result<Opening, WireError> {
        let mut s = lock(&self.state);
        let held = match kind {
            HandleKind::Adverts => s.adverts.len(),
            HandleKind::Scans => s.scans.len(),
            HandleKind::Listeners => s.listeners.len(),
        };
        if held + s.opening[kind as usize] >= MAX_HANDLES {
            return Err(WireError::Limit { what: kind.name().into(), max: MAX_HANDLES });
        }
        s.opening[kind as usize] += 1;
        Ok(Opening { state: self.state.clone(), kind })
    }

    fn proxy(&self, agent: u64, cap: IoCapability) -> Arc<dyn Agent> {
        Arc::new(ProxyAgent {
            agent,
            cap,
            out: self.out.clone(),
            calls: self.agent_calls.clone(),
            ids: self.agent_ids.clone(),
        })
    }

    async fn handle(&self, req: Request) -> Reply {
        match self.run(req).await {
            Ok(r) => r,
            Err(error) => Reply::Err { error },
        }
    }

    async fn run(&self, req: Request) -> Result<Reply, WireError> {
        let a = &self.adapter;
        Ok(match req {
            Request::IsPowered => Reply::Bool { value: a.is_powered().await? },
            Request::SetPowered { on } => {
                a.set_powered(on).await?;
                Reply::Ok
            }
            Request::MoveTo { x, y } => {
                a.move_to(Position::new(x, y));
                Reply::Ok
            }
            Request::Advertise { advert } => {
                let _opening = self.reserve(HandleKind::Adverts)?;
                let h = a.advertise(advert).await?;
                let mut s = lock(&self.state);
                let id = s.id();
                s.adverts.insert(id, h);
                Reply::Handle { handle: id }
            }
            Request::StopAdvert { handle } => {
                lock(&self.state).adverts.remove(&handle);
                Reply::Ok
            }
            Request::Scan { scan, filter } => {
                let _opening = self.reserve(HandleKind::Scans)?;
                if lock(&self.state).scans.contains_key(&scan) {
                    return Err(WireError::Other { message: format!("scan id {scan} is in use") });
                }
                let mut stream = a.scan(filter).await?;
                let out = self.out.clone();
                let task = tokio::spawn(async move {
                    while let Some(event) = stream.next().await {
                        if out.send(HubMsg::Scan { scan, event }).is_err() {
                            return;
                        }
                    }
                    let _ = out.send(HubMsg::ScanEnded { scan });
                });
                let mut s = lock(&self.state);
                if s.scans.contains_key(&scan) {
                    // The same id started twice at once: the later one loses.
                    task.abort();
                    return Err(WireError::Other { message: format!("scan id {scan} is in use") });
                }
                s.scans.insert(scan, task);
                Reply::Ok
            }
            Request::StopScan { scan } => {
                if let Some(t) = lock(&self.state).scans.remove(&scan) {
                    t.abort();
                }
                Reply::Ok
            }
            Request::Listen { port, mode, params } => {
                let _opening = self.reserve(HandleKind::Listeners)?;
                let l = a.listen(port, mode, params).await?;
                let port = l.port();
                let mut s = lock(&self.state);
                let id = s.id();
                s.listeners.insert(id, Arc::from(l));
                Reply::Listening { listener: id, port }
            }
            Request::Unlisten { listener } => {
                lock(&self.state).listeners.remove(&listener);
                Reply::Ok
            }
            Request::Accept { listener } => {
                let l = lock(&self.state).listeners.get(&listener).cloned().ok_or(WireError::Gone)?;
                let link = l.accept().await?;
                self.add_link(link)
            }
            Request::Connect { peer, port, mode, params } => {
                let link = a.connect(peer, port, mode, params).await?;
                self.add_link(link)
            }
            Request::Send { link, data } => {
                let data = from_hex(&data).ok_or(WireError::Other { message: "bad hex".into() })?;
                self.link(link)?.send(Bytes::from(data)).await?;
                Reply::Ok
            }
            Request::Recv { link } => {
                let data = self.link(link)?.recv().await?;
                Reply::Data { data: to_hex(&data) }
            }
            Request::DrainTo { link, max } => {
                self.link(link)?.drain_to(max).await?;
                Reply::Ok
            }
            Request::Close { link } => {
                self.link(link)?.close().await;
                Reply::Ok
            }
            Request::Closed { link } => Reply::Reason { reason: self.link(link)?.closed().await },
            Request::Release { link } => {
                // Close first: a pending `recv` on the hub holds the link until it returns.
                let link = lock(&self.state).links.remove(&link);
                if let Some(l) = link {
                    l.close().await;
                }
                Reply::Ok
            }
            Request::SetAgent { agent } => {
                a.set_agent(agent.map(|(id, cap)| self.proxy(id, cap))).await?;
                Reply::Ok
            }
            Request::Pair { peer, agent, cap } => {
                a.pair(peer, self.proxy(agent, cap)).await?;
                Reply::Ok
            }
        })
    }
}

/// The hub-side stand-in for a client's agent: forwards each callback over the socket.
struct ProxyAgent {
    agent: u64,
    cap: IoCapability,
    out: Outbox,
    calls: Pending<AgentResult<Option<Passkey>>>,
    ids: Arc<AtomicU64>,
}

impl ProxyAgent {
    async fn call(&self, call: AgentCall) -> AgentResult<Option<Passkey>> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.calls).insert(id, tx);
        self.out.send(HubMsg::Agent { id, agent: self.agent, call }).map_err(|_| AgentRejected)?;
        rx.await.unwrap_or(Err(AgentRejected))
    }
}

impl Agent for ProxyAgent {
    fn io_capability(&self) -> IoCapability {
        self.cap
    }

    fn confirm_just_works(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(async move { self.call(AgentCall::ConfirmJustWorks { peer }).await.map(|_| ()) })
    }

    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(async move { self.call(AgentCall::ConfirmPasskey { peer, passkey }).await.map(|_| ()) })
    }

    fn request_passkey(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<Passkey>> {
        Box::pin(async move { self.call(AgentCall::RequestPasskey { peer }).await?.ok_or(AgentRejected) })
    }

    fn display_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(async move { self.call(AgentCall::DisplayPasskey { peer, passkey }).await.map(|_| ()) })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------------------

struct Client {
    out: mpsc::UnboundedSender<ClientMsg>,
    pending: Pending<Reply>,
    scans: Arc<Mutex<BTreeMap<u64, fmpsc::Sender<ScanEvent>>>>,
    agents: Arc<Mutex<BTreeMap<u64, Arc<dyn Agent>>>>,
    ids: AtomicU64,
    /// Set once the hub closed the connection.
    gone: AtomicBool,
}

impl Client {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `req`; the receiver yields the reply (or an error if the hub is gone).
    fn start(&self, req: Request) -> oneshot::Receiver<Reply> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // Once the hub is gone nothing answers: fail at once (the reader sets `gone` before it clears `pending`,
        // so a request is either cleared by it or removed here).
        if self.out.send(ClientMsg::Req { id, req }).is_err() || self.gone.load(Ordering::Acquire) {
            lock(&self.pending).remove(&id);
        }
        rx
    }

    async fn call(&self, req: Request) -> Result<Reply, WireError> {
        match self.start(req).await {
            Ok(Reply::Err { error }) => Err(error),
            Ok(r) => Ok(r),
            Err(_) => Err(WireError::Gone),
        }
    }

    fn fire(&self, req: Request) {
        let id = self.next_id();
        let _ = self.out.send(ClientMsg::Req { id, req });
    }
}

/// An [`Adapter`] in another process than the air: a device on a [`HubServer`]'s air.
///
/// When the hub goes away, its listeners, links and scans fail with [`AdapterError::Gone`] (as a real adapter's
/// do when its daemon restarts). The adapter itself comes back: the next operation after that reconnects to
/// the same socket path as the same name and position (a new device on the new hub's air, with its agent set
/// again), so a caller that re-listens and re-advertises carries on once a hub is back.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use colink_ble::Adapter;
/// use colink_sim::{Position, hub::HubAdapter};
/// let laptop = HubAdapter::connect("/tmp/colink-sim.sock", "laptop-b", Position::new(3.0, 0.0)).await?;
/// println!("I am {}", laptop.address());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HubAdapter {
    inner: Arc<HubInner>,
    name: String,
}

/// What a [`HubAdapter`] needs to join a hub again.
struct HubInner {
    path: PathBuf,
    position: Mutex<Position>,
    /// The current connection and the address the hub gave it; replaced when a hub comes back.
    session: tokio::sync::Mutex<Arc<Client>>,
    address: Mutex<PeerAddress>,
    /// The agent last set, registered again on every new connection.
    agent: Mutex<Option<Arc<dyn Agent>>>,
}

impl HubAdapter {
    /// Connects to the hub at `path` and joins its air as `name` at `position`.
    pub async fn connect(path: impl AsRef<Path>, name: &str, position: Position) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (client, address) = join(&path, name, position).await?;
        let inner = Arc::new(HubInner {
            path,
            position: Mutex::new(position),
            session: tokio::sync::Mutex::new(client),
            address: Mutex::new(address),
            agent: Mutex::new(None),
        });
        Ok(Self { inner, name: name.to_owned() })
    }

    /// Moves this device on the hub's floor.
    pub async fn move_to(&self, position: Position) -> Result<(), AdapterError> {
        *lock(&self.inner.position) = position;
        let client = self.client().await;
        client.call(Request::MoveTo { x: position.x, y: position.y }).await.map(|_| ()).map_err(WireError::adapter)
    }

    /// The connection to the hub: the current one, or a new one when the hub went away and is back. While no
    /// hub answers, the dead connection (whose calls fail with `Gone`).
    async fn client(&self) -> Arc<Client> {
        let mut session = self.inner.session.lock().await;
        if !session.gone.load(Ordering::Acquire) {
            return session.clone();
        }
        let position = *lock(&self.inner.position);
        let Ok((client, address)) = join(&self.inner.path, &self.name, position).await else {
            return session.clone();
        };
        tracing::info!(target: "colink_sim::hub", "{} rejoined the hub at {}", self.name, self.inner.path.display());
        *session = client.clone();
        *lock(&self.inner.address) = address;
        let agent = lock(&self.inner.agent).clone();
        if let Some(agent) = agent {
            let _ = register_agent(&client, agent).await;
        }
        client
    }
}

/// Joins the hub at `path` as `name` at `position`: the connection and the address the hub gave the device.
async fn join(path: &Path, name: &str, position: Position) -> io::Result<(Arc<Client>, PeerAddress)> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let hello = ClientMsg::Hello { name: name.to_owned(), x: position.x, y: position.y };
    let mut line = serde_json::to_string(&hello).map_err(io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let address = match lines.next().await.transpose().map_err(io::Error::other)? {
        Some(l) => match serde_json::from_str::<HubMsg>(&l).map_err(io::Error::other)? {
            HubMsg::Welcome { address } => address,
            _ => return Err(io::Error::other("hub did not welcome us")),
        },
        None => return Err(io::Error::other("hub closed the connection")),
    };
    let (out, mut out_rx) = mpsc::unbounded_channel::<ClientMsg>();
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let Ok(mut line) = serde_json::to_string(&msg) else { continue };
            line.push('\n');
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let client = Arc::new(Client {
        out,
        pending: Arc::default(),
        scans: Arc::default(),
        agents: Arc::default(),
        ids: AtomicU64::new(1),
        gone: AtomicBool::new(false),
    });
    let (pending, scans, agents, out) =
        (client.pending.clone(), client.scans.clone(), client.agents.clone(), client.out.clone());
    let weak = Arc::downgrade(&client);
    tokio::spawn(async move {
        while let Some(Ok(line)) = lines.next().await {
            let Ok(msg) = serde_json::from_str::<HubMsg>(&line) else { continue };
            match msg {
                HubMsg::Welcome { .. } => {}
                HubMsg::Reply { id, reply } => {
                    if let Some(tx) = lock(&pending).remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
                HubMsg::Scan { scan, event } => {
                    if let Some(tx) = lock(&scans).get_mut(&scan) {
                        colink_ble::queue_scan_event(tx, event);
                    }
                }
                HubMsg::ScanEnded { scan } => {
                    lock(&scans).remove(&scan);
                }
                HubMsg::Agent { id, agent, call } => {
                    let agent = lock(&agents).get(&agent).cloned();
                    let out = out.clone();
                    tokio::spawn(async move {
                        let r = match agent {
                            Some(a) => answer(&*a, call).await,
                            None => Err(AgentRejected),
                        };
                        let (ok, passkey) = match r {
                            Ok(p) => (true, p),
                            Err(_) => (false, None),
                        };
                        let _ = out.send(ClientMsg::AgentReply { id, ok, passkey });
                    });
                }
            }
        }
        // Hub gone: fail every pending request and end every scan; the adapter joins again on its next call.
        if let Some(client) = weak.upgrade() {
            client.gone.store(true, Ordering::Release);
        }
        lock(&pending).clear();
        lock(&scans).clear();
    });
    Ok((client, address))
}

/// Registers `agent` with the hub behind `client`.
async fn register_agent(client: &Client, agent: Arc<dyn Agent>) -> Result<(), AdapterError> {
    let id = client.next_id();
    let cap = agent.io_capability();
    lock(&client.agents).insert(id, agent);
    client.call(Request::SetAgent { agent: Some((id, cap)) }).await.map(|_| ()).map_err(WireError::adapter)
}

async fn answer(agent: &dyn Agent, call: AgentCall) -> AgentResult<Option<Passkey>> {
    match call {
        AgentCall::ConfirmJustWorks { peer } => agent.confirm_just_works(peer).await.map(|()| None),
        AgentCall::ConfirmPasskey { peer, passkey } => agent.confirm_passkey(peer, passkey).await.map(|()| None),
        AgentCall::RequestPasskey { peer } => agent.request_passkey(peer).await.map(Some),
        AgentCall::DisplayPasskey { peer, passkey } => agent.display_passkey(peer, passkey).await.map(|()| None),
    }
}

impl Adapter for HubAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> PeerAddress {
        *lock(&self.inner.address)
    }

    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        Box::pin(async move {
            match self.client().await.call(Request::IsPowered).await.map_err(WireError::adapter)? {
                Reply::Bool { value } => Ok(value),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            self.client().await.call(Request::SetPowered { on }).await.map(|_| ()).map_err(WireError::adapter)
        })
    }

    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        Box::pin(async move {
            let client = self.client().await;
            match client.call(Request::Advertise { advert }).await.map_err(WireError::adapter)? {
                Reply::Handle { handle } => {
                    Ok(AdvertHandle::new(RemoteGuard { client, req: Some(Request::StopAdvert { handle }) }))
                }
                other => Err(unexpected(&other)),
            }
        })
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        Box::pin(async move {
            let client = self.client().await;
            let scan = client.next_id();
            let (tx, rx) = fmpsc::channel(colink_ble::SCAN_QUEUE);
            lock(&client.scans).insert(scan, tx);
            if let Err(e) = client.call(Request::Scan { scan, filter }).await {
                lock(&client.scans).remove(&scan);
                return Err(e.adapter());
            }
            let guard = RemoteGuard { client, req: Some(Request::StopScan { scan }) };
            // The guard lives as long as the stream and stops the scan when it is dropped.
            let stream = rx.map(move |e| {
                let _keep = &guard;
                e
            });
            Ok(Box::pin(stream) as ScanStream)
        })
    }

    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let client = self.client().await;
            let reply = client.call(Request::Connect { peer, port, mode, params }).await.map_err(WireError::connect)?;
            HubLink::from_reply(&client, reply).ok_or_else(|| ConnectError::Backend("unexpected hub reply".into()))
        })
    }

    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        Box::pin(async move {
            let client = self.client().await;
            match client.call(Request::Listen { port, mode, params }).await.map_err(WireError::adapter)? {
                Reply::Listening { listener, port } => {
                    Ok(Box::new(HubListener { client, id: listener, port, pending: tokio::sync::Mutex::new(None) })
                        as Box<dyn Listener>)
                }
                other => Err(unexpected(&other)),
            }
        })
    }

    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            lock(&self.inner.agent).clone_from(&agent);
            let client = self.client().await;
            match agent {
                Some(agent) => register_agent(&client, agent).await,
                None => client.call(Request::SetAgent { agent: None }).await.map(|_| ()).map_err(WireError::adapter),
            }
        })
    }

    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        Box::pin(async move {
            let client = self.client().await;
            let id = client.next_id();
            let cap = agent.io_capability();
            lock(&client.agents).insert(id, agent);
            let r = client.call(Request::Pair { peer, agent: id, cap }).await;
            lock(&client.agents).remove(&id);
            r.map(|_| ()).map_err(WireError::pairing)
        })
    }
}

fn unexpected(reply: &Reply) -> AdapterError {
    AdapterError::Backend(format!("unexpected hub reply {reply:?}"))
}

/// Sends a request (fire and forget) when dropped.
struct RemoteGuard {
    client: Arc<Client>,
    req: Option<Request>,
}

impl Drop for RemoteGuard {
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            if let Request::StopScan { scan } = &req {
                lock(&self.client.scans).remove(scan);
            }
            self.client.fire(req);
        }
    }
}

struct HubListener {
    client: Arc<Client>,
    id: u64,
    port: Port,
    pending: tokio::sync::Mutex<Option<oneshot::Receiver<Reply>>>,
}

impl Listener for HubListener {
    fn port(&self) -> Port {
        self.port
    }

    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Link>, AdapterError>> {
        Box::pin(async move {
            // Cancel-safe: the outstanding request survives a dropped future and is picked up next time.
            let mut slot = self.pending.lock().await;
            let rx = slot.get_or_insert_with(|| self.client.start(Request::Accept { listener: self.id }));
            let reply = rx.await;
            *slot = None;
            match reply {
                Ok(Reply::Err { error }) => Err(error.adapter()),
                Ok(r) => {
                    HubLink::from_reply(&self.client, r).ok_or(AdapterError::Backend("unexpected hub reply".into()))
                }
                Err(_) => Err(AdapterError::Gone),
            }
        })
    }
}

impl Drop for HubListener {
    fn drop(&mut self) {
        self.client.fire(Request::Unlisten { listener: self.id });
    }
}

struct HubLink {
    client: Arc<Client>,
    id: u64,
    peer: PeerAddress,
    mode: LinkMode,
    params: LinkParams,
    pending_recv: tokio::sync::Mutex<Option<oneshot::Receiver<Reply>>>,
}

impl HubLink {
    fn from_reply(client: &Arc<Client>, reply: Reply) -> Option<Box<dyn Link>> {
        match reply {
            Reply::Link { link, peer, mode, params } => Some(Box::new(Self {
                client: client.clone(),
                id: link,
                peer,
                mode,
                params,
                pending_recv: tokio::sync::Mutex::new(None),
            })),
            _ => None,
        }
    }
}

impl Link for HubLink {
    fn mode(&self) -> LinkMode {
        self.mode
    }

    fn mtu(&self) -> Mtu {
        self.params.mtu
    }

    fn peer(&self) -> PeerAddress {
        self.peer
    }

    fn params(&self) -> LinkParams {
        self.params
    }

    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(async move {
            if self.mode == LinkMode::Packet && data.len() > self.params.mtu.bytes() {
                return Err(LinkError::SduTooLarge { len: data.len(), mtu: self.params.mtu.get() });
            }
            self.client
                .call(Request::Send { link: self.id, data: to_hex(&data) })
                .await
                .map(|_| ())
                .map_err(WireError::link)
        })
    }

    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>> {
        Box::pin(async move {
            let mut slot = self.pending_recv.lock().await;
            let rx = slot.get_or_insert_with(|| self.client.start(Request::Recv { link: self.id }));
            let reply = rx.await;
            *slot = None;
            match reply {
                Ok(Reply::Data { data }) => {
                    from_hex(&data).map(Bytes::from).ok_or_else(|| LinkError::Backend("bad hex from hub".into()))
                }
                Ok(Reply::Err { error }) => Err(error.link()),
                Ok(other) => Err(LinkError::Backend(format!("unexpected hub reply {other:?}"))),
                Err(_) => Err(WireError::Gone.link()),
            }
        })
    }

    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        // The hub's link knows its queue exactly; the answer arrives one socket round trip late.
        Box::pin(async move {
            self.client.call(Request::DrainTo { link: self.id, max }).await.map(|_| ()).map_err(WireError::link)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.client.call(Request::Close { link: self.id }).await;
        })
    }

    fn closed(&self) -> BoxFuture<'_, CloseReason> {
        Box::pin(async move {
            match self.client.call(Request::Closed { link: self.id }).await {
                Ok(Reply::Reason { reason }) => reason,
                _ => CloseReason::Other("simulator hub is gone".into()),
            }
        })
    }
}

impl Drop for HubLink {
    fn drop(&mut self) {
        self.client.fire(Request::Release { link: self.id });
    }
}
