//! The data path of one simulated link: queues, credits, air time, delivery.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colink_ble::{CloseReason, LinkMode, LinkParams};

use crate::kernel::{KernelProfile, allowance};
use crate::profile::{Environment, PhyProfile};
use crate::rng::SimRng;

/// One direction's sender state plus the receive queue of that end.
#[derive(Debug, Default)]
pub(crate) struct End {
    /// SDUs queued by this end, not yet on air.
    tx: VecDeque<Bytes>,
    tx_bytes: usize,
    /// Credits (K-frames) this end may still send to its peer.
    credits: u32,
    /// When this end's transmitter finishes the SDU on air.
    busy_until: Duration,
    /// SDUs sent by this end, arriving at the peer at the given time, with their K-frame count.
    in_flight: VecDeque<(Duration, Bytes, u32)>,
    /// SDUs (or stream chunks) received by this end and not yet read, with their K-frame count.
    rx: VecDeque<(Bytes, u32)>,
    /// Credits on their way back to this end.
    credit_returns: VecDeque<(Duration, u32)>,
    /// Corrupt this many of the next SDUs this end sends.
    corrupt: u32,
    /// With a kernel model: memory charged for SDUs queued or on the air (what TIOCOUTQ reports).
    charged: usize,
    /// With a kernel model: the charge of the SDU on the air, released when its transmission ends.
    on_air_charge: usize,
    /// With a kernel model: the charge and length of the latest SDU sent (the `drain_to` rule).
    last_sent: (usize, usize),
    /// Set once this end is closed.
    pub(crate) closed: Option<CloseReason>,
    /// A graceful close by the peer that reaches this end at the given time.
    pending_close: Option<Duration>,
    /// The handle for this end was dropped.
    pub(crate) released: bool,
}

/// Outcome of a send attempt.
#[derive(Debug)]
pub(crate) enum SendOutcome {
    /// This many bytes were queued (packet mode: the whole SDU).
    Queued(usize),
    /// The send buffer is full; wait for a wake.
    WouldBlock,
    /// The end is closed.
    Closed(CloseReason),
}

/// Outcome of a receive attempt.
#[derive(Debug)]
pub(crate) enum RecvOutcome {
    Data(Bytes),
    WouldBlock,
    Closed(CloseReason),
}

/// A link between two devices: `ends[0]` is the initiator, `ends[1]` the acceptor.
#[derive(Debug)]
pub(crate) struct LinkState {
    pub(crate) devs: [usize; 2],
    pub(crate) mode: LinkMode,
    pub(crate) params: LinkParams,
    pub(crate) profile: PhyProfile,
    pub(crate) ends: [End; 2],
    pub(crate) interval: Duration,
    anchor: Duration,
    pub(crate) out_of_range_since: Option<Duration>,
    pub(crate) stalled: bool,
    tx_buffer: usize,
    kernel: Option<KernelProfile>,
}

impl LinkState {
    pub(crate) fn new(
        now: Duration,
        devs: [usize; 2],
        mode: LinkMode,
        params: LinkParams,
        profile: PhyProfile,
        interval: Duration,
        env: &Environment,
    ) -> Self {
        let (rx_buffer, tx_buffer, kernel) = (env.rx_buffer, env.tx_buffer, env.kernel.clone());
        let mtu = params.mtu.get();
        let mps = profile.mps_for(mtu).max(1) as usize;
        let credits = profile.kframes(usize::from(mtu), mtu).max(u32::try_from(rx_buffer / mps).unwrap_or(u32::MAX));
        let mut ends: [End; 2] = Default::default();
        for e in &mut ends {
            e.credits = credits;
            e.busy_until = now;
        }
        Self {
            devs,
            mode,
            params,
            profile,
            ends,
            interval,
            anchor: now,
            out_of_range_since: None,
            stalled: false,
            tx_buffer,
            kernel,
        }
    }

    /// Whether neither end is closed.
    pub(crate) fn is_open(&self) -> bool {
        self.ends.iter().all(|e| e.closed.is_none() && e.pending_close.is_none())
    }

    /// Queues data from `end`. Packet mode queues `data` whole; stream mode queues a prefix in MTU chunks.
    pub(crate) fn send(&mut self, now: Duration, end: usize, data: &Bytes) -> SendOutcome {
        let mtu = self.params.mtu.bytes();
        let tx_buffer = self.tx_buffer;
        let kernel = self.kernel.as_ref();
        let e = &mut self.ends[end];
        if let Some(r) = &e.closed {
            return SendOutcome::Closed(r.clone());
        }
        // Without a kernel model: payload bytes not yet on the air within `tx_buffer`. With one: the kernel
        // memory charged for SDUs not yet transmitted within SO_SNDBUF.
        let fits = |e: &End, len: usize| match kernel {
            None => e.tx_bytes == 0 || e.tx_bytes + len <= tx_buffer,
            Some(k) => e.charged == 0 || e.charged + k.charge(len) <= k.sndbuf,
        };
        let charge = |e: &mut End, len: usize| {
            if let Some(k) = kernel {
                let c = k.charge(len);
                e.charged += c;
                e.last_sent = (c, len);
            }
        };
        let queued = match self.mode {
            LinkMode::Packet => {
                if !fits(e, data.len()) {
                    return SendOutcome::WouldBlock;
                }
                e.tx.push_back(data.clone());
                e.tx_bytes += data.len();
                charge(e, data.len());
                data.len()
            }
            _ => {
                let mut off = 0;
                while off < data.len() {
                    let n = (data.len() - off).min(mtu);
                    if !fits(e, n) {
                        break;
                    }
                    e.tx.push_back(data.slice(off..off + n));
                    e.tx_bytes += n;
                    charge(e, n);
                    off += n;
                }
                if off == 0 && !data.is_empty() {
                    return SendOutcome::WouldBlock;
                }
                off
            }
        };
        self.pump(now, end);
        SendOutcome::Queued(queued)
    }

    /// Bytes `end` has queued and not yet put on the air — with a kernel model, the kernel memory charged for
    /// SDUs not yet transmitted (TIOCOUTQ) — or why it is closed.
    pub(crate) fn queued(&self, end: usize) -> Result<usize, CloseReason> {
        let e = &self.ends[end];
        match (&e.closed, &self.kernel) {
            (Some(r), _) => Err(r.clone()),
            (None, None) => Ok(e.tx_bytes),
            (None, Some(_)) => Ok(e.charged),
        }
    }

    /// Whether at most `max` bytes of `end` wait behind the SDU on the air (`Link::drain_to`). With a kernel
    /// model, by the BlueZ backend's rule on TIOCOUTQ: at most the latest SDU's charge plus `max` bytes at the
    /// same charge per byte still charged.
    pub(crate) fn drained(&self, end: usize, max: usize) -> Result<bool, CloseReason> {
        let e = &self.ends[end];
        let queued = self.queued(end)?;
        Ok(match self.kernel {
            None => queued <= max,
            Some(_) => queued <= allowance(e.last_sent.0, e.last_sent.1, max),
        })
    }

    /// Takes received data at `end`; returns the credits to give back to the peer.
    pub(crate) fn recv(&mut self, now: Duration, end: usize) -> RecvOutcome {
        let interval = self.interval;
        let peer_open = self.ends[1 - end].closed.is_none();
        let e = &mut self.ends[end];
        let (data, credits) = match self.mode {
            LinkMode::Packet => match e.rx.pop_front() {
                Some(x) => x,
                None => return Self::empty(e),
            },
            _ => {
                if e.rx.is_empty() {
                    return Self::empty(e);
                }
                let mut buf = BytesMut::new();
                let mut credits = 0;
                while let Some((chunk, k)) = e.rx.pop_front() {
                    buf.extend_from_slice(&chunk);
                    credits += k;
                    if buf.len() >= 64 * 1024 {
                        break;
                    }
                }
                (buf.freeze(), credits)
            }
        };
        if peer_open {
            // Credits travel back in the next connection event.
            self.ends[1 - end].credit_returns.push_back((now + interval, credits));
        }
        RecvOutcome::Data(data)
    }

    fn empty(e: &End) -> RecvOutcome {
        match &e.closed {
            Some(r) => RecvOutcome::Closed(r.clone()),
            None => RecvOutcome::WouldBlock,
        }
    }

    /// Graceful close by `end`: the peer learns after the data already on air.
    pub(crate) fn close(&mut self, now: Duration, end: usize) -> bool {
        if self.ends[end].closed.is_some() {
            return false;
        }
        let latency = self.profile.host_latency;
        let e = &mut self.ends[end];
        e.closed = Some(CloseReason::LocalClose);
        e.tx.clear();
        e.tx_bytes = 0;
        e.charged = 0;
        e.on_air_charge = 0;
        let last = e.in_flight.back().map_or(now, |(t, _, _)| *t).max(now);
        let peer = &mut self.ends[1 - end];
        if peer.closed.is_none() && peer.pending_close.is_none() {
            peer.pending_close = Some(last + latency);
        }
        true
    }

    /// Immediate teardown with a reason per end. Data already received stays readable.
    pub(crate) fn abort(&mut self, reasons: [CloseReason; 2]) {
        for (e, r) in self.ends.iter_mut().zip(reasons) {
            if e.closed.is_none() {
                e.closed = Some(r);
            }
            e.pending_close = None;
            e.tx.clear();
            e.tx_bytes = 0;
            e.charged = 0;
            e.on_air_charge = 0;
            e.in_flight.clear();
            e.credit_returns.clear();
        }
    }

    /// Marks the next `n` SDUs sent by `end` for corruption.
    pub(crate) fn corrupt(&mut self, end: usize, n: u32) {
        self.ends[end].corrupt = self.ends[end].corrupt.saturating_add(n);
    }

    /// Earliest time after `now` something happens on this link (events at or before `now` are handled by
    /// [`fire`](Self::fire)).
    pub(crate) fn deadline(&self, now: Duration) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        let mut consider = |t: Duration| best = Some(best.map_or(t, |b| b.min(t)));
        for e in &self.ends {
            if (!e.tx.is_empty() || e.on_air_charge > 0) && e.closed.is_none() {
                // Only a pending wake when the transmitter is busy; an idle one is pumped on every change. A
                // kernel releases the charge of the SDU on the air when its transmission ends.
                if e.busy_until > now {
                    consider(e.busy_until);
                }
            }
            if let Some((t, _, _)) = e.in_flight.front() {
                consider(*t);
            }
            if let Some((t, _)) = e.credit_returns.front() {
                consider(*t);
            }
            if let Some(t) = e.pending_close {
                consider(t);
            }
        }
        if let Some(since) = self.out_of_range_since {
            consider(since + self.profile.supervision_timeout);
        }
        best
    }

    /// Processes everything due at `now`. Returns which ends should be woken, whether a supervision
    /// timeout fired, and the bytes delivered to each end.
    pub(crate) fn fire(&mut self, now: Duration, rng: &mut SimRng) -> ([bool; 2], bool, [usize; 2]) {
        let mut wake = [false, false];
        let mut delivered = [0usize; 2];
        if let Some(since) = self.out_of_range_since
            && since + self.profile.supervision_timeout <= now
        {
            return ([true, true], true, delivered);
        }
        for end in 0..2 {
            // Deliveries from `end` to its peer.
            while let Some((t, _, _)) = self.ends[end].in_flight.front() {
                if *t > now {
                    break;
                }
                let Some((_, mut data, k)) = self.ends[end].in_flight.pop_front() else {
                    break;
                };
                if self.ends[end].corrupt > 0 && !data.is_empty() {
                    self.ends[end].corrupt -= 1;
                    let mut m = BytesMut::from(&data[..]);
                    let i = rng.below(m.len() as u64) as usize;
                    m[i] ^= 1 + rng.below(255) as u8;
                    data = m.freeze();
                }
                let peer = &mut self.ends[1 - end];
                if peer.closed.is_none() {
                    delivered[1 - end] += data.len();
                    peer.rx.push_back((data, k));
                    wake[1 - end] = true;
                }
            }
            // Credits coming back to `end`.
            let e = &mut self.ends[end];
            if e.on_air_charge > 0 && e.busy_until <= now {
                e.charged -= e.on_air_charge.min(e.charged);
                e.on_air_charge = 0;
                wake[end] = true;
            }
            while let Some((t, k)) = e.credit_returns.front().copied() {
                if t > now {
                    break;
                }
                e.credit_returns.pop_front();
                e.credits = e.credits.saturating_add(k);
                wake[end] = true;
            }
            if let Some(t) = e.pending_close
                && t <= now
            {
                e.pending_close = None;
                e.closed = Some(CloseReason::PeerClose);
                e.tx.clear();
                e.tx_bytes = 0;
                e.charged = 0;
                e.on_air_charge = 0;
                e.in_flight.clear();
                wake[end] = true;
            }
        }
        for (end, w) in wake.iter_mut().enumerate() {
            if self.pump(now, end) {
                *w = true;
            }
        }
        (wake, false, delivered)
    }

    /// Puts the next SDU from `end` on air if the transmitter is free and credits allow. Returns whether send
    /// buffer space was freed.
    pub(crate) fn pump(&mut self, now: Duration, end: usize) -> bool {
        if self.stalled || self.out_of_range_since.is_some() {
            return false;
        }
        let mtu = self.params.mtu.get();
        let peer_closed = self.ends[1 - end].closed.is_some();
        let e = &mut self.ends[end];
        if e.closed.is_some() || peer_closed || e.busy_until > now {
            return false;
        }
        let Some(front) = e.tx.front() else {
            return false;
        };
        let k = self.profile.kframes(front.len(), mtu);
        if e.credits < k {
            return false;
        }
        // Back-to-back when the transmitter just finished; otherwise wait for the next connection event.
        let start = if e.busy_until == now {
            now
        } else {
            let since = now.saturating_sub(self.anchor).as_nanos();
            let iv = self.interval.as_nanos().max(1);
            let events = since.div_ceil(iv);
            self.anchor + Duration::from_nanos(u64::try_from(events * iv).unwrap_or(u64::MAX))
        };
        let Some(sdu) = e.tx.pop_front() else {
            return false;
        };
        e.tx_bytes -= sdu.len();
        e.credits -= k;
        let mut done = start + self.profile.sdu_air_time(sdu.len(), mtu);
        if let Some(kernel) = &self.kernel {
            // The kernel's work on this write comes first; its charge is released when the SDU is through.
            done += kernel.cpu_time(sdu.len());
            e.charged -= e.on_air_charge.min(e.charged);
            e.on_air_charge = kernel.charge(sdu.len());
        }
        e.busy_until = done;
        e.in_flight.push_back((done + self.profile.host_latency, sdu, k));
        true
    }
}
