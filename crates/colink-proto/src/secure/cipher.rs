//! The AEAD that seals what travels on an authenticated transport: ChaCha20-Poly1305 with the Noise nonce layout
//! (32 zero bits, then the 64-bit nonce little-endian), keyed per direction.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use super::{SecureError, blake2s};

/// The AEAD tag's length.
pub const TAG_LEN: usize = 16;

/// Domain separation for the epoch keys (docs/security.md §4).
const EPOCH_DOMAIN: &[u8] = b"colink epoch v1";

/// The two directions' keys of one authenticated transport, oriented for this side (the Noise split: the
/// initiator sends with the first). Kept secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportKeys {
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
}

impl fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportKeys(..)")
    }
}

/// The keys are overwritten when dropped.
impl Drop for TransportKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.send);
        zeroize::Zeroize::zeroize(&mut self.recv);
    }
}

impl TransportKeys {
    /// The transport cipher (CONFIRM and sealed link messages).
    pub fn cipher(&self) -> LinkCipher {
        LinkCipher::new(&self.send, &self.recv)
    }

    /// The epoch cipher derived from these keys (lane messages of a connection): per direction,
    /// BLAKE2s-256(`"colink epoch v1"` ‖ transport key).
    pub(crate) fn epoch(&self) -> LinkCipher {
        LinkCipher::new(&blake2s(&[EPOCH_DOMAIN, &self.send]), &blake2s(&[EPOCH_DOMAIN, &self.recv]))
    }
}

/// A pair of per-direction ChaCha20-Poly1305 keys, used with explicit nonces.
#[derive(Clone)]
pub struct LinkCipher {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
}

impl fmt::Debug for LinkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkCipher(..)")
    }
}

impl LinkCipher {
    fn new(send: &[u8; 32], recv: &[u8; 32]) -> Self {
        Self { send: ChaCha20Poly1305::new(Key::from_slice(send)), recv: ChaCha20Poly1305::new(Key::from_slice(recv)) }
    }

    /// Seals `plaintext` with this side's sending key, `nonce` (never reuse one with different content) and
    /// associated data `aad`: ciphertext ‖ 16-byte tag.
    pub fn seal(&self, nonce: u64, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SecureError> {
        self.send.encrypt(&nonce_of(nonce), Payload { msg: plaintext, aad }).map_err(|_| SecureError::Crypto)
    }

    /// Opens what the peer sealed with `nonce` and `aad`; [`SecureError::Crypto`] if anything was altered.
    pub fn open(&self, nonce: u64, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecureError> {
        if sealed.len() < TAG_LEN {
            return Err(SecureError::Crypto);
        }
        self.recv.decrypt(&nonce_of(nonce), Payload { msg: sealed, aad }).map_err(|_| SecureError::Crypto)
    }
}

fn nonce_of(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    *Nonce::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_the_same_nonce_and_data() {
        let a = TransportKeys { send: [1; 32], recv: [2; 32] };
        let b = TransportKeys { send: [2; 32], recv: [1; 32] };
        let sealed = a.cipher().seal(9, b"k", b"payload").unwrap();
        assert_eq!(sealed.len(), 7 + TAG_LEN);
        assert_eq!(b.cipher().open(9, b"k", &sealed).unwrap(), b"payload");
        assert!(b.cipher().open(10, b"k", &sealed).is_err());
        assert!(b.cipher().open(9, b"j", &sealed).is_err());
        assert!(a.cipher().open(9, b"k", &sealed).is_err(), "a direction's key does not open the other's");
        // Epoch keys differ from the transport keys but agree between the sides.
        let e = a.epoch().seal(1, b"", b"x").unwrap();
        assert_eq!(b.epoch().open(1, b"", &e).unwrap(), b"x");
        assert!(b.cipher().open(1, b"", &e).is_err());
    }
}
