//! A deterministic two-device test harness in virtual time (in the spirit of quinn-proto's `tests/util.rs`).
//!
//! A [`Pair`] joins two [`Connection`]s with a modelled link: per-direction latency, an MTU, packet or stream
//! mode, a bandwidth (so each frame occupies the air for `len / bandwidth`, and the sender only gets the next
//! frame when the air is free, like a driver waiting for link credits), byte corruption (chosen frames, or a
//! seeded per-byte error rate), and cutting and
//! re-attaching the link. Time is virtual: [`Pair::drive`] jumps from one event to the next, so a long transfer
//! or a 30 s timeout runs in milliseconds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use colink_frame::{LinkMode, Mtu};

use super::config::{Config, SeededEntropy, Transport};
use super::connection::{Connection, LinkState};
use super::event::Event;
use super::secure::{AccountOnly, HandshakeMode, SecureConfig, SecureEvent, SecureHandshake};
use super::types::{ChannelKind, ConnectOptions, PeerInfo, Role, SessionKey};

/// The modelled link between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkModel {
    /// Packet or stream mode.
    pub mode: LinkMode,
    /// The MTU (both directions).
    pub mtu: Mtu,
    /// One-way latency from A to B.
    pub latency_ab: Duration,
    /// One-way latency from B to A.
    pub latency_ba: Duration,
    /// Air capacity in bytes per second, each direction.
    pub bytes_per_sec: u64,
    /// Byte errors per 10⁹ bytes on the air, each direction (default 0; 100 000 is a byte error rate of
    /// 1e-4). A frame with at least one byte error — probability `1 − (1 − rate)^len` — has a byte flipped,
    /// so it fails its checksum: packet mode drops it, stream mode loses sync. Drawn from a generator seeded
    /// with [`error_seed`](Self::error_seed), so a run is deterministic.
    pub byte_errors_per_billion: u64,
    /// Seed of the byte-error generator (each direction derives its own stream from it).
    pub error_seed: u64,
}

impl Default for LinkModel {
    /// Packet mode, MTU 247, 10 ms each way, 175 000 B/s (≈ LE 2M application throughput).
    fn default() -> Self {
        Self {
            mode: LinkMode::Packet,
            mtu: Mtu::new(247).unwrap_or(Mtu::MIN),
            latency_ab: Duration::from_millis(10),
            latency_ba: Duration::from_millis(10),
            bytes_per_sec: 175_000,
            byte_errors_per_billion: 0,
            error_seed: 0,
        }
    }
}

impl LinkModel {
    /// Air time of `len` bytes.
    pub fn air_time(&self, len: usize) -> Duration {
        Duration::from_nanos((len as u64).saturating_mul(1_000_000_000) / self.bytes_per_sec.max(1))
    }

    /// The probability that a frame of `len` bytes carries at least one byte error.
    pub fn frame_error_probability(&self, len: usize) -> f64 {
        let rate = (self.byte_errors_per_billion as f64 / 1e9).min(1.0);
        1.0 - (1.0 - rate).powf(len as f64)
    }
}

/// One side of a [`Pair`].
#[derive(Debug)]
pub struct Side {
    /// The state machine.
    pub conn: Connection,
    /// Every event it produced, with the virtual time it was taken.
    pub events: Vec<(Instant, Event)>,
    /// Frames this side put on the air.
    pub frames_sent: u64,
    /// Whether the app reads what arrives (default `true`): each [`Event::Received`] is reported
    /// [`consumed`](Connection::consumed) as it is collected. While `false` nothing is read and the session's
    /// receive credit runs out (docs/sessions.md §4.5); [`read_all`](Self::read_all) reads the backlog.
    pub reading: bool,
    /// Payloads collected while not reading, not yet reported consumed.
    unread: Vec<(SessionKey, ChannelKind, u64)>,
}

impl Side {
    fn new(conn: Connection) -> Self {
        Self { conn, events: Vec::new(), frames_sent: 0, reading: true, unread: Vec::new() }
    }

    /// The app reads everything collected while it was not reading (at `now`, the pair's virtual time), and
    /// reads on from now.
    pub fn read_all(&mut self, now: Instant) {
        self.reading = true;
        for (session, kind, len) in std::mem::take(&mut self.unread) {
            self.conn.consumed(now, session, kind, len);
        }
    }

    /// Takes the collected events.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events).into_iter().map(|(_, e)| e).collect()
    }

    /// Whether an event matching `f` was collected.
    pub fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The initiator.
    A,
    /// The responder.
    B,
}

#[derive(Debug, Default)]
struct Air {
    in_flight: VecDeque<(Instant, Bytes)>,
    busy_until: Option<Instant>,
    wants_tx: bool,
    frame_no: u64,
    corrupt: BTreeSet<u64>,
    /// Frame number → payload offset of a byte to flip with the frame's checksum made valid again.
    tamper: BTreeMap<u64, usize>,
    /// State of the byte-error generator (SplitMix64); `None` until the first draw.
    errors: Option<u64>,
    /// Frames this direction lost to byte errors.
    errored: u64,
}

impl Air {
    /// Whether the next frame of `len` bytes is hit by a byte error (direction `d`).
    fn hit(&mut self, link: &LinkModel, d: usize, len: usize) -> bool {
        if link.byte_errors_per_billion == 0 {
            return false;
        }
        let state = self.errors.get_or_insert(link.error_seed ^ (0xA5A5_0000_0000_0000 + d as u64));
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let draw = (z >> 11) as f64 / (1u64 << 53) as f64;
        let hit = draw < link.frame_error_probability(len);
        if hit {
            self.errored += 1;
        }
        hit
    }
}

/// Drive stopped without the pair going quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("livelock: still busy after {steps} steps")]
pub struct Livelock {
    /// Steps taken.
    pub steps: u64,
}

/// Two connections on a modelled link, in virtual time. A is the initiator, B the responder.
#[derive(Debug)]
pub struct Pair {
    /// The initiator (device "A").
    pub a: Side,
    /// The responder (device "B").
    pub b: Side,
    /// Virtual now.
    pub now: Instant,
    /// The link model; changes apply to frames sent afterwards and to the next [`reattach`](Self::reattach).
    pub link: LinkModel,
    /// `drive` stops when nothing is in flight and no timer is due within this horizon (default 2 s).
    pub idle_horizon: Duration,
    /// Stream mode: deliver each frame in two chunks split at this offset, exercising partial reads.
    pub split_stream_chunks: bool,
    /// When set, a side that drops its transport (idle timeout, corrupted stream) makes the pair cut the link,
    /// and the link is re-attached this long afterwards (a driver re-dialling). Default: 500 ms.
    pub redial_after: Option<Duration>,
    /// While set, every frame put on the air is lost (a silent outage: only timers notice).
    pub blackhole: bool,
    /// When set, every frame put on the air (after any tampering) is appended here with its sender: what a
    /// radio sniffer would record.
    pub capture: Option<Vec<(Which, Bytes)>>,
    /// Authenticated transports: both sides' secure settings; every (re)attach first runs an account-mode
    /// secure handshake between them (in zero virtual time) and attaches with its keys.
    secure: Option<Box<(SecureConfig, SecureConfig)>>,
    handshakes: u64,
    air: [Air; 2],
    up: bool,
    redial_at: Option<Instant>,
}

impl Pair {
    /// Two devices "A" and "B" with default configs on `link`, attached and handshaking.
    pub fn new(link: LinkModel) -> Self {
        Self::with_configs(link, Config::new("A"), Config::new("B"))
    }

    /// Two devices with the given configs on `link`, attached and handshaking.
    pub fn with_configs(link: LinkModel, a: Config, b: Config) -> Self {
        let now = Instant::now();
        let ca = Connection::new(now, a, Role::Initiator, Box::new(SeededEntropy::new(1)));
        let cb = Connection::new(now, b, Role::Responder, Box::new(SeededEntropy::new(2)));
        Self::from_connections(link, now, ca, cb)
    }

    /// Two given connections (created at `now`) on `link`, attached and handshaking.
    pub fn from_connections(link: LinkModel, now: Instant, a: Connection, b: Connection) -> Self {
        Self::build(link, now, a, b, None, 0)
    }

    /// Two devices with these secure settings (account mode: give both the same account secret), each named by
    /// its key's device id, on authenticated transports.
    pub fn secured(link: LinkModel, a: SecureConfig, b: SecureConfig) -> Self {
        Self::secured_seeded(link, a, b, 0)
    }

    /// Like [`secured`](Self::secured), seeding the handshakes' ephemeral keys with `seed` (two pairs with the
    /// same devices and seed derive the same keys; a real device draws them at random).
    pub fn secured_seeded(link: LinkModel, a: SecureConfig, b: SecureConfig, seed: u64) -> Self {
        let now = Instant::now();
        let ca =
            Connection::new(now, Config::new(a.keypair.device_id()), Role::Initiator, Box::new(SeededEntropy::new(1)));
        let cb =
            Connection::new(now, Config::new(b.keypair.device_id()), Role::Responder, Box::new(SeededEntropy::new(2)));
        Self::build(link, now, ca, cb, Some(Box::new((a, b))), seed.wrapping_mul(1 << 20))
    }

    fn build(
        link: LinkModel,
        now: Instant,
        a: Connection,
        b: Connection,
        secure: Option<Box<(SecureConfig, SecureConfig)>>,
        handshakes: u64,
    ) -> Self {
        let mut p = Self {
            a: Side::new(a),
            b: Side::new(b),
            now,
            link,
            idle_horizon: Duration::from_secs(2),
            split_stream_chunks: true,
            redial_after: Some(Duration::from_millis(500)),
            blackhole: false,
            capture: None,
            secure,
            handshakes,
            air: [Air::default(), Air::default()],
            up: false,
            redial_at: None,
        };
        p.reattach();
        p
    }

    /// The side `w`.
    pub fn side(&mut self, w: Which) -> &mut Side {
        match w {
            Which::A => &mut self.a,
            Which::B => &mut self.b,
        }
    }

    /// Cuts the link: frames in flight are lost and both sides see [`Connection::link_lost`].
    pub fn cut(&mut self) {
        self.up = false;
        self.redial_at = None;
        self.air = [Air::default(), Air::default()];
        let now = self.now;
        self.a.conn.link_lost(now);
        self.b.conn.link_lost(now);
        self.collect();
    }

    /// Attaches a new transport (per the current [`link`](Self::link) model) to both sides.
    pub fn reattach(&mut self) {
        self.up = true;
        self.redial_at = None;
        let old = std::mem::take(&mut self.air);
        for (air, old) in self.air.iter_mut().zip(old) {
            air.corrupt = old.corrupt;
            air.tamper = old.tamper;
            air.errors = old.errors;
        }
        let t = Transport { mode: self.link.mode, mtu: self.link.mtu };
        let now = self.now;
        match self.secure.as_deref().cloned() {
            None => {
                self.a.conn.attach(now, t);
                self.b.conn.attach(now, t);
            }
            Some((sa, sb)) => {
                self.handshakes += 1;
                let seed = self.handshakes * 2;
                let (ea, eb) = secure_handshake(now, sa, sb, t, seed);
                if let Err(e) = self.a.conn.attach_secured(now, t, ea.peer, ea.keys) {
                    panic!("attach: {e}");
                }
                if let Err(e) = self.b.conn.attach_secured(now, t, eb.peer, eb.keys) {
                    panic!("attach: {e}");
                }
            }
        }
        self.collect();
    }

    /// Flips the byte at `offset` (modulo its length) of the payload of the `n`-th frame that `from` sends,
    /// counting from 0 after the latest attach, and makes the frame's checksum valid again: an attacker's
    /// edit that only the authenticated encryption can catch. Packet mode.
    pub fn tamper_frame(&mut self, from: Which, n: u64, offset: usize) {
        self.air[from as usize].tamper.insert(n, offset);
    }

    /// Corrupts (flips one byte in the middle of) the `n`-th frame, counting from 0 after the latest attach,
    /// that `from` sends.
    pub fn corrupt_frame(&mut self, from: Which, n: u64) {
        self.air[from as usize].corrupt.insert(n);
    }

    /// Frames `from` has sent since the latest attach.
    pub fn frames_on_air(&self, from: Which) -> u64 {
        self.air[from as usize].frame_no
    }

    /// Frames `from` has sent since the latest attach that byte errors ([`LinkModel::byte_errors_per_billion`])
    /// corrupted.
    pub fn frames_errored(&self, from: Which) -> u64 {
        self.air[from as usize].errored
    }

    /// Runs until the pair is quiet (nothing in flight, nothing to send, no timer within the idle horizon).
    /// Panics on livelock (10 million steps), which is what a test wants.
    pub fn drive(&mut self) {
        if let Err(e) = self.drive_bounded(10_000_000) {
            panic!("{e}");
        }
    }

    /// Like [`drive`](Self::drive), giving up after `max_steps` time steps.
    pub fn drive_bounded(&mut self, max_steps: u64) -> Result<(), Livelock> {
        self.run(max_steps, None, &mut |_| false)
    }

    /// Runs for `d` of virtual time, firing every timer on the way.
    pub fn drive_for(&mut self, d: Duration) {
        let until = self.now + d;
        if let Err(e) = self.run(u64::MAX, Some(until), &mut |_| false) {
            panic!("{e}");
        }
        self.now = self.now.max(until);
    }

    /// Runs (firing every timer) until `done` holds or `max` virtual time passed; returns whether it held.
    pub fn drive_until(&mut self, max: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let until = self.now + max;
        let _ = self.run(u64::MAX, Some(until), &mut |p| done(p));
        done(self)
    }

    /// Opens a session from app `a-app` on A to `b-app` on B with `options` and accepts it on B; returns the
    /// session's key (the same number on both sides).
    pub fn open_session(&mut self, name: &str, options: ConnectOptions) -> SessionKey {
        let now = self.now;
        let from = app(self.a.conn.device_id(), &format!("{name}-a"));
        let to = app(self.b.conn.device_id(), &format!("{name}-b"));
        let (seen_b, seen_a) = (self.b.events.len(), self.a.events.len());
        let key = match self.a.conn.connect(now, from, to, options) {
            Ok(k) => k,
            Err(e) => panic!("connect failed: {e}"),
        };
        self.drive_until(Duration::from_secs(5), |p| {
            p.b.events[seen_b..]
                .iter()
                .any(|(_, e)| matches!(e, Event::IncomingConnect { session, .. } if *session == key))
        });
        let token = self.b.events[seen_b..]
            .iter()
            .find_map(|(_, e)| match e {
                Event::IncomingConnect { session, token, .. } if *session == key => Some(token.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let now = self.now;
        if let Err(e) = self.b.conn.accept(now, &token) {
            panic!("accept failed: {e}");
        }
        self.drive_until(Duration::from_secs(5), |p| {
            p.a.events[seen_a..].iter().any(|(_, e)| matches!(e, Event::Connected { session } if *session == key))
        });
        key
    }

    /// One pass at the current time; returns whether anything happened.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        if !self.up && self.redial_at.is_some_and(|t| t <= now) {
            self.reattach();
            progress = true;
        }
        for w in [Which::A, Which::B] {
            let side = self.side(w);
            if side.conn.poll_timeout().is_some_and(|t| t <= now) {
                side.conn.handle_timeout(now);
                progress = true;
            }
        }
        // Deliver what has arrived.
        for d in 0..2 {
            while self.air[d].in_flight.front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, bytes)) = self.air[d].in_flight.pop_front() else { break };
                let to = if d == 0 { &mut self.b } else { &mut self.a };
                if self.up {
                    to.conn.handle_input(now, bytes);
                }
                progress = true;
            }
        }
        // Transmit while the air is free.
        if self.up {
            for d in 0..2 {
                loop {
                    let air = &self.air[d];
                    if air.busy_until.is_some_and(|t| t > now) {
                        break;
                    }
                    let side = if d == 0 { &mut self.a } else { &mut self.b };
                    let Some(frame) = side.conn.poll_transmit(now) else {
                        self.air[d].wants_tx = false;
                        break;
                    };
                    side.frames_sent += 1;
                    progress = true;
                    let air = &mut self.air[d];
                    let n = air.frame_no;
                    air.frame_no += 1;
                    let errored = air.hit(&self.link, d, frame.len());
                    let frame = if air.corrupt.remove(&n) || errored { corrupt(frame) } else { frame };
                    let frame = match air.tamper.remove(&n) {
                        Some(offset) => tamper(frame, offset),
                        None => frame,
                    };
                    if let Some(capture) = &mut self.capture {
                        capture.push((if d == 0 { Which::A } else { Which::B }, frame.clone()));
                    }
                    if self.blackhole {
                        air.busy_until = Some(now + self.link.air_time(frame.len()));
                        air.wants_tx = true;
                        continue;
                    }
                    let done = now + self.link.air_time(frame.len());
                    air.busy_until = Some(done);
                    air.wants_tx = true;
                    let latency = if d == 0 { self.link.latency_ab } else { self.link.latency_ba };
                    let arrive = done + latency;
                    if self.link.mode == LinkMode::Stream && self.split_stream_chunks && frame.len() > 1 {
                        let mut f = frame;
                        let tail = f.split_off(f.len() / 2);
                        air.in_flight.push_back((arrive, f));
                        air.in_flight.push_back((arrive, tail));
                    } else {
                        air.in_flight.push_back((arrive, frame));
                    }
                }
            }
        }
        // A side that gave up its transport makes the "driver" close it; the initiator re-dials later.
        let dropped = [&self.a, &self.b].iter().any(|s| s.conn.state() == LinkState::Reconnecting);
        if self.up && dropped {
            self.cut();
            self.redial_at = self.redial_after.map(|d| now + d);
            progress = true;
        }
        self.collect();
        progress
    }

    /// The next instant something happens (arrival, free air with frames waiting, a timer).
    fn next_wakeup(&self) -> (Option<Instant>, Option<Instant>) {
        let mut io: Option<Instant> = None;
        let at = |t: Instant, slot: &mut Option<Instant>| *slot = Some(slot.map_or(t, |s| s.min(t)));
        for air in &self.air {
            if let Some((t, _)) = air.in_flight.front() {
                at(*t, &mut io);
            }
            if air.wants_tx
                && let Some(t) = air.busy_until
            {
                at(t, &mut io);
            }
        }
        if let Some(t) = self.redial_at {
            at(t, &mut io);
        }
        let mut timer = None;
        for t in [self.a.conn.poll_timeout(), self.b.conn.poll_timeout()].into_iter().flatten() {
            at(t, &mut timer);
        }
        (io, timer)
    }

    fn run(
        &mut self,
        max_steps: u64,
        until: Option<Instant>,
        done: &mut dyn FnMut(&Self) -> bool,
    ) -> Result<(), Livelock> {
        let mut steps = 0u64;
        loop {
            while self.step() {
                steps += 1;
                if steps > max_steps {
                    return Err(Livelock { steps });
                }
            }
            if done(self) {
                return Ok(());
            }
            let (io, timer) = self.next_wakeup();
            let next = match (io, timer, until) {
                (Some(i), Some(t), _) => Some(i.min(t)),
                (Some(i), None, _) => Some(i),
                (None, Some(t), Some(_)) => Some(t),
                (None, Some(t), None) if t <= self.now + self.idle_horizon => Some(t),
                _ => None,
            };
            let Some(next) = next else { return Ok(()) };
            if until.is_some_and(|u| next > u) {
                return Ok(());
            }
            self.now = self.now.max(next);
            steps += 1;
            if steps > max_steps {
                return Err(Livelock { steps });
            }
        }
    }

    fn collect(&mut self) {
        let now = self.now;
        for side in [&mut self.a, &mut self.b] {
            while let Some(e) = side.conn.poll_event() {
                if let Event::Received { session, kind, payload } = &e {
                    let len = payload.len() as u64 + side.conn.message_charge();
                    if side.reading {
                        side.conn.consumed(now, *session, *kind, len);
                    } else {
                        side.unread.push((*session, *kind, len));
                    }
                }
                side.events.push((now, e));
            }
        }
    }
}

/// An app endpoint `bundle` on device `device` (module "entry", ability "Main").
pub fn app(device: &str, bundle: &str) -> PeerInfo {
    PeerInfo {
        device_id: device.to_owned(),
        bundle_name: bundle.to_owned(),
        module_name: "entry".to_owned(),
        ability_name: "MainAbility".to_owned(),
        service_name: String::new(),
    }
}

/// Runs an account-mode secure handshake between `a` (initiator) and `b` in memory.
fn secure_handshake(
    now: Instant,
    a: SecureConfig,
    b: SecureConfig,
    t: Transport,
    seed: u64,
) -> (super::secure::Established, super::secure::Established) {
    let expected = Some(b.keypair.device_id());
    let mut ha =
        match SecureHandshake::initiator(now, a, HandshakeMode::Account, expected, t, &mut SeededEntropy::new(seed)) {
            Ok(h) => h,
            Err(e) => panic!("secure handshake: {e}"),
        };
    let mut hb = SecureHandshake::responder(now, b, t, &mut SeededEntropy::new(seed + 1));
    let (mut pa, mut pb) = (AccountOnly, AccountOnly);
    let (mut da, mut db) = (None, None);
    for _ in 0..16 {
        while let Some(f) = ha.poll_transmit() {
            hb.handle_input(now, &f, &mut pb);
        }
        while let Some(f) = hb.poll_transmit() {
            ha.handle_input(now, &f, &mut pa);
        }
        for (h, done) in [(&mut ha, &mut da), (&mut hb, &mut db)] {
            while let Some(e) = h.poll_event() {
                match e {
                    SecureEvent::Established(e) => *done = Some(*e),
                    SecureEvent::Failed(e) => panic!("secure handshake: {e}"),
                    _ => {}
                }
            }
        }
        if let (Some(a), Some(b)) = (da.take(), db.take()) {
            return (a, b);
        }
    }
    panic!("secure handshake did not complete")
}

/// Flips payload byte `offset` (modulo the payload's length) of a packet-mode frame and re-encodes it with a
/// valid checksum.
fn tamper(frame: Bytes, offset: usize) -> Bytes {
    let Ok(mut f) = colink_frame::decode_packet(frame.clone()) else { return frame };
    if f.payload.is_empty() {
        return frame;
    }
    let mut payload = BytesMut::from(&f.payload[..]);
    let i = offset % payload.len();
    payload[i] ^= 0x01;
    f.payload = payload.freeze();
    let mut out = BytesMut::new();
    match f.encode(LinkMode::Packet, &mut out) {
        Ok(()) => out.freeze(),
        Err(_) => frame,
    }
}

fn corrupt(frame: Bytes) -> Bytes {
    let mut b = BytesMut::from(&frame[..]);
    let i = b.len() / 2;
    b[i] ^= 0x5A;
    b.freeze()
}
