//! The Manager end to end on the simulator: two devices, one app each, through the public API only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink::api::{ConnectErrorCode, ConnectOptions, DisconnectReason, Permission};
use colink::{Caller, Event, EventKind, Manager, PeerInfo};
use colink_ble::DeviceId;
use colink_sim::{Position, SimAir};
use futures::StreamExt;

#[path = "common/devices.rs"]
mod devices;
use devices::manager;

fn chat(system: bool) -> Caller {
    Caller::new("com.example.chat", "entry", "MainAbility").system(system).grant(Permission::DistributedDatasync)
}

fn peer_of(m: &Manager) -> PeerInfo {
    PeerInfo::new(m.device_id().to_string(), "com.example.chat", "entry", "MainAbility")
}

/// Alice connects to Bob's chat app; Bob's app accepts. Returns (alice's session, bob's session).
async fn connected_pair(alice: &Manager, bob: &Manager) -> (colink::SessionId, colink::SessionId) {
    let app = chat(false);
    let mut requests = bob.incoming(&app).unwrap();
    let sa = alice.create_session(&app, "chat", peer_of(bob), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        assert_eq!(request.peer.bundle_name, "com.example.chat");
        let sb = bob2.create_session(&chat(false), "chat", request.peer.clone(), ConnectOptions::default()).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
        sb
    });
    let result = alice.connect(sa).await.unwrap();
    assert!(result.is_connected, "{result:?}");
    (sa, responder.await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn two_apps_connect_and_exchange_messages_and_data() {
    let air = SimAir::new(11);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connected_pair(&alice, &bob).await;

    let mut bob_events = bob.events(sb).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    alice.on(EventKind::ReceiveMessage, sa, move |e| sink.lock().unwrap().push(e.clone())).unwrap();

    let blob: Bytes = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    alice.send_message(sa, "hello bob").await.unwrap();
    alice.send_data(sa, blob.clone()).await.unwrap();
    bob.send_message(sb, "hi alice, ünïcode ok").await.unwrap();

    assert_eq!(bob_events.next().await, Some(Event::ReceiveMessage { session_id: sb, msg: "hello bob".into() }));
    assert_eq!(bob_events.next().await, Some(Event::ReceiveData { session_id: sb, data: blob }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *got.lock().unwrap(),
        vec![Event::ReceiveMessage { session_id: sa, msg: "hi alice, ünïcode ok".into() }]
    );
}

#[tokio::test(start_paused = true)]
async fn disconnect_reaches_the_peer_with_close_collaboration() {
    let air = SimAir::new(12);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connected_pair(&alice, &bob).await;
    let mut bob_events = bob.events(sb).unwrap();
    alice.disconnect(sa).await.unwrap();
    assert_eq!(
        bob_events.next().await,
        Some(Event::Disconnect { session_id: sb, reason: DisconnectReason::PeerAppCloseCollaboration })
    );
    // Sending on a disconnected session is a parameter error.
    assert_eq!(bob.send_message(sb, "anyone?").await.unwrap_err().code(), 401);
    // The session can connect again.
    let again = alice.connect(sa).await.unwrap();
    assert!(!again.is_connected, "bob's app no longer listens: {again:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_request_resolves_with_peer_app_rejected_and_the_reason() {
    let air = SimAir::new(13);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let mut requests = bob.incoming(&chat(false)).unwrap();
    let sa = alice.create_session(&chat(false), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    tokio::spawn(async move {
        let r = requests.next().await.unwrap();
        bob2.reject(&r.token, "busy right now").await.unwrap();
    });
    let result = alice.connect(sa).await.unwrap();
    assert!(!result.is_connected);
    assert_eq!(result.error_code, Some(ConnectErrorCode::PeerAppRejected));
    assert_eq!(result.reason.as_deref(), Some("busy right now"));
}

#[tokio::test(start_paused = true)]
async fn a_request_for_an_app_that_does_not_listen_gets_no_oncollaborate() {
    let air = SimAir::new(14);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let sa = alice.create_session(&chat(false), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let result = alice.connect(sa).await.unwrap();
    assert_eq!(result.error_code, Some(ConnectErrorCode::PeerAbilityNoOncollaborate));
}

#[tokio::test(start_paused = true)]
async fn connecting_to_an_absent_device_resolves_with_system_internal_error() {
    let air = SimAir::new(15);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let ghost = PeerInfo::new(DeviceId::from_bytes([7; 16]).to_string(), "com.example.chat", "entry", "MainAbility");
    let sa = alice.create_session(&chat(false), "chat", ghost, ConnectOptions::default()).unwrap();
    let result = alice.connect(sa).await.unwrap();
    assert_eq!(
        result,
        colink::api::ConnectResult::failed(ConnectErrorCode::SystemInternalError, result.reason.clone())
    );
    assert!(!result.is_connected);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_link_loses_nothing_and_apps_see_it_reconnect() {
    let air = SimAir::new(16);
    let (alice, ada) = manager(&air, "alice", 0.0, 1).await;
    let (bob, adb) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connected_pair(&alice, &bob).await;
    let mut bob_events = bob.events(sb).unwrap();
    let blob: Bytes = (0..500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let faults = air.faults();
    use colink_ble::Adapter;
    let (a, b) = (ada.address().address, adb.address().address);
    let (sent, ()) = tokio::join!(alice.send_data(sa, blob.clone()), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(faults.drop_links(a, b) > 0);
    });
    sent.unwrap();
    // The app may watch the link come and go (colink's reconnecting / reconnected); nothing is lost or repeated.
    assert_eq!(bob_events.next().await, Some(Event::Reconnecting { session_id: sb }));
    assert_eq!(bob_events.next().await, Some(Event::Reconnected { session_id: sb }));
    assert_eq!(bob_events.next().await, Some(Event::ReceiveData { session_id: sb, data: blob }));
    alice.send_message(sa, "still here").await.unwrap();
    assert_eq!(bob_events.next().await, Some(Event::ReceiveMessage { session_id: sb, msg: "still here".into() }));
}

#[tokio::test(start_paused = true)]
async fn connect_twice_reports_connected_session_exists() {
    let air = SimAir::new(17);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (sa, _sb) = connected_pair(&alice, &bob).await;
    let again = alice.connect(sa).await.unwrap();
    assert_eq!(again.error_code, Some(ConnectErrorCode::ConnectedSessionExists));
}

#[tokio::test(start_paused = true)]
async fn destroy_disconnects_the_peer() {
    let air = SimAir::new(18);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connected_pair(&alice, &bob).await;
    let mut bob_events = bob.events(sb).unwrap();
    alice.destroy_session(sa).await.unwrap();
    assert_eq!(
        bob_events.next().await,
        Some(Event::Disconnect { session_id: sb, reason: DisconnectReason::PeerAppCloseCollaboration })
    );
    assert_eq!(alice.peer_info(sa), None);
}

#[tokio::test(start_paused = true)]
async fn a_peer_manager_shutting_down_disconnects_with_peer_app_exit() {
    let air = SimAir::new(19);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (_sa, sb) = connected_pair(&alice, &bob).await;
    let mut bob_events = bob.events(sb).unwrap();
    alice.shutdown().await;
    assert_eq!(
        bob_events.next().await,
        Some(Event::Disconnect { session_id: sb, reason: DisconnectReason::PeerAppExit })
    );
}

#[tokio::test(start_paused = true)]
async fn walking_out_of_range_for_good_disconnects_both_apps_with_network_disconnected() {
    let air = SimAir::new(20);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, adb) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connected_pair(&alice, &bob).await;
    let (mut ea, mut eb) = (alice.events(sa).unwrap(), bob.events(sb).unwrap());
    adb.move_to(Position::new(300.0, 0.0));
    let reason = DisconnectReason::NetworkDisconnected;
    assert_eq!(ea.next().await, Some(Event::Reconnecting { session_id: sa }));
    assert_eq!(alice.session_state(sa), Some(colink::SessionState::Reconnecting));
    assert_eq!(ea.next().await, Some(Event::Disconnect { session_id: sa, reason }));
    assert_eq!(eb.next().await, Some(Event::Reconnecting { session_id: sb }));
    assert_eq!(eb.next().await, Some(Event::Disconnect { session_id: sb, reason }));
    assert_eq!(alice.session_state(sa), Some(colink::SessionState::Idle));
}

#[tokio::test(start_paused = true)]
async fn a_send_failing_after_acceptance_raises_send_failure_for_system_apps() {
    let air = SimAir::new(24);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, adb) = manager(&air, "bob", 3.0, 2).await;
    // A system app: collaborateEvent is a system event.
    let app = chat(true);
    let mut requests = bob.incoming(&app).unwrap();
    let sa = alice.create_session(&app, "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    tokio::spawn(async move {
        let r = requests.next().await.unwrap();
        let sb = bob2.create_session(&chat(true), "chat", r.peer.clone(), ConnectOptions::default()).unwrap();
        bob2.accept_connect(sb, &r.token).await.unwrap();
    });
    assert!(alice.connect(sa).await.unwrap().is_connected);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let sink = failures.clone();
    alice.on(EventKind::CollaborateEvent, sa, move |e| sink.lock().unwrap().push(e.clone())).unwrap();
    let big: Bytes = vec![1u8; 4 << 20].into();
    let (sent, ()) = tokio::join!(alice.send_data(sa, big), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        adb.move_to(Position::new(300.0, 0.0));
    });
    // The link died: the error says so (kind LinkLost), with the reference's code, and is no argument error.
    let error = sent.expect_err("the send could not complete");
    assert_eq!(error.kind(), colink::ErrorKind::LinkLost(DisconnectReason::NetworkDisconnected), "{error}");
    assert_eq!(error.code(), 401);
    assert_eq!(error.argument(), None);
    assert!(error.to_string().contains("link lost") && !error.to_string().contains("invalid argument"), "{error}");
    // A send after the session ended is refused as not connected.
    let after = alice.send_message(sa, "anyone?").await.unwrap_err();
    assert_eq!(after.kind(), colink::ErrorKind::NotConnected, "{after}");
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(matches!(
        &failures[0],
        Event::CollaborateEvent { session_id, info } if *session_id == sa
            && info.event_type == colink::api::CollaborateEventType::SendFailure
    ));
}
