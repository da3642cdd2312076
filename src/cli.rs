//! Parsing and dispatch only: every subcommand hands its arguments to a `commands::*` function.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "beamops",
    version,
    about = "From a bare Elixir repository to a monitored, self-healing Docker Swarm cluster",
    after_help = "Exit codes: 0 done · 1 error · 2 changes pending · 3 blocked · 4 refused to protect data · 5 deploy rolled back"
)]
pub struct Cli {
    /// The project directory (default: the nearest parent with beamops.yaml).
    #[arg(
        long,
        global = true,
        env = "BEAMOPS_PROJECT",
        value_name = "DIR",
        value_hint = clap::ValueHint::DirPath
    )]
    pub project: Option<PathBuf>,
    /// The environment to act on (default: default_environment, else `local`).
    #[arg(
        long = "env",
        short = 'e',
        global = true,
        env = "BEAMOPS_ENV",
        value_name = "ENV",
        add = ArgValueCandidates::new(crate::complete::environments)
    )]
    pub environment: Option<String>,
    /// `--env` was on the command line (not only BEAMOPS_ENV): it may then not name another
    /// environment than a command's ENV argument.
    #[arg(skip)]
    pub env_on_command_line: bool,
    /// Output format; `json` is stable and documented in docs/json.md.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, env = "BEAMOPS_FORMAT")]
    pub format: Format,
    /// Print only the result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print every step and full tool output.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Confirm changes to a protected environment without asking (and `lock release`).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// How long to wait for another beamops run on this checkout (the local run lock) and for
    /// another deploy to the same swarm (the stack's deploy lock): seconds, or 30s, 10m…
    #[arg(long, global = true, default_value = "30", value_name = "DURATION", value_parser = parse_wait)]
    pub lock_wait: std::time::Duration,
    /// Why this run changes the swarm: recorded in the deploy lock, shown to whoever waits on it.
    #[arg(long, global = true, value_name = "TEXT")]
    pub message: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write beamops.yaml from mix.exs, .tool-versions and the git remote.
    Init(Lazy<InitArgs>),
    /// List the chapters and what each renders and applies.
    Chapters,
    /// Show what `up` would change: file diffs and pending actions (exit 2 when anything would
    /// change)
    Plan(Lazy<Selection>),
    /// Render and apply chapters (and the chapters they need).
    Up(Lazy<UpArgs>),
    /// Undo a chapter's actions; volumes and data stay unless --purge.
    Down(Lazy<DownArgs>),
    /// Drift: generated files edited since beamops wrote them, actions no longer satisfied.
    Status,
    /// Check the machine: tools, Docker Engine, configuration.
    Doctor,
    /// Print the project root, state dir, environment and external tools.
    Env(Lazy<EnvArgs>),
    /// List git worktrees, and remove them without ever losing work.
    Worktree(Lazy<WorktreeArgs>),
    /// Base images (Elixir builder, runtime, PostgreSQL): build them from Debian when no registry has them.
    #[command(subcommand)]
    Images(Lazy<ImagesCommand>),
    /// Find duplicated shell scripts across folders and worktrees; consolidate them; undo (a dry
    /// run by default: exit 2 when duplicates are found)
    Dedupe(Lazy<DedupeArgs>),
    /// Build, tag with the git sha, push, run the release command, roll the services out and
    /// wait; exit 5 when Swarm rolled the release back.
    Deploy(Lazy<DeployArgs>),
    /// Put the previous (or a named) successful release back, the same way deploy rolls out.
    Rollback(Lazy<RollbackArgs>),
    /// SOPS + age encrypted secrets: the key, recipients and values (chapter 07).
    #[command(subcommand)]
    Secrets(Lazy<SecretsCommand>),
    /// The stack's deploy lock on the environment's swarm: who holds it, and releasing it.
    #[command(subcommand)]
    Lock(Lazy<LockCommand>),
    /// The stack's tasks: service, slot, node, desired/current state, image, health, release.
    Ps(Lazy<PsArgs>),
    /// Service logs, each line named by its task; -f follows until Ctrl-C.
    Logs(Lazy<LogsArgs>),
    /// A remote shell into a running release: `bin/<otp_app> remote` in an app task's container.
    Console(Lazy<ConsoleArgs>),
    /// Change a service's replicas now and wait until they run (the next up/deploy restores
    /// environments.<env>.replicas, the durable setting).
    Scale(Lazy<ScaleArgs>),
    /// Print a shell's completion script: subcommands, flags, chapters and other values
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Agents claim, progress and complete work in shared JSON files: a drop-in for the legacy
    /// coordination_helper.sh, safe for many agents at once (docs/coord.md).
    Coord(Lazy<CoordArgs>),
}

/// A subcommand's arguments (or its own subcommands), defined only when clap needs them: when
/// that subcommand is parsed, or help or completions show it. Defining all ~30 subcommands on
/// every run was a fifth of `beamops plan chapter-01`'s instructions and nearly all of its peak
/// heap (0.36 MB); now a run defines the root and the one subcommand it names. Derefs to `T`.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

thread_local! {
    /// Set while [`command_for_completions`] defines the tree: [`Lazy`] then defines everything at
    /// once.
    static DEFINE_NOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `define` applied to `cmd` now, or when clap builds `cmd`.
fn define_lazily(cmd: clap::Command, define: fn(clap::Command) -> clap::Command) -> clap::Command {
    if DEFINE_NOW.get() {
        define(cmd)
    } else {
        cmd.defer(define)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        define_lazily(cmd, |cmd| keeping_about(cmd, T::augment_args))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        define_lazily(cmd, |cmd| keeping_about(cmd, T::augment_args_for_update))
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: Subcommand> Subcommand for Lazy<T> {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        define_lazily(cmd, |cmd| keeping_about(cmd, T::augment_subcommands))
    }
    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        define_lazily(cmd, |cmd| {
            keeping_about(cmd, T::augment_subcommands_for_update)
        })
    }
    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

/// `define` run on `cmd`, its about texts kept: clap's derive sets a subcommand's about (its doc
/// comment in [`Command`]) after defining the arguments, so the doc comment of an argument struct
/// (`CoordArgs`) never replaced it; defined later, it would.
fn keeping_about(cmd: clap::Command, define: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = define(cmd);
    let cmd = match about {
        Some(text) => cmd.about(text),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(text) => cmd.long_about(text),
        None => cmd.long_about(None::<&str>),
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }
    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(matches).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
    fn update_from_arg_matches_mut(
        &mut self,
        matches: &mut clap::ArgMatches,
    ) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(matches)
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Also write a cloud environment NAME (provider aws, 3 replicas; `production` is
    /// protected), repeatable: --add-env staging --add-env production. Default: only `local`.
    #[arg(long = "add-env", value_name = "NAME")]
    pub add_env: Vec<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// Chapters by name: chapter-08, 08, 8, swarm, 08-swarm (`beamops chapters` lists them);
    /// or --all.
    #[arg(value_name = "CHAPTER", add = ArgValueCandidates::new(crate::complete::chapters))]
    pub chapters: Vec<String>,
    /// Every chapter.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Plan and show diffs; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite generated files a person edited (take beamops' version).
    #[arg(long)]
    pub force: bool,
    /// Refuse instead of applying needed chapters first.
    #[arg(long)]
    pub no_deps: bool,
    /// Rebuild images without the Engine's layer cache or beamops' record of earlier builds.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: Option<String>,
    /// Deploy uncommitted changes (the image tag ends in `-dirty`; not a release to return to).
    #[arg(long)]
    pub allow_dirty: bool,
    /// Redeploy even when the commit is already live and healthy (a new release id, the
    /// release command again, the services relabelled).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: Option<String>,
    /// The release to return to: its id (`r3-1a2b3c4`) or a git sha prefix; default: the
    /// release that was live before the current one.
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The chapter whose actions to undo: chapter-08, 08, 8, swarm, 08-swarm.
    #[arg(value_name = "CHAPTER", add = ArgValueCandidates::new(crate::complete::chapters))]
    pub chapter: String,
    /// Also delete volumes and data.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Print `export NAME=value` lines for a shell.
    #[arg(long)]
    pub shell: bool,
}

#[derive(Debug, Args)]
pub struct WorktreeArgs {
    #[command(subcommand)]
    pub command: WorktreeCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorktreeCommand {
    /// Every worktree: branch, HEAD, lock, file counts, ahead/behind, merged.
    List,
    /// Remove a worktree; refuses (exit 4) while anything in it would be lost.
    Remove(WorktreeRemoveArgs),
    /// Recreate a worktree from a `remove --backup` backup.
    Restore(WorktreeRestoreArgs),
    /// Stale administrative entries; a dry run (exit 2 when any) unless --apply.
    Prune {
        /// Remove the stale entries instead of listing them.
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Args)]
pub struct WorktreeRemoveArgs {
    /// The worktree: its path, name or branch.
    #[arg(value_name = "PATH|NAME", add = ArgValueCandidates::new(crate::complete::worktrees))]
    pub worktree: String,
    /// Save what is at risk under .beamops/backups/ first, then remove.
    #[arg(long)]
    pub backup: bool,
    /// Also delete its branch, only when fully merged.
    #[arg(long)]
    pub delete_branch: bool,
}

#[derive(Debug, Args)]
pub struct WorktreeRestoreArgs {
    /// The backup directory (or its name under .beamops/backups/).
    #[arg(value_name = "BACKUP", value_hint = clap::ValueHint::DirPath)]
    pub backup: PathBuf,
    /// Recreate it here instead of where it was.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Check out this (new) branch instead of the one it had.
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
}

/// `--lock-wait`: plain seconds (as before) or a duration like 90s, 10m.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e} (e.g. 30, 90s, 10m)"))
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the deploy lock, since when, and whether it is stale.
    Status {
        /// The environment (default: --env, else default_environment).
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: Option<String>,
    },
    /// Remove the deploy lock whoever holds it; without --yes, only say what would go (exit 2).
    Release {
        /// The environment (default: --env, else default_environment).
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: Option<String>,
    /// Only this service (`app` or `<stack>_app`).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Also tasks that are no longer wanted (earlier attempts, replaced versions).
    #[arg(long, short = 'a')]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: Option<String>,
    /// Only this service (`app` or `<stack>_app`); default: every service of the stack.
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,
    /// Keep printing new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines from the last DURATION (30s, 10m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub since: Option<std::time::Duration>,
    /// The last N lines of each task.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: Option<String>,
    /// The service whose task to enter.
    #[arg(long, default_value = "app", value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The environment whose service to scale.
    #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
    pub environment: String,
    /// Replicas wanted.
    #[arg(value_name = "N")]
    pub replicas: u64,
    /// The service to scale.
    #[arg(long, default_value = "app", value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Remove release images of image.repository older than the newest deploy.keep_releases,
    /// never one a service or container uses.
    Prune {
        /// The environment whose Engine to prune (default: --env, else default_environment).
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: Option<String>,
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make sure every base image the project names is on the Engine; build absent ones from
    /// Debian's packages (debootstrap + apt) with the versions their tags name, or refuse.
    Bootstrap {
        /// Build every image again, even tags that exist.
        #[arg(long)]
        rebuild: bool,
    },
}

#[derive(Debug, Args)]
pub struct DedupeArgs {
    /// Directories to scan (default: the project root, or the git repository's root);
    /// every worktree of that repository is always added.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also treat files matching GLOB as scripts (repeatable; matched on the name and the path).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Consider every text file, not only shell scripts.
    #[arg(long)]
    pub all_files: bool,
    /// Only identical bytes: skip the normalized and near tiers.
    #[arg(long)]
    pub exact_only: bool,
    /// Similarity (0-1) from which two scripts are reported as near copies.
    #[arg(long, default_value_t = crate::dedupe::DEFAULT_THRESHOLD, value_name = "SIMILARITY")]
    pub threshold: f64,
    /// Replace exact and normalized copies with a link to their canonical (near ones never).
    #[arg(long, conflicts_with = "undo")]
    pub apply: bool,
    /// How a replaced copy points to its canonical.
    #[arg(long, value_enum, default_value_t, requires = "apply")]
    pub strategy: crate::dedupe::manifest::Strategy,
    /// Replace copies that git has no clean copy of (modified or untracked); backed up anyway.
    #[arg(long, requires = "apply")]
    pub allow_dirty: bool,
    /// Restore every file an apply replaced, from the manifest it printed.
    #[arg(long, value_name = "MANIFEST", add = ArgValueCandidates::new(crate::complete::manifests))]
    pub undo: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create your age key (outside the repository, mode 0600) and `.sops.yaml`.
    Init {
        /// More recipients (age public keys: team members, CI) to encrypt for.
        #[arg(long = "recipient", value_name = "AGE_PUBLIC_KEY")]
        recipients: Vec<String>,
    },
    /// Set KEY in secrets/ENV.enc.yaml to the value read from stdin (never from arguments).
    Set {
        /// The environment: the file is secrets/ENV.enc.yaml.
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: String,
        /// The secret's name, e.g. SECRET_KEY_BASE.
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Open secrets/ENV.enc.yaml decrypted in $EDITOR (through `sops edit`).
    Edit {
        /// The environment: the file is secrets/ENV.enc.yaml.
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: String,
    },
    /// List, add or remove recipients; every secrets file is re-encrypted for the new list.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Store NAME as a GitHub Actions secret of environment ENV (the deploy workflow's
    /// SOPS_AGE_KEY, DEPLOY_SSH_KEY), the value read from stdin, sealed for GitHub's public key.
    /// Token: GH_TOKEN, GITHUB_TOKEN or `gh auth token`.
    PushGithub {
        /// The environment: a GitHub environment of the same name on ci.repository.
        #[arg(id = ENV_POSITIONAL, value_name = "ENV", add = ArgValueCandidates::new(crate::complete::environments))]
        environment: String,
        /// The secret's name, e.g. SOPS_AGE_KEY.
        #[arg(value_name = "NAME")]
        name: String,
        /// Store it as a repository secret instead, visible to every workflow of the repository.
        #[arg(long)]
        repository_level: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// The age public keys every secrets file is encrypted for.
    List,
    /// Encrypt every secrets file for one more recipient.
    Add {
        /// The recipient's age public key (`age1…`).
        #[arg(value_name = "AGE_PUBLIC_KEY")]
        recipient: String,
    },
    /// Stop encrypting for a recipient; every secrets file is re-encrypted without it.
    Remove {
        /// The recipient's age public key (`age1…`).
        #[arg(value_name = "AGE_PUBLIC_KEY")]
        recipient: String,
    },
}

/// Parse the process's arguments.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

pub fn parse_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString>>,
) -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // clap's `help` subcommand takes no flags; `beamops help --help` means "help about help",
    // which is the top-level help (it lists `help` too).
    if args.get(1).is_some_and(|a| a == "help") {
        args.retain(|a| a != "--help" && a != "-h");
    }
    let matches = command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    cli.env_on_command_line =
        matches.value_source("environment") == Some(clap::parser::ValueSource::CommandLine);
    Ok(cli)
}

/// The id of a command's optional ENV argument. Not `environment`, the global `--env`'s: clap
/// gives a subcommand the global flag only when no argument of its own has that id, and
/// `beamops deploy --env staging` should work as `beamops --env staging deploy` does.
const ENV_POSITIONAL: &str = "env_positional";

/// The command line's definition, as help and completions show it.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Global flags are accepted everywhere (`beamops --yes down 08` and `beamops down 08 --yes`
    // both work), but a subcommand's help lists only those it reads: clap propagates a global
    // flag to a subcommand only when the subcommand has none of that id, so a hidden copy put
    // there first is what it gets (and passes on to its own subcommands). A subcommand not named
    // here lists them all.
    let hidden: Vec<(clap::Arg, &[&str])> = GLOBALS_IGNORED_BY
        .iter()
        .filter_map(|(flag, ignored_by)| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == *flag)?;
            Some((arg.clone().hide(true), *ignored_by))
        })
        .collect();
    // In place: `cmd = cmd.mut_subcommand(..)` per pair moved the whole command tree's root
    // ~30 times (0.6 M instructions of copying on every run).
    for sub in cmd.get_subcommands_mut() {
        for (arg, ignored_by) in &hidden {
            if ignored_by.contains(&sub.get_name()) {
                *sub = std::mem::take(sub).arg(arg.clone());
            }
        }
        // A [`Lazy`] subcommand defines its own arguments after these copies: they number their
        // place in help from 0, as they do when they come first.
        *sub = std::mem::take(sub).next_display_order(0);
    }
    debug_assert!(
        GLOBALS_IGNORED_BY
            .iter()
            .flat_map(|(_, names)| names.iter())
            .all(|name| cmd.find_subcommand(name).is_some()),
        "GLOBALS_IGNORED_BY names a subcommand that does not exist"
    );
    cmd
}

/// The command line with every subcommand defined at once, for a shell's completions: building
/// the root copies the tree into clap's `help` subcommand before any subcommand is built, so a
/// deferred `images` would be copied without `prune` and `bootstrap`, and `beamops help images
/// <Tab>` would offer nothing.
pub fn command_for_completions() -> clap::Command {
    DEFINE_NOW.set(true);
    let cmd = command();
    DEFINE_NOW.set(false);
    cmd
}

/// Global flags, and the subcommands that never read them.
const GLOBALS_IGNORED_BY: &[(&str, &[&str])] = &[
    (
        "yes",
        &[
            "init",
            "chapters",
            "plan",
            "status",
            "doctor",
            "env",
            "worktree",
            "images",
            "dedupe",
            "secrets",
            "ps",
            "logs",
            "console",
            "scale",
            "coord",
            "completions",
        ],
    ),
    (
        "lock_wait",
        &[
            "init",
            "chapters",
            "plan",
            "status",
            "doctor",
            "env",
            "worktree",
            "images",
            "lock",
            "ps",
            "logs",
            "console",
            "completions",
        ],
    ),
    (
        "message",
        &[
            "init",
            "chapters",
            "plan",
            "status",
            "doctor",
            "env",
            "worktree",
            "images",
            "dedupe",
            "secrets",
            "lock",
            "ps",
            "logs",
            "console",
            "coord",
            "completions",
        ],
    ),
    (
        "environment",
        &[
            "init",
            "chapters",
            "worktree",
            "dedupe",
            "coord",
            "completions",
        ],
    ),
    ("project", &["chapters", "completions"]),
];

/// Did a command line that clap refused ask for JSON? Then its usage error is answered in
/// JSON on stdout too: `--format json` or `--format=json` anywhere (also after the word clap
/// choked on), a misspelt `--frmat json`, `BEAMOPS_FORMAT=json`, or a `--format` whose value is
/// not a format at all (`--format yaml`: a caller that wants a machine format gets the one
/// there is).
pub fn json_requested(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    env: Option<std::ffi::OsString>,
) -> bool {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let known = |v: &str| matches!(v, "text" | "json");
    let mut format_given = false;
    for (i, arg) in args.iter().enumerate().skip(1) {
        if arg == "--" {
            break;
        }
        // `--frmat json`: a misspelt flag still says which format the caller reads.
        let Some(flag) = arg.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, v)) => (name, Some(v.to_string())),
            None => (flag, None),
        };
        let value = if name == "format" {
            // `--format` with no value after it (last, or before another flag) is a usage error
            // that asks for no format: it is answered in text unless BEAMOPS_FORMAT says json.
            match inline {
                Some(v) => Some(v).filter(|v| !v.is_empty()),
                None => args.get(i + 1).filter(|v| !v.starts_with('-')).cloned(),
            }
        } else if strsim::damerau_levenshtein(name, "format") <= 2 {
            let v = inline.or_else(|| args.get(i + 1).cloned());
            v.filter(|v| v == "json")
        } else {
            None
        };
        if let Some(v) = value {
            format_given = true;
            if v == "json" || !known(&v) {
                return true;
            }
        }
    }
    if format_given {
        return false;
    }
    env.is_some_and(|v| {
        let v = v.to_string_lossy();
        v == "json" || !known(&v)
    })
}

#[derive(Debug, Args)]
pub struct CoordArgs {
    /// The coordination directory (default: <state dir>/coordination; see docs/coord.md).
    #[arg(long, global = true, env = "COORDINATION_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CoordCommand,
}

/// Positional arguments as the legacy helper takes them; an empty one means its default.
#[derive(Debug, Subcommand)]
pub enum CoordCommand {
    /// Claim a new work item; prints its id (work_<digits>). Exit 0 only when stored.
    Claim {
        /// The kind of work (the legacy helper's first argument), e.g. `feature` or `bugfix`.
        work_type: String,
        /// Default: empty, as before. Any text, even one starting with `-`.
        #[arg(allow_hyphen_values = true)]
        description: Option<String>,
        /// Default: medium.
        priority: Option<String>,
        /// Default: autonomous_team.
        team: Option<String>,
    },
    /// Record progress (0-100) on a work item (empty WORK_ID: $CURRENT_WORK_ITEM).
    Progress {
        /// The work item (`work_<digits>`); empty for $CURRENT_WORK_ITEM.
        work_id: String,
        /// How far along, 0 to 100.
        #[arg(allow_hyphen_values = true)]
        percent: String,
        /// Default: in_progress.
        status: Option<String>,
    },
    /// Complete a work item and credit velocity points (no WORK_ID: $CURRENT_WORK_ITEM).
    Complete {
        /// The work item (`work_<digits>`); default $CURRENT_WORK_ITEM.
        work_id: Option<String>,
        /// Default: success. Any text, even one starting with `-`.
        #[arg(allow_hyphen_values = true)]
        result: Option<String>,
        /// Default: 5.
        #[arg(allow_hyphen_values = true)]
        velocity_points: Option<String>,
    },
    /// Register (or re-register) an agent.
    Register {
        /// The agent's id, e.g. from `beamops coord generate-id`.
        agent_id: String,
        /// Default: autonomous_team.
        team: Option<String>,
        /// Default: 100.
        #[arg(allow_hyphen_values = true)]
        capacity: Option<String>,
        /// Default: general_development.
        specialization: Option<String>,
    },
    /// Agents, active work items and velocity.
    Dashboard,
    /// Print a new unique agent id (agent_<digits>).
    GenerateId,
    /// The work items, optionally only those with one status.
    List {
        /// Only work items with this status (e.g. active, in_progress, completed).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Print (or write to PATH) a coordination_helper.sh that runs `beamops coord "$@"`.
    Shim {
        /// Where to write the script (mode 0755); default: print it.
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition when it builds it, and a run builds only the
    /// subcommand it parses ([`Lazy`]): this builds and checks every one.
    #[test]
    fn every_subcommand_is_well_defined() {
        command().debug_assert();
    }

    /// Every subcommand's help, defined late as a run defines it, reads exactly as when the
    /// whole tree is defined at once (as clap's derive does): same flags, same order, same about.
    #[test]
    fn deferred_subcommands_render_the_help_of_the_whole_tree() {
        fn help(cmd: clap::Command, words: &[String], long: bool) -> String {
            let flag = if long { "--help" } else { "-h" };
            let argv = std::iter::once("beamops")
                .chain(words.iter().map(String::as_str))
                .chain([flag]);
            let err = cmd.try_get_matches_from(argv).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{words:?}");
            err.render().to_string()
        }
        fn paths(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(path.clone());
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                path.push(sub.get_name().to_string());
                paths(sub, path, out);
                path.pop();
            }
        }
        let mut whole = command_for_completions();
        whole.build();
        let mut all = Vec::new();
        paths(&whole, &mut Vec::new(), &mut all);
        assert!(all.len() > 40, "{}", all.len());
        for words in &all {
            for long in [true, false] {
                let defined_at_once = help(command_for_completions(), words, long);
                assert_eq!(help(command(), words, long), defined_at_once, "{words:?}");
            }
        }
    }

    /// Deferred, a subcommand's arguments still parse into the same typed values.
    #[test]
    fn a_deferred_subcommand_parses_its_arguments() {
        let cli = parse_from(["beamops", "up", "08", "--dry-run", "--env", "staging"]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up: {:?}", cli.command)
        };
        assert_eq!(args.selection.chapters, ["08"]);
        assert!(args.dry_run && !args.force);
        assert_eq!(cli.environment.as_deref(), Some("staging"));
        let cli = parse_from(["beamops", "images", "prune", "local"]).unwrap();
        let Command::Images(images) = cli.command else {
            panic!("not images: {:?}", cli.command)
        };
        let ImagesCommand::Prune {
            environment,
            dry_run,
        } = &*images
        else {
            panic!("not prune: {images:?}")
        };
        assert_eq!(environment.as_deref(), Some("local"));
        assert!(!dry_run);
    }
}
