//! [`Manager`]: the public API, after OpenHarmony's `abilityConnectionManager`, on the session engine's driver.
//!
//! One `Manager` per process owns an adapter (the simulator or BlueZ) through a [`Node`]. Apps, identified by
//! a [`Caller`], create sessions to apps on other devices, connect them (the peer app answers through its
//! [`Manager::incoming`] stream with [`Manager::accept_connect`] or [`Manager::reject`]), exchange messages
//! and data, and learn what happens through [`Manager::on`] listeners or [`Manager::events`] streams.
//!
//! Every operation validates its arguments by the reference's rules (see [`crate::api::validate`]) and answers
//! with an [`Error`] carrying the reference's numeric code; nothing panics on bad input. Unlike the reference,
//! `send_message` / `send_data` resolve when the peer's app has the whole payload, or it waits in the peer's
//! bounded per-session queue sure to reach the app (docs/api-mapping.md, "Delivery"; a peer app that does not
//! read slows this sender through its receive credit), and a send that fails after
//! it was accepted also raises `collaborateEvent` SEND_FAILURE.

mod files;
mod incoming;
#[cfg(feature = "media")]
mod media;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use colink_ble::{Adapter, DeviceId};
#[cfg(feature = "media")]
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

#[cfg(feature = "media")]
use crate::api::StreamIds;
use crate::api::{
    Caller, CollaborateEventInfo, CollaborateEventType, ConnectErrorCode, ConnectOptions, ConnectResult,
    DisconnectReason, Error, Event, EventKind, EventRegistry, EventStream, PeerInfo, SessionId, SessionIds,
    SessionState, validate,
};
use crate::driver::{LinkId, Node, NodeConfig, NodeEvent, NodeEvents, RadioState, SendError, StartError};
use crate::lock;
use colink_proto::{self as engine, ChannelKind, SessionKey};
pub use incoming::{CollaborationRequest, INCOMING_QUEUE, Incoming};
#[cfg(feature = "media")]
pub use media::{DEFAULT_IMAGE_QUALITY, IMAGE_DECODES, IMAGE_QUEUE, IMAGE_VERDICT_TIMEOUT};

/// Builds a [`Manager`].
#[derive(Default)]
#[must_use]
pub struct ManagerBuilder {
    adapter: Option<Arc<dyn Adapter>>,
    device: Option<DeviceId>,
    config: NodeConfig,
    security: Option<crate::trust::Security>,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder").field("device", &self.device).finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// The adapter to run on: a `colink_sim::SimAdapter`, a `colink_ble::bluez::BluezAdapter`, ...
    pub fn adapter(mut self, adapter: impl Adapter) -> Self {
        self.adapter = Some(Arc::new(adapter));
        self
    }

    /// The adapter to run on, already shared.
    pub fn shared_adapter(mut self, adapter: Arc<dyn Adapter>) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// This device's stable identity (default: a random one; persist it to be recognised across restarts).
    pub fn device_id(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// Authenticated, encrypted links (docs/security.md): the device's identity key (its device id is derived
    /// from it, so [`device_id`](Self::device_id) must not be given too), its account, its trust store, and
    /// what happens to strangers. Without it links are plain and every peer is admitted.
    pub fn security(mut self, security: crate::trust::Security) -> Self {
        self.security = Some(security);
        self
    }

    /// This device's name for people, announced to peers at connect (at most 248 bytes; default: none). Peers
    /// show it, e.g. in `colink devices`.
    pub fn device_name(mut self, name: impl Into<String>) -> Self {
        self.config.engine.device_name = name.into();
        self
    }

    /// Payload bytes each session channel (messages, data, images, stream media) may hold for the app before
    /// it reads them (default 4 MiB, [`colink_proto::DEFAULT_RECEIVE_BUFFER`]; at most `u32::MAX`). When a
    /// session's app does not read, its peer's sends stop resolving once this is full; other sessions flow
    /// on. Set it after [`node_config`](Self::node_config), which replaces the whole configuration.
    pub fn receive_buffer(mut self, bytes: u64) -> Self {
        self.config.engine.receive_buffer = bytes;
        self
    }

    /// Draws the engine's tokens from a seed instead of the OS: deterministic runs on the simulator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// The driver's configuration (engine timers, link parameters, advertised services, dial timeout).
    pub fn node_config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the manager: listens and advertises on the adapter. `801` without an adapter, or when the
    /// adapter is off or refuses.
    pub async fn build(self) -> Result<Manager, Error> {
        let adapter = self.adapter.ok_or_else(|| Error::not_supported("colink without a Bluetooth adapter"))?;
        let mut config = self.config;
        if let Some(security) = &self.security {
            if self.device.is_some_and(|d| d != security.device_id()) {
                return Err(Error::invalid_arg(
                    "device_id",
                    "with security the device id is derived from the identity key; do not set another",
                ));
            }
            config.security = Some(security.to_config());
        }
        let device = match self.device.or_else(|| self.security.as_ref().map(crate::trust::Security::device_id)) {
            Some(d) => d,
            None => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes).map_err(|e| Error::not_supported(format_args!("a device id ({e})")))?;
                DeviceId::from_bytes(bytes)
            }
        };
        let receive_buffer = config.engine.receive_buffer;
        let (node, events) = Node::start(adapter, device, config).await.map_err(|e| match e {
            StartError::PoweredOff => Error::not_supported("colink with the Bluetooth adapter powered off"),
            e => Error::not_supported(format_args!("colink on this adapter ({e})")),
        })?;
        #[cfg(feature = "media")]
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            security: self.security,
            node,
            registry: EventRegistry::new(),
            ids: SessionIds::new(),
            state: Mutex::new(State::default()),
            apps: incoming::Apps::default(),
            pump: Mutex::new(Vec::new()),
            files: Arc::default(),
            receive_buffer,
            #[cfg(feature = "media")]
            media: Mutex::new(media::MediaState::default()),
            #[cfg(feature = "media")]
            stream_ids: StreamIds::new(),
            #[cfg(feature = "media")]
            signals: signals_tx,
        });
        let span = tracing::info_span!("manager", device = %device.short());
        #[cfg(feature = "media")]
        {
            let signals = media::run_signals(Arc::downgrade(&inner), signals_rx).instrument(span.clone());
            lock(&inner.pump).push(tokio::spawn(signals));
        }
        let pump = tokio::spawn(pump(Arc::downgrade(&inner), events).instrument(span));
        lock(&inner.pump).push(pump);
        info!(device = %device, "manager started");
        Ok(Manager { inner })
    }
}

/// The connection manager: sessions between local apps and apps on nearby devices.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("device", &self.inner.node.device().to_string()).finish_non_exhaustive()
    }
}

struct Inner {
    security: Option<crate::trust::Security>,
    node: Node,
    registry: EventRegistry,
    ids: SessionIds,
    state: Mutex<State>,
    apps: incoming::Apps,
    /// The event pump and the stream-signal sender.
    pump: Mutex<Vec<JoinHandle<()>>>,
    /// File transfers (shared with their tasks).
    files: Arc<Mutex<files::FileState>>,
    /// The engine's per-channel receive buffer (bounds each incoming file's chunk queue).
    receive_buffer: u64,
    #[cfg(feature = "media")]
    media: Mutex<media::MediaState>,
    #[cfg(feature = "media")]
    stream_ids: StreamIds,
    #[cfg(feature = "media")]
    signals: mpsc::UnboundedSender<crate::media::pipe::Signal>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.pump).drain(..) {
            task.abort();
        }
    }
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<SessionId, Session>,
    bound: BTreeMap<(LinkId, SessionKey), SessionId>,
    requests: BTreeMap<String, Request>,
    /// Answers that arrived for a connect before its binding was recorded.
    early: BTreeMap<(LinkId, SessionKey), ConnectResult>,
    /// Payloads received for a session before it was connected here (the peer sends the moment its engine
    /// reports the session open, which can be before `connect`/`accept_connect` recorded it), in order, each
    /// with its receive credit: bounded by the receive buffer, handed on once the session is connected.
    held: BTreeMap<(LinkId, SessionKey), Vec<Received>>,
    /// Links that lost their transport and are reconnecting within the grace period.
    reconnecting: BTreeSet<LinkId>,
}

/// A payload received for a session, with its receive credit.
struct Received {
    kind: ChannelKind,
    payload: Bytes,
    credit: Option<Arc<crate::driver::ReadCredit>>,
}

struct Session {
    caller: Caller,
    service_name: String,
    peer: PeerInfo,
    options: ConnectOptions,
    phase: Phase,
}

enum Phase {
    Idle,
    Connecting { binding: Option<(LinkId, SessionKey)>, answer: Option<oneshot::Sender<ConnectResult>> },
    Connected { binding: (LinkId, SessionKey) },
}

/// An unanswered collaboration request from a peer.
#[derive(Clone)]
struct Request {
    link: LinkId,
}

impl Manager {
    /// A builder: `Manager::builder().adapter(adapter).build().await`.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// This device's identity: the `device_id` peers put in their [`PeerInfo`] to reach apps here.
    pub fn device_id(&self) -> DeviceId {
        self.inner.node.device()
    }

    /// The pairings waiting for a person's answer: show each [`TrustRequest::code`] next to the peer's id, ask
    /// whether the other device shows the same six digits, then approve or refuse. `Some` once (the first call
    /// takes the stream); while nobody holds it, pairings that need an answer are refused.
    ///
    /// [`TrustRequest::code`]: crate::driver::TrustRequest::code
    pub fn trust_requests(&self) -> Option<crate::driver::TrustRequests> {
        self.inner.node.trust_requests()
    }

    /// Pairs with `device`, a stranger (or a device outside this one's account): both people compare the code
    /// of a trust request and approve; the peer's key is then pinned and later sessions need no question.
    /// Needs [`ManagerBuilder::security`]. Fails with `401` without security, and with the reason (refused by
    /// the peer's user, the peer accepts no pairing now, not found, ...) in the error message otherwise.
    pub async fn pair(&self, device: DeviceId) -> Result<(), Error> {
        if self.inner.security.is_none() {
            return Err(Error::invalid_arg("device", "pairing needs security (ManagerBuilder::security)"));
        }
        self.inner.node.pair(&device.to_string()).await.map(|_| ()).map_err(|f| {
            let why = f.trust.as_ref().map_or_else(|| f.reason.clone(), ToString::to_string);
            Error::new(crate::ErrorCode::InvalidParameter, format!("pairing with {device} failed: {why}"))
        })
    }

    /// The devices this one trusts (by account or by a confirmed pairing), as its trust store holds them; empty
    /// without security.
    pub fn trusted_devices(&self) -> Vec<crate::trust::KnownPeer> {
        self.inner.security.as_ref().map_or_else(Vec::new, |s| lock(&s.store()).peers().cloned().collect())
    }

    /// Forgets `device`: its next handshake is refused unless it proves the account again or is paired again.
    /// Returns whether it was known. Saved at once when the trust store lives in a state directory.
    pub fn forget_device(&self, device: DeviceId) -> Result<bool, Error> {
        let Some(security) = &self.inner.security else { return Ok(false) };
        let store = security.store();
        let mut store = lock(&store);
        let known = store.remove(&device);
        if known {
            store.save_if_stored().map_err(|e| Error::new(crate::ErrorCode::InvalidParameter, e.to_string()))?;
        }
        Ok(known)
    }

    /// Whether this device is accepting sessions from new links, and each change: after the radio was lost
    /// the node listens and advertises again once it is back, or gives up as its
    /// [`NodeConfig::on_radio_loss`](crate::driver::NodeConfig::on_radio_loss) says.
    pub fn radio_state(&self) -> tokio::sync::watch::Receiver<RadioState> {
        self.inner.node.radio_state()
    }

    /// `createAbilityConnectionSession(serviceName, context, peerInfo, connectOptions)`: a session from the
    /// app `caller` to the app `peer`, not yet connected.
    pub fn create_session(
        &self,
        caller: &Caller,
        service_name: &str,
        peer: PeerInfo,
        options: ConnectOptions,
    ) -> Result<SessionId, Error> {
        validate::create_session(service_name, &peer, &options, caller)?;
        let id = self
            .inner
            .ids
            .allocate()
            .ok_or_else(|| Error::invalid_arg("session_id", "no session ids left in this process"))?;
        self.inner.registry.open_session(id, caller);
        let session = Session {
            caller: caller.clone(),
            service_name: service_name.to_owned(),
            peer,
            options,
            phase: Phase::Idle,
        };
        self.state().sessions.insert(id, session);
        debug!(session = %id, "session created");
        Ok(id)
    }

    /// `destroyAbilityConnectionSession(id)`: disconnects the session if needed, then forgets it (its listeners
    /// and streams end).
    pub async fn destroy_session(&self, id: SessionId) -> Result<(), Error> {
        self.disconnect(id).await?;
        #[cfg(feature = "media")]
        media::session_destroyed(&self.inner, id);
        self.state().sessions.remove(&id);
        self.inner.registry.close_session(id);
        Ok(())
    }

    /// Where session `id` stands (colink; `None` for an unknown id): idle, connecting, connected, or
    /// reconnecting after its link was lost (the `reconnecting` / `reconnected` events mark the changes).
    pub fn session_state(&self, id: SessionId) -> Option<SessionState> {
        let state = self.state();
        Some(match &state.sessions.get(&id)?.phase {
            Phase::Idle => SessionState::Idle,
            Phase::Connecting { .. } => SessionState::Connecting,
            Phase::Connected { binding } if state.reconnecting.contains(&binding.0) => SessionState::Reconnecting,
            Phase::Connected { .. } => SessionState::Connected,
        })
    }

    /// `getPeerInfoById(id)`: the peer app of a session, or `None` for an unknown id.
    pub fn peer_info(&self, id: SessionId) -> Option<PeerInfo> {
        self.state().sessions.get(&id).map(|s| s.peer.clone())
    }

    /// `connect(id)`: dials the peer device if needed and asks the peer app to collaborate. Resolves with
    /// `is_connected: true` once the peer app accepted, or with the reference's error code (an absent or
    /// silent peer gives `SYSTEM_INTERNAL_ERROR` after the 10 s connect timeout). `401` for an unknown id.
    pub async fn connect(&self, id: SessionId) -> Result<ConnectResult, Error> {
        let (from, to, options) = {
            let mut state = self.state();
            let s = state.sessions.get_mut(&id).ok_or_else(|| Error::unknown_session(id))?;
            if !matches!(s.phase, Phase::Idle) {
                return Ok(ConnectResult::failed(
                    ConnectErrorCode::ConnectedSessionExists,
                    Some(format!("session {id} is already connected or connecting")),
                ));
            }
            s.phase = Phase::Connecting { binding: None, answer: None };
            let from = engine::PeerInfo {
                device_id: self.inner.node.device().to_string(),
                bundle_name: s.caller.bundle_name().to_owned(),
                module_name: s.caller.module_name().to_owned(),
                ability_name: s.caller.ability_name().to_owned(),
                service_name: s.service_name.clone(),
            };
            (from, s.peer.to_engine(&s.service_name), s.options.clone())
        };
        let (answer_tx, answer_rx) = oneshot::channel();
        let binding = match self.inner.node.connect(from, to, options).await {
            Ok(binding) => binding,
            Err(failure) => {
                self.set_idle(id);
                let mut result = ConnectResult::failed(failure.code, Some(failure.reason));
                result.trust = failure.trust;
                return Ok(result);
            }
        };
        enum Next {
            Answered(ConnectResult),
            Closed,
            Wait,
        }
        let next = {
            let mut state = self.state();
            if let Some(early) = state.early.remove(&binding) {
                Next::Answered(early)
            } else {
                state.bound.insert(binding, id);
                match state.sessions.get_mut(&id) {
                    Some(Session { phase: Phase::Connecting { binding: b, answer }, .. }) => {
                        *b = Some(binding);
                        *answer = Some(answer_tx);
                        Next::Wait
                    }
                    _ => {
                        state.bound.remove(&binding);
                        Next::Closed
                    }
                }
            }
        };
        match next {
            Next::Answered(early) => return Ok(self.finish_connect(id, binding, early).await),
            // Destroyed or disconnected meanwhile: withdraw the request, so the peer is not left with a
            // session (or an answered request) nobody here holds.
            Next::Closed => {
                self.withdraw(binding).await;
                return Ok(closed_while_connecting());
            }
            Next::Wait => {}
        }
        let result = answer_rx.await.unwrap_or_else(|_| {
            ConnectResult::failed(ConnectErrorCode::SystemInternalError, Some("the manager stopped".into()))
        });
        Ok(self.finish_connect(id, binding, result).await)
    }

    /// `acceptConnect(id, token)`: accepts the collaboration request `token` (from [`Manager::incoming`]) as
    /// session `id`, which the app created for the requesting peer.
    pub async fn accept_connect(&self, id: SessionId, token: &str) -> Result<(), Error> {
        validate::token(token)?;
        let request = {
            let state = self.state();
            let s = state.sessions.get(&id).ok_or_else(|| Error::unknown_session(id))?;
            if !matches!(s.phase, Phase::Idle) {
                return Err(Error::invalid_arg("session_id", format_args!("session {id} is already in use")));
            }
            state.requests.get(token).cloned().ok_or_else(|| unknown_token(token))?
        };
        let key = self.inner.node.accept(request.link, token.to_owned()).await.map_err(|_| unknown_token(token))?;
        let binding = (request.link, key);
        let refused = {
            let mut state = self.state();
            state.requests.remove(token);
            match state.sessions.get_mut(&id) {
                Some(s) if matches!(s.phase, Phase::Idle) => {
                    s.phase = Phase::Connected { binding };
                    state.bound.insert(binding, id);
                    None
                }
                other => {
                    let error = match other {
                        None => Error::unknown_session(id),
                        Some(_) => Error::invalid_arg("session_id", format_args!("session {id} is already in use")),
                    };
                    state.held.remove(&binding);
                    Some(error)
                }
            }
        };
        if let Some(error) = refused {
            // Destroyed (or taken by another accept) while the accept was under way: the peer's session was
            // accepted, so end it rather than leave the peer connected to nobody.
            self.withdraw(binding).await;
            return Err(error);
        }
        self.inner.registry.dispatch(Event::Connect { session_id: id });
        flush_held(&self.inner, binding, id);
        Ok(())
    }

    /// `reject(token, reason)`: declines the collaboration request `token`; the initiator's `connect` resolves
    /// with `PEER_APP_REJECTED` and `reason`.
    pub async fn reject(&self, token: &str, reason: &str) -> Result<(), Error> {
        validate::reject(token, reason)?;
        let request = self.state().requests.remove(token).ok_or_else(|| unknown_token(token))?;
        self.inner
            .node
            .reject(request.link, token.to_owned(), ConnectErrorCode::PeerAppRejected, reason.to_owned())
            .await
            .map_err(|_| unknown_token(token))
    }

    /// `disconnect(id)`: ends the session; the peer gets `disconnect` with `PEER_APP_CLOSE_COLLABORATION`.
    /// A session that is not connected stays as it is.
    pub async fn disconnect(&self, id: SessionId) -> Result<(), Error> {
        let binding = {
            let mut state = self.state();
            let s = state.sessions.get_mut(&id).ok_or_else(|| Error::unknown_session(id))?;
            let binding = match std::mem::replace(&mut s.phase, Phase::Idle) {
                Phase::Connected { binding } => Some(binding),
                Phase::Connecting { binding, answer } => {
                    if let Some(answer) = answer {
                        let _ = answer.send(ConnectResult::failed(
                            ConnectErrorCode::SystemInternalError,
                            Some("disconnected while connecting".into()),
                        ));
                    }
                    binding
                }
                Phase::Idle => None,
            };
            if let Some(b) = binding {
                state.bound.remove(&b);
                state.held.remove(&b);
            }
            binding
        };
        if let Some((link, key)) = binding {
            #[cfg(feature = "media")]
            media::session_ended(&self.inner, id);
            let why =
                Error::disconnected(DisconnectReason::PeerAppCloseCollaboration, "this app disconnected the session");
            files::session_ended(&self.inner, id, &why);
            let _ = self.inner.node.disconnect(link, key, DisconnectReason::PeerAppCloseCollaboration).await;
        }
        Ok(())
    }

    /// `sendMessage(id, msg)`: resolves when the peer app has the message.
    pub async fn send_message(&self, id: SessionId, msg: &str) -> Result<(), Error> {
        validate::message(msg)?;
        self.send(id, ChannelKind::Message, Bytes::copy_from_slice(msg.as_bytes())).await
    }

    /// `sendData(id, data)`: resolves when the peer app has all of `data`. Large payloads are split into frames
    /// internally and interleave with other traffic; the call waits while the session's buffer is full.
    pub async fn send_data(&self, id: SessionId, data: Bytes) -> Result<(), Error> {
        validate::data_len(data.len())?;
        self.send(id, ChannelKind::Data, data).await
    }

    /// `on(type, id, callback)`: makes `callback` the listener for `kind` on session `id`, replacing any
    /// earlier one. Events of `kind` that arrived while nobody listened (docs/api-mapping.md, "Delivery") are
    /// handed to `callback` at once, in order, before `on` returns. `202` for a system event on a non-system
    /// app's session, `401` for an unknown id.
    pub fn on(
        &self,
        kind: EventKind,
        id: SessionId,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.check_event_kind(kind, id)?;
        self.inner.registry.on(kind, id, callback)
    }

    /// `off(type, id)`: removes the listener for `kind` on session `id`.
    pub fn off(&self, kind: EventKind, id: SessionId) -> Result<(), Error> {
        self.check_event_kind(kind, id)?;
        self.inner.registry.off(kind, id).map(|_| ())
    }

    /// Every event of session `id`, as a stream (system events only for system apps), starting with those that
    /// arrived while nobody listened. A payload counts against the session's receive buffer until the stream
    /// yields it, so an unread stream slows the peer's sends on this session. Dropping it unsubscribes.
    pub fn events(&self, id: SessionId) -> Result<EventStream, Error> {
        if !self.state().sessions.contains_key(&id) {
            return Err(Error::unknown_session(id));
        }
        self.inner.registry.events(id)
    }

    /// Receive credit taken by payloads of session `id` that its app has not taken yet (held for a listener or
    /// stream to come, queued in an [`EventStream`] not read yet, or on their way to it): their bytes, plus
    /// [`colink_proto::MESSAGE_CHARGE`] per payload with a version-3 peer. At most the receive buffer
    /// ([`ManagerBuilder::receive_buffer`]) per channel; 0 for a session that is idle (a connecting session
    /// counts what arrived before its `connect` resolved). `401` for an unknown id.
    pub fn unread_bytes(&self, id: SessionId) -> Result<u64, Error> {
        let binding = {
            let state = self.state();
            let s = state.sessions.get(&id).ok_or_else(|| Error::unknown_session(id))?;
            // A connecting session may already hold payloads: the peer sends once its side is open.
            match s.phase {
                Phase::Connected { binding } | Phase::Connecting { binding: Some(binding), .. } => Some(binding),
                _ => None,
            }
        };
        Ok(binding.map_or(0, |(link, key)| self.inner.node.unread_bytes(link, key)))
    }

    /// The collaboration requests addressed to the app `caller` (the reference's `onCollaborate`). While no
    /// stream is open for an app, requests for it are rejected with `PEER_ABILITY_NO_ONCOLLABORATE`.
    pub fn incoming(&self, caller: &Caller) -> Result<Incoming, Error> {
        validate::caller_identity(caller)?;
        Ok(self.inner.apps.subscribe(caller))
    }

    /// Closes every link (peers see `disconnect` with `PEER_APP_EXIT`) and stops advertising.
    pub async fn shutdown(&self) {
        self.inner.node.shutdown().await;
    }

    async fn send(&self, id: SessionId, kind: ChannelKind, payload: Bytes) -> Result<(), Error> {
        let (link, key) = self.binding(id)?;
        match self.inner.node.send(link, key, kind, payload).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = format!("send on session {id} failed: {e}");
                if !matches!(e, SendError::Rejected(_)) {
                    self.inner.registry.dispatch(Event::CollaborateEvent {
                        session_id: id,
                        info: CollaborateEventInfo::new(CollaborateEventType::SendFailure, Some(message.clone())),
                    });
                }
                Err(send_error(id, e, message))
            }
        }
    }

    /// The engine session of connected session `id`: `401` (not connected, or unknown) otherwise.
    fn binding(&self, id: SessionId) -> Result<(LinkId, SessionKey), Error> {
        match self.state().sessions.get(&id).map(|s| &s.phase) {
            Some(Phase::Connected { binding }) => Ok(*binding),
            Some(_) => Err(Error::not_connected(id)),
            None => Err(Error::unknown_session(id)),
        }
    }

    fn check_event_kind(&self, kind: EventKind, id: SessionId) -> Result<(), Error> {
        let state = self.state();
        let s = state.sessions.get(&id).ok_or_else(|| Error::unknown_session(id))?;
        validate::event_kind(kind, &s.caller)
    }

    async fn finish_connect(
        &self,
        id: SessionId,
        binding: (LinkId, SessionKey),
        result: ConnectResult,
    ) -> ConnectResult {
        let closed = {
            let mut state = self.state();
            let closed = !matches!(state.sessions.get(&id), Some(Session { phase: Phase::Connecting { .. }, .. }));
            if closed {
                state.bound.remove(&binding);
                state.held.remove(&binding);
            }
            closed
        };
        // Destroyed or disconnected while the answer was on its way: an accepted session must not stay open on
        // the peer's side.
        if closed {
            if !result.is_connected {
                return result;
            }
            self.withdraw(binding).await;
            return closed_while_connecting();
        }
        let mut state = self.state();
        let Some(s) = state.sessions.get_mut(&id) else { return result };
        if result.is_connected {
            s.phase = Phase::Connected { binding };
            state.bound.insert(binding, id);
            drop(state);
            self.inner.registry.dispatch(Event::Connect { session_id: id });
            flush_held(&self.inner, binding, id);
        } else {
            s.phase = Phase::Idle;
            state.bound.remove(&binding);
            state.held.remove(&binding);
        }
        result
    }

    /// Ends the engine session `binding` that no local session holds any more (destroyed or disconnected while
    /// its connect or accept was under way): the peer gets `disconnect` (or its request is withdrawn).
    async fn withdraw(&self, (link, key): (LinkId, SessionKey)) {
        debug!(?link, ?key, "ending a session closed while it was connecting");
        let _ = self.inner.node.disconnect(link, key, DisconnectReason::PeerAppCloseCollaboration).await;
    }

    fn set_idle(&self, id: SessionId) {
        if let Some(s) = self.state().sessions.get_mut(&id) {
            s.phase = Phase::Idle;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}

/// The API error of a send that the driver refused or could not deliver: a dead link says so
/// ([`ErrorKind::LinkLost`](crate::ErrorKind::LinkLost)), never "invalid argument".
fn send_error(id: SessionId, e: SendError, message: String) -> Error {
    use colink_proto::{SendError as Engine, SendFailure};
    match e {
        SendError::Failed(SendFailure::Disconnected(DisconnectReason::NetworkDisconnected)) | SendError::LinkClosed => {
            Error::link_lost(DisconnectReason::NetworkDisconnected, message)
        }
        SendError::Failed(SendFailure::Disconnected(reason)) => Error::disconnected(reason, message),
        SendError::Failed(_) => Error::link_lost(DisconnectReason::NetworkDisconnected, message),
        SendError::NotConnected | SendError::Rejected(Engine::NotConnected(_) | Engine::UnknownSession(_)) => {
            Error::not_connected(id).with_kind(crate::ErrorKind::NotConnected)
        }
        SendError::Rejected(Engine::Unsupported { .. }) => {
            Error::not_supported(format_args!("{message}: the peer's colink"))
        }
        SendError::Rejected(Engine::TooLarge { len, max }) => {
            Error::invalid_arg("data", format_args!("{len} bytes exceed the maximum of {max}"))
        }
        SendError::Rejected(_) => Error::invalid_arg("session_id", message),
    }
}

/// The answer to a `connect` whose session was destroyed or disconnected before it completed.
fn closed_while_connecting() -> ConnectResult {
    ConnectResult::failed(ConnectErrorCode::SystemInternalError, Some("the session was closed while connecting".into()))
}

fn unknown_token(token: &str) -> Error {
    let shown: String = token.chars().take(16).collect();
    Error::invalid_arg("token", format_args!("no pending collaboration request has token {shown:?}"))
}

/// Turns the driver's events into app events.
async fn pump(inner: std::sync::Weak<Inner>, mut events: NodeEvents) {
    while let Some(NodeEvent { link, event, credit, .. }) = events.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        handle(&inner, link, event, credit).await;
    }
}

/// Stores the name a trusted peer gave itself with it in the trust store (shown by `colink devices`).
fn remember_name(inner: &Inner, peer: &str, name: &str) {
    let (Some(security), Ok(id)) = (&inner.security, peer.parse::<DeviceId>()) else { return };
    let store = security.store();
    let mut store = lock(&store);
    if store.get(&id).is_some_and(|p| p.name.as_deref() == Some(name)) {
        return;
    }
    store.touch(&id, crate::trust::unix_now(), Some(name));
    if let Err(e) = store.save_if_stored() {
        tracing::warn!(error = %e, "could not save the trust store");
    }
}

async fn handle(
    inner: &Arc<Inner>,
    link: LinkId,
    event: engine::Event,
    credit: Option<Arc<crate::driver::ReadCredit>>,
) {
    match event {
        engine::Event::LinkUp { peer_device, peer_name: Some(name), .. } => remember_name(inner, &peer_device, &name),
        engine::Event::IncomingConnect { token, from, to, options, .. } => {
            let request = CollaborationRequest {
                peer: PeerInfo::from_engine(from),
                local: PeerInfo::from_engine(to),
                options,
                token: token.clone(),
            };
            let app = (
                request.local.bundle_name.clone(),
                request.local.module_name.clone(),
                request.local.ability_name.clone(),
            );
            lock(&inner.state).requests.insert(token.clone(), Request { link });
            if let Err(undelivered) = inner.apps.deliver(&app, Box::new(request)) {
                lock(&inner.state).requests.remove(&token);
                let (code, reason) = match undelivered {
                    incoming::Undelivered::NoApp(request) => {
                        warn!(bundle = %request.local.bundle_name, "no app listens for collaboration requests; rejecting");
                        let reason = format!("{} has no collaboration handler", request.local.bundle_name);
                        (ConnectErrorCode::PeerAbilityNoOncollaborate, reason)
                    }
                    incoming::Undelivered::Full(request) => {
                        warn!(bundle = %request.local.bundle_name, "too many unanswered collaboration requests; rejecting");
                        let reason = format!("{} has too many unanswered requests", request.local.bundle_name);
                        (ConnectErrorCode::SystemInternalError, reason)
                    }
                };
                let _ = inner.node.reject(link, token, code, reason).await;
            }
        }
        engine::Event::LinkLost { .. } => link_state(inner, link, true),
        engine::Event::LinkResumed => link_state(inner, link, false),
        engine::Event::Closed(_) => {
            lock(&inner.state).reconnecting.remove(&link);
        }
        engine::Event::IncomingCancelled { token, .. } => {
            lock(&inner.state).requests.remove(&token);
        }
        engine::Event::Connected { session } => answer(inner, (link, session), ConnectResult::connected()),
        engine::Event::ConnectFailed { session, code, reason } => {
            answer(inner, (link, session), ConnectResult::failed(code, reason));
        }
        engine::Event::Disconnected { session, reason } => {
            let id = {
                let mut state = lock(&inner.state);
                state.held.remove(&(link, session));
                let id = state.bound.remove(&(link, session));
                if let Some(s) = id.and_then(|id| state.sessions.get_mut(&id))
                    && let Phase::Connecting { answer: Some(tx), .. } = std::mem::replace(&mut s.phase, Phase::Idle)
                {
                    let _ = tx.send(ConnectResult::failed(
                        ConnectErrorCode::SystemInternalError,
                        Some("disconnected".into()),
                    ));
                }
                id
            };
            if let Some(id) = id {
                #[cfg(feature = "media")]
                media::session_ended(inner, id);
                let why = match reason {
                    DisconnectReason::NetworkDisconnected => Error::link_lost(reason, "the session's link"),
                    reason => Error::disconnected(reason, "the session"),
                };
                files::session_ended(inner, id, &why);
                inner.registry.dispatch(Event::Disconnect { session_id: id, reason });
            }
        }
        engine::Event::Received { session, kind, payload } => {
            let binding = (link, session);
            let received = Received { kind, payload, credit };
            // Straight to the app when the session is connected here and nothing older waits; otherwise held
            // behind what waits (order kept) until the session is connected.
            let id = {
                let mut state = lock(&inner.state);
                let connected = state.bound.get(&binding).copied().filter(|id| {
                    matches!(state.sessions.get(id), Some(Session { phase: Phase::Connected { .. }, .. }))
                });
                match connected {
                    Some(id) if !state.held.contains_key(&binding) => id,
                    _ => {
                        state.held.entry(binding).or_default().push(received);
                        return;
                    }
                }
            };
            deliver(inner, id, received);
        }
        _ => {}
    }
}

/// Link `link` was lost (`lost`) or resumed: records it and tells the apps of its connected sessions.
fn link_state(inner: &Arc<Inner>, link: LinkId, lost: bool) {
    let sessions: Vec<SessionId> = {
        let mut state = lock(&inner.state);
        let changed = if lost { state.reconnecting.insert(link) } else { state.reconnecting.remove(&link) };
        if !changed {
            return;
        }
        state
            .bound
            .iter()
            .filter(|((l, _), id)| {
                *l == link && matches!(state.sessions.get(id), Some(Session { phase: Phase::Connected { .. }, .. }))
            })
            .map(|(_, id)| *id)
            .collect()
    };
    for session_id in sessions {
        if lost {
            info!(session = %session_id, "link lost; session reconnecting");
            inner.registry.dispatch(Event::Reconnecting { session_id });
        } else {
            info!(session = %session_id, "link back; session reconnected");
            inner.registry.dispatch(Event::Reconnected { session_id });
        }
    }
}

/// Hands the payloads held for `binding` to session `id`, which is now connected, in order; payloads that
/// arrive meanwhile join the queue and are handed on by this loop, so order holds.
fn flush_held(inner: &Arc<Inner>, binding: (LinkId, SessionKey), id: SessionId) {
    loop {
        let batch = {
            let mut state = lock(&inner.state);
            match state.held.get_mut(&binding) {
                Some(held) if !held.is_empty() => std::mem::take(held),
                Some(_) => {
                    state.held.remove(&binding);
                    return;
                }
                None => return,
            }
        };
        for received in batch {
            deliver(inner, id, received);
        }
    }
}

/// Turns a received payload into the app's event and dispatches it with its credit (held by the registry
/// until a listener or stream takes it).
fn deliver(inner: &Arc<Inner>, id: SessionId, received: Received) {
    let Received { kind, payload, credit } = received;
    let event = match kind {
        ChannelKind::Message => match String::from_utf8(payload.to_vec()) {
            Ok(msg) => Event::ReceiveMessage { session_id: id, msg },
            Err(_) => {
                warn!(session = %id, "dropping a message that is not UTF-8");
                return;
            }
        },
        ChannelKind::Data => Event::ReceiveData { session_id: id, data: payload },
        ChannelKind::File | ChannelKind::FileControl => return files::on_message(inner, id, kind, &payload, credit),
        #[cfg(feature = "media")]
        ChannelKind::Image => return media::on_image(inner, id, &payload, credit),
        #[cfg(feature = "media")]
        ChannelKind::StreamMedia => return media::on_stream_message(inner, id, &payload),
        #[cfg(not(feature = "media"))]
        ChannelKind::Image => {
            // Tell the sender, so its `send_image` fails instead of waiting for a verdict that never comes.
            if !crate::image_verdict::ImageVerdict::is_verdict(&payload) {
                let refused =
                    crate::image_verdict::ImageVerdict::refused(&payload, "this peer was built without image support");
                reply_on_image_lane(inner, id, refused.encode());
            }
            return;
        }
        #[cfg(not(feature = "media"))]
        ChannelKind::StreamMedia => {
            debug!(session = %id, "dropping a stream message: built without `media`");
            return;
        }
    };
    inner.registry.dispatch_received(event, credit);
}

/// Sends `payload` (an image verdict) on session `id`'s IMAGE lane, in the background: it is queued in order
/// behind this side's own images and resolves when the peer holds it.
fn reply_on_image_lane(inner: &Arc<Inner>, id: SessionId, payload: Bytes) {
    let Some(binding) = connected_binding(inner, id) else { return };
    let node = inner.node.clone();
    tokio::spawn(async move {
        if let Err(e) = node.send(binding.0, binding.1, ChannelKind::Image, payload).await {
            debug!(session = %id, error = %e, "an image verdict could not be sent");
        }
    });
}

/// The engine session of session `id` while it is connected (for replies sent from the event loop).
fn connected_binding(inner: &Inner, id: SessionId) -> Option<(LinkId, SessionKey)> {
    match lock(&inner.state).sessions.get(&id).map(|s| &s.phase) {
        Some(Phase::Connected { binding }) => Some(*binding),
        _ => None,
    }
}

/// Delivers the answer to an outgoing connect, or keeps it until the connect has recorded its binding.
fn answer(inner: &Arc<Inner>, binding: (LinkId, SessionKey), result: ConnectResult) {
    let mut state = lock(&inner.state);
    let Some(id) = state.bound.get(&binding).copied() else {
        state.early.insert(binding, result);
        return;
    };
    if let Some(Session { phase: Phase::Connecting { answer, .. }, .. }) = state.sessions.get_mut(&id)
        && let Some(tx) = answer.take()
    {
        let _ = tx.send(result);
    }
}
