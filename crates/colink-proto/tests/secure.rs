//! The secure handshake between two state machines: account mode, pairing with approval, and every refusal
//! the initiator must be able to tell apart; tampered handshake bytes never establish anything.

use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_frame::{LinkMode, Mtu};
use colink_proto::secure::{
    AccountOnly, HandshakeMode, Keypair, PeerIdentity, PinOrAsk, Proof, RefuseReason, SecureConfig, SecureError,
    SecureEvent, SecureHandshake, TrustPolicy, Verdict,
};
use colink_proto::{SeededEntropy, Transport};

#[derive(Debug)]
struct Fixed(Verdict);

impl TrustPolicy for Fixed {
    fn judge(&mut self, _peer: &PeerIdentity, _proof: Proof) -> Verdict {
        self.0
    }
}

fn transport(mode: LinkMode, mtu: usize) -> Transport {
    Transport { mode, mtu: Mtu::new(mtu).unwrap() }
}

fn keys(seed: u64) -> Keypair {
    Keypair::generate(&mut SeededEntropy::new(seed))
}

struct Side {
    hs: SecureHandshake,
    policy: Box<dyn TrustPolicy>,
    outcome: Option<Result<colink_proto::secure::Established, SecureError>>,
    asked: Option<(PeerIdentity, u32)>,
}

/// What the two sides ended with.
struct Run {
    a: Side,
    b: Side,
    now: Instant,
}

impl Run {
    fn new(
        a: SecureConfig,
        b: SecureConfig,
        mode: HandshakeMode,
        expected: Option<String>,
        pa: Box<dyn TrustPolicy>,
        pb: Box<dyn TrustPolicy>,
        t: Transport,
    ) -> Self {
        let now = Instant::now();
        let ha = SecureHandshake::initiator(now, a, mode, expected, t, &mut SeededEntropy::new(11)).unwrap();
        let hb = SecureHandshake::responder(now, b, t, &mut SeededEntropy::new(12));
        Self {
            a: Side { hs: ha, policy: pa, outcome: None, asked: None },
            b: Side { hs: hb, policy: pb, outcome: None, asked: None },
            now,
        }
    }

    /// Moves frames both ways (through `tamper`) until neither side has anything to send.
    fn pump(&mut self, tamper: &mut dyn FnMut(bool, Bytes) -> Bytes) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(f) = self.a.hs.poll_transmit() {
                moved = true;
                let f = tamper(true, f);
                self.b.hs.handle_input(self.now, &f, &mut *self.b.policy);
            }
            while let Some(f) = self.b.hs.poll_transmit() {
                moved = true;
                let f = tamper(false, f);
                self.a.hs.handle_input(self.now, &f, &mut *self.a.policy);
            }
            for side in [&mut self.a, &mut self.b] {
                while let Some(e) = side.hs.poll_event() {
                    match e {
                        SecureEvent::NeedsApproval { peer, sas } => side.asked = Some((peer, sas)),
                        SecureEvent::Established(est) => side.outcome = Some(Ok(*est)),
                        SecureEvent::Failed(err) => side.outcome = Some(Err(err)),
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("handshake livelock");
    }

    fn run(&mut self) {
        self.pump(&mut |_, f| f);
    }

    fn err_a(&self) -> SecureError {
        match &self.a.outcome {
            Some(Err(e)) => e.clone(),
            other => panic!("initiator did not fail: {other:?}"),
        }
    }
}

fn account(keys: Keypair, secret: Option<[u8; 32]>) -> SecureConfig {
    let mut c = SecureConfig::new(keys);
    c.account = secret;
    c
}

#[test]
fn same_account_establishes_with_matching_keys_and_proven_identities() {
    for (mode, mtu) in [(LinkMode::Packet, 23), (LinkMode::Packet, 247), (LinkMode::Stream, 4096)] {
        let (ka, kb) = (keys(1), keys(2));
        let mut run = Run::new(
            account(ka.clone(), Some([7; 32])),
            account(kb.clone(), Some([7; 32])),
            HandshakeMode::Account,
            Some(kb.device_id()),
            Box::new(AccountOnly),
            Box::new(AccountOnly),
            transport(mode, mtu),
        );
        run.run();
        let a = run.a.outcome.take().unwrap().unwrap();
        let b = run.b.outcome.take().unwrap().unwrap();
        assert_eq!(a.peer.device_id, kb.device_id());
        assert_eq!(b.peer.device_id, ka.device_id());
        assert_eq!(a.proof, Proof::Account);
        assert_eq!(a.handshake_hash, b.handshake_hash);
        // Keys agree: what one seals the other opens, with the same nonce only.
        let sealed = a.keys.cipher().seal(5, b"", b"hello").unwrap();
        assert_eq!(b.keys.cipher().open(5, b"", &sealed).unwrap(), b"hello");
        assert_eq!(b.keys.cipher().open(6, b"", &sealed), Err(SecureError::Crypto));
        assert!(a.leftover.is_empty() && b.leftover.is_empty());
    }
}

#[test]
fn a_different_account_is_refused_with_a_typed_error_on_both_sides() {
    let kb = keys(2);
    let mut run = Run::new(
        account(keys(1), Some([7; 32])),
        account(kb.clone(), Some([8; 32])),
        HandshakeMode::Account,
        Some(kb.device_id()),
        Box::new(AccountOnly),
        Box::new(AccountOnly),
        transport(LinkMode::Packet, 247),
    );
    run.run();
    assert_eq!(run.err_a(), SecureError::NotInAccount);
    assert!(matches!(run.b.outcome, Some(Err(SecureError::RefusedLocally(RefuseReason::NotInAccount)))));
}

#[test]
fn a_responder_without_account_refuses_account_mode() {
    let mut run = Run::new(
        account(keys(1), Some([7; 32])),
        account(keys(2), None),
        HandshakeMode::Account,
        None,
        Box::new(AccountOnly),
        Box::new(AccountOnly),
        transport(LinkMode::Packet, 247),
    );
    run.run();
    assert_eq!(run.err_a(), SecureError::NotInAccount);
}

#[test]
fn account_mode_without_a_secret_fails_at_once() {
    let err = SecureHandshake::initiator(
        Instant::now(),
        account(keys(1), None),
        HandshakeMode::Account,
        None,
        transport(LinkMode::Packet, 247),
        &mut SeededEntropy::new(1),
    )
    .unwrap_err();
    assert_eq!(err, SecureError::NoAccount);
}

#[test]
fn unknown_devices_and_unwanted_pairing_are_refused_distinctly() {
    // The responder accepts pairing handshakes but its policy admits no strangers.
    let mut b = account(keys(2), None);
    b.accept_pairing = true;
    let mut run = Run::new(
        account(keys(1), None),
        b,
        HandshakeMode::Pairing,
        None,
        Box::new(Fixed(Verdict::Trusted)),
        Box::new(AccountOnly),
        transport(LinkMode::Packet, 64),
    );
    run.run();
    assert_eq!(run.err_a(), SecureError::UnknownDeviceRefused);

    // The responder does not run pairing handshakes at all.
    let mut run = Run::new(
        account(keys(1), None),
        account(keys(2), None),
        HandshakeMode::Pairing,
        None,
        Box::new(Fixed(Verdict::Trusted)),
        Box::new(PinOrAsk::default()),
        transport(LinkMode::Packet, 64),
    );
    run.run();
    assert_eq!(run.err_a(), SecureError::PairingNotAccepted);
    assert!(run.b.asked.is_none());
}

#[test]
fn a_peer_that_is_not_the_expected_device_is_refused_by_the_dialler() {
    let (kb, other) = (keys(2), keys(3));
    let mut run = Run::new(
        account(keys(1), Some([7; 32])),
        account(kb.clone(), Some([7; 32])),
        HandshakeMode::Account,
        Some(other.device_id()),
        Box::new(AccountOnly),
        Box::new(AccountOnly),
        transport(LinkMode::Packet, 247),
    );
    run.run();
    assert_eq!(run.err_a(), SecureError::UnexpectedPeer { expected: other.device_id(), proven: kb.device_id() });
    // The victim never reached its trust decision: no approval, no link.
    assert!(run.b.asked.is_none());
    assert_eq!(run.b.outcome.as_ref().unwrap().as_ref().unwrap_err(), &SecureError::NotExpectedByPeer);
}

fn pairing_run() -> Run {
    let mut b = account(keys(2), None);
    b.accept_pairing = true;
    let mut run = Run::new(
        account(keys(1), None),
        b,
        HandshakeMode::Pairing,
        None,
        Box::new(PinOrAsk::default()),
        Box::new(PinOrAsk::default()),
        transport(LinkMode::Stream, 4096),
    );
    run.run();
    run
}

#[test]
fn pairing_shows_the_same_code_on_both_sides_and_needs_both_approvals() {
    let mut run = pairing_run();
    let (pa, sas_a) = run.a.asked.clone().expect("initiator asked");
    let (pb, sas_b) = run.b.asked.clone().expect("responder asked");
    assert_eq!(sas_a, sas_b);
    assert!(sas_a < 1_000_000);
    assert_eq!(pa.device_id, keys(2).device_id());
    assert_eq!(pb.device_id, keys(1).device_id());
    let now = run.now;
    run.a.hs.approve(now, true, &mut *run.a.policy);
    run.run();
    assert!(run.a.outcome.is_none(), "one approval is not enough");
    run.b.hs.approve(now, true, &mut *run.b.policy);
    run.run();
    assert!(matches!(run.a.outcome, Some(Ok(_))));
    assert!(matches!(run.b.outcome, Some(Ok(_))));
    // Approved peers are pinned by the policy: the next handshake does not ask.
    assert!(format!("{:?}", run.a.policy).contains(&keys(2).device_id()));
}

#[test]
fn a_refusal_on_either_side_establishes_nothing() {
    for refuse_initiator in [true, false] {
        let mut run = pairing_run();
        let now = run.now;
        run.a.hs.approve(now, !refuse_initiator, &mut *run.a.policy);
        run.b.hs.approve(now, refuse_initiator, &mut *run.b.policy);
        run.run();
        let (a, b) = (run.a.outcome.unwrap(), run.b.outcome.unwrap());
        if refuse_initiator {
            assert_eq!(a.unwrap_err(), SecureError::RefusedLocally(RefuseReason::UserRefused));
            assert_eq!(b.unwrap_err(), SecureError::RefusedByPeer);
        } else {
            assert_eq!(a.unwrap_err(), SecureError::RefusedByPeer);
            assert_eq!(b.unwrap_err(), SecureError::RefusedLocally(RefuseReason::UserRefused));
        }
    }
}

#[test]
fn an_unanswered_approval_times_out() {
    let mut run = pairing_run();
    let later = run.now + Duration::from_secs(61);
    assert!(run.a.hs.poll_timeout().unwrap() <= later);
    run.a.hs.handle_timeout(later);
    run.now = later;
    run.run();
    assert!(matches!(run.a.outcome, Some(Err(SecureError::Timeout))));
    assert!(matches!(run.b.outcome, Some(Err(SecureError::Timeout))));
}

#[test]
fn a_flipped_byte_anywhere_never_establishes() {
    // Flip one byte at a time, at offsets across the header, the keys and the tags, in every frame of an account
    // handshake, both directions. The side that receives the altered frame never establishes (the side that sent
    // the last CONFIRM may already have; its peer's failure closes the transport).
    let mut frames = 0;
    let mut established = 0;
    for dir in [true, false] {
        for target in 0..3 {
            for offset in [0, 1, 3, 6, 9, 12, 20, 33, 47, 60, 75, 90, 100] {
                let mut count = 0;
                let mut run = Run::new(
                    account(keys(1), Some([7; 32])),
                    account(keys(2), Some([7; 32])),
                    HandshakeMode::Account,
                    Some(keys(2).device_id()),
                    Box::new(AccountOnly),
                    Box::new(AccountOnly),
                    transport(LinkMode::Stream, 4096),
                );
                let mut hit = false;
                run.pump(&mut |from_a, f| {
                    if from_a != dir {
                        return f;
                    }
                    count += 1;
                    if count - 1 != target || offset >= f.len() {
                        return f;
                    }
                    hit = true;
                    let mut v = f.to_vec();
                    v[offset] ^= 0x40;
                    Bytes::from(v)
                });
                if hit {
                    frames += 1;
                    let receiver = if dir { &run.b } else { &run.a };
                    if receiver.outcome.as_ref().is_some_and(Result::is_ok) {
                        established += 1;
                    }
                }
            }
        }
    }
    assert!(frames > 40, "tampered {frames} frames");
    assert_eq!(established, 0);
}

#[test]
fn garbage_is_bounded() {
    let mut hs = SecureHandshake::responder(
        Instant::now(),
        account(keys(2), Some([7; 32])),
        transport(LinkMode::Packet, 247),
        &mut SeededEntropy::new(1),
    );
    let mut policy = AccountOnly;
    hs.handle_input(Instant::now(), &Bytes::from(vec![0xA5; 200]), &mut policy);
    assert!(matches!(hs.poll_event(), Some(SecureEvent::Failed(SecureError::Malformed(_)))));
    assert!(hs.is_finished());
}

#[test]
fn a_busy_refusal_tells_the_dialler_to_retry_later_in_both_modes() {
    for t in [transport(LinkMode::Packet, 23), transport(LinkMode::Packet, 247), transport(LinkMode::Stream, 4096)] {
        let now = Instant::now();
        let secret = Some([7; 32]);
        let mut dialler = SecureHandshake::initiator(
            now,
            account(keys(1), secret),
            HandshakeMode::Account,
            None,
            t,
            &mut SeededEntropy::new(3),
        )
        .unwrap();
        while dialler.poll_transmit().is_some() {}
        let mut policy = AccountOnly;
        // The responder, over its limits, answers NOISE_1 with only this: a CLOSE before any handshake state.
        for frame in colink_proto::secure::busy_refusal(t) {
            dialler.handle_input(now, &frame, &mut policy);
        }
        let failed = std::iter::from_fn(|| dialler.poll_event()).find_map(|e| match e {
            SecureEvent::Failed(error) => Some(error),
            _ => None,
        });
        assert_eq!(failed, Some(SecureError::Busy), "{t:?}");
    }
}
