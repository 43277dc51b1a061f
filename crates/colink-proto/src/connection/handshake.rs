//! The link handshake: HELLO exchange (versions, identities, frame size, keep-alive, resume), the
//! authentication seam (AUTH), and CLOSE. [`Handshake`] owns the progress on one transport (our HELLO, the
//! peer's, the retry and give-up timers); [`negotiate_version`] picks the version; the `Connection` methods
//! here apply the outcome.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::Mtu;
use tracing::debug;

use super::secured::{T_LINK_ACK, T_LINK_KEEPALIVE};
use super::{Connection, LinkState};
use crate::error::{CloseCode, LinkError, ProtocolError};
use crate::event::Event;
use crate::resume::Continuity;
use crate::types::DisconnectReason;
use crate::wire::{self, HELLO_SEEN, HandshakeMsg, Hello};

/// The receive window assumed for a version-2 peer whose HELLO lacks a readable extension 3.
const DEFAULT_PEER_WINDOW: u32 = 64 * 1024;

/// Handshake progress on the current transport.
#[derive(Debug)]
pub(super) struct Handshake {
    hello: Hello,
    peer_hello: Option<Hello>,
    next_retry: Instant,
    deadline: Instant,
}

/// What [`Handshake::handle_timeout`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Timer {
    /// Nothing due.
    Waiting,
    /// The peer's HELLO has not come: send ours again (encoded here).
    Resend(Bytes),
    /// The handshake took too long: the transport is unusable.
    Expired,
}

impl Handshake {
    /// Sent `hello` at `now`; resend it every `retry` until the peer's arrives, give up after `timeout`.
    pub(super) fn new(now: Instant, hello: Hello, retry: Duration, timeout: Duration) -> Self {
        Self { hello, peer_hello: None, next_retry: now + retry, deadline: now + timeout }
    }

    /// Whether the peer's HELLO arrived.
    pub(super) fn has_peer_hello(&self) -> bool {
        self.peer_hello.is_some()
    }

    /// Records the peer's HELLO (the first one counts).
    pub(super) fn peer_hello(&mut self, hello: Hello) {
        self.peer_hello.get_or_insert(hello);
    }

    /// Our HELLO and the peer's, once both are known.
    pub(super) fn into_hellos(self) -> Option<(Hello, Hello)> {
        Some((self.hello, self.peer_hello?))
    }

    /// The next retry or the give-up time.
    pub(super) fn poll_timeout(&self) -> Instant {
        if self.peer_hello.is_none() { self.deadline.min(self.next_retry) } else { self.deadline }
    }

    /// Runs the timers due at `now`; a resend schedules the next one `retry` later.
    pub(super) fn handle_timeout(&mut self, now: Instant, retry: Duration) -> Timer {
        if self.deadline <= now {
            return Timer::Expired;
        }
        if self.peer_hello.is_none() && self.next_retry <= now {
            self.next_retry = now + retry;
            return Timer::Resend(self.hello.encode());
        }
        Timer::Waiting
    }
}

/// The version both sides speak: the highest in both ranges, or `None` (a peer range that is empty or
/// disjoint from ours).
pub(super) fn negotiate_version(ours: &RangeInclusive<u8>, peer_min: u8, peer_max: u8) -> Option<u8> {
    let (lo, hi) = (*ours.start(), *ours.end());
    let common = hi.min(peer_max);
    (peer_min <= peer_max && common >= lo.max(peer_min)).then_some(common)
}

impl Connection {
    pub(super) fn on_handshake_message(&mut self, now: Instant, payload: &Bytes) -> Result<(), ProtocolError> {
        // Acknowledgements and keep-alives travel here, sealed, on authenticated links only.
        match payload.first() {
            Some(&(T_LINK_ACK | T_LINK_KEEPALIVE)) if !self.is_secured() => {
                return Err(ProtocolError::Malformed { what: "handshake message type" });
            }
            Some(&T_LINK_KEEPALIVE) => return Ok(()),
            Some(&T_LINK_ACK) if self.state != LinkState::Established => return Ok(()),
            Some(&T_LINK_ACK) => {
                let entries = wire::decode_ack(&payload.slice(1..), self.version)
                    .map_err(|m| ProtocolError::Malformed { what: m.0 })?;
                return self.on_ack_entries(now, entries);
            }
            _ => {}
        }
        let msg = HandshakeMsg::decode(payload).map_err(|m| ProtocolError::Malformed { what: m.0 })?;
        match msg {
            HandshakeMsg::Close { code, message } => {
                // (On a version mismatch each side normally closes on the other's HELLO first, reporting the
                // precise ranges; this CLOSE only matters if that HELLO was lost.)
                let error = LinkError::PeerClosed { code: CloseCode::from_u8(code), message };
                self.hs_out.clear();
                self.close_link(now, error);
                Ok(())
            }
            HandshakeMsg::Auth(data) => {
                if self.state != LinkState::Handshaking {
                    return Ok(());
                }
                match self.auth.receive(&data) {
                    Ok(Some(reply)) => self.queue_handshake(HandshakeMsg::encode_auth(&reply)),
                    Ok(None) => {}
                    Err(e) => {
                        self.close_with(now, CloseCode::AuthFailed, LinkError::Auth(e));
                        return Ok(());
                    }
                }
                self.try_establish(now)
            }
            HandshakeMsg::Hello(hello) => self.on_hello(now, hello),
        }
    }

    fn on_hello(&mut self, now: Instant, hello: Hello) -> Result<(), ProtocolError> {
        if self.state == LinkState::Established {
            // A retransmitted hello: the peer missed ours. Answer once, marked as an answer.
            let same = self.resume.is_peer_token(hello.link_token);
            if same
                && hello.flags & HELLO_SEEN == 0
                && let Some(mut ours) = self.hs_hello_cache.clone()
            {
                ours.flags |= HELLO_SEEN;
                self.queue_handshake(ours.encode());
            }
            return Ok(());
        }
        if self.state != LinkState::Handshaking || self.hs.as_ref().is_some_and(Handshake::has_peer_hello) {
            return Ok(());
        }
        if !self.is_peer(&hello.device_id) {
            return Err(ProtocolError::Impersonation { claimed: hello.device_id });
        }
        let (lo, hi) = (*self.config.versions.start(), *self.config.versions.end());
        let Some(common) = negotiate_version(&self.config.versions, hello.min_version, hello.max_version) else {
            let error = LinkError::VersionMismatch {
                local_min: lo,
                local_max: hi,
                peer_min: hello.min_version,
                peer_max: hello.max_version,
            };
            debug!(%error, "handshake failed");
            self.close_with(now, CloseCode::VersionMismatch, error);
            return Ok(());
        };
        self.version = common;
        for ext in &hello.extensions {
            if ext.kind == 1 {
                match self.auth.receive(&ext.data) {
                    Ok(Some(reply)) => self.queue_handshake(HandshakeMsg::encode_auth(&reply)),
                    Ok(None) => {}
                    Err(e) => {
                        self.close_with(now, CloseCode::AuthFailed, LinkError::Auth(e));
                        return Ok(());
                    }
                }
            }
        }
        if let Some(hs) = &mut self.hs {
            hs.peer_hello(hello);
        }
        self.try_establish(now)
    }

    /// Completes the handshake once both hellos are known and the authenticator is satisfied.
    fn try_establish(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let ready = self.hs.as_ref().is_some_and(Handshake::has_peer_hello) && self.auth.is_complete();
        if !ready {
            return Ok(());
        }
        let Some((ours, peer)) = self.hs.take().and_then(Handshake::into_hellos) else { return Ok(()) };
        let mut continuity =
            self.resume.complete(ours.resume_token, &peer.device_id, peer.link_token, peer.resume_token);
        if continuity == Continuity::Resumed && self.version != self.sessions_version {
            // The sessions' channels are numbered by the version they were opened under (docs/sessions.md §1.1).
            debug!(was = self.sessions_version, now = self.version, "peer resumed with another version");
            continuity = Continuity::Replaced;
        }
        if continuity == Continuity::Replaced {
            debug!("peer could not resume: earlier sessions are lost");
            self.end_all_sessions(DisconnectReason::NetworkDisconnected, true);
            self.reset_link_state();
            self.renew_epoch();
        }
        // The peer's name (extension 2): UTF-8 within the limit, else none; never trusted beyond display.
        self.peer_name = peer
            .extensions
            .iter()
            .find(|e| e.kind == 2)
            .filter(|e| e.data.len() <= crate::config::MAX_DEVICE_NAME)
            .and_then(|e| std::str::from_utf8(&e.data).ok())
            .map(str::to_owned);
        // Receive credit (version 2): the peer's window per session channel (extension 3; 64 KiB if absent or
        // unreadable), and ours enforced.
        let credit = self.version >= 2;
        let peer_window = credit.then(|| {
            peer.extensions
                .iter()
                .find(|e| e.kind == wire::EXT_RECEIVE_WINDOW)
                .and_then(|e| {
                    let mut pos = 0;
                    let w = colink_frame::varint::get(&e.data, &mut pos).ok()?;
                    (pos == e.data.len()).then_some(w)
                })
                .unwrap_or(DEFAULT_PEER_WINDOW)
        });
        self.sessions_version = self.version;
        self.scheduler.set_peer_window(peer_window);
        self.receiver.set_enforce(credit);
        // Version 3 charges every message a fixed amount of credit beyond its payload, both ways, so even empty
        // messages are bounded by the receiver's window (docs/sessions.md §4.5).
        self.message_charge = if self.version >= 3 { crate::MESSAGE_CHARGE } else { 0 };
        self.scheduler.set_message_charge(self.message_charge);
        // Selective acknowledgement (version 3): fragments beyond a gap are held and reported, lost ones resent
        // by themselves.
        let selective = self.version >= 3;
        self.scheduler.set_selective(selective);
        self.receiver.set_hold_limit(if selective { self.config.reorder_buffer } else { 0 });
        // Negotiated parameters.
        self.keep_alive.negotiate(
            self.config.keep_alive_interval,
            self.config.idle_timeout,
            Duration::from_millis(u64::from(peer.keep_alive_ms)),
            Duration::from_millis(u64::from(peer.idle_timeout_ms)),
        );
        if let Some(t) = self.transport {
            let peer_max = usize::try_from(peer.max_frame).unwrap_or(usize::MAX);
            let mtu = Mtu::new(t.mtu.get().min(peer_max)).unwrap_or(Mtu::MIN);
            self.frame_mtu = self.sending_mtu(mtu);
            self.link_frame_mtu = mtu;
        }
        self.state = LinkState::Established;
        self.grace_deadline = None;
        self.keep_alive.restart(now);
        let mut cached = ours;
        cached.resume_state.clear();
        self.hs_hello_cache = Some(cached);
        if continuity == Continuity::Resumed {
            let positions: BTreeMap<u32, _> = peer.resume_state.iter().copied().collect();
            self.rewind_lanes(now, &positions)?;
            // The peer counted what it sent us from its last credit; updates may have been lost with the
            // transport: announce every session channel's credit afresh (docs/sessions.md §4.5).
            if credit {
                for ch in self.receiver.session_channels() {
                    self.acks.on_credit(ch);
                }
            }
            debug!("link resumed");
            self.events.push_back(Event::LinkResumed);
        } else {
            debug!(peer = %peer.device_id, version = self.version, "link up");
            self.rewind_lanes(now, &BTreeMap::new())?;
            self.events.push_back(Event::LinkUp {
                peer_device: peer.device_id,
                version: self.version,
                peer_name: self.peer_name.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            flags: 0,
            min_version: 1,
            max_version: 1,
            device_id: "a".into(),
            max_frame: 247,
            keep_alive_ms: 5000,
            idle_timeout_ms: 30000,
            link_token: 3,
            resume_token: 0,
            resume_state: Vec::new(),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn the_highest_common_version_wins() {
        assert_eq!(negotiate_version(&(1..=3), 2, 5), Some(3));
        assert_eq!(negotiate_version(&(1..=3), 1, 2), Some(2));
        assert_eq!(negotiate_version(&(2..=3), 1, 1), None);
        assert_eq!(negotiate_version(&(1..=1), 2, 3), None);
        // An empty range from the peer agrees on nothing.
        assert_eq!(negotiate_version(&(1..=3), 3, 2), None);
    }

    #[test]
    fn hello_is_resent_until_the_peer_answers_then_only_the_deadline_counts() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Handshake::new(t0, hello(), s, 10 * s);
        assert_eq!(h.poll_timeout(), t0 + s);
        assert_eq!(h.handle_timeout(t0 + s / 2, s), Timer::Waiting);
        assert_eq!(h.handle_timeout(t0 + s, s), Timer::Resend(hello().encode()));
        assert_eq!(h.poll_timeout(), t0 + 2 * s);
        h.peer_hello(Hello { device_id: "b".into(), ..hello() });
        assert!(h.has_peer_hello());
        assert_eq!(h.poll_timeout(), t0 + 10 * s);
        assert_eq!(h.handle_timeout(t0 + 5 * s, s), Timer::Waiting);
        assert_eq!(h.handle_timeout(t0 + 10 * s, s), Timer::Expired);
        let (ours, peer) = h.into_hellos().unwrap();
        assert_eq!((ours.device_id.as_str(), peer.device_id.as_str()), ("a", "b"));
    }

    #[test]
    fn the_first_peer_hello_counts_and_without_one_there_is_no_pair() {
        let mut h = Handshake::new(Instant::now(), hello(), Duration::from_secs(1), Duration::from_secs(10));
        h.peer_hello(Hello { device_id: "b".into(), ..hello() });
        h.peer_hello(Hello { device_id: "c".into(), ..hello() });
        assert_eq!(h.into_hellos().unwrap().1.device_id, "b");
        let h = Handshake::new(Instant::now(), hello(), Duration::from_secs(1), Duration::from_secs(10));
        assert!(h.into_hellos().is_none());
    }
}
