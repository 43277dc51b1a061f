//! Fuzzes the secure handshake with what a hostile peer could send before any HELLO: a responder, or an
//! initiator that already sent NOISE_1 (so NOISE_2 parsing is reached), is fed records that are either raw
//! transport data or handshake-channel CONTROL messages in frames with a valid CRC (so the input gets past the
//! framing into the NOISE/CONFIRM/CLOSE parsers), with approvals answered and deadlines passed on the way.
//! No panic; the state machine ends (established or failed) or keeps waiting, never reads past its bounds.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, LinkMode, Mtu};
use colink_proto::secure::{HandshakeMode, Keypair, PinOrAsk, SecureConfig, SecureEvent, SecureHandshake};
use colink_proto::{SeededEntropy, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let mode = if sel & 1 == 0 { LinkMode::Packet } else { LinkMode::Stream };
    let Some(mtu) = Mtu::new(if sel & 32 == 0 { 247 } else { 23 }) else { return };
    let t = Transport { mode, mtu };
    let mut config = SecureConfig::new(Keypair::from_secret([1; 32]));
    config.account = (sel & 64 == 0).then_some([2; 32]);
    config.accept_pairing = sel & 128 == 0;
    let mut now = Instant::now();
    let mut entropy = SeededEntropy::new(u64::from(sel));
    let mut hs = if sel & 2 == 0 {
        SecureHandshake::responder(now, config, t, &mut entropy)
    } else {
        let hm = if sel & 4 == 0 { HandshakeMode::Pairing } else { HandshakeMode::Account };
        match SecureHandshake::initiator(now, config, hm, None, t, &mut entropy) {
            Ok(hs) => hs,
            Err(_) => return,
        }
    };
    let mut policy = PinOrAsk::default();
    let mut seq = 0u32;
    // Records: [flags][len][bytes...]; flags bit 0: raw data, else one CONTROL frame on channel 0.
    while let [flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let input = if flags & 1 == 1 {
            Bytes::copy_from_slice(body)
        } else {
            let Ok(frame) = Frame::single(FrameKind::Control, 0, seq, Bytes::copy_from_slice(body)) else { continue };
            seq = (seq + 1) & 0x3FFF;
            let mut out = BytesMut::new();
            if frame.encode(mode, &mut out).is_err() {
                continue;
            }
            out.freeze()
        };
        hs.handle_input(now, &input, &mut policy);
        if flags & 2 == 2 {
            now += Duration::from_secs(u64::from(flags >> 2));
            hs.handle_timeout(now);
        }
        while hs.poll_transmit().is_some() {}
        while let Some(event) = hs.poll_event() {
            if let SecureEvent::NeedsApproval { sas, .. } = event {
                assert!(sas < 1_000_000);
                hs.approve(now, sas % 2 == 0, &mut policy);
            }
        }
        if hs.is_finished() {
            return;
        }
    }
});
