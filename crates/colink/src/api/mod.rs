//! The public API's building blocks, after OpenHarmony's `abilityConnectionManager` (api.md): typed ids, the
//! reference's records and enums, [`Error`] with the reference's numeric codes, the calling app ([`Caller`]),
//! the validation rules ([`validate`]) and the event routing ([`EventRegistry`]).
//!
//! The `Manager` composes these with the driver. Everything here is pure or in-memory: no I/O, no tasks, no
//! timers.
//!
//! | reference | colink |
//! |---|---|
//! | `sessionId` / `streamId` (`number`) | [`SessionId`] (from 100) / [`StreamId`] (from 1000), allocated by [`SessionIds`] / [`StreamIds`] |
//! | `PeerInfo` | [`PeerInfo`] (`service_name: Option`) |
//! | `ConnectOptions`, `StartOptionParams` | [`ConnectOptions`], [`StartOptionParams`] (the engine's types) |
//! | `ConnectResult` | [`ConnectResult`] |
//! | `EventCallbackInfo`, `CollaborateEventInfo` | [`Event`] (typed) / [`EventCallbackInfo`] (flat), [`CollaborateEventInfo`] |
//! | `on` / `off` event types | [`EventKind`], [`EventRegistry::on`] / [`EventRegistry::off`], plus [`EventRegistry::events`] streams |
//! | `StreamParam`, `SurfaceParam`, `colorSpaceConversionTarget` | [`StreamParam`], [`SurfaceParam`], [`ColorSpace`] |
//! | `ConnectErrorCode`, `DisconnectReason`, `StreamRole`, `VideoPixelFormat`, `FlipOptions`, `CollaborateEventType` | same names, [`ReferenceEnum`] |
//! | `BusinessError.code` (201, 202, 401, 801, 32300001..4) | [`Error::code`], [`ErrorCode`] |
//! | the app `context` + its access token | [`Caller`], [`Permission`] |

mod caller;
mod enums;
mod error;
mod events;
mod ids;
mod media;
mod types;
pub mod validate;

pub use caller::{Caller, Permission};
pub use enums::{
    CollaborateEventType, ConnectErrorCode, DisconnectReason, FlipOptions, ReferenceEnum, StartOptionParams,
    StreamRole, VideoPixelFormat,
};
pub use error::{Error, ErrorCode, ErrorKind};
pub use events::{
    Event, EventCallbackInfo, EventKind, EventRegistry, EventStream, Listener, MAX_HELD_EVENTS, STREAM_CAPACITY,
};
pub use ids::{SessionId, SessionIds, StreamId, StreamIds};
pub use media::{ColorSpace, DEFAULT_BITRATE, Rotation, StreamParam, SurfaceParam};
pub use types::{CollaborateEventInfo, ConnectOptions, ConnectResult, PeerInfo, SessionState};
