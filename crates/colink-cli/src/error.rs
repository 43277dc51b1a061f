//! Exit codes and the one-line error every command ends with on failure.

use std::fmt;
use std::process::ExitCode;

/// The failure exit codes of `colink` (0 is success; documented in docs/cli.md and `colink --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The operation failed (a send, a transfer, a demo step, the simulator hub, a file).
    Failure = 1,
    /// Bad arguments (clap's own usage errors also exit 2).
    Usage = 2,
    /// Not supported here (colink error 801): no BlueZ/bluetoothd, no such adapter, adapter off, no simulator hub.
    NotSupported = 3,
    /// The peer could not be reached or refused: absent, out of range, rejected, no app listening.
    Unreachable = 4,
}

/// A failure with its exit code; printed as one line `colink: error: ...` on stderr.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(code: Code, message: impl fmt::Display) -> Self {
        Self { code, message: message.to_string() }
    }

    pub(crate) fn failure(message: impl fmt::Display) -> Self {
        Self::new(Code::Failure, message)
    }

    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        Self::new(Code::Usage, message)
    }

    pub(crate) fn not_supported(message: impl fmt::Display) -> Self {
        Self::new(Code::NotSupported, format_args!("801 (not supported): {message}"))
    }

    pub(crate) fn unreachable(message: impl fmt::Display) -> Self {
        Self::new(Code::Unreachable, message)
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code as u8)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the message contained, and no control characters: a message may quote a peer.
        f.write_str(&crate::term::printable(&self.message.replace('\n', " ")))
    }
}

impl std::error::Error for CliError {}

impl From<colink::Error> for CliError {
    fn from(e: colink::Error) -> Self {
        if e.code() == 801 { Self::new(Code::NotSupported, e) } else { Self::failure(e) }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::failure(e)
    }
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;
