use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Global;
use crate::cli::DedupeArgs;
use crate::dedupe::consolidate::{self, ApplyOptions};
use crate::dedupe::report::{DedupeReport, UndoReport};
use crate::dedupe::{self, Options, manifest, undo};
use crate::exit::Exit;
use crate::output::{Ui, emit};
use crate::project;

pub fn run(global: &Global, ui: &Ui, args: &DedupeArgs) -> Result<Exit> {
    let root = root(global)?;
    if let Some(given) = &args.undo {
        let path = manifest::resolve(&root, given)?;
        let outcome = undo::undo(&path, global.lock_wait, ui)?;
        // Other applies that never finished are named here too: each needs its own undo.
        let this = path.canonicalize().unwrap_or(path);
        let unfinished = manifest::unfinished(&root)
            .into_iter()
            .filter(|u| root.join(&u.manifest).canonicalize().ok().as_ref() != Some(&this))
            .collect();
        return emit(
            &UndoReport {
                schema: dedupe::report::REPORT_SCHEMA,
                outcome,
                unfinished,
            },
            ui,
        );
    }
    // Named before this run starts one of its own: an interrupted apply's copies are not
    // scanned again (they are symlinks or wrappers), so only its own undo gives them back.
    let unfinished = manifest::unfinished(&root);
    for u in &unfinished {
        ui.warning(format!(
            "an earlier apply did not finish (killed, or still running): {} ({} copies, {}); undo it with `{}`",
            u.manifest, u.entries, u.created, u.undo
        ));
    }
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!(
            "--threshold {}: a similarity is between 0 and 1\n  fix: e.g. --threshold 0.9",
            args.threshold
        );
    }
    let opts = Options {
        paths: args.paths.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        all_files: args.all_files,
        exact_only: args.exact_only,
        threshold: args.threshold,
    };
    let spinner = ui.spinner("scanning for duplicated scripts");
    let findings = dedupe::find(&root, &opts)?;
    spinner.finish_and_clear();
    let applied = if args.apply {
        Some(consolidate::apply(
            &findings,
            &ApplyOptions {
                strategy: args.strategy,
                allow_dirty: args.allow_dirty,
                lock_wait: global.lock_wait,
            },
            ui,
        )?)
    } else {
        None
    };
    let mut report = DedupeReport::new(&findings, applied);
    report.unfinished = unfinished;
    emit(&report, ui)
}

/// The project root when there is a beamops.yaml; otherwise the git repository's root, or the
/// working directory: dedupe is useful in any folder of scripts.
fn root(global: &Global) -> Result<PathBuf> {
    if let Ok(root) = project::find_root(global.project.as_deref()) {
        return Ok(root);
    }
    if let Some(dir) = &global.project {
        return dir
            .canonicalize()
            .with_context(|| format!("--project {}: no such directory", dir.display()));
    }
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    if let Ok(repo) = git2::Repository::discover(&cwd)
        && let Some(workdir) = repo.workdir()
    {
        return Ok(workdir.canonicalize()?);
    }
    Ok(cwd.canonicalize()?)
}
