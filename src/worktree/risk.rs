//! Everything that could be lost, or broken, by removing a worktree: one check per risk.

use std::path::Path;

use anyhow::Result;
use git2::{BranchType, Oid, Repository, RepositoryState, SubmoduleIgnore, SubmoduleStatus};
use serde::Serialize;

use super::hidden::{self, Hidden};
use super::inventory::{FileStatus, entries, open};
use super::{Repo, WorktreeInfo, links, nested, processes};

/// How many items of one check the text report shows; JSON and the audit log keep all.
pub const SHOWN_ITEMS: usize = 20;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    MainWorktree,
    Locked,
    OperationInProgress,
    TrackedChanges,
    HiddenChanges,
    Untracked,
    Ignored,
    UniqueCommits,
    Submodules,
    NestedRepos,
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
            CheckId::HiddenChanges => {
                "tracked files changed where git status does not show it (assume-unchanged, skip-worktree, stat data, core.fileMode, a change a clean filter strips)"
            }
            CheckId::Untracked => "untracked files",
            CheckId::Ignored => "ignored files that are not build output (would be deleted)",
            CheckId::UniqueCommits => {
                "commits no ref that survives the removal reaches (only this worktree's branch, HEAD, HEAD reflog or per-worktree refs hold them)"
            }
            CheckId::Submodules => "submodules with changes, or initialized",
            CheckId::NestedRepos => {
                "git repositories inside build output with work of their own (uncommitted or untracked files, stashes, commits on no remote-tracking ref)"
            }
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
                | CheckId::HiddenChanges
                | CheckId::Untracked
                | CheckId::Ignored
                | CheckId::UniqueCommits
                | CheckId::NestedRepos
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
            CheckId::HiddenChanges => {
                "`git update-index --no-assume-unchanged --no-skip-worktree <path>` shows them to git; then commit or stash them, or pass --backup (a change a clean filter strips cannot be committed: copy the file elsewhere, or pass --backup)"
            }
            CheckId::Untracked => "commit, move or delete them, or pass --backup",
            CheckId::Ignored => {
                "move them out, add build output to worktree.allow_list in beamops.yaml, or pass --backup"
            }
            CheckId::UniqueCommits => {
                "push or merge them, put a branch or tag on those only this worktree's HEAD reflog or refs/worktree/* hold, or pass --backup"
            }
            CheckId::Submodules => {
                "commit and push inside each submodule; git then still refuses to remove a worktree that had submodules without --force, which beamops never uses: check, then run `git worktree remove --force` yourself. --backup does not cover submodules"
            }
            CheckId::NestedRepos => {
                "commit and push inside each repository, move it out of the worktree, or pass --backup (saves each whole, its .git included)"
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
    /// Tracked files changed where status does not show it.
    #[serde(skip)]
    pub hidden: Vec<Hidden>,
    /// Repositories inside build output with work of their own (saved whole, `.git` included).
    #[serde(skip)]
    pub nested: Vec<nested::Nested>,
    #[serde(skip)]
    pub unique_commits: Vec<Oid>,
    /// Commits the bundle may assume (every tip that survives the removal).
    #[serde(skip)]
    pub other_tips: Vec<Oid>,
    /// Tips that die with the worktree and reach commits nothing else does, with what holds
    /// each (`HEAD`, `HEAD reflog`, `refs/worktree/x`).
    #[serde(skip)]
    pub dying_tips: Vec<(Oid, Vec<String>)>,
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
    let hidden = hidden::changes(&wt_repo, &files)?;
    push(
        CheckId::HiddenChanges,
        hidden.iter().map(Hidden::item).collect(),
    );
    push(CheckId::Untracked, files.untracked.clone());
    push(
        CheckId::Ignored,
        files
            .ignored_at_risk
            .iter()
            .flat_map(|p| expand(&wt.path, p))
            .collect(),
    );

    let reach = unique_commits(repo, wt, &wt_repo)?;
    push(
        CheckId::UniqueCommits,
        reach
            .unique
            .iter()
            .map(|oid| {
                let held = reach
                    .dying_tips
                    .iter()
                    .find(|(tip, _)| tip == oid)
                    .map(|(_, by)| format!(" (held only by: {})", by.join(", ")))
                    .unwrap_or_default();
                format!("{}{held}", describe_commit(&repo.git, *oid))
            })
            .collect(),
    );
    push(CheckId::Submodules, submodules_at_risk(&wt_repo, &wt.path));
    let nested = nested::at_risk(&wt.path, &files.ignored_allowed);
    push(
        CheckId::NestedRepos,
        nested.iter().map(nested::Nested::item).collect(),
    );
    push(
        CheckId::Processes,
        processes::inside(&wt.path)
            .into_iter()
            .map(|r| format!("pid {} ({}) in {}", r.pid, r.command, r.cwd))
            .collect(),
    );
    let worktrees: Vec<_> = entries(repo)?
        .into_iter()
        .filter(|e| e.path.is_dir())
        .map(|e| e.path)
        .collect();
    // Beyond the worktrees: the project root (where beamops.yaml is), and the directories
    // holding the worktrees, where links to "the current one" tend to live.
    let mut roots = worktrees.clone();
    if let Some(project) = &repo.project_root
        && !roots.iter().any(|r| project.starts_with(r))
    {
        roots.push(project.clone());
    }
    let mut around: Vec<_> = worktrees
        .iter()
        .chain(std::iter::once(&wt.path))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    around.sort();
    around.dedup();
    push(
        CheckId::LinksInto,
        links::into(&wt.path, &roots, &around, &repo.allow_list)
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
        hidden,
        nested,
        unique_commits: reach.unique,
        other_tips: reach.survivors,
        dying_tips: reach.dying_tips,
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

/// What removing a worktree does to the commit graph.
pub struct Reach {
    /// Commits only what dies with the worktree reaches.
    pub unique: Vec<Oid>,
    /// Every commit tip that survives the removal.
    pub survivors: Vec<Oid>,
    /// Dying tips that reach unique commits, with what holds each.
    pub dying_tips: Vec<(Oid, Vec<String>)>,
}

/// Commits that become unreachable when the worktree goes. What dies with it: its HEAD, its
/// branch (kept by the removal, but nothing else vouches for it), everything in its
/// administrative directory — the HEAD reflog, `refs/worktree/*`, `refs/bisect/*`, `ORIG_HEAD`.
/// What survives: every other ref of the repository (branches, tags, remote-tracking refs,
/// notes, the stash and each of its entries), the main worktree's HEAD and per-worktree refs,
/// and every other worktree's HEAD and per-worktree refs.
pub fn unique_commits(repo: &Repo, wt: &WorktreeInfo, wt_repo: &Repository) -> Result<Reach> {
    let git = &repo.git;
    let commit_of = |oid: Oid| -> Option<Oid> {
        git.find_object(oid, None)
            .ok()?
            .peel_to_commit()
            .ok()
            .map(|c| c.id())
    };
    let mut dying: Vec<(Oid, String)> = Vec::new();
    if let Some(head) = wt.head.as_deref().and_then(|h| Oid::from_str(h).ok()) {
        let label = match &wt.branch {
            Some(b) => format!("branch {b}"),
            None => "detached HEAD".into(),
        };
        dying.push((head, label));
    }
    if !wt.main {
        for (name, oid) in admin_tips(git, wt_repo.path()) {
            dying.push((oid, name));
        }
    }
    let own = wt.branch.as_ref().map(|b| format!("refs/heads/{b}"));
    let mut survivors = Vec::new();
    for reference in git.references()?.flatten() {
        let Ok(name) = reference.name() else {
            continue;
        };
        if Some(name) == own.as_deref() {
            continue;
        }
        if let Ok(commit) = reference.peel_to_commit() {
            survivors.push(commit.id());
        }
    }
    // Each stash entry, from the file: libgit2's reflog reader would create an empty one.
    if let Ok(text) = std::fs::read_to_string(git.path().join("logs/refs/stash")) {
        survivors.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|w| Oid::from_str(w).ok()),
        );
    }
    if !wt.main
        && let Ok(head) = git.head()
        && let Ok(commit) = head.peel_to_commit()
    {
        survivors.push(commit.id());
    }
    for other in entries(repo)? {
        if other.main || other.path == wt.path {
            continue;
        }
        let admin = git.path().join("worktrees").join(&other.name);
        survivors.extend(
            admin_tips(git, &admin)
                .into_iter()
                .filter(|(name, _)| !name.ends_with("reflog") && name != "ORIG_HEAD")
                .map(|(_, oid)| oid),
        );
    }
    let mut survivors: Vec<Oid> = survivors.into_iter().filter_map(commit_of).collect();
    survivors.sort();
    survivors.dedup();
    let mut walk = git.revwalk()?;
    let mut holders: Vec<(Oid, Vec<String>)> = Vec::new();
    for (oid, label) in dying {
        let Some(commit) = commit_of(oid) else {
            continue;
        };
        match holders.iter_mut().find(|(o, _)| *o == commit) {
            Some((_, labels)) => {
                if !labels.contains(&label) {
                    labels.push(label)
                }
            }
            None => {
                walk.push(commit)?;
                holders.push((commit, vec![label]));
            }
        }
    }
    for tip in &survivors {
        walk.hide(*tip)?;
    }
    let unique = walk.collect::<Result<Vec<_>, _>>()?;
    holders.retain(|(oid, _)| unique.contains(oid));
    Ok(Reach {
        unique,
        survivors,
        dying_tips: holders,
    })
}

/// The tips a worktree's administrative directory holds: `HEAD` (`HEAD`), every loose ref under
/// `refs/` (by name), every reflog entry under `logs/` (`<ref> reflog`) and `ORIG_HEAD`.
/// Per-worktree refs are never packed, so the files are the whole truth.
pub fn admin_tips(git: &Repository, admin: &Path) -> Vec<(String, Oid)> {
    let mut out = Vec::new();
    let resolve = |text: &str| -> Option<Oid> {
        let text = text.trim();
        match text.strip_prefix("ref:") {
            Some(target) => git.refname_to_id(target.trim()).ok(),
            None => Oid::from_str(text).ok(),
        }
    };
    for name in ["HEAD", "ORIG_HEAD"] {
        if let Ok(text) = std::fs::read_to_string(admin.join(name))
            && let Some(oid) = resolve(&text)
        {
            out.push((name.to_string(), oid));
        }
    }
    super::backup::walk_files(&admin.join("refs"), &mut |file| {
        if let (Ok(rel), Ok(text)) = (file.strip_prefix(admin), std::fs::read_to_string(file))
            && let Some(oid) = resolve(&text)
        {
            out.push((rel.to_string_lossy().into_owned(), oid));
        }
    });
    super::backup::walk_files(&admin.join("logs"), &mut |file| {
        let (Ok(rel), Ok(text)) = (
            file.strip_prefix(admin.join("logs")),
            std::fs::read_to_string(file),
        ) else {
            return;
        };
        let label = format!("{} reflog", rel.to_string_lossy());
        for line in text.lines() {
            for word in line.split_whitespace().take(2) {
                if let Ok(oid) = Oid::from_str(word)
                    && !oid.is_zero()
                {
                    out.push((label.clone(), oid));
                }
            }
        }
    });
    out
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
