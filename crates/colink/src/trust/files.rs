//! Owner-only files: the state directory is `0700`, key and trust files `0600`, written whole to a temporary
//! file and renamed over the old one so a crash never leaves half a key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::TrustError;

/// The largest key or trust file read (a trust file of 4096 peers is far smaller).
pub(super) const MAX_FILE: u64 = 1 << 20;

/// Creates `dir` (and its parents) if needed and makes sure only its owner can enter it.
pub(super) fn owner_only_dir(dir: &Path) -> Result<(), TrustError> {
    let io = |e| TrustError::io(dir, e);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let meta = fs::metadata(dir).map_err(io)?;
        // A directory someone else owns is not ours to tighten or trust.
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(TrustError::Insecure { path: dir.to_path_buf(), why: "belongs to another user".into() });
        }
        if meta.mode() & 0o077 != 0 {
            tracing::info!(dir = %dir.display(), "restricting the state directory to its owner (0700)");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir).map_err(io)?;
    Ok(())
}

/// Reads `path` if it exists: `None` when it does not. Refuses a file others may read or write, and one larger
/// than [`MAX_FILE`].
pub(super) fn read_private(path: &Path) -> Result<Option<Vec<u8>>, TrustError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrustError::io(path, e)),
    };
    if !meta.file_type().is_file() {
        return Err(TrustError::Insecure { path: path.to_path_buf(), why: "is not a regular file".into() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TrustError::Insecure {
                path: path.to_path_buf(),
                why: format!("may be read or written by others (mode {:o}); run chmod 600 on it", mode & 0o777),
            });
        }
    }
    if meta.len() > MAX_FILE {
        return Err(TrustError::Corrupt { path: path.to_path_buf(), why: format!("is larger than {MAX_FILE} bytes") });
    }
    fs::read(path).map(Some).map_err(|e| TrustError::io(path, e))
}

/// Writes `bytes` to `path` owner-only: a fresh temporary file beside it, synced, then renamed over it.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(TrustError::io(path, e));
    }
    Ok(())
}

/// Removes `path`; a file that is already gone is fine.
pub(super) fn remove(path: &Path) -> Result<(), TrustError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(TrustError::io(path, e)),
        _ => Ok(()),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// A key file's text: a header line naming what it holds, then the bytes in hex.
pub(super) fn encode_key(what: &str, key: &[u8]) -> Vec<u8> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("colink {what} v1\n{hex}\n").into_bytes()
}

/// Reads [`encode_key`]'s text back, `N` bytes.
pub(super) fn decode_key<const N: usize>(path: &Path, what: &str, text: &[u8]) -> Result<[u8; N], TrustError> {
    let corrupt = |why: &str| TrustError::Corrupt { path: path.to_path_buf(), why: why.into() };
    let text = std::str::from_utf8(text).map_err(|_| corrupt("is not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(&format!("colink {what} v1")) {
        return Err(corrupt(&format!("does not start with `colink {what} v1`")));
    }
    let hex = lines.next().unwrap_or_default().trim();
    parse_hex(hex).ok_or_else(|| corrupt(&format!("does not hold {N} bytes in hex")))
}

/// `N` bytes from exactly `2N` hex digits.
pub(super) fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_owner_only_and_others_readable_ones_are_refused() {
        let dir = tempdir();
        let state = dir.join("state");
        owner_only_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        let key = state.join("identity.key");
        write_private(&key, &encode_key("identity key", &[9; 32])).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let text = read_private(&key).unwrap().unwrap();
        assert_eq!(decode_key::<32>(&key, "identity key", &text).unwrap(), [9; 32]);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&key).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(read_private(&state.join("absent")).unwrap().is_none());
        // A widened directory is tightened again.
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
        owner_only_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_a_key_is_refused() {
        let dir = tempdir();
        owner_only_dir(&dir).unwrap();
        let target = dir.join("elsewhere");
        write_private(&target, b"x").unwrap();
        let link = dir.join("identity.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(read_private(&link), Err(TrustError::Insecure { .. })));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn key_text_is_checked() {
        let p = Path::new("k");
        assert!(decode_key::<4>(p, "identity key", b"colink identity key v1\n0102030g\n").is_err());
        assert!(decode_key::<4>(p, "identity key", b"colink account key v1\n01020304\n").is_err());
        assert_eq!(decode_key::<4>(p, "identity key", b"colink identity key v1\n01020304\n").unwrap(), [1, 2, 3, 4]);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "colink-trust-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
