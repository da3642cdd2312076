//! What to show when a deploy fails: the failing task and its last log lines, read through the
//! Engine API (task logs work for tasks on any node of the swarm).

use std::collections::HashMap;

use bollard::container::LogOutput;
use bollard::models::Task;
use bollard::query_parameters::{ListTasksOptions, LogsOptions};
use futures_util::StreamExt;

use crate::docker::Daemon;

pub fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (no output)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tasks(daemon: &Daemon, service: &str) -> Vec<Task> {
    daemon
        .client
        .list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".to_string(),
                vec![service.to_string()],
            )])),
        }))
        .await
        .unwrap_or_default()
}

fn newest(tasks: impl Iterator<Item = Task>) -> Option<Task> {
    tasks.max_by_key(|t| t.updated_at.clone().map(|d| d.to_string()))
}

/// The last `lines` log lines of one task; best effort (a diagnosis must not fail the report).
pub async fn task_log_tail(daemon: &Daemon, task_id: &str, lines: usize) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let mut stream = daemon.client.task_logs(task_id, Some(options));
    let mut out = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => {
                out.push_str(&String::from_utf8_lossy(&message))
            }
            Ok(_) => {}
            Err(e) => {
                out.push_str(&format!("(logs unavailable: {e})"));
                break;
            }
        }
    }
    out.trim_end().to_string()
}

/// The last log lines of a service's newest task.
pub async fn service_log_tail(daemon: &Daemon, service: &str, lines: usize) -> String {
    match newest(tasks(daemon, service).await.into_iter()).and_then(|t| t.id) {
        Some(id) => task_log_tail(daemon, &id, lines).await,
        None => "(no task was scheduled)".into(),
    }
}

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
