//! The scale scenario shared by `tests/scale.rs` and `examples/scale.rs`: `pairs` pairs of simulated devices,
//! `per_pair` sessions between distinct apps on each pair, all connected at once, then one message each way
//! checked on every session.

use std::time::Duration;

use colink::api::{ConnectOptions, Permission};
use colink::{Caller, Event, Manager, PeerInfo, SessionId};
use colink_ble::DeviceId;
use colink_sim::{Position, SimAir};
use futures::StreamExt;

/// What a run measured (virtual time).
#[derive(Debug)]
pub(crate) struct Report {
    /// Devices in the air.
    pub(crate) devices: usize,
    /// Sessions connected.
    pub(crate) sessions: usize,
    /// From the first `connect` to the last session connected.
    pub(crate) setup: Duration,
}

/// The sessions of one side of a pair, by app index.
type Sessions = Vec<(usize, SessionId)>;

fn app(j: usize) -> Caller {
    Caller::new(format!("com.example.app{j}"), "entry", "MainAbility").grant(Permission::DistributedDatasync)
}

/// Runs the scenario; `after_setup` is called once every session is connected (to measure memory).
pub(crate) async fn run(pairs: usize, per_pair: usize, mut after_setup: impl FnMut(usize)) -> Report {
    let air = SimAir::new(64);
    let mut managers = Vec::new();
    for i in 0..pairs * 2 {
        // Pairs stand 1 m apart; pairs are spread along a line.
        let x = (i / 2) as f64 * 3.0 + (i % 2) as f64;
        let id = DeviceId::from_bytes([(i / 256) as u8, (i % 256) as u8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        let m = Manager::builder()
            .adapter(air.adapter(&format!("dev{i}"), Position::new(x, 0.0)))
            .device_id(id)
            .seed(i as u64 + 1)
            .build()
            .await
            .expect("manager");
        managers.push(m);
    }
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pairs {
        let (a, b) = (managers[2 * p].clone(), managers[2 * p + 1].clone());
        // The responder: one request stream per app, each request accepted on a fresh session.
        let streams: Vec<_> = (0..per_pair).map(|j| b.incoming(&app(j)).expect("incoming")).collect();
        let responder = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut all = futures::stream::select_all(streams);
                let mut sessions = Vec::new();
                while sessions.len() < per_pair {
                    let r = all.next().await.expect("request");
                    let j: usize = r.local.bundle_name.trim_start_matches("com.example.app").parse().expect("app");
                    let s = b.create_session(&app(j), "scale", r.peer.clone(), ConnectOptions::default()).expect("s");
                    b.accept_connect(s, &r.token).await.expect("accept");
                    sessions.push((j, s));
                }
                sessions
            })
        };
        let initiator = tokio::spawn(async move {
            let connects = (0..per_pair).map(|j| {
                let a = a.clone();
                let peer =
                    PeerInfo::new(b.device_id().to_string(), format!("com.example.app{j}"), "entry", "MainAbility");
                async move {
                    let s = a.create_session(&app(j), "scale", peer, ConnectOptions::default()).expect("create");
                    let r = a.connect(s).await.expect("connect");
                    assert!(r.is_connected, "{r:?}");
                    (j, s)
                }
            });
            futures::future::join_all(connects).await
        });
        tasks.push((initiator, responder));
    }
    let mut established: Vec<(Sessions, Sessions)> = Vec::new();
    for (i, r) in tasks {
        established.push((i.await.expect("initiator"), r.await.expect("responder")));
    }
    let setup = started.elapsed();
    let sessions: usize = established.iter().map(|(i, _)| i.len()).sum();
    after_setup(sessions);

    // One message each way on every session.
    for (p, (ini, resp)) in established.iter().enumerate() {
        let (a, b) = (&managers[2 * p], &managers[2 * p + 1]);
        for &(j, sa) in ini {
            let sb = resp.iter().find(|(k, _)| *k == j).expect("matching session").1;
            let mut eb = b.events(sb).expect("events");
            let mut ea = a.events(sa).expect("events");
            a.send_message(sa, &format!("ping {j}")).await.expect("ping");
            b.send_message(sb, &format!("pong {j}")).await.expect("pong");
            assert_eq!(eb.next().await, Some(Event::ReceiveMessage { session_id: sb, msg: format!("ping {j}") }));
            assert_eq!(ea.next().await, Some(Event::ReceiveMessage { session_id: sa, msg: format!("pong {j}") }));
        }
    }
    Report { devices: managers.len(), sessions, setup }
}
