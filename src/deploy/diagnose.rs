//! What to show when a deploy fails: the task Swarm blamed, the health check that failed with
//! its output, and the task's last log lines, read through the Engine API (task logs work for
//! tasks on any node of the swarm).

use bollard::models::{Task, TaskState};

use crate::docker::Daemon;
pub use crate::swarm::logs::indent;
use crate::swarm::logs::{newest, task_log_tail, tasks};

/// The task id in Swarm's rollback or pause message: swarmkit writes "update rolled back due
/// to failure or early termination of task <id>" (and "update paused due to …").
pub fn blamed_task_id(message: &str) -> Option<String> {
    let rest = message.split("of task ").nth(1)?;
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The failing task of `service` and why: the one Swarm's update status blames when it names
/// one (`status_message`), else the newest task that ran `image` and failed (a task that was
/// shut down normally — drained by the rollback — is no failure), else the newest that ran it.
pub async fn failing_task(
    daemon: &Daemon,
    service: &str,
    image: &str,
    status_message: Option<&str>,
) -> Option<String> {
    let all = tasks(daemon, service).await;
    let blamed = status_message.and_then(blamed_task_id);
    let task = match blamed
        .as_deref()
        .and_then(|id| all.iter().find(|t| t.id.as_deref() == Some(id)))
    {
        Some(task) => task.clone(),
        None => {
            let ran_image = |t: &&Task| {
                t.spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.image.as_deref())
                    .is_some_and(|i| i == image || i.starts_with(&format!("{image}@")))
            };
            let failed = |t: &&Task| {
                let status = t.status.as_ref();
                matches!(
                    status.and_then(|s| s.state),
                    Some(TaskState::FAILED | TaskState::REJECTED)
                ) || status
                    .and_then(|s| s.err.as_deref())
                    .is_some_and(|e| !e.is_empty())
            };
            newest(all.iter().filter(ran_image).filter(failed).cloned())
                .or_else(|| newest(all.iter().filter(ran_image).cloned()))?
        }
    };
    Some(describe(daemon, service, &task, blamed.is_some()).await)
}

async fn describe(daemon: &Daemon, service: &str, task: &Task, blamed: bool) -> String {
    let status = task.status.clone().unwrap_or_default();
    let id = task.id.clone().unwrap_or_default();
    let mut text = format!(
        "{service}.{} ({}): {}",
        task.slot.unwrap_or_default(),
        id.chars().take(12).collect::<String>(),
        status.state.map(|s| s.to_string()).unwrap_or_default()
    );
    if blamed {
        text.push_str(" — the task Swarm's update status blames");
    }
    for part in [status.message, status.err].into_iter().flatten() {
        if !part.is_empty() {
            text.push_str(&format!(" — {part}"));
        }
    }
    if let Some(container) = status.container_status.and_then(|c| c.container_id) {
        text.push_str(&health_report(daemon, &container).await);
    }
    let tail = task_log_tail(daemon, &id, 20).await;
    text.push_str(&format!("\n  last log lines:\n{}", indent(&tail)));
    text
}

/// The container's health check and, from its health log (`State.Health.Log`), the last
/// failed probe with its output; the last probe when none failed. Empty when the container is
/// on another node or already removed.
async fn health_report(daemon: &Daemon, container: &str) -> String {
    let Ok(found) = daemon.client.inspect_container(container, None).await else {
        return String::new();
    };
    let test = found
        .config
        .and_then(|c| c.healthcheck)
        .and_then(|h| h.test)
        .map(|t| t.join(" "))
        .unwrap_or_else(|| "(none)".into());
    let health = found.state.and_then(|s| s.health);
    let status = health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    let log = health.and_then(|h| h.log).unwrap_or_default();
    // The Engine keeps the last five probes. Every failed one is shown: the last may be a
    // timeout while the container was already stopping, an earlier one says why it failed.
    let failed: Vec<_> = log
        .iter()
        .filter(|probe| probe.exit_code.is_some_and(|c| c != 0))
        .collect();
    let (word, shown) = if failed.is_empty() {
        ("last ran", log.last().into_iter().collect::<Vec<_>>())
    } else {
        ("failed", failed)
    };
    if shown.is_empty() {
        return format!("\n  health check `{test}` ({status}): no probe ran");
    }
    let mut text = format!("\n  health check `{test}` {word} (container {status}):");
    for probe in shown {
        let output = probe.output.as_deref().unwrap_or_default().trim();
        text.push_str(&format!(
            "\n    exit {} at {}: {}",
            probe.exit_code.unwrap_or_default(),
            probe
                .end
                .as_deref()
                .or(probe.start.as_deref())
                .unwrap_or("?"),
            if output.is_empty() {
                "(no output)"
            } else {
                output
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarms_message_names_the_blamed_task() {
        assert_eq!(
            blamed_task_id(
                "update rolled back due to failure or early termination of task q2w3e4r5t6y7u8i9o0p1a2s3d"
            )
            .as_deref(),
            Some("q2w3e4r5t6y7u8i9o0p1a2s3d")
        );
        assert_eq!(
            blamed_task_id("update paused due to failure or early termination of task abc123")
                .as_deref(),
            Some("abc123")
        );
        assert_eq!(blamed_task_id("rollback completed"), None);
    }
}
