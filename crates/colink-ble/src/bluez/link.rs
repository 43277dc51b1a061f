//! [`BluezLink`]: a colink [`Link`] over a kernel socket (L2CAP LE CoC SeqPacket, L2CAP stream or RFCOMM), the
//! mapping of socket errors to [`CloseReason`]s, and the pure sizing rules the kernel quirks call for.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluer::l2cap::SeqPacket;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::{BoxFuture, CloseReason, Link, LinkError, LinkMode, LinkParams, Mtu, PeerAddress};

/// Largest write handed to an RFCOMM socket at once.
///
/// Quirk (vm-rig.md, "RFCOMM's default SO_SNDBUF is 50800"): a single 32 KiB write delivered nothing in 8 s and a
/// 10 MB write hung, while writes of ≤ 4 KiB flow. Stream sends are cut into pieces of at most this size.
pub const RFCOMM_WRITE_CHUNK: usize = 4096;

/// How often [`Link::drain_to`] looks at the socket's send queue: the kernel signals writability only once half
/// of the send buffer is free, so a shallower target is polled.
const QUEUE_POLL: Duration = Duration::from_millis(1);

/// How often [`Link::closed`] looks at the socket state when nothing else wakes it.
const CLOSED_POLL: Duration = Duration::from_millis(200);
/// How long [`Link::closed`] leaves a concurrent `recv`/`send` to record the errno-derived reason first.
const CLOSED_GRACE: Duration = Duration::from_millis(500);

/// The kernel-side I/O of a link.
pub(crate) enum LinkIo {
    /// L2CAP CoC SeqPacket: one SDU per send/recv.
    Packet {
        /// The socket.
        sock: SeqPacket,
        /// Receive scratch buffer of the receive MTU (one recv at a time).
        buf: tokio::sync::Mutex<Vec<u8>>,
    },
    /// L2CAP stream socket (LE CoC or BR/EDR basic mode).
    L2capStream {
        /// Read half.
        read: tokio::sync::Mutex<bluer::l2cap::stream::OwnedReadHalf>,
        /// Write half.
        write: tokio::sync::Mutex<bluer::l2cap::stream::OwnedWriteHalf>,
    },
    /// RFCOMM stream socket.
    Rfcomm {
        /// Read half.
        read: tokio::sync::Mutex<bluer::rfcomm::stream::OwnedReadHalf>,
        /// Write half.
        write: tokio::sync::Mutex<bluer::rfcomm::stream::OwnedWriteHalf>,
    },
}

impl LinkIo {
    /// Whether the kernel still considers the socket connected (getpeername succeeds while connecting or
    /// connected and fails with ENOTCONN once the channel is closed).
    fn kernel_connected(&self) -> bool {
        match self {
            Self::Packet { sock, .. } => sock.peer_addr().is_ok(),
            Self::L2capStream { read, .. } => read.try_lock().map_or(true, |r| r.as_ref().peer_addr().is_ok()),
            Self::Rfcomm { read, .. } => read.try_lock().map_or(true, |r| r.as_ref().peer_addr().is_ok()),
        }
    }

    /// Free send-buffer space (TIOCOUTQ: SO_SNDBUF minus the kernel memory charged for queued data). `None` while
    /// a stream send holds the write half, or when the ioctl fails.
    fn send_buffer_free(&self) -> Option<usize> {
        let free = match self {
            Self::Packet { sock, .. } => sock.as_ref().output_buffer(),
            Self::L2capStream { write, .. } => write.try_lock().ok()?.as_ref().as_ref().output_buffer(),
            Self::Rfcomm { write, .. } => write.try_lock().ok()?.as_ref().as_ref().output_buffer(),
        };
        free.ok().map(|n| n as usize)
    }
}

/// What the kernel charged a socket's send buffer for the latest send, so that [`Link::drain_to`] can tell the
/// SDU that is on its way to the controller from data that still waits behind it.
///
/// TIOCOUTQ counts every byte of kernel memory (skb truesize, headers included) held for data the controller has
/// not taken yet, the SDU being transmitted included; colink's `drain_to(max)` means "at most `max` payload
/// bytes *not yet on the air*". Waiting for the kernel's figure to reach `max` left the radio idle between frames
/// (the next frame was handed over only once the previous one had left completely). The latest send's charge
/// stands for the SDU on the air; `max` payload bytes are converted at the same charge per byte.
#[derive(Debug, Default)]
struct InFlight {
    /// Kernel memory the latest send added to the queue (0: unknown).
    charge: AtomicUsize,
    /// Payload bytes of the latest send.
    len: AtomicUsize,
}

impl InFlight {
    fn record(&self, len: usize, before: Option<usize>, after: Option<usize>) {
        let charge = match (before, after) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            _ => 0,
        };
        self.charge.store(charge, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }

    /// Kernel memory that may stay queued when at most `max` payload bytes wait behind the SDU on the air.
    fn allowance(&self, max: usize) -> usize {
        let (charge, len) = (self.charge.load(Ordering::Relaxed), self.len.load(Ordering::Relaxed));
        allowance(charge, len, max)
    }
}

/// The pure rule behind [`InFlight::allowance`]: one SDU's charge plus `max` payload bytes at the same charge
/// per byte (payload bytes when the charge is unknown).
fn allowance(charge: usize, len: usize, max: usize) -> usize {
    let per_byte_max = if charge > 0 && len > 0 { max.saturating_mul(charge) / len } else { max };
    charge.saturating_add(per_byte_max)
}

/// Kernel memory charged for queued data, from a socket's send buffer size and the free space TIOCOUTQ reports.
/// `None` when the buffer size is unknown (0).
pub(crate) fn queued_from_outq(sndbuf: usize, free: usize) -> Option<usize> {
    (sndbuf > 0).then(|| sndbuf.saturating_sub(free))
}

/// Shared close state of one link: the first observed reason wins.
#[derive(Default)]
pub(crate) struct CloseState {
    reason: Mutex<Option<CloseReason>>,
    notify: Notify,
}

impl CloseState {
    fn get(&self) -> Option<CloseReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Records `reason` unless one is already recorded; returns the recorded one.
    fn set(&self, reason: CloseReason) -> CloseReason {
        let r = match self.reason.lock() {
            Ok(mut slot) => slot.get_or_insert(reason).clone(),
            Err(_) => reason,
        };
        self.notify.notify_waiters();
        r
    }
}

/// A colink link on a BlueZ (kernel) socket. Created by [`BluezAdapter`](super::BluezAdapter)'s `connect` and by
/// its listeners.
pub struct BluezLink {
    io: LinkIo,
    mode: LinkMode,
    mtu: Mtu,
    write_chunk: usize,
    /// SO_SNDBUF as measured on the fresh socket (0: unknown).
    sndbuf: usize,
    /// What the kernel charged the send buffer for the latest send, and that send's length (see
    /// [`InFlight`]).
    in_flight: InFlight,
    peer: PeerAddress,
    params: LinkParams,
    adapter: bluer::Adapter,
    state: Arc<CloseState>,
    span: tracing::Span,
}

impl std::fmt::Debug for BluezLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BluezLink")
            .field("mode", &self.mode)
            .field("mtu", &self.mtu)
            .field("peer", &self.peer)
            .field("adapter", &self.adapter.name())
            .finish_non_exhaustive()
    }
}

impl BluezLink {
    pub(crate) fn new(
        io: LinkIo,
        mtu: Mtu,
        write_chunk: usize,
        sndbuf: usize,
        peer: PeerAddress,
        params: LinkParams,
        adapter: bluer::Adapter,
    ) -> Self {
        let mode = match io {
            LinkIo::Packet { .. } => LinkMode::Packet,
            _ => LinkMode::Stream,
        };
        let span = tracing::debug_span!("bluez_link", adapter = adapter.name(), peer = %peer.address, ?mode);
        Self {
            io,
            mode,
            mtu,
            write_chunk: write_chunk.max(1),
            sndbuf,
            in_flight: InFlight::default(),
            peer,
            params: LinkParams { mtu, ..params },
            adapter,
            state: Arc::default(),
            span,
        }
    }

    /// Kernel memory charged for queued data, from a TIOCOUTQ result.
    fn kernel_queued(&self, free: io::Result<u32>) -> Option<usize> {
        free.ok().and_then(|free| queued_from_outq(self.sndbuf, usize::try_from(free).ok()?))
    }

    /// The largest piece a stream-mode `send` hands to the kernel at once.
    pub fn write_chunk(&self) -> usize {
        self.write_chunk
    }

    /// Turns a socket error (or EOF: `None`) into the link's close reason, refined with the adapter's power
    /// state over D-Bus, and records it.
    async fn closed_with(&self, err: Option<&io::Error>) -> CloseReason {
        if let Some(r) = self.state.get() {
            return r;
        }
        let powered = self.adapter.is_powered().await.ok();
        let reason = close_reason(err, powered);
        tracing::debug!(parent: &self.span, ?err, ?powered, %reason, "link closed");
        self.state.set(reason)
    }

    async fn send_packet(&self, sock: &SeqPacket, data: &[u8]) -> Result<(), LinkError> {
        if let Some(r) = self.state.get() {
            return Err(LinkError::Closed(r));
        }
        if data.len() > self.mtu.bytes() {
            return Err(LinkError::SduTooLarge { len: data.len(), mtu: self.mtu.get() });
        }
        match sock.send(data).await {
            Ok(n) if n == data.len() => Ok(()),
            Ok(n) => Err(LinkError::Backend(format!("kernel took {n} of {} SDU bytes", data.len()))),
            Err(e) if is_sdu_size_error(&e) => Err(LinkError::SduTooLarge { len: data.len(), mtu: self.mtu.get() }),
            Err(e) => Err(LinkError::Closed(self.closed_with(Some(&e)).await)),
        }
    }

    /// Writes `data` in pieces of at most `write_chunk`, recording what the kernel charged for it (`free`: the
    /// socket's TIOCOUTQ).
    async fn send_stream<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        data: &[u8],
        free: impl Fn(&W) -> io::Result<u32>,
    ) -> Result<(), LinkError> {
        let before = self.kernel_queued(free(w));
        for piece in chunks(data, self.write_chunk) {
            if let Some(r) = self.state.get() {
                return Err(LinkError::Closed(r));
            }
            if let Err(e) = w.write_all(piece).await {
                return Err(LinkError::Closed(self.closed_with(Some(&e)).await));
            }
        }
        self.in_flight.record(data.len(), before, self.kernel_queued(free(w)));
        Ok(())
    }

    /// Resolves once a close reason is recorded (e.g. by [`Link::close`]).
    async fn reason_recorded(&self) -> CloseReason {
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.state.get() {
                return r;
            }
            notified.await;
        }
    }

    async fn recv_stream<R: tokio::io::AsyncRead + Unpin>(&self, r: &mut R) -> Result<Bytes, LinkError> {
        let mut buf = vec![0u8; 16 * 1024];
        // `close()` cannot shut a stream socket's read side down (bluer's read half has no shutdown), so a pending
        // read also ends when a close is recorded. Both branches are cancel-safe; data already readable wins.
        let read = tokio::select! {
            biased;
            read = r.read(&mut buf) => read,
            reason = self.reason_recorded() => return Err(LinkError::Closed(reason)),
        };
        match read {
            Ok(0) => Err(LinkError::Closed(self.closed_with(None).await)),
            Ok(n) => {
                buf.truncate(n);
                Ok(Bytes::from(buf))
            }
            Err(e) => Err(LinkError::Closed(self.closed_with(Some(&e)).await)),
        }
    }
}

impl Link for BluezLink {
    fn mode(&self) -> LinkMode {
        self.mode
    }

    fn mtu(&self) -> Mtu {
        self.mtu
    }

    fn peer(&self) -> PeerAddress {
        self.peer
    }

    fn params(&self) -> LinkParams {
        self.params
    }

    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(
            async move {
                match &self.io {
                    LinkIo::Packet { sock, .. } => {
                        let before = self.kernel_queued(sock.as_ref().output_buffer());
                        self.send_packet(sock, &data).await?;
                        let after = self.kernel_queued(sock.as_ref().output_buffer());
                        self.in_flight.record(data.len(), before, after);
                        Ok(())
                    }
                    LinkIo::L2capStream { write, .. } => {
                        self.send_stream(&mut *write.lock().await, &data, |w| w.as_ref().as_ref().output_buffer()).await
                    }
                    LinkIo::Rfcomm { write, .. } => {
                        self.send_stream(&mut *write.lock().await, &data, |w| w.as_ref().as_ref().output_buffer()).await
                    }
                }
            }
            .instrument(self.span.clone()),
        )
    }

    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>> {
        // Cancel safety: every await point below either has not read anything yet (lock, readiness) or completes
        // in the same poll as the read system call, so dropping the future loses no data.
        Box::pin(
            async move {
                match &self.io {
                    LinkIo::Packet { sock, buf } => {
                        let mut buf = buf.lock().await;
                        match sock.recv(&mut buf).await {
                            // A zero-length read on a SeqPacket socket is the kernel's end of file; colink never
                            // sends empty SDUs.
                            Ok(0) => Err(LinkError::Closed(self.closed_with(None).await)),
                            Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                            Err(e) => Err(LinkError::Closed(self.closed_with(Some(&e)).await)),
                        }
                    }
                    LinkIo::L2capStream { read, .. } => self.recv_stream(&mut *read.lock().await).await,
                    LinkIo::Rfcomm { read, .. } => self.recv_stream(&mut *read.lock().await).await,
                }
            }
            .instrument(self.span.clone()),
        )
    }

    /// Kernel memory charged for data not yet handed to the controller (an upper bound on its bytes: the kernel
    /// charges each PDU's whole buffer). `None` while a stream send is in progress.
    fn queued_bytes(&self) -> Option<usize> {
        queued_from_outq(self.sndbuf, self.io.send_buffer_free()?)
    }

    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(
            async move {
                if self.sndbuf == 0 {
                    return Ok(()); // cannot tell: behave as before
                }
                loop {
                    if let Some(r) = self.state.get() {
                        return Err(LinkError::Closed(r));
                    }
                    let free = match &self.io {
                        LinkIo::Packet { .. } => self.io.send_buffer_free(),
                        LinkIo::L2capStream { write, .. } => {
                            write.lock().await.as_ref().as_ref().output_buffer().ok().map(|n| n as usize)
                        }
                        LinkIo::Rfcomm { write, .. } => {
                            write.lock().await.as_ref().as_ref().output_buffer().ok().map(|n| n as usize)
                        }
                    };
                    // The kernel charges what it holds until the controller took it, the SDU on the air included:
                    // allow that one SDU's charge on top of `max`, so the next frame waits while this one is sent.
                    match free.and_then(|free| queued_from_outq(self.sndbuf, free)) {
                        Some(queued) if queued > self.in_flight.allowance(max) => tokio::time::sleep(QUEUE_POLL).await,
                        _ => return Ok(()),
                    }
                }
            }
            .instrument(self.span.clone()),
        )
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.state.set(CloseReason::LocalClose);
        match &self.io {
            LinkIo::Packet { sock, .. } => {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
            // Stream halves shut down their direction when dropped; the socket closes with the link. Shutting
            // the write side here would need the lock held by a pending send: wake it instead.
            LinkIo::L2capStream { write, .. } => {
                if let Ok(mut w) = write.try_lock() {
                    let _ = futures::FutureExt::now_or_never(w.shutdown());
                }
            }
            LinkIo::Rfcomm { write, .. } => {
                if let Ok(mut w) = write.try_lock() {
                    let _ = futures::FutureExt::now_or_never(w.shutdown());
                }
            }
        }
        Box::pin(async {})
    }

    fn closed(&self) -> BoxFuture<'_, CloseReason> {
        Box::pin(async move {
            loop {
                let notified = self.state.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = self.state.get() {
                    return r;
                }
                if !self.io.kernel_connected() {
                    // The kernel closed the channel. Only a read returns the socket error (and consumes it): give
                    // a pending recv/send the chance to record the precise reason, else decide from D-Bus state.
                    if tokio::time::timeout(CLOSED_GRACE, notified.as_mut()).await.is_err() {
                        return self.closed_with(None).await;
                    }
                    continue;
                }
                let _ = tokio::time::timeout(CLOSED_POLL, notified).await;
            }
        })
    }
}

impl Drop for BluezLink {
    fn drop(&mut self) {
        // Dropping the socket closes it (the stream halves shut down on drop); record why for any clone of the
        // state that outlives us.
        self.state.set(CloseReason::LocalClose);
    }
}

/// Maps a socket error (`None`: orderly end of file) and the local adapter's power state (`None`: unknown) to
/// why the link closed.
///
/// The kernel turns the HCI disconnect reason into an errno (`bt_to_errno`): "remote user terminated" (0x13),
/// "remote low resources" and "remote power off" (0x15) all become ECONNRESET, "connection timeout" (0x08) and
/// "LL response timeout" become ETIMEDOUT, "local host terminated" (0x16) becomes ECONNABORTED. A peer's power-off
/// is therefore indistinguishable from a peer close on Linux and is reported as [`CloseReason::PeerClose`].
pub(crate) fn close_reason(err: Option<&io::Error>, adapter_powered: Option<bool>) -> CloseReason {
    if adapter_powered == Some(false) {
        return CloseReason::AdapterOff;
    }
    let Some(err) = err else { return CloseReason::PeerClose };
    match err.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => {
            CloseReason::PeerClose
        }
        io::ErrorKind::TimedOut => CloseReason::SupervisionTimeout,
        io::ErrorKind::ConnectionAborted => CloseReason::Reset,
        io::ErrorKind::NetworkDown => CloseReason::AdapterOff,
        io::ErrorKind::PermissionDenied => CloseReason::Other(format!("security requirement not met: {err}")),
        _ => match err.raw_os_error() {
            Some(ENODEV) => CloseReason::AdapterOff,
            Some(EHOSTDOWN) => CloseReason::Reset,
            _ => CloseReason::Other(err.to_string()),
        },
    }
}

/// Linux errno values std has no `ErrorKind` for (generic Linux ABI, as on x86 and arm).
const ENODEV: i32 = 19;
const EMSGSIZE: i32 = 90;
const EHOSTDOWN: i32 = 112;

fn is_sdu_size_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(EMSGSIZE)
}

/// `data` in pieces of at most `max` bytes (at least one byte each; nothing for empty data).
pub(crate) fn chunks(data: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    data.chunks(max.max(1))
}

/// Kernel memory charged to the socket for one L2CAP PDU carrying `payload` bytes (its `skb->truesize`).
///
/// The kernel allocates one skb per PDU of `payload + 4` (L2CAP header) `+ 2` (SDU length, first PDU; counted
/// for all) `+ 8` (BT_SKB_RESERVE) bytes; the buffer and its 320-byte shared info come from a power-of-two slab,
/// and the 256-byte (cache-aligned) `sk_buff` is added.
pub(crate) fn pdu_truesize(payload: usize) -> usize {
    let data = (payload + 4 + 2 + 8).div_ceil(64) * 64 + 320;
    data.next_power_of_two() + 256
}

/// The smallest LE CoC MPS (the peer's MPS is not visible to user space, so colink assumes the worst).
pub(crate) const LE_MIN_MPS: usize = 23;

/// The largest SDU whose PDUs fit in half of a socket send buffer of `sndbuf` bytes, with PDUs of `mps` bytes.
///
/// Quirk (vm-rig.md, "the kernel segments a whole SDU before sending"): every PDU of an SDU is allocated against
/// SO_SNDBUF before anything is sent; if they do not all fit, nothing is sent and the send fails with EAGAIN (after
/// L2CAP's 40 s send timeout on a blocking socket; on a non-blocking one it never completes). Half the buffer
/// is used because the socket only reports POLLOUT while less than half of it is in use.
pub(crate) fn sdu_budget(sndbuf: usize, mps: usize) -> usize {
    let mps = mps.max(1);
    let pdus = (sndbuf / 2) / pdu_truesize(mps);
    pdus.saturating_mul(mps)
}

/// The MTU of a packet link: the smaller of the two directions' MTUs (largest both sides allow), capped by what
/// fits the send buffer. `None` when even the LE minimum does not fit.
pub(crate) fn packet_mtu(send_mtu: usize, recv_mtu: usize, sndbuf: usize) -> Option<Mtu> {
    let mtu = send_mtu.min(recv_mtu).min(sdu_budget(sndbuf, LE_MIN_MPS)).min(usize::from(u16::MAX));
    Mtu::new(u16::try_from(mtu).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> io::Error {
        io::Error::from_raw_os_error(n)
    }

    #[test]
    fn drain_allowance_leaves_the_sdu_on_the_air() {
        // A 4096-byte SDU the kernel charged 20 KiB for: drain_to(0) lets that one SDU stay queued (it is being
        // sent), and not a byte more.
        assert_eq!(allowance(20 * 1024, 4096, 0), 20 * 1024);
        // drain_to(4096) also lets one more SDU's worth wait, at the kernel's charge per byte.
        assert_eq!(allowance(20 * 1024, 4096, 4096), 40 * 1024);
        // Nothing known about the charge (the SDU left before it could be measured, or no TIOCOUTQ): the
        // payload bound as it is, the behaviour of a backend that counts payload bytes.
        assert_eq!(allowance(0, 4096, 0), 0);
        assert_eq!(allowance(0, 0, 1000), 1000);
        assert_eq!(allowance(usize::MAX, 1, usize::MAX), usize::MAX);
        let f = InFlight::default();
        f.record(4096, Some(1000), Some(21_480));
        assert_eq!(f.allowance(0), 20_480);
        f.record(4096, Some(5000), Some(100)); // drained faster than it was measured
        assert_eq!(f.allowance(0), 0);
        f.record(4096, None, Some(100));
        assert_eq!(f.allowance(0), 0);
    }

    #[test]
    fn errno_maps_to_close_reason() {
        // ECONNRESET 104, ETIMEDOUT 110, ECONNABORTED 103, EPIPE 32, ENOTCONN 107, ENETDOWN 100, EACCES 13
        assert_eq!(close_reason(Some(&errno(104)), Some(true)), CloseReason::PeerClose);
        assert_eq!(close_reason(Some(&errno(32)), Some(true)), CloseReason::PeerClose);
        assert_eq!(close_reason(Some(&errno(107)), Some(true)), CloseReason::PeerClose);
        assert_eq!(close_reason(None, Some(true)), CloseReason::PeerClose);
        assert_eq!(close_reason(Some(&errno(110)), Some(true)), CloseReason::SupervisionTimeout);
        assert_eq!(close_reason(Some(&errno(103)), None), CloseReason::Reset);
        assert_eq!(close_reason(Some(&errno(100)), None), CloseReason::AdapterOff);
        assert_eq!(close_reason(Some(&errno(ENODEV)), None), CloseReason::AdapterOff);
        assert!(matches!(close_reason(Some(&errno(13)), None), CloseReason::Other(s) if s.contains("security")));
        assert!(matches!(close_reason(Some(&errno(5)), None), CloseReason::Other(_)));
    }

    #[test]
    fn powered_off_adapter_wins_over_errno() {
        // Powering the local adapter off makes the kernel report "local host terminated" / ECONNRESET.
        for e in [None, Some(errno(103)), Some(errno(104)), Some(errno(110))] {
            assert_eq!(close_reason(e.as_ref(), Some(false)), CloseReason::AdapterOff);
        }
    }

    #[test]
    fn chunks_cover_data_within_limit() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let pieces: Vec<&[u8]> = chunks(&data, RFCOMM_WRITE_CHUNK).collect();
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= RFCOMM_WRITE_CHUNK));
        assert_eq!(pieces.concat(), data);
        assert_eq!(chunks(&[], 4).count(), 0);
        assert_eq!(chunks(&[1, 2, 3], 0).count(), 3, "a zero limit still makes progress");
    }

    #[test]
    fn queued_is_the_charged_part_of_the_send_buffer() {
        assert_eq!(queued_from_outq(212_992, 212_992), Some(0));
        assert_eq!(queued_from_outq(212_992, 210_432), Some(2560));
        // TIOCOUTQ clamps at 0 when the kernel over-commits; so does the reading.
        assert_eq!(queued_from_outq(50_800, 0), Some(50_800));
        assert_eq!(queued_from_outq(0, 100), None, "unknown buffer size");
    }

    #[test]
    fn truesize_model_matches_kernel_slabs() {
        // MPS 188 (the rig's emulated controller): 202 bytes -> 256 + 320 = 576 -> 1 KiB slab + sk_buff.
        assert_eq!(pdu_truesize(188), 1280);
        assert_eq!(pdu_truesize(247), 1280);
        assert_eq!(pdu_truesize(23), 768);
    }

    #[test]
    fn sdu_budget_fits_half_the_send_buffer() {
        for (sndbuf, mps) in [(212_992, 23), (212_992, 247), (4 << 20, 188), (50_800, 23)] {
            let sdu = sdu_budget(sndbuf, mps);
            let pdus = sdu.div_ceil(mps);
            assert!(pdus * pdu_truesize(mps) <= sndbuf / 2, "{sndbuf} {mps}");
            // and one more PDU would not fit
            assert!((pdus + 1) * pdu_truesize(mps) > sndbuf / 2, "{sndbuf} {mps}");
        }
        assert_eq!(sdu_budget(0, 23), 0);
    }

    #[test]
    fn packet_mtu_is_min_of_both_sides_and_buffer() {
        let big = 4 << 20;
        assert_eq!(packet_mtu(65535, 65535, 64 << 20).map(Mtu::get), Some(65535));
        assert_eq!(packet_mtu(672, 65535, big).map(Mtu::get), Some(672));
        assert_eq!(packet_mtu(65535, 2048, big).map(Mtu::get), Some(2048));
        // Linux's default 208 KiB send buffer: the worst-case MPS caps the SDU.
        let capped = packet_mtu(65535, 65535, 212_992).map(Mtu::get);
        assert_eq!(capped, Some(u16::try_from(sdu_budget(212_992, LE_MIN_MPS)).unwrap()));
        assert_eq!(packet_mtu(65535, 65535, 1000), None);
        assert_eq!(packet_mtu(22, 65535, big), None);
    }
}
