//! Authenticated links on the simulator: devices of one account open sessions with nothing readable on the air;
//! other accounts, unknown devices and impostors are refused during the handshake with a typed error at the
//! dialler and no event at the victim; pairing needs the same code approved on both sides; a hostile peer can
//! neither take over a device's link nor be mistaken for the device that was dialled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink::driver::{
    ConnectFailure, LinkId, Node, NodeConfig, NodeEvent, NodeEvents, SecurityConfig, TransportPreference, TrustRequest,
};
use colink_ble::{
    Adapter, AdapterError, Advert, AdvertHandle, Agent, BoxFuture, CloseReason, ConnectError, DeviceId, Link,
    LinkError, LinkMode, LinkParams, Listener, Mtu, PairingError, PeerAddress, Port, ScanEvent, ScanFilter, ScanStream,
    ShortDeviceId,
};
use colink_proto::secure::{
    AccountOnly, HandshakeMode, Keypair, PinOrAsk, SecureConfig, SecureError, SecureEvent, SecureHandshake,
    TrustPolicy, device_id_bytes,
};
use colink_proto::{
    ChannelKind, Config, ConnectOptions, Connection, Event, PeerInfo, Role, SeededEntropy, SessionKey, Transport,
};
use colink_sim::{Position, SimAdapter, SimAir};
use futures::StreamExt;

const SECRET: &[u8] = b"TOP-SECRET-PAYLOAD-c0ffee";

fn app(device: &str, name: &str) -> PeerInfo {
    PeerInfo {
        device_id: device.to_owned(),
        bundle_name: format!("com.example.{name}"),
        module_name: "entry".into(),
        ability_name: "MainAbility".into(),
        service_name: "chat".into(),
    }
}

fn keys(seed: u64) -> Keypair {
    Keypair::generate(&mut SeededEntropy::new(seed))
}

fn security(
    seed: u64,
    account: Option<[u8; 32]>,
    policy: Arc<Mutex<dyn TrustPolicy>>,
    pairing: bool,
) -> SecurityConfig {
    let mut secure = SecureConfig::new(keys(seed));
    secure.account = account;
    secure.accept_pairing = pairing;
    SecurityConfig::new(secure, policy)
}

fn account_only(seed: u64, account: [u8; 32]) -> SecurityConfig {
    security(seed, Some(account), Arc::new(Mutex::new(AccountOnly)), false)
}

/// Every byte any tapped adapter's links sent.
type Capture = Arc<Mutex<Vec<u8>>>;

async fn node(
    air: &SimAir,
    name: &str,
    x: f64,
    seed: u64,
    security: SecurityConfig,
    capture: Option<Capture>,
) -> (Node, NodeEvents) {
    node_over(air, name, x, seed, security, capture, TransportPreference::LeCoc).await
}

async fn node_over(
    air: &SimAir,
    name: &str,
    x: f64,
    seed: u64,
    security: SecurityConfig,
    capture: Option<Capture>,
    transport: TransportPreference,
) -> (Node, NodeEvents) {
    let sim = air.adapter(name, Position::new(x, 0.0));
    let adapter: Arc<dyn Adapter> = match capture {
        Some(log) => Arc::new(Tap { inner: Arc::new(sim), log }),
        None => Arc::new(sim),
    };
    let mut config = NodeConfig::default();
    config.seed = Some(seed);
    config.security = Some(security);
    config.transport = transport;
    let (node, events) = Node::start(adapter, DeviceId::from_bytes([seed as u8; 16]), config).await.unwrap();
    (node, events)
}

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

/// Asserts `events` stays silent for `d`.
async fn silent(events: &mut NodeEvents, d: Duration) {
    if let Ok(Some(e)) = tokio::time::timeout(d, events.recv()).await {
        panic!("unexpected event at the victim: {e:?}");
    }
}

/// a opens a session to b, b accepts: (a's link, a's session, b's link, b's session).
async fn open(
    a: &Node,
    ea: &mut NodeEvents,
    b: &Node,
    eb: &mut NodeEvents,
) -> (LinkId, SessionKey, LinkId, SessionKey) {
    let (la, sa) = a
        .connect(app(&a.device().to_string(), "alpha"), app(&b.device().to_string(), "beta"), ConnectOptions::default())
        .await
        .expect("request sent");
    let incoming = wait_for(eb, Duration::from_secs(15), |e| matches!(e.event, Event::IncomingConnect { .. })).await;
    let Event::IncomingConnect { token, .. } = incoming.event else { unreachable!() };
    assert_eq!(incoming.peer_device, a.device().to_string());
    let sb = b.accept(incoming.link, token).await.unwrap();
    wait_for(ea, Duration::from_secs(5), |e| e.event == Event::Connected { session: sa }).await;
    (la, sa, incoming.link, sb)
}

async fn receive(events: &mut NodeEvents, session: SessionKey) -> Bytes {
    let e = wait_for(
        events,
        Duration::from_secs(60),
        |e| matches!(&e.event, Event::Received { session: s, .. } if *s == session),
    )
    .await;
    let Event::Received { payload, .. } = e.event else { unreachable!() };
    payload
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn connect_err(a: &Node, to: &str) -> ConnectFailure {
    a.connect(app(&a.device().to_string(), "alpha"), app(to, "beta"), ConnectOptions::default())
        .await
        .expect_err("refused")
}

#[tokio::test(start_paused = true)]
async fn same_account_sessions_work_and_the_air_carries_no_plaintext() {
    let air = SimAir::new(31);
    let capture: Capture = Arc::default();
    let (a, mut ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), Some(capture.clone())).await;
    let (b, mut eb) = node(&air, "b", 2.0, 2, account_only(2, [5; 32]), Some(capture.clone())).await;
    // The node's id is the one its key proves, and the advert's short id is derivable from it.
    assert_eq!(a.device(), DeviceId::from_bytes(device_id_bytes(&keys(1).public())));
    let (la, sa, lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    let big: Bytes = SECRET.iter().copied().cycle().take(200_000).collect();
    let (r1, r2, got_b, got_a) = tokio::join!(
        a.send(la, sa, ChannelKind::Data, big.clone()),
        b.send(lb, sb, ChannelKind::Message, Bytes::from_static(SECRET)),
        receive(&mut eb, sb),
        receive(&mut ea, sa),
    );
    r1.unwrap();
    r2.unwrap();
    assert!(got_b == big);
    assert_eq!(&got_a[..], SECRET);
    let air_bytes = capture.lock().unwrap().clone();
    assert!(air_bytes.len() > 200_000, "captured {} bytes", air_bytes.len());
    for needle in [&SECRET[..10], b"com.example.alpha".as_slice(), a.device().to_string().as_bytes()] {
        assert!(!contains(&air_bytes, needle), "{:?} on the air", String::from_utf8_lossy(needle));
    }
}

#[tokio::test(start_paused = true)]
async fn same_account_sessions_work_over_br_edr_streams_too() {
    // Stream mode: handshake messages and the first sealed HELLO may share one read; nothing is lost.
    let air = SimAir::new(40);
    let capture: Capture = Arc::default();
    let br = TransportPreference::BrEdr;
    let (a, mut ea) = node_over(&air, "a", 0.0, 1, account_only(1, [5; 32]), Some(capture.clone()), br).await;
    let (b, mut eb) = node_over(&air, "b", 2.0, 2, account_only(2, [5; 32]), Some(capture.clone()), br).await;
    let (la, sa, lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    let (r1, r2, got_b, got_a) = tokio::join!(
        a.send(la, sa, ChannelKind::Message, Bytes::from_static(SECRET)),
        b.send(lb, sb, ChannelKind::Message, Bytes::from_static(b"and back")),
        receive(&mut eb, sb),
        receive(&mut ea, sa),
    );
    r1.unwrap();
    r2.unwrap();
    assert_eq!(&got_b[..], SECRET);
    assert_eq!(&got_a[..], b"and back");
    assert!(!contains(&capture.lock().unwrap(), &SECRET[..10]));
}

#[tokio::test(start_paused = true)]
async fn another_account_is_refused_in_the_handshake_with_no_event_at_the_victim() {
    let air = SimAir::new(32);
    let (a, _ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), None).await;
    let (b, mut eb) = node(&air, "b", 2.0, 2, account_only(2, [6; 32]), None).await;
    let e = connect_err(&a, &b.device().to_string()).await;
    assert_eq!(e.trust, Some(SecureError::NotInAccount), "{e:?}");
    assert!(a.links().is_empty() && b.links().is_empty());
    silent(&mut eb, Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_devices_are_refused_with_their_own_reasons() {
    let air = SimAir::new(33);
    // A stranger (no account: it dials in pairing mode, trusting whoever answers) to a device that does not
    // pair...
    let (a, _ea) = node(&air, "a", 0.0, 1, security(1, None, Arc::new(Mutex::new(TrustAll)), false), None).await;
    let (b, mut eb) = node(&air, "b", 2.0, 2, account_only(2, [6; 32]), None).await;
    let e = connect_err(&a, &b.device().to_string()).await;
    assert_eq!(e.trust, Some(SecureError::PairingNotAccepted), "{e:?}");
    silent(&mut eb, Duration::from_secs(2)).await;
    // ...and to one that pairs but whose policy admits no strangers.
    let (c, mut ec) = node(&air, "c", 1.0, 3, security(3, None, Arc::new(Mutex::new(AccountOnly)), true), None).await;
    let e = connect_err(&a, &c.device().to_string()).await;
    assert_eq!(e.trust, Some(SecureError::UnknownDeviceRefused), "{e:?}");
    silent(&mut ec, Duration::from_secs(2)).await;
    // A device with an account refuses account mode from a device without the same secret.
    let e = connect_err(&c, &b.device().to_string()).await;
    assert!(matches!(e.trust, Some(SecureError::PairingNotAccepted)), "{e:?}");
}

/// A dialler's policy that admits whoever answers (the peer's policy decides).
#[derive(Debug)]
struct TrustAll;

impl TrustPolicy for TrustAll {
    fn judge(
        &mut self,
        _: &colink_proto::secure::PeerIdentity,
        _: colink_proto::secure::Proof,
    ) -> colink_proto::secure::Verdict {
        colink_proto::secure::Verdict::Trusted
    }
}

async fn answer(requests: &mut colink::driver::TrustRequests, accept: bool) -> (String, u32) {
    let request: TrustRequest = tokio::time::timeout(Duration::from_secs(30), requests.recv())
        .await
        .expect("asked in time")
        .expect("node alive");
    let seen = (request.peer.device_id.clone(), request.sas);
    assert_eq!(request.code().len(), 6);
    if accept {
        request.approve();
    } else {
        request.refuse();
    }
    seen
}

fn pairing(seed: u64) -> SecurityConfig {
    security(seed, None, Arc::new(Mutex::new(PinOrAsk::default())), true)
}

#[tokio::test(start_paused = true)]
async fn pairing_shows_the_same_code_on_both_sides_and_needs_both_yes() {
    let air = SimAir::new(34);
    let (a, mut ea) = node(&air, "a", 0.0, 1, pairing(1), None).await;
    let (b, mut eb) = node(&air, "b", 2.0, 2, pairing(2), None).await;
    let (mut ta, mut tb) = (a.trust_requests().unwrap(), b.trust_requests().unwrap());
    assert!(a.trust_requests().is_none(), "taken once");
    let bid = b.device().to_string();
    let (paired, seen_a, seen_b) = tokio::join!(a.pair(&bid), answer(&mut ta, true), answer(&mut tb, true));
    paired.expect("paired");
    assert_eq!(seen_a.1, seen_b.1, "both sides show the same code");
    assert_eq!(seen_a.0, bid);
    assert_eq!(seen_b.0, a.device().to_string());
    // The link stands; sessions open on it without asking again.
    let (la, sa, _lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    a.send(la, sa, ChannelKind::Message, Bytes::from_static(b"paired")).await.unwrap();
    assert_eq!(&receive(&mut eb, sb).await[..], b"paired");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_on_either_side_leaves_no_link() {
    for refuse_dialler in [true, false] {
        let air = SimAir::new(35);
        let (a, _ea) = node(&air, "a", 0.0, 1, pairing(1), None).await;
        let (b, mut eb) = node(&air, "b", 2.0, 2, pairing(2), None).await;
        let (mut ta, mut tb) = (a.trust_requests().unwrap(), b.trust_requests().unwrap());
        let bid = b.device().to_string();
        let (paired, _, _) =
            tokio::join!(a.pair(&bid), answer(&mut ta, !refuse_dialler), answer(&mut tb, refuse_dialler));
        let e = paired.expect_err("refused");
        let expected = if refuse_dialler {
            SecureError::RefusedLocally(colink_proto::secure::RefuseReason::UserRefused)
        } else {
            SecureError::RefusedByPeer
        };
        assert_eq!(e.trust, Some(expected));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.links().is_empty() && b.links().is_empty());
        silent(&mut eb, Duration::from_secs(1)).await;
    }
}

/// A hostile device: advertises `short` on its own adapter and answers every link with a secure handshake under
/// its own key (in `account`).
async fn impostor(air: &SimAir, short: ShortDeviceId, key: Keypair, account: [u8; 32]) -> (SimAdapter, AdvertHandle) {
    let adapter = air.adapter("impostor", Position::new(1.0, 0.0));
    let listener = adapter.listen(None, LinkMode::Packet, LinkParams::default()).await.unwrap();
    let Port::L2cap(psm) = listener.port() else { panic!("no psm") };
    let advert = adapter.advertise(Advert::new(short).with_psm(psm)).await.unwrap();
    tokio::spawn(async move {
        while let Ok(link) = listener.accept().await {
            let link: Arc<dyn Link> = Arc::from(link);
            let mut config = SecureConfig::new(key.clone());
            config.account = Some(account);
            let t = transport(&*link);
            let mut hs = SecureHandshake::responder(now(), config, t, &mut SeededEntropy::new(77));
            let _ = pump(&link, &mut hs).await;
        }
    });
    (adapter, advert)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn transport(link: &dyn Link) -> Transport {
    let mode = match link.mode() {
        LinkMode::Stream => colink_frame::LinkMode::Stream,
        _ => colink_frame::LinkMode::Packet,
    };
    Transport { mode, mtu: colink_frame::Mtu::new(link.mtu().bytes()).unwrap() }
}

/// Runs a handshake over `link` (trusting whatever the policy of account members says).
async fn pump(
    link: &Arc<dyn Link>,
    hs: &mut SecureHandshake,
) -> Result<colink_proto::secure::Established, SecureError> {
    let mut policy = AccountOnly;
    loop {
        while let Some(f) = hs.poll_transmit() {
            link.send(f).await.map_err(|_| SecureError::TransportClosed)?;
        }
        match hs.poll_event() {
            Some(SecureEvent::Established(e)) => return Ok(*e),
            Some(SecureEvent::Failed(e)) => {
                while let Some(f) = hs.poll_transmit() {
                    let _ = link.send(f).await;
                }
                return Err(e);
            }
            Some(_) => continue,
            None => {}
        }
        let data = link.recv().await.map_err(|_| SecureError::TransportClosed)?;
        hs.handle_input(now(), &data, &mut policy);
    }
}

#[tokio::test(start_paused = true)]
async fn a_device_impersonating_the_dialled_one_is_refused_by_its_proven_key() {
    let air = SimAir::new(36);
    // The victim is known by its key's id; it is away. An impostor in the same account advertises its short id.
    let victim = keys(2);
    let victim_id = DeviceId::from_bytes(device_id_bytes(&victim.public()));
    let _imp =
        impostor(&air, victim_id.advert_id(colink_ble::advert_slot(std::time::SystemTime::now())), keys(66), [5; 32])
            .await;
    let (a, mut ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), None).await;
    let e = connect_err(&a, &victim_id.to_string()).await;
    let impostor_id = Keypair::device_id(&keys(66));
    assert_eq!(e.trust, Some(SecureError::UnexpectedPeer { expected: victim_id.to_string(), proven: impostor_id }));
    assert!(a.links().is_empty());
    // Once the real device is in range, the dial passes over the impostor's advert and reaches it.
    let (v, mut ev) = node(&air, "victim", 2.0, 2, account_only(2, [5; 32]), None).await;
    assert_eq!(v.device(), victim_id);
    let (la, sa, _lv, sv) = open(&a, &mut ea, &v, &mut ev).await;
    a.send(la, sa, ChannelKind::Message, Bytes::from_static(b"found you")).await.unwrap();
    assert_eq!(&receive(&mut ev, sv).await[..], b"found you");
}

#[tokio::test(start_paused = true)]
async fn a_peer_claiming_a_live_devices_id_cannot_touch_its_link() {
    let air = SimAir::new(37);
    let (a, mut ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), None).await;
    let (v, mut ev) = node(&air, "victim", 2.0, 2, account_only(2, [5; 32]), None).await;
    let (_lv, sv, la, sa) = open(&v, &mut ev, &a, &mut ea).await;

    // A hostile account member dials a with its own key, then claims the victim's id in its HELLO and in a
    // CONNECT.
    let (link, done) = hostile_dial(&air, &a, 66, [5; 32]).await;
    let t = transport(&*link);
    let victim_id = v.device().to_string();
    let mut fake =
        Connection::new(now(), Config::new(victim_id.clone()), Role::Initiator, Box::new(SeededEntropy::new(3)));
    fake.attach_secured(now(), t, done.peer, done.keys).unwrap();
    fake.connect(now(), app(&victim_id, "evil"), app(&a.device().to_string(), "beta"), ConnectOptions::default())
        .unwrap();
    for _ in 0..50 {
        while let Some(f) = fake.poll_transmit(now()) {
            let _ = link.send(f).await;
        }
        match tokio::time::timeout(Duration::from_millis(200), link.recv()).await {
            Ok(Ok(data)) => fake.handle_input(now(), data),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    // No app at a heard of it, and the victim's session still carries data both ways.
    let r = v.send(_lv, sv, ChannelKind::Message, Bytes::from_static(b"still mine")).await;
    r.unwrap();
    let got = wait_for(&mut ea, Duration::from_secs(10), |e| {
        assert!(!matches!(e.event, Event::IncomingConnect { .. }), "the impostor reached an app: {e:?}");
        matches!(&e.event, Event::Received { session, .. } if *session == sa)
    })
    .await;
    let Event::Received { payload, .. } = got.event else { unreachable!() };
    assert_eq!(&payload[..], b"still mine");
    a.send(la, sa, ChannelKind::Message, Bytes::from_static(b"to the real one")).await.unwrap();
    assert_eq!(&receive(&mut ev, sv).await[..], b"to the real one");
    assert!(!ev_saw_disconnect(&mut ev).await);
}

/// A hostile device (key from `seed`, in `account`) dials `target` and completes the secure handshake.
async fn hostile_dial(
    air: &SimAir,
    target: &Node,
    seed: u64,
    account: [u8; 32],
) -> (Arc<dyn Link>, colink_proto::secure::Established) {
    let hostile = air.adapter(&format!("hostile-{seed}"), Position::new(1.0, 0.0));
    let mut scan = hostile.scan(ScanFilter::default()).await.unwrap();
    let (peer, psm) = loop {
        match scan.next().await.expect("scan") {
            ScanEvent::DeviceFound { advert, peer, .. }
                if target
                    .device()
                    .advert_ids_around(colink_ble::advert_slot(std::time::SystemTime::now()))
                    .contains(&advert.short_id) =>
            {
                break (peer, advert.psm.unwrap());
            }
            _ => {}
        }
    };
    drop(scan);
    let link: Arc<dyn Link> =
        Arc::from(hostile.connect(peer, Port::L2cap(psm), LinkMode::Packet, LinkParams::default()).await.unwrap());
    let mut config = SecureConfig::new(keys(seed));
    config.account = Some(account);
    let t = transport(&*link);
    let mut hs =
        SecureHandshake::initiator(now(), config, HandshakeMode::Account, None, t, &mut SeededEntropy::new(9)).unwrap();
    let done = pump(&link, &mut hs).await.expect("an account member authenticates");
    (link, done)
}

#[tokio::test(start_paused = true)]
async fn a_peer_proposing_a_huge_idle_timeout_does_not_hold_a_slot() {
    let air = SimAir::new(38);
    let (a, _ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), None).await;
    let (link, done) = hostile_dial(&air, &a, 67, [5; 32]).await;
    let t = transport(&*link);
    // It says HELLO proposing the longest idle timeout and keep-alive interval the wire can carry...
    let mut config = Config::new(keys(67).device_id());
    config.idle_timeout = Duration::from_millis(u64::from(u32::MAX));
    config.keep_alive_interval = Duration::from_millis(u64::from(u32::MAX));
    let mut fake = Connection::new(now(), config, Role::Initiator, Box::new(SeededEntropy::new(4)));
    fake.attach_secured(now(), t, done.peer, done.keys).unwrap();
    while fake.state() != colink_proto::LinkState::Established {
        while let Some(f) = fake.poll_transmit(now()) {
            link.send(f).await.unwrap();
        }
        let data = tokio::time::timeout(Duration::from_secs(5), link.recv()).await.expect("answered").unwrap();
        fake.handle_input(now(), data);
    }
    assert_eq!(a.links().len(), 1);
    // ...then falls silent. Our own 30 s idle timeout (and the 10 s grace period, plus 5 s for a re-dial
    // started within it) end the link regardless.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(a.links().len(), 1, "alive within our idle timeout");
    tokio::time::sleep(Duration::from_secs(27)).await;
    assert!(a.links().is_empty(), "a silent peer does not keep a link slot: {:?}", a.links());
}

async fn ev_saw_disconnect(events: &mut NodeEvents) -> bool {
    let mut saw = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        saw |= matches!(e.event, Event::Disconnected { .. } | Event::LinkLost { .. });
    }
    saw
}

// ----- a tap on the air: an adapter whose links record what they send -----

struct Tap {
    inner: Arc<SimAdapter>,
    log: Capture,
}

struct TapLink {
    inner: Box<dyn Link>,
    log: Capture,
}

struct TapListener {
    inner: Box<dyn Listener>,
    log: Capture,
}

impl Adapter for Tap {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn address(&self) -> PeerAddress {
        self.inner.address()
    }
    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        self.inner.is_powered()
    }
    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.inner.set_powered(on)
    }
    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        self.inner.advertise(advert)
    }
    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        self.inner.scan(filter)
    }
    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let inner = self.inner.connect(peer, port, mode, params).await?;
            Ok(Box::new(TapLink { inner, log: self.log.clone() }) as Box<dyn Link>)
        })
    }
    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        Box::pin(async move {
            let inner = self.inner.listen(port, mode, params).await?;
            Ok(Box::new(TapListener { inner, log: self.log.clone() }) as Box<dyn Listener>)
        })
    }
    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.inner.set_agent(agent)
    }
    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        self.inner.pair(peer, agent)
    }
}

impl Listener for TapListener {
    fn port(&self) -> Port {
        self.inner.port()
    }
    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Link>, AdapterError>> {
        Box::pin(async move {
            let inner = self.inner.accept().await?;
            Ok(Box::new(TapLink { inner, log: self.log.clone() }) as Box<dyn Link>)
        })
    }
}

impl Link for TapLink {
    fn mode(&self) -> LinkMode {
        self.inner.mode()
    }
    fn mtu(&self) -> Mtu {
        self.inner.mtu()
    }
    fn peer(&self) -> PeerAddress {
        self.inner.peer()
    }
    fn params(&self) -> LinkParams {
        self.inner.params()
    }
    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>> {
        self.log.lock().unwrap().extend_from_slice(&data);
        self.inner.send(data)
    }
    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>> {
        self.inner.recv()
    }
    fn queued_bytes(&self) -> Option<usize> {
        self.inner.queued_bytes()
    }
    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        self.inner.drain_to(max)
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
    fn closed(&self) -> BoxFuture<'_, CloseReason> {
        self.inner.closed()
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_authenticated_link_resumes_with_a_new_handshake() {
    let air = SimAir::new(39);
    let (a, mut ea) = node(&air, "a", 0.0, 1, account_only(1, [5; 32]), None).await;
    let (b, mut eb) = node(&air, "b", 2.0, 2, account_only(2, [5; 32]), None).await;
    let (la, sa, _lb, sb) = open(&a, &mut ea, &b, &mut eb).await;
    let data: Bytes = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let faults = air.faults();
    let (addr_a, addr_b) = (a.adapter().address().address, b.adapter().address().address);
    let (sent, got, ()) = tokio::join!(a.send(la, sa, ChannelKind::Data, data.clone()), receive(&mut eb, sb), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(faults.drop_links(addr_a, addr_b) > 0);
    });
    sent.expect("the send completes despite the drop");
    assert!(got == data, "delivered once, intact, across two transports and two handshakes");
    let mut resumed = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), ea.recv()).await {
        assert!(!matches!(e.event, Event::Disconnected { .. }), "unexpected {e:?}");
        resumed |= e.event == Event::LinkResumed;
    }
    assert!(resumed, "a resumed the link");
}
