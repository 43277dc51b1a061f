//! The file lane's messages (docs/files.md §2): one message per lane payload, its first byte the type. Types
//! below 0x80 travel from the side that sends a file to the side that receives it; types from 0x80 the other
//! way, so both sides may send files on one session at once without their transfer ids meeting.
//!
//! Every decoder checks counts against the bytes that remain before it allocates, and rejects trailing bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::{MAX_NAME_LEN, MAX_REASON_LEN, ResumeKey, TransferId};

const OFFER: u8 = 0x01;
const CHUNK: u8 = 0x02;
const END: u8 = 0x03;
const ABORT: u8 = 0x04;
const ACCEPT: u8 = 0x81;
const RESULT: u8 = 0x82;

/// How a receiver ended a transfer (the RESULT message's status byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `0`: every byte written, flushed and the content hash verified.
    Verified,
    /// `1`: the receiving app declined the offer (or never answered it).
    Declined,
    /// `2`: the receiving app cancelled the transfer.
    Cancelled,
    /// `3`: the receiver could not write what arrived (a full disk, a closed writer ...).
    WriteFailed,
    /// `4`: the bytes written do not hash to what the sender announced at the end.
    HashMismatch,
    /// `5`: the sender broke the rules (a chunk out of place, more or fewer bytes than announced, a bad name).
    Violation,
    /// `6`: the receiver takes no more transfers on this session now.
    Busy,
}

impl Status {
    const fn byte(self) -> u8 {
        match self {
            Self::Verified => 0,
            Self::Declined => 1,
            Self::Cancelled => 2,
            Self::WriteFailed => 3,
            Self::HashMismatch => 4,
            Self::Violation => 5,
            Self::Busy => 6,
        }
    }

    const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Verified,
            1 => Self::Declined,
            2 => Self::Cancelled,
            3 => Self::WriteFailed,
            4 => Self::HashMismatch,
            5 => Self::Violation,
            6 => Self::Busy,
            _ => return None,
        })
    }
}

/// One file-lane message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMsg {
    /// Sender → receiver: a file is offered.
    Offer {
        /// The sender's id for the transfer.
        id: TransferId,
        /// Its exact length in bytes.
        size: u64,
        /// The content's identity across sessions, for resuming (docs/files.md §4).
        key: ResumeKey,
        /// Its name (a single path component, checked by [`super::check_name`]).
        name: String,
    },
    /// Sender → receiver: `data` belongs at byte `offset` of the file.
    Chunk {
        /// The transfer.
        id: TransferId,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Sender → receiver: every byte was sent; the whole content's SHA-256.
    End {
        /// The transfer.
        id: TransferId,
        /// SHA-256 of bytes `0..size`.
        sha256: [u8; 32],
    },
    /// Sender → receiver: the sender gives up (its app cancelled, or its source failed).
    Abort {
        /// The transfer.
        id: TransferId,
        /// Why, for people.
        reason: String,
    },
    /// Receiver → sender: send from byte `offset` on (0, or what the receiver kept of an earlier attempt).
    Accept {
        /// The transfer.
        id: TransferId,
        /// The first byte the receiver wants.
        offset: u64,
    },
    /// Receiver → sender: how the transfer ended on the receiving side.
    Result {
        /// The transfer.
        id: TransferId,
        /// The outcome.
        status: Status,
        /// Why, for people (empty when verified).
        reason: String,
    },
}

/// A file-lane message that breaks docs/files.md §2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed file-lane message: {0}")]
pub struct Malformed(pub &'static str);

impl FileMsg {
    /// The transfer the message is about.
    pub const fn id(&self) -> TransferId {
        match self {
            Self::Offer { id, .. }
            | Self::Chunk { id, .. }
            | Self::End { id, .. }
            | Self::Abort { id, .. }
            | Self::Accept { id, .. }
            | Self::Result { id, .. } => *id,
        }
    }

    /// The lane it travels on (docs/files.md §2): CHUNK and END on the FILE lane, in order with each other;
    /// OFFER, ABORT, ACCEPT and RESULT on the FILE_CONTROL lane, so they never wait behind chunks.
    pub const fn lane(&self) -> colink_proto::ChannelKind {
        match self {
            Self::Chunk { .. } | Self::End { .. } => colink_proto::ChannelKind::File,
            _ => colink_proto::ChannelKind::FileControl,
        }
    }

    /// The message's bytes.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Self::Offer { id, size, key, name } => {
                b.put_u8(OFFER);
                b.put_u64(id.get());
                b.put_u64(*size);
                b.put_slice(key.as_bytes());
                put_str(&mut b, name);
            }
            Self::Chunk { id, offset, data } => return chunk(*id, *offset, data),
            Self::End { id, sha256 } => {
                b.put_u8(END);
                b.put_u64(id.get());
                b.put_slice(sha256);
            }
            Self::Abort { id, reason } => {
                b.put_u8(ABORT);
                b.put_u64(id.get());
                put_str(&mut b, reason);
            }
            Self::Accept { id, offset } => {
                b.put_u8(ACCEPT);
                b.put_u64(id.get());
                b.put_u64(*offset);
            }
            Self::Result { id, status, reason } => {
                b.put_u8(RESULT);
                b.put_u64(id.get());
                b.put_u8(status.byte());
                put_str(&mut b, reason);
            }
        }
        b.freeze()
    }

    /// Reads one message (the whole lane payload). A chunk's data is a slice of `payload`, not a copy.
    pub fn decode(payload: &Bytes) -> Result<Self, Malformed> {
        let mut r = Reader { b: payload, at: 0 };
        let ty = r.u8()?;
        let id = TransferId(r.u64()?);
        let msg = match ty {
            OFFER => {
                let size = r.u64()?;
                let key = ResumeKey(r.array::<16>()?);
                let name = r.str(MAX_NAME_LEN, "the name is too long")?;
                Self::Offer { id, size, key, name }
            }
            CHUNK => {
                let offset = r.u64()?;
                let data = payload.slice(r.at..);
                if data.is_empty() {
                    return Err(Malformed("an empty chunk"));
                }
                r.at = payload.len();
                Self::Chunk { id, offset, data }
            }
            END => Self::End { id, sha256: r.array::<32>()? },
            ABORT => Self::Abort { id, reason: r.str(MAX_REASON_LEN, "the reason is too long")? },
            ACCEPT => Self::Accept { id, offset: r.u64()? },
            RESULT => {
                let status = Status::from_byte(r.u8()?).ok_or(Malformed("an unknown status"))?;
                Self::Result { id, status, reason: r.str(MAX_REASON_LEN, "the reason is too long")? }
            }
            _ => return Err(Malformed("an unknown message type")),
        };
        if r.at != payload.len() {
            return Err(Malformed("trailing bytes"));
        }
        Ok(msg)
    }
}

/// A CHUNK message carrying `data` at `offset`, built in one copy (the same bytes as
/// [`FileMsg::Chunk`]'s [`encode`](FileMsg::encode)).
pub fn chunk(id: TransferId, offset: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(17 + data.len());
    b.put_u8(CHUNK);
    b.put_u64(id.get());
    b.put_u64(offset);
    b.put_slice(data);
    b.freeze()
}

/// `varint length ‖ UTF-8` (docs/sessions.md conventions); callers keep `s` within its limit.
fn put_str(b: &mut BytesMut, s: &str) {
    colink_frame::varint::put(b, u32::try_from(s.len()).unwrap_or(u32::MAX));
    b.put_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(Malformed("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn str(&mut self, max: usize, too_long: &'static str) -> Result<String, Malformed> {
        let len = colink_frame::varint::get(self.b, &mut self.at).map_err(|_| Malformed("a bad length"))?;
        let len = usize::try_from(len).map_err(|_| Malformed(too_long))?;
        if len > max {
            return Err(Malformed(too_long));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| Malformed("a string that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest;

    fn any_msg() -> impl Strategy<Value = FileMsg> {
        let id = any::<u64>().prop_map(TransferId);
        let text = "[a-zé ]{0,40}";
        prop_oneof![
            (id.clone(), any::<u64>(), any::<[u8; 16]>(), "[a-z.]{1,40}")
                .prop_map(|(id, size, k, name)| { FileMsg::Offer { id, size, key: ResumeKey(k), name } }),
            (id.clone(), any::<u64>(), proptest::collection::vec(any::<u8>(), 1..300))
                .prop_map(|(id, offset, d)| FileMsg::Chunk { id, offset, data: Bytes::from(d) }),
            (id.clone(), any::<[u8; 32]>()).prop_map(|(id, sha256)| FileMsg::End { id, sha256 }),
            (id.clone(), text).prop_map(|(id, reason)| FileMsg::Abort { id, reason }),
            (id.clone(), any::<u64>()).prop_map(|(id, offset)| FileMsg::Accept { id, offset }),
            (id, 0u8..7, text).prop_map(|(id, s, reason)| FileMsg::Result {
                id,
                status: Status::from_byte(s).unwrap(),
                reason
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in any_msg()) {
            prop_assert_eq!(FileMsg::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(b);
            if let Ok(m) = FileMsg::decode(&b) {
                // What decodes encodes to the same bytes (one encoding per message).
                prop_assert_eq!(m.encode(), b);
            }
        }

        #[test]
        fn every_cut_short_message_is_malformed(m in any_msg(), cut in 0usize..64) {
            let b = m.encode();
            prop_assume!(!matches!(m, FileMsg::Chunk { .. }));
            let cut = cut.min(b.len() - 1);
            prop_assert!(FileMsg::decode(&b.slice(..cut)).is_err());
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn the_documented_example_is_what_is_sent() {
        // docs/files.md §5.
        let id = TransferId(1);
        let key = ResumeKey([0; 16]);
        let offer = FileMsg::Offer { id, size: 5, key, name: "a.txt".into() };
        assert_eq!(hex(&offer.encode()), format!("01{:016x}{:016x}{}05612e747874", 1, 5, "00".repeat(16)));
        let accept = FileMsg::Accept { id, offset: 0 };
        assert_eq!(hex(&accept.encode()), format!("81{:016x}{:016x}", 1, 0));
        let chunk = FileMsg::Chunk { id, offset: 0, data: Bytes::from_static(b"hello") };
        assert_eq!(hex(&chunk.encode()), format!("02{:016x}{:016x}68656c6c6f", 1, 0));
        let sha256: [u8; 32] = sha2::Sha256::digest(b"hello").into();
        assert_eq!(
            hex(&FileMsg::End { id, sha256 }.encode()),
            format!("03{:016x}2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 1)
        );
        let result = FileMsg::Result { id, status: Status::Verified, reason: String::new() };
        assert_eq!(hex(&result.encode()), format!("82{:016x}0000", 1));
    }

    #[test]
    fn limits_are_checked_before_anything_is_allocated() {
        let mut b = BytesMut::new();
        b.put_u8(OFFER);
        b.put_u64(1);
        b.put_u64(10);
        b.put_slice(&[0; 16]);
        b.put_u8(0xFF); // a name length of 2^32 − 1, in five varint bytes
        b.put_slice(&[0xFF, 0xFF, 0xFF, 0x0F]);
        assert_eq!(FileMsg::decode(&b.freeze()), Err(Malformed("the name is too long")));
        let trailing = {
            let mut b = BytesMut::from(&FileMsg::Accept { id: TransferId(1), offset: 0 }.encode()[..]);
            b.put_u8(0);
            b.freeze()
        };
        assert_eq!(FileMsg::decode(&trailing), Err(Malformed("trailing bytes")));
        let empty_chunk = FileMsg::Chunk { id: TransferId(1), offset: 0, data: Bytes::new() }.encode();
        assert_eq!(FileMsg::decode(&empty_chunk), Err(Malformed("an empty chunk")));
    }
}
