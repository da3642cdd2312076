//! The repository's worktrees (found with git2, wherever they live), which branch each has
//! checked out, and which paths git tracks in each.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, StatusOptions};

#[derive(Debug)]
pub struct Worktree {
    /// Canonical path of the working directory.
    pub path: PathBuf,
    pub branch: String,
    pub main: bool,
    /// Paths relative to `path` that are in this worktree's index.
    pub tracked: HashSet<PathBuf>,
    /// Index entries git's status does not look at (`--assume-unchanged`, `--skip-worktree`),
    /// with the blob the index holds: their content is compared by hash instead.
    pub hidden: HashMap<PathBuf, Oid>,
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
    // git's CE_VALID (assume-unchanged) and the extended skip-worktree flag.
    const ASSUME_VALID: u16 = 0x8000;
    const SKIP_WORKTREE: u16 = 0x4000;
    let mut tracked = HashSet::new();
    let mut hidden = HashMap::new();
    if let Ok(index) = repo.index() {
        for entry in index.iter() {
            let rel = PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned());
            if entry.flags & ASSUME_VALID != 0 || entry.flags_extended & SKIP_WORKTREE != 0 {
                hidden.insert(rel.clone(), entry.id);
            }
            tracked.insert(rel);
        }
    }
    Worktree {
        path,
        branch,
        main,
        tracked,
        hidden,
    }
}

/// Which of `files` (relative to the worktree) git could not give back as they are now:
/// untracked or ignored (git holds no copy), staged or modified — from one pass over git's
/// status, plus a content hash for index entries that status is told to ignore.
pub fn uncommitted(worktree: &Worktree, files: &[&Path]) -> HashSet<PathBuf> {
    let mut dirty: HashSet<PathBuf> = files
        .iter()
        .filter(|f| !worktree.tracked.contains(**f))
        .map(|f| f.to_path_buf())
        .collect();
    let Ok(repo) = Repository::open(&worktree.path) else {
        return files.iter().map(|f| f.to_path_buf()).collect();
    };
    let mut opts = StatusOptions::new();
    opts.include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    match repo.statuses(Some(&mut opts)) {
        Ok(statuses) => {
            let wanted: HashSet<&Path> = files.iter().copied().collect();
            for s in statuses.iter() {
                if let Ok(p) = s.path().map(Path::new)
                    && wanted.contains(p)
                    && !s.status().is_empty()
                {
                    dirty.insert(p.to_path_buf());
                }
            }
        }
        Err(_) => return files.iter().map(|f| f.to_path_buf()).collect(),
    }
    for f in files {
        if let Some(blob) = worktree.hidden.get(*f) {
            let now = Oid::hash_file(ObjectType::Blob, worktree.path.join(f));
            if now.ok() != Some(*blob) {
                dirty.insert(f.to_path_buf());
            }
        }
    }
    dirty
}
