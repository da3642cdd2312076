//! `beamops worktree list | remove | restore | prune`.

use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::cli::{WorktreeArgs, WorktreeCommand};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};
use crate::worktree::prune::{self, Stale};
use crate::worktree::remove::{self, Outcome, Removal, RemoveOptions};
use crate::worktree::restore::{self, RestoreOptions, Restored};
use crate::worktree::risk::SHOWN_ITEMS;
use crate::worktree::{Inventory, Repo};

pub fn run(global: &Global, ui: &Ui, args: &WorktreeArgs) -> Result<Exit> {
    let repo = Repo::discover(global.project.as_deref())?;
    match &args.command {
        WorktreeCommand::List => emit(&ListReport(Inventory::read(&repo)?), ui),
        WorktreeCommand::Remove(a) => {
            let wt = repo.find(&a.worktree)?;
            let removal = remove::remove(
                &repo,
                &wt,
                RemoveOptions {
                    backup: a.backup,
                    delete_branch: a.delete_branch,
                },
            )?;
            emit(&RemoveReport(removal), ui)
        }
        WorktreeCommand::Restore(a) => {
            let restored = restore::restore(
                &repo,
                &a.backup,
                &RestoreOptions {
                    path: a.path.clone(),
                    branch: a.branch.clone(),
                },
            )?;
            emit(&RestoreReport(restored), ui)
        }
        WorktreeCommand::Prune { apply } => {
            let entries = prune::stale(&repo)?;
            if *apply {
                prune::prune(&repo, &entries)?;
            }
            emit(
                &PruneReport {
                    applied: *apply,
                    entries,
                },
                ui,
            )
        }
    }
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct ListReport(pub Inventory);

impl Report for ListReport {
    fn text(&self, _ui: &Ui) -> String {
        let header = [
            "NAME",
            "PATH",
            "BRANCH",
            "HEAD",
            "STATE",
            "STAGED",
            "UNSTAGED",
            "UNTRACKED",
            "IGNORED",
            "AHEAD/BEHIND",
            "MERGED",
        ];
        let count = |n: Option<usize>| n.map_or("-".to_string(), |n| n.to_string());
        let rows: Vec<Vec<String>> = self
            .0
            .worktrees
            .iter()
            .map(|w| {
                let mut state = Vec::new();
                if w.main {
                    state.push("main".to_string());
                }
                if w.locked {
                    state.push(match &w.lock_reason {
                        Some(r) => format!("locked: {r}"),
                        None => "locked".into(),
                    });
                }
                if w.prunable {
                    state.push("prunable".into());
                }
                let files = w.files;
                vec![
                    w.name.clone(),
                    w.path.display().to_string(),
                    w.branch.clone().unwrap_or_else(|| {
                        if w.detached {
                            "(detached)".into()
                        } else {
                            "-".into()
                        }
                    }),
                    w.head
                        .as_deref()
                        .map_or("-".into(), |h| h[..h.len().min(10)].to_string()),
                    if state.is_empty() {
                        "-".into()
                    } else {
                        state.join(", ")
                    },
                    count(files.map(|f| f.staged)),
                    count(files.map(|f| f.unstaged + f.conflicted)),
                    count(files.map(|f| f.untracked)),
                    match files {
                        Some(f) if f.ignored_at_risk > 0 => {
                            format!("{} ({} at risk)", f.ignored, f.ignored_at_risk)
                        }
                        Some(f) => f.ignored.to_string(),
                        None => "-".into(),
                    },
                    match (w.ahead, w.behind) {
                        (Some(a), Some(b)) => format!("+{a}/-{b}"),
                        _ => "-".into(),
                    },
                    match w.merged {
                        Some(true) => "yes".into(),
                        Some(false) => "no".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = Paint::bold(line(header.iter().map(|h| h.to_string()).collect()));
        for row in rows {
            out += &line(row);
        }
        if let Some(default) = &self.0.default_branch {
            out += &Paint::dim(format!("merged = contained in {default}\n"));
        }
        out
    }
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct RemoveReport(pub Removal);

impl Report for RemoveReport {
    fn text(&self, _ui: &Ui) -> String {
        let r = &self.0;
        let mut out = String::new();
        match r.outcome {
            Outcome::Refused => {
                out += &format!(
                    "{} refused to remove {}: it holds work that would be lost or broken\n",
                    Paint::bad("✗"),
                    r.path.display()
                );
                for check in r.checks.iter().filter(|c| r.blocking.contains(&c.check)) {
                    out += &format!(
                        "\n  {} {} ({})\n",
                        Paint::bad("•"),
                        Paint::bold(check.check.title()),
                        check.items.len()
                    );
                    for item in check.items.iter().take(SHOWN_ITEMS) {
                        out += &format!("      {item}\n");
                    }
                    if check.items.len() > SHOWN_ITEMS {
                        out += &format!(
                            "      … and {} more (--format json lists all)\n",
                            check.items.len() - SHOWN_ITEMS
                        );
                    }
                    out += &format!("    fix: {}\n", check.check.fix());
                }
                out += "\nNothing was changed.\n";
            }
            Outcome::Removed => {
                out += &format!("{} removed {}\n", Paint::ok("✓"), r.path.display());
                for check in r.checks.iter().filter(|c| !c.ok) {
                    out += &format!(
                        "  backed up: {} ({})\n",
                        check.check.title(),
                        check.items.len()
                    );
                }
                if let Some(branch) = &r.branch_deleted {
                    out += &format!("  deleted merged branch {branch}\n");
                }
                if let (Some(dir), Some(cmd)) = (&r.backup, &r.restore_command) {
                    out += &format!("  backup: {}\n  restore with: {cmd}\n", dir.display());
                }
            }
        }
        out += &Paint::dim(format!("audit: {}\n", r.audit_log.display()));
        out
    }

    fn exit(&self) -> Exit {
        // The refusal is the result, not an error: the itemized report is what the user needs,
        // on stdout and in JSON, and exit 4 says that data was protected.
        match self.0.outcome {
            Outcome::Removed => Exit::Ok,
            Outcome::Refused => Exit::Refused,
        }
    }
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct RestoreReport(pub Restored);

impl Report for RestoreReport {
    fn text(&self, _ui: &Ui) -> String {
        let r = &self.0;
        format!(
            "{} restored {} at {}\n  branch: {}\n  HEAD: {}\n  files: {} restored, {} staged entries ({} index entries in all), {} worktree refs, {} commits from the bundle\n",
            Paint::ok("✓"),
            r.name,
            r.path.display(),
            r.branch.as_deref().unwrap_or("(detached)"),
            r.head.as_deref().unwrap_or("-"),
            r.files_restored,
            r.staged_restored,
            r.index_entries_restored,
            r.worktree_refs_restored,
            r.commits_restored
        )
    }
}

#[derive(Serialize)]
pub struct PruneReport {
    pub applied: bool,
    pub entries: Vec<Stale>,
}

impl Report for PruneReport {
    fn text(&self, _ui: &Ui) -> String {
        if self.entries.is_empty() {
            return format!("{} no stale worktree entries\n", Paint::ok("✓"));
        }
        let verb = if self.applied {
            "pruned"
        } else {
            "would prune"
        };
        let mut out = String::new();
        for e in &self.entries {
            out += &format!("  {verb} {} ({}): {}\n", e.name, e.path.display(), e.reason);
        }
        if !self.applied {
            out += "run `beamops worktree prune --apply` to prune them\n";
        }
        out
    }

    fn exit(&self) -> Exit {
        if !self.applied && !self.entries.is_empty() {
            Exit::Pending
        } else {
            Exit::Ok
        }
    }
}
