//! Files and large data as a sequence of `send_data` payloads, so both ends can show progress.
//!
//! `send_data` resolves when the peer app holds the whole payload, but says nothing in between. The CLI
//! therefore sends a transfer as a header payload followed by chunk payloads that carry their offset; each
//! acknowledged chunk moves the progress bar (so the sender's figure is bytes the receiver holds), and the
//! receiver reassembles by offset, whatever order chunks complete in.
//!
//! Payload layouts (all integers big-endian):
//! - header: `CLNK` `0x01` `H` · transfer id u64 · total size u64 · name length u16 · name (UTF-8)
//! - chunk:  `CLNK` `0x01` `C` · transfer id u64 · offset u64 · bytes
//!
//! Any other `send_data` payload is an ordinary blob.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use colink::{Manager, SessionId};
use futures::StreamExt;

const MAGIC: &[u8; 5] = b"CLNK\x01";
/// Bytes per chunk: small enough for a smooth progress bar, large enough that per-payload overhead is small.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Chunks in flight at once.
const WINDOW: usize = 4;

/// What a `send_data` payload turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// The start of a transfer.
    Header { id: u64, size: u64, name: String },
    /// A piece of a transfer.
    Chunk { id: u64, offset: u64, data: Bytes },
    /// Anything else.
    Blob(Bytes),
}

pub(crate) fn header(id: u64, size: u64, name: &str) -> Bytes {
    let name = truncate(name, 255);
    let mut b = BytesMut::with_capacity(MAGIC.len() + 19 + name.len());
    b.put_slice(MAGIC);
    b.put_u8(b'H');
    b.put_u64(id);
    b.put_u64(size);
    b.put_u16(u16::try_from(name.len()).unwrap_or(0));
    b.put_slice(name.as_bytes());
    b.freeze()
}

pub(crate) fn chunk(id: u64, offset: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(MAGIC.len() + 17 + data.len());
    b.put_slice(MAGIC);
    b.put_u8(b'C');
    b.put_u64(id);
    b.put_u64(offset);
    b.put_slice(data);
    b.freeze()
}

/// Classifies a received payload (never fails: anything malformed is a blob).
pub(crate) fn parse(data: Bytes) -> Payload {
    fn u64_at(d: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
    }
    let parsed = (|| {
        if !data.starts_with(MAGIC) {
            return None;
        }
        let m = MAGIC.len();
        match *data.get(m)? {
            b'H' => {
                let id = u64_at(&data, m + 1)?;
                let size = u64_at(&data, m + 9)?;
                let len = usize::from(u16::from_be_bytes(data.get(m + 17..m + 19)?.try_into().ok()?));
                let name = std::str::from_utf8(data.get(m + 19..m + 19 + len)?).ok()?.to_owned();
                Some(Payload::Header { id, size, name })
            }
            b'C' => {
                let id = u64_at(&data, m + 1)?;
                let offset = u64_at(&data, m + 9)?;
                Some(Payload::Chunk { id, offset, data: data.slice(m + 17..) })
            }
            _ => None,
        }
    })();
    parsed.unwrap_or(Payload::Blob(data))
}

/// Sends `data` as transfer `id` named `name`; `progress(bytes)` is called with the bytes the peer holds.
pub(crate) async fn send(
    manager: &Manager,
    session: SessionId,
    id: u64,
    name: &str,
    data: Bytes,
    progress: impl Fn(u64),
) -> Result<(), colink::Error> {
    manager.send_data(session, header(id, data.len() as u64, name)).await?;
    let pieces = (0..data.len()).step_by(CHUNK).map(|at| {
        let end = (at + CHUNK).min(data.len());
        (at, chunk(id, at as u64, &data[at..end]), end - at)
    });
    let mut acked = futures::stream::iter(pieces)
        .map(|(_, payload, len)| async move { manager.send_data(session, payload).await.map(|()| len) })
        .buffer_unordered(WINDOW);
    let mut done = 0u64;
    while let Some(r) = acked.next().await {
        done += r? as u64;
        progress(done);
    }
    Ok(())
}

/// A transfer being received.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) received: u64,
    pub(crate) buf: Vec<u8>,
}

/// What [`Assembler::push`] made of a payload.
#[derive(Debug)]
pub(crate) enum Progress {
    /// A transfer started.
    Started { id: u64 },
    /// More of a transfer arrived.
    Advanced { received: u64 },
    /// A transfer is complete.
    Complete { id: u64, name: String, data: Vec<u8> },
    /// A payload that is not part of a transfer.
    Blob(Bytes),
    /// A chunk that does not fit its transfer (dropped; reported).
    Invalid(String),
}

/// Reassembles transfers on the receiving side.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    open: BTreeMap<u64, Incoming>,
}

/// The largest transfer the assembler holds in memory.
pub(crate) const MAX_TRANSFER: u64 = 4 << 30;

impl Assembler {
    pub(crate) fn push(&mut self, payload: Bytes) -> Progress {
        match parse(payload) {
            Payload::Blob(b) => Progress::Blob(b),
            Payload::Header { id, size, name } => {
                if size > MAX_TRANSFER {
                    return Progress::Invalid(format!("transfer {id} of {size} bytes is larger than {MAX_TRANSFER}"));
                }
                let Ok(len) = usize::try_from(size) else {
                    return Progress::Invalid(format!("transfer {id} does not fit in memory"));
                };
                self.open.insert(id, Incoming { name, size, received: 0, buf: vec![0; len] });
                if size == 0 { self.finish(id) } else { Progress::Started { id } }
            }
            Payload::Chunk { id, offset, data } => {
                let Some(t) = self.open.get_mut(&id) else {
                    return Progress::Invalid(format!("a chunk of unknown transfer {id}"));
                };
                let end = offset.checked_add(data.len() as u64).filter(|e| *e <= t.size);
                let (Some(end), Ok(start)) = (end, usize::try_from(offset)) else {
                    return Progress::Invalid(format!(
                        "a chunk at {offset} beyond the {} bytes of transfer {id}",
                        t.size
                    ));
                };
                t.buf[start..start + data.len()].copy_from_slice(&data);
                t.received += end - offset;
                if t.received >= t.size { self.finish(id) } else { Progress::Advanced { received: t.received } }
            }
        }
    }

    fn finish(&mut self, id: u64) -> Progress {
        match self.open.remove(&id) {
            Some(t) => Progress::Complete { id, name: t.name, data: t.buf },
            None => Progress::Invalid(format!("transfer {id} vanished")),
        }
    }

    /// The name and size of an open transfer.
    pub(crate) fn describe(&self, id: u64) -> Option<(&str, u64)> {
        self.open.get(&id).map(|t| (t.name.as_str(), t.size))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Hex SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_out_of_order_reassemble() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut a = Assembler::default();
        assert!(matches!(a.push(header(7, data.len() as u64, "f.bin")), Progress::Started { id: 7 }));
        let mut pieces: Vec<_> = (0..data.len()).step_by(CHUNK).collect();
        pieces.reverse();
        let mut last = None;
        for at in pieces {
            let end = (at + CHUNK).min(data.len());
            last = Some(a.push(chunk(7, at as u64, &data[at..end])));
        }
        match last {
            Some(Progress::Complete { id: 7, name, data: got }) => {
                assert_eq!(name, "f.bin");
                assert_eq!(got, data);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn foreign_and_malformed_payloads_are_blobs_or_invalid() {
        let mut a = Assembler::default();
        assert!(matches!(a.push(Bytes::from_static(b"hello")), Progress::Blob(_)));
        assert!(matches!(a.push(Bytes::from_static(b"CLNK\x01H\x00")), Progress::Blob(_)));
        assert!(matches!(a.push(chunk(1, 0, b"x")), Progress::Invalid(_)));
        a.push(header(2, 4, "n"));
        assert!(matches!(a.push(chunk(2, 3, b"xy")), Progress::Invalid(_)));
        assert!(matches!(a.push(chunk(2, u64::MAX, b"xy")), Progress::Invalid(_)));
    }

    #[test]
    fn empty_transfer_completes_at_once() {
        let mut a = Assembler::default();
        assert!(matches!(a.push(header(3, 0, "empty")), Progress::Complete { .. }));
    }
}
