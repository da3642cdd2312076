//! Docker Swarm through the Engine API: swarm mode itself here; stacks, services and
//! convergence beside it.

pub mod cluster;
pub mod console;
pub mod converge;
pub mod job;
pub mod lock;
pub mod logs;
pub mod ps;
pub mod scale;
pub mod spec;
pub mod stack;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use bollard::models::{LocalNodeState, SwarmInitRequest};

use crate::docker::Daemon;
use crate::project::Project;

/// Where chapter 08 renders the stack, relative to the project root.
pub const STACK_FILE: &str = "deploy/stack.yml";
/// `${BEAMOPS_SECRET_<KEY>}` in the stack file names the Docker secret holding KEY.
pub const SECRET_VARIABLE_PREFIX: &str = "BEAMOPS_SECRET_";
/// The app's image in the stack file: `${BEAMOPS_APP_IMAGE:-<repository>:latest}`.
pub const APP_IMAGE_VARIABLE: &str = "BEAMOPS_APP_IMAGE";
/// The release id and git sha the app's service is labelled with (`beamops.release`, …).
pub const RELEASE_VARIABLE: &str = "BEAMOPS_RELEASE";
pub const GIT_SHA_VARIABLE: &str = "BEAMOPS_GIT_SHA";

/// The variables the stack file interpolates: the Docker secret name for each secret the stack
/// mounts, `BEAMOPS_SECRET_<KEY>`. The list of keys is `chapters.swarm` (`stack_secrets`).
///
/// Until chapter 07's `secrets::current_secret_names(project, env)` is wired in here, a secret
/// is `<stack>_<key>_v1`; an exported `BEAMOPS_SECRET_<KEY>` overrides it, as it would for
/// `docker stack deploy`.
pub fn variables(project: &Project, env: &str) -> Result<BTreeMap<String, String>> {
    let config = &project.config;
    let stack = config.app.stack_name();
    // The versions chapter 07 created; an exported variable still wins (the CLI-equivalence
    // test and by-hand `docker stack deploy` use it).
    let current = crate::secrets::current_secret_names(project, env)?;
    let mut variables: BTreeMap<String, String> = config
        .chapters
        .swarm
        .stack_secrets()
        .into_iter()
        .map(|key| {
            let variable = format!("{SECRET_VARIABLE_PREFIX}{key}");
            let name = std::env::var(&variable)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| current.get(&key).cloned())
                .unwrap_or_else(|| format!("{stack}_{}_v1", key.to_ascii_lowercase()));
            (variable, name)
        })
        .collect();
    // The release the last successful deploy or rollback put live, so a later `up chapter-08`
    // keeps it instead of going back to `:latest`. Before any deploy the file's defaults apply.
    if let Some(live) = crate::deploy::record::live(project, env)? {
        variables.insert(APP_IMAGE_VARIABLE.into(), live.image);
        variables.insert(RELEASE_VARIABLE.into(), live.release);
        variables.insert(GIT_SHA_VARIABLE.into(), live.git_sha);
    }
    // Exported, they win, as they would for `docker stack deploy`.
    for name in [APP_IMAGE_VARIABLE, RELEASE_VARIABLE, GIT_SHA_VARIABLE] {
        if let Some(value) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
            variables.insert(name.into(), value);
        }
    }
    Ok(variables)
}

/// The stack file's content parsed with the variables for `env`; `overrides` win (a deploy
/// names the release it is rolling out before it is recorded as live).
pub fn parse_stack(
    project: &Project,
    env: &str,
    text: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<stack::StackFile> {
    let mut vars = variables(project, env)?;
    vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    stack::StackFile::parse(&project.root.join(STACK_FILE), text, &vars)
}

/// Where this Engine stands in a swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmMode {
    /// Not part of any swarm.
    Inactive,
    /// A manager: services can be created here.
    Manager { node_id: String },
    /// A worker, or a node that is still joining or in error: beamops cannot manage it from here.
    Other(String),
}

pub async fn mode(daemon: &Daemon) -> Result<SwarmMode> {
    let info = daemon
        .client
        .info()
        .await
        .with_context(|| format!("asking {} for its swarm state", daemon.host))?;
    let swarm = info.swarm.unwrap_or_default();
    Ok(match swarm.local_node_state {
        Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY) | None => SwarmMode::Inactive,
        Some(LocalNodeState::ACTIVE) if swarm.control_available == Some(true) => {
            SwarmMode::Manager {
                node_id: swarm.node_id.unwrap_or_default(),
            }
        }
        Some(state) => SwarmMode::Other(format!(
            "{state:?} (control available: {})",
            swarm.control_available.unwrap_or(false)
        )),
    })
}

/// Swarm mode, idempotently: an inactive Engine becomes a single-node swarm advertising
/// `advertise_addr`; a manager is left as it is. Returns the node id and whether it initialised.
pub async fn ensure(daemon: &Daemon, advertise_addr: &str) -> Result<(String, bool)> {
    match mode(daemon).await? {
        SwarmMode::Manager { node_id } => Ok((node_id, false)),
        SwarmMode::Other(state) => anyhow::bail!(
            "{} is in a swarm but not a manager ({state})\n  fix: point the environment's docker_host at a manager node",
            daemon.host
        ),
        SwarmMode::Inactive => {
            let request = SwarmInitRequest {
                listen_addr: Some("0.0.0.0:2377".into()),
                advertise_addr: Some(advertise_addr.to_string()),
                ..Default::default()
            };
            let node_id = daemon.client.init_swarm(request).await.with_context(|| {
                format!(
                    "docker swarm init on {} (advertise {advertise_addr})",
                    daemon.host
                )
            })?;
            Ok((node_id, true))
        }
    }
}

/// The address a local swarm advertises when beamops.yaml names none: loopback keeps a
/// single-node development swarm off every real network.
pub fn advertise_addr(env: &crate::config::Environment) -> String {
    env.advertise_addr
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// A release as the app service on the swarm carries it: its labels and image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRelease {
    pub release: String,
    pub git_sha: String,
    pub image: String,
}

/// The release the app service runs now and the one its previous spec ran (what Swarm's own
/// rollback returns to), read from the swarm: the truth every machine shares, where
/// `.beamops/state.json` only knows what this checkout did. None before any deploy.
pub async fn live_releases(
    daemon: &Daemon,
    stack: &str,
) -> Result<(Option<LiveRelease>, Option<LiveRelease>)> {
    let name = spec::scoped(stack, "app");
    let Some(service) = self::converge::raw_service(daemon, &name).await? else {
        return Ok((None, None));
    };
    let of = |spec: &serde_json::Value| -> Option<LiveRelease> {
        let labels = &spec["Labels"];
        let release = labels[RELEASE_LABEL].as_str().filter(|r| !r.is_empty())?;
        let image = spec["TaskTemplate"]["ContainerSpec"]["Image"].as_str()?;
        Some(LiveRelease {
            release: release.to_string(),
            git_sha: labels[GIT_SHA_LABEL]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            // Swarm pins a registry image by digest; the tag is what beamops deploys.
            image: image.split('@').next().unwrap_or(image).to_string(),
        })
    };
    Ok((of(&service["Spec"]), of(&service["PreviousSpec"])))
}

/// The service labels a deployed release carries (`docker service inspect` shows them).
pub const RELEASE_LABEL: &str = "beamops.release";
pub const GIT_SHA_LABEL: &str = "beamops.git_sha";
