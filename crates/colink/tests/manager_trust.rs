//! Trust through the public `Manager` on the simulator: devices of one account connect without a question,
//! a device of another account (or none) is refused during the handshake with a clear reason and the victim's
//! app never hears of it, and strangers pair by comparing six digits on both sides — after which the key is
//! pinned and sessions need no further question.

use std::time::Duration;

use colink::api::{ConnectOptions, Permission};
use colink::trust::{Account, Security, Strangers, TrustKind};
use colink::{Caller, Event, Manager, PeerInfo};
use colink_sim::{Position, SimAir};
use futures::StreamExt;

fn notes() -> Caller {
    Caller::new("com.example.notes", "entry", "EntryAbility").grant(Permission::DistributedDatasync)
}

async fn device(air: &SimAir, name: &str, x: f64, security: Security) -> Manager {
    let adapter = air.adapter(name, Position::new(x, 0.0));
    let label = format!("{name}'s laptop");
    Manager::builder().adapter(adapter).security(security).device_name(label).build().await.expect("a manager")
}

fn secret(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Bob's notes app accepts every request and reports the first message it receives.
fn accept_and_receive(bob: &Manager) -> tokio::task::JoinHandle<Option<String>> {
    let mut requests = bob.incoming(&notes()).expect("incoming");
    let bob = bob.clone();
    tokio::spawn(async move {
        let request = requests.next().await?;
        let session = bob.create_session(&notes(), "notes", request.peer.clone(), ConnectOptions::default()).ok()?;
        let mut events = bob.events(session).ok()?;
        bob.accept_connect(session, &request.token).await.ok()?;
        loop {
            match events.next().await? {
                Event::ReceiveMessage { msg, .. } => return Some(msg),
                _ => continue,
            }
        }
    })
}

async fn connect(alice: &Manager, bob: &Manager) -> (colink::SessionId, colink::api::ConnectResult) {
    let peer = PeerInfo::new(bob.device_id().to_string(), "com.example.notes", "entry", "EntryAbility");
    let session = alice.create_session(&notes(), "notes", peer, ConnectOptions::default()).expect("a session");
    (session, alice.connect(session).await.expect("connect"))
}

#[tokio::test(start_paused = true)]
async fn devices_of_one_account_connect_without_asking() {
    let air = SimAir::new(21);
    let account = Account::from_secret([3; 16]);
    let alice = device(&air, "alice", 0.0, Security::from_secret(secret(1)).with_account(Some(account.clone()))).await;
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2)).with_account(Some(account))).await;
    assert_eq!(alice.device_id(), Security::from_secret(secret(1)).device_id(), "the id is the key's");
    let received = accept_and_receive(&bob);
    let (session, result) = connect(&alice, &bob).await;
    assert!(result.is_connected, "{result:?}");
    alice.send_message(session, "same account").await.expect("send");
    assert_eq!(received.await.expect("bob"), Some("same account".into()));
    // Each remembers the other as an account member, under the name it gave at connect.
    let known = bob.trusted_devices();
    assert_eq!(known.len(), 1);
    assert_eq!((known[0].device_id, known[0].trust), (alice.device_id(), TrustKind::Account));
    assert_eq!(known[0].name.as_deref(), Some("alice's laptop"));
    assert_eq!(alice.trusted_devices()[0].name.as_deref(), Some("bob's laptop"));
}

#[tokio::test(start_paused = true)]
async fn another_account_is_refused_in_the_handshake_and_the_victim_hears_nothing() {
    let air = SimAir::new(22);
    let ours = Account::from_secret([4; 16]);
    let theirs = Account::from_secret([5; 16]);
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2)).with_account(Some(ours))).await;
    let mut requests = bob.incoming(&notes()).expect("incoming");
    for (name, security, why) in [
        ("mallory", Security::from_secret(secret(9)).with_account(Some(theirs)), "not in the same account"),
        ("stranger", Security::from_secret(secret(8)), "does not accept pairing"),
    ] {
        let intruder = device(&air, name, 1.0, security).await;
        let (_, result) = connect(&intruder, &bob).await;
        assert!(!result.is_connected, "{name}: {result:?}");
        let reason = result.reason.clone().unwrap_or_default();
        assert!(reason.contains(why), "{name}: the initiator is told why: {reason}");
        intruder.shutdown().await;
    }
    // Bob's app never saw a request.
    let nothing = tokio::time::timeout(Duration::from_secs(5), requests.next()).await;
    assert!(nothing.is_err(), "the victim's app heard of a refused device: {nothing:?}");
    assert!(bob.trusted_devices().is_empty());
}

#[tokio::test(start_paused = true)]
async fn strangers_pair_by_comparing_six_digits_then_connect_without_asking() {
    let air = SimAir::new(23);
    let alice = device(&air, "alice", 0.0, Security::from_secret(secret(1)).strangers(Strangers::Ask)).await;
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2)).strangers(Strangers::Ask)).await;
    let mut alice_asks = alice.trust_requests().expect("alice's trust requests");
    let mut bob_asks = bob.trust_requests().expect("bob's trust requests");
    let (alice_id, bob_id) = (alice.device_id(), bob.device_id());
    // Both people look at their screens and confirm.
    let bob_side = tokio::spawn(async move {
        let request = bob_asks.recv().await.expect("bob is asked");
        let seen = (request.peer.device_id.clone(), request.code(), request.incoming);
        request.approve();
        (seen, bob_asks)
    });
    let alice_side = tokio::spawn(async move {
        let request = alice_asks.recv().await.expect("alice is asked");
        let seen = (request.peer.device_id.clone(), request.code(), request.incoming);
        request.approve();
        (seen, alice_asks)
    });
    alice.pair(bob_id).await.expect("paired");
    let ((bob_saw, _), (alice_saw, _)) = (bob_side.await.unwrap(), alice_side.await.unwrap());
    assert_eq!(bob_saw.0, alice_id.to_string());
    assert_eq!(alice_saw.0, bob_id.to_string());
    assert_eq!(bob_saw.1, alice_saw.1, "both screens show the same code");
    assert_eq!(bob_saw.1.len(), 6);
    assert!(bob_saw.2 && !alice_saw.2, "bob was dialled, alice dialled");
    assert_eq!(bob.trusted_devices()[0].trust, TrustKind::Paired);
    assert_eq!(alice.trusted_devices()[0].device_id, bob_id);
    // A session now needs no question.
    let received = accept_and_receive(&bob);
    let (session, result) = connect(&alice, &bob).await;
    assert!(result.is_connected, "{result:?}");
    alice.send_message(session, "paired").await.expect("send");
    assert_eq!(received.await.expect("bob"), Some("paired".into()));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_on_either_side_leaves_both_strangers() {
    let air = SimAir::new(24);
    let alice = device(&air, "alice", 0.0, Security::from_secret(secret(1)).strangers(Strangers::Ask)).await;
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2)).strangers(Strangers::Ask)).await;
    let mut alice_asks = alice.trust_requests().expect("alice's trust requests");
    let mut bob_asks = bob.trust_requests().expect("bob's trust requests");
    tokio::spawn(async move {
        while let Some(r) = bob_asks.recv().await {
            r.refuse();
        }
    });
    tokio::spawn(async move {
        while let Some(r) = alice_asks.recv().await {
            r.approve();
        }
    });
    let err = alice.pair(bob.device_id()).await.expect_err("bob said no");
    assert!(err.message().contains("refused"), "{err}");
    assert!(alice.trusted_devices().is_empty() && bob.trusted_devices().is_empty());
    // And with no account and no pairing, a session is refused.
    let (_, result) = connect(&alice, &bob).await;
    assert!(!result.is_connected, "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn adverts_carry_a_rotating_id_that_only_those_who_know_the_device_recognise() {
    use colink_ble::{Adapter, ScanEvent, ScanFilter, advert_slot};
    let air = SimAir::new(25);
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2))).await;
    let observer = air.adapter("observer", Position::new(1.0, 0.0));
    let mut scan = observer.scan(ScanFilter::default()).await.expect("scan");
    let heard = loop {
        if let Some(ScanEvent::DeviceFound { advert, .. }) = scan.next().await {
            break advert.short_id;
        }
    };
    let id = bob.device_id();
    let slot = advert_slot(std::time::SystemTime::now());
    assert!(id.advert_ids_around(slot).contains(&heard), "the advert carries this slot's id");
    assert_ne!(heard, id.short(), "not the stable id's prefix");
    // The next slots' ids are unrelated to this one (an observer cannot link them without the device id).
    let later: Vec<_> = (1..=4).map(|n| id.advert_id(slot + n)).collect();
    assert!(!later.contains(&heard));
    // A dialler that knows the id finds bob all the same.
    let alice = device(&air, "alice", 0.0, Security::from_secret(secret(1))).await;
    let (_, result) = connect(&alice, &bob).await;
    // (Strangers refuse each other; reaching the handshake is what shows the dial found the rotating advert.)
    assert!(result.trust.is_some(), "the dial reached bob: {result:?}");
}

/// Two apps share one adapter (as `colink` processes on one laptop share hci0): a stranger's refused attempt
/// makes the peer back off that adapter's address for a second. The account member dialling right after is told
/// "busy" (not a silent close) and dials again once the back-off passed: it connects, and nobody waits on a
/// dead transport.
#[tokio::test(start_paused = true)]
async fn a_dialler_told_busy_dials_again_after_the_back_off() {
    let air = SimAir::new(29);
    let account = Account::from_secret([6; 16]);
    let bob = device(&air, "bob", 2.0, Security::from_secret(secret(2)).with_account(Some(account.clone()))).await;
    let received = accept_and_receive(&bob);
    let shared: std::sync::Arc<dyn colink_ble::Adapter> =
        std::sync::Arc::new(air.adapter("laptop", Position::new(0.0, 0.0)));
    let build = |security: Security| Manager::builder().shared_adapter(shared.clone()).security(security).build();
    let mallory = build(Security::from_secret(secret(9))).await.expect("mallory");
    let alice = build(Security::from_secret(secret(1)).with_account(Some(account))).await.expect("alice");
    let (_, refused) = connect(&mallory, &bob).await;
    assert!(!refused.is_connected, "{refused:?}");
    let started = tokio::time::Instant::now();
    let (session, result) = connect(&alice, &bob).await;
    assert!(result.is_connected, "the account member connects after the back-off: {result:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "it was told busy first and waited");
    alice.send_message(session, "after the back-off").await.expect("send");
    assert_eq!(received.await.expect("bob"), Some("after the back-off".into()));
}
