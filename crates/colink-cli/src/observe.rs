//! An adapter that passes everything through to another and notes the parameters of every link it opens, so
//! `bench` can say which connection interval each side of its comparison ran on.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use colink_ble::{
    Adapter, AdapterError, AdvertHandle, Agent, BoxFuture, ConnectError, Link, LinkMode, LinkParams, Listener,
    PairingError, PeerAddress, Port, ScanFilter, ScanStream,
};

/// `inner`, with a note of the [`LinkParams`] of every link opened through [`Adapter::connect`].
pub(crate) struct Observed {
    inner: Arc<dyn Adapter>,
    links: Mutex<Vec<LinkParams>>,
}

impl Observed {
    pub(crate) fn new(inner: Arc<dyn Adapter>) -> Arc<Self> {
        Arc::new(Self { inner, links: Mutex::new(Vec::new()) })
    }

    /// The connection interval of the first link opened through this adapter, when the backend knows it.
    pub(crate) fn first_conn_interval(&self) -> Option<Duration> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner).first().and_then(|p| p.conn_interval)
    }
}

impl Adapter for Observed {
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

    fn advertise(&self, advert: colink_ble::Advert) -> BoxFuture<'_, Result<AdvertHandle, AdapterError>> {
        self.inner.advertise(advert)
    }

    fn scan(&self, filter: ScanFilter) -> BoxFuture<'_, Result<ScanStream, AdapterError>> {
        self.inner.scan(filter)
    }

    fn connect(
        &self,
        peer: PeerAddress,
        port: Port,
        mode: LinkMode,
        params: LinkParams,
    ) -> BoxFuture<'_, Result<Box<dyn Link>, ConnectError>> {
        Box::pin(async move {
            let link = self.inner.connect(peer, port, mode, params).await?;
            self.links.lock().unwrap_or_else(PoisonError::into_inner).push(link.params());
            Ok(link)
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
}
