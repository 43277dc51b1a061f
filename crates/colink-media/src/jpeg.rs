//! JPEG encoding and decoding of [`PixelMap`]s (what `send_image` puts on the wire).
//!
//! Encoding goes through the `image` crate's baseline JPEG encoder (4:2:0 chroma subsampling);
//! decoding through `image`'s JPEG decoder (zune-jpeg). [`decode`] reads the header first and
//! refuses images over its [`DecodeLimits`] before allocating any pixel buffer. Decoded images
//! are always [`PixelFormat::Rgb888`], packed, at the JPEG's own width × height (greyscale JPEGs
//! are expanded to RGB; an alpha channel, which JPEG rarely carries, is dropped). EXIF
//! orientation is not applied: the pixels come back as stored.

use std::io::Cursor;

use bytes::Bytes;
use image::ImageDecoder as _;
use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use thiserror::Error;

use crate::pixel::{MAX_DIMENSION, MAX_PIXELS, PixelError, PixelFormat, PixelMap};

/// The quality colink uses when the caller gives none (the reference API's default).
pub const DEFAULT_QUALITY: u8 = 30;

/// Why an image could not be encoded or decoded.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    /// The input pixel map could not be converted to RGB.
    #[error("pixel conversion failed: {0}")]
    Pixel(#[from] PixelError),
    /// The JPEG encoder failed.
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    /// The input is not a JPEG this decoder can read (garbage, truncated, unsupported variant).
    #[error("invalid JPEG: {0}")]
    Decode(String),
    /// The JPEG's header announces an image over the [`DecodeLimits`]; nothing was allocated.
    #[error("JPEG of {width}x{height} exceeds the decode limits")]
    TooLarge {
        /// Width from the JPEG header.
        width: u32,
        /// Height from the JPEG header.
        height: u32,
    },
}

/// Bounds on what [`decode`] accepts, checked against the JPEG header before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width or height in pixels.
    pub max_dimension: u32,
    /// Largest accepted `width × height`.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// [`MAX_DIMENSION`] per side and [`MAX_PIXELS`] in total (the [`PixelMap`] limits).
    fn default() -> Self {
        Self { max_dimension: MAX_DIMENSION, max_pixels: MAX_PIXELS }
    }
}

/// Encodes `img` (any format; converted to RGB888 first, alpha dropped) as a baseline JPEG.
///
/// `quality` is the usual 1..=100 JPEG quality scale (higher = larger and closer to the
/// original); 0 is treated as 1 and values above 100 as 100.
pub fn encode(img: &PixelMap, quality: u8) -> Result<Bytes, ImageError> {
    let quality = quality.clamp(1, 100);
    let rgb = img.convert(PixelFormat::Rgb888)?;
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode(rgb.data(), rgb.width(), rgb.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    tracing::trace!(width = img.width(), height = img.height(), quality, bytes = out.len(), "jpeg encoded");
    Ok(Bytes::from(out))
}

/// Decodes a JPEG into a packed [`PixelFormat::Rgb888`] map of the JPEG's width × height.
///
/// The header is parsed first; an image wider, taller or larger than `limits` (or than the
/// [`PixelMap`] limits) is refused with [`ImageError::TooLarge`] before the pixel buffer is
/// allocated. Garbage or truncated input gives [`ImageError::Decode`].
pub fn decode(jpeg: &[u8], limits: DecodeLimits) -> Result<PixelMap, ImageError> {
    let decoder = JpegDecoder::new(Cursor::new(jpeg)).map_err(|e| ImageError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_dimension.min(MAX_DIMENSION)
        || height > limits.max_dimension.min(MAX_DIMENSION)
        || pixels > limits.max_pixels.min(MAX_PIXELS)
    {
        return Err(ImageError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Decode(format!("empty image {width}x{height}")));
    }
    let color = decoder.color_type();
    let channels = usize::from(color.channel_count());
    let len = usize::try_from(decoder.total_bytes()).map_err(|_| ImageError::TooLarge { width, height })?;
    let mut buf = vec![0u8; len];
    decoder.read_image(&mut buf).map_err(|e| ImageError::Decode(e.to_string()))?;
    let rgb = match (color, channels) {
        (image::ColorType::Rgb8, _) => buf,
        (image::ColorType::L8 | image::ColorType::La8, c) => {
            buf.chunks_exact(c).flat_map(|p| [p[0], p[0], p[0]]).collect()
        }
        (image::ColorType::Rgba8, 4) => buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        (other, _) => {
            return Err(ImageError::Decode(format!("unsupported JPEG colour type {other:?}")));
        }
    };
    Ok(PixelMap::packed(width, height, PixelFormat::Rgb888, rgb)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> PixelMap {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let on = ((x / 8) + (y / 8)) % 2 == 0;
                v.extend_from_slice(if on { &[240, 30, 30] } else { &[20, 20, 200] });
            }
        }
        PixelMap::packed(w, h, PixelFormat::Rgb888, v).unwrap()
    }

    #[test]
    fn quality_zero_is_clamped_and_odd_sizes_work() {
        let img = checker(33, 17);
        let q0 = encode(&img, 0).unwrap();
        let q1 = encode(&img, 1).unwrap();
        assert_eq!(q0, q1);
        let d = decode(&q0, DecodeLimits::default()).unwrap();
        assert_eq!((d.width(), d.height(), d.format()), (33, 17, PixelFormat::Rgb888));
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let jpeg = encode(&checker(64, 32), 50).unwrap();
        let tight = DecodeLimits { max_dimension: 63, max_pixels: u64::MAX };
        assert_eq!(decode(&jpeg, tight), Err(ImageError::TooLarge { width: 64, height: 32 }));
        let tight = DecodeLimits { max_dimension: 1000, max_pixels: 64 * 32 - 1 };
        assert!(matches!(decode(&jpeg, tight), Err(ImageError::TooLarge { .. })));
        assert!(decode(&jpeg, DecodeLimits::default()).is_ok());
    }

    #[test]
    fn header_claiming_a_huge_image_is_refused_without_decoding() {
        // Patch the SOF0 frame header of a real JPEG to claim 65535x65535.
        let mut jpeg = encode(&checker(16, 16), 50).unwrap().to_vec();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(decode(&jpeg, DecodeLimits::default()), Err(ImageError::TooLarge { width: 65535, height: 65535 }));
    }

    #[test]
    fn input_in_any_format_encodes() {
        let img = checker(32, 16);
        for f in PixelFormat::ALL {
            let m = img.convert(f).unwrap();
            let d = decode(&encode(&m, 90).unwrap(), DecodeLimits::default()).unwrap();
            assert_eq!((d.width(), d.height()), (32, 16));
            assert!(crate::pixel::psnr(&img, &d).unwrap() > 25.0, "{f:?}");
        }
    }
}
