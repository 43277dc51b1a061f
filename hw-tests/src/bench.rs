//! Side-by-side goodput: colink's session layer against a raw kernel socket on the *same* link, in alternating
//! rounds, so that host load (which swings TCG throughput 2-3× within one run) hits both alike. Test names start
//! with `bench::`.
//!
//! `bench::coc_interleaved` opens a colink session (two `Manager`s, LE CoC) and a raw LE CoC SeqPacket channel
//! between the same two adapters — both ride one LE ACL — and then sends `--bench-bytes` one way through each in
//! turn, `--bench-rounds` times (raw first in even rounds, colink first in odd ones). Each round's colink/raw
//! ratio compares two transfers made back to back; the summary line gives their minimum and median. One-host
//! set-up only.

use std::time::{Duration, Instant};

use bluer::l2cap::SocketAddr;
use bytes::Bytes;
use colink_ble::Adapter as _;

use crate::bt::{send_buffer, wait_connected};
use crate::colink_api::{Pair, connected, expect_data};
use crate::echo::{self, pattern};
use crate::harness::{Ctx, Figure, OrFail, Stop, Test, TestResult, ensure, within};
use crate::raw::l2cap::socket;

/// The `bench::` tests, in the order they run.
pub(crate) const TESTS: &[Test] = &[Test {
    name: "bench::coc_interleaved",
    about: "colink send_data vs a raw LE CoC socket on the same LE link, alternating rounds: min/median ratio",
    run: |ctx| Box::pin(coc_interleaved(ctx)),
}];

async fn coc_interleaved(ctx: &Ctx) -> TestResult {
    let mut p = connected(ctx).await?;
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

    let bytes = ctx.opts.bench_bytes;
    let rounds = ctx.opts.bench_rounds.max(1);
    let responder = async {
        within(3600, "raw responder", async {
            echo::packet_responder(&accepted, recv_mtu).await.or_fail("raw responder")
        })
        .await
    };
    let rounds_run = async {
        let mut ratios = Vec::with_capacity(rounds);
        let (mut raw_all, mut colink_all) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let data = pattern(bytes, 0x5eed_0300 + round as u64);
            let mut raw = Duration::ZERO;
            let mut colink = Duration::ZERO;
            for first_raw in [round % 2 == 0, round % 2 == 1] {
                if first_raw {
                    let t = within(900, "raw one-way", async {
                        echo::packet_sink(&conn, &data, sdu).await.or_fail("raw one-way")
                    })
                    .await?;
                    raw = t.elapsed;
                } else {
                    let payload = Bytes::from(data.clone());
                    let start = Instant::now();
                    within(900, "colink send_data", async {
                        p.alice.send_data(p.sa, payload.clone()).await.or_fail("colink send_data")
                    })
                    .await?;
                    colink = start.elapsed();
                    expect_data(&mut p.bob_events, &payload, 60, "bob").await?;
                }
            }
            let kib = |d: Duration| bytes as f64 / 1024.0 / d.as_secs_f64();
            let ratio = kib(colink) / kib(raw);
            println!(
                "    round {}: raw {:7.1} KiB/s, colink {:7.1} KiB/s, colink/raw {ratio:.2}{}",
                round + 1,
                kib(raw),
                kib(colink),
                if round % 2 == 0 { " (raw first)" } else { " (colink first)" }
            );
            ratios.push(ratio);
            raw_all.push(raw);
            colink_all.push(colink);
        }
        echo::packet_bye(&conn).await.or_fail("raw bye")?;
        Ok::<_, Stop>((ratios, raw_all, colink_all))
    };
    let ((), (mut ratios, raw_all, colink_all)) = tokio::try_join!(responder, rounds_run)?;
    ensure(!ratios.is_empty(), || "no round ran".into())?;
    for (imp, all) in [("raw", &raw_all), ("colink", &colink_all)] {
        let total: Duration = all.iter().sum();
        ctx.figure(Figure {
            link: "l2cap-coc",
            imp,
            what: "interleaved one-way",
            bytes: bytes * all.len() as u64,
            elapsed: total,
            detail: format!("{} rounds of {bytes} bytes, SDU {sdu}", all.len()),
        });
    }
    ratios.sort_by(f64::total_cmp);
    let (min, median) = (ratios[0], ratios[ratios.len() / 2]);
    ctx.summary(format!(
        "colink/raw goodput (l2cap-coc, interleaved, {} rounds of {} MiB): min {min:.2}, median {median:.2}",
        ratios.len(),
        bytes as f64 / (1024.0 * 1024.0)
    ));
    Ok(())
}
