use anyhow::Result;
use serde::Serialize;

use super::{Global, select};
use crate::cli::Selection;
use crate::engine::{ActionStatus, ChapterPlan};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, colour_diff, emit};
use crate::plan::FileStatus;

#[derive(Serialize)]
pub struct PlanReport {
    pub environment: String,
    pub dry_run: bool,
    pub chapters: Vec<ChapterPlan>,
    /// `update` when `up` would rewrite beamops.lock (new records, or a lock in an older
    /// format), else `unchanged`.
    pub lock: &'static str,
}

impl Report for PlanReport {
    fn text(&self, ui: &Ui) -> String {
        let mut out = render_chapters(&self.environment, &self.chapters, ui, true);
        if self.lock == "update" {
            out += &if ui.quiet {
                format!("lock update {}\n", crate::lockfile::LOCK_FILE)
            } else {
                format!(
                    "  {} {} {}\n",
                    Paint::warn("update   "),
                    crate::lockfile::LOCK_FILE,
                    Paint::dim("(records of the files above)")
                )
            };
        }
        out
    }
    fn exit(&self) -> Exit {
        let lock = if self.lock == "update" {
            Exit::Pending
        } else {
            Exit::Ok
        };
        Exit::worst(self.chapters.iter().map(ChapterPlan::exit).chain([lock]))
    }
}

/// `diffs`: a plan (before); without, the report of an `up` that ran (after).
pub fn render_chapters(env: &str, chapters: &[ChapterPlan], ui: &Ui, diffs: bool) -> String {
    if ui.quiet {
        return render_changes(chapters, diffs);
    }
    let mut out = String::new();
    for c in chapters {
        let needed = c
            .needed_by
            .as_ref()
            .map(|t| Paint::dim(format!(" (needed by {t})")))
            .unwrap_or_default();
        out += &format!("{} {} [{env}]{needed}\n", Paint::bold(&c.label), c.title);
        if !c.implemented {
            out += &format!("  {}\n", Paint::warn("not implemented"));
            continue;
        }
        for f in &c.files {
            let label = match f.status {
                FileStatus::Create => Paint::ok("create   "),
                FileStatus::Update => Paint::warn("update   "),
                FileStatus::Unchanged => Paint::dim("unchanged"),
                FileStatus::Adopt => Paint::ok("adopt    "),
                // After an `up`, a conflict was overwritten (`--force`; without it up refuses).
                FileStatus::Conflict if !diffs => Paint::warn("overwrote"),
                FileStatus::Conflict => Paint::bad("conflict "),
                FileStatus::Stale => Paint::warn("stale    "),
            };
            let note = f
                .note
                .as_ref()
                .map(|n| Paint::dim(format!(" ({n})")))
                .unwrap_or_default();
            out += &format!("  {label} {}{note}\n", f.path);
            if diffs
                && (ui.verbose || f.status != FileStatus::Unchanged)
                && let Some(d) = &f.diff
            {
                for line in colour_diff(d).lines() {
                    out += &format!("      {line}\n");
                }
            }
        }
        for a in &c.actions {
            let label = match a.status {
                ActionStatus::Satisfied => Paint::dim("ok       "),
                ActionStatus::Applied => Paint::ok("applied  "),
                ActionStatus::Pending => Paint::warn("pending  "),
                ActionStatus::Blocked => Paint::bad("blocked  "),
                ActionStatus::Refused => Paint::bad("refused  "),
                ActionStatus::Failed => Paint::bad("failed   "),
                ActionStatus::Skipped => Paint::dim("skipped  "),
                ActionStatus::Undone => Paint::ok("undone   "),
                ActionStatus::NotImplemented => Paint::warn("not impl."),
            };
            out += &format!("  {label} {}: {}\n", a.id, a.detail);
        }
    }
    out
}

/// `-q`: one line per file or action that changes (or would), nothing else.
fn render_changes(chapters: &[ChapterPlan], before: bool) -> String {
    let mut out = String::new();
    for c in chapters {
        if !c.implemented {
            out += &format!("{} not-implemented\n", c.label);
            continue;
        }
        for f in c.files.iter().filter(|f| f.status != FileStatus::Unchanged) {
            let status = match f.status {
                FileStatus::Conflict if !before => "overwrote".to_string(),
                other => serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            };
            out += &format!("{} {status} {}\n", c.label, f.path);
        }
        for a in c
            .actions
            .iter()
            .filter(|a| !matches!(a.status, ActionStatus::Satisfied | ActionStatus::Skipped))
        {
            let status = serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out += &format!("{} {status} {}\n", c.label, a.id);
        }
    }
    out
}

pub fn run(global: &Global, ui: &Ui, sel: &Selection) -> Result<Exit> {
    let project = global.project()?;
    let engine = global.engine(&project, ui)?;
    let targets = select(sel)?;
    let chapters = engine.plan(&targets, true)?;
    let lock = lock_status(&project.root, &chapters)?;
    emit(
        &PlanReport {
            environment: engine.env_name.clone(),
            dry_run: true,
            chapters,
            lock,
        },
        ui,
    )
}

pub fn lock_status(root: &std::path::Path, chapters: &[ChapterPlan]) -> Result<&'static str> {
    let files = chapters.iter().flat_map(|c| c.files.iter());
    Ok(if crate::plan::lock_would_change(root, files)? {
        "update"
    } else {
        "unchanged"
    })
}
