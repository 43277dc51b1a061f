//! A deterministic moving test pattern for exercising the video path.
//!
//! The frame is a function of `(width, height, frame_index)` only. From top to bottom it shows
//! 75 % colour bars (static), a row of 16 black/white cells spelling `frame_index` in binary
//! (least significant bit on the left, changes every frame), and a colour ramp with a sinusoidal
//! ripple that scrolls left by 2 pixels per frame. A textured box with a white border bounces
//! across the whole picture (4 px/frame horizontally, 3 px/frame vertically at 640 × 480, scaled
//! with the width), a spoked wheel turns 6° per frame in the lower right, and every pixel carries
//! a little deterministic noise (±3 levels, different each frame, like a camera sensor's).
//! Static areas, translation, rotation and noise together make it a realistic, repeatable load
//! for an H.264 encoder: at 640 × 480, 30 fps it needs a few hundred kbit/s for good quality.

use crate::pixel::{MAX_DIMENSION, MAX_PIXELS, PixelFormat, PixelMap};

/// 75 % colour bars: white, yellow, cyan, green, magenta, red, blue.
const BARS: [[u8; 3]; 7] =
    [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191]];

/// Renders frame `frame_index` of the test pattern in `format` (packed).
///
/// Never fails: `width` and `height` are clamped into `1..=MAX_DIMENSION` (the height is lowered
/// further if `width × height` would exceed [`MAX_PIXELS`]), and for the 4:2:0 formats an odd
/// width or height is rounded up to the next even number. The returned map's
/// [`width`](PixelMap::width) and [`height`](PixelMap::height) are authoritative; for ordinary
/// even sizes they are exactly the ones requested.
#[must_use]
pub fn test_pattern(width: u32, height: u32, frame_index: u64, format: PixelFormat) -> PixelMap {
    let (w, h) = fit(width, height, format);
    let rgb = render(w as usize, h as usize, frame_index);
    let map = PixelMap::from_packed_vec(w, h, PixelFormat::Rgb888, rgb);
    if format == PixelFormat::Rgb888 {
        return map;
    }
    // Cannot fail: the dimensions were fitted to the format above.
    map.convert(format).unwrap_or(map)
}

fn fit(width: u32, height: u32, format: PixelFormat) -> (u32, u32) {
    let mut w = width.clamp(1, MAX_DIMENSION);
    let mut h = height.clamp(1, MAX_DIMENSION);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        h = (MAX_PIXELS / u64::from(w)) as u32;
    }
    if format.is_yuv420() {
        w += w % 2;
        h += h % 2;
        while u64::from(w) * u64::from(h) > MAX_PIXELS {
            h -= 2;
        }
    }
    (w, h)
}

/// Deterministic noise in -3..=3 for pixel `i` of frame `t` (an integer hash, no RNG state).
fn noise(i: u64, t: u64) -> i32 {
    let mut v = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    v ^= v >> 29;
    v = v.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    v ^= v >> 32;
    (v % 7) as i32 - 3
}

/// Triangle wave: 0, 1, ..., span, span-1, ..., 0, 1, ...
fn bounce(v: u64, span: u64) -> u64 {
    if span == 0 {
        return 0;
    }
    let p = v % (2 * span);
    if p <= span { p } else { 2 * span - p }
}

fn render(w: usize, h: usize, t: u64) -> Vec<u8> {
    let mut rgb = vec![0u8; w * h * 3];
    let bars_end = h * 7 / 12;
    let cells_end = (h * 2 / 3).max(bars_end);
    // Per-column ripple of the bottom ramp (computed once per frame, scrolled with the ramp).
    let shift = ((t % w as u64) * 2 % w as u64) as usize;
    let ripple: Vec<i32> = (0..w)
        .map(|x| {
            let xs = (x + shift) % w;
            (24.0 * (xs as f64 * std::f64::consts::TAU * 6.0 / w as f64).sin()) as i32
        })
        .collect();
    for (y, row) in rgb.chunks_exact_mut(w * 3).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let c = if y < bars_end {
                BARS[x * 7 / w]
            } else if y < cells_end {
                let bit = x * 16 / w;
                if (t >> bit) & 1 == 1 { [235, 235, 235] } else { [16, 16, 16] }
            } else {
                let xs = (x + shift) % w;
                let ramp = (xs * 255 / w) as i32;
                let band = ((y - cells_end) * 255 / (h - cells_end).max(1)) as i32;
                let r = ramp + ripple[x];
                let g = band;
                let b = 255 - ramp - ripple[x] / 2;
                [r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8]
            };
            px.copy_from_slice(&c);
        }
    }
    // The bouncing box.
    let bw = (w / 8).max(1);
    let bh = (h / 6).max(1);
    let speed = (w as u64 / 160).max(1);
    let bx = bounce(t.wrapping_mul(speed), (w - bw) as u64) as usize;
    let by = bounce(t.wrapping_mul(speed).wrapping_mul(3) / 4, (h - bh) as u64) as usize;
    for y in by..by + bh {
        let row = &mut rgb[y * w * 3..][..w * 3];
        for x in bx..bx + bw {
            let (lx, ly) = (x - bx, y - by);
            let border = lx < 2 || ly < 2 || lx + 2 >= bw || ly + 2 >= bh;
            let c = if border {
                [255, 255, 255]
            } else {
                let d = ((lx + ly) * 255 / (bw + bh)) as u8;
                let check = if ((lx / 4) + (ly / 4)) % 2 == 0 { 40 } else { 0 };
                [d, 255 - d, 128 + check]
            };
            row[x * 3..x * 3 + 3].copy_from_slice(&c);
        }
    }
    // A spoked wheel turning 6 degrees per frame (rotation defeats block motion search).
    let r = (h.min(w) / 6).max(1) as i64;
    let (cx, cy) = ((w as i64) * 5 / 6, (h as i64) * 5 / 6);
    let phase = (t % 60) as f64 * std::f64::consts::TAU / 60.0;
    for y in (cy - r).max(0)..(cy + r).min(h as i64) {
        for x in (cx - r).max(0)..(cx + r).min(w as i64) {
            let (dx, dy) = (x - cx, y - cy);
            if dx * dx + dy * dy < r * r {
                let a = (dy as f64).atan2(dx as f64) + phase;
                let spoke = (a * 6.0).sin() > 0.0;
                let c: [u8; 3] = if spoke { [250, 210, 40] } else { [40, 40, 90] };
                let at = (y as usize * w + x as usize) * 3;
                rgb[at..at + 3].copy_from_slice(&c);
            }
        }
    }
    // Low-level sensor-like noise that changes every frame (as a camera's does).
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        let n = noise(i as u64, t);
        for c in px {
            *c = (i32::from(*c) + n).clamp(0, 255) as u8;
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_moving() {
        let a = test_pattern(64, 48, 5, PixelFormat::Rgb888);
        let b = test_pattern(64, 48, 5, PixelFormat::Rgb888);
        let c = test_pattern(64, 48, 6, PixelFormat::Rgb888);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Consecutive frames are similar but not identical (realistic temporal redundancy).
        let p = crate::pixel::psnr(&a, &c).unwrap();
        assert!(p.is_finite() && p > 10.0, "{p}");
    }

    #[test]
    fn every_format_and_awkward_sizes() {
        for f in PixelFormat::ALL {
            let m = test_pattern(640, 480, 3, f);
            assert_eq!((m.width(), m.height(), m.format()), (640, 480, f));
            assert!(m.is_packed());
        }
        let m = test_pattern(1, 1, 0, PixelFormat::Rgba8888);
        assert_eq!((m.width(), m.height()), (1, 1));
        let m = test_pattern(0, 3, 0, PixelFormat::Nv21);
        assert_eq!((m.width(), m.height()), (2, 4));
        let m = test_pattern(u32::MAX, 3, u64::MAX, PixelFormat::I420);
        assert_eq!((m.width(), m.height()), (MAX_DIMENSION, 4));
        assert_eq!(fit(u32::MAX, u32::MAX, PixelFormat::Nv12), (16_384, 4_096));
        assert_eq!(fit(16_383, 16_384, PixelFormat::Nv12), (16_384, 4_096));
    }
}
