//! RFCOMM through a raw bluer stream socket.

use std::time::Duration;

use bluer::rfcomm::{Listener, Socket, SocketAddr};
use tokio::io::AsyncReadExt;

use crate::advert::{Advert, nonce, test_id};
use crate::bt::{advertise, discover, forget, send_buffer, wait_connected};
use crate::echo::{self, STREAM_CHUNK};
use crate::harness::{Ctx, Figure, OrFail, Stop, TestResult, ensure, within};
use crate::rig::End;

pub(super) async fn run(ctx: &Ctx) -> TestResult {
    ctx.rig.run_ends(responder, |end| initiator(ctx, end)).await
}

async fn responder(end: End) -> TestResult {
    let a = &end.adapter;
    // Drop what the previous test left (an LE link to the peer stops this adapter from advertising).
    if let Some(peer) = end.peer {
        forget(a, peer).await;
    }
    let own = a.address().await.or_fail("adapter address")?;
    // Channel 0: the kernel picks a free channel at listen.
    let listener = Listener::bind(SocketAddr::new(own, 0)).await.or_fail("RFCOMM listen (AF_BLUETOOTH)")?;
    let channel = listener.as_ref().local_addr().or_fail("listener address")?.channel;
    ensure((1..=30).contains(&channel), || format!("kernel assigned RFCOMM channel {channel}"))?;
    // The advert carries the channel (the connection itself goes over BR/EDR to the same public address).
    let adv = advertise(a, &Advert { test: test_id::RFCOMM, nonce: nonce(), psm: 0, channel }).await?;
    let (mut conn, from) = within(60, "accept", async { listener.accept().await.or_fail("accept") }).await?;
    drop(adv);
    if let Some(peer) = end.peer {
        ensure(from.addr == peer, || format!("accepted {from:?}, expected {peer}"))?;
    }
    within(900, "responder", async { echo::stream_responder(&mut conn).await.or_fail("responder") }).await
}

async fn initiator(ctx: &Ctx, end: End) -> TestResult {
    let a = &end.adapter;
    let peer = end.peer.ok_or_else(|| Stop::Skip("needs the responder's address (--peer)".into()))?;
    forget(a, peer).await;
    let seen = discover(a, peer, test_id::RFCOMM, Duration::from_secs(30)).await?;
    let own = a.address().await.or_fail("adapter address")?;
    let target = SocketAddr::new(peer, seen.advert.channel);
    let mut conn = within(30, "connect", async {
        let sock = Socket::new().or_fail("RFCOMM socket")?;
        // Bind to this adapter: otherwise the kernel may route the connection through another local adapter.
        sock.bind(SocketAddr::new(own, 0)).or_fail("bind")?;
        sock.connect(target).await.or_fail("connect")
    })
    .await?;
    // Quirk (bluer #163): connect() returns before the link is up (same code path as L2CAP); wait for POLLOUT.
    let setup = wait_connected(&conn, Duration::from_secs(30)).await.or_fail(&format!("connect to {target:?}"))?;
    let sndbuf = send_buffer(&conn).or_fail("SO_SNDBUF")?;
    println!("    connected to {target:?} in {setup:?}: SO_SNDBUF {sndbuf}, writes of {STREAM_CHUNK} bytes");
    let detail = format!("writes of {STREAM_CHUNK} B");

    let data = echo::pattern(ctx.opts.echo_bytes, 0x5eed_0003);
    let echo = within(900, "echo", async { echo::stream_echo(&mut conn, &data).await.or_fail("echo") }).await?;
    ctx.figure(Figure {
        link: "rfcomm",
        imp: "raw",
        what: "echo, each way",
        bytes: echo.bytes,
        elapsed: echo.elapsed,
        detail: detail.clone(),
    });
    let data = echo::pattern(ctx.opts.throughput_bytes, 0x5eed_0004);
    let sink = within(900, "one-way", async { echo::stream_sink(&mut conn, &data).await.or_fail("one-way") }).await?;
    ctx.figure(Figure {
        link: "rfcomm",
        imp: "raw",
        what: "one-way goodput",
        bytes: sink.bytes,
        elapsed: sink.elapsed,
        detail,
    });
    echo::stream_bye(&mut conn).await.or_fail("bye")?;
    // Let the responder read BYE and close first.
    let mut buf = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
    Ok(())
}
