//! openh264's log lines, routed into `tracing` instead of standard error.
//!
//! openh264 formats each of its log lines itself and hands it to a callback; the default callback prints it to
//! standard error, so its `[OpenH264] ... Warning: bEnableFrameSkip = 0 ...` line, emitted while an encoder
//! initialises (before the level can be lowered through the `openh264` crate's configuration), would land in
//! the middle of whatever a program prints. [`route_encoder_log`] replaces that callback, before the encoder
//! first initialises, with one that passes every line to `tracing` at debug level under the target
//! `colink_media::openh264`: invisible by default, shown with `RUST_LOG=colink_media=debug`.
//!
//! This is the crate's only unsafe code: one `SetOption` call through openh264's raw API, and reading the C
//! string the callback receives.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION_TRACE_CALLBACK, WELS_LOG_DEBUG, WELS_LOG_ERROR, WELS_LOG_INFO, WELS_LOG_WARNING, WelsTraceCallback,
};

/// Sends `encoder`'s log lines to `tracing` (debug level) instead of standard error. Call it before the
/// encoder's first frame: openh264 accepts the callback before initialisation, and its start-up warnings are
/// written during initialisation.
pub(crate) fn route_encoder_log(encoder: &mut Encoder) {
    let mut callback: WelsTraceCallback = Some(log_line);
    // SAFETY: `raw_api` is the encoder's own function table and encoder pointer, alive as long as `encoder`.
    // openh264's `SetOption(ENCODER_OPTION_TRACE_CALLBACK, p)` is valid before initialisation
    // (welsEncoderExt.cpp) and reads one `WelsTraceCallback` through `p`, which points at `callback` for the
    // duration of the call. The callback is a plain function with no context pointer, valid for the program's
    // lifetime. We set no option the Rust wrapper relies on.
    let rc = unsafe { encoder.raw_api().set_option(ENCODER_OPTION_TRACE_CALLBACK, (&raw mut callback).cast()) };
    if rc != 0 {
        tracing::debug!(rc, "openh264 refused the log callback; its warnings will go to stderr");
    }
}

/// The callback: one formatted line from openh264, at its log level.
unsafe extern "C" fn log_line(_ctx: *mut c_void, level: c_int, line: *const c_char) {
    if line.is_null() {
        return;
    }
    // SAFETY: openh264 passes a NUL-terminated string it formatted into a buffer on its stack
    // (welsCodecTrace::CodecTrace), valid for the duration of this call; it is only read here.
    let text = unsafe { CStr::from_ptr(line) }.to_string_lossy();
    tracing::debug!(target: "colink_media::openh264", level = level_name(level), "{}", text.trim_end());
}

/// openh264's name for a log level.
fn level_name(level: c_int) -> &'static str {
    match level {
        WELS_LOG_ERROR => "error",
        WELS_LOG_WARNING => "warning",
        WELS_LOG_INFO => "info",
        WELS_LOG_DEBUG => "debug",
        _ => "detail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named() {
        assert_eq!(level_name(WELS_LOG_WARNING), "warning");
        assert_eq!(level_name(WELS_LOG_ERROR), "error");
        assert_eq!(level_name(16), "detail");
    }

    #[test]
    fn a_null_line_is_ignored() {
        // SAFETY: a null line is the one case the callback must tolerate without reading.
        unsafe { log_line(std::ptr::null_mut(), WELS_LOG_WARNING, std::ptr::null()) };
    }
}
