//! The deploy lock: one Docker config object per stack, `<stack>_beamops-lock`, on the target
//! swarm itself, so CI runners and laptops that deploy to the same swarm see the same lock.
//!
//! Why a config: its creation goes through the managers' raft store, and a second create with
//! the same name fails (409) — an atomic test-and-set no local file can give across machines
//! (`a_second_create_of_the_same_config_name_fails` checks it). The holder is in its labels.
//! A lock older than `deploy.lock_timeout` is reported STALE and never taken over silently:
//! `beamops lock release ENV --yes` is the deliberate way out.

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
                .unwrap_or_else(|| "unknown".into()),
            host: hostname(),
            pid: std::process::id(),
            run_id,
            message: message.filter(|m| !m.trim().is_empty()),
            command: command.to_string(),
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
    /// Older than `deploy.lock_timeout`: the holder probably died; never taken over silently.
    pub stale: bool,
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
        }
        text
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
            },
            since,
            age_seconds: age,
            stale: age > timeout.as_secs(),
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
        format!("the holder probably died; check, then `beamops lock release {env} --yes`")
    } else {
        "wait for it to finish, or pass --lock-wait with a longer wait (e.g. --lock-wait 10m)".to_string()
    }
)]
pub struct LockHeld {
    pub stack: String,
    pub env: String,
    pub lock: Lock,
    pub waited: Duration,
}

/// The stack's lock, if any.
pub async fn current(daemon: &Daemon, stack: &str, timeout: Duration) -> Result<Option<Lock>> {
    let name = lock_name(stack);
    match daemon.client.inspect_config(&name).await {
        Ok(config) => Ok(Lock::from_config(config, timeout)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting config {name} on {}", daemon.host)),
    }
}

async fn config_exists(daemon: &Daemon, name: &str) -> Result<bool> {
    match daemon.client.inspect_config(name).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("inspecting config {name} on {}", daemon.host)),
    }
}

/// Holds the lock until dropped (or [`Guard::release`]d).
#[derive(Debug)]
pub struct Guard {
    host: String,
    /// None when this process already held the lock (a `deploy` that runs `up`): the outer
    /// guard releases it.
    id: Option<String>,
    pub name: String,
    /// Ctrl-C or SIGTERM while the lock is held releases it too (Drop does not run then).
    _on_interrupt: Option<crate::interrupt::Registration>,
}

impl Guard {
    /// Releases now and reports a failure (Drop can only try).
    pub fn release(mut self) -> Result<()> {
        match self.id.take() {
            Some(id) => delete_on(&self.host, &id),
            None => Ok(()),
        }
    }

    /// Whether this guard removes the lock when it goes (false for a re-entrant acquire).
    pub fn owns(&self) -> bool {
        self.id.is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Err(e) = delete_on(&self.host, &id)
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
    daemon: &Daemon,
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
        match daemon.client.create_config(spec).await {
            Ok(created) => {
                let (host, id) = (daemon.host.clone(), created.id.clone());
                let on_interrupt = crate::interrupt::on_interrupt(move || {
                    let _ = delete_on(&host, &id);
                });
                return Ok(Guard {
                    host: daemon.host.clone(),
                    id: Some(created.id),
                    name,
                    _on_interrupt: Some(on_interrupt),
                });
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("creating the deploy lock {name} on {}", daemon.host)
                });
            }
        }
        // Someone holds it; it may also have been released since the create failed.
        let Some(lock) = current(daemon, stack, opts.timeout).await? else {
            // Released meanwhile, or a config of that name that is not a beamops lock: either
            // way, wait a little and within the limit, never spin.
            if started.elapsed() >= opts.wait && config_exists(daemon, &name).await? {
                return Err(Failure::Blocked(format!(
                    "a config named {name} exists on {} but is not a beamops deploy lock\n  fix: remove or rename it (`docker config rm {name}`) if nothing of yours needs it",
                    daemon.host
                ))
                .into());
            }
            tokio::time::sleep(opts.poll.min(Duration::from_millis(500))).await;
            continue;
        };
        if lock.holder.host == holder.host && lock.holder.pid == holder.pid {
            // This very process took it earlier (deploy → up): same run, same lock.
            return Ok(Guard {
                host: daemon.host.clone(),
                id: None,
                name,
                _on_interrupt: None,
            });
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
    holder: &Holder,
    wait: Duration,
    on_wait: impl Fn(&str),
) -> Result<Option<Guard>> {
    let timeout = project.config.deploy.lock_timeout()?;
    let rt = docker::runtime()?;
    let daemon = rt.block_on(docker::connect(&docker::host_for(project, env)))?;
    if !matches!(
        rt.block_on(super::mode(&daemon))?,
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
    rt.block_on(acquire(&daemon, stack, holder, &opts, on_wait))
        .map(Some)
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
    fn a_lock_older_than_the_timeout_is_stale_and_described_so() {
        let holder = Holder {
            user: "ana".into(),
            host: "ci-7".into(),
            pid: 42,
            run_id: Some("github:123/1".into()),
            message: Some("hotfix".into()),
            command: "deploy".into(),
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
