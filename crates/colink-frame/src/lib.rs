//! colink's wire framing: turns messages into frames that fit a Bluetooth link, and frames back into
//! messages.
//!
//! - [`Fragmenter`] splits one message into frames no larger than the link [`Mtu`], for a
//!   [`LinkMode::Packet`] link (one frame per L2CAP CoC SDU) or a [`LinkMode::Stream`] link (RFCOMM, each
//!   frame length-prefixed).
//! - [`decode_packet`] and [`StreamCodec`] turn received SDUs / bytes into [`Frame`]s. Every frame carries a
//!   CRC-32C over all its bytes, so a corrupted frame is rejected, never delivered.
//! - [`Reassembler`] turns the frames of many interleaved messages on many channels back into whole
//!   [`Message`]s, within hard [`Limits`] (message size per kind, partial messages, buffered bytes, stall
//!   timeout) so a hostile peer cannot exhaust memory.
//!
//! This crate is sans-IO: no sockets, no async runtime, no clock (time is passed in as `now`), no randomness.
//! It knows nothing of sessions, acknowledgements, priorities or radios; the session engine (`colink-proto`)
//! builds those on top. The wire format is specified in `docs/protocol.md`.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use colink_frame::{decode_packet, FrameKind, Fragmenter, LinkMode, Mtu, Reassembler};
//! use std::time::Instant;
//!
//! let message = Bytes::from(vec![7u8; 1000]);
//! let mut fragmenter =
//!     Fragmenter::new(FrameKind::Data, 1, 0, message.clone(), LinkMode::Packet, Mtu::new(247).unwrap())?;
//! let mut reassembler = Reassembler::default();
//! let mut sdu = BytesMut::new();
//! let mut received = None;
//! while fragmenter.next_frame(&mut sdu).is_some() {
//!     let frame = decode_packet(sdu.split().freeze())?; // on the peer, after the link carried the SDU
//!     received = reassembler.push(Instant::now(), frame)?;
//! }
//! assert_eq!(received.unwrap().payload, message);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod checksum;
mod fragment;
mod frame;
mod reassemble;
mod stream;
pub mod varint;

pub use checksum::{crc32c, crc32c_software, hardware_available as crc_hardware_available};
pub use fragment::{FragmentError, FragmentInfo, Fragmenter};
pub use frame::{
    CRC_LEN, Frame, FrameError, FrameKind, Header, LinkMode, MIN_FRAME_LEN, Mtu, PROTOCOL_VERSION, Position,
    STREAM_PREFIX_LEN, decode_packet,
};
pub use reassemble::{Limits, Message, Reassembler, ReassemblyError, Stalled};
#[cfg(feature = "tokio-util")]
pub use stream::CodecError;
pub use stream::StreamCodec;
