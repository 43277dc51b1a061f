//! Values that sessions are made of: peers, options, ids and the reference's result codes.

use std::collections::BTreeMap;
use std::fmt;

use colink_frame::FrameKind;

/// Longest string (in UTF-8 bytes) the engine puts on the wire: the reference requires every string argument to
/// be shorter than 1024 bytes.
pub const MAX_STRING_LEN: usize = 1023;

/// An application endpoint on a device (OpenHarmony's `PeerInfo`), in its wire form.
///
/// Apps see `colink::PeerInfo` instead, whose `service_name` is an `Option` falling back to the session's; here
/// the fallback is already resolved (empty means "the session's"), as the CONNECT message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerInfo {
    /// The device's stable identity (not its Bluetooth address).
    pub device_id: String,
    /// The application's bundle name.
    pub bundle_name: String,
    /// The module within the bundle.
    pub module_name: String,
    /// The ability (component) within the module.
    pub ability_name: String,
    /// The service name; empty means "the session's service name".
    pub service_name: String,
}

/// Whether the peer app is started in the foreground or background (`StartOptionParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
// Exhaustive: the reference fixes its values, and the API maps each one to a reference name.
#[repr(u8)]
pub enum StartOptions {
    /// `START_IN_FOREGROUND` = 0.
    #[default]
    StartInForeground = 0,
    /// `START_IN_BACKGROUND` = 1.
    StartInBackground = 1,
}

impl StartOptions {
    /// The option with numeric value `v`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::StartInForeground),
            1 => Some(Self::StartInBackground),
            _ => None,
        }
    }
}

/// What the initiator asks for when connecting (OpenHarmony's `ConnectOptions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectOptions {
    /// The session will carry `send_data` payloads.
    pub need_send_data: bool,
    /// The initiator will send a media stream.
    pub need_send_stream: bool,
    /// The initiator will receive a media stream.
    pub need_receive_stream: bool,
    /// Foreground or background start of the peer app.
    pub start_options: StartOptions,
    /// Free-form parameters handed to the peer app.
    pub parameters: BTreeMap<String, String>,
}

/// Why a connect did not produce a session (OpenHarmony's `ConnectErrorCode`, same numeric values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
// Exhaustive: the reference fixes its values, and the API maps each one to a reference name.
#[repr(u8)]
pub enum ConnectErrorCode {
    /// A session between these two app endpoints is already connected or connecting.
    ConnectedSessionExists = 0,
    /// The peer app rejected the collaboration.
    PeerAppRejected = 1,
    /// The local radio is off or missing ("Wi-Fi" in the reference).
    LocalWifiNotOpen = 2,
    /// The peer's radio is off or missing.
    PeerWifiNotOpen = 3,
    /// The peer has no such ability registered to collaborate.
    PeerAbilityNoOncollaborate = 4,
    /// Anything else, including a connect that timed out or a peer that could not be reached.
    SystemInternalError = 5,
}

impl ConnectErrorCode {
    /// The code with numeric value `v`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::ConnectedSessionExists,
            1 => Self::PeerAppRejected,
            2 => Self::LocalWifiNotOpen,
            3 => Self::PeerWifiNotOpen,
            4 => Self::PeerAbilityNoOncollaborate,
            5 => Self::SystemInternalError,
            _ => return None,
        })
    }
}

/// Why a session ended (OpenHarmony's `DisconnectReason`, same numeric values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
// Exhaustive: the reference fixes its values, and the API maps each one to a reference name.
#[repr(u8)]
pub enum DisconnectReason {
    /// The peer app called `disconnect`.
    PeerAppCloseCollaboration = 0,
    /// The peer app exited (destroyed its session, or its process closed the link).
    PeerAppExit = 1,
    /// The link was lost and not resumed within the grace period, or it failed.
    NetworkDisconnected = 2,
}

impl DisconnectReason {
    /// The reason with numeric value `v`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::PeerAppCloseCollaboration,
            1 => Self::PeerAppExit,
            2 => Self::NetworkDisconnected,
            _ => return None,
        })
    }
}

/// Which side dialled the link. The initiator re-dials after link loss; session numbers it allocates are odd,
/// the responder's even, so both can open sessions at once without colliding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// This side dialled.
    Initiator,
    /// This side accepted.
    Responder,
}

/// A session's number on its link (unique per link for the link's lifetime, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub(crate) u32);

impl SessionKey {
    /// The session number as carried on the wire.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Identifies one accepted send until [`Event::SendCompleted`](super::Event::SendCompleted) or
/// [`Event::SendFailed`](super::Event::SendFailed) reports its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub(crate) u64);

impl SendId {
    /// The raw id (unique per [`Connection`](super::Connection)).
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The payload channels of a session, each its own ordered lane with its own priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
// Exhaustive: the lanes are fixed by the session protocol's versions.
pub enum ChannelKind {
    /// Text messages (`send_message`): second only to control.
    Message,
    /// Bulk data (`send_data`): lowest priority.
    Data,
    /// Encoded images (`send_image`): above bulk data.
    Image,
    /// Live media units: above images.
    StreamMedia,
    /// File transfers' chunks and hash (`send_file`; version 4 only): bulk, taking turns with
    /// [`Data`](Self::Data).
    File,
    /// File transfers' offers, answers and verdicts (version 4 only): their own lane, so an answer never waits
    /// behind the answering side's own chunks; bulk class like [`File`](Self::File).
    FileControl,
}

impl ChannelKind {
    /// Every kind, in lane order (the lane number is the position).
    pub const ALL: [Self; 6] =
        [Self::Message, Self::Data, Self::Image, Self::StreamMedia, Self::File, Self::FileControl];

    /// The lane number within a session (the low bits of the wire channel).
    pub(crate) const fn lane(self) -> u32 {
        match self {
            Self::Message => 0,
            Self::Data => 1,
            Self::Image => 2,
            Self::StreamMedia => 3,
            Self::File => 4,
            Self::FileControl => 5,
        }
    }

    /// The frame kind its frames carry.
    pub const fn frame_kind(self) -> FrameKind {
        match self {
            Self::Message => FrameKind::Message,
            Self::Data => FrameKind::Data,
            Self::Image => FrameKind::Image,
            Self::StreamMedia => FrameKind::StreamMedia,
            Self::File | Self::FileControl => FrameKind::File,
        }
    }

    /// The lowest session-protocol version that has this lane.
    pub const fn since_version(self) -> u8 {
        match self {
            Self::File | Self::FileControl => 4,
            _ => 1,
        }
    }
}

/// How a link's channel numbers split into session number and lane (docs/sessions.md §1.1): two lane bits
/// (four lanes) up to version 3, three lane bits (eight lanes, six used) from version 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneLayout {
    bits: u32,
}

impl LaneLayout {
    /// The layout of session-protocol `version`.
    pub(crate) const fn of_version(version: u8) -> Self {
        Self { bits: if version >= 4 { 3 } else { 2 } }
    }

    /// The lanes a session has.
    pub(crate) fn kinds(self) -> &'static [ChannelKind] {
        if self.bits >= 3 { &ChannelKind::ALL } else { &ChannelKind::ALL[..4] }
    }

    /// Whether sessions have lane `kind`.
    pub(crate) fn has(self, kind: ChannelKind) -> bool {
        self.kinds().contains(&kind)
    }

    /// The wire channel of `kind` on session `key` (callers check [`has`](Self::has) first).
    pub(crate) const fn channel(self, key: u32, kind: ChannelKind) -> u32 {
        (key << self.bits) | kind.lane()
    }

    /// The session number of channel `ch`.
    pub(crate) const fn session(self, ch: u32) -> u32 {
        ch >> self.bits
    }

    /// The lane of channel `ch`, if it is one a session has.
    pub(crate) fn kind(self, ch: u32) -> Option<ChannelKind> {
        let lane = ch & ((1 << self.bits) - 1);
        self.kinds().iter().copied().find(|k| k.lane() == lane)
    }

    /// The highest session number whose channels fit in 32 bits (the same in every version, so numbering
    /// never depends on the version).
    pub(crate) const MAX_SESSION: u32 = u32::MAX >> 3;
}

/// The reference's numbers (`i32` in the API; the wire carries them as one byte).
macro_rules! into_i32 {
    ($($ty:ident),+) => {$(
        impl From<$ty> for i32 {
            fn from(v: $ty) -> Self {
                v as Self
            }
        }
    )+};
}
into_i32!(StartOptions, ConnectErrorCode, DisconnectReason);
