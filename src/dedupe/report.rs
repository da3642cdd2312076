//! What `beamops dedupe` prints: one summary line, then each group. The JSON form is the
//! stable schema documented in docs/json.md (`## dedupe`).

use std::path::Path;

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use super::consolidate::ApplyOutcome;
use super::manifest::{Strategy, Unfinished};
use super::scan::SymlinkEntry;
use super::undo::{UndoOutcome, canonical_changed_text};
use super::{Findings, Tier};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui};

pub const REPORT_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub files_scanned: usize,
    pub exact_groups: usize,
    pub normalized_groups: usize,
    pub near_clusters: usize,
    pub unique_after: usize,
    pub duplicate_copies: usize,
    pub reclaimable_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FileRef {
    pub path: String,
    pub worktree: Option<String>,
    pub branch: Option<String>,
    pub size: u64,
    pub tracked: bool,
    pub backup: bool,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matched: Option<Tier>,
}

#[derive(Debug, Serialize)]
pub struct GroupOut {
    pub tier: Tier,
    pub canonical: FileRef,
    pub reason: String,
    pub copies: Vec<FileRef>,
}

#[derive(Debug, Serialize)]
pub struct NearMemberOut {
    pub file: FileRef,
    pub similarity: f64,
    pub differs: String,
}

#[derive(Debug, Serialize)]
pub struct NearOut {
    pub canonical: FileRef,
    pub reason: String,
    pub members: Vec<NearMemberOut>,
}

#[derive(Debug, Serialize)]
pub struct WorktreeOut {
    pub path: String,
    pub branch: String,
    pub main: bool,
}

#[derive(Debug, Serialize)]
pub struct DedupeReport {
    pub schema: u32,
    /// `dry-run` or `apply`.
    pub mode: &'static str,
    pub exact_only: bool,
    pub root: String,
    pub summary: Summary,
    pub worktrees: Vec<WorktreeOut>,
    pub groups: Vec<GroupOut>,
    pub near: Vec<NearOut>,
    pub symlinks: Vec<SymlinkEntry>,
    pub backups: Vec<String>,
    pub errors: Vec<String>,
    pub apply: Option<ApplyOutcome>,
    /// Earlier applies still `in-progress` (killed, or running now), each with its undo.
    pub unfinished: Vec<Unfinished>,
}

impl DedupeReport {
    pub fn new(findings: &Findings, apply: Option<ApplyOutcome>) -> DedupeReport {
        let file_ref = |f: usize, matched: Option<Tier>| {
            let file = &findings.files[f];
            let worktree = findings.worktree_of(file);
            FileRef {
                path: file.display.clone(),
                worktree: worktree.map(|w| {
                    super::scan::relative_path(&findings.root, &w.path)
                        .display()
                        .to_string()
                }),
                branch: worktree.map(|w| w.branch.clone()),
                size: file.size,
                tracked: file.tracked,
                backup: file.backup,
                matched,
            }
        };
        let groups: Vec<GroupOut> = findings
            .groups
            .iter()
            .map(|g| GroupOut {
                tier: g.tier,
                canonical: file_ref(g.canonical, None),
                reason: g.reason.into(),
                copies: g
                    .copies
                    .iter()
                    .map(|&(f, t)| file_ref(f, Some(t)))
                    .collect(),
            })
            .collect();
        let near = findings
            .near
            .iter()
            .map(|c| NearOut {
                canonical: file_ref(c.canonical, None),
                reason: c.reason.into(),
                members: c
                    .members
                    .iter()
                    .map(|m| NearMemberOut {
                        file: file_ref(m.file, None),
                        similarity: (m.similarity * 1000.0).round() / 1000.0,
                        differs: m.differs.clone(),
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let summary = Summary {
            files_scanned: findings.files.len(),
            exact_groups: findings.exact_groups,
            normalized_groups: findings.normalized_groups,
            near_clusters: near.len(),
            unique_after: findings.unique_after,
            duplicate_copies: groups.iter().map(|g| g.copies.len()).sum(),
            reclaimable_bytes: groups.iter().flat_map(|g| &g.copies).map(|c| c.size).sum(),
        };
        let mut backups: Vec<String> = findings
            .files
            .iter()
            .filter(|f| f.backup)
            .map(|f| f.display.clone())
            .collect();
        backups.sort();
        let mut symlinks = findings.symlinks.clone();
        symlinks.sort_by(|a, b| a.path.cmp(&b.path));
        DedupeReport {
            schema: REPORT_SCHEMA,
            mode: if apply.is_some() { "apply" } else { "dry-run" },
            exact_only: findings.exact_only,
            root: findings.root.display().to_string(),
            summary,
            worktrees: findings
                .worktrees
                .iter()
                .map(|w| WorktreeOut {
                    path: super::scan::relative_path(&findings.root, &w.path)
                        .display()
                        .to_string(),
                    branch: w.branch.clone(),
                    main: w.main,
                })
                .collect(),
            groups,
            near,
            symlinks,
            backups,
            errors: findings.errors.clone(),
            apply,
            unfinished: Vec::new(),
        }
    }
}

fn where_text(f: &FileRef) -> String {
    match (&f.worktree, &f.branch) {
        (Some(w), Some(b)) if w == "." => format!("[main worktree @ {b}]"),
        (Some(w), Some(b)) => format!("[worktree {w} @ {b}]"),
        _ => "[outside git]".into(),
    }
}

impl Report for DedupeReport {
    fn text(&self, ui: &Ui) -> String {
        let s = &self.summary;
        let near = if self.exact_only {
            "near not searched (--exact-only)".to_string()
        } else {
            format!("{} near clusters", s.near_clusters)
        };
        let mut out = format!(
            "{} files scanned: {} exact groups, {} normalized groups, {near}; {} unique scripts after consolidation\n",
            s.files_scanned, s.exact_groups, s.normalized_groups, s.unique_after
        );
        if ui.quiet {
            // Only a result that needs attention: the summary when there are copies.
            return if s.duplicate_copies > 0 {
                out
            } else {
                String::new()
            };
        }
        for (n, g) in self.groups.iter().enumerate() {
            out += &format!(
                "\n{} {} ({} {})\n  {} {} {} {} B — {}\n",
                Paint::bold(format!("group {}", n + 1)),
                match g.tier {
                    Tier::Exact => "exact",
                    Tier::Normalized => "normalized",
                },
                g.copies.len(),
                if g.copies.len() == 1 {
                    "copy"
                } else {
                    "copies"
                },
                Paint::ok("canonical"),
                g.canonical.path,
                Paint::dim(where_text(&g.canonical)),
                g.canonical.size,
                g.reason
            );
            for c in &g.copies {
                let how = match c.matched {
                    Some(Tier::Normalized) => " (same after normalizing)",
                    _ => "",
                };
                let backup = if c.backup { " (backup-looking)" } else { "" };
                out += &format!(
                    "  copy      {} {} {} B{how}{backup}\n",
                    c.path,
                    Paint::dim(where_text(c)),
                    c.size
                );
            }
        }
        for (n, c) in self.near.iter().enumerate() {
            out += &format!(
                "\n{} (reported only, never consolidated)\n  {} {} {} — {}\n",
                Paint::bold(format!("near cluster {}", n + 1)),
                Paint::ok("canonical"),
                c.canonical.path,
                Paint::dim(where_text(&c.canonical)),
                c.reason
            );
            for m in &c.members {
                out += &format!(
                    "  ~{:.2}     {} {}: {}\n",
                    m.similarity,
                    m.file.path,
                    Paint::dim(where_text(&m.file)),
                    m.differs
                );
            }
        }
        if !self.backups.is_empty() {
            out += &format!("\n{} backup-looking copies:\n", self.backups.len());
            for b in &self.backups {
                out += &format!("  {b}\n");
            }
        }
        if !self.symlinks.is_empty() {
            out += &format!("\n{} symlinks (not followed):\n", self.symlinks.len());
            for l in &self.symlinks {
                let outside = if l.inside {
                    ""
                } else {
                    " (leads outside the scanned roots)"
                };
                out += &format!("  {} -> {}{outside}\n", l.path, l.target);
            }
        }
        for e in &self.errors {
            out += &format!("{} {e}\n", Paint::warn("unreadable:"));
        }
        match &self.apply {
            None if s.duplicate_copies > 0 => {
                out += &format!(
                    "\ndry run: `beamops dedupe --apply` would replace {} copies ({} bytes) with symlinks or wrappers\n",
                    s.duplicate_copies, s.reclaimable_bytes
                );
            }
            None => {}
            Some(a) => {
                let asked = match a.strategy {
                    Strategy::Symlink => "symlink",
                    Strategy::Wrapper => "wrapper",
                };
                let other = a
                    .decisions
                    .iter()
                    .filter(|d| d.action != "keep" && d.action != asked)
                    .count();
                let kept = a.decisions.iter().filter(|d| d.action == "keep").count();
                let mut how = format!("{}s", asked);
                if other > 0 {
                    how += &format!(
                        " ({other} as {}s, see below)",
                        if asked == "wrapper" {
                            "symlink"
                        } else {
                            "wrapper"
                        }
                    );
                }
                if kept > 0 {
                    how += &format!("; kept {kept} whose location matters");
                }
                out += &format!(
                    "\n{} replaced {} copies with {how}; manifest {}\n  undo: beamops dedupe --undo {}\n",
                    Paint::ok("✓"),
                    a.replaced.len(),
                    a.manifest,
                    a.manifest
                );
                for k in &a.skipped {
                    out += &format!(
                        "  {} {}: {}; left alone\n",
                        Paint::warn("skipped"),
                        k.path,
                        k.reason
                    );
                }
                for d in &a.decisions {
                    let what = match d.action {
                        "keep" => Paint::warn("kept"),
                        other => Paint::dim(other),
                    };
                    out += &format!("  {what} {}: {}\n", d.path, d.reason);
                }
            }
        }
        out += &unfinished_text(&self.unfinished);
        out
    }

    fn exit(&self) -> Exit {
        match &self.apply {
            None if self.summary.duplicate_copies > 0 => Exit::Pending,
            Some(a) if !a.skipped.is_empty() => Exit::Pending,
            _ => Exit::Ok,
        }
    }
}

fn unfinished_text(list: &[Unfinished]) -> String {
    let mut out = String::new();
    for u in list {
        let moved = u
            .moved_from
            .as_deref()
            .map(|m| format!(", made when the repository was at {m}"))
            .unwrap_or_default();
        out += &format!(
            "\n{} apply {} did not finish (killed, or still running; {} copies{moved}, {})\n  undo: {}\n",
            Paint::warn("unfinished:"),
            u.manifest,
            u.entries,
            u.created,
            u.undo
        );
    }
    out
}

#[derive(Debug, Serialize)]
pub struct UndoReport {
    pub schema: u32,
    #[serde(flatten)]
    pub outcome: UndoOutcome,
    /// Other applies still `in-progress`.
    pub unfinished: Vec<Unfinished>,
}

impl Report for UndoReport {
    fn text(&self, _ui: &Ui) -> String {
        let o = &self.outcome;
        let mut out = String::new();
        if let Some(from) = &o.moved_from {
            out += &format!("the repository moved from {from}: paths resolved where it is now\n");
        }
        let mark = if o.canonical_changed.is_empty() {
            Paint::ok("✓")
        } else {
            Paint::warn("!")
        };
        out += &format!(
            "{mark} restored {} files from {} ({} already held their original bytes)\n",
            o.restored.len(),
            o.manifest,
            o.unchanged.len()
        );
        if !o.canonical_changed.is_empty() {
            out += &format!(
                "{} {} canonical{} changed after the apply:{}",
                Paint::bad("look:"),
                o.canonical_changed.len(),
                if o.canonical_changed.len() == 1 {
                    ""
                } else {
                    "s"
                },
                canonical_changed_text(&o.canonical_changed)
            );
        }
        out + &unfinished_text(&self.unfinished)
    }

    /// A changed canonical needs a person: the edit may have been meant for a copy.
    fn exit(&self) -> Exit {
        if self.outcome.canonical_changed.is_empty() {
            Exit::Ok
        } else {
            Exit::Refused
        }
    }
}

/// A one-line account of how two files differ, for near pairs.
pub fn diff_summary(a: &Path, b: &Path) -> String {
    let (Ok(old), Ok(new)) = (std::fs::read(a), std::fs::read(b)) else {
        return "unreadable".into();
    };
    let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
    let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
    let (mut added, mut removed) = (0, 0);
    let mut first: Option<String> = None;
    let mut line = 0usize;
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Equal => line += 1,
            tag => {
                if tag == ChangeTag::Insert {
                    added += 1;
                } else {
                    removed += 1;
                    line += 1;
                }
                if first.is_none() {
                    let sign = if tag == ChangeTag::Insert { '+' } else { '-' };
                    let text: String = change.value().trim().chars().take(60).collect();
                    first = Some(format!("line {}: {sign}{text}", line.max(1)));
                }
            }
        }
    }
    match first {
        Some(first) => format!("+{added} -{removed} lines, first at {first}"),
        None => "same lines (differs in spacing within lines)".into(),
    }
}
