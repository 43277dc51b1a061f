//! The simulator hub against a careless or hostile local user: its socket is owner-only, it never removes a file
//! that is not a stale socket, and a client that never reads its replies (or floods it) is cut off without
//! hurting the others.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use colink_ble::Adapter;
use colink_sim::hub::{HubAdapter, HubServer, MAX_HANDLES, MAX_QUEUED_BYTES};
use colink_sim::{Position, SimAir};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

#[tokio::test]
async fn symlinks_and_directories_are_never_followed_or_removed() {
    let d = dir("symlink");
    // A symlink to a regular file: refused, the link and its target untouched.
    let target = d.join("target.txt");
    std::fs::write(&target, "precious").unwrap();
    let link = d.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = HubServer::bind(SimAir::new(1), &link).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    // A symlink to a stale socket: still refused (only a socket at the path itself is ever removed).
    let stale = d.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let to_stale = d.join("to-stale.sock");
    std::os::unix::fs::symlink(&stale, &to_stale).unwrap();
    let err = HubServer::bind(SimAir::new(1), &to_stale).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert!(std::fs::symlink_metadata(&to_stale).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(&stale).is_ok());
    // A dangling symlink: refused, left in place.
    let dangling = d.join("dangling.sock");
    std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
    assert!(HubServer::bind(SimAir::new(1), &dangling).await.is_err());
    assert!(std::fs::symlink_metadata(&dangling).is_ok());
    // A directory (even an empty one): refused, left in place.
    let sub = d.join("sub.sock");
    std::fs::create_dir(&sub).unwrap();
    let err = HubServer::bind(SimAir::new(1), &sub).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
    assert!(sub.is_dir());
    // Nothing else was created beside them (no private directory left behind by the refusals).
    let mut names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let expected: Vec<std::ffi::OsString> =
        ["dangling.sock", "link.sock", "stale.sock", "sub.sock", "target.txt", "to-stale.sock"]
            .into_iter()
            .map(Into::into)
            .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn a_live_hub_is_reported_as_already_running() {
    let d = dir("live");
    let sock = d.join("air.sock");
    let _live = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let err = HubServer::bind(SimAir::new(2), &sock).await.err().expect("refused");
    assert!(err.to_string().contains("already running"), "{err}");
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
}

/// A raw client speaking the hub protocol: writes lines, reads lines.
struct Raw {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Raw {
    async fn join(sock: &std::path::Path, name: &str) -> Self {
        let (read, write) = tokio::net::UnixStream::connect(sock).await.unwrap().into_split();
        let mut raw = Self { lines: BufReader::new(read).lines(), write };
        raw.send(&format!("{{\"t\":\"hello\",\"name\":\"{name}\",\"x\":0.0,\"y\":0.0}}\n")).await;
        let welcome = raw.next().await.expect("welcome");
        assert!(welcome.contains("\"welcome\""), "{welcome}");
        raw
    }

    async fn send(&mut self, text: &str) {
        self.write.write_all(text.as_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(10), self.lines.next_line()).await.expect("hub answers").unwrap()
    }

    /// The replies to `n` requests, by request id (scan events and other pushes skipped).
    async fn replies(&mut self, n: usize) -> std::collections::BTreeMap<u64, String> {
        let mut got = std::collections::BTreeMap::new();
        while got.len() < n {
            let line = self.next().await.expect("the hub kept the client");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["t"] == "reply" {
                got.insert(v["id"].as_u64().unwrap(), line);
            }
        }
        got
    }
}

fn scan_request(id: u64, scan: u64) -> String {
    format!(
        "{{\"t\":\"req\",\"id\":{id},\"req\":{{\"op\":\"scan\",\"scan\":{scan},\"filter\":{}}}}}\n",
        serde_json::to_string(&colink_ble::ScanFilter::default()).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_beyond_the_bound_fail_with_a_typed_error_even_when_requested_at_once() {
    let d = dir("scans");
    let sock = d.join("air.sock");
    let _hub = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let mut greedy = Raw::join(&sock, "greedy").await;
    // Many scans in one write: they are handled concurrently, and still only MAX_HANDLES succeed.
    let asked = MAX_HANDLES as u64 * 3;
    let batch: String = (1..=asked).map(|i| scan_request(i, i)).collect();
    greedy.send(&batch).await;
    let replies = greedy.replies(asked as usize).await;
    let ok = replies.values().filter(|l| l.contains("\"r\":\"ok\"")).count();
    let limited =
        replies.values().filter(|l| l.contains("\"e\":\"limit\"") && l.contains("\"what\":\"scans\"")).count();
    assert_eq!((ok, limited), (MAX_HANDLES, asked as usize - MAX_HANDLES), "{replies:?}");
    // A scan id already in use is refused rather than leaking the first scan.
    let ok_id = replies.iter().find(|(_, l)| l.contains("\"r\":\"ok\"")).map(|(id, _)| *id).unwrap();
    greedy.send(&format!("{{\"t\":\"req\",\"id\":1000,\"req\":{{\"op\":\"stop_scan\",\"scan\":{ok_id}}}}}\n")).await;
    greedy.replies(1).await;
    greedy.send(&scan_request(1001, ok_id + 10_000)).await;
    let reply = greedy.replies(1).await;
    assert!(reply[&1001].contains("\"r\":\"ok\""), "room again after a stop: {reply:?}");
    let taken = replies
        .iter()
        .filter(|(id, _)| **id != ok_id)
        .find(|(_, l)| l.contains("\"r\":\"ok\""))
        .map(|(id, _)| *id)
        .unwrap();
    let again = ok_id + 10_000;
    greedy.send(&format!("{{\"t\":\"req\",\"id\":1002,\"req\":{{\"op\":\"stop_scan\",\"scan\":{again}}}}}\n")).await;
    greedy.replies(1).await;
    greedy.send(&scan_request(1003, taken)).await;
    let reply = greedy.replies(1).await;
    assert!(reply[&1003].contains("in use"), "{reply:?}");

    // Through the adapter API the bound is an error the caller sees, and another client is unaffected.
    let other = HubAdapter::connect(&sock, "other", Position::new(1.0, 0.0)).await.unwrap();
    let mut scans = Vec::new();
    for _ in 0..MAX_HANDLES {
        scans.push(other.scan(colink_ble::ScanFilter::default()).await.expect("within the bound"));
    }
    let err = other.scan(colink_ble::ScanFilter::default()).await.err().expect("over the bound");
    assert!(err.to_string().contains("at most 16 scans"), "{err}");
    scans.pop();
    // Dropping a scan stops it with a request that is not waited for: room comes back once the hub handled it.
    let mut again = None;
    for _ in 0..100 {
        if let Ok(s) = other.scan(colink_ble::ScanFilter::default()).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "room again once a scan is dropped");
    // The greedy client is still connected and served.
    greedy.send("{\"t\":\"req\",\"id\":2000,\"req\":{\"op\":\"is_powered\"}}\n").await;
    assert!(greedy.replies(1).await[&2000].contains("true"));
}

#[tokio::test]
async fn a_client_is_one_device_however_often_it_says_hello() {
    let d = dir("devices");
    let sock = d.join("air.sock");
    let hub = HubServer::bind(SimAir::new(1), &sock).await.unwrap();
    let mut raw = Raw::join(&sock, "many").await;
    let hellos: String =
        (0..100).map(|i| format!("{{\"t\":\"hello\",\"name\":\"again-{i}\",\"x\":0.0,\"y\":0.0}}\n")).collect();
    raw.send(&hellos).await;
    raw.send("{\"t\":\"req\",\"id\":1,\"req\":{\"op\":\"is_powered\"}}\n").await;
    // The next line is the reply: no second welcome, so no second device.
    let line = raw.next().await.unwrap();
    assert!(line.contains("\"reply\""), "{line}");
    drop(hub);
}
