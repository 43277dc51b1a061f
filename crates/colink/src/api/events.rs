//! Events delivered to apps, and the registry that routes them: one listener per (session, event kind) —
//! the reference's `on`/`off` — plus any number of `events()` streams per session.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
#[cfg(feature = "media")]
use colink_media::PixelMap;
use futures::Stream;
use futures::channel::mpsc;
use tracing::warn;

use super::caller::Caller;
use super::enums::DisconnectReason;
use super::error::Error;
use super::ids::SessionId;
use super::types::CollaborateEventInfo;
use crate::driver::ReadCredit;

/// The event types of the reference's `on(type, sessionId, callback)` / `off(type, sessionId)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// `"connect"`: the session is connected.
    Connect,
    /// `"disconnect"`: the session ended, with a [`DisconnectReason`].
    Disconnect,
    /// `"receiveMessage"`: a text message arrived.
    ReceiveMessage,
    /// `"receiveData"`: a byte payload arrived.
    ReceiveData,
    /// `"receiveImage"` (system only): an image arrived.
    ReceiveImage,
    /// `"collaborateEvent"` (system only): e.g. a send that had been accepted failed.
    CollaborateEvent,
    /// `"reconnecting"` (colink): the session's link was lost; it is reconnecting within the grace period.
    Reconnecting,
    /// `"reconnected"` (colink): the link came back and the session continues where it stopped.
    Reconnected,
    /// `"fileOffered"` (colink): the peer offers a file (answer with `accept_file` or `reject_file`).
    FileOffered,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::Connect,
        Self::Disconnect,
        Self::ReceiveMessage,
        Self::ReceiveData,
        Self::ReceiveImage,
        Self::CollaborateEvent,
        Self::Reconnecting,
        Self::Reconnected,
        Self::FileOffered,
    ];

    /// The reference's event type string (`"receiveMessage"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Disconnect => "disconnect",
            Self::ReceiveMessage => "receiveMessage",
            Self::ReceiveData => "receiveData",
            Self::ReceiveImage => "receiveImage",
            Self::CollaborateEvent => "collaborateEvent",
            Self::Reconnecting => "reconnecting",
            Self::Reconnected => "reconnected",
            Self::FileOffered => "fileOffered",
        }
    }

    /// Whether only system callers may listen for it (`receiveImage`, `collaborateEvent`; else `202`).
    pub const fn is_system_only(self) -> bool {
        matches!(self, Self::ReceiveImage | Self::CollaborateEvent)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = Error;

    /// The kind named by the reference's type string (case-sensitive); anything else is a 401 naming `type`.
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::invalid_arg(
                "type",
                format_args!(
                    "must be one of connect, disconnect, receiveMessage, receiveData, receiveImage, \
                     collaborateEvent, reconnecting, reconnected, fileOffered, got {s:?}"
                ),
            )
        })
    }
}

/// Something that happened on a session, as delivered to listeners and [`EventStream`]s: the typed
/// equivalent of the reference's `EventCallbackInfo` (and, for `collaborateEvent`, `CollaborateEventInfo`).
///
/// Not [`colink_proto::Event`], the engine's per-link event (engine session keys, send ids, raw payloads by
/// channel): the `Manager` derives these app-facing events from those.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `connect`: the session is connected.
    Connect {
        /// `sessionId`.
        session_id: SessionId,
    },
    /// `disconnect`: the session ended.
    Disconnect {
        /// `sessionId`.
        session_id: SessionId,
        /// `reason`: why.
        reason: DisconnectReason,
    },
    /// `receiveMessage`: a text message arrived.
    ReceiveMessage {
        /// `sessionId`.
        session_id: SessionId,
        /// `msg`: the text.
        msg: String,
    },
    /// `receiveData`: a byte payload arrived, whole and in order.
    ReceiveData {
        /// `sessionId`.
        session_id: SessionId,
        /// `data`: the bytes.
        data: Bytes,
    },
    /// `receiveImage` (system callers only): an image arrived, decoded to the sender's width, height and
    /// pixel format. Only with the `media` feature (without it, received images are dropped).
    #[cfg(feature = "media")]
    ReceiveImage {
        /// `sessionId`.
        session_id: SessionId,
        /// `image`: the picture.
        image: PixelMap,
    },
    /// `collaborateEvent` (system callers only): e.g. `SEND_FAILURE` for a send that had been accepted.
    CollaborateEvent {
        /// The session it concerns.
        session_id: SessionId,
        /// `CollaborateEventInfo`: what happened.
        info: CollaborateEventInfo,
    },
    /// `reconnecting` (colink, not in the reference): the session's link was lost. Sends are still accepted
    /// and wait; the session resumes where it stopped if the link comes back within the grace period
    /// ([`Reconnected`](Self::Reconnected)), else it ends with `disconnect` (`NETWORK_DISCONNECTED`).
    Reconnecting {
        /// The session.
        session_id: SessionId,
    },
    /// `reconnected` (colink): the link is back; nothing was lost or repeated.
    Reconnected {
        /// The session.
        session_id: SessionId,
    },
    /// `fileOffered` (colink, not in the reference): the peer app offers a file; answer with
    /// [`Manager::accept_file`](crate::Manager::accept_file) or
    /// [`Manager::reject_file`](crate::Manager::reject_file) within
    /// [`OFFER_TIMEOUT`](crate::files::OFFER_TIMEOUT).
    FileOffered {
        /// The session.
        session_id: SessionId,
        /// What is offered.
        offer: crate::files::FileOffer,
    },
}

impl Event {
    /// The session the event belongs to.
    pub const fn session_id(&self) -> SessionId {
        match self {
            Self::Connect { session_id }
            | Self::Disconnect { session_id, .. }
            | Self::ReceiveMessage { session_id, .. }
            | Self::ReceiveData { session_id, .. }
            | Self::CollaborateEvent { session_id, .. }
            | Self::Reconnecting { session_id }
            | Self::Reconnected { session_id }
            | Self::FileOffered { session_id, .. } => *session_id,
            #[cfg(feature = "media")]
            Self::ReceiveImage { session_id, .. } => *session_id,
        }
    }

    /// The `on`/`off` type this event is delivered under.
    pub const fn kind(&self) -> EventKind {
        match self {
            Self::Connect { .. } => EventKind::Connect,
            Self::Disconnect { .. } => EventKind::Disconnect,
            Self::ReceiveMessage { .. } => EventKind::ReceiveMessage,
            Self::ReceiveData { .. } => EventKind::ReceiveData,
            #[cfg(feature = "media")]
            Self::ReceiveImage { .. } => EventKind::ReceiveImage,
            Self::CollaborateEvent { .. } => EventKind::CollaborateEvent,
            Self::Reconnecting { .. } => EventKind::Reconnecting,
            Self::Reconnected { .. } => EventKind::Reconnected,
            Self::FileOffered { .. } => EventKind::FileOffered,
        }
    }

    /// The reference's flat `EventCallbackInfo` for this event; `None` for `collaborateEvent`, whose listeners
    /// get a `CollaborateEventInfo` instead.
    pub fn callback_info(&self) -> Option<EventCallbackInfo> {
        let mut info = EventCallbackInfo {
            session_id: self.session_id(),
            reason: None,
            msg: None,
            data: None,
            #[cfg(feature = "media")]
            image: None,
        };
        match self {
            Self::Connect { .. } | Self::Reconnecting { .. } | Self::Reconnected { .. } | Self::FileOffered { .. } => {}
            Self::Disconnect { reason, .. } => info.reason = Some(*reason),
            Self::ReceiveMessage { msg, .. } => info.msg = Some(msg.clone()),
            Self::ReceiveData { data, .. } => info.data = Some(data.clone()),
            #[cfg(feature = "media")]
            Self::ReceiveImage { image, .. } => info.image = Some(image.clone()),
            Self::CollaborateEvent { .. } => return None,
        }
        Some(info)
    }
}

/// The reference's `EventCallbackInfo` record, for code that wants its flat shape (see
/// [`Event::callback_info`]); [`Event`] is the typed form colink delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCallbackInfo {
    /// `sessionId`.
    pub session_id: SessionId,
    /// `reason` (disconnect only).
    pub reason: Option<DisconnectReason>,
    /// `msg` (receiveMessage only).
    pub msg: Option<String>,
    /// `data` (receiveData only).
    pub data: Option<Bytes>,
    /// `image` (receiveImage only; with the `media` feature).
    #[cfg(feature = "media")]
    pub image: Option<PixelMap>,
}

/// A registered listener: called with every event of its (session, kind), on the thread that dispatches it.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// Routes events to each session's listeners and streams.
///
/// - [`on`](Self::on) registers the one listener of a (session, kind); a second `on` replaces the first.
///   [`off`](Self::off) removes it.
/// - [`events`](Self::events) opens a stream of every event of a session; any number may be open. Dropping
///   the stream unsubscribes it.
/// - [`dispatch`](Self::dispatch) delivers an event to the stream(s) and the listener of its kind.
///
/// **Held until someone listens.** An event that finds no recipient (no stream open, no listener of its
/// kind) is held for the session, never dropped (except `connect`, which answers the app's own `connect` or
/// `accept_connect` call, and `reconnecting` / `reconnected`, a state the app can query): the next [`events`](Self::events) stream gets every held
/// event first, in order, and an [`on`](Self::on) listener gets the held events of its kind. A payload
/// dispatched with [`dispatch_received`](Self::dispatch_received) keeps its [`ReadCredit`] while it is held
/// or queued in a stream, and drops it once a listener ran or a stream yielded it: so what waits here is
/// bounded by the session's receive buffer, and a session nobody reads slows its sender (docs/api-mapping.md,
/// "Delivery"). Events without credit (connect, disconnect, send failures) are few per session; more than
/// [`MAX_HELD_EVENTS`] of them held at once are dropped with a warning in the log.
///
/// **Streams** hold what they were given until read, bounded the same way: payloads by their credit, other
/// events by their small number. A stream that is never read holds its session's credit, so drop streams you
/// no longer read.
///
/// **Threads.** The registry is `Send + Sync` and cheap to clone (clones share state). Listeners run without
/// any lock held, on the dispatching thread, so they may call back into the registry (`on`, `off`, ...). Events
/// of one session reach streams in dispatch order; listeners see that order too as long as one task at a time
/// dispatches for the session (as the driver does). A listener replaced or removed while an event is being
/// dispatched may still see that one event.
///
/// **System events.** `receiveImage` and `collaborateEvent` are system-only: `on`/`off` for them fail with
/// `202` for a session opened by a non-system caller, and that session's streams do not get them.
///
/// ```
/// use colink::api::{Caller, Event, EventKind, EventRegistry, SessionIds};
/// use futures::StreamExt;
///
/// let registry = EventRegistry::new();
/// let session = SessionIds::new().allocate().unwrap();
/// registry.open_session(session, &Caller::new("com.example", "entry", "Main"));
///
/// registry.on(EventKind::ReceiveMessage, session, |e| println!("listener: {e:?}"))?;
/// let mut events = registry.events(session)?;
///
/// let hello = Event::ReceiveMessage { session_id: session, msg: "hello".into() };
/// assert_eq!(registry.dispatch(hello.clone()), 2); // the stream and the listener
/// assert_eq!(futures::executor::block_on(events.next()), Some(hello));
///
/// // System-only events are refused to a non-system caller.
/// assert_eq!(registry.on(EventKind::CollaborateEvent, session, |_| {}).unwrap_err().code(), 202);
/// # Ok::<(), colink::api::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct EventRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, SessionEntry>,
    next_subscription: u64,
}

/// A received payload's receive credit, travelling with its event until the app has it.
type Credit = Option<Arc<ReadCredit>>;

/// Events without receive credit held for one session at most (connect, disconnect, send failures).
pub const MAX_HELD_EVENTS: usize = 256;

/// What one [`EventStream`] can hold unread: every payload its link may hold for the app
/// ([`MAX_UNREAD_PAYLOADS`](crate::driver::MAX_UNREAD_PAYLOADS); the link stops reading before more arrive)
/// plus [`MAX_HELD_EVENTS`] events without a payload. The queue grows with what it holds, not to this size.
pub const STREAM_CAPACITY: usize = crate::driver::MAX_UNREAD_PAYLOADS as usize + MAX_HELD_EVENTS;

struct SessionEntry {
    system: bool,
    listeners: HashMap<EventKind, Listener>,
    streams: Vec<(u64, mpsc::Sender<(Event, Credit)>)>,
    /// Events that found no recipient, in dispatch order, until a stream or a listener of their kind comes.
    held: VecDeque<(Event, Credit)>,
}

impl SessionEntry {
    /// How many held events carry no credit.
    fn held_plain(&self) -> usize {
        self.held.iter().filter(|(_, c)| c.is_none()).count()
    }
}

impl fmt::Debug for EventRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("EventRegistry").field("sessions", &inner.sessions.len()).finish_non_exhaustive()
    }
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts routing events for `session`, created by `caller` (its system flag decides who may listen to
    /// system events). Re-opening an open session keeps its listeners and streams and updates the flag.
    pub fn open_session(&self, session: SessionId, caller: &Caller) {
        let mut inner = self.lock();
        inner.sessions.entry(session).and_modify(|e| e.system = caller.is_system()).or_insert_with(|| SessionEntry {
            system: caller.is_system(),
            listeners: HashMap::new(),
            streams: Vec::new(),
            held: VecDeque::new(),
        });
    }

    /// Stops routing events for `session` (after `destroy_session`): drops its listeners and ends its streams
    /// (they yield `None` once drained). Returns whether the session was open.
    pub fn close_session(&self, session: SessionId) -> bool {
        // Drop the entry (and with it the listeners and senders) after releasing the lock: a listener's
        // destructor is user code.
        let removed = self.lock().sessions.remove(&session);
        removed.is_some()
    }

    /// Whether `session` is open.
    pub fn is_open(&self, session: SessionId) -> bool {
        self.lock().sessions.contains_key(&session)
    }

    /// The reference's `on(type, sessionId, callback)`: makes `callback` the listener for `kind` on `session`,
    /// replacing any earlier one. Fails with `202` for a system-only kind on a non-system caller's session and
    /// `401` for a session that is not open.
    pub fn on(
        &self,
        kind: EventKind,
        session: SessionId,
        callback: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let callback: Listener = Arc::new(callback);
        let (replaced, held) = {
            let mut inner = self.lock();
            let entry = Self::entry_for(&mut inner, kind, session)?;
            // Events of this kind that waited for a listener go to this one, in order.
            let (mine, rest): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut entry.held).into_iter().partition(|(e, _)| e.kind() == kind);
            entry.held = rest;
            (entry.listeners.insert(kind, callback.clone()), mine)
        };
        drop(replaced); // user code (the old closure's destructor) runs without the lock
        for (event, credit) in held {
            callback(&event);
            drop(credit); // the app has it: the room goes back to the sender
        }
        Ok(())
    }

    /// The reference's `off(type, sessionId)`: removes the listener for `kind` on `session`. Returns whether
    /// there was one. Fails like [`on`](Self::on).
    pub fn off(&self, kind: EventKind, session: SessionId) -> Result<bool, Error> {
        let removed = {
            let mut inner = self.lock();
            let entry = Self::entry_for(&mut inner, kind, session)?;
            entry.listeners.remove(&kind)
        };
        Ok(removed.is_some())
    }

    /// Whether a listener for `kind` is registered on `session`.
    pub fn has_listener(&self, kind: EventKind, session: SessionId) -> bool {
        self.lock().sessions.get(&session).is_some_and(|e| e.listeners.contains_key(&kind))
    }

    /// A stream of every event of `session` (system events only for system callers), from now until the
    /// session is closed or the stream dropped. `401` for a session that is not open.
    pub fn events(&self, session: SessionId) -> Result<EventStream, Error> {
        let mut inner = self.lock();
        let id = inner.next_subscription;
        inner.next_subscription += 1;
        let entry = inner.sessions.get_mut(&session).ok_or_else(|| Error::unknown_session(session))?;
        let (mut tx, rx) = mpsc::channel(STREAM_CAPACITY);
        // Whatever waited for a recipient comes first, in order (the held queue is smaller than the stream's).
        for held in entry.held.drain(..) {
            let _ = tx.try_send(held);
        }
        entry.streams.push((id, tx));
        Ok(EventStream { rx, registry: Arc::downgrade(&self.inner), session, id })
    }

    /// How many streams of `session` are open.
    pub fn stream_count(&self, session: SessionId) -> usize {
        self.lock().sessions.get(&session).map_or(0, |e| e.streams.len())
    }

    /// Delivers `event` to every stream of its session and to the listener of its kind. Returns how many
    /// recipients (streams plus listener) got it: 0 when the session is not open, when the event is a
    /// system event and the session's caller is not a system app, or when nobody listens yet (then the event
    /// is held for the next stream or listener of its kind).
    pub fn dispatch(&self, event: Event) -> usize {
        self.dispatch_received(event, None)
    }

    /// Like [`dispatch`](Self::dispatch), for a received payload with its receive `credit`: the credit is
    /// dropped (the room handed back to the sender) once a listener ran, or every stream that got the event
    /// yielded it; while the event is held or queued, its bytes count against the session's receive buffer.
    pub fn dispatch_received(&self, event: Event, credit: Option<Arc<ReadCredit>>) -> usize {
        let session = event.session_id();
        let kind = event.kind();
        let (listener, delivered) = {
            let mut inner = self.lock();
            let Some(entry) = inner.sessions.get_mut(&session) else {
                return 0;
            };
            if kind.is_system_only() && !entry.system {
                return 0;
            }
            // Streams get the event under the lock (a non-blocking queue push), so concurrent dispatches keep
            // one order for every stream; a stream whose receiver is gone is pruned.
            entry.streams.retain_mut(|(_, tx)| match tx.try_send((event.clone(), credit.clone())) {
                Ok(()) => true,
                // Unreachable for payloads (the link stops reading before); a stream that let more than
                // MAX_HELD_EVENTS plain events pile up loses the newest, with a warning.
                Err(e) if e.is_full() => {
                    warn!(%session, %kind, "an event stream nobody reads is full; dropping an event");
                    true
                }
                Err(_) => false,
            });
            let listener = entry.listeners.get(&kind).cloned();
            if listener.is_none() && entry.streams.is_empty() {
                // `connect` is the answer of the app's own `connect` / `accept_connect` call, which it has
                // already; `reconnecting` / `reconnected` describe a state the app can query at any time
                // (`Manager::session_state`): not held.
                if matches!(kind, EventKind::Connect | EventKind::Reconnecting | EventKind::Reconnected) {
                    return 0;
                }
                if credit.is_none() && entry.held_plain() >= MAX_HELD_EVENTS {
                    warn!(%session, %kind, "too many events held for a session nobody listens to; dropping one");
                } else {
                    entry.held.push_back((event, credit));
                }
                return 0;
            }
            (listener, entry.streams.len())
        };
        match listener {
            Some(listener) => {
                listener(&event);
                drop(credit); // the app has it (streams hold their own clones until they yield it)
                delivered + 1
            }
            None => delivered,
        }
    }

    /// How many events are held for `session` because nobody listened when they came.
    pub fn held_count(&self, session: SessionId) -> usize {
        self.lock().sessions.get(&session).map_or(0, |e| e.held.len())
    }

    fn entry_for(inner: &mut Inner, kind: EventKind, session: SessionId) -> Result<&mut SessionEntry, Error> {
        let entry = inner.sessions.get_mut(&session).ok_or_else(|| Error::unknown_session(session))?;
        if kind.is_system_only() && !entry.system {
            return Err(Error::not_system_app(format_args!("the {kind} event")));
        }
        Ok(entry)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }
}

/// A session's events as a [`Stream`] (from [`EventRegistry::events`]). Ends when the session is closed;
/// dropping it unsubscribes.
#[must_use = "a stream buffers events until read; drop it to unsubscribe"]
pub struct EventStream {
    rx: mpsc::Receiver<(Event, Credit)>,
    registry: Weak<Mutex<Inner>>,
    session: SessionId,
    id: u64,
}

impl EventStream {
    /// The session whose events this stream carries.
    pub fn session_id(&self) -> SessionId {
        self.session
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("session", &self.session).finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        // Yielded: the app has it, and this stream's share of the credit goes (the room returns to the sender
        // once every holder let go).
        Pin::new(&mut self.rx).poll_next(cx).map(|item| item.map(|(event, _credit)| event))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rx.size_hint()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(inner) = self.registry.upgrade() {
            let sender = {
                let mut inner = crate::lock(&inner);
                inner.sessions.get_mut(&self.session).and_then(|e| {
                    let pos = e.streams.iter().position(|(id, _)| *id == self.id)?;
                    Some(e.streams.swap_remove(pos))
                })
            };
            drop(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::executor::block_on;
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::api::enums::CollaborateEventType;

    fn sid(n: i32) -> SessionId {
        SessionId::try_from(n).unwrap()
    }

    fn app() -> Caller {
        Caller::new("b", "m", "a")
    }

    fn msg(n: i32, text: &str) -> Event {
        Event::ReceiveMessage { session_id: sid(n), msg: text.into() }
    }

    /// A listener that records the messages it sees.
    fn recorder() -> (Arc<Mutex<Vec<Event>>>, impl Fn(&Event) + Send + Sync + 'static) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, move |e: &Event| s.lock().unwrap().push(e.clone()))
    }

    #[test]
    fn event_kind_names_follow_the_reference() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "connect",
                "disconnect",
                "receiveMessage",
                "receiveData",
                "receiveImage",
                "collaborateEvent",
                // colink's own: a session's link lost and back.
                "reconnecting",
                "reconnected",
                "fileOffered"
            ]
        );
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        for bad in ["", "Connect", "receivemessage", "receive_message", "collaborate"] {
            let e = bad.parse::<EventKind>().unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("type")));
        }
    }

    #[test]
    fn only_image_and_collaborate_events_are_system_only() {
        let system: Vec<EventKind> = EventKind::ALL.into_iter().filter(|k| k.is_system_only()).collect();
        assert_eq!(system, [EventKind::ReceiveImage, EventKind::CollaborateEvent]);
    }

    #[test]
    fn events_know_their_kind_session_and_callback_info() {
        let e = Event::Disconnect { session_id: sid(100), reason: DisconnectReason::PeerAppExit };
        assert_eq!((e.kind(), e.session_id()), (EventKind::Disconnect, sid(100)));
        let info = e.callback_info().unwrap();
        assert_eq!(
            (info.session_id, info.reason, info.msg, info.data),
            (sid(100), Some(DisconnectReason::PeerAppExit), None, None)
        );
        let info = msg(101, "hi").callback_info().unwrap();
        assert_eq!(info.msg.as_deref(), Some("hi"));
        let d = Event::ReceiveData { session_id: sid(1), data: Bytes::from_static(b"xy") };
        assert_eq!(d.callback_info().unwrap().data, Some(Bytes::from_static(b"xy")));
        assert_eq!(Event::Connect { session_id: sid(1) }.callback_info().unwrap().reason, None);
        let c = Event::CollaborateEvent {
            session_id: sid(1),
            info: CollaborateEventInfo::new(CollaborateEventType::SendFailure, None),
        };
        assert_eq!(c.kind(), EventKind::CollaborateEvent);
        assert_eq!(c.callback_info(), None);
    }

    #[test]
    fn listener_gets_events_of_its_kind_and_session_only() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        reg.open_session(sid(101), &app());
        let (seen, cb) = recorder();
        reg.on(EventKind::ReceiveMessage, sid(100), cb).unwrap();
        assert_eq!(reg.dispatch(msg(100, "a")), 1);
        assert_eq!(reg.dispatch(msg(101, "other session")), 0);
        assert_eq!(reg.dispatch(Event::Connect { session_id: sid(100) }), 0);
        assert_eq!(*seen.lock().unwrap(), [msg(100, "a")]);
    }

    #[test]
    fn a_second_on_replaces_the_first() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let (first, cb1) = recorder();
        let (second, cb2) = recorder();
        reg.on(EventKind::ReceiveMessage, sid(100), cb1).unwrap();
        reg.dispatch(msg(100, "one"));
        reg.on(EventKind::ReceiveMessage, sid(100), cb2).unwrap();
        assert_eq!(reg.dispatch(msg(100, "two")), 1, "exactly one listener per (session, kind)");
        assert_eq!(*first.lock().unwrap(), [msg(100, "one")]);
        assert_eq!(*second.lock().unwrap(), [msg(100, "two")]);
    }

    #[test]
    fn off_removes_the_listener() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let (seen, cb) = recorder();
        reg.on(EventKind::ReceiveMessage, sid(100), cb).unwrap();
        assert!(reg.has_listener(EventKind::ReceiveMessage, sid(100)));
        assert_eq!(reg.off(EventKind::ReceiveMessage, sid(100)), Ok(true));
        assert!(!reg.has_listener(EventKind::ReceiveMessage, sid(100)));
        assert_eq!(reg.dispatch(msg(100, "late")), 0);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(reg.off(EventKind::ReceiveMessage, sid(100)), Ok(false), "off twice is harmless");
    }

    #[test]
    fn off_of_one_kind_keeps_the_others() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let (seen, cb) = recorder();
        reg.on(EventKind::Connect, sid(100), cb).unwrap();
        reg.on(EventKind::ReceiveMessage, sid(100), |_| {}).unwrap();
        reg.off(EventKind::ReceiveMessage, sid(100)).unwrap();
        assert_eq!(reg.dispatch(Event::Connect { session_id: sid(100) }), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn unknown_sessions_are_401() {
        let reg = EventRegistry::new();
        for n in [10, 123] {
            let e = reg.on(EventKind::Connect, sid(n), |_| {}).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("session_id")));
            assert_eq!(reg.off(EventKind::Connect, sid(n)).unwrap_err().code(), 401);
            assert_eq!(reg.events(sid(n)).unwrap_err().code(), 401);
        }
        assert_eq!(reg.dispatch(msg(10, "nobody")), 0);
    }

    #[test]
    fn system_events_need_a_system_session() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        reg.open_session(sid(101), &app().system(true));
        for kind in [EventKind::ReceiveImage, EventKind::CollaborateEvent] {
            assert_eq!(reg.on(kind, sid(100), |_| {}).unwrap_err().code(), 202);
            assert_eq!(reg.off(kind, sid(100)).unwrap_err().code(), 202);
            assert_eq!(reg.on(kind, sid(101), |_| {}), Ok(()));
        }
        for kind in [EventKind::Connect, EventKind::Disconnect, EventKind::ReceiveMessage, EventKind::ReceiveData] {
            assert_eq!(reg.on(kind, sid(100), |_| {}), Ok(()));
        }
        // A non-system session's streams do not get system events either.
        let mut stream = reg.events(sid(100)).unwrap();
        let failure = |n| Event::CollaborateEvent {
            session_id: sid(n),
            info: CollaborateEventInfo::new(CollaborateEventType::SendFailure, Some("lost".into())),
        };
        assert_eq!(reg.dispatch(failure(100)), 0);
        assert_eq!(stream.next().now_or_never(), None);
        assert_eq!(reg.dispatch(failure(101)), 1);
    }

    #[test]
    fn streams_and_the_listener_both_get_every_event() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let mut a = reg.events(sid(100)).unwrap();
        let mut b = reg.events(sid(100)).unwrap();
        assert_eq!(a.session_id(), sid(100));
        let (seen, cb) = recorder();
        reg.on(EventKind::ReceiveMessage, sid(100), cb).unwrap();
        let events = [
            Event::Connect { session_id: sid(100) },
            msg(100, "hello"),
            Event::ReceiveData { session_id: sid(100), data: Bytes::from_static(&[1, 2, 3]) },
            Event::Disconnect { session_id: sid(100), reason: DisconnectReason::NetworkDisconnected },
        ];
        let counts: Vec<usize> = events.iter().map(|e| reg.dispatch(e.clone())).collect();
        assert_eq!(counts, [2, 3, 2, 2]);
        for stream in [&mut a, &mut b] {
            let got: Vec<Event> = block_on(stream.take(4).collect());
            assert_eq!(got, events);
        }
        assert_eq!(*seen.lock().unwrap(), [msg(100, "hello")]);
    }

    #[test]
    fn dropping_a_stream_unsubscribes_it() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let keep = reg.events(sid(100)).unwrap();
        let dropped = reg.events(sid(100)).unwrap();
        assert_eq!(reg.stream_count(sid(100)), 2);
        drop(dropped);
        assert_eq!(reg.stream_count(sid(100)), 1);
        assert_eq!(reg.dispatch(msg(100, "x")), 1);
        drop(keep);
        assert_eq!(reg.stream_count(sid(100)), 0);
        assert_eq!(reg.dispatch(msg(100, "y")), 0);
    }

    #[test]
    fn closing_a_session_ends_its_streams_and_drops_its_listeners() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let mut stream = reg.events(sid(100)).unwrap();
        reg.on(EventKind::ReceiveMessage, sid(100), |_| {}).unwrap();
        reg.dispatch(msg(100, "last"));
        assert!(reg.close_session(sid(100)));
        assert!(!reg.is_open(sid(100)));
        assert!(!reg.close_session(sid(100)));
        // Buffered events are still read, then the stream ends.
        assert_eq!(block_on(stream.next()), Some(msg(100, "last")));
        assert_eq!(block_on(stream.next()), None);
        assert_eq!(reg.on(EventKind::ReceiveMessage, sid(100), |_| {}).unwrap_err().code(), 401);
        drop(stream); // dropping after close is harmless
    }

    #[test]
    fn a_stream_outliving_its_registry_is_harmless() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let mut stream = reg.events(sid(100)).unwrap();
        drop(reg);
        assert_eq!(block_on(stream.next()), None);
    }

    #[test]
    fn listeners_may_call_back_into_the_registry() {
        // A listener that replaces itself and turns off another kind: no deadlock, since it runs unlocked.
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let calls = Arc::new(AtomicUsize::new(0));
        let (r, c) = (reg.clone(), calls.clone());
        reg.on(EventKind::ReceiveMessage, sid(100), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            r.off(EventKind::Connect, sid(100)).unwrap();
            r.on(EventKind::ReceiveMessage, sid(100), |_| {}).unwrap();
        })
        .unwrap();
        reg.on(EventKind::Connect, sid(100), |_| {}).unwrap();
        reg.dispatch(msg(100, "a"));
        reg.dispatch(msg(100, "b"));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the replacement took over for the second event");
        assert!(!reg.has_listener(EventKind::Connect, sid(100)));
    }

    #[test]
    fn dispatch_from_many_threads_reaches_every_stream_in_one_order() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        let a = reg.events(sid(100)).unwrap();
        let b = reg.events(sid(100)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        reg.dispatch(msg(100, &format!("{t}:{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        reg.close_session(sid(100));
        let a: Vec<Event> = block_on(a.collect());
        let b: Vec<Event> = block_on(b.collect());
        assert_eq!(a.len(), 400);
        assert_eq!(a, b);
    }

    #[test]
    fn events_nobody_listens_to_are_held_for_the_first_stream() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        assert_eq!(reg.dispatch(msg(100, "early")), 0);
        assert_eq!(reg.dispatch(Event::ReceiveData { session_id: sid(100), data: Bytes::from_static(b"d") }), 0);
        assert_eq!(reg.held_count(sid(100)), 2);
        let mut events = reg.events(sid(100)).unwrap();
        reg.dispatch(msg(100, "late"));
        assert_eq!(block_on(events.next()), Some(msg(100, "early")));
        assert_eq!(
            block_on(events.next()),
            Some(Event::ReceiveData { session_id: sid(100), data: Bytes::from_static(b"d") })
        );
        assert_eq!(block_on(events.next()), Some(msg(100, "late")));
        assert_eq!(reg.held_count(sid(100)), 0);
        // A second stream does not see them again.
        let mut second = reg.events(sid(100)).unwrap();
        assert!(second.next().now_or_never().is_none());
    }

    #[test]
    fn a_new_listener_gets_the_held_events_of_its_kind_only_and_connect_is_not_held() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        reg.dispatch(Event::Connect { session_id: sid(100) });
        reg.dispatch(msg(100, "one"));
        reg.dispatch(Event::ReceiveData { session_id: sid(100), data: Bytes::from_static(b"d") });
        reg.dispatch(msg(100, "two"));
        assert_eq!(reg.held_count(sid(100)), 3);
        let (seen, listener) = recorder();
        reg.on(EventKind::ReceiveMessage, sid(100), listener).unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![msg(100, "one"), msg(100, "two")]);
        assert_eq!(reg.held_count(sid(100)), 1, "the data waits for its own listener or a stream");
        assert_eq!(reg.dispatch(msg(100, "three")), 1);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn events_without_credit_held_for_a_session_are_bounded() {
        let reg = EventRegistry::new();
        reg.open_session(sid(100), &app());
        for _ in 0..MAX_HELD_EVENTS + 10 {
            reg.dispatch(Event::Disconnect { session_id: sid(100), reason: DisconnectReason::PeerAppExit });
        }
        assert_eq!(reg.held_count(sid(100)), MAX_HELD_EVENTS);
    }
}
