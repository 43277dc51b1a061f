//! Fuzzes the JPEG decoder with what a hostile peer could send as an image: `colink_media::jpeg::decode`
//! never panics, refuses anything over its limits (1024 × 1024 here, so memory stays small), and whatever it
//! accepts is a packed RGB888 map of at most that size whose size matches the buffer.
#![no_main]

use colink_media::jpeg::{self, DecodeLimits};
use colink_media::pixel::PixelFormat;
use libfuzzer_sys::fuzz_target;

const LIMITS: DecodeLimits = DecodeLimits { max_dimension: 1024, max_pixels: 1024 * 1024 };

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = jpeg::decode(data, LIMITS) {
        assert_eq!(image.format(), PixelFormat::Rgb888);
        assert!(image.width() >= 1 && image.width() <= LIMITS.max_dimension);
        assert!(image.height() >= 1 && image.height() <= LIMITS.max_dimension);
        assert!(image.is_packed());
        assert_eq!(image.data().len(), image.width() as usize * image.height() as usize * 3);
    }
});
