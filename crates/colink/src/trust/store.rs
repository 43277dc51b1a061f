//! Known devices: who is trusted, by which key, since when, under which name.
//!
//! Stored as JSON (`peers.json`, owner-only) in the state directory. A device enters when it proves account
//! membership or when a person confirms its pairing code; from then on its key is *pinned*: the same device id
//! with another key is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use colink_ble::DeviceId;
use serde::{Deserialize, Serialize};

use super::TrustError;
use super::files::{self, hex, parse_hex};

/// Most devices a trust file holds; pinning one more is refused.
pub const MAX_PEERS: usize = 4096;
/// Longest stored device name, in bytes (a Bluetooth device name's limit).
pub const MAX_NAME: usize = 248;

/// How a device came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrustKind {
    /// It proved membership in this device's account.
    Account,
    /// A person confirmed the pairing code on both devices.
    Paired,
}

/// One known device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnownPeer {
    /// Its device id (derived from its key).
    pub device_id: DeviceId,
    /// Its pinned static public key.
    pub public_key: [u8; 32],
    /// The name it goes by, as last heard (a peer string: escape before printing).
    pub name: Option<String>,
    /// How it came to be trusted.
    pub trust: TrustKind,
    /// When it was first trusted (seconds since the Unix epoch).
    pub added: u64,
    /// When a link to it was last authenticated (seconds since the Unix epoch).
    pub last_seen: u64,
}

#[derive(Serialize, Deserialize)]
struct FileV1 {
    version: u32,
    peers: Vec<PeerV1>,
}

#[derive(Serialize, Deserialize)]
struct PeerV1 {
    device_id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    trust: TrustKind,
    added: u64,
    last_seen: u64,
}

/// What [`TrustStore::check`] found for a presented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pinned {
    /// Known, with this key.
    Same(TrustKind),
    /// The device id is known with a different key: an impostor or a re-installed device.
    Changed,
    /// Never seen.
    Unknown,
}

/// The set of known devices, loaded from and saved to one file.
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
    peers: BTreeMap<DeviceId, KnownPeer>,
}

impl TrustStore {
    /// Loads `path` (an absent file is an empty store).
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let mut peers = BTreeMap::new();
        if let Some(bytes) = files::read_private(path)? {
            let corrupt = |why: String| TrustError::Corrupt { path: path.to_path_buf(), why };
            let file: FileV1 = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("is not valid: {e}")))?;
            if file.version != 1 {
                return Err(corrupt(format!("has version {}, this colink reads version 1", file.version)));
            }
            if file.peers.len() > MAX_PEERS {
                return Err(corrupt(format!("lists more than {MAX_PEERS} devices")));
            }
            for p in file.peers {
                let device_id: DeviceId =
                    p.device_id.parse().map_err(|_| corrupt(format!("has a bad device id `{}`", p.device_id)))?;
                let public_key =
                    parse_hex::<32>(&p.public_key).ok_or_else(|| corrupt(format!("has a bad key for {device_id}")))?;
                let name = p.name.map(|n| clip(&n));
                let peer =
                    KnownPeer { device_id, public_key, name, trust: p.trust, added: p.added, last_seen: p.last_seen };
                peers.insert(device_id, peer);
            }
        }
        Ok(Self { path: path.to_path_buf(), peers })
    }

    /// An empty store that lives in memory only ([`save`](Self::save) fails).
    pub fn in_memory() -> Self {
        Self { path: PathBuf::new(), peers: BTreeMap::new() }
    }

    /// Writes the store back (owner-only, atomically).
    pub fn save(&self) -> Result<(), TrustError> {
        if self.path.as_os_str().is_empty() {
            return Err(TrustError::io(&self.path, std::io::Error::other("an in-memory trust store has no file")));
        }
        let file = FileV1 {
            version: 1,
            peers: self
                .peers
                .values()
                .map(|p| PeerV1 {
                    device_id: p.device_id.to_string(),
                    public_key: hex(&p.public_key),
                    name: p.name.clone(),
                    trust: p.trust,
                    added: p.added,
                    last_seen: p.last_seen,
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| TrustError::io(&self.path, e.into()))?;
        bytes.push(b'\n');
        files::write_private(&self.path, &bytes)
    }

    /// Writes the store back when it lives in a file; an in-memory store ([`in_memory`](Self::in_memory)) has
    /// nothing to write.
    pub fn save_if_stored(&self) -> Result<(), TrustError> {
        if self.path.as_os_str().is_empty() { Ok(()) } else { self.save() }
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every known device, by id.
    pub fn peers(&self) -> impl Iterator<Item = &KnownPeer> {
        self.peers.values()
    }

    /// One known device.
    pub fn get(&self, id: &DeviceId) -> Option<&KnownPeer> {
        self.peers.get(id)
    }

    /// Whether `id` is known with `key`.
    pub fn check(&self, id: &DeviceId, key: &[u8; 32]) -> Pinned {
        match self.peers.get(id) {
            Some(p) if p.public_key == *key => Pinned::Same(p.trust),
            Some(_) => Pinned::Changed,
            None => Pinned::Unknown,
        }
    }

    /// Trusts `id` with `key` from now on (`now` in Unix seconds). A device already known with another key is not
    /// replaced: remove it first ([`Pinned::Changed`] is for a person to resolve, never automatic).
    pub fn pin(&mut self, id: DeviceId, key: [u8; 32], trust: TrustKind, now: u64) -> Result<(), TrustError> {
        let full = self.peers.len() >= MAX_PEERS;
        match self.peers.get_mut(&id) {
            Some(p) if p.public_key != key => Err(TrustError::KeyChanged { device: id }),
            Some(p) => {
                // Account membership outranks a pairing: it is re-proven on every link.
                if trust == TrustKind::Account {
                    p.trust = TrustKind::Account;
                }
                p.last_seen = p.last_seen.max(now);
                Ok(())
            }
            None if full => Err(TrustError::Full),
            None => {
                let peer = KnownPeer { device_id: id, public_key: key, name: None, trust, added: now, last_seen: now };
                self.peers.insert(id, peer);
                Ok(())
            }
        }
    }

    /// Records that `id` was seen at `now`, under `name` if it said one. Unknown devices are ignored.
    pub fn touch(&mut self, id: &DeviceId, now: u64, name: Option<&str>) {
        if let Some(p) = self.peers.get_mut(id) {
            p.last_seen = p.last_seen.max(now);
            if let Some(n) = name {
                p.name = Some(clip(n));
            }
        }
    }

    /// Forgets `id`: it must prove itself again (account or pairing). Returns whether it was known.
    pub fn remove(&mut self, id: &DeviceId) -> bool {
        self.peers.remove(id).is_some()
    }
}

/// `name` cut to [`MAX_NAME`] bytes on a character boundary.
fn clip(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "colink-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        files::owner_only_dir(&d).unwrap();
        d
    }

    #[test]
    fn pinned_devices_survive_a_reload_and_a_changed_key_is_refused() {
        let d = dir();
        let path = d.join("peers.json");
        let mut s = TrustStore::load(&path).unwrap();
        assert_eq!(s.peers().count(), 0);
        let id = DeviceId::from_bytes([3; 16]);
        s.pin(id, [5; 32], TrustKind::Paired, 100).unwrap();
        s.touch(&id, 200, Some("laptop\u{1b}[2J"));
        s.save().unwrap();
        let s = TrustStore::load(&path).unwrap();
        let p = s.get(&id).unwrap();
        assert_eq!((p.trust, p.added, p.last_seen), (TrustKind::Paired, 100, 200));
        assert_eq!(p.name.as_deref(), Some("laptop\u{1b}[2J"), "stored as said; escaped when printed");
        assert_eq!(s.check(&id, &[5; 32]), Pinned::Same(TrustKind::Paired));
        assert_eq!(s.check(&id, &[6; 32]), Pinned::Changed);
        assert_eq!(s.check(&DeviceId::from_bytes([4; 16]), &[5; 32]), Pinned::Unknown);
        let mut s = s;
        assert!(matches!(s.pin(id, [6; 32], TrustKind::Account, 300), Err(TrustError::KeyChanged { .. })));
        s.pin(id, [5; 32], TrustKind::Account, 300).unwrap();
        assert_eq!(s.get(&id).unwrap().trust, TrustKind::Account);
        assert!(s.remove(&id));
        assert!(!s.remove(&id));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_store() {
        let d = dir();
        let path = d.join("peers.json");
        files::write_private(&path, b"{\"version\":1,\"peers\":[{\"device_id\":\"zz\"}]}").unwrap();
        assert!(matches!(TrustStore::load(&path), Err(TrustError::Corrupt { .. })));
        files::write_private(&path, b"{\"version\":2,\"peers\":[]}").unwrap();
        let err = TrustStore::load(&path).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn long_names_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(200);
        let c = clip(&long);
        assert!(c.len() <= MAX_NAME && c.chars().all(|ch| ch == 'é'));
    }
}
