//! Self-test of the BlueZ backend on two local adapters, through colink-ble's traits only.
//!
//! ```text
//! bluez_selftest [A [B]] [--bytes N]     # defaults: hci0 hci1, 10 MB
//! ```
//!
//! Steps: list and power-cycle the adapters; A advertises, B discovers the decoded advert; B pairs with A by
//! numeric comparison (both agents must see the same passkey); a packet link (L2CAP LE CoC) and a stream link
//! (RFCOMM) each echo N bytes, SHA-256-checked; close reasons (local close seen by the peer, adapter power-off,
//! advert gone → DeviceLost). Exits 0 when everything passed, 1 on a failure, and 0 with a `SKIP:` line when
//! there is no bluetoothd or fewer than two adapters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_ble::bluez::Bluez;
use colink_ble::{
    Adapter, Advert, Agent, AgentResult, BoxFuture, CloseReason, DeviceId, IoCapability, Link, LinkError, LinkMode,
    LinkParams, Passkey, PeerAddress, Phy, Port, RfcommChannel, ScanEvent, ScanFilter, SecurityLevel, ServiceFilter,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

type Res<T> = Result<T, String>;

#[tokio::main]
async fn main() {
    let mut names = Vec::new();
    let mut bytes = 10_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--bytes" {
            bytes = args.next().and_then(|n| n.parse().ok()).unwrap_or(bytes);
        } else {
            names.push(a);
        }
    }
    let bluez = match Bluez::new().await {
        Ok(b) => b,
        Err(e) => {
            println!("SKIP: needs bluetoothd on the D-Bus system bus and two adapters ({e})");
            return;
        }
    };
    let all = bluez.adapter_names().await.unwrap_or_default();
    let a_name = names.first().cloned().unwrap_or_else(|| "hci0".into());
    let b_name = names.get(1).cloned().unwrap_or_else(|| "hci1".into());
    if !all.contains(&a_name) || !all.contains(&b_name) {
        println!("SKIP: needs two Bluetooth adapters {a_name} and {b_name}; bluetoothd has {all:?}");
        return;
    }
    let started = Instant::now();
    match run(&bluez, &all, &a_name, &b_name, bytes).await {
        Ok(()) => println!("bluez_selftest: all steps passed in {:.1} s", started.elapsed().as_secs_f64()),
        Err(e) => {
            println!("bluez_selftest: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn step<T>(name: &str, f: impl Future<Output = Res<T>>) -> Res<T> {
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(600), f).await {
        Ok(Ok(v)) => {
            println!("ok   {name} ({:.2} s)", t.elapsed().as_secs_f64());
            Ok(v)
        }
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => Err(format!("{name}: timed out")),
    }
}

async fn run(bluez: &Bluez, all: &[String], a_name: &str, b_name: &str, bytes: usize) -> Res<()> {
    let a = Arc::new(bluez.adapter(a_name).await.map_err(|e| e.to_string())?);
    let b = Arc::new(bluez.adapter(b_name).await.map_err(|e| e.to_string())?);
    println!("adapters: {all:?}; A = {} {}, B = {} {}", a.name(), a.address(), b.name(), b.address());
    // Start from a clean slate: no bond or cached adverts between the two.
    a.forget(b.address()).await;
    b.forget(a.address()).await;

    step("power: off and on again through the Adapter trait", async {
        for ad in [&a, &b] {
            ad.set_powered(false).await.map_err(|e| e.to_string())?;
            if ad.is_powered().await.map_err(|e| e.to_string())? {
                return Err(format!("{} still powered", ad.name()));
            }
            ad.set_powered(true).await.map_err(|e| e.to_string())?;
            if !ad.is_powered().await.map_err(|e| e.to_string())? {
                return Err(format!("{} not powered", ad.name()));
            }
        }
        Ok(())
    })
    .await?;

    // A listens for packet links first so that its advert carries the PSM.
    let secure = LinkParams::default().with_security(SecurityLevel::High);
    let packet_listener = a.listen(None, LinkMode::Packet, secure).await.map_err(|e| format!("listen: {e}"))?;
    let Port::L2cap(psm) = packet_listener.port() else { return Err("listener is not on L2CAP".into()) };
    println!("     A listens on LE {psm}");
    let id = DeviceId::from_bytes(*b"colink-selftest!");
    let advert = Advert::new(id.short()).with_psm(psm).with_services(ServiceFilter::EMPTY.with("selftest"));
    let adv_handle = a.advertise(advert).await.map_err(|e| format!("advertise: {e}"))?;

    let filter = ScanFilter::default().with_service("selftest").with_lost_after(Duration::from_secs(3));
    let mut scan = b.scan(filter).await.map_err(|e| format!("scan: {e}"))?;
    let peer = step("discover: B sees A's decoded advert", async {
        loop {
            match scan.next().await {
                Some(ScanEvent::DeviceFound { peer, rssi, advert: seen }) if peer.address == a.address().address => {
                    if seen != advert {
                        return Err(format!("decoded {seen:?}, advertised {advert:?}"));
                    }
                    println!("     found {peer}: RSSI {rssi}, {seen:?}");
                    return Ok(peer);
                }
                Some(_) => {}
                None => return Err("scan ended".into()),
            }
        }
    })
    .await?;

    step("pair: numeric comparison, bonded on both sides", async {
        let agent_a = Arc::new(Recorder::default());
        let agent_b = Arc::new(Recorder::default());
        a.set_agent(Some(agent_a.clone())).await.map_err(|e| e.to_string())?;
        b.pair(peer, agent_b.clone()).await.map_err(|e| e.to_string())?;
        let (ka, kb) = (agent_a.confirmed(), agent_b.confirmed());
        println!("     A (responder) confirmed {ka:?}; B (initiator) was shown {kb:?}");
        // BlueZ (5.66, kernel 6.1) asks only the responder's agent to confirm the number: the initiator's
        // Pair() call counts as its consent (docs/bluez-backend.md). If the initiator is shown it, it must match.
        if ka.is_none() || kb.is_some_and(|k| Some(k) != ka) {
            return Err(format!("numeric comparison not as expected: A {ka:?}, B {kb:?}"));
        }
        // The responder's bluetoothd may publish its Paired property a moment after the initiator's pair()
        // returned: give it 3 s.
        let mut bonded = false;
        for _ in 0..30 {
            bonded = a.is_paired(b.address()).await && b.is_paired(peer).await;
            if bonded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !bonded {
            return Err("pair() returned but bluetoothd has no bond on both sides within 3 s".into());
        }
        Ok(())
    })
    .await?;

    let (pa, pb) = step("packet link: connect (LE CoC, security High after pairing)", async {
        let (acc, conn) =
            tokio::join!(packet_listener.accept(), b.connect(peer, Port::L2cap(psm), LinkMode::Packet, secure));
        let pb = conn.map_err(|e| format!("connect: {e}"))?;
        let pa = acc.map_err(|e| format!("accept: {e}"))?;
        println!("     MTU: A {} / B {}, params {:?}", pa.mtu().get(), pb.mtu().get(), pb.params());
        Ok((pa, pb))
    })
    .await?;
    step(&format!("packet link: echo {bytes} bytes, SHA-256 checked"), echo(&*pb, &*pa, bytes)).await?;
    step(&format!("packet link: one-way goodput, {bytes} bytes"), one_way(&*pb, &*pa, bytes)).await?;
    step("close: B closes, A reads PeerClose, B's closed() is LocalClose", async {
        pb.close().await;
        let ra = recv_closed(&*pa).await?;
        let rb = pb.closed().await;
        println!("     A: {ra}, B: {rb}");
        if ra == CloseReason::PeerClose && rb == CloseReason::LocalClose {
            Ok(())
        } else {
            Err(format!("A {ra:?}, B {rb:?}"))
        }
    })
    .await?;
    drop((pa, pb));

    let stream = LinkParams::default().with_phy(Phy::BrEdr);
    let (sa, sb) = step("stream link: connect (RFCOMM)", async {
        let mut listener = None;
        for ch in (1..=30).rev() {
            let port = Port::Rfcomm(RfcommChannel::new(ch).map_err(|e| e.to_string())?);
            match a.listen(Some(port), LinkMode::Stream, stream).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(colink_ble::AdapterError::PortInUse(_)) => continue,
                Err(e) => return Err(format!("listen: {e}")),
            }
        }
        let listener = listener.ok_or("no free RFCOMM channel")?;
        println!("     A listens on {}", listener.port());
        let target = PeerAddress::br_edr(a.address().address);
        let (acc, conn) = tokio::join!(listener.accept(), b.connect(target, listener.port(), LinkMode::Stream, stream));
        Ok((acc.map_err(|e| format!("accept: {e}"))?, conn.map_err(|e| format!("connect: {e}"))?))
    })
    .await?;
    step(&format!("stream link: echo {bytes} bytes, SHA-256 checked"), echo(&*sb, &*sa, bytes)).await?;
    step(&format!("stream link: one-way goodput, {bytes} bytes"), one_way(&*sb, &*sa, bytes)).await?;

    step("power-off: A powers off mid-link, A's link reports AdapterOff", async {
        a.set_powered(false).await.map_err(|e| e.to_string())?;
        let ra = recv_closed(&*sa).await?;
        let rb = recv_closed(&*sb).await?;
        println!("     A: {ra}, B: {rb}");
        a.set_powered(true).await.map_err(|e| e.to_string())?;
        if ra != CloseReason::AdapterOff {
            return Err(format!("A reported {ra:?}"));
        }
        if !matches!(rb, CloseReason::PeerClose | CloseReason::PeerPowerOff | CloseReason::SupervisionTimeout) {
            return Err(format!("B reported {rb:?}"));
        }
        Ok(())
    })
    .await?;

    drop((scan, adv_handle));
    step("scan: advert stops → DeviceLost after lost_after (3 s)", async {
        let handle = a.advertise(advert).await.map_err(|e| format!("advertise: {e}"))?;
        let filter = ScanFilter::default().with_lost_after(Duration::from_secs(3));
        let mut scan = b.scan(filter).await.map_err(|e| format!("scan: {e}"))?;
        let mut stopped: Option<Instant> = None;
        let mut handle = Some(handle);
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = scan.next() => match ev {
                    Some(ScanEvent::DeviceFound { peer: p, .. }) if p.address == peer.address && stopped.is_none() => {
                        drop(handle.take());
                        stopped = Some(Instant::now());
                    }
                    Some(ScanEvent::DeviceLost { peer: p }) if p.address == peer.address => {
                        let Some(t) = stopped else { return Err("lost before it was found".into()) };
                        let after = t.elapsed();
                        println!("     DeviceLost {:.2} s after the advert stopped", after.as_secs_f64());
                        return if after >= Duration::from_millis(2900) {
                            Ok(())
                        } else {
                            Err(format!("lost after only {after:?}"))
                        };
                    }
                    Some(_) => {}
                    None => return Err("scan ended".into()),
                },
                () = &mut deadline => return Err(format!("no DeviceFound/DeviceLost within 60 s (stopped: {stopped:?})")),
            }
        }
    })
    .await?;
    a.set_agent(None).await.map_err(|e| e.to_string())?;
    a.forget(b.address()).await;
    b.forget(a.address()).await;
    Ok(())
}

/// Sends `total` bytes from `tx` (in MTU-sized SDUs or 64 KiB stream writes) while `rx` echoes everything back;
/// checks the echo's SHA-256 and prints the goodput.
async fn echo(tx: &dyn Link, rx: &dyn Link, total: usize) -> Res<()> {
    let data: Vec<u8> = (0..total).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let piece = if tx.mode() == LinkMode::Packet { tx.mtu().bytes() } else { 64 * 1024 };
    let want = Sha256::digest(&data);
    let t = Instant::now();
    let send = async {
        for chunk in data.chunks(piece) {
            tx.send(Bytes::copy_from_slice(chunk)).await.map_err(|e| format!("send: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let echoer = async {
        let mut n = 0;
        while n < total {
            let got = rx.recv().await.map_err(|e| format!("echo recv: {e}"))?;
            n += got.len();
            rx.send(got).await.map_err(|e| format!("echo send: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let collect = async {
        let mut h = Sha256::new();
        let mut n = 0;
        let mut sdus = 0usize;
        while n < total {
            let got = tx.recv().await.map_err(|e| format!("recv: {e}"))?;
            if tx.mode() == LinkMode::Packet && got.len() > tx.mtu().bytes() {
                return Err(format!("SDU of {} bytes above MTU {}", got.len(), tx.mtu().get()));
            }
            n += got.len();
            sdus += 1;
            h.update(&got);
        }
        Ok::<_, String>((h.finalize(), sdus))
    };
    let (s, e, c) = tokio::join!(send, echoer, collect);
    s?;
    e?;
    let (got, sdus) = c?;
    let secs = t.elapsed().as_secs_f64();
    if got != want {
        return Err("echoed data differs (SHA-256 mismatch)".into());
    }
    println!(
        "     {total} bytes each way in {secs:.2} s: {:.0} KiB/s each way ({sdus} reads, {} mode, piece {piece})",
        total as f64 / 1024.0 / secs,
        if tx.mode() == LinkMode::Packet { "packet" } else { "stream" }
    );
    Ok(())
}

/// Sends `total` bytes from `tx` to `rx` and prints the goodput; `rx` acknowledges the last byte with one byte.
async fn one_way(tx: &dyn Link, rx: &dyn Link, total: usize) -> Res<()> {
    let piece = if tx.mode() == LinkMode::Packet { tx.mtu().bytes() } else { 64 * 1024 };
    let data = Bytes::from(vec![0x5a; piece]);
    let t = Instant::now();
    let send = async {
        let mut left = total;
        while left > 0 {
            let n = left.min(piece);
            tx.send(data.slice(..n)).await.map_err(|e| format!("send: {e}"))?;
            left -= n;
        }
        tx.recv().await.map_err(|e| format!("ack: {e}"))?;
        Ok::<_, String>(())
    };
    let sink = async {
        let mut n = 0;
        while n < total {
            n += rx.recv().await.map_err(|e| format!("recv: {e}"))?.len();
        }
        rx.send(Bytes::from_static(b"k")).await.map_err(|e| format!("ack send: {e}"))
    };
    let (s, k) = tokio::join!(send, sink);
    s?;
    k?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "     one-way goodput {:.0} KiB/s ({total} bytes in {secs:.2} s, piece {piece})",
        total as f64 / 1024.0 / secs
    );
    Ok(())
}

/// Reads until the link reports closed; returns the reason.
async fn recv_closed(link: &dyn Link) -> Res<CloseReason> {
    let t = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match link.recv().await {
                Ok(_) => continue,
                Err(LinkError::Closed(r)) => return Ok(r),
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    });
    t.await.map_err(|_| "link did not close within 30 s".to_string())?
}

/// A DisplayYesNo agent that confirms and records the passkey it was shown.
#[derive(Default)]
struct Recorder {
    passkey: Mutex<Option<Passkey>>,
}

impl Recorder {
    fn confirmed(&self) -> Option<Passkey> {
        self.passkey.lock().ok().and_then(|p| *p)
    }
}

impl Agent for Recorder {
    fn io_capability(&self) -> IoCapability {
        IoCapability::DisplayYesNo
    }

    fn confirm_just_works(&self, peer: PeerAddress) -> BoxFuture<'_, AgentResult<()>> {
        println!("     agent: just works with {peer}?");
        Box::pin(async { Ok(()) })
    }

    fn display_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        println!("     agent: display {passkey} for {peer}");
        if let Ok(mut p) = self.passkey.lock() {
            *p = Some(passkey);
        }
        Box::pin(async { Ok(()) })
    }

    fn confirm_passkey(&self, peer: PeerAddress, passkey: Passkey) -> BoxFuture<'_, AgentResult<()>> {
        println!("     agent: {passkey} with {peer}?");
        if let Ok(mut p) = self.passkey.lock() {
            *p = Some(passkey);
        }
        Box::pin(async { Ok(()) })
    }
}
