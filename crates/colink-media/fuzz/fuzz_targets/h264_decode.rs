//! Fuzzes the H.264 decoder (openh264's C decoder behind `colink_media::video::H264Decoder`) with what a
//! hostile peer could send as stream frames: a few access units fed in order to one decoder, as a SINK does,
//! with a fresh decoder after an error (as the SINK does). No crash, and every picture that comes out is a
//! valid packed I420 frame within the pixel-map limits.
//!
//! openh264 is C built by the `cc` crate without coverage instrumentation, so libFuzzer cannot steer into it by
//! itself. Half of the inputs therefore corrupt a real stream instead of being decoded raw:
//! - byte 0, bit 7 clear: **raw**. The rest is cut into `(byte 0 & 3) + 1` access units at the Annex B start
//!   codes nearest to equal split points.
//! - byte 0, bit 7 set: **mutated**. A real stream (6 frames of 64x48 from colink's own encoder: key, P, P,
//!   key, P, P) is edited by the rest of the input, 4 bytes per edit: `[unit, offset hi, offset lo, x]`
//!   XORs `x` into byte `offset % len` of unit `unit % 6`; an edit with `x = 0` truncates the unit there
//!   instead. Bit 6 of byte 0 drops the first key frame.
#![no_main]

use std::sync::OnceLock;

use colink_media::pattern::test_pattern;
use colink_media::pixel::{MAX_DIMENSION, MAX_PIXELS, PixelFormat};
use colink_media::video::{EncoderConfig, H264Decoder, H264Encoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let units = if mode & 0x80 == 0 { raw_units(rest, usize::from(mode & 3) + 1) } else { mutated(mode, rest) };
    // An unedited real stream must decode completely: this checks the mutated inputs start from something real.
    let unedited = mode & 0xc0 == 0x80 && rest.len() < 4;
    let mut pictures = 0;
    let Ok(mut decoder) = H264Decoder::new() else { return };
    for unit in &units {
        match decoder.decode(unit) {
            Ok(Some(picture)) => {
                pictures += 1;
                assert_eq!(picture.format(), PixelFormat::I420);
                let (w, h) = (picture.width(), picture.height());
                assert!(w > 0 && h > 0 && w % 2 == 0 && h % 2 == 0);
                assert!(w <= MAX_DIMENSION && h <= MAX_DIMENSION && u64::from(w) * u64::from(h) <= MAX_PIXELS);
                assert!(picture.is_packed());
                assert_eq!(picture.data().len(), (w * h + 2 * (w / 2) * (h / 2)) as usize);
            }
            Ok(None) => {}
            Err(e) => {
                assert!(!unedited, "colink's own stream does not decode: {e}");
                match H264Decoder::new() {
                    Ok(d) => decoder = d,
                    Err(_) => return,
                }
            }
        }
    }
    if unedited {
        assert_eq!(pictures, 6, "colink's own stream decodes to 6 pictures");
    }
});

/// `stream` cut into `count` access units.
fn raw_units(stream: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut units = Vec::with_capacity(count);
    let mut start = 0;
    for i in 1..=count {
        let end = if i == count { stream.len() } else { cut(stream, (stream.len() * i / count).max(start)) };
        units.push(stream[start..end].to_vec());
        start = end;
    }
    units
}

/// The first `00 00 01` start code at or after `at` (with the leading zero of a 4-byte code), else the end.
fn cut(stream: &[u8], at: usize) -> usize {
    let at = at.min(stream.len());
    match stream[at..].windows(3).position(|w| w == [0, 0, 1]) {
        Some(p) => {
            let p = at + p;
            if p > at && stream[p - 1] == 0 { p - 1 } else { p }
        }
        None => stream.len(),
    }
}

/// The real stream, edited as the module docs say.
fn mutated(mode: u8, edits: &[u8]) -> Vec<Vec<u8>> {
    let mut units = seed().to_vec();
    for edit in edits.chunks_exact(4) {
        let unit = &mut units[usize::from(edit[0]) % 6];
        if unit.is_empty() {
            continue;
        }
        let at = usize::from(u16::from_be_bytes([edit[1], edit[2]])) % unit.len();
        if edit[3] == 0 {
            unit.truncate(at);
        } else {
            unit[at] ^= edit[3];
        }
    }
    if mode & 0x40 != 0 {
        units.remove(0);
    }
    units
}

/// Six access units from colink's encoder, made once.
fn seed() -> &'static [Vec<u8>] {
    static SEED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut encoder = H264Encoder::new(EncoderConfig::new(64, 48, 200_000)).expect("a 64x48 encoder");
        (0..6u64)
            .map(|i| {
                if i == 3 {
                    encoder.request_keyframe();
                }
                let frame = test_pattern(64, 48, i, PixelFormat::I420);
                encoder.encode(&frame).expect("encodes").expect("a frame").data.to_vec()
            })
            .collect()
    })
}
