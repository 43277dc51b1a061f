//! Images and stream frames on the CLI's side: reading PNG/JPEG files into pixel maps, writing pixel maps as
//! PNG, and measuring what comes out of a consumer surface (frames, gaps, latency, PSNR against the built-in
//! test pattern).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use colink::media::{PixelFormat, PixelMap, ReceivedFrame};
use colink_media::pattern::test_pattern;
use colink_media::pixel::psnr_luma;
use tokio::time::Instant;

use crate::error::{CliError, CliResult};

/// The frame rate `stream send` and the demo push at.
pub(crate) const FPS: u32 = 30;

/// A frame at least this close to the test pattern (luma PSNR, dB) marks the stream as the test pattern.
const PATTERN_DB: f64 = 18.0;

/// Reads a PNG or JPEG file (the format is taken from its content) into an RGBA8888 map when it has an
/// alpha channel, else RGB888.
pub(crate) fn load_image(path: &Path) -> CliResult<PixelMap> {
    let bad = |e: &dyn std::fmt::Display| CliError::failure(format_args!("cannot read image {}: {e}", path.display()));
    let reader = image::ImageReader::open(path).map_err(|e| bad(&e))?.with_guessed_format().map_err(|e| bad(&e))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => return Err(bad(&format_args!("{other:?} is not supported (PNG or JPEG only)"))),
        None => return Err(bad(&"not a PNG or JPEG file")),
    }
    let picture = reader.decode().map_err(|e| bad(&e))?;
    let (width, height) = (picture.width(), picture.height());
    let map = if picture.color().has_alpha() {
        PixelMap::packed(width, height, PixelFormat::Rgba8888, Bytes::from(picture.into_rgba8().into_raw()))
    } else {
        PixelMap::packed(width, height, PixelFormat::Rgb888, Bytes::from(picture.into_rgb8().into_raw()))
    };
    map.map_err(|e| bad(&e))
}

/// Writes `map` as a PNG file (RGBA when the map has alpha, else RGB).
pub(crate) fn save_png(path: &Path, map: &PixelMap) -> CliResult {
    let bad = |e: &dyn std::fmt::Display| CliError::failure(format_args!("cannot write {}: {e}", path.display()));
    let (format, color) = match map.format() {
        PixelFormat::Rgba8888 | PixelFormat::Bgra8888 => (PixelFormat::Rgba8888, image::ExtendedColorType::Rgba8),
        _ => (PixelFormat::Rgb888, image::ExtendedColorType::Rgb8),
    };
    let packed = map.convert(format).map_err(|e| bad(&e))?;
    let len = format.buffer_len(format.min_stride(map.width()) as u32, map.height()).unwrap_or(0);
    let data = packed.data().get(..len).ok_or_else(|| bad(&"the picture is shorter than its size"))?;
    image::save_buffer_with_format(path, data, map.width(), map.height(), color, image::ImageFormat::Png)
        .map_err(|e| bad(&e))
}

/// `RGBA8888`, `NV12`, ...
pub(crate) fn format_name(f: PixelFormat) -> &'static str {
    match f {
        PixelFormat::Rgba8888 => "RGBA8888",
        PixelFormat::Bgra8888 => "BGRA8888",
        PixelFormat::Rgb888 => "RGB888",
        PixelFormat::Nv21 => "NV21",
        PixelFormat::Nv12 => "NV12",
        PixelFormat::I420 => "I420",
        _ => "other",
    }
}

/// Parses `WxH` (both even, at least 16, at most 3840x2160 in either orientation: what the encoder takes).
pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT, e.g. 640x480"))?;
    let w: u32 = w.trim().parse().map_err(|_| format!("`{w}` is not a width"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("`{h}` is not a height"))?;
    if w % 2 == 1 || h % 2 == 1 || w < 16 || h < 16 {
        return Err(format!("{w}x{h}: width and height must be even and at least 16"));
    }
    let (long, short) = (w.max(h), w.min(h));
    if long > colink_media::video::MAX_ENCODE_LONG_SIDE || short > colink_media::video::MAX_ENCODE_SHORT_SIDE {
        return Err(format!("{w}x{h} is larger than the encoder's 3840x2160"));
    }
    Ok((w, h))
}

/// A frame timestamp on the wall clock: time since the Unix epoch (what `stream send` stamps frames with).
pub(crate) fn wall_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The latency of a frame stamped with [`wall_clock`] by a sender sharing this machine's clock: `None` when
/// the timestamp is not a wall-clock time (before 2001) or is off by more than an hour.
pub(crate) fn wall_clock_latency(timestamp: Duration) -> Option<Duration> {
    if timestamp.as_secs() < 1_000_000_000 {
        return None;
    }
    wall_clock().checked_sub(timestamp).filter(|d| *d < Duration::from_secs(3600))
}

/// What came out of a consumer surface so far.
#[derive(Debug, Default)]
pub(crate) struct FrameLog {
    /// Frames decoded (handed out by the surface).
    pub(crate) frames: u64,
    pub(crate) first_seq: Option<u32>,
    pub(crate) last_seq: u32,
    pub(crate) size: Option<(u32, u32)>,
    pub(crate) latencies_ms: Vec<f64>,
    /// Luma PSNR of each frame against the test pattern frame `seq - 1` (when the stream is the test pattern).
    pub(crate) psnr_db: Vec<f64>,
    /// Whether the stream is the test pattern (decided on the first frame).
    pub(crate) pattern: Option<bool>,
    pub(crate) saved: Vec<PathBuf>,
    /// When the first and the last frame came out.
    pub(crate) first_at: Option<Instant>,
    pub(crate) last_at: Option<Instant>,
}

impl FrameLog {
    /// Records one frame; `latency` as the caller measured it.
    pub(crate) fn add(&mut self, f: &ReceivedFrame, latency: Option<Duration>) {
        self.add_pixels(&f.pixels, f.seq, latency);
    }

    fn add_pixels(&mut self, pixels: &PixelMap, seq: u32, latency: Option<Duration>) {
        self.frames += 1;
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.first_seq.get_or_insert(seq);
        self.last_seq = self.last_seq.max(seq);
        self.size = Some((pixels.width(), pixels.height()));
        if let Some(l) = latency {
            self.latencies_ms.push(l.as_secs_f64() * 1000.0);
        }
        if self.pattern == Some(false) || seq == 0 {
            return;
        }
        let original = test_pattern(pixels.width(), pixels.height(), u64::from(seq - 1), PixelFormat::I420);
        let db = psnr_luma(&original, pixels).ok();
        let is_pattern = *self.pattern.get_or_insert(db.is_some_and(|d| d >= PATTERN_DB));
        if let (true, Some(db)) = (is_pattern, db) {
            self.psnr_db.push(db.min(99.0));
        }
    }

    /// Frames between the first and the last one seen that never came out (dropped at either end).
    pub(crate) fn missing(&self) -> u64 {
        match self.first_seq {
            Some(first) => (u64::from(self.last_seq) - u64::from(first) + 1).saturating_sub(self.frames),
            None => 0,
        }
    }

    /// Seconds from the first frame to the last.
    pub(crate) fn span_s(&self) -> f64 {
        match (self.first_at, self.last_at) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The `p`-th percentile latency in ms.
    pub(crate) fn latency_ms(&self, p: usize) -> Option<f64> {
        percentile(&self.latencies_ms, p)
    }

    /// Mean luma PSNR against the test pattern, dB.
    pub(crate) fn mean_psnr(&self) -> Option<f64> {
        (!self.psnr_db.is_empty()).then(|| self.psnr_db.iter().sum::<f64>() / self.psnr_db.len() as f64)
    }

    /// `latency p50 41.0 ms p99 80.3 ms; PSNR 35.1 dB against the test pattern` (the parts known).
    pub(crate) fn quality_text(&self) -> String {
        let latency = match (self.latency_ms(50), self.latency_ms(99)) {
            (Some(a), Some(b)) => format!("latency p50 {a:.1} ms p99 {b:.1} ms"),
            _ => "latency unknown (timestamps not on this clock)".to_owned(),
        };
        let psnr = match (self.pattern, self.mean_psnr()) {
            (Some(true), Some(db)) => format!("PSNR {db:.1} dB against the test pattern"),
            (Some(false), _) => "PSNR n/a (not the test pattern)".to_owned(),
            _ => "no PSNR yet".to_owned(),
        };
        format!("{latency}; {psnr}")
    }
}

/// The `p`-th percentile (nearest rank) of `values`.
pub(crate) fn percentile(values: &[f64], p: usize) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (v.len() * p).div_ceil(100).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_are_checked() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("1920X1080"), Ok((1920, 1080)));
        assert!(parse_size("641x480").is_err());
        assert!(parse_size("640").is_err());
        assert!(parse_size("8x8").is_err());
        assert!(parse_size("4000x3000").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), Some(50.0));
        assert_eq!(percentile(&v, 99), Some(99.0));
        assert_eq!(percentile(&[3.0], 99), Some(3.0));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn png_round_trip_keeps_size_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let map = test_pattern(34, 20, 3, PixelFormat::Rgb888);
        save_png(&path, &map).unwrap();
        let back = load_image(&path).unwrap();
        assert_eq!((back.width(), back.height(), back.format()), (34, 20, PixelFormat::Rgb888));
        assert_eq!(back.data(), map.data());
        std::fs::write(dir.path().join("x.png"), b"not a picture").unwrap();
        assert!(load_image(&dir.path().join("x.png")).is_err());
    }

    #[test]
    fn the_test_pattern_is_recognised_and_gaps_counted() {
        let mut log = FrameLog::default();
        for seq in [1u32, 2, 5] {
            let pixels = test_pattern(64, 48, u64::from(seq - 1), PixelFormat::Nv12);
            log.add_pixels(&pixels, seq, Some(Duration::from_millis(10)));
        }
        assert_eq!((log.frames, log.missing(), log.pattern), (3, 2, Some(true)));
        assert!(log.mean_psnr().unwrap() > 40.0);
        let mut other = FrameLog::default();
        let grey = PixelMap::packed(64, 48, PixelFormat::Rgb888, vec![128u8; 64 * 48 * 3]).unwrap();
        other.add_pixels(&grey.convert(PixelFormat::Nv12).unwrap(), 1, None);
        other.add_pixels(&test_pattern(64, 48, 1, PixelFormat::Nv12), 2, None);
        // Decided on the first frame: a grey picture is not the pattern, and no PSNR is kept.
        assert_eq!((other.pattern, other.mean_psnr(), other.frames), (Some(false), None, 2));
    }
}
