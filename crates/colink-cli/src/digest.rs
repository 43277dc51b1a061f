//! SHA-256 as the CLI prints it: lowercase hex.

use sha2::Digest as _;

/// Hex SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(super::sha256(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(super::hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
