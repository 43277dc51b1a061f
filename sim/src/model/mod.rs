//! The sans-IO core of the simulator: the whole air as a state machine driven by time.
//!
//! Callers pass `now` (time since the air started) into every method; [`Model::poll_timeout`] says when the model
//! next needs [`Model::handle_timeout`]; [`Model::poll_output`] yields what happened (scan reports, connection
//! results, wake-ups for link ends). No clock, no tokio, no global RNG: the same seed and the same sequence of
//! calls give the same outputs and the same event log.

mod link;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{
    AdapterError, Address, Advert, CloseReason, ConnectError, LinkMode, LinkParams, PairingError, PairingMethod,
    PeerAddress, Phy, Port, Psm, ScanEvent, ScanFilter, SecurityLevel,
};

use link::LinkState;
pub(crate) use link::{RecvOutcome, SendOutcome};

use crate::profile::{Environment, PhyProfile, Position};
use crate::rng::SimRng;

/// A link end as handed to an adapter.
#[derive(Debug, Clone)]
pub(crate) struct LinkOpened {
    pub(crate) link: u64,
    pub(crate) end: usize,
    pub(crate) peer: PeerAddress,
    pub(crate) mode: LinkMode,
    pub(crate) params: LinkParams,
}

/// What the model tells its driver.
#[derive(Debug)]
pub(crate) enum Output {
    Scan { scan: u64, event: ScanEvent },
    ScanEnded { scan: u64 },
    Connected { conn: u64, result: Result<LinkOpened, ConnectError> },
    Incoming { listener: u64, link: LinkOpened },
    LinkWake { link: u64, end: usize },
}

/// A link as listed for fault injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    /// Opaque id, stable for the life of the air.
    pub id: u64,
    /// The initiator's address.
    pub initiator: Address,
    /// The acceptor's address.
    pub acceptor: Address,
    /// Whether both ends are still open.
    pub open: bool,
    /// The link's PHY ([`Phy::BrEdr`] for RFCOMM and BR/EDR L2CAP links).
    pub phy: Phy,
    /// Packet or stream.
    pub mode: LinkMode,
}

#[derive(Debug)]
struct Device {
    name: String,
    address: Address,
    position: Position,
    powered: bool,
}

#[derive(Debug)]
struct AdvertState {
    dev: usize,
    ad: Vec<u8>,
    next_at: Duration,
}

#[derive(Debug)]
struct Seen {
    last_heard: Duration,
    last_report: Duration,
    advert: Advert,
}

#[derive(Debug)]
struct ScanState {
    dev: usize,
    filter: ScanFilter,
    seen: BTreeMap<Address, Seen>,
    next_sweep: Duration,
}

#[derive(Debug)]
struct ListenerState {
    dev: usize,
    port: Port,
    mode: LinkMode,
    params: LinkParams,
}

#[derive(Debug)]
struct PendingConnect {
    dev: usize,
    peer: Address,
    port: Port,
    mode: LinkMode,
    params: LinkParams,
    phy: Phy,
    deadline: Duration,
    /// Waiting: next reachability check. Establishing: completion time.
    at: Duration,
    establishing: Option<(usize, Duration)>,
}

/// The event log: an order-sensitive hash of every event, optionally with the text.
#[derive(Debug)]
struct EventLog {
    hash: u64,
    count: u64,
    lines: Option<Vec<String>>,
    scratch: String,
}

impl EventLog {
    fn record(&mut self, at: Duration, args: fmt::Arguments<'_>) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{:>12.6} {args}", at.as_secs_f64());
        for b in self.scratch.as_bytes().iter().chain(b"\n") {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.count += 1;
        tracing::trace!(target: "colink_sim::air", "{}", self.scratch);
        if let Some(lines) = &mut self.lines {
            lines.push(self.scratch.clone());
        }
    }
}

/// The simulated air.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) env: Environment,
    profiles: BTreeMap<Phy, PhyProfile>,
    rng: SimRng,
    now: Duration,
    devices: Vec<Device>,
    adverts: BTreeMap<u64, AdvertState>,
    scans: BTreeMap<u64, ScanState>,
    listeners: BTreeMap<u64, ListenerState>,
    connects: BTreeMap<u64, PendingConnect>,
    links: BTreeMap<u64, LinkState>,
    bonds: BTreeMap<(usize, usize), bool>,
    next_id: u64,
    outputs: VecDeque<Output>,
    log: EventLog,
}

macro_rules! log {
    ($m:expr, $at:expr, $($arg:tt)*) => { $m.log.record($at, format_args!($($arg)*)) };
}

impl Model {
    pub(crate) fn new(seed: u64, env: Environment, profiles: Vec<PhyProfile>, keep_log: bool) -> Self {
        let mut map: BTreeMap<Phy, PhyProfile> =
            [Phy::Le1M, Phy::Le2M, Phy::LeCoded, Phy::BrEdr].into_iter().map(|p| (p, PhyProfile::for_phy(p))).collect();
        for p in profiles {
            map.insert(p.phy, p);
        }
        let mut m = Self {
            env,
            profiles: map,
            rng: SimRng::new(seed),
            now: Duration::ZERO,
            devices: Vec::new(),
            adverts: BTreeMap::new(),
            scans: BTreeMap::new(),
            listeners: BTreeMap::new(),
            connects: BTreeMap::new(),
            links: BTreeMap::new(),
            bonds: BTreeMap::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            log: EventLog {
                hash: 0xcbf2_9ce4_8422_2325,
                count: 0,
                lines: keep_log.then(Vec::new),
                scratch: String::new(),
            },
        };
        log!(m, Duration::ZERO, "air seed={seed}");
        m
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ----- observation -----

    pub(crate) fn log_hash(&self) -> (u64, u64) {
        (self.log.hash, self.log.count)
    }

    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lines.clone().unwrap_or_default()
    }

    pub(crate) fn note(&mut self, now: Duration, text: &str) {
        log!(self, now, "note {text}");
    }

    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub(crate) fn address(&self, dev: usize) -> Address {
        self.devices[dev].address
    }

    pub(crate) fn device_by_address(&self, a: Address) -> Option<usize> {
        self.devices.iter().position(|d| d.address == a)
    }

    pub(crate) fn powered(&self, dev: usize) -> bool {
        self.devices[dev].powered
    }

    pub(crate) fn position(&self, dev: usize) -> Position {
        self.devices[dev].position
    }

    pub(crate) fn links(&self) -> Vec<LinkSummary> {
        self.links
            .iter()
            .map(|(id, l)| LinkSummary {
                id: *id,
                initiator: self.devices[l.devs[0]].address,
                acceptor: self.devices[l.devs[1]].address,
                open: l.is_open(),
                phy: l.params.phy,
                mode: l.mode,
            })
            .collect()
    }

    pub(crate) fn is_bonded(&self, a: usize, b: usize) -> Option<bool> {
        self.bonds.get(&(a.min(b), a.max(b))).copied()
    }

    /// Mean RSSI between two devices (no noise), dBm.
    pub(crate) fn mean_rssi(&self, a: usize, b: usize) -> f64 {
        let d = self.devices[a].position.distance(&self.devices[b].position);
        self.env.mean_rssi(d)
    }

    fn in_range(&self, a: usize, b: usize, phy: Phy) -> bool {
        let sens = self.profiles.get(&phy).map_or(-90.0, |p| p.sensitivity_dbm);
        self.devices[a].powered && self.devices[b].powered && self.mean_rssi(a, b) >= sens
    }

    fn active_links(&self, dev: usize) -> usize {
        let links = self.links.values().filter(|l| l.is_open() && l.devs.contains(&dev)).count();
        let connects = self.connects.values().filter(|c| c.dev == dev).count();
        links + connects
    }

    // ----- devices -----

    pub(crate) fn add_device(&mut self, now: Duration, name: &str, position: Position) -> usize {
        let address = loop {
            let mut b = self.rng.next_u64().to_be_bytes();
            b[0] |= 0xC0; // static random address
            let a = Address::new([b[0], b[1], b[2], b[3], b[4], b[5]]);
            if self.device_by_address(a).is_none() {
                break a;
            }
        };
        self.devices.push(Device { name: name.to_owned(), address, position, powered: true });
        log!(self, now, "device {name} {address} at ({:.1},{:.1})", position.x, position.y);
        self.devices.len() - 1
    }

    pub(crate) fn set_powered(&mut self, now: Duration, dev: usize, on: bool) {
        if self.devices[dev].powered == on {
            return;
        }
        self.devices[dev].powered = on;
        log!(self, now, "power {} {}", self.devices[dev].name, if on { "on" } else { "off" });
        if on {
            for a in self.adverts.values_mut().filter(|a| a.dev == dev) {
                a.next_at = now + Duration::from_millis(self.rng.below(10));
            }
            return;
        }
        let scans: Vec<u64> = self.scans.iter().filter(|(_, s)| s.dev == dev).map(|(k, _)| *k).collect();
        for s in scans {
            self.scans.remove(&s);
            self.outputs.push_back(Output::ScanEnded { scan: s });
        }
        let conns: Vec<u64> = self.connects.iter().filter(|(_, c)| c.dev == dev).map(|(k, _)| *k).collect();
        for c in conns {
            self.connects.remove(&c);
            self.outputs.push_back(Output::Connected { conn: c, result: Err(ConnectError::PoweredOff) });
        }
        let links: Vec<(u64, usize)> = self
            .links
            .iter()
            .filter(|(_, l)| l.is_open() && l.devs.contains(&dev))
            .map(|(k, l)| (*k, usize::from(l.devs[1] == dev)))
            .collect();
        for (k, end) in links {
            let mut reasons = [CloseReason::PeerPowerOff, CloseReason::PeerPowerOff];
            reasons[end] = CloseReason::AdapterOff;
            self.abort_link(now, k, reasons);
        }
    }

    pub(crate) fn move_to(&mut self, now: Duration, dev: usize, position: Position) {
        self.devices[dev].position = position;
        log!(self, now, "move {} ({:.1},{:.1})", self.devices[dev].name, position.x, position.y);
        let keys: Vec<u64> =
            self.links.iter().filter(|(_, l)| l.is_open() && l.devs.contains(&dev)).map(|(k, _)| *k).collect();
        for k in keys {
            let Some(l) = self.links.get(&k) else { continue };
            let reachable = self.in_range(l.devs[0], l.devs[1], l.params.phy);
            let Some(l) = self.links.get_mut(&k) else { continue };
            match (reachable, l.out_of_range_since) {
                (false, None) => l.out_of_range_since = Some(now),
                (true, Some(_)) => {
                    l.out_of_range_since = None;
                    for end in 0..2 {
                        if l.pump(now, end) {
                            self.outputs.push_back(Output::LinkWake { link: k, end });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    // ----- advertising and scanning -----

    pub(crate) fn start_advert(&mut self, now: Duration, dev: usize, advert: &Advert) -> Result<u64, AdapterError> {
        if !self.devices[dev].powered {
            return Err(AdapterError::PoweredOff);
        }
        let id = self.id();
        let first = now + Duration::from_millis(self.rng.below(10));
        self.adverts.insert(id, AdvertState { dev, ad: advert.to_ad_bytes(), next_at: first });
        log!(self, now, "advertise {} id={} psm={:?}", self.devices[dev].name, advert.short_id, advert.psm);
        Ok(id)
    }

    pub(crate) fn stop_advert(&mut self, now: Duration, id: u64) {
        if let Some(a) = self.adverts.remove(&id) {
            log!(self, now, "advertise-stop {}", self.devices[a.dev].name);
        }
    }

    pub(crate) fn start_scan(&mut self, now: Duration, dev: usize, filter: ScanFilter) -> Result<u64, AdapterError> {
        if !self.devices[dev].powered {
            return Err(AdapterError::PoweredOff);
        }
        let id = self.id();
        self.scans.insert(id, ScanState { dev, filter, seen: BTreeMap::new(), next_sweep: now + SWEEP });
        log!(self, now, "scan {}", self.devices[dev].name);
        Ok(id)
    }

    pub(crate) fn stop_scan(&mut self, now: Duration, id: u64) {
        if let Some(s) = self.scans.remove(&id) {
            log!(self, now, "scan-stop {}", self.devices[s.dev].name);
        }
    }

    fn fire_advert(&mut self, now: Duration, id: u64) {
        let Some(a) = self.adverts.get(&id) else { return };
        let (dev, ad) = (a.dev, a.ad.clone());
        let jitter = Duration::from_millis(self.rng.below(11));
        if let Some(a) = self.adverts.get_mut(&id) {
            a.next_at = now + self.env.advert_interval + jitter;
        }
        if !self.devices[dev].powered {
            return;
        }
        let sens = self.profiles.get(&Phy::Le1M).map_or(-95.0, |p| p.sensitivity_dbm);
        let scan_ids: Vec<u64> = self.scans.keys().copied().collect();
        for sid in scan_ids {
            let Some(scan) = self.scans.get(&sid) else { continue };
            let sdev = scan.dev;
            if sdev == dev || !self.devices[sdev].powered {
                continue;
            }
            let rssi = self.mean_rssi(dev, sdev) + self.env.shadowing_sigma_db * self.rng.normal();
            let missed = self.rng.unit() < self.env.advert_miss_probability;
            if rssi < sens || missed {
                continue;
            }
            // The scanner decodes the raw advertising data, as a real one does.
            let Ok(advert) = Advert::from_ad_bytes(&ad) else { continue };
            let rssi = colink_ble::Rssi::from_dbm(rssi.round() as i16);
            let peer = PeerAddress::le_random(self.devices[dev].address);
            let Some(scan) = self.scans.get_mut(&sid) else { continue };
            if !scan.filter.accepts(rssi, &advert) {
                continue;
            }
            let event = match scan.seen.get_mut(&peer.address) {
                None => {
                    scan.seen.insert(peer.address, Seen { last_heard: now, last_report: now, advert });
                    Some(ScanEvent::DeviceFound { peer, rssi, advert })
                }
                Some(seen) => {
                    seen.last_heard = now;
                    if seen.advert != advert || now >= seen.last_report + scan.filter.update_interval {
                        seen.advert = advert;
                        seen.last_report = now;
                        Some(ScanEvent::DeviceUpdated { peer, rssi, advert })
                    } else {
                        None
                    }
                }
            };
            if let Some(event) = event {
                let kind = match event {
                    ScanEvent::DeviceFound { .. } => "found",
                    _ => "updated",
                };
                log!(self, now, "scan-{kind} {} <- {} rssi={}", self.devices[sdev].name, self.devices[dev].name, rssi);
                self.outputs.push_back(Output::Scan { scan: sid, event });
            }
        }
    }

    fn sweep_scan(&mut self, now: Duration, sid: u64) {
        let Some(scan) = self.scans.get_mut(&sid) else { return };
        scan.next_sweep = now + SWEEP;
        let lost_after = scan.filter.lost_after;
        let lost: Vec<Address> =
            scan.seen.iter().filter(|(_, s)| s.last_heard + lost_after <= now).map(|(a, _)| *a).collect();
        let sdev = scan.dev;
        for a in lost {
            scan.seen.remove(&a);
            self.outputs.push_back(Output::Scan {
                scan: sid,
                event: ScanEvent::DeviceLost { peer: PeerAddress::le_random(a) },
            });
        }
        let _ = sdev;
    }

    // ----- listening and connecting -----

    pub(crate) fn listen(
        &mut self,
        now: Duration,
        dev: usize,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> Result<(u64, Port), AdapterError> {
        if matches!(port, Some(Port::Rfcomm(_))) && mode == LinkMode::Packet {
            return Err(AdapterError::Unsupported("packet mode on RFCOMM"));
        }
        let used = |p: Port| self.listeners.values().any(|l| l.dev == dev && l.port == p);
        let port = match port {
            Some(p) if used(p) => return Err(AdapterError::PortInUse(p)),
            Some(p) => p,
            None => {
                let candidates: Box<dyn Iterator<Item = u16>> = if params.phy.is_le() {
                    Box::new(Psm::LE_DYNAMIC_FIRST..=Psm::LE_DYNAMIC_LAST)
                } else {
                    Box::new((0x1001..0x10FF).step_by(2))
                };
                candidates
                    .filter_map(|v| Psm::new(v).ok())
                    .map(Port::L2cap)
                    .find(|p| !used(*p))
                    .ok_or(AdapterError::NoFreePort)?
            }
        };
        let id = self.id();
        self.listeners.insert(id, ListenerState { dev, port, mode, params });
        log!(self, now, "listen {} {port} {mode:?}", self.devices[dev].name);
        Ok((id, port))
    }

    pub(crate) fn unlisten(&mut self, now: Duration, id: u64) {
        if let Some(l) = self.listeners.remove(&id) {
            log!(self, now, "listen-stop {} {}", self.devices[l.dev].name, l.port);
        }
    }

    pub(crate) fn connect(
        &mut self,
        now: Duration,
        dev: usize,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> Result<u64, ConnectError> {
        if !self.devices[dev].powered {
            return Err(ConnectError::PoweredOff);
        }
        let phy = match port {
            Port::Rfcomm(_) if mode == LinkMode::Packet => {
                return Err(ConnectError::Unsupported("packet mode on RFCOMM"));
            }
            Port::L2cap(p) if p.is_le() => {
                if params.phy.is_le() {
                    params.phy
                } else {
                    Phy::Le2M
                }
            }
            _ => Phy::BrEdr,
        };
        if self.active_links(dev) >= self.env.max_links {
            return Err(ConnectError::TooManyLinks);
        }
        let id = self.id();
        log!(self, now, "connect {} -> {} {port} {mode:?} {phy:?}", self.devices[dev].name, peer.address);
        self.connects.insert(
            id,
            PendingConnect {
                dev,
                peer: peer.address,
                port,
                mode,
                params,
                phy,
                deadline: now + self.env.connect_timeout,
                at: now,
                establishing: None,
            },
        );
        Ok(id)
    }

    pub(crate) fn cancel_connect(&mut self, now: Duration, id: u64) {
        if self.connects.remove(&id).is_some() {
            log!(self, now, "connect-cancel {id}");
        }
    }

    fn draw_interval(&mut self, profile: &PhyProfile) -> Duration {
        let (lo, hi) = profile.conn_interval;
        if hi.is_zero() {
            return Duration::ZERO; // no connection events: an idle transmitter starts at once
        }
        let unit = 1_250_000u64; // 1.25 ms
        let lo_u = (lo.as_nanos() as u64).div_ceil(unit).max(1);
        let hi_u = (hi.as_nanos() as u64 / unit).max(lo_u);
        Duration::from_nanos((lo_u + self.rng.below(hi_u - lo_u + 1)) * unit)
    }

    fn fire_connect(&mut self, now: Duration, id: u64) {
        let Some(c) = self.connects.get(&id) else { return };
        let (dev, peer_addr, phy) = (c.dev, c.peer, c.phy);
        let fail = |m: &mut Self, e: ConnectError| {
            m.connects.remove(&id);
            log!(m, now, "connect-fail {} -> {peer_addr}: {e}", m.devices[dev].name);
            m.outputs.push_back(Output::Connected { conn: id, result: Err(e) });
        };
        let target = self.device_by_address(peer_addr).filter(|t| *t != dev);
        let reachable = target
            .is_some_and(|t| self.in_range(dev, t, phy) && (!phy.is_le() || self.adverts.values().any(|a| a.dev == t)));
        match (c.establishing, target) {
            (Some((t, _)), _) if reachable => self.establish(now, id, t),
            (None, Some(t)) if reachable => {
                let profile = self.profile(phy);
                let interval = self.draw_interval(&profile);
                let heard = if phy.is_le() {
                    self.adverts.values().filter(|a| a.dev == t).map(|a| a.next_at).min().unwrap_or(now)
                } else {
                    now + Duration::from_millis(self.rng.below(1280)) // page scan interval 1.28 s
                };
                let done = heard.max(now) + interval * self.env.connect_setup_intervals;
                if let Some(c) = self.connects.get_mut(&id) {
                    c.establishing = Some((t, interval));
                    c.at = done;
                }
            }
            _ => {
                let deadline = self.connects.get(&id).map_or(now, |c| c.deadline);
                if now >= deadline {
                    fail(self, ConnectError::Timeout);
                } else if let Some(c) = self.connects.get_mut(&id) {
                    c.establishing = None;
                    c.at = (now + Duration::from_millis(50)).min(deadline);
                }
            }
        }
    }

    fn profile(&self, phy: Phy) -> PhyProfile {
        self.profiles.get(&phy).cloned().unwrap_or_else(|| PhyProfile::for_phy(phy))
    }

    fn establish(&mut self, now: Duration, id: u64, target: usize) {
        let Some(c) = self.connects.remove(&id) else { return };
        let interval = c.establishing.map_or(Duration::from_millis(40), |(_, i)| i);
        let result = (|| {
            let (lid, l) = self
                .listeners
                .iter()
                .find(|(_, l)| l.dev == target && l.port == c.port)
                .ok_or(ConnectError::Refused)?;
            if l.mode != c.mode {
                return Err(ConnectError::Refused);
            }
            if self.active_links(target) >= self.env.max_links {
                return Err(ConnectError::PeerBusy);
            }
            let security = c.params.security.max(l.params.security);
            if security >= SecurityLevel::High && self.is_bonded(c.dev, target) != Some(true) {
                return Err(ConnectError::AuthenticationRequired);
            }
            let mtu = c.params.mtu.min(l.params.mtu);
            let params = LinkParams::default()
                .with_phy(c.phy)
                .with_mtu(mtu)
                .with_security(security)
                .with_conn_interval(interval);
            Ok((*lid, params))
        })();
        let (lid, params) = match result {
            Ok(x) => x,
            Err(e) => {
                log!(self, now, "connect-fail {} -> {}: {e}", self.devices[c.dev].name, self.devices[target].name);
                self.outputs.push_back(Output::Connected { conn: id, result: Err(e) });
                return;
            }
        };
        let link_id = self.id();
        let profile = self.profile(c.phy);
        let state = LinkState::new(now, [c.dev, target], c.mode, params, profile, interval, &self.env);
        self.links.insert(link_id, state);
        log!(
            self,
            now,
            "link {link_id} up {} -> {} {} {:?} mtu={} interval={:?}",
            self.devices[c.dev].name,
            self.devices[target].name,
            c.port,
            c.mode,
            params.mtu.get(),
            interval
        );
        let opened = |end: usize, peer: usize, m: &Self| LinkOpened {
            link: link_id,
            end,
            peer: PeerAddress::le_random(m.devices[peer].address),
            mode: c.mode,
            params,
        };
        let a = opened(0, target, self);
        let b = opened(1, c.dev, self);
        self.outputs.push_back(Output::Connected { conn: id, result: Ok(a) });
        self.outputs.push_back(Output::Incoming { listener: lid, link: b });
    }

    // ----- links -----

    pub(crate) fn send(&mut self, now: Duration, link: u64, end: usize, data: &Bytes) -> SendOutcome {
        match self.links.get_mut(&link) {
            Some(l) => l.send(now, end, data),
            None => SendOutcome::Closed(CloseReason::LocalClose),
        }
    }

    pub(crate) fn recv(&mut self, now: Duration, link: u64, end: usize) -> RecvOutcome {
        match self.links.get_mut(&link) {
            Some(l) => l.recv(now, end),
            None => RecvOutcome::Closed(CloseReason::LocalClose),
        }
    }

    /// Bytes `end` of `link` has queued and not yet put on the air, or why it is closed.
    pub(crate) fn queued(&self, link: u64, end: usize) -> Result<usize, CloseReason> {
        match self.links.get(&link) {
            Some(l) => l.queued(end),
            None => Err(CloseReason::LocalClose),
        }
    }

    /// Whether at most `max` bytes of `end` of `link` wait behind the SDU on the air, or why it is closed.
    pub(crate) fn drained(&self, link: u64, end: usize, max: usize) -> Result<bool, CloseReason> {
        match self.links.get(&link) {
            Some(l) => l.drained(end, max),
            None => Err(CloseReason::LocalClose),
        }
    }

    pub(crate) fn close_reason(&self, link: u64, end: usize) -> Option<CloseReason> {
        match self.links.get(&link) {
            Some(l) => l.ends[end].closed.clone(),
            None => Some(CloseReason::LocalClose),
        }
    }

    pub(crate) fn close(&mut self, now: Duration, link: u64, end: usize) {
        if let Some(l) = self.links.get_mut(&link)
            && l.close(now, end)
        {
            log!(self, now, "link {link} close by end {end}");
        }
    }

    /// The handle of `end` is gone: close it and forget the link once both are gone.
    pub(crate) fn release(&mut self, now: Duration, link: u64, end: usize) {
        self.close(now, link, end);
        if let Some(l) = self.links.get_mut(&link) {
            l.ends[end].released = true;
            if l.ends.iter().all(|e| e.released) {
                self.links.remove(&link);
            }
        }
    }

    pub(crate) fn abort_link(&mut self, now: Duration, link: u64, reasons: [CloseReason; 2]) {
        let Some(l) = self.links.get_mut(&link) else { return };
        if !l.is_open() && l.ends.iter().all(|e| e.closed.is_some()) {
            return;
        }
        log!(self, now, "link {link} down {:?}/{:?}", reasons[0], reasons[1]);
        l.abort(reasons);
        l.out_of_range_since = None;
        self.outputs.push_back(Output::LinkWake { link, end: 0 });
        self.outputs.push_back(Output::LinkWake { link, end: 1 });
    }

    pub(crate) fn links_between(&self, a: usize, b: usize) -> Vec<u64> {
        self.links
            .iter()
            .filter(|(_, l)| l.is_open() && (l.devs == [a, b] || l.devs == [b, a]))
            .map(|(k, _)| *k)
            .collect()
    }

    pub(crate) fn stall(&mut self, now: Duration, link: u64, stalled: bool) {
        let Some(l) = self.links.get_mut(&link) else { return };
        l.stalled = stalled;
        log!(self, now, "link {link} stalled={stalled}");
        if !stalled {
            for end in 0..2 {
                if l.pump(now, end) {
                    self.outputs.push_back(Output::LinkWake { link, end });
                }
            }
        }
    }

    pub(crate) fn corrupt(&mut self, now: Duration, link: u64, from_dev: usize, n: u32) {
        let Some(l) = self.links.get_mut(&link) else { return };
        let end = usize::from(l.devs[1] == from_dev);
        l.corrupt(end, n);
        log!(self, now, "link {link} corrupt next {n} from end {end}");
    }

    // ----- pairing -----

    /// Checks that `dev` can pair with `peer`; returns the peer's device and the radio time pairing takes
    /// besides the agents' answers.
    pub(crate) fn pair_prepare(
        &mut self,
        now: Duration,
        dev: usize,
        peer: Address,
    ) -> Result<(usize, Duration), PairingError> {
        if !self.devices[dev].powered {
            return Err(PairingError::PoweredOff);
        }
        let target = self
            .device_by_address(peer)
            .filter(|t| *t != dev && self.in_range(dev, *t, Phy::Le1M))
            .ok_or(PairingError::PeerUnreachable)?;
        let profile = self.profile(Phy::Le1M);
        let interval = self.draw_interval(&profile);
        let linked = !self.links_between(dev, target).is_empty();
        let setup = if linked { Duration::ZERO } else { interval * self.env.connect_setup_intervals };
        log!(self, now, "pair {} -> {}", self.devices[dev].name, self.devices[target].name);
        Ok((target, setup + interval * self.env.pairing_intervals))
    }

    pub(crate) fn draw_passkey(&mut self) -> u32 {
        self.rng.below(1_000_000) as u32
    }

    pub(crate) fn pair_finish(
        &mut self,
        now: Duration,
        dev: usize,
        target: usize,
        method: PairingMethod,
        result: &Result<(), PairingError>,
    ) -> Result<(), PairingError> {
        let result = match result {
            Ok(()) if !self.in_range(dev, target, Phy::Le1M) => Err(PairingError::PeerUnreachable),
            r => r.clone(),
        };
        match &result {
            Ok(()) => {
                let key = (dev.min(target), dev.max(target));
                let auth = method.is_authenticated() || self.bonds.get(&key) == Some(&true);
                self.bonds.insert(key, auth);
                log!(self, now, "paired {} <-> {} {method:?}", self.devices[dev].name, self.devices[target].name);
            }
            Err(e) => log!(
                self,
                now,
                "pair-fail {} <-> {} {method:?}: {e}",
                self.devices[dev].name,
                self.devices[target].name
            ),
        }
        result
    }

    // ----- time -----

    /// When the model next needs [`handle_timeout`](Self::handle_timeout).
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        let now = self.now;
        let adverts = self.adverts.values().filter(|a| self.devices[a.dev].powered).map(|a| a.next_at);
        let scans = self.scans.values().filter(|s| !s.seen.is_empty()).map(|s| s.next_sweep);
        let connects = self.connects.values().map(|c| c.at);
        let links = self.links.values().filter_map(|l| l.deadline(now));
        adverts.chain(scans).chain(connects).chain(links).min()
    }

    /// Processes everything due up to `now`, in time order.
    pub(crate) fn handle_timeout(&mut self, now: Duration) {
        while let Some(t) = self.poll_timeout() {
            if t > now {
                break;
            }
            let t = t.max(self.now);
            self.now = t;
            self.fire(t);
        }
        self.now = self.now.max(now);
    }

    fn fire(&mut self, t: Duration) {
        let due: Vec<u64> = self.adverts.iter().filter(|(_, a)| a.next_at <= t).map(|(k, _)| *k).collect();
        for id in due {
            self.fire_advert(t, id);
        }
        let due: Vec<u64> = self.scans.iter().filter(|(_, s)| s.next_sweep <= t).map(|(k, _)| *k).collect();
        for id in due {
            self.sweep_scan(t, id);
        }
        let due: Vec<u64> = self.connects.iter().filter(|(_, c)| c.at <= t).map(|(k, _)| *k).collect();
        for id in due {
            self.fire_connect(t, id);
        }
        let due: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.deadline(Duration::ZERO).is_some_and(|d| d <= t))
            .map(|(k, _)| *k)
            .collect();
        for id in due {
            let Some(l) = self.links.get_mut(&id) else { continue };
            let (wake, supervision, delivered) = l.fire(t, &mut self.rng);
            for (end, n) in delivered.into_iter().enumerate() {
                if n > 0 {
                    log!(self, t, "link {id} deliver {n} B to end {end}");
                }
            }
            if supervision {
                self.abort_link(t, id, [CloseReason::SupervisionTimeout, CloseReason::SupervisionTimeout]);
                continue;
            }
            for (end, w) in wake.into_iter().enumerate() {
                if w {
                    self.outputs.push_back(Output::LinkWake { link: id, end });
                }
            }
        }
    }
}

/// How often scans look for lost devices.
const SWEEP: Duration = Duration::from_millis(250);
