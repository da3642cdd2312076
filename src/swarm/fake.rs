//! An in-memory swarm behind [`SwarmApi`], for tests only (compiled under `cfg(test)`): the
//! real `pending`, `converge`, `live_releases` and the deploy decisions run over it without a
//! Docker Engine. It keeps what Swarm keeps — services with a version that every write bumps
//! and that an update must name, the previous spec, the update status; networks, configs and
//! secrets whose names are unique; local images by tag — and applies writes the way Swarm
//! does: an update whose image is marked failing is rolled back (`rollback_completed`, the old
//! spec back), a service created with one never gets a running task. Tasks are derived from a
//! service's spec (its replicas, all running the spec's template) and its containers run the
//! image id the tag named when the task template last changed, so a rebuild under the same tag
//! shows as it does on a real Engine.
//!
//! What it does not do: schedule across nodes, health checks that take time, the monitor
//! window (an update is `completed` at once), volumes, one-off jobs. Those stay with the
//! Docker tests (tests/swarm.rs, tests/deploy.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use bollard::models::{
    Config, ConfigSpec, ContainerInspectResponse, ContainerStatus, LocalNodeState, Network,
    NetworkCreateRequest, Secret, SecretSpec, Service, ServiceSpec, SwarmInfo, Task, TaskSpec,
    TaskState, TaskStatus,
};
use serde_json::{Value, json};

use super::api::{Filter, Removal, SwarmApi};

/// A service as the fake swarm keeps it.
#[derive(Debug, Clone)]
struct FakeService {
    id: String,
    version: u64,
    /// The spec in the Engine's spelling (`Healthcheck`).
    spec: Value,
    previous: Option<Value>,
    /// (state, message) as the Engine writes them (`completed`, `rollback_completed`…).
    update_status: Option<(String, String)>,
    /// The image id its tasks' containers run (None: the tag is on no local image).
    running_image: Option<String>,
    /// Its tasks fail as they start: created with an image marked failing.
    failing: bool,
    /// Dead tasks Swarm keeps (an update's that failed and was rolled back).
    history: Vec<Task>,
}

#[derive(Debug, Default)]
struct Swarm {
    /// Every write takes the next number: service versions and object ids.
    counter: u64,
    services: BTreeMap<String, FakeService>,
    networks: BTreeMap<String, Network>,
    configs: BTreeMap<String, Config>,
    secrets: BTreeMap<String, Secret>,
    /// Local images: tag → id.
    images: BTreeMap<String, String>,
    /// Images whose tasks fail: an update to one rolls back.
    failing: BTreeSet<String>,
}

impl Swarm {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The in-memory swarm; clones share it.
#[derive(Debug, Clone, Default)]
pub struct FakeSwarm {
    inner: Arc<Mutex<Swarm>>,
}

/// A spec as the Engine writes it back: bollard's serialisation with the container healthcheck
/// under the Engine's name (`Healthcheck`; see `converge::current_service`).
pub fn engine_spelling(spec: &ServiceSpec) -> Value {
    let mut value = serde_json::to_value(spec).expect("a service spec serialises");
    if let Some(container) = value["TaskTemplate"]["ContainerSpec"].as_object_mut()
        && let Some(health) = container.remove("HealthCheck")
    {
        container.insert("Healthcheck".into(), health);
    }
    value
}

fn image_of(spec: &Value) -> String {
    spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn label_matches(labels: Option<&std::collections::HashMap<String, String>>, want: &str) -> bool {
    let labels = labels.cloned().unwrap_or_default();
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
        None => labels.contains_key(want),
    }
}

/// The Engine's filters: `name` is a substring match, `label` `k=v` or `k`.
fn matches(
    filter: Filter<'_>,
    name: &str,
    labels: Option<&std::collections::HashMap<String, String>>,
) -> bool {
    match filter.0 {
        "name" => name.contains(filter.1),
        "label" => label_matches(labels, filter.1),
        other => panic!("the fake swarm has no `{other}` filter"),
    }
}

impl FakeService {
    fn raw(&self) -> Value {
        let mut raw = json!({
            "ID": self.id,
            "Version": {"Index": self.version},
            "Spec": self.spec,
        });
        if let Some(previous) = &self.previous {
            raw["PreviousSpec"] = previous.clone();
        }
        if let Some((state, message)) = &self.update_status {
            raw["UpdateStatus"] = json!({"State": state, "Message": message});
        }
        raw
    }

    /// As bollard reads the same JSON (it drops `Healthcheck`, as it does the Engine's).
    fn typed(&self) -> Service {
        serde_json::from_value(self.raw()).expect("the fake's service reads as bollard's model")
    }

    fn name(&self) -> String {
        self.spec["Name"].as_str().unwrap_or_default().to_string()
    }

    fn container_id(&self, slot: i64) -> String {
        format!("ctr-{}-{slot}-v{}", self.name(), self.version)
    }

    fn tasks(&self) -> Vec<Task> {
        let typed = self.typed();
        let spec = typed.spec.clone().unwrap_or_default();
        let template: Option<TaskSpec> = spec.task_template.clone();
        let replicas = match spec.mode.as_ref() {
            Some(m) if m.global.is_some() => 1,
            Some(m) => m.replicated.as_ref().and_then(|r| r.replicas).unwrap_or(1),
            None => 1,
        };
        if self.failing {
            return vec![Task {
                id: Some(format!("task-{}-failed", self.id)),
                service_id: Some(self.id.clone()),
                slot: Some(1),
                desired_state: Some(TaskState::SHUTDOWN),
                spec: template,
                status: Some(TaskStatus {
                    state: Some(TaskState::FAILED),
                    message: Some("started".into()),
                    err: Some("task: non-zero exit (1)".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }];
        }
        let running = (1..=replicas).map(|slot| Task {
            id: Some(format!("task-{}-{slot}-v{}", self.id, self.version)),
            service_id: Some(self.id.clone()),
            slot: Some(slot),
            desired_state: Some(TaskState::RUNNING),
            spec: template.clone(),
            status: Some(TaskStatus {
                state: Some(TaskState::RUNNING),
                message: Some("started".into()),
                container_status: Some(ContainerStatus {
                    container_id: Some(self.container_id(slot)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        running.chain(self.history.iter().cloned()).collect()
    }
}

impl FakeSwarm {
    pub fn new() -> FakeSwarm {
        FakeSwarm::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Swarm) -> T) -> T {
        f(&mut self.inner.lock().expect("the fake swarm's lock"))
    }

    /// A local image under `tag` (a build, or a rebuild under the same tag).
    pub fn put_image(&self, tag: &str, id: &str) {
        self.with(|s| s.images.insert(tag.into(), id.into()));
    }

    /// Tasks of `tag` fail: an update to it rolls back, a service created with it never runs.
    pub fn fail_image(&self, tag: &str) {
        self.with(|s| s.failing.insert(tag.into()));
    }

    /// The services by name.
    pub fn service_names(&self) -> Vec<String> {
        self.with(|s| s.services.keys().cloned().collect())
    }

    /// A service's spec (Engine spelling) and version.
    pub fn service(&self, name: &str) -> Option<(u64, Value)> {
        self.with(|s| s.services.get(name).map(|f| (f.version, f.spec.clone())))
    }

    /// A service's update status (state, message).
    pub fn update_status(&self, name: &str) -> Option<(String, String)> {
        self.with(|s| s.services.get(name).and_then(|f| f.update_status.clone()))
    }

    /// Sets a service's update status as an interrupted run would have left it.
    pub fn set_update_status(&self, name: &str, state: &str, message: &str) {
        self.with(|s| {
            if let Some(f) = s.services.get_mut(name) {
                f.update_status = Some((state.into(), message.into()));
            }
        });
    }

    pub fn config_names(&self) -> BTreeSet<String> {
        self.with(|s| {
            s.configs
                .values()
                .filter_map(|c| c.spec.as_ref()?.name.clone())
                .collect()
        })
    }

    pub fn network_names(&self) -> BTreeSet<String> {
        self.with(|s| s.networks.values().filter_map(|n| n.name.clone()).collect())
    }

    /// Every object, as `kind name@version` for services and `kind name` otherwise: two
    /// snapshots are equal when nothing was written.
    pub fn snapshot(&self) -> Vec<String> {
        self.with(|s| {
            let mut all: Vec<String> = s
                .services
                .iter()
                .map(|(n, f)| format!("service {n}@{}", f.version))
                .collect();
            all.extend(
                s.networks
                    .values()
                    .map(|n| format!("network {}", n.name.clone().unwrap_or_default())),
            );
            all.extend(s.configs.values().map(|c| {
                format!(
                    "config {}",
                    c.spec
                        .as_ref()
                        .and_then(|s| s.name.clone())
                        .unwrap_or_default()
                )
            }));
            all.extend(s.secrets.values().map(|c| {
                format!(
                    "secret {}",
                    c.spec
                        .as_ref()
                        .and_then(|s| s.name.clone())
                        .unwrap_or_default()
                )
            }));
            all
        })
    }
}

/// Whether any service's spec or previous spec names the object (by name or id).
fn in_use(s: &Swarm, list: &str, name_field: &str, id_field: &str, name: &str, id: &str) -> bool {
    s.services.values().any(|f| {
        [Some(&f.spec), f.previous.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|spec| {
                spec["TaskTemplate"]["ContainerSpec"][list]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .any(|item| item[name_field] == name || item[id_field] == id)
    })
}

/// A config or a secret: named objects a service mounts, kept alike by the fake swarm.
trait Mounted: Clone {
    type Spec;
    const KIND: &'static str;
    /// The container spec's list that mounts it, and that list's name and id fields.
    const MOUNT: (&'static str, &'static str, &'static str);
    fn new(id: String, spec: Self::Spec) -> Self;
    fn spec_name(spec: &Self::Spec) -> String;
    fn name_and_labels(&self) -> (String, Option<&std::collections::HashMap<String, String>>);
}

/// `Config` and `Secret` differ only in their types and the container spec's list naming them.
macro_rules! mounted {
    ($object:ident, $spec:ident, $kind:literal, $mount:expr) => {
        impl Mounted for $object {
            type Spec = $spec;
            const KIND: &'static str = $kind;
            const MOUNT: (&'static str, &'static str, &'static str) = $mount;
            fn new(id: String, spec: $spec) -> Self {
                $object {
                    id: Some(id),
                    spec: Some(spec),
                    ..Default::default()
                }
            }
            fn spec_name(spec: &$spec) -> String {
                spec.name.clone().unwrap_or_default()
            }
            fn name_and_labels(
                &self,
            ) -> (String, Option<&std::collections::HashMap<String, String>>) {
                let spec = self.spec.as_ref();
                (
                    spec.and_then(|s| s.name.clone()).unwrap_or_default(),
                    spec.and_then(|s| s.labels.as_ref()),
                )
            }
        }
    };
}

mounted!(
    Config,
    ConfigSpec,
    "config",
    ("Configs", "ConfigName", "ConfigID")
);
mounted!(
    Secret,
    SecretSpec,
    "secret",
    ("Secrets", "SecretName", "SecretID")
);

fn list<M: Mounted>(objects: &BTreeMap<String, M>, filter: Filter<'_>) -> Vec<M> {
    objects
        .values()
        .filter(|o| {
            let (name, labels) = o.name_and_labels();
            matches(filter, &name, labels)
        })
        .cloned()
        .collect()
}

/// Names are unique per kind: a second create of one is Swarm's 409.
fn create<M: Mounted>(
    objects: &mut BTreeMap<String, M>,
    id: String,
    spec: M::Spec,
) -> Result<String> {
    let name = M::spec_name(&spec);
    if objects.values().any(|o| o.name_and_labels().0 == name) {
        bail!("creating {} {name}: 409 it exists", M::KIND);
    }
    objects.insert(id.clone(), M::new(id.clone(), spec));
    Ok(id)
}

/// Swarm refuses to remove an object a service (or its previous spec) still mounts.
fn remove<M: Mounted>(
    s: &mut Swarm,
    objects: impl Fn(&mut Swarm) -> &mut BTreeMap<String, M>,
    id: &str,
) -> Removal {
    let Some(name) = objects(s).get(id).map(|o| o.name_and_labels().0) else {
        return Removal::Gone;
    };
    let (list, name_field, id_field) = M::MOUNT;
    if in_use(s, list, name_field, id_field, &name, id) {
        return Removal::InUse;
    }
    objects(s).remove(id);
    Removal::Removed
}

impl SwarmApi for FakeSwarm {
    fn host(&self) -> &str {
        "fake://swarm"
    }

    async fn swarm_info(&self) -> Result<SwarmInfo> {
        // Always a single-node swarm whose Engine is a manager.
        Ok(SwarmInfo {
            local_node_state: Some(LocalNodeState::ACTIVE),
            control_available: Some(true),
            node_id: Some("fake-node".into()),
            ..Default::default()
        })
    }

    async fn services(&self, filter: Option<Filter<'_>>) -> Result<Vec<Service>> {
        Ok(self.with(|s| {
            s.services
                .values()
                .map(FakeService::typed)
                .filter(|service| {
                    let spec = service.spec.clone().unwrap_or_default();
                    filter.is_none_or(|f| {
                        matches(f, &spec.name.unwrap_or_default(), spec.labels.as_ref())
                    })
                })
                .collect()
        }))
    }

    async fn inspect_service(&self, name: &str) -> Result<Option<Service>> {
        Ok(self.with(|s| s.services.get(name).map(FakeService::typed)))
    }

    async fn raw_services(&self) -> Result<Vec<Value>> {
        Ok(self.with(|s| s.services.values().map(FakeService::raw).collect()))
    }

    async fn raw_service(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.with(|s| s.services.get(name).map(FakeService::raw)))
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<()> {
        self.with(|s| {
            let name = spec.name.clone().unwrap_or_default();
            if s.services.contains_key(&name) {
                bail!("creating service {name}: 409 name conflicts with an existing object");
            }
            let spec = engine_spelling(&spec);
            let image = image_of(&spec);
            let version = s.next();
            s.services.insert(
                name,
                FakeService {
                    id: format!("svc-{version}"),
                    version,
                    running_image: s.images.get(&image).cloned(),
                    failing: s.failing.contains(&image),
                    spec,
                    previous: None,
                    update_status: None,
                    history: Vec::new(),
                },
            );
            Ok(())
        })
    }

    async fn update_service(&self, name: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        self.with(|s| {
            let Some(current) = s.services.get(name).cloned() else {
                bail!("updating service {name}: 404 no such service");
            };
            if current.version != version {
                bail!(
                    "updating service {name}: 500 update out of sequence (version {version}, the service is at {})",
                    current.version
                );
            }
            let new = engine_spelling(&spec);
            let image = image_of(&new);
            let mut updated = current.clone();
            if s.failing.contains(&image) {
                // Swarm starts the update, the new tasks fail, and `failure_action: rollback`
                // puts the old spec back; the previous spec is dropped.
                let attempted: ServiceSpec = serde_json::from_value(new.clone())?;
                updated.history.push(Task {
                    id: Some(format!("task-{}-1-v{}", current.id, s.next())),
                    service_id: Some(current.id.clone()),
                    slot: Some(1),
                    desired_state: Some(TaskState::SHUTDOWN),
                    spec: attempted.task_template,
                    status: Some(TaskStatus {
                        state: Some(TaskState::FAILED),
                        message: Some("started".into()),
                        err: Some("task: non-zero exit (1)".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                updated.version = s.next();
                updated.previous = None;
                updated.update_status = Some((
                    "rollback_completed".into(),
                    format!(
                        "rollback completed: update rolled back due to failure or early termination of task task-{}-1",
                        current.id
                    ),
                ));
            } else {
                if new["TaskTemplate"] != current.spec["TaskTemplate"] {
                    updated.running_image = s.images.get(&image).cloned();
                    updated.failing = false;
                }
                updated.previous = Some(current.spec.clone());
                updated.spec = new;
                updated.version = s.next();
                updated.update_status = Some(("completed".into(), "update completed".into()));
            }
            s.services.insert(name.to_string(), updated);
            Ok(())
        })
    }

    async fn remove_service(&self, name: &str) -> Result<bool> {
        Ok(self.with(|s| s.services.remove(name).is_some()))
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Task>> {
        Ok(self.with(|s| {
            s.services
                .iter()
                .filter(|(n, _)| n.starts_with(service))
                .flat_map(|(_, f)| f.tasks())
                .collect()
        }))
    }

    async fn container(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        Ok(self.with(|s| {
            s.services
                .values()
                .find(|f| {
                    f.tasks().iter().any(|t| {
                        t.status
                            .as_ref()
                            .and_then(|st| st.container_status.as_ref())
                            .and_then(|c| c.container_id.as_deref())
                            == Some(id)
                    })
                })
                .map(|f| ContainerInspectResponse {
                    id: Some(id.to_string()),
                    image: f.running_image.clone(),
                    ..Default::default()
                })
        }))
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        Ok(self.with(|s| s.images.get(image).cloned()))
    }

    async fn networks(&self, filter: Filter<'_>) -> Result<Vec<Network>> {
        Ok(self.with(|s| {
            s.networks
                .values()
                .filter(|n| {
                    matches(
                        filter,
                        n.name.as_deref().unwrap_or_default(),
                        n.labels.as_ref(),
                    )
                })
                .cloned()
                .collect()
        }))
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> Result<String> {
        self.with(|s| {
            if s.networks
                .values()
                .any(|n| n.name.as_deref() == Some(&request.name))
            {
                bail!("creating network {}: 409 it exists", request.name);
            }
            let id = format!("net-{}", s.next());
            s.networks.insert(
                id.clone(),
                Network {
                    id: Some(id.clone()),
                    name: Some(request.name),
                    driver: request.driver,
                    labels: request.labels,
                    ..Default::default()
                },
            );
            Ok(id)
        })
    }

    async fn configs(&self, filter: Filter<'_>) -> Result<Vec<Config>> {
        Ok(self.with(|s| list(&s.configs, filter)))
    }

    async fn create_config(&self, spec: ConfigSpec) -> Result<String> {
        self.with(|s| {
            let id = format!("cfg-{}", s.next());
            create(&mut s.configs, id, spec)
        })
    }

    async fn remove_config(&self, id: &str) -> Result<Removal> {
        Ok(self.with(|s| remove(s, |s| &mut s.configs, id)))
    }

    async fn secrets(&self, filter: Filter<'_>) -> Result<Vec<Secret>> {
        Ok(self.with(|s| list(&s.secrets, filter)))
    }

    async fn create_secret(&self, spec: SecretSpec) -> Result<String> {
        self.with(|s| {
            let id = format!("sec-{}", s.next());
            create(&mut s.secrets, id, spec)
        })
    }

    async fn remove_secret(&self, id: &str) -> Result<Removal> {
        Ok(self.with(|s| remove(s, |s| &mut s.secrets, id)))
    }
}

/// The deploy lock is a config object on the same swarm: a run's lock and its converge meet in
/// one set of configs, as on a real Engine.
impl super::lock::LockConfigs for FakeSwarm {
    fn host(&self) -> &str {
        "fake://swarm"
    }
    async fn create(&self, spec: ConfigSpec) -> Result<Option<String>> {
        // Swarm refuses a second config of one name: that refusal is the lock.
        match SwarmApi::create_config(self, spec).await {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.to_string().contains("409") => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn inspect(&self, name: &str) -> Result<Option<Config>> {
        Ok(self.with(|s| {
            s.configs
                .values()
                .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
                .cloned()
        }))
    }
    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(SwarmApi::remove_config(self, id).await? == Removal::Removed)
    }
    fn releaser(&self, id: &str) -> super::lock::Releaser {
        let (swarm, id) = (self.clone(), id.to_string());
        std::sync::Arc::new(move || {
            swarm.with(|s| s.configs.remove(&id));
            Ok(())
        })
    }
}
