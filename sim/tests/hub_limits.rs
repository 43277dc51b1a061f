//! The simulator hub against a careless or hostile local user: its socket is owner-only, it never removes a file
//! that is not a stale socket, and a client that never reads its replies (or floods it) is cut off without
//! hurting the others.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use colink_ble::Adapter;
use colink_sim::hub::{HubAdapter, HubServer, MAX_QUEUED_BYTES};
use colink_sim::{Position, SimAir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("colink-hub-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn the_socket_is_owner_only() {
    let d = dir("mode");
    let sock = d.join("air.sock");
    let _hub = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the hub socket is {mode:o}");
    // No temporary socket left beside it.
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from("air.sock")]);
}

#[tokio::test]
async fn only_a_stale_socket_is_ever_replaced() {
    let d = dir("stale");
    // A regular file where the socket should go: refused, left intact.
    let file = d.join("notes.txt");
    std::fs::write(&file, "precious").unwrap();
    let err = HubServer::bind(SimAir::new(1), &file).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // A live hub's socket: refused, and the live hub keeps serving.
    let sock = d.join("air.sock");
    let live = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let err = HubServer::bind(SimAir::new(2), &sock).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    let a = HubAdapter::connect(&sock, "a", Position::new(0.0, 0.0)).await.unwrap();
    assert!(a.is_powered().await.unwrap());
    drop(a);
    // A stale socket (its hub gone without cleaning up) is replaced.
    std::mem::forget(live); // leaves the socket file behind, as a killed hub does
    let stale = d.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let _hub = HubServer::bind(SimAir::new(3), &stale).await.unwrap();
    let b = HubAdapter::connect(&stale, "b", Position::new(0.0, 0.0)).await.unwrap();
    assert!(b.is_powered().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_the_others_carry_on() {
    let d = dir("flood");
    let sock = d.join("air.sock");
    let _hub = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let good = HubAdapter::connect(&sock, "good", Position::new(0.0, 0.0)).await.unwrap();

    let mut evil = tokio::net::UnixStream::connect(&sock).await.unwrap();
    evil.write_all(b"{\"t\":\"hello\",\"name\":\"evil\",\"x\":1.0,\"y\":0.0}\n").await.unwrap();
    // Requests whose replies it never reads: the replies pile up on the hub until the bound cuts it off.
    let request = |id: u64| format!("{{\"t\":\"req\",\"id\":{id},\"req\":{{\"op\":\"is_powered\"}}}}\n");
    let reply_len = "{\"t\":\"reply\",\"id\":100000,\"reply\":{\"r\":\"bool\",\"value\":true}}\n".len();
    let needed = (MAX_QUEUED_BYTES / reply_len) as u64 * 3;
    let mut cut_off = false;
    let mut id = 0;
    while id < needed {
        let batch: String = (id..id + 1000).map(request).collect();
        id += 1000;
        match tokio::time::timeout(Duration::from_secs(10), evil.write_all(batch.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Err(_) => panic!("the hub stopped reading the flooding client instead of cutting it off"),
        }
        // The well-behaved client is served all along.
        if id % 50_000 == 0 {
            assert!(good.is_powered().await.unwrap());
        }
    }
    if !cut_off {
        // The hub closed its end: what is left in our receive buffer, then end of stream.
        let mut sink = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match evil.read(&mut sink).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        cut_off = closed.unwrap_or(false);
    }
    assert!(cut_off, "the flooding client was never disconnected");
    assert!(good.is_powered().await.unwrap(), "the other client is still served");
}
