//! A parsed stack as Engine API objects, shaped the way `docker stack deploy` shapes them, so a
//! stack beamops applied and one the CLI deployed look alike to `docker stack ps` and to each other.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest, ServiceSpec};
use serde_json::{Map, Value, json};

use super::stack::{self, StackFile, VolumeMount};

pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
pub const IMAGE_LABEL: &str = "com.docker.stack.image";
/// The chapter whose converge made a service, network, config, secret or one-off job: `down`
/// of that chapter, and its stray-service removal, touch only what carries its key.
pub const CHAPTER_LABEL: &str = "beamops.chapter";
/// The stack key of a content-named config or secret (`<stack>_<key>_<hash>`): its versions are
/// found by it, the unused ones removed.
pub const OBJECT_KEY_LABEL: &str = "beamops.object";

/// Who converges a stack file: the chapter that owns what it makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The chapter key (`08-swarm`) labelled on everything the converge makes. None: a stack
    /// parsed outside any chapter (a test's, a by-hand tool's): nothing is labelled and every
    /// object of the stack counts as its own, as `docker stack deploy` does.
    pub chapter: Option<String>,
    /// Objects of the stack with no chapter label count as this converge's too. beamops before
    /// chapter labels converged only `deploy/stack.yml` as the app's stack, so that converge
    /// (the defaults of `stack-converged`) adopts them; any other leaves them alone.
    pub adopts_unlabelled: bool,
}

impl Owner {
    /// Whether an object with these labels is this owner's to update, prune or remove.
    pub fn owns<'a>(&self, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> bool {
        let Some(chapter) = &self.chapter else {
            return true;
        };
        match labels.into_iter().find(|(k, _)| *k == CHAPTER_LABEL) {
            Some((_, label)) => label == chapter,
            None => self.adopts_unlabelled,
        }
    }

    /// Labels for a service, network, config or secret this owner makes.
    fn label(&self, labels: &mut HashMap<String, String>) {
        if let Some(chapter) = &self.chapter {
            labels.insert(CHAPTER_LABEL.into(), chapter.clone());
        }
    }
}

/// `<name>_<first 10 hex digits of sha256(data)>`: a config or secret made from a file is named
/// by its content, so a changed file is a new object (the Engine cannot change one in place),
/// services move to it with their next update, and the old one is removed once no service's
/// spec or previous spec (what Swarm rolls back to) names it.
pub fn content_name(name: &str, data: &[u8]) -> String {
    format!("{name}_{}", &crate::fsutil::sha256_hex(data)[..10])
}

/// The network a service joins when it names none, as in compose.
pub const DEFAULT_NETWORK: &str = "default";

/// Engine object names a stack's specs refer to, resolved to ids.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    /// Stack network key → network id.
    pub networks: BTreeMap<String, String>,
    /// Stack secret key → (Engine name, id).
    pub secrets: BTreeMap<String, (String, String)>,
    /// Stack config key → (Engine name, id).
    pub configs: BTreeMap<String, (String, String)>,
}

/// `<stack>_<name>`, the CLI's naming for everything a stack owns.
pub fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// The Engine name of a stack network, secret or config: its `name:` or the scoped key.
pub fn object_name(stack: &str, key: &str, explicit: Option<&str>, external: bool) -> String {
    match explicit {
        Some(name) => name.to_string(),
        None if external => key.to_string(),
        None => scoped(stack, key),
    }
}

pub fn namespace_labels(stack: &str, extra: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = extra.clone().into_iter().collect();
    labels.insert(NAMESPACE_LABEL.into(), stack.into());
    labels
}

/// The labels of a service, network, config or secret the stack file's owner makes: the
/// namespace and the owner's chapter. (Container and volume labels carry no chapter: they are
/// part of the task template, and a label added there would restart every task.)
pub fn owned_labels(
    stack: &str,
    file: &StackFile,
    extra: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut labels = namespace_labels(stack, extra);
    file.owner.label(&mut labels);
    labels
}

/// The networks the services use: declared ones plus `default` when a service names none.
pub fn used_networks(file: &StackFile) -> Vec<String> {
    let mut used: Vec<String> = file.networks.keys().cloned().collect();
    if file.services.values().any(|s| s.networks.is_empty())
        && !used.iter().any(|n| n == DEFAULT_NETWORK)
    {
        used.push(DEFAULT_NETWORK.into());
    }
    used
}

/// The create request for a stack-owned network (external ones are looked up, never created).
pub fn network_request(stack: &str, file: &StackFile, key: &str) -> NetworkCreateRequest {
    let def = file
        .networks
        .get(key)
        .cloned()
        .flatten()
        .unwrap_or_default();
    NetworkCreateRequest {
        name: object_name(stack, key, def.name.as_deref(), false),
        driver: Some(def.driver.unwrap_or_else(|| "overlay".into())),
        attachable: Some(def.attachable),
        internal: Some(def.internal),
        options: (!def.driver_opts.is_empty()).then(|| def.driver_opts.into_iter().collect()),
        labels: Some(owned_labels(stack, file, &def.labels)),
        ipam: def.ipam.map(|ipam| Ipam {
            driver: Some(ipam.driver.unwrap_or_else(|| "default".into())),
            config: Some(
                ipam.config
                    .into_iter()
                    .map(|pool| IpamConfig {
                        subnet: Some(pool.subnet),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Every service of the stack as `(service name, spec)`.
pub fn services(
    stack_name: &str,
    file: &StackFile,
    resolved: &Resolved,
) -> Result<Vec<(String, ServiceSpec)>> {
    file.services
        .iter()
        .map(|(name, service)| {
            let value = service_value(stack_name, file, name, service, resolved)
                .with_context(|| format!("service `{name}`"))?;
            let spec: ServiceSpec = serde_json::from_value(value)
                .with_context(|| format!("service `{name}`: building the Engine spec"))?;
            Ok((scoped(stack_name, name), spec))
        })
        .collect()
}

fn service_value(
    stack_name: &str,
    file: &StackFile,
    name: &str,
    service: &stack::Service,
    resolved: &Resolved,
) -> Result<Value> {
    let mut container = Map::new();
    container.insert("Image".into(), json!(service.image));
    container.insert(
        "Labels".into(),
        json!(namespace_labels(stack_name, &service.labels)),
    );
    if let Some(entrypoint) = &service.entrypoint {
        container.insert("Command".into(), json!(entrypoint));
    }
    if let Some(command) = &service.command {
        container.insert("Args".into(), json!(command));
    }
    if !service.environment.is_empty() {
        // A BTreeMap: sorted, as the CLI sorts a mapping-form environment.
        let env: Vec<String> = service
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        container.insert("Env".into(), json!(env));
    }
    for (key, value) in [
        ("User", &service.user),
        ("Dir", &service.working_dir),
        ("Hostname", &service.hostname),
    ] {
        if let Some(value) = value {
            container.insert(key.into(), json!(value));
        }
    }
    if let Some(grace) = &service.stop_grace_period {
        container.insert(
            "StopGracePeriod".into(),
            json!(stack::duration_nanos(grace)?),
        );
    }
    if let Some(h) = &service.healthcheck {
        let mut health = Map::new();
        health.insert("Test".into(), json!(h.test));
        for (key, value) in [
            ("Interval", &h.interval),
            ("Timeout", &h.timeout),
            ("StartPeriod", &h.start_period),
        ] {
            if let Some(value) = value {
                health.insert(key.into(), json!(stack::duration_nanos(value)?));
            }
        }
        if let Some(retries) = h.retries {
            health.insert("Retries".into(), json!(retries));
        }
        // bollard's field name; the Engine reads it regardless of case.
        container.insert("HealthCheck".into(), Value::Object(health));
    }
    let mut secrets = Vec::new();
    for r in &service.secrets {
        let r = r.long();
        let (engine_name, id) = resolved
            .secrets
            .get(&r.source)
            .with_context(|| format!("secret `{}` was not resolved", r.source))?;
        secrets.push(json!({
            "File": file_target(&r, r.target.clone().unwrap_or_else(|| r.source.clone())),
            "SecretID": id,
            "SecretName": engine_name,
        }));
    }
    // The CLI sorts them by target; the same order keeps equal specs equal.
    secrets.sort_by(|a, b| a["File"]["Name"].as_str().cmp(&b["File"]["Name"].as_str()));
    if !secrets.is_empty() {
        container.insert("Secrets".into(), json!(secrets));
    }
    let mut configs = Vec::new();
    for r in &service.configs {
        let r = r.long();
        let (engine_name, id) = resolved
            .configs
            .get(&r.source)
            .with_context(|| format!("config `{}` was not resolved", r.source))?;
        configs.push(json!({
            "File": file_target(&r, r.target.clone().unwrap_or_else(|| format!("/{}", r.source))),
            "ConfigID": id,
            "ConfigName": engine_name,
        }));
    }
    configs.sort_by(|a, b| a["File"]["Name"].as_str().cmp(&b["File"]["Name"].as_str()));
    if !configs.is_empty() {
        container.insert("Configs".into(), json!(configs));
    }
    let mut mounts = Vec::new();
    for short in &service.volumes {
        let mount = VolumeMount::parse(short)?;
        if mount.bind {
            // What `docker stack deploy` stores for a short-syntax bind mount.
            mounts.push(json!({
                "Type": "bind",
                "Source": mount.source,
                "Target": mount.target,
                "ReadOnly": mount.read_only,
            }));
            continue;
        }
        let def = file
            .volumes
            .get(&mount.source)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let source = object_name(stack_name, &mount.source, def.name.as_deref(), def.external);
        let mut volume_options = json!({"Labels": namespace_labels(stack_name, &def.labels)});
        if let Some(driver) = &def.driver {
            volume_options["DriverConfig"] = json!({"Name": driver});
        }
        mounts.push(json!({
            "Type": "volume",
            "Source": source,
            "Target": mount.target,
            "ReadOnly": mount.read_only,
            "VolumeOptions": volume_options,
        }));
    }
    if !mounts.is_empty() {
        container.insert("Mounts".into(), json!(mounts));
    }
    container.insert("Isolation".into(), json!("default"));

    let deploy = &service.deploy;
    let mut task = Map::new();
    task.insert("ContainerSpec".into(), Value::Object(container));
    if let Some(resources) = &deploy.resources {
        let amounts = |a: &Option<stack::ResourceAmounts>| -> Result<Value> {
            let mut out = Map::new();
            if let Some(a) = a {
                if let Some(cpus) = &a.cpus {
                    let cpus: f64 = cpus
                        .to_string()
                        .parse()
                        .with_context(|| format!("cpus `{cpus}` is not a number"))?;
                    out.insert("NanoCPUs".into(), json!((cpus * 1e9).round() as i64));
                }
                if let Some(memory) = &a.memory {
                    out.insert("MemoryBytes".into(), json!(stack::bytes(memory)?));
                }
            }
            Ok(Value::Object(out))
        };
        task.insert(
            "Resources".into(),
            json!({"Limits": amounts(&resources.limits)?, "Reservations": amounts(&resources.reservations)?}),
        );
    }
    if let Some(policy) = &deploy.restart_policy {
        let mut restart = Map::new();
        if let Some(condition) = &policy.condition {
            restart.insert("Condition".into(), json!(condition));
        }
        if let Some(delay) = &policy.delay {
            restart.insert("Delay".into(), json!(stack::duration_nanos(delay)?));
        }
        if let Some(max) = policy.max_attempts {
            restart.insert("MaxAttempts".into(), json!(max));
        }
        if let Some(window) = &policy.window {
            restart.insert("Window".into(), json!(stack::duration_nanos(window)?));
        }
        task.insert("RestartPolicy".into(), Value::Object(restart));
    }
    if let Some(placement) = &deploy.placement {
        task.insert(
            "Placement".into(),
            json!({
                "Constraints": placement.constraints,
                "Preferences": placement.preferences.iter()
                    .map(|p| json!({"Spread": {"SpreadDescriptor": p.spread}}))
                    .collect::<Vec<_>>(),
            }),
        );
    }
    let networks = if service.networks.is_empty() {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        service.networks.clone()
    };
    let mut attachments = Vec::new();
    for net in &networks {
        let id = resolved
            .networks
            .get(net)
            .with_context(|| format!("network `{net}` was not resolved"))?;
        attachments.push(json!({"Target": id, "Aliases": [name]}));
    }
    task.insert("Networks".into(), json!(attachments));

    let mode = match deploy.mode.as_deref() {
        Some("global") => json!({"Global": {}}),
        _ => json!({"Replicated": {"Replicas": deploy.replicas.unwrap_or(1)}}),
    };
    let mut labels = owned_labels(stack_name, file, &deploy.labels);
    labels.insert(IMAGE_LABEL.into(), service.image.clone());
    let mut spec = json!({
        "Name": scoped(stack_name, name),
        "Labels": labels,
        "TaskTemplate": Value::Object(task),
        "Mode": mode,
        "EndpointSpec": {
            "Mode": deploy.endpoint_mode.clone().unwrap_or_else(|| "vip".into()),
            "Ports": service.ports.iter().map(|p| json!({
                "Protocol": p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                "TargetPort": p.target,
                "PublishedPort": p.published,
                "PublishMode": p.mode.clone().unwrap_or_else(|| "ingress".into()),
            })).collect::<Vec<_>>(),
        },
    });
    if let Some(update) = &deploy.update_config {
        spec["UpdateConfig"] = update_config(update)?;
    }
    if let Some(rollback) = &deploy.rollback_config {
        spec["RollbackConfig"] = update_config(rollback)?;
    }
    Ok(spec)
}

fn file_target(r: &stack::FileRefLong, name: String) -> Value {
    json!({
        "Name": name,
        "UID": r.uid.clone().unwrap_or_else(|| "0".into()),
        "GID": r.gid.clone().unwrap_or_else(|| "0".into()),
        // 0444, the CLI's default.
        "Mode": r.mode.unwrap_or(0o444),
    })
}

/// An update or rollback config with the Engine's defaults written out, so what the Engine
/// stores reads back the same as what was sent.
fn update_config(c: &stack::UpdateConfig) -> Result<Value> {
    let order = c.order.clone().unwrap_or_else(|| "stop-first".into());
    if order != "stop-first" && order != "start-first" {
        bail!("order `{order}` is not stop-first or start-first");
    }
    Ok(json!({
        "Parallelism": c.parallelism.unwrap_or(1),
        "Delay": c.delay.as_deref().map(stack::duration_nanos).transpose()?.unwrap_or(0),
        "FailureAction": c.failure_action.clone().unwrap_or_else(|| "pause".into()),
        "Monitor": c.monitor.as_deref().map(stack::duration_nanos).transpose()?.unwrap_or(5_000_000_000),
        "MaxFailureRatio": c.max_failure_ratio.unwrap_or(0.0),
        "Order": order,
    }))
}

/// A spec as JSON with what the Engine adds on its own taken out: zero values, empty
/// collections and the defaults it fills in. Two specs that normalise equal run the same tasks.
pub fn normalise(spec: &ServiceSpec) -> Value {
    normalise_value(serde_json::to_value(spec).unwrap_or(Value::Null))
}

/// [`normalise`] for a spec as JSON, e.g. as the Engine wrote it.
pub fn normalise_value(mut value: Value) -> Value {
    prune(&mut value);
    if let Some(task) = value.get_mut("TaskTemplate").and_then(Value::as_object_mut) {
        if task.get("Runtime") == Some(&json!("container")) {
            task.remove("Runtime");
        }
        // beamops bumps it to roll out a rebuilt local image under the same tag; it says
        // nothing about what should run.
        task.remove("ForceUpdate");
        if let Some(container) = task.get_mut("ContainerSpec").and_then(Value::as_object_mut) {
            if container.get("Isolation") == Some(&json!("default")) {
                container.remove("Isolation");
            }
            // bollard spells it `HealthCheck`, the Engine `Healthcheck`: one name for both.
            if let Some(health) = container.remove("HealthCheck") {
                container.insert("Healthcheck".into(), health);
            }
        }
    }
    value
}

/// Drops nulls, zeros, `false`, empty strings, arrays and objects, recursively.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune(v);
            }
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                prune(v);
            }
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The paths where two normalised specs differ, for a plan line that says what will change.
pub fn differences(desired: &Value, current: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", desired, current, &mut out);
    out
}

fn diff_into(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => diff_into(&child, p, q, out),
                    _ => out.push(child),
                }
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            "(root)".into()
        } else {
            path.into()
        }),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) const STACK: &str = r#"
services:
  app:
    image: example:latest
    environment: {B: "2", A: 1}
    secrets: [token]
    networks: [backend]
    stop_grace_period: 15s
    deploy:
      replicas: 3
      update_config: {parallelism: 1, order: start-first, failure_action: rollback, monitor: 45s}
      resources: {limits: {cpus: "0.5", memory: 256M}}
networks:
  backend: {driver: overlay}
secrets:
  token: {external: true, name: token_v2}
"#;

    pub(crate) fn resolved() -> Resolved {
        Resolved {
            networks: BTreeMap::from([("backend".into(), "net1".into())]),
            secrets: BTreeMap::from([("token".into(), ("token_v2".into(), "sec1".into()))]),
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn service_spec_mirrors_the_cli() {
        let file = StackFile::parse(Path::new("s.yml"), STACK, &BTreeMap::new()).unwrap();
        let specs = services("demo", &file, &resolved()).unwrap();
        let (name, spec) = &specs[0];
        assert_eq!(name, "demo_app");
        let v = normalise(spec);
        assert_eq!(v["Labels"][NAMESPACE_LABEL], "demo");
        assert_eq!(v["Labels"][IMAGE_LABEL], "example:latest");
        assert_eq!(
            v["TaskTemplate"]["ContainerSpec"]["Env"],
            json!(["A=1", "B=2"])
        );
        assert_eq!(
            v["TaskTemplate"]["Networks"],
            json!([{"Target": "net1", "Aliases": ["app"]}])
        );
        assert_eq!(
            v["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["File"]["Name"],
            "token"
        );
        assert_eq!(v["Mode"]["Replicated"]["Replicas"], 3);
        assert_eq!(v["UpdateConfig"]["Monitor"], 45_000_000_000i64);
        assert_eq!(
            v["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"],
            500_000_000
        );
        assert_eq!(v["EndpointSpec"]["Mode"], "vip");
    }

    #[test]
    fn a_chapter_owns_what_carries_its_label_and_only_the_app_stacks_owner_adopts_unlabelled() {
        let labels = |chapter: Option<&str>| -> HashMap<String, String> {
            let mut l = HashMap::from([(NAMESPACE_LABEL.to_string(), "demo".to_string())]);
            if let Some(c) = chapter {
                l.insert(CHAPTER_LABEL.into(), c.into());
            }
            l
        };
        let app = Owner {
            chapter: Some("08-swarm".into()),
            adopts_unlabelled: true,
        };
        let extra = Owner {
            chapter: Some("13-extra".into()),
            adopts_unlabelled: false,
        };
        assert!(app.owns(&labels(Some("08-swarm"))));
        assert!(app.owns(&labels(None)), "made before chapter labels");
        assert!(!app.owns(&labels(Some("13-extra"))));
        assert!(extra.owns(&labels(Some("13-extra"))));
        assert!(!extra.owns(&labels(None)));
        assert!(!extra.owns(&labels(Some("08-swarm"))));
        assert!(
            Owner::default().owns(&labels(Some("13-extra"))),
            "no chapter: the whole stack"
        );

        let mut file = StackFile::parse(Path::new("s.yml"), STACK, &BTreeMap::new()).unwrap();
        file.owner = extra;
        let (_, spec) = services("demo", &file, &resolved()).unwrap().remove(0);
        let v = normalise(&spec);
        assert_eq!(v["Labels"][CHAPTER_LABEL], "13-extra");
        // Not on the containers: a label there would restart every task of an older stack.
        assert!(v["TaskTemplate"]["ContainerSpec"]["Labels"][CHAPTER_LABEL].is_null());
        assert_eq!(
            network_request("demo", &file, "backend").labels.unwrap()[CHAPTER_LABEL],
            "13-extra"
        );
    }

    #[test]
    fn a_config_made_from_a_file_is_named_by_its_content() {
        let a = content_name("demo_prometheus", b"scrape_interval: 15s\n");
        let b = content_name("demo_prometheus", b"scrape_interval: 5s\n");
        assert!(a.starts_with("demo_prometheus_") && a.len() == "demo_prometheus_".len() + 10);
        assert_ne!(a, b);
        assert_eq!(
            a,
            content_name("demo_prometheus", b"scrape_interval: 15s\n")
        );
    }

    #[test]
    fn engine_defaults_do_not_count_as_differences() {
        let file = StackFile::parse(Path::new("s.yml"), STACK, &BTreeMap::new()).unwrap();
        let (_, spec) = services("demo", &file, &resolved()).unwrap().remove(0);
        let mut stored = serde_json::to_value(&spec).unwrap();
        stored["TaskTemplate"]["Runtime"] = json!("container");
        stored["TaskTemplate"]["ForceUpdate"] = json!(0);
        stored["TaskTemplate"]["ContainerSpec"]["DNSConfig"] = json!({});
        let stored: ServiceSpec = serde_json::from_value(stored).unwrap();
        assert_eq!(
            differences(&normalise(&spec), &normalise(&stored)),
            Vec::<String>::new()
        );
        // The Engine's spelling of the healthcheck key and bollard's compare equal.
        let mut engine = serde_json::to_value(&spec).unwrap();
        let health = json!({"Test": ["CMD", "true"], "Interval": 5_000_000_000i64});
        engine["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = health.clone();
        let mut ours = spec.clone();
        ours.task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .health_check = serde_json::from_value(health).unwrap();
        assert_eq!(normalise(&ours), normalise_value(engine));
        let mut scaled = spec.clone();
        scaled
            .mode
            .as_mut()
            .unwrap()
            .replicated
            .as_mut()
            .unwrap()
            .replicas = Some(4);
        assert_eq!(
            differences(&normalise(&spec), &normalise(&scaled)),
            vec!["Mode.Replicated.Replicas".to_string()]
        );
    }
}
