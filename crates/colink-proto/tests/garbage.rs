//! Whatever a peer sends, the engine never panics and memory stays bounded.

use bytes::{Bytes, BytesMut};
use colink_frame::{Frame, FrameKind, LinkMode, Mtu};
use colink_proto::harness::{LinkModel, Pair};
use colink_proto::{ChannelKind, ConnectOptions, LinkState};
use proptest::prelude::*;

/// Valid-CRC frames with arbitrary header fields and payloads reach the session layer's decoders; pure
/// garbage mostly tests the CRC. Both are fed.
#[derive(Debug, Clone)]
enum Input {
    Raw(Vec<u8>),
    Framed { kind: u8, channel: u32, seq: u32, payload: Vec<u8> },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Input::Raw),
        (
            0u8..7,
            prop_oneof![0u32..40, any::<u32>()],
            prop_oneof![0u32..4, any::<u32>()],
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(kind, channel, seq, payload)| Input::Framed { kind, channel, seq, payload }),
    ]
}

fn encode(i: &Input, mode: LinkMode) -> Bytes {
    match i {
        Input::Raw(v) => Bytes::from(v.clone()),
        Input::Framed { kind, channel, seq, payload } => {
            let kind = FrameKind::from_u8(*kind).unwrap_or(FrameKind::Control);
            let f = Frame::single(kind, *channel, *seq, Bytes::from(payload.clone())).unwrap();
            let mut out = BytesMut::new();
            f.encode(mode, &mut out).unwrap();
            out.freeze()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn garbage_input_never_panics(
        inputs in proptest::collection::vec(input(), 1..40),
        stream in any::<bool>(),
        established in any::<bool>(),
    ) {
        let mode = if stream { LinkMode::Stream } else { LinkMode::Packet };
        let mut p = Pair::new(LinkModel { mode, mtu: Mtu::new(247).unwrap(), ..LinkModel::default() });
        if established {
            p.drive();
            let key = p.open_session("fuzz", ConnectOptions::default());
            p.a.conn.send(key, ChannelKind::Data, Bytes::from(vec![1u8; 5000])).unwrap();
        }
        for i in &inputs {
            let now = p.now;
            p.b.conn.handle_input(now, encode(i, mode));
            p.b.conn.handle_timeout(now);
            while p.b.conn.poll_transmit(now).is_some() {}
            while p.b.conn.poll_event().is_some() {}
        }
        p.drive_for(std::time::Duration::from_secs(3));
        prop_assert!(p.b.conn.reassembly_bytes() <= 64 * 1024 * 64);
        // Whatever happened, the state is one of the documented ones and time can still pass.
        prop_assert!(matches!(
            p.b.conn.state(),
            LinkState::Established | LinkState::Closed | LinkState::Reconnecting | LinkState::Handshaking
        ));
    }
}
