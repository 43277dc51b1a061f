//! Typed session and stream ids and their allocators.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::Error;

/// The largest id colink hands out: ids must round-trip through the reference's `number` (an `int32_t` in its
/// native layer), so they stay within `1..=i32::MAX`.
const MAX_ID: u32 = i32::MAX as u32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $arg:literal, $first:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(NonZeroU32);

        impl $name {
            /// The first id an allocator hands out.
            pub const FIRST: Self = match NonZeroU32::new($first) {
                Some(v) => Self(v),
                None => unreachable!(),
            };

            /// The id as a number (always in `1..=i32::MAX`).
            pub const fn get(self) -> u32 {
                self.0.get()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl TryFrom<i64> for $name {
            type Error = Error;

            /// Parses a raw id as the reference receives it: ids ≤ 0 (or beyond `i32::MAX`) are a 401 naming
            #[doc = concat!("`", $arg, "`.")]
            /// Whether the id exists is the caller's next check (also a 401).
            fn try_from(v: i64) -> Result<Self, Error> {
                if v <= 0 {
                    return Err(Error::invalid_arg($arg, format_args!("must be > 0, got {v}")));
                }
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= MAX_ID)
                    .and_then(NonZeroU32::new)
                    .map(Self)
                    .ok_or_else(|| Error::invalid_arg($arg, format_args!("must be <= {MAX_ID}, got {v}")))
            }
        }

        impl TryFrom<i32> for $name {
            type Error = Error;

            /// Parses a raw id: ids ≤ 0 are a 401 naming
            #[doc = concat!("`", $arg, "`.")]
            fn try_from(v: i32) -> Result<Self, Error> {
                Self::try_from(i64::from(v))
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> Self {
                i64::from(id.get())
            }
        }

        impl From<$name> for i32 {
            fn from(id: $name) -> Self {
                // Ids never exceed i32::MAX (see MAX_ID), so this cannot wrap.
                id.get() as i32
            }
        }

        impl From<$name> for u32 {
            fn from(id: $name) -> Self {
                id.get()
            }
        }
    };
}

id_type!(
    /// A session handle (the reference's `sessionId`): a local number, starting at 100 and increasing, never
    /// reused within one [`SessionIds`] allocator.
    SessionId,
    "session_id",
    100
);

id_type!(
    /// A media stream handle (the reference's `streamId`, returned by `createStream`): starting at 1000 and
    /// increasing, shared by all sessions of one [`StreamIds`] allocator.
    StreamId,
    "stream_id",
    1000
);

macro_rules! allocator {
    ($(#[$doc:meta])* $name:ident, $id:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            next: AtomicU32,
        }

        impl $name {
            /// An allocator whose first id is
            #[doc = concat!("[`", stringify!($id), "::FIRST`].")]
            pub const fn new() -> Self {
                Self { next: AtomicU32::new($id::FIRST.get()) }
            }

            /// The next unused id, or `None` once all ids up to `i32::MAX` are used (after about two billion
            /// allocations; the Manager reports that as an error rather than reusing an id).
            pub fn allocate(&self) -> Option<$id> {
                self.next
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n <= MAX_ID).then_some(n + 1))
                    .ok()
                    .and_then(NonZeroU32::new)
                    .map($id)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

allocator!(
    /// Hands out [`SessionId`]s: 100, 101, 102, ... (thread-safe; one per Manager).
    SessionIds,
    SessionId
);

allocator!(
    /// Hands out [`StreamId`]s: 1000, 1001, ... shared by all sessions (thread-safe; one per Manager).
    StreamIds,
    StreamId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_at_100_and_increase() {
        let ids = SessionIds::new();
        let got: Vec<u32> = (0..3).map(|_| ids.allocate().unwrap().get()).collect();
        assert_eq!(got, [100, 101, 102]);
    }

    #[test]
    fn streams_start_at_1000_and_increase() {
        let ids = StreamIds::default();
        let got: Vec<u32> = (0..3).map(|_| ids.allocate().unwrap().get()).collect();
        assert_eq!(got, [1000, 1001, 1002]);
    }

    #[test]
    fn allocators_stop_at_i32_max_instead_of_wrapping() {
        let ids = SessionIds { next: AtomicU32::new(MAX_ID) };
        assert_eq!(ids.allocate().map(i32::from), Some(i32::MAX));
        assert_eq!(ids.allocate(), None);
        assert_eq!(ids.allocate(), None);
    }

    #[test]
    fn allocation_is_unique_across_threads() {
        let ids = std::sync::Arc::new(StreamIds::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..250).map(|_| ids.allocate().unwrap().get()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (1000..2000).collect::<Vec<_>>());
    }

    #[test]
    fn non_positive_ids_are_401_naming_the_argument() {
        for bad in [0i64, -1, i64::MIN] {
            let e = SessionId::try_from(bad).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("session_id")));
            assert!(e.message().contains("must be > 0"), "{e}");
            let e = StreamId::try_from(bad).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("stream_id")));
        }
        for bad in [0i32, -1, i32::MIN] {
            assert_eq!(SessionId::try_from(bad).unwrap_err().code(), 401);
            assert_eq!(StreamId::try_from(bad).unwrap_err().code(), 401);
        }
    }

    #[test]
    fn ids_beyond_i32_are_401() {
        for bad in [i64::from(i32::MAX) + 1, i64::from(u32::MAX), i64::MAX] {
            let e = SessionId::try_from(bad).unwrap_err();
            assert_eq!((e.code(), e.argument()), (401, Some("session_id")));
        }
    }

    #[test]
    fn positive_ids_round_trip() {
        for v in [1i32, 10, 100, 123, 1000, i32::MAX] {
            let s = SessionId::try_from(v).unwrap();
            assert_eq!(i32::from(s), v);
            assert_eq!(i64::from(s), i64::from(v));
            assert_eq!(s.to_string(), v.to_string());
            assert_eq!(i32::from(StreamId::try_from(i64::from(v)).unwrap()), v);
        }
    }
}
