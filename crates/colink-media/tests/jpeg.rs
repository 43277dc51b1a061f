//! JPEG round trips and hostile input, as `send_image` / `receiveImage` use them.

use colink_media::jpeg::{self, DecodeLimits};
use colink_media::{ImageError, PixelFormat, PixelMap, psnr};
use proptest::prelude::*;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// A smooth, natural-looking image: sky-like vertical gradient, hills from sinusoids, soft
/// texture and mild noise.
fn photographic(w: u32, h: u32, seed: u64) -> PixelMap {
    let mut rng = Rng(seed);
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
            let horizon = 0.55 + 0.08 * (fx * 9.0).sin() + 0.04 * (fx * 23.0 + 1.0).sin();
            let (r, g, b) = if fy < horizon {
                // Sky: blue gradient with soft clouds.
                let cloud = 0.5 + 0.5 * ((fx * 7.0 + fy * 3.0).sin() * (fx * 2.0 - fy * 5.0).cos());
                (90.0 + 100.0 * fy + 60.0 * cloud, 140.0 + 70.0 * fy + 50.0 * cloud, 230.0 - 20.0 * fy)
            } else {
                // Grass: green with texture and shading.
                let tex = (fx * 140.0).sin() * (fy * 90.0).cos();
                let shade = 1.0 - 0.6 * (fy - horizon);
                ((60.0 + 20.0 * tex) * shade, (140.0 + 35.0 * tex) * shade, (50.0 + 10.0 * tex) * shade)
            };
            for c in [r, g, b] {
                v.push((c + 4.0 * rng.unit()).clamp(0.0, 255.0) as u8);
            }
        }
    }
    PixelMap::packed(w, h, PixelFormat::Rgb888, v).unwrap()
}

/// A synthetic image with hard edges: colour bars, a checkerboard and text-like strokes.
fn synthetic(w: u32, h: u32) -> PixelMap {
    const BARS: [[u8; 3]; 8] = [
        [255, 255, 255],
        [255, 255, 0],
        [0, 255, 255],
        [0, 255, 0],
        [255, 0, 255],
        [255, 0, 0],
        [0, 0, 255],
        [0, 0, 0],
    ];
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let px = if y < h / 3 {
                BARS[(x * 8 / w) as usize]
            } else if y < 2 * h / 3 {
                if ((x / 6) + (y / 6)) % 2 == 0 { [20, 20, 20] } else { [230, 230, 230] }
            } else {
                // "Text": 1-2 px dark strokes of glyph-like boxes on white.
                let (cx, cy) = (x % 12, (y - 2 * h / 3) % 16);
                let stroke = (cy < 12) && (cx == 1 || cx == 2 || cy == 1 || (cy == 6 && cx < 8) || cx == 8);
                if stroke && (x / 12 + y / 16) % 3 != 0 { [10, 10, 40] } else { [250, 250, 245] }
            };
            v.extend_from_slice(&px);
        }
    }
    PixelMap::packed(w, h, PixelFormat::Rgb888, v).unwrap()
}

fn round_trip_rises_with_quality(name: &str, img: &PixelMap) {
    let mut last = 0.0;
    for q in [10, 30, 90] {
        let jpeg = jpeg::encode(img, q).unwrap();
        let out = jpeg::decode(&jpeg, DecodeLimits::default()).unwrap();
        assert_eq!((out.width(), out.height()), (img.width(), img.height()));
        assert_eq!(out.format(), PixelFormat::Rgb888);
        let p = psnr(img, &out).unwrap();
        println!("{name} {}x{} q{q}: {} bytes, PSNR {p:.2} dB", img.width(), img.height(), jpeg.len());
        assert!(p > last, "{name}: PSNR must rise with quality ({p:.2} after {last:.2})");
        last = p;
    }
    assert!(last > 30.0, "{name}: q90 should be good ({last:.2} dB)");
}

#[test]
fn photographic_round_trip() {
    round_trip_rises_with_quality("photographic", &photographic(640, 480, 42));
}

#[test]
fn synthetic_round_trip() {
    round_trip_rises_with_quality("synthetic", &synthetic(512, 384));
}

#[test]
fn odd_sizes_and_yuv_input_round_trip() {
    let img = photographic(333, 77, 7);
    let out = jpeg::decode(&jpeg::encode(&img, 30).unwrap(), DecodeLimits::default()).unwrap();
    assert_eq!((out.width(), out.height()), (333, 77));
    let nv21 = photographic(320, 240, 8).convert(PixelFormat::Nv21).unwrap();
    let out = jpeg::decode(&jpeg::encode(&nv21, 90).unwrap(), DecodeLimits::default()).unwrap();
    assert!(psnr(&nv21, &out).unwrap() > 30.0);
}

#[test]
fn garbage_and_truncated_input_are_errors() {
    let limits = DecodeLimits::default();
    assert!(matches!(jpeg::decode(&[], limits), Err(ImageError::Decode(_))));
    assert!(matches!(jpeg::decode(b"not a jpeg at all", limits), Err(ImageError::Decode(_))));
    assert!(matches!(jpeg::decode(&[0xFF, 0xD8], limits), Err(ImageError::Decode(_))));
    let good = jpeg::encode(&synthetic(64, 48), 50).unwrap();
    // Cut inside the headers: always an error.
    for cut in [3, 10, 50, 150] {
        assert!(jpeg::decode(&good[..cut], limits).is_err(), "cut at {cut}");
    }
    // Cut anywhere: never a panic, and a result (if any) keeps the header's size.
    for cut in 0..good.len() {
        if let Ok(m) = jpeg::decode(&good[..cut], limits) {
            assert_eq!((m.width(), m.height()), (64, 48));
        }
    }
    // Bit flips anywhere: never a panic.
    let mut rng = Rng(99);
    for _ in 0..300 {
        let mut bad = good.to_vec();
        for _ in 0..1 + rng.next() % 4 {
            let at = rng.next() as usize % bad.len();
            bad[at] ^= 1 << (rng.next() % 8);
        }
        if let Ok(m) = jpeg::decode(&bad, limits) {
            assert!(m.width() <= 16_384 && m.height() <= 16_384);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = jpeg::decode(&bytes, DecodeLimits::default());
    }

    #[test]
    fn decode_never_panics_on_bytes_after_a_jpeg_header(
        tail in proptest::collection::vec(any::<u8>(), 0..1024),
        cut in 0usize..400,
    ) {
        let good = jpeg::encode(&synthetic(32, 32), 40).unwrap();
        let mut bytes = good[..cut.min(good.len())].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = jpeg::decode(&bytes, DecodeLimits::default());
    }
}
