//! The link handshake: HELLO exchange (versions, identities, frame size, keep-alive, resume), the
//! authentication seam (AUTH), and CLOSE.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::Mtu;
use tracing::debug;

use super::connection::{Connection, LinkState, PeerLink};
use super::error::{CloseCode, LinkError, ProtocolError};
use super::event::Event;
use super::types::DisconnectReason;
use super::wire::{HELLO_SEEN, HandshakeMsg, Hello};

impl Connection {
    pub(crate) fn on_handshake_message(&mut self, now: Instant, payload: &Bytes) -> Result<(), ProtocolError> {
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
            let same = self.peer.as_ref().is_some_and(|p| p.token == hello.link_token);
            if same
                && hello.flags & HELLO_SEEN == 0
                && let Some(mut ours) = self.hs_hello_cache.clone()
            {
                ours.flags |= HELLO_SEEN;
                self.queue_handshake(ours.encode());
            }
            return Ok(());
        }
        if self.state != LinkState::Handshaking || self.hs.as_ref().is_some_and(|h| h.peer_hello.is_some()) {
            return Ok(());
        }
        let (lo, hi) = (*self.config.versions.start(), *self.config.versions.end());
        let common = hi.min(hello.max_version);
        if hello.min_version > hello.max_version || common < lo.max(hello.min_version) {
            let error = LinkError::VersionMismatch {
                local_min: lo,
                local_max: hi,
                peer_min: hello.min_version,
                peer_max: hello.max_version,
            };
            debug!(%error, "handshake failed");
            self.close_with(now, CloseCode::VersionMismatch, error);
            return Ok(());
        }
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
            hs.peer_hello = Some(hello);
        }
        self.try_establish(now)
    }

    /// Completes the handshake once both hellos are known and the authenticator is satisfied.
    fn try_establish(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let ready = self.hs.as_ref().is_some_and(|h| h.peer_hello.is_some()) && self.auth.is_complete();
        if !ready {
            return Ok(());
        }
        let Some(hs) = self.hs.take() else { return Ok(()) };
        let Some(peer) = hs.peer_hello else { return Ok(()) };
        let ours = hs.hello;
        let resumed = self.peer.as_ref().is_some_and(|p| {
            p.device_id == peer.device_id
                && p.token == peer.link_token
                && ours.resume_token == p.token
                && peer.resume_token == self.local_token
        });
        if self.peer.is_some() && !resumed {
            debug!("peer could not resume: earlier sessions are lost");
            self.end_all_sessions(DisconnectReason::NetworkDisconnected, true);
            self.reset_link_state();
        }
        // Negotiated parameters.
        let peer_ka = Duration::from_millis(u64::from(peer.keep_alive_ms.max(100)));
        let peer_idle = Duration::from_millis(u64::from(peer.idle_timeout_ms));
        self.keep_alive = self.config.keep_alive_interval.min(peer_ka);
        self.idle_timeout = self.config.idle_timeout.max(peer_idle).max(self.keep_alive * 2);
        if let Some(t) = self.transport {
            let peer_max = usize::try_from(peer.max_frame).unwrap_or(usize::MAX);
            let mtu = Mtu::new(t.mtu.get().min(peer_max)).unwrap_or(Mtu::MIN);
            self.frame_mtu = self.sending_mtu(mtu);
        }
        self.peer = Some(PeerLink { device_id: peer.device_id.clone(), token: peer.link_token });
        self.state = LinkState::Established;
        self.grace_deadline = None;
        self.last_recv = now;
        self.last_sent = now;
        let mut cached = ours;
        cached.resume_state.clear();
        self.hs_hello_cache = Some(cached);
        if resumed {
            let positions: BTreeMap<u32, _> = peer.resume_state.iter().copied().collect();
            self.rewind_lanes(now, &positions)?;
            debug!("link resumed");
            self.events.push_back(Event::LinkResumed);
        } else {
            debug!(peer = %peer.device_id, version = self.version, "link up");
            self.rewind_lanes(now, &BTreeMap::new())?;
            self.events.push_back(Event::LinkUp { peer_device: peer.device_id, version: self.version });
        }
        Ok(())
    }
}
