//! `--undo MANIFEST`: put back every copy an apply replaced, bytes and mode, from the backups.
//!
//! It looks at each file as it is now rather than trusting the manifest's states, so it works
//! after a kill -9 at any point of an apply, and running it twice changes nothing the second time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::manifest::{self, Entry, EntryState, Manifest, Replacement, RunState};
use crate::exit::Failure;
use crate::fsutil;
use crate::output::Ui;
use crate::project::STATE_DIR;
use crate::state::RunLock;

#[derive(Debug, Serialize)]
pub struct UndoOutcome {
    pub manifest: String,
    /// Copies put back from their backup.
    pub restored: Vec<String>,
    /// Copies that already held their original bytes (never replaced, or undone before).
    pub unchanged: Vec<String>,
    /// The root recorded in the manifest, when the repository has been moved since the apply
    /// (paths were then resolved under where it is now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// Canonicals whose bytes changed after the apply — an edit through a symlinked copy lands
    /// there. They are left as they are (the edit is never lost); a person must decide where
    /// the edit belongs, so the undo exits 4.
    pub canonical_changed: Vec<CanonicalChanged>,
}

#[derive(Debug, Serialize)]
pub struct CanonicalChanged {
    pub canonical: String,
    /// The copies consolidated into it by this apply: an edit through any of these symlinks
    /// changed it. They now hold their own originals again.
    pub copies: Vec<String>,
    /// Its bytes before the apply, stored with the backups: `cp` it back to undo the edit.
    pub before_apply: Option<String>,
    /// Its bytes now (with the edit), stored with the backups too.
    pub edited: Option<String>,
}

enum Now {
    Original,
    Replacement,
    Foreign(String),
}

pub fn undo(manifest_path: &Path, lock_wait: Duration, ui: &Ui) -> Result<UndoOutcome> {
    let mut manifest = Manifest::read(manifest_path)?;
    let root = manifest::current_root(manifest_path, &manifest);
    let moved = root != manifest.root;
    if moved {
        ui.note(format!(
            "the repository moved from {} to {}: restoring under {}",
            manifest.root.display(),
            root.display(),
            root.display()
        ));
    }
    let _lock = RunLock::acquire(&root.join(STATE_DIR), lock_wait, |m| ui.note(m))?;
    // Absolute, so that the object paths the report names work from anywhere.
    let dir = manifest_path
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", manifest_path.display()))?
        .parent()
        .context("a manifest path without a directory")?
        .to_path_buf();
    let mut restored = Vec::new();
    let mut unchanged = Vec::new();
    let mut conflicts = Vec::new();
    // canonical (as located now) → its recorded sha and the copies pointing at it.
    let mut canonicals: BTreeMap<PathBuf, (Option<String>, Vec<String>)> = BTreeMap::new();
    // A kill during a replacement can leave its temporary file beside the copy: one listing
    // per folder, not one per copy.
    let mut names_in: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    for entry in &manifest.entries {
        let path = manifest::locate(&entry.path, &manifest.root, &root);
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            names_in
                .entry(dir.to_path_buf())
                .or_default()
                .insert(name.to_string_lossy().into_owned());
        }
    }
    for (dir, names) in &names_in {
        sweep_temp_files(dir, names);
    }
    let bar = ui.progress(manifest.entries.len() as u64, "restoring copies");
    for entry in manifest.entries.iter_mut() {
        bar.inc(1);
        if entry.state == EntryState::SkippedChanged {
            continue;
        }
        let path = manifest::locate(&entry.path, &manifest.root, &root);
        let shown = path.display().to_string();
        let canonical = manifest::locate(&entry.canonical, &manifest.root, &root);
        let found = now(&path, entry);
        let was_replaced = entry.state != EntryState::Planned || !matches!(found, Now::Original);
        if was_replaced {
            let slot = canonicals
                .entry(canonical)
                .or_insert_with(|| (entry.canonical_sha256.clone(), Vec::new()));
            slot.1.push(shown.clone());
        }
        match found {
            Now::Original => {
                if fsutil::existing_mode(&path) != Some(entry.mode) {
                    fsutil::set_mode(&path, entry.mode)?;
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
                fsutil::atomic_write(&path, &bytes, Some(entry.mode))?;
                entry.state = EntryState::Restored;
                restored.push(shown);
            }
            Now::Foreign(what) => conflicts.push(format!("  {shown}: {what}; left as is")),
        }
    }
    bar.finish_and_clear();

    // An edit through a symlink changed the canonical itself: keep it where it is, store its
    // bytes beside the backups, and say where the pre-apply bytes are.
    let mut canonical_changed = Vec::new();
    for (canonical, (recorded, copies)) in canonicals {
        let Some(recorded) = recorded else { continue };
        let now = std::fs::read(&canonical).ok();
        let now_sha = now.as_deref().map(fsutil::sha256_hex);
        if now_sha.as_deref() == Some(recorded.as_str()) {
            continue;
        }
        let edited = now
            .as_deref()
            .and_then(|b| manifest::store_backup(&dir, b).ok())
            .map(|sha| manifest::object_path(&dir, &sha).display().to_string());
        let before = manifest::object_path(&dir, &recorded);
        canonical_changed.push(CanonicalChanged {
            canonical: canonical.display().to_string(),
            copies,
            before_apply: before.is_file().then(|| before.display().to_string()),
            edited,
        });
    }
    if conflicts.is_empty() {
        manifest.state = RunState::Undone;
    }
    manifest.write(manifest_path)?;
    let changed_text = canonical_changed_text(&canonical_changed);
    if !conflicts.is_empty() {
        return Err(Failure::refused(
            format!(
                "{} files changed since the apply; restored the other {}",
                conflicts.len(),
                restored.len() + unchanged.len()
            ),
            format!(
                "{}{changed_text}\n  fix: move those files aside and run the undo again (it only restores what it replaced)",
                conflicts.join("\n")
            ),
        )
        .into());
    }
    Ok(UndoOutcome {
        manifest: manifest_path.display().to_string(),
        restored,
        unchanged,
        moved_from: moved.then(|| manifest.root.display().to_string()),
        canonical_changed,
    })
}

/// What undo did about each canonical that changed, for a person to act on.
pub fn canonical_changed_text(changed: &[CanonicalChanged]) -> String {
    let mut out = String::new();
    for c in changed {
        out += &format!(
            "\n  {}: changed since the apply (an edit through a symlinked copy lands here); left as it is now, with the edit{}\n    its copies hold their own originals again: {}\n",
            c.canonical,
            c.edited
                .as_deref()
                .map(|e| format!(" (also saved as {e})"))
                .unwrap_or_default(),
            c.copies.join(", ")
        );
        if let Some(before) = &c.before_apply {
            out += &format!(
                "    fix: if the edit was meant for a copy, move it there, then put the canonical back: cp {before} {}\n",
                c.canonical
            );
        }
    }
    out
}

/// What sits at the copy's path now: its original, what apply put there, or something else.
fn now(path: &Path, entry: &Entry) -> Now {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        // Renames are atomic, so a copy is never missing because of apply; restore it.
        return Now::Replacement;
    };
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(path).ok();
        return match &entry.replacement {
            Replacement::Symlink { target } if link.as_deref() == Some(target.as_path()) => {
                Now::Replacement
            }
            _ => Now::Foreign("now a symlink beamops did not make".into()),
        };
    }
    let Ok(bytes) = std::fs::read(path) else {
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

/// Remove `.<name><TEMP_MARKER>…` files a killed replacement of one of `names` left in `dir`.
fn sweep_temp_files(dir: &Path, names: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        if let Some((name, _)) = file
            .strip_prefix('.')
            .and_then(|f| f.split_once(fsutil::TEMP_MARKER))
            && names.contains(name)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
