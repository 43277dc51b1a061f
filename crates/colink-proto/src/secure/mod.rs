//! Authenticated transports: device identity keys, a Noise handshake run on a fresh transport before any HELLO,
//! and the trust decision that admits (or refuses) the peer it proved.
//!
//! **What it is.** [`SecureHandshake`] is a sans-IO state machine (bytes and `now` in; frames, events and a
//! deadline out) that runs `Noise_XX_25519_ChaChaPoly_BLAKE2s` (*pairing* mode: keys only) or
//! `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` (*account* mode: both sides prove they hold the same 32-byte account
//! secret, which never travels) over handshake-channel CONTROL messages of type `NOISE` (docs/security.md).
//! Each side's static X25519 key is its identity: the device id is derived from it ([`device_id_of`]), so a
//! peer's id is proven by the handshake, never believed from a claim. Once the Noise messages are done each side
//! asks its [`TrustPolicy`]; a policy that answers [`Verdict::Ask`] makes the state machine show a six-digit
//! short authentication string ([`SecureEvent::NeedsApproval`]) and wait for [`SecureHandshake::approve`]. Each
//! side then sends a sealed CONFIRM; the transport is [`Established`] only when both accepted.
//!
//! **What it is not.** It stores no keys and keeps no list of trusted devices (the caller's [`TrustPolicy`]
//! does), draws no randomness of its own (the caller's [`Entropy`] feeds snow's resolver), and
//! does not route the transport: the driver does that with the proven [`PeerIdentity`].

mod cipher;
mod handshake;

use std::fmt;
use std::time::Duration;

use snow::params::{DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Dh, Hash};

use super::config::Entropy;

pub use cipher::{LinkCipher, TAG_LEN, TransportKeys};
pub use handshake::{Established, HandshakeMode, SECURE_INPUT_LIMIT, SecureEvent, SecureHandshake, busy_refusal};

/// The Noise protocol of *pairing* mode (keys only).
pub const NOISE_PAIRING: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The Noise protocol of *account* mode (the account secret is the PSK, mixed in at the third message).
pub const NOISE_ACCOUNT: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// The length of a device's public key (X25519).
pub const PUBLIC_KEY_LEN: usize = 32;
/// The length of an account secret.
pub const ACCOUNT_SECRET_LEN: usize = 32;

/// Domain separation for [`device_id_of`].
const DEVICE_ID_DOMAIN: &[u8] = b"colink device id v1";
/// Domain separation for the short authentication string.
const SAS_DOMAIN: &[u8] = b"colink sas v1";

/// A device's static X25519 key pair: its identity.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    secret: [u8; 32],
    public: [u8; PUBLIC_KEY_LEN],
}

/// The secret is overwritten when the key pair is dropped (docs/security.md §9).
impl Drop for Keypair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl Keypair {
    /// A new key pair with a secret drawn from `entropy`.
    pub fn generate(entropy: &mut dyn Entropy) -> Self {
        let mut secret = [0u8; 32];
        entropy.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// The key pair of a stored secret (as returned by [`secret_bytes`](Self::secret_bytes)).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let mut public = [0u8; PUBLIC_KEY_LEN];
        if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
            dh.set(&secret);
            public.copy_from_slice(&dh.pubkey()[..PUBLIC_KEY_LEN]);
        }
        Self { secret, public }
    }

    /// The public key, which peers see and from which the device id is derived.
    pub fn public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The secret key's bytes, for the caller's key storage (keep them owner-only).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// This key pair's device id ([`device_id_of`] its public key).
    pub fn device_id(&self) -> String {
        device_id_of(&self.public)
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("device_id", &self.device_id()).finish_non_exhaustive()
    }
}

/// The 16 bytes a device id stands for: the first 16 bytes of BLAKE2s-256(`"colink device id v1"` ‖ public key).
pub fn device_id_bytes(public: &[u8; PUBLIC_KEY_LEN]) -> [u8; 16] {
    let digest = blake2s(&[DEVICE_ID_DOMAIN, public]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The device id of a public key: [`device_id_bytes`] as 32 lowercase hex digits.
pub fn device_id_of(public: &[u8; PUBLIC_KEY_LEN]) -> String {
    device_id_bytes(public).iter().map(|b| format!("{b:02x}")).collect()
}

/// The 4-byte short id an advert carries for this key: the first 4 bytes of [`device_id_bytes`], so a dialler
/// can check the key a handshake proved against the advert it dialled.
pub fn short_id_of(public: &[u8; PUBLIC_KEY_LEN]) -> [u8; 4] {
    let id = device_id_bytes(public);
    [id[0], id[1], id[2], id[3]]
}

/// The six-digit short authentication string both sides show for one handshake: the first 4 bytes of
/// BLAKE2s-256(`"colink sas v1"` ‖ handshake hash), big-endian, modulo 1 000 000.
pub fn sas_of(handshake_hash: &[u8]) -> u32 {
    let digest = blake2s(&[SAS_DOMAIN, handshake_hash]);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 1_000_000
}

/// A peer whose key the handshake proved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// Its static public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Its device id, derived from the key ([`device_id_of`]).
    pub device_id: String,
}

impl PeerIdentity {
    /// The identity of `public_key`.
    pub fn of(public_key: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self { public_key, device_id: device_id_of(&public_key) }
    }
}

/// What the handshake proved about the peer beyond its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Proof {
    /// The peer holds the same account secret (account mode; proven once the handshake completes: the
    /// transport keys depend on the secret).
    Account,
    /// Only the key (pairing mode).
    KeyOnly,
}

/// Why a side refuses its peer. Carried on the wire as the CLOSE code (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The peer is not in this device's account (or this device has none).
    NotInAccount,
    /// A person was asked and said no.
    UserRefused,
    /// The peer is an unknown device and the policy admits no strangers.
    UnknownDevice,
    /// This device does not pair with strangers now.
    PairingNotAccepted,
    /// The peer is not the device the dialler meant to reach.
    UnexpectedPeer,
    /// The handshake (or the approval) took too long.
    Timeout,
    /// Over the responder's limits on new transports (sent before any handshake message is read).
    Busy,
}

impl RefuseReason {
    /// The CLOSE code that carries this reason.
    pub const fn close_code(self) -> crate::CloseCode {
        use crate::CloseCode as C;
        match self {
            Self::NotInAccount => C::NotInAccount,
            Self::UserRefused => C::UserRefused,
            Self::UnknownDevice => C::UnknownDevice,
            Self::PairingNotAccepted => C::PairingNotAccepted,
            Self::UnexpectedPeer => C::UnexpectedPeer,
            Self::Timeout => C::HandshakeTimeout,
            Self::Busy => C::Busy,
        }
    }

    pub(crate) const fn from_close_code(code: crate::CloseCode) -> Option<Self> {
        use crate::CloseCode as C;
        Some(match code {
            C::NotInAccount => Self::NotInAccount,
            C::UserRefused => Self::UserRefused,
            C::UnknownDevice => Self::UnknownDevice,
            C::PairingNotAccepted => Self::PairingNotAccepted,
            C::UnexpectedPeer => Self::UnexpectedPeer,
            C::HandshakeTimeout => Self::Timeout,
            C::Busy => Self::Busy,
            _ => return None,
        })
    }
}

/// A [`TrustPolicy`]'s answer about one proven peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Admit it without asking (same account, or a pinned key).
    Trusted,
    /// Refuse it.
    Refused(RefuseReason),
    /// Ask a person: show the short authentication string and wait for [`SecureHandshake::approve`].
    Ask,
}

/// Who a device admits: asked once per handshake, when the peer's key is proven.
pub trait TrustPolicy: Send + fmt::Debug {
    /// The verdict on `peer`, whose key the handshake proved, with what else it proved.
    fn judge(&mut self, peer: &PeerIdentity, proof: Proof) -> Verdict;

    /// Called when a peer this policy answered [`Verdict::Ask`] for was approved on both sides and the
    /// handshake completed: the place to pin its key. Does nothing by default.
    fn approved(&mut self, _peer: &PeerIdentity) {}
}

/// Admits account members, refuses everyone else as [`RefuseReason::UnknownDevice`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountOnly;

impl TrustPolicy for AccountOnly {
    fn judge(&mut self, _peer: &PeerIdentity, proof: Proof) -> Verdict {
        match proof {
            Proof::Account => Verdict::Trusted,
            _ => Verdict::Refused(RefuseReason::UnknownDevice),
        }
    }
}

/// Admits account members and the devices in its list; asks about everyone else (pinning approved ones).
#[derive(Debug, Clone, Default)]
pub struct PinOrAsk {
    /// Device ids admitted without asking.
    pub pinned: std::collections::BTreeSet<String>,
}

impl TrustPolicy for PinOrAsk {
    fn judge(&mut self, peer: &PeerIdentity, proof: Proof) -> Verdict {
        if proof == Proof::Account || self.pinned.contains(&peer.device_id) { Verdict::Trusted } else { Verdict::Ask }
    }

    fn approved(&mut self, peer: &PeerIdentity) {
        self.pinned.insert(peer.device_id.clone());
    }
}

/// This device's side of the secure handshake. Its `Debug` form shows neither secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct SecureConfig {
    /// The device's identity.
    pub keypair: Keypair,
    /// The account secret, if the device is in an account. A responder without one refuses account mode.
    pub account: Option<[u8; ACCOUNT_SECRET_LEN]>,
    /// Whether a responder runs pairing-mode handshakes (strangers then reach its [`TrustPolicy`]); refused with
    /// [`RefuseReason::PairingNotAccepted`] otherwise.
    pub accept_pairing: bool,
    /// How long the Noise messages may take (default 10 s).
    pub handshake_timeout: Duration,
    /// How long a person may take to approve a pairing (default 60 s).
    pub approval_timeout: Duration,
}

impl SecureConfig {
    /// The defaults for `keypair`: no account, pairing refused, 10 s handshake, 60 s approval.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            account: None,
            accept_pairing: false,
            handshake_timeout: Duration::from_secs(10),
            approval_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for SecureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureConfig")
            .field("keypair", &self.keypair)
            .field("account", &self.account.map(|_| "<secret>"))
            .field("accept_pairing", &self.accept_pairing)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("approval_timeout", &self.approval_timeout)
            .finish()
    }
}

/// Why a secure handshake did not establish the transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The two devices are not in the same account (or the peer is in none).
    #[error("the peer is not in the same account")]
    NotInAccount,
    /// Account mode was asked for but this device has no account secret.
    #[error("this device is in no account")]
    NoAccount,
    /// The peer's user refused the pairing.
    #[error("refused by the peer's user")]
    RefusedByPeer,
    /// The peer does not admit unknown devices.
    #[error("the peer refuses unknown devices")]
    UnknownDeviceRefused,
    /// The peer does not pair with strangers now.
    #[error("the peer does not accept pairing")]
    PairingNotAccepted,
    /// This side refused the peer (its policy or its user).
    #[error("refused here: {0:?}")]
    RefusedLocally(RefuseReason),
    /// The proven peer is not the device that was dialled.
    #[error("the peer is device {proven}, not the expected {expected}")]
    UnexpectedPeer {
        /// The device id the dialler meant.
        expected: String,
        /// The device id the handshake proved.
        proven: String,
    },
    /// The peer refused the caller as not the device it expected.
    #[error("the peer did not expect this device")]
    NotExpectedByPeer,
    /// The handshake or the approval took too long.
    #[error("the secure handshake timed out")]
    Timeout,
    /// The peer admits no new transport from this device now (too many new links at once, or backing off after
    /// failed handshakes from this address); a retry after a second or more may succeed.
    #[error("the peer is busy with other new links, or backing off after failed ones from this address")]
    Busy,
    /// A Noise message failed to decrypt or verify (tampering, or a peer that is not what it claims).
    #[error("a handshake message failed to verify")]
    Crypto,
    /// A handshake message is malformed or out of place.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    /// The transport closed (or failed) before the handshake completed.
    #[error("the transport closed during the handshake")]
    TransportClosed,
    /// The peer closed the transport during the handshake with a code this version does not map.
    #[error("the peer closed the transport (code {0})")]
    PeerClosed(u8),
}

/// Whether a Diffie-Hellman between `ours` and `public` yields a non-zero secret. A low-order point yields
/// zero whatever the other secret, so a peer "proving" such a key proves nothing: it is refused.
pub(crate) fn contributory(ours: &Keypair, public: &[u8; PUBLIC_KEY_LEN]) -> bool {
    let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) else { return false };
    dh.set(&ours.secret);
    let mut out = [0u8; 32];
    dh.dh(public, &mut out).is_ok() && out != [0u8; 32]
}

/// BLAKE2s-256 of the concatenated `parts`.
fn blake2s(parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(mut h) = DefaultResolver.resolve_hash(&HashChoice::Blake2s) {
        for p in parts {
            h.input(p);
        }
        h.result(&mut out);
    }
    out
}

/// snow's crypto with randomness drawn beforehand from the caller's [`Entropy`] (snow asks for 32 bytes per
/// ephemeral key; a handshake generates one).
#[derive(Debug)]
struct EntropyResolver {
    pool: [u8; 64],
}

impl EntropyResolver {
    fn new(entropy: &mut dyn Entropy) -> Self {
        let mut pool = [0u8; 64];
        entropy.fill_bytes(&mut pool);
        Self { pool }
    }
}

impl CryptoResolver for EntropyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(PoolRandom { pool: self.pool, used: 0 }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn snow::types::Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A fixed pool of random bytes, handed out once.
struct PoolRandom {
    pool: [u8; 64],
    used: usize,
}

impl snow::types::Random for PoolRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let end = self.used.checked_add(dest.len()).filter(|&e| e <= self.pool.len()).ok_or(snow::Error::Rng)?;
        dest.copy_from_slice(&self.pool[self.used..end]);
        self.used = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededEntropy;

    #[test]
    fn device_ids_are_derived_from_the_key_and_stable() {
        let a = Keypair::generate(&mut SeededEntropy::new(1));
        let b = Keypair::generate(&mut SeededEntropy::new(2));
        assert_ne!(a.public(), b.public());
        assert_eq!(a.device_id().len(), 32);
        assert!(a.device_id().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.device_id(), b.device_id());
        let again = Keypair::from_secret(a.secret_bytes());
        assert_eq!(again, a);
        assert_eq!(again.device_id(), a.device_id());
        let short = short_id_of(&a.public());
        assert_eq!(format!("{:02x}{:02x}{:02x}{:02x}", short[0], short[1], short[2], short[3]), a.device_id()[..8]);
    }

    #[test]
    fn low_order_keys_are_not_contributory() {
        let a = Keypair::generate(&mut SeededEntropy::new(1));
        let b = Keypair::generate(&mut SeededEntropy::new(2));
        assert!(contributory(&a, &b.public()));
        let mut one = [0u8; 32];
        one[0] = 1;
        for low in [[0u8; 32], one] {
            assert!(!contributory(&a, &low));
        }
    }

    #[test]
    fn sas_is_six_digits_and_depends_on_the_hash() {
        let s1 = sas_of(&[1u8; 32]);
        let s2 = sas_of(&[2u8; 32]);
        assert!(s1 < 1_000_000 && s2 < 1_000_000);
        assert_ne!(s1, s2);
        assert_eq!(s1, sas_of(&[1u8; 32]));
    }

    #[test]
    fn the_debug_forms_hide_the_secrets() {
        let a = Keypair::from_secret([7u8; 32]);
        let shown = format!("{a:?}");
        assert!(shown.contains(&a.device_id()));
        assert!(!shown.contains("secret"));
        let mut c = SecureConfig::new(a);
        c.account = Some([0xAB; 32]);
        let shown = format!("{c:?}");
        assert!(shown.contains("<secret>") && !shown.contains("171"), "{shown}");
    }
}
