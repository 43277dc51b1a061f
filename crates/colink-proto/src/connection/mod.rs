//! The link state machine: one [`Connection`] per device pair, driven by `now`, received bytes and timers.
//!
//! `Connection` coordinates parts that each own one decision and its state, behind a small interface with
//! unit tests of its own: the handshake ([`Handshake`](handshake::Handshake)), resume
//! ([`Resume`](crate::resume::Resume)), session numbering ([`SessionNumbers`](crate::numbering::SessionNumbers)),
//! the send scheduler ([`Scheduler`](crate::scheduler::Scheduler)), the receive positions
//! ([`Receiver`](crate::receiver::Receiver)), the acknowledgement timer ([`AckTimer`](crate::ack::AckTimer)), the
//! retransmission timer ([`RetransmitTimer`](crate::retransmit::RetransmitTimer)) and keep-alive
//! ([`KeepAlive`](crate::keepalive::KeepAlive)). The child modules hold the coordinator's halves: what arrives
//! (`receive`), what goes out (`transmit`), the handshake messages (`handshake`) and the sessions (`session`).

mod handshake;
mod receive;
mod secured;
mod session;
mod transmit;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink_frame::{Fragmenter, FrameKind, LinkMode, Mtu, StreamCodec, decode_packet};
use tracing::{debug, trace, warn};

use super::ack::AckTimer;
use super::auth::{Authenticator, NoAuth};
use super::config::{Config, Entropy, Transport};
use super::error::{CloseCode, LinkError, SendError, SendFailure};
use super::event::Event;
use super::keepalive::{KeepAlive, Liveness};
use super::numbering::SessionNumbers;
use super::receiver::Receiver;
use super::resume::Resume;
use super::retransmit::RetransmitTimer;
use super::scheduler::Scheduler;
use super::types::{ChannelKind, ConnectErrorCode, DisconnectReason, LaneLayout, Role, SendId, SessionKey};
use super::wire::{self, CH_HANDSHAKE, Hello};
use handshake::Handshake;
pub use secured::AttachError;
use session::Session;
pub use session::SessionState;

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Created; no transport attached yet.
    Idle,
    /// A transport is attached and the handshake runs.
    Handshaking,
    /// Sessions can flow.
    Established,
    /// The transport was lost; waiting for a new one until the grace period ends.
    Reconnecting,
    /// Ended for good.
    Closed,
}

/// Counters for tests, benchmarks and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames handed out by `poll_transmit`.
    pub frames_sent: u64,
    /// Of which payload-lane fragments (control, message, data, image, stream media).
    pub fragments_sent: u64,
    /// Of which fragments sent again (after a gap report, a retransmission timeout or a resume).
    pub fragments_resent: u64,
    /// Of which ACK frames.
    pub acks_sent: u64,
    /// Of which KEEP_ALIVE frames.
    pub keep_alives_sent: u64,
    /// Bytes handed out by `poll_transmit`.
    pub bytes_sent: u64,
    /// Received SDUs dropped because they did not decode (packet mode: corruption).
    pub bad_frames: u64,
    /// Received fragments dropped as duplicates or beyond a gap.
    pub discarded_fragments: u64,
    /// Most unacknowledged bytes on the wire at any time.
    pub max_inflight_bytes: u64,
    /// Retransmission timeouts that fired.
    pub retransmit_timeouts: u64,
    /// Bytes on the wire of the fragments sent again.
    pub bytes_resent: u64,
    /// Fragments this side declared lost (a gap report, the peer holding later ones, a retransmission
    /// timeout).
    pub fragments_lost: u64,
    /// Received fragments held beyond a gap until it filled (version 3).
    pub held_fragments: u64,
}

/// The sans-IO state machine of one link between two devices and every session on it.
///
/// Feed it [`handle_input`](Self::handle_input) (received SDUs in packet mode, received byte chunks in stream
/// mode) and [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout); send what
/// [`poll_transmit`](Self::poll_transmit) returns, one frame at a time as the link accepts it; act on
/// [`poll_event`](Self::poll_event). Spurious calls are harmless. There is no clock and no RNG inside: time
/// comes in as `now`, tokens from the [`Entropy`] passed in.
pub struct Connection {
    config: Config,
    role: Role,
    entropy: Box<dyn Entropy>,
    auth: Box<dyn Authenticator>,
    span: tracing::Span,
    state: LinkState,
    /// The peer's name from its last HELLO (extension 2).
    peer_name: Option<String>,
    transport: Option<Transport>,
    frame_mtu: Mtu,
    /// The largest frame the transport and the peer allow (bulk frames may grow to it; see `Config::max_bulk_frame`).
    link_frame_mtu: Mtu,
    stream_buf: BytesMut,
    codec: StreamCodec,
    tx_buf: BytesMut,
    version: u8,
    /// The version the link's sessions were opened under (their channel numbering, [`LaneLayout`]); a resume
    /// must agree on it.
    sessions_version: u8,
    /// The handshake on the current transport, while it runs.
    hs: Option<Handshake>,
    /// Our last hello, to answer a peer that missed it.
    hs_hello_cache: Option<Hello>,
    /// Encoded handshake-channel frames (HELLO, AUTH, CLOSE) waiting to go.
    hs_out: VecDeque<Bytes>,
    hs_seq: u32,
    grace_deadline: Option<Instant>,
    /// Receive credit each message takes beyond its payload bytes, both ways: [`MESSAGE_CHARGE`](crate::MESSAGE_CHARGE) once version 3
    /// is agreed, else 0.
    message_charge: u64,
    resume: Resume,
    numbers: SessionNumbers,
    sessions: BTreeMap<u32, Session>,
    tokens: BTreeMap<String, u32>,
    scheduler: Scheduler,
    receiver: Receiver,
    acks: AckTimer,
    retransmit: RetransmitTimer,
    keep_alive: KeepAlive,
    events: VecDeque<Event>,
    next_send_id: u64,
    stats: Stats,
    /// On authenticated transports: the proven peer and the keys (see `secured.rs`).
    secure: Option<secured::Secured>,
    /// When to repeat the window updates the receiver sent (docs/sessions.md §4.5).
    credit_repeat_at: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("device", &self.config.device_id)
            .field("role", &self.role)
            .field("state", &self.state)
            .field("sessions", &self.sessions.len())
            .field("inflight_bytes", &self.scheduler.inflight())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A link state machine for `role`, created at `now` with no transport yet, authenticating with
    /// [`NoAuth`].
    pub fn new(now: Instant, config: Config, role: Role, entropy: Box<dyn Entropy>) -> Self {
        Self::with_authenticator(now, config, role, entropy, Box::new(NoAuth))
    }

    /// Like [`new`](Self::new), running `auth` inside every handshake.
    pub fn with_authenticator(
        now: Instant,
        config: Config,
        role: Role,
        mut entropy: Box<dyn Entropy>,
        auth: Box<dyn Authenticator>,
    ) -> Self {
        let span = tracing::debug_span!("link", device = %config.device_id, ?role);
        let resume = Resume::new(entropy.next_u64() | 1);
        let mut this = Self {
            role,
            entropy,
            auth,
            span,
            state: LinkState::Idle,
            peer_name: None,
            transport: None,
            frame_mtu: Mtu::MIN,
            link_frame_mtu: Mtu::MIN,
            stream_buf: BytesMut::new(),
            codec: StreamCodec::default(),
            tx_buf: BytesMut::new(),
            version: 0,
            sessions_version: 0,
            hs: None,
            hs_hello_cache: None,
            hs_out: VecDeque::new(),
            hs_seq: 0,
            grace_deadline: None,
            message_charge: 0,
            resume,
            numbers: SessionNumbers::new(role),
            sessions: BTreeMap::new(),
            tokens: BTreeMap::new(),
            scheduler: Scheduler::new(config.channel_buffer),
            receiver: Receiver::new(config.limits.clone(), config.receive_buffer),
            acks: AckTimer::new(config.ack_threshold, config.ack_delay, config.ack_max_delay),
            retransmit: RetransmitTimer::new(now, config.retransmit_timeout),
            keep_alive: KeepAlive::new(now, config.keep_alive_interval, config.idle_timeout),
            events: VecDeque::new(),
            next_send_id: 0,
            stats: Stats::default(),
            secure: None,
            credit_repeat_at: None,
            config,
        };
        this.reset_link_state();
        this
    }

    /// Whether a transport is attached. The engine lets go of one on its own when it cannot use it any more (a
    /// corrupted byte stream, the idle timeout, a handshake that timed out): the driver must then close that
    /// transport, so the peer notices and the link can be re-established.
    pub fn has_transport(&self) -> bool {
        self.transport.is_some()
    }

    /// Where the link stands.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// This device's identity, as its HELLO announces it.
    pub fn device_id(&self) -> &str {
        &self.config.device_id
    }

    /// Which side dialled.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's device identity, once a handshake completed.
    pub fn peer_device(&self) -> Option<&str> {
        self.resume.peer_device()
    }

    /// The name the peer gave itself in its last HELLO (a peer string: escape it before printing), if any.
    pub fn peer_name(&self) -> Option<&str> {
        self.peer_name.as_deref()
    }

    /// The agreed protocol version (0 before the first handshake).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether sessions on this link have lane `kind` (the File lane needs version 4); `false` before the
    /// first handshake.
    pub fn has_lane(&self, kind: ChannelKind) -> bool {
        self.sessions_version != 0 && self.layout().has(kind)
    }

    /// The wire channel that carries lane `kind` of session `session` on this link (docs/sessions.md §1.1:
    /// 4·s + lane up to version 3, 8·s + lane from version 4); `None` before the first handshake or for a
    /// lane the link's version lacks.
    pub fn wire_channel(&self, session: SessionKey, kind: ChannelKind) -> Option<u32> {
        self.has_lane(kind).then(|| self.layout().channel(session.0, kind))
    }

    /// How this link's channel numbers split into session and lane.
    fn layout(&self) -> LaneLayout {
        LaneLayout::of_version(self.sessions_version)
    }

    /// The agreed keep-alive interval and idle timeout.
    pub fn keep_alive(&self) -> (Duration, Duration) {
        self.keep_alive.params()
    }

    /// The frame size in use: the smallest of the transport MTU, the peer's announced maximum and
    /// [`Config::max_frame`].
    pub fn frame_mtu(&self) -> Mtu {
        self.frame_mtu
    }

    /// `mtu` capped at [`Config::max_frame`] (never below the smallest MTU).
    fn sending_mtu(&self, mtu: Mtu) -> Mtu {
        Mtu::new(mtu.get().min(usize::from(self.config.max_frame))).unwrap_or(Mtu::MIN)
    }

    /// Unacknowledged bytes on the wire.
    pub fn inflight_bytes(&self) -> u64 {
        self.scheduler.inflight()
    }

    /// Payload bytes held by the receiver's reassembly buffers (partial messages, and fragments held beyond a
    /// gap).
    pub fn reassembly_bytes(&self) -> u64 {
        self.receiver.buffered_bytes() + self.receiver.held_bytes()
    }

    /// Payload bytes and fragments the receiver holds beyond gaps (version 3), waiting for the gap to fill;
    /// at most [`Config::reorder_buffer`] bytes and 1024 fragments.
    pub fn held_beyond_gaps(&self) -> (u64, usize) {
        (self.receiver.held_bytes(), self.receiver.held_fragments())
    }

    /// When the grace period of a lost link ends, while one runs (the link is reconnecting): re-dials must
    /// start before it.
    pub fn grace_deadline(&self) -> Option<Instant> {
        self.grace_deadline
    }

    /// When a reconnecting link closes unless a transport is attached by then (the grace period plus
    /// [`Config::resume_allowance`]); a resume handshake under way at that time gets one more
    /// [`Config::handshake_retry`] to finish.
    pub fn resume_deadline(&self) -> Option<Instant> {
        self.grace_deadline.map(|d| d + self.config.resume_allowance)
    }

    /// When the reconnecting link closes as things stand: the resume deadline, or a little later while a
    /// resume handshake is under way.
    fn close_deadline(&self) -> Option<Instant> {
        let extra = if self.hs.is_some() { self.config.handshake_retry } else { Duration::ZERO };
        self.resume_deadline().map(|d| d + extra)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Attaches a fresh transport (the first one, or a new one after [`link_lost`](Self::link_lost)) and
    /// starts the handshake; after a loss the handshake asks the peer to resume. Attaching while a transport is
    /// attached first treats the old one as lost.
    pub fn attach(&mut self, now: Instant, transport: Transport) {
        let span = self.span.clone();
        let _e = span.enter();
        match self.state {
            LinkState::Closed => return,
            LinkState::Handshaking | LinkState::Established => self.link_lost(now),
            LinkState::Idle | LinkState::Reconnecting => {}
        }
        if self.state == LinkState::Closed {
            return;
        }
        debug!(mode = ?transport.mode, mtu = transport.mtu.get(), "transport attached");
        self.transport = Some(transport);
        self.frame_mtu = self.sending_mtu(transport.mtu);
        self.link_frame_mtu = transport.mtu;
        self.stream_buf.clear();
        self.hs_out.clear();
        self.codec = StreamCodec::default();
        self.state = LinkState::Handshaking;
        let ext = match self.auth.start(self.role) {
            Ok(ext) => ext,
            Err(e) => return self.close_with(now, CloseCode::AuthFailed, LinkError::Auth(e)),
        };
        let resume_state = if self.resume.has_peer() { self.receiver.resume_state() } else { Vec::new() };
        let hello = Hello {
            flags: 0,
            min_version: *self.config.versions.start(),
            max_version: *self.config.versions.end(),
            device_id: self.config.device_id.clone(),
            max_frame: transport.mtu.get() as u32,
            keep_alive_ms: millis(self.config.keep_alive_interval),
            idle_timeout_ms: millis(self.config.idle_timeout),
            link_token: self.resume.local_token(),
            resume_token: self.resume.resume_token(),
            resume_state,
            extensions: ext
                .map(|data| wire::Extension { kind: 1, data })
                .into_iter()
                .chain(device_name_extension(&self.config.device_name))
                .chain(std::iter::once(receive_window_extension(self.receiver.window())))
                .collect(),
        };
        self.queue_handshake(hello.encode());
        self.hs = Some(Handshake::new(now, hello, self.config.handshake_retry, self.config.handshake_timeout));
    }

    /// The transport is gone (the driver saw it close, or it failed). Sessions go to reconnecting until a new
    /// transport resumes the link or the grace period ends. A link that never completed a handshake closes.
    pub fn link_lost(&mut self, now: Instant) {
        let span = self.span.clone();
        let _e = span.enter();
        if matches!(self.state, LinkState::Closed | LinkState::Reconnecting | LinkState::Idle) {
            return;
        }
        self.transport = None;
        self.hs = None;
        self.hs_out.clear();
        self.stream_buf.clear();
        if !self.resume.has_peer() {
            debug!("transport lost before the first handshake completed");
            return self.close_link(now, LinkError::GraceExpired);
        }
        let was_established = self.state == LinkState::Established;
        self.state = LinkState::Reconnecting;
        self.grace_deadline.get_or_insert(now + self.config.grace_period);
        self.scheduler.forget_inflight();
        self.receiver.transport_lost();
        self.acks.reset();
        if was_established {
            debug!("link lost; sessions reconnecting");
            self.events.push_back(Event::LinkLost { redial: self.role == Role::Initiator });
        }
    }

    /// Closes the link on purpose (the process is exiting): the peer's sessions end with `PEER_APP_EXIT`,
    /// local pending sends fail.
    pub fn close(&mut self, now: Instant) {
        let span = self.span.clone();
        let _e = span.enter();
        if self.state != LinkState::Closed {
            self.close_with(now, CloseCode::Normal, LinkError::LocalClose);
        }
    }

    /// Handles one received SDU (packet mode) or chunk of bytes (stream mode).
    pub fn handle_input(&mut self, now: Instant, data: Bytes) {
        let span = self.span.clone();
        let _e = span.enter();
        let Some(transport) = self.transport else { return };
        if self.state == LinkState::Closed {
            return;
        }
        match transport.mode {
            LinkMode::Stream => {
                self.stream_buf.extend_from_slice(&data);
                loop {
                    match self.codec.decode(&mut self.stream_buf) {
                        Ok(Some(frame)) => {
                            self.keep_alive.on_received(now);
                            self.on_frame(now, frame);
                            if self.transport.is_none() || self.state == LinkState::Closed {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // The byte stream can no longer be delimited: the transport is unusable.
                            warn!(error = %e, "stream corrupted; dropping the transport");
                            self.stats.bad_frames += 1;
                            self.link_lost(now);
                            break;
                        }
                    }
                }
            }
            _ => match decode_packet(data) {
                Ok(frame) => {
                    self.keep_alive.on_received(now);
                    self.on_frame(now, frame);
                }
                Err(e) => {
                    // One bad SDU: drop it; retransmission recovers the fragments it carried.
                    debug!(error = %e, "dropping undecodable SDU");
                    self.stats.bad_frames += 1;
                }
            },
        }
    }

    /// The next frame to send (packet mode: one SDU; stream mode: one length-prefixed frame), highest
    /// priority first. Call whenever the link can take a frame, until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let span = self.span.clone();
        let _e = span.enter();
        let out = self.next_transmit(now)?;
        self.keep_alive.on_sent(now);
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += out.len() as u64;
        Some(out)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        if let Some(d) = self.close_deadline() {
            at(d);
        }
        if let Some(hs) = &self.hs {
            at(hs.poll_timeout());
        }
        if self.state == LinkState::Established {
            if let Some(d) = self.acks.poll_timeout() {
                at(d);
            }
            at(self.keep_alive.poll_timeout());
            if let Some(d) = self.retransmit_deadline() {
                at(d);
            }
            if let Some(d) = self.scheduler.suspects_deadline() {
                at(d);
            }
            if let Some(d) = self.credit_repeat_at {
                at(d);
            }
        }
        if self.state != LinkState::Closed {
            for s in self.sessions.values() {
                if let Some(d) = s.deadline() {
                    at(d);
                }
            }
            if let Some(d) = self.receiver.poll_timeout() {
                at(d);
            }
        }
        t
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let span = self.span.clone();
        let _e = span.enter();
        if self.state == LinkState::Closed {
            return;
        }
        if self.close_deadline().is_some_and(|d| d <= now) && self.state != LinkState::Established {
            debug!("grace period over");
            return self.close_link(now, LinkError::GraceExpired);
        }
        if let Some(hs) = &mut self.hs {
            match hs.handle_timeout(now, self.config.handshake_retry) {
                handshake::Timer::Expired => {
                    debug!("handshake timed out");
                    return self.link_lost(now);
                }
                handshake::Timer::Resend(hello) => {
                    self.hs_out.clear();
                    self.queue_handshake(hello);
                }
                handshake::Timer::Waiting => {}
            }
        }
        if self.state == LinkState::Established {
            if self.keep_alive.handle_timeout(now) == Liveness::Idle {
                debug!("idle timeout");
                return self.link_lost(now);
            }
            self.acks.handle_timeout(now);
            if self.retransmit_deadline().is_some_and(|d| d <= now) {
                debug!(inflight = self.scheduler.inflight(), "retransmission timeout");
                self.stats.retransmit_timeouts += 1;
                let lost = self.scheduler.expire(now, self.retransmit_timeout());
                debug!(lost, cap = ?self.scheduler.loss_cap(), "fragments lost by timeout");
                self.stats.fragments_lost += lost;
            }
            if self.scheduler.suspects_deadline().is_some_and(|d| d <= now) {
                let lost = self.scheduler.poll_suspects(now);
                if lost > 0 {
                    debug!(lost, cap = ?self.scheduler.loss_cap(), "fragments presumed lost: later ones were acknowledged");
                }
                self.stats.fragments_lost += lost;
            }
            if self.credit_repeat_at.is_some_and(|d| d <= now) {
                for ch in self.receiver.credit_repeats() {
                    self.acks.on_credit(ch);
                }
                self.credit_repeat_at = self.receiver.repeats_pending().then(|| now + self.config.retransmit_timeout);
            }
        }
        self.session_timeouts(now);
        for s in self.receiver.handle_timeout(now) {
            debug!(channel = s.channel, seq = s.seq, "partial message stalled; dropped");
        }
    }

    /// Queues `payload` on a connected session's channel. The engine keeps a reference (no copy); the peer's
    /// acknowledgement of the whole payload produces [`Event::SendCompleted`], a session that ends first
    /// [`Event::SendFailed`]. While the channel holds more than [`Config::channel_buffer`] bytes the answer is
    /// [`SendError::WouldBlock`] (then wait for [`Event::Writable`]).
    pub fn send(&mut self, session: SessionKey, kind: ChannelKind, payload: Bytes) -> Result<SendId, SendError> {
        let s = self.sessions.get(&session.0).ok_or(SendError::UnknownSession(session))?;
        if !s.is_connected() {
            return Err(SendError::NotConnected(session));
        }
        let max = u64::from(u32::MAX).min(u64::from(self.config.limits.max_message_len(kind.frame_kind())));
        if payload.len() as u64 > max {
            return Err(SendError::TooLarge { len: payload.len() as u64, max });
        }
        if !self.layout().has(kind) {
            return Err(SendError::Unsupported { kind, version: self.version });
        }
        let channel = self.layout().channel(session.0, kind);
        let id = SendId(self.next_send_id);
        self.scheduler.send(session, channel, id, payload)?;
        self.next_send_id += 1;
        let _e = s.span().enter();
        trace!(?kind, id = id.0, "send queued");
        Ok(id)
    }

    /// The app has read payloads of what [`Event::Received`] handed over on this channel (a listener ran, a
    /// stream yielded it), worth `len` units of credit: their payload bytes plus
    /// [`message_charge`](Self::message_charge) each. The room frees in the receive credit, and the peer hears of it when it grew
    /// by a quarter of [`Config::receive_buffer`] or the app read everything (docs/sessions.md §4.5). Until then
    /// those bytes count against the channel's receive buffer. Unknown channels are ignored.
    pub fn consumed(&mut self, now: Instant, session: SessionKey, kind: ChannelKind, len: u64) {
        if !self.layout().has(kind) {
            return;
        }
        let channel = self.layout().channel(session.0, kind);
        if self.receiver.consumed(channel, len) && self.version >= 2 {
            self.acks.on_credit(channel);
            // ACKs are never acknowledged: repeat the update a few times unless the sender starts sending.
            self.credit_repeat_at.get_or_insert(now + self.config.retransmit_timeout);
        }
    }

    /// What each received payload counts against its channel's receive credit beyond its length: the driver
    /// reports `len + message_charge()` to [`consumed`](Self::consumed) when the app read a payload of `len`
    /// bytes ([`MESSAGE_CHARGE`](crate::MESSAGE_CHARGE) in version 3, 0 before).
    pub fn message_charge(&self) -> u64 {
        self.message_charge
    }

    /// Payload bytes handed over with [`Event::Received`] on this channel that the app has not read yet
    /// (see [`consumed`](Self::consumed)); `None` for an unknown channel.
    pub fn unread_bytes(&self, session: SessionKey, kind: ChannelKind) -> Option<u64> {
        self.layout().has(kind).then(|| self.layout().channel(session.0, kind)).and_then(|ch| self.receiver.unread(ch))
    }

    /// Bytes `send` would accept on this channel now without `WouldBlock` (0 when unknown or not connected;
    /// an empty channel accepts any size).
    pub fn send_capacity(&self, session: SessionKey, kind: ChannelKind) -> u64 {
        if !self.layout().has(kind) {
            return 0;
        }
        self.scheduler.capacity(self.layout().channel(session.0, kind))
    }

    // ----- internals -----

    /// Fresh per-link state: the control lane, numbering, reassembly.
    fn reset_link_state(&mut self) {
        self.scheduler.reset();
        self.receiver.reset();
        self.numbers.reset();
        self.acks.forget_all();
    }

    fn mode(&self) -> LinkMode {
        self.transport.map_or(LinkMode::Packet, |t| t.mode)
    }

    /// Frames a small handshake-channel message and queues its frames ahead of everything else.
    fn queue_handshake(&mut self, payload: Bytes) {
        let Some(payload) = self.seal_link_message(payload) else { return };
        let seq = self.hs_seq;
        self.hs_seq = self.hs_seq.wrapping_add(1) & 0x3FFF;
        let mode = self.mode();
        let Ok(mut f) = Fragmenter::new(FrameKind::Control, CH_HANDSHAKE, seq, payload, mode, self.frame_mtu) else {
            return;
        };
        let mut out = BytesMut::new();
        while f.next_frame(&mut out).is_some() {
            self.hs_out.push_back(out.split().freeze());
        }
    }

    /// Sends a CLOSE (best effort) and ends the link.
    fn close_with(&mut self, now: Instant, code: CloseCode, error: LinkError) {
        if self.transport.is_some() {
            self.hs_out.clear();
            self.queue_handshake(wire::HandshakeMsg::encode_close(code as u8, &error.to_string()));
        }
        self.close_link(now, error);
    }

    /// Ends the link for good: every session ends with `NETWORK_DISCONNECTED` (or `PEER_APP_EXIT` when the peer
    /// closed in an orderly way), every pending send fails.
    fn close_link(&mut self, now: Instant, error: LinkError) {
        let _ = now;
        debug!(%error, "link closed");
        let reason = match &error {
            LinkError::PeerClosed { code: CloseCode::Normal, .. } => DisconnectReason::PeerAppExit,
            _ => DisconnectReason::NetworkDisconnected,
        };
        let notify = !matches!(error, LinkError::LocalClose);
        self.end_all_sessions(reason, notify);
        self.state = LinkState::Closed;
        self.hs = None;
        self.grace_deadline = None;
        self.events.push_back(Event::Closed(error));
    }

    /// Ends every session (link closed, grace expired, or a fresh handshake replaced a lost link).
    fn end_all_sessions(&mut self, reason: DisconnectReason, notify: bool) {
        let keys: Vec<u32> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end_session(k, reason, notify);
        }
        // Sends on the control lane are internal: no events.
        self.scheduler.fail_control();
    }

    /// Removes a session, its lanes and partial messages; fails its pending sends; reports the end.
    fn end_session(&mut self, key: u32, reason: DisconnectReason, notify: bool) {
        let Some(s) = self.sessions.remove(&key) else { return };
        let session = SessionKey(key);
        let _e = s.span().enter();
        debug!(?reason, "session ended");
        if let Some(t) = s.token() {
            self.tokens.remove(t);
        }
        if notify {
            self.events.push_back(s.end_event_for(key, reason));
        }
        let layout = self.layout();
        for &kind in layout.kinds() {
            let ch = layout.channel(key, kind);
            if let Some(ids) = self.scheduler.close(ch) {
                for id in ids {
                    self.events.push_back(Event::SendFailed { session, id, error: SendFailure::Disconnected(reason) });
                }
            }
            self.receiver.close(ch);
            self.acks.forget(ch);
        }
    }

    /// Opens a session's lanes both ways.
    fn open_lanes(&mut self, key: u32) {
        let layout = self.layout();
        for &kind in layout.kinds() {
            let ch = layout.channel(key, kind);
            self.scheduler.open(ch, kind.frame_kind());
            self.receiver.open(ch, kind.frame_kind());
        }
    }

    /// Queues an internal control message on the reliable control lane.
    fn send_control(&mut self, msg: &wire::ControlMsg) {
        self.scheduler.send_control(msg.encode());
    }

    fn connect_failed(&mut self, key: u32, code: ConnectErrorCode, reason: Option<String>) {
        if let Some(s) = self.sessions.remove(&key) {
            let _e = s.span().enter();
            debug!(?code, "connect failed");
            self.events.push_back(Event::ConnectFailed { session: SessionKey(key), code, reason });
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// HELLO extension 2: this device's name, cut to [`MAX_DEVICE_NAME`](crate::config::MAX_DEVICE_NAME) bytes on a
/// character boundary; none when the name is empty.
fn device_name_extension(name: &str) -> Option<wire::Extension> {
    let mut end = name.len().min(crate::config::MAX_DEVICE_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    (end > 0).then(|| wire::Extension { kind: 2, data: Bytes::copy_from_slice(&name.as_bytes()[..end]) })
}

/// HELLO extension 3: the receive window per session channel (a varint; docs/sessions.md §4.5).
fn receive_window_extension(window: u64) -> wire::Extension {
    let mut b = BytesMut::with_capacity(5);
    colink_frame::varint::put(&mut b, u32::try_from(window).unwrap_or(u32::MAX));
    wire::Extension { kind: wire::EXT_RECEIVE_WINDOW, data: b.freeze() }
}
