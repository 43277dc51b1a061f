//! The reference's enums with their numeric values, and conversions from and to `i32`.
//!
//! `ConnectErrorCode`, `DisconnectReason` and `StartOptionParams` are the session engine's own types
//! (`colink-proto`'s, re-exported, not duplicated); the media and event enums are defined here. Every one
//! converts both ways: `i32::from(e)` (or `e as i32`) and [`ReferenceEnum::from_number`], which rejects unknown
//! numbers with a 401 naming the reference field the number belongs to (the enums defined here also offer it as
//! `E::try_from(i32)`).

use super::error::Error;

pub use colink_proto::{ConnectErrorCode, DisconnectReason, StartOptions as StartOptionParams};

/// What every reference enum offers: its reference name, field name and complete value list. Implemented by
/// all the enums of api.md, so code (and tests) can treat them uniformly.
pub trait ReferenceEnum: Copy + Eq + Into<i32> + 'static {
    /// The enum's name in the reference (`"ConnectErrorCode"`).
    const TYPE_NAME: &'static str;
    /// The reference field that holds it; named by the 401 of a bad `try_from` (`"error_code"`).
    const ARGUMENT: &'static str;
    /// Every value, in numeric order.
    const ALL: &'static [Self];

    /// The value's name in the reference (`"CONNECTED_SESSION_EXISTS"`).
    fn reference_name(self) -> &'static str;

    /// The value with number `v`; any other number is a 401 naming the reference field.
    fn from_number(v: i32) -> Result<Self, Error> {
        Self::ALL.iter().copied().find(|e| (*e).into() == v).ok_or_else(|| {
            Error::invalid_arg(
                Self::ARGUMENT,
                format_args!("must be a {} ({}), got {v}", Self::TYPE_NAME, value_list::<Self>()),
            )
        })
    }
}

/// Implements `ReferenceEnum` from one table; with `local`, also `TryFrom<i32>` and `From<E> for i32` (the
/// engine's enums get `From<E> for i32` from `colink-proto`).
macro_rules! reference_enum {
    (local $ty:ident, $type_name:literal, $arg:literal, [$($variant:ident = $name:literal),+ $(,)?]) => {
        reference_enum!($ty, $type_name, $arg, [$($variant = $name),+]);

        impl From<$ty> for i32 {
            fn from(v: $ty) -> Self {
                v as i32
            }
        }

        impl TryFrom<i32> for $ty {
            type Error = Error;

            /// The value with this number; any other number is a 401 naming the reference field.
            fn try_from(v: i32) -> Result<Self, Error> {
                <Self as ReferenceEnum>::from_number(v)
            }
        }
    };
    ($ty:ident, $type_name:literal, $arg:literal, [$($variant:ident = $name:literal),+ $(,)?]) => {
        impl ReferenceEnum for $ty {
            const TYPE_NAME: &'static str = $type_name;
            const ARGUMENT: &'static str = $arg;
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn reference_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}

/// `0 (A), 1 (B)`: the accepted values of `E`, for error messages.
fn value_list<E: ReferenceEnum>() -> String {
    E::ALL.iter().map(|e| format!("{} = {}", e.reference_name(), (*e).into())).collect::<Vec<_>>().join(", ")
}

reference_enum!(
    ConnectErrorCode,
    "ConnectErrorCode",
    "error_code",
    [
        ConnectedSessionExists = "CONNECTED_SESSION_EXISTS",
        PeerAppRejected = "PEER_APP_REJECTED",
        LocalWifiNotOpen = "LOCAL_WIFI_NOT_OPEN",
        PeerWifiNotOpen = "PEER_WIFI_NOT_OPEN",
        PeerAbilityNoOncollaborate = "PEER_ABILITY_NO_ONCOLLABORATE",
        SystemInternalError = "SYSTEM_INTERNAL_ERROR",
    ]
);

reference_enum!(
    DisconnectReason,
    "DisconnectReason",
    "reason",
    [
        PeerAppCloseCollaboration = "PEER_APP_CLOSE_COLLABORATION",
        PeerAppExit = "PEER_APP_EXIT",
        NetworkDisconnected = "NETWORK_DISCONNECTED",
    ]
);

reference_enum!(
    StartOptionParams,
    "StartOptionParams",
    "start_options",
    [StartInForeground = "START_IN_FOREGROUND", StartInBackground = "START_IN_BACKGROUND",]
);

/// The direction of a media stream (the reference's `StreamRole`), given to `createStream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum StreamRole {
    /// `SOURCE` = 0: this side sends (needs `ConnectOptions::need_send_stream`).
    Source = 0,
    /// `SINK` = 1: this side receives (needs `ConnectOptions::need_receive_stream`).
    Sink = 1,
}

reference_enum!(local StreamRole, "StreamRole", "role", [Source = "SOURCE", Sink = "SINK"]);

/// The pixel format of a stream's surface (the reference's `VideoPixelFormat`, `SurfaceParam.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[repr(i32)]
pub enum VideoPixelFormat {
    /// `UNKNOWN` = -1.
    Unknown = -1,
    /// `NV12` = 0: YUV 4:2:0 semi-planar, U before V.
    Nv12 = 0,
    /// `NV21` = 1: YUV 4:2:0 semi-planar, V before U (the reference's default).
    #[default]
    Nv21 = 1,
}

reference_enum!(local VideoPixelFormat, "VideoPixelFormat", "format", [Unknown = "UNKNOWN", Nv12 = "NV12", Nv21 = "NV21",]);

/// How a stream's picture is mirrored (the reference's `FlipOptions`, `SurfaceParam.flip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum FlipOptions {
    /// `HORIZONTAL` = 0: mirrored left ↔ right.
    Horizontal = 0,
    /// `VERTICAL` = 1: mirrored top ↔ bottom.
    Vertical = 1,
}

reference_enum!(local FlipOptions, "FlipOptions", "flip", [Horizontal = "HORIZONTAL", Vertical = "VERTICAL"]);

/// What a `collaborateEvent` reports (the reference's `CollaborateEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum CollaborateEventType {
    /// `SEND_FAILURE` = 0: a send that had been accepted did not reach the peer.
    SendFailure = 0,
    /// `COLOR_SPACE_CONVERSION_FAILURE` = 1: a stream's color space conversion failed.
    ColorSpaceConversionFailure = 1,
}

reference_enum!(
    local CollaborateEventType,
    "CollaborateEventType",
    "event_type",
    [SendFailure = "SEND_FAILURE", ColorSpaceConversionFailure = "COLOR_SPACE_CONVERSION_FAILURE",]
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value converts to its reference number and back; numbers next to the range are 401s naming the
    /// enum's field.
    fn check<E: ReferenceEnum + std::fmt::Debug>(expected: &[(&str, i32)]) {
        let got: Vec<(&str, i32)> = E::ALL.iter().map(|e| (e.reference_name(), (*e).into())).collect();
        assert_eq!(got, expected, "{}", E::TYPE_NAME);
        for e in E::ALL {
            assert_eq!(E::from_number((*e).into()), Ok(*e));
        }
        let lo = expected.first().map(|(_, v)| v - 1).unwrap();
        let hi = expected.last().map(|(_, v)| v + 1).unwrap();
        for bad in [lo, hi, i32::MIN, i32::MAX] {
            let err = E::from_number(bad).unwrap_err();
            assert_eq!(err.code(), 401, "{}", E::TYPE_NAME);
            assert_eq!(err.argument(), Some(E::ARGUMENT));
            assert!(err.message().contains(&format!("got {bad}")), "{err}");
            assert!(err.message().contains(E::TYPE_NAME), "{err}");
        }
    }

    #[test]
    fn connect_error_code() {
        check::<ConnectErrorCode>(&[
            ("CONNECTED_SESSION_EXISTS", 0),
            ("PEER_APP_REJECTED", 1),
            ("LOCAL_WIFI_NOT_OPEN", 2),
            ("PEER_WIFI_NOT_OPEN", 3),
            ("PEER_ABILITY_NO_ONCOLLABORATE", 4),
            ("SYSTEM_INTERNAL_ERROR", 5),
        ]);
        assert_eq!(ConnectErrorCode::SystemInternalError as i32, 5);
    }

    #[test]
    fn disconnect_reason() {
        check::<DisconnectReason>(&[
            ("PEER_APP_CLOSE_COLLABORATION", 0),
            ("PEER_APP_EXIT", 1),
            ("NETWORK_DISCONNECTED", 2),
        ]);
    }

    #[test]
    fn start_option_params() {
        check::<StartOptionParams>(&[("START_IN_FOREGROUND", 0), ("START_IN_BACKGROUND", 1)]);
        assert_eq!(StartOptionParams::default(), StartOptionParams::StartInForeground);
        let e = StartOptionParams::from_number(2).unwrap_err();
        assert_eq!(e.argument(), Some("start_options"));
        assert!(e.message().contains("START_IN_FOREGROUND = 0, START_IN_BACKGROUND = 1"), "{e}");
    }

    #[test]
    fn stream_role() {
        check::<StreamRole>(&[("SOURCE", 0), ("SINK", 1)]);
    }

    #[test]
    fn video_pixel_format() {
        check::<VideoPixelFormat>(&[("UNKNOWN", -1), ("NV12", 0), ("NV21", 1)]);
        assert_eq!(VideoPixelFormat::default(), VideoPixelFormat::Nv21);
        assert_eq!(VideoPixelFormat::try_from(-2).unwrap_err().argument(), Some("format"));
    }

    #[test]
    fn flip_options() {
        check::<FlipOptions>(&[("HORIZONTAL", 0), ("VERTICAL", 1)]);
    }

    #[test]
    fn collaborate_event_type() {
        check::<CollaborateEventType>(&[("SEND_FAILURE", 0), ("COLOR_SPACE_CONVERSION_FAILURE", 1)]);
    }

    #[test]
    fn engine_and_api_agree_on_numbers() {
        // The engine's own byte conversions and the API's i32 conversions must name the same values.
        for e in ConnectErrorCode::ALL {
            let n = u8::try_from(i32::from(*e)).unwrap();
            assert_eq!(ConnectErrorCode::from_u8(n), Some(*e));
        }
        for e in DisconnectReason::ALL {
            assert_eq!(DisconnectReason::from_u8(u8::try_from(i32::from(*e)).unwrap()), Some(*e));
        }
        for e in StartOptionParams::ALL {
            assert_eq!(StartOptionParams::from_u8(u8::try_from(i32::from(*e)).unwrap()), Some(*e));
        }
    }
}
