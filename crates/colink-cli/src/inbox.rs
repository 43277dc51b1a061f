//! Where `serve --save-dir` puts what arrives: new files that appear whole and never replace anything, and the
//! partial files it keeps so that an interrupted file transfer resumes (docs/cli.md, "How a file travels").
//!
//! A file is received into `DIR/.colink-partial/<resume key>-<size>.part` (owner-only, created new, never
//! through a symlink). Once colink verified it, the file reaches the disk and takes its name in `DIR` through a
//! hard link, which never replaces anything (`name (1).ext` … when the name is taken). When a transfer fails
//! after some bytes, the partial file stays, and a later offer of the same content (same resume key and size)
//! resumes after those bytes. Partial files are bounded: older than [`PARTIAL_MAX_AGE`] or beyond the newest
//! [`MAX_PARTIALS`] they are deleted whenever an offer arrives.
//!
//! It does not decide what a name may be beyond [`refusal`]; colink's own `check_name` already refuses path
//! separators, control characters, `.` and `..`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use colink::files::{FileSink, ResumeKey};

/// The directory under the save directory that holds partial files.
pub(crate) const PARTIAL_DIR: &str = ".colink-partial";
/// The most partial files kept (the newest win).
pub(crate) const MAX_PARTIALS: usize = 16;
/// How long a partial file is kept after its last write.
pub(crate) const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why `serve` refuses a file name colink itself allows, if it does: a leading dot (a hidden file such as
/// `.bashrc` or `.ssh`).
pub(crate) fn refusal(name: &str) -> Option<&'static str> {
    name.starts_with('.').then_some("colink serve does not save files whose name starts with a dot (hidden files)")
}

/// A save directory. Clones share which partial files are being written, so that two sessions never write
/// into the same one.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<PathBuf>>>,
}

/// A file being received into its partial file: [`complete`](Self::complete) it once colink verified it, or
/// [`fail`](Self::fail) it.
#[derive(Debug)]
pub(crate) struct Receiving {
    inbox: Inbox,
    path: PathBuf,
    file: File,
    size: u64,
    /// The bytes an earlier attempt kept (the transfer resumes after them).
    pub(crate) kept: u64,
}

impl Inbox {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir, busy: Arc::default() }
    }

    /// Prepares to receive the file `key` of `size` bytes: resumes its partial file when one was kept,
    /// otherwise creates it; returns it and the sink to accept the offer with. Bounds the kept partial files
    /// first. Fails when the same content is being received already, or on an I/O error.
    pub(crate) fn receive(&self, key: ResumeKey, size: u64) -> io::Result<(Receiving, FileSink)> {
        let partials = self.partial_dir()?;
        let path = partials.join(format!("{key}-{size}.part"));
        if !self.lock().insert(path.clone()) {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, "the same file is being received already"));
        }
        let opened = prune(&partials, &self.lock(), SystemTime::now())
            .and_then(|()| open_partial(&path, size))
            .and_then(|(file, kept)| {
                let writer = tokio::fs::File::from_std(file.try_clone()?);
                let sink = if kept > 0 {
                    // A second open for reading the kept bytes back, checked to be the same file.
                    let reader = open_same(&path, &file)?;
                    FileSink::resume(writer, kept, tokio::fs::File::from_std(reader))
                } else {
                    FileSink::new(writer)
                };
                Ok((file, kept, sink))
            });
        match opened {
            Ok((file, kept, sink)) => Ok((Receiving { inbox: self.clone(), path, file, size, kept }, sink)),
            Err(e) => {
                self.lock().remove(&path);
                Err(e)
            }
        }
    }

    /// `DIR/.colink-partial`, created owner-only when missing; refused when it is not a directory (a symlink).
    fn partial_dir(&self) -> io::Result<PathBuf> {
        let path = self.dir.join(PARTIAL_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !std::fs::symlink_metadata(&path)?.file_type().is_dir() {
            let what = format!("{} is not a directory", path.display());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        }
        Ok(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Receiving {
    /// After colink verified the file: puts it on the disk, then into the save directory as `name` (or
    /// `name (1).ext` …, never over anything), and forgets the partial file. Returns the path. When this fails
    /// the bytes stay in the partial file (the error names it).
    pub(crate) fn complete(self, name: &str) -> io::Result<PathBuf> {
        let placed = self.file.sync_all().and_then(|()| link_new(&self.path, &self.inbox.dir.join(name)));
        let saved =
            placed.map_err(|e| io::Error::new(e.kind(), format!("{e} (the bytes stay in {})", self.path.display())))?;
        std::fs::remove_file(&self.path)?;
        sync_dir(&self.inbox.dir);
        Ok(saved)
    }

    /// After a failed transfer: keeps the partial file for a resume when it holds some but not all of the
    /// file (returns its path), else deletes it. A partial file as long as the file failed at its end (its
    /// bytes did not match their hash, or could not be flushed): resuming it could not help.
    pub(crate) fn fail(self) -> Option<PathBuf> {
        let len = self.file.metadata().map_or(0, |m| m.len());
        if len > 0 && len < self.size {
            let _ = self.file.sync_all();
            Some(self.path.clone())
        } else {
            let _ = std::fs::remove_file(&self.path);
            None
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.inbox.lock().remove(&self.path);
    }
}

/// Opens the partial file at `path` for appending: the one kept (with its length) when it is a regular file
/// shorter than `size`, else a new one (anything else at the path is deleted first, a symlink itself, never
/// what it points at).
fn open_partial(path: &Path, size: u64) -> io::Result<(File, u64)> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() && meta.len() < size => {
            let file = OpenOptions::new().append(true).open(path)?;
            let opened = file.metadata()?;
            // The path may have changed between the look and the open: only the file looked at is resumed.
            if (opened.dev(), opened.ino()) == (meta.dev(), meta.ino()) {
                return Ok((file, opened.len()));
            }
            drop(file);
            remove_entry(path)?;
        }
        Ok(_) => remove_entry(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new().append(true).create_new(true).mode(0o600).open(path)?;
    Ok((file, 0))
}

/// Opens `path` again for reading, checked to be the file `same` is open on.
fn open_same(path: &Path, same: &File) -> io::Result<File> {
    let file = File::open(path)?;
    let (a, b) = (file.metadata()?, same.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other(format!("{} changed while it was opened", path.display())));
    }
    Ok(file)
}

/// Deletes what is at `path` (a directory only when empty).
fn remove_entry(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the partial files in `dir` that are not in `busy` (being written, including the one about to be)
/// and either were last written before `now - PARTIAL_MAX_AGE` or are beyond the newest, so that at most
/// [`MAX_PARTIALS`] remain with the busy ones. Anything else in the directory is left alone.
fn prune(dir: &Path, busy: &HashSet<PathBuf>, now: SystemTime) -> io::Result<()> {
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if busy.contains(&path) || path.extension().is_none_or(|e| e != "part") {
            continue;
        }
        let meta = entry.metadata()?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let stale = now.duration_since(modified).is_ok_and(|age| age > PARTIAL_MAX_AGE);
        if stale || !meta.file_type().is_file() {
            remove_entry(&path)?;
        } else {
            kept.push((modified, path));
        }
    }
    kept.sort_by_key(|k| std::cmp::Reverse(k.0));
    let room = MAX_PARTIALS.saturating_sub(busy.len());
    for (_, path) in kept.iter().skip(room) {
        remove_entry(path)?;
    }
    Ok(())
}

/// Writes `data` to a new file at `path`, or at `name (1).ext`, `name (2).ext` … when that exists; returns
/// the path used. The bytes go to a temporary file in the same directory first (created new, so nothing a
/// symlink points at is written through), reach the disk, and only then get their name (see [`link_new`]) —
/// so a file appears whole or not at all, and never over another.
pub(crate) fn save_new(path: &Path, data: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write as _;
    let dir = parent(path);
    let mut temp = tempfile::Builder::new().prefix(".colink-part-").tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    let saved = link_new(temp.path(), path)?;
    sync_dir(dir);
    Ok(saved)
}

/// Gives the file at `from` a second name: `path`, or `name (1).ext`, `name (2).ext` … when that exists.
/// A hard link fails rather than replace anything already there (a file, a directory or a symlink).
fn link_new(from: &Path, path: &Path) -> io::Result<PathBuf> {
    let dir = parent(path);
    let (stem, ext) = match (path.file_stem(), path.extension()) {
        (Some(stem), Some(ext)) => (stem.to_string_lossy().into_owned(), format!(".{}", ext.to_string_lossy())),
        _ => (path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), String::new()),
    };
    for n in 0..1000u32 {
        let candidate = if n == 0 { path.to_owned() } else { dir.join(format!("{stem} ({n}){ext}")) };
        match std::fs::hard_link(from, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "1000 files of that name exist already"))
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Puts a directory's new entries on the disk (best effort: a failure here loses nothing already written).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ResumeKey {
        ResumeKey::from_bytes([b; 16])
    }

    fn part_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(PARTIAL_DIR))
            .map(|d| d.map_while(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn saving_never_overwrites_or_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.txt");
        assert_eq!(save_new(&path, b"one").unwrap(), path);
        assert_eq!(save_new(&path, b"two").unwrap(), dir.path().join("report (1).txt"));
        assert_eq!(save_new(&path, b"three").unwrap(), dir.path().join("report (2).txt"));
        assert_eq!(std::fs::read(&path).unwrap(), b"one", "the first file is untouched");
        assert_eq!(std::fs::read(dir.path().join("report (1).txt")).unwrap(), b"two");
        // A symlink planted at the name (pointing at a file the user cares about) is neither followed nor
        // replaced.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join("notes");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert_eq!(save_new(&planted, b"evil").unwrap(), dir.path().join("notes (1)"));
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_symlink());
        // No temporary file is left behind.
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".colink-part-"))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn dotfiles_are_refused_and_other_names_are_not() {
        assert!(refusal(".bashrc").is_some());
        assert!(refusal(".").is_some());
        assert!(refusal("photo.jpg").is_none());
        assert!(refusal("a.b.c").is_none());
    }

    #[tokio::test]
    async fn a_partial_is_kept_after_a_failure_and_resumed_by_the_same_key_and_size_only() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_owned());
        let (r, _sink) = inbox.receive(key(1), 100).unwrap();
        assert_eq!(r.kept, 0);
        // Some bytes arrive, then the transfer fails: the partial file stays, owner-only.
        (&r.file).write_all(&[7; 40]).unwrap();
        let kept = r.fail().expect("kept");
        assert_eq!(std::fs::read(&kept).unwrap(), vec![7; 40]);
        assert_eq!(std::fs::metadata(&kept).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join(PARTIAL_DIR)).unwrap().mode() & 0o777, 0o700);
        // The same key and size resume after the kept bytes; while it runs, a second offer is refused.
        let (r, _sink) = inbox.receive(key(1), 100).unwrap();
        assert_eq!(r.kept, 40);
        assert_eq!(inbox.receive(key(1), 100).unwrap_err().kind(), io::ErrorKind::ResourceBusy);
        (&r.file).write_all(&[8; 60]).unwrap();
        let saved = r.complete("f.bin").unwrap();
        assert_eq!(saved, dir.path().join("f.bin"));
        let mut want = vec![7; 40];
        want.extend([8; 60]);
        assert_eq!(std::fs::read(&saved).unwrap(), want);
        assert!(part_files(dir.path()).is_empty(), "{:?}", part_files(dir.path()));
        // Another size is another file: nothing kept is resumed.
        let (r, _sink) = inbox.receive(key(1), 100).unwrap();
        (&r.file).write_all(&[1; 10]).unwrap();
        r.fail().expect("kept");
        let (r, _sink) = inbox.receive(key(1), 200).unwrap();
        assert_eq!(r.kept, 0);
        // A partial file as long as the file (it failed at its end, e.g. on the hash) is not kept.
        (&r.file).write_all(&[1; 200]).unwrap();
        assert_eq!(r.fail(), None);
        assert_eq!(part_files(dir.path()), [format!("{}-100.part", key(1))]);
    }

    #[tokio::test]
    async fn a_symlink_at_a_partial_name_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(dir.path().to_owned());
        std::fs::create_dir(dir.path().join(PARTIAL_DIR)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join(PARTIAL_DIR).join(format!("{}-100.part", key(2)));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let (r, _sink) = inbox.receive(key(2), 100).unwrap();
        assert_eq!(r.kept, 0, "a symlink is not resumed");
        assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        drop(r);
        // A symlink in place of the partial directory is refused.
        let other = tempfile::tempdir().unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), dir2.path().join(PARTIAL_DIR)).unwrap();
        assert!(Inbox::new(dir2.path().to_owned()).receive(key(3), 10).is_err());
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn partials_are_bounded_by_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let partials = dir.path().join(PARTIAL_DIR);
        std::fs::create_dir(&partials).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let mut names = Vec::new();
        for i in 0..20u32 {
            let path = partials.join(format!("{i:02}.part"));
            let file = File::create(&path).unwrap();
            // 00 is 8 days old, 01 is 1 hour old (…), i.e. newer with i except for 00.
            let age = if i == 0 { 8 * day } else { Duration::from_secs(3600 * u64::from(30 - i)) };
            file.set_modified(now - age).unwrap();
            names.push(path);
        }
        std::fs::write(partials.join("notes.txt"), b"not a partial").unwrap();
        let busy: HashSet<PathBuf> = [names[1].clone(), partials.join("new.part")].into();
        prune(&partials, &busy, now).unwrap();
        let left = part_files(dir.path());
        // The stale one is gone; the busy one stays; of the others only the newest 14 (16 - 1 new - 1 busy).
        assert!(!left.contains(&"00.part".to_owned()), "{left:?}");
        assert!(left.contains(&"01.part".to_owned()), "{left:?}");
        assert!(left.contains(&"notes.txt".to_owned()));
        let parts = left.iter().filter(|n| n.ends_with(".part")).count();
        assert_eq!(parts, MAX_PARTIALS - 1, "{left:?}");
        assert!(left.contains(&"19.part".to_owned()) && !left.contains(&"05.part".to_owned()), "{left:?}");
    }
}
