//! A private copy of a root for `beamops plan` before its files are written: the bytes `up`
//! would write (and the modules beside the root), in a temporary directory only this user can
//! read, where Terraform runs init and plan. Nothing in the project is touched; the directory
//! goes when the copy is dropped, and also when a signal ends beamops meanwhile
//! (`crate::interrupt`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

pub struct PrivateCopy {
    dir: tempfile::TempDir,
    _cleanup: crate::interrupt::Registration,
}

impl PrivateCopy {
    /// Writes `files` (project-relative path → content) under a new private directory.
    pub fn new(files: &BTreeMap<String, Vec<u8>>) -> Result<PrivateCopy> {
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
            .prefix("beamops-terraform-plan-")
            .tempdir()
            .context("creating a private directory for terraform plan")?;
        *held = Some(dir.path().to_path_buf());
        drop(held);
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
