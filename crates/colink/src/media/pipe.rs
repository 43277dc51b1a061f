//! The two ends of a stream: the SOURCE pipe (producer surface → congestion control → H.264 encoder → the
//! session) and the SINK pipe (the session → bounded queue → H.264 decoder → transforms → consumer surface).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_media::pixel::ColorMatrix;
use colink_media::transform::{Flip, Rotation as MediaRotation, transform};
use colink_media::video::{EncoderConfig, H264Decoder, H264Encoder};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, trace, warn};

use super::congestion::{Admit, Congestion, CongestionConfig};
use super::wire::{StreamMessage, VideoFrameHeader, WireTransform};
use super::{FrameFate, PixelFormat, PixelMap, ReceivedFrame, StreamStats, cpu, receive_end_not_started};
use crate::api::{Error, FlipOptions, Rotation, SessionId, StreamId, SurfaceParam, VideoPixelFormat};
use crate::driver::{LinkId, Node};
use crate::lock;
use colink_proto::{ChannelKind, SessionKey};

/// Most frames a SINK keeps waiting for its consumer (3 s at 30 fps); beyond it the oldest group is dropped.
pub(crate) const MAX_QUEUED_FRAMES: usize = 90;
/// Most encoded bytes a SINK keeps waiting for its consumer.
pub(crate) const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// A stream-signalling message to send on a session (key frame requests raised where no task can await).
pub(crate) type Signal = (SessionId, StreamMessage);

/// An encoded frame on its way to the session.
struct Outgoing {
    payload: Bytes,
    queued_at: Instant,
}

/// The sending end of a SOURCE stream.
pub(crate) struct SourcePipe {
    pub(crate) stream: StreamId,
    pub(crate) name: String,
    /// The stream's configured bitrate (the congestion controller's ceiling).
    pub(crate) bitrate: u32,
    /// The YUV matrix RGB frames are converted with (BT.709 when the stream asked for BT709_LIMIT).
    color: ColorMatrix,
    /// The producer surface's parameters (set by `get_surface_id`).
    pub(crate) param: Option<SurfaceParam>,
    /// The peer's SINK of the same name has started.
    pub(crate) peer_ready: bool,
    running: Option<Running>,
    seq: u32,
    stats: StreamStats,
    congestion: Congestion,
}

struct Running {
    encoder: H264Encoder,
    out: mpsc::UnboundedSender<Outgoing>,
    force_key: bool,
}

impl SourcePipe {
    pub(crate) fn new(stream: StreamId, name: String, bitrate: u32, color: ColorMatrix) -> Self {
        Self {
            stream,
            name,
            bitrate,
            color,
            param: None,
            peer_ready: false,
            running: None,
            seq: 0,
            stats: StreamStats::default(),
            congestion: Congestion::new(congestion_config(bitrate)),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts encoding: an encoder for the surface's size at the stream's bitrate, and the task that hands
    /// encoded frames to the session and reports their delivery to the congestion controller.
    pub(crate) fn start(
        pipe: &Arc<Mutex<Self>>,
        node: Node,
        binding: (LinkId, SessionKey),
        span: tracing::Span,
    ) -> Result<(), Error> {
        let mut p = lock(pipe);
        if p.running.is_some() {
            return Ok(());
        }
        let param = p.param.ok_or_else(|| {
            Error::invalid_arg(
                "stream_id",
                format_args!("stream {} has no surface: call get_surface_id first", p.stream),
            )
        })?;
        p.congestion = Congestion::new(congestion_config(p.bitrate));
        let config = EncoderConfig {
            color: p.color,
            ..EncoderConfig::new(param.width, param.height, p.congestion.target_bitrate())
        };
        let encoder = H264Encoder::new(config).map_err(|e| Error::invalid_arg("param", e))?;
        let (out, rx) = mpsc::unbounded_channel();
        p.running = Some(Running { encoder, out, force_key: true });
        tokio::spawn(tracing::Instrument::instrument(run_source(Arc::downgrade(pipe), node, binding, rx), span));
        debug!(stream = %p.stream, width = param.width, height = param.height, bitrate = p.bitrate, "source started");
        Ok(())
    }

    /// Stops encoding (the encoder is released; frames already queued still go out).
    pub(crate) fn stop(&mut self) {
        if self.running.take().is_some() {
            debug!(stream = %self.stream, "source stopped");
        }
    }

    /// The peer's SINK of this name (re)started: frames may flow, and the first must be a key frame, since the
    /// sink discarded what came before.
    pub(crate) fn peer_sink_started(&mut self) {
        self.peer_ready = true;
        if let Some(r) = &mut self.running {
            r.force_key = true;
        }
    }

    /// The peer asked for a key frame.
    pub(crate) fn key_frame_requested(&mut self) {
        self.stats.key_frame_requests += 1;
        if let Some(r) = &mut self.running {
            r.force_key = true;
        }
    }

    /// The figures, with the controller's.
    pub(crate) fn stats(&self) -> StreamStats {
        let c = self.congestion.stats();
        StreamStats { bitrate: self.congestion.target_bitrate(), bitrate_decreases: c.decreases, ..self.stats }
    }

    /// [`ProducerSurface::push`](super::ProducerSurface::push).
    pub(crate) fn push(pipe: &Arc<Mutex<Self>>, frame: &PixelMap, timestamp: Duration) -> Result<FrameFate, Error> {
        let mut guard = lock(pipe);
        let p = &mut *guard;
        let Some(param) = p.param else {
            return Err(Error::invalid_arg("surface_id", "the surface was released"));
        };
        if (frame.width(), frame.height()) != (param.width, param.height) {
            return Err(Error::invalid_arg(
                "frame",
                format_args!(
                    "is {}x{}, the surface is {}x{}",
                    frame.width(),
                    frame.height(),
                    param.width,
                    param.height
                ),
            ));
        }
        let Some(running) = p.running.as_mut() else {
            return Err(Error::invalid_arg("stream_id", format_args!("stream {} is not started", p.stream)));
        };
        if !p.peer_ready {
            return Err(receive_end_not_started(format_args!("the peer's SINK stream {:?} stopped", p.name)));
        }
        p.seq = p.seq.wrapping_add(1);
        p.stats.frames_pushed += 1;
        let now = tokio::time::Instant::now().into_std();
        let key = match p.congestion.admit(now) {
            Admit::Drop => {
                p.stats.frames_dropped += 1;
                trace!(seq = p.seq, wait = ?p.congestion.oldest_wait(now), "frame dropped: link congested");
                return Ok(FrameFate::Dropped);
            }
            Admit::Encode { key } => key || std::mem::take(&mut running.force_key),
        };
        // Re-targeting restarts openh264's rate control with a key frame, so the encoder follows the controller
        // in steps: decreases of more than 1/7 (a group is being dropped anyway), increases of more than 1/5, and
        // back to the configured bitrate.
        let (target, current) = (p.congestion.target_bitrate(), running.encoder.bitrate());
        if target < current - current / 7
            || target > current + current / 5
            || (target == p.bitrate && current != target)
        {
            debug!(from = running.encoder.bitrate(), to = target, "encoder bitrate");
            if let Err(e) = running.encoder.set_bitrate(target) {
                warn!(%e, "could not change the encoder's bitrate");
            }
        }
        if key {
            running.encoder.request_keyframe();
        }
        let encoded = cpu(|| running.encoder.encode(frame)).map_err(|e| Error::invalid_arg("frame", e))?;
        let Some(encoded) = encoded else {
            p.stats.frames_dropped += 1;
            return Ok(FrameFate::Dropped);
        };
        let header = VideoFrameHeader {
            seq: p.seq,
            timestamp_us: u64::try_from(timestamp.as_micros()).unwrap_or(u64::MAX),
            key: encoded.keyframe,
            bt709: p.color == ColorMatrix::Bt709,
            transform: WireTransform { rotation: param.rotation, flip: param.flip },
        };
        let payload = StreamMessage::Frame(header, encoded.data).encode();
        p.congestion.on_sent(now, payload.len() as u64);
        p.stats.frames_sent_or_received += 1;
        p.stats.bytes += payload.len() as u64;
        p.stats.key_frames += u64::from(header.key);
        if running.out.send(Outgoing { payload, queued_at: now }).is_err() {
            // The sending task ended: the session is gone.
            return Err(Error::invalid_arg("stream_id", format_args!("stream {}'s session ended", p.stream)));
        }
        Ok(FrameFate::Queued { key: header.key })
    }

    fn delivered(&mut self, bytes: u64, queued_at: Instant, ok: bool) {
        if ok {
            let now = tokio::time::Instant::now().into_std();
            self.congestion.on_delivered(now, bytes, now.saturating_duration_since(queued_at));
            self.stats.frames_delivered += 1;
        } else {
            self.congestion.on_lost(bytes);
        }
    }
}

fn congestion_config(bitrate: u32) -> CongestionConfig {
    CongestionConfig::new(colink_media::video::MIN_BITRATE.min(bitrate), bitrate)
}

/// Hands a source's encoded frames to the session in order, several in flight at once, and reports each
/// delivery back to the pipe's congestion controller.
async fn run_source(
    pipe: Weak<Mutex<SourcePipe>>,
    node: Node,
    (link, session): (LinkId, SessionKey),
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    while open || !inflight.is_empty() {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(o) => {
                    let bytes = o.payload.len() as u64;
                    match node.enqueue(link, session, ChannelKind::StreamMedia, o.payload).await {
                        Ok(delivery) => inflight.push(async move { (delivery.await.is_ok(), bytes, o.queued_at) }),
                        Err(e) => {
                            debug!(%e, "frame not queued");
                            if let Some(p) = pipe.upgrade() {
                                lock(&p).delivered(bytes, o.queued_at, false);
                            }
                        }
                    }
                }
                None => open = false,
            },
            Some((ok, bytes, queued_at)) = inflight.next(), if !inflight.is_empty() => {
                let Some(p) = pipe.upgrade() else { return };
                lock(&p).delivered(bytes, queued_at, ok);
            }
        }
    }
}

/// The codec's edge: the API's rotation and flip as colink-media's pixel transform takes them.
fn media_transform(t: WireTransform) -> (MediaRotation, Option<Flip>) {
    let rotation = match t.rotation {
        Rotation::None => MediaRotation::None,
        Rotation::Deg90 => MediaRotation::Deg90,
        Rotation::Deg180 => MediaRotation::Deg180,
        Rotation::Deg270 => MediaRotation::Deg270,
    };
    let flip = t.flip.map(|f| match f {
        FlipOptions::Horizontal => Flip::Horizontal,
        FlipOptions::Vertical => Flip::Vertical,
    });
    (rotation, flip)
}

/// The receiving end of a SINK stream.
pub(crate) struct SinkPipe {
    pub(crate) stream: StreamId,
    pub(crate) session: SessionId,
    pub(crate) name: String,
    pub(crate) started: bool,
    /// The consumer surface's parameters (set by `set_surface_id`).
    pub(crate) param: Option<SurfaceParam>,
    surface: Weak<SurfaceSlot>,
    queue: VecDeque<(VideoFrameHeader, Bytes)>,
    queued_bytes: usize,
    decoder: Option<H264Decoder>,
    await_key: bool,
    pub(crate) stats: StreamStats,
    signals: mpsc::UnboundedSender<Signal>,
}

impl SinkPipe {
    pub(crate) fn new(
        stream: StreamId,
        session: SessionId,
        name: String,
        signals: mpsc::UnboundedSender<Signal>,
    ) -> Self {
        Self {
            stream,
            session,
            name,
            started: false,
            param: None,
            surface: Weak::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            decoder: None,
            await_key: true,
            stats: StreamStats::default(),
            signals,
        }
    }

    /// Binds `slot` (replacing and releasing any earlier surface).
    pub(crate) fn bind(pipe: &Arc<Mutex<Self>>, slot: &Arc<SurfaceSlot>, param: SurfaceParam) {
        let old = {
            let mut p = lock(pipe);
            p.param = Some(param);
            std::mem::replace(&mut p.surface, Arc::downgrade(slot))
        };
        if let Some(old) = old.upgrade().filter(|o| !Arc::ptr_eq(o, slot)) {
            old.release();
        }
        *lock(&slot.sink) = Some(Arc::clone(pipe));
        slot.notify.notify_one();
    }

    /// Starts (`started`) or stops receiving; stopping discards what waits and releases the decoder.
    pub(crate) fn set_started(&mut self, started: bool) {
        self.started = started;
        if !started {
            self.queue.clear();
            self.queued_bytes = 0;
            self.decoder = None;
            self.await_key = true;
        }
    }

    /// Releases everything: the decoder, queued frames and the bound surface (its consumer sees the end).
    pub(crate) fn release(&mut self) {
        self.set_started(false);
        self.param = None;
        if let Some(slot) = std::mem::take(&mut self.surface).upgrade() {
            slot.release();
        }
    }

    /// A frame arrived from the peer's SOURCE.
    pub(crate) fn on_frame(&mut self, header: VideoFrameHeader, data: Bytes) {
        if !self.started {
            self.stats.frames_dropped += 1;
            debug!(stream = %self.stream, seq = header.seq, "frame for a stopped sink discarded");
            return;
        }
        self.stats.frames_sent_or_received += 1;
        self.stats.bytes += data.len() as u64;
        self.stats.key_frames += u64::from(header.key);
        if self.await_key && !header.key {
            self.stats.frames_dropped += 1;
            return;
        }
        self.await_key = false;
        self.queued_bytes += data.len();
        self.queue.push_back((header, data));
        while self.queue.len() > MAX_QUEUED_FRAMES || self.queued_bytes > MAX_QUEUED_BYTES {
            self.drop_group();
        }
        if let Some(slot) = self.surface.upgrade() {
            slot.notify.notify_one();
        }
    }

    /// Drops the oldest queued frame and everything after it up to the next key frame; with none left, waits
    /// for a key frame and asks the source for one.
    fn drop_group(&mut self) {
        let mut dropped = 0u64;
        while let Some((h, d)) = self.queue.front() {
            if dropped > 0 && h.key {
                break;
            }
            self.queued_bytes -= d.len();
            self.queue.pop_front();
            dropped += 1;
        }
        self.stats.frames_dropped += dropped;
        debug!(stream = %self.stream, dropped, "sink queue full: dropped a group of frames");
        if self.queue.is_empty() {
            self.request_key_frame();
        }
    }

    fn request_key_frame(&mut self) {
        self.await_key = true;
        self.stats.key_frame_requests += 1;
        let _ = self.signals.send((self.session, StreamMessage::KeyFrameRequest { name: self.name.clone() }));
    }

    /// Decodes queued frames until one comes out (on the consumer's task).
    fn pop_decoded(&mut self) -> Option<ReceivedFrame> {
        let param = self.param?;
        while let Some((header, data)) = self.queue.pop_front() {
            self.queued_bytes -= data.len();
            if self.decoder.is_none() {
                match H264Decoder::new() {
                    Ok(d) => self.decoder = Some(d),
                    Err(e) => {
                        warn!(%e, "no H.264 decoder");
                        self.stats.frames_dropped += 1;
                        continue;
                    }
                }
            }
            let decoder = self.decoder.as_mut()?;
            match cpu(|| decoder.decode(&data)) {
                Ok(Some(picture)) => match finish_picture(&picture, header.transform, &param) {
                    Ok(pixels) => {
                        self.stats.frames_delivered += 1;
                        let timestamp = Duration::from_micros(header.timestamp_us);
                        let color = if header.bt709 { ColorMatrix::Bt709 } else { ColorMatrix::Bt601 };
                        return Some(ReceivedFrame { pixels, timestamp, seq: header.seq, color });
                    }
                    Err(e) => {
                        warn!(%e, "decoded picture could not be converted");
                        self.stats.frames_dropped += 1;
                    }
                },
                Ok(None) => trace!(seq = header.seq, "decoder produced no picture for this unit"),
                Err(e) => {
                    warn!(%e, seq = header.seq, "undecodable frame: dropping to the next key frame");
                    self.stats.frames_dropped += 1;
                    self.decoder = None;
                    while self.queue.front().is_some_and(|(h, _)| !h.key) {
                        if let Some((_, d)) = self.queue.pop_front() {
                            self.queued_bytes -= d.len();
                            self.stats.frames_dropped += 1;
                        }
                    }
                    if self.queue.is_empty() {
                        self.request_key_frame();
                    }
                }
            }
        }
        None
    }
}

/// Applies the source's then the sink's transform and converts to the surface's pixel format.
fn finish_picture(picture: &PixelMap, source: WireTransform, param: &SurfaceParam) -> Result<PixelMap, String> {
    let (r, f) = media_transform(source);
    let mut pixels = if (r, f) == (MediaRotation::None, None) { picture.clone() } else { transform(picture, r, f) };
    let (r, f) = media_transform(WireTransform { rotation: param.rotation, flip: param.flip });
    if (r, f) != (MediaRotation::None, None) {
        pixels = transform(&pixels, r, f);
    }
    let format = match param.format {
        VideoPixelFormat::Nv12 => PixelFormat::Nv12,
        VideoPixelFormat::Nv21 => PixelFormat::Nv21,
        _ => PixelFormat::I420,
    };
    if pixels.format() == format { Ok(pixels) } else { pixels.convert(format).map_err(|e| e.to_string()) }
}

/// A consumer surface's shared state: the SINK it is bound to, and a wake-up for its reader.
pub(crate) struct SurfaceSlot {
    pub(crate) id: u64,
    pub(crate) sink: Mutex<Option<Arc<Mutex<SinkPipe>>>>,
    pub(crate) notify: Notify,
    released: AtomicBool,
}

impl SurfaceSlot {
    pub(crate) fn new(id: u64) -> Self {
        Self { id, sink: Mutex::new(None), notify: Notify::new(), released: AtomicBool::new(false) }
    }

    /// Ends the surface: its reader gets `None`.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        lock(&self.sink).take();
        self.notify.notify_one();
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    pub(crate) fn try_next_frame(&self) -> Option<ReceivedFrame> {
        let sink = lock(&self.sink).clone()?;
        let mut s = lock(&sink);
        s.pop_decoded()
    }

    pub(crate) async fn next_frame(&self) -> Option<ReceivedFrame> {
        loop {
            let notified = self.notify.notified();
            if let Some(f) = self.try_next_frame() {
                return Some(f);
            }
            if self.is_released() {
                return None;
            }
            notified.await;
        }
    }
}
