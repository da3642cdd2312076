//! A coordination directory: reads that need no lock (every file is replaced atomically, so a
//! reader sees the old or the new file, never half of one) and a [`Locked`] handle for
//! read-modify-write, holding an exclusive `flock` on the lock file beside the data.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::legacy::{self, Entry};
use super::{CoordError, LOCK_FILE};
use crate::fsutil;

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file's text, `None` when it does not exist.
    pub fn read_text(&self, name: &str) -> Result<Option<String>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CoordError::io(&path, e).into()),
        }
    }

    /// An array file's entries (empty when missing); a file that does not parse is an error,
    /// never an empty array, so nobody overwrites what they could not read.
    pub fn read_array(&self, name: &str) -> Result<Vec<Entry>> {
        let Some(text) = self.read_text(name)? else {
            return Ok(Vec::new());
        };
        legacy::parse_array(&text).map_err(|detail| {
            CoordError::Unreadable {
                path: self.path(name),
                detail,
            }
            .into()
        })
    }

    /// Take the exclusive lock, waiting at most `wait`. Blocking `flock` queues waiters in the
    /// kernel (no polling, no thundering herd); the wait runs on a helper thread so it can be
    /// bounded, and a lock obtained after the caller gave up is released at once.
    pub fn lock(&self, wait: Duration) -> Result<Locked<'_>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| CoordError::io(&self.dir, e))?;
        let path = self.path(LOCK_FILE);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CoordError::io(&path, e))?;
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(std::fs::TryLockError::Error(e)) => return Err(CoordError::io(&path, e).into()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let (tx, rx) = mpsc::sync_channel::<std::io::Result<File>>(1);
                std::thread::spawn(move || {
                    let got = file.lock().map(|()| file);
                    // If the caller stopped waiting, dropping the file here unlocks it.
                    let _ = tx.send(got);
                });
                match rx.recv_timeout(wait) {
                    Ok(Ok(file)) => file,
                    Ok(Err(e)) => return Err(CoordError::io(&path, e).into()),
                    Err(_) => {
                        return Err(CoordError::LockTimeout { path, waited: wait }.into());
                    }
                }
            }
        };
        // A writer killed mid-replace leaves a temp file; only a lock holder may remove them.
        fsutil::sweep_temp_files(&self.dir);
        Ok(Locked { store: self, file })
    }
}

/// The lock is held while this lives; the OS drops it when the process dies, even by kill -9.
pub struct Locked<'a> {
    store: &'a Store,
    file: File,
}

impl Locked<'_> {
    pub fn store(&self) -> &Store {
        self.store
    }

    pub fn read_array(&self, name: &str) -> Result<Vec<Entry>> {
        self.store.read_array(name)
    }

    /// Replace an array file atomically (temp in the same directory, rename), pretty-printed
    /// with two spaces as `jq` writes it. `durable`: fsync the data before the rename (the
    /// commit point of a change); either way the rename is made durable by [`Locked::sync_dir`],
    /// which a change calls once for all the files it replaced: fsync is the cost of a claim.
    pub fn write_array(&self, name: &str, entries: &[Entry], durable: bool) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(entries)?;
        bytes.push(b'\n');
        self.write(name, &bytes, durable)
    }

    pub fn write(&self, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
        let path = self.store.path(name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}{}", fsutil::TEMP_MARKER))
            .tempfile_in(&self.store.dir)
            .with_context(|| {
                format!("creating a temporary file in {}", self.store.dir.display())
            })?;
        tmp.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        fsutil::set_mode(tmp.path(), fsutil::existing_mode(&path).unwrap_or(0o644))?;
        if durable {
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("syncing {}", tmp.path().display()))?;
        }
        tmp.persist(&path)
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Make the renames done so far durable (fsync of the directory).
    pub fn sync_dir(&self) -> Result<()> {
        File::open(&self.store.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.store.dir.display()))
    }

    /// Append `bytes` in one write; returns the file's length afterwards.
    pub fn append(&self, name: &str, bytes: &[u8]) -> Result<u64> {
        let path = self.store.path(name);
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| CoordError::io(&path, e))?;
        file.write_all(bytes)
            .map_err(|e| CoordError::io(&path, e))?;
        Ok(file
            .metadata()
            .with_context(|| format!("reading the length of {}", path.display()))?
            .len())
    }

    /// The span file's length when beamops last left it as valid JSON Lines, kept in the lock
    /// file so a claim need not re-read the whole span file. Only a hint: when it does not
    /// match, the file is scanned.
    pub fn spans_hint(&mut self) -> Option<u64> {
        let mut text = String::new();
        self.file.rewind().ok()?;
        self.file.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("spans_json_lines_len "))
            .and_then(|n| n.trim().parse().ok())
    }

    pub fn set_spans_hint(&mut self, len: Option<u64>) {
        let text = match len {
            Some(n) => format!("spans_json_lines_len {n}\n"),
            None => String::new(),
        };
        let _ = self.file.set_len(0);
        let _ = self.file.write_all_at(text.as_bytes(), 0);
    }
}
