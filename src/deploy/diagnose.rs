//! What to show when a deploy fails: the failing task and its last log lines, read through the
//! Engine API (task logs work for tasks on any node of the swarm).

use bollard::models::Task;

use crate::docker::Daemon;
pub use crate::swarm::logs::indent;
use crate::swarm::logs::{newest, task_log_tail, tasks};

/// The newest task of `service` that ran `image` and did not stay: its name, state, error, the
/// last healthcheck output when its container is still on this Engine, and its last log lines.
pub async fn failing_task(daemon: &Daemon, service: &str, image: &str) -> Option<String> {
    let all = tasks(daemon, service).await;
    let ran_image = |t: &Task| {
        t.spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.image.as_deref())
            .is_some_and(|i| i == image || i.starts_with(&format!("{image}@")))
    };
    let task = newest(all.into_iter().filter(ran_image))?;
    let status = task.status.clone().unwrap_or_default();
    let id = task.id.clone().unwrap_or_default();
    let mut text = format!(
        "{service}.{} ({}): {}",
        task.slot.unwrap_or_default(),
        id.chars().take(12).collect::<String>(),
        status.state.map(|s| s.to_string()).unwrap_or_default()
    );
    for part in [status.message, status.err].into_iter().flatten() {
        if !part.is_empty() {
            text.push_str(&format!(" — {part}"));
        }
    }
    if let Some(container) = status.container_status.and_then(|c| c.container_id)
        && let Ok(found) = daemon.client.inspect_container(&container, None).await
        && let Some(last) = found
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.log)
            .and_then(|log| log.last().cloned())
    {
        text.push_str(&format!(
            "\n  last healthcheck (exit {}): {}",
            last.exit_code.unwrap_or_default(),
            last.output.unwrap_or_default().trim()
        ));
    }
    let tail = task_log_tail(daemon, &id, 20).await;
    text.push_str(&format!("\n  last log lines:\n{}", indent(&tail)));
    Some(text)
}
