//! The deploy lock: one Docker config object per stack, `<stack>_beamops-lock`, on the target
//! swarm itself, so CI runners and laptops that deploy to the same swarm see the same lock.
//!
//! Why a config: its creation goes through the managers' raft store, and a second create with
//! the same name fails (409) — an atomic test-and-set no local file can give across machines
//! (`a_second_create_of_the_same_config_name_fails` checks it). The holder is in its labels.
//!
//! A killed run (kill -9, a closed laptop lid on CI) cannot remove its lock. The holder's labels
//! say where it ran: host, kernel boot id, PID namespace, PID and that process's start time. A
//! waiter on the same host, boot and PID namespace whose holder PID is gone, or now names
//! another process (a different start time), knows for certain the holder died: it removes that
//! lock (by id, so only that one) and takes it, saying so. Anything it cannot prove dead is
//! never taken: a lock older than `deploy.lock_timeout`, or from a boot of this host that is
//! over, is reported STALE, and `beamops lock release ENV --yes` is the deliberate way out.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bollard::models::ConfigSpec;
use serde::Serialize;

use crate::docker::{self, Daemon, is_not_found};
use crate::exit::Failure;

const LABEL_PREFIX: &str = "beamops.lock.";
/// Marks the object as a beamops deploy lock (and nothing a stack converge would own).
pub const KIND_LABEL: &str = "beamops.lock";

/// The config object's name for a stack's lock.
pub fn lock_name(stack: &str) -> String {
    format!("{stack}_beamops-lock")
}

/// Who takes the lock: enough for a teammate to find the run that holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Holder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The CI run, when there is one: GITHUB_RUN_ID, CI_JOB_ID (GitLab), BUILD_ID, or
    /// BEAMOPS_RUN_ID for anything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `--message`: why this run changes the swarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The command that holds it (`up`, `deploy`…).
    pub command: String,
    /// `/proc/sys/kernel/random/boot_id` of the holder's host: a PID means something only
    /// within one boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (`/proc/self/ns/pid`): containers on one host share the boot
    /// id but not their PIDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// The holder process's start time (clock ticks after boot, `/proc/PID/stat` field 22): a
    /// PID reused by another process has another start time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// Whether a lock's holder is certainly gone, as far as this process can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Same host, boot and PID namespace, and the process is there: it holds the lock.
    Alive,
    /// Same host, boot and PID namespace, and the PID is gone or names another process.
    Dead(String),
    /// Same host, but an earlier boot: dead too, but taken over only deliberately.
    Rebooted,
    /// Another host or PID namespace (or an older beamops's lock): nothing to check here.
    Unknown,
}

impl Holder {
    /// Whether the holder process still runs, seen from `me` (this process).
    pub fn liveness(&self, me: &Holder) -> Liveness {
        if self.host != me.host {
            return Liveness::Unknown;
        }
        match (&self.boot_id, &me.boot_id) {
            (Some(theirs), Some(ours)) if theirs != ours => return Liveness::Rebooted,
            (Some(_), Some(_)) => {}
            _ => return Liveness::Unknown,
        }
        if self.pid_ns.is_none() || self.pid_ns != me.pid_ns || self.pid == 0 {
            return Liveness::Unknown;
        }
        match (process_start(self.pid), self.pid_start) {
            (None, _) => Liveness::Dead(format!("pid {} is gone", self.pid)),
            (Some(now), Some(then)) if now != then => Liveness::Dead(format!(
                "pid {} now belongs to another process (started at tick {now}, not {then})",
                self.pid
            )),
            _ => Liveness::Alive,
        }
    }

    /// This very process (a `deploy` whose chapters take the lock again).
    fn is_this_process(&self, me: &Holder) -> bool {
        self.host == me.host
            && self.pid == me.pid
            && self.boot_id == me.boot_id
            && self.pid_ns == me.pid_ns
            // A lock written by an older beamops has no start time: the PID must do.
            && (self.pid_start.is_none() || self.pid_start == me.pid_start)
    }
}

/// The kernel's id of this boot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// This process's PID namespace, as `pid:[4026531836]`.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.display().to_string())
}

/// A process's start time in clock ticks after boot; none when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'; fields are
    // counted after its last ')'. starttime is field 22, the 20th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The name of this process's user from the password database (getpwuid_r), for a holder
/// started without `$USER` (cron, systemd units, `env -i`).
fn uid_name() -> Option<String> {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into the buffers given, and the
    // strings it points `pwd` at live in `buf`, read before `buf` goes.
    unsafe {
        let uid = libc::getuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return Some(format!("uid {uid}"));
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .into_owned();
        Some(if name.is_empty() {
            format!("uid {uid}")
        } else {
            name
        })
    }
}

impl Holder {
    /// This process, from the environment it runs in.
    pub fn current(command: &str, message: Option<String>) -> Holder {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let run_id = ["GITHUB_RUN_ID", "CI_JOB_ID", "BUILD_ID", "BEAMOPS_RUN_ID"]
            .iter()
            .find_map(|name| {
                var(name).map(|v| {
                    if *name == "GITHUB_RUN_ID" {
                        // The attempt tells a re-run from the first run.
                        match var("GITHUB_RUN_ATTEMPT") {
                            Some(a) => format!("github:{v}/{a}"),
                            None => format!("github:{v}"),
                        }
                    } else {
                        format!("{}:{v}", name.trim_end_matches("_ID").to_ascii_lowercase())
                    }
                })
            });
        Holder {
            user: var("USER")
                .or_else(|| var("LOGNAME"))
                .or_else(|| var("GITHUB_ACTOR"))
                .or_else(|| var("GITLAB_USER_LOGIN"))
                .or_else(uid_name)
                .unwrap_or_else(|| "unknown".into()),
            host: hostname(),
            pid: std::process::id(),
            run_id,
            message: message.filter(|m| !m.trim().is_empty()),
            command: command.to_string(),
            boot_id: boot_id(),
            pid_ns: pid_namespace(),
            pid_start: process_start(std::process::id()),
        }
    }

    fn labels(&self, since: &str) -> std::collections::HashMap<String, String> {
        let mut labels = std::collections::HashMap::from([
            (KIND_LABEL.to_string(), "deploy".to_string()),
            (format!("{LABEL_PREFIX}user"), self.user.clone()),
            (format!("{LABEL_PREFIX}host"), self.host.clone()),
            (format!("{LABEL_PREFIX}pid"), self.pid.to_string()),
            (format!("{LABEL_PREFIX}command"), self.command.clone()),
            (format!("{LABEL_PREFIX}since"), since.to_string()),
        ]);
        if let Some(run) = &self.run_id {
            labels.insert(format!("{LABEL_PREFIX}run_id"), run.clone());
        }
        if let Some(message) = &self.message {
            labels.insert(format!("{LABEL_PREFIX}message"), message.clone());
        }
        if let Some(boot) = &self.boot_id {
            labels.insert(format!("{LABEL_PREFIX}boot_id"), boot.clone());
        }
        if let Some(ns) = &self.pid_ns {
            labels.insert(format!("{LABEL_PREFIX}pid_ns"), ns.clone());
        }
        if let Some(start) = self.pid_start {
            labels.insert(format!("{LABEL_PREFIX}pid_start"), start.to_string());
        }
        labels
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// A lock as found on the swarm.
#[derive(Debug, Clone, Serialize)]
pub struct Lock {
    /// The config object's id: a release removes exactly this object.
    pub id: String,
    pub name: String,
    pub holder: Holder,
    /// RFC 3339, as the holder wrote it.
    pub since: String,
    pub age_seconds: u64,
    /// Older than `deploy.lock_timeout`, or its holder is gone: never taken over silently
    /// (except from a holder proven dead, see the module's doc).
    pub stale: bool,
    /// Why it is stale, when its holder was checked: "pid 4242 is gone", "this host rebooted".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reason: Option<String>,
    /// The holder runs on this host and is alive (checked through /proc).
    #[serde(skip)]
    pub holder_alive: bool,
}

impl Lock {
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{}@{} (pid {}, `beamops {}`",
            self.holder.user, self.holder.host, self.holder.pid, self.holder.command
        );
        if let Some(run) = &self.holder.run_id {
            text += &format!(", run {run}");
        }
        text += &format!(
            ") since {} ({} ago)",
            self.since,
            humantime::format_duration(Duration::from_secs(self.age_seconds))
        );
        if let Some(message) = &self.holder.message {
            text += &format!(": \"{message}\"");
        }
        if self.stale {
            text += " — STALE";
            if let Some(reason) = &self.stale_reason {
                text += &format!(" ({reason})");
            }
        }
        text
    }

    /// Checks the holder from this process (`me`): a dead or rebooted holder makes it stale.
    pub fn judge(&mut self, me: &Holder) -> Liveness {
        let liveness = self.holder.liveness(me);
        match &liveness {
            Liveness::Dead(reason) => {
                self.stale = true;
                self.stale_reason = Some(reason.clone());
            }
            Liveness::Rebooted => {
                self.stale = true;
                self.stale_reason = Some(format!("{} rebooted since", self.holder.host));
            }
            Liveness::Alive => self.holder_alive = true,
            Liveness::Unknown if self.stale => {
                self.stale_reason = Some(format!(
                    "older than deploy.lock_timeout ({} ago)",
                    humantime::format_duration(Duration::from_secs(self.age_seconds))
                ));
            }
            Liveness::Unknown => {}
        }
        liveness
    }

    fn from_config(config: bollard::models::Config, timeout: Duration) -> Option<Lock> {
        let spec = config.spec?;
        let labels = spec.labels.unwrap_or_default();
        labels.get(KIND_LABEL)?;
        let get = |key: &str| labels.get(&format!("{LABEL_PREFIX}{key}")).cloned();
        let since = get("since").unwrap_or_default();
        // An unreadable time counts as old: better reported stale than trusted forever.
        let age = humantime::parse_rfc3339(&since)
            .ok()
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs()
            })
            .unwrap_or(u64::MAX / 2);
        Some(Lock {
            id: config.id.unwrap_or_default(),
            name: spec.name.unwrap_or_default(),
            holder: Holder {
                user: get("user").unwrap_or_else(|| "unknown".into()),
                host: get("host").unwrap_or_else(|| "unknown".into()),
                pid: get("pid").and_then(|p| p.parse().ok()).unwrap_or_default(),
                run_id: get("run_id"),
                message: get("message"),
                command: get("command").unwrap_or_default(),
                boot_id: get("boot_id"),
                pid_ns: get("pid_ns"),
                pid_start: get("pid_start").and_then(|p| p.parse().ok()),
            },
            since,
            age_seconds: age,
            stale: age > timeout.as_secs(),
            stale_reason: None,
            holder_alive: false,
        })
    }
}

/// The lock was held for the whole wait: typed so `deploy` and tests can branch on it.
/// Exit 3 (blocked), like an unreachable Engine: nothing was changed and nothing is wrong on
/// our side; the same command succeeds once the holder is done (or the stale lock released).
#[derive(Debug, thiserror::Error)]
#[error(
    "the deploy lock of stack {stack} is held by {}{}\n  fix: {}",
    lock.describe(),
    if waited.is_zero() { String::new() } else { format!(" (waited {})", humantime::format_duration(*waited)) },
    if lock.stale {
        format!("the holder is gone or probably died; check, then `beamops lock release {env} --yes`")
    } else if lock.holder_alive {
        format!("pid {} runs on this host: wait for it to finish, or pass --lock-wait with a longer wait (e.g. --lock-wait 10m)", lock.holder.pid)
    } else {
        format!("wait for it to finish, or pass --lock-wait with a longer wait (e.g. --lock-wait 10m); if that run was killed, `beamops lock release {env} --yes` removes its lock")
    }
)]
pub struct LockHeld {
    pub stack: String,
    pub env: String,
    pub lock: Lock,
    pub waited: Duration,
}

/// The Engine calls the deploy lock makes: config objects, which Swarm creates atomically (a
/// second create of one name is refused). [`Daemon`] is the real Engine; the tests below use
/// an in-memory swarm, so acquiring, waiting, taking over and releasing run without Docker.
pub trait LockConfigs {
    /// Where the configs live, for messages.
    fn host(&self) -> &str;
    /// `Some(id)`: created; `None`: a config of that name exists.
    fn create(&self, spec: ConfigSpec) -> impl Future<Output = Result<Option<String>>>;
    fn inspect(&self, name: &str) -> impl Future<Output = Result<Option<bollard::models::Config>>>;
    /// `false`: it was gone already.
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool>>;
    /// How a guard removes config `id` later: from sync code, `Drop` or a signal handler.
    fn releaser(&self, id: &str) -> Releaser;
}

/// Removes a held lock's config (by id), whatever thread or state the process is in.
pub type Releaser = Arc<dyn Fn() -> Result<()> + Send + Sync>;

impl LockConfigs for Daemon {
    fn host(&self) -> &str {
        &self.host
    }
    async fn create(&self, spec: ConfigSpec) -> Result<Option<String>> {
        let name = spec.name.clone().unwrap_or_default();
        match self.client.create_config(spec).await {
            Ok(created) => Ok(Some(created.id)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("creating the deploy lock {name} on {}", self.host))
            }
        }
    }
    async fn inspect(&self, name: &str) -> Result<Option<bollard::models::Config>> {
        match self.client.inspect_config(name).await {
            Ok(config) => Ok(Some(config)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting config {name} on {}", self.host)),
        }
    }
    async fn delete(&self, id: &str) -> Result<bool> {
        match self.client.delete_config(id).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing config {id} on {}", self.host)),
        }
    }
    fn releaser(&self, id: &str) -> Releaser {
        let (host, id) = (self.host.clone(), id.to_string());
        Arc::new(move || delete_on(&host, &id))
    }
}

/// The stack's lock, if any, its holder checked from this process.
pub async fn current(
    configs: &impl LockConfigs,
    stack: &str,
    timeout: Duration,
) -> Result<Option<Lock>> {
    let name = lock_name(stack);
    Ok(configs.inspect(&name).await?.and_then(|config| {
        Lock::from_config(config, timeout).map(|mut lock| {
            lock.judge(&Holder::current("", None));
            lock
        })
    }))
}

/// Holds the lock until dropped (or [`Guard::release`]d).
pub struct Guard {
    /// None when this process already held the lock (a `deploy` that runs `up`): the outer
    /// guard releases it.
    release: Option<Releaser>,
    pub name: String,
    /// Ctrl-C or SIGTERM while the lock is held releases it too (Drop does not run then).
    _on_interrupt: Option<crate::interrupt::Registration>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("name", &self.name)
            .field("owns", &self.owns())
            .finish()
    }
}

impl Guard {
    /// Releases now and reports a failure (Drop can only try).
    pub fn release(mut self) -> Result<()> {
        match self.release.take() {
            Some(release) => release(),
            None => Ok(()),
        }
    }

    /// Whether this guard removes the lock when it goes (false for a re-entrant acquire).
    pub fn owns(&self) -> bool {
        self.release.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take()
            && let Err(e) = release()
        {
            eprintln!(
                "warning: could not release the deploy lock {} ({e:#}); `beamops lock release` removes it",
                self.name
            );
        }
    }
}

/// Deletes a config by id on a fresh connection in its own thread, so it works from sync code,
/// from inside an async runtime, and in Drop.
fn delete_on(host: &str, id: &str) -> Result<()> {
    let (host, id) = (host.to_string(), id.to_string());
    std::thread::spawn(move || -> Result<()> {
        let rt = docker::runtime()?;
        rt.block_on(async {
            let daemon = docker::connect(&host).await?;
            match daemon.client.delete_config(&id).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing config {id} on {host}")),
            }
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the lock release thread panicked"))?
}

pub struct AcquireOptions<'a> {
    /// The environment's name, for the fix in messages.
    pub env: &'a str,
    /// How long to wait for another holder (`--lock-wait`).
    pub wait: Duration,
    /// `deploy.lock_timeout`: older locks are reported stale.
    pub timeout: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
}

/// Takes the stack's deploy lock, waiting (polling) up to `opts.wait` for another holder.
/// `on_wait` is told once, naming the holder. The swarm must exist (configs live in it).
pub async fn acquire(
    daemon: &impl LockConfigs,
    stack: &str,
    holder: &Holder,
    opts: &AcquireOptions<'_>,
    on_wait: impl Fn(&str),
) -> Result<Guard> {
    let name = lock_name(stack);
    let started = Instant::now();
    let mut told = false;
    loop {
        let since = crate::state::now_rfc3339();
        let spec = ConfigSpec {
            name: Some(name.clone()),
            labels: Some(holder.labels(&since)),
            data: Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                serde_json::to_vec(&serde_json::json!({"holder": holder, "since": since}))?,
            )),
            ..Default::default()
        };
        if let Some(id) = daemon.create(spec).await? {
            let release = daemon.releaser(&id);
            let on_interrupt = {
                let release = release.clone();
                crate::interrupt::on_interrupt(move || {
                    let _ = release();
                })
            };
            return Ok(Guard {
                release: Some(release),
                name,
                _on_interrupt: Some(on_interrupt),
            });
        }
        // Someone holds it; it may also have been released since the create failed.
        let Some(lock) = current(daemon, stack, opts.timeout).await? else {
            // Released meanwhile, or a config of that name that is not a beamops lock: either
            // way, wait a little and within the limit, never spin.
            if started.elapsed() >= opts.wait && daemon.inspect(&name).await?.is_some() {
                return Err(Failure::Blocked(format!(
                    "a config named {name} exists on {} but is not a beamops deploy lock\n  fix: remove or rename it (`docker config rm {name}`) if nothing of yours needs it",
                    daemon.host()
                ))
                .into());
            }
            tokio::time::sleep(opts.poll.min(Duration::from_millis(500))).await;
            continue;
        };
        if lock.holder.is_this_process(holder) {
            // This very process took it earlier (deploy → up): same run, same lock.
            return Ok(Guard {
                release: None,
                name,
                _on_interrupt: None,
            });
        }
        if matches!(lock.holder.liveness(holder), Liveness::Dead(_)) {
            // Proven dead (killed, crashed): its lock only blocks. Removed by id, so a lock a
            // third run took meanwhile stays; then the create above decides again.
            if daemon
                .delete(&lock.id)
                .await
                .with_context(|| format!("removing the dead run's deploy lock {name}"))?
            {
                // The description ends in the reason: STALE (pid N is gone).
                on_wait(&format!(
                    "took over the deploy lock of {stack} from a run that died: {}",
                    lock.describe()
                ));
            }
            continue;
        }
        let waited = started.elapsed();
        if waited >= opts.wait {
            let held = LockHeld {
                stack: stack.to_string(),
                env: opts.env.to_string(),
                lock,
                waited,
            };
            let summary = "another run is changing this swarm".to_string();
            return Err(anyhow::Error::new(held).context(Failure::Blocked(summary)));
        }
        if !told {
            on_wait(&format!(
                "waiting up to {} for the deploy lock of {stack}, held by {}",
                humantime::format_duration(opts.wait),
                lock.describe()
            ));
            told = true;
        }
        tokio::time::sleep(
            opts.poll
                .min(opts.wait.saturating_sub(waited))
                .max(Duration::from_millis(50)),
        )
        .await;
    }
}

/// The deploy lock of an environment's stack, from synchronous code (`up`, `down`, `deploy`).
/// None when the Engine is not a swarm manager yet: there is no swarm to lock (swarm init is
/// itself refused by a second caller), and the caller asks again before its next swarm change.
pub fn acquire_for_environment(
    project: &crate::project::Project,
    env: &str,
    connection: &docker::Connection,
    holder: &Holder,
    wait: Duration,
    on_wait: impl Fn(&str),
) -> Result<Option<Guard>> {
    let timeout = project.config.deploy.lock_timeout()?;
    let (rt, daemon) = connection.daemon()?;
    if !matches!(
        rt.block_on(super::mode(daemon))?,
        super::SwarmMode::Manager { .. }
    ) {
        return Ok(None);
    }
    let opts = AcquireOptions {
        env,
        wait,
        timeout,
        poll: Duration::from_secs(1),
    };
    let stack = project.config.app.stack_name();
    rt.block_on(acquire(daemon, stack, holder, &opts, on_wait))
        .map(Some)
}

/// The environment's deploy lock as `status` shows it: none when it is free, or when there is
/// no swarm (or no Engine) to ask — `status` reports those through its own checks.
pub fn held_for_environment(
    project: &crate::project::Project,
    connection: &docker::Connection,
) -> Option<Lock> {
    let timeout = project.config.deploy.lock_timeout().ok()?;
    let (rt, daemon) = connection.daemon().ok()?;
    rt.block_on(async {
        if !matches!(
            super::mode(daemon).await.ok()?,
            super::SwarmMode::Manager { .. }
        ) {
            return None;
        }
        current(daemon, project.config.app.stack_name(), timeout)
            .await
            .ok()
            .flatten()
    })
}

/// Removes the stack's lock when its holder is provably dead (same host, boot and PID
/// namespace; its PID gone or reused) and says so. A run with nothing to change takes no lock,
/// but must not leave a killed run's lock behind for `status` and the next deploy to trip over.
/// Returns the removed lock's name. Any other lock (alive, another host, rebooted) is left.
pub async fn clear_dead(
    daemon: &impl LockConfigs,
    stack: &str,
    timeout: Duration,
    note: &dyn Fn(&str),
) -> Result<Option<String>> {
    let Some(lock) = current(daemon, stack, timeout).await? else {
        return Ok(None);
    };
    let Liveness::Dead(reason) = lock.holder.liveness(&Holder::current("", None)) else {
        return Ok(None);
    };
    // By id: a run that took the lock over meanwhile made a new config, which stays.
    if daemon
        .delete(&lock.id)
        .await
        .with_context(|| format!("removing the deploy lock {}", lock.name))?
    {
        note(&format!(
            "removed the deploy lock {} left by a killed run ({reason})",
            lock.name
        ));
        Ok(Some(lock.name))
    } else {
        Ok(None)
    }
}

/// [`clear_dead`] for an environment: nothing when there is no swarm (or no Engine) to ask.
pub fn clear_dead_for_environment(
    project: &crate::project::Project,
    connection: &docker::Connection,
    note: &dyn Fn(&str),
) -> Result<Option<String>> {
    let timeout = project.config.deploy.lock_timeout()?;
    let Ok((rt, daemon)) = connection.daemon() else {
        return Ok(None);
    };
    rt.block_on(async {
        if !matches!(super::mode(daemon).await?, super::SwarmMode::Manager { .. }) {
            return Ok(None);
        }
        clear_dead(daemon, project.config.app.stack_name(), timeout, note).await
    })
}

/// Removes the stack's lock whoever holds it (`lock release --yes`); returns what it removed.
pub async fn release(daemon: &Daemon, stack: &str, timeout: Duration) -> Result<Option<Lock>> {
    let Some(lock) = current(daemon, stack, timeout).await? else {
        return Ok(None);
    };
    match daemon.client.delete_config(&lock.id).await {
        Ok(()) => Ok(Some(lock)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("removing the deploy lock {}", lock.name)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// The swarm's config objects in memory: a create of a taken name is refused, as Swarm does.
    #[derive(Clone, Default)]
    struct FakeConfigs {
        /// id → config.
        configs: Arc<Mutex<BTreeMap<String, bollard::models::Config>>>,
    }

    impl FakeConfigs {
        fn names(&self) -> Vec<String> {
            let configs = self.configs.lock().unwrap();
            configs
                .values()
                .filter_map(|c| c.spec.as_ref()?.name.clone())
                .collect()
        }
        /// A lock as another run would have written it.
        fn put(&self, name: &str, labels: std::collections::HashMap<String, String>) {
            let id = format!("id-{}", self.configs.lock().unwrap().len() + 100);
            self.configs.lock().unwrap().insert(
                id.clone(),
                bollard::models::Config {
                    id: Some(id),
                    spec: Some(ConfigSpec {
                        name: Some(name.into()),
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
    }

    impl LockConfigs for FakeConfigs {
        fn host(&self) -> &str {
            "fake://swarm"
        }
        async fn create(&self, spec: ConfigSpec) -> Result<Option<String>> {
            let mut configs = self.configs.lock().unwrap();
            if configs
                .values()
                .any(|c| c.spec.as_ref().and_then(|s| s.name.as_ref()) == spec.name.as_ref())
            {
                return Ok(None);
            }
            let id = format!("id-{}", configs.len());
            configs.insert(
                id.clone(),
                bollard::models::Config {
                    id: Some(id.clone()),
                    spec: Some(spec),
                    ..Default::default()
                },
            );
            Ok(Some(id))
        }
        async fn inspect(&self, name: &str) -> Result<Option<bollard::models::Config>> {
            Ok(self
                .configs
                .lock()
                .unwrap()
                .values()
                .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
                .cloned())
        }
        async fn delete(&self, id: &str) -> Result<bool> {
            Ok(self.configs.lock().unwrap().remove(id).is_some())
        }
        fn releaser(&self, id: &str) -> Releaser {
            let (configs, id) = (self.configs.clone(), id.to_string());
            Arc::new(move || {
                configs.lock().unwrap().remove(&id);
                Ok(())
            })
        }
    }

    fn opts(wait: Duration) -> AcquireOptions<'static> {
        AcquireOptions {
            env: "local",
            wait,
            timeout: Duration::from_secs(3600),
            poll: Duration::from_millis(10),
        }
    }

    fn take(
        configs: &FakeConfigs,
        holder: &Holder,
        wait: Duration,
    ) -> (Result<Guard>, Vec<String>) {
        let told = std::cell::RefCell::new(Vec::new());
        let result = crate::docker::block_on(acquire(configs, "demo", holder, &opts(wait), |m| {
            told.borrow_mut().push(m.to_string())
        }))
        .unwrap();
        (result, told.into_inner())
    }

    #[test]
    fn the_lock_is_taken_once_held_again_by_the_same_run_and_released_on_drop() {
        let configs = FakeConfigs::default();
        let me = Holder::current("up", Some("why".into()));
        let (guard, told) = take(&configs, &me, Duration::ZERO);
        let guard = guard.unwrap();
        assert!(guard.owns() && told.is_empty());
        assert_eq!(configs.names(), [lock_name("demo")]);
        // deploy → up in one process: the same lock, which only the outer guard releases.
        let (inner, _) = take(&configs, &me, Duration::ZERO);
        let inner = inner.unwrap();
        assert!(!inner.owns());
        drop(inner);
        assert_eq!(
            configs.names().len(),
            1,
            "the re-entrant guard released nothing"
        );
        drop(guard);
        assert!(
            configs.names().is_empty(),
            "dropping the guard releases the lock"
        );
    }

    #[test]
    fn a_live_holder_blocks_after_the_wait_naming_it() {
        let configs = FakeConfigs::default();
        let other = Holder {
            host: "ci-runner-7".into(),
            command: "deploy".into(),
            ..Holder::current("deploy", Some("release 12".into()))
        };
        configs.put(
            &lock_name("demo"),
            other.labels(&crate::state::now_rfc3339()),
        );
        let (result, told) = take(
            &configs,
            &Holder::current("up", None),
            Duration::from_millis(50),
        );
        let err = result.unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        let held = err.downcast_ref::<LockHeld>().expect("typed");
        assert_eq!(held.lock.holder.host, "ci-runner-7");
        assert!(format!("{err:#}").contains("release 12"), "{err:#}");
        assert_eq!(told.len(), 1, "told once that it waits: {told:?}");
        assert_eq!(configs.names().len(), 1, "the other run's lock stays");
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over_and_a_foreign_config_is_named() {
        let configs = FakeConfigs::default();
        let me = Holder::current("up", None);
        // Same host, boot and PID namespace; a PID that cannot be running.
        let dead = Holder {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        configs.put(
            &lock_name("demo"),
            dead.labels(&crate::state::now_rfc3339()),
        );
        let (guard, told) = take(&configs, &me, Duration::ZERO);
        assert!(guard.unwrap().owns());
        assert!(
            told[0].starts_with("took over the deploy lock of demo"),
            "{told:?}"
        );
        // A config of that name that no beamops wrote: blocked, never removed.
        let configs = FakeConfigs::default();
        configs.put(&lock_name("demo"), Default::default());
        let (result, _) = take(&configs, &me, Duration::ZERO);
        let err = result.unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a beamops deploy lock"),
            "{err:#}"
        );
        assert_eq!(configs.names().len(), 1);
    }

    use super::*;

    #[test]
    fn ci_run_ids_are_named_by_their_system() {
        // Only reads the variables; a holder from a plain shell has no run id.
        let h = Holder::current("up", Some("  ".into()));
        assert_eq!(h.command, "up");
        assert_eq!(h.message, None, "a blank message is no message");
        assert_eq!(h.pid, std::process::id());
        assert!(!h.host.is_empty());
    }

    #[test]
    fn a_holder_is_dead_only_when_this_host_boot_and_namespace_prove_it() {
        let me = Holder::current("deploy", None);
        assert_eq!(me.liveness(&me), Liveness::Alive);
        assert!(me.is_this_process(&me));
        // PID reused: same PID, another start time.
        let reused = Holder {
            pid_start: me.pid_start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(matches!(reused.liveness(&me), Liveness::Dead(r) if r.contains("another process")));
        assert!(!reused.is_this_process(&me), "a reused pid is not this run");
        // A PID no process has (above any pid_max).
        let gone = Holder {
            pid: 4_194_305,
            ..me.clone()
        };
        assert!(matches!(gone.liveness(&me), Liveness::Dead(r) if r.contains("is gone")));
        // Another boot, another host, another PID namespace, or an older beamops's lock
        // without boot id: never proven dead.
        let rebooted = Holder {
            boot_id: Some("another-boot".into()),
            ..gone.clone()
        };
        assert_eq!(rebooted.liveness(&me), Liveness::Rebooted);
        for other in [
            Holder {
                host: "elsewhere".into(),
                ..gone.clone()
            },
            Holder {
                pid_ns: Some("pid:[1]".into()),
                ..gone.clone()
            },
            Holder {
                boot_id: None,
                ..gone.clone()
            },
        ] {
            assert_eq!(other.liveness(&me), Liveness::Unknown, "{other:?}");
        }
    }

    #[test]
    fn the_user_without_user_variables_is_the_uids_name() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        assert_eq!(
            uid_name().unwrap(),
            String::from_utf8_lossy(&id.stdout).trim()
        );
    }

    #[test]
    fn a_lock_older_than_the_timeout_is_stale_and_described_so() {
        let holder = Holder {
            user: "ana".into(),
            host: "ci-7".into(),
            pid: 42,
            run_id: Some("github:123/1".into()),
            message: Some("hotfix".into()),
            command: "deploy".into(),
            boot_id: Some("b00t".into()),
            pid_ns: Some("pid:[4026531836]".into()),
            pid_start: Some(1234),
        };
        let config = |since: &str| bollard::models::Config {
            id: Some("abc".into()),
            spec: Some(ConfigSpec {
                name: Some(lock_name("app")),
                labels: Some(holder.labels(since)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let timeout = Duration::from_secs(1800);
        let fresh = Lock::from_config(config(&crate::state::now_rfc3339()), timeout).unwrap();
        assert!(!fresh.stale);
        assert_eq!(fresh.holder, holder);
        let old = Lock::from_config(config("2001-01-01T00:00:00Z"), timeout).unwrap();
        assert!(old.stale);
        let text = old.describe();
        for part in ["ana@ci-7", "pid 42", "github:123/1", "hotfix", "STALE"] {
            assert!(text.contains(part), "{text}");
        }
        // A config without the kind label is not a lock, whatever its name.
        let mut other = config("2001-01-01T00:00:00Z");
        other.spec.as_mut().unwrap().labels = None;
        assert!(Lock::from_config(other, timeout).is_none());
    }
}
