//! The driver on the simulator: two nodes open sessions, exchange data, survive a dropped link, and report the
//! reference's codes when a peer is absent, the radio is off, or the link is gone for good.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink::driver::{LinkId, Node, NodeConfig, NodeEvent, NodeEvents, SendError};
use colink::engine::{ChannelKind, ConnectErrorCode, ConnectOptions, DisconnectReason, Event, PeerInfo, SessionKey};
use colink_ble::{Adapter, DeviceId};
use colink_sim::{Position, SimAdapter, SimAir};

fn app(device: DeviceId, name: &str) -> PeerInfo {
    PeerInfo {
        device_id: device.to_string(),
        bundle_name: format!("com.example.{name}"),
        module_name: "entry".into(),
        ability_name: "MainAbility".into(),
        service_name: "chat".into(),
    }
}

fn config(seed: u64) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.seed = Some(seed);
    c
}

async fn node(air: &SimAir, name: &str, x: f64, id: u8) -> (Node, NodeEvents, SimAdapter) {
    let adapter = air.adapter(name, Position::new(x, 0.0));
    let (node, events) =
        Node::start(Arc::new(adapter.clone()), DeviceId::from_bytes([id; 16]), config(u64::from(id))).await.unwrap();
    (node, events, adapter)
}

/// The next event matching `f`, failing after `within` of (virtual) time.
async fn wait_for(events: &mut NodeEvents, within: Duration, f: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    tokio::time::timeout(within, async {
        loop {
            let e = events.recv().await.expect("node alive");
            if f(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

/// a connects to b, b accepts: returns (a's link, a's session, b's link, b's session).
async fn open(
    a: &Node,
    ea: &mut NodeEvents,
    b: &Node,
    eb: &mut NodeEvents,
) -> (LinkId, SessionKey, LinkId, SessionKey) {
    let (la, sa) = a
        .connect(app(a.device(), "alpha"), app(b.device(), "beta"), ConnectOptions::default())
        .await
        .expect("request sent");
    let incoming = wait_for(eb, Duration::from_secs(15), |e| matches!(e.event, Event::IncomingConnect { .. })).await;
    let Event::IncomingConnect { token, from, .. } = incoming.event else { unreachable!() };
    assert_eq!(from.bundle_name, "com.example.alpha");
    assert_eq!(incoming.peer_device, a.device().to_string());
    let sb = b.accept(incoming.link, token).await.unwrap();
    wait_for(ea, Duration::from_secs(5), |e| e.event == Event::Connected { session: sa }).await;
    (la, sa, incoming.link, sb)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Collects `n` received payloads of `kind` on `session`.
async fn receive(events: &mut NodeEvents, session: SessionKey, kind: ChannelKind, n: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    while got.len() < n {
        let e = wait_for(
            events,
            Duration::from_secs(120),
            |e| matches!(&e.event, Event::Received { session: s, kind: k, .. } if *s == session && *k == kind),
        )
        .await;
        let Event::Received { payload, .. } = e.event else { unreachable!() };
        got.push(payload);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn sessions_open_and_carry_messages_and_data_both_ways() {
    let air = SimAir::new(1);
    let (a, mut ea, _) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, _) = node(&air, "b", 2.0, 2).await;
    let (la, sa, lb, sb) = open(&a, &mut ea, &b, &mut eb).await;

    let big = pattern(1 << 20, 7);
    let (r1, r2, got_b, got_a) = tokio::join!(
        a.send(la, sa, ChannelKind::Data, big.clone()),
        b.send(lb, sb, ChannelKind::Message, Bytes::from_static(b"hello from b")),
        receive(&mut eb, sb, ChannelKind::Data, 1),
        receive(&mut ea, sa, ChannelKind::Message, 1),
    );
    r1.unwrap();
    r2.unwrap();
    assert!(got_b[0] == big, "1 MiB arrived byte-identical");
    assert_eq!(&got_a[0][..], b"hello from b");
    assert_eq!(a.links().len(), 1, "one link per device pair");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_link_resumes_transparently() {
    let air = SimAir::new(2);
    let (a, mut ea, ada) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, adb) = node(&air, "b", 2.0, 2).await;
    let (la, sa, _lb, sb) = open(&a, &mut ea, &b, &mut eb).await;

    let data = pattern(600_000, 3);
    let faults = air.faults();
    let (sent, got, ()) = tokio::join!(
        a.send(la, sa, ChannelKind::Data, data.clone()),
        receive(&mut eb, sb, ChannelKind::Data, 1),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(faults.drop_links(ada.address().address, adb.address().address) > 0);
        },
    );
    sent.expect("the send completes despite the drop");
    assert!(got[0] == data, "delivered once, intact");
    // The application saw no disconnect; the link reported that it resumed.
    let mut resumed = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), ea.recv()).await {
        assert!(!matches!(e.event, Event::Disconnected { .. }), "unexpected {e:?}");
        resumed |= e.event == Event::LinkResumed;
    }
    assert!(resumed, "a resumed the link");
}

#[tokio::test(start_paused = true)]
async fn out_of_range_past_the_grace_period_disconnects_with_network_disconnected() {
    let air = SimAir::new(3);
    let (a, mut ea, _) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, adb) = node(&air, "b", 2.0, 2).await;
    let (la, sa, _lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    adb.move_to(Position::new(500.0, 0.0));
    let (ra, rb) = tokio::join!(
        wait_for(
            &mut ea,
            Duration::from_secs(30),
            |e| matches!(e.event, Event::Disconnected { session, .. } if session == sa)
        ),
        wait_for(
            &mut eb,
            Duration::from_secs(30),
            |e| matches!(e.event, Event::Disconnected { session, .. } if session == sb)
        ),
    );
    for e in [ra, rb] {
        assert!(matches!(e.event, Event::Disconnected { reason: DisconnectReason::NetworkDisconnected, .. }), "{e:?}");
    }
    let r = a.send(la, sa, ChannelKind::Message, Bytes::from_static(b"late")).await;
    assert!(matches!(r, Err(SendError::Rejected(_) | SendError::LinkClosed)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn connecting_to_an_absent_device_fails_with_system_internal_error() {
    let air = SimAir::new(4);
    let (a, _ea, _) = node(&air, "a", 0.0, 1).await;
    let started = tokio::time::Instant::now();
    let r = a
        .connect(app(a.device(), "alpha"), app(DeviceId::from_bytes([9; 16]), "ghost"), ConnectOptions::default())
        .await;
    let e = r.expect_err("nobody is there");
    assert_eq!(e.code, ConnectErrorCode::SystemInternalError);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "gave up after {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_powered_off_adapter_cannot_start_and_a_node_whose_radio_dies_reports_local_radio_off() {
    let air = SimAir::new(5);
    let adapter = air.adapter("off", Position::new(0.0, 0.0));
    adapter.set_powered(false).await.unwrap();
    let r = Node::start(Arc::new(adapter), DeviceId::from_bytes([5; 16]), config(5)).await;
    assert!(matches!(r, Err(colink::driver::StartError::PoweredOff)));

    let (a, _ea, ada) = node(&air, "a", 0.0, 1).await;
    ada.set_powered(false).await.unwrap();
    let e = a
        .connect(app(a.device(), "alpha"), app(DeviceId::from_bytes([2; 16]), "beta"), ConnectOptions::default())
        .await
        .expect_err("radio off");
    assert_eq!(e.code, ConnectErrorCode::LocalWifiNotOpen);
}

#[tokio::test(start_paused = true)]
async fn reject_reaches_the_initiator_with_its_reason() {
    let air = SimAir::new(6);
    let (a, mut ea, _) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, _) = node(&air, "b", 2.0, 2).await;
    let (_, sa) =
        a.connect(app(a.device(), "alpha"), app(b.device(), "beta"), ConnectOptions::default()).await.unwrap();
    let incoming =
        wait_for(&mut eb, Duration::from_secs(15), |e| matches!(e.event, Event::IncomingConnect { .. })).await;
    let Event::IncomingConnect { token, .. } = incoming.event else { unreachable!() };
    b.reject(incoming.link, token, ConnectErrorCode::PeerAppRejected, "busy".into()).await.unwrap();
    let e = wait_for(&mut ea, Duration::from_secs(5), |e| matches!(e.event, Event::ConnectFailed { .. })).await;
    assert_eq!(
        e.event,
        Event::ConnectFailed { session: sa, code: ConnectErrorCode::PeerAppRejected, reason: Some("busy".into()) }
    );
}

/// Bytes of a 50 MB transfer the receiver holds so far: tracked through `Received` events is all-or-nothing per
/// message, so the transfer is sent as 1 MB messages and the drop points are counted in messages.
const CHUNK: usize = 1 << 20;

#[tokio::test(start_paused = true)]
async fn drops_at_10_50_and_99_percent_of_a_50_mb_transfer_and_during_a_burst_lose_nothing() {
    let air = SimAir::new(21);
    let (a, mut ea, ada) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, adb) = node(&air, "b", 2.0, 2).await;
    let (la, sa, _lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    let (addr_a, addr_b) = (ada.address().address, adb.address().address);
    let faults = air.faults();
    let chunks: Vec<Bytes> = (0..50u8).map(|i| pattern(CHUNK, i)).collect();

    let sender = async {
        let sends = chunks.iter().map(|c| a.send(la, sa, ChannelKind::Data, c.clone()));
        let burst = (0..40u32).map(|i| a.send(la, sa, ChannelKind::Message, Bytes::from(format!("burst {i}"))));
        let (data, msgs) = tokio::join!(futures::future::join_all(sends), async {
            // The burst goes out around the middle of the transfer, across the second drop.
            tokio::time::sleep(Duration::from_secs(140)).await;
            futures::future::join_all(burst).await
        });
        data.into_iter().chain(msgs).collect::<Vec<_>>()
    };
    let receiver = async {
        let mut data = Vec::new();
        let mut msgs = Vec::new();
        let mut drops = 0;
        while data.len() < chunks.len() || msgs.len() < 40 {
            let e = wait_for(&mut eb, Duration::from_secs(600), |_| true).await;
            match e.event {
                Event::Received { session, kind: ChannelKind::Data, payload } if session == sb => {
                    data.push(payload);
                    // Drop the link as the 5th, 25th and 50th megabyte is being transferred.
                    if [4, 24, 49].contains(&data.len()) {
                        assert!(faults.drop_links(addr_a, addr_b) > 0);
                        drops += 1;
                    }
                }
                Event::Received { session, kind: ChannelKind::Message, payload } if session == sb => msgs.push(payload),
                Event::Disconnected { .. } => panic!("the application saw a disconnect"),
                _ => {}
            }
        }
        (data, msgs, drops)
    };
    let (results, (data, msgs, drops)) = tokio::join!(sender, receiver);
    assert!(results.iter().all(Result::is_ok), "every send completed");
    assert_eq!(drops, 3);
    assert_eq!(data.len(), 50, "exactly once");
    assert!(data.iter().zip(&chunks).all(|(got, sent)| got == sent), "identical and in order");
    let expected: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("burst {i}"))).collect();
    assert_eq!(msgs, expected, "the burst arrived complete, once, in order");
}

#[tokio::test(start_paused = true)]
async fn adapter_off_past_the_grace_period_fails_pending_sends() {
    let air = SimAir::new(22);
    let (a, mut ea, _) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, adb) = node(&air, "b", 2.0, 2).await;
    let (la, sa, _lb, _sb) = open(&a, &mut ea, &b, &mut eb).await;
    let (sent, disconnected) = tokio::join!(a.send(la, sa, ChannelKind::Data, pattern(4 << 20, 1)), async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        adb.set_powered(false).await.unwrap();
        wait_for(&mut ea, Duration::from_secs(60), |e| matches!(e.event, Event::Disconnected { .. })).await
    });
    assert!(matches!(sent, Err(SendError::Failed(_) | SendError::LinkClosed)), "{sent:?}");
    assert_eq!(disconnected.event, Event::Disconnected { session: sa, reason: DisconnectReason::NetworkDisconnected });
}

#[tokio::test(start_paused = true)]
async fn several_sessions_between_different_apps_share_one_link() {
    let air = SimAir::new(23);
    let (a, mut ea, _) = node(&air, "a", 0.0, 1).await;
    let (b, mut eb, _) = node(&air, "b", 2.0, 2).await;
    let mut pairs = Vec::new();
    for app_name in ["notes", "chat", "photos"] {
        let (la, sa) =
            a.connect(app(a.device(), app_name), app(b.device(), app_name), ConnectOptions::default()).await.unwrap();
        let incoming =
            wait_for(&mut eb, Duration::from_secs(15), |e| matches!(e.event, Event::IncomingConnect { .. })).await;
        let Event::IncomingConnect { token, to, .. } = incoming.event else { unreachable!() };
        assert_eq!(to.bundle_name, format!("com.example.{app_name}"));
        let sb = b.accept(incoming.link, token).await.unwrap();
        wait_for(&mut ea, Duration::from_secs(5), |e| e.event == Event::Connected { session: sa }).await;
        pairs.push((la, sa, incoming.link, sb));
    }
    assert_eq!(a.links().len(), 1, "one link carries every session");
    for (i, (la, sa, _, _)) in pairs.iter().enumerate() {
        a.send(*la, *sa, ChannelKind::Data, pattern(100_000, i as u8)).await.unwrap();
    }
    for (i, (_, _, _, sb)) in pairs.iter().enumerate() {
        let got = receive(&mut eb, *sb, ChannelKind::Data, 1).await;
        assert!(got[0] == pattern(100_000, i as u8), "session {i} got its own bytes");
    }
}
