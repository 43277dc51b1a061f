//! The conformance checklist of api.md (from the reference module's own test suite), one test per case,
//! against a `Manager` on the simulator.

use colink::api::{ConnectErrorCode, ConnectOptions, Permission, StartOptionParams, validate};
use colink::{Caller, EventKind, Manager, PeerInfo, SessionId};
use colink_ble::DeviceId;
use colink_sim::{Position, SimAir};

fn app() -> Caller {
    Caller::new("com.example.notes", "entry", "EntryAbility").grant(Permission::DistributedDatasync)
}

fn system_app() -> Caller {
    app().system(true)
}

fn peer() -> PeerInfo {
    PeerInfo::new(DeviceId::from_bytes([2; 16]).to_string(), "com.example.notes", "entry", "EntryAbility")
}

async fn manager() -> Manager {
    let air = SimAir::new(99);
    Manager::builder()
        .adapter(air.adapter("dut", Position::new(0.0, 0.0)))
        .device_id(DeviceId::from_bytes([1; 16]))
        .seed(1)
        .build()
        .await
        .unwrap()
}

/// The ids the reference's tests use for "unknown": 10 and 123 (never created), -1 and 0 (invalid).
fn unknown_ids() -> Vec<Result<SessionId, colink::Error>> {
    [10i64, 123, -1, 0].into_iter().map(SessionId::try_from).collect()
}

/// Runs `op` on every unknown id (an invalid raw id fails already at conversion) and expects 401.
macro_rules! unknown_id_is_401 {
    ($name:ident, |$m:ident, $id:ident| $op:expr) => {
        #[tokio::test(start_paused = true)]
        async fn $name() {
            let $m = manager().await;
            for raw in unknown_ids() {
                let code = match raw {
                    Err(e) => e.code(),
                    Ok($id) => match $op {
                        Err(e) => e.code(),
                        Ok(_) => panic!("operation on unknown id {} succeeded", $id),
                    },
                };
                assert_eq!(code, 401);
            }
        }
    };
}

unknown_id_is_401!(connect_with_unknown_id, |m, id| m.connect(id).await);
unknown_id_is_401!(disconnect_with_unknown_id, |m, id| m.disconnect(id).await);
unknown_id_is_401!(destroy_with_unknown_id, |m, id| m.destroy_session(id).await);
unknown_id_is_401!(on_with_unknown_id, |m, id| m.on(EventKind::Connect, id, |_| {}));
unknown_id_is_401!(off_with_unknown_id, |m, id| m.off(EventKind::Disconnect, id));
unknown_id_is_401!(events_with_unknown_id, |m, id| m.events(id).map(|_| ()));
unknown_id_is_401!(accept_connect_with_unknown_id, |m, id| m.accept_connect(id, "token").await);
unknown_id_is_401!(send_message_with_unknown_id, |m, id| m.send_message(id, "hi").await);
unknown_id_is_401!(send_data_with_unknown_id, |m, id| m.send_data(id, bytes::Bytes::from_static(b"x")).await);

#[tokio::test(start_paused = true)]
async fn get_peer_info_with_unknown_id_is_none() {
    let m = manager().await;
    for id in [10i64, 123] {
        assert_eq!(m.peer_info(SessionId::try_from(id).unwrap()), None);
    }
}

#[tokio::test(start_paused = true)]
async fn create_session_returns_increasing_ids_from_100_and_get_peer_info_returns_the_peer() {
    let m = manager().await;
    let a = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    let b = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    assert_eq!(i32::from(a), 100);
    assert_eq!(i32::from(b), 101);
    assert_eq!(m.peer_info(a), Some(peer()));
    m.destroy_session(a).await.unwrap();
    assert_eq!(m.peer_info(a), None);
    assert_eq!(m.connect(a).await.unwrap_err().code(), 401, "a destroyed session is unknown");
}

#[tokio::test(start_paused = true)]
async fn accept_connect_with_empty_token() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    assert_eq!(m.accept_connect(s, "").await.unwrap_err().code(), 401);
}

#[tokio::test(start_paused = true)]
async fn accept_connect_with_a_token_nobody_issued() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    let e = m.accept_connect(s, "made-up").await.unwrap_err();
    assert_eq!((e.code(), e.argument()), (401, Some("token")));
}

#[tokio::test(start_paused = true)]
async fn reject_with_empty_token_or_reason() {
    let m = manager().await;
    assert_eq!(m.reject("", "no").await.unwrap_err().argument(), Some("token"));
    assert_eq!(m.reject("t", "").await.unwrap_err().argument(), Some("reason"));
    assert_eq!(m.reject("t", "no").await.unwrap_err().code(), 401, "unknown token");
}

#[tokio::test(start_paused = true)]
async fn create_with_an_empty_argument() {
    let m = manager().await;
    let o = ConnectOptions::default;
    let cases: Vec<(&str, Result<SessionId, colink::Error>)> = vec![
        ("service_name", m.create_session(&app(), "", peer(), o())),
        (
            "peer_info.device_id",
            m.create_session(&app(), "notes", PeerInfo { device_id: String::new(), ..peer() }, o()),
        ),
        (
            "peer_info.bundle_name",
            m.create_session(&app(), "notes", PeerInfo { bundle_name: String::new(), ..peer() }, o()),
        ),
        (
            "peer_info.module_name",
            m.create_session(&app(), "notes", PeerInfo { module_name: String::new(), ..peer() }, o()),
        ),
        (
            "peer_info.ability_name",
            m.create_session(&app(), "notes", PeerInfo { ability_name: String::new(), ..peer() }, o()),
        ),
    ];
    for (arg, result) in cases {
        let e = result.unwrap_err();
        assert_eq!((e.code(), e.argument()), (401, Some(arg)), "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn create_with_a_string_of_1024_bytes() {
    let m = manager().await;
    let ok = "n".repeat(1023);
    let long = "n".repeat(1024);
    assert!(m.create_session(&app(), &ok, peer(), ConnectOptions::default()).is_ok());
    assert_eq!(m.create_session(&app(), &long, peer(), ConnectOptions::default()).unwrap_err().code(), 401);
    let p = PeerInfo { bundle_name: "é".repeat(512), ..peer() }; // 1024 bytes, 512 characters
    assert_eq!(m.create_session(&app(), "notes", p, ConnectOptions::default()).unwrap_err().code(), 401);
}

#[tokio::test(start_paused = true)]
async fn create_with_both_stream_flags() {
    let m = manager().await;
    let options = ConnectOptions { need_send_stream: true, need_receive_stream: true, ..ConnectOptions::default() };
    assert_eq!(m.create_session(&system_app(), "notes", peer(), options).unwrap_err().code(), 401);
}

#[test]
fn start_options_outside_zero_and_one() {
    assert_eq!(validate::start_options(0).unwrap(), StartOptionParams::StartInForeground);
    assert_eq!(validate::start_options(1).unwrap(), StartOptionParams::StartInBackground);
    for bad in [-1, 2, 100] {
        assert_eq!(validate::start_options(bad).unwrap_err().code(), 401);
    }
}

#[tokio::test(start_paused = true)]
async fn create_without_the_distributed_datasync_permission() {
    let m = manager().await;
    let caller = app().revoke(Permission::DistributedDatasync);
    assert_eq!(m.create_session(&caller, "notes", peer(), ConnectOptions::default()).unwrap_err().code(), 201);
}

#[tokio::test(start_paused = true)]
async fn system_options_from_a_non_system_caller() {
    let m = manager().await;
    for options in [
        ConnectOptions { start_options: StartOptionParams::StartInBackground, ..ConnectOptions::default() },
        ConnectOptions { need_send_stream: true, ..ConnectOptions::default() },
        ConnectOptions { need_receive_stream: true, ..ConnectOptions::default() },
    ] {
        assert_eq!(m.create_session(&app(), "notes", peer(), options.clone()).unwrap_err().code(), 202);
        assert!(m.create_session(&system_app(), "notes", peer(), options).is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn system_events_from_a_non_system_caller() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    for kind in [EventKind::ReceiveImage, EventKind::CollaborateEvent] {
        assert_eq!(m.on(kind, s, |_| {}).unwrap_err().code(), 202);
        assert_eq!(m.off(kind, s).unwrap_err().code(), 202);
    }
    let sys = m.create_session(&system_app(), "notes", peer(), ConnectOptions::default()).unwrap();
    assert!(m.on(EventKind::CollaborateEvent, sys, |_| {}).is_ok());
}

#[tokio::test(start_paused = true)]
async fn on_replaces_and_off_removes_the_listener() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    m.on(EventKind::ReceiveMessage, s, |_| {}).unwrap();
    m.on(EventKind::ReceiveMessage, s, |_| {}).unwrap();
    m.off(EventKind::ReceiveMessage, s).unwrap();
    m.off(EventKind::ReceiveMessage, s).unwrap();
}

#[tokio::test(start_paused = true)]
async fn sending_on_a_session_that_is_not_connected() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    let e = m.send_message(s, "hello").await.unwrap_err();
    assert_eq!((e.code(), e.argument()), (401, Some("session_id")));
    assert_eq!(m.send_data(s, bytes::Bytes::from_static(b"x")).await.unwrap_err().code(), 401);
}

#[tokio::test(start_paused = true)]
async fn sending_an_empty_or_overlong_message() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    assert_eq!(m.send_message(s, "").await.unwrap_err().argument(), Some("msg"));
    assert_eq!(m.send_message(s, &"m".repeat(1024)).await.unwrap_err().argument(), Some("msg"));
}

#[tokio::test(start_paused = true)]
async fn connect_to_an_absent_peer_resolves_not_connected_with_system_internal_error() {
    let m = manager().await;
    let s = m.create_session(&app(), "notes", peer(), ConnectOptions::default()).unwrap();
    let r = m.connect(s).await.unwrap();
    assert!(!r.is_connected);
    assert_eq!(r.error_code, Some(ConnectErrorCode::SystemInternalError));
}

#[tokio::test(start_paused = true)]
async fn a_manager_without_a_powered_adapter_is_not_supported() {
    let air = SimAir::new(5);
    let adapter = air.adapter("off", Position::new(0.0, 0.0));
    use colink_ble::Adapter;
    adapter.set_powered(false).await.unwrap();
    let e = Manager::builder().adapter(adapter).build().await.unwrap_err();
    assert_eq!(e.code(), 801);
    let e = Manager::builder().build().await.unwrap_err();
    assert_eq!(e.code(), 801);
}
