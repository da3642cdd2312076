//! One function per subcommand: load what it needs, call the domain, emit one typed report.

mod chapters;
mod coord;
mod dedupe;
mod deploy;
mod doctor;
mod env;
mod images;
mod init;
mod lock;
mod ops;
mod plan;
mod secrets;
mod status;
mod up;
mod worktree;

use std::time::Duration;

use anyhow::Result;

use crate::chapter::{self, Manifest};
use crate::cli::{Cli, Command, Selection};
use crate::engine::Engine;
use crate::exit::Exit;
use crate::output::Ui;
use crate::project::Project;

pub fn run(cli: Cli) -> Result<Exit> {
    // ssh tunnels opened for ssh:// engines live exactly as long as the command.
    let _tunnels = crate::docker::ssh::CloseOnDrop;
    let ui = Ui::new(cli.format, cli.quiet, cli.verbose);
    // Extra chapters (BEAMOPS_CHAPTERS_DIR) that do not load stop every command, naming why.
    crate::chapter::check_extra()?;
    let global = Global {
        project: cli.project.clone(),
        environment: cli.environment.clone(),
        env_on_command_line: cli.env_on_command_line,
        yes: cli.yes,
        lock_wait: cli.lock_wait,
        message: cli.message.clone(),
    };
    match cli.command {
        Command::Init(args) => init::run(&global, &ui, &args),
        Command::Chapters => chapters::run(&ui),
        Command::Plan(sel) => plan::run(&global, &ui, &sel),
        Command::Up(args) => up::run(&global, &ui, &args),
        Command::Down(args) => up::down(&global, &ui, &args),
        Command::Status => status::run(&global, &ui),
        Command::Doctor => doctor::run(&global, &ui),
        Command::Env(args) => env::run(&global, &ui, args.shell),
        Command::Worktree(args) => worktree::run(&global, &ui, &args),
        Command::Images(args) => images::run(&global, &ui, &args),
        Command::Dedupe(args) => dedupe::run(&global, &ui, &args),
        Command::Deploy(args) => deploy::run(&global, &ui, &args),
        Command::Rollback(args) => deploy::rollback(&global, &ui, &args),
        Command::Secrets(args) => secrets::run(&global, &ui, &args),
        Command::Lock(args) => lock::run(&global, &ui, &args),
        Command::Ps(args) => ops::ps(&global, &ui, &args),
        Command::Logs(args) => ops::logs(&global, &ui, &args),
        Command::Console(args) => ops::console(&global, &ui, &args),
        Command::Scale(args) => ops::scale(&global, &ui, &args),
        Command::Coord(args) => coord::run(&global, &ui, &args),
        Command::Completions { shell } => {
            // The registration of a shell function that asks beamops itself on Tab, so chapters,
            // environments, worktrees and manifests complete from the project at hand.
            // Into a buffer first: clap_complete's writers panic when stdout is closed.
            let mut script = Vec::new();
            let name = shell.to_string();
            let shells = clap_complete::env::Shells::builtins();
            let completer = shells
                .completer(&name)
                .ok_or_else(|| anyhow::anyhow!("no completions for the shell `{name}`"))?;
            let bin = std::env::current_exe()
                .ok()
                .filter(|p| p.is_file())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "beamops".into());
            completer.write_registration(
                crate::complete::VAR,
                "beamops",
                &bin,
                &bin,
                &mut script,
            )?;
            crate::output::write_stdout(&script)?;
            Ok(Exit::Ok)
        }
    }
}

/// The global flags every command may need.
pub struct Global {
    pub project: Option<std::path::PathBuf>,
    pub environment: Option<String>,
    /// `--env` was given on the command line, not only through BEAMOPS_ENV.
    pub env_on_command_line: bool,
    pub yes: bool,
    pub lock_wait: Duration,
    pub message: Option<String>,
}

impl Global {
    pub fn project(&self) -> Result<Project> {
        Project::discover(self.project.as_deref())
    }

    pub fn engine<'a>(&self, project: &'a Project, ui: &'a Ui) -> Result<Engine<'a>> {
        let name = self
            .environment
            .clone()
            .unwrap_or_else(|| project.config.default_environment_name().to_string());
        let mut engine = Engine::new(project, &name, ui)?;
        engine.yes = self.yes;
        engine.message = self.message.clone();
        Ok(engine)
    }

    /// The environment a command acts on: its ENV argument, else --env, else the default;
    /// it must exist in beamops.yaml.
    pub fn env_name(&self, project: &Project, positional: Option<&str>) -> Result<String> {
        let name = self
            .env_given(positional)?
            .unwrap_or_else(|| project.config.default_environment_name().to_string());
        project.config.require_environment(&name)?;
        Ok(name)
    }

    /// The environment the command line names: ENV, else `--env` (or BEAMOPS_ENV). ENV and a
    /// `--env` typed beside it that disagree are an error, never one silently chosen over
    /// the other: a deploy must not guess its target.
    pub fn env_given(&self, positional: Option<&str>) -> Result<Option<String>> {
        match (positional, &self.environment) {
            (Some(arg), Some(flag)) if self.env_on_command_line && arg != flag => {
                anyhow::bail!(
                    "two environments given: ENV `{arg}` and --env `{flag}`\n  fix: name one of them"
                )
            }
            (Some(arg), _) => Ok(Some(arg.to_string())),
            (None, flag) => Ok(flag.clone()),
        }
    }
}

pub fn select(sel: &Selection) -> Result<Vec<&'static Manifest>> {
    if sel.all {
        return Ok(chapter::all());
    }
    sel.chapters.iter().map(|n| chapter::resolve(n)).collect()
}
