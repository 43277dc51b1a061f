//! An adapter that passes everything through to colink-ble's and notes when each step of a dial happened: the
//! scan started, the wanted device's advert came out of it, a connect began and completed (on which port), and
//! the first bytes arrived on the new link. `bench::connect` reads these marks to split a `Manager::connect` into
//! its phases; `bench::rfcomm_interleaved` reads the port to show which transport colink dialled.
//!
//! The wrappers add one indirection per call and nothing else; they are used where the marks are needed only.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use colink_ble::{
    Adapter, AdapterError, Advert, AdvertHandle, Agent, BoxFuture, CloseReason, ConnectError, Link, LinkError,
    LinkMode, LinkParams, Listener, Mtu, PairingError, PeerAddress, Port, ScanEvent, ScanFilter, ScanStream,
    ShortDeviceId, Sighting,
};
use futures::StreamExt;

/// When the steps of the latest dial happened (each `None` until it did).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// The dial asked for a scan.
    pub(crate) scan: Option<Instant>,
    /// The first scan event about the wanted device came out of the scan.
    pub(crate) found: Option<Instant>,
    /// The latest connect began (a failed one before it is part of the time up to here).
    pub(crate) connect: Option<Instant>,
    /// That connect completed with a usable link, to this port.
    pub(crate) linked: Option<(Instant, Port)>,
    /// The first bytes arrived on that link (the peer's answer to our handshake).
    pub(crate) first_recv: Option<Instant>,
    /// Whether the dial asked for the device's last sighting and got one.
    pub(crate) from_sighting: bool,
}

/// `inner`, noting the steps of dials to `wanted` in [`Marks`].
pub(crate) struct Timed {
    inner: Arc<dyn Adapter>,
    wanted: Mutex<Option<ShortDeviceId>>,
    /// Whether [`Adapter::last_seen`] answers (off: every dial scans, as for a device never seen).
    sightings: std::sync::atomic::AtomicBool,
    marks: Arc<Mutex<Marks>>,
}

impl Timed {
    pub(crate) fn new(inner: Arc<dyn Adapter>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            wanted: Mutex::new(None),
            sightings: std::sync::atomic::AtomicBool::new(true),
            marks: Arc::default(),
        })
    }

    /// Forgets the marks and watches for dials to `wanted` from now on; `sightings` off hides the adapter's
    /// record of devices seen lately, so that dials scan.
    pub(crate) fn reset(&self, wanted: ShortDeviceId, sightings: bool) {
        self.sightings.store(sightings, std::sync::atomic::Ordering::Relaxed);
        *lock(&self.wanted) = Some(wanted);
        *lock(&self.marks) = Marks::default();
    }

    /// The marks so far.
    pub(crate) fn marks(&self) -> Marks {
        *lock(&self.marks)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn note(marks: &Mutex<Marks>, f: impl FnOnce(&mut Marks)) {
    f(&mut lock(marks));
}

impl Adapter for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn address(&self) -> PeerAddress {
        self.inner.address()
    }

    fn is_powered(&self) -> BoxFuture<'_, Result<bool, AdapterError>> {
        self.inner.is_powered()
    }

    fn set_powered(&self, on: bool) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.inner.set_powered(on)
    }

    fn advertise(&self, advert: Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        self.inner.advertise(advert)
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        Box::pin(async move {
            note(&self.marks, |m| {
                m.scan.get_or_insert(Instant::now());
            });
            let inner = self.inner.scan(filter).await?;
            let wanted = *lock(&self.wanted);
            let marks = self.marks.clone();
            let stream = inner.inspect(move |event| {
                if let ScanEvent::DeviceFound { advert, .. } | ScanEvent::DeviceUpdated { advert, .. } = event
                    && Some(advert.short_id) == wanted
                {
                    note(&marks, |m| {
                        m.found.get_or_insert(Instant::now());
                    });
                }
            });
            Ok(Box::pin(stream) as ScanStream)
        })
    }

    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            note(&self.marks, |m| m.connect = Some(Instant::now()));
            let link = self.inner.connect(peer, port, mode, params).await?;
            note(&self.marks, |m| m.linked = Some((Instant::now(), port)));
            Ok(Box::new(TimedLink { inner: link, marks: self.marks.clone() }) as Box<dyn Link>)
        })
    }

    fn listen(
        &self,
        port: Option<Port>,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Listener>, AdapterError>> {
        self.inner.listen(port, mode, params)
    }

    fn set_agent(&self, agent: Option<Arc<dyn Agent>>) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.inner.set_agent(agent)
    }

    fn pair(&self, peer: PeerAddress, agent: Arc<dyn Agent>) -> BoxFuture<'_, Result<(), PairingError>> {
        self.inner.pair(peer, agent)
    }

    fn last_seen(&self, id: ShortDeviceId) -> Option<Sighting> {
        if !self.sightings.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let seen = self.inner.last_seen(id);
        if seen.is_some() && Some(id) == *lock(&self.wanted) {
            note(&self.marks, |m| m.from_sighting = true);
        }
        seen
    }
}

/// A dialled link that notes when its first bytes arrived.
struct TimedLink {
    inner: Box<dyn Link>,
    marks: Arc<Mutex<Marks>>,
}

impl Link for TimedLink {
    fn mode(&self) -> LinkMode {
        self.inner.mode()
    }

    fn mtu(&self) -> Mtu {
        self.inner.mtu()
    }

    fn peer(&self) -> PeerAddress {
        self.inner.peer()
    }

    fn params(&self) -> LinkParams {
        self.inner.params()
    }

    fn send(&self, data: Bytes) -> BoxFuture<'_, Result<(), LinkError>> {
        self.inner.send(data)
    }

    fn recv(&self) -> BoxFuture<'_, Result<Bytes, LinkError>> {
        Box::pin(async move {
            let data = self.inner.recv().await?;
            note(&self.marks, |m| {
                m.first_recv.get_or_insert(Instant::now());
            });
            Ok(data)
        })
    }

    fn queued_bytes(&self) -> Option<usize> {
        self.inner.queued_bytes()
    }

    fn drain_to(&self, max: usize) -> BoxFuture<'_, Result<(), LinkError>> {
        self.inner.drain_to(max)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }

    fn closed(&self) -> BoxFuture<'_, CloseReason> {
        self.inner.closed()
    }
}
