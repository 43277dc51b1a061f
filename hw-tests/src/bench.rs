//! Side-by-side goodput: colink's session layer against a raw kernel socket on the *same* link, in alternating
//! rounds, so that host load (which swings TCG throughput 2-3× within one run) hits both alike; and the time a
//! `Manager::connect` takes, phase by phase (`bench::connect`, in connect.rs). Test names start with `bench::`.
//!
//! - `bench::coc_interleaved` opens a colink session (two `Manager`s, LE CoC) and a raw LE CoC SeqPacket channel
//!   between the same two adapters — both ride one LE ACL.
//! - `bench::rfcomm_interleaved` does the same over BR/EDR: both managers prefer BR/EDR
//!   (`TransportPreference::BrEdr`), so colink's dial connects to the RFCOMM channel in bob's advert and the
//!   engine runs in stream mode; a raw RFCOMM stream socket is opened beside it, on the same BR/EDR ACL.
//!
//! Each then sends `--bench-bytes` one way through each in turn, `--bench-rounds` times (raw first in even
//! rounds, colink first in odd ones). **Both transfers end at the same point: when the receiver holds every byte
//! and the sender has learnt it.** For colink that is when `send_data` resolves (the peer engine's
//! acknowledgement of the whole payload); for the raw socket, when the responder's byte count comes back (echo
//! protocol phase DELIVER: the responder keeps the bytes and answers the moment it holds the last one). Neither
//! includes hashing: both receivers' SHA-256 is checked after the clock stopped. Each round's colink/raw ratio
//! compares two transfers made back to back; the summary line gives their minimum and median. One-host set-up
//! only.

use std::time::{Duration, Instant};

use bluer::l2cap::SocketAddr;
use bytes::Bytes;
use colink::driver::{NodeConfig, TransportPreference};
use colink_ble::{Adapter as _, Port};

use crate::bt::{send_buffer, wait_connected};
use crate::colink_api::{Pair, connected_with, expect_data};
use crate::cpu::{CpuClock, CpuUse};
use crate::echo::{self, STREAM_CHUNK, pattern};
use crate::harness::{Ctx, Figure, OrFail, Stop, Test, TestResult, ensure, within};
use crate::raw::l2cap::socket;
use crate::timed::Timed;

/// The `bench::` tests, in the order they run.
pub(crate) const TESTS: &[Test] = &[
    Test {
        name: "bench::coc_interleaved",
        about: "colink send_data vs a raw LE CoC socket on the same LE link, alternating rounds, both until the \
                receiver holds every byte: min/median ratio",
        run: |ctx| Box::pin(coc_interleaved(ctx)),
    },
    Test {
        name: "bench::rfcomm_interleaved",
        about: "colink send_data over RFCOMM (stream mode) vs a raw RFCOMM socket on the same BR/EDR link, \
                alternating rounds, both until the receiver holds every byte: min/median ratio",
        run: |ctx| Box::pin(rfcomm_interleaved(ctx)),
    },
    Test {
        name: "bench::connect",
        about: "Manager::connect to a connected session, --connects times on fresh links: p50/max per phase \
                (discovery, L2CAP connect, link handshake, session CONNECT/accept)",
        run: |ctx| Box::pin(crate::connect::run(ctx)),
    },
];

/// What every transfer's time runs to, as the output says it.
const END_POINT: &str = "each transfer until the receiver holds every byte and the sender knows it";

/// The managers' configuration in the goodput tests: the defaults, but for the diagnostic options.
fn bench_config(ctx: &Ctx) -> NodeConfig {
    let mut config = NodeConfig::default();
    if let Some(frame) = ctx.opts.colink_max_frame {
        config.engine.max_frame = frame;
        println!("    diagnostics: colink max_frame {frame}");
    }
    if let Some(window) = ctx.opts.colink_window {
        config.engine.send_window = window;
        println!("    diagnostics: colink send_window {window}");
    }
    config
}

async fn coc_interleaved(ctx: &Ctx) -> TestResult {
    let mut p = connected_with(ctx, false, bench_config(ctx), |a| a).await?;
    let result = coc_rounds(ctx, &mut p).await;
    p.close().await;
    result
}

async fn coc_rounds(ctx: &Ctx, p: &mut Pair) -> TestResult {
    let session = ctx.rig.session()?;
    let resp = session.adapter(p.duo.resp.name()).or_fail("bluer adapter (responder)")?;
    let init = session.adapter(p.duo.init.name()).or_fail("bluer adapter (initiator)")?;
    let mtu = ctx.opts.l2cap_mtu;

    // The raw channel rides the LE ACL the colink session already opened: no advert or discovery needed.
    let listener = socket(&resp, mtu).await?.listen(1).or_fail("raw listen")?;
    let psm = listener.as_ref().local_addr().or_fail("raw listener address")?.psm;
    let target = SocketAddr::new(
        resp.address().await.or_fail("responder address")?,
        resp.address_type().await.or_fail("responder address type")?,
        psm,
    );
    let connect = async {
        let conn = socket(&init, mtu).await?.connect(target).await.or_fail("raw connect")?;
        wait_connected(&conn, Duration::from_secs(30)).await.or_fail("raw connect (POLLOUT)")?;
        Ok::<_, Stop>(conn)
    };
    let accept = async { listener.accept().await.or_fail("raw accept") };
    let (conn, accepted) =
        within(60, "raw L2CAP CoC channel beside the colink session", async { tokio::try_join!(connect, accept) })
            .await?;
    let (accepted, _) = accepted;
    let send_mtu = conn.send_mtu().or_fail("send_mtu")?;
    let recv_mtu = accepted.recv_mtu().or_fail("recv_mtu")?;
    let sndbuf = send_buffer(&conn).or_fail("SO_SNDBUF")?;
    // As raw::l2cap_coc_echo: SDUs well inside the send buffer (the kernel never sends one that does not fit).
    let sdu = send_mtu.min(sndbuf / 4).min(ctx.opts.l2cap_sdu.unwrap_or(usize::MAX));
    println!("    raw CoC beside the session: PSM {psm:#x}, send MTU {send_mtu}, SDU {sdu}, SO_SNDBUF {sndbuf}");

    let responder = async {
        within(3600, "raw responder", async {
            echo::packet_responder(&accepted, recv_mtu).await.or_fail("raw responder")
        })
        .await
    };
    let rounds = async {
        let raw = async |data: &[u8]| {
            let t = within(900, "raw one-way", async {
                echo::packet_deliver(&conn, data, sdu).await.or_fail("raw one-way")
            })
            .await?;
            Ok((t.elapsed, t.cpu))
        };
        let detail = format!("SDU {sdu}");
        let ratios =
            alternate(ctx, "l2cap-coc", "colink", &detail, raw, async |data: &[u8]| colink_delivery(p, data).await)
                .await?;
        if ctx.opts.bench_control {
            // The noise floor: the same raw transfer against itself, by the same method.
            alternate(ctx, "l2cap-coc", "raw-control", &detail, raw, raw).await?;
        }
        echo::packet_bye(&conn).await.or_fail("raw bye")?;
        Ok::<_, Stop>(ratios)
    };
    tokio::try_join!(responder, rounds)?;
    Ok(())
}

async fn rfcomm_interleaved(ctx: &Ctx) -> TestResult {
    let mut config = bench_config(ctx);
    config.transport = TransportPreference::BrEdr;
    let mut timed = None;
    let mut p = connected_with(ctx, false, config, |adapter| {
        let t = Timed::new(adapter);
        timed = Some(t.clone());
        t
    })
    .await?;
    let dialled = timed.and_then(|t| t.marks().linked).map(|(_, port)| port);
    let result = match dialled {
        Some(Port::Rfcomm(channel)) => {
            println!("    colink dialled bob's RFCOMM channel {} (BR/EDR, stream mode)", channel.value());
            rfcomm_rounds(ctx, &mut p).await
        }
        other => Err(Stop::Fail(format!("colink preferring BR/EDR dialled {other:?}, not an RFCOMM channel"))),
    };
    // Quirk (vm-rig.md, krfcommd list_del race of 6.1): an RFCOMM session torn down while its BR/EDR ACL goes
    // down can crash 6.1's krfcommd. Let the sessions close before forgetting the peer drops the ACL.
    p.close_settled(Duration::from_secs(2)).await;
    result
}

async fn rfcomm_rounds(ctx: &Ctx, p: &mut Pair) -> TestResult {
    use bluer::rfcomm::{Listener, Socket, SocketAddr};

    let session = ctx.rig.session()?;
    let resp = session.adapter(p.duo.resp.name()).or_fail("bluer adapter (responder)")?;
    let init = session.adapter(p.duo.init.name()).or_fail("bluer adapter (initiator)")?;
    let resp_addr = resp.address().await.or_fail("responder address")?;
    let init_addr = init.address().await.or_fail("initiator address")?;
    // Channel 0: the kernel picks a free one; the socket rides the BR/EDR ACL colink's link opened.
    let listener = Listener::bind(SocketAddr::new(resp_addr, 0)).await.or_fail("raw RFCOMM listen")?;
    let channel = listener.as_ref().local_addr().or_fail("raw listener address")?.channel;
    let connect = async {
        let sock = Socket::new().or_fail("RFCOMM socket")?;
        // Bind to the initiator's adapter, or the kernel may route the connection through another one.
        sock.bind(SocketAddr::new(init_addr, 0)).or_fail("bind")?;
        let conn = sock.connect(SocketAddr::new(resp_addr, channel)).await.or_fail("raw RFCOMM connect")?;
        wait_connected(&conn, Duration::from_secs(30)).await.or_fail("raw RFCOMM connect (POLLOUT)")?;
        Ok::<_, Stop>(conn)
    };
    let accept = async { listener.accept().await.or_fail("raw RFCOMM accept") };
    let (mut conn, (mut accepted, _)) =
        within(60, "raw RFCOMM channel beside the colink session", async { tokio::try_join!(connect, accept) }).await?;
    let sndbuf = send_buffer(&conn).or_fail("SO_SNDBUF")?;
    println!("    raw RFCOMM beside the session: channel {channel}, writes of {STREAM_CHUNK} B, SO_SNDBUF {sndbuf}");

    let responder = async {
        within(3600, "raw responder", async {
            echo::stream_responder(&mut accepted).await.or_fail("raw RFCOMM responder")
        })
        .await
    };
    let rounds = async {
        let ratios = alternate(
            ctx,
            "rfcomm",
            "colink",
            &format!("writes of {STREAM_CHUNK} B"),
            async |data: &[u8]| {
                let t = within(900, "raw one-way", async {
                    echo::stream_deliver(&mut conn, data).await.or_fail("raw RFCOMM one-way")
                })
                .await?;
                Ok((t.elapsed, t.cpu))
            },
            async |data: &[u8]| colink_delivery(p, data).await,
        )
        .await?;
        echo::stream_bye(&mut conn).await.or_fail("raw bye")?;
        Ok::<_, Stop>(ratios)
    };
    tokio::try_join!(responder, rounds)?;
    Ok(())
}

/// alice sends `data` to bob with `send_data`: the time until it resolves (bob's engine acknowledged all of it);
/// bob's copy is checked (length, SHA-256) after the clock stopped.
async fn colink_delivery(p: &mut Pair, data: &[u8]) -> Result<Took, Stop> {
    let payload = Bytes::copy_from_slice(data);
    let (start, clock) = (Instant::now(), CpuClock::now());
    within(900, "colink send_data", async { p.alice.send_data(p.sa, payload.clone()).await.or_fail("send_data") })
        .await?;
    let (elapsed, cpu) = (start.elapsed(), clock.and_then(CpuClock::since));
    expect_data(&mut p.bob_events, &payload, 60, "bob").await?;
    Ok((elapsed, cpu))
}

/// A transfer's time and the CPU it used meanwhile.
type Took = (Duration, Option<CpuUse>);

/// Runs the rounds of one side-by-side series on `link` and records its figures and summary line.
async fn alternate(
    ctx: &Ctx,
    link: &'static str,
    other: &'static str,
    detail: &str,
    mut raw: impl AsyncFnMut(&[u8]) -> Result<Took, Stop>,
    mut colink: impl AsyncFnMut(&[u8]) -> Result<Took, Stop>,
) -> Result<Vec<f64>, Stop> {
    let bytes = ctx.opts.bench_bytes;
    let rounds = ctx.opts.bench_rounds.max(1);
    let mut ratios = Vec::with_capacity(rounds);
    let (mut raw_all, mut colink_all) = (Vec::new(), Vec::new());
    let (mut raw_cpu, mut colink_cpu) = (Duration::ZERO, Duration::ZERO);
    let (label, bench) = (if other == "colink" { "colink" } else { "raw, again" }, other);
    for round in 0..rounds {
        let data = pattern(bytes, 0x5eed_0300 + round as u64);
        let (mut raw_t, mut colink_t) = (Duration::ZERO, Duration::ZERO);
        let mut cpu_lines = Vec::new();
        for raw_turn in [round % 2 == 0, round % 2 == 1] {
            let (name, (t, cpu)) = if raw_turn { ("raw", raw(&data).await?) } else { (label, colink(&data).await?) };
            if let Some(cpu) = cpu {
                cpu_lines.push(format!("{name:>6}: {}", cpu.describe(t, bytes)));
                *(if raw_turn { &mut raw_cpu } else { &mut colink_cpu }) += cpu.process;
            }
            *(if raw_turn { &mut raw_t } else { &mut colink_t }) = t;
        }
        let kib = |d: Duration| bytes as f64 / 1024.0 / d.as_secs_f64().max(1e-9);
        let ratio = kib(colink_t) / kib(raw_t);
        println!(
            "    round {}: raw {:7.1} KiB/s, {label} {:7.1} KiB/s, {bench}/raw {ratio:.2} ({} first)",
            round + 1,
            kib(raw_t),
            kib(colink_t),
            if round % 2 == 0 { "raw" } else { label }
        );
        for line in cpu_lines {
            println!("      {line}");
        }
        ratios.push(ratio);
        raw_all.push(raw_t);
        colink_all.push(colink_t);
    }
    ensure(!ratios.is_empty(), || "no round ran".into())?;
    for (imp, all, cpu) in [("raw", &raw_all, raw_cpu), (other, &colink_all, colink_cpu)] {
        let mib = (bytes * all.len() as u64) as f64 / (1024.0 * 1024.0);
        ctx.figure(Figure {
            link,
            imp,
            what: "alternating, delivered",
            bytes: bytes * all.len() as u64,
            elapsed: all.iter().sum(),
            detail: format!(
                "{} rounds of {bytes} bytes, {detail}; process CPU {:.0} ms/MiB",
                all.len(),
                cpu.as_secs_f64() * 1000.0 / mib
            ),
        });
    }
    let (min, median) = min_median(&ratios);
    // Whichever transfer of a round goes second has tended to be the slower one in the rig: the medians of the
    // two orders show how much of the spread that is.
    let by_order = |first: usize| -> Vec<f64> { ratios.iter().skip(first).step_by(2).copied().collect() };
    let ((_, raw_first), (_, other_first)) = (min_median(&by_order(0)), min_median(&by_order(1)));
    ctx.summary(format!(
        "{bench}/raw goodput ({link}): min {min:.2}, median {median:.2}  ({} rounds of {} MiB alternating, {END_POINT}; \
         median with raw first {raw_first:.2}, with {label} first {other_first:.2})",
        ratios.len(),
        bytes as f64 / (1024.0 * 1024.0)
    ));
    Ok(ratios)
}

/// The minimum and the median (the mean of the middle two of an even count) of `values`; `(NaN, NaN)` for none.
pub(crate) fn min_median(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted.first().copied().unwrap_or(f64::NAN), crate::connect::p50(&sorted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_median() {
        assert_eq!(min_median(&[1.2, 0.8, 1.0]), (0.8, 1.0));
        assert_eq!(min_median(&[3.0, 1.0, 2.0, 4.0]), (1.0, 2.5));
        assert!(min_median(&[]).0.is_nan());
    }
}
