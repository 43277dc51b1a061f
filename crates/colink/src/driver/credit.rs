//! Receive credit handed back as the app reads: every payload a link reports comes with a [`ReadCredit`], and
//! the payload's bytes count against its session channel's receive buffer until that credit is dropped — by
//! the Manager once a listener ran or a stream yielded the payload (docs/api-mapping.md, "Delivery"). The link
//! task then tells its engine ([`colink_proto::Connection::consumed`]), which grants the peer room again.
//! Nothing here is unbounded: what is outstanding per channel is at most the receive buffer, and what waits
//! to be handed back is one counter per channel.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use colink_proto::{ChannelKind, SessionKey};
use tokio::sync::Notify;

use crate::lock;

/// The receive credit of one received payload: while it lives, the payload's bytes count as not yet read by
/// the app (against the session channel's [`receive_buffer`](colink_proto::Config::receive_buffer)); dropping
/// it hands the room back, and the peer may send more. Carried by [`NodeEvent`](super::NodeEvent)s of
/// received payloads.
pub struct ReadCredit {
    link: Arc<LinkCredit>,
    session: SessionKey,
    kind: ChannelKind,
    len: u64,
}

impl ReadCredit {
    /// The session it belongs to.
    pub fn session(&self) -> SessionKey {
        self.session
    }

    /// The payload bytes it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes (an empty payload).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for ReadCredit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadCredit")
            .field("session", &self.session)
            .field("kind", &self.kind)
            .field("len", &self.len)
            .finish()
    }
}

/// Credits compare by what they hold (session, channel, length), so events carrying them stay comparable.
impl PartialEq for ReadCredit {
    fn eq(&self, other: &Self) -> bool {
        (self.session, self.kind, self.len) == (other.session, other.kind, other.len)
    }
}

impl Eq for ReadCredit {}

impl Drop for ReadCredit {
    fn drop(&mut self) {
        self.link.give_back(self.session, self.kind, self.len);
    }
}

/// One link's credit book: bytes outstanding per session, bytes read and not yet told to the engine.
#[derive(Default)]
pub(crate) struct LinkCredit {
    state: Mutex<CreditState>,
    /// Wakes the link task when credit came back.
    pub(crate) returned: Notify,
}

#[derive(Default)]
struct CreditState {
    outstanding: BTreeMap<SessionKey, u64>,
    /// Credits alive: payloads received and not yet read by the app, of any size (even empty ones, which a
    /// peer without the per-message charge gets for free).
    unread: u64,
    returned: BTreeMap<(SessionKey, ChannelKind), u64>,
}

impl LinkCredit {
    /// A credit for `len` bytes just received on `session`'s `kind` channel.
    pub(crate) fn issue(self: &Arc<Self>, session: SessionKey, kind: ChannelKind, len: u64) -> ReadCredit {
        {
            let mut state = lock(&self.state);
            *state.outstanding.entry(session).or_default() += len;
            state.unread += 1;
        }
        ReadCredit { link: self.clone(), session, kind, len }
    }

    fn give_back(&self, session: SessionKey, kind: ChannelKind, len: u64) {
        {
            let mut state = lock(&self.state);
            state.unread = state.unread.saturating_sub(1);
            if let Some(n) = state.outstanding.get_mut(&session) {
                *n = n.saturating_sub(len);
                if *n == 0 {
                    state.outstanding.remove(&session);
                }
            }
            *state.returned.entry((session, kind)).or_default() += len;
        }
        self.returned.notify_one();
    }

    /// The bytes read since the last call, per channel, for the engine.
    pub(crate) fn take_returned(&self) -> BTreeMap<(SessionKey, ChannelKind), u64> {
        std::mem::take(&mut lock(&self.state).returned)
    }

    /// Payloads of any session of the link received and not yet read by the app.
    pub(crate) fn unread_payloads(&self) -> u64 {
        lock(&self.state).unread
    }

    /// Payload bytes of `session` received and not yet read by the app.
    pub(crate) fn outstanding(&self, session: SessionKey) -> u64 {
        lock(&self.state).outstanding.get(&session).copied().unwrap_or(0)
    }
}
