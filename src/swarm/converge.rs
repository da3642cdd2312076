//! Applying a stack through the Engine API and waiting until it runs: networks, secrets,
//! configs and services, each created or updated only when it differs from what is there.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bollard::models::{
    ConfigSpec, SecretSpec, ServiceSpec, ServiceUpdateStatusStateEnum, Task, TaskState,
};
use bollard::query_parameters::{
    ListConfigsOptions, ListNetworksOptions, ListSecretsOptions, ListServicesOptions,
};
use serde::Serialize;
use serde_json::Value;

use super::api::{Removal, SwarmApi};
use super::spec::{self, NAMESPACE_LABEL, Resolved};
use super::stack::StackFile;
use crate::docker::{Daemon, is_not_found};
use crate::exit::Failure;
use crate::output::Ui;

/// Something the stack needs that is not there yet, or differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pending {
    pub object: String,
    pub change: String,
}

/// What a converge did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Converged {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// Services of the stack that the file no longer has (`docker stack deploy --prune`).
    pub removed: Vec<String>,
    /// Configs and secrets no service uses any more (earlier content-named versions).
    pub pruned: Vec<String>,
    /// Seconds from the first change until every task ran healthy.
    pub wait_seconds: f64,
    /// Service → id of the local image its tag named, to notice a rebuild under the same tag.
    pub images: BTreeMap<String, String>,
}

/// A local image rebuilt under the same tag since the service last rolled: the spec cannot show
/// it (it names the tag), so the service is forced to roll. The containers of its running tasks
/// on this Engine tell which image they run; with none here (a new service, tasks elsewhere),
/// the image id the last converge recorded does.
async fn rebuilt(
    daemon: &impl SwarmApi,
    spec: &ServiceSpec,
    previous: Option<&String>,
) -> Result<(Option<String>, bool)> {
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let id = daemon.image_id(&image).await?;
    let running = match &spec.name {
        Some(name) => running_image_ids(daemon, name).await?,
        None => Vec::new(),
    };
    let changed = match &id {
        Some(now) if !running.is_empty() => running.iter().any(|r| r != now),
        Some(now) => previous.is_some_and(|before| before != now),
        None => false,
    };
    Ok((id, changed))
}

/// The image ids of the containers this Engine runs for the service's running tasks.
async fn running_image_ids(daemon: &impl SwarmApi, service: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for task in daemon.tasks(service).await? {
        if task.desired_state != Some(TaskState::RUNNING)
            || task.status.as_ref().and_then(|s| s.state) != Some(TaskState::RUNNING)
        {
            continue;
        }
        let Some(container) = task
            .status
            .and_then(|s| s.container_status)
            .and_then(|c| c.container_id)
        else {
            continue;
        };
        // None: on another node, or gone since the list.
        if let Some(found) = daemon.container(&container).await? {
            ids.extend(found.image);
        }
    }
    Ok(ids)
}

async fn network_id(daemon: &impl SwarmApi, name: &str) -> Result<Option<String>> {
    let found = daemon
        .networks(("name", name))
        .await
        .with_context(|| format!("listing networks named {name}"))?;
    // The name filter matches substrings; only an exact name (or id) is this network.
    Ok(found
        .into_iter()
        .find(|n| n.name.as_deref() == Some(name))
        .and_then(|n| n.id))
}

async fn secret_id(daemon: &impl SwarmApi, name: &str) -> Result<Option<String>> {
    let found = daemon
        .secrets(("name", name))
        .await
        .with_context(|| format!("listing secrets named {name}"))?;
    Ok(found
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
        .and_then(|s| s.id))
}

/// A config's id and its data (base64), when it exists.
async fn config(daemon: &impl SwarmApi, name: &str) -> Result<Option<(String, String)>> {
    let found = daemon
        .configs(("name", name))
        .await
        .with_context(|| format!("listing configs named {name}"))?;
    Ok(found.into_iter().find_map(|c| {
        let spec = c.spec?;
        (spec.name.as_deref() == Some(name))
            .then(|| (c.id.unwrap_or_default(), spec.data.unwrap_or_default()))
    }))
}

/// The labels of a config or secret made from a file: its owner's and the stack key whose
/// content-named versions it is one of.
fn object_labels(
    stack: &str,
    file: &StackFile,
    key: &str,
    extra: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut labels = spec::owned_labels(stack, file, extra);
    labels.insert(spec::OBJECT_KEY_LABEL.into(), key.to_string());
    labels
}

/// Looks up (and with `create`, creates) every network, secret and config the stack uses.
/// Without `create`, what is missing comes back as pending and is left out of `Resolved`.
pub async fn resolve(
    daemon: &impl SwarmApi,
    stack: &str,
    file: &StackFile,
    create: bool,
) -> Result<(Resolved, Vec<Pending>)> {
    let mut resolved = Resolved::default();
    let mut pending = Vec::new();
    for key in spec::used_networks(file) {
        let def = file
            .networks
            .get(&key)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let name = spec::object_name(stack, &key, def.name.as_deref(), def.external);
        if let Some(id) = network_id(daemon, &name).await? {
            resolved.networks.insert(key, id);
        } else if def.external {
            bail!(
                "network `{name}` is external but does not exist on {}\n  fix: create it (docker network create -d overlay {name}) or drop `external: true`",
                daemon.host()
            );
        } else if create {
            let request = spec::network_request(stack, file, &key);
            let created = daemon.create_network(request).await?;
            resolved.networks.insert(key, created);
        } else {
            pending.push(Pending {
                object: format!("network {name}"),
                change: "create".into(),
            });
        }
    }
    for (key, def) in &file.secrets {
        let name = spec::object_name(stack, key, def.name.as_deref(), def.external);
        // A secret made from a file is named by its content: the Engine never returns secret
        // data, so the name is the only way to see a changed file.
        let data = if def.external {
            None
        } else {
            Some(file.file_content(def.file.as_deref().unwrap_or_default())?)
        };
        let name = match &data {
            Some(data) => spec::content_name(&name, data),
            None => name,
        };
        if let Some(id) = secret_id(daemon, &name).await? {
            resolved.secrets.insert(key.clone(), (name, id));
        } else if def.external {
            return Err(Failure::Blocked(format!(
                "secret `{name}` (stack secret `{key}`) does not exist on {}\n  fix: beamops up chapter-07 creates the stack's secrets",
                daemon.host()
            ))
            .into());
        } else if create {
            let created = daemon
                .create_secret(SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(object_labels(stack, file, key, &def.labels)),
                    data: Some(
                        base64::engine::general_purpose::STANDARD
                            .encode(data.as_deref().unwrap_or_default()),
                    ),
                    ..Default::default()
                })
                .await?;
            resolved.secrets.insert(key.clone(), (name, created));
        } else {
            pending.push(Pending {
                object: format!("secret {name}"),
                change: "create".into(),
            });
        }
    }
    for (key, def) in &file.configs {
        let name = spec::object_name(stack, key, def.name.as_deref(), def.external);
        let name = if def.external {
            name
        } else {
            spec::content_name(
                &name,
                &file.file_content(def.file.as_deref().unwrap_or_default())?,
            )
        };
        let existing = config(daemon, &name).await?;
        if def.external {
            let (id, _) = existing.with_context(|| {
                format!(
                    "config `{name}` is external but does not exist on {}",
                    daemon.host()
                )
            })?;
            resolved.configs.insert(key.clone(), (name, id));
            continue;
        }
        let relative = def.file.as_deref().unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD.encode(file.file_content(relative)?);
        match existing {
            Some((id, stored)) if stored == data => {
                resolved.configs.insert(key.clone(), (name, id));
            }
            // Named by its content, so only a config made by hand under that name gets here.
            Some(_) => bail!(
                "config `{name}` exists with other content than {}, though its name is that content's digest\n  fix: remove the config (docker config rm {name}); beamops makes it again",
                file.file_path(relative).display()
            ),
            None if create => {
                let created = daemon
                    .create_config(ConfigSpec {
                        name: Some(name.clone()),
                        labels: Some(object_labels(stack, file, key, &def.labels)),
                        data: Some(data),
                        ..Default::default()
                    })
                    .await?;
                resolved.configs.insert(key.clone(), (name, created));
            }
            None => pending.push(Pending {
                object: format!("config {name}"),
                change: "create".into(),
            }),
        }
    }
    Ok((resolved, pending))
}

/// A service as it runs now: its version (for updates) and its spec as the Engine wrote it.
///
/// Read as raw JSON because bollard's model names the container healthcheck `HealthCheck`
/// while the Engine writes `Healthcheck`: through bollard's types a stored healthcheck reads as
/// none, and every comparison would see a change. (Writing is fine: the Engine's Go decoder
/// matches field names without regard to case.)
pub(crate) async fn current_service(
    daemon: &impl SwarmApi,
    name: &str,
) -> Result<Option<(u64, Value)>> {
    Ok(raw_service(daemon, name).await?.map(|service| {
        let version = service["Version"]["Index"].as_u64().unwrap_or_default();
        (version, service["Spec"].clone())
    }))
}

/// Every service as the Engine writes it (see [`current_service`] for why raw).
pub(crate) async fn raw_services(daemon: &impl SwarmApi) -> Result<Vec<Value>> {
    daemon.raw_services().await
}

/// A spec the Engine wrote, as bollard's typed model for an update: the container healthcheck
/// renamed to bollard's spelling first (`HealthCheck`; the Engine writes `Healthcheck`), or the
/// round trip drops it and the update replaces every task with one that has no healthcheck.
/// Every read-modify-write of a service goes through here.
pub(crate) fn typed_spec(mut spec: Value) -> Result<bollard::models::ServiceSpec> {
    if let Some(container) = spec["TaskTemplate"]["ContainerSpec"].as_object_mut()
        && let Some(health) = container.remove("Healthcheck")
    {
        container.insert("HealthCheck".into(), health);
    }
    serde_json::from_value(spec).context("reading the service spec the Engine returned")
}

/// A service as the Engine writes it (with `PreviousSpec`, which bollard's model also lacks);
/// none when it does not exist.
pub(crate) async fn raw_service(daemon: &impl SwarmApi, name: &str) -> Result<Option<Value>> {
    daemon.raw_service(name).await
}

/// A service's UpdateStatus state and message, as the Engine reports them (none: never
/// updated, or it does not exist).
pub async fn update_state(
    daemon: &impl SwarmApi,
    name: &str,
) -> Result<Option<(ServiceUpdateStatusStateEnum, String)>> {
    let Some(service) = daemon.inspect_service(name).await? else {
        return Ok(None);
    };
    Ok(service
        .update_status
        .and_then(|s| s.state.map(|state| (state, s.message.unwrap_or_default()))))
}

/// Swarm is still rolling an update out, watching it (`update_config.monitor`) or rolling it
/// back: nobody has judged it yet. A new update over it would replace it unjudged.
pub fn in_progress(state: ServiceUpdateStatusStateEnum) -> bool {
    matches!(
        state,
        ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
    )
}

/// Waits until Swarm has finished every update (or rollback) in progress on `names`: an update
/// through its monitor window to `completed` or until Swarm starts rolling it back, a rollback
/// already under way to `rollback_completed`. Returns the services whose *update* ended in a rollback — a release
/// Swarm judged bad while this run watched — with Swarm's message. A paused one is an error.
pub async fn wait_unjudged(
    daemon: &impl SwarmApi,
    names: &[String],
    ui: &Ui,
    timeout: Duration,
) -> Result<Vec<(String, String)>> {
    let deadline = Instant::now() + timeout;
    let spinner = ui.spinner("Swarm finishes the update in progress (update_config.monitor)");
    let mut updating = Vec::new();
    for name in names {
        if let Some((ServiceUpdateStatusStateEnum::UPDATING, _)) =
            update_state(daemon, name).await?
        {
            updating.push(name.clone());
        }
    }
    let mut rolled_back: Vec<(String, String)> = Vec::new();
    let mut waiting: Vec<String> = names.to_vec();
    loop {
        let mut still = Vec::new();
        for name in &waiting {
            let state = update_state(daemon, name).await?;
            match state {
                Some((
                    ServiceUpdateStatusStateEnum::PAUSED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                    message,
                )) => {
                    spinner.finish_and_clear();
                    bail!(
                        "{name}: Swarm paused the update: {message}\n  fix: docker service ps --no-trunc {name}; `beamops rollback` returns to the previous release"
                    );
                }
                // An update that turned into a rollback was judged bad: done here (the caller
                // waits until the previous release serves). A rollback that was already under
                // way is waited out.
                Some((
                    state @ (ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED),
                    message,
                )) => {
                    if updating.contains(name) {
                        rolled_back.push((name.clone(), message));
                    } else if in_progress(state) {
                        still.push(name.clone());
                    }
                }
                Some((state, _)) if in_progress(state) => still.push(name.clone()),
                _ => {}
            }
        }
        waiting = still;
        if waiting.is_empty() {
            spinner.finish_and_clear();
            return Ok(rolled_back);
        }
        if Instant::now() >= deadline {
            spinner.finish_and_clear();
            bail!(
                "Swarm did not finish the update of {} in {}\n  fix: docker service inspect --format '{{{{json .UpdateStatus}}}}' <service>",
                waiting.join(", "),
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stack's services (by the file) whose update is in progress.
pub async fn updates_in_progress(
    daemon: &impl SwarmApi,
    services: &[String],
) -> Result<Vec<String>> {
    let mut busy = Vec::new();
    for name in services {
        if let Some((state, _)) = update_state(daemon, name).await?
            && in_progress(state)
        {
            busy.push(name.clone());
        }
    }
    Ok(busy)
}

/// The spec a service should have, as far as it can be built now.
#[derive(Debug, Clone, Copy)]
pub enum Desired<'a> {
    /// Not in the stack file: a service of the stack that is, is a stray.
    Absent,
    /// In the file, but it uses networks, secrets or configs that do not exist yet (a plan
    /// creates nothing, so it cannot build the spec).
    Unresolved,
    Spec(&'a ServiceSpec),
}

/// What would change for one service: the one decision both `plan` ([`pending`]) and `up`
/// ([`converge`]) make, so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    Create,
    /// The spec differs at these paths.
    Update(Vec<String>),
    /// The spec is the same, but the local image under its tag was rebuilt: rolled out by a
    /// forced update.
    RollRebuiltImage,
    Unchanged,
    /// Labelled as the stack's but no longer in the stack file.
    Remove,
}

impl ServiceChange {
    /// The plan's line for it; None when nothing changes.
    pub fn plan_line(&self, image: &str) -> Option<String> {
        match self {
            ServiceChange::Create => Some("create".into()),
            ServiceChange::Update(paths) => Some(format!("update {}", paths.join(", "))),
            ServiceChange::RollRebuiltImage => Some(format!("roll out the rebuilt image {image}")),
            ServiceChange::Unchanged => None,
            ServiceChange::Remove => Some("remove (no longer in the stack file)".into()),
        }
    }
}

/// The decision: `current` is the service's spec as the Engine has it (None: no such service);
/// `image_rebuilt` whether the local image its tag names differs from what runs.
pub fn decide(desired: Desired, current: Option<&Value>, image_rebuilt: bool) -> ServiceChange {
    match (desired, current) {
        (Desired::Absent, Some(_)) => ServiceChange::Remove,
        (Desired::Absent, None) => ServiceChange::Unchanged,
        (_, None) => ServiceChange::Create,
        (Desired::Unresolved, Some(_)) => {
            ServiceChange::Update(vec!["(it uses objects that do not exist yet)".into()])
        }
        (Desired::Spec(desired), Some(current)) => {
            let diff = spec::differences(
                &spec::normalise(desired),
                &spec::normalise_value(current.clone()),
            );
            if !diff.is_empty() {
                ServiceChange::Update(diff)
            } else if image_rebuilt {
                ServiceChange::RollRebuiltImage
            } else {
                ServiceChange::Unchanged
            }
        }
    }
}

/// What `converge` would change, from inspect and list calls only. (An update Swarm has not
/// judged yet is no change to make: `converge` waits it out before changing that service, and
/// `deploy` judges it first.)
pub async fn pending(
    daemon: &impl SwarmApi,
    stack: &str,
    file: &StackFile,
    previous_images: &BTreeMap<String, String>,
) -> Result<Vec<Pending>> {
    let (resolved, mut pending) = resolve(daemon, stack, file, false).await?;
    for (key, service) in &file.services {
        let name = spec::scoped(stack, key);
        let current = current_service(daemon, &name).await?.map(|(_, c)| c);
        // Only a service that uses an object still to be created cannot have its spec built
        // now; the others are compared as `converge` will compare them.
        let unresolved = uses_unresolved(service, &resolved);
        let desired = match (&current, unresolved) {
            (Some(_), false) => Some(
                spec::services(stack, &single(file, key, service), &resolved)?
                    .remove(0)
                    .1,
            ),
            _ => None,
        };
        let change = match &desired {
            Some(spec) => {
                // Only a spec that is otherwise the same needs the image comparison.
                let same = decide(Desired::Spec(spec), current.as_ref(), false);
                let rebuilt = same == ServiceChange::Unchanged
                    && rebuilt(daemon, spec, previous_images.get(&name)).await?.1;
                decide(Desired::Spec(spec), current.as_ref(), rebuilt)
            }
            None => decide(Desired::Unresolved, current.as_ref(), false),
        };
        if let Some(line) = change.plan_line(&service.image) {
            pending.push(Pending {
                object: format!("service {name}"),
                change: line,
            });
            continue;
        }
        let progress = progress(daemon, &name).await?;
        // The spec is the file's here: a rollback the Engine still reports is an earlier
        // update's (a failed deploy); what counts now is every task running healthy.
        if progress.healthy < progress.desired || progress.lagging.is_some() {
            pending.push(Pending {
                object: format!("service {name}"),
                change: format!(
                    "wait: {}/{} tasks running healthy",
                    progress.healthy, progress.desired
                ),
            });
        }
    }
    for name in strays(daemon, stack, file).await? {
        if let Some(line) = decide(Desired::Absent, Some(&Value::Null), false).plan_line("") {
            pending.push(Pending {
                object: format!("service {name}"),
                change: line,
            });
        }
    }
    Ok(pending)
}

/// Whether the service uses a network, secret or config `resolved` lacks (a plan's missing one).
fn uses_unresolved(service: &super::stack::Service, resolved: &Resolved) -> bool {
    let networks = if service.networks.is_empty() {
        vec![spec::DEFAULT_NETWORK.to_string()]
    } else {
        service.networks.clone()
    };
    networks.iter().any(|n| !resolved.networks.contains_key(n))
        || service
            .secrets
            .iter()
            .any(|s| !resolved.secrets.contains_key(&s.long().source))
        || service
            .configs
            .iter()
            .any(|c| !resolved.configs.contains_key(&c.long().source))
}

/// Services labelled as this stack's, made by the file's owner, that the file does not have.
async fn strays(daemon: &impl SwarmApi, stack: &str, file: &StackFile) -> Result<Vec<String>> {
    let wanted: Vec<String> = file
        .services
        .keys()
        .map(|k| spec::scoped(stack, k))
        .collect();
    let listed = daemon
        .services(Some(("label", &format!("{NAMESPACE_LABEL}={stack}"))))
        .await
        .with_context(|| format!("listing the services of stack {stack}"))?;
    Ok(listed
        .into_iter()
        .filter_map(|s| s.spec)
        // One-off jobs are never in the file; their own run, or the next, removes them.
        .filter(|s| {
            !s.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(super::job::JOB_LABEL))
        })
        // Another chapter's services in the same stack are not this file's to remove.
        .filter(|s| file.owner.owns(s.labels.iter().flatten()))
        .filter_map(|s| s.name)
        .filter(|name| !wanted.contains(name))
        .collect())
}

/// A stack file holding only one of its services, to build that service's spec alone.
fn single(file: &StackFile, key: &str, service: &super::stack::Service) -> StackFile {
    let mut one = file.clone();
    one.services = BTreeMap::from([(key.to_string(), service.clone())]);
    one
}

/// Creates what is missing, updates services whose spec differs, then waits for every task
/// to run healthy.
pub async fn converge(
    daemon: &impl SwarmApi,
    stack: &str,
    file: &StackFile,
    ui: &Ui,
    timeout: Duration,
    previous_images: &BTreeMap<String, String>,
) -> Result<Converged> {
    let names: Vec<String> = file
        .services
        .keys()
        .map(|k| spec::scoped(stack, k))
        .collect();
    let (resolved, _) = resolve(daemon, stack, file, true).await?;
    let mut done = Converged::default();
    let started = Instant::now();
    for (name, mut desired) in spec::services(stack, file, &resolved)? {
        let (image_id, image_rebuilt) =
            rebuilt(daemon, &desired, previous_images.get(&name)).await?;
        if let Some(id) = image_id {
            done.images.insert(name.clone(), id);
        }
        let found = current_service(daemon, &name).await?;
        let change = decide(
            Desired::Spec(&desired),
            found.as_ref().map(|(_, c)| c),
            image_rebuilt,
        );
        match (found, change) {
            (_, ServiceChange::Unchanged) => done.unchanged.push(name),
            (None, _) => {
                daemon.create_service(desired).await?;
                done.created.push(name);
            }
            (Some((mut version, mut current)), _) => {
                // An update an earlier run started (and was killed during) is judged before
                // this one: a new update, even of labels only, would replace it and Swarm
                // would never roll it back. A rollback found here fails this run (exit 5).
                if let Some((state, _)) = update_state(daemon, &name).await?
                    && in_progress(state)
                {
                    ui.note(format!(
                        "an earlier update of {name} is still in progress; waiting for Swarm to finish and judge it first"
                    ));
                    let judged =
                        wait_unjudged(daemon, std::slice::from_ref(&name), ui, timeout).await?;
                    if let Some((_, message)) = judged.first() {
                        return Err(Failure::RolledBack(format!(
                            "{name}: an earlier run's update failed while Swarm watched it and it rolled back: {message}"
                        ))
                        .into());
                    }
                    (version, current) = current_service(daemon, &name)
                        .await?
                        .with_context(|| format!("service {name} went away"))?;
                }
                let force = current["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0);
                if let Some(task) = desired.task_template.as_mut() {
                    task.force_update = Some(force + u64::from(image_rebuilt));
                }
                daemon.update_service(&name, version, desired).await?;
                done.updated.push(name);
            }
        }
    }
    for name in strays(daemon, stack, file).await? {
        if daemon.remove_service(&name).await? {
            done.removed.push(name);
        }
    }
    wait_since(daemon, &names, ui, timeout, Some(&done.updated)).await?;
    done.wait_seconds = started.elapsed().as_secs_f64();
    done.pruned = prune_objects(daemon, stack, file, &resolved).await?;
    Ok(done)
}

/// The configs and secrets some service's spec names (with `previous`, its previous spec too:
/// what Swarm's rollback returns to), by name and id: an object in this set must stay.
pub async fn objects_in_use(
    daemon: &impl SwarmApi,
    previous: bool,
) -> Result<std::collections::BTreeSet<String>> {
    let mut used = std::collections::BTreeSet::new();
    for service in raw_services(daemon).await? {
        let specs = if previous {
            vec![&service["Spec"], &service["PreviousSpec"]]
        } else {
            vec![&service["Spec"]]
        };
        for spec in specs {
            let container = &spec["TaskTemplate"]["ContainerSpec"];
            for (list, name, id) in [
                ("Secrets", "SecretName", "SecretID"),
                ("Configs", "ConfigName", "ConfigID"),
            ] {
                for item in container[list].as_array().into_iter().flatten() {
                    for field in [name, id] {
                        if let Some(value) = item[field].as_str() {
                            used.insert(value.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(used)
}

/// The file's owner's configs and file-based secrets of `stack` that are not the current
/// versions and that no service uses any more (earlier content-named versions, or configs made
/// before content naming): removed, as chapter 07 prunes its secret versions. Chapter 07's
/// versioned secrets (`beamops.key`) are never touched here.
async fn prune_objects(
    daemon: &impl SwarmApi,
    stack: &str,
    file: &StackFile,
    resolved: &Resolved,
) -> Result<Vec<String>> {
    let current: std::collections::BTreeSet<&str> = resolved
        .configs
        .values()
        .chain(resolved.secrets.values())
        .map(|(name, _)| name.as_str())
        .collect();
    let used = objects_in_use(daemon, true).await?;
    let label = format!("{NAMESPACE_LABEL}={stack}");
    let mut stale: Vec<(bool, String, String)> = Vec::new();
    for c in daemon
        .configs(("label", &label))
        .await
        .context("listing the stack's configs")?
    {
        let spec = c.spec.unwrap_or_default();
        if file.owner.owns(spec.labels.iter().flatten()) {
            stale.push((
                true,
                spec.name.unwrap_or_default(),
                c.id.unwrap_or_default(),
            ));
        }
    }
    for s in daemon
        .secrets(("label", &label))
        .await
        .context("listing the stack's secrets")?
    {
        let spec = s.spec.unwrap_or_default();
        let labels = spec.labels.clone().unwrap_or_default();
        if !labels.contains_key(crate::secrets::docker::LABEL_KEY) && file.owner.owns(labels.iter())
        {
            stale.push((
                false,
                spec.name.unwrap_or_default(),
                s.id.unwrap_or_default(),
            ));
        }
    }
    let mut removed = Vec::new();
    for (is_config, name, id) in stale {
        if current.contains(name.as_str()) || used.contains(&name) || used.contains(&id) {
            continue;
        }
        let kind = if is_config { "config" } else { "secret" };
        let result = if is_config {
            daemon.remove_config(&id).await
        } else {
            daemon.remove_secret(&id).await
        };
        // Gone already, or a service started using it meanwhile: leave it.
        if result.with_context(|| format!("removing unused {kind} {name}"))? == Removal::Removed {
            removed.push(format!("{kind} {name}"));
        }
    }
    Ok(removed)
}

/// How far one service is from running every desired task healthy.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub desired: u64,
    pub healthy: u64,
    /// The update went back to the previous spec.
    pub rolled_back: Option<String>,
    /// The most telling task that is not running healthy: `name: state — message/error`.
    pub lagging: Option<String>,
}

impl Progress {
    pub fn converged(&self) -> bool {
        self.rolled_back.is_none() && self.healthy == self.desired && self.lagging.is_none()
    }
}

pub async fn progress(daemon: &impl SwarmApi, name: &str) -> Result<Progress> {
    progress_since(daemon, name, true).await
}

/// `progress`; a rollback status counts only when `current`: the Engine keeps a service's last
/// UpdateStatus until its next update resets it, so on a service this run did not update it
/// belongs to an earlier update. (Deciding by the status's start time would compare the
/// Engine's clock with ours.)
pub async fn progress_since(daemon: &impl SwarmApi, name: &str, current: bool) -> Result<Progress> {
    let service = daemon
        .inspect_service(name)
        .await?
        .with_context(|| format!("inspecting service {name}: no such service"))?;
    let spec = service.spec.clone().unwrap_or_default();
    let template = normalised_task(spec.task_template.as_ref());
    let mut out = Progress::default();
    if let Some(status) = &service.update_status
        && matches!(
            status.state,
            // Started counts too: the spec is already the previous one, so its tasks look
            // converged while the update has in fact failed.
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED)
                | Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED)
                | Some(ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED)
        )
        && current
    {
        out.rolled_back = Some(status.message.clone().unwrap_or_default());
    }
    let tasks = daemon.tasks(name).await?;
    // The service filter also matches services whose name starts with this one.
    let service_id = service.id.clone().unwrap_or_default();
    let tasks: Vec<Task> = tasks
        .into_iter()
        .filter(|t| t.service_id.as_deref() == Some(service_id.as_str()))
        .collect();
    let global = spec.mode.as_ref().and_then(|m| m.global.as_ref()).is_some();
    let wanted: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .collect();
    out.desired = if global {
        wanted.len() as u64
    } else {
        spec.mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas)
            .unwrap_or(1) as u64
    };
    for task in &wanted {
        let state = task.status.as_ref().and_then(|s| s.state);
        let current_spec = normalised_task(task.spec.as_ref()) == template;
        let healthy = state == Some(TaskState::RUNNING)
            && current_spec
            && container_healthy(daemon, task).await?;
        if healthy {
            out.healthy += 1;
        } else if out.lagging.is_none() {
            out.lagging = Some(describe_task(name, task, current_spec));
        }
    }
    if out.lagging.is_none() && out.healthy < out.desired {
        // Fewer tasks than replicas: the scheduler could not place them, or they keep failing.
        let latest_failed = tasks
            .iter()
            .filter(|t| t.desired_state != Some(TaskState::RUNNING))
            .max_by_key(|t| t.updated_at.clone().map(|d| d.to_string()));
        out.lagging = Some(match latest_failed {
            Some(task) => describe_task(name, task, true),
            None => format!(
                "{name}: {} of {} tasks scheduled",
                wanted.len(),
                out.desired
            ),
        });
    }
    Ok(out)
}

/// A task spec for "is this task of the current version": ForceUpdate counts here, since a
/// forced rollout changes nothing else.
fn normalised_task(task: Option<&bollard::models::TaskSpec>) -> Value {
    let spec = ServiceSpec {
        task_template: task.cloned(),
        ..Default::default()
    };
    let mut value = spec::normalise(&spec);
    let force = task.and_then(|t| t.force_update).unwrap_or(0);
    value["ForceUpdate"] = Value::from(force);
    value
}

/// A running task's container is healthy, or has no healthcheck, or lives on another node.
async fn container_healthy(daemon: &impl SwarmApi, task: &Task) -> Result<bool> {
    let Some(id) = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
    else {
        return Ok(false);
    };
    match daemon.container(&id).await? {
        Some(container) => Ok(container
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s == bollard::models::HealthStatusEnum::HEALTHY)
            .unwrap_or(true)),
        // On another node of the swarm: the Engine there reported it running, which with a
        // healthcheck means it passed one.
        None => Ok(true),
    }
}

fn describe_task(service: &str, task: &Task, current_spec: bool) -> String {
    let status = task.status.clone().unwrap_or_default();
    let state = status
        .state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut text = format!(
        "{service}.{} ({}): {state}",
        task.slot.unwrap_or_default(),
        task.id
            .as_deref()
            .unwrap_or("?")
            .chars()
            .take(12)
            .collect::<String>()
    );
    if !current_spec {
        text.push_str(", previous version");
    }
    if let Some(message) = status.message.filter(|m| !m.is_empty() && *m != state) {
        text.push_str(&format!(" — {message}"));
    }
    if let Some(err) = status.err.filter(|e| !e.is_empty()) {
        text.push_str(&format!(" — error: {err}"));
    }
    text
}

/// Waits until every service runs all its desired tasks healthy, with a progress bar.
pub async fn wait(
    daemon: &impl SwarmApi,
    services: &[String],
    ui: &Ui,
    timeout: Duration,
) -> Result<()> {
    wait_since(daemon, services, ui, timeout, None).await
}

/// `wait` after this run updated `updated` (None: every service's rollback status counts).
pub async fn wait_since(
    daemon: &impl SwarmApi,
    services: &[String],
    ui: &Ui,
    timeout: Duration,
    updated: Option<&[String]>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let bar = ui.progress(0, "waiting for tasks to run healthy");
    loop {
        let mut desired = 0;
        let mut healthy = 0;
        let mut lagging = Vec::new();
        for name in services {
            let current = updated.is_none_or(|u| u.contains(name));
            let p = progress_since(daemon, name, current).await?;
            if let Some(message) = p.rolled_back {
                bar.finish_and_clear();
                return Err(Failure::RolledBack(format!(
                    "{name}: the update failed and swarm rolled it back: {message}"
                ))
                .into());
            }
            desired += p.desired;
            healthy += p.healthy;
            lagging.extend(p.lagging);
        }
        bar.set_length(desired);
        bar.set_position(healthy);
        if lagging.is_empty() && healthy == desired {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            bail!(
                "the stack did not converge in {}: {healthy}/{desired} tasks running healthy\n  {}\n  fix: docker service ps --no-trunc <service> shows every attempt; raise chapters.swarm.converge_timeout if the app is only slow to start",
                humantime::format_duration(timeout),
                lagging.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the service's last update completed (or it was never updated): then its previous
/// spec is the release that was live before, not one Swarm rolled back from.
pub async fn last_update_completed(daemon: &impl SwarmApi, name: &str) -> Result<bool> {
    let service = daemon
        .inspect_service(name)
        .await?
        .with_context(|| format!("inspecting service {name}: no such service"))?;
    Ok(matches!(
        service.update_status.and_then(|s| s.state),
        None | Some(ServiceUpdateStatusStateEnum::COMPLETED)
    ))
}

/// After the tasks run healthy, Swarm still watches them for `update_config.monitor` before it
/// calls the update completed; a task failing in that window rolls the service back. This
/// waits until the update of every service in `updated` (the ones this run updated, whose
/// status the update reset) is completed — what `docker service update --detach=false` waits
/// for — and a rollback in the window is a failed update.
pub async fn wait_update_settled(
    daemon: &impl SwarmApi,
    updated: &[String],
    ui: &Ui,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let spinner = ui.spinner("Swarm watches the new tasks (update_config.monitor)");
    loop {
        let mut watching = Vec::new();
        for name in updated {
            let service = daemon
                .inspect_service(name)
                .await?
                .with_context(|| format!("inspecting service {name}: no such service"))?;
            let Some(status) = service.update_status else {
                continue;
            };
            match status.state {
                Some(ServiceUpdateStatusStateEnum::UPDATING) => watching.push(name.clone()),
                Some(
                    ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                ) => {
                    spinner.finish_and_clear();
                    return Err(Failure::RolledBack(format!(
                        "{name}: a new task failed while Swarm watched the update and it rolled back: {}",
                        status.message.unwrap_or_default()
                    ))
                    .into());
                }
                Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                    spinner.finish_and_clear();
                    bail!(
                        "{name}: Swarm paused the update: {}\n  fix: docker service ps --no-trunc {name}; `beamops rollback` returns to the previous release",
                        status.message.unwrap_or_default()
                    );
                }
                _ => {}
            }
        }
        if watching.is_empty() {
            spinner.finish_and_clear();
            return Ok(());
        }
        if Instant::now() >= deadline {
            spinner.finish_and_clear();
            bail!(
                "Swarm did not call the update of {} completed in {}\n  fix: docker service inspect --format '{{{{json .UpdateStatus}}}}' <service>",
                watching.join(", "),
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn filters(key: &str, value: &str) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_string(), vec![value.to_string()])]))
}

/// `docker stack rm` through the API: everything of the stack, whoever made it (tests' cleanup).
pub async fn remove(daemon: &Daemon, stack: &str, volumes: bool) -> Result<Vec<String>> {
    remove_owned(daemon, stack, &spec::Owner::default(), volumes).await
}

/// What `owner` made in `stack`, removed: one-off jobs and services first (their tasks hold
/// the networks), then networks no other service still uses, configs and the secrets the stack
/// file created (chapter 07's versions, labelled `beamops.key`, stay with chapter 07). Volumes
/// stay unless `volumes` is set; then the volumes the removed services mounted go too. Another
/// chapter's services, networks and configs in the same stack are left alone. Returns what it
/// removed.
pub async fn remove_owned(
    daemon: &Daemon,
    stack: &str,
    owner: &spec::Owner,
    volumes: bool,
) -> Result<Vec<String>> {
    let label = filters("label", &format!("{NAMESPACE_LABEL}={stack}"));
    // One-off jobs first, with the exited containers a deleted job service leaves behind. The
    // owner of the stack's unlabelled objects (the app stack's) removes every job of the stack:
    // they run on its networks.
    let jobs_of = owner
        .chapter
        .as_deref()
        .filter(|_| !owner.adopts_unlabelled);
    let mut removed: Vec<String> = super::job::remove_all(daemon, stack, jobs_of)
        .await?
        .into_iter()
        .map(|job| format!("job {job}"))
        .collect();
    let services = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: label.clone(),
            ..Default::default()
        }))
        .await
        .context("listing the stack's services")?;
    let mut mounted = std::collections::BTreeSet::new();
    for service in services {
        let spec = service.spec.unwrap_or_default();
        if !owner.owns(spec.labels.iter().flatten()) {
            continue;
        }
        let name = spec.name.clone().unwrap_or_default();
        mounted.extend(
            spec.task_template
                .and_then(|t| t.container_spec)
                .and_then(|c| c.mounts)
                .into_iter()
                .flatten()
                .filter_map(|m| m.source),
        );
        match daemon.client.delete_service(&name).await {
            Ok(()) => removed.push(format!("service {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("removing service {name}")),
        }
    }
    // Networks another chapter's services still use stay (their removal would never succeed).
    let still_used: std::collections::BTreeSet<String> = raw_services(daemon)
        .await?
        .iter()
        .flat_map(|s| {
            s["Spec"]["TaskTemplate"]["Networks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|n| n["Target"].as_str().map(str::to_string))
        .collect();
    // A network stays in use until the removed services' tasks have stopped.
    let networks = daemon
        .client
        .list_networks(Some(ListNetworksOptions {
            filters: label.clone(),
        }))
        .await
        .context("listing the stack's networks")?;
    for network in networks {
        if !owner.owns(network.labels.iter().flatten()) {
            continue;
        }
        let name = network.name.unwrap_or_default();
        let id = network.id.unwrap_or_default();
        if still_used.contains(&id) || still_used.contains(&name) {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match daemon.client.remove_network(&name).await {
                Ok(()) => {
                    removed.push(format!("network {name}"));
                    break;
                }
                Err(e) if is_not_found(&e) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("removing network {name}")),
            }
        }
    }
    let configs = daemon
        .client
        .list_configs(Some(ListConfigsOptions {
            filters: label.clone(),
        }))
        .await
        .context("listing the stack's configs")?;
    for c in configs {
        let spec = c.spec.unwrap_or_default();
        if !owner.owns(spec.labels.iter().flatten()) {
            continue;
        }
        let name = spec.name.unwrap_or_default();
        match daemon.client.delete_config(&name).await {
            Ok(()) => removed.push(format!("config {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("removing config {name}")),
        }
    }
    let secrets = daemon
        .client
        .list_secrets(Some(ListSecretsOptions {
            filters: label.clone(),
        }))
        .await
        .context("listing the stack's secrets")?;
    for s in secrets {
        let spec = s.spec.unwrap_or_default();
        let labels = spec.labels.clone().unwrap_or_default();
        // Versions chapter 07 made belong to chapter 07: its state still records them.
        if labels.contains_key(crate::secrets::docker::LABEL_KEY) || !owner.owns(labels.iter()) {
            continue;
        }
        let name = spec.name.unwrap_or_default();
        match daemon.client.delete_secret(&name).await {
            Ok(()) => removed.push(format!("secret {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("removing secret {name}")),
        }
    }
    if volumes {
        let listed = daemon
            .client
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: label.clone(),
            }))
            .await
            .context("listing the stack's volumes")?;
        for v in listed.volumes.unwrap_or_default() {
            // Volumes carry no chapter label (it would be part of the task template): an owner
            // with a chapter removes the ones its services mounted.
            if owner.chapter.is_some() && !mounted.contains(&v.name) {
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match daemon
                    .client
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                {
                    Ok(()) => {
                        removed.push(format!("volume {}", v.name));
                        break;
                    }
                    Err(e) if is_not_found(&e) => break,
                    // Held by a container that is still stopping.
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing volume {}", v.name));
                    }
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::{Desired, ServiceChange, decide};
    use crate::exit::{Exit, exit_for};
    use crate::output::{Format, Ui};
    use crate::swarm::fake::FakeSwarm;
    use crate::swarm::spec::{self, Owner, tests::STACK, tests::resolved};
    use crate::swarm::stack::StackFile;
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    const APP_STACK: &str = "demo";
    const APP_CHAPTER: &str = "08-swarm";

    /// The stack a case converges: the knobs every kind of service change turns.
    #[derive(Clone)]
    struct Wanted {
        /// The key of the first service (`app`; another chapter's file names its own).
        service: &'static str,
        image: &'static str,
        greeting: &'static str,
        replicas: u32,
        page: &'static str,
        /// A second service, `worker`, in the file.
        worker: bool,
        stack: &'static str,
        owner: Owner,
        /// The file's directory (two chapters' files live apart).
        dir: &'static str,
    }

    impl Default for Wanted {
        fn default() -> Self {
            Wanted {
                service: "app",
                image: "example/app:1",
                greeting: "hello",
                replicas: 2,
                page: "v1",
                worker: true,
                stack: APP_STACK,
                owner: app_owner(),
                dir: "/project/deploy",
            }
        }
    }

    /// Chapter 08's converge of the app stack: labels its objects, adopts unlabelled ones.
    fn app_owner() -> Owner {
        Owner {
            chapter: Some(APP_CHAPTER.into()),
            adopts_unlabelled: true,
        }
    }

    /// Another chapter's converge into the same stack (a `stack-converged` with `file:`).
    fn extra_owner() -> Owner {
        Owner {
            chapter: Some("13-extra".into()),
            adopts_unlabelled: false,
        }
    }

    impl Wanted {
        fn file(&self) -> StackFile {
            let worker = if self.worker {
                format!(
                    "  worker:\n    image: {}\n    command: [\"work\"]\n    networks: [backend]\n",
                    self.image
                )
            } else {
                String::new()
            };
            let text = format!(
                r#"
services:
  {service}:
    image: {image}
    environment: {{GREETING: "{greeting}"}}
    networks: [backend]
    configs:
      - source: page
        target: /srv/page.txt
    secrets: [token]
    healthcheck: {{test: ["CMD", "/hc"], interval: 5s, retries: 3}}
    deploy:
      replicas: {replicas}
      update_config: {{order: start-first, failure_action: rollback, monitor: 5s}}
{worker}networks:
  backend: {{driver: overlay}}
configs:
  page: {{file: ./page.txt}}
secrets:
  token: {{file: ./token.txt}}
"#,
                service = self.service,
                image = self.image,
                greeting = self.greeting,
                replicas = self.replicas,
            );
            let dir = PathBuf::from(self.dir);
            let mut file =
                StackFile::parse(&dir.join("stack.yml"), &text, &BTreeMap::new()).unwrap();
            file.owner = self.owner.clone();
            file.contents = BTreeMap::from([
                (dir.join("page.txt"), self.page.as_bytes().to_vec()),
                (dir.join("token.txt"), b"s3cret".to_vec()),
            ]);
            file
        }
    }

    fn ui() -> Ui {
        Ui::new(Format::Json, true, false)
    }

    /// `plan`'s view: `pending` over the fake, as `object → change`.
    fn plan(swarm: &FakeSwarm, wanted: &Wanted) -> BTreeMap<String, String> {
        let rt = crate::docker::runtime().unwrap();
        rt.block_on(super::pending(
            swarm,
            wanted.stack,
            &wanted.file(),
            &BTreeMap::new(),
        ))
        .unwrap()
        .into_iter()
        .map(|p| (p.object, p.change))
        .collect()
    }

    /// `up`'s view: `converge` over the fake.
    fn up(swarm: &FakeSwarm, wanted: &Wanted) -> anyhow::Result<super::Converged> {
        let rt = crate::docker::runtime().unwrap();
        rt.block_on(super::converge(
            swarm,
            wanted.stack,
            &wanted.file(),
            &ui(),
            Duration::from_millis(700),
            &BTreeMap::new(),
        ))
    }

    /// The services a plan lists with the verb it uses (create / update / roll / remove).
    fn planned_services(planned: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        planned
            .iter()
            .filter_map(|(object, change)| {
                let name = object.strip_prefix("service ")?;
                Some((name.to_string(), change.split(' ').next()?.to_string()))
            })
            .collect()
    }

    fn set(items: &[String]) -> BTreeSet<String> {
        items.iter().cloned().collect()
    }

    type Setup = Box<dyn Fn(&FakeSwarm)>;

    /// One row: what exists before (`before` converged with the real `converge`, then `setup`),
    /// the file converged now, and what `plan` must say for each object (`object → change`,
    /// the change's first words).
    struct Case {
        name: &'static str,
        before: Vec<Wanted>,
        setup: Setup,
        now: Wanted,
        expected: Vec<(String, &'static str)>,
    }

    fn case(
        name: &'static str,
        before: Vec<Wanted>,
        now: Wanted,
        expected: Vec<(&str, &'static str)>,
    ) -> Case {
        Case {
            name,
            before,
            setup: Box::new(|_| {}),
            now,
            expected: expected
                .into_iter()
                .map(|(o, c)| (o.to_string(), c))
                .collect(),
        }
    }

    fn images(swarm: &FakeSwarm) {
        swarm.put_image("example/app:1", "sha256:one");
        swarm.put_image("example/app:2", "sha256:two");
    }

    fn cases() -> Vec<Case> {
        let base = Wanted::default();
        let page1 = spec::content_name("demo_page", b"v1");
        let page2 = spec::content_name("demo_page", b"v2");
        let token = spec::content_name("demo_token", b"s3cret");
        // Another chapter's file converged into the same stack: its one service is `side`.
        let extra = Wanted {
            service: "side",
            worker: false,
            dir: "/project/deploy/extra",
            owner: extra_owner(),
            ..Wanted::default()
        };
        let unlabelled = Wanted {
            owner: Owner::default(),
            ..base.clone()
        };
        vec![
            case(
                "a fresh swarm: every object and service created",
                vec![],
                base.clone(),
                vec![
                    ("network demo_backend", "create"),
                    (&format!("config {page1}"), "create"),
                    (&format!("secret {token}"), "create"),
                    ("service demo_app", "create"),
                    ("service demo_worker", "create"),
                ],
            ),
            case(
                "the same file again: nothing to do (healthcheck and engine defaults included)",
                vec![base.clone()],
                base.clone(),
                vec![],
            ),
            case(
                "an environment variable changed",
                vec![base.clone()],
                Wanted {
                    greeting: "bonjour",
                    ..base.clone()
                },
                vec![("service demo_app", "update TaskTemplate.ContainerSpec.Env")],
            ),
            case(
                "a new image tag",
                vec![base.clone()],
                Wanted {
                    image: "example/app:2",
                    ..base.clone()
                },
                vec![
                    ("service demo_app", "update"),
                    ("service demo_worker", "update"),
                ],
            ),
            case(
                "replicas changed",
                vec![base.clone()],
                Wanted {
                    replicas: 3,
                    ..base.clone()
                },
                vec![("service demo_app", "update Mode.Replicated.Replicas")],
            ),
            case(
                "a config's content changed: a new content-named config, the service moves to it",
                vec![base.clone()],
                Wanted {
                    page: "v2",
                    ..base.clone()
                },
                vec![
                    (&format!("config {page2}"), "create"),
                    ("service demo_app", "update"),
                ],
            ),
            Case {
                name: "the image rebuilt under the same tag: rolled out",
                before: vec![base.clone()],
                setup: Box::new(|swarm| swarm.put_image("example/app:1", "sha256:rebuilt")),
                now: base.clone(),
                expected: vec![
                    (
                        "service demo_app".into(),
                        "roll out the rebuilt image example/app:1",
                    ),
                    (
                        "service demo_worker".into(),
                        "roll out the rebuilt image example/app:1",
                    ),
                ],
            },
            case(
                "a service dropped from the file: removed as a stray",
                vec![base.clone()],
                Wanted {
                    worker: false,
                    ..base.clone()
                },
                vec![("service demo_worker", "remove")],
            ),
            case(
                "another chapter's service in the same stack is not the app file's stray",
                vec![extra.clone(), base.clone()],
                Wanted {
                    worker: false,
                    ..base.clone()
                },
                vec![("service demo_worker", "remove")],
            ),
            case(
                "the other chapter's converge leaves the app chapter's services alone",
                vec![base.clone(), extra.clone()],
                Wanted {
                    replicas: 1,
                    ..extra.clone()
                },
                vec![("service demo_side", "update Mode.Replicated.Replicas")],
            ),
            case(
                "another stack's services are not strays",
                vec![
                    Wanted {
                        stack: "other",
                        ..base.clone()
                    },
                    base.clone(),
                ],
                Wanted {
                    worker: false,
                    ..base.clone()
                },
                vec![("service demo_worker", "remove")],
            ),
            case(
                "unlabelled services (made before chapter labels): the app stack's owner adopts them",
                vec![unlabelled.clone()],
                Wanted {
                    worker: false,
                    ..base.clone()
                },
                vec![
                    ("service demo_app", "update Labels"),
                    ("service demo_worker", "remove"),
                ],
            ),
            case(
                "unlabelled services: another chapter's converge leaves them alone",
                vec![unlabelled],
                extra.clone(),
                vec![("service demo_side", "create")],
            ),
        ]
    }

    #[test]
    fn plan_and_up_agree_on_every_service_change_over_the_fake_swarm() {
        for case in cases() {
            let swarm = FakeSwarm::new();
            images(&swarm);
            for before in &case.before {
                up(&swarm, before).unwrap_or_else(|e| panic!("{}: setup: {e:#}", case.name));
            }
            (case.setup)(&swarm);
            let planned = plan(&swarm, &case.now);
            // The plan says what the row says, object by object.
            let said: BTreeMap<String, String> = planned
                .iter()
                .filter_map(|(object, change)| {
                    let (_, words) = case.expected.iter().find(|(o, _)| o == object)?;
                    change
                        .starts_with(words)
                        .then(|| (object.clone(), change.clone()))
                })
                .collect();
            assert_eq!(
                said.len(),
                case.expected.len(),
                "{}: plan said {planned:#?}",
                case.name
            );
            assert_eq!(
                planned.len(),
                case.expected.len(),
                "{}: plan said {planned:#?}",
                case.name
            );
            let services_before = swarm.service_names();
            let configs_before = swarm.config_names();
            let snapshot = swarm.snapshot();
            let done = up(&swarm, &case.now).unwrap_or_else(|e| panic!("{}: up: {e:#}", case.name));
            // up did to each service exactly what plan said, and nothing to the others.
            let verbs = planned_services(&planned);
            let of = |verb: &[&str]| -> BTreeSet<String> {
                verbs
                    .iter()
                    .filter(|(_, v)| verb.contains(&v.as_str()))
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            assert_eq!(
                set(&done.created),
                of(&["create"]),
                "{}: created",
                case.name
            );
            assert_eq!(
                set(&done.updated),
                of(&["update", "roll"]),
                "{}: updated",
                case.name
            );
            assert_eq!(
                set(&done.removed),
                of(&["remove"]),
                "{}: removed",
                case.name
            );
            // The configs and networks plan said it would create are there now, as up made them.
            for object in planned.keys() {
                if let Some(config) = object.strip_prefix("config ") {
                    assert!(
                        !configs_before.contains(config) && swarm.config_names().contains(config),
                        "{}: {config}",
                        case.name
                    );
                }
                if let Some(network) = object.strip_prefix("network ") {
                    assert!(swarm.network_names().contains(network), "{}", case.name);
                }
            }
            // A service up left alone is untouched (same version), and nothing else went.
            for name in services_before {
                if !verbs.contains_key(&name) {
                    assert_eq!(
                        swarm.service(&name).map(|(v, _)| v),
                        snapshot
                            .iter()
                            .find_map(|s| s.strip_prefix(&format!("service {name}@")))
                            .and_then(|v| v.parse().ok()),
                        "{}: {name} was written though plan listed no change",
                        case.name
                    );
                }
            }
            if planned.is_empty() {
                assert_eq!(swarm.snapshot(), snapshot, "{}: up wrote", case.name);
            }
            // And after up, plan has nothing left to do.
            assert_eq!(
                plan(&swarm, &case.now),
                BTreeMap::new(),
                "{}: a second plan still has work",
                case.name
            );
        }
    }

    #[test]
    fn a_config_change_prunes_the_old_version_once_no_spec_names_it() {
        let swarm = FakeSwarm::new();
        images(&swarm);
        let base = Wanted::default();
        up(&swarm, &base).unwrap();
        let v2 = Wanted {
            page: "v2",
            ..base.clone()
        };
        let done = up(&swarm, &v2).unwrap();
        // The previous spec (what a Swarm rollback returns to) still names v1: it stays.
        assert!(done.pruned.is_empty(), "{:?}", done.pruned);
        let v3 = Wanted {
            page: "v3",
            ..base.clone()
        };
        let done = up(&swarm, &v3).unwrap();
        let v1 = spec::content_name("demo_page", b"v1");
        assert_eq!(done.pruned, vec![format!("config {v1}")]);
        assert!(!swarm.config_names().contains(&v1));
    }

    /// The deploy lock is a config on the same swarm: converging (and pruning the stack's
    /// unused configs) under it leaves it held, a second run is refused, and dropping the guard
    /// releases it.
    #[test]
    fn a_converge_under_the_deploy_lock_leaves_the_lock_alone() {
        use crate::swarm::lock;
        let swarm = FakeSwarm::new();
        images(&swarm);
        let rt = crate::docker::runtime().unwrap();
        let opts = lock::AcquireOptions {
            env: "local",
            wait: Duration::ZERO,
            timeout: Duration::from_secs(3600),
            poll: Duration::from_millis(10),
        };
        let holder = lock::Holder::current("up", None);
        let guard = rt
            .block_on(lock::acquire(&swarm, APP_STACK, &holder, &opts, |_| {}))
            .unwrap();
        let base = Wanted::default();
        up(&swarm, &base).unwrap();
        up(
            &swarm,
            &Wanted {
                page: "v2",
                ..base.clone()
            },
        )
        .unwrap();
        let done = up(
            &swarm,
            &Wanted {
                page: "v3",
                ..base.clone()
            },
        )
        .unwrap();
        assert!(!done.pruned.is_empty(), "the old config version was pruned");
        assert!(swarm.config_names().contains(&lock::lock_name(APP_STACK)));
        // A run on another machine finds it held.
        let other = lock::Holder {
            host: "ci-runner-7".into(),
            ..lock::Holder::current("deploy", None)
        };
        let refused = rt.block_on(lock::acquire(&swarm, APP_STACK, &other, &opts, |_| {}));
        assert_eq!(
            refused.map(|_| ()).map_err(|e| exit_for(&e)),
            Err(Exit::Blocked),
            "a second run takes a held lock"
        );
        drop(guard);
        assert!(!swarm.config_names().contains(&lock::lock_name(APP_STACK)));
        rt.block_on(lock::acquire(&swarm, APP_STACK, &other, &opts, |_| {}))
            .expect("free again once released");
    }

    #[test]
    fn an_update_swarm_rolls_back_is_a_rollback_for_up_and_still_pending_for_plan() {
        let swarm = FakeSwarm::new();
        images(&swarm);
        let base = Wanted::default();
        up(&swarm, &base).unwrap();
        swarm.fail_image("example/app:2");
        let bad = Wanted {
            image: "example/app:2",
            ..base.clone()
        };
        let planned = planned_services(&plan(&swarm, &bad));
        assert_eq!(planned.get("demo_app").map(String::as_str), Some("update"));
        let err = up(&swarm, &bad).unwrap_err();
        assert_eq!(exit_for(&err), Exit::RolledBack, "{err:#}");
        assert!(format!("{err:#}").contains("rolled it back"), "{err:#}");
        // Swarm put the old spec back: the plan still has the release to roll out.
        let (_, spec) = swarm.service("demo_app").unwrap();
        assert_eq!(
            spec["TaskTemplate"]["ContainerSpec"]["Image"],
            "example/app:1"
        );
        assert_eq!(
            swarm.update_status("demo_app").map(|(s, _)| s).as_deref(),
            Some("rollback_completed")
        );
        assert!(!plan(&swarm, &bad).is_empty());
    }

    #[test]
    fn tasks_that_never_run_fail_the_converge_naming_the_task() {
        let swarm = FakeSwarm::new();
        images(&swarm);
        swarm.fail_image("example/app:1");
        let err = up(&swarm, &Wanted::default()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("did not converge"), "{text}");
        assert!(text.contains("non-zero exit"), "{text}");
    }

    #[test]
    fn a_plan_before_swarm_mode_reads_only() {
        // pending creates nothing, whatever it finds missing.
        let swarm = FakeSwarm::new();
        images(&swarm);
        let planned = plan(&swarm, &Wanted::default());
        assert!(!planned.is_empty());
        assert!(swarm.snapshot().is_empty(), "{:?}", swarm.snapshot());
    }

    #[test]
    fn decide_reads_engine_defaults_and_unresolved_specs() {
        let wanted = {
            let file = StackFile::parse(Path::new("s.yml"), STACK, &BTreeMap::new()).unwrap();
            spec::services("demo", &file, &resolved()).unwrap()
        };
        let app = serde_json::to_value(&wanted[0].1).unwrap();
        let mut engine_spelling = app.clone();
        engine_spelling["TaskTemplate"]["Runtime"] = json!("container");
        engine_spelling["TaskTemplate"]["ForceUpdate"] = json!(3);
        assert_eq!(
            decide(Desired::Spec(&wanted[0].1), Some(&engine_spelling), false),
            ServiceChange::Unchanged,
            "engine defaults and a forced-update counter are no change"
        );
        // A plan that cannot build the spec yet (objects missing) still says update, as up does.
        assert_eq!(
            decide(Desired::Unresolved, Some(&app), false).plan_line(""),
            Some("update (it uses objects that do not exist yet)".into())
        );
        assert_eq!(
            decide(Desired::Unresolved, None, false),
            ServiceChange::Create
        );
        assert_eq!(
            decide(Desired::Absent, Some(&app), false),
            ServiceChange::Remove
        );
    }

    #[test]
    fn a_typed_spec_keeps_the_healthcheck_the_engine_wrote() {
        let raw = serde_json::json!({
            "Name": "s_app",
            "TaskTemplate": {"ContainerSpec": {
                "Image": "app:1",
                "Healthcheck": {"Test": ["CMD", "/hc"], "Interval": 5_000_000_000u64, "Retries": 3}
            }}
        });
        let typed = super::typed_spec(raw).unwrap();
        let health = typed
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.health_check)
            .expect("the healthcheck survives the round trip");
        assert_eq!(health.test.unwrap(), ["CMD", "/hc"]);
        assert_eq!(health.retries, Some(3));
    }
}
