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
    InspectServiceOptions, ListConfigsOptions, ListNetworksOptions, ListSecretsOptions,
    ListServicesOptions, ListTasksOptions, UpdateServiceOptions,
};
use serde::Serialize;
use serde_json::Value;

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

/// The id of the image a tag names on this Engine; none for an image only a registry has.
async fn local_image_id(daemon: &Daemon, image: &str) -> Result<Option<String>> {
    match daemon.client.inspect_image(image).await {
        Ok(found) => Ok(found.id),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
    }
}

/// A local image rebuilt under the same tag since the service last rolled: the spec cannot show
/// it (it names the tag), so the service is forced to roll. The containers of its running tasks
/// on this Engine tell which image they run; with none here (a new service, tasks elsewhere),
/// the image id the last converge recorded does.
async fn rebuilt(
    daemon: &Daemon,
    spec: &ServiceSpec,
    previous: Option<&String>,
) -> Result<(Option<String>, bool)> {
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let id = local_image_id(daemon, &image).await?;
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
async fn running_image_ids(daemon: &Daemon, service: &str) -> Result<Vec<String>> {
    let tasks = match daemon
        .client
        .list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([
                ("service".to_string(), vec![service.to_string()]),
                ("desired-state".to_string(), vec!["running".to_string()]),
            ])),
        }))
        .await
    {
        Ok(tasks) => tasks,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing tasks of {service}")),
    };
    let mut ids = Vec::new();
    for task in tasks {
        if task.status.as_ref().and_then(|s| s.state) != Some(TaskState::RUNNING) {
            continue;
        }
        let Some(container) = task
            .status
            .and_then(|s| s.container_status)
            .and_then(|c| c.container_id)
        else {
            continue;
        };
        match daemon.client.inspect_container(&container, None).await {
            Ok(found) => ids.extend(found.image),
            // On another node, or gone since the list.
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting container {container}")),
        }
    }
    Ok(ids)
}

fn filters(key: &str, value: &str) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(key.to_string(), vec![value.to_string()])]))
}

async fn network_id(daemon: &Daemon, name: &str) -> Result<Option<String>> {
    let found = daemon
        .client
        .list_networks(Some(ListNetworksOptions {
            filters: filters("name", name),
        }))
        .await
        .with_context(|| format!("listing networks named {name}"))?;
    // The name filter matches substrings; only an exact name (or id) is this network.
    Ok(found
        .into_iter()
        .find(|n| n.name.as_deref() == Some(name))
        .and_then(|n| n.id))
}

async fn secret_id(daemon: &Daemon, name: &str) -> Result<Option<String>> {
    let found = daemon
        .client
        .list_secrets(Some(ListSecretsOptions {
            filters: filters("name", name),
        }))
        .await
        .with_context(|| format!("listing secrets named {name}"))?;
    Ok(found
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
        .and_then(|s| s.id))
}

/// A config's id and its data (base64), when it exists.
async fn config(daemon: &Daemon, name: &str) -> Result<Option<(String, String)>> {
    let found = daemon
        .client
        .list_configs(Some(ListConfigsOptions {
            filters: filters("name", name),
        }))
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
    daemon: &Daemon,
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
                daemon.host
            );
        } else if create {
            let request = spec::network_request(stack, file, &key);
            let created = daemon
                .client
                .create_network(request)
                .await
                .with_context(|| format!("creating overlay network {name}"))?;
            resolved.networks.insert(key, created.id);
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
                daemon.host
            ))
            .into());
        } else if create {
            let created = daemon
                .client
                .create_secret(SecretSpec {
                    name: Some(name.clone()),
                    labels: Some(object_labels(stack, file, key, &def.labels)),
                    data: Some(
                        base64::engine::general_purpose::STANDARD
                            .encode(data.as_deref().unwrap_or_default()),
                    ),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating secret {name}"))?;
            resolved.secrets.insert(key.clone(), (name, created.id));
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
                    daemon.host
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
                    .client
                    .create_config(ConfigSpec {
                        name: Some(name.clone()),
                        labels: Some(object_labels(stack, file, key, &def.labels)),
                        data: Some(data),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("creating config {name}"))?;
                resolved.configs.insert(key.clone(), (name, created.id));
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
pub(crate) async fn current_service(daemon: &Daemon, name: &str) -> Result<Option<(u64, Value)>> {
    Ok(raw_service(daemon, name).await?.map(|service| {
        let version = service["Version"]["Index"].as_u64().unwrap_or_default();
        (version, service["Spec"].clone())
    }))
}

/// Every service as the Engine writes it (see [`current_service`] for why raw).
pub(crate) async fn raw_services(daemon: &Daemon) -> Result<Vec<Value>> {
    let path = format!("/v{}/services", daemon.api_version);
    let listed = crate::docker::get_json(daemon, &path, "listing services").await?;
    Ok(match listed {
        Some(Value::Array(services)) => services,
        _ => Vec::new(),
    })
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
pub(crate) async fn raw_service(daemon: &Daemon, name: &str) -> Result<Option<Value>> {
    let path = format!("/v{}/services/{name}", daemon.api_version);
    crate::docker::get_json(daemon, &path, &format!("inspecting service {name}")).await
}

/// A service's UpdateStatus state and message, as the Engine reports them (none: never
/// updated, or it does not exist).
pub async fn update_state(
    daemon: &Daemon,
    name: &str,
) -> Result<Option<(ServiceUpdateStatusStateEnum, String)>> {
    let service = match daemon
        .client
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
    {
        Ok(service) => service,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("inspecting service {name}")),
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
    daemon: &Daemon,
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
pub async fn updates_in_progress(daemon: &Daemon, services: &[String]) -> Result<Vec<String>> {
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
    daemon: &Daemon,
    stack: &str,
    file: &StackFile,
    previous_images: &BTreeMap<String, String>,
) -> Result<Vec<Pending>> {
    let (resolved, mut pending) = resolve(daemon, stack, file, false).await?;
    let unresolved = !pending.is_empty();
    for (key, service) in &file.services {
        let name = spec::scoped(stack, key);
        let current = current_service(daemon, &name).await?.map(|(_, c)| c);
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

/// Services labelled as this stack's, made by the file's owner, that the file does not have.
async fn strays(daemon: &Daemon, stack: &str, file: &StackFile) -> Result<Vec<String>> {
    let wanted: Vec<String> = file
        .services
        .keys()
        .map(|k| spec::scoped(stack, k))
        .collect();
    let listed = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: filters("label", &format!("{NAMESPACE_LABEL}={stack}")),
            ..Default::default()
        }))
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
    daemon: &Daemon,
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
                daemon
                    .client
                    .create_service(desired, None)
                    .await
                    .with_context(|| format!("creating service {name}"))?;
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
                let options = UpdateServiceOptions {
                    version: i32::try_from(version).context("service version out of range")?,
                    ..Default::default()
                };
                daemon
                    .client
                    .update_service(&name, desired, options, None)
                    .await
                    .with_context(|| format!("updating service {name}"))?;
                done.updated.push(name);
            }
        }
    }
    for name in strays(daemon, stack, file).await? {
        match daemon.client.delete_service(&name).await {
            Ok(()) => done.removed.push(name),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("removing service {name}")),
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
    daemon: &Daemon,
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
    daemon: &Daemon,
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
    let label = filters("label", &format!("{NAMESPACE_LABEL}={stack}"));
    let mut stale: Vec<(bool, String, String)> = Vec::new();
    for c in daemon
        .client
        .list_configs(Some(ListConfigsOptions {
            filters: label.clone(),
        }))
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
        .client
        .list_secrets(Some(ListSecretsOptions { filters: label }))
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
        let result = if is_config {
            daemon.client.delete_config(&id).await
        } else {
            daemon.client.delete_secret(&id).await
        };
        let kind = if is_config { "config" } else { "secret" };
        match result {
            Ok(()) => removed.push(format!("{kind} {name}")),
            // Gone already, or a service started using it meanwhile: leave it.
            Err(e) if is_not_found(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("removing unused {kind} {name}")),
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

pub async fn progress(daemon: &Daemon, name: &str) -> Result<Progress> {
    progress_since(daemon, name, true).await
}

/// `progress`; a rollback status counts only when `current`: the Engine keeps a service's last
/// UpdateStatus until its next update resets it, so on a service this run did not update it
/// belongs to an earlier update. (Deciding by the status's start time would compare the
/// Engine's clock with ours.)
pub async fn progress_since(daemon: &Daemon, name: &str, current: bool) -> Result<Progress> {
    let service = daemon
        .client
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
        .with_context(|| format!("inspecting service {name}"))?;
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
    let tasks = daemon
        .client
        .list_tasks(Some(ListTasksOptions {
            filters: filters("service", name),
        }))
        .await
        .with_context(|| format!("listing tasks of {name}"))?;
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
async fn container_healthy(daemon: &Daemon, task: &Task) -> Result<bool> {
    let Some(id) = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
    else {
        return Ok(false);
    };
    match daemon.client.inspect_container(&id, None).await {
        Ok(container) => Ok(container
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s == bollard::models::HealthStatusEnum::HEALTHY)
            .unwrap_or(true)),
        // On another node of the swarm: the Engine there reported it running, which with a
        // healthcheck means it passed one.
        Err(e) if is_not_found(&e) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("inspecting container {id}")),
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
pub async fn wait(daemon: &Daemon, services: &[String], ui: &Ui, timeout: Duration) -> Result<()> {
    wait_since(daemon, services, ui, timeout, None).await
}

/// `wait` after this run updated `updated` (None: every service's rollback status counts).
pub async fn wait_since(
    daemon: &Daemon,
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
pub async fn last_update_completed(daemon: &Daemon, name: &str) -> Result<bool> {
    let service = daemon
        .client
        .inspect_service(name, None::<InspectServiceOptions>)
        .await
        .with_context(|| format!("inspecting service {name}"))?;
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
    daemon: &Daemon,
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
                .client
                .inspect_service(name, None::<InspectServiceOptions>)
                .await
                .with_context(|| format!("inspecting service {name}"))?;
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
    use crate::swarm::spec::{self, tests::STACK, tests::resolved};
    use crate::swarm::stack::StackFile;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    /// The Engine's services as an in-memory map (name → spec as the Engine returns it).
    type FakeSwarm = BTreeMap<String, Value>;

    fn desired(stack_text: &str) -> Vec<(String, bollard::models::ServiceSpec)> {
        let file =
            StackFile::parse(std::path::Path::new("s.yml"), stack_text, &BTreeMap::new()).unwrap();
        spec::services("demo", &file, &resolved()).unwrap()
    }

    /// `plan`'s view: one line per service that would change (what `pending` reports).
    fn plan(
        swarm: &FakeSwarm,
        wanted: &[(String, bollard::models::ServiceSpec)],
        rebuilt: &[&str],
    ) -> BTreeMap<String, String> {
        let mut lines = BTreeMap::new();
        for (name, spec) in wanted {
            let change = decide(
                Desired::Spec(spec),
                swarm.get(name),
                rebuilt.contains(&name.as_str()),
            );
            if let Some(line) = change.plan_line("example:latest") {
                lines.insert(name.clone(), line);
            }
        }
        for name in swarm
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _)| w == *n))
        {
            if let Some(line) = decide(Desired::Absent, swarm.get(name), false).plan_line("") {
                lines.insert(name.clone(), line);
            }
        }
        lines
    }

    /// `up`'s view: what `converge` does to each service, applied to the fake swarm.
    fn up(
        swarm: &mut FakeSwarm,
        wanted: &[(String, bollard::models::ServiceSpec)],
        rebuilt: &[&str],
    ) -> BTreeMap<String, &'static str> {
        let mut done = BTreeMap::new();
        for (name, spec) in wanted {
            let as_engine = serde_json::to_value(spec).unwrap();
            match decide(
                Desired::Spec(spec),
                swarm.get(name),
                rebuilt.contains(&name.as_str()),
            ) {
                ServiceChange::Unchanged => {}
                ServiceChange::Create => {
                    swarm.insert(name.clone(), as_engine);
                    done.insert(name.clone(), "created");
                }
                ServiceChange::Update(_) | ServiceChange::RollRebuiltImage => {
                    swarm.insert(name.clone(), as_engine);
                    done.insert(name.clone(), "updated");
                }
                ServiceChange::Remove => unreachable!("a wanted service is never removed"),
            }
        }
        let strays: Vec<String> = swarm
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        for name in strays {
            assert_eq!(
                decide(Desired::Absent, swarm.get(&name), false),
                ServiceChange::Remove
            );
            swarm.remove(&name);
            done.insert(name, "removed");
        }
        done
    }

    #[test]
    fn plan_and_up_agree_on_every_service_change() {
        let wanted = desired(STACK);
        let app = serde_json::to_value(&wanted[0].1).unwrap();
        let mut scaled = app.clone();
        scaled["Mode"]["Replicated"]["Replicas"] = json!(1);
        let mut engine_spelling = app.clone();
        engine_spelling["TaskTemplate"]["Runtime"] = json!("container");
        engine_spelling["TaskTemplate"]["ForceUpdate"] = json!(3);
        // (case, the swarm before, services whose image was rebuilt, expected plan lines)
        type Case<'a> = (&'a str, FakeSwarm, Vec<&'a str>, Vec<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "fresh swarm",
                FakeSwarm::new(),
                vec![],
                vec![("demo_app", "create")],
            ),
            (
                "same spec",
                FakeSwarm::from([("demo_app".into(), app.clone())]),
                vec![],
                vec![],
            ),
            (
                "engine defaults and a forced-update counter are no change",
                FakeSwarm::from([("demo_app".into(), engine_spelling)]),
                vec![],
                vec![],
            ),
            (
                "replicas differ",
                FakeSwarm::from([("demo_app".into(), scaled)]),
                vec![],
                vec![("demo_app", "update Mode.Replicated.Replicas")],
            ),
            (
                "image rebuilt under the same tag",
                FakeSwarm::from([("demo_app".into(), app.clone())]),
                vec!["demo_app"],
                vec![("demo_app", "roll out the rebuilt image example:latest")],
            ),
            (
                "a stray and a missing one",
                FakeSwarm::from([("demo_old".into(), app.clone())]),
                vec![],
                vec![
                    ("demo_app", "create"),
                    ("demo_old", "remove (no longer in the stack file)"),
                ],
            ),
        ];
        for (case, mut swarm, rebuilt, expected) in cases {
            let planned = plan(&swarm, &wanted, &rebuilt);
            let expected: BTreeMap<String, String> = expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(planned, expected, "{case}: plan");
            let done = up(&mut swarm, &wanted, &rebuilt);
            // up changes exactly the services plan listed, and nothing is left to do after it.
            assert_eq!(
                done.keys().collect::<Vec<_>>(),
                planned.keys().collect::<Vec<_>>(),
                "{case}: up changed other services than plan listed"
            );
            for (name, line) in &planned {
                let verb = line.split(' ').next().unwrap();
                let expected_verb = match done[name] {
                    "created" => "create",
                    "removed" => "remove",
                    _ => {
                        if verb == "roll" {
                            "roll"
                        } else {
                            "update"
                        }
                    }
                };
                assert_eq!(verb, expected_verb, "{case}: {name}");
            }
            assert!(
                plan(&swarm, &wanted, &[]).is_empty(),
                "{case}: a second plan still has work"
            );
        }
        // A plan that cannot build the spec yet (objects missing) still says update, as up does.
        assert_eq!(
            decide(Desired::Unresolved, Some(&app), false).plan_line(""),
            Some("update (it uses objects that do not exist yet)".into())
        );
        assert_eq!(
            decide(Desired::Unresolved, None, false),
            ServiceChange::Create
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
