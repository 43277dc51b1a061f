//! Shared helpers for the scenario tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use colink_ble::{
    Adapter, Advert, AdvertHandle, Agent, AgentRejected, AgentResult, BoxFuture, DeviceId, IoCapability, Link,
    LinkMode, LinkParams, Listener, Passkey, PeerAddress, ServiceFilter,
};
use colink_sim::SimAdapter;

/// A device id derived from a number.
pub fn id(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

/// Listens on `b`, advertises the PSM, connects from `a`, accepts on `b`.
pub async fn link_pair(
    a: &SimAdapter,
    b: &SimAdapter,
    mode: LinkMode,
    params: LinkParams,
) -> (Box<dyn Link>, Box<dyn Link>, Box<dyn Listener>, AdvertHandle) {
    let listener = b.listen(None, mode, params).await.expect("listen");
    let colink_ble::Port::L2cap(psm) = listener.port() else { panic!("expected a PSM") };
    let adv = b
        .advertise(Advert::new(id(2).short()).with_psm(psm).with_services(ServiceFilter::EMPTY.with("chat")))
        .await
        .expect("advertise");
    let (la, lb) = tokio::join!(a.connect(b.address(), listener.port(), mode, params), listener.accept());
    (la.expect("connect"), lb.expect("accept"), listener, adv)
}

/// What an agent saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub confirmed: Vec<Passkey>,
    pub displayed: Vec<Passkey>,
    pub requested: usize,
}

/// A scripted agent.
pub struct TestAgent {
    pub cap: IoCapability,
    pub accept: bool,
    pub typed: Option<Passkey>,
    /// Types what the other device displays, plus an offset (a typo when non-zero).
    pub copy_from: Option<(Arc<Mutex<Seen>>, u32)>,
    pub seen: Arc<Mutex<Seen>>,
}

impl TestAgent {
    pub fn new(cap: IoCapability) -> (Arc<Self>, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (Arc::new(Self { cap, accept: true, typed: None, copy_from: None, seen: seen.clone() }), seen)
    }

    pub fn typing(passkey: u32) -> (Arc<Self>, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let typed = Passkey::new(passkey);
        (
            Arc::new(Self {
                cap: IoCapability::KeyboardOnly,
                accept: true,
                typed,
                copy_from: None,
                seen: seen.clone(),
            }),
            seen,
        )
    }

    /// A keyboard whose user reads the other screen and types it with `offset` added.
    pub fn reading(display: Arc<Mutex<Seen>>, offset: u32) -> Arc<Self> {
        Arc::new(Self {
            cap: IoCapability::KeyboardOnly,
            accept: true,
            typed: None,
            copy_from: Some((display, offset)),
            seen: Arc::default(),
        })
    }

    pub fn refusing(cap: IoCapability) -> Arc<Self> {
        Arc::new(Self { cap, accept: false, typed: None, copy_from: None, seen: Arc::default() })
    }
}

impl Agent for TestAgent {
    fn io_capability(&self) -> IoCapability {
        self.cap
    }

    fn confirm_passkey(&self, _peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        self.seen.lock().unwrap().confirmed.push(passkey);
        let ok = self.accept;
        Box::pin(async move { if ok { Ok(()) } else { Err(AgentRejected) } })
    }

    fn request_passkey(&self, _peer: PeerAddress) -> BoxFuture<'_, AgentResult<Passkey>> {
        self.seen.lock().unwrap().requested += 1;
        let typed = self.typed;
        let copy = self.copy_from.clone();
        Box::pin(async move {
            let Some((display, offset)) = copy else { return typed.ok_or(AgentRejected) };
            let before = display.lock().unwrap().displayed.len();
            loop {
                if let Some(p) = display.lock().unwrap().displayed.get(before).copied() {
                    return Ok(Passkey::new_wrapping(p.value() + offset));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    }

    fn display_passkey(&self, _peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        self.seen.lock().unwrap().displayed.push(passkey);
        Box::pin(async { Ok(()) })
    }
}
