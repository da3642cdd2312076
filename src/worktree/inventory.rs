//! The list model: every worktree with its branch, HEAD, lock, file counts and merge state.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use git2::{BranchType, Oid, Repository, Status, StatusOptions, WorktreeLockStatus};
use serde::Serialize;

use super::{Repo, allow_listed, canonical};

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The common git directory.
    pub repository: PathBuf,
    pub main_worktree: Option<PathBuf>,
    /// The branch "merged" is measured against.
    pub default_branch: Option<String>,
    pub worktrees: Vec<WorktreeInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorktreeInfo {
    /// The administrative name (`.git/worktrees/<name>`); the directory name for the main one.
    pub name: String,
    pub path: PathBuf,
    pub main: bool,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub detached: bool,
    pub locked: bool,
    pub lock_reason: Option<String>,
    /// Its directory or git files are gone: `worktree prune` would drop the entry.
    pub prunable: bool,
    /// `None` when the directory cannot be read.
    pub files: Option<FileCounts>,
    pub upstream: Option<String>,
    pub ahead: Option<usize>,
    pub behind: Option<usize>,
    /// Whether HEAD is contained in the default branch.
    pub merged: Option<bool>,
}

#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub staged: usize,
    pub unstaged: usize,
    pub conflicted: usize,
    pub untracked: usize,
    /// Ignored entries as `git status --ignored` shows them (a wholly ignored directory is one).
    pub ignored: usize,
    /// Ignored entries not on the allow-list: what a removal would delete without asking.
    pub ignored_at_risk: usize,
}

/// Paths (relative, `/`-separated; directories end in `/`) by what a removal would do to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStatus {
    pub staged: Vec<String>,
    pub unstaged: Vec<String>,
    pub conflicted: Vec<String>,
    /// Files of HEAD or the index missing from the working tree (nothing to archive, but restore
    /// deletes them): unstaged and staged (`git rm`) deletions.
    pub deleted: Vec<String>,
    pub untracked: Vec<String>,
    pub ignored_allowed: Vec<String>,
    pub ignored_at_risk: Vec<String>,
}

impl FileStatus {
    pub fn read(repo: &Repository, allow_list: &[String]) -> Result<FileStatus> {
        let mut opts = StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(true)
            // A wholly ignored directory (`_build/`, `node_modules/`) stays one entry: walking
            // it would cost seconds and tell nothing the allow-list does not.
            .recurse_ignored_dirs(false)
            .exclude_submodules(false)
            .renames_head_to_index(false);
        let statuses = repo
            .statuses(Some(&mut opts))
            .context("reading the worktree status")?;
        let root = repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf();
        let index = repo.index().ok();
        // libgit2 knows no sparse checkout: it reports a skip-worktree file that is absent by
        // design as deleted. Such a file is no change.
        let sparse_absent = |path: &str| {
            index
                .as_ref()
                .and_then(|i| i.get_path(Path::new(path), 0))
                .is_some_and(|e| {
                    git2::IndexEntryExtendedFlag::from_bits_truncate(e.flags_extended)
                        .is_skip_worktree()
                })
        };
        let mut out = FileStatus::default();
        for entry in statuses.iter() {
            let path = String::from_utf8_lossy(entry.path_bytes()).into_owned();
            let mut s = entry.status();
            if s.contains(Status::WT_DELETED) && sparse_absent(&path) {
                s.remove(Status::WT_DELETED);
            }
            if s.is_conflicted() {
                out.conflicted.push(path.clone());
            }
            if s.intersects(
                Status::INDEX_NEW
                    | Status::INDEX_MODIFIED
                    | Status::INDEX_DELETED
                    | Status::INDEX_RENAMED
                    | Status::INDEX_TYPECHANGE,
            ) {
                out.staged.push(path.clone());
            }
            if s.intersects(Status::WT_MODIFIED | Status::WT_TYPECHANGE | Status::WT_RENAMED) {
                out.unstaged.push(path.clone());
            }
            if s.contains(Status::WT_DELETED) {
                out.unstaged.push(path.clone());
                out.deleted.push(path.clone());
            } else if s.contains(Status::INDEX_DELETED) && !s.contains(Status::WT_NEW) {
                // `git rm`: gone from the index and the working tree alike.
                out.deleted.push(path.clone());
            }
            if s.contains(Status::WT_NEW) {
                out.untracked.push(path.clone());
            }
            if s.contains(Status::IGNORED) {
                if allow_listed(allow_list, &root, &path) {
                    out.ignored_allowed.push(path);
                } else {
                    out.ignored_at_risk.push(path);
                }
            }
        }
        Ok(out)
    }

    pub fn counts(&self) -> FileCounts {
        FileCounts {
            staged: self.staged.len(),
            unstaged: self.unstaged.len(),
            conflicted: self.conflicted.len(),
            untracked: self.untracked.len(),
            ignored: self.ignored_allowed.len() + self.ignored_at_risk.len(),
            ignored_at_risk: self.ignored_at_risk.len(),
        }
    }
}

/// HEAD as a worktree sees it.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub branch: Option<String>,
    pub oid: Option<Oid>,
    pub detached: bool,
}

impl Head {
    pub fn read(repo: &Repository) -> Head {
        let detached = repo.head_detached().unwrap_or(false);
        match repo.head() {
            Ok(head) => Head {
                branch: if detached {
                    None
                } else {
                    head.shorthand().ok().map(String::from)
                },
                oid: head.peel_to_commit().ok().map(|c| c.id()),
                detached,
            },
            // An unborn branch: HEAD names a branch without commits.
            Err(_) => Head {
                branch: repo
                    .find_reference("HEAD")
                    .ok()
                    .and_then(|r| r.symbolic_target().ok().flatten().map(String::from))
                    .map(|t| t.trim_start_matches("refs/heads/").to_string()),
                oid: None,
                detached: false,
            },
        }
    }
}

/// A worktree as git records it, before its files are looked at.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub main: bool,
    pub lock: Option<Option<String>>,
    pub prunable: bool,
}

impl Entry {
    /// The branch checked out there, without reading its files.
    pub fn branch(&self) -> Option<String> {
        Repository::open(&self.path)
            .ok()
            .and_then(|r| Head::read(&r).branch)
    }
}

pub fn entries(repo: &Repo) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    if let Some(main) = &repo.main_worktree {
        out.push(Entry {
            name: main
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "main".into()),
            path: main.clone(),
            main: true,
            lock: None,
            prunable: false,
        });
    }
    let names = repo.git.worktrees().context("listing worktrees")?;
    for name in names.iter().flatten().flatten() {
        let wt = repo
            .git
            .find_worktree(name)
            .with_context(|| format!("reading worktree {name}"))?;
        let lock = match wt.is_locked() {
            Ok(WorktreeLockStatus::Locked(reason)) => Some(
                reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty()),
            ),
            _ => None,
        };
        let path = canonical(wt.path());
        out.push(Entry {
            name: name.to_string(),
            prunable: wt.validate().is_err() && lock.is_none(),
            path,
            main: false,
            lock,
        });
    }
    Ok(out)
}

/// The default branch and its commit: `origin/HEAD`'s branch, `init.defaultBranch`, `main`,
/// `master`, then whatever the main worktree has checked out.
pub fn default_branch(repo: &Repo) -> Option<(String, Oid)> {
    let git = &repo.git;
    let local = |name: &str| {
        git.find_branch(name, BranchType::Local)
            .ok()
            .and_then(|b| b.get().peel_to_commit().ok())
            .map(|c| (name.to_string(), c.id()))
    };
    if let Ok(origin_head) = git.find_reference("refs/remotes/origin/HEAD")
        && let Ok(Some(target)) = origin_head.symbolic_target()
    {
        let short = target.trim_start_matches("refs/remotes/origin/");
        if let Some(found) = local(short) {
            return Some(found);
        }
        if let Ok(commit) = origin_head.peel_to_commit() {
            return Some((format!("origin/{short}"), commit.id()));
        }
    }
    let configured = git
        .config()
        .ok()
        .and_then(|c| c.get_string("init.defaultBranch").ok());
    configured
        .as_deref()
        .and_then(local)
        .or_else(|| local("main"))
        .or_else(|| local("master"))
        .or_else(|| {
            let main = repo.main_worktree.as_ref()?;
            let head = Head::read(&Repository::open(main).ok()?);
            Some((head.branch?, head.oid?))
        })
}

impl Inventory {
    pub fn read(repo: &Repo) -> Result<Inventory> {
        let default = default_branch(repo);
        let mut worktrees = Vec::new();
        for entry in entries(repo)? {
            worktrees.push(describe(repo, entry, default.as_ref().map(|d| d.1))?);
        }
        Ok(Inventory {
            repository: canonical(repo.git.path()),
            main_worktree: repo.main_worktree.clone(),
            default_branch: default.map(|d| d.0),
            worktrees,
        })
    }
}

pub fn describe(repo: &Repo, entry: Entry, default: Option<Oid>) -> Result<WorktreeInfo> {
    let opened = if entry.prunable || !entry.path.is_dir() {
        None
    } else {
        Repository::open(&entry.path).ok()
    };
    let head = opened.as_ref().map(Head::read).unwrap_or_default();
    let files = match &opened {
        Some(r) => Some(FileStatus::read(r, &repo.allow_list)?.counts()),
        None => None,
    };
    let mut upstream = None;
    let (mut ahead, mut behind) = (None, None);
    if let Some(branch) = &head.branch
        && let Ok(local) = repo.git.find_branch(branch, BranchType::Local)
        && let Ok(up) = local.upstream()
    {
        upstream = up.name().ok().flatten().map(String::from);
        if let (Some(ours), Some(theirs)) = (head.oid, up.get().target())
            && let Ok((a, b)) = repo.git.graph_ahead_behind(ours, theirs)
        {
            ahead = Some(a);
            behind = Some(b);
        }
    }
    let merged = match (head.oid, default) {
        (Some(ours), Some(base)) => {
            Some(ours == base || repo.git.graph_descendant_of(base, ours).unwrap_or(false))
        }
        _ => None,
    };
    Ok(WorktreeInfo {
        name: entry.name,
        path: entry.path,
        main: entry.main,
        branch: head.branch,
        head: head.oid.map(|o| o.to_string()),
        detached: head.detached,
        locked: entry.lock.is_some(),
        lock_reason: entry.lock.flatten(),
        prunable: entry.prunable,
        files,
        upstream,
        ahead,
        behind,
        merged,
    })
}

/// Open a worktree's own repository view (its HEAD, index and status).
pub fn open(path: &Path) -> Result<Repository> {
    Repository::open(path).with_context(|| format!("opening the worktree at {}", path.display()))
}
