//! colink-ble links (`dyn colink_ble::Link`) seen through the interfaces the transfer protocol of `crate::echo`
//! speaks, so the `ble::` tests run the very same exchange as the `raw::` sockets they are compared with.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use colink_ble::{BoxFuture, Link, LinkError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::echo::PacketIo;

fn io_error(e: LinkError) -> io::Error {
    match e {
        LinkError::Closed(reason) => io::Error::new(io::ErrorKind::ConnectionAborted, format!("link closed: {reason}")),
        other => io::Error::other(other.to_string()),
    }
}

/// A packet-mode colink-ble link: one `send_sdu` = one `Link::send`, one `recv_sdu` = one `Link::recv`.
pub(crate) struct BlePacket(pub(crate) Arc<dyn Link>);

impl PacketIo for BlePacket {
    async fn send_sdu(&self, sdu: &[u8]) -> io::Result<()> {
        self.0.send(Bytes::copy_from_slice(sdu)).await.map_err(io_error)
    }

    async fn recv_sdu(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.recv().await {
            Ok(sdu) => {
                let cap = buf.len();
                let dst = buf.get_mut(..sdu.len()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("SDU of {} bytes > buffer {cap}", sdu.len()))
                })?;
                dst.copy_from_slice(&sdu);
                Ok(sdu.len())
            }
            // The peer closed after its last SDU: the protocol reads that as end of data.
            Err(LinkError::Closed(colink_ble::CloseReason::PeerClose)) => Ok(0),
            Err(e) => Err(io_error(e)),
        }
    }
}

/// A stream-mode colink-ble link as tokio `AsyncRead + AsyncWrite`.
///
/// Reads keep the unread rest of the last `Link::recv`. A write passes the caller's bytes to one `Link::send`
/// and reports them written only when that send resolved (the caller retries with the same bytes meanwhile, as
/// `AsyncWrite` requires), so the link's flow control reaches the writer.
pub(crate) struct BleStream {
    link: Arc<dyn Link>,
    leftover: Bytes,
    reading: Option<BoxFuture<'static, Result<Bytes, LinkError>>>,
    writing: Option<(BoxFuture<'static, Result<(), LinkError>>, usize)>,
}

impl BleStream {
    pub(crate) fn new(link: Arc<dyn Link>) -> Self {
        Self { link, leftover: Bytes::new(), reading: None, writing: None }
    }
}

impl AsyncRead for BleStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.leftover.is_empty() {
            let fut = this.reading.get_or_insert_with(|| {
                let link = this.link.clone();
                Box::pin(async move { link.recv().await })
            });
            let got = ready!(fut.as_mut().poll(cx));
            this.reading = None;
            match got {
                Ok(bytes) => this.leftover = bytes,
                // EOF for a peer that closed in order.
                Err(LinkError::Closed(colink_ble::CloseReason::PeerClose)) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BleStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let (fut, len) = this.writing.get_or_insert_with(|| {
            let link = this.link.clone();
            let bytes = Bytes::copy_from_slice(data);
            (Box::pin(async move { link.send(bytes).await }), data.len())
        });
        let len = *len;
        let sent = ready!(fut.as_mut().poll(cx));
        this.writing = None;
        Poll::Ready(sent.map(|()| len).map_err(io_error))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write completed its `Link::send` before it was reported written.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
