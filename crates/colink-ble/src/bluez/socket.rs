//! Opening kernel sockets for colink links: option order, connect completion, buffer sizing, listeners.

use std::io;
use std::time::Duration;

use bluer::l2cap::{self, SeqPacket};
use bluer::rfcomm;
use tokio::time::Instant;

use super::link::{BluezLink, LinkIo, RFCOMM_WRITE_CHUNK, packet_mtu, sdu_budget};
use super::{to_bluer_address, to_bluer_address_type};
use crate::{
    AdapterError, AddressType, BoxFuture, ConnectError, InvalidParam, Link, LinkMode, LinkParams, Listener, Mtu,
    PeerAddress, Phy, Port, Psm, RfcommChannel, SecurityLevel,
};

/// How long a connect may take until the channel is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the connect completion is polled (see [`wait_up`]).
const CONNECT_POLL: Duration = Duration::from_millis(2);
/// Receive buffer asked for on every socket: LE CoC receive credits follow free SO_RCVBUF space (bluez.md), so a
/// larger buffer keeps the peer sending. The kernel caps it at `net.core.rmem_max` for unprivileged processes.
const RECV_BUFFER: i32 = 4 << 20;
/// Backlog of listening sockets.
const BACKLOG: u32 = 8;

/// Where a connect completed, or why it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The channel is connected.
    Up,
    /// Still connecting.
    Connecting,
    /// The kernel closed the socket; the socket error says why.
    Failed,
}

impl Probe {
    /// Decides from two socket queries: the connection-info option (answers only once connected) and getpeername
    /// (answers while connecting or connected, ENOTCONN once closed).
    pub(crate) fn from_queries(conn_info_ok: bool, peer_name_ok: bool) -> Self {
        match (conn_info_ok, peer_name_ok) {
            (true, _) => Self::Up,
            (false, true) => Self::Connecting,
            (false, false) => Self::Failed,
        }
    }
}

/// Waits until `probe` says the socket is up.
///
/// Quirk (bluer issue #163, vm-rig.md): bluer's `connect()` returns before the L2CAP/RFCOMM channel is up (its
/// async fd reports the writability the socket had before connecting), and the first send then fails with
/// ENOTCONN. The kernel answers `L2CAP_CONNINFO`/`RFCOMM_CONNINFO` only in the connected state, so polling it is
/// the POLLOUT wait without unsafe fd handling (this crate forbids `unsafe`).
async fn wait_up(mut probe: impl FnMut() -> Probe, timeout: Duration) -> Result<Duration, Option<ConnectError>> {
    let start = Instant::now();
    loop {
        match probe() {
            Probe::Up => return Ok(start.elapsed()),
            Probe::Failed => return Err(None),
            Probe::Connecting if start.elapsed() >= timeout => return Err(Some(ConnectError::Timeout)),
            Probe::Connecting => tokio::time::sleep(CONNECT_POLL).await,
        }
    }
}

/// Maps the errno of a failed connect.
pub(crate) fn connect_error(e: &io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::TimedOut => ConnectError::Timeout,
        io::ErrorKind::PermissionDenied => ConnectError::AuthenticationRequired,
        io::ErrorKind::NetworkDown => ConnectError::PoweredOff,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ConnectError::Refused,
        io::ErrorKind::InvalidInput => ConnectError::Backend(format!("invalid socket address or option: {e}")),
        _ => match e.raw_os_error() {
            Some(112) => ConnectError::Timeout,   // EHOSTDOWN: page/connection timeout
            Some(16) => ConnectError::PeerBusy,   // EBUSY
            Some(19) => ConnectError::PoweredOff, // ENODEV
            _ => ConnectError::Backend(e.to_string()),
        },
    }
}

/// The PSM the kernel assigned to a socket bound with PSM 0, checked against the kind asked for.
///
/// The kernel picks a free dynamic PSM itself (LE: 0x80..=0xFF; BR/EDR: odd from 0x1001). Quirk (bluez.md): LE
/// PSMs above 0xFF are refused with EINVAL, so anything outside the LE range for an LE socket is an error.
pub(crate) fn assigned_psm(raw: u16, le: bool) -> Result<Psm, AdapterError> {
    let psm = Psm::new(raw).map_err(|_| AdapterError::NoFreePort)?;
    if psm.is_le() == le { Ok(psm) } else { Err(AdapterError::NoFreePort) }
}

/// The security level as the kernel wants it.
fn l2cap_security(level: SecurityLevel) -> l2cap::Security {
    let level = match level {
        SecurityLevel::Low => l2cap::SecurityLevel::Low,
        SecurityLevel::Medium => l2cap::SecurityLevel::Medium,
        SecurityLevel::High => l2cap::SecurityLevel::High,
        _ => l2cap::SecurityLevel::Fips,
    };
    l2cap::Security { level, key_size: 0 }
}

fn rfcomm_security(level: SecurityLevel) -> rfcomm::Security {
    let level = match level {
        SecurityLevel::Low => rfcomm::SecurityLevel::Low,
        SecurityLevel::Medium => rfcomm::SecurityLevel::Medium,
        // RFCOMM has no FIPS level: High (authenticated, encrypted) is the strongest it offers.
        _ => rfcomm::SecurityLevel::High,
    };
    rfcomm::Security { level, key_size: 0 }
}

/// The security level a connected L2CAP socket reports (the link's level, raised by encryption the peer started
/// too), or `asked` when the kernel does not say.
fn l2cap_level(reported: Option<l2cap::Security>, asked: SecurityLevel) -> SecurityLevel {
    match reported.map(|s| s.level) {
        Some(l2cap::SecurityLevel::Sdp | l2cap::SecurityLevel::Low) => SecurityLevel::Low,
        Some(l2cap::SecurityLevel::Medium) => SecurityLevel::Medium,
        Some(l2cap::SecurityLevel::High) => SecurityLevel::High,
        Some(l2cap::SecurityLevel::Fips) => SecurityLevel::Fips,
        None => asked,
    }
}

/// As [`l2cap_level`] for an RFCOMM socket.
fn rfcomm_level(reported: Option<rfcomm::Security>, asked: SecurityLevel) -> SecurityLevel {
    match reported.map(|s| s.level) {
        Some(rfcomm::SecurityLevel::Sdp | rfcomm::SecurityLevel::Low) => SecurityLevel::Low,
        Some(rfcomm::SecurityLevel::Medium) => SecurityLevel::Medium,
        Some(rfcomm::SecurityLevel::High) => SecurityLevel::High,
        None => asked,
    }
}

/// Whether an L2CAP port is used over LE (decided by the PSM range).
fn is_le(psm: Psm) -> bool {
    psm.is_le()
}

/// Creates an L2CAP socket with its options in the order this kernel accepts.
///
/// Quirks (vm-rig.md): BT_RCVMTU before an LE bind fails with EINVAL (the socket is not LE until bound) and after
/// connect with EISCONN, so the order is socket → bind (own address first) → receive MTU → security → receive
/// buffer → listen/connect; a listener's MTU is inherited by accepted sockets. BT_RCVMTU exists for LE only;
/// BR/EDR sockets take the MTU through L2CAP_OPTIONS. MTUs below 23 are accepted silently by the kernel: [`Mtu`]
/// cannot hold one. BT_MODE (`set_flow_control`) is never set: LE sockets use LE credit-based flow control by
/// default and BT_MODE fails with ENOPROTOOPT on 6.1 (ECRED off).
fn l2cap_socket<T>(
    sock: l2cap::Socket<T>,
    own: PeerAddress,
    le: bool,
    psm: u16,
    params: LinkParams,
) -> io::Result<l2cap::Socket<T>> {
    let own_type = if le { to_bluer_address_type(own.address_type) } else { bluer::AddressType::BrEdr };
    sock.bind(l2cap::SocketAddr::new(to_bluer_address(own.address), own_type, psm))?;
    if le {
        sock.set_recv_mtu(params.mtu.get())?;
    } else {
        let mut opts = sock.l2cap_opts()?;
        opts.imtu = params.mtu.get();
        sock.set_l2cap_opts(&opts)?;
    }
    sock.set_security(l2cap_security(params.security))?;
    sock.set_recv_buffer(RECV_BUFFER)?;
    Ok(sock)
}

/// Send and receive MTU of a connected L2CAP socket (BT_SNDMTU/BT_RCVMTU are LE-only; BR/EDR uses the options).
fn l2cap_mtus<T>(sock: &l2cap::Socket<T>, le: bool) -> io::Result<(usize, usize)> {
    if le {
        Ok((usize::from(sock.send_mtu()?), usize::from(sock.recv_mtu()?)))
    } else {
        let o = sock.l2cap_opts()?;
        Ok((usize::from(o.omtu), usize::from(o.imtu)))
    }
}

/// The socket's SO_SNDBUF, read as TIOCOUTQ (free send-buffer space) on a socket with nothing queued yet: bluer
/// has no SO_SNDBUF getter and this crate forbids the unsafe fd borrow a raw getsockopt needs.
fn send_buffer<T>(sock: &l2cap::Socket<T>) -> usize {
    sock.output_buffer().map_or(0, |n| n as usize)
}

/// Builds the colink link for a connected L2CAP packet socket.
fn packet_link(
    sock: SeqPacket,
    le: bool,
    peer: PeerAddress,
    params: LinkParams,
    adapter: &bluer::Adapter,
) -> io::Result<BluezLink> {
    let (send_mtu, recv_mtu) = l2cap_mtus(sock.as_ref(), le)?;
    let sndbuf = send_buffer(sock.as_ref());
    // Quirk (vm-rig.md, "SDU does not fit in SO_SNDBUF"): the link MTU is capped so one SDU's kernel buffers fit
    // (see `sdu_budget`); it is also the smaller of both sides' MTUs.
    let mtu = packet_mtu(send_mtu, recv_mtu, sndbuf).ok_or_else(|| {
        io::Error::other(format!("SO_SNDBUF {sndbuf} too small for one SDU (MTUs {send_mtu}/{recv_mtu})"))
    })?;
    let security = l2cap_level(sock.as_ref().security().ok(), params.security);
    tracing::debug!(%peer.address, send_mtu, recv_mtu, sndbuf, mtu = mtu.get(), ?security, "packet link up");
    let io = LinkIo::Packet { sock, buf: tokio::sync::Mutex::new(vec![0; recv_mtu.max(1)]) };
    let params = link_params(params.with_security(security), le);
    Ok(BluezLink::new(io, mtu, mtu.bytes(), sndbuf, peer, params, adapter.clone()))
}

fn l2cap_stream_link(
    sock: l2cap::Stream,
    le: bool,
    peer: PeerAddress,
    params: LinkParams,
    adapter: &bluer::Adapter,
) -> io::Result<BluezLink> {
    let (send_mtu, recv_mtu) = l2cap_mtus(sock.as_ref(), le)?;
    let sndbuf = send_buffer(sock.as_ref());
    // Each stream write becomes one SDU (bluer truncates it to the send MTU): keep it within the send MTU and the
    // send-buffer budget (same SO_SNDBUF quirk as packet links).
    let chunk = send_mtu.min(sdu_budget(sndbuf, super::link::LE_MIN_MPS)).max(1);
    let mtu = Mtu::new(u16::try_from(send_mtu.min(recv_mtu)).unwrap_or(u16::MAX)).unwrap_or(Mtu::MIN);
    let security = l2cap_level(sock.as_ref().security().ok(), params.security);
    let (r, w) = sock.into_split();
    let io = LinkIo::L2capStream { read: tokio::sync::Mutex::new(r), write: tokio::sync::Mutex::new(w) };
    let params = link_params(params.with_security(security), le);
    Ok(BluezLink::new(io, mtu, chunk, sndbuf, peer, params, adapter.clone()))
}

fn rfcomm_link(sock: rfcomm::Stream, peer: PeerAddress, params: LinkParams, adapter: &bluer::Adapter) -> BluezLink {
    // As `send_buffer`: TIOCOUTQ on a fresh socket is its whole send buffer.
    let sndbuf = sock.as_ref().output_buffer().map_or(0, |n| n as usize);
    let security = rfcomm_level(sock.as_ref().security().ok(), params.security);
    let (r, w) = sock.into_split();
    let io = LinkIo::Rfcomm { read: tokio::sync::Mutex::new(r), write: tokio::sync::Mutex::new(w) };
    // Quirk (vm-rig.md, RFCOMM SO_SNDBUF): writes are chunked to RFCOMM_WRITE_CHUNK (4 KiB).
    let params = link_params(params.with_security(security), false);
    BluezLink::new(io, Mtu::MAX, RFCOMM_WRITE_CHUNK, sndbuf, peer, params, adapter.clone())
}

fn link_params(params: LinkParams, le: bool) -> LinkParams {
    let phy = match (le, params.phy) {
        (true, p) if p.is_le() => p,
        (true, _) => Phy::Le1M,
        (false, _) => Phy::BrEdr,
    };
    LinkParams { phy, conn_interval: None, ..params }
}

/// Opens a link (see [`crate::Adapter::connect`]).
pub(crate) async fn connect(
    adapter: &bluer::Adapter,
    own: PeerAddress,
    peer: PeerAddress,
    port: Port,
    mode: LinkMode,
    params: LinkParams,
) -> Result<BluezLink, ConnectError> {
    let span = tracing::debug_span!("bluez_connect", adapter = adapter.name(), peer = %peer.address, %port, ?mode);
    let _e = span.enter();
    let bonded = match adapter.device(to_bluer_address(peer.address)) {
        Ok(d) => d.is_paired().await.unwrap_or(false),
        Err(_) => false,
    };
    // Quirk (vm-rig.md, security): client-side Medium/High on a fresh LE link is not enforced (the channel
    // connects at Low and pairs afterwards, dying with EACCES without a capable agent); after pairing it works at
    // once. So a link that needs security requires the bond first.
    if params.security > SecurityLevel::Low && !bonded {
        return Err(ConnectError::AuthenticationRequired);
    }
    // A bonded peer's LE link is encrypted with the bond's key at least (docs/security.md, "Bluetooth pairing").
    // LE only: BlueZ's Paired does not say which transport the bond covers, and a BR/EDR link (RFCOMM) to a peer
    // bonded over LE alone would need a BR/EDR pairing first (seen in the rig: the RFCOMM connect timed out).
    let le = matches!(port, Port::L2cap(psm) if is_le(psm));
    if bonded && le && params.security < SecurityLevel::Medium {
        match connect_at(adapter, own, peer, port, mode, params.with_security(SecurityLevel::Medium)).await {
            Err(ConnectError::AuthenticationRequired) => {
                // The bond no longer works (the peer forgot it): colink's own handshake still authenticates and
                // encrypts the session, so connect at the level asked for, and say how to repair the bond.
                tracing::warn!(
                    "the bond with this device no longer encrypts (did it forget the pairing?): connecting without \
                     Bluetooth encryption; remove the device in bluetoothctl and pair again"
                );
            }
            other => return other,
        }
    }
    connect_at(adapter, own, peer, port, mode, params).await
}

/// Opens a link at exactly `params.security`.
async fn connect_at(
    adapter: &bluer::Adapter,
    own: PeerAddress,
    peer: PeerAddress,
    port: Port,
    mode: LinkMode,
    params: LinkParams,
) -> Result<BluezLink, ConnectError> {
    let backend = |e: io::Error| ConnectError::Backend(e.to_string());
    match (port, mode) {
        (Port::L2cap(psm), _) => {
            let le = is_le(psm);
            let addr_type = if le { to_bluer_address_type(peer.address_type) } else { bluer::AddressType::BrEdr };
            let target = l2cap::SocketAddr::new(to_bluer_address(peer.address), addr_type, psm.value());
            if mode == LinkMode::Packet {
                let sock = l2cap_socket(l2cap::Socket::new_seq_packet().map_err(backend)?, own, le, 0, params)
                    .map_err(backend)?;
                let conn = sock.connect(target).await.map_err(|e| connect_error(&e))?;
                let took = settle(&conn).await?;
                tracing::debug!(?took, "L2CAP channel up");
                packet_link(conn, le, peer, params, adapter).map_err(backend)
            } else {
                let sock =
                    l2cap_socket(l2cap::Socket::new_stream().map_err(backend)?, own, le, 0, params).map_err(backend)?;
                let conn = sock.connect(target).await.map_err(|e| connect_error(&e))?;
                settle_stream(&conn).await?;
                l2cap_stream_link(conn, le, peer, params, adapter).map_err(backend)
            }
        }
        (Port::Rfcomm(_), LinkMode::Packet) => Err(ConnectError::Unsupported("packet mode on RFCOMM")),
        (Port::Rfcomm(ch), _) => {
            let sock = rfcomm::Socket::new().map_err(backend)?;
            // Bind to this adapter first: otherwise the kernel may route the connection through another one.
            sock.bind(rfcomm::SocketAddr::new(to_bluer_address(own.address), 0)).map_err(backend)?;
            sock.set_security(rfcomm_security(params.security)).map_err(backend)?;
            let _ = sock.set_recv_buffer(RECV_BUFFER);
            let target = rfcomm::SocketAddr::new(to_bluer_address(peer.address), ch.value());
            let conn = sock.connect(target).await.map_err(|e| connect_error(&e))?;
            // Quirk (bluer #163): same early return as L2CAP; wait for RFCOMM_CONNINFO.
            let probe = |c: &rfcomm::Stream| Probe::from_queries(c.as_ref().conn_info().is_ok(), c.peer_addr().is_ok());
            match wait_up(|| probe(&conn), CONNECT_TIMEOUT).await {
                Ok(took) => tracing::debug!(?took, "RFCOMM channel up"),
                Err(Some(e)) => return Err(e),
                Err(None) => return Err(stream_failure(&conn).await),
            }
            let peer = PeerAddress { address_type: AddressType::BrEdr, ..peer };
            Ok(rfcomm_link(conn, peer, params, adapter))
        }
    }
}

/// Waits for a SeqPacket connect to complete (quirk bluer #163, see [`wait_up`]) and turns a failure into the
/// socket error.
async fn settle(conn: &SeqPacket) -> Result<Duration, ConnectError> {
    let probe = |c: &SeqPacket| Probe::from_queries(c.as_ref().conn_info().is_ok(), c.peer_addr().is_ok());
    match wait_up(|| probe(conn), CONNECT_TIMEOUT).await {
        Ok(t) => Ok(t),
        Err(Some(e)) => Err(e),
        Err(None) => {
            // The socket error is only returned by a read: a failed socket has no data, so this consumes nothing.
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(200), conn.recv(&mut b)).await {
                Ok(Err(e)) => Err(connect_error(&e)),
                _ => Err(ConnectError::Refused),
            }
        }
    }
}

async fn settle_stream(conn: &l2cap::Stream) -> Result<Duration, ConnectError> {
    let probe = |c: &l2cap::Stream| Probe::from_queries(c.as_ref().conn_info().is_ok(), c.peer_addr().is_ok());
    match wait_up(|| probe(conn), CONNECT_TIMEOUT).await {
        Ok(t) => Ok(t),
        Err(Some(e)) => Err(e),
        Err(None) => {
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(200), conn.peek(&mut b)).await {
                Ok(Err(e)) => Err(connect_error(&e)),
                _ => Err(ConnectError::Refused),
            }
        }
    }
}

async fn stream_failure(conn: &rfcomm::Stream) -> ConnectError {
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(200), conn.peek(&mut b)).await {
        Ok(Err(e)) => connect_error(&e),
        _ => ConnectError::Refused,
    }
}

/// A listening socket; implements [`Listener`].
pub(crate) struct BluezListener {
    kind: ListenKind,
    port: Port,
    le: bool,
    params: LinkParams,
    adapter: bluer::Adapter,
}

enum ListenKind {
    Packet(l2cap::SeqPacketListener),
    Stream(l2cap::StreamListener),
    Rfcomm(rfcomm::Listener),
}

/// Starts listening (see [`crate::Adapter::listen`]).
pub(crate) async fn listen(
    adapter: &bluer::Adapter,
    own: PeerAddress,
    port: Option<Port>,
    mode: LinkMode,
    params: LinkParams,
) -> Result<BluezListener, AdapterError> {
    let in_use = |p: Port| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::AddrInUse => AdapterError::PortInUse(p),
            _ => AdapterError::Backend(e.to_string()),
        }
    };
    let backend = |e: io::Error| AdapterError::Backend(e.to_string());
    match port {
        None | Some(Port::L2cap(_)) => {
            let (le, raw) = match port {
                Some(Port::L2cap(p)) => (p.is_le(), p.value()),
                // PSM 0: the kernel assigns a free dynamic PSM of the bound address's kind.
                _ => (params.phy.is_le(), 0),
            };
            let want = port.unwrap_or(Port::L2cap(Psm::new(Psm::LE_DYNAMIC_FIRST).map_err(AdapterError::from)?));
            let (kind, bound) = if mode == LinkMode::Packet {
                let s = l2cap_socket(l2cap::Socket::new_seq_packet().map_err(backend)?, own, le, raw, params)
                    .map_err(in_use(want))?;
                let bound = s.local_addr().map_err(backend)?.psm;
                (ListenKind::Packet(s.listen(BACKLOG).map_err(in_use(want))?), bound)
            } else {
                let s = l2cap_socket(l2cap::Socket::new_stream().map_err(backend)?, own, le, raw, params)
                    .map_err(in_use(want))?;
                let bound = s.local_addr().map_err(backend)?.psm;
                (ListenKind::Stream(s.listen(BACKLOG).map_err(in_use(want))?), bound)
            };
            let psm = assigned_psm(bound, le)?;
            tracing::debug!(adapter = adapter.name(), %psm, ?mode, "listening");
            Ok(BluezListener { kind, port: Port::L2cap(psm), le, params, adapter: adapter.clone() })
        }
        Some(Port::Rfcomm(_)) if mode == LinkMode::Packet => Err(AdapterError::Unsupported("packet mode on RFCOMM")),
        Some(Port::Rfcomm(ch)) => {
            let p = Port::Rfcomm(ch);
            let s = rfcomm::Socket::new().map_err(backend)?;
            s.bind(rfcomm::SocketAddr::new(to_bluer_address(own.address), ch.value())).map_err(in_use(p))?;
            s.set_security(rfcomm_security(params.security)).map_err(backend)?;
            let _ = s.set_recv_buffer(RECV_BUFFER);
            let l = s.listen(BACKLOG).map_err(in_use(p))?;
            let bound = l.as_ref().local_addr().map_err(backend)?.channel;
            let ch = RfcommChannel::new(bound).map_err(|e: InvalidParam| AdapterError::InvalidParam(e))?;
            Ok(BluezListener {
                kind: ListenKind::Rfcomm(l),
                port: Port::Rfcomm(ch),
                le: false,
                params,
                adapter: adapter.clone(),
            })
        }
    }
}

impl Listener for BluezListener {
    fn port(&self) -> Port {
        self.port
    }

    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Link>, AdapterError>> {
        // Cancel-safe: bluer's accept only calls accept(2) when the listener is readable and returns its result in
        // the same poll.
        Box::pin(async move {
            let backend = |e: io::Error| AdapterError::Backend(e.to_string());
            let from = |sa: l2cap::SocketAddr| PeerAddress {
                address: super::to_colink_address(sa.addr),
                address_type: super::from_bluer_address_type(Some(sa.addr_type)),
            };
            let link = match &self.kind {
                ListenKind::Packet(l) => {
                    let (conn, sa) = l.accept().await.map_err(backend)?;
                    let _ = conn.as_ref().set_recv_buffer(RECV_BUFFER);
                    packet_link(conn, self.le, from(sa), self.params, &self.adapter).map_err(backend)?
                }
                ListenKind::Stream(l) => {
                    let (conn, sa) = l.accept().await.map_err(backend)?;
                    let _ = conn.as_ref().set_recv_buffer(RECV_BUFFER);
                    l2cap_stream_link(conn, self.le, from(sa), self.params, &self.adapter).map_err(backend)?
                }
                ListenKind::Rfcomm(l) => {
                    let (conn, sa) = l.accept().await.map_err(backend)?;
                    let peer = PeerAddress::br_edr(super::to_colink_address(sa.addr));
                    rfcomm_link(conn, peer, self.params, &self.adapter)
                }
            };
            Ok(Box::new(link) as Box<dyn Link>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_decides_connect_state() {
        assert_eq!(Probe::from_queries(true, true), Probe::Up);
        assert_eq!(Probe::from_queries(false, true), Probe::Connecting);
        assert_eq!(Probe::from_queries(false, false), Probe::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_up_times_out_and_reports_failure() {
        let r = wait_up(|| Probe::Connecting, Duration::from_secs(1)).await;
        assert_eq!(r, Err(Some(ConnectError::Timeout)));
        assert_eq!(wait_up(|| Probe::Failed, Duration::from_secs(1)).await, Err(None));
        let mut n = 0;
        let r = wait_up(
            || {
                n += 1;
                if n < 5 { Probe::Connecting } else { Probe::Up }
            },
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(r, Ok(CONNECT_POLL * 4));
    }

    #[test]
    fn kernel_psm_is_checked() {
        assert_eq!(assigned_psm(0x80, true), Ok(Psm::new(0x80).unwrap()));
        assert_eq!(assigned_psm(0xFF, true), Ok(Psm::new(0xFF).unwrap()));
        assert_eq!(assigned_psm(0x1001, false), Ok(Psm::new(0x1001).unwrap()));
        assert_eq!(assigned_psm(0x1001, true), Err(AdapterError::NoFreePort), "BR/EDR PSM on an LE socket");
        assert_eq!(assigned_psm(0x81, false), Err(AdapterError::NoFreePort));
        assert_eq!(assigned_psm(0, true), Err(AdapterError::NoFreePort), "not assigned");
        assert_eq!(assigned_psm(0x100, true), Err(AdapterError::NoFreePort), "above 0xFF");
    }

    #[test]
    fn connect_errno_maps() {
        let e = io::Error::from_raw_os_error;
        assert_eq!(connect_error(&e(111)), ConnectError::Refused); // ECONNREFUSED: PSM not supported
        assert_eq!(connect_error(&e(110)), ConnectError::Timeout);
        assert_eq!(connect_error(&e(112)), ConnectError::Timeout);
        assert_eq!(connect_error(&e(13)), ConnectError::AuthenticationRequired);
        assert_eq!(connect_error(&e(100)), ConnectError::PoweredOff);
        assert!(matches!(connect_error(&e(5)), ConnectError::Backend(_)));
    }

    #[test]
    fn link_params_follow_the_transport() {
        let p = LinkParams::default();
        assert_eq!(link_params(p, true).phy, Phy::Le2M);
        assert_eq!(link_params(p.with_phy(Phy::BrEdr), true).phy, Phy::Le1M);
        assert_eq!(link_params(p, false).phy, Phy::BrEdr);
    }
}
