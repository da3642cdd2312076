//! Docker Swarm through the Engine API: swarm mode itself here; stacks, services and
//! convergence beside it.

pub mod api;
pub mod cluster;
pub mod console;
pub mod converge;
#[cfg(test)]
pub(crate) mod fake;
pub mod job;
pub mod lock;
pub mod logs;
pub mod ps;
pub mod scale;
pub mod spec;
pub mod stack;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
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

/// The secret variables the stack file interpolates: the Docker secret name for each secret the
/// stack mounts, `BEAMOPS_SECRET_<KEY>`. The list of keys is `chapters.swarm` (`stack_secrets`).
/// The versions chapter 07 created; an exported `BEAMOPS_SECRET_<KEY>` wins, as it would for
/// `docker stack deploy`; before chapter 07 ran, a secret is `<stack>_<key>_v1`.
///
/// The release variables (`BEAMOPS_APP_IMAGE`, …) are not decided here: `crate::rollout` does.
pub fn secret_variables(project: &Project, env: &str) -> Result<BTreeMap<String, String>> {
    let config = &project.config;
    let stack = config.app.stack_name();
    // The versions chapter 07 created; an exported variable still wins (the CLI-equivalence
    // test and by-hand `docker stack deploy` use it).
    let current = crate::secrets::current_secret_names(project, env)?;
    let mut variables = config
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
        .collect::<BTreeMap<_, _>>();
    // Every other key chapter 07 made a Docker secret of (GRAFANA_ADMIN_PASSWORD for the
    // monitoring stack), so a stack file's `${BEAMOPS_SECRET_<KEY>:-…}` names its current version.
    for (key, name) in &current {
        let variable = format!("{SECRET_VARIABLE_PREFIX}{key}");
        let exported = std::env::var(&variable).ok().filter(|v| !v.is_empty());
        variables
            .entry(variable)
            .or_insert_with(|| exported.unwrap_or_else(|| name.clone()));
    }
    Ok(variables)
}

/// The stack file's content parsed with the secret variables for `env` and `release`, the
/// release variables as `crate::rollout` decided them (a variable missing there takes the
/// file's default).
pub fn parse_stack(
    project: &Project,
    env: &str,
    text: &str,
    release: &BTreeMap<String, String>,
) -> Result<stack::StackFile> {
    parse_stack_file(project, env, STACK_FILE, text, release)
}

/// [`parse_stack`] for a stack file at `relative` (a chapter's `stack-converged` `file:`).
pub fn parse_stack_file(
    project: &Project,
    env: &str,
    relative: &str,
    text: &str,
    release: &BTreeMap<String, String>,
) -> Result<stack::StackFile> {
    let mut vars = secret_variables(project, env)?;
    vars.extend(release.iter().map(|(k, v)| (k.clone(), v.clone())));
    stack::StackFile::parse(&project.root.join(relative), text, &vars)
}

/// The owner of a converge of `file` into `stack` on behalf of `chapter`. Objects without a
/// chapter label were made by beamops before labels, which only ever converged
/// `deploy/stack.yml` as the app's stack: that converge adopts them (and labels its services at
/// their next update); every other converge leaves them alone.
pub fn owner(project: &Project, chapter: &str, file: &str, stack: &str) -> spec::Owner {
    spec::Owner {
        chapter: Some(chapter.to_string()),
        adopts_unlabelled: stack::normalise_path(std::path::Path::new(file))
            == std::path::Path::new(STACK_FILE)
            && stack == project.config.app.stack_name(),
    }
}

/// Where this Engine stands in a swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmMode {
    /// Not part of any swarm.
    Inactive,
    /// A manager: services can be created here.
    Manager { node_id: String },
    /// A `swarm init` or `swarm join` is in flight (Engine state `pending`): another process,
    /// or a second beamops run, got there first. It ends as a manager, a worker or an error.
    Pending(String),
    /// Active without the control plane: a worker, or (for a moment after an init) a manager
    /// whose control socket is not up yet.
    Worker,
    /// A locked node or one in error: beamops cannot manage it from here.
    Other(String),
}

pub async fn mode(daemon: &impl api::SwarmApi) -> Result<SwarmMode> {
    let swarm = daemon.swarm_info().await?;
    Ok(mode_of(
        swarm.local_node_state,
        swarm.control_available,
        swarm.node_id,
    ))
}

fn mode_of(
    state: Option<LocalNodeState>,
    control_available: Option<bool>,
    node_id: Option<String>,
) -> SwarmMode {
    match state {
        Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY) | None => SwarmMode::Inactive,
        Some(LocalNodeState::ACTIVE) if control_available == Some(true) => SwarmMode::Manager {
            node_id: node_id.unwrap_or_default(),
        },
        Some(LocalNodeState::ACTIVE) => SwarmMode::Worker,
        Some(state @ LocalNodeState::PENDING) => SwarmMode::Pending(state.to_string()),
        Some(state) => SwarmMode::Other(state.to_string()),
    }
}

/// How long a run waits for a swarm init or join that another process started on the same
/// Engine; a single-node init takes about a second.
pub const PENDING_WAIT: Duration = Duration::from_secs(60);
/// How long `active` without control is taken for a manager still starting: the Engine marks
/// the node ready and opens its control socket in two steps.
const MANAGER_START_GRACE: Duration = Duration::from_secs(5);

/// Swarm mode, idempotently and race-safe: an inactive Engine becomes a single-node swarm
/// advertising `advertise_addr`; a manager is left as it is; an init or join in flight (another
/// run found the Engine inactive at the same moment) is waited for, up to [`PENDING_WAIT`].
/// Returns the node id and whether this call initialised the swarm.
pub async fn ensure(daemon: &Daemon, advertise_addr: &str) -> Result<(String, bool)> {
    ensure_within(daemon, advertise_addr, PENDING_WAIT).await
}

pub async fn ensure_within(
    daemon: &Daemon,
    advertise_addr: &str,
    wait: Duration,
) -> Result<(String, bool)> {
    let started = Instant::now();
    // Set once this run has seen another process's init or join in flight.
    let mut waiting_for: Option<String> = None;
    let mut worker_since: Option<Instant> = None;
    loop {
        let waited = started.elapsed();
        match mode(daemon).await? {
            SwarmMode::Manager { node_id } => return Ok((node_id, false)),
            SwarmMode::Inactive => match init(daemon, advertise_addr).await {
                Ok(node_id) => return Ok((node_id, true)),
                Err(InitError::AlreadyInSwarm) => {
                    waiting_for = Some("an init by another process".into());
                }
                Err(InitError::Other(e)) => return Err(e),
            },
            SwarmMode::Pending(state) => {
                waiting_for = Some(format!("an init or join in flight ({state})"));
            }
            // A worker is final, but a manager that has just finished its init shows `active` a
            // moment before its control socket is up.
            SwarmMode::Worker => {
                let since = *worker_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MANAGER_START_GRACE {
                    return Err(not_a_manager(daemon, "a worker"));
                }
                waiting_for.get_or_insert("a manager starting".into());
            }
            SwarmMode::Other(state) => return Err(not_a_manager(daemon, &state)),
        }
        if waited >= wait {
            return Err(crate::exit::Failure::Blocked(format!(
                "{}: swarm mode is still not ready after {}s of waiting for {}\n  fix: `docker info` on that Engine shows its swarm state; a join to a manager that never answers stays pending until `docker swarm leave --force` on that node",
                daemon.host,
                waited.as_secs(),
                waiting_for.as_deref().unwrap_or("the Engine")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn not_a_manager(daemon: &Daemon, state: &str) -> anyhow::Error {
    let fix = if state == "a worker" {
        "point the environment's docker_host at a manager node (`docker node ls` on a manager lists them)"
    } else {
        // `error` is what a join that never reached its manager ends in.
        "`docker info` on that Engine says why; a failed join is cleared with `docker swarm leave --force` on that node"
    };
    anyhow::anyhow!(
        "{} is in a swarm but not a manager ({state})\n  fix: {fix}",
        daemon.host
    )
}

enum InitError {
    /// Another process's `swarm init` (or join) got in first: its outcome is waited for.
    AlreadyInSwarm,
    Other(anyhow::Error),
}

async fn init(daemon: &Daemon, advertise_addr: &str) -> std::result::Result<String, InitError> {
    let request = SwarmInitRequest {
        listen_addr: Some("0.0.0.0:2377".into()),
        advertise_addr: Some(advertise_addr.to_string()),
        ..Default::default()
    };
    match daemon.client.init_swarm(request).await {
        Ok(node_id) => Ok(node_id),
        Err(e) if is_already_in_swarm(&e) => Err(InitError::AlreadyInSwarm),
        Err(e) => Err(InitError::Other(anyhow::Error::new(e).context(format!(
            "docker swarm init on {} (advertise {advertise_addr})",
            daemon.host
        )))),
    }
}

/// The Engine's answer to `swarm init` when a swarm exists or is being made: 503 "This node is
/// already part of a swarm".
fn is_already_in_swarm(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { status_code: 503, message }
            if message.contains("already part of a swarm")
    )
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
    daemon: &impl api::SwarmApi,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_app_stack_file_converged_as_the_app_stack_adopts_unlabelled_objects() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coordination");
        let project = Project::discover(Some(&root)).unwrap();
        let app = project.config.app.stack_name().to_string();
        let adopts = |file: &str, stack: &str| owner(&project, "08-swarm", file, stack);
        assert!(adopts(STACK_FILE, &app).adopts_unlabelled);
        assert!(adopts("./deploy/stack.yml", &app).adopts_unlabelled);
        assert!(!adopts("deploy/sidecar.yml", &app).adopts_unlabelled);
        assert!(!adopts(STACK_FILE, &format!("{app}-monitoring")).adopts_unlabelled);
        assert_eq!(
            adopts("deploy/x.yml", "x").chapter.as_deref(),
            Some("08-swarm")
        );
    }

    #[test]
    fn a_pending_init_or_join_is_its_own_mode_not_a_failure() {
        let id = || Some("n1".to_string());
        assert_eq!(mode_of(None, None, None), SwarmMode::Inactive);
        assert_eq!(
            mode_of(Some(LocalNodeState::INACTIVE), Some(false), id()),
            SwarmMode::Inactive
        );
        assert_eq!(
            mode_of(Some(LocalNodeState::PENDING), Some(false), id()),
            SwarmMode::Pending("pending".into())
        );
        assert_eq!(
            mode_of(Some(LocalNodeState::ACTIVE), Some(true), id()),
            SwarmMode::Manager {
                node_id: "n1".into()
            }
        );
        assert_eq!(
            mode_of(Some(LocalNodeState::ACTIVE), Some(false), id()),
            SwarmMode::Worker
        );
        assert_eq!(
            mode_of(Some(LocalNodeState::ERROR), Some(false), id()),
            SwarmMode::Other("error".into())
        );
    }

    #[test]
    fn only_the_engines_already_in_a_swarm_answer_means_another_init_won() {
        let answer =
            |status_code: u16, message: &str| bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.into(),
            };
        assert!(is_already_in_swarm(&answer(
            503,
            "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one."
        )));
        assert!(!is_already_in_swarm(&answer(
            400,
            "must specify a listening address because the address to advertise is not recognized as a system address"
        )));
        assert!(!is_already_in_swarm(&answer(
            503,
            "context deadline exceeded"
        )));
    }
}
