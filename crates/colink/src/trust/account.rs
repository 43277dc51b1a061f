//! The shared account: a secret that every device of one person (or group) holds, and the join code that carries
//! it from one device to the next.
//!
//! Devices in the same account trust each other without asking (the reference's "logged in with the same
//! account"). Membership is proven inside the link handshake with a key derived from the secret (the Noise
//! pre-shared key, [`Account::psk`]); the secret itself never travels over a link.
//!
//! A join code is the 128-bit secret in Crockford base32 followed by two check characters, grouped by four:
//! `7F3K-Q9ZD-...`. Reading is forgiving where Crockford says so (case, `O` for `0`, `I`/`L` for `1`, dashes and
//! spaces anywhere) and strict everywhere else: a typo makes the check characters disagree.

use std::fmt;

use sha2::{Digest, Sha256};

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters carrying the secret (26 × 5 bits ≥ 128).
const SECRET_CHARS: usize = 26;
/// Check characters after the secret.
const CHECK_CHARS: usize = 2;
/// Characters in a code, dashes excluded.
pub const CODE_CHARS: usize = SECRET_CHARS + CHECK_CHARS;

/// An account's secret. Its `Debug` output hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    secret: [u8; 16],
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account").field("id", &self.id()).finish_non_exhaustive()
    }
}

/// Why a join code was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinCodeError {
    /// Not the right number of characters.
    #[error("a join code has {CODE_CHARS} characters (dashes aside); this one has {0}")]
    Length(usize),
    /// A character outside the code's alphabet.
    #[error("`{0}` cannot appear in a join code (letters and digits except U)")]
    Character(char),
    /// The check characters disagree: a typo somewhere.
    #[error("the join code's check characters do not match: a character was mistyped")]
    Check,
}

/// The secret is overwritten when the account is dropped.
impl Drop for Account {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl Account {
    /// An account with this secret.
    pub const fn from_secret(secret: [u8; 16]) -> Self {
        Self { secret }
    }

    /// A new account with a secret from the operating system's random source.
    pub fn create() -> std::io::Result<Self> {
        Ok(Self { secret: super::random()? })
    }

    /// The secret (for storage).
    pub const fn secret(&self) -> &[u8; 16] {
        &self.secret
    }

    /// The 32-byte key that proves membership in the handshake (Noise `psk`): SHA-256 of a domain string and the
    /// secret, so the code's bytes are never used as a key directly.
    pub fn psk(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"colink account psk v1\0");
        h.update(self.secret);
        h.finalize().into()
    }

    /// A short public name for the account (8 hex digits), safe to show and log: it tells two accounts apart but
    /// reveals nothing of the secret.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"colink account id v1\0");
        h.update(self.secret);
        h.finalize()[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The join code for this account: 28 characters in groups of four.
    pub fn join_code(&self) -> String {
        let mut chars = Vec::with_capacity(CODE_CHARS);
        let value = u128::from_be_bytes(self.secret);
        for i in (0..SECRET_CHARS).rev() {
            let shift = 5 * i;
            let digit = if shift >= 128 { 0 } else { (value >> shift) & 31 };
            chars.push(ALPHABET[digit as usize]);
        }
        let check = check_value(&self.secret);
        chars.push(ALPHABET[usize::from(check >> 5)]);
        chars.push(ALPHABET[usize::from(check & 31)]);
        let groups: Vec<String> = chars.chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        groups.join("-")
    }

    /// Reads a join code as a person typed it.
    pub fn from_join_code(code: &str) -> Result<Self, JoinCodeError> {
        let mut digits = Vec::with_capacity(CODE_CHARS);
        let mut total = 0;
        for c in code.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let value = match c.to_ascii_uppercase() {
                'O' => 0,
                'I' | 'L' => 1,
                u => ALPHABET.iter().position(|&a| char::from(a) == u).ok_or(JoinCodeError::Character(c))?,
            };
            total += 1;
            if digits.len() < CODE_CHARS {
                digits.push(value);
            }
        }
        if total != CODE_CHARS {
            return Err(JoinCodeError::Length(total));
        }
        let mut value: u128 = 0;
        for (i, d) in digits[..SECRET_CHARS].iter().enumerate() {
            // The first character carries only the top 3 bits (26 × 5 = 130).
            if i == 0 && *d > 7 {
                return Err(JoinCodeError::Check);
            }
            value = (value << 5) | *d as u128;
        }
        let secret = value.to_be_bytes();
        let check = check_value(&secret);
        let typed = (digits[SECRET_CHARS] << 5) | digits[SECRET_CHARS + 1];
        if typed != usize::from(check) {
            return Err(JoinCodeError::Check);
        }
        Ok(Self { secret })
    }
}

/// Ten check bits over the secret.
fn check_value(secret: &[u8; 16]) -> u16 {
    let mut h = Sha256::new();
    h.update(b"colink join code check\0");
    h.update(secret);
    let d = h.finalize();
    u16::from_be_bytes([d[0], d[1]]) & 0x3ff
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_code_reads_back_to_its_account() {
        let a = Account::from_secret([0xA5; 16]);
        let code = a.join_code();
        assert_eq!(code.len(), CODE_CHARS + 6, "{code}");
        assert_eq!(code.matches('-').count(), 6);
        assert_eq!(Account::from_join_code(&code), Ok(a.clone()));
        // As typed by a person: lower case, spaces instead of dashes, O for 0 and l for 1.
        let sloppy = code.to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l");
        assert_eq!(Account::from_join_code(&sloppy), Ok(a));
    }

    #[test]
    fn a_mistyped_character_is_caught() {
        let code = Account::from_secret([7; 16]).join_code();
        let mut chars: Vec<char> = code.chars().collect();
        let i = chars.iter().position(|c| *c != '-').unwrap_or(0) + 5;
        chars[i] = if chars[i] == 'X' { 'Y' } else { 'X' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(Account::from_join_code(&typo), Err(JoinCodeError::Check));
    }

    #[test]
    fn wrong_lengths_and_characters_say_what_is_wrong() {
        assert_eq!(Account::from_join_code("ABCD"), Err(JoinCodeError::Length(4)));
        let code = Account::from_secret([1; 16]).join_code();
        assert_eq!(Account::from_join_code(&format!("{code}X")), Err(JoinCodeError::Length(CODE_CHARS + 1)));
        assert_eq!(Account::from_join_code(&code.replacen('-', "U", 1)), Err(JoinCodeError::Character('U')));
        assert_eq!(Account::from_join_code("\u{1b}[31m"), Err(JoinCodeError::Character('\u{1b}')));
    }

    #[test]
    fn psk_and_id_depend_on_the_secret_and_hide_it() {
        let a = Account::from_secret([1; 16]);
        let b = Account::from_secret([2; 16]);
        assert_ne!(a.psk(), b.psk());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 8);
        assert!(!format!("{a:?}").contains(&a.join_code()));
    }

    proptest! {
        #[test]
        fn every_secret_round_trips(secret in any::<[u8; 16]>()) {
            let a = Account::from_secret(secret);
            prop_assert_eq!(Account::from_join_code(&a.join_code()), Ok(a));
        }

        #[test]
        fn any_text_is_read_without_panicking(text in "\\PC{0,64}") {
            let _ = Account::from_join_code(&text);
        }
    }
}
