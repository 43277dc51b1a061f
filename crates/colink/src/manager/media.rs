//! The Manager's system API for images and media streams (`sendImage`, `createStream`, surfaces,
//! `startStream` ...), and the handling of what arrives on the image and stream-media lanes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use colink_media::jpeg::{self, DecodeLimits};
use colink_media::video::{MAX_BITRATE, MAX_ENCODE_LONG_SIDE, MAX_ENCODE_SHORT_SIDE, MIN_BITRATE};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info_span, warn};

use super::{Inner, Manager, Phase, lock};
use crate::api::{
    CollaborateEventInfo, CollaborateEventType, ColorSpace, DisconnectReason, Error, ErrorCode, ErrorKind, Event,
    SessionId, StreamId, StreamParam, StreamRole, SurfaceParam, validate,
};
use crate::driver::LinkId;
use crate::image_verdict::ImageVerdict;
use crate::media::pipe::{Signal, SinkPipe, SourcePipe, SurfaceSlot};
use crate::media::wire::{ImageHeader, StreamMessage};
use crate::media::{
    ColorMatrix, ConsumerSurface, PixelMap, ProducerSurface, StreamStats, cpu, receive_end_not_started,
};
use colink_proto::{ChannelKind, SessionKey};

/// The JPEG quality `send_image` uses when the app gives none (the reference's default).
pub const DEFAULT_IMAGE_QUALITY: i32 = 30;

/// How long `send_image` waits, after the peer holds the image, for the peer's verdict (docs/media.md §3.4).
pub const IMAGE_VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

/// Images one Manager checks and decodes at once, across all sessions (each session's one at a time, in order).
pub const IMAGE_DECODES: usize = 2;

/// Received images one session holds for its checker (their bytes also count against receive credit); one
/// more is refused with a verdict, so the sender's `send_image` fails instead of memory growing.
pub const IMAGE_QUEUE: usize = 256;

/// A received image waiting for its session's checker, with its receive credit.
struct ImageJob {
    payload: Bytes,
    credit: Option<Arc<crate::driver::ReadCredit>>,
}

/// The peer's answer to an image this side sent: `Err(reason)` when it refused it.
type Verdict = Result<(), String>;

/// Streams and surfaces of one manager.
#[derive(Default)]
pub(super) struct MediaState {
    streams: BTreeMap<StreamId, Stream>,
    /// Producer surfaces: surface id → its SOURCE stream.
    producers: HashMap<u64, StreamId>,
    /// Consumer surfaces not yet dropped.
    consumers: HashMap<u64, Weak<SurfaceSlot>>,
    /// The name of each session's started peer SINK.
    peer_sinks: BTreeMap<SessionId, String>,
    next_surface: u64,
    /// `send_image` calls waiting for the peer's verdict, by session and image tag, oldest first.
    verdicts: BTreeMap<(SessionId, u64), VecDeque<oneshot::Sender<Verdict>>>,
    /// Each session's image checker: received images wait here (their bytes held by their receive credit)
    /// and are checked and decoded one at a time per session, off the event loop.
    checkers: BTreeMap<SessionId, mpsc::Sender<ImageJob>>,
    /// Decodes allowed at once ([`IMAGE_DECODES`]), created with the first image.
    decodes: Option<Arc<Semaphore>>,
}

#[derive(Clone)]
enum Stream {
    Source { session: SessionId, pipe: Arc<Mutex<SourcePipe>> },
    Sink { session: SessionId, pipe: Arc<Mutex<SinkPipe>> },
}

impl Stream {
    fn session(&self) -> SessionId {
        match self {
            Self::Source { session, .. } | Self::Sink { session, .. } => *session,
        }
    }

    fn role(&self) -> StreamRole {
        match self {
            Self::Source { .. } => StreamRole::Source,
            Self::Sink { .. } => StreamRole::Sink,
        }
    }
}

impl MediaState {
    fn surface_id(&mut self) -> u64 {
        // Surface ids look like the reference's (large decimal numbers) and never repeat within a manager.
        self.next_surface += 1;
        (1 << 40) + self.next_surface
    }
}

impl Manager {
    /// `sendImage(id, image, quality)` (system only): encodes `image` as JPEG at `quality` (0..=100; the
    /// reference's default is [`DEFAULT_IMAGE_QUALITY`]) and resolves when the peer holds it; the peer decodes
    /// it back to the same width, height and pixel format and raises `receiveImage`. Unlike the reference,
    /// no started stream is needed and nothing is dropped: a send that fails is an error here plus a
    /// `SEND_FAILURE` event. `202` for a non-system app, `401` for a bad quality or session.
    pub async fn send_image(&self, id: SessionId, image: &PixelMap, quality: i32) -> Result<(), Error> {
        self.system_session(id, "send_image")?;
        let quality = validate::image_quality(quality)?;
        let header = ImageHeader { format: image.format(), width: image.width(), height: image.height() };
        let jpeg = cpu(|| jpeg::encode(image, quality)).map_err(|e| Error::invalid_arg("image", e))?;
        debug!(session = %id, width = image.width(), height = image.height(), quality, bytes = jpeg.len(), "image encoded");
        let payload = header.encode(&jpeg).map_err(|e| Error::invalid_arg("image", e))?;
        // The peer answers every image with a verdict once it checked and decoded it; wait for it, so that an
        // image the peer cannot take fails here instead of vanishing there.
        let tag = ImageVerdict::tag(&payload);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.media).verdicts.entry((id, tag)).or_default().push_back(tx);
        let sent = self.send(id, ChannelKind::Image, payload).await;
        let waited = match sent {
            Ok(()) => tokio::time::timeout(IMAGE_VERDICT_TIMEOUT, rx).await,
            Err(e) => {
                drop(rx);
                forget_verdicts(&self.inner, id, tag);
                return Err(e);
            }
        };
        let failure = match waited {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(reason))) => Error::invalid_arg("image", format_args!("the peer refused the image: {reason:?}"))
                .with_kind(ErrorKind::Refused),
            Ok(Err(_)) => Error::link_lost(
                DisconnectReason::NetworkDisconnected,
                format!("session {id} ended before the peer confirmed the image"),
            ),
            Err(_) => {
                forget_verdicts(&self.inner, id, tag);
                Error::invalid_arg(
                    "image",
                    format_args!(
                        "the peer holds the image but did not confirm it within {} s",
                        IMAGE_VERDICT_TIMEOUT.as_secs()
                    ),
                )
            }
        };
        self.inner.registry.dispatch(Event::CollaborateEvent {
            session_id: id,
            info: CollaborateEventInfo::new(CollaborateEventType::SendFailure, Some(failure.to_string())),
        });
        Err(failure)
    }

    /// `createStream(id, param)` (system only): a stream on session `id`, paired with the peer's stream of
    /// the same name. A SOURCE needs the session's `need_send_stream`, a SINK its `need_receive_stream`
    /// (`401`); one stream per role per session (`32300001`); the bitrate must be in
    /// [`MIN_BITRATE`]..=[`MAX_BITRATE`] (`32300003`); the only color space conversion target supported is
    /// BT709_LIMIT (`32300004`). Stream ids start at 1000 and are shared by all sessions.
    pub fn create_stream(&self, id: SessionId, param: StreamParam) -> Result<StreamId, Error> {
        let options = {
            let state = self.state();
            let s = state.sessions.get(&id).ok_or_else(|| Error::unknown_session(id))?;
            s.caller.check_system("create_stream")?;
            if !matches!(s.phase, Phase::Connected { .. }) {
                return Err(Error::not_connected(id));
            }
            s.options.clone()
        };
        param.validate()?;
        if !(MIN_BITRATE..=MAX_BITRATE).contains(&param.bitrate) {
            return Err(Error::new(
                ErrorCode::BitrateNotSupported,
                format!("param.bitrate: {} bit/s is outside {MIN_BITRATE}..={MAX_BITRATE}", param.bitrate),
            ));
        }
        if let Some(c) = param.color_space_conversion_target
            && c != ColorSpace::BT709_LIMIT
        {
            return Err(Error::new(
                ErrorCode::ColorSpaceNotSupported,
                format!("param.colorSpaceConversionTarget: {c} is not supported (only BT709_LIMIT = 16)"),
            ));
        }
        validate::stream_role(param.role, &options)?;
        let mut media = lock(&self.inner.media);
        if media.streams.values().any(|s| s.session() == id && s.role() == param.role) {
            return Err(Error::new(
                ErrorCode::OnlyOneStreamPerRole,
                format!("session {id} already has a {:?} stream", param.role),
            ));
        }
        let stream_id =
            self.inner.stream_ids.allocate().ok_or_else(|| Error::invalid_arg("param", "no stream ids left"))?;
        let stream = match param.role {
            StreamRole::Sink => Stream::Sink {
                session: id,
                pipe: Arc::new(Mutex::new(SinkPipe::new(stream_id, id, param.name, self.inner.signals.clone()))),
            },
            _ => {
                // BT709_LIMIT (the only target accepted): RGB frames become BT.709 limited-range YUV.
                let color = match param.color_space_conversion_target {
                    Some(_) => ColorMatrix::Bt709,
                    None => ColorMatrix::Bt601,
                };
                let mut pipe = SourcePipe::new(stream_id, param.name, param.bitrate, color);
                pipe.peer_ready = media.peer_sinks.get(&id).is_some_and(|n| *n == pipe.name);
                Stream::Source { session: id, pipe: Arc::new(Mutex::new(pipe)) }
            }
        };
        media.streams.insert(stream_id, stream);
        debug!(session = %id, stream = %stream_id, role = ?param.role, "stream created");
        Ok(stream_id)
    }

    /// `getSurfaceId(streamId, param)` (system only, SOURCE streams): the id (a decimal u64) of the producer
    /// surface the app pushes frames into ([`Manager::producer_surface`]). `width` and `height` fix the
    /// encoded size (even numbers, at most 3840x2160 in either orientation; `401` otherwise); asking again
    /// before the stream starts resizes the same surface. The frames pushed may be in any supported pixel
    /// format; `param.format` does not matter on this side.
    pub fn get_surface_id(&self, stream: StreamId, param: SurfaceParam) -> Result<String, Error> {
        let Stream::Source { pipe, .. } = self.system_stream(stream, "get_surface_id")? else {
            return Err(Error::invalid_arg(
                "stream_id",
                format_args!("stream {stream} is a SINK: a SINK binds a consumer surface with set_surface_id"),
            ));
        };
        check_surface(&param)?;
        let mut media = lock(&self.inner.media);
        let mut p = lock(&pipe);
        if p.is_running() {
            return Err(Error::invalid_arg("stream_id", format_args!("stream {stream} is running; stop it first")));
        }
        p.param = Some(param);
        let id = match media.producers.iter().find(|(_, s)| **s == stream) {
            Some((id, _)) => *id,
            None => {
                let id = media.surface_id();
                media.producers.insert(id, stream);
                id
            }
        };
        Ok(id.to_string())
    }

    /// The producer surface named `surface_id` (from [`Manager::get_surface_id`]). `401` for an id that names
    /// no producer surface.
    pub fn producer_surface(&self, surface_id: &str) -> Result<ProducerSurface, Error> {
        let id = validate::surface_id(surface_id)?;
        let media = lock(&self.inner.media);
        let stream = *media
            .producers
            .get(&id)
            .ok_or_else(|| Error::invalid_arg("surface_id", format_args!("no producer surface has id {id}")))?;
        match media.streams.get(&stream) {
            Some(Stream::Source { pipe, .. }) => Ok(ProducerSurface { id, stream, pipe: Arc::downgrade(pipe) }),
            _ => Err(Error::invalid_arg("surface_id", format_args!("surface {id} was released"))),
        }
    }

    /// A new consumer surface (the reference's XComponent surface on the receiving side): bind it to a SINK
    /// stream with [`Manager::set_surface_id`] and its id; decoded frames then come out of it.
    pub fn create_surface(&self) -> ConsumerSurface {
        let mut media = lock(&self.inner.media);
        media.consumers.retain(|_, s| s.strong_count() > 0);
        let id = media.surface_id();
        let slot = Arc::new(SurfaceSlot::new(id));
        media.consumers.insert(id, Arc::downgrade(&slot));
        ConsumerSurface { slot }
    }

    /// `setSurfaceId(streamId, surfaceId, param)` (system only, SINK streams): binds the consumer surface
    /// `surface_id` ([`Manager::create_surface`]); its frames come out in `param.format` (NV12 or NV21;
    /// UNKNOWN gives I420), rotated and flipped by `param`, at the size the source encodes (the sink's width and
    /// height are not a scaling request). A surface bound earlier is released.
    pub fn set_surface_id(&self, stream: StreamId, surface_id: &str, param: SurfaceParam) -> Result<(), Error> {
        let Stream::Sink { pipe, .. } = self.system_stream(stream, "set_surface_id")? else {
            return Err(Error::invalid_arg(
                "stream_id",
                format_args!("stream {stream} is a SOURCE: a SOURCE gets its surface with get_surface_id"),
            ));
        };
        let id = validate::surface_id(surface_id)?;
        check_surface(&param)?;
        let slot = lock(&self.inner.media)
            .consumers
            .get(&id)
            .and_then(Weak::upgrade)
            .filter(|s| !s.is_released())
            .ok_or_else(|| Error::invalid_arg("surface_id", format_args!("no consumer surface has id {id}")))?;
        SinkPipe::bind(&pipe, &slot, param);
        Ok(())
    }

    /// `updateSurfaceParam(streamId, param)` (system only): changes the rotation and flip of a stream's surface
    /// while it runs (a SOURCE's transform travels with each frame; a SINK applies its own after it). Width,
    /// height and format cannot change on a live surface (`401` if they differ).
    pub fn update_surface_param(&self, stream: StreamId, param: SurfaceParam) -> Result<(), Error> {
        let entry = self.system_stream(stream, "update_surface_param")?;
        check_surface(&param)?;
        let mut slot = match &entry {
            Stream::Source { pipe, .. } => SlotRef::Source(lock(pipe)),
            Stream::Sink { pipe, .. } => SlotRef::Sink(lock(pipe)),
        };
        let current = slot
            .param()
            .ok_or_else(|| Error::invalid_arg("stream_id", format_args!("stream {stream} has no surface yet")))?;
        if (current.width, current.height, current.format) != (param.width, param.height, param.format) {
            return Err(Error::invalid_arg(
                "param",
                format_args!(
                    "only rotation and flip change on a live surface ({}x{} {:?} stays)",
                    current.width, current.height, current.format
                ),
            ));
        }
        *slot.param() = Some(SurfaceParam { rotation: param.rotation, flip: param.flip, ..current });
        Ok(())
    }

    /// `startStream(streamId)` (system only). A SINK tells its peer it is ready (resolves once the peer has
    /// that); a SOURCE starts encoding, which needs its surface ([`Manager::get_surface_id`]) and the peer's
    /// SINK of the same name started (`32300002` otherwise).
    pub async fn start_stream(&self, stream: StreamId) -> Result<(), Error> {
        let entry = self.system_stream(stream, "start_stream")?;
        let session = entry.session();
        let binding = self.binding(session)?;
        match entry {
            Stream::Sink { pipe, .. } => {
                let name = {
                    let mut p = lock(&pipe);
                    if p.started {
                        return Ok(());
                    }
                    p.set_started(true);
                    p.name.clone()
                };
                let result = self.signal(binding, StreamMessage::SinkStarted { name }).await;
                if result.is_err() {
                    lock(&pipe).set_started(false);
                }
                result
            }
            Stream::Source { pipe, .. } => {
                let name = lock(&pipe).name.clone();
                let peer = lock(&self.inner.media).peer_sinks.get(&session).cloned();
                match peer {
                    Some(n) if n == name => {}
                    Some(n) => {
                        return Err(receive_end_not_started(format_args!(
                            "the peer's started SINK stream is {n:?}, not {name:?}"
                        )));
                    }
                    None => {
                        return Err(receive_end_not_started(format_args!(
                            "the peer has not started a SINK stream named {name:?}"
                        )));
                    }
                }
                lock(&pipe).peer_ready = true;
                let span = info_span!("stream", id = %stream, session = %session);
                SourcePipe::start(&pipe, self.inner.node.clone(), binding, span)
            }
        }
    }

    /// `stopStream(streamId)` (system only): stops encoding (SOURCE) or receiving (SINK) and tells the peer;
    /// the encoder or decoder is released. A stopped stream can be started again.
    pub async fn stop_stream(&self, stream: StreamId) -> Result<(), Error> {
        let entry = self.system_stream(stream, "stop_stream")?;
        self.stop(&entry).await;
        Ok(())
    }

    /// `destroyStream(streamId)` (system only): stops the stream and forgets it; its surfaces are released.
    pub async fn destroy_stream(&self, stream: StreamId) -> Result<(), Error> {
        let entry = self.system_stream(stream, "destroy_stream")?;
        self.stop(&entry).await;
        release(&entry);
        let mut media = lock(&self.inner.media);
        media.streams.remove(&stream);
        media.producers.retain(|_, s| *s != stream);
        Ok(())
    }

    /// A stream's figures: frames pushed, sent or received, dropped, delivered; key frames; bitrate.
    pub fn stream_stats(&self, stream: StreamId) -> Result<StreamStats, Error> {
        let entry =
            lock(&self.inner.media).streams.get(&stream).cloned().ok_or_else(|| Error::unknown_stream(stream))?;
        Ok(match entry {
            Stream::Source { pipe, .. } => lock(&pipe).stats(),
            Stream::Sink { pipe, .. } => lock(&pipe).stats,
        })
    }

    async fn stop(&self, entry: &Stream) {
        let session = entry.session();
        let message = match entry {
            Stream::Source { pipe, .. } => {
                let mut p = lock(pipe);
                if !p.is_running() {
                    return;
                }
                p.stop();
                StreamMessage::SourceStopped { name: p.name.clone() }
            }
            Stream::Sink { pipe, .. } => {
                let mut p = lock(pipe);
                if !p.started {
                    return;
                }
                p.set_started(false);
                StreamMessage::SinkStopped { name: p.name.clone() }
            }
        };
        if let Ok(binding) = self.binding(session) {
            let _ = self.signal(binding, message).await;
        }
    }

    fn system_session(&self, id: SessionId, what: &str) -> Result<(), Error> {
        let state = self.state();
        let s = state.sessions.get(&id).ok_or_else(|| Error::unknown_session(id))?;
        s.caller.check_system(what)
    }

    /// The stream `id`, after checking its session's app is a system app.
    fn system_stream(&self, id: StreamId, what: &str) -> Result<Stream, Error> {
        let entry = lock(&self.inner.media).streams.get(&id).cloned().ok_or_else(|| Error::unknown_stream(id))?;
        match self.state().sessions.get(&entry.session()) {
            Some(s) => s.caller.check_system(what)?,
            None => return Err(Error::unknown_stream(id)),
        }
        Ok(entry)
    }

    async fn signal(&self, (link, key): (LinkId, SessionKey), message: StreamMessage) -> Result<(), Error> {
        self.inner
            .node
            .send(link, key, ChannelKind::StreamMedia, message.encode())
            .await
            .map_err(|e| Error::invalid_arg("stream_id", format_args!("the peer could not be told: {e}")))
    }
}

/// A locked pipe whose surface parameters are being changed.
enum SlotRef<'a> {
    Source(std::sync::MutexGuard<'a, SourcePipe>),
    Sink(std::sync::MutexGuard<'a, SinkPipe>),
}

impl SlotRef<'_> {
    fn param(&mut self) -> &mut Option<SurfaceParam> {
        match self {
            Self::Source(p) => &mut p.param,
            Self::Sink(p) => &mut p.param,
        }
    }
}

fn check_surface(param: &SurfaceParam) -> Result<(), Error> {
    param.validate()?;
    let (long, short) = (param.width.max(param.height), param.width.min(param.height));
    if long > MAX_ENCODE_LONG_SIDE || short > MAX_ENCODE_SHORT_SIDE {
        return Err(Error::invalid_arg(
            "param",
            format_args!(
                "{}x{} is larger than the H.264 encoder takes ({MAX_ENCODE_LONG_SIDE}x{MAX_ENCODE_SHORT_SIDE})",
                param.width, param.height
            ),
        ));
    }
    for (arg, v) in [("param.width", param.width), ("param.height", param.height)] {
        if v % 2 == 1 || v > colink_media::pixel::MAX_DIMENSION {
            return Err(Error::invalid_arg(
                arg,
                format_args!("must be even and at most {}, got {v}", colink_media::pixel::MAX_DIMENSION),
            ));
        }
    }
    Ok(())
}

fn release(entry: &Stream) {
    match entry {
        Stream::Source { pipe, .. } => {
            let mut p = lock(pipe);
            p.stop();
            p.param = None;
        }
        Stream::Sink { pipe, .. } => lock(pipe).release(),
    }
}

/// A session ended: its streams release their encoder, decoder and surfaces (the stream ids stay valid until
/// destroyed, but the streams cannot start again).
pub(super) fn session_ended(inner: &Inner, session: SessionId) {
    let entries: Vec<Stream> = {
        let mut media = lock(&inner.media);
        media.peer_sinks.remove(&session);
        // Images waiting for a verdict fail (their senders see the session end); the checker finishes the
        // images it holds and stops.
        media.verdicts.retain(|(s, _), _| *s != session);
        media.checkers.remove(&session);
        media.streams.values().filter(|s| s.session() == session).cloned().collect()
    };
    for entry in &entries {
        release(entry);
    }
}

/// A session was destroyed: its streams are forgotten.
pub(super) fn session_destroyed(inner: &Inner, session: SessionId) {
    session_ended(inner, session);
    let mut media = lock(&inner.media);
    let gone: Vec<StreamId> = media.streams.iter().filter(|(_, s)| s.session() == session).map(|(id, _)| *id).collect();
    for id in gone {
        media.streams.remove(&id);
        media.producers.retain(|_, s| *s != id);
    }
}

/// Drops the `send_image` waits of `session` for `tag` whose callers gave up.
fn forget_verdicts(inner: &Inner, session: SessionId, tag: u64) {
    let mut media = lock(&inner.media);
    if let Some(waiting) = media.verdicts.get_mut(&(session, tag)) {
        waiting.retain(|tx| !tx.is_closed());
        if waiting.is_empty() {
            media.verdicts.remove(&(session, tag));
        }
    }
}

/// A payload arrived on session `id`'s IMAGE lane: the peer's verdict on an image this side sent (handed to
/// the waiting `send_image`), or an image, queued with its receive `credit` for the session's checker.
pub(super) fn on_image(
    inner: &Arc<Inner>,
    id: SessionId,
    payload: &Bytes,
    credit: Option<Arc<crate::driver::ReadCredit>>,
) {
    if ImageVerdict::is_verdict(payload) {
        drop(credit);
        match ImageVerdict::decode(payload) {
            Ok(verdict) => {
                let waiting = {
                    let mut media = lock(&inner.media);
                    let key = (id, verdict.tag);
                    let first = media.verdicts.get_mut(&key).and_then(VecDeque::pop_front);
                    if media.verdicts.get(&key).is_some_and(VecDeque::is_empty) {
                        media.verdicts.remove(&key);
                    }
                    first
                };
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(verdict.refused.map_or(Ok(()), Err));
                    }
                    None => debug!(session = %id, "an image verdict nobody waits for (the send gave up)"),
                }
            }
            Err(e) => warn!(session = %id, error = %e, "ignoring a malformed image verdict"),
        }
        return;
    }
    let job = ImageJob { payload: payload.clone(), credit };
    let full = {
        let mut media = lock(&inner.media);
        let decodes = media.decodes.get_or_insert_with(|| Arc::new(Semaphore::new(IMAGE_DECODES))).clone();
        let checker = media.checkers.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(IMAGE_QUEUE);
            tokio::spawn(check_images(Arc::downgrade(inner), id, rx, decodes));
            tx
        });
        matches!(checker.try_send(job), Err(mpsc::error::TrySendError::Full(_)))
    };
    if full {
        // Refused, never dropped in silence: the sender's `send_image` fails with the reason.
        warn!(session = %id, "too many images wait for their check; refusing one");
        let reason = format!("{IMAGE_QUEUE} images already wait to be checked on this session");
        super::reply_on_image_lane(inner, id, ImageVerdict::refused(payload, &reason).encode());
    }
}

/// Checks and decodes session `id`'s images in order, at most [`IMAGE_DECODES`] at once across the Manager
/// and off the event loop; delivers each that passes (docs/media.md §3.3) and answers the sender with a
/// verdict either way.
async fn check_images(inner: Weak<Inner>, id: SessionId, mut jobs: mpsc::Receiver<ImageJob>, decodes: Arc<Semaphore>) {
    while let Some(ImageJob { payload, credit }) = jobs.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let system = lock(&inner.state).sessions.get(&id).is_some_and(|s| s.caller.is_system());
        let checked = if system {
            let _permit = decodes.acquire().await;
            let data = payload.clone();
            off_loop(move || check_image(&data)).await
        } else {
            Err("the receiving app is not a system app, so it may not receive images".to_owned())
        };
        let verdict = match checked {
            Ok(image) => {
                inner.registry.dispatch_received(Event::ReceiveImage { session_id: id, image }, credit);
                ImageVerdict::delivered(&payload)
            }
            Err(reason) => {
                warn!(session = %id, %reason, "refusing an image");
                drop(credit);
                ImageVerdict::refused(&payload, &reason)
            }
        };
        super::reply_on_image_lane(&inner, id, verdict.encode());
    }
}

/// Runs an image check off the event loop: on a multi-threaded runtime on the blocking pool; on a
/// current-thread runtime (tests in virtual time) in place, so virtual time does not move under it.
async fn off_loop(f: impl FnOnce() -> Result<PixelMap, String> + Send + 'static) -> Result<PixelMap, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(format!("the image check stopped: {e}")))
        }
        _ => f(),
    }
}

/// docs/media.md §3.3: the image an IMAGE-lane payload carries, or why it cannot be delivered.
fn check_image(payload: &Bytes) -> Result<PixelMap, String> {
    let (header, jpeg_bytes) = ImageHeader::decode(payload).map_err(|e| e.to_string())?;
    let picture = jpeg::decode(&jpeg_bytes, DecodeLimits::default()).map_err(|e| e.to_string())?;
    if (picture.width(), picture.height()) != (header.width, header.height) {
        return Err(format!(
            "the JPEG is {}x{}, its header says {}x{}",
            picture.width(),
            picture.height(),
            header.width,
            header.height
        ));
    }
    if header.format == picture.format() {
        Ok(picture)
    } else {
        picture.convert(header.format).map_err(|e| e.to_string())
    }
}

/// A stream-media payload arrived on session `id`.
pub(super) fn on_stream_message(inner: &Inner, id: SessionId, payload: &Bytes) {
    let message = match StreamMessage::decode(payload) {
        Ok(m) => m,
        Err(e) => {
            warn!(session = %id, error = %e, "dropping an undecodable stream message");
            return;
        }
    };
    let mut media = lock(&inner.media);
    let source = media.streams.values().find_map(|s| match s {
        Stream::Source { session, pipe } if *session == id => Some(Arc::clone(pipe)),
        _ => None,
    });
    let sink = media.streams.values().find_map(|s| match s {
        Stream::Sink { session, pipe } if *session == id => Some(Arc::clone(pipe)),
        _ => None,
    });
    match message {
        StreamMessage::SinkStarted { name } => {
            debug!(session = %id, %name, "peer sink started");
            if let Some(p) = &source {
                let mut p = lock(p);
                if p.name == name {
                    p.peer_sink_started();
                } else {
                    p.peer_ready = false;
                }
            }
            media.peer_sinks.insert(id, name);
        }
        StreamMessage::SinkStopped { name } => {
            debug!(session = %id, %name, "peer sink stopped");
            if media.peer_sinks.get(&id) == Some(&name) {
                media.peer_sinks.remove(&id);
            }
            if let Some(p) = &source {
                let mut p = lock(p);
                if p.name == name {
                    p.peer_ready = false;
                }
            }
        }
        StreamMessage::SourceStopped { name } => debug!(session = %id, %name, "peer source stopped"),
        StreamMessage::KeyFrameRequest { name } => match &source {
            Some(p) if lock(p).name == name => lock(p).key_frame_requested(),
            _ => debug!(session = %id, %name, "key frame request for no local source"),
        },
        StreamMessage::Frame(header, data) => match &sink {
            Some(p) => lock(p).on_frame(header, data),
            None => debug!(session = %id, seq = header.seq, "frame for no local sink discarded"),
        },
    }
}

/// Sends the stream signals raised where nothing can await (key frame requests).
pub(super) async fn run_signals(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Signal>) {
    while let Some((session, message)) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some((link, key)) = super::connected_binding(&inner, session) else { continue };
        let node = inner.node.clone();
        drop(inner);
        if let Err(e) = node.send(link, key, ChannelKind::StreamMedia, message.encode()).await {
            debug!(%e, "stream signal not delivered");
        }
    }
}
