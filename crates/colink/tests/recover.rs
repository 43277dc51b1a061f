//! A node whose radio goes away under it (the simulator hub behind its adapter stops and comes back on the same
//! socket, as bluetoothd restarting does to a BlueZ adapter): it listens and advertises again, and a new session
//! is accepted; so does one whose adapter is powered off and on. With `RadioLoss::Stop` it reports the loss and
//! stops.
//!
//! The hub runs in real time, so the hub tests do too, each step bounded by [`WITHIN`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use colink::driver::{NodeConfig, RadioLoss, RadioState};
use colink::{Caller, Manager, PeerInfo, api::ConnectOptions, api::Permission};
use colink_ble::DeviceId;
use colink_sim::hub::{HubAdapter, HubServer};
use colink_sim::{Position, SimAir};
use tokio::sync::watch;

/// How long any one step may take.
const WITHIN: Duration = Duration::from_secs(20);

fn chat() -> Caller {
    Caller::new("com.example.chat", "entry", "MainAbility").grant(Permission::DistributedDatasync)
}

fn peer_of(m: &Manager) -> PeerInfo {
    PeerInfo::new(m.device_id().to_string(), "com.example.chat", "entry", "MainAbility")
}

/// A fresh socket path for this test.
fn socket(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colink-recover-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("hub.sock")
}

/// A Manager on the hub at `sock` as `name` at (`x`, 0), device id `[id; 16]`.
async fn manager(sock: &Path, name: &str, x: f64, id: u8, on_radio_loss: RadioLoss) -> Manager {
    let adapter = HubAdapter::connect(sock, name, Position::new(x, 0.0)).await.unwrap();
    let mut config = NodeConfig::default();
    config.on_radio_loss = on_radio_loss;
    Manager::builder()
        .adapter(adapter)
        .device_id(DeviceId::from_bytes([id; 16]))
        .node_config(config)
        .seed(u64::from(id))
        .build()
        .await
        .unwrap()
}

async fn until(radio: &mut watch::Receiver<RadioState>, state: RadioState) {
    tokio::time::timeout(WITHIN, radio.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("the radio did not become {state:?}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_hub_restarts_the_node_listens_again_and_accepts_a_new_session() {
    let sock = socket("restart");
    let first = HubServer::bind(SimAir::new(31), &sock).await.unwrap();
    let bob = manager(&sock, "bob", 3.0, 2, RadioLoss::Recover).await;
    let mut requests = bob.incoming(&chat()).unwrap();
    let mut radio = bob.radio_state();
    assert_eq!(*radio.borrow(), RadioState::Up);

    drop(first);
    until(&mut radio, RadioState::Recovering).await;
    let _second = HubServer::bind(SimAir::new(32), &sock).await.unwrap();
    until(&mut radio, RadioState::Up).await;

    // A device that joins the new hub finds bob and opens a session his app accepts.
    let alice = manager(&sock, "alice", 0.0, 1, RadioLoss::Recover).await;
    let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let sb = bob2.create_session(&chat(), "chat", request.peer.clone(), ConnectOptions::default()).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
    });
    let result = tokio::time::timeout(WITHIN, alice.connect(sa)).await.expect("connect in time").unwrap();
    assert!(result.is_connected, "{result:?}");
    tokio::time::timeout(WITHIN, responder).await.expect("accepted in time").unwrap();
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_radio_loss_stop_the_node_reports_the_loss_and_stops() {
    let sock = socket("stop");
    let hub = HubServer::bind(SimAir::new(33), &sock).await.unwrap();
    let bob = manager(&sock, "bob", 3.0, 2, RadioLoss::Stop).await;
    let mut radio = bob.radio_state();
    drop(hub);
    until(&mut radio, RadioState::Lost).await;
    bob.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_power_cycle_the_node_advertises_again_and_accepts_a_new_session() {
    use colink_ble::Adapter as _;
    let air = SimAir::new(34);
    let bob_radio = air.adapter("bob", Position::new(3.0, 0.0));
    let bob = Manager::builder()
        .adapter(bob_radio.clone())
        .device_id(DeviceId::from_bytes([2; 16]))
        .seed(2)
        .build()
        .await
        .unwrap();
    let mut requests = bob.incoming(&chat()).unwrap();
    let mut radio = bob.radio_state();

    bob_radio.set_powered(false).await.unwrap();
    until(&mut radio, RadioState::Recovering).await;
    bob_radio.set_powered(true).await.unwrap();
    until(&mut radio, RadioState::Up).await;

    let alice = Manager::builder()
        .adapter(air.adapter("alice", Position::new(0.0, 0.0)))
        .device_id(DeviceId::from_bytes([1; 16]))
        .seed(1)
        .build()
        .await
        .unwrap();
    let sa = alice.create_session(&chat(), "chat", peer_of(&bob), ConnectOptions::default()).unwrap();
    let bob2 = bob.clone();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let sb = bob2.create_session(&chat(), "chat", request.peer.clone(), ConnectOptions::default()).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
    });
    let result = alice.connect(sa).await.unwrap();
    assert!(result.is_connected, "{result:?}");
    responder.await.unwrap();
}
