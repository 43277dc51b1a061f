//! The `Link` trait and how links end.

use bytes::Bytes;

use crate::{BoxFuture, LinkMode, LinkParams, Mtu, PeerAddress};

/// One open channel to a peer: L2CAP CoC (packet or stream) or RFCOMM (stream).
///
/// Methods take `&self`, so a single driver task can poll `send` and `recv` concurrently (e.g. in one
/// `select!`), as with bluer's `SeqPacket`.
///
/// - **Packet mode**: one [`send`](Link::send) carries one SDU of at most [`mtu`](Link::mtu) bytes (larger →
///   [`LinkError::SduTooLarge`]); one [`recv`](Link::recv) returns one whole SDU.
/// - **Stream mode**: `send` takes any length (the backend chunks it); `recv` returns whatever bytes arrived
///   (at least one byte); boundaries are not kept.
///
/// Cancel safety: `recv` is cancel-safe (dropping it loses no data). In packet mode `send` is cancel-safe too:
/// the SDU is queued whole or not at all. In stream mode a cancelled `send` may have queued a prefix of the data.
///
/// Dropping a link closes it like [`close`](Link::close). Once closed, `send`/`recv` fail with
/// [`LinkError::Closed`] and the [`CloseReason`]; data that already arrived is still returned by `recv` first.
pub trait Link: Send + Sync + 'static {
    /// Packet or stream.
    fn mode(&self) -> LinkMode;

    /// The negotiated send MTU (largest SDU in packet mode).
    fn mtu(&self) -> Mtu;

    /// The peer's address.
    fn peer(&self) -> PeerAddress;

    /// The negotiated parameters.
    fn params(&self) -> LinkParams;

    /// Sends one SDU (packet mode) or bytes (stream mode). Waits while flow control stalls the link; resolves
    /// when the data is queued for the air, not when the peer read it.
    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>>;

    /// Receives one SDU (packet mode) or some bytes (stream mode). Cancel-safe.
    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>>;

    /// How many bytes handed to [`send`](Link::send) the transport still holds and has not yet started to put
    /// on the air, if the backend can tell at once (`None`: it cannot). Data already on the air (or handed to the
    /// controller) is not counted. Backends that only see kernel memory report that, which over-counts.
    fn queued_bytes(&self) -> Option<usize> {
        None
    }

    /// Resolves once the transport's queue has drained to at most `max` bytes not yet on the air (see
    /// [`queued_bytes`](Link::queued_bytes)), or with [`LinkError::Closed`] once the link is closed.
    ///
    /// A sender that waits for this before each send keeps the transport's queue shallow, so data it decides to
    /// send next (say, a high-priority message) does not wait behind a send buffer full of earlier data. A
    /// backend that cannot tell resolves at once (the transport then queues as deep as its send buffer allows).
    /// Cancel-safe.
    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        let _ = max;
        Box::pin(async { Ok(()) })
    }

    /// Closes the link (the peer sees [`CloseReason::PeerClose`] after the data already sent).
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Resolves when the link has closed, with the reason. Cancel-safe.
    fn closed(&self) -> BoxFuture<'_, CloseReason>;
}

/// Why a link closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed it.
    #[error("closed locally")]
    LocalClose,
    /// The peer closed it (HCI "remote user terminated").
    #[error("closed by the peer")]
    PeerClose,
    /// The radio link was lost: out of range or interference for longer than the supervision timeout (HCI 0x08).
    #[error("supervision timeout (out of range)")]
    SupervisionTimeout,
    /// The local adapter was powered off or removed.
    #[error("local adapter powered off")]
    AdapterOff,
    /// The peer's adapter was powered off (HCI "remote device terminated due to power off").
    #[error("peer adapter powered off")]
    PeerPowerOff,
    /// The stack tore the link down while both devices were powered and in range (e.g. an LL/LMP response
    /// timeout, a controller or host error).
    #[error("link reset by the stack")]
    Reset,
    /// Something else, as reported by the backend.
    #[error("link closed: {0}")]
    Other(String),
}

/// Why a link operation failed.
///
/// Not `colink_proto::LinkError`, which is a session link ending for good (it outlives failed transports).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link is closed.
    #[error("link closed: {0}")]
    Closed(CloseReason),
    /// A packet-mode SDU exceeds the MTU.
    #[error("SDU of {len} bytes exceeds the link MTU {mtu}")]
    SduTooLarge {
        /// The SDU's length.
        len: usize,
        /// The link's MTU.
        mtu: u16,
    },
    /// A backend-specific failure.
    #[error("backend error: {0}")]
    Backend(String),
}
