//! Lifecycle races on the simulator: a session destroyed or disconnected while its connect or accept is still
//! under way must end on both sides — never a peer left connected to nobody, whose sends resolve into the void.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use colink::api::{ConnectOptions, Permission};
use colink::{Caller, ErrorKind, Manager, PeerInfo, SessionId, SessionState};
use colink_sim::SimAir;
use futures::StreamExt;

#[path = "common/devices.rs"]
mod devices;
use devices::manager;

fn chat() -> Caller {
    Caller::new("com.example.chat", "entry", "MainAbility").grant(Permission::DistributedDatasync)
}

fn peer_of(m: &Manager) -> PeerInfo {
    PeerInfo::new(m.device_id().to_string(), "com.example.chat", "entry", "MainAbility")
}

/// Bob accepts every request; returns the sessions he accepted.
fn auto_accept(bob: &Manager) -> Arc<Mutex<Vec<SessionId>>> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut requests = bob.incoming(&chat()).unwrap();
    let (bob, sink) = (bob.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let sb = bob.create_session(&chat(), "chat", request.peer.clone(), ConnectOptions::default()).unwrap();
            if bob.accept_connect(sb, &request.token).await.is_ok() {
                sink.lock().unwrap().push(sb);
            }
        }
    });
    accepted
}

/// After the dust settled, no session of Bob's may still believe it is connected, and his sends must fail.
async fn bob_holds_no_orphan(bob: &Manager, accepted: &[SessionId], label: &str) {
    for &sb in accepted {
        assert_eq!(bob.session_state(sb), Some(SessionState::Idle), "{label}: Bob's session {sb} is orphaned");
        let e = bob.send_message(sb, "anyone there?").await.expect_err("a send into the void must fail");
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{label}: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_destroyed_while_its_connect_is_in_flight_ends_on_both_sides() {
    // Destroy at every stage of the connect: while dialling, during the handshake, with the request on the
    // air, while the peer answers, and (the last delays) after it completed.
    let mut in_flight = 0;
    for (i, delay_ms) in [0u64, 1, 5, 20, 50, 80, 120, 200, 300, 500, 800].into_iter().enumerate() {
        let air = SimAir::new(70 + i as u64);
        let (alice, _) = manager(&air, "alice", 0.0, 1).await;
        let (bob, _) = manager(&air, "bob", 3.0, 2).await;
        let accepted = auto_accept(&bob);
        let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
        let connecting = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.connect(sa).await })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        alice.destroy_session(sa).await.unwrap();
        match connecting.await.unwrap() {
            // The connect had completed before the destroy: an ordinary destroy.
            Ok(result) if result.is_connected => {}
            Ok(_) => in_flight += 1,
            // Destroyed before the connect task even ran.
            Err(e) => assert_eq!((delay_ms, e.kind()), (0, ErrorKind::NotFound), "{e}"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let accepted = accepted.lock().unwrap().clone();
        bob_holds_no_orphan(&bob, &accepted, &format!("destroy after {delay_ms} ms")).await;
    }
    assert!(in_flight >= 6, "only {in_flight} destroys hit a connect in flight");
}

#[tokio::test(start_paused = true)]
async fn a_session_disconnected_while_its_connect_is_in_flight_ends_on_both_sides() {
    // From 1 ms on, the connect is under way (at 0 the disconnect would come first and find nothing to end).
    let mut in_flight = 0;
    for (i, delay_ms) in [1u64, 20, 80, 200, 500].into_iter().enumerate() {
        let air = SimAir::new(90 + i as u64);
        let (alice, _) = manager(&air, "alice", 0.0, 1).await;
        let (bob, _) = manager(&air, "bob", 3.0, 2).await;
        let accepted = auto_accept(&bob);
        let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
        let connecting = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.connect(sa).await })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        alice.disconnect(sa).await.unwrap();
        let result = connecting.await.unwrap().unwrap();
        in_flight += usize::from(!result.is_connected);
        assert_eq!(alice.session_state(sa), Some(SessionState::Idle), "{delay_ms} ms");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let accepted = accepted.lock().unwrap().clone();
        bob_holds_no_orphan(&bob, &accepted, &format!("disconnect after {delay_ms} ms")).await;
        // The session can be used again: a second connect succeeds.
        assert!(alice.connect(sa).await.unwrap().is_connected, "{delay_ms} ms: reconnect");
    }
    assert!(in_flight >= 3, "only {in_flight} disconnects hit a connect in flight");
}

#[tokio::test(start_paused = true)]
async fn a_session_destroyed_while_its_accept_is_in_flight_ends_on_both_sides() {
    let air = SimAir::new(99);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let mut requests = bob.incoming(&chat()).unwrap();
    let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let mut alice_events = alice.events(sa).unwrap();
    let connecting = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.connect(sa).await })
    };
    let request = requests.next().await.unwrap();
    let sb = bob.create_session(&chat(), "chat", request.peer.clone(), ConnectOptions::default()).unwrap();
    // Bob's app accepts and, before the accept returned, destroys the session (e.g. its window closed).
    let (accepted, destroyed) = tokio::join!(bob.accept_connect(sb, &request.token), bob.destroy_session(sb));
    destroyed.unwrap();
    assert!(accepted.is_err(), "an accept for a session destroyed meanwhile must not report success");
    // Alice's connect may have been accepted for an instant; either way her session ends, and her sends fail.
    let result = connecting.await.unwrap().unwrap();
    if result.is_connected {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = alice_events.next().await {
                if matches!(e, colink::Event::Disconnect { .. }) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ended, Ok(true), "Alice must learn that Bob's side is gone");
    }
    assert_eq!(alice.session_state(sa), Some(SessionState::Idle));
    let e = alice.send_message(sa, "hello?").await.expect_err("nobody holds the session on Bob's side");
    assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
}

/// Alice and Bob connected through Bob's auto-accept; returns (Alice's session, Bob's session).
async fn connected(alice: &Manager, bob: &Manager) -> (SessionId, SessionId) {
    let accepted = auto_accept(bob);
    let sa = alice.create_session(&chat(), "chat", peer_of(bob), ConnectOptions::default()).unwrap();
    assert!(alice.connect(sa).await.unwrap().is_connected);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sb = *accepted.lock().unwrap().last().expect("Bob accepted");
    (sa, sb)
}

#[tokio::test(start_paused = true)]
async fn a_session_ended_while_sends_are_in_flight_fails_them_on_both_sides() {
    // Each side ends the session (disconnect or destroy) while both sides have large sends in flight: every
    // send in flight fails visibly with `Disconnected`, both sessions end, and nothing sent later succeeds.
    for (i, (ender_is_alice, destroy)) in
        [(true, false), (true, true), (false, false), (false, true)].into_iter().enumerate()
    {
        let label = format!(
            "{} {}",
            if ender_is_alice { "Alice" } else { "Bob" },
            if destroy { "destroys" } else { "disconnects" }
        );
        let air = SimAir::new(110 + i as u64);
        let (alice, _) = manager(&air, "alice", 0.0, 1).await;
        let (bob, _) = manager(&air, "bob", 3.0, 2).await;
        let (sa, sb) = connected(&alice, &bob).await;
        let big = bytes::Bytes::from(vec![7u8; 2_000_000]);
        let from_alice = {
            let (alice, big) = (alice.clone(), big.clone());
            tokio::spawn(async move { alice.send_data(sa, big).await })
        };
        let from_bob = {
            let (bob, big) = (bob.clone(), big.clone());
            tokio::spawn(async move { bob.send_data(sb, big).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!from_alice.is_finished() && !from_bob.is_finished(), "{label}: the sends should be in flight");
        let (ender, session) = if ender_is_alice { (&alice, sa) } else { (&bob, sb) };
        if destroy {
            ender.destroy_session(session).await.unwrap();
        } else {
            ender.disconnect(session).await.unwrap();
        }
        for (side, send) in [("Alice", from_alice), ("Bob", from_bob)] {
            let e = tokio::time::timeout(Duration::from_secs(10), send).await.unwrap().unwrap().unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Disconnected(_) | ErrorKind::NotConnected),
                "{label}: {side}'s send in flight: {e}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (side, m, s) in [("Alice", &alice, sa), ("Bob", &bob, sb)] {
            if let Some(state) = m.session_state(s) {
                assert_eq!(state, SessionState::Idle, "{label}: {side}'s session");
                let e = m.send_message(s, "anyone?").await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::NotConnected, "{label}: {side}: {e}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_rejected_while_its_initiator_gives_up_leaves_nothing_behind() {
    // Bob's app rejects while Alice destroys her connecting session, at several moments: Alice's connect
    // resolves (rejected, or closed while connecting), nobody is left connected, and both can start afresh.
    for (i, delay_ms) in [0u64, 1, 20, 80, 200].into_iter().enumerate() {
        let air = SimAir::new(130 + i as u64);
        let (alice, _) = manager(&air, "alice", 0.0, 1).await;
        let (bob, _) = manager(&air, "bob", 3.0, 2).await;
        let mut requests = bob.incoming(&chat()).unwrap();
        let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
        let connecting = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.connect(sa).await })
        };
        let request = requests.next().await.unwrap();
        let bob2 = bob.clone();
        let token = request.token.clone();
        let rejecting = tokio::spawn(async move { bob2.reject(&token, "busy").await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        alice.destroy_session(sa).await.unwrap();
        // The reject either reached a live request or found it withdrawn: both are fine, neither panics.
        let _ = rejecting.await.unwrap();
        match connecting.await.unwrap() {
            Ok(result) => assert!(!result.is_connected, "{delay_ms} ms: a rejected connect cannot connect"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{delay_ms} ms: {e}"),
        }
        // Both start afresh: a new session connects and carries a message.
        let accepted = auto_accept(&bob);
        let sa2 = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
        assert!(alice.connect(sa2).await.unwrap().is_connected, "{delay_ms} ms");
        alice.send_message(sa2, "hello again").await.unwrap();
        assert_eq!(accepted.lock().unwrap().len(), 1, "{delay_ms} ms");
    }
}
