//! A private copy of a root for `beamops plan` before its files are written: the bytes `up`
//! would write (and the modules beside the root), in a directory only this user can read under
//! the project's `.beamops/terraform/plan-copies/` (git-ignored, never /tmp: a saved plan holds
//! the state and sensitive variables), where Terraform runs init and plan. Nothing else in the
//! project is touched; the directory goes when the copy is dropped, and also when a signal ends
//! beamops meanwhile (`crate::interrupt`). A copy SIGKILL left behind is swept by the next run
//! that plans privately, or by `up` under the run lock; a copy in use holds an flock on its
//! `.held` file, so a concurrent `plan` never loses its own.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

/// A copy younger than this without its lock taken yet is being made: left alone.
const BEING_MADE: Duration = Duration::from_secs(60);

pub struct PrivateCopy {
    dir: tempfile::TempDir,
    _held: std::fs::File,
    _cleanup: crate::interrupt::Registration,
}

/// Where private copies live: `<state dir>/terraform/plan-copies`.
pub fn copies_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("terraform").join("plan-copies")
}

/// The plugin cache every beamops Terraform run of this project shares.
pub fn plugin_cache(state_dir: &Path) -> PathBuf {
    state_dir.join("terraform").join("plugin-cache")
}

fn try_lock(file: &std::fs::File) -> bool {
    // SAFETY: flock on a descriptor this function's caller owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the private copies no live beamops holds (a killed run's), returning their names.
pub fn sweep(state_dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(copies_dir(state_dir)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let free = match std::fs::File::open(path.join(".held")) {
            // Released when `file` drops at the end of this arm, after the removal.
            Ok(file) => try_lock(&file) && std::fs::remove_dir_all(&path).is_ok(),
            Err(_) => {
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age < BEING_MADE);
                !young && std::fs::remove_dir_all(&path).is_ok()
            }
        };
        if free {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    removed
}

impl PrivateCopy {
    /// Writes `files` (project-relative path → content) under a new private directory in
    /// `state_dir`, after sweeping the copies killed runs left.
    pub fn new(state_dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<PrivateCopy> {
        sweep(state_dir);
        let base = copies_dir(state_dir);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        for dir in [state_dir.join("terraform"), base.clone()] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", dir.display()))?;
        }
        // Registered before the directory exists, and the directory made while the slot is
        // held: a signal at any moment finds either no directory or its path.
        let slot: Arc<Mutex<Option<PathBuf>>> = Arc::default();
        let cleanup = crate::interrupt::on_interrupt({
            let slot = slot.clone();
            move || {
                if let Some(path) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        });
        let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
        // tempfile makes the directory 0700: a root's variables may be private.
        let dir = tempfile::Builder::new()
            .prefix("plan-")
            .tempdir_in(&base)
            .context("creating a private directory for terraform plan")?;
        *held = Some(dir.path().to_path_buf());
        drop(held);
        let lock = std::fs::File::create(dir.path().join(".held"))
            .context("creating the private copy's lock")?;
        anyhow::ensure!(try_lock(&lock), "the new private copy is locked already");
        for (rel, content) in files {
            anyhow::ensure!(
                !rel.starts_with('/') && !rel.split('/').any(|p| p == ".."),
                "{rel} is not a path inside the project"
            );
            let target = dir.path().join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&target, content)
                .with_context(|| format!("writing {}", target.display()))?;
        }
        Ok(PrivateCopy {
            dir,
            _held: lock,
            _cleanup: cleanup,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A project-relative path inside the copy.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Every file under `dir` (Terraform's own data and state files left out), as project-relative
/// paths under `rel`, into `out`.
pub fn read_tree(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".terraform" || name.ends_with(".tfstate") || name.ends_with(".tfstate.backup") {
            continue;
        }
        let path = entry.path();
        let child = format!("{rel}/{name}");
        if path.is_dir() {
            read_tree(&path, &child, out)?;
        } else if path.is_file() {
            out.insert(
                child,
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    Ok(())
}
