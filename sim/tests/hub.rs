//! Two OS processes act as two laptops on one simulated air served by a hub.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{
    Adapter, Advert, Agent, AgentResult, BoxFuture, CloseReason, DeviceId, IoCapability, LinkMode, LinkParams, Passkey,
    PeerAddress, Port, ScanEvent, ScanFilter,
};
use colink_sim::hub::{HubAdapter, HubServer};
use colink_sim::{Position, SimAir};
use futures::StreamExt;

const CHILD_ENV: &str = "COLINK_SIM_HUB_SOCKET";
const SDUS: usize = 20;

/// Confirms every numeric comparison.
struct Confirm;
impl Agent for Confirm {
    fn io_capability(&self) -> IoCapability {
        IoCapability::DisplayYesNo
    }
    fn confirm_passkey(&self, _: PeerAddress, _: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn two_processes_exchange_data_through_the_hub() {
    let dir = std::env::temp_dir().join(format!("colink-sim-hub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("hub.sock");
    runtime().block_on(async {
        let hub = HubServer::bind(SimAir::new(5), &sock).await.unwrap();
        // Laptop A (this process) advertises and listens, through the socket like any client.
        let a = HubAdapter::connect(&sock, "laptop-a", Position::new(0.0, 0.0)).await.unwrap();
        a.set_agent(Some(Arc::new(Confirm))).await.unwrap();
        let listener = a.listen(None, LinkMode::Packet, LinkParams::default()).await.unwrap();
        let Port::L2cap(psm) = listener.port() else { panic!() };
        let _adv = a.advertise(Advert::new(DeviceId::from_bytes([1; 16]).short()).with_psm(psm)).await.unwrap();

        // Laptop B is another OS process: this test binary, running the ignored child test.
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hub_child_laptop_b", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &sock)
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let link = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.unwrap().unwrap();
        // Echo every SDU back.
        for _ in 0..SDUS {
            let d = link.recv().await.unwrap();
            link.send(d).await.unwrap();
        }
        assert_eq!(tokio::time::timeout(Duration::from_secs(30), link.closed()).await.unwrap(), CloseReason::PeerClose);
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "laptop-b process failed: {status}");
        drop(hub);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The second laptop; run by `two_processes_exchange_data_through_the_hub` in a child process.
#[test]
#[ignore = "child process of two_processes_exchange_data_through_the_hub"]
fn hub_child_laptop_b() {
    let sock = std::env::var_os(CHILD_ENV).expect("run by the parent test");
    runtime().block_on(async {
        let b = HubAdapter::connect(&sock, "laptop-b", Position::new(3.0, 0.0)).await.unwrap();
        let mut scan = b.scan(ScanFilter::default()).await.unwrap();
        let want = DeviceId::from_bytes([1; 16]).short();
        let (peer, rssi, advert) = loop {
            if let Some(ScanEvent::DeviceFound { peer, rssi, advert }) = scan.next().await
                && advert.short_id == want
            {
                break (peer, rssi, advert);
            }
        };
        drop(scan);
        assert!(rssi.dbm().is_some());
        // Pairing runs the agents of both processes.
        b.pair(peer, Arc::new(Confirm)).await.unwrap();
        let port = Port::L2cap(advert.psm.unwrap());
        let link = b.connect(peer, port, LinkMode::Packet, LinkParams::default()).await.unwrap();
        for i in 0..SDUS {
            let sdu = Bytes::from(vec![i as u8; 1000 + i]);
            link.send(sdu.clone()).await.unwrap();
            assert_eq!(link.recv().await.unwrap(), sdu);
        }
        // The hub answers a queue wait once its end of the link has put everything on the air.
        link.drain_to(0).await.unwrap();
        link.close().await;
    });
}

#[test]
fn an_overlong_protocol_line_disconnects_the_client_instead_of_buffering_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("colink-sim-hub-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("hub.sock");
    runtime().block_on(async {
        let _hub = HubServer::bind(SimAir::new(6), &sock).await.unwrap();
        let mut raw = tokio::net::UnixStream::connect(&sock).await.unwrap();
        // A well-formed hello, then 1 MiB without a newline.
        raw.write_all(b"{\"t\":\"hello\",\"name\":\"x\",\"x\":0.0,\"y\":0.0}\n").await.unwrap();
        let junk = vec![b'a'; 1 << 20];
        // The hub may close the socket while we are still writing; that is the expected outcome too.
        let _ = raw.write_all(&junk).await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut buf)).await;
        let welcome = String::from_utf8_lossy(&buf);
        assert!(read.is_ok(), "the hub kept the connection open");
        assert!(welcome.contains("welcome"), "got {welcome:?}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
