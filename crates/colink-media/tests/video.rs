//! H.264 encoder/decoder behaviour colink's media streams rely on.

use colink_media::video::{MAX_ACCESS_UNIT, MAX_BITRATE, MIN_BITRATE};
use colink_media::{
    EncodedFrame, EncoderConfig, H264Decoder, H264Encoder, PixelFormat, PixelMap, VideoError, psnr_luma, test_pattern,
};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

struct RunStats {
    avg_psnr: f64,
    kbps: f64,
}

/// Encodes `frames` frames of the test pattern and decodes each one immediately, checking that
/// every frame comes out with the right size.
fn run(width: u32, height: u32, bitrate: u32, frames: u64, format: PixelFormat) -> RunStats {
    let mut enc = H264Encoder::new(EncoderConfig::new(width, height, bitrate)).unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let (mut bytes, mut psnr_sum) = (0usize, 0.0);
    for i in 0..frames {
        let src = test_pattern(width, height, i, format);
        let frame = enc.encode(&src).unwrap().expect("frame skipping is disabled");
        assert_eq!(frame.keyframe, i == 0, "frame {i}");
        bytes += frame.data.len();
        let out = dec.decode(&frame.data).unwrap().unwrap_or_else(|| panic!("frame {i} produced no picture"));
        assert_eq!((out.width(), out.height(), out.format()), (width, height, PixelFormat::I420));
        psnr_sum += psnr_luma(&src, &out).unwrap();
    }
    let seconds = frames as f64 / 30.0;
    RunStats { avg_psnr: psnr_sum / frames as f64, kbps: bytes as f64 * 8.0 / seconds / 1000.0 }
}

#[test]
fn vga_at_500k_and_80k_decodes_every_frame_with_expected_quality_and_rate() {
    let hi = run(640, 480, 500_000, 60, PixelFormat::Nv21);
    println!("640x480 @ 500 kbit/s: avg luma PSNR {:.2} dB, output {:.1} kbit/s", hi.avg_psnr, hi.kbps);
    assert!(hi.avg_psnr >= 30.0, "PSNR {:.2}", hi.avg_psnr);
    assert!((350.0..=650.0).contains(&hi.kbps), "output {:.1} kbit/s not within 30 % of 500", hi.kbps);

    let lo = run(640, 480, 80_000, 60, PixelFormat::Nv12);
    println!("640x480 @ 80 kbit/s: avg luma PSNR {:.2} dB, output {:.1} kbit/s", lo.avg_psnr, lo.kbps);
    assert!(lo.avg_psnr < hi.avg_psnr);
    assert!(lo.kbps < hi.kbps);
}

fn encode_all(enc: &mut H264Encoder, first: u64, count: u64) -> Vec<EncodedFrame> {
    let c = enc.config();
    (first..first + count)
        .map(|i| enc.encode(&test_pattern(c.width, c.height, i, PixelFormat::I420)).unwrap().unwrap())
        .collect()
}

#[test]
fn keyframe_interval_is_respected() {
    let mut cfg = EncoderConfig::new(160, 120, 200_000);
    cfg.keyframe_interval = 10;
    let mut enc = H264Encoder::new(cfg).unwrap();
    let keys: Vec<usize> =
        encode_all(&mut enc, 0, 35).iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
    assert_eq!(keys, [0, 10, 20, 30]);

    // 0: only the first frame (and requested ones) are key frames.
    cfg.keyframe_interval = 0;
    let mut enc = H264Encoder::new(cfg).unwrap();
    let frames = encode_all(&mut enc, 0, 70);
    assert!(frames[0].keyframe && frames[1..].iter().all(|f| !f.keyframe));

    let d = EncoderConfig::default();
    assert_eq!((d.width, d.height, d.bitrate, d.fps, d.keyframe_interval), (640, 480, 80_000, 30.0, 60));
    let custom = EncoderConfig { width: 320, height: 240, ..EncoderConfig::default() };
    assert!(custom.validate().is_ok());
}

#[test]
fn request_keyframe_makes_the_next_frame_an_idr() {
    let mut enc = H264Encoder::new(EncoderConfig::new(160, 120, 200_000)).unwrap();
    let before = encode_all(&mut enc, 0, 5);
    assert!(before[0].keyframe && before[1..].iter().all(|f| !f.keyframe));
    enc.request_keyframe();
    let after = encode_all(&mut enc, 5, 3);
    assert!(after[0].keyframe);
    assert!(!after[1].keyframe && !after[2].keyframe, "only one key frame per request");
    // The forced key frame is self-contained: a fresh decoder starts there.
    let mut dec = H264Decoder::new().unwrap();
    for f in &after {
        assert!(dec.decode(&f.data).unwrap().is_some());
    }
}

#[test]
fn a_fresh_decoder_can_start_at_any_keyframe() {
    let mut cfg = EncoderConfig::new(320, 240, 300_000);
    cfg.keyframe_interval = 15;
    let mut enc = H264Encoder::new(cfg).unwrap();
    let frames = encode_all(&mut enc, 0, 50);
    let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].keyframe).collect();
    assert_eq!(keys, [0, 15, 30, 45]);
    for &k in &keys {
        let mut dec = H264Decoder::new().unwrap();
        for (i, f) in frames.iter().enumerate().skip(k) {
            let out = dec.decode(&f.data).unwrap().unwrap();
            let src = test_pattern(320, 240, i as u64, PixelFormat::I420);
            let p = psnr_luma(&src, &out).unwrap();
            assert!(p > 28.0, "start {k}, frame {i}: {p:.2} dB");
        }
    }
    // Dropping a whole group (16..30) and resuming at the next key frame also works.
    let mut dec = H264Decoder::new().unwrap();
    for f in frames[..16].iter().chain(&frames[30..]) {
        assert!(dec.decode(&f.data).unwrap().is_some());
    }
}

#[test]
fn set_bitrate_lowers_the_output_and_restarts_with_a_keyframe() {
    let mut enc = H264Encoder::new(EncoderConfig::new(320, 240, 1_000_000)).unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let high = encode_all(&mut enc, 0, 30);
    enc.set_bitrate(100_000).unwrap();
    assert_eq!(enc.bitrate(), 100_000);
    assert_eq!(enc.config().bitrate, 100_000);
    let low = encode_all(&mut enc, 30, 30);
    assert!(low[0].keyframe, "the frame after a bitrate change is an IDR");
    // Steady-state P-frame sizes, skipping the key frames and rate-control settling.
    let avg = |fs: &[EncodedFrame]| fs[10..].iter().map(|f| f.data.len()).sum::<usize>() as f64 / 20.0;
    let (h, l) = (avg(&high), avg(&low));
    println!("avg frame at 1 Mbit/s: {h:.0} B, after set_bitrate(100 kbit/s): {l:.0} B");
    assert!(l < h * 0.5, "{l} vs {h}");
    // The same decoder continues straight across the change.
    for f in high.iter().chain(&low) {
        assert!(dec.decode(&f.data).unwrap().is_some());
    }
    // Out of range: error, nothing changes.
    assert_eq!(enc.set_bitrate(MAX_BITRATE + 1), Err(VideoError::BitrateNotSupported));
    assert_eq!(enc.bitrate(), 100_000);
    assert!(!encode_all(&mut enc, 60, 1)[0].keyframe);
    // Same bitrate again: no restart.
    enc.set_bitrate(100_000).unwrap();
    assert!(!encode_all(&mut enc, 61, 1)[0].keyframe);
}

#[test]
fn both_ends_of_the_bitrate_range_work() {
    for bitrate in [MIN_BITRATE, MAX_BITRATE] {
        let mut enc = H264Encoder::new(EncoderConfig::new(640, 480, bitrate)).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let frames = encode_all(&mut enc, 0, 4);
        let total: usize = frames.iter().map(|f| f.data.len()).sum();
        println!("bitrate {bitrate}: 4 frames, {total} bytes");
        for f in &frames {
            assert!(dec.decode(&f.data).unwrap().is_some());
        }
    }
    for bitrate in [0, MIN_BITRATE - 1, MAX_BITRATE + 1, u32::MAX] {
        assert_eq!(
            H264Encoder::new(EncoderConfig::new(640, 480, bitrate)).unwrap_err(),
            VideoError::BitrateNotSupported,
            "{bitrate}"
        );
    }
}

#[test]
fn invalid_configs_and_frames_are_errors() {
    for (w, h) in [(0, 480), (641, 480), (640, 481), (3842, 2160), (3840, 2162), (2160, 3840)] {
        let r = H264Encoder::new(EncoderConfig::new(w, h, 500_000));
        if (w, h) == (2160, 3840) {
            assert!(r.is_ok(), "portrait 4K is fine");
        } else {
            assert!(matches!(r, Err(VideoError::UnsupportedDimensions { .. })), "{w}x{h}");
        }
    }
    for fps in [0.0, -1.0, f32::NAN, f32::INFINITY, 500.0] {
        let mut cfg = EncoderConfig::new(64, 64, 100_000);
        cfg.fps = fps;
        assert!(matches!(H264Encoder::new(cfg), Err(VideoError::UnsupportedFrameRate(_))));
    }
    let mut enc = H264Encoder::new(EncoderConfig::new(64, 64, 100_000)).unwrap();
    let wrong = test_pattern(64, 48, 0, PixelFormat::I420);
    assert!(matches!(enc.encode(&wrong), Err(VideoError::FrameSizeMismatch { .. })));
    // Any input format is accepted, including padded strides.
    let rgba = test_pattern(64, 64, 0, PixelFormat::Rgba8888);
    let mut padded = Vec::new();
    for row in rgba.data().chunks(256) {
        padded.extend_from_slice(row);
        padded.extend_from_slice(&[0; 16]);
    }
    let padded = PixelMap::new(64, 64, PixelFormat::Rgba8888, 272, padded).unwrap();
    assert!(enc.encode(&padded).unwrap().is_some());
}

#[test]
fn corrupt_input_never_panics_and_the_decoder_recovers_at_a_keyframe() {
    let mut cfg = EncoderConfig::new(160, 120, 200_000);
    cfg.keyframe_interval = 8;
    let mut enc = H264Encoder::new(cfg).unwrap();
    let frames = encode_all(&mut enc, 0, 16);
    let mut dec = H264Decoder::new().unwrap();
    let mut rng = Rng(0x5EED);
    let (mut errors, mut pictures) = (0, 0);
    for round in 0..300 {
        let input: Vec<u8> = match round % 4 {
            // Random bytes.
            0 => (0..rng.next() % 2000).map(|_| rng.next() as u8).collect(),
            // Random NAL units behind valid start codes.
            1 => {
                let mut v = Vec::new();
                for _ in 0..1 + rng.next() % 4 {
                    v.extend_from_slice(&[0, 0, 0, 1]);
                    v.extend((0..rng.next() % 300).map(|_| rng.next() as u8));
                }
                v
            }
            // A real access unit, truncated.
            2 => {
                let f = &frames[(rng.next() % 16) as usize].data;
                f[..(rng.next() as usize % f.len())].to_vec()
            }
            // A real access unit with some bytes flipped.
            _ => {
                let mut v = frames[(rng.next() % 16) as usize].data.to_vec();
                for _ in 0..1 + rng.next() % 8 {
                    let at = 5 + rng.next() as usize % (v.len() - 5);
                    v[at] ^= 1 << (rng.next() % 8);
                }
                v
            }
        };
        match dec.decode(&input) {
            Ok(Some(p)) => {
                pictures += 1;
                assert!(p.width() <= 16_384 && p.height() <= 16_384);
            }
            Ok(None) => {}
            Err(_) => errors += 1,
        }
    }
    println!("corrupt input: {errors} errors, {pictures} pictures out of 300 inputs");
    assert!(errors > 0, "garbage must be reported as errors");
    // After all that, a key frame and its group decode cleanly again.
    for (i, f) in frames.iter().enumerate().skip(8) {
        let out = dec.decode(&f.data).unwrap().unwrap();
        let p = psnr_luma(&test_pattern(160, 120, i as u64, PixelFormat::I420), &out).unwrap();
        assert!(p > 28.0, "frame {i}: {p:.2}");
    }
    assert!(dec.decode(&[]).unwrap().is_none());
    let huge = vec![0u8; MAX_ACCESS_UNIT + 1];
    assert_eq!(dec.decode(&huge), Err(VideoError::AccessUnitTooLarge(MAX_ACCESS_UNIT + 1)));
}
