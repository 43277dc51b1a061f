//! Images and media streams (the reference's system API): what travels, and the surfaces apps use.
//!
//! - Images: [`Manager::send_image`](crate::Manager::send_image) encodes a [`PixelMap`] as JPEG and sends it on
//!   the session's image lane; the peer decodes it back to the same size and pixel format and raises
//!   [`Event::ReceiveImage`](crate::Event::ReceiveImage).
//! - Streams: a SOURCE stream encodes the frames an app pushes into its [`ProducerSurface`] as H.264 and sends
//!   them on the stream-media lane; the peer's SINK stream decodes them into a [`ConsumerSurface`], rotated and
//!   flipped as the surfaces ask. [`congestion`] keeps the link's queue short, drops whole groups of frames when
//!   the link cannot keep up and lowers the bitrate toward what it carries.
//!
//! The pixel formats, JPEG and H.264 codecs and the picture transforms are the `colink-media` crate's;
//! [`wire`] is the payload format; `docs/media.md` describes all of it.

pub mod congestion;
pub(crate) mod pipe;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use colink_media::{ColorMatrix, PixelFormat, PixelMap};

use crate::api::{Error, ErrorCode, StreamId};

/// What became of a frame pushed into a [`ProducerSurface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameFate {
    /// Encoded and queued for the peer (`key`: as a key frame).
    Queued {
        /// Whether it was encoded as a key frame.
        key: bool,
    },
    /// Dropped: the link is congested (counted in [`StreamStats::frames_dropped`]).
    Dropped,
}

/// A frame that came out of a [`ConsumerSurface`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedFrame {
    /// The picture, in the surface's pixel format, rotated and flipped as the source and sink surfaces ask.
    pub pixels: PixelMap,
    /// The timestamp the source app gave the frame.
    pub timestamp: Duration,
    /// The source's frame number (frames the source dropped leave gaps).
    pub seq: u32,
    /// The YUV matrix of the picture (BT.709 when the source's stream asked for the BT709_LIMIT colour
    /// space, else BT.601); convert to RGB with it.
    pub color: ColorMatrix,
}

/// A stream's figures (see [`Manager::stream_stats`](crate::Manager::stream_stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// SOURCE: frames the app pushed while the stream ran.
    pub frames_pushed: u64,
    /// SOURCE: frames encoded and queued for the peer. SINK: frames received from the peer.
    pub frames_sent_or_received: u64,
    /// Frames dropped: by the SOURCE for congestion, by the SINK because its queue overflowed or a frame
    /// could not be decoded (each drop runs to the next key frame).
    pub frames_dropped: u64,
    /// SOURCE: frames the peer acknowledged. SINK: frames decoded and handed to the consumer surface.
    pub frames_delivered: u64,
    /// Key frames sent (SOURCE) or received (SINK).
    pub key_frames: u64,
    /// SINK: key frames requested from the source; SOURCE: key frame requests received.
    pub key_frame_requests: u64,
    /// Encoded bytes sent (SOURCE) or received (SINK).
    pub bytes: u64,
    /// SOURCE: the encoder's current target bitrate in bits per second (0 on a SINK).
    pub bitrate: u32,
    /// SOURCE: bitrate decreases for congestion.
    pub bitrate_decreases: u64,
}

/// The producer side of a SOURCE stream's surface: the app pushes raw frames into it. Get one with
/// [`Manager::producer_surface`](crate::Manager::producer_surface) for the id
/// [`Manager::get_surface_id`](crate::Manager::get_surface_id) returned. Cheap to clone.
#[derive(Clone)]
pub struct ProducerSurface {
    pub(crate) id: u64,
    pub(crate) stream: StreamId,
    pub(crate) pipe: std::sync::Weak<std::sync::Mutex<pipe::SourcePipe>>,
}

impl fmt::Debug for ProducerSurface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerSurface").field("id", &self.id).field("stream", &self.stream).finish()
    }
}

impl ProducerSurface {
    /// The surface id (the decimal string `get_surface_id` returned).
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// Pushes one frame with the app's `timestamp`: it is encoded on the calling thread and queued for the
    /// peer, or dropped when the link is congested (see [`FrameFate`]). The frame must have the surface's
    /// width and height and one of NV12, NV21, I420, RGBA8888, BGRA8888 or RGB888. `401` when the stream is
    /// not started, was destroyed, or the frame does not fit the surface; `32300002` when the peer's SINK
    /// stopped.
    pub fn push(&self, frame: &PixelMap, timestamp: Duration) -> Result<FrameFate, Error> {
        let pipe = self.pipe.upgrade().ok_or_else(|| {
            Error::invalid_arg("surface_id", format_args!("surface {} was released with its stream", self.id))
        })?;
        pipe::SourcePipe::push(&pipe, frame, timestamp)
    }
}

/// The consumer side of a SINK stream's surface: decoded frames come out of it. Create one with
/// [`Manager::create_surface`](crate::Manager::create_surface), then bind it to a SINK stream with
/// [`Manager::set_surface_id`](crate::Manager::set_surface_id) and its [`id`](Self::id).
pub struct ConsumerSurface {
    pub(crate) slot: Arc<pipe::SurfaceSlot>,
}

impl fmt::Debug for ConsumerSurface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSurface").field("id", &self.slot.id).finish_non_exhaustive()
    }
}

impl ConsumerSurface {
    /// The surface id to give `set_surface_id` (a decimal u64).
    pub fn id(&self) -> String {
        self.slot.id.to_string()
    }

    /// The next frame, decoded on the calling task; `None` once the surface is released (its stream was
    /// destroyed, its session ended, or it was dropped). Frames come in order; when the sink had to drop a
    /// group, the next frame is a key frame and [`ReceivedFrame::seq`] shows the gap.
    pub async fn next_frame(&mut self) -> Option<ReceivedFrame> {
        self.slot.next_frame().await
    }

    /// A frame if one is ready now, without waiting.
    pub fn try_next_frame(&mut self) -> Option<ReceivedFrame> {
        self.slot.try_next_frame()
    }
}

impl Drop for ConsumerSurface {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// `32300002`.
pub(crate) fn receive_end_not_started(why: impl fmt::Display) -> Error {
    Error::new(ErrorCode::ReceiveStreamNotStarted, why.to_string())
}

/// Runs CPU-heavy codec work: on a multi-threaded runtime the worker hands its other tasks away first; on a
/// current-thread runtime (tests in virtual time) the work simply runs.
pub(crate) fn cpu<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
