//! Stream and surface parameters (`StreamParam`, `SurfaceParam`) and their pure validation. The streams
//! themselves (encoding, transport, surfaces) are implemented by the media layer, not here.

use std::fmt;

use super::enums::{FlipOptions, StreamRole, VideoPixelFormat};
use super::error::{Error, ErrorCode};
use super::validate;

/// The reference's default stream bitrate (`StreamParam.bitrate`), in bits per second.
pub const DEFAULT_BITRATE: u32 = 80_000;

/// A target color space for stream color conversion (`StreamParam.colorSpaceConversionTarget`): a value of
/// OpenHarmony's `colorSpaceManager.ColorSpace`, kept as its number. Which targets are supported is the media
/// layer's decision (an unsupported one is `32300004`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColorSpace(pub i32);

impl ColorSpace {
    /// `colorSpaceManager.ColorSpace.SRGB` (4).
    pub const SRGB: Self = Self(4);
    /// `colorSpaceManager.ColorSpace.BT709` (6).
    pub const BT709: Self = Self(6);
    /// `colorSpaceManager.ColorSpace.BT2020_HLG` (9).
    pub const BT2020_HLG: Self = Self(9);
    /// `colorSpaceManager.ColorSpace.BT2020_PQ` (10).
    pub const BT2020_PQ: Self = Self(10);
    /// `colorSpaceManager.ColorSpace.BT709_LIMIT` (16).
    pub const BT709_LIMIT: Self = Self(16);
}

impl fmt::Display for ColorSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ColorSpace({})", self.0)
    }
}

/// What `create_stream` (`createStream`) is given: the reference's `StreamParam`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParam {
    /// `name`: the stream's name, the same on both ends (< 1024 bytes of UTF-8).
    pub name: String,
    /// `role`: SOURCE (send) or SINK (receive).
    pub role: StreamRole,
    /// `bitrate` (optional, default [`DEFAULT_BITRATE`]): the encoder's bitrate in bits per second; only the
    /// SOURCE end uses it. Zero is not a bitrate (`32300003`).
    pub bitrate: u32,
    /// `colorSpaceConversionTarget` (optional): convert the picture to this color space.
    pub color_space_conversion_target: Option<ColorSpace>,
}

impl StreamParam {
    /// A stream named `name` with `role`, the default bitrate and no color conversion.
    pub fn new(name: impl Into<String>, role: StreamRole) -> Self {
        Self { name: name.into(), role, bitrate: DEFAULT_BITRATE, color_space_conversion_target: None }
    }

    /// Checks what can be checked without a session: the name's length (401) and a non-zero bitrate (32300003).
    pub fn validate(&self) -> Result<(), Error> {
        validate::string_arg("param.name", &self.name)?;
        if self.bitrate == 0 {
            return Err(Error::new(ErrorCode::BitrateNotSupported, "param.bitrate: a bitrate of 0 is not supported"));
        }
        Ok(())
    }
}

/// A stream picture's rotation in degrees (`SurfaceParam.rotation`). The reference accepts any number and
/// treats everything but 0, 90, 180 and 270 as "no rotation"; [`Rotation::from_degrees`] does the same.
///
/// colink's one rotation type: the stream wire carries it (`media::wire::WireTransform`), and the media
/// pipe translates it for `colink_media::transform` (the pixel crate's own geometric rotation, which knows
/// nothing of the reference's degree rules) only at that codec's edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Rotation {
    /// 0° (also what any unsupported angle means).
    #[default]
    None,
    /// 90° clockwise.
    Deg90,
    /// 180°.
    Deg180,
    /// 270° clockwise.
    Deg270,
}

impl Rotation {
    /// The rotation for `degrees`: 90, 180 and 270 rotate; anything else (0, -90, 45, 360, ...) is no rotation,
    /// as in the reference.
    pub const fn from_degrees(degrees: i32) -> Self {
        match degrees {
            90 => Self::Deg90,
            180 => Self::Deg180,
            270 => Self::Deg270,
            _ => Self::None,
        }
    }

    /// The angle in degrees (0, 90, 180 or 270).
    pub const fn degrees(self) -> i32 {
        match self {
            Self::None => 0,
            Self::Deg90 => 90,
            Self::Deg180 => 180,
            Self::Deg270 => 270,
        }
    }
}

/// A stream surface's configuration (the reference's `SurfaceParam`), given to `get_surface_id`,
/// `set_surface_id` and `update_surface_param`. Only `rotation` and `flip` change on a running stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurfaceParam {
    /// `width` (required): the encoded width in pixels, > 0.
    pub width: u32,
    /// `height` (required): the encoded height in pixels, > 0.
    pub height: u32,
    /// `format` (optional, default NV21): the pixel format frames come out of a SINK's consumer surface in
    /// (UNKNOWN gives I420). A SOURCE's producer surface takes frames in any supported format.
    pub format: VideoPixelFormat,
    /// `rotation` (optional, default none).
    pub rotation: Rotation,
    /// `flip` (optional, default none).
    pub flip: Option<FlipOptions>,
}

impl SurfaceParam {
    /// A `width` × `height` surface with the defaults: NV21, no rotation, no flip.
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, format: VideoPixelFormat::default(), rotation: Rotation::None, flip: None }
    }

    /// Builds a surface from the reference's raw numbers, applying its rules: `width` and `height` required and
    /// positive (401 naming `param.width` / `param.height`), `format` in {-1, 0, 1} (401 naming `param.format`,
    /// absent = NV21), `rotation` other than 0/90/180/270 = no rotation, `flip` in {0, 1} (401 naming
    /// `param.flip`).
    pub fn from_raw(
        width: Option<i64>,
        height: Option<i64>,
        format: Option<i32>,
        rotation: Option<i32>,
        flip: Option<i32>,
    ) -> Result<Self, Error> {
        let width = dimension("param.width", width)?;
        let height = dimension("param.height", height)?;
        let format = match format {
            None => VideoPixelFormat::default(),
            Some(v) => VideoPixelFormat::try_from(v).map_err(|_| Error::invalid_arg("param.format", bad_format(v)))?,
        };
        let flip = flip
            .map(|v| {
                FlipOptions::try_from(v).map_err(|_| {
                    Error::invalid_arg("param.flip", format_args!("must be HORIZONTAL = 0 or VERTICAL = 1, got {v}"))
                })
            })
            .transpose()?;
        let rotation = rotation.map_or(Rotation::None, Rotation::from_degrees);
        Ok(Self { width, height, format, rotation, flip })
    }

    /// Checks a typed surface: width and height must be > 0 (401 naming `param.width` / `param.height`).
    pub fn validate(&self) -> Result<(), Error> {
        dimension("param.width", Some(i64::from(self.width)))?;
        dimension("param.height", Some(i64::from(self.height)))?;
        Ok(())
    }
}

fn bad_format(v: i32) -> String {
    format!("must be a VideoPixelFormat (UNKNOWN = -1, NV12 = 0, NV21 = 1), got {v}")
}

/// A required dimension in `1..=u32::MAX`.
fn dimension(arg: &'static str, v: Option<i64>) -> Result<u32, Error> {
    let v = v.ok_or_else(|| Error::invalid_arg(arg, "is required"))?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid_arg(arg, format_args!("must be a positive number of pixels, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_param_defaults_follow_the_reference() {
        let p = StreamParam::new("cam", StreamRole::Source);
        assert_eq!(p.bitrate, 80_000);
        assert_eq!(p.color_space_conversion_target, None);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn stream_name_must_be_shorter_than_1024_bytes() {
        let mut p = StreamParam::new("x".repeat(1023), StreamRole::Sink);
        assert_eq!(p.validate(), Ok(()));
        p.name.push('x');
        let e = p.validate().unwrap_err();
        assert_eq!((e.code(), e.argument()), (401, Some("param.name")));
    }

    #[test]
    fn zero_bitrate_is_not_supported() {
        let mut p = StreamParam::new("cam", StreamRole::Source);
        p.bitrate = 0;
        assert_eq!(p.validate().unwrap_err().code(), 32_300_003);
    }

    #[test]
    fn surface_width_and_height_are_required_and_positive() {
        let ok = SurfaceParam::from_raw(Some(640), Some(480), None, None, None).unwrap();
        assert_eq!(ok, SurfaceParam::new(640, 480));
        assert_eq!(ok.format, VideoPixelFormat::Nv21);
        for (w, h, arg) in [
            (None, Some(480), "param.width"),
            (Some(640), None, "param.height"),
            (Some(0), Some(480), "param.width"),
            (Some(640), Some(-1), "param.height"),
            (Some(i64::from(u32::MAX) + 1), Some(480), "param.width"),
        ] {
            let e = SurfaceParam::from_raw(w, h, None, None, None).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some(arg)), "{w:?} x {h:?}");
        }
        assert_eq!(SurfaceParam::new(0, 1).validate().unwrap_err().argument(), Some("param.width"));
        assert_eq!(SurfaceParam::new(1, 0).validate().unwrap_err().argument(), Some("param.height"));
        assert_eq!(SurfaceParam::new(1, 1).validate(), Ok(()));
    }

    #[test]
    fn surface_format_must_be_minus_one_zero_or_one() {
        for (v, f) in [(-1, VideoPixelFormat::Unknown), (0, VideoPixelFormat::Nv12), (1, VideoPixelFormat::Nv21)] {
            assert_eq!(SurfaceParam::from_raw(Some(2), Some(2), Some(v), None, None).unwrap().format, f);
        }
        for bad in [-2, 2, 100] {
            let e = SurfaceParam::from_raw(Some(2), Some(2), Some(bad), None, None).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("param.format")));
        }
    }

    #[test]
    fn unsupported_rotations_mean_no_rotation() {
        for (deg, r) in [(0, Rotation::None), (90, Rotation::Deg90), (180, Rotation::Deg180), (270, Rotation::Deg270)] {
            let s = SurfaceParam::from_raw(Some(2), Some(2), None, Some(deg), None).unwrap();
            assert_eq!(s.rotation, r);
            assert_eq!(r.degrees(), deg);
        }
        for odd in [-90, 45, 360, 450, i32::MIN] {
            assert_eq!(Rotation::from_degrees(odd), Rotation::None);
            let s = SurfaceParam::from_raw(Some(2), Some(2), None, Some(odd), None).unwrap();
            assert_eq!(s.rotation, Rotation::None);
        }
    }

    #[test]
    fn surface_flip_must_be_zero_or_one() {
        let s = SurfaceParam::from_raw(Some(2), Some(2), None, None, Some(1)).unwrap();
        assert_eq!(s.flip, Some(FlipOptions::Vertical));
        let e = SurfaceParam::from_raw(Some(2), Some(2), None, None, Some(2)).unwrap_err();
        assert_eq!((e.code(), e.argument()), (401, Some("param.flip")));
    }
}
