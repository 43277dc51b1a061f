//! [`Security`]: a device's identity, account and trust store, ready to run a [`Manager`](crate::Manager) or a
//! driver [`Node`](crate::driver::Node) with authenticated, encrypted links.

use std::sync::{Arc, Mutex};

use colink_ble::DeviceId;
use colink_proto::secure::{Keypair, SecureConfig, TrustPolicy, device_id_bytes};

use super::policy::{StorePolicy, Strangers};
use super::{Account, StateDir, TrustError, TrustStore};
use crate::driver::SecurityConfig;

/// Who this device is and whom it admits: its identity key, its account (if any), the trust store of pinned
/// devices, and what happens to strangers.
///
/// ```
/// use colink::trust::{Account, Security, Strangers};
/// // Two devices of one person: each its own key, the same account.
/// let account = Account::from_secret([7; 16]);
/// let laptop = Security::ephemeral().unwrap().with_account(Some(account.clone()));
/// let desktop = Security::ephemeral().unwrap().with_account(Some(account)).strangers(Strangers::Ask);
/// assert_ne!(laptop.device_id(), desktop.device_id());
/// ```
#[derive(Debug, Clone)]
pub struct Security {
    keypair: Keypair,
    account: Option<Account>,
    store: Arc<Mutex<TrustStore>>,
    strangers: Strangers,
}

impl Security {
    /// The identity (created on first use), account and trust store kept in `dir`; changes to the trust store
    /// are written back to it. Strangers are refused until [`strangers`](Self::strangers) says otherwise.
    pub fn load(dir: &StateDir) -> Result<Self, TrustError> {
        Ok(Self {
            keypair: Keypair::from_secret(dir.identity_secret()?),
            account: dir.account()?,
            store: Arc::new(Mutex::new(dir.trust_store()?)),
            strangers: Strangers::Refuse,
        })
    }

    /// Like [`load`](Self::load), but with a fresh identity that lives in memory only (a new device every run):
    /// the account and the trust store are still `dir`'s.
    pub fn load_ephemeral(dir: &StateDir) -> Result<Self, TrustError> {
        let secret = super::random().map_err(|e| TrustError::io(dir.path(), e))?;
        Ok(Self {
            keypair: Keypair::from_secret(secret),
            account: dir.account()?,
            store: Arc::new(Mutex::new(dir.trust_store()?)),
            strangers: Strangers::Refuse,
        })
    }

    /// A fresh identity that lives in memory only (a new device every run), with an empty trust store.
    pub fn ephemeral() -> Result<Self, TrustError> {
        let secret = super::random().map_err(|e| TrustError::io(std::path::Path::new("(random source)"), e))?;
        Ok(Self::from_secret(secret))
    }

    /// The identity of `secret` (kept by the caller), in memory, with an empty trust store.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            keypair: Keypair::from_secret(secret),
            account: None,
            store: Arc::new(Mutex::new(TrustStore::in_memory())),
            strangers: Strangers::Refuse,
        }
    }

    /// In `account` (devices holding the same one admit each other without asking), or in none.
    #[must_use]
    pub fn with_account(mut self, account: Option<Account>) -> Self {
        self.account = account;
        self
    }

    /// What happens to devices neither in the account nor pinned (default [`Strangers::Refuse`]).
    #[must_use]
    pub fn strangers(mut self, strangers: Strangers) -> Self {
        self.strangers = strangers;
        self
    }

    /// This device's id, derived from its key.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_bytes(device_id_bytes(&self.keypair.public()))
    }

    /// The account, if any.
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// The trust store, shared with the running node (which pins devices as they are paired).
    pub fn store(&self) -> Arc<Mutex<TrustStore>> {
        self.store.clone()
    }

    /// The driver's settings for this security.
    pub fn to_config(&self) -> SecurityConfig {
        let mut secure = SecureConfig::new(self.keypair.clone());
        secure.account = self.account.as_ref().map(Account::psk);
        secure.accept_pairing = self.strangers == Strangers::Ask;
        let policy: Arc<Mutex<dyn TrustPolicy>> =
            Arc::new(Mutex::new(StorePolicy::new(self.store.clone(), self.strangers)));
        SecurityConfig::new(secure, policy)
    }
}
