//! Files as a first-class payload, on the simulator: streamed from a reader into a writer the receiving app
//! chose, progress on both sides, back-pressure from a slow writer, cancel and refusal from either side with
//! the reason reaching the other, sizes and hashes enforced against a lying sender, link drops invisible, and
//! a transfer resumed in a new session from what the receiver kept.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use colink::api::{ConnectOptions, Permission};
use colink::files::{FileOffer, FileSink, FileSource, FileTransfer, MIN_CHUNK, ResumeKey, TransferId};
use colink::{Caller, ErrorKind, Event, Manager, PeerInfo, SessionId};
use colink_sim::SimAir;
use futures::StreamExt;
use tokio::io::AsyncWrite;

#[path = "common/devices.rs"]
mod devices;
use devices::manager;

fn share() -> Caller {
    Caller::new("com.example.share", "entry", "MainAbility").grant(Permission::DistributedDatasync)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A writer the test can look into, that can be held shut (a slow disk) or made to fail (a full one).
#[derive(Clone, Default)]
struct Disk {
    state: Arc<Mutex<DiskState>>,
}

#[derive(Default)]
struct DiskState {
    bytes: Vec<u8>,
    /// Writes wait while this is set.
    stuck: bool,
    /// Writes fail once this many bytes are written.
    full_at: Option<usize>,
    shut_down: bool,
    waker: Option<std::task::Waker>,
}

impl Disk {
    fn bytes(&self) -> Vec<u8> {
        self.state.lock().unwrap().bytes.clone()
    }
    fn len(&self) -> usize {
        self.state.lock().unwrap().bytes.len()
    }
    fn set_stuck(&self, stuck: bool) {
        let mut s = self.state.lock().unwrap();
        s.stuck = stuck;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
    fn full_at(self, n: usize) -> Self {
        self.state.lock().unwrap().full_at = Some(n);
        self
    }
}

impl AsyncWrite for Disk {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut s = self.state.lock().unwrap();
        if s.stuck {
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if s.full_at.is_some_and(|n| s.bytes.len() + buf.len() > n) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device")));
        }
        s.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.lock().unwrap().shut_down = true;
        Poll::Ready(Ok(()))
    }
}

struct Pair {
    air: SimAir,
    radios: (colink_sim::SimAdapter, colink_sim::SimAdapter),
    alice: Manager,
    bob: Manager,
    sa: SessionId,
    sb: SessionId,
    bob_events: colink::api::EventStream,
}

async fn pair(seed: u64) -> Pair {
    pair_on(SimAir::new(seed)).await
}

async fn pair_on(air: SimAir) -> Pair {
    let (alice, ra) = manager(&air, "alice", 0.0, 1).await;
    let (bob, rb) = manager(&air, "bob", 2.0, 2).await;
    let (sa, sb, bob_events) = session(&alice, &bob).await;
    Pair { air, radios: (ra, rb), alice, bob, sa, sb, bob_events }
}

impl Pair {
    /// Alice offers `source`; Bob's app accepts it into `disk`. Returns (Alice's, Bob's) transfer.
    async fn transfer(&mut self, source: FileSource, disk: &Disk) -> (FileTransfer, FileTransfer) {
        let sending = self.alice.send_file(self.sa, source).await.unwrap();
        let offer = next_offer(&mut self.bob_events).await;
        assert_eq!(offer.transfer, sending.id());
        let receiving = self.bob.accept_file(self.sb, offer.transfer, FileSink::new(disk.clone())).await.unwrap();
        (sending, receiving)
    }
}

/// `data` as a source named `name`.
fn source(name: &str, data: &[u8]) -> FileSource {
    FileSource::new(name, data.len() as u64, io::Cursor::new(data.to_vec()))
}

async fn session(alice: &Manager, bob: &Manager) -> (SessionId, SessionId, colink::api::EventStream) {
    let mut requests = bob.incoming(&share()).unwrap();
    let bob2 = bob.clone();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let sb = bob2.create_session(&share(), "share", request.peer.clone(), ConnectOptions::default()).unwrap();
        let events = bob2.events(sb).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
        (sb, events)
    });
    let peer = PeerInfo::new(bob.device_id().to_string(), "com.example.share", "entry", "MainAbility");
    let sa = alice.create_session(&share(), "share", peer, ConnectOptions::default()).unwrap();
    assert!(alice.connect(sa).await.unwrap().is_connected);
    let (sb, events) = responder.await.unwrap();
    (sa, sb, events)
}

async fn next_offer(events: &mut colink::api::EventStream) -> FileOffer {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("an offer in time") {
            Some(Event::FileOffered { offer, .. }) => return offer,
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_file_streams_from_a_reader_into_the_receivers_writer_with_progress_on_both_sides() {
    let mut p = pair(1).await;
    let data = pattern(3 * 1024 * 1024 + 123, 7);
    let source = FileSource::new("holiday.raw", data.len() as u64, io::Cursor::new(data.clone()));
    let sending = p.alice.send_file(p.sa, source).await.unwrap();
    let mut sent_progress = sending.progress();
    let offer = next_offer(&mut p.bob_events).await;
    assert_eq!((offer.name.as_str(), offer.size, offer.transfer), ("holiday.raw", data.len() as u64, sending.id()));
    let disk = Disk::default();
    let receiving = p.bob.accept_file(p.sb, offer.transfer, FileSink::new(disk.clone())).await.unwrap();
    let mut received_progress = receiving.progress();
    // Progress moves on both sides while the transfer runs, and never backwards.
    let watch = tokio::spawn(async move {
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        loop {
            tokio::select! {
                r = sent_progress.changed() => match r {
                    Ok(()) => sent.push(*sent_progress.borrow_and_update()),
                    Err(_) => break,
                },
                r = received_progress.changed() => match r {
                    Ok(()) => got.push(*received_progress.borrow_and_update()),
                    Err(_) => break,
                },
            }
        }
        (sent, got)
    });
    let (a, b) = (sending.finish().await.unwrap(), receiving.finish().await.unwrap());
    assert_eq!(disk.bytes(), data, "the receiver's writer holds the file, byte for byte");
    assert!(disk.state.lock().unwrap().shut_down, "the writer was flushed and shut down before success");
    assert_eq!((a.sha256, a.size, a.resumed_from), (b.sha256, data.len() as u64, 0));
    let (sent, got) = watch.await.unwrap();
    for (side, updates) in [("sender", &sent), ("receiver", &got)] {
        assert!(updates.len() >= 10, "{side}: only {} progress updates", updates.len());
        assert!(updates.windows(2).all(|w| w[0].bytes <= w[1].bytes), "{side}: progress went backwards");
        let last = updates.last().unwrap();
        assert_eq!((last.bytes, last.total), (data.len() as u64, data.len() as u64), "{side}");
        let mid = updates[updates.len() / 2];
        assert!(mid.rate > 0.0 && mid.eta.is_some(), "{side}: no rate or ETA mid-transfer: {mid:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_writer_slows_its_sender_and_holds_no_more_than_the_receive_buffer() {
    let mut p = pair(2).await;
    let data = pattern(12 * 1024 * 1024, 3);
    let disk = Disk::default();
    let (sending, receiving) = p.transfer(source("big.bin", &data), &disk).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    disk.set_stuck(true);
    let written = disk.len();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The sender's bytes "held by the peer" stop within the receive buffer (4 MiB) past what was written, and
    // what Bob's side holds unwritten stays within it too.
    let held = sending.progress().borrow().bytes;
    let unread = p.bob.unread_bytes(p.sb).unwrap();
    assert!(held < data.len() as u64, "the sender finished although the writer is stuck");
    assert!(held - written as u64 <= 4 * 1024 * 1024 + 64 * 1024, "{held} held, {written} written");
    assert!(unread <= 4 * 1024 * 1024 + 65 * 64, "{unread} bytes unread");
    assert_eq!(disk.len(), written);
    disk.set_stuck(false);
    let (a, b) = (sending.finish().await.unwrap(), receiving.finish().await.unwrap());
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(disk.bytes(), data);
    assert_eq!(p.bob.unread_bytes(p.sb).unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn declining_cancelling_and_failed_writes_reach_the_other_side_with_their_reason() {
    let mut p = pair(3).await;
    let data = pattern(2 * 1024 * 1024, 9);
    let send = |name: &str| FileSource::new(name, data.len() as u64, io::Cursor::new(data.clone()));

    // Bob declines.
    let t = p.alice.send_file(p.sa, send("a.bin")).await.unwrap();
    let offer = next_offer(&mut p.bob_events).await;
    p.bob.reject_file(p.sb, offer.transfer, "not now").await.unwrap();
    let e = t.finish().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.message().contains("declined") && e.message().contains("not now"), "{e}");
    // The offer is gone: a second answer is an error, not a second transfer.
    let again = p.bob.accept_file(p.sb, offer.transfer, FileSink::new(Disk::default())).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotFound);

    // Bob's writer fails part-way: Alice's transfer fails with Bob's I/O error, Bob's with an I/O error.
    let (t, r) = p.transfer(send("b.bin"), &Disk::default().full_at(700_000)).await;
    let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
    assert_eq!((e.kind(), f.kind()), (ErrorKind::Refused, ErrorKind::Io), "{e} / {f}");
    assert!(e.message().contains("could not write") && e.message().contains("no space left"), "{e}");

    // Bob cancels part-way.
    let (t, r) = p.transfer(send("c.bin"), &Disk::default()).await;
    let mut progress = r.progress();
    progress.wait_for(|p| p.bytes > 500_000).await.unwrap();
    r.cancel();
    let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
    assert_eq!((e.kind(), f.kind()), (ErrorKind::Refused, ErrorKind::Cancelled), "{e} / {f}");
    assert!(e.message().contains("cancelled"), "{e}");

    // Alice cancels part-way, from elsewhere while her finish() waits (a Ctrl-C handler would).
    let (t, r) = p.transfer(send("d.bin"), &Disk::default()).await;
    let (mut progress, canceller) = (t.progress(), t.canceller());
    tokio::spawn(async move {
        progress.wait_for(|p| p.bytes > 500_000).await.unwrap();
        canceller.cancel();
    });
    let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
    assert_eq!((e.kind(), f.kind()), (ErrorKind::Cancelled, ErrorKind::Refused), "{e} / {f}");
    assert!(f.message().contains("sender stopped"), "{f}");

    // The session still carries everything after all that.
    p.alice.send_message(p.sa, "still here").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_source_shorter_or_longer_than_announced_fails_both_sides() {
    let mut p = pair(4).await;
    for (announced, actual) in [(1_000_000u64, 600_000usize), (600_000, 1_000_000)] {
        let reader = io::Cursor::new(pattern(actual, 1));
        let t = p.alice.send_file(p.sa, FileSource::new("liar.bin", announced, reader)).await.unwrap();
        let offer = next_offer(&mut p.bob_events).await;
        assert_eq!(offer.size, announced);
        let disk = Disk::default();
        let r = p.bob.accept_file(p.sb, offer.transfer, FileSink::new(disk.clone())).await.unwrap();
        let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
        assert_eq!((e.kind(), f.kind()), (ErrorKind::InvalidArgument, ErrorKind::Refused), "{e} / {f}");
        assert!(e.message().contains("announced"), "{e}");
        assert!(disk.len() as u64 <= announced);
    }
}

#[tokio::test(start_paused = true)]
async fn names_that_are_paths_are_refused_before_anything_is_sent() {
    let p = pair(5).await;
    for name in ["", ".", "..", "../etc/passwd", "a/b", "a\\b", "nul\0", "bell\u{7}", &"x".repeat(256)] {
        let e = p.alice.send_file(p.sa, FileSource::new(name, 1, io::Cursor::new(vec![0]))).await.unwrap_err();
        assert_eq!((e.kind(), e.argument()), (ErrorKind::InvalidArgument, Some("name")), "{name:?}: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_drop_mid_transfer_is_invisible() {
    let mut p = pair(6).await;
    let data = pattern(4 * 1024 * 1024, 5);
    let disk = Disk::default();
    let (t, r) = p.transfer(source("x.bin", &data), &disk).await;
    use colink_ble::Adapter;
    let (a, b) = (p.radios.0.address().address, p.radios.1.address().address);
    for at in [800_000, 1_800_000, 2_800_000] {
        r.progress().wait_for(|q| q.bytes > at).await.unwrap();
        assert!(p.air.faults().drop_links(a, b) > 0, "a link to drop at {at}");
    }
    let (a, b) = (t.finish().await.unwrap(), r.finish().await.unwrap());
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(disk.bytes(), data);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_cut_by_a_session_end_resumes_in_a_new_session_from_what_the_receiver_kept() {
    let mut p = pair(7).await;
    let data = pattern(3 * 1024 * 1024, 11);
    let key = ResumeKey::from_bytes([7; 16]);
    let source = || FileSource::new("resume.bin", data.len() as u64, io::Cursor::new(data.clone()));
    let t = p.alice.send_file(p.sa, source().with_resume_key(key)).await.unwrap();
    let offer = next_offer(&mut p.bob_events).await;
    assert_eq!(offer.resume_key, key);
    let disk = Disk::default();
    let r = p.bob.accept_file(p.sb, offer.transfer, FileSink::new(disk.clone())).await.unwrap();
    r.progress().wait_for(|q| q.bytes > 1_000_000).await.unwrap();
    p.alice.disconnect(p.sa).await.unwrap();
    let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
    assert!(matches!(e.kind(), ErrorKind::Disconnected(_)), "{e}");
    assert!(matches!(f.kind(), ErrorKind::Disconnected(_)), "{f}");
    let kept = disk.bytes();
    assert!(kept.len() >= 1_000_000 && kept.len() < data.len(), "{} bytes kept", kept.len());
    assert_eq!(kept[..], data[..kept.len()]);

    // A new session; the same content (same key) is offered again, and Bob resumes after what he kept.
    let (sa, sb, mut bob_events) = session(&p.alice, &p.bob).await;
    let t = p.alice.send_file(sa, source().with_resume_key(key)).await.unwrap();
    let offer = next_offer(&mut bob_events).await;
    assert_eq!(offer.resume_key, key);
    let rest = Disk::default();
    let sink = FileSink::resume(rest.clone(), kept.len() as u64, io::Cursor::new(kept.clone()));
    let r = p.bob.accept_file(sb, offer.transfer, sink).await.unwrap();
    let (a, b) = (t.finish().await.unwrap(), r.finish().await.unwrap());
    assert_eq!((a.resumed_from, b.resumed_from), (kept.len() as u64, kept.len() as u64));
    assert_eq!(a.sha256, b.sha256);
    let mut whole = kept.clone();
    whole.extend_from_slice(&rest.bytes());
    assert_eq!(whole, data, "kept bytes + resumed bytes = the file");
    assert_eq!(rest.len(), data.len() - kept.len(), "only the missing bytes crossed the air");

    // Kept bytes that are not the file's beginning are caught by the hash at the end, never delivered as good.
    let t = p.alice.send_file(sa, source().with_resume_key(key)).await.unwrap();
    let offer = next_offer(&mut bob_events).await;
    let wrong = vec![0u8; 500_000];
    let sink = FileSink::resume(Disk::default(), wrong.len() as u64, io::Cursor::new(wrong));
    let r = p.bob.accept_file(sb, offer.transfer, sink).await.unwrap();
    let (e, f) = (t.finish().await.unwrap_err(), r.finish().await.unwrap_err());
    assert_eq!((e.kind(), f.kind()), (ErrorKind::Corrupted, ErrorKind::Corrupted), "{e} / {f}");
    assert!(e.message().contains("hash"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_offer_is_declined_and_offers_are_bounded() {
    let mut p = pair(8).await;
    let t = p.alice.send_file(p.sa, FileSource::new("wait.bin", 10, io::Cursor::new(vec![1; 10]))).await.unwrap();
    let _offer = next_offer(&mut p.bob_events).await;
    let e = t.finish().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert!(e.message().contains("did not answer"), "{e}");
    // Nine offers at once: eight wait for Bob's app, the ninth is refused as busy.
    let mut transfers = Vec::new();
    for i in 0..9 {
        let name = format!("f{i}.bin");
        transfers.push(p.alice.send_file(p.sa, FileSource::new(name, 1, io::Cursor::new(vec![0]))).await.unwrap());
    }
    let last = transfers.pop().unwrap();
    let e = last.finish().await.unwrap_err();
    assert!(e.message().contains("no more files"), "{e}");
    let offers: Vec<TransferId> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(next_offer(&mut p.bob_events).await.transfer);
        }
        v
    };
    for (t, id) in transfers.into_iter().zip(offers) {
        let disk = Disk::default();
        p.bob.accept_file(p.sb, id, FileSink::new(disk.clone())).await.unwrap().finish().await.unwrap();
        t.finish().await.unwrap();
        assert_eq!(disk.bytes(), vec![0]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_hostile_sender_cannot_overrun_or_corrupt_a_file() {
    // Mallory speaks the file lane straight through the driver: chunks out of place, more than announced,
    // tiny chunks, a wrong hash. Bob's app gets each transfer's failure, never a "verified" file.
    use colink::driver::{Node, NodeConfig, NodeEvent};
    use colink::files::wire::{FileMsg, Status};
    use colink_proto::ChannelKind;
    let air = SimAir::new(9);
    let adapter = air.adapter("mallory", colink_sim::Position::new(0.0, 0.0));
    let mut config = NodeConfig::default();
    config.seed = Some(9);
    let (node, mut node_events) =
        Node::start(Arc::new(adapter), colink_ble::DeviceId::from_bytes([9; 16]), config).await.unwrap();
    let (bob, _) = manager(&air, "bob", 2.0, 2).await;
    let mut requests = bob.incoming(&share()).unwrap();
    let bob2 = bob.clone();
    let responder = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let sb = bob2.create_session(&share(), "share", request.peer.clone(), ConnectOptions::default()).unwrap();
        let events = bob2.events(sb).unwrap();
        bob2.accept_connect(sb, &request.token).await.unwrap();
        (sb, events)
    });
    let endpoint = |device: String| colink_proto::PeerInfo {
        device_id: device,
        bundle_name: "com.example.share".into(),
        module_name: "entry".into(),
        ability_name: "MainAbility".into(),
        service_name: "share".into(),
    };
    let (from, to) = (endpoint(node.device().to_string()), endpoint(bob.device_id().to_string()));
    let (link, key) = node.connect(from, to, ConnectOptions::default()).await.unwrap();
    loop {
        let NodeEvent { event, .. } = node_events.recv().await.expect("node events");
        if event == (colink_proto::Event::Connected { session: key }) {
            break;
        }
    }
    let (sb, mut bob_events) = responder.await.unwrap();
    let send = |m: FileMsg| {
        let node = node.clone();
        async move { node.send(link, key, m.lane(), m.encode()).await.unwrap() }
    };
    let block = Bytes::from(pattern(MIN_CHUNK, 1));
    let cases: Vec<(&str, Vec<FileMsg>)> = vec![
        (
            "a chunk out of place",
            vec![FileMsg::Chunk { id: TransferId::from_raw(1), offset: 4096, data: block.clone() }],
        ),
        (
            "more than announced",
            vec![
                FileMsg::Chunk { id: TransferId::from_raw(2), offset: 0, data: block.clone() },
                FileMsg::Chunk { id: TransferId::from_raw(2), offset: 4096, data: block.clone() },
            ],
        ),
        (
            "a tiny chunk before the end",
            vec![FileMsg::Chunk { id: TransferId::from_raw(3), offset: 0, data: block.slice(..10) }],
        ),
        (
            "a wrong hash",
            vec![
                FileMsg::Chunk { id: TransferId::from_raw(4), offset: 0, data: block.clone() },
                FileMsg::Chunk { id: TransferId::from_raw(4), offset: 4096, data: block.clone() },
                FileMsg::End { id: TransferId::from_raw(4), sha256: [0; 32] },
            ],
        ),
        (
            "ending early",
            vec![
                FileMsg::Chunk { id: TransferId::from_raw(5), offset: 0, data: block.clone() },
                FileMsg::End { id: TransferId::from_raw(5), sha256: [0; 32] },
            ],
        ),
    ];
    for (label, messages) in cases {
        let id = messages[0].id();
        let size = if label == "more than announced" { 5000 } else { 8192 };
        send(FileMsg::Offer { id, size, key: ResumeKey::from_bytes([0; 16]), name: "evil.bin".into() }).await;
        let offer = next_offer(&mut bob_events).await;
        assert_eq!(offer.transfer, id);
        let disk = Disk::default();
        let r = bob.accept_file(sb, id, FileSink::new(disk.clone())).await.unwrap();
        for m in messages {
            send(m).await;
        }
        let e = r.finish().await.expect_err(label);
        let kind = if label == "a wrong hash" { ErrorKind::Corrupted } else { ErrorKind::Refused };
        assert_eq!(e.kind(), kind, "{label}: {e}");
        assert!(disk.len() <= size as usize, "{label}");
        // Mallory hears why, as a RESULT with a failure status.
        let status = loop {
            let NodeEvent { event, .. } = node_events.recv().await.expect("node events");
            if let colink_proto::Event::Received { kind: ChannelKind::FileControl, payload, .. } = event
                && let Ok(FileMsg::Result { id: rid, status, .. }) = FileMsg::decode(&payload)
                && rid == id
            {
                break status;
            }
        };
        let expected = if label == "a wrong hash" { Status::HashMismatch } else { Status::Violation };
        assert_eq!(status, expected, "{label}");
    }
    // Names that are paths never reach Bob's app.
    send(FileMsg::Offer {
        id: TransferId::from_raw(9),
        size: 1,
        key: ResumeKey::from_bytes([0; 16]),
        name: "../x".into(),
    })
    .await;
    assert!(tokio::time::timeout(Duration::from_secs(2), bob_events.next()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_answer_never_waits_behind_the_answering_sides_own_chunks() {
    // Found by the soak (seeds 289, 703): Bob streams a big file to Alice over slow LE Coded while Alice
    // offers him a small one. His ACCEPT and his verdict travel on the session's file-control lane, not
    // behind his own queued chunks, so Alice's file is through long before his.
    let air = SimAir::builder(10).profile(colink_sim::PhyProfile::le_coded()).build();
    let mut p = pair_on(air).await;
    let mut alice_events = p.alice.events(p.sa).unwrap();
    let big = pattern(2 * 1024 * 1024, 4);
    let bobs = p
        .bob
        .send_file(p.sb, FileSource::new("big.bin", big.len() as u64, io::Cursor::new(big.clone())))
        .await
        .unwrap();
    let offer = next_offer(&mut alice_events).await;
    let alices_disk = Disk::default();
    let receiving_big = p.alice.accept_file(p.sa, offer.transfer, FileSink::new(alices_disk.clone())).await.unwrap();
    bobs.progress().wait_for(|q| q.bytes >= 256 * 1024).await.unwrap();
    // Bob's lane is full of his chunks now. Alice offers a small file; Bob accepts at once.
    let small = pattern(20_000, 5);
    let started = tokio::time::Instant::now();
    let alices = p
        .alice
        .send_file(p.sa, FileSource::new("small.bin", small.len() as u64, io::Cursor::new(small.clone())))
        .await
        .unwrap();
    let offer = next_offer(&mut p.bob_events).await;
    let bobs_disk = Disk::default();
    let receiving_small = p.bob.accept_file(p.sb, offer.transfer, FileSink::new(bobs_disk.clone())).await.unwrap();
    let (a, b) = (alices.finish().await.unwrap(), receiving_small.finish().await.unwrap());
    let took = started.elapsed();
    assert_eq!((a.sha256, bobs_disk.bytes()), (b.sha256, small));
    let big_done = bobs.progress().borrow().bytes;
    assert!(big_done < big.len() as u64, "Bob's big file finished first ({took:?}): the answer waited for it");
    // Virtual time, so exact: 0.78 s with the file-control lane; 3.0 s when the answers share the lane with
    // 4 queued chunks, 10.6 s with 16 (the first design).
    assert!(took < Duration::from_secs(2), "the small file took {took:?} beside the big one");
    bobs.finish().await.unwrap();
    receiving_big.finish().await.unwrap();
    assert_eq!(alices_disk.bytes(), big);
}
