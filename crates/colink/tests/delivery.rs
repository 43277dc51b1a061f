//! "Delivered" means the receiving app has it (docs/api-mapping.md, "Delivery"): payloads that arrive before
//! the app listens are held for it, and a receiving app that does not read slows its own sender only — on the
//! simulator, through the public API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink::api::{ConnectOptions, Permission};
use colink::{Caller, Event, EventKind, Manager, PeerInfo, SessionId};
use colink_ble::DeviceId;
use colink_sim::{Position, SimAir};
use futures::{FutureExt, StreamExt};

#[path = "common/devices.rs"]
mod devices;
use devices::manager;

fn app(bundle: &str) -> Caller {
    Caller::new(bundle, "entry", "MainAbility").grant(Permission::DistributedDatasync)
}

fn peer(m: &Manager, bundle: &str) -> PeerInfo {
    PeerInfo::new(m.device_id().to_string(), bundle, "entry", "MainAbility")
}

/// `alice`'s app `bundle` connects to the same app on `bob`, which accepts. Returns (alice's, bob's) session.
async fn connect(alice: &Manager, bob: &Manager, bundle: &str) -> (SessionId, SessionId) {
    let mut requests = bob.incoming(&app(bundle)).unwrap();
    let sa = alice.create_session(&app(bundle), "svc", peer(bob, bundle), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    let bundle2 = bundle.to_owned();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let sb = bob2.create_session(&app(&bundle2), "svc", request.peer.clone(), ConnectOptions::default()).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
        sb
    });
    assert!(alice.connect(sa).await.unwrap().is_connected);
    (sa, responder.await.unwrap())
}

fn chunk(i: u8, len: usize) -> Bytes {
    (0..len).map(|j| (j as u8).wrapping_mul(31) ^ i).collect()
}

#[tokio::test(start_paused = true)]
async fn payloads_sent_before_the_receiver_subscribes_reach_it_once_it_does() {
    let air = SimAir::new(41);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    let (sa, sb) = connect(&alice, &bob, "com.example.notes").await;
    // Bob's app has neither a listener nor a stream yet; the sends resolve: the payloads sit in Bob's bounded
    // queue for the session, sure to reach the app.
    alice.send_message(sa, "first").await.unwrap();
    alice.send_data(sa, chunk(1, 10_000)).await.unwrap();
    alice.send_message(sa, "second").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Payload bytes plus the per-message charge of session protocol version 3.
    assert_eq!(bob.unread_bytes(sb).unwrap(), 5 + 10_000 + 6 + 3 * colink_proto::MESSAGE_CHARGE);
    // A listener for messages gets the held messages, in order; the data waits for its own listener.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    bob.on(EventKind::ReceiveMessage, sb, move |e| sink.lock().unwrap().push(e.clone())).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Event::ReceiveMessage { session_id: sb, msg: "first".into() },
            Event::ReceiveMessage { session_id: sb, msg: "second".into() },
        ]
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(bob.unread_bytes(sb).unwrap(), 10_000 + colink_proto::MESSAGE_CHARGE);
    // A stream opened later gets the held data first, then what comes next.
    let mut events = bob.events(sb).unwrap();
    alice.send_data(sa, chunk(2, 500)).await.unwrap();
    assert_eq!(events.next().await, Some(Event::ReceiveData { session_id: sb, data: chunk(1, 10_000) }));
    assert_eq!(events.next().await, Some(Event::ReceiveData { session_id: sb, data: chunk(2, 500) }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(bob.unread_bytes(sb).unwrap(), 0);
    assert_eq!(seen.lock().unwrap().len(), 2, "each message reached the app exactly once");
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_does_not_read_stops_its_own_sender_only() {
    const BUFFER: u64 = 256 * 1024;
    // Each payload costs its bytes plus the per-message charge: four chunks fill the buffer exactly.
    const CHUNK: usize = 64 * 1024 - colink_proto::MESSAGE_CHARGE as usize;
    let air = SimAir::new(42);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let bob = Manager::builder()
        .adapter(air.adapter("bob", Position::new(3.0, 0.0)))
        .device_id(DeviceId::from_bytes([2; 16]))
        .seed(2)
        .receive_buffer(BUFFER)
        .build()
        .await
        .unwrap();
    let (slow_a, slow_b) = connect(&alice, &bob, "com.example.slow").await;
    let (busy_a, busy_b) = connect(&alice, &bob, "com.example.busy").await;
    // Bob's slow app subscribes but never reads its stream.
    let mut slow_events = bob.events(slow_b).unwrap();
    let chunks: Vec<Bytes> = (0..12).map(|i| chunk(i, CHUNK)).collect();
    let resolved = Arc::new(Mutex::new(0usize));
    let sender = {
        let (alice, chunks, resolved) = (alice.clone(), chunks.clone(), resolved.clone());
        tokio::spawn(async move {
            for c in chunks {
                alice.send_data(slow_a, c).await.unwrap();
                *resolved.lock().unwrap() += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Four chunks fill Bob's 256 KiB buffer; the fifth send stays pending (not Ok, not failed).
    assert_eq!(*resolved.lock().unwrap(), 4);
    assert!(!sender.is_finished());
    let unread = bob.unread_bytes(slow_b).unwrap();
    assert!(unread <= BUFFER, "{unread} bytes unread");
    assert_eq!(unread, 4 * (CHUNK as u64 + colink_proto::MESSAGE_CHARGE));
    // The other session on the same link keeps flowing.
    let mut busy_events = bob.events(busy_b).unwrap();
    let big = chunk(99, 1_000_000);
    let (sent, got) = tokio::join!(alice.send_data(busy_a, big.clone()), busy_events.next());
    sent.unwrap();
    assert_eq!(got, Some(Event::ReceiveData { session_id: busy_b, data: big }));
    assert_eq!(*resolved.lock().unwrap(), 4, "the slow session is still stopped");
    assert!(bob.unread_bytes(slow_b).unwrap() <= BUFFER);
    // Bob's slow app starts reading: everything arrives in order, exactly once, and every send resolves.
    for (i, expected) in chunks.iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(30), slow_events.next()).await.unwrap();
        assert_eq!(got, Some(Event::ReceiveData { session_id: slow_b, data: expected.clone() }), "chunk {i}");
        assert!(bob.unread_bytes(slow_b).unwrap() <= BUFFER);
    }
    sender.await.unwrap();
    assert_eq!(*resolved.lock().unwrap(), 12);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(slow_events.next().now_or_never().is_none(), "nothing more, nothing twice");
    assert_eq!(bob.unread_bytes(slow_b).unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn collaboration_requests_an_app_does_not_read_are_bounded() {
    let air = SimAir::new(43);
    let (alice, _) = manager(&air, "alice", 0.0, 1).await;
    let (bob, _) = manager(&air, "bob", 3.0, 2).await;
    // Bob's app listens for requests but reads none.
    let _requests = bob.incoming(&app("com.example.notes")).unwrap();
    let to = peer(&bob, "com.example.notes");
    let mut waiting = Vec::new();
    for i in 0..colink::INCOMING_QUEUE {
        let s = alice.create_session(&app(&format!("com.example.a{i}")), "svc", to.clone(), ConnectOptions::default());
        let (alice, s) = (alice.clone(), s.unwrap());
        waiting.push(tokio::spawn(async move { alice.connect(s).await }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(waiting.iter().all(|w| !w.is_finished()), "the first requests wait for an answer");
    // One more is refused at once rather than queued without limit.
    let s = alice.create_session(&app("com.example.extra"), "svc", to, ConnectOptions::default()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), alice.connect(s)).await.unwrap().unwrap();
    assert!(!result.is_connected);
    assert_eq!(result.error_code, Some(colink::api::ConnectErrorCode::SystemInternalError), "{result:?}");
    assert!(result.reason.as_deref().is_some_and(|r| r.contains("too many")), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_the_per_message_charge_cannot_pile_up_unread_payloads() {
    // A version-2 peer pays receive credit for payload bytes only, so tiny messages cost it almost nothing.
    // Bob's links stop reading once MAX unread payloads wait for his app, whatever their size: Alice's sends
    // then wait. Once Bob's app reads, all of them arrive, once.
    const MAX: u64 = 300;
    const SENT: usize = 2000;
    let air = SimAir::new(44);
    let mut old = colink::driver::NodeConfig::default();
    old.engine.versions = 1..=2;
    let alice = Manager::builder()
        .adapter(air.adapter("alice", Position::new(0.0, 0.0)))
        .node_config(old)
        .device_id(DeviceId::from_bytes([1; 16]))
        .seed(1)
        .build()
        .await
        .unwrap();
    let mut bounded = colink::driver::NodeConfig::default();
    bounded.max_unread_payloads = MAX;
    let bob = Manager::builder()
        .adapter(air.adapter("bob", Position::new(3.0, 0.0)))
        .node_config(bounded)
        .device_id(DeviceId::from_bytes([2; 16]))
        .seed(2)
        .build()
        .await
        .unwrap();
    let (sa, sb) = connect(&alice, &bob, "com.example.flood").await;
    let resolved = Arc::new(Mutex::new(0usize));
    let sender = {
        let (alice, resolved) = (alice.clone(), resolved.clone());
        // All at once (pipelined): distinct tiny messages, the index as text.
        tokio::spawn(futures::future::join_all((0..SENT).map(move |i| {
            let (alice, resolved) = (alice.clone(), resolved.clone());
            async move {
                alice.send_message(sa, &i.to_string()).await.unwrap();
                *resolved.lock().unwrap() += 1;
            }
        })))
    };
    tokio::time::sleep(Duration::from_secs(30)).await;
    let stalled = *resolved.lock().unwrap();
    // What Bob's engine took before its link stopped reading: the unread ones, plus what the transport and
    // the node's queue hold.
    assert!(stalled < SENT, "every send resolved although Bob's app read nothing");
    assert!(stalled as u64 <= MAX + colink::driver::NODE_EVENT_QUEUE as u64 + 100, "{stalled} resolved");
    let mut events = bob.events(sb).unwrap();
    let mut got = Vec::new();
    while got.len() < SENT {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await.unwrap() {
            Some(Event::ReceiveMessage { msg, .. }) => got.push(msg.parse::<usize>().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    sender.await.unwrap();
    // Concurrent sends have no order among themselves; each arrives exactly once.
    got.sort_unstable();
    assert_eq!(got, (0..SENT).collect::<Vec<_>>());
    assert_eq!(*resolved.lock().unwrap(), SENT);
}
