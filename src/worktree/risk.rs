//! Everything that could be lost, or broken, by removing a worktree: one check per risk.

use std::path::Path;

use anyhow::Result;
use git2::{BranchType, Oid, Repository, RepositoryState, SubmoduleIgnore, SubmoduleStatus};
use serde::Serialize;

use super::inventory::{FileStatus, entries, open};
use super::{Repo, WorktreeInfo, links, processes};

/// How many items of one check the text report shows; JSON and the audit log keep all.
pub const SHOWN_ITEMS: usize = 20;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    MainWorktree,
    Locked,
    OperationInProgress,
    TrackedChanges,
    Untracked,
    Ignored,
    UniqueCommits,
    Submodules,
    Processes,
    LinksInto,
    BranchMerged,
}

impl CheckId {
    pub fn title(self) -> &'static str {
        match self {
            CheckId::MainWorktree => "the main worktree",
            CheckId::Locked => "locked",
            CheckId::OperationInProgress => {
                "merge, rebase, cherry-pick, revert or bisect in progress"
            }
            CheckId::TrackedChanges => "modified or staged tracked files",
            CheckId::Untracked => "untracked files",
            CheckId::Ignored => "ignored files that are not build output (would be deleted)",
            CheckId::UniqueCommits => "commits on no other branch or remote-tracking ref",
            CheckId::Submodules => "submodules with changes, or initialized",
            CheckId::Processes => "processes working inside it",
            CheckId::LinksInto => "symlinks or wrappers elsewhere that point into it",
            CheckId::BranchMerged => "branch not fully merged (--delete-branch)",
        }
    }

    /// What `--backup` saves, so that the risk no longer blocks the removal.
    pub fn backed_up_by_backup(self) -> bool {
        matches!(
            self,
            CheckId::TrackedChanges
                | CheckId::Untracked
                | CheckId::Ignored
                | CheckId::UniqueCommits
        )
    }

    pub fn fix(self) -> &'static str {
        match self {
            CheckId::MainWorktree => "the main worktree holds the repository; it is never removed",
            CheckId::Locked => "`git worktree unlock <path>` if the lock is no longer wanted",
            CheckId::OperationInProgress => {
                "finish or abort it (`git merge --abort`, `git rebase --abort`, `git bisect reset`, …)"
            }
            CheckId::TrackedChanges => "commit or stash them, or pass --backup",
            CheckId::Untracked => "commit, move or delete them, or pass --backup",
            CheckId::Ignored => {
                "move them out, add build output to worktree.allow_list in beamops.yaml, or pass --backup"
            }
            CheckId::UniqueCommits => "push or merge the branch, or pass --backup",
            CheckId::Submodules => {
                "commit and push inside each submodule; git then still refuses to remove a worktree that had submodules without --force, which beamops never uses: check, then run `git worktree remove --force` yourself. --backup does not cover submodules"
            }
            CheckId::Processes => "leave the directory (cd elsewhere) or stop those processes",
            CheckId::LinksInto => {
                "repoint or delete those links first (`beamops dedupe` can re-home wrappers)"
            }
            CheckId::BranchMerged => "merge the branch first, or drop --delete-branch",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: CheckId,
    /// `true` when nothing is at risk.
    pub ok: bool,
    /// What is at risk (paths, commits, processes, links).
    pub items: Vec<String>,
}

/// The checks for one worktree, plus the details a backup needs.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub checks: Vec<Check>,
    #[serde(skip)]
    pub files: FileStatus,
    #[serde(skip)]
    pub unique_commits: Vec<Oid>,
    /// Commits the bundle may assume (the tips of every other branch and remote-tracking ref).
    #[serde(skip)]
    pub other_tips: Vec<Oid>,
}

impl Assessment {
    pub fn failing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// Failing checks a backup cannot make safe.
    pub fn blocking(&self, backup: bool) -> Vec<&Check> {
        self.failing()
            .filter(|c| !(backup && c.check.backed_up_by_backup()))
            .collect()
    }

    pub fn get(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == id)
    }
}

pub fn assess(repo: &Repo, wt: &WorktreeInfo, delete_branch: bool) -> Result<Assessment> {
    let mut checks = Vec::new();
    let mut push = |check: CheckId, items: Vec<String>| {
        checks.push(Check {
            check,
            ok: items.is_empty(),
            items,
        });
    };
    push(
        CheckId::MainWorktree,
        if wt.main {
            vec![wt.path.display().to_string()]
        } else {
            Vec::new()
        },
    );
    push(
        CheckId::Locked,
        if wt.locked {
            vec![
                wt.lock_reason
                    .clone()
                    .unwrap_or_else(|| "(no reason given)".into()),
            ]
        } else {
            Vec::new()
        },
    );

    let wt_repo = open(&wt.path)?;
    push(CheckId::OperationInProgress, operation(&wt_repo));

    let files = FileStatus::read(&wt_repo, &repo.allow_list)?;
    let mut tracked: Vec<String> = files
        .staged
        .iter()
        .map(|p| format!("staged: {p}"))
        .chain(files.unstaged.iter().map(|p| format!("modified: {p}")))
        .chain(files.conflicted.iter().map(|p| format!("conflicted: {p}")))
        .collect();
    tracked.dedup();
    push(CheckId::TrackedChanges, tracked);
    push(CheckId::Untracked, files.untracked.clone());
    push(
        CheckId::Ignored,
        files
            .ignored_at_risk
            .iter()
            .flat_map(|p| expand(&wt.path, p))
            .collect(),
    );

    let head = wt.head.as_deref().and_then(|h| Oid::from_str(h).ok());
    let (unique, other_tips) = match head {
        Some(oid) => unique_commits(&repo.git, oid, wt.branch.as_deref())?,
        None => (Vec::new(), Vec::new()),
    };
    push(
        CheckId::UniqueCommits,
        unique
            .iter()
            .map(|oid| describe_commit(&repo.git, *oid))
            .collect(),
    );
    push(CheckId::Submodules, submodules_at_risk(&wt_repo, &wt.path));
    push(
        CheckId::Processes,
        processes::inside(&wt.path)
            .into_iter()
            .map(|r| format!("pid {} ({}) in {}", r.pid, r.command, r.cwd))
            .collect(),
    );
    let roots: Vec<_> = entries(repo)?
        .into_iter()
        .filter(|e| e.path.is_dir())
        .map(|e| e.path)
        .collect();
    push(
        CheckId::LinksInto,
        links::into(&wt.path, &roots, &repo.allow_list)
            .into_iter()
            .map(|l| {
                let kind = match l.kind {
                    links::LinkKind::Symlink => "symlink",
                    links::LinkKind::Wrapper => "wrapper",
                };
                format!("{} -> {} ({kind})", l.from.display(), l.target)
            })
            .collect(),
    );
    if delete_branch {
        push(CheckId::BranchMerged, unmerged_branch(repo, wt));
    }
    Ok(Assessment {
        checks,
        files,
        unique_commits: unique,
        other_tips,
    })
}

fn operation(repo: &Repository) -> Vec<String> {
    let state = match repo.state() {
        RepositoryState::Clean => return Vec::new(),
        RepositoryState::Merge => "merge",
        RepositoryState::Revert | RepositoryState::RevertSequence => "revert",
        RepositoryState::CherryPick | RepositoryState::CherryPickSequence => "cherry-pick",
        RepositoryState::Bisect => "bisect",
        RepositoryState::Rebase
        | RepositoryState::RebaseInteractive
        | RepositoryState::RebaseMerge => "rebase",
        RepositoryState::ApplyMailbox | RepositoryState::ApplyMailboxOrRebase => "am",
    };
    vec![state.to_string()]
}

/// An ignored directory is listed file by file, so the report says exactly what would go.
fn expand(root: &Path, relative: &str) -> Vec<String> {
    let path = root.join(relative.trim_end_matches('/'));
    if !relative.ends_with('/') {
        return vec![relative.to_string()];
    }
    let mut out = Vec::new();
    super::backup::walk_files(&path, &mut |p| {
        if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    });
    if out.is_empty() {
        out.push(relative.to_string());
    }
    out
}

/// Commits reachable from `head` but from no other local branch and no remote-tracking ref.
pub fn unique_commits(
    git: &Repository,
    head: Oid,
    branch: Option<&str>,
) -> Result<(Vec<Oid>, Vec<Oid>)> {
    let own = branch.map(|b| format!("refs/heads/{b}"));
    let mut tips = Vec::new();
    for reference in git.references()?.flatten() {
        let Ok(name) = reference.name() else {
            continue;
        };
        let counts = (name.starts_with("refs/heads/") && Some(name) != own.as_deref())
            || (name.starts_with("refs/remotes/") && !name.ends_with("/HEAD"));
        if counts && let Ok(commit) = reference.peel_to_commit() {
            tips.push(commit.id());
        }
    }
    tips.sort();
    tips.dedup();
    let mut walk = git.revwalk()?;
    walk.push(head)?;
    for tip in &tips {
        walk.hide(*tip)?;
    }
    let unique = walk.collect::<Result<Vec<_>, _>>()?;
    Ok((unique, tips))
}

fn describe_commit(git: &Repository, oid: Oid) -> String {
    let summary = git
        .find_commit(oid)
        .ok()
        .and_then(|c| c.summary().ok().flatten().map(String::from))
        .unwrap_or_default();
    format!("{} {summary}", &oid.to_string()[..12])
}

/// Submodules with changes, and initialized ones: `git worktree remove` refuses those by itself,
/// so they are reported here instead of after a backup.
fn submodules_at_risk(repo: &Repository, root: &Path) -> Vec<String> {
    let mut found: Vec<String> = match repo.submodules() {
        Ok(submodules) => submodules
            .iter()
            .filter_map(|sm| {
                let status = repo
                    .submodule_status(sm.name().ok()?, SubmoduleIgnore::None)
                    .ok()?;
                let mut why = Vec::new();
                if status.intersects(
                    SubmoduleStatus::WD_WD_MODIFIED | SubmoduleStatus::WD_INDEX_MODIFIED,
                ) {
                    why.push("modified files");
                }
                if status.contains(SubmoduleStatus::WD_UNTRACKED) {
                    why.push("untracked files");
                }
                if status.intersects(SubmoduleStatus::WD_MODIFIED | SubmoduleStatus::INDEX_MODIFIED)
                {
                    why.push("another commit checked out");
                }
                if status.intersects(
                    SubmoduleStatus::WD_ADDED
                        | SubmoduleStatus::WD_DELETED
                        | SubmoduleStatus::INDEX_ADDED
                        | SubmoduleStatus::INDEX_DELETED,
                ) {
                    why.push("added or deleted");
                }
                if why.is_empty() && root.join(sm.path()).join(".git").exists() {
                    why.push("initialized (git removes no worktree containing submodules)");
                }
                (!why.is_empty()).then(|| format!("{}: {}", sm.path().display(), why.join(", ")))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // git keeps a linked worktree's submodule repositories here, and refuses removal while it
    // exists, even after `git submodule deinit`.
    let modules = repo.path().join("modules");
    if found.is_empty() && modules.is_dir() {
        found.push(format!(
            "{}: submodule repositories (may hold unpushed submodule commits)",
            modules.display()
        ));
    }
    found
}

/// Like `git branch -d`: the branch must be contained in the default branch or its upstream.
fn unmerged_branch(repo: &Repo, wt: &WorktreeInfo) -> Vec<String> {
    let Some(branch) = &wt.branch else {
        return vec!["detached HEAD: there is no branch to delete".into()];
    };
    let Some(head) = wt.head.as_deref().and_then(|h| Oid::from_str(h).ok()) else {
        return Vec::new();
    };
    let contained_in =
        |tip: Oid| tip == head || repo.git.graph_descendant_of(tip, head).unwrap_or(false);
    let in_default = super::inventory::default_branch(repo)
        .filter(|(name, _)| name != branch)
        .is_some_and(|(_, tip)| contained_in(tip));
    let in_upstream = repo
        .git
        .find_branch(branch, BranchType::Local)
        .ok()
        .and_then(|b| b.upstream().ok())
        .and_then(|u| u.get().target())
        .is_some_and(contained_in);
    if in_default || in_upstream {
        Vec::new()
    } else {
        vec![format!(
            "{branch} is not merged into the default branch or its upstream"
        )]
    }
}
