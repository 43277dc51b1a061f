//! The authentication seam: an [`Authenticator`] runs inside the link handshake.
//!
//! Its first message rides in the HELLO as extension 1; further messages travel as AUTH handshake messages
//! (docs/sessions.md §3.2). The link becomes established only when both hellos were exchanged *and*
//! the authenticator reports completion, so no session traffic ever flows on an unauthenticated link. The
//! engine ships only [`NoAuth`] here: colink's mutual authentication (device identity keys, account secret) runs
//! *before* the HELLO, as [`SecureHandshake`](crate::secure::SecureHandshake), and seals everything after it
//! (docs/security.md); this seam remains for extra, application-defined checks inside the HELLO exchange.

use std::fmt;

use bytes::Bytes;

use super::error::AuthError;
use super::types::Role;

/// One run of an authenticated key exchange per handshake attempt.
pub trait Authenticator: Send + fmt::Debug {
    /// Starts a new run (every attach, resumes included) and returns the bytes for this side's HELLO
    /// authentication extension, if any.
    fn start(&mut self, role: Role) -> Result<Option<Bytes>, AuthError>;

    /// Handles the peer's authentication bytes (its HELLO extension or an AUTH message) and returns the next
    /// bytes to send in an AUTH message, if any. An error closes the link with [`CloseCode::AuthFailed`](super::CloseCode::AuthFailed).
    fn receive(&mut self, data: &[u8]) -> Result<Option<Bytes>, AuthError>;

    /// Whether the peer is authenticated. Checked after every handshake step.
    fn is_complete(&self) -> bool;
}

/// No authentication beyond Bluetooth pairing: complete at once, ignores the peer's authentication bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn start(&mut self, _role: Role) -> Result<Option<Bytes>, AuthError> {
        Ok(None)
    }

    fn receive(&mut self, _data: &[u8]) -> Result<Option<Bytes>, AuthError> {
        Ok(None)
    }

    fn is_complete(&self) -> bool {
        true
    }
}
