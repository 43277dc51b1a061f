//! Engine configuration, the transport description handed in on attach, and the entropy source.

use std::ops::RangeInclusive;
use std::time::Duration;

use colink_frame::{LinkMode, Mtu};

/// The session-protocol versions this implementation speaks.
///
/// Version 2 adds receive credit (docs/sessions.md §4.5): ACK entries grant room per session channel and HELLO
/// extension 3 announces the receive window. Against a version-1 peer the link runs without credit.
///
/// Version 3 adds selective acknowledgement (docs/sessions.md §4.6): the receiver keeps fragments beyond a gap
/// (within [`Config::reorder_buffer`]) and reports them in SACK blocks; the sender resends only the fragments
/// the receiver lacks. Version 4 gives each session a fifth lane, for file transfers (docs/sessions.md §1.1).
/// Against an older peer the link runs the highest version both speak.
pub const SUPPORTED_VERSIONS: RangeInclusive<u8> = 1..=4;

/// The default bound of fragments held beyond gaps per link: 256 KiB (see [`Config::reorder_buffer`]).
pub const DEFAULT_REORDER_BUFFER: u64 = 256 * 1024;

/// What every message on a session channel costs in receive credit beyond its payload bytes, in session
/// protocol version 3 (docs/sessions.md §4.5): without it, empty messages would cost nothing, and a peer could
/// queue any number of them for an app that does not read.
pub const MESSAGE_CHARGE: u64 = 64;

/// The default receive window per session channel: 4 MiB (see [`Config::receive_buffer`]).
pub const DEFAULT_RECEIVE_BUFFER: u64 = 4 * 1024 * 1024;

/// The longest device name a HELLO carries, in bytes (a Bluetooth device name's limit).
pub const MAX_DEVICE_NAME: usize = 248;

/// Tunables of one [`Connection`](super::Connection). `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// This device's stable identity, announced in the handshake.
    pub device_id: String,
    /// This device's name for people (e.g. the adapter's alias or the host name), announced in the HELLO
    /// (extension 2, sealed on authenticated links) so the peer can show it; empty (the default) announces none.
    /// Longer than [`MAX_DEVICE_NAME`] bytes is cut.
    pub device_name: String,
    /// Session-protocol versions offered (default [`SUPPORTED_VERSIONS`], 1..=4).
    pub versions: RangeInclusive<u8>,
    /// Keep-alive interval proposed in the handshake (default 5 s). The smaller proposal wins.
    pub keep_alive_interval: Duration,
    /// Idle timeout proposed in the handshake (default 30 s). The larger proposal wins.
    pub idle_timeout: Duration,
    /// How long an unanswered connect waits (default 10 s), on both sides.
    pub connect_timeout: Duration,
    /// The longest outage sessions survive (default 10 s): a re-dial (or an incoming transport) that starts
    /// within this time after the link was lost resumes them. The link closes when no transport was attached
    /// by `grace_period + resume_allowance`, and never while a resume handshake is still running.
    pub grace_period: Duration,
    /// How long after the grace period a transport whose dial started within it may still arrive (default
    /// 5 s): dialling, connecting and the secure handshake take time, so an outage just shorter than the
    /// grace period still resumes (docs/sessions.md §6).
    pub resume_allowance: Duration,
    /// How long a handshake may take before the attempt fails (default 10 s).
    pub handshake_timeout: Duration,
    /// Interval between handshake retransmissions while the peer's hello is missing (default 1 s).
    pub handshake_retry: Duration,
    /// Most unacknowledged bytes on the wire (default 128 KiB, and never less than four frames of the link). Bulk data and images may fill ¾ of it,
    /// stream media ⅞, so messages and control always find room.
    pub send_window: u64,
    /// The receiver acknowledges at the latest after this many received frame bytes (default ¼ of the window).
    pub ack_threshold: u64,
    /// The receiver acknowledges a completed message at the latest after this delay (default 20 ms).
    pub ack_delay: Duration,
    /// The receiver acknowledges fragments of a message still in progress at the latest after this delay
    /// (default 200 ms), so slow links keep the sender's retransmission timer quiet.
    pub ack_max_delay: Duration,
    /// A fragment not acknowledged this long after it was sent counts as lost and is sent again, each
    /// fragment on its own timer (default 1 s; raised automatically for large frames and slow links, see
    /// docs/sessions.md §4.3 and §9).
    pub retransmit_timeout: Duration,
    /// The largest frame this side sends (default 4096 bytes) while frames of different priorities share the
    /// link, below the link MTU: a higher-priority message waits behind at most about one frame already on the
    /// air, so large-MTU links (LE CoC and RFCOMM offer 64 KiB) would otherwise make that wait hundreds of
    /// milliseconds. Bulk data may use larger frames while it runs alone (see
    /// [`max_bulk_frame`](Self::max_bulk_frame)).
    pub max_frame: u16,
    /// The largest frame bulk data (images and data) may use while no higher-priority channel has sent for
    /// [`bulk_grow_after`](Self::bulk_grow_after), once the link has shown itself clean (64 frames acknowledged,
    /// no loss remembered; docs/sessions.md §4.7) (default 16384 bytes; never above the link MTU and the
    /// peer's maximum, never below [`max_frame`](Self::max_frame); equal to `max_frame` turns growth off).
    /// Fewer, larger frames save per-SDU costs (on BR/EDR the partly filled last baseband packet of each
    /// SDU, in a kernel the per-write work); the price is that the first message after a quiet stretch waits
    /// behind up to two such frames. See docs/performance.md, "Frame sizes that adapt". Under loss both this
    /// and [`max_frame`](Self::max_frame) are capped further, at the size that suits the error rate seen
    /// (docs/sessions.md §4.7).
    pub max_bulk_frame: u16,
    /// How long higher-priority channels must have sent nothing before bulk frames grow beyond
    /// [`max_frame`](Self::max_frame) (default 200 ms). The moment a higher-priority fragment goes out, the
    /// next bulk frame is small again.
    pub bulk_grow_after: Duration,
    /// Payload bytes queued per session channel before `send` answers `WouldBlock` (default 1 MiB). A single
    /// send into an empty channel is always accepted (the engine keeps a reference, never a copy).
    pub channel_buffer: u64,
    /// Payload bytes of whole messages each session channel may hold for the app before it reads them (default
    /// [`DEFAULT_RECEIVE_BUFFER`], 4 MiB; at most `u32::MAX`). The peer learns it in the HELLO and sends only what
    /// fits (version 2, docs/sessions.md §4.5): a slow app slows its own sender, no other session. A single
    /// message larger than this still passes once the app has read everything before it.
    pub receive_buffer: u64,
    /// Payload bytes of fragments the receiver keeps beyond a gap on one link until the gap fills (version 3,
    /// default [`DEFAULT_REORDER_BUFFER`], 256 KiB; also at most 1024 fragments, and within
    /// `limits.max_buffered_bytes` together with partial messages). Fragments beyond the bound are dropped and
    /// resent by the peer. 0 holds nothing (the peer then resends from each gap as in version 2).
    pub reorder_buffer: u64,
    /// Reassembly limits for what the peer sends.
    pub limits: colink_frame::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: String::new(),
            device_name: String::new(),
            versions: SUPPORTED_VERSIONS,
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(10),
            resume_allowance: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            handshake_retry: Duration::from_secs(1),
            send_window: 128 * 1024,
            ack_threshold: 32 * 1024,
            ack_delay: Duration::from_millis(20),
            ack_max_delay: Duration::from_millis(200),
            retransmit_timeout: Duration::from_secs(1),
            max_frame: 4096,
            max_bulk_frame: 16 * 1024,
            bulk_grow_after: Duration::from_millis(200),
            channel_buffer: 1024 * 1024,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
            reorder_buffer: DEFAULT_REORDER_BUFFER,
            limits: colink_frame::Limits::default(),
        }
    }
}

impl Config {
    /// The defaults, for a device called `device_id`.
    pub fn new(device_id: impl Into<String>) -> Self {
        Self { device_id: device_id.into(), ..Self::default() }
    }
}

/// What the driver knows about a freshly opened transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// Packet (one frame per SDU) or stream (length-prefixed frames in a byte stream).
    pub mode: LinkMode,
    /// The largest SDU (packet mode) or frame (stream mode) the link carries in each direction.
    pub mtu: Mtu,
}

/// Where the engine's unpredictable numbers (link tokens, collaboration tokens) come from. The engine has no RNG
/// of its own: production passes an OS-seeded source, tests a [`SeededEntropy`].
pub trait Entropy: Send {
    /// The next 64 unpredictable bits.
    fn next_u64(&mut self) -> u64;

    /// Fills `dest` with unpredictable bytes (by default from [`next_u64`](Self::next_u64), little-endian).
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A deterministic [`Entropy`] (SplitMix64) for tests and simulations. Not for production tokens.
#[derive(Debug, Clone)]
pub struct SeededEntropy(u64);

impl SeededEntropy {
    /// A source seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
