//! LE credit-based L2CAP (CoC) through a raw bluer SeqPacket socket.

use std::time::Duration;

use bluer::Adapter;
use bluer::l2cap::{Security, SecurityLevel, SeqPacket, Socket, SocketAddr};

use crate::advert::{Advert, nonce, test_id};
use crate::bt::{advertise, discover, forget, send_buffer, wait_connected};
use crate::echo::{self, PacketIo};
use crate::harness::{Ctx, Figure, OrFail, Stop, TestResult, ensure, within};
use crate::rig::End;

/// Smallest MTU LE allows. Quirk (vm-rig.md): smaller values are accepted silently by the kernel.
const LE_MIN_MTU: usize = 23;

/// A SeqPacket socket bound to `adapter`'s LE address with the options in the order this kernel accepts.
///
/// Quirks (vm-rig.md): BT_RCVMTU before an LE bind fails with EINVAL and after connect with EISCONN, so the order
/// is socket → bind → set_recv_mtu → set_security → listen/connect (a listener's MTU is inherited by accepted
/// sockets). `set_flow_control` (BT_MODE) is not called: LE sockets use LE credit-based flow control by default
/// and BT_MODE fails with ENOPROTOOPT on 6.1 because ECRED is off.
pub(crate) async fn socket(adapter: &Adapter, mtu: u16) -> Result<Socket<SeqPacket>, Stop> {
    let addr = adapter.address().await.or_fail("adapter address")?;
    let kind = adapter.address_type().await.or_fail("adapter address type")?;
    let sock = Socket::<SeqPacket>::new_seq_packet().or_fail("L2CAP socket (AF_BLUETOOTH)")?;
    sock.bind(SocketAddr::new(addr, kind, 0)).or_fail("bind")?;
    sock.set_recv_mtu(mtu).or_fail("set_recv_mtu")?;
    sock.set_security(Security { level: SecurityLevel::Low, key_size: 0 }).or_fail("set_security")?;
    Ok(sock)
}

pub(super) async fn run(ctx: &Ctx) -> TestResult {
    ctx.rig.run_ends(|end| responder(ctx, end), |end| initiator(ctx, end)).await
}

async fn responder(ctx: &Ctx, end: End) -> TestResult {
    let a = &end.adapter;
    // Drop what the previous test left (an LE link to the peer stops this adapter from advertising).
    if let Some(peer) = end.peer {
        forget(a, peer).await;
    }
    let listener = socket(a, ctx.opts.l2cap_mtu).await?.listen(1).or_fail("listen")?;
    // PSM 0 at bind: the kernel assigns a free dynamic LE PSM (0x80..=0xFF).
    let psm = listener.as_ref().local_addr().or_fail("listener address")?.psm;
    let psm = u8::try_from(psm)
        .ok()
        .filter(|p| *p >= 0x80)
        .ok_or_else(|| Stop::Fail(format!("kernel assigned PSM {psm:#x}, outside the LE dynamic range 0x80..=0xFF")))?;
    let adv = advertise(a, &Advert { test: test_id::L2CAP, nonce: nonce(), psm, channel: 0 }).await?;
    let (conn, from) = within(60, "accept", async { listener.accept().await.or_fail("accept") }).await?;
    drop(adv);
    if let Some(peer) = end.peer {
        ensure(from.addr == peer, || format!("accepted {from:?}, expected {peer}"))?;
    }
    let mtu = conn.recv_mtu().or_fail("recv_mtu")?;
    let send_mtu = conn.send_mtu().or_fail("send_mtu")?;
    let sndbuf = send_buffer(&conn).or_fail("SO_SNDBUF")?;
    println!("    responder accepted {from:?}: send MTU {send_mtu}, recv MTU {mtu}, SO_SNDBUF {sndbuf}");
    within(900, "responder", async {
        echo::packet_responder(&conn, mtu).await.map_err(|e| {
            // Quirk seen in the rig: with EATT on (bluetoothd [GATT] Channels > 1) the channel's send MTU dropped
            // to the ATT MTU 517 after accept and sends failed with EMSGSIZE. Say so instead of only "too long".
            let now = conn.send_mtu().unwrap_or(0);
            let hint = if now != send_mtu {
                format!(" (send MTU changed from {send_mtu} to {now} during the connection: is EATT on? set [GATT] Channels = 1 in /etc/bluetooth/main.conf)")
            } else {
                String::new()
            };
            Stop::Fail(format!("responder: {e}{hint}"))
        })
    })
    .await
}

async fn initiator(ctx: &Ctx, end: End) -> TestResult {
    let a = &end.adapter;
    let peer = end.peer.ok_or_else(|| Stop::Skip("needs the responder's address (--peer)".into()))?;
    forget(a, peer).await;
    let seen = discover(a, peer, test_id::L2CAP, Duration::from_secs(30)).await?;
    let target = SocketAddr::new(peer, seen.address_type, seen.advert.psm.into());
    let conn =
        within(30, "connect", async { socket(a, ctx.opts.l2cap_mtu).await?.connect(target).await.or_fail("connect") })
            .await?;
    // Quirk (bluer #163): connect() returned before the link is up; wait for POLLOUT.
    let setup = wait_connected(&conn, Duration::from_secs(30)).await.or_fail(&format!("connect to {target:?}"))?;
    let send_mtu = conn.send_mtu().or_fail("send_mtu")?;
    let recv_mtu = conn.recv_mtu().or_fail("recv_mtu")?;
    ensure(send_mtu >= LE_MIN_MTU && recv_mtu >= LE_MIN_MTU, || {
        format!("MTUs below the LE minimum {LE_MIN_MTU}: send {send_mtu}, recv {recv_mtu}")
    })?;
    // Quirk (vm-rig.md): the kernel segments a whole SDU before sending; an SDU that does not fit SO_SNDBUF is
    // never sent (EAGAIN after the 40 s send timeout). Keep SDUs well inside the send buffer.
    let sndbuf = send_buffer(&conn).or_fail("SO_SNDBUF")?;
    let sdu = send_mtu.min(sndbuf / 4).min(ctx.opts.l2cap_sdu.unwrap_or(usize::MAX));
    ensure(sdu >= LE_MIN_MTU, || format!("SO_SNDBUF {sndbuf} too small for SDUs"))?;
    println!(
        "    connected to {target:?} in {setup:?}: send MTU {send_mtu}, recv MTU {recv_mtu}, SO_SNDBUF {sndbuf}, SDU {sdu}"
    );
    let detail = format!("MTU {send_mtu}, SDU {sdu}");

    let data = echo::pattern(ctx.opts.echo_bytes, 0x5eed_0001);
    let echo =
        within(900, "echo", async { echo::packet_echo(&conn, &data, sdu, recv_mtu).await.or_fail("echo") }).await?;
    ctx.figure(Figure {
        link: "l2cap-coc",
        imp: "raw",
        what: "echo, each way",
        bytes: echo.bytes,
        elapsed: echo.elapsed,
        detail: detail.clone(),
    });
    let data = echo::pattern(ctx.opts.throughput_bytes, 0x5eed_0002);
    let sink = within(900, "one-way", async { echo::packet_sink(&conn, &data, sdu).await.or_fail("one-way") }).await?;
    ctx.figure(Figure {
        link: "l2cap-coc",
        imp: "raw",
        what: "one-way goodput",
        bytes: sink.bytes,
        elapsed: sink.elapsed,
        detail,
    });
    echo::packet_bye(&conn).await.or_fail("bye")?;
    // Let the responder read BYE and close before this socket goes (closing may drop queued data).
    let mut buf = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.recv_sdu(&mut buf)).await;
    Ok(())
}
