//! `bench::connect`: how long `Manager::connect` takes from the call to a connected session, phase by phase, over
//! `--connects` connects, each on a fresh link.
//!
//! bob's manager advertises and answers every collaboration request at once (no artificial delay). For each
//! connect a new alice manager starts on the same adapter, `connect`s, and is shut down; then both adapters forget
//! each other, so the next connect needs a new LE connection too. Even-numbered connects hide the adapter's record
//! of devices seen lately (`Adapter::last_seen`) and so scan; odd ones may use it and skip discovery. alice's
//! adapter is seen through [`Timed`], which marks the phases:
//!
//! - **discovery**: the call until the L2CAP connect begins (a scan until bob's advert, or the last-sighting
//!   lookup);
//! - **L2CAP connect**: until colink-ble's `connect` returned a usable link (LE connection + CoC channel);
//! - **link handshake**: until the first bytes from bob arrived on it (his answer to alice's HELLO);
//! - **session CONNECT/accept**: until `connect` resolved connected (bob's app accepted).
//!
//! A scan that does not find bob within the dial's 10 s (btvirt's discovery race, docs/vm-rig.md) is counted
//! with that time in the p50 "with discovery", printed, and is not a failure of the test; any other failure is.

use std::time::{Duration, Instant};

use colink::api::ConnectOptions;
use colink::driver::NodeConfig;
use colink::{Manager, PeerInfo};

use crate::ble::duo;
use crate::colink_api::{SERVICE, app, identity, manager, manager_as};
use crate::harness::{Ctx, OrFail, Stop, TestResult, ensure, within};
use crate::timed::{Marks, Timed};

/// One connect's phases.
#[derive(Debug, Clone, Copy)]
struct Phases {
    discovery: Duration,
    l2cap: Duration,
    handshake: Duration,
    session: Duration,
    total: Duration,
    /// The dial used the last sighting rather than a scan.
    from_sighting: bool,
}

impl Phases {
    /// Splits `start..done` at the marks; `None` when a mark is missing (the dial did not go as described).
    fn from_marks(start: Instant, done: Instant, m: &Marks) -> Option<Self> {
        let connect = m.connect?;
        let (linked, _) = m.linked?;
        let first = m.first_recv?;
        let since = |a: Instant, b: Instant| b.saturating_duration_since(a);
        Some(Self {
            discovery: since(start, connect),
            l2cap: since(connect, linked),
            handshake: since(linked, first),
            session: since(first, done),
            total: since(start, done),
            from_sighting: m.from_sighting && m.scan.is_none(),
        })
    }
}

pub(crate) async fn run(ctx: &Ctx) -> TestResult {
    let duo = duo(ctx).await?;
    let timed = Timed::new(duo.init.clone());
    let bob_who = identity();
    let bob_id = bob_who.device_id();
    let bob = manager_as(duo.resp.clone(), bob_who, NodeConfig::default()).await?;
    let mut requests = bob.incoming(&app()).or_fail("bob: incoming")?;
    // bob's app accepts every request the moment it arrives.
    let answer = async {
        loop {
            let Some(request) = requests.next().await else {
                return Err::<(), _>(Stop::Fail("bob's incoming stream ended".into()));
            };
            let sb = bob
                .create_session(&app(), SERVICE, request.peer.clone(), ConnectOptions::default())
                .or_fail("bob: create_session")?;
            bob.accept_connect(sb, &request.token).await.or_fail("bob: accept_connect")?;
        }
    };
    let connects = async {
        let (mut all, mut lost) = (Vec::with_capacity(ctx.opts.connects), Vec::new());
        for i in 0..ctx.opts.connects {
            let alice = manager(timed.clone(), NodeConfig::default()).await?;
            let result = connect_once(&alice, &timed, bob_id, i % 2 == 1).await;
            alice.shutdown().await;
            drop(alice);
            duo.forget_each_other().await;
            let phases = match result? {
                Ok(phases) => phases,
                Err(after) => {
                    println!(
                        "    connect {:2}: not found nearby after {:.3} s (scan): bob advertised throughout, so the scan \
                         lost btvirt's discovery race every time (docs/vm-rig.md)",
                        i + 1,
                        after.as_secs_f64()
                    );
                    lost.push(after);
                    continue;
                }
            };
            println!(
                "    connect {:2}: {:.3} s = discovery {:.3} ({}) + L2CAP connect {:.3} + link handshake {:.3} + \
                 session CONNECT/accept {:.3}",
                i + 1,
                phases.total.as_secs_f64(),
                phases.discovery.as_secs_f64(),
                if phases.from_sighting { "last sighting" } else { "scan" },
                phases.l2cap.as_secs_f64(),
                phases.handshake.as_secs_f64(),
                phases.session.as_secs_f64(),
            );
            all.push(phases);
        }
        Ok::<_, Stop>((all, lost))
    };
    let (all, lost) = tokio::select! {
        all = connects => all?,
        e = answer => return e,
    };
    bob.shutdown().await;
    duo.forget_each_other().await;
    ensure(!all.is_empty(), || format!("none of {} connects connected", lost.len()))?;
    summarize(ctx, &all, &lost);
    Ok(())
}

/// One `connect` from a fresh alice to bob; `sightings` lets the dial use the adapter's last sighting of bob.
/// `Ok(Err(after))`: the dial's scan did not find bob (btvirt's discovery race); any other failure is the test's.
async fn connect_once(
    alice: &Manager,
    timed: &Timed,
    bob: colink_ble::DeviceId,
    sightings: bool,
) -> Result<Result<Phases, Duration>, Stop> {
    let peer = PeerInfo::new(bob.to_string(), "org.colink.hwtests", "entry", "MainAbility");
    let sa = alice.create_session(&app(), SERVICE, peer, ConnectOptions::default()).or_fail("create_session")?;
    timed.reset(bob.advert_id(colink_ble::advert_slot(std::time::SystemTime::now())), sightings);
    let start = Instant::now();
    let r = within(30, "alice: connect", async { alice.connect(sa).await.or_fail("connect") }).await?;
    let done = Instant::now();
    // Not found: the dial scanned (no sighting, or the connect to it failed) and lost the race throughout.
    if !r.is_connected && r.reason.as_deref().is_some_and(|m| m.contains("not found nearby")) {
        return Ok(Err(done - start));
    }
    ensure(r.is_connected, || format!("alice's connect answered {r:?}"))?;
    let marks = timed.marks();
    Phases::from_marks(start, done, &marks)
        .map(Ok)
        .ok_or_else(|| Stop::Fail(format!("a phase left no mark: {marks:?}")))
}

/// Prints each phase's p50/max over the connects that connected, then the connect p50 over every connect, with
/// discovery and to a device seen lately (a dial that found nothing counts with the time it took).
fn summarize(ctx: &Ctx, all: &[Phases], lost: &[Duration]) {
    let stats = |mut v: Vec<f64>| -> (f64, f64) {
        v.sort_by(f64::total_cmp);
        (p50(&v), v.last().copied().unwrap_or(f64::NAN))
    };
    let phase = |name: &str, f: fn(&Phases) -> Duration| {
        let (p, max) = stats(all.iter().map(|p| f(p).as_secs_f64()).collect());
        format!("{name} {p:.3}/{max:.3}")
    };
    ctx.summary(format!(
        "connect phases, p50/max s over the {} connects that connected: {}, {}, {}, {}",
        all.len(),
        phase("discovery", |p| p.discovery),
        phase("L2CAP connect", |p| p.l2cap),
        phase("link handshake", |p| p.handshake),
        phase("session CONNECT/accept", |p| p.session),
    ));
    let totals = |from_sighting: bool| -> Vec<f64> {
        all.iter().filter(|p| p.from_sighting == from_sighting).map(|p| p.total.as_secs_f64()).collect()
    };
    let seen = totals(true);
    let mut scanned = totals(false);
    let found = scanned.len();
    scanned.extend(lost.iter().map(Duration::as_secs_f64));
    let (n_seen, n_scanned) = (seen.len(), scanned.len());
    let every: Vec<f64> = seen.iter().chain(&scanned).copied().collect();
    let ((all_p50, all_max), (seen_p50, seen_max), (scan_p50, scan_max)) = (stats(every), stats(seen), stats(scanned));
    ctx.summary(format!(
        "connect p50: {all_p50:.3} s over {} connects (max {all_max:.3} s): {scan_p50:.3} s with discovery (max \
         {scan_max:.3} s, {n_scanned} connects, {} of them not found in the dial's 10 s and counted with that time), \
         {seen_p50:.3} s to a device seen lately (max {seen_max:.3} s, {n_seen} connects, no scan)",
        n_seen + n_scanned,
        n_scanned - found
    ));
}

/// The median of sorted `v` (the mean of the middle two for an even count); NaN for none.
pub(crate) fn p50(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_the_connect_at_the_marks() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let marks = Marks {
            scan: Some(at(1)),
            found: Some(at(90)),
            connect: Some(at(100)),
            linked: Some((at(150), colink_ble::Port::L2cap(colink_ble::Psm::new(0x81).unwrap()))),
            first_recv: Some(at(200)),
            from_sighting: false,
        };
        let p = Phases::from_marks(t0, at(260), &marks).unwrap();
        assert_eq!(
            [p.discovery, p.l2cap, p.handshake, p.session, p.total].map(|d| d.as_millis()),
            [100, 50, 50, 60, 260]
        );
        assert!(!p.from_sighting);
        let warm = Marks { scan: None, found: None, from_sighting: true, ..marks };
        assert!(Phases::from_marks(t0, at(260), &warm).unwrap().from_sighting);
        assert!(Phases::from_marks(t0, at(260), &Marks { first_recv: None, ..marks }).is_none());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(p50(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(p50(&[1.0, 2.0, 3.0, 5.0]), 2.5);
        assert!(p50(&[]).is_nan());
    }
}
