//! Resume: who the link's peer is across transports, and whether a new handshake continues the link (every
//! session resumes from the last acknowledged fragment) or replaces it (earlier sessions are lost).

/// What the peer told us in the handshake that established the link (kept across transports).
#[derive(Debug, Clone)]
struct PeerLink {
    device_id: String,
    token: u64,
}

/// What a completed handshake means for the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continuity {
    /// The first handshake of this link.
    First,
    /// Both sides hold the same link: sessions continue.
    Resumed,
    /// The peer is another device or no longer holds our link (it restarted): earlier sessions are lost.
    Replaced,
}

/// The link's identity on both sides: our token, and the peer's identity once a handshake completed.
#[derive(Debug)]
pub(crate) struct Resume {
    local_token: u64,
    peer: Option<PeerLink>,
}

impl Resume {
    /// A link known to us by `local_token` (random, from the caller's entropy); no peer yet.
    pub(crate) fn new(local_token: u64) -> Self {
        Self { local_token, peer: None }
    }

    /// Our token for this link (HELLO's `link_token`).
    pub(crate) fn local_token(&self) -> u64 {
        self.local_token
    }

    /// The token of the link we ask the peer to resume (HELLO's `resume_token`; 0 before a first handshake).
    pub(crate) fn resume_token(&self) -> u64 {
        self.peer.as_ref().map_or(0, |p| p.token)
    }

    /// Whether a handshake ever completed (a new transport then asks to resume).
    pub(crate) fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// The peer's device identity, once a handshake completed.
    pub(crate) fn peer_device(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.device_id.as_str())
    }

    /// Whether the token `link_token` is the one the established peer announced.
    pub(crate) fn is_peer_token(&self, link_token: u64) -> bool {
        self.peer.as_ref().is_some_and(|p| p.token == link_token)
    }

    /// Judges a completed handshake in which we asked to resume `asked` and the peer, device `device_id` with
    /// link token `link_token`, asked to resume `peer_asked`: the link resumes only if both sides name the
    /// link the other holds. Then records the peer.
    pub(crate) fn complete(&mut self, asked: u64, device_id: &str, link_token: u64, peer_asked: u64) -> Continuity {
        let continuity = match &self.peer {
            None => Continuity::First,
            Some(p)
                if p.device_id == device_id
                    && p.token == link_token
                    && asked == p.token
                    && peer_asked == self.local_token =>
            {
                Continuity::Resumed
            }
            Some(_) => Continuity::Replaced,
        };
        self.peer = Some(PeerLink { device_id: device_id.to_owned(), token: link_token });
        continuity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_handshake_records_the_peer() {
        let mut r = Resume::new(11);
        assert_eq!((r.resume_token(), r.has_peer(), r.peer_device()), (0, false, None));
        assert_eq!(r.complete(0, "bob", 22, 0), Continuity::First);
        assert_eq!((r.resume_token(), r.peer_device()), (22, Some("bob")));
        assert!(r.is_peer_token(22) && !r.is_peer_token(23));
    }

    #[test]
    fn both_sides_must_name_the_same_link_to_resume() {
        let established = || {
            let mut r = Resume::new(11);
            r.complete(0, "bob", 22, 0);
            r
        };
        assert_eq!(established().complete(22, "bob", 22, 11), Continuity::Resumed);
        // Another device, a peer that restarted (new token), a peer that forgot us, or a HELLO of ours that
        // asked for nothing: the link is replaced.
        assert_eq!(established().complete(22, "carol", 22, 11), Continuity::Replaced);
        assert_eq!(established().complete(22, "bob", 33, 11), Continuity::Replaced);
        assert_eq!(established().complete(22, "bob", 22, 0), Continuity::Replaced);
        assert_eq!(established().complete(0, "bob", 22, 11), Continuity::Replaced);
        // After a replacement, the new peer's token is the one to resume.
        let mut r = established();
        r.complete(22, "bob", 33, 0);
        assert_eq!(r.resume_token(), 33);
    }
}
