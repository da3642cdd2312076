//! Stale administrative entries: `.git/worktrees/<name>` whose directory is gone.

use std::path::PathBuf;

use anyhow::{Context, Result};
use git2::WorktreePruneOptions;
use serde::Serialize;

use super::Repo;

#[derive(Debug, Clone, Serialize)]
pub struct Stale {
    pub name: String,
    pub path: PathBuf,
    /// Why git no longer considers it a worktree.
    pub reason: String,
}

/// Entries `prune` would drop. Locked ones are kept, as git keeps them (a lock is how a person
/// says "this lives on a removable disk").
pub fn stale(repo: &Repo) -> Result<Vec<Stale>> {
    let mut out = Vec::new();
    for name in repo.git.worktrees()?.iter().flatten().flatten() {
        let wt = repo.git.find_worktree(name)?;
        if wt.is_prunable(None).unwrap_or(false) {
            out.push(Stale {
                name: name.to_string(),
                path: wt.path().to_path_buf(),
                reason: wt
                    .validate()
                    .err()
                    .map(|e| e.message().to_string())
                    .unwrap_or_else(|| "invalid".into()),
            });
        }
    }
    Ok(out)
}

/// Drop the administrative files only; `working_tree(false)` leaves any directory alone.
pub fn prune(repo: &Repo, entries: &[Stale]) -> Result<()> {
    for entry in entries {
        let wt = repo.git.find_worktree(&entry.name)?;
        wt.prune(Some(
            WorktreePruneOptions::new()
                .valid(false)
                .locked(false)
                .working_tree(false),
        ))
        .with_context(|| format!("pruning worktree entry {}", entry.name))?;
    }
    Ok(())
}
