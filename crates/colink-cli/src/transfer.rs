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

/// A transfer being received: only the chunks that arrived are held (never the size a peer announced), each
/// once.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) received: u64,
    /// The chunks held, by offset (every offset a multiple of [`CHUNK`]).
    chunks: BTreeMap<u64, Bytes>,
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
    /// A payload that does not fit a transfer (dropped; reported).
    Invalid(String),
}

/// Reassembles transfers on the receiving side.
///
/// A peer decides what it announces, so nothing is allocated from an announced size: memory grows only with the
/// chunk bytes that actually arrived (each chunk at most [`CHUNK`] bytes, at its aligned offset, counted once),
/// and at most [`MAX_OPEN`] transfers are open at once.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    open: BTreeMap<u64, Incoming>,
}

/// The largest transfer accepted.
pub(crate) const MAX_TRANSFER: u64 = 4 << 30;
/// Most transfers open (announced, not complete) at once; a header beyond it is refused.
pub(crate) const MAX_OPEN: usize = 4;

impl Assembler {
    pub(crate) fn push(&mut self, payload: Bytes) -> Progress {
        match parse(payload) {
            Payload::Blob(b) => Progress::Blob(b),
            Payload::Header { id, size, name } => {
                if size > MAX_TRANSFER {
                    return Progress::Invalid(format!("transfer {id} of {size} bytes is larger than {MAX_TRANSFER}"));
                }
                if self.open.contains_key(&id) {
                    return Progress::Invalid(format!("transfer {id} announced twice"));
                }
                if self.open.len() >= MAX_OPEN {
                    return Progress::Invalid(format!("transfer {id} refused: {MAX_OPEN} transfers are open already"));
                }
                self.open.insert(id, Incoming { name, size, received: 0, chunks: BTreeMap::new() });
                if size == 0 { self.finish(id) } else { Progress::Started { id } }
            }
            Payload::Chunk { id, offset, data } => {
                let Some(t) = self.open.get_mut(&id) else {
                    return Progress::Invalid(format!("a chunk of unknown transfer {id}"));
                };
                // The sender cuts at CHUNK boundaries: a chunk is whole, aligned and inside the transfer.
                let expected = t.size.saturating_sub(offset).min(CHUNK as u64);
                if offset % CHUNK as u64 != 0 || offset >= t.size || data.len() as u64 != expected {
                    return Progress::Invalid(format!(
                        "a chunk of {} bytes at {offset} does not fit transfer {id} of {} bytes",
                        data.len(),
                        t.size
                    ));
                }
                if t.chunks.contains_key(&offset) {
                    return Progress::Invalid(format!("the chunk at {offset} of transfer {id} arrived twice"));
                }
                t.received += data.len() as u64;
                t.chunks.insert(offset, data);
                if t.received >= t.size { self.finish(id) } else { Progress::Advanced { received: t.received } }
            }
        }
    }

    fn finish(&mut self, id: u64) -> Progress {
        match self.open.remove(&id) {
            Some(t) => {
                let mut data = Vec::with_capacity(usize::try_from(t.received).unwrap_or(0));
                for chunk in t.chunks.into_values() {
                    data.extend_from_slice(&chunk);
                }
                Progress::Complete { id, name: t.name, data }
            }
            None => Progress::Invalid(format!("transfer {id} vanished")),
        }
    }

    /// The name and size of an open transfer.
    pub(crate) fn describe(&self, id: u64) -> Option<(&str, u64)> {
        self.open.get(&id).map(|t| (t.name.as_str(), t.size))
    }

    /// Bytes held by open transfers (what arrived, not what was announced).
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.open.values().map(|t| t.received).sum()
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
    fn an_announced_size_allocates_nothing_and_duplicates_do_not_complete_a_transfer() {
        let mut a = Assembler::default();
        // A 30-byte header announcing 4 GiB: nothing is held until bytes arrive.
        assert!(matches!(a.push(header(1, MAX_TRANSFER, "big")), Progress::Started { id: 1 }));
        assert_eq!(a.held(), 0);
        // The same chunk again and again does not add up to a complete (zero-filled) transfer.
        let mut b = Assembler::default();
        assert!(matches!(b.push(header(2, 2 * CHUNK as u64, "two")), Progress::Started { .. }));
        let first = vec![1u8; CHUNK];
        assert!(matches!(b.push(chunk(2, 0, &first)), Progress::Advanced { .. }));
        assert!(matches!(b.push(chunk(2, 0, &first)), Progress::Invalid(_)));
        assert_eq!(b.held(), CHUNK as u64);
        // Misaligned, short or out-of-range chunks are refused.
        assert!(matches!(b.push(chunk(2, 1, &first)), Progress::Invalid(_)));
        assert!(matches!(b.push(chunk(2, CHUNK as u64, &first[..10])), Progress::Invalid(_)));
        assert!(matches!(b.push(chunk(2, 2 * CHUNK as u64, &first)), Progress::Invalid(_)));
        assert!(matches!(b.push(chunk(2, CHUNK as u64, &first)), Progress::Complete { .. }));
    }

    #[test]
    fn at_most_a_few_transfers_are_open_at_once() {
        let mut a = Assembler::default();
        for id in 0..MAX_OPEN as u64 {
            assert!(matches!(a.push(header(id, 10, "x")), Progress::Started { .. }));
        }
        assert!(matches!(a.push(header(99, 10, "x")), Progress::Invalid(_)));
        assert!(matches!(a.push(header(0, 10, "x")), Progress::Invalid(_)), "an id announced twice");
    }

    #[test]
    fn empty_transfer_completes_at_once() {
        let mut a = Assembler::default();
        assert!(matches!(a.push(header(3, 0, "empty")), Progress::Complete { .. }));
    }
}
