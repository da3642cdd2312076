//! The release command (migrations) as a one-off Swarm job: the new image with the app service's
//! environment, secrets and networks, run once before any service changes.

use std::time::{Duration, Instant};

use anyhow::Result;
use bollard::models::ServiceSpec;
use serde::Serialize;

use crate::docker::Daemon;
use crate::output::Ui;
use crate::swarm::job;

/// Labels the job's service so a leftover one is recognisable (`docker service ls`).
pub const JOB_LABEL: &str = "beamops.release-job";

#[derive(Debug, Clone, Serialize)]
pub struct JobRun {
    pub service: String,
    pub command: String,
    pub seconds: f64,
}

/// The job's spec: the app's spec with its mode, command, healthcheck and restart policy
/// replaced; ports, update and rollback settings dropped (a job has none of them). `chapter`
/// is the app stack's owner: the job is labelled as its.
pub fn job_spec(
    app: &ServiceSpec,
    name: &str,
    command: &str,
    release: &str,
    chapter: &str,
) -> ServiceSpec {
    job::spec(
        app,
        name,
        command,
        job::RELEASE,
        chapter,
        (JOB_LABEL, release),
    )
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
    let started = Instant::now();
    let spinner = ui.spinner(format!("release command: {command}"));
    let result = job::run(daemon, spec, ui, timeout, 20).await;
    spinner.finish_and_clear();
    match result {
        Ok(_) => Ok(JobRun {
            service: name,
            command: command.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => Err(e.context(format!(
            "the release command failed; no service was changed\n  command: {command}"
        ))),
    }
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
        let job = job_spec(
            &app,
            "s_release_r1",
            "bin/app eval 'M.migrate()'",
            "r1",
            "21-stack",
        );
        let v = serde_json::to_value(&job).unwrap();
        // Labelled as the app stack owner's, whatever that chapter is called.
        assert_eq!(v["Labels"][crate::swarm::spec::CHAPTER_LABEL], "21-stack");
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
