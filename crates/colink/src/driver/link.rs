//! The task that runs one [`colink_proto::Connection`] over a `colink-ble` link.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{CloseReason, Link, LinkError as BleLinkError};
use colink_frame::Mtu;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::credit::LinkCredit;
use super::{DialRequest, LinkId, NodeEvent, SendError};
use colink_proto::secure::{PeerIdentity, TransportKeys};
use colink_proto::{
    self as engine, ChannelKind, ConnectErrorCode, ConnectOptions, Connection, DisconnectReason, Event, LinkState,
    PeerInfo, SendId, SessionError, SessionKey, Transport,
};

/// Commands from the node to a link task.
pub(crate) enum Command {
    /// Open a session on this link.
    Connect(Box<ConnectRequest>),
    /// Accept an incoming session request.
    Accept { token: String, reply: oneshot::Sender<Result<SessionKey, SessionError>> },
    /// Reject an incoming session request.
    Reject { token: String, code: ConnectErrorCode, reason: String, reply: oneshot::Sender<Result<(), SessionError>> },
    /// End a session.
    Disconnect { session: SessionKey, reason: DisconnectReason, reply: oneshot::Sender<Result<(), SessionError>> },
    /// Send a payload; the reply comes when the peer holds all of it.
    Send { session: SessionKey, kind: ChannelKind, payload: Bytes, reply: oneshot::Sender<Result<(), SendError>> },
    /// A new transport for this link, with the data already read from it (replayed into the engine) and, on
    /// a secure node, the identity it proved and its keys.
    Attach { link: Arc<dyn Link>, replay: Vec<Bytes>, secure: Option<Box<Proven>> },
    /// A re-dial attempt gave up.
    RedialFailed,
    /// Close the link in order.
    Close,
}

/// What a secure handshake established on a transport.
#[derive(Debug)]
pub(crate) struct Proven {
    pub(crate) peer: PeerIdentity,
    pub(crate) keys: TransportKeys,
}

/// A session request (boxed in [`Command`]: peer infos are large and commands wait in a queue).
pub(crate) struct ConnectRequest {
    pub(crate) from: PeerInfo,
    pub(crate) to: PeerInfo,
    pub(crate) options: ConnectOptions,
    pub(crate) reply: oneshot::Sender<Result<SessionKey, engine::ConnectError>>,
}

/// What a transport's reader task reports.
enum Input {
    Data(Bytes),
    Closed(CloseReason),
}

/// A send waiting for room in its channel.
struct Queued {
    session: SessionKey,
    kind: ChannelKind,
    payload: Bytes,
    reply: oneshot::Sender<Result<(), SendError>>,
}

type SendFuture = Pin<Box<dyn Future<Output = Result<(), BleLinkError>> + Send>>;

/// The per-link task state.
pub(crate) struct LinkTask {
    pub(crate) id: LinkId,
    pub(crate) conn: Connection,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// A sender to our own command queue, handed to re-dial tasks.
    pub(crate) self_tx: mpsc::Sender<Command>,
    pub(crate) events: mpsc::Sender<NodeEvent>,
    /// Events the node's queue had no room for yet, in order (at most [`OUTBOX_LIMIT`] before the task stops
    /// reading the transport, plus what the engine raises meanwhile from timers and commands).
    outbox: VecDeque<NodeEvent>,
    /// Where to ask for a re-dial (initiator side); `None` on the responder side.
    pub(crate) redial: Option<mpsc::UnboundedSender<DialRequest>>,
    pub(crate) peer_device: String,
    pub(crate) on_exit: Box<dyn FnOnce(LinkId) + Send>,
    link: Option<Arc<dyn Link>>,
    generation: u64,
    input_tx: mpsc::Sender<(u64, Input)>,
    input_rx: mpsc::Receiver<(u64, Input)>,
    sending: Option<SendFuture>,
    pending: BTreeMap<SendId, oneshot::Sender<Result<(), SendError>>>,
    blocked: VecDeque<Queued>,
    redialing: bool,
    /// Receive credit the app hands back as it reads.
    credit: Arc<LinkCredit>,
    /// Unread payloads at which the task stops reading its transport ([`NodeConfig::max_unread_payloads`]).
    max_unread: u64,
}

/// Bytes the driver lets wait in the transport's queue (not yet on the air) before it hands over the next frame:
/// none, so one frame waits while another is on the air, which keeps the radio busy back to back.
const TRANSPORT_QUEUE: usize = 0;

/// Reader-to-task queue depth: when the task falls behind, the reader stops reading and the link's flow
/// control throttles the peer.
const INPUT_QUEUE: usize = 64;

/// Events a link holds for the node's queue before it stops reading its transport (back-pressure to the peer
/// when the app's side falls behind).
const OUTBOX_LIMIT: usize = 64;

impl LinkTask {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: LinkId,
        conn: Connection,
        commands: mpsc::Receiver<Command>,
        self_tx: mpsc::Sender<Command>,
        events: mpsc::Sender<NodeEvent>,
        redial: Option<mpsc::UnboundedSender<DialRequest>>,
        peer_device: String,
        on_exit: Box<dyn FnOnce(LinkId) + Send>,
        credit: Arc<LinkCredit>,
        max_unread: u64,
    ) -> Self {
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        Self {
            id,
            conn,
            commands,
            self_tx,
            events,
            outbox: VecDeque::new(),
            redial,
            peer_device,
            on_exit,
            link: None,
            generation: 0,
            input_tx,
            input_rx,
            sending: None,
            pending: BTreeMap::new(),
            blocked: VecDeque::new(),
            redialing: false,
            credit,
            max_unread,
        }
    }

    /// Runs the link until the engine closes it for good.
    pub(crate) async fn run(mut self, first: Arc<dyn Link>, replay: Vec<Bytes>, secure: Option<Box<Proven>>) {
        let span = tracing::info_span!("link", id = self.id.0, peer = %self.peer_device);
        async move {
            self.attach(first, replay, secure);
            loop {
                self.pump();
                if self.conn.state() == LinkState::Closed && self.sending.is_none() {
                    break;
                }
                let deadline = self.conn.poll_timeout().map(Instant::from_std);
                let sending = self.sending.is_some();
                let credit = self.credit.clone();
                let events = self.events.clone();
                // The transport is not read while events wait for room in the node's queue, or while the app
                // holds too many unread payloads (bounded even for a peer that sends empty ones for free).
                let reading = self.outbox.len() < OUTBOX_LIMIT && credit.unread_payloads() < self.max_unread;
                let waiting = !self.outbox.is_empty();
                tokio::select! {
                    biased;
                    permit = events.reserve(), if waiting => match permit {
                        Ok(permit) => {
                            if let Some(event) = self.outbox.pop_front() {
                                permit.send(event);
                            }
                        }
                        // Nobody listens any more.
                        Err(_) => self.outbox.clear(),
                    },
                    Some((generation, input)) = self.input_rx.recv(), if reading => {
                        if generation == self.generation {
                            self.on_input(input);
                        }
                    }
                    result = poll_sending(&mut self.sending), if sending => {
                        self.sending = None;
                        if let Err(e) = result {
                            self.transport_failed(&e);
                        }
                    }
                    command = self.commands.recv() => match command {
                        Some(command) => self.on_command(command),
                        None => self.conn.close(now()),
                    },
                    () = sleep_until(deadline), if deadline.is_some() => self.conn.handle_timeout(now()),
                    () = credit.returned.notified() => {
                        for ((session, kind), len) in self.credit.take_returned() {
                            self.conn.consumed(now(), session, kind, len);
                        }
                    }
                }
            }
            // The last events (sessions ended, the link closed) still reach the node.
            for event in std::mem::take(&mut self.outbox) {
                if self.events.send(event).await.is_err() {
                    break;
                }
            }
            for (_, reply) in std::mem::take(&mut self.pending) {
                let _ = reply.send(Err(SendError::LinkClosed));
            }
            for q in std::mem::take(&mut self.blocked) {
                let _ = q.reply.send(Err(SendError::LinkClosed));
            }
            if let Some(link) = self.link.take() {
                link.close().await;
            }
            info!("link task ended");
            (self.on_exit)(self.id);
        }
        .instrument(span)
        .await;
    }

    /// Moves everything the engine has ready: events out, the next frame onto the transport.
    fn pump(&mut self) {
        self.drain_events();
        if self.sending.is_some() {
            return;
        }
        let Some(link) = self.link.clone() else { return };
        if let Some(sdu) = self.conn.poll_transmit(now()) {
            // The next frame is chosen only once this one has left the transport's queue: what the engine picks
            // then (say, a message that arrived meanwhile) waits behind at most this frame's remaining air time
            // and one more frame, not behind a send buffer full of bulk data.
            self.sending = Some(Box::pin(async move {
                link.send(sdu).await?;
                link.drain_to(TRANSPORT_QUEUE).await
            }));
        }
        // Producing a frame can raise events too (a timer that was due, a send that completed).
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            self.on_event(event);
        }
        // The engine let go of the transport itself (a corrupted stream, the idle or handshake timeout): close
        // it, or the peer would go on believing in it and never re-dial.
        if !self.conn.has_transport() && self.close_transport() {
            debug!("the engine dropped the transport; closed it");
        }
    }

    fn attach(&mut self, link: Arc<dyn Link>, replay: Vec<Bytes>, secure: Option<Box<Proven>>) {
        self.generation += 1;
        self.sending = None;
        let mtu = Mtu::new(link.mtu().bytes()).unwrap_or(Mtu::MIN);
        let mode = super::frame_mode(link.mode());
        debug!(generation = self.generation, ?mode, mtu = mtu.get(), "transport attached");
        let now = now();
        let transport = Transport { mode, mtu };
        match secure {
            None => self.conn.attach(now, transport),
            Some(proven) => {
                let Proven { peer, keys } = *proven;
                if let Err(e) = self.conn.attach_secured(now, transport, peer, keys) {
                    warn!(error = %e, "transport refused");
                    tokio::spawn(async move { link.close().await });
                    return;
                }
            }
        }
        for data in replay {
            self.conn.handle_input(now, data);
        }
        let generation = self.generation;
        let tx = self.input_tx.clone();
        let reader = link.clone();
        tokio::spawn(
            async move {
                loop {
                    let input = match reader.recv().await {
                        Ok(data) => Input::Data(data),
                        Err(BleLinkError::Closed(reason)) => Input::Closed(reason),
                        Err(e) => Input::Closed(CloseReason::Other(e.to_string())),
                    };
                    let closed = matches!(input, Input::Closed(_));
                    if tx.send((generation, input)).await.is_err() || closed {
                        break;
                    }
                }
            }
            .in_current_span(),
        );
        self.link = Some(link);
        self.redialing = false;
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Data(data) => self.conn.handle_input(now(), data),
            Input::Closed(reason) => {
                info!(%reason, "transport closed");
                self.drop_transport();
            }
        }
    }

    fn transport_failed(&mut self, error: &BleLinkError) {
        warn!(%error, "transport send failed");
        self.drop_transport();
    }

    fn drop_transport(&mut self) {
        if self.close_transport() {
            self.conn.link_lost(now());
        }
    }

    /// Closes the attached transport, if any (its reader's input is ignored from now on); returns whether there
    /// was one.
    fn close_transport(&mut self) -> bool {
        let Some(link) = self.link.take() else { return false };
        self.generation += 1;
        self.sending = None;
        tokio::spawn(async move { link.close().await });
        true
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Connect(request) => {
                let ConnectRequest { from, to, options, reply } = *request;
                let _ = reply.send(self.conn.connect(now, from, to, options));
            }
            Command::Accept { token, reply } => {
                let _ = reply.send(self.conn.accept(now, &token));
            }
            Command::Reject { token, code, reason, reply } => {
                let _ = reply.send(self.conn.reject(now, &token, code, &reason));
            }
            Command::Disconnect { session, reason, reply } => {
                let _ = reply.send(self.conn.disconnect(now, session, reason));
            }
            Command::Send { session, kind, payload, reply } => {
                // Keep per-channel order: once a channel is blocked, later sends queue behind it.
                if self.blocked.iter().any(|q| q.session == session && q.kind == kind) {
                    self.blocked.push_back(Queued { session, kind, payload, reply });
                } else if let Err(q) = self.offer(Queued { session, kind, payload, reply }) {
                    self.blocked.push_back(q);
                }
            }
            Command::Attach { link, replay, secure } => {
                let other = secure.as_ref().and_then(|p| self.conn.peer_identity().filter(|id| **id != p.peer));
                if self.conn.state() == LinkState::Closed {
                    tokio::spawn(async move { link.close().await });
                } else if let Some(ours) = other {
                    // Never reached: the node routes by proven identity. Refuse rather than replace.
                    warn!(peer = %ours.device_id, "a transport proving another identity was refused");
                    tokio::spawn(async move { link.close().await });
                } else {
                    if let Some(old) = self.link.take() {
                        tokio::spawn(async move { old.close().await });
                    }
                    self.attach(link, replay, secure);
                }
            }
            Command::RedialFailed => self.redialing = false,
            Command::Close => self.conn.close(now),
        }
    }

    /// Offers a send to the engine; gives it back when the channel is full.
    fn offer(&mut self, q: Queued) -> Result<(), Queued> {
        match self.conn.send(q.session, q.kind, q.payload.clone()) {
            Ok(id) => {
                self.pending.insert(id, q.reply);
                Ok(())
            }
            Err(engine::SendError::WouldBlock) => Err(q),
            Err(e) => {
                let _ = q.reply.send(Err(SendError::Rejected(e)));
                Ok(())
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match &event {
            Event::SendCompleted { id, .. } => {
                if let Some(reply) = self.pending.remove(id) {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::SendFailed { id, error, .. } => {
                if let Some(reply) = self.pending.remove(id) {
                    let _ = reply.send(Err(SendError::Failed(error.clone())));
                }
            }
            Event::Writable { session, kind } => {
                // Offer the channel's queued sends in order until one does not fit.
                let (session, kind) = (*session, *kind);
                let mut rest = VecDeque::new();
                let mut stalled = false;
                for q in std::mem::take(&mut self.blocked) {
                    if !stalled && q.session == session && q.kind == kind {
                        if let Err(q) = self.offer(q) {
                            stalled = true;
                            rest.push_back(q);
                        }
                    } else {
                        rest.push_back(q);
                    }
                }
                self.blocked = rest;
            }
            Event::Disconnected { session, .. } => {
                let session = *session;
                let (dead, keep): (VecDeque<_>, VecDeque<_>) =
                    std::mem::take(&mut self.blocked).into_iter().partition(|q| q.session == session);
                self.blocked = keep;
                for q in dead {
                    let _ = q.reply.send(Err(SendError::NotConnected));
                }
            }
            Event::LinkLost { redial: true } => self.request_redial(),
            Event::LinkUp { peer_device, .. } => self.peer_device.clone_from(peer_device),
            _ => {}
        }
        // A payload's bytes count against its channel's receive buffer until the app read it (the credit dropped).
        let credit = match &event {
            Event::Received { session, kind, payload } => {
                // Each payload holds its bytes plus the per-message charge of the agreed version.
                Some(Arc::new(self.credit.issue(*session, *kind, payload.len() as u64 + self.conn.message_charge())))
            }
            _ => None,
        };
        let event = NodeEvent { link: self.id, peer_device: self.peer_device.clone(), event, credit };
        // Straight into the node's queue while it has room and nothing older waits; otherwise in order behind.
        if self.outbox.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(event)) => self.outbox.push_back(event),
            }
        } else {
            self.outbox.push_back(event);
        }
    }

    fn request_redial(&mut self) {
        if self.redialing {
            return;
        }
        if let Some(redial) = &self.redial {
            self.redialing = true;
            let request = DialRequest {
                device: self.peer_device.clone(),
                within: self.conn.grace_deadline().map_or(Duration::ZERO, |d| d.saturating_duration_since(now())),
                finish_within: self
                    .conn
                    .resume_deadline()
                    .map_or(Duration::ZERO, |d| d.saturating_duration_since(now())),
                reply: self.self_tx.clone(),
            };
            let _ = redial.send(request);
        }
    }
}

/// The engine's clock: tokio's (virtual under a paused runtime) as a std instant.
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn poll_sending(sending: &mut Option<SendFuture>) -> Result<(), BleLinkError> {
    match sending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
