//! Removing a worktree: refuse while anything is at risk, back up on request, then let
//! `git worktree remove` (never `--force`) do the deletion as a last guard.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{BranchType, ResetType, build::CheckoutBuilder};
use serde::Serialize;

use super::audit::{self, AuditLine};
use super::backup;
use super::inventory::{FileStatus, open};
use super::risk::{self, Assessment, Check, CheckId};
use super::{Repo, WorktreeInfo, gitcli, normalize};

#[derive(Debug, Clone, Copy, Default)]
pub struct RemoveOptions {
    pub backup: bool,
    pub delete_branch: bool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Removed,
    Refused,
}

#[derive(Debug, Serialize)]
pub struct Removal {
    pub outcome: Outcome,
    pub name: String,
    pub path: PathBuf,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub checks: Vec<Check>,
    /// The failing checks that made us refuse (empty when removed).
    pub blocking: Vec<CheckId>,
    pub backup: Option<PathBuf>,
    pub restore_command: Option<String>,
    pub branch_deleted: Option<String>,
    pub audit_log: PathBuf,
}

pub fn remove(repo: &Repo, wt: &WorktreeInfo, opts: RemoveOptions) -> Result<Removal> {
    if !wt.main && (wt.prunable || !wt.path.is_dir()) {
        bail!(
            "{}: the worktree directory is gone; only its administrative entry is left\n  fix: `beamops worktree prune --apply`",
            wt.path.display()
        );
    }
    // Removal and backups need git; find out before anything is touched.
    gitcli::git()?;
    let state_dir = repo.state_dir()?;
    let assessment = risk::assess(repo, wt, opts.delete_branch)?;
    let blocking: Vec<CheckId> = assessment
        .blocking(opts.backup)
        .iter()
        .map(|c| c.check)
        .collect();
    let mut removal = Removal {
        outcome: Outcome::Refused,
        name: wt.name.clone(),
        path: wt.path.clone(),
        branch: wt.branch.clone(),
        head: wt.head.clone(),
        checks: assessment.checks.clone(),
        blocking,
        backup: None,
        restore_command: None,
        branch_deleted: None,
        audit_log: state_dir.join(audit::AUDIT_FILE),
    };
    if !removal.blocking.is_empty() {
        record(&state_dir, &removal, "refused")?;
        return Ok(removal);
    }

    if opts.backup {
        let dir = match backup::create(repo, wt, &assessment) {
            Ok(dir) => dir,
            Err(err) => {
                record(&state_dir, &removal, "failed")?;
                return Err(err);
            }
        };
        removal.restore_command = Some(format!(
            "beamops worktree restore {}",
            shown(repo, &dir).display()
        ));
        removal.backup = Some(dir);
    }
    let backup_dir = removal.backup.clone();
    let result = clear_backed_up(wt, &assessment, backup_dir.as_deref())
        .and_then(|cleared| {
            git_remove(repo, wt).map_err(|err| match (&backup_dir, cleared) {
                (Some(dir), true) => put_back(err, dir, wt),
                _ => err,
            })
        })
        .and_then(|()| delete_branch(repo, wt, opts.delete_branch));
    match result {
        Ok(deleted) => {
            removal.outcome = Outcome::Removed;
            removal.branch_deleted = deleted;
            record(&state_dir, &removal, "removed")?;
            Ok(removal)
        }
        Err(err) => {
            record(&state_dir, &removal, "failed")?;
            match &removal.backup {
                Some(dir) => Err(err.context(format!("the backup is kept at {}", dir.display()))),
                None => Err(err),
            }
        }
    }
}

/// git refused after we cleared the saved files: put them back, so the worktree is as it was
/// and not merely recoverable.
fn put_back(err: anyhow::Error, dir: &Path, wt: &WorktreeInfo) -> anyhow::Error {
    match backup::read_manifest(dir).and_then(|m| super::restore::put_back(dir, &m, &wt.path)) {
        Ok(_) => err.context("the backed-up files were put back in the worktree"),
        Err(failed) => err.context(format!(
            "putting the backed-up files back failed too ({failed:#}); `beamops worktree restore {} --path <new dir>` recovers them",
            dir.display()
        )),
    }
}

fn record(state_dir: &Path, removal: &Removal, outcome: &str) -> Result<()> {
    audit::append(
        state_dir,
        &AuditLine {
            time: audit::now(),
            user: audit::user(),
            command: "worktree remove",
            path: &removal.path,
            branch: removal.branch.as_deref(),
            head: removal.head.as_deref(),
            outcome,
            checks: &removal.checks,
            backup: removal.backup.as_deref(),
            branch_deleted: removal.branch_deleted.is_some(),
        },
    )?;
    Ok(())
}

/// A path under the main worktree, shown relative to it (how a person would type it there).
fn shown<'a>(repo: &Repo, path: &'a Path) -> &'a Path {
    repo.main_worktree
        .as_deref()
        .and_then(|m| path.strip_prefix(m).ok())
        .unwrap_or(path)
}

/// After a verified backup, put the worktree back to a clean checkout of HEAD so that plain
/// `git worktree remove` accepts it. Refuses when anything changed since the backup was taken.
/// Returns whether anything was cleared.
fn clear_backed_up(
    wt: &WorktreeInfo,
    assessment: &Assessment,
    backup: Option<&Path>,
) -> Result<bool> {
    if assessment
        .failing()
        .all(|c| c.check == CheckId::UniqueCommits)
    {
        return Ok(false);
    }
    let Some(dir) = backup else {
        bail!("internal: files at risk without a backup");
    };
    let manifest = backup::read_manifest(dir)?;
    backup::still_matches(&wt.path, &manifest)?;
    let wt_repo = open(&wt.path)?;
    let now = FileStatus::read(&wt_repo, &[])?;
    let then_paths = |s: &FileStatus| {
        let mut all: Vec<String> = s
            .staged
            .iter()
            .chain(&s.unstaged)
            .chain(&s.untracked)
            .chain(&s.ignored_at_risk)
            .chain(&s.ignored_allowed)
            .cloned()
            .collect();
        all.sort();
        all
    };
    if then_paths(&now) != then_paths(&assessment.files) {
        bail!(
            "{} changed after it was backed up; nothing was removed (the backup is kept)",
            wt.path.display()
        );
    }
    let head = wt_repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .context("the worktree has no commit to reset to")?;
    // The checkout trusts entries flagged assume-unchanged or skip-worktree and would leave
    // their (backed-up) edits for git to refuse: those files go first, and the index is made
    // fresh from HEAD, so the checkout writes them anew.
    for hidden in assessment.hidden.iter().filter(|h| h.present) {
        let full = normalize(&wt.path.join(&hidden.path));
        if full.starts_with(&wt.path) && full != wt.path {
            match full.symlink_metadata() {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&full),
                Ok(_) => std::fs::remove_file(&full),
                Err(_) => Ok(()),
            }
            .with_context(|| format!("clearing the backed-up {}", full.display()))?;
        }
    }
    let mut index = wt_repo.index()?;
    index.read_tree(&head.tree()?)?;
    index
        .write()
        .context("resetting the index before the checkout")?;
    wt_repo
        .reset(
            head.as_object(),
            ResetType::Hard,
            Some(CheckoutBuilder::new().force()),
        )
        .context("resetting the backed-up tracked files")?;
    let tree = head.tree()?;
    let files = &assessment.files;
    for rel in files
        .untracked
        .iter()
        .chain(&files.ignored_at_risk)
        .chain(&files.staged)
    {
        let trimmed = rel.trim_end_matches('/');
        if tree.get_path(Path::new(trimmed)).is_ok() {
            continue;
        }
        let full = normalize(&wt.path.join(trimmed));
        if !full.starts_with(&wt.path) || full == wt.path {
            bail!("{rel}: outside the worktree; refusing to delete it");
        }
        match full.symlink_metadata() {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&full),
            Ok(_) => std::fs::remove_file(&full),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("deleting the backed-up {}", full.display()))?;
    }
    Ok(true)
}

/// `git worktree remove` without `--force`: libgit2 can only prune, which deletes the directory
/// with no last look at it, whereas git refuses by itself if a modified or untracked file
/// appeared since our checks.
fn git_remove(repo: &Repo, wt: &WorktreeInfo) -> Result<()> {
    let run_in = backup::repo_dir(repo);
    let path = wt
        .path
        .to_str()
        .context("a worktree path that is not UTF-8")?;
    gitcli::run(&run_in, &["worktree", "remove", path], None)
        .context("git refused to remove the worktree")?;
    let listed = gitcli::listed_worktrees(&run_in)?;
    if listed.iter().any(|p| normalize(p) == wt.path) || wt.path.exists() {
        bail!(
            "{}: still present after `git worktree remove`",
            wt.path.display()
        );
    }
    Ok(())
}

/// Like `git branch -d`: only a merged branch (checked before anything was removed).
fn delete_branch(repo: &Repo, wt: &WorktreeInfo, wanted: bool) -> Result<Option<String>> {
    let (true, Some(name)) = (wanted, &wt.branch) else {
        return Ok(None);
    };
    let mut branch = repo
        .git
        .find_branch(name, BranchType::Local)
        .with_context(|| format!("finding branch {name}"))?;
    branch
        .delete()
        .with_context(|| format!("deleting branch {name}"))?;
    Ok(Some(name.clone()))
}
