//! Reading who calls on a freshly accepted transport, before it is attached to a [`Connection`].
//!
//! A responder that accepts a transport does not know which device dialled until the peer's HELLO arrives,
//! yet it must attach the transport to that device's [`Connection`] (to resume its sessions) or to a new one.
//! [`Identify`] decodes the handshake frames of the first received data without consuming it: the driver keeps
//! what it fed and replays it into the chosen connection's [`handle_input`](Connection::handle_input).
//!
//! [`Connection`]: super::Connection

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use colink_frame::{FrameKind, LinkMode, Reassembler, StreamCodec, decode_packet};

use super::wire::{CH_HANDSHAKE, HandshakeMsg};

/// The most bytes [`Identify`] reads before giving up: a HELLO is far smaller, so a peer that sends more
/// without one is not a colink peer.
pub const IDENTIFY_LIMIT: usize = 64 * 1024;

/// What the first HELLO on a transport says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallingDevice {
    /// The calling device's identity, as announced in its HELLO.
    pub device_id: String,
    /// Whether the caller asks to resume an earlier link (its HELLO carries a resume token).
    pub resuming: bool,
}

/// Why a transport could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// The first handshake message is not a well-formed HELLO.
    #[error("the peer's first handshake message is not a valid HELLO")]
    NotHello,
    /// The stream-mode byte stream is corrupt.
    #[error("corrupt byte stream before the HELLO")]
    Corrupt,
    /// More than [`IDENTIFY_LIMIT`] bytes arrived without a HELLO.
    #[error("no HELLO in the first {IDENTIFY_LIMIT} bytes")]
    TooMuch,
}

/// Incrementally decodes the HELLO at the start of an accepted transport.
#[derive(Debug)]
pub struct Identify {
    mode: LinkMode,
    codec: StreamCodec,
    buf: BytesMut,
    reassembler: Reassembler,
    seen: usize,
    /// Why it gave up, once it did: every later push says so again.
    failed: Option<IdentifyError>,
}

impl Identify {
    /// Reads a transport of `mode`.
    pub fn new(mode: LinkMode) -> Self {
        Self {
            mode,
            codec: StreamCodec::default(),
            buf: BytesMut::new(),
            reassembler: Reassembler::default(),
            seen: 0,
            failed: None,
        }
    }

    /// Feeds received data (one SDU in packet mode, any chunk in stream mode). Returns the caller once its HELLO
    /// is complete, `Ok(None)` while more data is needed. Undecodable packets are skipped (the connection's own
    /// retransmission of the HELLO recovers them), as are frames other than handshake frames. An error is final:
    /// every later push returns it again without reading (found by the `identify` fuzz target).
    pub fn push(&mut self, now: Instant, data: &Bytes) -> Result<Option<CallingDevice>, IdentifyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.read(now, data);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn read(&mut self, now: Instant, data: &Bytes) -> Result<Option<CallingDevice>, IdentifyError> {
        self.seen += data.len();
        if self.seen > IDENTIFY_LIMIT {
            return Err(IdentifyError::TooMuch);
        }
        let mut frames = Vec::new();
        match self.mode {
            LinkMode::Stream => {
                self.buf.extend_from_slice(data);
                loop {
                    match self.codec.decode(&mut self.buf) {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(_) => return Err(IdentifyError::Corrupt),
                    }
                }
            }
            _ => frames.extend(decode_packet(data.clone()).ok()),
        }
        for frame in frames {
            if frame.header.kind != FrameKind::Control || frame.header.channel != CH_HANDSHAKE {
                continue;
            }
            let Ok(Some(message)) = self.reassembler.push(now, frame) else { continue };
            return match HandshakeMsg::decode(&message.payload) {
                Ok(HandshakeMsg::Hello(hello)) => {
                    Ok(Some(CallingDevice { device_id: hello.device_id, resuming: hello.resume_token != 0 }))
                }
                _ => Err(IdentifyError::NotHello),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Connection, Role, SeededEntropy, Transport};
    use colink_frame::Mtu;

    fn first_frames(mode: LinkMode, mtu: usize) -> Vec<Bytes> {
        let now = Instant::now();
        let mut c = Connection::new(now, Config::new("device-a"), Role::Initiator, Box::new(SeededEntropy::new(1)));
        c.attach(now, Transport { mode, mtu: Mtu::new(mtu).unwrap() });
        std::iter::from_fn(|| c.poll_transmit(now)).collect()
    }

    #[test]
    fn identifies_the_caller_in_both_modes_and_at_the_minimum_mtu() {
        for (mode, mtu) in [(LinkMode::Packet, 247), (LinkMode::Stream, 4096), (LinkMode::Packet, 23)] {
            let frames = first_frames(mode, mtu);
            let mut id = Identify::new(mode);
            let mut found = None;
            for f in &frames {
                if let Some(c) = id.push(Instant::now(), f).unwrap() {
                    found = Some(c);
                    break;
                }
            }
            let caller = found.expect("HELLO identified");
            assert_eq!(caller.device_id, "device-a");
            assert!(!caller.resuming);
        }
    }

    #[test]
    fn garbage_is_bounded_and_never_identifies() {
        let mut id = Identify::new(LinkMode::Packet);
        let junk = Bytes::from(vec![0xA5; 1000]);
        let mut result = Ok(None);
        for _ in 0..100 {
            result = id.push(Instant::now(), &junk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(IdentifyError::TooMuch));
        let mut id = Identify::new(LinkMode::Stream);
        assert_eq!(id.push(Instant::now(), &Bytes::from_static(&[0x00, 0x03, 1, 2, 3])), Err(IdentifyError::Corrupt));
        // Given up is given up: a valid HELLO after the garbage does not identify anyone.
        let hello = first_frames(LinkMode::Stream, 4096);
        for f in &hello {
            assert_eq!(id.push(Instant::now(), f), Err(IdentifyError::Corrupt));
        }
    }
}
