//! Routing accepted transports: authenticated ones to the connection of the device they proved, plain ones to
//! the device their HELLO names.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use colink_ble::Link;
use colink_proto::secure::SecureHandshake;
use colink_proto::{Identify, Role};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::{Command, Proven, now};
use super::{Node, SecurityConfig, frame_mode, secure};
use crate::lock;

/// Where an accepted transport goes: the device, what was already read from it, and its proof if any.
type Route = (String, Vec<Bytes>, Option<Box<Proven>>);

impl Node {
    /// Authenticates a fresh transport (with security on) and hands it to the responder link of the device it
    /// proved to be; without security, reads its HELLO and routes it by the device id claimed there.
    pub(super) async fn identify_and_route(self, link: Arc<dyn Link>) {
        let routed = match &self.shared.config.security {
            Some(security) => self.authenticate(&link, security).await,
            None => self.identify(&link).await,
        };
        let Some((device, replay, secure)) = routed else {
            link.close().await;
            return;
        };
        let existing = {
            let table = lock(&self.shared.table);
            table
                .by_key
                .get(&(device.clone(), Role::Responder))
                .and_then(|id| table.links.get(id))
                .map(|(_, _, tx)| tx.clone())
        };
        match existing {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Command::Attach { link, .. })) =
                    tx.send(Command::Attach { link, replay, secure }).await
                {
                    link.close().await;
                }
            }
            None => {
                self.spawn_link(device, Role::Responder, link, replay, secure);
            }
        }
    }

    /// Runs the responder's secure handshake, within the limits on unauthenticated transports.
    async fn authenticate(&self, link: &Arc<dyn Link>, security: &SecurityConfig) -> Option<Route> {
        let peer = link.peer().address;
        let admitted = lock(&self.shared.gate).admit(peer, security);
        let ticket = match admitted {
            Ok(ticket) => ticket,
            Err(why) => {
                debug!(%peer, why, "refusing an unauthenticated transport");
                // Say so (a CLOSE "busy" in clear, before any handshake state exists), so that the dialler knows
                // to retry later rather than guess at a dropped link; spend at most BUSY_LINGER on it.
                let _ = tokio::time::timeout(secure::BUSY_LINGER, async {
                    for frame in colink_proto::secure::busy_refusal(secure::transport_of(link)) {
                        if link.send(frame).await.is_err() {
                            return;
                        }
                    }
                    let _ = link.drain_to(0).await;
                })
                .await;
                return None;
            }
        };
        let salt = self.shared.handshakes.fetch_add(1, Ordering::Relaxed) | (1 << 63);
        let handshake = SecureHandshake::responder(
            now(),
            security.secure.clone(),
            secure::transport_of(link),
            &mut *self.entropy(salt),
        );
        let result = secure::run(link, handshake, &security.policy, Some(&self.shared.trust_tx), true).await;
        lock(&self.shared.gate).finish(ticket, result.is_ok(), security);
        match result {
            Ok(done) => {
                debug!(device = %done.peer.device_id, proof = ?done.proof, "incoming transport authenticated");
                let replay = secure::leftover(&done);
                let device = done.peer.device_id.clone();
                Some((device, replay, Some(Box::new(Proven { peer: done.peer, keys: done.keys }))))
            }
            Err(error) => {
                info!(%peer, %error, "incoming transport refused");
                None
            }
        }
    }

    /// Reads a plain transport's HELLO: the device id it claims, and what was read.
    async fn identify(&self, link: &Arc<dyn Link>) -> Option<Route> {
        let mut identify = Identify::new(frame_mode(link.mode()));
        let mut replay = Vec::new();
        let deadline = self.shared.config.engine.handshake_timeout;
        let caller = tokio::time::timeout(deadline, async {
            loop {
                let data = link.recv().await.ok()?;
                let found = identify.push(now(), &data);
                replay.push(data);
                match found {
                    Ok(Some(caller)) => return Some(caller),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "dropping a transport that did not identify itself");
                        return None;
                    }
                }
            }
        })
        .await
        .ok()??;
        debug!(device = %caller.device_id, resuming = caller.resuming, "incoming transport identified");
        Some((caller.device_id, replay, None))
    }
}
