//! The async face of the simulator: [`SimAir`] drives the sans-IO model on tokio time and hands out
//! [`SimAdapter`]s that implement [`colink_ble::Adapter`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{
    Adapter, AdapterError, Advert, AdvertHandle, Agent, AgentRejected, BoxFuture, CloseReason, ConnectError,
    IoCapability, Link, LinkError, LinkMode, LinkParams, Listener, Mtu, PairingError, PairingMethod, Passkey,
    PasskeyRole, PeerAddress, Port, ScanEvent, ScanFilter, ScanStream,
};
use futures::Stream;
use futures::channel::mpsc as fmpsc;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::model::{LinkOpened, LinkSummary, Model, Output, RecvOutcome, SendOutcome};
use crate::profile::{Environment, PhyProfile, Position};

/// A simulated radio environment shared by any number of [`SimAdapter`]s.
///
/// Create it inside a tokio runtime (it spawns one driver task). Under `tokio::time::pause()` (or
/// `#[tokio::test(start_paused = true)]`) everything runs in virtual time and is deterministic for a seed; on a
/// normal runtime it runs in real time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use colink_ble::Adapter;
/// use colink_sim::{Position, SimAir};
///
/// let air = SimAir::new(42);
/// let a = air.adapter("laptop-a", Position::new(0.0, 0.0));
/// let b = air.adapter("laptop-b", Position::new(3.0, 0.0));
/// assert!(a.is_powered().await.unwrap());
/// assert_ne!(a.address(), b.address());
/// # }
/// ```
#[derive(Clone)]
pub struct SimAir {
    shared: Arc<Shared>,
}

/// Options for a [`SimAir`]: environment, profiles, event-log capture.
#[derive(Debug, Clone)]
#[must_use]
pub struct SimAirBuilder {
    seed: u64,
    env: Environment,
    profiles: Vec<PhyProfile>,
    keep_log: bool,
}

impl SimAirBuilder {
    /// With this environment (propagation, intervals, buffers, link limit).
    pub fn environment(mut self, env: Environment) -> Self {
        self.env = env;
        self
    }

    /// Replaces the built-in profile for `profile.phy`.
    pub fn profile(mut self, profile: PhyProfile) -> Self {
        self.profiles.push(profile);
        self
    }

    /// Keeps the text of every event (see [`SimAir::event_log`]); the hash is always kept.
    pub fn keep_log(mut self, keep: bool) -> Self {
        self.keep_log = keep;
        self
    }

    /// Builds the air and spawns its driver task on the current tokio runtime.
    pub fn build(self) -> SimAir {
        let model = Model::new(self.seed, self.env, self.profiles, self.keep_log);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                model,
                scans: BTreeMap::new(),
                connects: BTreeMap::new(),
                listeners: BTreeMap::new(),
                link_notify: BTreeMap::new(),
                agents: BTreeMap::new(),
            }),
            driver: Arc::new(Notify::new()),
            start: Instant::now(),
        });
        tokio::spawn(drive(Arc::downgrade(&shared), shared.driver.clone()));
        SimAir { shared }
    }
}

impl SimAir {
    /// An air with default environment and profiles, seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self::builder(seed).build()
    }

    /// A builder for an air seeded with `seed`.
    pub fn builder(seed: u64) -> SimAirBuilder {
        SimAirBuilder { seed, env: Environment::default(), profiles: Vec::new(), keep_log: false }
    }

    /// Adds a powered device named `name` at `position` and returns its adapter. Its address is a static random
    /// address drawn from the seed.
    pub fn adapter(&self, name: &str, position: Position) -> SimAdapter {
        let now = self.shared.now();
        let mut inner = self.shared.lock();
        let dev = inner.model.add_device(now, name, position);
        let address = inner.model.address(dev);
        SimAdapter { shared: self.shared.clone(), dev, name: name.to_owned(), address: PeerAddress::le_random(address) }
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults {
        Faults { shared: self.shared.clone() }
    }

    /// Virtual (or real) time since the air was created.
    pub fn elapsed(&self) -> Duration {
        self.shared.now()
    }

    /// The hash of the event log so far and the number of events; equal for equal seeds and scenarios.
    pub fn event_log_hash(&self) -> (u64, u64) {
        self.shared.lock().model.log_hash()
    }

    /// The text of the event log (empty unless [`SimAirBuilder::keep_log`] was set).
    pub fn event_log(&self) -> Vec<String> {
        self.shared.lock().model.log_lines()
    }

    /// Adds a line to the event log (e.g. scenario milestones).
    pub fn note(&self, text: &str) {
        let now = self.shared.now();
        self.shared.lock().model.note(now, text);
    }

    /// Every link the air knows (open or closed but still held).
    pub fn links(&self) -> Vec<LinkSummary> {
        self.shared.lock().model.links()
    }

    /// The environment in use.
    pub fn environment(&self) -> Environment {
        self.shared.lock().model.env.clone()
    }
}

/// Fault injection on a [`SimAir`]. Devices are named by address (see [`Adapter::address`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// # use colink_ble::Adapter;
/// # use colink_sim::{Position, SimAir};
/// let air = SimAir::new(1);
/// let a = air.adapter("a", Position::new(0.0, 0.0));
/// let b = air.adapter("b", Position::new(1.0, 0.0));
/// // ... open links between a and b, then:
/// assert_eq!(air.faults().drop_links(a.address().address, b.address().address), 0);
/// air.faults().move_to(b.address().address, Position::new(500.0, 0.0)); // out of range
/// # }
/// ```
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut Inner, Duration) -> R) -> R {
        let now = self.shared.now();
        let mut inner = self.shared.lock();
        inner.advance(now);
        let r = f(&mut inner, now);
        inner.dispatch();
        drop(inner);
        self.shared.driver.notify_one();
        r
    }

    fn dev(inner: &Inner, a: colink_ble::Address) -> Option<usize> {
        inner.model.device_by_address(a)
    }

    /// Tears down every open link between `a` and `b` ([`CloseReason::Reset`] on both ends). Returns how many.
    pub fn drop_links(&self, a: colink_ble::Address, b: colink_ble::Address) -> usize {
        self.with(|inner, now| {
            let (Some(a), Some(b)) = (Self::dev(inner, a), Self::dev(inner, b)) else { return 0 };
            let links = inner.model.links_between(a, b);
            for l in &links {
                inner.model.abort_link(now, *l, [CloseReason::Reset, CloseReason::Reset]);
            }
            links.len()
        })
    }

    /// Tears down one link by id (see [`SimAir::links`]).
    pub fn drop_link(&self, id: u64) {
        self.with(|inner, now| inner.model.abort_link(now, id, [CloseReason::Reset, CloseReason::Reset]));
    }

    /// Powers a device off or on (as [`Adapter::set_powered`]).
    pub fn set_powered(&self, a: colink_ble::Address, on: bool) {
        self.with(|inner, now| {
            if let Some(d) = Self::dev(inner, a) {
                inner.model.set_powered(now, d, on);
            }
        });
    }

    /// Moves a device. Links whose mean RSSI falls below the PHY's sensitivity stop moving data and close with
    /// [`CloseReason::SupervisionTimeout`] unless the device comes back within the supervision timeout.
    pub fn move_to(&self, a: colink_ble::Address, position: Position) {
        self.with(|inner, now| {
            if let Some(d) = Self::dev(inner, a) {
                inner.model.move_to(now, d, position);
            }
        });
    }

    /// Stalls (or resumes) every open link between `a` and `b`: nothing goes on air, writers fill their buffers
    /// and wait; nothing is lost.
    pub fn stall_links(&self, a: colink_ble::Address, b: colink_ble::Address, stalled: bool) -> usize {
        self.with(|inner, now| {
            let (Some(a), Some(b)) = (Self::dev(inner, a), Self::dev(inner, b)) else { return 0 };
            let links = inner.model.links_between(a, b);
            for l in &links {
                inner.model.stall(now, *l, stalled);
            }
            links.len()
        })
    }

    /// Flips one byte in each of the next `n` SDUs (or stream chunks) that `from` sends to `to`. Real L2CAP
    /// would never deliver them; this tests the integrity checks above.
    pub fn corrupt_next(&self, from: colink_ble::Address, to: colink_ble::Address, n: u32) -> usize {
        self.with(|inner, now| {
            let (Some(f), Some(t)) = (Self::dev(inner, from), Self::dev(inner, to)) else { return 0 };
            let links = inner.model.links_between(f, t);
            for l in &links {
                inner.model.corrupt(now, *l, f, n);
            }
            links.len()
        })
    }
}

struct Shared {
    inner: Mutex<Inner>,
    driver: Arc<Notify>,
    start: Instant,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.driver.notify_one();
    }
}

impl Shared {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the model at the current time, then dispatches outputs and pokes the driver.
    fn with<R>(&self, f: impl FnOnce(&mut Inner, Duration) -> R) -> R {
        let now = self.now();
        let mut inner = self.lock();
        inner.advance(now);
        let r = f(&mut inner, now);
        inner.dispatch();
        drop(inner);
        self.driver.notify_one();
        r
    }
}

type ConnectResult = Result<LinkOpened, ConnectError>;

struct Inner {
    model: Model,
    scans: BTreeMap<u64, fmpsc::Sender<ScanEvent>>,
    connects: BTreeMap<u64, oneshot::Sender<ConnectResult>>,
    listeners: BTreeMap<u64, mpsc::UnboundedSender<LinkOpened>>,
    link_notify: BTreeMap<(u64, usize), Arc<Notify>>,
    agents: BTreeMap<usize, Arc<dyn Agent>>,
}

impl Inner {
    fn advance(&mut self, now: Duration) {
        self.model.handle_timeout(now);
        self.dispatch();
    }

    fn dispatch(&mut self) {
        let now = self.model_now();
        while let Some(out) = self.model.poll_output() {
            match out {
                Output::Scan { scan, event } => {
                    if let Some(tx) = self.scans.get_mut(&scan)
                        && !colink_ble::queue_scan_event(tx, event)
                    {
                        self.scans.remove(&scan);
                        self.model.stop_scan(now, scan);
                    }
                }
                Output::ScanEnded { scan } => {
                    self.scans.remove(&scan);
                }
                Output::Connected { conn, result } => {
                    let opened = result.as_ref().ok().map(|o| (o.link, o.end));
                    if let Some((link, end)) = opened {
                        self.link_notify.insert((link, end), Arc::new(Notify::new()));
                    }
                    let delivered = self.connects.remove(&conn).is_some_and(|tx| tx.send(result).is_ok());
                    if !delivered && let Some((link, end)) = opened {
                        self.link_notify.remove(&(link, end));
                        self.model.release(now, link, end);
                    }
                }
                Output::Incoming { listener, link } => {
                    let (id, end) = (link.link, link.end);
                    self.link_notify.insert((id, end), Arc::new(Notify::new()));
                    let delivered = self.listeners.get(&listener).is_some_and(|tx| tx.send(link).is_ok());
                    if !delivered {
                        self.link_notify.remove(&(id, end));
                        self.model.release(now, id, end);
                    }
                }
                Output::LinkWake { link, end } => {
                    if let Some(n) = self.link_notify.get(&(link, end)) {
                        n.notify_waiters();
                    }
                }
            }
        }
    }

    fn model_now(&self) -> Duration {
        self.model.now()
    }
}

async fn drive(shared: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let notified = notify.notified();
        let deadline = {
            let Some(s) = shared.upgrade() else { return };
            let now = s.now();
            let mut inner = s.lock();
            inner.advance(now);
            inner.model.poll_timeout().map(|t| s.start + t)
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    biased;
                    () = notified => {}
                    () = tokio::time::sleep_until(d) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// A simulated adapter: one device on the [`SimAir`]. Cheap to clone; all clones are the same device.
#[derive(Clone)]
pub struct SimAdapter {
    shared: Arc<Shared>,
    dev: usize,
    name: String,
    address: PeerAddress,
}

impl std::fmt::Debug for SimAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAdapter").field("name", &self.name).field("address", &self.address).finish()
    }
}

impl SimAdapter {
    /// Moves this device (see [`Faults::move_to`]).
    pub fn move_to(&self, position: Position) {
        let dev = self.dev;
        self.shared.with(|inner, now| inner.model.move_to(now, dev, position));
    }

    /// This device's position.
    pub fn position(&self) -> Position {
        self.shared.lock().model.position(self.dev)
    }

    /// Whether this device has a bond with `peer`, and whether it is authenticated.
    pub fn bond(&self, peer: PeerAddress) -> Option<bool> {
        let inner = self.shared.lock();
        let other = inner.model.device_by_address(peer.address)?;
        inner.model.is_bonded(self.dev, other)
    }
}

impl Adapter for SimAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> PeerAddress {
        self.address
    }

    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        let on = self.shared.lock().model.powered(self.dev);
        Box::pin(async move { Ok(on) })
    }

    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        let dev = self.dev;
        self.shared.with(|inner, now| inner.model.set_powered(now, dev, on));
        Box::pin(async { Ok(()) })
    }

    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        let dev = self.dev;
        let r = self.shared.with(|inner, now| inner.model.start_advert(now, dev, &advert));
        let shared = Arc::downgrade(&self.shared);
        Box::pin(async move { r.map(|id| AdvertHandle::new(AdvertGuard { shared, id })) })
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        let dev = self.dev;
        let r = self.shared.with(|inner, now| {
            let id = inner.model.start_scan(now, dev, filter)?;
            let (tx, rx) = fmpsc::channel(colink_ble::SCAN_QUEUE);
            inner.scans.insert(id, tx);
            Ok((id, rx))
        });
        let shared = Arc::downgrade(&self.shared);
        Box::pin(async move { r.map(|(id, rx)| Box::pin(SimScan { rx, shared, id }) as ScanStream) })
    }

    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        let dev = self.dev;
        let r = self.shared.with(|inner, now| {
            let id = inner.model.connect(now, dev, peer, port, mode, params)?;
            let (tx, rx) = oneshot::channel();
            inner.connects.insert(id, tx);
            Ok::<_, ConnectError>((id, rx))
        });
        let shared = self.shared.clone();
        Box::pin(async move {
            let (id, rx) = r?;
            let guard = CancelConnect { shared: &shared, id, armed: true };
            let result = rx.await.map_err(|_| ConnectError::Gone)?;
            let mut guard = guard;
            guard.armed = false;
            let opened = result?;
            Ok(Box::new(SimLink::new(shared.clone(), opened)) as Box<dyn Link>)
        })
    }

    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        let dev = self.dev;
        let r = self.shared.with(|inner, now| {
            let (id, port) = inner.model.listen(now, dev, port, mode, params)?;
            let (tx, rx) = mpsc::unbounded_channel();
            inner.listeners.insert(id, tx);
            Ok::<_, AdapterError>((id, port, rx))
        });
        let shared = self.shared.clone();
        Box::pin(async move {
            let (id, port, rx) = r?;
            Ok(Box::new(SimListener { shared, id, port, rx: tokio::sync::Mutex::new(rx) }) as Box<dyn Listener>)
        })
    }

    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        let mut inner = self.shared.lock();
        match agent {
            Some(a) => inner.agents.insert(self.dev, a),
            None => inner.agents.remove(&self.dev),
        };
        Box::pin(async { Ok(()) })
    }

    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        Box::pin(self.pair_impl(peer, agent))
    }
}

impl SimAdapter {
    async fn pair_impl(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> Result<(), PairingError> {
        let dev = self.dev;
        let (target, delay, remote, timeout) = self.shared.with(|inner, now| {
            let (target, delay) = inner.model.pair_prepare(now, dev, peer.address)?;
            let remote = inner.agents.get(&target).cloned();
            Ok::<_, PairingError>((target, delay, remote, inner.model.env.agent_timeout))
        })?;
        tokio::time::sleep(delay).await;
        let remote_cap = remote.as_ref().map_or(IoCapability::NoInputNoOutput, |a| a.io_capability());
        let method = PairingMethod::select(agent.io_capability(), remote_cap);
        let passkey = Passkey::new_wrapping(self.shared.with(|inner, _| inner.model.draw_passkey()));
        let me = self.address;
        let run = run_agents(method, passkey, &*agent, remote.as_deref(), me, peer);
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(PairingError::Timeout),
        };
        self.shared.with(|inner, now| inner.model.pair_finish(now, dev, target, method, &result))
    }
}

/// Runs the agents of both sides for `method`. `remote = None` behaves as NoInputNoOutput (accepts Just Works).
async fn run_agents(
    method: PairingMethod,
    passkey: Passkey,
    local: &dyn Agent,
    remote: Option<&dyn Agent>,
    me: PeerAddress,
    peer: PeerAddress,
) -> Result<(), PairingError> {
    let local_err = |_: AgentRejected| PairingError::Rejected { side: "local" };
    let remote_err = |_: AgentRejected| PairingError::Rejected { side: "remote" };
    match method {
        PairingMethod::JustWorks => {
            let r = async {
                match remote {
                    Some(a) => a.confirm_just_works(me).await,
                    None => Ok(()),
                }
            };
            let (l, r) = futures::join!(local.confirm_just_works(peer), r);
            l.map_err(local_err)?;
            r.map_err(remote_err)
        }
        PairingMethod::NumericComparison => {
            let Some(remote) = remote else { return Err(PairingError::Rejected { side: "remote" }) };
            let (l, r) = futures::join!(local.confirm_passkey(peer, passkey), remote.confirm_passkey(me, passkey));
            l.map_err(local_err)?;
            r.map_err(remote_err)
        }
        PairingMethod::PasskeyEntry { initiator, responder } => {
            let Some(remote) = remote else { return Err(PairingError::Rejected { side: "remote" }) };
            async fn side(
                role: PasskeyRole,
                agent: &dyn Agent,
                peer: PeerAddress,
                passkey: Passkey,
            ) -> Result<Option<Passkey>, AgentRejected> {
                match role {
                    PasskeyRole::Input => agent.request_passkey(peer).await.map(Some),
                    _ => agent.display_passkey(peer, passkey).await.map(|()| None),
                }
            }
            let (l, r) = futures::join!(side(initiator, local, peer, passkey), side(responder, remote, me, passkey));
            let l = l.map_err(local_err)?;
            let r = r.map_err(remote_err)?;
            let ok = match (l, r) {
                (Some(a), Some(b)) => a == b, // both typed a passkey the users agreed on
                (Some(x), None) | (None, Some(x)) => x == passkey,
                (None, None) => false,
            };
            if ok { Ok(()) } else { Err(PairingError::AuthenticationFailed) }
        }
        _ => Err(PairingError::Backend("unsupported pairing method".into())),
    }
}

struct CancelConnect<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    armed: bool,
}

impl Drop for CancelConnect<'_> {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            self.shared.with(|inner, now| {
                inner.connects.remove(&id);
                inner.model.cancel_connect(now, id);
            });
        }
    }
}

struct AdvertGuard {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for AdvertGuard {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            let id = self.id;
            s.with(|inner, now| inner.model.stop_advert(now, id));
        }
    }
}

struct SimScan {
    rx: fmpsc::Receiver<ScanEvent>,
    shared: Weak<Shared>,
    id: u64,
}

impl Stream for SimScan {
    type Item = ScanEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ScanEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for SimScan {
    fn drop(&mut self) {
        if let Some(s) = self.shared.upgrade() {
            let id = self.id;
            s.with(|inner, now| {
                inner.scans.remove(&id);
                inner.model.stop_scan(now, id);
            });
        }
    }
}

struct SimListener {
    shared: Arc<Shared>,
    id: u64,
    port: Port,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<LinkOpened>>,
}

impl Listener for SimListener {
    fn port(&self) -> Port {
        self.port
    }

    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Link>, AdapterError>> {
        Box::pin(async move {
            let mut rx = self.rx.lock().await;
            let opened = rx.recv().await.ok_or(AdapterError::Gone)?;
            Ok(Box::new(SimLink::new(self.shared.clone(), opened)) as Box<dyn Link>)
        })
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let id = self.id;
        let pending: Vec<LinkOpened> = {
            let rx = self.rx.get_mut();
            rx.close();
            std::iter::from_fn(|| rx.try_recv().ok()).collect()
        };
        self.shared.with(|inner, now| {
            inner.listeners.remove(&id);
            inner.model.unlisten(now, id);
            for o in pending {
                inner.link_notify.remove(&(o.link, o.end));
                inner.model.release(now, o.link, o.end);
            }
        });
    }
}

/// One end of a simulated link.
struct SimLink {
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    info: LinkOpened,
    span: tracing::Span,
}

impl SimLink {
    fn new(shared: Arc<Shared>, info: LinkOpened) -> Self {
        let notify =
            shared.lock().link_notify.entry((info.link, info.end)).or_insert_with(|| Arc::new(Notify::new())).clone();
        let span = tracing::debug_span!("sim_link", link = info.link, end = info.end, peer = %info.peer.address);
        Self { shared, notify, info, span }
    }

    /// Waits until `attempt` yields a value, re-trying after every wake of this link end. Cancel-safe as long
    /// as `attempt` only commits state when it returns `Some`.
    async fn wait<T>(&self, mut attempt: impl FnMut(&mut Inner, Duration) -> Option<T>) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.shared.with(&mut attempt) {
                return v;
            }
            notified.await;
        }
    }
}

impl Link for SimLink {
    fn mode(&self) -> LinkMode {
        self.info.mode
    }

    fn mtu(&self) -> Mtu {
        self.info.params.mtu
    }

    fn peer(&self) -> PeerAddress {
        self.info.peer
    }

    fn params(&self) -> LinkParams {
        self.info.params
    }

    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(
            async move {
                let (link, end) = (self.info.link, self.info.end);
                if self.info.mode == LinkMode::Packet && data.len() > self.mtu().bytes() {
                    return Err(LinkError::SduTooLarge { len: data.len(), mtu: self.mtu().get() });
                }
                let mut rest = data;
                loop {
                    let r = self
                        .wait(|inner, now| match inner.model.send(now, link, end, &rest) {
                            SendOutcome::WouldBlock => None,
                            SendOutcome::Queued(n) => Some(Ok(n)),
                            SendOutcome::Closed(r) => Some(Err(LinkError::Closed(r))),
                        })
                        .await?;
                    bytes::Buf::advance(&mut rest, r);
                    if rest.is_empty() {
                        return Ok(());
                    }
                }
            }
            .instrument(self.span.clone()),
        )
    }

    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>> {
        Box::pin(
            async move {
                let (link, end) = (self.info.link, self.info.end);
                self.wait(|inner, now| match inner.model.recv(now, link, end) {
                    RecvOutcome::WouldBlock => None,
                    RecvOutcome::Data(d) => Some(Ok(d)),
                    RecvOutcome::Closed(r) => Some(Err(LinkError::Closed(r))),
                })
                .await
            }
            .instrument(self.span.clone()),
        )
    }

    fn queued_bytes(&self) -> Option<usize> {
        let (link, end) = (self.info.link, self.info.end);
        Some(self.shared.with(|inner, _| inner.model.queued(link, end)).unwrap_or(0))
    }

    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(
            async move {
                let (link, end) = (self.info.link, self.info.end);
                // The model wakes this end whenever an SDU leaves its queue for the air (and, with a kernel
                // model, when an SDU's transmission ends and its charge is released).
                self.wait(|inner, _| match inner.model.drained(link, end, max) {
                    Ok(true) => Some(Ok(())),
                    Ok(false) => None,
                    Err(r) => Some(Err(LinkError::Closed(r))),
                })
                .await
            }
            .instrument(self.span.clone()),
        )
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let (link, end) = (self.info.link, self.info.end);
        self.shared.with(|inner, now| inner.model.close(now, link, end));
        Box::pin(async {})
    }

    fn closed(&self) -> BoxFuture<'_, CloseReason> {
        Box::pin(async move {
            let (link, end) = (self.info.link, self.info.end);
            self.wait(|inner, _| inner.model.close_reason(link, end)).await
        })
    }
}

impl Drop for SimLink {
    fn drop(&mut self) {
        let (link, end) = (self.info.link, self.info.end);
        self.shared.with(|inner, now| {
            inner.link_notify.remove(&(link, end));
            inner.model.release(now, link, end);
        });
    }
}
