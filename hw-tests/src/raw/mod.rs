//! Tests that drive BlueZ directly through bluer's sockets and D-Bus API: the baseline that colink's BlueZ
//! backend (crates/colink-ble) is compared with. colink's own suites run beside them: the `ble::` tests speak
//! the same protocol (crate::echo) over colink-ble's links and record figures with `imp: "colink-ble"`, and the
//! `colink::` tests (crate::colink_api) run the `Manager` API end to end.

pub(crate) mod l2cap;
mod rfcomm;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::advert::{Advert, nonce, test_id};
use crate::bt::{advertise, discover, forget};
use crate::harness::{Ctx, OrFail, Stop, Test, TestResult, ensure, within};
use crate::rig::End;

/// The raw tests, in the order they run (pairing last: it leaves bonds behind until it cleans up).
pub(crate) const TESTS: &[Test] = &[
    Test {
        name: "raw::adapters_power",
        about: "lists the adapters, powers each off and on again through bluetoothd",
        run: |ctx| Box::pin(adapters_power(ctx)),
    },
    Test {
        name: "raw::advertise_discover",
        about: "one adapter advertises service data, the other discovers it over LE and post-filters it",
        run: |ctx| Box::pin(advertise_discover(ctx)),
    },
    Test {
        name: "raw::l2cap_coc_echo",
        about: "LE CoC SeqPacket: hash-checked echo, SDU boundaries kept, one-way goodput",
        run: |ctx| Box::pin(l2cap::run(ctx)),
    },
    Test {
        name: "raw::rfcomm_echo",
        about: "RFCOMM stream: hash-checked echo in <= 4 KiB writes, one-way goodput",
        run: |ctx| Box::pin(rfcomm::run(ctx)),
    },
    Test {
        name: "raw::pairing",
        about: "LE pairing with a DisplayYesNo agent (confirmation + authorization), then trust and forget",
        run: |ctx| Box::pin(pairing(ctx)),
    },
];

/// How long a two-host responder keeps advertising when nobody can tell it the initiator is done.
const TWO_HOST_ADVERT: Duration = Duration::from_secs(30);

async fn adapters_power(ctx: &Ctx) -> TestResult {
    let session = ctx.rig.session()?;
    let names = session.adapter_names().await.or_fail("list adapters")?;
    println!("    adapters: [{}]", names.join(", "));
    for a in ctx.rig.local_adapters().await? {
        let name = a.name().to_string();
        let addr = a.address().await.or_fail("address")?;
        let kind = a.address_type().await.or_fail("address type")?;
        println!("    {name}: {addr} ({kind}), alias {:?}", a.alias().await.unwrap_or_default());
        a.set_powered(false).await.or_fail(&format!("power off {name}"))?;
        ensure(!a.is_powered().await.or_fail("powered?")?, || format!("{name} still powered after power off"))?;
        a.set_powered(true).await.or_fail(&format!("power on {name}"))?;
        ensure(a.is_powered().await.or_fail("powered?")?, || format!("{name} not powered after power on"))?;
    }
    Ok(())
}

async fn advertise_discover(ctx: &Ctx) -> TestResult {
    let published = OnceLock::new();
    let done = Notify::new();
    let (published, done) = (&published, &done);
    let responder = |end: End| async move {
        if let Some(peer) = end.peer {
            forget(&end.adapter, peer).await;
        }
        let advert = Advert { test: test_id::DISCOVER, nonce: nonce(), psm: 0, channel: 0 };
        let _ = published.set(advert);
        let _handle = advertise(&end.adapter, &advert).await?;
        // Keep advertising until the initiator is done (one host) or for a fixed time (two hosts).
        let _ = tokio::time::timeout(TWO_HOST_ADVERT, done.notified()).await;
        Ok(())
    };
    let initiator = |end: End| async move {
        let peer = end.peer.ok_or_else(|| Stop::Skip("needs the responder's address (--peer)".into()))?;
        forget(&end.adapter, peer).await;
        let seen = discover(&end.adapter, peer, test_id::DISCOVER, Duration::from_secs(30)).await;
        done.notify_one();
        let seen = seen?;
        println!(
            "    {} saw {} ({}) after {:?}: {:?}, RSSI {}, {} other device(s) filtered out",
            end.adapter.name(),
            seen.address,
            seen.address_type,
            seen.after,
            seen.advert,
            seen.rssi.map_or_else(|| "unknown".to_string(), |r| format!("{r} dBm")),
            seen.filtered_out
        );
        if let Some(sent) = published.get() {
            ensure(seen.advert == *sent, || format!("decoded {:?}, but {:?} was advertised", seen.advert, sent))?;
        }
        Ok(())
    };
    ctx.rig.run_ends(responder, initiator).await
}

async fn pairing(ctx: &Ctx) -> TestResult {
    ctx.rig.session()?;
    ctx.rig.ensure_agent().await?;
    let responder = |end: End| async move {
        let a = &end.adapter;
        if let Some(peer) = end.peer {
            forget(a, peer).await;
        }
        let _handle = advertise(a, &Advert { test: test_id::PAIR, nonce: nonce(), psm: 0, channel: 0 }).await?;
        // Wait for the initiator's pairing to complete on this side.
        let dev = within(60, "responder: waiting to be paired", async {
            loop {
                for addr in a.device_addresses().await.unwrap_or_default() {
                    if end.peer.is_some_and(|p| p != addr) {
                        continue;
                    }
                    let Ok(d) = a.device(addr) else { continue };
                    if d.is_paired().await.unwrap_or(false) {
                        return Ok(d);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await?;
        println!("    {} is paired with {} (responder side)", a.name(), dev.address());
        // Let the initiator finish (it forgets us, which disconnects), then clean up here too.
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while dev.is_connected().await.unwrap_or(false) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        forget(a, dev.address()).await;
        Ok(())
    };
    let initiator = |end: End| async move {
        let a = &end.adapter;
        let peer = end.peer.ok_or_else(|| Stop::Skip("needs the responder's address (--peer)".into()))?;
        forget(a, peer).await;
        discover(a, peer, test_id::PAIR, Duration::from_secs(30)).await?;
        let dev = a.device(peer).or_fail("device")?;
        let start = Instant::now();
        within(60, "pair", async { dev.pair().await.or_fail("pair") }).await?;
        let took = start.elapsed();
        ensure(dev.is_paired().await.or_fail("paired?")?, || "pair() returned but the device is not paired".into())?;
        dev.set_trusted(true).await.or_fail("set trusted")?;
        ensure(dev.is_trusted().await.or_fail("trusted?")?, || "device not trusted after set_trusted".into())?;
        println!("    {} paired with {peer} in {took:?}; agent saw:", a.name());
        for e in ctx.rig.agent_log.entries() {
            println!("      {e}");
        }
        forget(a, peer).await;
        Ok(())
    };
    ctx.rig.run_ends(responder, initiator).await
}
