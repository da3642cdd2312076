//! The repository's worktrees (found with git2, wherever they live), which branch each has
//! checked out, and which paths git tracks in each.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::{Repository, Status};

#[derive(Debug)]
pub struct Worktree {
    /// Canonical path of the working directory.
    pub path: PathBuf,
    pub branch: String,
    pub main: bool,
    /// Paths relative to `path` that are in this worktree's index.
    pub tracked: HashSet<PathBuf>,
}

/// Every worktree of the repository that contains `dir`, the main one first; empty outside git.
pub fn discover(dir: &Path) -> Vec<Worktree> {
    let Ok(repo) = Repository::discover(dir) else {
        return Vec::new();
    };
    // A linked worktree's repository is not the main one; its common dir leads back there.
    let main = match Repository::open(repo.commondir()) {
        Ok(main) => main,
        Err(_) => repo,
    };
    let mut found = Vec::new();
    if let Some(workdir) = main.workdir().and_then(|w| w.canonicalize().ok()) {
        found.push(describe(&main, workdir, true));
    }
    if let Ok(names) = main.worktrees() {
        for name in names.iter().flatten().flatten() {
            let Ok(worktree) = main.find_worktree(name) else {
                continue;
            };
            let Ok(path) = worktree.path().canonicalize() else {
                continue; // prunable: its directory is gone
            };
            if let Ok(linked) = Repository::open_from_worktree(&worktree) {
                found.push(describe(&linked, path, false));
            }
        }
    }
    found
}

fn describe(repo: &Repository, path: PathBuf, main: bool) -> Worktree {
    let branch = match repo.head() {
        Ok(head) if head.is_branch() => head.shorthand().unwrap_or("?").to_string(),
        Ok(head) => head
            .target()
            .map(|oid| format!("(detached {})", &oid.to_string()[..7]))
            .unwrap_or_else(|| "(detached)".into()),
        Err(_) => "(no commits)".into(),
    };
    let tracked = repo
        .index()
        .map(|index| {
            index
                .iter()
                .map(|entry| PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Worktree {
        path,
        branch,
        main,
        tracked,
    }
}

/// Whether git could give back this file as it is now: tracked and unmodified.
/// Untracked and ignored files count as uncommitted, since git holds no copy of them.
pub fn has_uncommitted_changes(worktree: &Worktree, relative: &Path) -> bool {
    let Ok(repo) = Repository::open(&worktree.path) else {
        return true;
    };
    match repo.status_file(relative) {
        Ok(status) => status != Status::CURRENT,
        Err(_) => true,
    }
}
