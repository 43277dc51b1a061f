//! The trust decision over the stored state: account members are admitted (and remembered), pinned keys are
//! admitted, a known device id with another key is refused loudly, strangers are refused or asked about.

use std::sync::{Arc, Mutex};

use colink_ble::DeviceId;
use colink_proto::secure::{PeerIdentity, Proof, RefuseReason, TrustPolicy, Verdict, device_id_bytes};

use super::store::{Pinned, TrustKind, TrustStore};
use super::unix_now;
use crate::lock;

/// What happens to a device that is neither in the account nor pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strangers {
    /// Refused during the handshake (the default: nobody gets in uninvited).
    #[default]
    Refuse,
    /// A person is asked: both devices show the same six-digit code (a trust request), both must confirm; the
    /// key is then pinned.
    Ask,
}

/// A [`TrustPolicy`] over a [`TrustStore`] shared with the application (which lists and removes devices).
#[derive(Debug, Clone)]
pub struct StorePolicy {
    store: Arc<Mutex<TrustStore>>,
    strangers: Strangers,
}

impl StorePolicy {
    /// Decides over `store`, treating strangers as `strangers` says; a store that lives in a file gets every
    /// change written back at once.
    pub fn new(store: Arc<Mutex<TrustStore>>, strangers: Strangers) -> Self {
        Self { store, strangers }
    }

    fn save(&self, store: &TrustStore) {
        if let Err(e) = store.save_if_stored() {
            tracing::warn!(error = %e, "could not save the trust store");
        }
    }
}

/// The [`DeviceId`] of a proven peer.
pub fn device_of(peer: &PeerIdentity) -> DeviceId {
    DeviceId::from_bytes(device_id_bytes(&peer.public_key))
}

impl TrustPolicy for StorePolicy {
    fn judge(&mut self, peer: &PeerIdentity, proof: Proof) -> Verdict {
        let id = device_of(peer);
        let mut store = lock(&self.store);
        match store.check(&id, &peer.public_key) {
            Pinned::Changed => {
                tracing::warn!(
                    device = %id,
                    "REFUSED: this device id is trusted with a different key — an impostor, or the device was \
                     reinstalled (if so: colink trust remove {id}, then pair again)"
                );
                Verdict::Refused(RefuseReason::UnknownDevice)
            }
            Pinned::Same(_) if proof != Proof::Account => {
                store.touch(&id, unix_now(), None);
                self.save(&store);
                Verdict::Trusted
            }
            _ if proof == Proof::Account => {
                if let Err(e) = store.pin(id, peer.public_key, TrustKind::Account, unix_now()) {
                    tracing::warn!(device = %id, error = %e, "account member not remembered");
                }
                self.save(&store);
                Verdict::Trusted
            }
            _ => match self.strangers {
                Strangers::Refuse => {
                    tracing::info!(device = %id, "refused an unknown device (not in the account, never paired)");
                    Verdict::Refused(RefuseReason::UnknownDevice)
                }
                Strangers::Ask => Verdict::Ask,
            },
        }
    }

    fn approved(&mut self, peer: &PeerIdentity) {
        let id = device_of(peer);
        let mut store = lock(&self.store);
        match store.pin(id, peer.public_key, TrustKind::Paired, unix_now()) {
            Ok(()) => tracing::info!(device = %id, "paired: key pinned"),
            Err(e) => tracing::warn!(device = %id, error = %e, "paired, but the key was not pinned"),
        }
        self.save(&store);
    }
}

#[cfg(test)]
mod tests {
    use colink_proto::secure::Keypair;

    use super::*;

    fn policy(strangers: Strangers) -> (StorePolicy, Arc<Mutex<TrustStore>>) {
        let store = Arc::new(Mutex::new(TrustStore::in_memory()));
        (StorePolicy::new(store.clone(), strangers), store)
    }

    fn peer(seed: u8) -> PeerIdentity {
        PeerIdentity::of(Keypair::from_secret([seed; 32]).public())
    }

    #[test]
    fn account_members_are_admitted_and_remembered() {
        let (mut p, store) = policy(Strangers::Refuse);
        let a = peer(1);
        assert_eq!(p.judge(&a, Proof::Account), Verdict::Trusted);
        assert_eq!(lock(&store).check(&device_of(&a), &a.public_key), Pinned::Same(TrustKind::Account));
        // Remembered: admitted by key alone afterwards (e.g. after this device left the account).
        assert_eq!(p.judge(&a, Proof::KeyOnly), Verdict::Trusted);
    }

    #[test]
    fn strangers_are_refused_by_default_or_asked_about_then_pinned() {
        let (mut p, _) = policy(Strangers::Refuse);
        assert_eq!(p.judge(&peer(2), Proof::KeyOnly), Verdict::Refused(RefuseReason::UnknownDevice));
        let (mut p, store) = policy(Strangers::Ask);
        let b = peer(3);
        assert_eq!(p.judge(&b, Proof::KeyOnly), Verdict::Ask);
        p.approved(&b);
        assert_eq!(lock(&store).check(&device_of(&b), &b.public_key), Pinned::Same(TrustKind::Paired));
        assert_eq!(p.judge(&b, Proof::KeyOnly), Verdict::Trusted);
    }

    #[test]
    fn a_pinned_id_with_another_key_is_refused_even_with_account_proof() {
        let (mut p, store) = policy(Strangers::Ask);
        let a = peer(4);
        let id = device_of(&a);
        // A store entry for a's id with some other key (a hand-edited file, or an id collision).
        lock(&store).pin(id, [9; 32], TrustKind::Paired, 1).unwrap();
        assert_eq!(p.judge(&a, Proof::Account), Verdict::Refused(RefuseReason::UnknownDevice));
        assert_eq!(p.judge(&a, Proof::KeyOnly), Verdict::Refused(RefuseReason::UnknownDevice));
    }
}
