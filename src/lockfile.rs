//! `beamops.lock`: committed record of what beamops wrote, so a teammate's clone and CI can
//! tell a file beamops generated from one a person edited. Holds paths and hashes, never secrets.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;

pub const LOCK_FILE: &str = "beamops.lock";
const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockFile {
    pub version: u32,
    /// Project-relative path → what beamops last wrote there.
    pub files: BTreeMap<String, LockedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedFile {
    pub chapter: String,
    pub template: String,
    /// Digest of the template source that produced the file.
    pub template_digest: String,
    pub sha256: String,
    /// The mode beamops gave the file, `0644`; absent in locks written before modes were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl LockedFile {
    pub fn mode_bits(&self) -> Option<u32> {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
    }

    /// The same file as `other` describes; a record from before modes were kept matches any mode.
    pub fn matches(&self, other: &LockedFile) -> bool {
        self.chapter == other.chapter
            && self.template == other.template
            && self.template_digest == other.template_digest
            && self.sha256 == other.sha256
            && (self.mode.is_none() || other.mode.is_none() || self.mode == other.mode)
    }
}

/// Bits a checkout may set on its own: a umask of 002 makes files group-writable.
const CHECKOUT_BITS: u32 = 0o020;

/// Did a person change the mode beamops wrote (`recorded`) to `on_disk`?
pub fn mode_edited(recorded: u32, on_disk: u32) -> bool {
    (recorded ^ on_disk) & 0o7777 & !CHECKOUT_BITS != 0
}

impl Default for LockFile {
    fn default() -> Self {
        LockFile {
            version: LOCK_VERSION,
            files: BTreeMap::new(),
        }
    }
}

impl LockFile {
    pub fn read(root: &Path) -> Result<LockFile> {
        let path = root.join(LOCK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a beamops lock file\n  fix: restore it from git (`git checkout -- {LOCK_FILE}`)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(self).expect("lock serializes");
        text.push('\n');
        text.into_bytes()
    }

    /// Write only when something changed, so a second `up` leaves the file untouched.
    pub fn write_if_changed(&self, root: &Path) -> Result<bool> {
        let path = root.join(LOCK_FILE);
        let bytes = self.to_bytes();
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        fsutil::atomic_write(&path, &bytes, Some(0o644))?;
        Ok(true)
    }

    pub fn chapter_files<'a>(
        &'a self,
        chapter: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a LockedFile)> {
        self.files.iter().filter(move |(_, f)| f.chapter == chapter)
    }
}
