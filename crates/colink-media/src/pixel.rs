//! Pixel maps: raw frames and images in memory, their formats, conversions and PSNR.
//!
//! # Memory layout
//!
//! A [`PixelMap`] holds one contiguous buffer. `stride` is the row stride in bytes of the *first*
//! plane; the other planes follow directly after the previous plane's last row:
//!
//! | format | planes | bytes needed |
//! |---|---|---|
//! | [`Rgba8888`](PixelFormat::Rgba8888), [`Bgra8888`](PixelFormat::Bgra8888) | one, 4 bytes per pixel | `stride × height` |
//! | [`Rgb888`](PixelFormat::Rgb888) | one, 3 bytes per pixel | `stride × height` |
//! | [`Nv12`](PixelFormat::Nv12), [`Nv21`](PixelFormat::Nv21) | Y (`stride`), then interleaved U/V (NV12) or V/U (NV21) with the same `stride`, `height / 2` rows | `stride × height × 3 / 2` |
//! | [`I420`](PixelFormat::I420) | Y (`stride`), then U, then V, each with stride `ceil(stride / 2)` and `height / 2` rows | `stride × height + 2 × ceil(stride / 2) × height / 2` |
//!
//! The 4:2:0 formats need an even width and height. A buffer longer than needed is accepted (the
//! rest is ignored).
//!
//! # Colour conversion
//!
//! YUV ↔ RGB uses **BT.601 limited range** ("studio swing": Y in 16..=235, U/V in 16..=240) with
//! the usual 8-bit integer coefficients:
//!
//! ```text
//! Y = ((66 R + 129 G + 25 B + 128) >> 8) + 16
//! U = ((-38 R - 74 G + 112 B + 128) >> 8) + 128
//! V = ((112 R - 94 G - 18 B + 128) >> 8) + 128
//! R = clamp((298 (Y-16) + 409 (V-128) + 128) >> 8)
//! G = clamp((298 (Y-16) - 100 (U-128) - 208 (V-128) + 128) >> 8)
//! B = clamp((298 (Y-16) + 516 (U-128) + 128) >> 8)
//! ```
//!
//! [`PixelMap::convert_with`] can use **BT.709 limited range** instead ([`ColorMatrix::Bt709`]), the
//! HD matrix a stream asks for with the BT709_LIMIT colour space:
//!
//! ```text
//! Y = ((47 R + 157 G + 16 B + 128) >> 8) + 16
//! U = ((-26 R - 87 G + 112 B + 128) >> 8) + 128
//! V = ((112 R - 102 G - 10 B + 128) >> 8) + 128
//! R = clamp((298 (Y-16) + 459 (V-128) + 128) >> 8)
//! G = clamp((298 (Y-16) - 55 (U-128) - 136 (V-128) + 128) >> 8)
//! B = clamp((298 (Y-16) + 541 (U-128) + 128) >> 8)
//! ```
//!
//! RGB → 4:2:0 takes U and V from the average colour of each 2×2 block; 4:2:0 → RGB repeats each
//! chroma sample over its 2×2 block (nearest neighbour). Conversions between the three YUV
//! formats and between the three RGB formats are lossless; alpha is kept between RGBA and BGRA,
//! set to 255 when it is created and dropped when converting to a format without alpha.

use bytes::Bytes;
use thiserror::Error;

/// The largest width or height, in pixels, that a [`PixelMap`] may have.
pub const MAX_DIMENSION: u32 = 16_384;

/// The largest number of pixels (`width × height`) that a [`PixelMap`] may have (64 Mi).
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// The layout of the pixels in a [`PixelMap`]. See the [module docs](self) for the exact layout.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 4 bytes per pixel: red, green, blue, alpha.
    Rgba8888,
    /// 4 bytes per pixel: blue, green, red, alpha.
    Bgra8888,
    /// 3 bytes per pixel: red, green, blue.
    Rgb888,
    /// YUV 4:2:0, a Y plane followed by one interleaved chroma plane in V, U order (Android camera
    /// default).
    Nv21,
    /// YUV 4:2:0, a Y plane followed by one interleaved chroma plane in U, V order.
    Nv12,
    /// YUV 4:2:0, three planes: Y, U (Cb), V (Cr). What the H.264 codec consumes and produces.
    I420,
}

impl PixelFormat {
    /// Every format, in declaration order (handy for exhaustive tests).
    pub const ALL: [Self; 6] = [Self::Rgba8888, Self::Bgra8888, Self::Rgb888, Self::Nv21, Self::Nv12, Self::I420];

    /// Bytes per pixel of the first plane (4, 3, or 1 for the Y plane of the YUV formats).
    #[must_use]
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            Self::Rgba8888 | Self::Bgra8888 => 4,
            Self::Rgb888 => 3,
            Self::Nv21 | Self::Nv12 | Self::I420 => 1,
        }
    }

    /// Whether this is a YUV 4:2:0 format (needs even width and height).
    #[must_use]
    pub const fn is_yuv420(self) -> bool {
        matches!(self, Self::Nv21 | Self::Nv12 | Self::I420)
    }

    /// Number of planes in the buffer (1 for RGB formats, 2 for NV12/NV21, 3 for I420).
    #[must_use]
    pub const fn plane_count(self) -> usize {
        match self {
            Self::Rgba8888 | Self::Bgra8888 | Self::Rgb888 => 1,
            Self::Nv21 | Self::Nv12 => 2,
            Self::I420 => 3,
        }
    }

    /// The smallest valid stride (row length in bytes of the first plane) for `width`.
    #[must_use]
    pub const fn min_stride(self, width: u32) -> u64 {
        width as u64 * self.bytes_per_pixel() as u64
    }

    /// Bytes a buffer of this format needs for `height` rows with first-plane stride `stride`
    /// (`None` on arithmetic overflow).
    #[must_use]
    pub fn buffer_len(self, stride: u32, height: u32) -> Option<usize> {
        let s = u64::from(stride);
        let h = u64::from(height);
        let first = s.checked_mul(h)?;
        let total = match self {
            Self::Rgba8888 | Self::Bgra8888 | Self::Rgb888 => first,
            Self::Nv21 | Self::Nv12 => first.checked_add(s.checked_mul(h / 2)?)?,
            Self::I420 => first.checked_add(2 * s.div_ceil(2).checked_mul(h / 2)?)?,
        };
        usize::try_from(total).ok()
    }
}

/// Why a [`PixelMap`] could not be built, converted or compared.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PixelError {
    /// Width or height is zero.
    #[error("image dimensions must be non-zero (got {width}x{height})")]
    ZeroDimension {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// Width or height exceeds [`MAX_DIMENSION`], or the pixel count exceeds [`MAX_PIXELS`].
    #[error("image of {width}x{height} exceeds the limits ({MAX_DIMENSION} per side, {MAX_PIXELS} pixels)")]
    TooLarge {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// A YUV 4:2:0 format was given an odd width or height.
    #[error("{format:?} needs an even width and height (got {width}x{height})")]
    OddDimension {
        /// The 4:2:0 format.
        format: PixelFormat,
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// The stride is shorter than one row of pixels.
    #[error("stride {stride} is below the minimum {min} for this width and format")]
    StrideTooSmall {
        /// The stride given.
        stride: u32,
        /// The smallest acceptable stride.
        min: u64,
    },
    /// The buffer is shorter than the layout needs (or its size overflows).
    #[error("pixel data has {actual} bytes but the layout needs {needed}")]
    DataTooShort {
        /// Bytes needed (saturated at `usize::MAX` on overflow).
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Two images that must have the same size do not.
    #[error("images differ in size: {a_width}x{a_height} vs {b_width}x{b_height}")]
    SizeMismatch {
        /// Width of the first image.
        a_width: u32,
        /// Height of the first image.
        a_height: u32,
        /// Width of the second image.
        b_width: u32,
        /// Height of the second image.
        b_height: u32,
    },
}

/// An image or video frame in memory: dimensions, [`PixelFormat`], first-plane row stride and the
/// bytes (cheaply clonable [`Bytes`]). Always valid: every constructor checks the layout.
#[derive(Clone, PartialEq, Eq)]
pub struct PixelMap {
    width: u32,
    height: u32,
    format: PixelFormat,
    stride: u32,
    data: Bytes,
}

impl std::fmt::Debug for PixelMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelMap")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("stride", &self.stride)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl PixelMap {
    /// Builds a pixel map after checking the layout: non-zero dimensions within
    /// [`MAX_DIMENSION`] / [`MAX_PIXELS`], even dimensions for the 4:2:0 formats, a stride of at
    /// least one row, and enough data (see the [module docs](self)).
    pub fn new(
        width: u32,
        height: u32,
        format: PixelFormat,
        stride: u32,
        data: impl Into<Bytes>,
    ) -> Result<Self, PixelError> {
        check_dimensions(width, height, format)?;
        let min = format.min_stride(width);
        if u64::from(stride) < min {
            return Err(PixelError::StrideTooSmall { stride, min });
        }
        let data = data.into();
        let needed = format.buffer_len(stride, height).unwrap_or(usize::MAX);
        if data.len() < needed {
            return Err(PixelError::DataTooShort { needed, actual: data.len() });
        }
        Ok(Self { width, height, format, stride, data })
    }

    /// Builds a pixel map with the minimal stride (`width × bytes_per_pixel`, no row padding).
    pub fn packed(width: u32, height: u32, format: PixelFormat, data: impl Into<Bytes>) -> Result<Self, PixelError> {
        check_dimensions(width, height, format)?;
        // Cannot truncate: width <= MAX_DIMENSION and bytes_per_pixel <= 4.
        let stride = u32::try_from(format.min_stride(width)).unwrap_or(u32::MAX);
        Self::new(width, height, format, stride, data)
    }

    /// Width in pixels.
    #[must_use]
    pub const fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    #[must_use]
    pub const fn height(&self) -> u32 {
        self.height
    }

    /// Pixel format.
    #[must_use]
    pub const fn format(&self) -> PixelFormat {
        self.format
    }

    /// Row stride of the first plane in bytes.
    #[must_use]
    pub const fn stride(&self) -> u32 {
        self.stride
    }

    /// The whole buffer (may be longer than the layout needs).
    #[must_use]
    pub const fn data(&self) -> &Bytes {
        &self.data
    }

    /// Whether the buffer has no row padding (stride is the minimum).
    #[must_use]
    pub const fn is_packed(&self) -> bool {
        self.stride as u64 == self.format.min_stride(self.width)
    }

    /// Converts to another format; the result is packed. Converting to the same format returns a
    /// packed copy (or a cheap clone when already packed). See the [module docs](self) for the
    /// colour maths (BT.601 limited range).
    pub fn convert(&self, to: PixelFormat) -> Result<Self, PixelError> {
        self.convert_with(to, ColorMatrix::Bt601)
    }

    /// [`convert`](Self::convert) with the YUV ↔ RGB matrix `matrix` (it only matters when one
    /// side is YUV and the other RGB).
    pub fn convert_with(&self, to: PixelFormat, matrix: ColorMatrix) -> Result<Self, PixelError> {
        if to == self.format && self.is_packed() {
            return Ok(self.clone());
        }
        let (w, h) = (self.width, self.height);
        if to.is_yuv420() && (w % 2 != 0 || h % 2 != 0) {
            return Err(PixelError::OddDimension { format: to, width: w, height: h });
        }
        let out = if self.format.is_yuv420() {
            let i420 = self.to_i420_vec();
            if to.is_yuv420() {
                i420_to_yuv(&i420, w as usize, h as usize, to)
            } else {
                i420_to_rgb(&i420, w as usize, h as usize, to, matrix)
            }
        } else if to.is_yuv420() {
            let i420 = rgb_to_i420(self, matrix);
            i420_to_yuv(&i420, w as usize, h as usize, to)
        } else {
            rgb_to_rgb(self, to)
        };
        Ok(Self::from_packed_vec(w, h, to, out))
    }

    /// Builds a packed map from a buffer this crate produced (layout known to be right).
    pub(crate) fn from_packed_vec(width: u32, height: u32, format: PixelFormat, data: Vec<u8>) -> Self {
        debug_assert_eq!(format.buffer_len(format.min_stride(width) as u32, height), Some(data.len()));
        Self { width, height, format, stride: format.min_stride(width) as u32, data: Bytes::from(data) }
    }

    /// The rows of plane `index` (0 = first plane) as `(bytes, stride, rows)`; each row has at
    /// least `row_bytes(index)` valid bytes.
    pub(crate) fn plane(&self, index: usize) -> (&[u8], usize, usize) {
        let s = self.stride as usize;
        let h = self.height as usize;
        match (self.format, index) {
            (_, 0) => (&self.data[..s * h], s, h),
            (PixelFormat::Nv12 | PixelFormat::Nv21, _) => (&self.data[s * h..s * h + s * (h / 2)], s, h / 2),
            (_, i) => {
                let cs = s.div_ceil(2);
                let start = s * h + (i - 1) * cs * (h / 2);
                (&self.data[start..start + cs * (h / 2)], cs, h / 2)
            }
        }
    }

    /// Packed I420 copy of a 4:2:0 map (lossless).
    fn to_i420_vec(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w / 2, h / 2);
        let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
        let (y, ys, _) = self.plane(0);
        for row in y.chunks(ys).take(h) {
            out.extend_from_slice(&row[..w]);
        }
        match self.format {
            PixelFormat::I420 => {
                for p in 1..3 {
                    let (c, cs, _) = self.plane(p);
                    for row in c.chunks(cs).take(ch) {
                        out.extend_from_slice(&row[..cw]);
                    }
                }
            }
            _ => {
                let (uv, s, _) = self.plane(1);
                let (u_off, v_off) = if self.format == PixelFormat::Nv12 { (0, 1) } else { (1, 0) };
                for off in [u_off, v_off] {
                    for row in uv.chunks(s).take(ch) {
                        out.extend(row[..2 * cw].iter().skip(off).step_by(2));
                    }
                }
            }
        }
        out
    }
}

/// Peak signal-to-noise ratio in dB between two images of the same size, computed in 8-bit RGB
/// over all three channels (both are converted to RGB888 first; alpha is ignored). Identical
/// images give [`f64::INFINITY`].
pub fn psnr(a: &PixelMap, b: &PixelMap) -> Result<f64, PixelError> {
    same_size(a, b)?;
    let ra = a.convert(PixelFormat::Rgb888)?;
    let rb = b.convert(PixelFormat::Rgb888)?;
    let n = a.width as usize * a.height as usize * 3;
    Ok(psnr_bytes(&ra.data[..n], &rb.data[..n]))
}

/// PSNR in dB of the luma (Y) plane only, after converting both images to I420 (so both need
/// even dimensions). Identical Y planes give [`f64::INFINITY`]. This is the usual video-codec
/// quality figure.
pub fn psnr_luma(a: &PixelMap, b: &PixelMap) -> Result<f64, PixelError> {
    same_size(a, b)?;
    let ya = a.convert(PixelFormat::I420)?;
    let yb = b.convert(PixelFormat::I420)?;
    let n = a.width as usize * a.height as usize;
    Ok(psnr_bytes(&ya.data[..n], &yb.data[..n]))
}

fn psnr_bytes(a: &[u8], b: &[u8]) -> f64 {
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = u64::from(x.abs_diff(y));
            d * d
        })
        .sum();
    if sse == 0 || a.is_empty() {
        return f64::INFINITY;
    }
    let mse = sse as f64 / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

fn same_size(a: &PixelMap, b: &PixelMap) -> Result<(), PixelError> {
    if a.width != b.width || a.height != b.height {
        return Err(PixelError::SizeMismatch {
            a_width: a.width,
            a_height: a.height,
            b_width: b.width,
            b_height: b.height,
        });
    }
    Ok(())
}

/// Checks non-zero, bounded and (for 4:2:0) even dimensions.
pub(crate) fn check_dimensions(width: u32, height: u32, format: PixelFormat) -> Result<(), PixelError> {
    if width == 0 || height == 0 {
        return Err(PixelError::ZeroDimension { width, height });
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PixelError::TooLarge { width, height });
    }
    if format.is_yuv420() && (!width.is_multiple_of(2) || !height.is_multiple_of(2)) {
        return Err(PixelError::OddDimension { format, width, height });
    }
    Ok(())
}

/// Byte offsets of red, green, blue and (if any) alpha in a pixel of an RGB-family format.
const fn rgb_layout(format: PixelFormat) -> ([usize; 3], Option<usize>) {
    match format {
        PixelFormat::Bgra8888 => ([2, 1, 0], Some(3)),
        PixelFormat::Rgb888 => ([0, 1, 2], None),
        _ => ([0, 1, 2], Some(3)),
    }
}

/// Converts between the RGB-family formats (lossless apart from alpha handling).
fn rgb_to_rgb(src: &PixelMap, to: PixelFormat) -> Vec<u8> {
    let (w, h) = (src.width as usize, src.height as usize);
    let (sb, db) = (src.format.bytes_per_pixel() as usize, to.bytes_per_pixel() as usize);
    let ([sr, sg, sbl], sa) = rgb_layout(src.format);
    let ([dr, dg, dbl], da) = rgb_layout(to);
    let mut out = vec![0u8; w * h * db];
    let (plane, stride, _) = src.plane(0);
    for (row, orow) in plane.chunks(stride).zip(out.chunks_exact_mut(w * db)) {
        for (p, o) in row[..w * sb].chunks_exact(sb).zip(orow.chunks_exact_mut(db)) {
            o[dr] = p[sr];
            o[dg] = p[sg];
            o[dbl] = p[sbl];
            if let Some(da) = da {
                o[da] = sa.map_or(255, |sa| p[sa]);
            }
        }
    }
    out
}

/// The YUV ↔ RGB matrix of a conversion (both limited range, 8-bit; see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ColorMatrix {
    /// ITU-R BT.601 (SD; the default).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD).
    Bt709,
}

/// A matrix's 8-bit integer coefficients (×256).
struct Coefficients {
    /// Y from R, G, B.
    y: [i32; 3],
    /// U from R, G, B.
    u: [i32; 3],
    /// V from R, G, B.
    v: [i32; 3],
    /// R from V; G from U and V; B from U.
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl ColorMatrix {
    const fn coefficients(self) -> Coefficients {
        match self {
            Self::Bt601 => Coefficients {
                y: [66, 129, 25],
                u: [-38, -74, 112],
                v: [112, -94, -18],
                r_v: 409,
                g_u: -100,
                g_v: -208,
                b_u: 516,
            },
            Self::Bt709 => Coefficients {
                y: [47, 157, 16],
                u: [-26, -87, 112],
                v: [112, -102, -10],
                r_v: 459,
                g_u: -55,
                g_v: -136,
                b_u: 541,
            },
        }
    }
}

#[inline]
fn rgb_to_y(k: &Coefficients, r: i32, g: i32, b: i32) -> u8 {
    (((k.y[0] * r + k.y[1] * g + k.y[2] * b + 128) >> 8) + 16).clamp(0, 255) as u8
}

/// U and V from the sums of four pixels' R, G and B.
#[inline]
fn rgb4_to_uv(k: &Coefficients, r: i32, g: i32, b: i32) -> (u8, u8) {
    let u = ((k.u[0] * r + k.u[1] * g + k.u[2] * b + 512) >> 10) + 128;
    let v = ((k.v[0] * r + k.v[1] * g + k.v[2] * b + 512) >> 10) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

#[inline]
fn yuv_to_rgb(k: &Coefficients, y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16) + 128;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    [
        ((c + k.r_v * e) >> 8).clamp(0, 255) as u8,
        ((c + k.g_u * d + k.g_v * e) >> 8).clamp(0, 255) as u8,
        ((c + k.b_u * d) >> 8).clamp(0, 255) as u8,
    ]
}

/// Packed I420 from an RGB-family map with even dimensions.
fn rgb_to_i420(src: &PixelMap, matrix: ColorMatrix) -> Vec<u8> {
    let k = &matrix.coefficients();
    let (w, h) = (src.width as usize, src.height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let bpp = src.format.bytes_per_pixel() as usize;
    let ([ri, gi, bi], _) = rgb_layout(src.format);
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (yp, rest) = out.split_at_mut(w * h);
    let (up, vp) = rest.split_at_mut(cw * ch);
    let (plane, stride, _) = src.plane(0);
    for cy in 0..ch {
        let r0 = &plane[2 * cy * stride..][..w * bpp];
        let r1 = &plane[(2 * cy + 1) * stride..][..w * bpp];
        let (y0, y1) = yp[2 * cy * w..(2 * cy + 2) * w].split_at_mut(w);
        for cx in 0..cw {
            let (mut rs, mut gs, mut bs) = (0, 0, 0);
            for (row, yrow) in [(r0, &mut *y0), (r1, &mut *y1)] {
                for dx in 0..2 {
                    let x = 2 * cx + dx;
                    let p = &row[x * bpp..];
                    let (r, g, b) = (i32::from(p[ri]), i32::from(p[gi]), i32::from(p[bi]));
                    yrow[x] = rgb_to_y(k, r, g, b);
                    rs += r;
                    gs += g;
                    bs += b;
                }
            }
            let (u, v) = rgb4_to_uv(k, rs, gs, bs);
            up[cy * cw + cx] = u;
            vp[cy * cw + cx] = v;
        }
    }
    out
}

/// An RGB-family buffer from packed I420 (chroma repeated over 2×2).
fn i420_to_rgb(i420: &[u8], w: usize, h: usize, to: PixelFormat, matrix: ColorMatrix) -> Vec<u8> {
    let k = &matrix.coefficients();
    let cw = w / 2;
    let bpp = to.bytes_per_pixel() as usize;
    let ([ri, gi, bi], ai) = rgb_layout(to);
    let (yp, rest) = i420.split_at(w * h);
    let (up, vp) = rest.split_at(cw * (h / 2));
    let mut out = vec![0u8; w * h * bpp];
    for (y, orow) in out.chunks_exact_mut(w * bpp).enumerate() {
        let yrow = &yp[y * w..][..w];
        let urow = &up[(y / 2) * cw..][..cw];
        let vrow = &vp[(y / 2) * cw..][..cw];
        for (x, o) in orow.chunks_exact_mut(bpp).enumerate() {
            let [r, g, b] = yuv_to_rgb(k, yrow[x], urow[x / 2], vrow[x / 2]);
            o[ri] = r;
            o[gi] = g;
            o[bi] = b;
            if let Some(a) = ai {
                o[a] = 255;
            }
        }
    }
    out
}

/// A packed 4:2:0 buffer of format `to` from packed I420 (lossless).
fn i420_to_yuv(i420: &[u8], w: usize, h: usize, to: PixelFormat) -> Vec<u8> {
    let n = w * h;
    let c = (w / 2) * (h / 2);
    match to {
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            let mut out = Vec::with_capacity(n + 2 * c);
            out.extend_from_slice(&i420[..n]);
            let (u, v) = i420[n..n + 2 * c].split_at(c);
            let (first, second) = if to == PixelFormat::Nv12 { (u, v) } else { (v, u) };
            for (a, b) in first.iter().zip(second) {
                out.push(*a);
                out.push(*b);
            }
            out
        }
        _ => i420[..n + 2 * c].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_map(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> PixelMap {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&f(x, y));
            }
        }
        PixelMap::packed(w, h, PixelFormat::Rgb888, v).unwrap()
    }

    #[test]
    fn new_validates_layout() {
        use PixelFormat::*;
        assert!(matches!(PixelMap::new(0, 4, Rgb888, 0, vec![]), Err(PixelError::ZeroDimension { .. })));
        assert!(matches!(
            PixelMap::new(MAX_DIMENSION + 1, 1, Rgb888, (MAX_DIMENSION + 1) * 3, vec![]),
            Err(PixelError::TooLarge { .. })
        ));
        assert!(matches!(PixelMap::new(16_384, 16_384, Nv12, 16_384, vec![]), Err(PixelError::TooLarge { .. })));
        assert!(matches!(PixelMap::new(3, 2, I420, 3, vec![0; 100]), Err(PixelError::OddDimension { .. })));
        assert!(matches!(
            PixelMap::new(4, 2, Rgba8888, 15, vec![0; 100]),
            Err(PixelError::StrideTooSmall { stride: 15, min: 16 })
        ));
        assert!(matches!(
            PixelMap::new(4, 2, Rgba8888, 16, vec![0; 31]),
            Err(PixelError::DataTooShort { needed: 32, actual: 31 })
        ));
        // I420 with padded stride 6 for width 4: Y 6*4, U/V 3*2 each.
        assert!(PixelMap::new(4, 4, I420, 6, vec![0; 36]).is_ok());
        assert!(PixelMap::new(4, 4, I420, 6, vec![0; 35]).is_err());
        assert!(PixelMap::new(4, 4, Nv21, 4, vec![0; 24]).is_ok());
        // Huge stride must not overflow.
        assert!(matches!(PixelMap::new(2, 16_384, Nv12, u32::MAX, vec![0; 8]), Err(PixelError::DataTooShort { .. })));
        let m = PixelMap::packed(5, 3, Rgb888, vec![7; 45]).unwrap();
        assert_eq!((m.width(), m.height(), m.stride(), m.format()), (5, 3, 15, Rgb888));
        assert_eq!(m.data().len(), 45);
    }

    #[test]
    fn known_colours_convert_with_bt601_limited_range() {
        let m = rgb_map(2, 2, |_, _| [255, 255, 255]);
        let y = m.convert(PixelFormat::I420).unwrap();
        assert_eq!(&y.data()[..], &[235, 235, 235, 235, 128, 128]);
        let m = rgb_map(2, 2, |_, _| [0, 0, 0]);
        assert_eq!(&m.convert(PixelFormat::I420).unwrap().data()[..], &[16, 16, 16, 16, 128, 128]);
        let m = rgb_map(2, 2, |_, _| [255, 0, 0]);
        let y = m.convert(PixelFormat::I420).unwrap();
        assert_eq!(&y.data()[..], &[82, 82, 82, 82, 90, 240]);
        let back = y.convert(PixelFormat::Rgb888).unwrap();
        for p in back.data().chunks(3) {
            assert!(p[0] >= 253 && p[1] <= 2 && p[2] <= 2, "{p:?}");
        }
    }

    #[test]
    fn bt709_differs_from_bt601_where_it_should_and_round_trips() {
        // Pure primaries and grey: within 1 of the studio-swing values of ITU-R BT.709 (red 63/102/240,
        // green 173/42/26, blue 32/240/118) and BT.601 (red 81/90/240, green 145/54/34, blue 41/240/110).
        let cases: [([u8; 3], [u8; 3], [u8; 3]); 4] = [
            ([255, 0, 0], [63, 102, 240], [82, 90, 240]),
            ([0, 255, 0], [172, 41, 26], [144, 54, 34]),
            ([0, 0, 255], [32, 240, 118], [41, 240, 110]),
            ([128, 128, 128], [126, 128, 128], [126, 128, 128]),
        ];
        for (rgb, yuv709, yuv601) in cases {
            let img = PixelMap::packed(2, 2, PixelFormat::Rgb888, rgb.repeat(4)).unwrap();
            for (matrix, want) in [(ColorMatrix::Bt709, yuv709), (ColorMatrix::Bt601, yuv601)] {
                let i420 = img.convert_with(PixelFormat::I420, matrix).unwrap();
                let d = i420.data();
                assert_eq!([d[0], d[4], d[5]], want, "{rgb:?} {matrix:?}");
                let back = i420.convert_with(PixelFormat::Rgb888, matrix).unwrap();
                for (a, b) in back.data()[..3].iter().zip(rgb) {
                    assert!(a.abs_diff(b) <= 3, "{rgb:?} {matrix:?}: {:?}", &back.data()[..3]);
                }
            }
        }
    }

    #[test]
    fn every_pair_of_formats_converts_and_round_trips() {
        // Colour constant over each 2x2 block, so chroma subsampling loses nothing and round
        // trips through YUV only suffer 8-bit limited-range rounding.
        let src = rgb_map(8, 6, |x, y| [(x / 2 * 70) as u8, (y / 2 * 90) as u8, 200 - (x / 2 * 20) as u8]);
        for from in PixelFormat::ALL {
            let a = src.convert(from).unwrap();
            assert_eq!(a.format(), from);
            for to in PixelFormat::ALL {
                let b = a.convert(to).unwrap();
                assert_eq!((b.width(), b.height(), b.format()), (8, 6, to));
                assert!(b.is_packed());
                let back = b.convert(from).unwrap();
                let p = psnr(&a, &back).unwrap();
                if from.is_yuv420() == to.is_yuv420() {
                    assert_eq!(p, f64::INFINITY, "{from:?}->{to:?}->{from:?} is lossless");
                } else {
                    assert!(p > 40.0, "{from:?}->{to:?}->{from:?}: {p} dB");
                }
            }
        }
    }

    #[test]
    fn lossless_conversions_are_exact_and_keep_alpha() {
        let rgba: Vec<u8> = (0..4 * 4 * 2).map(|i| (i * 7) as u8).collect();
        let m = PixelMap::packed(4, 2, PixelFormat::Rgba8888, rgba.clone()).unwrap();
        let bgra = m.convert(PixelFormat::Bgra8888).unwrap();
        assert_eq!(&bgra.data()[..4], &[rgba[2], rgba[1], rgba[0], rgba[3]]);
        assert_eq!(bgra.convert(PixelFormat::Rgba8888).unwrap().data()[..], rgba[..]);
        let yuv: Vec<u8> = (0..4 * 4 * 3 / 2).map(|i| (i * 11) as u8).collect();
        let m = PixelMap::packed(4, 4, PixelFormat::I420, yuv.clone()).unwrap();
        for f in [PixelFormat::Nv12, PixelFormat::Nv21] {
            let n = m.convert(f).unwrap();
            assert_eq!(n.convert(PixelFormat::I420).unwrap().data()[..], yuv[..]);
        }
        let nv12 = m.convert(PixelFormat::Nv12).unwrap();
        assert_eq!(&nv12.data()[16..18], &[yuv[16], yuv[20]]);
        let nv21 = m.convert(PixelFormat::Nv21).unwrap();
        assert_eq!(&nv21.data()[16..18], &[yuv[20], yuv[16]]);
    }

    #[test]
    fn padded_strides_are_honoured() {
        // 2x2 RGB with stride 8 (2 padding bytes of garbage per row).
        let data = vec![1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99];
        let m = PixelMap::new(2, 2, PixelFormat::Rgb888, 8, data).unwrap();
        let p = m.convert(PixelFormat::Rgb888).unwrap();
        assert_eq!(&p.data()[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        // I420 2x2 with stride 4: Y rows of 4, chroma stride 2, 1 row each.
        let data = vec![10, 11, 0, 0, 12, 13, 0, 0, 100, 0, 200, 0];
        let m = PixelMap::new(2, 2, PixelFormat::I420, 4, data).unwrap();
        assert_eq!(&m.convert(PixelFormat::I420).unwrap().data()[..], &[10, 11, 12, 13, 100, 200]);
        // NV21 2x2 with stride 4.
        let data = vec![10, 11, 0, 0, 12, 13, 0, 0, 200, 100, 0, 0];
        let m = PixelMap::new(2, 2, PixelFormat::Nv21, 4, data).unwrap();
        assert_eq!(&m.convert(PixelFormat::I420).unwrap().data()[..], &[10, 11, 12, 13, 100, 200]);
    }

    #[test]
    fn odd_sized_rgb_cannot_become_yuv() {
        let m = rgb_map(3, 3, |_, _| [1, 2, 3]);
        assert!(matches!(m.convert(PixelFormat::Nv21), Err(PixelError::OddDimension { .. })));
        assert!(m.convert(PixelFormat::Bgra8888).is_ok());
    }

    #[test]
    fn psnr_behaves() {
        let a = rgb_map(4, 4, |x, y| [(x * 50) as u8, (y * 50) as u8, 7]);
        assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
        assert_eq!(psnr_luma(&a, &a).unwrap(), f64::INFINITY);
        // Every byte off by one: MSE 1 -> 48.13 dB.
        let b = rgb_map(4, 4, |x, y| [(x * 50) as u8 + 1, (y * 50) as u8 + 1, 8]);
        let p = psnr(&a, &b).unwrap();
        assert!((p - 48.1308).abs() < 1e-3, "{p}");
        let c = rgb_map(4, 2, |_, _| [0, 0, 0]);
        assert!(matches!(psnr(&a, &c), Err(PixelError::SizeMismatch { .. })));
        assert!(psnr_luma(&a, &b).unwrap() > 40.0);
    }
}
