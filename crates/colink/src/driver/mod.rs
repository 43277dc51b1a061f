//! The async driver: runs one [`colink_proto::Connection`] per device pair over `colink-ble` links.
//!
//! A [`Node`] is one device on one adapter. It listens on an LE L2CAP PSM (and, unless told not to, on an RFCOMM
//! channel for BR/EDR links), advertises both together with the device's short id and hosted services, accepts
//! transports (reading each caller's HELLO to route it to the right connection, so a re-dialled transport
//! resumes its sessions), dials peers found by scanning over the transport its [`NodeConfig::transport`]
//! prefers, and runs one task per link that moves frames between the engine and the radio. That task hands the
//! transport its next frame only once the previous one has left the transport's queue ([`Link::drain_to`]), so
//! the radio paces the engine and a high-priority frame never waits behind a send buffer full of bulk data. On
//! the initiating side a lost transport is re-dialled with back-off until the engine's grace period ends.
//!
//! With [`NodeConfig::security`] every transport is authenticated before its HELLO (docs/security.md): the
//! node's device id is derived from its key, accepted transports are routed by the identity they proved,
//! dialled ones must prove the device that was dialled, and pairings that need a person's answer come out of
//! [`Node::trust_requests`].
//!
//! Everything above (app identities, session ids, listeners, validation) is the `Manager`'s business; the node
//! speaks in engine terms: [`LinkId`] + [`SessionKey`], and reports [`NodeEvent`]s.

mod credit;
mod dial;
mod link;
mod radio;
mod route;
mod secure;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{Adapter, AdapterError, AdvertHandle, DeviceId, Link, LinkMode, LinkParams, ServiceFilter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::lock;
use colink_proto::secure::{HandshakeMode, SecureError, SecureHandshake, device_id_bytes};
use colink_proto::{
    self as engine, ChannelKind, Config, ConnectErrorCode, ConnectOptions, Connection, DisconnectReason, Entropy,
    Event, PeerInfo, Role, SeededEntropy, SessionError, SessionKey,
};
use credit::LinkCredit;
pub use credit::ReadCredit;
pub use dial::DialError;
use link::{Command, ConnectRequest, LinkTask, Proven, now};
use radio::{Endpoints, supervise};
pub use radio::{RECOVER_FIRST, RECOVER_MAX, RadioLoss, RadioState};
pub use secure::{SecurityConfig, TrustRequest, TrustRequests};

/// Identifies one link (one device pair's connection) within a [`Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// Something that happened on one of the node's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The link.
    pub link: LinkId,
    /// The peer device's identity (as announced in its handshake; before that, as dialled).
    pub peer_device: String,
    /// What the engine reported.
    pub event: Event,
    /// With [`Event::Received`]: the payload's receive credit. Its bytes count against the session channel's
    /// receive buffer until it is dropped, so keep it with the payload until the app has it (the peer's sends
    /// stop while the buffer is full); dropping the event drops it.
    pub credit: Option<Arc<ReadCredit>>,
}

/// Which radio transport a [`Node`] dials a peer over first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TransportPreference {
    /// An L2CAP LE credit-based channel (packet mode) to the PSM in the peer's advert; BR/EDR RFCOMM only when
    /// the peer advertises no PSM or that connect fails.
    #[default]
    LeCoc,
    /// A BR/EDR RFCOMM link (stream mode) to the channel in the peer's advert, at the advert's address; LE CoC
    /// when the peer advertises no channel or the RFCOMM connect fails.
    BrEdr,
}

/// How a [`Node`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Engine tunables; `device_id` is filled in from the node's [`DeviceId`].
    pub engine: Config,
    /// Link parameters for dialled and accepted links: the MTU and security for both transports, the PHY for LE
    /// links (BR/EDR links always use [`Phy::BrEdr`](colink_ble::Phy::BrEdr)).
    pub link_params: LinkParams,
    /// The transport dials try first (default LE CoC).
    pub transport: TransportPreference,
    /// Whether the node also accepts BR/EDR links: it listens on a free RFCOMM channel and advertises it (default
    /// on). If the adapter refuses the RFCOMM listener, the node runs LE-only and says so in the log.
    pub accept_br_edr: bool,
    /// The services advertised as hosted here.
    pub services: ServiceFilter,
    /// How long a dial may search for and connect to a peer (default 10 s, the reference's connect timeout).
    pub dial_timeout: Duration,
    /// A seed for the engine's tokens: deterministic runs on the simulator. `None` draws them from the OS.
    pub seed: Option<u64>,
    /// What the node does when the radio goes away under it (default: listen and advertise again once it is
    /// back). See [`Node::radio_state`].
    pub on_radio_loss: RadioLoss,
    /// Authenticated links (docs/security.md): with it every transport runs the secure handshake before its
    /// HELLO, the node's device id is the one derived from the key (the id passed to [`Node::start`] is
    /// replaced), and accepted transports are routed by the identity they proved. `None` (the default) runs
    /// plain links, admitting any peer.
    pub security: Option<SecurityConfig>,
    /// Payloads received on one link and not yet read by the app (of any size, even empty) at which the link
    /// stops reading its transport until the app reads (default and maximum [`MAX_UNREAD_PAYLOADS`]). Receive credit
    /// bounds the bytes; this bounds the count, also against a version-1 or -2 peer, which pays no
    /// per-message charge.
    pub max_unread_payloads: u64,
}

/// The default [`NodeConfig::max_unread_payloads`]: 2^20 payloads per link. With a version-3 or later peer
/// the per-message charge keeps a session channel below `receive_buffer / 64` payloads (65 536 by default), so
/// only many sessions full of empty messages reach it.
pub const MAX_UNREAD_PAYLOADS: u64 = 1 << 20;

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            engine: Config::default(),
            link_params: LinkParams::default(),
            transport: TransportPreference::default(),
            accept_br_edr: true,
            services: ServiceFilter::EMPTY,
            dial_timeout: Duration::from_secs(10),
            seed: None,
            on_radio_loss: RadioLoss::default(),
            security: None,
            max_unread_payloads: MAX_UNREAD_PAYLOADS,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The adapter is powered off.
    #[error("the Bluetooth adapter is powered off")]
    PoweredOff,
    /// The adapter refused to listen or advertise.
    #[error("adapter error: {0}")]
    Adapter(#[from] AdapterError),
}

/// Why a session could not be opened, in the reference's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connect failed ({code:?}): {reason}")]
pub struct ConnectFailure {
    /// The reference's code.
    pub code: ConnectErrorCode,
    /// What went wrong.
    pub reason: String,
    /// When the secure handshake refused the link: exactly why (not in the account, refused by the peer's user,
    /// an unknown device refused, not the expected device, timed out, ...).
    pub trust: Option<SecureError>,
}

impl ConnectFailure {
    fn new(code: ConnectErrorCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), trust: None }
    }
}

/// Why a send did not complete.
///
/// Wraps `colink_proto`'s two send errors: [`colink_proto::SendError`] is the engine's immediate refusal,
/// [`colink_proto::SendFailure`] a send it accepted and could not deliver; this is the whole life of a send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The engine refused it (unknown session, not connected, too large).
    #[error(transparent)]
    Rejected(engine::SendError),
    /// It was accepted but will never be delivered.
    #[error(transparent)]
    Failed(engine::SendFailure),
    /// The session is not connected (it ended while the send waited for room).
    #[error("the session is not connected")]
    NotConnected,
    /// The link ended before delivery.
    #[error("the link closed before delivery")]
    LinkClosed,
}

/// The outcome of a send queued with [`Node::enqueue`]: resolves when the peer holds the whole payload, or
/// with the reason it never will.
#[derive(Debug)]
#[must_use = "a delivery does nothing unless awaited; dropping it does not cancel the send"]
pub struct Delivery(oneshot::Receiver<Result<(), SendError>>);

impl Future for Delivery {
    type Output = Result<(), SendError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(SendError::LinkClosed)))
    }
}

/// Why a command could not reach its link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No such link (it closed).
    #[error("no such link")]
    NoLink,
    /// The engine refused the session operation.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A request to (re-)dial a device, answered by attaching the new transport to `reply`'s link.
pub(crate) struct DialRequest {
    pub(crate) device: String,
    /// Attempts may start until this much time has passed (the engine's grace period left).
    pub(crate) within: Duration,
    /// An attempt must have ended by then (the engine's resume deadline: the grace period plus the allowance
    /// for a dial started within it).
    pub(crate) finish_within: Duration,
    pub(crate) reply: mpsc::Sender<Command>,
}

/// Events the node's queue holds for its reader ([`NodeEvents`]); when it is full, each link keeps a few more
/// and then stops reading its transport until the reader catches up (back-pressure to the peer).
pub const NODE_EVENT_QUEUE: usize = 256;

/// The node's events, in order. Read them: the queue is bounded ([`NODE_EVENT_QUEUE`]), and while it is full
/// the node's links stop reading their transports, so their peers' sends wait (and a link whose events are
/// never read goes silent and is dropped by its idle timeout).
#[derive(Debug)]
pub struct NodeEvents(mpsc::Receiver<NodeEvent>);

impl NodeEvents {
    /// The next event, or `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<NodeEvent> {
        self.0.recv().await
    }
}

/// One device: an adapter, its listener and advert, and a task per link.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("device", &self.shared.device.to_string()).finish_non_exhaustive()
    }
}

struct Shared {
    adapter: Arc<dyn Adapter>,
    device: DeviceId,
    config: NodeConfig,
    events: mpsc::Sender<NodeEvent>,
    redial: mpsc::UnboundedSender<DialRequest>,
    table: Mutex<Table>,
    background: Mutex<Vec<JoinHandle<()>>>,
    advert: Mutex<Option<AdvertHandle>>,
    /// What the advert says, for the rotation to the next advert id.
    advert_template: Mutex<Option<colink_ble::Advert>>,
    /// Set by `shutdown`: no advert may be put back after it.
    stopped: AtomicBool,
    radio: watch::Receiver<RadioState>,
    /// The link tasks, awaited by `shutdown` so their goodbyes reach the air.
    link_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// One gate per dialled device, so concurrent connects to it open one link.
    dialing: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where trust requests go, and their receiver until [`Node::trust_requests`] takes it.
    trust_tx: mpsc::UnboundedSender<TrustRequest>,
    trust_rx: Mutex<Option<TrustRequests>>,
    /// Limits on accepted transports still in their secure handshake.
    gate: Mutex<secure::Gate>,
    /// Handshakes started, salting each one's entropy.
    handshakes: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Table {
    next: u64,
    by_key: BTreeMap<(String, Role), LinkId>,
    links: BTreeMap<LinkId, (String, Role, mpsc::Sender<Command>)>,
    credits: BTreeMap<LinkId, Arc<LinkCredit>>,
}

/// How long [`Node::shutdown`] waits for links to say goodbye.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The most one re-dial attempt may take before the next one starts.
const REDIAL_ATTEMPT: Duration = Duration::from_secs(4);

/// What the last re-dial attempt leaves before the engine's resume deadline for the secure handshake.
const REDIAL_HANDSHAKE_MARGIN: Duration = Duration::from_secs(1);

/// Command queue depth per link: callers wait (back-pressure) when a link falls behind.
const COMMAND_QUEUE: usize = 256;

impl Node {
    /// Starts `device` on `adapter`: listens, advertises, and begins accepting links. With
    /// [`NodeConfig::security`] the device id is the one derived from the key, whatever `device` says.
    pub async fn start(
        adapter: Arc<dyn Adapter>,
        device: DeviceId,
        mut config: NodeConfig,
    ) -> Result<(Self, NodeEvents), StartError> {
        let device = match &config.security {
            Some(security) => DeviceId::from_bytes(device_id_bytes(&security.secure.keypair.public())),
            None => device,
        };
        config.engine.device_id = device.to_string();
        let Endpoints { listening, advert, template } = Endpoints::open(&*adapter, device, &config).await?;
        let (radio_tx, radio) = watch::channel(RadioState::Up);
        let (events, events_rx) = mpsc::channel(NODE_EVENT_QUEUE);
        let (redial, redial_rx) = mpsc::unbounded_channel();
        let (trust_tx, trust_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            adapter,
            device,
            config,
            events,
            redial,
            table: Mutex::new(Table::default()),
            background: Mutex::new(Vec::new()),
            advert: Mutex::new(Some(advert)),
            advert_template: Mutex::new(Some(template)),
            stopped: AtomicBool::new(false),
            radio,
            dialing: Mutex::new(BTreeMap::new()),
            link_tasks: Mutex::new(Vec::new()),
            trust_tx,
            trust_rx: Mutex::new(Some(TrustRequests(trust_rx))),
            gate: Mutex::new(secure::Gate::default()),
            handshakes: std::sync::atomic::AtomicU64::new(0),
        });
        let node = Self { shared };
        let span = tracing::info_span!("node", device = %device.short());
        let (psm, channel) = (listening.psm, listening.channel());
        let accept = tokio::spawn(supervise(node.clone(), listening, radio_tx).instrument(span.clone()));
        let dialer = tokio::spawn(node.clone().redial_loop(redial_rx).instrument(span.clone()));
        let rotate = tokio::spawn(radio::rotate_adverts(node.clone()).instrument(span));
        lock(&node.shared.background).extend([accept, dialer, rotate]);
        info!(device = %device, psm = psm.value(), rfcomm = ?channel, "node started");
        Ok((node, NodeEvents(events_rx)))
    }

    /// This node's device identity.
    pub fn device(&self) -> DeviceId {
        self.shared.device
    }

    /// Whether the node is accepting links: [`RadioState::Up`], or the radio was lost and it is recovering or
    /// gave up ([`NodeConfig::on_radio_loss`]). The receiver sees each change.
    pub fn radio_state(&self) -> watch::Receiver<RadioState> {
        self.shared.radio.clone()
    }

    /// The pairings waiting for a person's answer ([`TrustRequest`]); `Some` once (the first call takes the
    /// stream). A node whose stream was never taken, or was dropped, refuses every pairing that needs an answer.
    pub fn trust_requests(&self) -> Option<TrustRequests> {
        lock(&self.shared.trust_rx).take()
    }

    /// Pairs with `device` (a stranger, or a device outside this node's account): dials it and runs the
    /// pairing-mode handshake, in which both people compare the code of a [`TrustRequest`]. Returns the link
    /// once both approved; an existing link to the device is returned as it is. Needs [`NodeConfig::security`].
    pub async fn pair(&self, device: &str) -> Result<LinkId, ConnectFailure> {
        if self.shared.config.security.is_none() {
            return Err(ConnectFailure::new(ConnectErrorCode::SystemInternalError, "pairing needs security settings"));
        }
        let gate = lock(&self.shared.dialing).entry(device.to_owned()).or_default().clone();
        let _dialing = gate.lock().await;
        match self.find_link(device) {
            Some((link, _)) => Ok(link),
            None => self.dial_new(device, Some(HandshakeMode::Pairing)).await.map(|(link, _)| link),
        }
    }

    /// The adapter the node runs on.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.shared.adapter
    }

    /// Opens a session from `from` (a local app) to `to` (an app on `to.device_id`), dialling the device if
    /// no link to it exists. Resolves once the engine sent the request; the answer arrives as
    /// [`Event::Connected`] or [`Event::ConnectFailed`] for the returned session.
    pub async fn connect(
        &self,
        from: PeerInfo,
        to: PeerInfo,
        options: ConnectOptions,
    ) -> Result<(LinkId, SessionKey), ConnectFailure> {
        let device = to.device_id.clone();
        // Concurrent connects to one device share one dial: the first dials, the others then find its link.
        let gate = lock(&self.shared.dialing).entry(device.clone()).or_default().clone();
        let (link, tx) = {
            let _dialing = gate.lock().await;
            match self.find_link(&device) {
                Some(found) => found,
                None => self.dial_new(&device, None).await?,
            }
        };
        let (reply, answer) = oneshot::channel();
        let internal = |reason: &str| ConnectFailure::new(ConnectErrorCode::SystemInternalError, reason);
        tx.send(Command::Connect(Box::new(ConnectRequest { from, to, options, reply })))
            .await
            .map_err(|_| internal("the link closed"))?;
        match answer.await {
            Ok(Ok(session)) => Ok((link, session)),
            Ok(Err(engine::ConnectError::SessionExists(_))) => Err(ConnectFailure::new(
                ConnectErrorCode::ConnectedSessionExists,
                "a session between these endpoints already exists",
            )),
            Ok(Err(e)) => Err(internal(&e.to_string())),
            Err(_) => Err(internal("the link closed")),
        }
    }

    /// Accepts the incoming request `token` on `link`.
    pub async fn accept(&self, link: LinkId, token: String) -> Result<SessionKey, NodeError> {
        self.ask(link, |reply| Command::Accept { token, reply }).await?.map_err(NodeError::from)
    }

    /// Rejects the incoming request `token` on `link` with `code` and `reason`.
    pub async fn reject(
        &self,
        link: LinkId,
        token: String,
        code: ConnectErrorCode,
        reason: String,
    ) -> Result<(), NodeError> {
        self.ask(link, |reply| Command::Reject { token, code, reason, reply }).await?.map_err(NodeError::from)
    }

    /// Ends `session` on `link`, telling the peer `reason`.
    pub async fn disconnect(
        &self,
        link: LinkId,
        session: SessionKey,
        reason: DisconnectReason,
    ) -> Result<(), NodeError> {
        self.ask(link, |reply| Command::Disconnect { session, reason, reply }).await?.map_err(NodeError::from)
    }

    /// Sends `payload` on `session`'s `kind` channel; resolves when the peer holds all of it. Waits while the
    /// channel's buffer is full (back-pressure).
    pub async fn send(
        &self,
        link: LinkId,
        session: SessionKey,
        kind: ChannelKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        self.enqueue(link, session, kind, payload).await?.await
    }

    /// Payload bytes received on `session` of `link` whose [`ReadCredit`]s are still alive: what the app has
    /// not read yet (at most the receive buffer per channel). 0 for an unknown link or session.
    pub fn unread_bytes(&self, link: LinkId, session: SessionKey) -> u64 {
        lock(&self.shared.table).credits.get(&link).map_or(0, |c| c.outstanding(session))
    }

    /// Queues `payload` like [`send`](Self::send) but returns as soon as the link has taken it, with a
    /// [`Delivery`] that resolves when the peer holds all of it: several sends can then be in flight at once,
    /// and they go out in the order they were queued.
    pub async fn enqueue(
        &self,
        link: LinkId,
        session: SessionKey,
        kind: ChannelKind,
        payload: Bytes,
    ) -> Result<Delivery, SendError> {
        let Some(tx) = self.sender(link) else { return Err(SendError::LinkClosed) };
        let (reply, answer) = oneshot::channel();
        tx.send(Command::Send { session, kind, payload, reply }).await.map_err(|_| SendError::LinkClosed)?;
        Ok(Delivery(answer))
    }

    /// Closes `link` in order (its sessions end with `PEER_APP_EXIT` on the peer).
    pub async fn close_link(&self, link: LinkId) {
        if let Some(tx) = self.sender(link) {
            let _ = tx.send(Command::Close).await;
        }
    }

    /// Stops advertising and accepting, and closes every link in order: returns once each link's goodbye
    /// has been handed to its transport and the transport closed (at most [`SHUTDOWN_GRACE`]), so a process may
    /// exit right after.
    pub async fn shutdown(&self) {
        {
            let mut advert = lock(&self.shared.advert);
            self.shared.stopped.store(true, Ordering::Release);
            advert.take();
        }
        for task in lock(&self.shared.background).drain(..) {
            task.abort();
        }
        let senders: Vec<_> = lock(&self.shared.table).links.values().map(|(_, _, tx)| tx.clone()).collect();
        for tx in senders {
            let _ = tx.send(Command::Close).await;
        }
        let tasks: Vec<_> = lock(&self.shared.link_tasks).drain(..).collect();
        if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks)).await.is_err() {
            warn!("links did not close within {SHUTDOWN_GRACE:?}");
        }
    }

    /// The links currently open (peer device, role).
    pub fn links(&self) -> Vec<(LinkId, String, Role)> {
        lock(&self.shared.table).links.iter().map(|(id, (d, r, _))| (*id, d.clone(), *r)).collect()
    }

    async fn ask<T>(&self, link: LinkId, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let tx = self.sender(link).ok_or(NodeError::NoLink)?;
        let (reply, answer) = oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| NodeError::NoLink)?;
        answer.await.map_err(|_| NodeError::NoLink)
    }

    fn sender(&self, link: LinkId) -> Option<mpsc::Sender<Command>> {
        lock(&self.shared.table).links.get(&link).map(|(_, _, tx)| tx.clone())
    }

    /// An open link to `device`, either role (one link per device pair carries every session).
    fn find_link(&self, device: &str) -> Option<(LinkId, mpsc::Sender<Command>)> {
        let table = lock(&self.shared.table);
        [Role::Initiator, Role::Responder].into_iter().find_map(|role| {
            let id = *table.by_key.get(&(device.to_owned(), role))?;
            table.links.get(&id).map(|(_, _, tx)| (id, tx.clone()))
        })
    }

    /// Dials `device` and, with security on, authenticates the transport in `mode` (by default account mode when
    /// this node has an account secret, else pairing mode).
    async fn dial_new(
        &self,
        device: &str,
        mode: Option<HandshakeMode>,
    ) -> Result<(LinkId, mpsc::Sender<Command>), ConnectFailure> {
        let config = &self.shared.config;
        let started = tokio::time::Instant::now();
        // Addresses whose advert carried the device's short id but whose handshake proved another device.
        let mut impostors = Vec::new();
        let mut refused: Option<SecureError> = None;
        let mut busy = 0;
        let (link, replay, secure) = loop {
            let left = config.dial_timeout.saturating_sub(started.elapsed());
            let dialled =
                dial::dial(&self.shared.adapter, device, config.link_params, config.transport, left, &impostors, true)
                    .await;
            let link = match (dialled, refused.take()) {
                (Ok(link), _) => link,
                // Nobody else answered to the short id: report why the one that did was refused.
                (Err(_), Some(error)) => return Err(trust_failure(error)),
                (Err(e), None) => return Err(ConnectFailure::new(e.connect_code(), e.to_string())),
            };
            match self.secure_dial(&link, device, mode).await {
                Ok((replay, secure)) => break (link, replay, secure),
                Err(error) => {
                    link.close().await;
                    // The caller gets the error (and says it to its user); the log keeps it for a field report.
                    info!(device, %error, "secure handshake failed");
                    // Busy: over the peer's limits on new links now (or this address backs off after a failed
                    // handshake, e.g. another app's refused attempt); dial again once that has passed.
                    if error == SecureError::Busy
                        && busy < secure::BUSY_RETRIES
                        && config.dial_timeout.saturating_sub(started.elapsed()) > secure::BUSY_RETRY_AFTER * 2
                    {
                        busy += 1;
                        tokio::time::sleep(secure::BUSY_RETRY_AFTER).await;
                        continue;
                    }
                    if !matches!(error, SecureError::UnexpectedPeer { .. }) || impostors.len() >= MAX_IMPOSTORS {
                        return Err(trust_failure(error));
                    }
                    impostors.push(link.peer().address);
                    refused = Some(error);
                }
            }
        };
        // Another task may have linked the same device meanwhile: use that link, drop ours.
        if let Some(found) = self.find_link(device) {
            tokio::spawn(async move { link.close().await });
            return Ok(found);
        }
        Ok(self.spawn_link(device.to_owned(), Role::Initiator, link, replay, secure))
    }

    /// Runs the initiator's secure handshake on a dialled transport (nothing without security): the peer must
    /// prove it is `device`. Returns what was read past the handshake, for the connection, and the proof.
    async fn secure_dial(
        &self,
        link: &Arc<dyn Link>,
        device: &str,
        mode: Option<HandshakeMode>,
    ) -> Result<(Vec<Bytes>, Option<Box<Proven>>), SecureError> {
        let Some(security) = &self.shared.config.security else { return Ok((Vec::new(), None)) };
        let mode = mode.unwrap_or(match security.secure.account {
            Some(_) => HandshakeMode::Account,
            None => HandshakeMode::Pairing,
        });
        let mut entropy = self.entropy(self.shared.handshakes.fetch_add(1, Ordering::Relaxed) | (1 << 63));
        let handshake = SecureHandshake::initiator(
            now(),
            security.secure.clone(),
            mode,
            Some(device.to_owned()),
            secure::transport_of(link),
            &mut *entropy,
        )?;
        let done = secure::run(link, handshake, &security.policy, Some(&self.shared.trust_tx), false).await?;
        info!(device, ?mode, "transport authenticated");
        Ok((secure::leftover(&done), Some(Box::new(Proven { peer: done.peer, keys: done.keys }))))
    }

    /// A source of unpredictable numbers: seeded (per `salt`) on the simulator, the OS's otherwise.
    fn entropy(&self, salt: u64) -> Box<dyn Entropy> {
        match self.shared.config.seed {
            Some(seed) => Box::new(SeededEntropy::new(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            None => Box::new(OsEntropy),
        }
    }

    fn spawn_link(
        &self,
        device: String,
        role: Role,
        link: Arc<dyn Link>,
        replay: Vec<Bytes>,
        secure: Option<Box<Proven>>,
    ) -> (LinkId, mpsc::Sender<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let credit = Arc::new(LinkCredit::default());
        let id = {
            let mut table = lock(&self.shared.table);
            table.next += 1;
            let id = LinkId(table.next);
            table.by_key.insert((device.clone(), role), id);
            table.links.insert(id, (device.clone(), role, tx.clone()));
            table.credits.insert(id, credit.clone());
            id
        };
        let entropy = self.entropy(id.0);
        let conn = Connection::new(now(), self.shared.config.engine.clone(), role, entropy);
        let redial = (role == Role::Initiator).then(|| self.shared.redial.clone());
        let weak = Arc::downgrade(&self.shared);
        let on_exit = Box::new(move |id: LinkId| {
            if let Some(shared) = weak.upgrade() {
                let mut table = lock(&shared.table);
                table.credits.remove(&id);
                if let Some((device, role, _)) = table.links.remove(&id)
                    && table.by_key.get(&(device.clone(), role)) == Some(&id)
                {
                    table.by_key.remove(&(device, role));
                }
            }
        });
        let max_unread = self.shared.config.max_unread_payloads.min(MAX_UNREAD_PAYLOADS);
        let task = LinkTask::new(
            id,
            conn,
            rx,
            tx.clone(),
            self.shared.events.clone(),
            redial,
            device,
            on_exit,
            credit,
            max_unread,
        );
        let handle = tokio::spawn(task.run(link, replay, secure).in_current_span());
        let mut tasks = lock(&self.shared.link_tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
        (id, tx)
    }

    async fn redial_loop(self, mut requests: mpsc::UnboundedReceiver<DialRequest>) {
        while let Some(request) = requests.recv().await {
            let node = self.clone();
            tokio::spawn(
                async move {
                    let started = tokio::time::Instant::now();
                    let mut backoff = Duration::from_millis(100);
                    loop {
                        let left = request.within.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            let _ = request.reply.send(Command::RedialFailed).await;
                            return;
                        }
                        let (params, prefer) = (node.shared.config.link_params, node.shared.config.transport);
                        // Each attempt gets at most a few seconds, so one that hangs (a peer not yet
                        // connectable again) leaves time for the next; one started within the grace period
                        // may run past it, up to the engine's resume deadline (an outage just shorter than
                        // the grace period still resumes).
                        let finish = request.finish_within.saturating_sub(started.elapsed());
                        let attempt = if left <= REDIAL_ATTEMPT {
                            // The last attempt: it may look for the peer until shortly before the resume
                            // deadline, leaving time for the secure handshake.
                            finish.saturating_sub(REDIAL_HANDSHAKE_MARGIN).max(left)
                        } else {
                            finish.min(REDIAL_ATTEMPT)
                        };
                        match dial::dial(&node.shared.adapter, &request.device, params, prefer, attempt, &[], false)
                            .await
                        {
                            Ok(link) => match node.secure_dial(&link, &request.device, None).await {
                                Ok((replay, secure)) => {
                                    info!(device = %request.device, "re-dialled");
                                    let _ = request.reply.send(Command::Attach { link, replay, secure }).await;
                                    return;
                                }
                                Err(error) => {
                                    warn!(device = %request.device, %error, "re-dialled transport refused");
                                    link.close().await;
                                    tokio::time::sleep(backoff.min(left)).await;
                                    backoff = (backoff * 2).min(Duration::from_secs(2));
                                }
                            },
                            Err(e) => {
                                debug!(error = %e, ?backoff, "re-dial failed; retrying");
                                tokio::time::sleep(backoff.min(left)).await;
                                // While the local radio is off, look again often: the moment it is back the
                                // grace period is what is left, and a long back-off would waste it.
                                let cap = match e {
                                    DialError::PoweredOff => Duration::from_millis(250),
                                    _ => Duration::from_secs(2),
                                };
                                backoff = (backoff * 2).min(cap);
                            }
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }
}

/// The most devices answering to one short id that a dial tries before giving up.
const MAX_IMPOSTORS: usize = 4;

/// A connect refused by the secure handshake.
fn trust_failure(error: SecureError) -> ConnectFailure {
    ConnectFailure { code: secure::connect_code(&error), reason: error.to_string(), trust: Some(error) }
}

/// How the engine frames a link of this mode: length-prefixed frames on byte streams, one frame per SDU else.
pub(crate) fn frame_mode(mode: LinkMode) -> colink_frame::LinkMode {
    match mode {
        LinkMode::Stream => colink_frame::LinkMode::Stream,
        _ => colink_frame::LinkMode::Packet,
    }
}

/// Unpredictable numbers from the operating system's random source: what a node draws its tokens and
/// handshake keys from when [`NodeConfig::seed`] is `None`; also the source for
/// [`Keypair::generate`](colink_proto::secure::Keypair::generate) when creating a device key.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&mut self) -> u64 {
        // getrandom fails only on platforms without an OS source, which colink does not run on; fall back to
        // a hash keyed by std's per-process random keys rather than to a constant.
        getrandom::u64().unwrap_or_else(|_| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        })
    }
}
