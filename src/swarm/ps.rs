//! `beamops ps`: the stack's tasks with their node, state, image, health and release.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::models::{Task, TaskState};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};
use serde::Serialize;

use super::spec::NAMESPACE_LABEL;
use crate::docker::{Daemon, is_not_found};

/// The service label (and container label) `deploy` records the release under.
pub use super::RELEASE_LABEL;

#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub service: String,
    /// `<service>.<slot>` (replicated) or `<service>.<node id>` (global), as `docker ps` names it.
    pub name: String,
    pub slot: Option<i64>,
    pub id: String,
    pub node: String,
    pub desired: String,
    pub state: String,
    /// When the task reached its state (RFC 3339).
    pub since: Option<String>,
    pub image: String,
    /// `healthy`, `unhealthy`, `starting`, `none` (no healthcheck), or `unknown` (the container
    /// runs on another node, or not at all).
    pub health: String,
    pub release: Option<String>,
    pub error: Option<String>,
}

fn filters(key: &str, value: &str) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_string(), vec![value.to_string()])]))
}

/// Full service name: `app` and `<stack>_app` both name `<stack>_app`.
pub fn service_name(stack: &str, service: &str) -> String {
    if service.starts_with(&format!("{stack}_")) {
        service.to_string()
    } else {
        format!("{stack}_{service}")
    }
}

/// The stack's services (name, id, labels), optionally only one.
pub async fn services(
    daemon: &Daemon,
    stack: &str,
    only: Option<&str>,
) -> Result<Vec<(String, String, HashMap<String, String>)>> {
    let found = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: filters("label", &format!("{NAMESPACE_LABEL}={stack}")),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the services of stack {stack} on {}", daemon.host))?;
    let wanted = only.map(|s| service_name(stack, s));
    let mut out: Vec<_> = found
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let name = spec.name?;
            Some((
                name,
                s.id.unwrap_or_default(),
                spec.labels.unwrap_or_default(),
            ))
        })
        .filter(|(name, _, _)| wanted.as_ref().is_none_or(|w| w == name))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        match wanted {
            Some(w) => anyhow::bail!(
                "no service {w} in stack {stack} on {}\n  fix: beamops ps lists the stack's services",
                daemon.host
            ),
            None => anyhow::bail!(
                "stack {stack} has no services on {}\n  fix: beamops up chapter-08 (or beamops deploy) creates them",
                daemon.host
            ),
        }
    }
    Ok(out)
}

/// Tasks of one service (by id: the name filter also matches longer names).
pub async fn service_tasks(daemon: &Daemon, name: &str, id: &str, all: bool) -> Result<Vec<Task>> {
    let mut filter = HashMap::from([("service".to_string(), vec![id.to_string()])]);
    if !all {
        filter.insert("desired-state".into(), vec!["running".into()]);
    }
    let tasks = daemon
        .client
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filter),
        }))
        .await
        .with_context(|| format!("listing tasks of {name}"))?;
    let mut tasks: Vec<Task> = tasks
        .into_iter()
        .filter(|t| t.service_id.as_deref() == Some(id))
        .collect();
    tasks.sort_by_key(|t| (t.slot, std::cmp::Reverse(t.created_at.clone())));
    Ok(tasks)
}

pub fn task_name(service: &str, task: &Task) -> String {
    match task.slot {
        Some(slot) => format!("{service}.{slot}"),
        None => format!(
            "{service}.{}",
            task.node_id
                .as_deref()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect::<String>()
        ),
    }
}

pub fn container_id(task: &Task) -> Option<String> {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
}

async fn health(daemon: &Daemon, task: &Task) -> Result<String> {
    let Some(id) = container_id(task) else {
        return Ok("unknown".into());
    };
    match daemon.client.inspect_container(&id, None).await {
        Ok(c) => Ok(c
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into())),
        Err(e) if is_not_found(&e) => Ok("unknown".into()),
        Err(e) => Err(e).with_context(|| format!("inspecting container {id}")),
    }
}

/// Every task of the stack's services whose desired state is running (`all`: history too).
pub async fn tasks(
    daemon: &Daemon,
    stack: &str,
    only: Option<&str>,
    all: bool,
) -> Result<Vec<TaskRow>> {
    let nodes: HashMap<String, String> = daemon
        .client
        .list_nodes(None::<ListNodesOptions>)
        .await
        .context("listing the swarm's nodes")?
        .into_iter()
        .filter_map(|n| {
            let hostname = n.description.and_then(|d| d.hostname);
            Some((n.id.clone()?, hostname.or(n.id)?))
        })
        .collect();
    let mut rows = Vec::new();
    for (name, id, labels) in services(daemon, stack, only).await? {
        for task in service_tasks(daemon, &name, &id, all).await? {
            let status = task.status.clone().unwrap_or_default();
            let container = task.spec.as_ref().and_then(|s| s.container_spec.as_ref());
            let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
            // Tasks name the image pinned by digest; people know it by its tag.
            let image = image.split('@').next().unwrap_or_default().to_string();
            let release = container
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(RELEASE_LABEL).cloned())
                .or_else(|| labels.get(RELEASE_LABEL).cloned());
            let running = status.state == Some(TaskState::RUNNING);
            rows.push(TaskRow {
                service: name.clone(),
                name: task_name(&name, &task),
                slot: task.slot,
                id: task.id.clone().unwrap_or_default(),
                node: task
                    .node_id
                    .as_ref()
                    .map(|n| nodes.get(n).cloned().unwrap_or_else(|| n.clone()))
                    .unwrap_or_default(),
                desired: task
                    .desired_state
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                state: status.state.map(|s| s.to_string()).unwrap_or_default(),
                since: status.timestamp.clone(),
                image,
                health: if running {
                    health(daemon, &task).await?
                } else {
                    "unknown".into()
                },
                release,
                error: status.err.filter(|e| !e.is_empty()),
            });
        }
    }
    Ok(rows)
}
