//! Pairing: IO capabilities, the method they select, passkeys, and the async agent callbacks.

use std::fmt;

use crate::{BoxFuture, PeerAddress};

/// What a device's user interface can do during pairing (Bluetooth Core Vol 3 Part H 2.3.2).
///
/// BlueZ derives it from which agent callbacks are set; the simulator asks [`Agent::io_capability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum IoCapability {
    /// Can show a number, no input.
    DisplayOnly,
    /// Can show a number and take yes/no.
    DisplayYesNo,
    /// Can type digits, no display.
    KeyboardOnly,
    /// Nothing (headless).
    NoInputNoOutput,
    /// Can show a number and type digits.
    KeyboardDisplay,
}

/// What one side does during passkey entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum PasskeyRole {
    /// Shows the passkey ([`Agent::display_passkey`]).
    Display,
    /// Asks the user to type it ([`Agent::request_passkey`]).
    Input,
}

/// The pairing association model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum PairingMethod {
    /// No MITM protection; each side may still confirm ([`Agent::confirm_just_works`]).
    JustWorks,
    /// Both sides show the same six digits and the users confirm they match.
    NumericComparison,
    /// A passkey shown on one side (or made up by the users) is typed on the other.
    PasskeyEntry {
        /// What the initiator does.
        initiator: PasskeyRole,
        /// What the responder does.
        responder: PasskeyRole,
    },
}

impl PairingMethod {
    /// The LE Secure Connections method for these capabilities (Core Vol 3 Part H table 2.8).
    ///
    /// ```
    /// use colink_ble::{IoCapability::*, PairingMethod};
    /// assert_eq!(PairingMethod::select(DisplayYesNo, DisplayYesNo), PairingMethod::NumericComparison);
    /// assert_eq!(PairingMethod::select(NoInputNoOutput, KeyboardDisplay), PairingMethod::JustWorks);
    /// ```
    pub fn select(initiator: IoCapability, responder: IoCapability) -> Self {
        use IoCapability::*;
        use PasskeyRole::*;
        let entry = |initiator, responder| Self::PasskeyEntry { initiator, responder };
        match (initiator, responder) {
            (NoInputNoOutput, _) | (_, NoInputNoOutput) => Self::JustWorks,
            (DisplayOnly | DisplayYesNo, DisplayOnly | DisplayYesNo) => {
                if initiator == DisplayYesNo && responder == DisplayYesNo {
                    Self::NumericComparison
                } else {
                    Self::JustWorks
                }
            }
            (DisplayOnly, KeyboardOnly | KeyboardDisplay) => entry(Display, Input),
            (KeyboardOnly | KeyboardDisplay, DisplayOnly) => entry(Input, Display),
            (DisplayYesNo, KeyboardOnly) => entry(Display, Input),
            (KeyboardOnly, DisplayYesNo) => entry(Input, Display),
            (KeyboardOnly, KeyboardOnly) => entry(Input, Input),
            (KeyboardOnly, KeyboardDisplay) => entry(Input, Display),
            (KeyboardDisplay, KeyboardOnly) => entry(Display, Input),
            (DisplayYesNo | KeyboardDisplay, DisplayYesNo | KeyboardDisplay) => Self::NumericComparison,
        }
    }

    /// Whether the resulting keys are authenticated (MITM-protected), as [`SecurityLevel::High`](crate::SecurityLevel::High)
    /// requires.
    pub const fn is_authenticated(self) -> bool {
        !matches!(self, Self::JustWorks)
    }
}

/// A six-digit pairing passkey, 0..=999999 (shown zero-padded).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(try_from = "u32", into = "u32"))]
pub struct Passkey(u32);

impl Passkey {
    /// Wraps `value` if it has at most six digits.
    pub const fn new(value: u32) -> Option<Self> {
        if value <= 999_999 { Some(Self(value)) } else { None }
    }

    /// `value` reduced modulo 1 000 000 (for backends that draw a random `u32`).
    pub const fn new_wrapping(value: u32) -> Self {
        Self(value % 1_000_000)
    }

    /// The numeric value.
    pub const fn value(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Passkey {
    type Error = &'static str;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::new(v).ok_or("passkey above 999999")
    }
}

impl From<Passkey> for u32 {
    fn from(p: Passkey) -> Self {
        p.0
    }
}

impl fmt::Display for Passkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for Passkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Passkey({self})")
    }
}

/// The user (or policy) declined a pairing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("rejected by the pairing agent")]
pub struct AgentRejected;

/// What an agent callback returns.
pub type AgentResult<T> = Result<T, AgentRejected>;

/// The pairing user interface: called by the backend while pairing runs (BlueZ's `org.bluez.Agent1`).
///
/// Callbacks may take as long as a user does; backends time out (the simulator after 30 s). The defaults
/// accept Just Works, reject numeric comparison and passkey input, and ignore displays, i.e. a headless device.
///
/// ```
/// use colink_ble::{Agent, AgentResult, BoxFuture, IoCapability, Passkey, PeerAddress};
///
/// /// Confirms every numeric comparison (a test agent).
/// struct Yes;
/// impl Agent for Yes {
///     fn io_capability(&self) -> IoCapability { IoCapability::DisplayYesNo }
///     fn confirm_passkey(&self, _: PeerAddress, _: Passkey) -> BoxFuture<'_, AgentResult<()>> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// ```
pub trait Agent: Send + Sync + 'static {
    /// What this agent can do; selects the [`PairingMethod`] together with the peer's.
    fn io_capability(&self) -> IoCapability;

    /// Just Works: may the device pair with `peer`? (BlueZ: `RequestAuthorization`.)
    fn confirm_just_works(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<()>> {
        let _ = peer;
        Box::pin(async { Ok(()) })
    }

    /// Numeric comparison: does `passkey` match the one on the peer's screen? (BlueZ: `RequestConfirmation`.)
    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        let _ = (peer, passkey);
        Box::pin(async { Err(AgentRejected) })
    }

    /// Passkey entry, input side: the passkey the user typed. (BlueZ: `RequestPasskey`.)
    fn request_passkey(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<Passkey>> {
        let _ = peer;
        Box::pin(async { Err(AgentRejected) })
    }

    /// Passkey entry, display side: show `passkey` to the user. (BlueZ: `DisplayPasskey`.)
    fn display_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        let _ = (peer, passkey);
        Box::pin(async { Ok(()) })
    }
}

/// Why pairing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The local adapter is powered off.
    #[error("adapter is powered off")]
    PoweredOff,
    /// The peer could not be reached (absent, powered off or out of range).
    #[error("peer unreachable")]
    PeerUnreachable,
    /// A local or remote agent rejected a step.
    #[error("pairing rejected by the {side} agent")]
    Rejected {
        /// `"local"` or `"remote"`.
        side: &'static str,
    },
    /// The security manager's authentication failed: the passkeys or confirmation values did not match (e.g. a
    /// mistyped passkey), or the other side refused to confirm (on BlueZ a responder with no agent to ask, or
    /// whose user said no, fails the pairing this way).
    #[error("authentication failed: the passkeys differed, or the other device refused to confirm the pairing")]
    AuthenticationFailed,
    /// An agent did not answer in time.
    #[error("pairing timed out")]
    Timeout,
    /// Another pairing with this peer is in progress.
    #[error("pairing already in progress")]
    InProgress,
    /// The backend cannot pair (e.g. the scan-only btleplug backend).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A backend-specific failure.
    #[error("pairing failed: {0}")]
    Backend(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use IoCapability::*;

    #[test]
    fn method_table_is_symmetric_in_kind() {
        let all = [DisplayOnly, DisplayYesNo, KeyboardOnly, NoInputNoOutput, KeyboardDisplay];
        for a in all {
            for b in all {
                let ab = PairingMethod::select(a, b);
                let ba = PairingMethod::select(b, a);
                match (ab, ba) {
                    (
                        PairingMethod::PasskeyEntry { initiator, responder },
                        PairingMethod::PasskeyEntry { initiator: i2, responder: r2 },
                    ) => assert_eq!((initiator, responder), (r2, i2)),
                    _ => assert_eq!(ab, ba, "{a:?} {b:?}"),
                }
            }
        }
        assert_eq!(
            PairingMethod::select(DisplayOnly, KeyboardOnly),
            PairingMethod::PasskeyEntry { initiator: PasskeyRole::Display, responder: PasskeyRole::Input }
        );
    }

    #[test]
    fn passkey_format() {
        assert_eq!(Passkey::new(42).map(|p| p.to_string()), Some("000042".into()));
        assert!(Passkey::new(1_000_000).is_none());
    }
}
