//! The release command (migrations) as a one-off Swarm job: the new image with the app service's
//! environment, secrets and networks, run once before any service changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::models::{
    EndpointSpec, HealthConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::ListTasksOptions;
use serde::Serialize;

use super::diagnose;
use crate::docker::{Daemon, is_not_found};
use crate::output::Ui;

/// Labels the job's service so a leftover one is recognisable (`docker service ls`).
pub const JOB_LABEL: &str = "beamops.release-job";

#[derive(Debug, Clone, Serialize)]
pub struct JobRun {
    pub service: String,
    pub command: String,
    pub seconds: f64,
}

/// The job's spec: the app's spec with its mode, command, healthcheck and restart policy
/// replaced; ports, update and rollback settings dropped (a job has none of them).
pub fn job_spec(app: &ServiceSpec, name: &str, command: &str, release: &str) -> ServiceSpec {
    let mut job = app.clone();
    job.name = Some(name.to_string());
    let mut labels = job.labels.take().unwrap_or_default();
    labels.insert(JOB_LABEL.into(), release.into());
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
        // One attempt: a failed migration is reported, not retried behind the deploy's back.
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

/// Runs the job to completion. A failed or timed-out job is an error carrying its last log
/// lines; the job's service is removed either way.
pub async fn run(
    daemon: &Daemon,
    spec: ServiceSpec,
    command: &str,
    ui: &Ui,
    timeout: Duration,
) -> Result<JobRun> {
    let name = spec.name.clone().unwrap_or_default();
    // A job left by a killed deploy of the same release: replace it.
    remove(daemon, &name).await?;
    let started = Instant::now();
    daemon
        .client
        .create_service(spec, None)
        .await
        .with_context(|| format!("creating the release job {name}"))?;
    let spinner = ui.spinner(format!("release command: {command}"));
    let result = wait(daemon, &name, timeout).await;
    spinner.finish_and_clear();
    let outcome = match result {
        Ok(()) => Ok(JobRun {
            service: name.clone(),
            command: command.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let tail = diagnose::service_log_tail(daemon, &name, 20).await;
            Err(e.context(format!(
                "the release command failed; no service was changed\n  command: {command}\n  last log lines of {name}:\n{}",
                diagnose::indent(&tail)
            )))
        }
    };
    remove(daemon, &name).await?;
    outcome
}

async fn wait(daemon: &Daemon, name: &str, timeout: Duration) -> Result<()> {
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
                        "release job {name}: {}{exit}: {}",
                        status.state.map(|s| s.to_string()).unwrap_or_default(),
                        status.err.or(status.message).unwrap_or_default()
                    );
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "release job {name} did not finish in {}",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Removes the job's service and its exited container: a deleted job service leaves its
/// completed task's container behind on the node.
async fn remove(daemon: &Daemon, name: &str) -> Result<()> {
    match daemon.client.delete_service(name).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("removing the release job {name}")),
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

    #[test]
    fn the_job_keeps_env_secrets_and_networks_but_runs_once_without_health_or_ports() {
        let app: ServiceSpec = serde_json::from_value(serde_json::json!({
            "Name": "s_app",
            "Labels": {"com.docker.stack.namespace": "s"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "app:abc", "Env": ["A=1"], "Args": ["start"],
                    "Secrets": [{"SecretName": "s_cookie_v1", "SecretID": "x"}],
                    "HealthCheck": {"Test": ["CMD", "true"]}
                },
                "Networks": [{"Target": "net"}],
                "RestartPolicy": {"Condition": "any"}
            },
            "Mode": {"Replicated": {"Replicas": 3}},
            "UpdateConfig": {"Parallelism": 1},
            "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"TargetPort": 4000}]}
        }))
        .unwrap();
        let job = job_spec(&app, "s_release_r1", "bin/app eval 'M.migrate()'", "r1");
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["Mode"]["ReplicatedJob"]["TotalCompletions"], 1);
        assert!(v["Mode"].get("Replicated").is_none());
        assert!(v.get("UpdateConfig").is_none());
        assert_eq!(v["EndpointSpec"]["Mode"], "dnsrr");
        assert!(v["EndpointSpec"].get("Ports").is_none());
        let c = &v["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["Env"][0], "A=1");
        assert_eq!(c["Secrets"][0]["SecretName"], "s_cookie_v1");
        assert_eq!(c["Command"][2], "bin/app eval 'M.migrate()'");
        assert!(c.get("Args").is_none());
        assert_eq!(c["HealthCheck"]["Test"][0], "NONE");
        assert_eq!(v["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        assert_eq!(v["TaskTemplate"]["Networks"][0]["Target"], "net");
        assert_eq!(v["Labels"][JOB_LABEL], "r1");
    }
}
