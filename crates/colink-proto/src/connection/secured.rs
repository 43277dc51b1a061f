//! A [`Connection`] on authenticated transports: link messages (the handshake channel's HELLO, AUTH and CLOSE)
//! sealed per message with the transport keys and a per-direction counter, lane messages sealed per message
//! with the connection's epoch keys (docs/security.md §4).

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use colink_frame::FrameKind;
use tracing::debug;

use super::Connection;
use crate::config::Transport;
use crate::error::ProtocolError;
use crate::scheduler::lane_nonce;
use crate::secure::{LinkCipher, PeerIdentity, TAG_LEN, TransportKeys};

/// Handshake-channel message type of a sealed link message.
pub(crate) const T_SEALED: u8 = 0x05;
/// Inner type of a sealed link message carrying acknowledgements (an ACK payload of docs/sessions.md §5 follows).
pub(crate) const T_LINK_ACK: u8 = 0x06;
/// Inner type of a sealed link message that is a keep-alive (nothing follows).
pub(crate) const T_LINK_KEEPALIVE: u8 = 0x07;
/// Type byte and counter before the sealed bytes.
const SEALED_HEADER: usize = 1 + 8;

/// What an authenticated connection keeps.
#[derive(Debug)]
pub(super) struct Secured {
    /// The peer every transport of this connection proved to be.
    peer: PeerIdentity,
    /// The current transport's keys (fresh epoch keys come from them when the peer could not resume).
    keys: TransportKeys,
    link: LinkCipher,
    /// The next counter this side seals a link message with (0 was the handshake's CONFIRM).
    tx: u64,
    /// The last counter accepted from the peer on this transport.
    rx: u64,
    /// The epoch cipher (lane messages), kept across resumes.
    epoch: LinkCipher,
}

/// Why [`Connection::attach_secured`] refused a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The transport proved another identity than this connection's peer: it never reaches this connection.
    #[error("the transport proved device {proven}, not this link's peer {peer}")]
    OtherPeer {
        /// This connection's peer.
        peer: String,
        /// The identity the transport proved.
        proven: String,
    },
    /// The connection runs on plain transports.
    #[error("the connection runs on plain transports")]
    Plain,
}

impl Connection {
    /// Attaches a transport that a [`SecureHandshake`](crate::secure::SecureHandshake) authenticated as `peer`,
    /// with the `keys` it produced: from now on every link and lane message is sealed. The first such transport
    /// fixes the connection's peer and derives its epoch keys; a later one must prove the same peer, else it is
    /// refused and the connection is untouched.
    pub fn attach_secured(
        &mut self,
        now: Instant,
        transport: Transport,
        peer: PeerIdentity,
        keys: TransportKeys,
    ) -> Result<(), AttachError> {
        let link = keys.cipher();
        match &mut self.secure {
            Some(s) if s.peer != peer => {
                return Err(AttachError::OtherPeer { peer: s.peer.device_id.clone(), proven: peer.device_id });
            }
            Some(s) => {
                s.link = link;
                s.keys = keys;
                s.tx = 1;
                s.rx = 0;
            }
            None if self.resume.has_peer() || self.state != crate::LinkState::Idle => return Err(AttachError::Plain),
            None => {
                let epoch = keys.epoch();
                self.scheduler.set_epoch(epoch.clone());
                self.receiver.grow_limits(TAG_LEN as u32);
                self.secure = Some(Secured { peer, keys, link, tx: 1, rx: 0, epoch });
            }
        }
        self.attach(now, transport);
        Ok(())
    }

    /// Whether the connection runs on authenticated transports (everything sealed).
    pub(super) fn is_secured(&self) -> bool {
        self.secure.is_some()
    }

    /// The peer's proven identity, on an authenticated connection.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.secure.as_ref().map(|s| &s.peer)
    }

    /// The peer could not resume: lane numbering restarts, so the epoch keys must too (nonces repeat).
    pub(super) fn renew_epoch(&mut self) {
        if let Some(s) = &mut self.secure {
            debug!("fresh epoch keys");
            s.epoch = s.keys.epoch();
            self.scheduler.set_epoch(s.epoch.clone());
        }
    }

    /// A handshake-channel message as it goes on the wire: sealed on an authenticated connection.
    pub(super) fn seal_link_message(&mut self, payload: Bytes) -> Option<Bytes> {
        let Some(s) = &mut self.secure else { return Some(payload) };
        let counter = s.tx;
        s.tx = s.tx.checked_add(1)?;
        let sealed = s.link.seal(counter, &[T_SEALED], &payload).ok()?;
        let mut b = BytesMut::with_capacity(SEALED_HEADER + sealed.len());
        b.put_u8(T_SEALED);
        b.put_u64(counter);
        b.extend_from_slice(&sealed);
        Some(b.freeze())
    }

    /// A received handshake-channel message opened: on an authenticated connection only a sealed one with a
    /// counter above every one accepted before.
    pub(super) fn open_link_message(&mut self, payload: Bytes) -> Result<Bytes, ProtocolError> {
        let Some(s) = &mut self.secure else { return Ok(payload) };
        let bad = ProtocolError::Integrity { what: "link message" };
        if payload.len() < SEALED_HEADER + TAG_LEN || payload[0] != T_SEALED {
            return Err(bad);
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&payload[1..SEALED_HEADER]);
        let counter = u64::from_be_bytes(counter);
        if counter <= s.rx {
            return Err(ProtocolError::Integrity { what: "link message (replayed counter)" });
        }
        let plain = s.link.open(counter, &[T_SEALED], &payload[SEALED_HEADER..]).map_err(|_| bad)?;
        s.rx = counter;
        Ok(Bytes::from(plain))
    }

    /// A reassembled lane message opened with the epoch key (as it is on a plain connection).
    pub(super) fn open_lane_message(
        &self,
        channel: u32,
        seq: u32,
        kind: FrameKind,
        payload: Bytes,
    ) -> Result<Bytes, ProtocolError> {
        let Some(s) = &self.secure else { return Ok(payload) };
        s.epoch
            .open(lane_nonce(channel, seq), &[kind as u8], &payload)
            .map(Bytes::from)
            .map_err(|_| ProtocolError::Integrity { what: "lane message" })
    }

    /// On an authenticated connection: whether `device` is the proven peer (always true on a plain one).
    pub(super) fn is_peer(&self, device: &str) -> bool {
        self.secure.as_ref().is_none_or(|s| s.peer.device_id == device)
    }
}
