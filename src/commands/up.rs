use anyhow::Result;
use serde::Serialize;

use super::plan::{PlanReport, render_chapters};
use super::{Global, select};
use crate::chapter;
use crate::cli::{DownArgs, UpArgs};
use crate::engine::{ChapterPlan, UpOptions};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};

#[derive(Serialize)]
pub struct UpReport {
    pub environment: String,
    pub chapters: Vec<ChapterPlan>,
}

impl Report for UpReport {
    /// Everything ran; an optional action that is blocked (an image no registry has) still
    /// makes the run exit 3, so a script sees what is missing.
    fn exit(&self) -> Exit {
        let blocked = self.chapters.iter().any(|c| {
            c.actions
                .iter()
                .any(|a| a.status == crate::engine::ActionStatus::Blocked)
        });
        if blocked { Exit::Blocked } else { Exit::Ok }
    }
    fn text(&self, ui: &Ui) -> String {
        let mut out = render_chapters(&self.environment, &self.chapters, ui, false);
        let changed = self.chapters.iter().any(|c| {
            c.files.iter().any(|f| f.status.is_change())
                || c.actions.iter().any(|a| {
                    matches!(
                        a.status,
                        crate::engine::ActionStatus::Applied | crate::engine::ActionStatus::Undone
                    )
                })
        });
        if ui.quiet {
            return out;
        }
        out += &if changed {
            Paint::ok("applied\n")
        } else {
            Paint::dim("nothing to do\n")
        };
        out
    }
}

pub fn run(global: &Global, ui: &Ui, args: &UpArgs) -> Result<Exit> {
    let project = global.project()?;
    let mut engine = global.engine(&project, ui)?;
    engine.no_cache = args.no_cache;
    let targets = select(&args.selection)?;
    let opts = UpOptions {
        dry_run: args.dry_run,
        force: args.force,
        no_deps: args.no_deps,
        lock_wait: global.lock_wait,
    };
    let chapters = engine.up(&targets, &opts)?;
    if args.dry_run {
        let lock = super::plan::lock_status(&project.root, &chapters)?;
        return emit(
            &PlanReport {
                environment: engine.env_name.clone(),
                dry_run: true,
                chapters,
                lock,
            },
            ui,
        );
    }
    emit(
        &UpReport {
            environment: engine.env_name.clone(),
            chapters,
        },
        ui,
    )
}

pub fn down(global: &Global, ui: &Ui, args: &DownArgs) -> Result<Exit> {
    let project = global.project()?;
    let engine = global.engine(&project, ui)?;
    let chapter = chapter::resolve(&args.chapter)?;
    let plan = engine.down(chapter, args.purge, global.lock_wait)?;
    emit(
        &UpReport {
            environment: engine.env_name.clone(),
            chapters: vec![plan],
        },
        ui,
    )
}
