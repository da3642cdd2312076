//! `--undo MANIFEST`: put back every copy an apply replaced, bytes and mode, from the backups.
//!
//! It looks at each file as it is now rather than trusting the manifest's states, so it works
//! after a kill -9 at any point of an apply, and running it twice changes nothing the second time.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::manifest::{self, Entry, EntryState, Manifest, Replacement, RunState};
use crate::exit::Failure;
use crate::fsutil;
use crate::project::STATE_DIR;
use crate::state::RunLock;

#[derive(Debug, Serialize)]
pub struct UndoOutcome {
    pub manifest: String,
    /// Copies put back from their backup.
    pub restored: Vec<String>,
    /// Copies that already held their original bytes (never replaced, or undone before).
    pub unchanged: Vec<String>,
}

enum Now {
    Original,
    Replacement,
    Foreign(String),
}

pub fn undo(
    manifest_path: &Path,
    lock_wait: Duration,
    on_wait: impl Fn(&str),
) -> Result<UndoOutcome> {
    let mut manifest = Manifest::read(manifest_path)?;
    let _lock = RunLock::acquire(&manifest.root.join(STATE_DIR), lock_wait, on_wait)?;
    let dir = manifest_path
        .parent()
        .context("a manifest path without a directory")?
        .to_path_buf();
    let mut restored = Vec::new();
    let mut unchanged = Vec::new();
    let mut conflicts = Vec::new();
    for entry in manifest.entries.iter_mut() {
        if entry.state == EntryState::SkippedChanged {
            continue;
        }
        let shown = entry.path.display().to_string();
        sweep_temp_files(&entry.path);
        match now(entry) {
            Now::Original => {
                if fsutil::existing_mode(&entry.path) != Some(entry.mode) {
                    fsutil::set_mode(&entry.path, entry.mode)?;
                }
                unchanged.push(shown);
            }
            Now::Replacement => {
                let object = manifest::object_path(&dir, &entry.original_sha256);
                let bytes = std::fs::read(&object).with_context(|| {
                    format!("reading the backup of {shown} ({})", object.display())
                })?;
                if fsutil::sha256_hex(&bytes) != entry.original_sha256 {
                    conflicts.push(format!(
                        "  {shown}: its backup {} is damaged; left as is",
                        object.display()
                    ));
                    continue;
                }
                fsutil::atomic_write(&entry.path, &bytes, Some(entry.mode))?;
                entry.state = EntryState::Restored;
                restored.push(shown);
            }
            Now::Foreign(what) => conflicts.push(format!("  {shown}: {what}; left as is")),
        }
    }
    if conflicts.is_empty() {
        manifest.state = RunState::Undone;
    }
    manifest.write(manifest_path)?;
    if !conflicts.is_empty() {
        return Err(Failure::refused(
            format!(
                "{} files changed since the apply; restored the other {}",
                conflicts.len(),
                restored.len() + unchanged.len()
            ),
            format!(
                "{}\n  fix: move those files aside and run the undo again (it only restores what it replaced)",
                conflicts.join("\n")
            ),
        )
        .into());
    }
    Ok(UndoOutcome {
        manifest: manifest_path.display().to_string(),
        restored,
        unchanged,
    })
}

/// What sits at the copy's path now: its original, what apply put there, or something else.
fn now(entry: &Entry) -> Now {
    let Ok(meta) = std::fs::symlink_metadata(&entry.path) else {
        // Renames are atomic, so a copy is never missing because of apply; restore it.
        return Now::Replacement;
    };
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(&entry.path).ok();
        return match &entry.replacement {
            Replacement::Symlink { target } if link.as_deref() == Some(target.as_path()) => {
                Now::Replacement
            }
            _ => Now::Foreign("now a symlink beamops did not make".into()),
        };
    }
    let Ok(bytes) = std::fs::read(&entry.path) else {
        return Now::Foreign("unreadable".into());
    };
    let sha = fsutil::sha256_hex(&bytes);
    if sha == entry.original_sha256 {
        return Now::Original;
    }
    match &entry.replacement {
        Replacement::Wrapper { sha256 } if *sha256 == sha => Now::Replacement,
        _ => Now::Foreign("edited since the apply".into()),
    }
}

/// A kill during a replacement can leave its temporary file beside the copy.
fn sweep_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}{}", name.to_string_lossy(), fsutil::TEMP_MARKER);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
