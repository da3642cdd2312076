//! The journal of one `--apply`: written (fsynced) before the first copy is replaced, updated
//! as copies are replaced, and enough on its own for `--undo` after a kill -9 at any point.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Tier;
use crate::fsutil;
use crate::project::STATE_DIR;

pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A relative symlink to the canonical.
    #[default]
    Symlink,
    /// A tiny script that `exec`s the canonical, found relative to its own location.
    Wrapper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    InProgress,
    Complete,
    Undone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryState {
    /// Backed up; the copy may or may not have been replaced yet (a kill lands here).
    Planned,
    Replaced,
    /// The copy changed between the scan and the replacement; left alone.
    SkippedChanged,
    Restored,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Replacement {
    Symlink { target: PathBuf },
    Wrapper { sha256: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Absolute: worktrees may live outside the root.
    pub path: PathBuf,
    pub canonical: PathBuf,
    pub tier: Tier,
    pub original_sha256: String,
    pub size: u64,
    pub mode: u32,
    pub replacement: Replacement,
    pub state: EntryState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub created: String,
    pub root: PathBuf,
    pub strategy: Strategy,
    pub state: RunState,
    pub entries: Vec<Entry>,
}

impl Manifest {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        fsutil::atomic_write(path, &json, Some(0o644))
            .with_context(|| format!("writing the dedupe manifest {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the dedupe manifest {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a dedupe manifest\n  fix: pass a file from .beamops/dedupe/",
                path.display()
            )
        })?;
        if manifest.schema != MANIFEST_SCHEMA {
            bail!(
                "{}: manifest schema {} (this beamops reads {MANIFEST_SCHEMA})",
                path.display(),
                manifest.schema
            );
        }
        Ok(manifest)
    }
}

/// `<root>/.beamops/dedupe`: manifests, and `objects/` with every replaced file's bytes.
pub fn dedupe_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("dedupe")
}

pub fn object_path(dedupe_dir: &Path, sha256: &str) -> PathBuf {
    dedupe_dir.join("objects").join(&sha256[..2]).join(sha256)
}

/// Store `bytes` under their sha256 (fsynced); an object already there with the right digest
/// is kept, so a re-run after a kill writes nothing twice.
pub fn store_backup(dedupe_dir: &Path, bytes: &[u8]) -> Result<String> {
    let sha = fsutil::sha256_hex(bytes);
    let path = object_path(dedupe_dir, &sha);
    let intact = std::fs::read(&path).is_ok_and(|b| fsutil::sha256_hex(&b) == sha);
    if !intact {
        fsutil::atomic_write(&path, bytes, Some(0o600))
            .with_context(|| format!("storing a backup in {}", path.display()))?;
    }
    Ok(sha)
}

/// A manifest named by the time it was made (sortable, no colons).
pub fn new_manifest_path(dedupe_dir: &Path) -> PathBuf {
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace(':', "-");
    dedupe_dir.join(format!("{stamp}.json"))
}

/// `--undo` takes a path, or a manifest's name inside `.beamops/dedupe/`.
pub fn resolve(root: &Path, given: &Path) -> Result<PathBuf> {
    if given.is_file() {
        return Ok(given.to_path_buf());
    }
    let dir = dedupe_dir(root);
    for candidate in [
        dir.join(given),
        dir.join(format!("{}.json", given.display())),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{}: no such manifest\n  fix: pass a file from {} (each --apply prints its own)",
        given.display(),
        dir.display()
    )
}
