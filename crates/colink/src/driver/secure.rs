//! Authenticating transports before they reach a connection: the node's security settings, trust requests for
//! a person to answer, the async loop around [`SecureHandshake`], and the limits on unauthenticated transports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use colink_ble::{Address, Link};
use colink_frame::Mtu;
use colink_proto::secure::{
    Established, PeerIdentity, SecureConfig, SecureError, SecureEvent, SecureHandshake, TrustPolicy,
};
use colink_proto::{ConnectErrorCode, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::link::now;

/// How a node authenticates its links. With it, every transport runs a Noise handshake before any HELLO, the
/// node's device id is derived from [`SecureConfig::keypair`], and transports are routed by the identity they
/// proved (docs/security.md).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// The device key, account secret, whether strangers may pair, and the handshake's time limits.
    pub secure: SecureConfig,
    /// Who is admitted; consulted once per handshake, after the peer's key is proven.
    pub policy: Arc<Mutex<dyn TrustPolicy>>,
    /// The most accepted transports that may be in their handshake at once (default 4); more are closed at once.
    pub max_unauthenticated: usize,
    /// The most of those from one peer address (default 1).
    pub max_unauthenticated_per_peer: usize,
    /// How long an address whose handshake failed is refused, doubling per failure up to 64 times this
    /// (default 1 s).
    pub failure_backoff: Duration,
}

impl SecurityConfig {
    /// `secure` with `policy` and the default limits.
    pub fn new(secure: SecureConfig, policy: Arc<Mutex<dyn TrustPolicy>>) -> Self {
        Self {
            secure,
            policy,
            max_unauthenticated: 4,
            max_unauthenticated_per_peer: 1,
            failure_backoff: Duration::from_secs(1),
        }
    }
}

/// A pairing that needs a person's answer: show [`sas`](Self::sas) as six digits (zero-padded) with the peer,
/// ask whether the other device shows the same number, then [`approve`](Self::approve) or
/// [`refuse`](Self::refuse). Dropping it refuses; unanswered, it times out
/// ([`SecureConfig::approval_timeout`]).
#[derive(Debug)]
pub struct TrustRequest {
    /// The peer whose key the handshake proved.
    pub peer: PeerIdentity,
    /// The short authentication string both devices show, `0..1_000_000`.
    pub sas: u32,
    /// Whether the peer dialled this node (else this node dialled to pair).
    pub incoming: bool,
    answer: oneshot::Sender<bool>,
}

impl TrustRequest {
    /// The code as shown to people: six digits.
    pub fn code(&self) -> String {
        format!("{:06}", self.sas)
    }

    /// Confirms the pairing on this side.
    pub fn approve(self) {
        let _ = self.answer.send(true);
    }

    /// Refuses the pairing.
    pub fn refuse(self) {
        let _ = self.answer.send(false);
    }
}

/// The node's trust requests, in order ([`Node::trust_requests`](super::Node::trust_requests)).
#[derive(Debug)]
pub struct TrustRequests(pub(super) mpsc::UnboundedReceiver<TrustRequest>);

impl TrustRequests {
    /// The next request, or `None` once the node is gone.
    pub async fn recv(&mut self) -> Option<TrustRequest> {
        self.0.recv().await
    }
}

/// Why a secured dial failed, as the reference's connect code (it has none for trust: the typed reason is in
/// [`ConnectFailure::trust`](super::ConnectFailure::trust)).
pub(super) fn connect_code(_error: &SecureError) -> ConnectErrorCode {
    ConnectErrorCode::SystemInternalError
}

/// The longest a responder spends telling a transport over its limits that it is busy (the refusal must stay
/// cheap: it is what an attacker opening links gets).
pub(super) const BUSY_LINGER: Duration = Duration::from_millis(500);

/// How long a dialler told "busy" waits before it dials again: past the responder's first back-off
/// ([`SecurityConfig::failure_backoff`], 1 s by default).
pub(super) const BUSY_RETRY_AFTER: Duration = Duration::from_millis(1500);

/// How often a dialler told "busy" dials again within one connect.
pub(super) const BUSY_RETRIES: usize = 2;

/// How long a side that refused waits for the peer to read its CLOSE and hang up.
const LINGER: Duration = Duration::from_secs(2);

/// Locks the shared policy.
fn policy_of<'a>(policy: &'a Mutex<dyn TrustPolicy + 'static>) -> std::sync::MutexGuard<'a, dyn TrustPolicy + 'static> {
    policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `handshake` over `link` to its end: frames out, data in, approvals asked through `requests`.
/// On failure the handshake's last words (a CLOSE) are sent; closing the link is the caller's business.
pub(super) async fn run(
    link: &Arc<dyn Link>,
    mut handshake: SecureHandshake,
    policy: &Arc<Mutex<dyn TrustPolicy>>,
    requests: Option<&mpsc::UnboundedSender<TrustRequest>>,
    incoming: bool,
) -> Result<Established, SecureError> {
    let mut pending: Option<oneshot::Receiver<bool>> = None;
    loop {
        while let Some(frame) = handshake.poll_transmit() {
            if link.send(frame).await.is_err() {
                return Err(SecureError::TransportClosed);
            }
        }
        while let Some(event) = handshake.poll_event() {
            match event {
                SecureEvent::Established(done) => return Ok(*done),
                SecureEvent::Failed(error) => {
                    let mut goodbye = false;
                    while let Some(frame) = handshake.poll_transmit() {
                        goodbye |= link.send(frame).await.is_ok();
                    }
                    if goodbye {
                        // Let the goodbye (a CLOSE saying why) reach the peer before the caller closes the link:
                        // a kernel discards what is still queued on a socket that closes (seen in the VM rig: the
                        // peer then heard only "transport closed"). The peer closes its end once it has read the
                        // CLOSE; wait for that, or at most LINGER.
                        let _ = link.drain_to(0).await;
                        let _ = tokio::time::timeout(LINGER, async { while link.recv().await.is_ok() {} }).await;
                    }
                    return Err(error);
                }
                SecureEvent::NeedsApproval { peer, sas } => {
                    let (answer, rx) = oneshot::channel();
                    let asked = requests.is_some_and(|r| r.send(TrustRequest { peer, sas, incoming, answer }).is_ok());
                    if asked {
                        pending = Some(rx);
                    } else {
                        // Nobody can answer: refuse rather than keep the peer waiting.
                        handshake.approve(now(), false, &mut *policy_of(policy));
                    }
                }
                _ => {}
            }
        }
        if handshake.poll_event().is_some() {
            continue;
        }
        let deadline = handshake.poll_timeout().map(Instant::from_std);
        tokio::select! {
            data = link.recv() => match data {
                Ok(data) => handshake.handle_input(now(), &data, &mut *policy_of(policy)),
                Err(_) => return Err(SecureError::TransportClosed),
            },
            answer = async {
                match pending.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                pending = None;
                handshake.approve(now(), answer.unwrap_or(false), &mut *policy_of(policy));
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => handshake.handle_timeout(now()),
        }
    }
}

/// The transport parameters of `link` as the handshake frames them.
pub(super) fn transport_of(link: &Arc<dyn Link>) -> Transport {
    Transport { mode: super::frame_mode(link.mode()), mtu: Mtu::new(link.mtu().bytes()).unwrap_or(Mtu::MIN) }
}

/// Limits on accepted transports that have not yet proven who they are.
#[derive(Debug, Default)]
pub(super) struct Gate {
    in_flight: usize,
    per_peer: BTreeMap<Address, usize>,
    /// Addresses refused until an instant, with their failure count.
    backoff: BTreeMap<Address, (u32, Instant)>,
}

/// Admission of one unauthenticated transport; [`Gate::finish`] must be called with the outcome.
#[derive(Debug)]
pub(super) struct Ticket(Address);

impl Gate {
    /// Admits a transport from `peer`, or says why not.
    pub(super) fn admit(&mut self, peer: Address, config: &SecurityConfig) -> Result<Ticket, &'static str> {
        let now = Instant::now();
        if let Some((_, until)) = self.backoff.get(&peer)
            && *until > now
        {
            return Err("the address is backing off after failed handshakes");
        }
        if self.in_flight >= config.max_unauthenticated {
            return Err("too many unauthenticated transports");
        }
        let count = self.per_peer.entry(peer).or_default();
        if *count >= config.max_unauthenticated_per_peer {
            return Err("too many unauthenticated transports from this address");
        }
        *count += 1;
        self.in_flight += 1;
        Ok(Ticket(peer))
    }

    /// Ends `ticket`'s admission: a failed handshake backs its address off, a success forgets its failures.
    pub(super) fn finish(&mut self, ticket: Ticket, ok: bool, config: &SecurityConfig) {
        let peer = ticket.0;
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(count) = self.per_peer.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
        if ok {
            self.backoff.remove(&peer);
            return;
        }
        let failures = self.backoff.get(&peer).map_or(0, |(n, _)| *n).saturating_add(1);
        let factor = 1u32 << (failures - 1).min(6);
        self.backoff.insert(peer, (failures, Instant::now() + config.failure_backoff * factor));
        // Keep the table bounded: forget expired entries.
        let now = Instant::now();
        self.backoff.retain(|_, (_, until)| *until > now);
    }
}

/// Bytes the handshake read past its end, as a replay list for the connection.
pub(super) fn leftover(done: &Established) -> Vec<Bytes> {
    if done.leftover.is_empty() { Vec::new() } else { vec![done.leftover.clone()] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colink_proto::secure::{AccountOnly, Keypair};

    fn config() -> SecurityConfig {
        SecurityConfig::new(SecureConfig::new(Keypair::from_secret([1; 32])), Arc::new(Mutex::new(AccountOnly)))
    }

    fn addr(n: u8) -> Address {
        Address::new([n, 0, 0, 0, 0, 1])
    }

    #[tokio::test(start_paused = true)]
    async fn unauthenticated_transports_are_capped_per_adapter_and_per_address() {
        let config = config();
        let mut gate = Gate::default();
        let tickets: Vec<_> = (1..=4).map(|n| gate.admit(addr(n), &config).unwrap()).collect();
        assert!(gate.admit(addr(5), &config).is_err(), "a fifth one waits for a slot");
        let mut tickets = tickets.into_iter();
        gate.finish(tickets.next().unwrap(), true, &config);
        assert!(gate.admit(addr(2), &config).is_err(), "one per address");
        let t5 = gate.admit(addr(5), &config).unwrap();
        for t in tickets.chain([t5]) {
            gate.finish(t, true, &config);
        }
        assert!(gate.admit(addr(2), &config).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_keeps_failing_backs_off_longer_each_time() {
        let config = config();
        let mut gate = Gate::default();
        let mut waited = Vec::new();
        let mut ticket = gate.admit(addr(9), &config).unwrap();
        for _ in 0..4 {
            gate.finish(ticket, false, &config);
            let started = Instant::now();
            ticket = loop {
                match gate.admit(addr(9), &config) {
                    Ok(t) => break t,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            waited.push(started.elapsed());
        }
        assert!(waited.windows(2).all(|w| w[1] > w[0]), "{waited:?}");
        assert!(waited[0] >= Duration::from_secs(1) && waited[3] >= Duration::from_secs(8), "{waited:?}");
        // Other addresses are not affected.
        assert!(gate.admit(addr(10), &config).is_ok());
    }
}
