//! The Manager's file API (`send_file`, `accept_file`, `reject_file`) and what arrives on the file lane
//! (docs/files.md). Each transfer runs in a task of its own; the event loop only routes messages to it
//! through bounded queues, so a slow disk never stalls other sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Inner, Manager, lock, send_error};
use crate::api::{DisconnectReason, Error, Event, SessionId};
use crate::driver::{LinkId, Node, ReadCredit, SendError};
use crate::files::wire::{FileMsg, Status};
use crate::files::{
    ANSWER_TIMEOUT, CHUNK, FileOffer, FileProgress, FileReceipt, FileSink, FileSource, FileTransfer, IN_FLIGHT,
    MAX_FILE_SIZE, MAX_INCOMING, MAX_REASON_LEN, MIN_CHUNK, OFFER_TIMEOUT, TransferId, check_name,
};
use colink_proto::{ChannelKind, SessionKey};

type Binding = (LinkId, SessionKey);

/// The transfers of one Manager.
#[derive(Default)]
pub(super) struct FileState {
    next_id: u64,
    /// Transfers this side sends, waiting for the receiver's answers.
    outgoing: HashMap<(SessionId, TransferId), Route<Reply>>,
    /// Offers the app has not answered yet.
    offers: HashMap<(SessionId, TransferId), FileOffer>,
    /// Transfers this side receives.
    incoming: HashMap<(SessionId, TransferId), Route<Piece>>,
}

/// The way from the event loop to a transfer's task: a bounded queue, and why it closed when the loop closes
/// it (the session ended, the peer broke the rules).
struct Route<T> {
    tx: mpsc::Sender<T>,
    why: Arc<OnceLock<Error>>,
}

impl<T> Route<T> {
    fn close(self, why: Error) {
        let _ = self.why.set(why);
    }
}

/// What the receiver answers a sender.
#[derive(Debug)]
enum Reply {
    Accept(u64),
    Result(Status, String),
}

/// What the sender sends a receiver, after the offer.
enum Piece {
    Chunk { offset: u64, data: Bytes, _credit: Option<Arc<ReadCredit>> },
    End([u8; 32]),
    Abort(String),
}

/// How a transfer failed, and what the peer must be told.
enum Failure {
    /// This side failed (its source, its writer, a rule the peer broke): the peer is told `status`.
    Local(Status, Error),
    /// The peer ended it, or the session did: nothing to tell.
    Peer(Error),
}

impl Manager {
    /// Sends a file, or any [`AsyncRead`] of a known size, to the peer app of session `id` (colink; not in the
    /// reference). Resolves once the peer holds the offer, with a [`FileTransfer`] to follow; the peer app
    /// sees [`Event::FileOffered`] and accepts or declines. The source is read a chunk at a time, never loaded
    /// whole. `401` for a name [`check_name`] refuses or a size above [`MAX_FILE_SIZE`]; `801` when the peer
    /// speaks a session-protocol version without files (before 4).
    pub async fn send_file(&self, id: SessionId, source: FileSource) -> Result<FileTransfer, Error> {
        check_name(&source.name).map_err(|rule| Error::invalid_arg("name", rule))?;
        if source.size > MAX_FILE_SIZE {
            return Err(Error::invalid_arg("size", format_args!("{} bytes exceed {MAX_FILE_SIZE}", source.size)));
        }
        let binding = self.binding(id)?;
        let (reply_tx, replies) = mpsc::channel(4);
        let why = Arc::new(OnceLock::new());
        let transfer = {
            let mut files = lock(&self.inner.files);
            files.next_id += 1;
            let transfer = TransferId(files.next_id);
            files.outgoing.insert((id, transfer), Route { tx: reply_tx, why: why.clone() });
            transfer
        };
        let span = info_span!("file", session = %id, %transfer, dir = "send");
        let ends = Ends { node: self.inner.node.clone(), binding, session: id, transfer, why };
        let offer = FileMsg::Offer { id: transfer, size: source.size, key: source.key, name: source.name.clone() };
        if let Err(e) = ends.send(&offer).await {
            lock(&self.inner.files).outgoing.remove(&(id, transfer));
            return Err(e);
        }
        info!(parent: &span, name = %source.name.escape_debug(), size = source.size, "file offered");
        let (handle, control) = FileTransfer::pair(transfer, source.size);
        let files = self.inner.files.clone();
        tokio::spawn(
            async move {
                run_send(&ends, source, replies, control).await;
                lock(&files).outgoing.remove(&(ends.session, ends.transfer));
            }
            .instrument(span),
        );
        Ok(handle)
    }

    /// Accepts the file `transfer` the peer offered on session `id` (colink): writes it into `sink` and
    /// returns a [`FileTransfer`] that resolves once every byte is written, `sink` flushed and shut down and
    /// the content hash verified. `401` when no such offer waits (answered, timed out, or never made) or
    /// `sink` kept more bytes than the file has.
    pub async fn accept_file(
        &self,
        id: SessionId,
        transfer: TransferId,
        sink: FileSink,
    ) -> Result<FileTransfer, Error> {
        let binding = self.binding(id)?;
        let offer = {
            let mut files = lock(&self.inner.files);
            let offer = files.offers.remove(&(id, transfer)).ok_or_else(|| no_offer(id, transfer))?;
            if sink.kept > offer.size {
                let rule = format!("kept {} bytes of a file of {}", sink.kept, offer.size);
                files.offers.insert((id, transfer), offer);
                return Err(Error::invalid_arg("sink", rule));
            }
            offer
        };
        // A peer that keeps to chunks of at least MIN_CHUNK bytes can never fill this queue: the receive
        // buffer bounds what it has in flight.
        let capacity = usize::try_from(self.inner.receive_buffer / MIN_CHUNK as u64).unwrap_or(usize::MAX);
        let (tx, pieces) = mpsc::channel(capacity.clamp(8, 1 << 16) + 8);
        let why = Arc::new(OnceLock::new());
        lock(&self.inner.files).incoming.insert((id, transfer), Route { tx, why: why.clone() });
        let span = info_span!("file", session = %id, %transfer, dir = "receive");
        info!(parent: &span, size = offer.size, kept = sink.kept, "file accepted");
        let ends = Ends { node: self.inner.node.clone(), binding, session: id, transfer, why };
        let (handle, control) = FileTransfer::pair(transfer, offer.size);
        let files = self.inner.files.clone();
        tokio::spawn(
            async move {
                run_receive(&ends, offer.size, sink, pieces, control).await;
                lock(&files).incoming.remove(&(ends.session, ends.transfer));
            }
            .instrument(span),
        );
        Ok(handle)
    }

    /// Declines the file `transfer` the peer offered on session `id` (colink); the sender's transfer fails
    /// with [`ErrorKind::Refused`](crate::ErrorKind::Refused) and `reason` (cut to 256 bytes). `401` when no
    /// such offer waits.
    pub async fn reject_file(&self, id: SessionId, transfer: TransferId, reason: &str) -> Result<(), Error> {
        let binding = self.binding(id)?;
        lock(&self.inner.files).offers.remove(&(id, transfer)).ok_or_else(|| no_offer(id, transfer))?;
        let msg = FileMsg::Result { id: transfer, status: Status::Declined, reason: cut(reason) };
        let ends = Ends { node: self.inner.node.clone(), binding, session: id, transfer, why: Arc::default() };
        ends.send(&msg).await
    }
}

impl FileTransfer {
    /// A handle and the task's side of it.
    fn pair(id: TransferId, size: u64) -> (Self, Control) {
        let (progress_tx, progress) = watch::channel(FileProgress::start(size, 0));
        let (cancel, cancel_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        (
            Self { id, progress, cancel: Arc::new(cancel), done },
            Control { progress: progress_tx, cancel: cancel_rx, done: done_tx },
        )
    }
}

/// The task's side of a [`FileTransfer`].
struct Control {
    progress: watch::Sender<FileProgress>,
    cancel: watch::Receiver<bool>,
    done: oneshot::Sender<Result<FileReceipt, Error>>,
}

/// Resolves when the app cancels (never, once the handle is dropped without cancelling).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a transfer's task needs of its session.
struct Ends {
    node: Node,
    binding: Binding,
    session: SessionId,
    transfer: TransferId,
    why: Arc<OnceLock<Error>>,
}

impl Ends {
    /// Sends `msg` on its lane and waits until the peer holds it.
    async fn send(&self, msg: &FileMsg) -> Result<(), Error> {
        self.queue(msg.lane(), msg.encode()).await?.await.map_err(|e| self.send_error(e))
    }

    /// Queues `payload` on `lane`; the delivery resolves when the peer holds it.
    async fn queue(&self, lane: ChannelKind, payload: Bytes) -> Result<crate::driver::Delivery, Error> {
        self.node.enqueue(self.binding.0, self.binding.1, lane, payload).await.map_err(|e| self.send_error(e))
    }

    fn send_error(&self, e: SendError) -> Error {
        if let Some(why) = self.why.get() {
            return why.clone();
        }
        let message = format!("file transfer {} on session {} failed: {e}", self.transfer, self.session);
        send_error(self.session, e, message)
    }

    /// Why the route to this task closed.
    fn ended(&self) -> Error {
        self.why.get().cloned().unwrap_or_else(|| {
            Error::link_lost(DisconnectReason::NetworkDisconnected, format_args!("file transfer {}", self.transfer))
        })
    }

    /// Tells the peer, in the background (the transfer is over; a dead session has nobody to tell).
    fn post(&self, msg: FileMsg) {
        let node = self.node.clone();
        let binding = self.binding;
        tokio::spawn(async move {
            if let Ok(d) = node.enqueue(binding.0, binding.1, msg.lane(), msg.encode()).await
                && let Err(e) = d.await
            {
                debug!(error = %e, "a file-lane answer could not be sent");
            }
        });
    }
}

/// The sending task: waits for the answer, streams the chunks, sends the hash, waits for the verdict.
async fn run_send(ends: &Ends, mut source: FileSource, mut replies: mpsc::Receiver<Reply>, control: Control) {
    let Control { progress, mut cancel, done } = control;
    let outcome = tokio::select! {
        r = send_work(ends, &mut source, &mut replies, &progress) => r,
        () = cancelled(&mut cancel) => Err(Failure::Local(Status::Cancelled, Error::cancelled("the file transfer"))),
    };
    // The receiver hears ABORT whatever this side's reason (the status is the receiver's vocabulary).
    let tell = |_: Status, reason: String| FileMsg::Abort { id: ends.transfer, reason };
    let _ = done.send(conclude(ends, outcome, "file delivered and verified", tell));
}

/// Ends a transfer's task: logs the outcome, tells the peer of a failure on this side (the message `tell`
/// makes of its status and reason) and returns the result for the app's [`FileTransfer`].
fn conclude(
    ends: &Ends,
    outcome: Result<FileReceipt, Failure>,
    verified: &str,
    tell: impl FnOnce(Status, String) -> FileMsg,
) -> Result<FileReceipt, Error> {
    match outcome {
        Ok(receipt) => {
            info!(size = receipt.size, "{verified}");
            Ok(receipt)
        }
        Err(Failure::Local(status, e)) => {
            ends.post(tell(status, cut(e.message())));
            info!(error = %e, "file transfer failed");
            Err(e)
        }
        Err(Failure::Peer(e)) => {
            info!(error = %e, "file transfer failed");
            Err(e)
        }
    }
}

async fn send_work(
    ends: &Ends,
    source: &mut FileSource,
    replies: &mut mpsc::Receiver<Reply>,
    progress: &watch::Sender<FileProgress>,
) -> Result<FileReceipt, Failure> {
    let size = source.size;
    let from = match tokio::time::timeout(ANSWER_TIMEOUT, replies.recv()).await {
        Ok(Some(Reply::Accept(from))) if from <= size => from,
        Ok(Some(Reply::Accept(from))) => {
            let e = Error::refused(format_args!("the peer asked to resume at byte {from} of a {size}-byte file"));
            return Err(Failure::Local(Status::Violation, e));
        }
        Ok(Some(Reply::Result(status, reason))) => return Err(Failure::Peer(peer_failure(status, &reason))),
        Ok(None) => return Err(Failure::Peer(ends.ended())),
        Err(_) => {
            let e = Error::refused(format_args!("the peer did not answer the offer within {ANSWER_TIMEOUT:?}"));
            return Err(Failure::Local(Status::Cancelled, e));
        }
    };
    progress.send_replace(FileProgress::start(size, from));
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let read_error = |e: std::io::Error| Failure::Local(Status::Cancelled, Error::io("reading the file to send", &e));
    let short = |at: u64| {
        let e = Error::invalid_arg("source", format_args!("it ended after {at} of the {size} bytes announced"));
        Failure::Local(Status::Cancelled, e)
    };
    // The bytes the receiver kept: read and hashed, not sent.
    let mut at = hash_prefix(&mut source.reader, from, &mut hasher, &mut buf).await.map_err(read_error)?;
    if at < from {
        return Err(short(at));
    }
    let mut in_flight: VecDeque<(crate::driver::Delivery, u64)> = VecDeque::new();
    let mut done = from;
    while at < size {
        let want = usize::try_from(size - at).unwrap_or(CHUNK).min(CHUNK);
        let n = read_full(&mut source.reader, &mut buf[..want]).await.map_err(read_error)?;
        hasher.update(&buf[..n]);
        if n < want {
            return Err(short(at + n as u64));
        }
        let delivery = ends
            .queue(ChannelKind::File, crate::files::wire::chunk(ends.transfer, at, &buf[..n]))
            .await
            .map_err(Failure::Peer)?;
        in_flight.push_back((delivery, n as u64));
        at += n as u64;
        while in_flight.len() >= IN_FLIGHT {
            settle(ends, &mut in_flight, replies).await?;
            done = report(progress, size, from, started, done, &mut in_flight);
        }
    }
    if read_full(&mut source.reader, &mut buf[..1]).await.map_err(read_error)? > 0 {
        let e = Error::invalid_arg("source", format_args!("it holds more than the {size} bytes announced"));
        return Err(Failure::Local(Status::Cancelled, e));
    }
    while !in_flight.is_empty() {
        settle(ends, &mut in_flight, replies).await?;
        done = report(progress, size, from, started, done, &mut in_flight);
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    ends.send(&FileMsg::End { id: ends.transfer, sha256 }).await.map_err(Failure::Peer)?;
    debug!("every byte held by the peer; waiting for its verdict");
    loop {
        match tokio::time::timeout(ANSWER_TIMEOUT, replies.recv()).await {
            Ok(Some(Reply::Result(Status::Verified, _))) => {
                return Ok(FileReceipt { transfer: ends.transfer, size, resumed_from: from, sha256 });
            }
            Ok(Some(Reply::Result(status, reason))) => return Err(Failure::Peer(peer_failure(status, &reason))),
            Ok(Some(Reply::Accept(_))) => {}
            Ok(None) => return Err(Failure::Peer(ends.ended())),
            Err(_) => {
                let e = Error::refused(format_args!("the peer gave no verdict within {ANSWER_TIMEOUT:?}"));
                return Err(Failure::Local(Status::Cancelled, e));
            }
        }
    }
}

/// Waits for the oldest chunk in flight to be held by the peer, or for the receiver to end the transfer.
async fn settle(
    ends: &Ends,
    in_flight: &mut VecDeque<(crate::driver::Delivery, u64)>,
    replies: &mut mpsc::Receiver<Reply>,
) -> Result<(), Failure> {
    let Some((front, _)) = in_flight.front_mut() else { return Ok(()) };
    loop {
        tokio::select! {
            r = &mut *front => return r.map_err(|e| Failure::Peer(ends.send_error(e))),
            reply = replies.recv() => match reply {
                Some(Reply::Result(status, reason)) => return Err(Failure::Peer(peer_failure(status, &reason))),
                Some(Reply::Accept(_)) => {}
                None => return Err(Failure::Peer(ends.ended())),
            },
        }
    }
}

/// Counts the settled chunk and publishes the progress; returns the bytes done.
fn report(
    progress: &watch::Sender<FileProgress>,
    size: u64,
    from: u64,
    started: Instant,
    done: u64,
    in_flight: &mut VecDeque<(crate::driver::Delivery, u64)>,
) -> u64 {
    let len = in_flight.pop_front().map_or(0, |(_, len)| len);
    let done = done + len;
    progress.send_replace(FileProgress::at(size, from, done, started));
    done
}

/// The receiving task: hashes the kept bytes, accepts, writes what arrives in order, checks the hash.
async fn run_receive(ends: &Ends, size: u64, mut sink: FileSink, mut pieces: mpsc::Receiver<Piece>, control: Control) {
    let Control { progress, mut cancel, done } = control;
    let outcome = tokio::select! {
        r = receive_work(ends, size, &mut sink, &mut pieces, &progress) => r,
        () = cancelled(&mut cancel) => Err(Failure::Local(Status::Cancelled, Error::cancelled("the file transfer"))),
    };
    let tell = |status: Status, reason: String| FileMsg::Result { id: ends.transfer, status, reason };
    let _ = done.send(conclude(ends, outcome, "file received and verified", tell));
}

async fn receive_work(
    ends: &Ends,
    size: u64,
    sink: &mut FileSink,
    pieces: &mut mpsc::Receiver<Piece>,
    progress: &watch::Sender<FileProgress>,
) -> Result<FileReceipt, Failure> {
    let from = sink.kept;
    let mut hasher = Sha256::new();
    if let Some(kept) = sink.kept_reader.as_mut() {
        hash_kept(kept, from, &mut hasher).await.map_err(|e| Failure::Local(Status::WriteFailed, e))?;
    }
    ends.send(&FileMsg::Accept { id: ends.transfer, offset: from }).await.map_err(Failure::Peer)?;
    progress.send_replace(FileProgress::start(size, from));
    let started = Instant::now();
    let violation = |what: String| Failure::Local(Status::Violation, Error::refused(what));
    let write_error =
        |e: std::io::Error| Failure::Local(Status::WriteFailed, Error::io("writing the received file", &e));
    let mut at = from;
    loop {
        match pieces.recv().await {
            Some(Piece::Chunk { offset, data, _credit }) => {
                let len = data.len() as u64;
                if offset != at {
                    return Err(violation(format!("a chunk at byte {offset} where byte {at} was due")));
                }
                if len > size - at {
                    return Err(violation(format!("more than the {size} bytes announced")));
                }
                if data.len() < MIN_CHUNK && at + len != size {
                    return Err(violation(format!("a chunk of {len} bytes before the end (at least {MIN_CHUNK})")));
                }
                sink.writer.write_all(&data).await.map_err(write_error)?;
                hasher.update(&data);
                at += len;
                // The chunk's credit goes back now that the bytes are written: the sender may send more.
                drop(_credit);
                progress.send_replace(FileProgress::at(size, from, at, started));
            }
            Some(Piece::End(sha256)) => {
                if at != size {
                    return Err(violation(format!("the sender ended after {at} of the {size} bytes announced")));
                }
                sink.writer.flush().await.map_err(write_error)?;
                sink.writer.shutdown().await.map_err(write_error)?;
                let ours: [u8; 32] = hasher.finalize().into();
                if ours != sha256 {
                    let e = Error::refused("the bytes received do not match the sender's SHA-256")
                        .with_kind(crate::ErrorKind::Corrupted);
                    return Err(Failure::Local(Status::HashMismatch, e));
                }
                ends.post(FileMsg::Result { id: ends.transfer, status: Status::Verified, reason: String::new() });
                return Ok(FileReceipt { transfer: ends.transfer, size, resumed_from: from, sha256 });
            }
            Some(Piece::Abort(reason)) => {
                let reason = reason.escape_debug();
                return Err(Failure::Peer(Error::refused(format_args!("the sender stopped the transfer: {reason}"))));
            }
            None => return Err(Failure::Peer(ends.ended())),
        }
    }
}

/// Reads and hashes the `kept` bytes of an earlier attempt.
async fn hash_kept(reader: &mut (dyn AsyncRead + Send + Unpin), kept: u64, hasher: &mut Sha256) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK];
    let at = hash_prefix(reader, kept, hasher, &mut buf).await.map_err(|e| Error::io("reading the kept bytes", &e))?;
    if at < kept {
        return Err(Error::invalid_arg("sink", format_args!("its kept bytes end after {at} of {kept}")));
    }
    Ok(())
}

/// Reads the first `len` bytes of `reader` into `hasher`, a `buf` at a time (the bytes a receiver kept, on
/// either side of a resume); returns how many there were (fewer when the reader ended first).
async fn hash_prefix(
    reader: &mut (impl AsyncRead + Unpin + ?Sized),
    len: u64,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> std::io::Result<u64> {
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at).unwrap_or(buf.len()).min(buf.len());
        let n = read_full(reader, &mut buf[..want]).await?;
        hasher.update(&buf[..n]);
        at += n as u64;
        if n < want {
            break;
        }
    }
    Ok(at)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
async fn read_full(reader: &mut (impl AsyncRead + Unpin + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A payload arrived on session `id`'s `lane` (FILE or FILE_CONTROL), from the event loop; never blocks.
pub(super) fn on_message(
    inner: &Arc<Inner>,
    id: SessionId,
    lane: ChannelKind,
    payload: &Bytes,
    credit: Option<Arc<ReadCredit>>,
) {
    let msg = match FileMsg::decode(payload) {
        Ok(m) if m.lane() == lane => m,
        Ok(m) => {
            warn!(session = %id, ?lane, transfer = %m.id(), "dropping a file message on the wrong lane");
            return;
        }
        Err(e) => {
            warn!(session = %id, error = %e, "dropping a file-lane message");
            return;
        }
    };
    let key = (id, msg.id());
    match msg {
        FileMsg::Offer { id: transfer, size, key: resume_key, name } => {
            let refusal = {
                let mut files = lock(&inner.files);
                let open = files.offers.keys().chain(files.incoming.keys()).filter(|(s, _)| *s == id).count();
                if files.offers.contains_key(&key) || files.incoming.contains_key(&key) {
                    Some((Status::Violation, format!("transfer {transfer} is already open")))
                } else if let Err(rule) = check_name(&name) {
                    Some((Status::Violation, rule.to_owned()))
                } else if size > MAX_FILE_SIZE {
                    Some((Status::Violation, format!("{size} bytes exceed {MAX_FILE_SIZE}")))
                } else if open >= MAX_INCOMING {
                    Some((Status::Busy, format!("{MAX_INCOMING} transfers are open on this session")))
                } else {
                    let offer = FileOffer { transfer, name, size, resume_key };
                    files.offers.insert(key, offer.clone());
                    drop(files);
                    inner.registry.dispatch_received(Event::FileOffered { session_id: id, offer }, credit);
                    expire_offer(inner, key);
                    None
                }
            };
            if let Some((status, reason)) = refusal {
                debug!(session = %id, %transfer, %reason, "file offer refused");
                reply(inner, id, FileMsg::Result { id: transfer, status, reason });
            }
        }
        FileMsg::Chunk { offset, data, .. } => to_receiver(inner, key, Piece::Chunk { offset, data, _credit: credit }),
        FileMsg::End { sha256, .. } => to_receiver(inner, key, Piece::End(sha256)),
        FileMsg::Abort { reason, .. } => {
            // An offer the app has not answered yet is withdrawn.
            if lock(&inner.files).offers.remove(&key).is_none() {
                to_receiver(inner, key, Piece::Abort(reason));
            }
        }
        FileMsg::Accept { offset, .. } => to_sender(inner, key, Reply::Accept(offset)),
        FileMsg::Result { status, reason, .. } => to_sender(inner, key, Reply::Result(status, reason)),
    }
}

fn to_receiver(inner: &Arc<Inner>, key: (SessionId, TransferId), piece: Piece) {
    let mut files = lock(&inner.files);
    let Some(route) = files.incoming.get(&key) else {
        debug!(session = %key.0, transfer = %key.1, "a file-lane message for no open transfer; dropped");
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(_)) = route.tx.try_send(piece) {
        // Only a peer that sends chunks below MIN_CHUNK can fill the queue (docs/files.md §2).
        if let Some(route) = files.incoming.remove(&key) {
            let reason = format!("chunks arrive faster than they are written and smaller than {MIN_CHUNK} bytes");
            route.close(Error::refused(&reason));
            drop(files);
            reply(inner, key.0, FileMsg::Result { id: key.1, status: Status::Violation, reason });
        }
    }
}

fn to_sender(inner: &Arc<Inner>, key: (SessionId, TransferId), reply: Reply) {
    let files = lock(&inner.files);
    match files.outgoing.get(&key) {
        // A full queue means a peer repeating itself: its extra answers are dropped.
        Some(route) => drop(route.tx.try_send(reply)),
        None => debug!(session = %key.0, transfer = %key.1, "an answer for no file this side sends; dropped"),
    }
}

/// Declines the offer `key` if the app has not answered it within [`OFFER_TIMEOUT`].
fn expire_offer(inner: &Arc<Inner>, key: (SessionId, TransferId)) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        tokio::time::sleep(OFFER_TIMEOUT).await;
        let Some(inner) = weak.upgrade() else { return };
        if lock(&inner.files).offers.remove(&key).is_some() {
            debug!(session = %key.0, transfer = %key.1, "file offer not answered; declined");
            let reason = format!("the receiving app did not answer within {OFFER_TIMEOUT:?}");
            reply(&inner, key.0, FileMsg::Result { id: key.1, status: Status::Declined, reason });
        }
    });
}

/// Sends `msg` on session `id`'s file lane in the background.
fn reply(inner: &Arc<Inner>, id: SessionId, msg: FileMsg) {
    let Some(binding) = super::connected_binding(inner, id) else { return };
    let ends = Ends { node: inner.node.clone(), binding, session: id, transfer: msg.id(), why: Arc::default() };
    ends.post(msg);
}

/// Session `id` ended (`why` says how): its transfers fail with that error, its offers are forgotten.
pub(super) fn session_ended(inner: &Inner, id: SessionId, why: &Error) {
    let mut files = lock(&inner.files);
    files.offers.retain(|(s, _), _| *s != id);
    let outgoing: Vec<_> = files.outgoing.keys().filter(|(s, _)| *s == id).copied().collect();
    for key in outgoing {
        if let Some(route) = files.outgoing.remove(&key) {
            route.close(why.clone());
        }
    }
    let incoming: Vec<_> = files.incoming.keys().filter(|(s, _)| *s == id).copied().collect();
    for key in incoming {
        if let Some(route) = files.incoming.remove(&key) {
            route.close(why.clone());
        }
    }
}

/// The error a sender reports for the receiver's `status`.
fn peer_failure(status: Status, reason: &str) -> Error {
    let reason = reason.escape_debug();
    let what = match status {
        Status::Verified => "the peer reported success out of turn",
        Status::Declined => "the peer declined the file",
        Status::Cancelled => "the peer cancelled the transfer",
        Status::WriteFailed => "the peer could not write the file",
        Status::HashMismatch => "the peer received bytes that do not match their hash",
        Status::Violation => "the peer refused the transfer",
        Status::Busy => "the peer takes no more files on this session now",
    };
    let e = if reason.to_string().is_empty() {
        Error::refused(what)
    } else {
        Error::refused(format_args!("{what}: {reason}"))
    };
    if status == Status::HashMismatch { e.with_kind(crate::ErrorKind::Corrupted) } else { e }
}

fn no_offer(id: SessionId, transfer: TransferId) -> Error {
    Error::invalid_arg("transfer", format_args!("no file offer {transfer} waits on session {id}"))
        .with_kind(crate::ErrorKind::NotFound)
}

/// `s` cut to [`MAX_REASON_LEN`] bytes on a character boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
