//! One-off Swarm jobs (`ServiceMode: ReplicatedJob`) in an app service's image, environment,
//! secrets and networks: deploy's release command, chapter 09's cluster probe.
//!
//! Every job's service carries the stack's label (so `down` removes it with the stack), the
//! chapter that made it, its kind and its owner (host, boot and process): a run killed while its
//! job runs leaves the service behind, and the next run tells such a leftover from a live run's
//! job by its owner and removes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::models::{
    EndpointSpec, HealthConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions};

use crate::docker::{Daemon, is_not_found};
use crate::output::Ui;
use crate::swarm::spec::NAMESPACE_LABEL;

/// The job's kind (`cluster-probe`, `release`): marks a service as a one-off job, never one of
/// the stack file's services.
pub const JOB_LABEL: &str = "beamops.job";
/// The chapter whose run made the job: `down` of that chapter removes it.
pub use crate::swarm::spec::CHAPTER_LABEL;
/// `<host> <boot id> <pid> <process start>` of the beamops run that made the job.
pub const OWNER_LABEL: &str = "beamops.job.owner";

/// A job from another host whose owner cannot be asked is taken for a leftover after this long:
/// far longer than any job's own timeout.
const FOREIGN_LEFTOVER_AFTER: Duration = Duration::from_secs(30 * 60);

/// What kind of job. Which chapter it belongs to is the caller's: the chapter whose action
/// runs it (`cluster-formed`'s), or the one owning the app stack for deploy's release job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
}

/// `cluster-formed`'s probe: `bin/<app> rpc` to each node over the app network.
pub const CLUSTER_PROBE: Kind = Kind {
    name: "cluster-probe",
};

/// Deploy's release command, run in the app stack.
pub const RELEASE: Kind = Kind { name: "release" };

/// This process as an owner label value.
pub fn owner() -> String {
    let pid = std::process::id();
    format!(
        "{} {} {pid} {}",
        hostname(),
        boot_id(),
        start_ticks(pid).unwrap_or_default()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

/// The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): tells a
/// reused PID from the process that made the job.
fn start_ticks(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Whether the run that made a job is gone, judged from its owner label; `None` when it runs on
/// another host (or the label is missing) and cannot be asked.
fn owner_gone(owner: &str) -> Option<(bool, String)> {
    let mut parts = owner.split(' ');
    let (host, boot, pid, start) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if host != hostname() {
        return None;
    }
    let pid_number: u32 = pid.parse().ok()?;
    if boot != boot_id() {
        return Some((true, format!("pid {pid} on this host, before a reboot")));
    }
    match start_ticks(pid_number) {
        Some(now) if now == start => Some((false, format!("pid {pid} on this host still runs"))),
        Some(_) => Some((
            true,
            format!("pid {pid} on this host is gone (the PID was reused)"),
        )),
        None => Some((true, format!("pid {pid} on this host is gone"))),
    }
}

/// The labels every job carries, on top of the app service's own.
fn labels(app: &ServiceSpec, kind: Kind, chapter: &str) -> HashMap<String, String> {
    let mut labels = app.labels.clone().unwrap_or_default();
    labels.insert(JOB_LABEL.into(), kind.name.into());
    labels.insert(CHAPTER_LABEL.into(), chapter.into());
    labels.insert(OWNER_LABEL.into(), owner());
    labels
}

/// The job's spec: the app's spec with its mode, command, healthcheck and restart policy
/// replaced; ports, update and rollback settings dropped (a job has none of them).
/// The app's stack label stays: a job is the stack's, and `down` removes it with the stack;
/// `chapter` (the key of the chapter that runs it) is the one whose `down` removes it.
pub fn spec(
    app: &ServiceSpec,
    name: &str,
    command: &str,
    kind: Kind,
    chapter: &str,
    label: (&str, &str),
) -> ServiceSpec {
    let mut job = app.clone();
    job.name = Some(name.to_string());
    let mut labels = labels(app, kind, chapter);
    labels.insert(label.0.into(), label.1.into());
    job.labels = Some(labels);
    job.mode = Some(ServiceSpecMode {
        replicated_job: Some(ServiceSpecModeReplicatedJob {
            max_concurrent: Some(1),
            total_completions: Some(1),
        }),
        ..Default::default()
    });
    job.update_config = None;
    job.rollback_config = None;
    job.endpoint_spec = app.endpoint_spec.as_ref().map(|e| EndpointSpec {
        mode: e.mode,
        ports: None,
    });
    if let Some(task) = job.task_template.as_mut() {
        task.force_update = None;
        // One attempt: a failure is reported, not retried behind the caller's back.
        task.restart_policy = Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        });
        if let Some(container) = task.container_spec.as_mut() {
            container.command = Some(vec!["/bin/sh".into(), "-c".into(), command.to_string()]);
            container.args = None;
            container.health_check = Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            });
        }
    }
    job
}

/// Runs the job to completion and returns its output (the last `lines` log lines). A failed or
/// timed-out job is an error carrying its last log lines; the job's service is removed either way.
/// Leftovers of killed runs in the same stack are removed first, each said on stderr.
pub async fn run(
    daemon: &Daemon,
    spec: ServiceSpec,
    ui: &Ui,
    timeout: Duration,
    lines: usize,
) -> Result<String> {
    let name = spec.name.clone().unwrap_or_default();
    if let Some(stack) = spec.labels.as_ref().and_then(|l| l.get(NAMESPACE_LABEL)) {
        for removed in sweep(daemon, stack, None).await? {
            ui.warning(removed.to_string());
        }
    }
    // A job left by a killed run of the same name: replace it.
    remove(daemon, &name).await?;
    daemon
        .client
        .create_service(spec, None)
        .await
        .with_context(|| format!("creating the job {name}"))?;
    let result = wait(daemon, &name, timeout).await;
    let output = crate::swarm::logs::service_log_tail(daemon, &name, lines).await;
    // Best effort: the job's own outcome is what the caller needs; a leftover job is replaced
    // by the next run of the same name.
    let removed = remove(daemon, &name).await;
    let result = match removed {
        Err(e) => result.map_err(|failed| failed.context(format!("(also: {e:#})"))),
        Ok(()) => result,
    };
    match result {
        Ok(()) => Ok(output),
        Err(e) => Err(e.context(format!(
            "last log lines of {name}:\n{}",
            crate::swarm::logs::indent(&output)
        ))),
    }
}

pub async fn wait(daemon: &Daemon, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let tasks = daemon
            .client
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([(
                    "service".to_string(),
                    vec![name.to_string()],
                )])),
            }))
            .await
            .with_context(|| format!("listing the tasks of {name}"))?;
        for task in &tasks {
            let status = task.status.clone().unwrap_or_default();
            match status.state {
                Some(TaskState::COMPLETE) => return Ok(()),
                Some(
                    TaskState::FAILED
                    | TaskState::REJECTED
                    | TaskState::ORPHANED
                    | TaskState::REMOVE,
                ) => {
                    let exit = status
                        .container_status
                        .and_then(|c| c.exit_code)
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default();
                    bail!(
                        "job {name}: {}{exit}: {}",
                        status.state.map(|s| s.to_string()).unwrap_or_default(),
                        status.err.or(status.message).unwrap_or_default()
                    );
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "job {name} did not finish in {}",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A job service of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub service: String,
    pub kind: String,
    pub chapter: String,
    pub owner: String,
    pub created: Option<String>,
}

/// A leftover that was removed, and why it was taken for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub service: String,
    pub why: String,
}

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed the leftover job {} of a killed run ({})",
            self.service, self.why
        )
    }
}

/// The job services of `stack`, optionally only those `chapter` made.
pub async fn list(daemon: &Daemon, stack: &str, chapter: Option<&str>) -> Result<Vec<Found>> {
    let mut wanted = vec![format!("{NAMESPACE_LABEL}={stack}"), JOB_LABEL.to_string()];
    if let Some(chapter) = chapter {
        wanted.push(format!("{CHAPTER_LABEL}={chapter}"));
    }
    let services = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: Some(HashMap::from([("label".to_string(), wanted)])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the jobs of stack {stack}"))?;
    let mut found: Vec<Found> = services
        .into_iter()
        .filter_map(|s| {
            let created = s.created_at.clone();
            let spec = s.spec?;
            let labels = spec.labels.unwrap_or_default();
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            Some(Found {
                service: spec.name?,
                kind: label(JOB_LABEL),
                chapter: label(CHAPTER_LABEL),
                owner: label(OWNER_LABEL),
                created,
            })
        })
        .collect();
    found.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(found)
}

/// Why `job` is a leftover of a killed run, or `None` while its run may still be using it.
pub fn leftover(job: &Found) -> Option<String> {
    match owner_gone(&job.owner) {
        Some((true, why)) => Some(why),
        Some((false, _)) => None,
        None => {
            let age = job
                .created
                .as_deref()
                .and_then(|c| humantime::parse_rfc3339_weak(c.split('.').next()?).ok())
                .and_then(|t| t.elapsed().ok())?;
            (age >= FOREIGN_LEFTOVER_AFTER).then(|| {
                format!(
                    "made {} ago by a run elsewhere ({})",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    if job.owner.is_empty() {
                        "no owner recorded"
                    } else {
                        job.owner.as_str()
                    }
                )
            })
        }
    }
}

/// The leftovers of killed runs among `stack`'s jobs (optionally one chapter's), unremoved.
pub async fn leftovers(
    daemon: &Daemon,
    stack: &str,
    chapter: Option<&str>,
) -> Result<Vec<(Found, String)>> {
    Ok(list(daemon, stack, chapter)
        .await?
        .into_iter()
        .filter_map(|job| {
            let why = leftover(&job)?;
            Some((job, why))
        })
        .collect())
}

/// Removes the leftovers of killed runs among `stack`'s jobs (optionally one chapter's); a live
/// run's job is left alone.
pub async fn sweep(daemon: &Daemon, stack: &str, chapter: Option<&str>) -> Result<Vec<Removed>> {
    let mut removed = Vec::new();
    for (job, why) in leftovers(daemon, stack, chapter).await? {
        remove(daemon, &job.service).await?;
        removed.push(Removed {
            service: job.service,
            why,
        });
    }
    Ok(removed)
}

/// Removes every job of `stack` that `chapter` made (all of them without one), leftover or
/// not: for `down`, which takes the stack away under them anyway.
pub async fn remove_all(
    daemon: &Daemon,
    stack: &str,
    chapter: Option<&str>,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for job in list(daemon, stack, chapter).await? {
        remove(daemon, &job.service).await?;
        removed.push(job.service);
    }
    Ok(removed)
}

/// Removes the job's service and its exited container: a deleted job service leaves its
/// completed task's container behind on the node.
pub async fn remove(daemon: &Daemon, name: &str) -> Result<()> {
    match daemon.client.delete_service(name).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("removing the job {name}")),
    }
    let containers = daemon
        .client
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("com.docker.swarm.service.name={name}")],
            )])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the containers of {name}"))?;
    for c in containers {
        if let Some(id) = c.id {
            let options = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            match daemon.client.remove_container(&id, Some(options)).await {
                Ok(()) => {}
                // Swarm's own cleanup got there first.
                Err(e) if is_not_found(&e) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => return Err(e).with_context(|| format!("removing container {id}")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(owner: String, created: Option<String>) -> Found {
        Found {
            service: "s_app-cluster-probe-1".into(),
            kind: CLUSTER_PROBE.name.into(),
            chapter: "09-distributed".into(),
            owner,
            created,
        }
    }

    #[test]
    fn a_job_is_a_leftover_only_once_its_run_is_gone() {
        // This process: alive.
        assert_eq!(leftover(&job(owner(), None)), None);
        // A process that ran and exited on this host: gone.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_ticks(pid);
        child.wait().unwrap();
        let dead = format!(
            "{} {} {pid} {}",
            hostname(),
            boot_id(),
            start.unwrap_or_default()
        );
        let why = leftover(&job(dead, None)).expect("a dead owner's job is a leftover");
        assert!(why.contains(&format!("pid {pid}")), "{why}");
        // Our PID with another start time: a reused PID, so the owner is gone.
        let reused = format!("{} {} {} 1", hostname(), boot_id(), std::process::id());
        assert!(leftover(&job(reused, None)).unwrap().contains("reused"));
        // Before a reboot of this host.
        let rebooted = format!("{} not-this-boot {} 1", hostname(), std::process::id());
        assert!(leftover(&job(rebooted, None)).unwrap().contains("reboot"));
        // Another host: young jobs are left alone, old ones are leftovers.
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let elsewhere = "ci-runner-7 b00t 4242 99".to_string();
        assert_eq!(leftover(&job(elsewhere.clone(), Some(now))), None);
        let old = humantime::format_rfc3339_nanos(
            std::time::SystemTime::now() - Duration::from_secs(3600),
        )
        .to_string();
        assert!(
            leftover(&job(elsewhere, Some(old)))
                .unwrap()
                .contains("by a run elsewhere")
        );
        // No owner label at all (made by an older beamops): judged by age like a foreign one.
        assert_eq!(leftover(&job(String::new(), None)), None);
    }

    #[test]
    fn every_job_carries_the_stack_chapter_kind_and_owner() {
        let app = ServiceSpec {
            name: Some("s_app".into()),
            labels: Some(HashMap::from([(
                NAMESPACE_LABEL.to_string(),
                "s".to_string(),
            )])),
            ..Default::default()
        };
        let spec = spec(
            &app,
            "s_app-cluster-probe-1",
            "true",
            CLUSTER_PROBE,
            "09-distributed",
            ("x", "y"),
        );
        let labels = spec.labels.unwrap();
        assert_eq!(labels[NAMESPACE_LABEL], "s");
        assert_eq!(labels[JOB_LABEL], "cluster-probe");
        assert_eq!(labels[CHAPTER_LABEL], "09-distributed");
        assert_eq!(labels[OWNER_LABEL], owner());
        assert_eq!(labels["x"], "y");
    }
}
