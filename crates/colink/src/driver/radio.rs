//! The node's radio endpoints (LE listener, optional RFCOMM listener, advert) and what happens when they fail.
//!
//! [`Endpoints::open`] is how a node starts listening and advertising, at start and again after the radio came
//! back. [`supervise`] accepts links on the endpoints until one listener fails or the adapter stops answering
//! (powered off, its daemon or hub gone), then either re-opens them with back-off ([`RadioLoss::Recover`]) or
//! stops accepting ([`RadioLoss::Stop`]). Links already open are not its business: each has its own loss
//! handling (grace period, re-dial).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use colink_ble::{
    Adapter, AdapterError, AdvertHandle, DeviceId, LinkMode, LinkParams, Listener, Phy, Port, Psm, RfcommChannel,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{Node, NodeConfig, StartError};
use crate::lock;

/// What a [`Node`] does when its radio goes away under it (adapter powered off, removed, its daemon or the
/// simulator hub restarted): the listener or the adapter fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RadioLoss {
    /// Keep trying to listen and advertise again, with back-off from [`RECOVER_FIRST`] doubling to
    /// [`RECOVER_MAX`], until the radio is back (default); an adapter that is only powered off is asked
    /// every [`RECOVER_FIRST`], so peers can resume as soon as it is on again.
    #[default]
    Recover,
    /// Stop accepting links and report [`RadioState::Lost`] (for callers that would rather exit).
    Stop,
}

/// Whether a [`Node`] is accepting links; see [`Node::radio_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RadioState {
    /// Listening and advertising.
    Up,
    /// The radio was lost; the node is trying to listen and advertise again.
    Recovering,
    /// The radio was lost and the node gave up ([`RadioLoss::Stop`]); it accepts no more links.
    Lost,
}

/// The first wait before re-opening a lost radio.
pub const RECOVER_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between two attempts to re-open a lost radio.
pub const RECOVER_MAX: Duration = Duration::from_secs(5);

/// How often the adapter is asked whether it is still powered while the listeners wait (a power cycle that
/// leaves listeners open still loses the advert on some stacks).
const POWER_POLL: Duration = Duration::from_secs(2);

/// What a node listens and advertises on.
pub(super) struct Endpoints {
    pub(super) listening: Listening,
    pub(super) advert: AdvertHandle,
    /// What the advert says (to advertise again with the next slot's advert id).
    pub(super) template: colink_ble::Advert,
}

/// The listeners of a node: an LE one and, when BR/EDR is accepted and the adapter allows, an RFCOMM one.
pub(super) struct Listening {
    pub(super) le: Arc<dyn Listener>,
    pub(super) psm: Psm,
    pub(super) rfcomm: Option<Arc<dyn Listener>>,
}

impl Endpoints {
    /// Listens on a free LE PSM (and an RFCOMM channel when the config accepts BR/EDR) and advertises both.
    pub(super) async fn open(adapter: &dyn Adapter, device: DeviceId, config: &NodeConfig) -> Result<Self, StartError> {
        if !adapter.is_powered().await? {
            return Err(StartError::PoweredOff);
        }
        let le_params =
            if config.link_params.phy.is_le() { config.link_params } else { config.link_params.with_phy(Phy::Le2M) };
        let le: Arc<dyn Listener> = Arc::from(adapter.listen(None, LinkMode::Packet, le_params).await?);
        let Port::L2cap(psm) = le.port() else {
            return Err(StartError::Adapter(AdapterError::Unsupported("listener without a PSM")));
        };
        let rfcomm = if config.accept_br_edr { listen_rfcomm(adapter, config.link_params).await } else { None };
        // The advert carries the current slot's rotating id, never the stable device id (docs/security.md).
        let id = device.advert_id(colink_ble::advert_slot(std::time::SystemTime::now()));
        let mut advert = colink_ble::Advert::new(id).with_psm(psm).with_services(config.services);
        let listening = Listening { le, psm, rfcomm };
        if let Some(channel) = listening.channel() {
            advert = advert.with_rfcomm(channel);
        }
        let template = advert;
        let advert = adapter.advertise(advert).await?;
        Ok(Self { listening, advert, template })
    }
}

impl Listening {
    /// The RFCOMM channel listened on.
    pub(super) fn channel(&self) -> Option<RfcommChannel> {
        match self.rfcomm.as_ref()?.port() {
            Port::Rfcomm(channel) => Some(channel),
            _ => None,
        }
    }
}

/// Accepts links on `listening` for as long as the radio lasts (the advert is in the node's hands); on loss,
/// recovers or stops as configured.
pub(super) async fn supervise(node: Node, mut listening: Listening, state: watch::Sender<RadioState>) {
    let shared = node.shared.clone();
    loop {
        let Listening { le, rfcomm, .. } = &listening;
        let rfcomm_accept = async {
            match rfcomm {
                Some(l) => node.clone().accept_loop(l.clone()).await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            e = node.clone().accept_loop(le.clone()) => format!("the LE listener failed ({e})"),
            e = rfcomm_accept => format!("the RFCOMM listener failed ({e})"),
            why = power_lost(&*shared.adapter) => why,
        };
        let lost_at = Instant::now();
        lock(&shared.advert).take();
        drop(listening);
        if shared.config.on_radio_loss == RadioLoss::Stop {
            warn!("radio lost: {why}; no longer accepting links");
            state.send_replace(RadioState::Lost);
            return;
        }
        warn!("radio lost: {why}; listening again when it is back");
        state.send_replace(RadioState::Recovering);
        let mut backoff = RECOVER_FIRST;
        let opened = loop {
            tokio::time::sleep(backoff).await;
            match Endpoints::open(&*shared.adapter, shared.device, &shared.config).await {
                Ok(opened) => break opened,
                // An adapter that is merely off (rfkill, a power switch, suspend) is asked again often, a
                // local query: the peers' grace periods run, and they can only resume once we advertise again.
                Err(StartError::PoweredOff) => {
                    debug!("radio still powered off");
                    backoff = RECOVER_FIRST;
                }
                Err(e) => {
                    debug!(error = %e, ?backoff, "radio still lost");
                    backoff = (backoff * 2).min(RECOVER_MAX);
                }
            }
        };
        {
            let mut slot = lock(&shared.advert);
            if shared.stopped.load(Ordering::Acquire) {
                return;
            }
            *slot = Some(opened.advert);
            *lock(&shared.advert_template) = Some(opened.template);
        }
        listening = opened.listening;
        info!(
            rfcomm = ?listening.channel(),
            "listening again on PSM {} after {:.1} s",
            listening.psm.value(),
            lost_at.elapsed().as_secs_f64()
        );
        state.send_replace(RadioState::Up);
    }
}

/// Resolves (with why) once the backend reports the adapter lost or reset ([`Adapter::radio_lost`]: at once, e.g.
/// a bluetoothd restart faster than any poll), or the adapter says it is off or cannot answer.
async fn power_lost(adapter: &dyn Adapter) -> String {
    let poll = async {
        loop {
            tokio::time::sleep(POWER_POLL).await;
            match adapter.is_powered().await {
                Ok(true) => {}
                Ok(false) => return "the adapter is powered off".to_owned(),
                Err(e) => return format!("the adapter does not answer ({e})"),
            }
        }
    };
    tokio::select! {
        why = adapter.radio_lost() => why,
        why = poll => why,
    }
}

impl Node {
    /// Accepts links on `listener` until it fails; returns why.
    pub(super) async fn accept_loop(self, listener: Arc<dyn Listener>) -> AdapterError {
        loop {
            match listener.accept().await {
                Ok(link) => {
                    let node = self.clone();
                    tokio::spawn(node.identify_and_route(Arc::from(link)).in_current_span());
                }
                Err(e) => return e,
            }
        }
    }
}

/// Listens for BR/EDR stream links on the first free RFCOMM channel. `None` (logged) when the adapter cannot.
async fn listen_rfcomm(adapter: &dyn Adapter, params: LinkParams) -> Option<Arc<dyn Listener>> {
    let params = params.with_phy(Phy::BrEdr);
    for value in 1..=30 {
        let Ok(channel) = RfcommChannel::new(value) else { continue };
        match adapter.listen(Some(Port::Rfcomm(channel)), LinkMode::Stream, params).await {
            Ok(listener) => return Some(Arc::from(listener)),
            Err(AdapterError::PortInUse(_)) => {}
            Err(e) => {
                warn!(error = %e, "cannot listen on RFCOMM; accepting LE links only");
                return None;
            }
        }
    }
    warn!("no free RFCOMM channel; accepting LE links only");
    None
}

/// Advertises again with the next slot's advert id at every slot boundary, so the advert never carries one id
/// for longer than [`ADVERT_ID_PERIOD`](colink_ble::ADVERT_ID_PERIOD) (docs/security.md, privacy).
pub(super) async fn rotate_adverts(node: Node) {
    let shared = node.shared;
    loop {
        let wait = colink_ble::until_next_advert_slot(std::time::SystemTime::now()).max(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        let id = shared.device.advert_id(colink_ble::advert_slot(std::time::SystemTime::now()));
        let Some(mut advert) = *lock(&shared.advert_template) else { continue };
        if advert.short_id == id {
            continue;
        }
        advert.short_id = id;
        match shared.adapter.advertise(advert).await {
            Ok(handle) => {
                let mut current = lock(&shared.advert);
                // Radio lost meanwhile: recovery advertises again with the current id.
                if current.is_none() || shared.stopped.load(Ordering::Acquire) {
                    continue;
                }
                *current = Some(handle);
                *lock(&shared.advert_template) = Some(advert);
                debug!(advert_id = %id, "advert id rotated");
            }
            Err(e) => debug!(error = %e, "advertising the next advert id failed; the old one stays"),
        }
    }
}
