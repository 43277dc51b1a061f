//! Sessions on a link: connect, accept, reject, disconnect, and the control messages that carry them.

use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::{Connection, LinkState};
use crate::error::{ConnectError, ProtocolError, SessionError};
use crate::event::Event;
use crate::types::{ConnectErrorCode, ConnectOptions, DisconnectReason, MAX_STRING_LEN, PeerInfo, SessionKey};
use crate::wire::ControlMsg;

/// Where a session stands, as seen by [`Connection::session_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// Outgoing: waiting for the peer app's answer.
    Connecting,
    /// Incoming: waiting for the local app's answer (`accept` / `reject`).
    AwaitingAnswer,
    /// Open.
    Connected,
    /// Open, but the link is down and being resumed.
    Reconnecting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    AwaitingAnswer,
    Connected,
}

/// One session's bookkeeping.
#[derive(Debug)]
pub(super) struct Session {
    phase: Phase,
    /// The app endpoint on this device.
    local: PeerInfo,
    /// The app endpoint on the peer.
    remote: PeerInfo,
    /// Connect / answer deadline while not connected.
    deadline: Option<Instant>,
    /// The collaboration token of an incoming request.
    token: Option<String>,
    span: tracing::Span,
}

impl Session {
    pub(super) fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// The connect or answer deadline, while not connected.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The collaboration token of an incoming request not answered yet.
    pub(super) fn token(&self) -> Option<&String> {
        self.token.as_ref()
    }

    /// The session's tracing span.
    pub(super) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The event that reports this session's end to the local side.
    pub(super) fn end_event_for(&self, key: u32, reason: DisconnectReason) -> Event {
        let session = SessionKey(key);
        match (self.phase, &self.token) {
            (Phase::Connected, _) => Event::Disconnected { session, reason },
            (Phase::AwaitingAnswer, Some(t)) => Event::IncomingCancelled { session, token: t.clone() },
            _ => Event::ConnectFailed { session, code: ConnectErrorCode::SystemInternalError, reason: None },
        }
    }

    /// Whether this session links the same two app endpoints.
    fn same_endpoints(&self, local: &PeerInfo, remote: &PeerInfo) -> bool {
        app(&self.local) == app(local) && app(&self.remote) == app(remote) && self.remote.device_id == remote.device_id
    }
}

fn app(p: &PeerInfo) -> (&str, &str, &str) {
    (&p.bundle_name, &p.module_name, &p.ability_name)
}

impl Connection {
    /// Starts a session from local app `from` to app `to` on the peer. The peer app sees
    /// [`Event::IncomingConnect`]; its answer produces [`Event::Connected`] or [`Event::ConnectFailed`], as does
    /// the connect timeout. Allowed while the link is still handshaking or reconnecting (the request waits).
    pub fn connect(
        &mut self,
        now: Instant,
        from: PeerInfo,
        to: PeerInfo,
        options: ConnectOptions,
    ) -> Result<SessionKey, ConnectError> {
        if self.state == LinkState::Closed {
            return Err(ConnectError::LinkClosed);
        }
        check_peer(&from)?;
        check_peer(&to)?;
        for (k, v) in &options.parameters {
            if k.len() > MAX_STRING_LEN || v.len() > MAX_STRING_LEN {
                return Err(ConnectError::TooLong { field: "parameter" });
            }
        }
        if let Some((k, _)) = self.sessions.iter().find(|(_, s)| s.same_endpoints(&from, &to)) {
            return Err(ConnectError::SessionExists(SessionKey(*k)));
        }
        let key = self.numbers.allocate().ok_or(ConnectError::Exhausted)?;
        let span = tracing::debug_span!(parent: &self.span, "session", key, outgoing = true);
        span.in_scope(|| debug!(to = %to.bundle_name, "connecting"));
        self.send_control(&ControlMsg::Connect { session: key, from: from.clone(), to: to.clone(), options });
        self.sessions.insert(
            key,
            Session {
                phase: Phase::Connecting,
                local: from,
                remote: to,
                deadline: Some(now + self.config.connect_timeout),
                token: None,
                span,
            },
        );
        Ok(SessionKey(key))
    }

    /// Accepts the incoming request identified by `token` (single use): the session opens on both sides.
    pub fn accept(&mut self, now: Instant, token: &str) -> Result<SessionKey, SessionError> {
        let _ = now;
        let key = self.tokens.remove(token).ok_or(SessionError::UnknownToken)?;
        let s = self.sessions.get_mut(&key).ok_or(SessionError::UnknownToken)?;
        s.phase = Phase::Connected;
        s.deadline = None;
        s.token = None;
        s.span.in_scope(|| debug!("accepted"));
        self.send_control(&ControlMsg::Accept { session: key });
        self.open_lanes(key);
        self.events.push_back(Event::Connected { session: SessionKey(key) });
        Ok(SessionKey(key))
    }

    /// Rejects the incoming request identified by `token` (single use). `code` is normally
    /// [`ConnectErrorCode::PeerAppRejected`] (the app said no) or
    /// [`ConnectErrorCode::PeerAbilityNoOncollaborate`] (no such app); the initiator sees it with `reason`.
    pub fn reject(
        &mut self,
        now: Instant,
        token: &str,
        code: ConnectErrorCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        let _ = now;
        if reason.len() > MAX_STRING_LEN {
            return Err(SessionError::TooLong);
        }
        let key = self.tokens.remove(token).ok_or(SessionError::UnknownToken)?;
        if let Some(s) = self.sessions.remove(&key) {
            s.span.in_scope(|| debug!(?code, "rejected"));
        }
        self.send_control(&ControlMsg::Reject { session: key, code, reason: reason.to_owned() });
        Ok(())
    }

    /// Ends a session: the peer sees [`Event::Disconnected`] with `reason` (normally
    /// [`DisconnectReason::PeerAppCloseCollaboration`], or [`DisconnectReason::PeerAppExit`] when the app is
    /// going away). Pending sends fail; an outgoing connect is withdrawn.
    pub fn disconnect(
        &mut self,
        now: Instant,
        session: SessionKey,
        reason: DisconnectReason,
    ) -> Result<(), SessionError> {
        let _ = now;
        let key = session.0;
        if !self.sessions.contains_key(&key) {
            return Err(SessionError::UnknownSession(session));
        }
        self.send_control(&ControlMsg::Disconnect { session: key, reason });
        self.end_session(key, reason, false);
        Ok(())
    }

    /// The session's state, if it exists.
    pub fn session_state(&self, session: SessionKey) -> Option<SessionState> {
        let s = self.sessions.get(&session.0)?;
        Some(match s.phase {
            Phase::Connecting => SessionState::Connecting,
            Phase::AwaitingAnswer => SessionState::AwaitingAnswer,
            Phase::Connected if self.state == LinkState::Established => SessionState::Connected,
            Phase::Connected => SessionState::Reconnecting,
        })
    }

    /// The peer app endpoint of a session.
    pub fn session_peer(&self, session: SessionKey) -> Option<&PeerInfo> {
        self.sessions.get(&session.0).map(|s| &s.remote)
    }

    /// Sessions on this link.
    pub fn sessions(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.sessions.keys().map(|k| SessionKey(*k))
    }

    pub(super) fn on_control_message(&mut self, now: Instant, payload: &Bytes) -> Result<(), ProtocolError> {
        let msg = ControlMsg::decode(payload).map_err(|m| ProtocolError::Malformed { what: m.0 })?;
        match msg {
            ControlMsg::Connect { session, from, to, options } => {
                // The calling app must live on the device at the other end of this link.
                if self.peer_device().is_some_and(|peer| peer != from.device_id) || !self.is_peer(&from.device_id) {
                    return Err(ProtocolError::Impersonation { claimed: from.device_id });
                }
                if !self.numbers.accept_peer(session) {
                    return Err(ProtocolError::UnexpectedSessionMessage { what: "CONNECT", session });
                }
                if let Some((k, _)) = self.sessions.iter().find(|(_, s)| s.same_endpoints(&to, &from)) {
                    debug!(session, existing = k, "duplicate connect rejected");
                    self.send_control(&ControlMsg::Reject {
                        session,
                        code: ConnectErrorCode::ConnectedSessionExists,
                        reason: format!("session {k} between these endpoints exists"),
                    });
                    return Ok(());
                }
                let token = format!("{:016x}{:016x}", self.entropy.next_u64(), self.entropy.next_u64());
                let span = tracing::debug_span!(parent: &self.span, "session", key = session, outgoing = false);
                span.in_scope(|| debug!(from = %from.bundle_name, "incoming connect"));
                self.tokens.insert(token.clone(), session);
                self.sessions.insert(
                    session,
                    Session {
                        phase: Phase::AwaitingAnswer,
                        local: to.clone(),
                        remote: from.clone(),
                        deadline: Some(now + self.config.connect_timeout),
                        token: Some(token.clone()),
                        span,
                    },
                );
                self.events.push_back(Event::IncomingConnect {
                    session: SessionKey(session),
                    token,
                    from,
                    to,
                    options,
                });
            }
            ControlMsg::Accept { session } => {
                self.check_known(session, "ACCEPT", true)?;
                match self.sessions.get_mut(&session) {
                    Some(s) if s.phase == Phase::Connecting => {
                        s.phase = Phase::Connected;
                        s.deadline = None;
                        s.span.in_scope(|| debug!("connected"));
                        self.open_lanes(session);
                        self.events.push_back(Event::Connected { session: SessionKey(session) });
                    }
                    Some(_) => return Err(ProtocolError::UnexpectedSessionMessage { what: "ACCEPT", session }),
                    None => {} // we gave up (timeout) or disconnected meanwhile
                }
            }
            ControlMsg::Reject { session, code, reason } => {
                self.check_known(session, "REJECT", true)?;
                match self.sessions.get(&session) {
                    Some(s) if s.phase == Phase::Connecting => {
                        let reason = (!reason.is_empty()).then_some(reason);
                        self.connect_failed(session, code, reason);
                    }
                    Some(_) => return Err(ProtocolError::UnexpectedSessionMessage { what: "REJECT", session }),
                    None => {}
                }
            }
            ControlMsg::Disconnect { session, reason } => {
                let ours = self.numbers.is_local(session);
                self.check_known(session, "DISCONNECT", ours)?;
                self.end_session(session, reason, true);
            }
        }
        Ok(())
    }

    fn check_known(&self, session: u32, what: &'static str, ours: bool) -> Result<(), ProtocolError> {
        if self.numbers.is_local(session) == ours && self.numbers.is_known(session) {
            Ok(())
        } else {
            Err(ProtocolError::UnexpectedSessionMessage { what, session })
        }
    }

    /// Connect and answer deadlines.
    pub(super) fn session_timeouts(&mut self, now: Instant) {
        let due: Vec<u32> =
            self.sessions.iter().filter(|(_, s)| s.deadline.is_some_and(|d| d <= now)).map(|(k, _)| *k).collect();
        for key in due {
            let Some(s) = self.sessions.get(&key) else { continue };
            match s.phase {
                Phase::Connecting => {
                    // Withdraw the request so the peer app's pending collaboration disappears.
                    self.send_control(&ControlMsg::Disconnect {
                        session: key,
                        reason: DisconnectReason::PeerAppCloseCollaboration,
                    });
                    self.connect_failed(
                        key,
                        ConnectErrorCode::SystemInternalError,
                        Some("the peer did not answer in time".to_owned()),
                    );
                }
                Phase::AwaitingAnswer => {
                    self.send_control(&ControlMsg::Reject {
                        session: key,
                        code: ConnectErrorCode::SystemInternalError,
                        reason: "the peer app did not answer in time".to_owned(),
                    });
                    self.end_session(key, DisconnectReason::PeerAppCloseCollaboration, true);
                }
                Phase::Connected => {}
            }
        }
    }
}

fn check_peer(p: &PeerInfo) -> Result<(), ConnectError> {
    for (field, s) in [
        ("device_id", &p.device_id),
        ("bundle_name", &p.bundle_name),
        ("module_name", &p.module_name),
        ("ability_name", &p.ability_name),
        ("service_name", &p.service_name),
    ] {
        if s.len() > MAX_STRING_LEN {
            return Err(ConnectError::TooLong { field });
        }
    }
    Ok(())
}
