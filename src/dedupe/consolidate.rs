//! `--apply`: replace each exact or normalized copy with a symlink or wrapper to its canonical,
//! so that no byte is ever lost: backups first, then the manifest, then atomic replacements.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use super::manifest::{self, Entry, EntryState, Manifest, Replacement, RunState, Strategy};
use super::scan::{self, WRAPPER_MARKER};
use super::{Findings, worktrees};
use crate::exit::Failure;
use crate::fsutil;
use crate::project::STATE_DIR;
use crate::state::{RunLock, now_rfc3339};

/// Test hook: sleep this long after N replacements so a test can kill -9 the run mid-apply.
pub const PAUSE_AFTER_ENV: &str = "BEAMOPS_DEDUPE_PAUSE_AFTER";

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub strategy: Strategy,
    pub allow_dirty: bool,
    pub lock_wait: Duration,
}

#[derive(Debug, Serialize)]
pub struct ApplyOutcome {
    pub manifest: String,
    pub strategy: Strategy,
    pub replaced: Vec<String>,
    /// Copies left alone, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

fn skip(list: &mut Vec<Skipped>, path: &str, reason: impl Into<String>) {
    list.push(Skipped {
        path: path.to_string(),
        reason: reason.into(),
    });
}

struct Planned {
    entry: Entry,
    display: String,
    scan_hash: Option<u128>,
    canonical_hash: Option<u128>,
    wrapper: Option<Vec<u8>>,
}

pub fn apply(
    findings: &Findings,
    opts: &ApplyOptions,
    on_wait: impl Fn(&str),
) -> Result<ApplyOutcome> {
    let dir = manifest::dedupe_dir(&findings.root);
    let manifest_path = manifest::new_manifest_path(&dir);
    let mut planned = plan(findings, opts.strategy, &manifest_path)?;
    refuse_dirty_copies(findings, opts.allow_dirty)?;

    let _lock = RunLock::acquire(&findings.root.join(STATE_DIR), opts.lock_wait, on_wait)?;
    let mut skipped = Vec::new();
    // A symlink to a file without the copy's execute bits would stop `./copy` from running.
    if opts.strategy == Strategy::Symlink {
        planned.retain(|p| {
            let canonical_mode = std::fs::metadata(&p.entry.canonical)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
                .unwrap_or(0);
            let lost = p.entry.mode & 0o111 & !canonical_mode;
            if lost != 0 {
                skip(
                    &mut skipped,
                    &p.display,
                    "executable but its canonical is not: a symlink would change its mode (use --strategy wrapper)",
                );
            }
            lost == 0
        });
    }
    // Every original is stored (fsynced) before the manifest names it, and the manifest is on
    // disk before the first copy is touched: a kill at any point leaves an undoable state.
    planned.retain_mut(|p| match read_if_unchanged(&p.entry.path, p.scan_hash) {
        Some(bytes) => match manifest::store_backup(&dir, &bytes) {
            Ok(sha) => {
                p.entry.original_sha256 = sha;
                true
            }
            Err(e) => {
                skip(
                    &mut skipped,
                    &p.display,
                    format!("could not be backed up: {e:#}"),
                );
                false
            }
        },
        None => {
            skip(&mut skipped, &p.display, "changed since the scan");
            false
        }
    });
    let mut manifest = Manifest {
        schema: manifest::MANIFEST_SCHEMA,
        created: now_rfc3339(),
        root: findings.root.clone(),
        strategy: opts.strategy,
        state: RunState::InProgress,
        entries: planned.iter().map(|p| p.entry.clone()).collect(),
    };
    manifest.write(&manifest_path)?;

    let pause_after: Option<usize> = std::env::var(PAUSE_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut canonical_ok: HashMap<PathBuf, bool> = HashMap::new();
    let mut replaced = Vec::new();
    let mut last_flush = Instant::now();
    for (k, p) in planned.iter().enumerate() {
        let canonical_intact = *canonical_ok
            .entry(p.entry.canonical.clone())
            .or_insert_with(|| read_if_unchanged(&p.entry.canonical, p.canonical_hash).is_some());
        // Just before replacing: the copy may have changed since it was backed up.
        let still_original = std::fs::read(&p.entry.path)
            .is_ok_and(|b| fsutil::sha256_hex(&b) == p.entry.original_sha256);
        if !canonical_intact || !still_original {
            manifest.entries[k].state = EntryState::SkippedChanged;
            let what = if canonical_intact {
                "the copy"
            } else {
                "its canonical"
            };
            skip(
                &mut skipped,
                &p.display,
                format!("{what} changed since the scan"),
            );
            continue;
        }
        replace(&p.entry, p.wrapper.as_deref())
            .with_context(|| format!("replacing {}", p.display))?;
        manifest.entries[k].state = EntryState::Replaced;
        replaced.push(p.display.clone());
        // The manifest already lists this copy, so flushing its state is only bookkeeping:
        // every time for small runs, at most a few times a second for huge ones.
        if planned.len() <= 200
            || last_flush.elapsed() > Duration::from_millis(250)
            || pause_after.is_some()
        {
            manifest.write(&manifest_path)?;
            last_flush = Instant::now();
        }
        if pause_after == Some(replaced.len()) {
            std::thread::sleep(Duration::from_secs(120));
        }
    }
    manifest.state = RunState::Complete;
    manifest.write(&manifest_path)?;
    Ok(ApplyOutcome {
        manifest: scan::relative_path(&findings.root, &manifest_path)
            .display()
            .to_string(),
        strategy: opts.strategy,
        replaced,
        skipped,
    })
}

fn plan(findings: &Findings, strategy: Strategy, manifest_path: &Path) -> Result<Vec<Planned>> {
    let mut planned = Vec::new();
    for group in &findings.groups {
        let canonical = &findings.files[group.canonical];
        for &(copy, tier) in &group.copies {
            let file = &findings.files[copy];
            let dir = file.path.parent().context("a file without a directory")?;
            let target = scan::relative_path(dir, &canonical.path);
            let (replacement, wrapper) = match strategy {
                Strategy::Symlink => (Replacement::Symlink { target }, None),
                Strategy::Wrapper => {
                    let bytes = wrapper_script(&target, canonical, manifest_path, &findings.root);
                    (
                        Replacement::Wrapper {
                            sha256: fsutil::sha256_hex(&bytes),
                        },
                        Some(bytes),
                    )
                }
            };
            planned.push(Planned {
                entry: Entry {
                    path: file.path.clone(),
                    canonical: canonical.path.clone(),
                    tier,
                    original_sha256: String::new(),
                    size: file.size,
                    mode: file.mode,
                    replacement,
                    state: EntryState::Planned,
                },
                display: file.display.clone(),
                scan_hash: file.hash,
                canonical_hash: canonical.hash,
                wrapper,
            });
        }
    }
    Ok(planned)
}

fn refuse_dirty_copies(findings: &Findings, allow_dirty: bool) -> Result<()> {
    if allow_dirty {
        return Ok(());
    }
    let dirty: Vec<&str> = findings
        .groups
        .iter()
        .flat_map(|g| g.copies.iter())
        .map(|&(f, _)| &findings.files[f])
        .filter(|file| {
            findings.worktree_of(file).is_some_and(|w| {
                file.path
                    .strip_prefix(&w.path)
                    .map_or(true, |rel| worktrees::has_uncommitted_changes(w, rel))
            })
        })
        .map(|file| file.display.as_str())
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = dirty.iter().take(20).map(|d| format!("  {d}")).collect();
    let more = if dirty.len() > 20 {
        format!("\n  … and {} more", dirty.len() - 20)
    } else {
        String::new()
    };
    Err(Failure::refused(
        format!("{} copies have uncommitted changes (modified or untracked in git)", dirty.len()),
        format!(
            "{}{more}\n  fix: commit them first, or pass --allow-dirty (originals are backed up either way)",
            shown.join("\n")
        ),
    )
    .into())
}

/// The bytes of `path` if they still hash as they did at scan time.
fn read_if_unchanged(path: &Path, scan_hash: Option<u128>) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    match scan_hash {
        Some(h) if xxh3_128(&bytes) != h => None,
        _ => Some(bytes),
    }
}

/// A wrapper that runs the canonical with the same arguments; `exec` passes the exit status.
fn wrapper_script(
    target: &Path,
    canonical: &super::FileInfo,
    manifest: &Path,
    root: &Path,
) -> Vec<u8> {
    let quoted = format!("'{}'", target.display().to_string().replace('\'', r"'\''"));
    let runner = if canonical.mode & 0o111 != 0 {
        String::new()
    } else {
        // Not executable: run it with the interpreter its shebang names, else sh.
        std::fs::read(&canonical.path)
            .ok()
            .and_then(|b| {
                let line = b
                    .split(|&c| c == b'\n')
                    .next()?
                    .strip_prefix(b"#!")?
                    .to_vec();
                Some(String::from_utf8_lossy(&line).trim().to_string() + " ")
            })
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "sh ".into())
    };
    format!(
        "#!/bin/sh\n# {WRAPPER_MARKER}: consolidated into {target}; `beamops dedupe --undo {manifest}` restores the original.\nexec {runner}\"$(dirname -- \"$0\")\"/{quoted} \"$@\"\n",
        target = target.display(),
        manifest = scan::relative_path(root, manifest).display(),
    )
    .into_bytes()
}

/// Swap the copy for its replacement in one rename, so it is never missing or half-written.
fn replace(entry: &Entry, wrapper: Option<&[u8]>) -> Result<()> {
    match (&entry.replacement, wrapper) {
        (Replacement::Wrapper { .. }, Some(bytes)) => {
            fsutil::atomic_write(&entry.path, bytes, Some(entry.mode))
        }
        (Replacement::Symlink { target }, _) => {
            let dir = entry.path.parent().context("a file without a directory")?;
            let name = entry.path.file_name().context("a path without a name")?;
            let tmp = dir.join(format!(
                ".{}{}{}",
                name.to_string_lossy(),
                fsutil::TEMP_MARKER,
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .with_context(|| format!("creating a symlink in {}", dir.display()))?;
            std::fs::rename(&tmp, &entry.path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        (Replacement::Wrapper { .. }, None) => {
            unreachable!("wrappers are planned with their bytes")
        }
    }
}
