//! Where the two ends of each test run: two adapters of this host, or one end here and one on a peer host.
//! Everything a test needs is checked here and turned into a skip naming what was missing.

use std::future::Future;
use std::sync::Arc;

use bluer::agent::AgentHandle;
use bluer::{Adapter, Address, Session};
use tokio::sync::Mutex;

use crate::bt::{AgentLog, register_agent};
use crate::cli::{Role, Setup};
use crate::harness::{OrFail, Stop, TestResult};

/// The connection to bluetoothd and the chosen set-up.
pub(crate) struct Rig {
    setup: Setup,
    session: Result<Session, String>,
    agent: Mutex<Option<AgentHandle>>,
    pub(crate) agent_log: Arc<AgentLog>,
}

/// A test's view of one end.
pub(crate) struct End {
    pub(crate) adapter: Adapter,
    /// The other end's adapter address, when known (always for the initiator).
    pub(crate) peer: Option<Address>,
}

impl Rig {
    pub(crate) async fn new(setup: Setup) -> Self {
        let session = Session::new().await.map_err(|e| e.to_string());
        Self { setup, session, agent: Mutex::new(None), agent_log: Arc::default() }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.setup {
            Setup::OneHost { responder, initiator } => {
                format!("one host: responder {responder}, initiator {initiator}")
            }
            Setup::TwoHost { role, adapter, peer } => format!(
                "two hosts: this host is the {role} on {}, peer {}",
                adapter.as_deref().unwrap_or("the default adapter"),
                peer.map_or_else(|| "any".to_string(), |p| p.to_string())
            ),
        }
    }

    pub(crate) fn session(&self) -> Result<&Session, Stop> {
        self.session.as_ref().map_err(|e| {
            Stop::Skip(format!("needs bluetoothd (org.bluez) on the system D-Bus; connecting failed: {e}"))
        })
    }

    /// The adapter `name` (or the default one), powered on.
    async fn adapter(&self, name: Option<&str>, needed_by: &str) -> Result<Adapter, Stop> {
        let session = self.session()?;
        let names = session.adapter_names().await.map_err(|e| {
            Stop::Skip(format!("needs bluetoothd (org.bluez) on the system D-Bus; listing adapters failed: {e}"))
        })?;
        let want = match name {
            Some(n) => n.to_string(),
            None => match names.first() {
                Some(n) => n.clone(),
                None => return Err(Stop::Skip(format!("needs a BlueZ adapter for the {needed_by}; found none"))),
            },
        };
        if !names.contains(&want) {
            return Err(Stop::Skip(format!(
                "needs BlueZ adapter {want} for the {needed_by}; found [{}]",
                names.join(", ")
            )));
        }
        let adapter = session.adapter(&want).or_fail(&format!("open adapter {want}"))?;
        if !adapter.is_powered().await.or_fail(&format!("{want} powered?"))? {
            adapter.set_powered(true).await.or_fail(&format!("power on {want}"))?;
        }
        Ok(adapter)
    }

    /// Registers the suite's pairing agent once per process (one agent serves every adapter).
    pub(crate) async fn ensure_agent(&self) -> TestResult {
        let mut agent = self.agent.lock().await;
        if agent.is_none() {
            *agent = Some(register_agent(self.session()?, self.agent_log.clone()).await?);
        }
        Ok(())
    }

    /// Unregisters the suite's pairing agent (the next [`ensure_agent`](Self::ensure_agent) registers it again), so
    /// that the host has no default agent, as a machine without a desktop agent. bluer unregisters in the
    /// background: this waits until bluetoothd had time to take it in.
    pub(crate) async fn release_agent(&self) {
        if self.agent.lock().await.take().is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Both adapters this process drives (for tests about adapters themselves).
    pub(crate) async fn local_adapters(&self) -> Result<Vec<Adapter>, Stop> {
        match &self.setup {
            Setup::OneHost { responder, initiator } => Ok(vec![
                self.adapter(Some(responder), "responder").await?,
                self.adapter(Some(initiator), "initiator").await?,
            ]),
            Setup::TwoHost { role, adapter, .. } => {
                Ok(vec![self.adapter(adapter.as_deref(), &role.to_string()).await?])
            }
        }
    }

    /// Runs the two halves of a test: both here (one host, concurrently) or the one of this host's role.
    pub(crate) async fn run_ends<R, I>(
        &self,
        responder: impl FnOnce(End) -> R,
        initiator: impl FnOnce(End) -> I,
    ) -> TestResult
    where
        R: Future<Output = TestResult>,
        I: Future<Output = TestResult>,
    {
        match &self.setup {
            Setup::OneHost { responder: rn, initiator: iname } => {
                let ra = self.adapter(Some(rn), "responder").await?;
                let ia = self.adapter(Some(iname), "initiator").await?;
                let (raddr, iaddr) = (ra.address().await.or_fail("address")?, ia.address().await.or_fail("address")?);
                let r = responder(End { adapter: ra, peer: Some(iaddr) });
                let i = initiator(End { adapter: ia, peer: Some(raddr) });
                // The first failure cancels the other half.
                tokio::try_join!(r, i).map(|_| ())
            }
            Setup::TwoHost { role: Role::Responder, adapter, peer } => {
                let a = self.adapter(adapter.as_deref(), "responder").await?;
                responder(End { adapter: a, peer: *peer }).await
            }
            Setup::TwoHost { role: Role::Initiator, adapter, peer } => {
                let a = self.adapter(adapter.as_deref(), "initiator").await?;
                let Some(peer) = peer else {
                    return Err(Stop::Skip("the initiator needs --peer ADDR".into()));
                };
                initiator(End { adapter: a, peer: Some(*peer) }).await
            }
        }
    }
}
