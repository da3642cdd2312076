//! The journal of one `--apply`: written (fsynced) before the first copy is replaced, updated
//! as copies are replaced, and enough on its own for `--undo` after a kill -9 at any point.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Tier;
use crate::fsutil;
use crate::project::STATE_DIR;

/// 2: entry paths are relative to the root the manifest lives under (1: absolute; still read).
pub const MANIFEST_SCHEMA: u32 = 2;

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
    /// Relative to the manifest's root (`..` for worktrees outside it), so the repository can
    /// be moved; absolute in schema-1 manifests.
    pub path: PathBuf,
    pub canonical: PathBuf,
    /// The canonical's sha256 at the apply: an edit through a symlink lands there, and undo
    /// must notice it. Its bytes are stored with the backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_sha256: Option<String>,
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
    /// The absolute root at the apply; when the manifest is found under another root, the
    /// repository was moved and entries are resolved against where it is now.
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
        if !(1..=MANIFEST_SCHEMA).contains(&manifest.schema) {
            bail!(
                "{}: manifest schema {} (this beamops reads {MANIFEST_SCHEMA})",
                path.display(),
                manifest.schema
            );
        }
        Ok(manifest)
    }
}

/// The root a manifest belongs to now: the folder holding `.beamops/dedupe/<it>.json`, which
/// differs from the recorded root after the repository was moved; the recorded root for a
/// manifest kept elsewhere.
pub fn current_root(manifest_path: &Path, manifest: &Manifest) -> PathBuf {
    let dir = manifest_path.parent();
    let root = dir
        .filter(|d| d.file_name().is_some_and(|n| n == "dedupe"))
        .and_then(Path::parent)
        .filter(|d| d.file_name().is_some_and(|n| n == STATE_DIR))
        .and_then(Path::parent)
        .map(|r| {
            if r.as_os_str().is_empty() {
                Path::new(".")
            } else {
                r
            }
        });
    match root.and_then(|r| r.canonicalize().ok()) {
        Some(root) => root,
        None => manifest.root.clone(),
    }
}

/// Where an entry's path is now. Relative paths are joined to the current root; an absolute
/// path (schema 1) under the recorded root is moved along with it. A path outside the root
/// whose new place has no parent folder (the repository moved, a worktree beside it did not)
/// is looked for where it was.
pub fn locate(stored: &Path, recorded_root: &Path, current_root: &Path) -> PathBuf {
    let relative = if stored.is_absolute() {
        match stored.strip_prefix(recorded_root) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => return stored.to_path_buf(),
        }
    } else {
        stored.to_path_buf()
    };
    let here = super::siblings::normalize(&current_root.join(&relative));
    if recorded_root == current_root || here.parent().is_some_and(Path::is_dir) {
        return here;
    }
    let there = super::siblings::normalize(&recorded_root.join(&relative));
    if there.parent().is_some_and(Path::is_dir) {
        there
    } else {
        here
    }
}

/// An apply that never reached its end: killed, or still running.
#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    /// Relative to the root.
    pub manifest: String,
    pub created: String,
    /// Copies it lists (each may or may not have been replaced before the stop).
    pub entries: usize,
    /// The root recorded in it, when the repository has moved since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    pub undo: String,
}

/// Every manifest under `root` still `in-progress`, oldest first.
pub fn unfinished(root: &Path) -> Vec<Unfinished> {
    #[derive(Deserialize)]
    struct Head {
        created: String,
        root: PathBuf,
        state: RunState,
        entries: Vec<serde::de::IgnoredAny>,
    }
    let dir = dedupe_dir(root);
    let Ok(list) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = list
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|path| {
            let head: Head = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            if head.state != RunState::InProgress {
                return None;
            }
            let shown = super::scan::relative_path(root, &path)
                .display()
                .to_string();
            Some(Unfinished {
                undo: format!("beamops dedupe --undo {shown}"),
                manifest: shown,
                created: head.created,
                entries: head.entries.len(),
                moved_from: (head.root != root).then(|| head.root.display().to_string()),
            })
        })
        .collect()
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
