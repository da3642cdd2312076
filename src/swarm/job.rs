//! One-off Swarm jobs (`ServiceMode: ReplicatedJob`) in an app service's image, environment,
//! secrets and networks: deploy's release command, chapter 09's cluster probe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::models::{
    EndpointSpec, HealthConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::ListTasksOptions;

use crate::docker::{Daemon, is_not_found};

/// The job's spec: the app's spec with its mode, command, healthcheck and restart policy
/// replaced; ports, update and rollback settings dropped (a job has none of them).
pub fn spec(app: &ServiceSpec, name: &str, command: &str, label: (&str, &str)) -> ServiceSpec {
    let mut job = app.clone();
    job.name = Some(name.to_string());
    let mut labels = job.labels.take().unwrap_or_default();
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
pub async fn run(
    daemon: &Daemon,
    spec: ServiceSpec,
    timeout: Duration,
    lines: usize,
) -> Result<String> {
    let name = spec.name.clone().unwrap_or_default();
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
