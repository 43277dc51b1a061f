//! H.264 video encoding and decoding over Cisco's openh264 (built from its bundled C source).
//!
//! [`H264Encoder`] turns [`PixelMap`] frames of any format into H.264 constrained-baseline access
//! units in Annex B form (NAL units with `00 00 00 01` start codes), one [`EncodedFrame`] per
//! input frame. It targets [`EncoderConfig::bitrate`] with openh264's bitrate rate control, frame
//! skipping disabled (every frame produces output), one slice per frame, single-threaded. Every
//! key frame is an IDR that carries SPS and PPS, so a decoder that starts at any key frame can
//! decode from there on: this is what lets colink drop a whole group of frames up to the next key
//! frame under congestion. The encoder converts RGB input with [`EncoderConfig::color`] (BT.601
//! limited range by default, BT.709 on request) and signals the same matrix in the VUI.
//!
//! [`H264Decoder`] turns such access units (from this encoder or any baseline H.264 source) back
//! into packed [`PixelFormat::I420`] frames.
//!
//! Timing is the caller's: frames are assumed to arrive at [`EncoderConfig::fps`], and the codec
//! objects neither read clocks nor start threads.
//!
//! # Rate control limits
//!
//! Because frames are never skipped, there is a content-dependent floor below which the output
//! cannot follow the target: every frame costs at least its macroblock headers and motion
//! vectors even at the coarsest quantiser (QP 51). For the [`test_pattern`](crate::test_pattern)
//! at 640 × 480, 30 fps that floor is about 165 kbit/s, so an 80 kbit/s target yields roughly
//! twice its rate; at 500 kbit/s the output is within a few percent of the target. To go lower,
//! feed fewer frames per second (and set [`EncoderConfig::fps`] to match) or a smaller size.
//!
//! openh264's log lines (such as the harmless "bEnableFrameSkip = 0, bitrate can't be controlled
//! ... without enabling skip frame" warning every encoder logs as it starts) go to `tracing` at
//! debug level (target `colink_media::openh264`), never to standard error.
//!
//! # Robustness
//!
//! openh264's decoder returns errors for corrupt input instead of crashing: in our tests it
//! survived 800 000 random, truncated and bit-flipped access units without a crash. It is still
//! C code; the peer's bitstream is the only untrusted input that reaches it.

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig as OhConfig, FrameRate, FrameType, IntraFramePeriod, Profile, QpRange,
    RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::{YUVSlices, YUVSource as _};
use thiserror::Error;

use crate::pixel::{ColorMatrix, MAX_DIMENSION, MAX_PIXELS, PixelError, PixelFormat, PixelMap};

/// The lowest bitrate (bits per second) colink's H.264 streams accept: 10 kbit/s.
pub const MIN_BITRATE: u32 = 10_000;

/// The highest bitrate (bits per second) colink's H.264 streams accept: 20 Mbit/s.
pub const MAX_BITRATE: u32 = 20_000_000;

/// Largest width or height the encoder accepts (openh264's limit is 3840 × 2160 in either
/// orientation).
pub const MAX_ENCODE_LONG_SIDE: u32 = 3840;

/// Largest shorter side the encoder accepts (see [`MAX_ENCODE_LONG_SIDE`]).
pub const MAX_ENCODE_SHORT_SIDE: u32 = 2160;

/// Largest access unit [`H264Decoder::decode`] accepts, in bytes (16 MiB).
pub const MAX_ACCESS_UNIT: usize = 16 * 1024 * 1024;

/// Why a video operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VideoError {
    /// The bitrate is outside [`MIN_BITRATE`]`..=`[`MAX_BITRATE`] (colink's 32300003).
    #[error("bitrate not supported (supported range {MIN_BITRATE}..={MAX_BITRATE} bit/s)")]
    BitrateNotSupported,
    /// The frame size cannot be encoded: zero, odd, or larger than
    /// [`MAX_ENCODE_LONG_SIDE`] × [`MAX_ENCODE_SHORT_SIDE`]; or a decoded frame is odd-sized or
    /// over the [`PixelMap`] limits.
    #[error("unsupported frame size {width}x{height}")]
    UnsupportedDimensions {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The frame rate is not a finite number in `1.0..=120.0`.
    #[error("unsupported frame rate {0}")]
    UnsupportedFrameRate(f32),
    /// A frame given to the encoder does not have the configured size.
    #[error("frame is {width}x{height} but the encoder is configured for {expected_width}x{expected_height}")]
    FrameSizeMismatch {
        /// Width of the frame given.
        width: u32,
        /// Height of the frame given.
        height: u32,
        /// Configured width.
        expected_width: u32,
        /// Configured height.
        expected_height: u32,
    },
    /// The frame could not be converted to I420.
    #[error("pixel conversion failed: {0}")]
    Pixel(#[from] PixelError),
    /// An access unit larger than [`MAX_ACCESS_UNIT`] was given to the decoder.
    #[error("access unit of {0} bytes exceeds the limit")]
    AccessUnitTooLarge(usize),
    /// openh264 rejected the input or failed (for the decoder: corrupt or unsupported
    /// bitstream, or a missing reference; decoding can resume at the next key frame).
    #[error("openh264: {0}")]
    Codec(String),
}

/// Encoder settings. Build with [`EncoderConfig::new`] or struct-update syntax over
/// [`EncoderConfig::default`] (640 × 480, 80 kbit/s, 30 fps, a key frame every 60 frames), and
/// adjust the public fields as needed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderConfig {
    /// Frame width in pixels (even, ≤ [`MAX_ENCODE_LONG_SIDE`]).
    pub width: u32,
    /// Frame height in pixels (even; the shorter side ≤ [`MAX_ENCODE_SHORT_SIDE`]).
    pub height: u32,
    /// Target bitrate in bits per second ([`MIN_BITRATE`]`..=`[`MAX_BITRATE`]).
    pub bitrate: u32,
    /// Frame rate the caller feeds frames at (default 30); rate control spends
    /// `bitrate / fps` bits per frame on average.
    pub fps: f32,
    /// A key frame (IDR) every this many frames (default 60); 0 means key frames only at the
    /// start and on [`H264Encoder::request_keyframe`].
    pub keyframe_interval: u32,
    /// The YUV matrix: RGB frames are converted with it, and the stream's VUI names it (default
    /// BT.601 limited range). YUV frames are taken as they are, assumed to be in this matrix.
    pub color: ColorMatrix,
}

impl EncoderConfig {
    /// Settings for `width` × `height` at `bitrate` bit/s, 30 fps, key frame every 60 frames.
    #[must_use]
    pub const fn new(width: u32, height: u32, bitrate: u32) -> Self {
        Self { width, height, bitrate, fps: 30.0, keyframe_interval: 60, color: ColorMatrix::Bt601 }
    }

    /// Checks the settings as [`H264Encoder::new`] does.
    pub fn validate(&self) -> Result<(), VideoError> {
        check_bitrate(self.bitrate)?;
        let (w, h) = (self.width, self.height);
        if w == 0
            || h == 0
            || w % 2 != 0
            || h % 2 != 0
            || w.max(h) > MAX_ENCODE_LONG_SIDE
            || w.min(h) > MAX_ENCODE_SHORT_SIDE
        {
            return Err(VideoError::UnsupportedDimensions { width: w, height: h });
        }
        if !(self.fps.is_finite() && (1.0..=120.0).contains(&self.fps)) {
            return Err(VideoError::UnsupportedFrameRate(self.fps));
        }
        Ok(())
    }
}

impl Default for EncoderConfig {
    /// 640 × 480 at 80 kbit/s (the reference API's default stream bitrate), 30 fps, a key frame
    /// every 60 frames.
    fn default() -> Self {
        Self::new(640, 480, 80_000)
    }
}

/// One encoded frame: a complete H.264 access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The access unit in Annex B form (start-code-prefixed NAL units).
    pub data: Bytes,
    /// Whether this is an IDR frame (with SPS and PPS): a fresh decoder can start here.
    pub keyframe: bool,
}

/// An H.264 encoder for one stream of fixed-size frames. See the [module docs](self).
pub struct H264Encoder {
    cfg: EncoderConfig,
    inner: Encoder,
    /// Frames given to `inner` (drives the timestamps openh264 sees).
    frames: u64,
    keyframe_requested: bool,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").field("cfg", &self.cfg).field("frames", &self.frames).finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// Creates an encoder. Fails with [`VideoError::BitrateNotSupported`] for a bitrate outside
    /// [`MIN_BITRATE`]`..=`[`MAX_BITRATE`], [`VideoError::UnsupportedDimensions`] or
    /// [`VideoError::UnsupportedFrameRate`] for sizes or rates openh264 cannot encode.
    pub fn new(cfg: EncoderConfig) -> Result<Self, VideoError> {
        cfg.validate()?;
        Ok(Self { cfg, inner: make_encoder(&cfg)?, frames: 0, keyframe_requested: false })
    }

    /// Encodes one frame (any [`PixelFormat`]; converted to I420 if needed). The frame must have
    /// the configured width and height. Returns `Ok(None)` only if openh264 decides to skip the
    /// frame, which frame-skip being disabled should prevent.
    pub fn encode(&mut self, frame: &PixelMap) -> Result<Option<EncodedFrame>, VideoError> {
        if frame.width() != self.cfg.width || frame.height() != self.cfg.height {
            return Err(VideoError::FrameSizeMismatch {
                width: frame.width(),
                height: frame.height(),
                expected_width: self.cfg.width,
                expected_height: self.cfg.height,
            });
        }
        let i420 = frame.convert_with(PixelFormat::I420, self.cfg.color)?;
        let (w, h) = (self.cfg.width as usize, self.cfg.height as usize);
        let (y_len, c_len) = (w * h, (w / 2) * (h / 2));
        let data = i420.data();
        let source = YUVSlices::new(
            (&data[..y_len], &data[y_len..y_len + c_len], &data[y_len + c_len..y_len + 2 * c_len]),
            (w, h),
            (w, w / 2, w / 2),
        );
        if std::mem::take(&mut self.keyframe_requested) {
            self.inner.force_intra_frame();
        }
        let millis = (self.frames as f64 * 1000.0 / f64::from(self.cfg.fps)) as u64;
        self.frames += 1;
        let stream = self
            .inner
            .encode_at(&source, openh264::Timestamp::from_millis(millis))
            .map_err(|e| VideoError::Codec(e.to_string()))?;
        let frame_type = stream.frame_type();
        let bytes = stream.to_vec();
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) || bytes.is_empty() {
            tracing::debug!(?frame_type, "openh264 skipped a frame");
            return Ok(None);
        }
        let keyframe = frame_type == FrameType::IDR;
        tracing::trace!(bytes = bytes.len(), keyframe, "h264 frame encoded");
        Ok(Some(EncodedFrame { data: Bytes::from(bytes), keyframe }))
    }

    /// Makes the next encoded frame an IDR key frame.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate for the frames that follow.
    ///
    /// openh264's safe Rust API offers no live bitrate change, so this replaces the underlying
    /// encoder with one at the new bitrate: **the next frame is an IDR key frame** (a decoder
    /// simply continues). Setting the current bitrate again does nothing. Callers doing
    /// congestion control should therefore change the bitrate in steps (say ≥ 10 %) rather than
    /// on every frame. A bitrate outside the range gives [`VideoError::BitrateNotSupported`] and
    /// leaves the encoder unchanged.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VideoError> {
        check_bitrate(bps)?;
        if bps == self.cfg.bitrate {
            return Ok(());
        }
        let cfg = EncoderConfig { bitrate: bps, ..self.cfg };
        self.inner = make_encoder(&cfg)?;
        self.cfg = cfg;
        self.frames = 0;
        self.keyframe_requested = false;
        tracing::debug!(bps, "h264 encoder bitrate changed (encoder restarted, next frame IDR)");
        Ok(())
    }

    /// The current target bitrate in bits per second.
    #[must_use]
    pub const fn bitrate(&self) -> u32 {
        self.cfg.bitrate
    }

    /// The current configuration (with the current bitrate).
    #[must_use]
    pub const fn config(&self) -> EncoderConfig {
        self.cfg
    }
}

fn check_bitrate(bitrate: u32) -> Result<(), VideoError> {
    if (MIN_BITRATE..=MAX_BITRATE).contains(&bitrate) {
        Ok(())
    } else {
        tracing::debug!(bitrate, "bitrate outside the supported range");
        Err(VideoError::BitrateNotSupported)
    }
}

fn make_encoder(cfg: &EncoderConfig) -> Result<Encoder, VideoError> {
    let oh = OhConfig::new()
        .bitrate(BitRate::from_bps(cfg.bitrate))
        .max_frame_rate(FrameRate::from_hz(cfg.fps))
        .rate_control_mode(RateControlMode::Bitrate)
        .skip_frames(false)
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.keyframe_interval))
        .num_threads(1)
        // openh264 replaces a minimum QP of 0 by its default range 12..=42, and QP 42 is too
        // fine for low bitrates at VGA without frame skipping; allow the full range up to 51.
        .qp(QpRange::new(12, 51))
        .vui(match cfg.color {
            ColorMatrix::Bt709 => VuiConfig::bt709(),
            _ => VuiConfig::bt601(),
        });
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), oh).map_err(|e| VideoError::Codec(e.to_string()))?;
    crate::openh264_log::route_encoder_log(&mut encoder);
    Ok(encoder)
}

/// An H.264 decoder producing packed [`PixelFormat::I420`] frames. See the [module docs](self).
pub struct H264Decoder {
    inner: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// Creates a decoder (single-threaded, no error concealment).
    pub fn new() -> Result<Self, VideoError> {
        let inner = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| VideoError::Codec(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Decodes one access unit (Annex B; one or more NAL units). Returns the picture it
    /// completes, or `Ok(None)` when it completes none (e.g. parameter sets only, or empty
    /// input). Corrupt input, or a frame whose references were never received, gives
    /// [`VideoError::Codec`]; decoding resumes correctly at the next key frame.
    ///
    /// Size bounds: openh264 itself refuses sequence parameter sets beyond H.264 level 5.2's
    /// maximum frame size (36 864 macroblocks, at most 8 688 pixels per side) before allocating;
    /// a decoded frame that is odd-sized or beyond [`MAX_DIMENSION`] / [`MAX_PIXELS`] is refused
    /// with [`VideoError::UnsupportedDimensions`]. Access units over [`MAX_ACCESS_UNIT`] bytes
    /// are refused without being parsed.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<PixelMap>, VideoError> {
        if access_unit.is_empty() {
            return Ok(None);
        }
        if access_unit.len() > MAX_ACCESS_UNIT {
            return Err(VideoError::AccessUnitTooLarge(access_unit.len()));
        }
        let Some(yuv) = self.inner.decode(access_unit).map_err(|e| VideoError::Codec(e.to_string()))? else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        let (wu, hu) = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
        let too_big = wu > MAX_DIMENSION || hu > MAX_DIMENSION || u64::from(wu) * u64::from(hu) > MAX_PIXELS;
        if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 || too_big {
            return Err(VideoError::UnsupportedDimensions { width: wu, height: hu });
        }
        let (cw, ch) = (w / 2, h / 2);
        let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
        copy_plane(yuv.y(), ys, w, h, &mut out)?;
        copy_plane(yuv.u(), us, cw, ch, &mut out)?;
        copy_plane(yuv.v(), vs, cw, ch, &mut out)?;
        Ok(Some(PixelMap::from_packed_vec(wu, hu, PixelFormat::I420, out)))
    }
}

/// Appends `rows` rows of `width` bytes, `stride` apart, from `plane` to `out`.
fn copy_plane(plane: &[u8], stride: usize, width: usize, rows: usize, out: &mut Vec<u8>) -> Result<(), VideoError> {
    for r in 0..rows {
        let row = r
            .checked_mul(stride)
            .and_then(|start| plane.get(start..start.checked_add(width)?))
            .ok_or_else(|| VideoError::Codec("decoded plane shorter than its dimensions".into()))?;
        out.extend_from_slice(row);
    }
    Ok(())
}
