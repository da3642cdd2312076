//! Parsing and dispatch only: every subcommand hands its arguments to a `commands::*` function.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    #[arg(long, global = true, env = "BEAMOPS_PROJECT", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// The environment to act on (default: default_environment, else `local`).
    #[arg(
        long = "env",
        short = 'e',
        global = true,
        env = "BEAMOPS_ENV",
        value_name = "ENV"
    )]
    pub environment: Option<String>,
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
    Init,
    /// List the chapters and what each renders and applies.
    Chapters,
    /// Show what `up` would change: file diffs and pending actions. Exit 2 when anything would.
    Plan(Selection),
    /// Render and apply chapters (and the chapters they need).
    Up(UpArgs),
    /// Undo a chapter's actions; volumes and data stay unless --purge.
    Down(DownArgs),
    /// Drift: generated files edited since beamops wrote them, actions no longer satisfied.
    Status,
    /// Check the machine: tools, Docker Engine, configuration.
    Doctor,
    /// Print the project root, state dir, environment and external tools.
    Env(EnvArgs),
    /// List git worktrees, and remove them without ever losing work.
    Worktree(WorktreeArgs),
    /// Base images (Elixir builder, runtime, PostgreSQL): build them from Debian when no registry has them.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Find duplicated shell scripts across folders and worktrees; consolidate them; undo.
    /// Dry run by default: exit 2 when duplicates are found.
    Dedupe(DedupeArgs),
    /// Build, tag with the git sha, push, run the release command, roll the services out and
    /// wait; exit 5 when Swarm rolled the release back.
    Deploy(DeployArgs),
    /// Put the previous (or a named) successful release back, the same way deploy rolls out.
    Rollback(RollbackArgs),
    /// SOPS + age encrypted secrets: the key, recipients and values (chapter 07).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The stack's deploy lock on the environment's swarm: who holds it, and releasing it.
    #[command(subcommand)]
    Lock(LockCommand),
    /// The stack's tasks: service, slot, node, desired/current state, image, health, release.
    Ps(PsArgs),
    /// Service logs, each line named by its task; -f follows until Ctrl-C.
    Logs(LogsArgs),
    /// A remote shell into a running release: `bin/<otp_app> remote` in an app task's container.
    Console(ConsoleArgs),
    /// Change a service's replicas now and wait until they run (the next up/deploy restores
    /// environments.<env>.replicas, the durable setting).
    Scale(ScaleArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Agents claim, progress and complete work in shared JSON files: a drop-in for the legacy
    /// coordination_helper.sh, safe for many agents at once (docs/coord.md).
    Coord(CoordArgs),
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Chapters by name: chapter-08, 08, 8, swarm, 08-swarm.
    #[arg(value_name = "CHAPTER", required_unless_present = "all")]
    pub chapters: Vec<String>,
    /// Every chapter.
    #[arg(long, conflicts_with = "chapters")]
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
    #[arg(value_name = "ENV")]
    pub environment: Option<String>,
    /// Deploy uncommitted changes (the image tag ends in `-dirty`; not a release to return to).
    #[arg(long)]
    pub allow_dirty: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment (default: --env, else default_environment).
    #[arg(value_name = "ENV")]
    pub environment: Option<String>,
    /// The release to return to: its id (`r3-1a2b3c4`) or a git sha prefix; default: the
    /// release that was live before the current one.
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[arg(value_name = "CHAPTER")]
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
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Args)]
pub struct WorktreeRemoveArgs {
    /// The worktree: its path, name or branch.
    #[arg(value_name = "PATH|NAME")]
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
    #[arg(value_name = "BACKUP")]
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
        #[arg(value_name = "ENV")]
        environment: Option<String>,
    },
    /// Remove the deploy lock whoever holds it; without --yes, only say what would go (exit 2).
    Release {
        #[arg(value_name = "ENV")]
        environment: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(value_name = "ENV")]
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
    #[arg(value_name = "ENV")]
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
    #[arg(value_name = "ENV")]
    pub environment: Option<String>,
    /// The service whose task to enter.
    #[arg(long, default_value = "app", value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[arg(value_name = "ENV")]
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
        #[arg(value_name = "ENV")]
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
    #[arg(long, value_name = "MANIFEST")]
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
        #[arg(value_name = "ENV")]
        environment: String,
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Open secrets/ENV.enc.yaml decrypted in $EDITOR (through `sops edit`).
    Edit {
        #[arg(value_name = "ENV")]
        environment: String,
    },
    /// List, add or remove recipients; every secrets file is re-encrypted for the new list.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    List,
    Add {
        #[arg(value_name = "AGE_PUBLIC_KEY")]
        recipient: String,
    },
    Remove {
        #[arg(value_name = "AGE_PUBLIC_KEY")]
        recipient: String,
    },
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
        work_id: String,
        #[arg(allow_hyphen_values = true)]
        percent: String,
        /// Default: in_progress.
        status: Option<String>,
    },
    /// Complete a work item and credit velocity points (no WORK_ID: $CURRENT_WORK_ITEM).
    Complete {
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
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Print (or write to PATH) a coordination_helper.sh that runs `beamops coord "$@"`.
    Shim {
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
}
