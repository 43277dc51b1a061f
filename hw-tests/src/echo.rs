//! The transfer protocol every link test speaks, generic over the link so colink-ble's links (the `ble::` tests)
//! run the very same exchange as the raw sockets they are compared with.
//!
//! The initiator sends a 10-byte header `[b'H', phase, total: u64 BE]`, then the phase's data:
//! - phase ECHO: the responder sends every byte back (a packet link SDU for SDU);
//! - phase SINK: the responder consumes the bytes and answers with their SHA-256 (32 bytes);
//! - phase BYE: the responder returns;
//! - phase DELIVER: the responder keeps the bytes in memory and, the moment it holds the last one, answers with
//!   their count (8 bytes, big-endian); only then does it hash what it holds and send the SHA-256 (32 bytes).
//!
//! The initiator checks the SHA-256 (and, for packets, the SDU sizes) of what came back. DELIVER's time ends at
//! the count: when the receiver holds every byte and the sender has learnt it, which is where colink's
//! `send_data` resolves (the peer's acknowledgement of the whole payload) — the end point the `bench::` tests
//! compare. SINK's time also includes the responder's hashing and is kept for the single-shot figures.

use std::io;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cpu::{CpuClock, CpuUse};

const ECHO: u8 = 1;
const SINK: u8 = 2;
const BYE: u8 = 3;
const DELIVER: u8 = 4;
const HEADER_LEN: usize = 10;
/// Most bytes a DELIVER responder reserves up front, whatever the header claims (it grows past it as data
/// arrives, never ahead of it).
const DELIVER_RESERVE: u64 = 64 << 20;

/// Largest write on a stream link.
///
/// Quirk (vm-rig.md, RFCOMM): the default SO_SNDBUF is 50800; one 32 KiB write delivered nothing in 8 s and a
/// 10 MB sendall hung, while writes of at most 4 KiB flow. Stream writes are chunked to this.
pub(crate) const STREAM_CHUNK: usize = 4096;

/// A link that keeps message boundaries (a raw L2CAP CoC SeqPacket socket, or a colink-ble packet link).
pub(crate) trait PacketIo {
    /// Sends one SDU.
    async fn send_sdu(&self, sdu: &[u8]) -> io::Result<()>;
    /// Receives one SDU into `buf`; `Ok(0)` when the peer closed.
    async fn recv_sdu(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl PacketIo for bluer::l2cap::SeqPacket {
    async fn send_sdu(&self, sdu: &[u8]) -> io::Result<()> {
        let n = self.send(sdu).await?;
        if n == sdu.len() { Ok(()) } else { Err(io::Error::other(format!("SDU of {} bytes sent as {n}", sdu.len()))) }
    }
    async fn recv_sdu(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf).await
    }
}

/// Deterministic test data (xorshift64*), so both ends and reruns agree.
pub(crate) fn pattern(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len as usize + 8);
    while (v.len() as u64) < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len as usize);
    v
}

fn header(phase: u8, total: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = b'H';
    h[1] = phase;
    h[2..].copy_from_slice(&total.to_be_bytes());
    h
}

fn parse_header(b: &[u8]) -> io::Result<(u8, u64)> {
    if b.len() != HEADER_LEN || b[0] != b'H' || !(ECHO..=DELIVER).contains(&b[1]) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad header {b:02x?}")));
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[2..]);
    Ok((b[1], u64::from_be_bytes(t)))
}

/// Result of a transfer as seen by the initiator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// CPU time used over `elapsed` (DELIVER only; `None` elsewhere or when /proc cannot be read).
    pub(crate) cpu: Option<CpuUse>,
}

fn ctx_err(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mismatch(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Responder side of a packet link: serves phases until BYE. `mtu` is the receive MTU.
pub(crate) async fn packet_responder(link: &impl PacketIo, mtu: usize) -> io::Result<()> {
    let mut buf = vec![0u8; mtu.max(HEADER_LEN)];
    loop {
        let n = link.recv_sdu(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed without BYE"));
        }
        let (phase, total) = parse_header(&buf[..n])?;
        let mut done = 0u64;
        let mut hash = Sha256::new();
        let mut held = Vec::with_capacity(if phase == DELIVER { total.min(DELIVER_RESERVE) as usize } else { 0 });
        while done < total {
            let n = link.recv_sdu(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("peer closed at {done}/{total}")));
            }
            done += n as u64;
            match phase {
                ECHO => {
                    link.send_sdu(&buf[..n]).await.map_err(|e| ctx_err(e, &format!("echoing an SDU of {n} bytes")))?;
                }
                DELIVER => held.extend_from_slice(&buf[..n]),
                _ => hash.update(&buf[..n]),
            }
        }
        match phase {
            SINK => link.send_sdu(&hash.finalize()).await?,
            DELIVER => {
                link.send_sdu(&done.to_be_bytes()).await?;
                link.send_sdu(&Sha256::digest(&held)).await?;
            }
            BYE => return Ok(()),
            _ => {}
        }
    }
}

/// Initiator: echoes `data` in SDUs of `sdu` bytes; checks the SHA-256 and every SDU's size on return.
pub(crate) async fn packet_echo(link: &impl PacketIo, data: &[u8], sdu: usize, mtu: usize) -> io::Result<Transfer> {
    let start = Instant::now();
    link.send_sdu(&header(ECHO, data.len() as u64)).await?;
    let send = async {
        for chunk in data.chunks(sdu) {
            link.send_sdu(chunk).await?;
        }
        Ok::<_, io::Error>(())
    };
    let recv = async {
        let mut buf = vec![0u8; mtu];
        let mut hash = Sha256::new();
        let mut sizes = data.chunks(sdu).map(<[u8]>::len);
        let mut got = 0usize;
        while got < data.len() {
            let n = link.recv_sdu(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("closed at {got}/{}", data.len())));
            }
            if sizes.next() != Some(n) {
                return Err(mismatch(&format!("SDU boundary not kept: got an SDU of {n} bytes at offset {got}")));
            }
            hash.update(&buf[..n]);
            got += n;
        }
        Ok(hash.finalize())
    };
    let ((), echoed) = tokio::try_join!(send, recv)?;
    if echoed != Sha256::digest(data) {
        return Err(mismatch("echoed data differs from sent data (SHA-256)"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed: start.elapsed(), cpu: None })
}

/// Initiator: sends `data` one way in SDUs of `sdu` bytes; the time runs until the responder's digest is back.
pub(crate) async fn packet_sink(link: &impl PacketIo, data: &[u8], sdu: usize) -> io::Result<Transfer> {
    let start = Instant::now();
    link.send_sdu(&header(SINK, data.len() as u64)).await?;
    for chunk in data.chunks(sdu) {
        link.send_sdu(chunk).await?;
    }
    let mut buf = vec![0u8; 64];
    let n = link.recv_sdu(&mut buf).await?;
    let elapsed = start.elapsed();
    if buf[..n] != Sha256::digest(data)[..] {
        return Err(mismatch("responder's SHA-256 of the one-way data differs"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed, cpu: None })
}

/// Initiator: sends `data` one way in SDUs of `sdu` bytes (phase DELIVER); the time runs until the responder
/// says it holds every byte. Its SHA-256 of what it holds is checked afterwards, outside the time.
pub(crate) async fn packet_deliver(link: &impl PacketIo, data: &[u8], sdu: usize) -> io::Result<Transfer> {
    let (start, clock) = (Instant::now(), CpuClock::now());
    link.send_sdu(&header(DELIVER, data.len() as u64)).await?;
    for chunk in data.chunks(sdu) {
        link.send_sdu(chunk).await?;
    }
    let mut buf = vec![0u8; 64];
    let n = link.recv_sdu(&mut buf).await?;
    let (elapsed, cpu) = (start.elapsed(), clock.and_then(CpuClock::since));
    check_count(&buf[..n], data.len())?;
    let n = link.recv_sdu(&mut buf).await?;
    if buf[..n] != Sha256::digest(data)[..] {
        return Err(mismatch("responder's SHA-256 of the delivered data differs"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed, cpu })
}

/// Checks a DELIVER count answer against the bytes sent.
fn check_count(answer: &[u8], sent: usize) -> io::Result<()> {
    let count = <[u8; 8]>::try_from(answer).ok().map(u64::from_be_bytes);
    if count != Some(sent as u64) {
        return Err(mismatch(&format!("responder answered {answer:02x?} for {sent} bytes delivered")));
    }
    Ok(())
}

/// Initiator: tells the responder to finish.
pub(crate) async fn packet_bye(link: &impl PacketIo) -> io::Result<()> {
    link.send_sdu(&header(BYE, 0)).await
}

/// Responder side of a stream link: serves phases until BYE or EOF after BYE.
pub(crate) async fn stream_responder<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    let mut buf = vec![0u8; STREAM_CHUNK];
    loop {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).await?;
        let (phase, total) = parse_header(&h)?;
        let mut done = 0u64;
        let mut hash = Sha256::new();
        let mut held = Vec::with_capacity(if phase == DELIVER { total.min(DELIVER_RESERVE) as usize } else { 0 });
        while done < total {
            let want = (total - done).min(STREAM_CHUNK as u64) as usize;
            let n = s.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("peer closed at {done}/{total}")));
            }
            done += n as u64;
            match phase {
                ECHO => s.write_all(&buf[..n]).await?,
                DELIVER => held.extend_from_slice(&buf[..n]),
                _ => hash.update(&buf[..n]),
            }
        }
        match phase {
            SINK => s.write_all(&hash.finalize()).await?,
            DELIVER => {
                s.write_all(&done.to_be_bytes()).await?;
                s.flush().await?;
                s.write_all(&Sha256::digest(&held)).await?;
            }
            BYE => return Ok(()),
            _ => {}
        }
        s.flush().await?;
    }
}

/// Initiator: echoes `data` over a stream in writes of at most [`STREAM_CHUNK`]; checks the SHA-256.
pub(crate) async fn stream_echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> io::Result<Transfer> {
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(s);
    let send = async {
        wr.write_all(&header(ECHO, data.len() as u64)).await?;
        for chunk in data.chunks(STREAM_CHUNK) {
            wr.write_all(chunk).await?;
        }
        wr.flush().await
    };
    let recv = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut hash = Sha256::new();
        let mut got = 0usize;
        while got < data.len() {
            let want = (data.len() - got).min(buf.len());
            let n = rd.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("closed at {got}/{}", data.len())));
            }
            hash.update(&buf[..n]);
            got += n;
        }
        Ok(hash.finalize())
    };
    let ((), echoed) = tokio::try_join!(send, recv)?;
    if echoed != Sha256::digest(data) {
        return Err(mismatch("echoed data differs from sent data (SHA-256)"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed: start.elapsed(), cpu: None })
}

/// Initiator: sends `data` one way over a stream; the time runs until the responder's digest is back.
pub(crate) async fn stream_sink<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> io::Result<Transfer> {
    let start = Instant::now();
    s.write_all(&header(SINK, data.len() as u64)).await?;
    for chunk in data.chunks(STREAM_CHUNK) {
        s.write_all(chunk).await?;
    }
    s.flush().await?;
    let mut digest = [0u8; 32];
    s.read_exact(&mut digest).await?;
    let elapsed = start.elapsed();
    if digest[..] != Sha256::digest(data)[..] {
        return Err(mismatch("responder's SHA-256 of the one-way data differs"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed, cpu: None })
}

/// Initiator: sends `data` one way over a stream (phase DELIVER); the time runs until the responder says it holds
/// every byte. Its SHA-256 of what it holds is checked afterwards, outside the time.
pub(crate) async fn stream_deliver<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> io::Result<Transfer> {
    let (start, clock) = (Instant::now(), CpuClock::now());
    s.write_all(&header(DELIVER, data.len() as u64)).await?;
    for chunk in data.chunks(STREAM_CHUNK) {
        s.write_all(chunk).await?;
    }
    s.flush().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    let (elapsed, cpu) = (start.elapsed(), clock.and_then(CpuClock::since));
    check_count(&count, data.len())?;
    let mut digest = [0u8; 32];
    s.read_exact(&mut digest).await?;
    if digest[..] != Sha256::digest(data)[..] {
        return Err(mismatch("responder's SHA-256 of the delivered data differs"));
    }
    Ok(Transfer { bytes: data.len() as u64, elapsed, cpu })
}

/// Initiator: tells the responder to finish.
pub(crate) async fn stream_bye<S: AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(&header(BYE, 0)).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    //! The protocol over in-memory links (the real links are exercised in the rig).
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;

    /// One end of an in-memory packet link that keeps SDU boundaries.
    struct MemPacket {
        tx: mpsc::Sender<Vec<u8>>,
        rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
        sent_sizes: Mutex<Vec<usize>>,
    }

    fn mem_pair() -> (MemPacket, MemPacket) {
        let (t1, r1) = mpsc::channel(4);
        let (t2, r2) = mpsc::channel(4);
        let mk = |tx, rx| MemPacket { tx, rx: tokio::sync::Mutex::new(rx), sent_sizes: Mutex::new(Vec::new()) };
        (mk(t1, r2), mk(t2, r1))
    }

    impl PacketIo for MemPacket {
        async fn send_sdu(&self, sdu: &[u8]) -> io::Result<()> {
            self.sent_sizes.lock().unwrap().push(sdu.len());
            self.tx.send(sdu.to_vec()).await.map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        }
        async fn recv_sdu(&self, buf: &mut [u8]) -> io::Result<usize> {
            match self.rx.lock().await.recv().await {
                Some(v) => {
                    buf[..v.len()].copy_from_slice(&v);
                    Ok(v.len())
                }
                None => Ok(0),
            }
        }
    }

    #[tokio::test]
    async fn packet_protocol_echo_sink_bye() {
        let (a, b) = mem_pair();
        let data = pattern(100_003, 7);
        let server = packet_responder(&b, 1000);
        let client = async {
            let e = packet_echo(&a, &data, 1000, 1000).await?;
            let s = packet_sink(&a, &data, 999).await?;
            let d = packet_deliver(&a, &data, 999).await?;
            packet_bye(&a).await?;
            Ok::<_, io::Error>((e, s, d))
        };
        let (r, c) = tokio::join!(server, client);
        r.unwrap();
        let (e, s, d) = c.unwrap();
        assert_eq!((e.bytes, s.bytes, d.bytes), (100_003, 100_003, 100_003));
        // the responder echoed SDU for SDU: 101 SDUs of <= 1000 bytes plus one digest, then DELIVER's count and
        // digest
        let sizes = b.sent_sizes.lock().unwrap().clone();
        assert_eq!(sizes.len(), 101 + 1 + 2);
        assert_eq!(sizes[100], 3);
        assert_eq!(&sizes[101..], [32, 8, 32]);
    }

    #[tokio::test]
    async fn stream_protocol_echo_sink_bye_with_small_writes() {
        let (mut a, mut b) = tokio::io::duplex(8192);
        let data = pattern(50_001, 9);
        let (r, c) = tokio::join!(stream_responder(&mut b), async {
            let e = stream_echo(&mut a, &data).await?;
            let s = stream_sink(&mut a, &data).await?;
            let d = stream_deliver(&mut a, &data).await?;
            stream_bye(&mut a).await?;
            Ok::<_, io::Error>((e, s, d))
        });
        r.unwrap();
        let (e, s, d) = c.unwrap();
        assert_eq!((e.bytes, s.bytes, d.bytes), (50_001, 50_001, 50_001));
    }

    #[tokio::test]
    async fn a_corrupting_responder_is_caught() {
        let (a, b) = mem_pair();
        let data = pattern(5000, 1);
        let bad = async {
            let mut buf = vec![0u8; 2000];
            let _ = b.recv_sdu(&mut buf).await; // header
            for _ in 0..5 {
                let n = b.recv_sdu(&mut buf).await.unwrap();
                buf[0] ^= 1;
                b.send_sdu(&buf[..n]).await.unwrap();
            }
        };
        let (_, r) = tokio::join!(bad, packet_echo(&a, &data, 1000, 2000));
        assert!(r.unwrap_err().to_string().contains("SHA-256"));
    }

    #[test]
    fn headers_are_validated() {
        assert!(parse_header(&header(SINK, 5)).is_ok());
        assert!(parse_header(&header(DELIVER, 5)).is_ok());
        assert!(check_count(&7u64.to_be_bytes(), 7).is_ok());
        assert!(check_count(&7u64.to_be_bytes(), 8).is_err());
        assert!(check_count(&[0; 4], 0).is_err());
        assert!(parse_header(&[0u8; 10]).is_err());
        assert!(parse_header(&[b'H', 9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_header(&[b'H', 1]).is_err());
        assert_eq!(pattern(1000, 3), pattern(1000, 3));
        assert_ne!(pattern(1000, 3), pattern(1000, 4));
    }
}
