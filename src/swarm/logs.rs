//! `beamops logs`: the stack's service logs through the Engine API, each line named by its task.
//!
//! Task by task (`/tasks/{id}/logs`) rather than `/services/{id}/logs`: bollard's options have
//! no `details`, which is how the service endpoint would say which task wrote a line.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use serde::Serialize;

use super::ps;
use crate::docker::Daemon;

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep streaming until interrupted (tasks running now; a task started later is not joined).
    pub follow: bool,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// The last N lines of each task.
    pub tail: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// `<service>.<slot>`.
    pub task: String,
    pub stream: &'static str,
    /// The Engine's timestamp (RFC 3339, nanoseconds).
    pub time: String,
    pub line: String,
}

/// Streams the logs of the stack's services (or one) to `out`. Without `follow`, lines of every
/// task (exited ones too: a crash loop's last words matter) come out merged in time order.
pub async fn stream(
    daemon: &Daemon,
    stack: &str,
    service: Option<&str>,
    opts: &LogOptions,
    mut out: impl FnMut(LogLine) -> Result<()>,
) -> Result<()> {
    let since = opts
        .since
        .map(|d| {
            let t = SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            i32::try_from(t).unwrap_or(i32::MAX)
        })
        .unwrap_or(0);
    let options = LogsOptions {
        follow: opts.follow,
        stdout: true,
        stderr: true,
        since,
        until: 0,
        timestamps: true,
        tail: opts
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into()),
    };
    let mut streams = Vec::new();
    for (name, id, _) in ps::services(daemon, stack, service).await? {
        for task in ps::service_tasks(daemon, &name, &id, !opts.follow).await? {
            let Some(task_id) = task.id.clone() else {
                continue;
            };
            // A task that never got a container has no logs (the Engine answers an error).
            if ps::container_id(&task).is_none() {
                continue;
            }
            let label = ps::task_name(&name, &task);
            let s = daemon
                .client
                .task_logs(&task_id, Some(options.clone()))
                .map(move |item| (label.clone(), item));
            streams.push(Box::pin(s));
        }
    }
    let mut merged = futures_util::stream::select_all(streams);
    let mut buffered = Vec::new();
    while let Some((task, item)) = merged.next().await {
        let item = item.with_context(|| format!("reading the logs of {task}"))?;
        let (stream, bytes) = match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => ("stdout", message),
            LogOutput::StdErr { message } => ("stderr", message),
            LogOutput::StdIn { .. } => continue,
        };
        let text = String::from_utf8_lossy(&bytes);
        for raw in text.lines() {
            let (time, line) = raw.split_once(' ').unwrap_or(("", raw));
            let line = LogLine {
                task: task.clone(),
                stream,
                time: time.to_string(),
                line: line.to_string(),
            };
            if opts.follow {
                out(line)?;
            } else {
                buffered.push(line);
            }
        }
    }
    // RFC 3339 with fixed-width nanoseconds in UTC sorts as text.
    buffered.sort_by(|a, b| a.time.cmp(&b.time));
    for line in buffered {
        out(line)?;
    }
    Ok(())
}

pub fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (no output)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) async fn tasks(daemon: &Daemon, service: &str) -> Vec<bollard::models::Task> {
    daemon
        .client
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(std::collections::HashMap::from([(
                "service".to_string(),
                vec![service.to_string()],
            )])),
        }))
        .await
        .unwrap_or_default()
}

pub(crate) fn newest(
    tasks: impl Iterator<Item = bollard::models::Task>,
) -> Option<bollard::models::Task> {
    tasks.max_by_key(|t| t.updated_at.clone().map(|d| d.to_string()))
}

/// The last `lines` log lines of one task; best effort (a diagnosis must not fail the report).
pub async fn task_log_tail(daemon: &Daemon, task_id: &str, lines: usize) -> String {
    let options = bollard::query_parameters::LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let mut stream = daemon.client.task_logs(task_id, Some(options));
    let mut out = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(
                bollard::container::LogOutput::StdOut { message } | LogOutput::StdErr { message },
            )
            | Ok(bollard::container::LogOutput::Console { message }) => {
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
