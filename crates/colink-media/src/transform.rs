//! Pixel-exact rotation and flip of a [`PixelMap`] in any [`PixelFormat`].
//!
//! [`transform`] applies the **flip first, then the rotation** (clockwise). Rotating by 90° or
//! 270° swaps width and height. The 4:2:0 formats transform the Y plane and the chroma plane(s)
//! with the same mapping at half resolution, so each 2×2 luma block keeps its chroma sample and
//! nothing is resampled: the result is exactly the input's pixels moved. The output is packed and
//! keeps the input's format.

use crate::pixel::{PixelFormat, PixelMap};

/// A clockwise rotation by a multiple of 90°: the pixel operation's parameter. colink's API has its own
/// `colink::api::Rotation` with the reference's degree rules (any other angle is no rotation); colink
/// translates it to this one where it calls [`transform`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rotation {
    /// No rotation.
    #[default]
    None,
    /// 90° clockwise.
    Deg90,
    /// 180°.
    Deg180,
    /// 270° clockwise (90° counter-clockwise).
    Deg270,
}

impl Rotation {
    /// Every rotation, in declaration order.
    pub const ALL: [Self; 4] = [Self::None, Self::Deg90, Self::Deg180, Self::Deg270];

    /// The rotation for `degrees` clockwise; only 0, 90, 180 and 270 are rotations (any other
    /// value gives `None`, matching the reference API where other values mean "no rotation").
    #[must_use]
    pub const fn from_degrees(degrees: u32) -> Option<Self> {
        match degrees {
            0 => Some(Self::None),
            90 => Some(Self::Deg90),
            180 => Some(Self::Deg180),
            270 => Some(Self::Deg270),
            _ => None,
        }
    }

    /// The angle in degrees clockwise.
    #[must_use]
    pub const fn degrees(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Deg90 => 90,
            Self::Deg180 => 180,
            Self::Deg270 => 270,
        }
    }

    /// Whether the rotation swaps width and height.
    #[must_use]
    pub const fn swaps_dimensions(self) -> bool {
        matches!(self, Self::Deg90 | Self::Deg270)
    }
}

/// A mirror image.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flip {
    /// Mirror left ↔ right.
    Horizontal,
    /// Mirror top ↔ bottom.
    Vertical,
}

/// Flips (if `flip` is set) and then rotates `src` clockwise by `rotation`. The result has the
/// same format, is packed, and for 90°/270° has width and height swapped. Never fails: every
/// valid [`PixelMap`] has a valid transform.
#[must_use]
pub fn transform(src: &PixelMap, rotation: Rotation, flip: Option<Flip>) -> PixelMap {
    let (w, h) = (src.width(), src.height());
    let (ow, oh) = if rotation.swaps_dimensions() { (h, w) } else { (w, h) };
    let format = src.format();
    let bpp = format.bytes_per_pixel() as usize;
    let total = format.buffer_len(format.min_stride(ow) as u32, oh).unwrap_or(0);
    let mut out = Vec::with_capacity(total);
    let (plane, stride, _) = src.plane(0);
    transform_plane(plane, stride, w as usize, h as usize, bpp, rotation, flip, &mut out);
    let (cw, ch) = (w as usize / 2, h as usize / 2);
    match format {
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            let (plane, stride, _) = src.plane(1);
            transform_plane(plane, stride, cw, ch, 2, rotation, flip, &mut out);
        }
        PixelFormat::I420 => {
            for p in 1..3 {
                let (plane, stride, _) = src.plane(p);
                transform_plane(plane, stride, cw, ch, 1, rotation, flip, &mut out);
            }
        }
        _ => {}
    }
    PixelMap::from_packed_vec(ow, oh, format, out)
}

/// Appends the transformed plane (`w`×`h` pixels of `bpp` bytes, rows `stride` apart) to `out`,
/// packed. Walks the destination in order and reads the source pixel each one comes from.
#[allow(clippy::too_many_arguments)]
fn transform_plane(
    src: &[u8],
    stride: usize,
    w: usize,
    h: usize,
    bpp: usize,
    rotation: Rotation,
    flip: Option<Flip>,
    out: &mut Vec<u8>,
) {
    let (ow, oh) = if rotation.swaps_dimensions() { (h, w) } else { (w, h) };
    let start = out.len();
    out.resize(start + ow * oh * bpp, 0);
    let dst = &mut out[start..];
    for (dy, row) in dst.chunks_exact_mut(ow * bpp).enumerate() {
        for (dx, px) in row.chunks_exact_mut(bpp).enumerate() {
            // Undo the rotation: destination (dx, dy) shows flipped-source pixel (fx, fy).
            let (fx, fy) = match rotation {
                Rotation::None => (dx, dy),
                Rotation::Deg90 => (dy, h - 1 - dx),
                Rotation::Deg180 => (w - 1 - dx, h - 1 - dy),
                Rotation::Deg270 => (w - 1 - dy, dx),
            };
            // Undo the flip (its own inverse).
            let (sx, sy) = match flip {
                None => (fx, fy),
                Some(Flip::Horizontal) => (w - 1 - fx, fy),
                Some(Flip::Vertical) => (fx, h - 1 - fy),
            };
            let at = sy * stride + sx * bpp;
            px.copy_from_slice(&src[at..at + bpp]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame in which every sample of every plane has a distinct value (small sizes only).
    fn numbered(w: u32, h: u32, format: PixelFormat, stride_pad: u32) -> PixelMap {
        let stride = format.min_stride(w) as u32 + stride_pad;
        let len = format.buffer_len(stride, h).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        PixelMap::new(w, h, format, stride, data).unwrap()
    }

    /// Reads sample bytes of the source pixel at (x, y) for every plane, the straightforward way.
    fn sample(m: &PixelMap, x: u32, y: u32) -> Vec<u8> {
        let (s, h) = (m.stride() as usize, m.height() as usize);
        let d = m.data();
        let bpp = m.format().bytes_per_pixel() as usize;
        let (x, y) = (x as usize, y as usize);
        let mut v = d[y * s + x * bpp..][..bpp].to_vec();
        match m.format() {
            PixelFormat::Nv12 | PixelFormat::Nv21 => {
                v.extend_from_slice(&d[s * h + (y / 2) * s + (x / 2) * 2..][..2]);
            }
            PixelFormat::I420 => {
                let cs = s.div_ceil(2);
                v.push(d[s * h + (y / 2) * cs + x / 2]);
                v.push(d[s * h + cs * (h / 2) + (y / 2) * cs + x / 2]);
            }
            _ => {}
        }
        v
    }

    /// Where source pixel (x, y) of a w×h image ends up: flip, then rotate clockwise.
    fn forward(x: u32, y: u32, w: u32, h: u32, r: Rotation, f: Option<Flip>) -> (u32, u32) {
        let (x, y) = match f {
            None => (x, y),
            Some(Flip::Horizontal) => (w - 1 - x, y),
            Some(Flip::Vertical) => (x, h - 1 - y),
        };
        // Each quarter turn clockwise maps (x, y) in a W×H image to (H-1-y, x) in H×W.
        let (mut x, mut y, mut w, mut h) = (x, y, w, h);
        for _ in 0..r.degrees() / 90 {
            (x, y, w, h) = (h - 1 - y, x, h, w);
        }
        let _ = (w, h);
        (x, y)
    }

    #[test]
    fn every_rotation_and_flip_is_pixel_exact_for_every_format() {
        let flips = [None, Some(Flip::Horizontal), Some(Flip::Vertical)];
        for format in PixelFormat::ALL {
            for pad in [0, 3] {
                let src = numbered(6, 4, format, pad);
                for rotation in Rotation::ALL {
                    for flip in flips {
                        let out = transform(&src, rotation, flip);
                        let (ow, oh) = if rotation.swaps_dimensions() { (4, 6) } else { (6, 4) };
                        assert_eq!((out.width(), out.height(), out.format()), (ow, oh, format));
                        assert!(out.is_packed());
                        assert_eq!(out.data().len(), format.buffer_len(out.stride(), oh).unwrap());
                        for y in 0..4 {
                            for x in 0..6 {
                                let (dx, dy) = forward(x, y, 6, 4, rotation, flip);
                                assert_eq!(
                                    sample(&out, dx, dy),
                                    sample(&src, x, y),
                                    "{format:?} {rotation:?} {flip:?} ({x},{y})->({dx},{dy})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn compositions_agree() {
        for format in PixelFormat::ALL {
            let src = numbered(4, 8, format, 0);
            let mut m = src.clone();
            for _ in 0..4 {
                m = transform(&m, Rotation::Deg90, None);
            }
            assert_eq!(m, src, "{format:?}: four quarter turns are the identity");
            let a = transform(&src, Rotation::Deg180, Some(Flip::Horizontal));
            let b = transform(&src, Rotation::None, Some(Flip::Vertical));
            assert_eq!(a, b, "{format:?}: H flip + 180 = V flip");
            let a = transform(&transform(&src, Rotation::Deg90, None), Rotation::Deg180, None);
            assert_eq!(a, transform(&src, Rotation::Deg270, None));
            // Flip is applied before the rotation: H-flip then 90 = 90 then V-flip.
            let a = transform(&src, Rotation::Deg90, Some(Flip::Horizontal));
            let b = transform(&transform(&src, Rotation::Deg90, None), Rotation::None, Some(Flip::Vertical));
            assert_eq!(a, b, "{format:?}: flip first");
        }
    }

    #[test]
    fn degrees_round_trip() {
        for r in Rotation::ALL {
            assert_eq!(Rotation::from_degrees(r.degrees()), Some(r));
        }
        assert_eq!(Rotation::from_degrees(45), None);
    }
}
