//! `deploy` and `rollback`: parse, call `crate::deploy`, emit its report.

use anyhow::Result;

use super::Global;
use crate::cli::{DeployArgs, RollbackArgs};
use crate::deploy::{self, DeployReport, Options, record::Kind};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};

impl Report for DeployReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut judged = String::new();
        for line in &self.interrupted {
            judged += &format!("  judged an interrupted run first: {line}\n");
        }
        if !self.changed {
            let sha = &self.git_sha[..self.git_sha.len().min(12)];
            return format!(
                "{} nothing to deploy in {}: {} (git {sha}) is live and healthy, and the stack file changes nothing\n{judged}  no release command ran, no service changed, no release was recorded; `beamops deploy {} --force` redeploys it\n",
                Paint::ok("✓"),
                self.environment,
                Paint::bold(&self.release),
                self.environment
            );
        }
        let verb = match self.kind {
            Kind::Deploy => "deployed",
            Kind::Rollback => "rolled back to",
        };
        let sha = &self.git_sha[..self.git_sha.len().min(12)];
        let mut out = format!(
            "{} {} in {}: {} (git {sha})\n",
            Paint::ok(verb),
            Paint::bold(&self.release),
            self.environment,
            self.image
        );
        if let Some(before) = &self.previous_release {
            out += &format!("  previously live: {before}\n");
        }
        out += &judged;
        if let Some(pushed) = &self.pushed {
            out += &format!("  pushed {pushed}\n");
        }
        if let Some(job) = &self.release_command {
            out += &format!(
                "  release command `{}` succeeded ({:.1}s)\n",
                job.command, job.seconds
            );
        }
        if !self.updated.is_empty() {
            out += &format!(
                "  updated {}; converged in {:.1}s\n",
                self.updated.join(", "),
                self.converge_seconds
            );
        }
        if !self.unchanged.is_empty() {
            out += &format!("  unchanged {}\n", self.unchanged.join(", "));
        }
        if !self.pruned_images.is_empty() {
            out += &format!(
                "  removed old release images: {}\n",
                self.pruned_images.join(", ")
            );
        }
        if !self.pruned_secrets.is_empty() {
            out += &format!(
                "  removed unused secret versions: {}\n",
                self.pruned_secrets.join(", ")
            );
        }
        out += &Paint::dim(format!("  {:.1}s in all\n", self.seconds));
        out
    }
}

fn options(global: &Global, allow_dirty: bool, force: bool) -> Options {
    Options {
        allow_dirty,
        force,
        lock_wait: global.lock_wait,
        yes: global.yes,
        message: global.message.clone(),
    }
}

/// The environment: the positional one, else `--env`, else the default.
fn environment(
    global: &Global,
    positional: &Option<String>,
    project: &crate::project::Project,
) -> Result<String> {
    Ok(global
        .env_given(positional.as_deref())?
        .unwrap_or_else(|| project.config.default_environment_name().to_string()))
}

pub fn run(global: &Global, ui: &Ui, args: &DeployArgs) -> Result<Exit> {
    let project = global.project()?;
    let env = environment(global, &args.environment, &project)?;
    let report = deploy::deploy(
        &project,
        &env,
        ui,
        &options(global, args.allow_dirty, args.force),
    )?;
    emit(&report, ui)
}

pub fn rollback(global: &Global, ui: &Ui, args: &RollbackArgs) -> Result<Exit> {
    let project = global.project()?;
    let env = environment(global, &args.environment, &project)?;
    let report = deploy::rollback(
        &project,
        &env,
        ui,
        &options(global, false, false),
        args.to.as_deref(),
    )?;
    emit(&report, ui)
}
