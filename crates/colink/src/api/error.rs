//! `colink::Error`: the reference's numeric error code plus a precise message.

use std::borrow::Cow;
use std::fmt;

/// The reference's business error codes (api.md, "Error codes"). Every public operation fails with exactly one
/// of these; [`Error::code`] gives the number an OpenHarmony app would see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(i32)]
pub enum ErrorCode {
    /// `201`: the caller lacks the permission this operation needs (`ohos.permission.DISTRIBUTED_DATASYNC`).
    PermissionDenied = 201,
    /// `202`: a system operation (images, streams, background start, stream options, system-only events) was
    /// called by a non-system caller.
    NotSystemApp = 202,
    /// `401`: a missing, ill-typed or invalid argument, an unknown session or stream id, or a session that is
    /// not connected.
    InvalidParameter = 401,
    /// `801`: the capability is not supported on this device (no usable adapter, feature compiled out).
    CapabilityNotSupported = 801,
    /// `32300001`: only one stream per role per session.
    OnlyOneStreamPerRole = 32_300_001,
    /// `32300002`: the stream at the receive end is not started.
    ReceiveStreamNotStarted = 32_300_002,
    /// `32300003`: the bitrate is not supported.
    BitrateNotSupported = 32_300_003,
    /// `32300004`: the color space is not supported.
    ColorSpaceNotSupported = 32_300_004,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 8] = [
        Self::PermissionDenied,
        Self::NotSystemApp,
        Self::InvalidParameter,
        Self::CapabilityNotSupported,
        Self::OnlyOneStreamPerRole,
        Self::ReceiveStreamNotStarted,
        Self::BitrateNotSupported,
        Self::ColorSpaceNotSupported,
    ];

    /// The numeric code (`201`, `202`, `401`, `801`, `32300001`..=`32300004`).
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The reference's short description of the code.
    pub const fn description(self) -> &'static str {
        match self {
            Self::PermissionDenied => "permission denied",
            Self::NotSystemApp => "not a system application",
            Self::InvalidParameter => "parameter error",
            Self::CapabilityNotSupported => "capability not supported",
            Self::OnlyOneStreamPerRole => "only one stream per role per session",
            Self::ReceiveStreamNotStarted => "the stream at the receive end is not started",
            Self::BitrateNotSupported => "bitrate not supported",
            Self::ColorSpaceNotSupported => "color space not supported",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

impl From<ErrorCode> for i32 {
    fn from(code: ErrorCode) -> Self {
        code.code()
    }
}

impl TryFrom<i32> for ErrorCode {
    type Error = Error;

    /// The code with numeric value `v`; any other number is a 401 naming `error_code`.
    fn try_from(v: i32) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|c| c.code() == v).ok_or_else(|| {
            Error::invalid_arg("error_code", format!("must be one of 201, 202, 401, 801, 32300001..=32300004, got {v}"))
        })
    }
}

/// What went wrong, for code that wants to react rather than print: finer than [`ErrorCode`], whose numbers
/// the reference fixes (a send on a session whose link died and a send with a bad argument both carry `401`
/// there; here they are [`LinkLost`](Self::LinkLost) and [`InvalidArgument`](Self::InvalidArgument)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `201`: the caller lacks a permission.
    PermissionDenied,
    /// `202`: a system operation from a non-system caller.
    NotSystemApp,
    /// `401`: an argument broke a rule ([`Error::argument`] names it).
    InvalidArgument,
    /// `401`: no session, stream or collaboration request with that id or token exists.
    NotFound,
    /// `401`: the session exists but is not connected (never connected, still connecting, or ended while the
    /// call waited).
    NotConnected,
    /// `401`: the session's Bluetooth link died (not resumed within the grace period, or closed) before the
    /// operation completed; the reason is what the session's `disconnect` event carries.
    LinkLost(crate::api::DisconnectReason),
    /// `401`: the session was disconnected (by the peer app or this one) before the operation completed.
    Disconnected(crate::api::DisconnectReason),
    /// `801`: not supported on this device.
    Unsupported,
    /// `32300001`..=`32300004`: a stream operation the reference refuses with its own code.
    Stream,
    /// `401`: the peer received the payload but refused it (an image that failed its checks, or a receiving
    /// app that may not take it); the message carries the peer's reason.
    Refused,
    /// `401`: this side's app cancelled the operation (a file transfer).
    Cancelled,
    /// `401`: reading the app's source or writing into its sink failed (a file transfer); the message
    /// carries the I/O error.
    Io,
    /// `401`: what arrived does not match its content hash (a file transfer, on both sides): nothing was
    /// delivered as good.
    Corrupted,
}

impl ErrorKind {
    /// The kind an error of `code` has when nothing finer is known.
    const fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::PermissionDenied => Self::PermissionDenied,
            ErrorCode::NotSystemApp => Self::NotSystemApp,
            ErrorCode::InvalidParameter => Self::InvalidArgument,
            ErrorCode::CapabilityNotSupported => Self::Unsupported,
            ErrorCode::OnlyOneStreamPerRole
            | ErrorCode::ReceiveStreamNotStarted
            | ErrorCode::BitrateNotSupported
            | ErrorCode::ColorSpaceNotSupported => Self::Stream,
        }
    }
}

/// The error every public colink operation returns: the reference's numeric [`ErrorCode`] plus a message
/// naming the argument (when one is to blame) and the rule it broke, and a typed [`ErrorKind`].
///
/// ```
/// use colink::api::{Error, ErrorCode};
///
/// let e = Error::invalid_arg("session_id", "must be > 0, got -1");
/// assert_eq!(e.code(), 401);
/// assert_eq!(e.error_code(), ErrorCode::InvalidParameter);
/// assert_eq!(e.argument(), Some("session_id"));
/// assert_eq!(e.to_string(), "401 (parameter error): invalid argument `session_id`: must be > 0, got -1");
/// assert_eq!(e.kind(), colink::api::ErrorKind::InvalidArgument);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    code: ErrorCode,
    kind: ErrorKind,
    argument: Option<Cow<'static, str>>,
    message: String,
}

impl Error {
    /// An error with `code` and a free-form `message` (no argument to blame); its kind follows from the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, kind: ErrorKind::of(code), argument: None, message: message.into() }
    }

    /// `401`: argument `argument` broke `rule` (e.g. `invalid_arg("session_id", "must be > 0, got -1")`).
    pub fn invalid_arg(argument: impl Into<Cow<'static, str>>, rule: impl fmt::Display) -> Self {
        let argument = argument.into();
        let message = format!("invalid argument `{argument}`: {rule}");
        Self { code: ErrorCode::InvalidParameter, kind: ErrorKind::InvalidArgument, argument: Some(argument), message }
    }

    /// `401`: no session with this id exists (never created, or destroyed).
    pub fn unknown_session(id: impl fmt::Display) -> Self {
        Self::invalid_arg("session_id", format_args!("no session with id {id} exists")).with_kind(ErrorKind::NotFound)
    }

    /// `401`: no stream with this id exists (never created, or destroyed).
    pub fn unknown_stream(id: impl fmt::Display) -> Self {
        Self::invalid_arg("stream_id", format_args!("no stream with id {id} exists")).with_kind(ErrorKind::NotFound)
    }

    /// `401`: the session exists but is not connected, so nothing can be sent on it.
    pub fn not_connected(id: impl fmt::Display) -> Self {
        Self::invalid_arg("session_id", format_args!("session {id} is not connected"))
            .with_kind(ErrorKind::NotConnected)
    }

    /// `401` (the reference's code for a session that is not connected), kind [`ErrorKind::LinkLost`]: the
    /// session's link died with `reason` before `what` completed.
    pub fn link_lost(reason: crate::api::DisconnectReason, what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("link lost ({reason:?}): {what}"))
            .with_kind(ErrorKind::LinkLost(reason))
    }

    /// `401`, kind [`ErrorKind::Disconnected`]: the session was disconnected with `reason` before `what`
    /// completed.
    pub fn disconnected(reason: crate::api::DisconnectReason, what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("disconnected ({reason:?}): {what}"))
            .with_kind(ErrorKind::Disconnected(reason))
    }

    /// `401`, kind [`ErrorKind::Refused`]: the peer refused or abandoned `what`; the message gives its reason.
    pub fn refused(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, what.to_string()).with_kind(ErrorKind::Refused)
    }

    /// `401`, kind [`ErrorKind::Cancelled`]: this side's app cancelled `what`.
    pub fn cancelled(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("{what} was cancelled")).with_kind(ErrorKind::Cancelled)
    }

    /// `401`, kind [`ErrorKind::Io`]: `what` failed with the I/O error `e`.
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("{what}: {e}")).with_kind(ErrorKind::Io)
    }

    /// The same error with a finer kind (the code and the message stay).
    #[must_use]
    pub const fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// What went wrong, typed (see [`ErrorKind`]); [`code`](Self::code) keeps the reference's number.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `201`: the caller lacks `permission`, which `operation` needs.
    pub fn permission_denied(operation: &str, permission: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::PermissionDenied,
            format!("{operation} needs permission {permission}, which the caller lacks"),
        )
    }

    /// `202`: `what` (an operation, an option or an event) is for system applications only.
    pub fn not_system_app(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NotSystemApp, format!("{what} is a system API and the caller is not a system application"))
    }

    /// `801`: `what` is not supported on this device.
    pub fn not_supported(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::CapabilityNotSupported, format!("{what} is not supported on this device"))
    }

    /// The typed error code.
    pub const fn error_code(&self) -> ErrorCode {
        self.code
    }

    /// The numeric error code an OpenHarmony app would see (`201`, `202`, `401`, `801`, `323000xx`).
    pub const fn code(&self) -> i32 {
        self.code.code()
    }

    /// The argument to blame, for `401` errors about one argument (`"session_id"`, `"peer_info.device_id"`, ...).
    pub fn argument(&self) -> Option<&str> {
        self.argument.as_deref()
    }

    /// The message without the code prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_reference_numbers() {
        let numbers: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers, [201, 202, 401, 801, 32_300_001, 32_300_002, 32_300_003, 32_300_004]);
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(i32::from(code)), Ok(code));
        }
    }

    #[test]
    fn unknown_numbers_are_rejected() {
        for bad in [0, 200, 400, 402, 32_300_000, 32_300_005, -201] {
            let e = ErrorCode::try_from(bad).unwrap_err();
            assert_eq!(e.code(), 401);
            assert_eq!(e.argument(), Some("error_code"));
            assert!(e.message().contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn constructors_pick_the_right_codes() {
        assert_eq!(Error::unknown_session(123).code(), 401);
        assert_eq!(Error::unknown_session(123).argument(), Some("session_id"));
        assert!(Error::unknown_session(123).to_string().contains("123"));
        assert_eq!(Error::unknown_stream(1000).argument(), Some("stream_id"));
        assert!(Error::not_connected(100).message().contains("not connected"));
        assert_eq!(Error::permission_denied("connect", "ohos.permission.DISTRIBUTED_DATASYNC").code(), 201);
        assert_eq!(Error::not_system_app("send_image").code(), 202);
        assert_eq!(Error::not_supported("Bluetooth").code(), 801);
        assert_eq!(Error::new(ErrorCode::BitrateNotSupported, "x").code(), 32_300_003);
        assert_eq!(Error::not_system_app("send_image").argument(), None);
    }

    #[test]
    fn kinds_refine_the_codes_without_changing_them() {
        use crate::api::DisconnectReason;
        assert_eq!(Error::unknown_session(5).kind(), ErrorKind::NotFound);
        assert_eq!(Error::not_connected(100).kind(), ErrorKind::NotConnected);
        assert_eq!(Error::invalid_arg("msg", "empty").kind(), ErrorKind::InvalidArgument);
        assert_eq!(Error::not_system_app("x").kind(), ErrorKind::NotSystemApp);
        assert_eq!(Error::new(ErrorCode::BitrateNotSupported, "x").kind(), ErrorKind::Stream);
        let lost = Error::link_lost(DisconnectReason::NetworkDisconnected, "send on session 100");
        assert_eq!((lost.code(), lost.kind()), (401, ErrorKind::LinkLost(DisconnectReason::NetworkDisconnected)));
        assert!(lost.to_string().contains("link lost") && !lost.to_string().contains("invalid argument"), "{lost}");
        assert_eq!(lost.argument(), None);
    }

    #[test]
    fn display_starts_with_the_code() {
        let e = Error::permission_denied("create_session", "P");
        assert_eq!(e.to_string(), "201 (permission denied): create_session needs permission P, which the caller lacks");
    }
}
