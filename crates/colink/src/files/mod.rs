//! Files and other large payloads as a first-class API (docs/files.md): [`Manager::send_file`] streams from a
//! file or any [`AsyncRead`] without loading it into memory; the peer app sees
//! [`Event::FileOffered`](crate::Event::FileOffered) and answers with [`Manager::accept_file`] (writing into a
//! file or any [`AsyncWrite`] it chooses) or [`Manager::reject_file`]. Both sides get a [`FileTransfer`]:
//! progress (bytes, rate, ETA), cancel, and the outcome, which on both sides is "verified" only once the
//! receiver wrote every byte, flushed its writer and checked the content's SHA-256.
//!
//! - The size is announced up front and enforced on both sides; the receiver never allocates by it.
//! - Within a session, link drops are invisible (the session resumes, nothing is lost or repeated). Across
//!   sessions, a transfer resumes from what the receiver kept: the sender's [`ResumeKey`] names the content,
//!   and a receiver that kept part of it accepts with [`FileSink::resume`].
//! - Back-pressure: chunks count against the session's receive buffer until they are written, so a slow
//!   writer slows its sender and nothing else.
//!
//! [`Manager::send_file`]: crate::Manager::send_file
//! [`Manager::accept_file`]: crate::Manager::accept_file
//! [`Manager::reject_file`]: crate::Manager::reject_file

pub mod wire;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::api::Error;

/// Bytes per chunk colink sends (the last chunk of a file may be shorter).
pub const CHUNK: usize = 64 * 1024;

/// The smallest chunk a receiver accepts before the last one of a file (docs/files.md §2): it bounds the
/// number of chunks the receive buffer can hold.
pub const MIN_CHUNK: usize = 4 * 1024;

/// The longest file name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The longest reason text in ABORT and RESULT, in UTF-8 bytes.
pub const MAX_REASON_LEN: usize = 256;

/// The largest file colink offers or accepts: 1 PiB.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// How long an offer waits for the receiving app's [`accept_file`](crate::Manager::accept_file) or
/// [`reject_file`](crate::Manager::reject_file) before the receiver declines it.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a sender waits for the answer to its offer (the receiver declines after [`OFFER_TIMEOUT`]) and,
/// after its last byte, for the receiver's verdict.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// Incoming transfers (offered or running) one session holds at once; more are answered `Busy`.
pub const MAX_INCOMING: usize = 8;

/// Chunks a sender keeps queued or in flight at once (`IN_FLIGHT` × [`CHUNK`] = 256 KiB): enough to keep any
/// Bluetooth link busy, few enough that a cancelled transfer stops soon (chunks already queued still go out).
pub const IN_FLIGHT: usize = 4;

/// A transfer's id, chosen by its sender (unique per sending Manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub(crate) u64);

impl TransferId {
    /// The id with raw value `v` (as it travels on the wire).
    pub const fn from_raw(v: u64) -> Self {
        Self(v)
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// The identity of a file's content across sessions, chosen by the sender: a receiver that kept the first
/// bytes of an earlier attempt with the same key (and size) may resume from there ([`FileSink::resume`]).
/// The content hash checked at the end covers the whole file, so a wrong match is caught, never delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeKey(pub(crate) [u8; 16]);

impl ResumeKey {
    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A fresh random key (content that is never resumed).
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        // Without an OS RNG the key is all zeroes: resuming then relies on the final hash alone.
        let _ = getrandom::fill(&mut b);
        Self(b)
    }

    /// The key [`FileSource::open`] uses: derived from what identifies a file's version on this machine (its
    /// absolute path, size and modification time), so a re-send of an unchanged file resumes.
    pub fn of_file(path: &Path, size: u64, modified: Option<std::time::SystemTime>) -> Self {
        let mut h = Sha256::new();
        h.update(b"colink file resume key v1\0");
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(size.to_be_bytes());
        let mtime = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
        h.update(mtime.as_nanos().to_be_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.finalize()[..16]);
        Self(k)
    }
}

impl fmt::Display for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResumeKey({self})")
    }
}

/// Whether `name` may name a file on the wire (docs/files.md §2): 1..=255 UTF-8 bytes, one path component
/// (no `/`, `\`, NUL or other control characters, not `.` or `..`). Names are still the peer's words: an app
/// that writes files by them should also refuse names it does not want (the CLI refuses a leading dot).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("the name is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("the name is . or ..");
    }
    if name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err("the name holds a path separator or a control character");
    }
    Ok(())
}

/// A file offered by the peer (carried by [`Event::FileOffered`](crate::Event::FileOffered)): answer it with
/// [`accept_file`](crate::Manager::accept_file) or [`reject_file`](crate::Manager::reject_file) within
/// [`OFFER_TIMEOUT`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOffer {
    /// The transfer, to name in the answer.
    pub transfer: TransferId,
    /// The file's name as the peer gave it (checked by [`check_name`]; escape it before showing it).
    pub name: String,
    /// Its exact size: the sender sends exactly this many bytes, or the transfer fails.
    pub size: u64,
    /// Its content's identity, to resume an earlier attempt ([`FileSink::resume`]).
    pub resume_key: ResumeKey,
}

/// What [`send_file`](crate::Manager::send_file) reads: a name, the exact size, and the bytes.
pub struct FileSource {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) key: ResumeKey,
}

impl FileSource {
    /// `size` bytes from `reader`, offered as `name`, with a random [`ResumeKey`]. The transfer fails if
    /// `reader` ends before `size` bytes or has more.
    pub fn new(name: impl Into<String>, size: u64, reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        Self { name: name.into(), size, reader: Box::new(reader), key: ResumeKey::random() }
    }

    /// The file at `path`, offered under its file name, with [`ResumeKey::of_file`] as its key.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = std::path::absolute(path.as_ref())?;
        let file = tokio::fs::File::open(&path).await?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the file name is not UTF-8"))?
            .to_owned();
        let key = ResumeKey::of_file(&path, meta.len(), meta.modified().ok());
        Ok(Self { name, size: meta.len(), reader: Box::new(file), key })
    }

    /// Names the content for resuming (see [`ResumeKey`]).
    #[must_use]
    pub fn with_resume_key(mut self, key: ResumeKey) -> Self {
        self.key = key;
        self
    }

    /// The name offered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size announced.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// The resume key offered.
    pub const fn resume_key(&self) -> ResumeKey {
        self.key
    }
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSource").field("name", &self.name).field("size", &self.size).finish_non_exhaustive()
    }
}

/// Where [`accept_file`](crate::Manager::accept_file) writes: any [`AsyncWrite`], from the first byte or
/// resuming after bytes kept from an earlier attempt.
pub struct FileSink {
    pub(crate) writer: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) kept: u64,
    pub(crate) kept_reader: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

impl FileSink {
    /// Writes the whole file into `writer`, from its first byte. colink flushes and shuts `writer` down before
    /// it reports the transfer verified. Shutting down is not an fsync: for a `tokio::fs::File` the bytes are
    /// with the OS, not yet on the disk; an app that needs them durable calls `sync_all` after `finish`.
    pub fn new(writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self { writer: Box::new(writer), kept: 0, kept_reader: None }
    }

    /// Resumes a transfer of which the first `kept` bytes were written before (by an attempt that offered the
    /// same [`ResumeKey`]): `kept_bytes` reads them back (colink hashes them, so the final check covers the
    /// whole file), and `writer` appends the rest. colink reads the `kept` bytes to the end before it answers
    /// the offer and before it writes anything, so the two may be handles of one file.
    pub fn resume(
        writer: impl AsyncWrite + Send + Unpin + 'static,
        kept: u64,
        kept_bytes: impl AsyncRead + Send + Unpin + 'static,
    ) -> Self {
        Self { writer: Box::new(writer), kept, kept_reader: Some(Box::new(kept_bytes)) }
    }
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink").field("kept", &self.kept).finish_non_exhaustive()
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FileProgress {
    /// Bytes done: on the sending side, bytes the receiver holds; on the receiving side, bytes written.
    /// Includes what a resumed transfer had before.
    pub bytes: u64,
    /// The file's size.
    pub total: u64,
    /// The byte offset this attempt started from (non-zero when it resumed).
    pub resumed_from: u64,
    /// Bytes per second in this attempt so far (0 until bytes moved).
    pub rate: f64,
    /// Time left at that rate (`None` until there is a rate).
    pub eta: Option<Duration>,
}

impl FileProgress {
    pub(crate) const fn start(total: u64, resumed_from: u64) -> Self {
        Self { bytes: resumed_from, total, resumed_from, rate: 0.0, eta: None }
    }

    /// `bytes` done, `since` this attempt began.
    pub(crate) fn at(total: u64, resumed_from: u64, bytes: u64, since: Instant) -> Self {
        let secs = since.elapsed().as_secs_f64();
        let moved = bytes.saturating_sub(resumed_from) as f64;
        let rate = if secs > 0.0 { moved / secs } else { 0.0 };
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64(total.saturating_sub(bytes) as f64 / rate));
        Self { bytes, total, resumed_from, rate, eta }
    }
}

/// What a verified transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileReceipt {
    /// The transfer.
    pub transfer: TransferId,
    /// The file's size.
    pub size: u64,
    /// Where this attempt started (0, or the bytes a resumed transfer had kept).
    pub resumed_from: u64,
    /// SHA-256 of the whole content, as both sides computed it.
    pub sha256: [u8; 32],
}

/// One transfer, on either side: follow its [`progress`](Self::progress), [`cancel`](Self::cancel) it, and
/// [`finish`](Self::finish) for its outcome. Dropping the handle does not stop the transfer.
#[derive(Debug)]
pub struct FileTransfer {
    pub(crate) id: TransferId,
    pub(crate) progress: watch::Receiver<FileProgress>,
    pub(crate) cancel: std::sync::Arc<watch::Sender<bool>>,
    pub(crate) done: oneshot::Receiver<Result<FileReceipt, Error>>,
}

/// Cancels one [`FileTransfer`] ([`FileTransfer::canceller`]); cheap to clone.
#[derive(Debug, Clone)]
pub struct FileCanceller(std::sync::Arc<watch::Sender<bool>>);

impl FileCanceller {
    /// Same as [`FileTransfer::cancel`].
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

impl FileTransfer {
    /// The transfer's id (the sender's).
    pub const fn id(&self) -> TransferId {
        self.id
    }

    /// Progress updates: the latest value, and a change notification each time more bytes are done.
    pub fn progress(&self) -> watch::Receiver<FileProgress> {
        self.progress.clone()
    }

    /// Stops the transfer: the peer is told, and [`finish`](Self::finish) fails with
    /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) (unless the transfer ended first).
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// A handle that cancels this transfer from elsewhere (a Ctrl-C handler) while [`finish`](Self::finish)
    /// waits for it.
    pub fn canceller(&self) -> FileCanceller {
        FileCanceller(self.cancel.clone())
    }

    /// Waits for the outcome: `Ok` once the receiver wrote, flushed and verified every byte; else why not
    /// (the peer declined or cancelled, a write or read failed, the hash did not match, the session ended).
    pub async fn finish(self) -> Result<FileReceipt, Error> {
        self.done.await.unwrap_or_else(|_| Err(Error::not_supported("a file transfer whose task ended")))
    }
}
