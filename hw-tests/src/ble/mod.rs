//! Tests through colink-ble's BlueZ backend only (`colink_ble::bluez::BluezAdapter` behind the `Adapter`,
//! `Listener` and `Link` traits): the same exchanges as the `raw::` tests, on the same adapters in the same run,
//! so their figures (`imp: "colink-ble"`) compare with raw's side by side.
//!
//! One-host set-up only (both ends in this process); the two-host set-up skips them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colink_ble::bluez::{Bluez, BluezAdapter};
use colink_ble::{
    Adapter, Advert, Agent, AgentResult, BoxFuture, CloseReason, ConnectError, DeviceId, IoCapability, Link, LinkError,
    LinkMode, LinkParams, Listener, Passkey, PeerAddress, Phy, Port, Psm, RfcommChannel, ScanEvent, ScanFilter,
    SecurityLevel, ServiceFilter,
};
use futures::StreamExt;

use crate::blelink::{BlePacket, BleStream};
use crate::cli::Setup;
use crate::echo::{self, STREAM_CHUNK};
use crate::harness::{Ctx, Figure, OrFail, Stop, Test, TestResult, ensure, within};

/// The `ble::` tests, in the order they run (pairing last: it leaves a bond until it cleans up).
pub(crate) const TESTS: &[Test] = &[
    Test {
        name: "ble::advertise_discover",
        about: "BluezAdapter advertises the colink advert (short id, PSM, services); the other discovers it decoded",
        run: |ctx| Box::pin(advertise_discover(ctx)),
    },
    Test {
        name: "ble::packet_link_echo",
        about: "packet link (L2CAP LE CoC) through the Link trait: hash-checked echo, SDUs kept, one-way goodput",
        run: |ctx| Box::pin(packet_link_echo(ctx)),
    },
    Test {
        name: "ble::stream_link_echo",
        about: "stream link (RFCOMM) through the Link trait: hash-checked echo, one-way goodput",
        run: |ctx| Box::pin(stream_link_echo(ctx)),
    },
    Test {
        name: "ble::pairing",
        about: "security High refused before pairing; numeric comparison through colink agents; High link after",
        run: |ctx| Box::pin(pairing(ctx)),
    },
];

/// The service name the suite's colink adverts carry in their service filter.
pub(crate) const SERVICE: &str = "colink-hw-tests";

/// Both adapters of the one-host set-up through colink-ble, powered, with no bond or cached advert between them.
pub(crate) struct Duo {
    #[allow(dead_code)]
    pub(crate) bluez: Bluez,
    /// Advertises, listens, accepts (hci0 in the rig).
    pub(crate) resp: Arc<BluezAdapter>,
    /// Discovers, connects, pairs (hci1 in the rig).
    pub(crate) init: Arc<BluezAdapter>,
}

impl Duo {
    /// Drops what earlier tests left between the two (a lingering LE link stops advertising, vm-rig.md).
    pub(crate) async fn forget_each_other(&self) {
        self.resp.forget(self.init.address()).await;
        self.init.forget(self.resp.address()).await;
    }
}

/// Opens both adapters of the one-host set-up, or skips naming what is missing.
pub(crate) async fn duo(ctx: &Ctx) -> Result<Duo, Stop> {
    let Setup::OneHost { responder, initiator } = &ctx.opts.setup else {
        return Err(Stop::Skip(
            "needs the one-host set-up (two adapters in this process): the ble:: and colink:: tests drive both \
             ends through colink's API and have no two-host mode yet"
                .into(),
        ));
    };
    let bluez = ctx.bluez().await?;
    let names = bluez.adapter_names().await.map_err(|e| {
        Stop::Skip(format!("needs bluetoothd (org.bluez) on the system D-Bus; listing adapters failed: {e}"))
    })?;
    for (name, role) in [(responder, "responder"), (initiator, "initiator")] {
        if !names.contains(name) {
            return Err(Stop::Skip(format!(
                "needs BlueZ adapter {name} for the {role} (colink-ble BluezAdapter); found [{}]",
                names.join(", ")
            )));
        }
    }
    let resp = Arc::new(bluez.adapter(responder).await.or_fail(&format!("open {responder}"))?);
    let init = Arc::new(bluez.adapter(initiator).await.or_fail(&format!("open {initiator}"))?);
    for a in [&resp, &init] {
        if !a.is_powered().await.or_fail("powered?")? {
            a.set_powered(true).await.or_fail(&format!("power on {}", a.name()))?;
        }
    }
    let duo = Duo { bluez, resp, init };
    duo.forget_each_other().await;
    Ok(duo)
}

/// A colink advert of a random device id carrying `psm` and the suite's service.
fn advert(psm: Psm) -> Advert {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&crate::advert::nonce().to_be_bytes());
    id[4..8].copy_from_slice(&crate::advert::nonce().to_be_bytes());
    Advert::new(DeviceId::from_bytes(id).short()).with_psm(psm).with_services(ServiceFilter::EMPTY.with(SERVICE))
}

/// Starts scanning on `scanner`, then advertises `want` on `advertiser`, and waits until the scan reports it.
/// Returns the advert's handle, the peer as discovered and how long it took.
///
/// Kernel race seen in the rig (btmon): when the peer already advertises as discovery starts, btvirt's report
/// reaches the kernel before discovery counts as active; it is dropped, and the controller's duplicate filter
/// hides the device for the rest of that discovery session (restarts hit the same race; 30 s without a find
/// happened). An advert that appears while discovery runs is reported at once, so the scan starts first.
async fn advertise_and_discover(
    advertiser: &BluezAdapter,
    scanner: &BluezAdapter,
    want: Advert,
) -> Result<(colink_ble::AdvertHandle, PeerAddress, Duration), Stop> {
    let target = advertiser.address();
    let mut scan = scanner
        .scan(ScanFilter::default().with_service(SERVICE))
        .await
        .or_fail(&format!("scan on {}", scanner.name()))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let handle = advertiser.advertise(want).await.or_fail("advertise")?;
    let (peer, took) = within(30, "discover the colink advert", async {
        let mut other = 0usize;
        loop {
            match scan.next().await {
                Some(
                    ScanEvent::DeviceFound { peer, rssi, advert } | ScanEvent::DeviceUpdated { peer, rssi, advert },
                ) if peer.address == target.address => {
                    if advert != want {
                        // A stale advert of an earlier test: keep looking.
                        other += 1;
                        continue;
                    }
                    println!(
                        "    {} found {peer} after {:?}: {advert:?}, RSSI {rssi} ({other} other sightings)",
                        scanner.name(),
                        start.elapsed()
                    );
                    return Ok((peer, start.elapsed()));
                }
                Some(_) => other += 1,
                None => return Err(Stop::Fail(format!("scan on {} ended", scanner.name()))),
            }
        }
    })
    .await?;
    Ok((handle, peer, took))
}

async fn advertise_discover(ctx: &Ctx) -> TestResult {
    let duo = duo(ctx).await?;
    let listener = duo.resp.listen(None, LinkMode::Packet, LinkParams::default()).await.or_fail("listen")?;
    let Port::L2cap(psm) = listener.port() else {
        return Err(Stop::Fail(format!("listener on {} is not an L2CAP PSM", listener.port())));
    };
    ensure((0x80..=0xff).contains(&psm.value()), || format!("listener PSM {psm} outside the LE dynamic range"))?;
    let want = advert(psm);
    ensure(want.to_ad_bytes().len() <= colink_ble::LEGACY_ADV_MAX, || "advert does not fit 31 bytes".into())?;
    let (_adv, peer, _) = advertise_and_discover(&duo.resp, &duo.init, want).await?;
    ensure(peer.address == duo.resp.address().address, || format!("found {peer}, expected {}", duo.resp.address()))?;
    // A scan filtered for a service the advert does not carry must not report it.
    let mut other =
        duo.init.scan(ScanFilter::default().with_service("not-hosted-by-the-advert-x")).await.or_fail("second scan")?;
    let leaked = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(ev) = other.next().await {
            if ev.peer().address == duo.resp.address().address
                && want.services.may_contain("not-hosted-by-the-advert-x")
            {
                continue;
            }
            if ev.peer().address == duo.resp.address().address {
                return Some(ev);
            }
        }
        None
    })
    .await;
    ensure(!matches!(leaked, Ok(Some(_))), || format!("service filter let the advert through: {leaked:?}"))?;
    Ok(())
}

/// Connects `init` to `resp`'s advertised packet listener at `params`; returns (responder link, initiator link).
async fn packet_pair(
    duo: &Duo,
    listener: &dyn Listener,
    psm: Psm,
    params: LinkParams,
) -> Result<(Arc<dyn Link>, Arc<dyn Link>), Stop> {
    let want = advert(psm);
    let (_adv, peer, _) = advertise_and_discover(&duo.resp, &duo.init, want).await?;
    let start = Instant::now();
    let (acc, conn) = within(30, "connect + accept", async {
        Ok(tokio::join!(listener.accept(), duo.init.connect(peer, Port::L2cap(psm), LinkMode::Packet, params)))
    })
    .await?;
    let b: Arc<dyn Link> = Arc::from(conn.or_fail("connect")?);
    let a: Arc<dyn Link> = Arc::from(acc.or_fail("accept")?);
    println!(
        "    packet link up in {:?}: MTU responder {} / initiator {}, {:?}",
        start.elapsed(),
        a.mtu().get(),
        b.mtu().get(),
        b.params()
    );
    Ok((a, b))
}

async fn packet_link_echo(ctx: &Ctx) -> TestResult {
    let duo = duo(ctx).await?;
    let listener = duo.resp.listen(None, LinkMode::Packet, LinkParams::default()).await.or_fail("listen")?;
    let Port::L2cap(psm) = listener.port() else { return Err(Stop::Fail("listener without a PSM".into())) };
    let (a, b) = packet_pair(&duo, &*listener, psm, LinkParams::default()).await?;
    ensure(a.mode() == LinkMode::Packet && b.mode() == LinkMode::Packet, || "links not in packet mode".into())?;
    // One SDU must fit both ends' MTU: the responder echoes SDU for SDU.
    let sdu = a.mtu().bytes().min(b.mtu().bytes());
    let detail = format!("MTU {}, SDU {sdu}", b.mtu().get());
    let responder = {
        let a = a.clone();
        async move {
            within(900, "responder", async {
                echo::packet_responder(&BlePacket(a), usize::from(u16::MAX)).await.or_fail("responder")
            })
            .await
        }
    };
    let initiator = async {
        let link = BlePacket(b.clone());
        let data = echo::pattern(ctx.opts.echo_bytes, 0x5eed_0101);
        let e = within(900, "echo", async {
            echo::packet_echo(&link, &data, sdu, usize::from(u16::MAX)).await.or_fail("echo")
        })
        .await?;
        ctx.figure(Figure {
            link: "l2cap-coc",
            imp: "colink-ble",
            what: "echo, each way",
            bytes: e.bytes,
            elapsed: e.elapsed,
            detail: detail.clone(),
        });
        let data = echo::pattern(ctx.opts.throughput_bytes, 0x5eed_0102);
        let s = within(900, "one-way", async { echo::packet_sink(&link, &data, sdu).await.or_fail("one-way") }).await?;
        ctx.figure(Figure {
            link: "l2cap-coc",
            imp: "colink-ble",
            what: "one-way goodput",
            bytes: s.bytes,
            elapsed: s.elapsed,
            detail: detail.clone(),
        });
        echo::packet_bye(&link).await.or_fail("bye")
    };
    tokio::try_join!(responder, initiator)?;
    // An orderly close reaches the peer as PeerClose.
    b.close().await;
    let ra = within(30, "responder sees the close", async { Ok(recv_closed(&*a).await) }).await?;
    let rb = b.closed().await;
    ensure(ra == CloseReason::PeerClose && rb == CloseReason::LocalClose, || {
        format!("close reasons: responder {ra:?} (want PeerClose), initiator {rb:?} (want LocalClose)")
    })?;
    drop(listener);
    duo.forget_each_other().await;
    Ok(())
}

/// Reads until the link reports closed.
async fn recv_closed(link: &dyn Link) -> CloseReason {
    loop {
        match link.recv().await {
            Ok(_) => continue,
            Err(LinkError::Closed(r)) => return r,
            Err(e) => return CloseReason::Other(e.to_string()),
        }
    }
}

async fn stream_link_echo(ctx: &Ctx) -> TestResult {
    let duo = duo(ctx).await?;
    let params = LinkParams::default().with_phy(Phy::BrEdr);
    let mut listener = None;
    for ch in (1..=30).rev() {
        let port = Port::Rfcomm(RfcommChannel::new(ch).or_fail("channel")?);
        match duo.resp.listen(Some(port), LinkMode::Stream, params).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(colink_ble::AdapterError::PortInUse(_)) => continue,
            Err(e) => return Err(Stop::Fail(format!("RFCOMM listen: {e}"))),
        }
    }
    let listener = listener.ok_or_else(|| Stop::Fail("no free RFCOMM channel".into()))?;
    let target = PeerAddress::br_edr(duo.resp.address().address);
    let start = Instant::now();
    let (acc, conn) = within(30, "connect + accept", async {
        Ok(tokio::join!(listener.accept(), duo.init.connect(target, listener.port(), LinkMode::Stream, params)))
    })
    .await?;
    let b: Arc<dyn Link> = Arc::from(conn.or_fail("RFCOMM connect")?);
    let a: Arc<dyn Link> = Arc::from(acc.or_fail("RFCOMM accept")?);
    ensure(a.mode() == LinkMode::Stream && b.mode() == LinkMode::Stream, || "links not in stream mode".into())?;
    println!("    stream link up on {} in {:?}", listener.port(), start.elapsed());
    let detail = format!("writes of {STREAM_CHUNK} B");
    let responder = {
        let a = a.clone();
        async move {
            let mut s = BleStream::new(a);
            within(900, "responder", async { echo::stream_responder(&mut s).await.or_fail("responder") }).await
        }
    };
    let initiator = async {
        let mut s = BleStream::new(b.clone());
        let data = echo::pattern(ctx.opts.echo_bytes, 0x5eed_0103);
        let e = within(900, "echo", async { echo::stream_echo(&mut s, &data).await.or_fail("echo") }).await?;
        ctx.figure(Figure {
            link: "rfcomm",
            imp: "colink-ble",
            what: "echo, each way",
            bytes: e.bytes,
            elapsed: e.elapsed,
            detail: detail.clone(),
        });
        let data = echo::pattern(ctx.opts.throughput_bytes, 0x5eed_0104);
        let o = within(900, "one-way", async { echo::stream_sink(&mut s, &data).await.or_fail("one-way") }).await?;
        ctx.figure(Figure {
            link: "rfcomm",
            imp: "colink-ble",
            what: "one-way goodput",
            bytes: o.bytes,
            elapsed: o.elapsed,
            detail: detail.clone(),
        });
        echo::stream_bye(&mut s).await.or_fail("bye")
    };
    tokio::try_join!(responder, initiator)?;
    b.close().await;
    let ra = within(30, "responder sees the close", async { Ok(recv_closed(&*a).await) }).await?;
    ensure(ra == CloseReason::PeerClose, || format!("responder saw {ra:?} after the initiator closed"))?;
    drop(listener);
    duo.forget_each_other().await;
    Ok(())
}

/// A DisplayYesNo colink agent that confirms and records the number it was shown.
#[derive(Default)]
pub(crate) struct Recorder {
    passkey: Mutex<Option<Passkey>>,
    asked: Mutex<Vec<String>>,
}

impl Recorder {
    fn confirmed(&self) -> Option<Passkey> {
        self.passkey.lock().ok().and_then(|p| *p)
    }
    fn note(&self, s: String) {
        if let Ok(mut v) = self.asked.lock() {
            v.push(s);
        }
    }
    fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Agent for Recorder {
    fn io_capability(&self) -> IoCapability {
        IoCapability::DisplayYesNo
    }
    fn confirm_just_works(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<()>> {
        self.note(format!("just works with {peer}"));
        Box::pin(async { Ok(()) })
    }
    fn display_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        self.note(format!("display {passkey} for {peer}"));
        if let Ok(mut p) = self.passkey.lock() {
            *p = Some(passkey);
        }
        Box::pin(async { Ok(()) })
    }
    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        self.note(format!("confirm {passkey} with {peer}"));
        if let Ok(mut p) = self.passkey.lock() {
            *p = Some(passkey);
        }
        Box::pin(async { Ok(()) })
    }
}

async fn pairing(ctx: &Ctx) -> TestResult {
    let duo = duo(ctx).await?;
    let high = LinkParams::default().with_security(SecurityLevel::High);
    let listener = duo.resp.listen(None, LinkMode::Packet, high).await.or_fail("listen at security High")?;
    let Port::L2cap(psm) = listener.port() else { return Err(Stop::Fail("listener without a PSM".into())) };
    let want = advert(psm);
    let (adv, peer, _) = advertise_and_discover(&duo.resp, &duo.init, want).await?;

    // Without a bond, security High cannot be had: the backend says "pair first" instead of a late EACCES.
    let early = within(30, "connect at High before pairing", async {
        Ok(duo.init.connect(peer, Port::L2cap(psm), LinkMode::Packet, high).await)
    })
    .await?;
    match early {
        Err(ConnectError::AuthenticationRequired) => println!("    before pairing: High refused with \"pair first\""),
        Err(e) => return Err(Stop::Fail(format!("connect at High before pairing: {e} (want AuthenticationRequired)"))),
        Ok(_) => return Err(Stop::Fail("a link at security High opened without a bond".into())),
    }

    let agent_r = Arc::new(Recorder::default());
    let agent_i = Arc::new(Recorder::default());
    // Nobody answers for the responder yet (as `colink serve` without --pairing-agent on a host with no desktop
    // agent): the initiator's own agent is not asked on the responder's behalf, and bluetoothd refuses. The raw
    // tests' agent (the host's default while registered) stands for a desktop agent: released here.
    ctx.rig.release_agent().await;
    let unanswered = within(60, "pair with no agent on the responder's side", async {
        Ok(duo.init.pair(peer, agent_i.clone()).await)
    })
    .await?;
    match unanswered {
        Ok(()) => return Err(Stop::Fail("a pairing was confirmed with no agent on the responder's side".into())),
        Err(e) => println!("    with no agent on the responder's side: refused ({e})"),
    }
    ensure(!duo.init.is_paired(peer).await && !duo.resp.is_paired(duo.init.address()).await, || {
        "a refused pairing left a bond".into()
    })?;
    duo.resp.set_agent(Some(agent_r.clone())).await.or_fail("set the responder's agent")?;
    // bluetoothd applies a new default agent's capabilities (and with them bondable mode, for every adapter of
    // this host) asynchronously; a pairing started in the same instant was sometimes made without bonding, and
    // the bond vanished with the link (both sides "not paired" seconds later). `colink serve --pairing-agent`
    // registers long before anyone pairs; the test waits as long.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    within(60, "pair", async { duo.init.pair(peer, agent_i.clone()).await.or_fail("pair") }).await?;
    println!(
        "    paired in {:?}; responder agent: {:?}; initiator agent: {:?}",
        start.elapsed(),
        agent_r.asked(),
        agent_i.asked()
    );
    let (kr, ki) = (agent_r.confirmed(), agent_i.confirmed());
    // BlueZ asks only the responder's agent to confirm the number (docs/bluez-backend.md); if the initiator's is
    // shown one too, it must be the same.
    ensure(kr.is_some() && ki.is_none_or(|k| Some(k) == kr), || {
        format!("numeric comparison: responder confirmed {kr:?}, initiator shown {ki:?}")
    })?;
    // The initiator's bond is in place when pair() returns; the responder's bluetoothd may publish its Paired
    // property a moment later: give it 3 s.
    let mut bonded = (false, false);
    for _ in 0..30 {
        bonded = (duo.init.is_paired(peer).await, duo.resp.is_paired(duo.init.address()).await);
        if bonded == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure(bonded == (true, true), || {
        format!(
            "pair() returned but bluetoothd has no bond on both sides within 3 s (initiator bonded: {}, responder: {})",
            bonded.0, bonded.1
        )
    })?;
    drop(adv);

    // With the bond, the High link opens and carries data.
    let (a, b) = packet_pair(&duo, &*listener, psm, high).await?;
    ensure(b.params().security >= SecurityLevel::High, || format!("link security {:?}", b.params().security))?;
    let sdu = a.mtu().bytes().min(b.mtu().bytes());
    let data = echo::pattern(256 * 1024, 0x5eed_0105);
    let (r, e) = tokio::join!(
        within(120, "responder", async {
            echo::packet_responder(&BlePacket(a.clone()), usize::from(u16::MAX)).await.or_fail("responder")
        }),
        within(120, "echo at High", async {
            let link = BlePacket(b.clone());
            let t = echo::packet_echo(&link, &data, sdu, usize::from(u16::MAX)).await.or_fail("echo")?;
            echo::packet_bye(&link).await.or_fail("bye")?;
            Ok(t)
        })
    );
    r?;
    let t = e?;
    println!("    256 KiB echoed at security High in {:?}", t.elapsed);
    b.close().await;

    // A bonded peer's link is encrypted by default: asked for at the default level (Low), both ends report at
    // least Medium, as the kernel reads the link's level.
    let plain =
        duo.resp.listen(None, LinkMode::Packet, LinkParams::default()).await.or_fail("listen at the default level")?;
    let Port::L2cap(psm) = plain.port() else { return Err(Stop::Fail("listener without a PSM".into())) };
    let (a, b) = packet_pair(&duo, &*plain, psm, LinkParams::default()).await?;
    let (ls, rs) = (b.params().security, a.params().security);
    println!("    default-level link to the bonded peer: initiator {ls:?}, responder {rs:?}");
    ensure(ls >= SecurityLevel::Medium, || format!("a link to a bonded peer at the default level is {ls:?}"))?;
    b.close().await;
    duo.resp.set_agent(None).await.or_fail("clear the agent")?;
    duo.forget_each_other().await;
    Ok(())
}
