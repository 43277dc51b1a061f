//! Pixel, image and video codecs for colink's `send_image` and media streams.
//!
//! What it does:
//! - [`pixel`]: [`PixelMap`], a validated in-memory image/frame (RGBA8888, BGRA8888, RGB888, NV21,
//!   NV12, I420 with a row stride), conversions between every pair of formats (BT.601 limited
//!   range for YUV ↔ RGB) and PSNR for measuring quality.
//! - [`transform`](mod@transform): pixel-exact rotation (0/90/180/270° clockwise) and horizontal/vertical flip,
//!   as the receiving surface applies them.
//! - [`jpeg`]: JPEG encode at a 1..=100 quality and decode with size limits checked before
//!   allocation (the `image` crate: its JPEG encoder, and zune-jpeg for decoding).
//! - [`video`]: H.264 (constrained baseline, Annex B) encoder and decoder objects over Cisco's
//!   openh264, built from its bundled C source: a bitrate-controlled encoder with key frames on
//!   an interval and on request, and a decoder that yields I420 frames.
//! - [`pattern`]: a deterministic moving test pattern for exercising and measuring the video path.
//!
//! What it deliberately does not do: no networking, no async, no threads, no clocks or timers,
//! no global state. Codec objects are plain values driven by the caller (colink's session layer
//! decides when frames are captured, sent, dropped or displayed, and asks for key frames). There
//! is no hardware or system codec, no audio, no container format and no colour management beyond
//! the fixed BT.601 limited-range conversion.
//!
//! All sizes are bounded ([`MAX_DIMENSION`] per side, [`MAX_PIXELS`] per image) and every input
//! from a caller or peer is validated; errors are typed and nothing here panics on bad input.

// Unsafe code is denied everywhere but in `openh264_log`, which installs openh264's log callback.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod jpeg;
mod openh264_log;
pub mod pattern;
pub mod pixel;
pub mod transform;
pub mod video;

pub use jpeg::{DecodeLimits, ImageError};
pub use pattern::test_pattern;
pub use pixel::{ColorMatrix, MAX_DIMENSION, MAX_PIXELS, PixelError, PixelFormat, PixelMap, psnr, psnr_luma};
pub use transform::{Flip, Rotation, transform};
pub use video::{EncodedFrame, EncoderConfig, H264Decoder, H264Encoder, MAX_BITRATE, MIN_BITRATE, VideoError};
