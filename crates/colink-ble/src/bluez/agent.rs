//! The pairing agent bridge: one bluer (`org.bluez.Agent1`) agent per process whose callbacks are routed to the
//! colink [`Agent`] of the adapter (or of the pairing in progress) they concern.
//!
//! Whose requests reach it (bluetoothd's rule): requests that belong to a pairing this process started go to this
//! process's agent; requests a *peer* starts go to the host's default agent only. The bridge therefore asks to be
//! the default agent only while some adapter has an agent set ([`AgentHub::set_adapter_agent`], e.g. `colink serve
//! --pairing-agent`), and is an agent for the process's own pairings otherwise: a desktop's agent keeps answering
//! the host's other pairings, and with no default agent at all bluetoothd refuses peer-initiated pairings.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bluer::agent::{self as bagent, ReqError, ReqResult};
use bluer::{Address as BAddress, Session};
use futures::FutureExt;

use super::{from_bluer_address_type, to_colink_address};
use crate::{Agent, AgentRejected, IoCapability, Passkey, PeerAddress};

type Key = (String, [u8; 6]);

/// Routes agent requests; owned by the backend's shared session state.
pub(crate) struct AgentHub {
    session: Session,
    adapters: Mutex<HashMap<String, Arc<dyn Agent>>>,
    pairing: Mutex<HashMap<Key, Arc<dyn Agent>>>,
    rejected: Mutex<HashSet<Key>>,
    registered: tokio::sync::Mutex<Option<Registration>>,
}

/// The bridge's current registration with bluetoothd.
struct Registration {
    _handle: bagent::AgentHandle,
    callbacks: Callbacks,
    default: bool,
}

/// What answers a request no colink agent was set for (the default agent asked about an adapter colink does not
/// serve, or a request arriving after its pairing ended): refused, never confirmed unasked.
struct Refuse;

impl Agent for Refuse {
    fn io_capability(&self) -> IoCapability {
        IoCapability::NoInputNoOutput
    }

    fn confirm_just_works(&self, peer: PeerAddress) -> crate::BoxFuture<'_, crate::AgentResult<()>> {
        tracing::info!(%peer, "pairing refused: no colink agent answers for this adapter");
        Box::pin(async { Err(AgentRejected) })
    }

    fn display_passkey(&self, peer: PeerAddress, _passkey: Passkey) -> crate::BoxFuture<'_, crate::AgentResult<()>> {
        tracing::info!(%peer, "pairing refused: no colink agent answers for this adapter");
        Box::pin(async { Err(AgentRejected) })
    }
}

/// Removes a pairing's agent route when the pairing ends (or its future is dropped).
pub(crate) struct PairingRoute {
    hub: Weak<AgentHub>,
    key: Key,
}

impl Drop for PairingRoute {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            if let Ok(mut p) = hub.pairing.lock() {
                p.remove(&self.key);
            }
            if let Ok(mut r) = hub.rejected.lock() {
                r.remove(&self.key);
            }
        }
    }
}

impl AgentHub {
    pub(crate) fn new(session: Session) -> Arc<Self> {
        Arc::new(Self {
            session,
            adapters: Mutex::default(),
            pairing: Mutex::default(),
            rejected: Mutex::default(),
            registered: tokio::sync::Mutex::new(None),
        })
    }

    /// Sets (or clears) the agent answering peer-initiated pairings on `adapter`, and registers the bridge: as the
    /// host's default agent while any adapter has one (bluetoothd routes peer-initiated requests to the default
    /// agent only; the previous default returns when this one goes), as an agent for this process's own pairings
    /// once none has.
    pub(crate) async fn set_adapter_agent(
        self: &Arc<Self>,
        adapter: &str,
        agent: Option<Arc<dyn Agent>>,
    ) -> bluer::Result<()> {
        let cap = agent.as_ref().map_or(IoCapability::NoInputNoOutput, |a| a.io_capability());
        let any = match self.adapters.lock() {
            Ok(mut m) => {
                match agent {
                    Some(a) => m.insert(adapter.to_owned(), a),
                    None => m.remove(adapter),
                };
                !m.is_empty()
            }
            Err(_) => false,
        };
        self.ensure_registered(cap, any).await
    }

    /// Whether some adapter has an agent, so that the bridge must stay the default agent.
    fn serves_adapters(&self) -> bool {
        self.adapters.lock().is_ok_and(|m| !m.is_empty())
    }

    /// Routes requests about `peer` on `adapter` to `agent` until the returned guard drops.
    pub(crate) async fn begin_pairing(
        self: &Arc<Self>,
        adapter: &str,
        peer: BAddress,
        agent: Arc<dyn Agent>,
    ) -> bluer::Result<PairingRoute> {
        let key = (adapter.to_owned(), peer.0);
        let cap = agent.io_capability();
        if let Ok(mut p) = self.pairing.lock() {
            p.insert(key.clone(), agent);
        }
        let route = PairingRoute { hub: Arc::downgrade(self), key };
        self.ensure_registered(cap, self.serves_adapters()).await?;
        Ok(route)
    }

    /// Whether the local agent rejected a step of the pairing with `peer` on `adapter`.
    pub(crate) fn rejected_locally(&self, adapter: &str, peer: BAddress) -> bool {
        self.rejected.lock().is_ok_and(|r| r.contains(&(adapter.to_owned(), peer.0)))
    }

    /// Registers the bridge with the callbacks for `cap`, as the default agent or not (re-registering when either
    /// changes).
    async fn ensure_registered(self: &Arc<Self>, cap: IoCapability, default: bool) -> bluer::Result<()> {
        let callbacks = Callbacks::for_capability(cap);
        let capability = callbacks.bluez_capability();
        let mut reg = self.registered.lock().await;
        if reg.as_ref().is_some_and(|r| r.callbacks.bluez_capability() == capability && r.default == default) {
            return Ok(());
        }
        // Drop the old registration first: BlueZ allows one agent per D-Bus client.
        *reg = None;
        let handle = self.register(callbacks, default).await?;
        tracing::debug!(capability, default, "pairing agent registered");
        *reg = Some(Registration { _handle: handle, callbacks, default });
        Ok(())
    }

    /// Registers the bridge again as it was (after bluetoothd restarted, which forgets every agent); nothing
    /// when it was not registered.
    pub(crate) async fn register_again(self: &Arc<Self>) -> bluer::Result<()> {
        let mut reg = self.registered.lock().await;
        let Some(old) = reg.take() else { return Ok(()) };
        let (callbacks, default) = (old.callbacks, old.default);
        drop(old);
        let handle = self.register(callbacks, default).await?;
        tracing::info!(capability = callbacks.bluez_capability(), default, "pairing agent registered again");
        *reg = Some(Registration { _handle: handle, callbacks, default });
        Ok(())
    }

    /// Registers the bridge. Quirk (seen in the rig): bluer unregisters a dropped agent in the background, so a
    /// registration right after dropping the previous one can meet bluetoothd's "Already Exists" (one agent per
    /// D-Bus client); it is retried for up to a second.
    async fn register(self: &Arc<Self>, callbacks: Callbacks, default: bool) -> bluer::Result<bagent::AgentHandle> {
        let mut tries = 0;
        loop {
            match self.session.register_agent(self.bluer_agent(callbacks, default)).await {
                Err(e) if e.kind == bluer::ErrorKind::AlreadyExists && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    fn route(&self, adapter: &str, device: BAddress) -> Arc<dyn Agent> {
        let key = (adapter.to_owned(), device.0);
        if let Some(a) = self.pairing.lock().ok().and_then(|p| p.get(&key).cloned()) {
            return a;
        }
        self.adapters.lock().ok().and_then(|m| m.get(adapter).cloned()).unwrap_or_else(|| Arc::new(Refuse))
    }

    async fn peer(&self, adapter: &str, device: BAddress) -> PeerAddress {
        let kind = match self.session.adapter(adapter).and_then(|a| a.device(device)) {
            Ok(d) => d.address_type().await.ok(),
            Err(_) => None,
        };
        PeerAddress { address: to_colink_address(device), address_type: from_bluer_address_type(kind) }
    }

    /// The outcome of a colink agent callback, as bluer wants it; records local rejections. An approved pairing
    /// bonds the device but never marks it Trusted in BlueZ: who may use colink is colink's trust store's
    /// decision (docs/security.md), and Trusted would let the device use every other profile unasked.
    fn settle<T>(self: &Arc<Self>, adapter: &str, device: BAddress, r: Result<T, AgentRejected>) -> ReqResult<T> {
        match r {
            Ok(v) => Ok(v),
            Err(AgentRejected) => {
                if let Ok(mut s) = self.rejected.lock() {
                    s.insert((adapter.to_owned(), device.0));
                }
                Err(ReqError::Rejected)
            }
        }
    }

    fn bluer_agent(self: &Arc<Self>, cb: Callbacks, default: bool) -> bagent::Agent {
        let weak = Arc::downgrade(self);
        let mut agent = bagent::Agent { request_default: default, ..Default::default() };

        // Quirk (vm-rig.md, pairing): bluetoothd turns LE Just Works into RequestAuthorization, which bluer
        // rejects when no callback is set, so pairing fails for a callback-less (NoInputNoOutput) agent. This
        // callback is therefore always installed and answered by the colink agent's `confirm_just_works`.
        let w = weak.clone();
        agent.request_authorization = Some(Box::new(move |req: bagent::RequestAuthorization| {
            let w = w.clone();
            async move {
                let hub = w.upgrade().ok_or(ReqError::Canceled)?;
                let agent = hub.route(&req.adapter, req.device);
                let peer = hub.peer(&req.adapter, req.device).await;
                let r = agent.confirm_just_works(peer).await;
                hub.settle(&req.adapter, req.device, r)
            }
            .boxed()
        }));

        // Confirmation is installed for every capability: with the authorization callback above bluer publishes
        // at least DisplayYesNo, so BlueZ may ask for numeric comparison. An agent that cannot compare numbers
        // (NoInputNoOutput, DisplayOnly, KeyboardOnly) answers it as Just Works.
        let w = weak.clone();
        agent.request_confirmation = Some(Box::new(move |req: bagent::RequestConfirmation| {
            let w = w.clone();
            async move {
                let hub = w.upgrade().ok_or(ReqError::Canceled)?;
                let agent = hub.route(&req.adapter, req.device);
                let peer = hub.peer(&req.adapter, req.device).await;
                let r = match agent.io_capability() {
                    IoCapability::DisplayYesNo | IoCapability::KeyboardDisplay => {
                        agent.confirm_passkey(peer, Passkey::new_wrapping(req.passkey)).await
                    }
                    _ => agent.confirm_just_works(peer).await,
                };
                hub.settle(&req.adapter, req.device, r)
            }
            .boxed()
        }));

        // Only a peer connecting to a profile bluetoothd runs (audio, input, ...) asks this, and only the default
        // agent is asked. colink's own links are kernel sockets that never ask, so as the default agent the bridge
        // refuses: authorising every service would let any bonded device use the host's other profiles.
        agent.authorize_service = Some(Box::new(|req: bagent::AuthorizeService| {
            async move {
                tracing::info!(adapter = %req.adapter, peer = %req.device, service = %req.service,
                    "service authorisation refused: colink authorises no profile but its own");
                Err(ReqError::Rejected)
            }
            .boxed()
        }));

        if cb.display {
            let w = weak.clone();
            agent.display_passkey = Some(Box::new(move |req: bagent::DisplayPasskey| {
                let w = w.clone();
                async move {
                    let hub = w.upgrade().ok_or(ReqError::Canceled)?;
                    // BlueZ calls again for every key typed on the peer (`entered`); show the passkey once.
                    if req.entered > 0 {
                        return Ok(());
                    }
                    let agent = hub.route(&req.adapter, req.device);
                    let peer = hub.peer(&req.adapter, req.device).await;
                    let r = agent.display_passkey(peer, Passkey::new_wrapping(req.passkey)).await;
                    hub.settle(&req.adapter, req.device, r)
                }
                .boxed()
            }));
        }
        if cb.keyboard {
            let w = weak;
            agent.request_passkey = Some(Box::new(move |req: bagent::RequestPasskey| {
                let w = w.clone();
                async move {
                    let hub = w.upgrade().ok_or(ReqError::Canceled)?;
                    let agent = hub.route(&req.adapter, req.device);
                    let peer = hub.peer(&req.adapter, req.device).await;
                    let r = agent.request_passkey(peer).await.map(Passkey::value);
                    hub.settle(&req.adapter, req.device, r)
                }
                .boxed()
            }));
        }
        agent
    }
}

/// Which optional bluer callbacks to install for a colink IO capability (confirmation and authorization are
/// always installed, see [`AgentHub::bluer_agent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Callbacks {
    pub(crate) display: bool,
    pub(crate) keyboard: bool,
}

impl Callbacks {
    pub(crate) fn for_capability(cap: IoCapability) -> Self {
        match cap {
            IoCapability::KeyboardDisplay => Self { display: true, keyboard: true },
            IoCapability::KeyboardOnly => Self { display: false, keyboard: true },
            IoCapability::DisplayOnly | IoCapability::DisplayYesNo => Self { display: true, keyboard: false },
            _ => Self { display: false, keyboard: false },
        }
    }

    /// The capability bluer publishes for these callbacks plus confirmation and authorization (bluer's rule:
    /// keyboard and yes/no → KeyboardDisplay; yes/no without keyboard → DisplayYesNo).
    pub(crate) fn bluez_capability(self) -> &'static str {
        if self.keyboard { "KeyboardDisplay" } else { "DisplayYesNo" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_mapping_respects_authorization_quirk() {
        use IoCapability::*;
        // Never NoInputNoOutput: the authorization callback the quirk requires makes bluer publish DisplayYesNo.
        assert_eq!(Callbacks::for_capability(NoInputNoOutput).bluez_capability(), "DisplayYesNo");
        assert_eq!(Callbacks::for_capability(DisplayOnly).bluez_capability(), "DisplayYesNo");
        assert_eq!(Callbacks::for_capability(DisplayYesNo).bluez_capability(), "DisplayYesNo");
        assert_eq!(Callbacks::for_capability(KeyboardOnly).bluez_capability(), "KeyboardDisplay");
        assert_eq!(Callbacks::for_capability(KeyboardDisplay).bluez_capability(), "KeyboardDisplay");
        assert!(Callbacks::for_capability(DisplayYesNo).display);
        assert!(!Callbacks::for_capability(DisplayYesNo).keyboard);
    }
}
