//! `beamops.yaml`: the project's typed configuration.
//!
//! Every struct rejects unknown keys so a typo is an error with a "did you mean", never a silently
//! ignored setting. Each key is documented in docs/config.md.

mod error;
pub mod guard;
pub mod infra;
mod load;
pub mod validate;
pub mod variables;
mod versions;

pub use error::ConfigError;
pub use infra::{ProductionOptions, StateBackend, StateOptions, TerraformOptions};
pub use load::{CONFIG_FILE, is_blank, load, load_str, nearest as nearest_word};
pub use versions::{requirement_matches, version_prefix_matches};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema version this beamops reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version of this file, so a later beamops can migrate it.
    pub version: u32,
    pub app: App,
    #[serde(default)]
    pub image: Image,
    #[serde(default = "default_environments")]
    pub environments: BTreeMap<String, Environment>,
    #[serde(default)]
    pub default_environment: Option<String>,
    #[serde(default)]
    pub chapters: ChapterOptions,
    #[serde(default)]
    pub worktree: WorktreeOptions,
    #[serde(default)]
    pub deploy: DeployOptions,
    #[serde(default)]
    pub ci: CiOptions,
}

impl Config {
    /// The release command a deploy runs, if any.
    pub fn release_command(&self) -> Option<String> {
        match &self.deploy.release_command {
            Some(cmd) if cmd.trim().is_empty() => None,
            Some(cmd) => Some(cmd.clone()),
            None if self.chapters.swarm.database => Some(format!(
                "bin/{} eval \"{}.Release.migrate()\"",
                self.app.otp_app,
                crate::render::elixir_module(&self.app.otp_app)
            )),
            None => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The name used for images, stacks and services (lowercase, dashes).
    pub name: String,
    /// The OTP application name from mix.exs (`app: :coordination`).
    pub otp_app: String,
    /// Elixir version, e.g. `1.18.3`.
    pub elixir: String,
    /// Erlang/OTP version, e.g. `27.3.4.1`.
    pub otp: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Swarm stack name; defaults to the app name.
    #[serde(default)]
    pub stack: Option<String>,
}

impl App {
    pub fn stack_name(&self) -> &str {
        self.stack.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Image repository without tag; defaults to the app name.
    #[serde(default)]
    pub repository: Option<String>,
    /// Registry to push to on deploy; none means images stay on the target engine.
    #[serde(default)]
    pub registry: Option<String>,
    /// Builder base image; defaults to the hexpm image for the app's Elixir/OTP on Debian trixie.
    #[serde(default)]
    pub builder: Option<String>,
    /// Runtime base image.
    #[serde(default)]
    pub runner: Option<String>,
    /// PostgreSQL image the stacks run; `beamops images bootstrap` builds it from Debian when
    /// no registry has it, so its tag must name a version and suite Debian ships.
    #[serde(default)]
    pub postgres: Option<String>,
    /// Prometheus image of the monitoring stack (chapter 11); `images bootstrap` builds it from
    /// Debian's `prometheus` and `promtool` packages when no registry has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    /// Alertmanager image of the monitoring stack, built from `prometheus-alertmanager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
    /// Grafana, Loki and Promtail images: pulled where a registry answers; no Debian package
    /// exists, so where none does their services are reported blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promtail: Option<String>,
    /// Debian packages the release needs at run time, installed in the runner stage when the
    /// base image lacks them. Default: the C++ runtime, ncurses, OpenSSL and CA certificates.
    #[serde(default)]
    pub runtime_packages: Option<Vec<String>>,
    /// The image's `org.opencontainers.image.source` label: a web address. Default: the git
    /// remote `origin` as https when it is a network address; `""` leaves the label out (a
    /// project inside another repository, like the committed example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The Debian release hexpm builds its default images on, and the date stamp in their tags.
pub const DEFAULT_DEBIAN_SUITE: &str = "trixie";
pub const DEFAULT_HEXPM_DATE: &str = "20251117";
/// The PostgreSQL release Debian trixie ships (postgresql-17).
pub const DEFAULT_POSTGRES_VERSION: &str = "17.12";
/// What Debian trixie ships: `prometheus`/`promtool` and `prometheus-alertmanager`.
pub const DEFAULT_PROMETHEUS_VERSION: &str = "2.53.3";
pub const DEFAULT_ALERTMANAGER_VERSION: &str = "0.28.1";
/// Images no Debian suite packages, for sites whose Engine can pull them.
pub const DEFAULT_GRAFANA_IMAGE: &str = "grafana/grafana:11.3.0";
pub const DEFAULT_LOKI_IMAGE: &str = "grafana/loki:3.2.1";
pub const DEFAULT_PROMTAIL_IMAGE: &str = "grafana/promtail:3.2.1";

impl Config {
    pub fn image_repository(&self) -> String {
        self.image
            .repository
            .clone()
            .unwrap_or_else(|| self.app.name.clone())
    }

    pub fn builder_image(&self) -> String {
        self.image.builder.clone().unwrap_or_else(|| {
            format!(
                "hexpm/elixir:{}-erlang-{}-debian-{DEFAULT_DEBIAN_SUITE}-{DEFAULT_HEXPM_DATE}-slim",
                self.app.elixir, self.app.otp
            )
        })
    }

    pub fn runner_image(&self) -> String {
        self.image
            .runner
            .clone()
            .unwrap_or_else(|| format!("debian:{DEFAULT_DEBIAN_SUITE}-slim"))
    }

    pub fn postgres_image(&self) -> String {
        self.image.postgres.clone().unwrap_or_else(|| {
            format!("postgres:{DEFAULT_POSTGRES_VERSION}-{DEFAULT_DEBIAN_SUITE}")
        })
    }

    pub fn prometheus_image(&self) -> String {
        self.image.prometheus.clone().unwrap_or_else(|| {
            format!("prom/prometheus:{DEFAULT_PROMETHEUS_VERSION}-{DEFAULT_DEBIAN_SUITE}")
        })
    }

    pub fn alertmanager_image(&self) -> String {
        self.image.alertmanager.clone().unwrap_or_else(|| {
            format!("prom/alertmanager:{DEFAULT_ALERTMANAGER_VERSION}-{DEFAULT_DEBIAN_SUITE}")
        })
    }

    pub fn grafana_image(&self) -> String {
        self.image
            .grafana
            .clone()
            .unwrap_or_else(|| DEFAULT_GRAFANA_IMAGE.into())
    }

    pub fn loki_image(&self) -> String {
        self.image
            .loki
            .clone()
            .unwrap_or_else(|| DEFAULT_LOKI_IMAGE.into())
    }

    pub fn promtail_image(&self) -> String {
        self.image
            .promtail
            .clone()
            .unwrap_or_else(|| DEFAULT_PROMTAIL_IMAGE.into())
    }

    pub fn runtime_packages(&self) -> Vec<String> {
        self.image.runtime_packages.clone().unwrap_or_else(|| {
            // Debian renamed OpenSSL's library for the 64-bit time_t transition in trixie.
            let libssl = if self.runner_image().contains("bookworm") {
                "libssl3"
            } else {
                "libssl3t64"
            };
            ["libstdc++6", "libncurses6", libssl, "ca-certificates"]
                .map(String::from)
                .to_vec()
        })
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// The named environment, or an error that lists the real ones and the nearest match.
    pub fn require_environment(&self, name: &str) -> anyhow::Result<&Environment> {
        self.environments.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            let hint = nearest_word(name, &names)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "no environment `{name}` in beamops.yaml{hint}\n  fix: use one of: {}",
                names.join(", ")
            )
        })
    }

    /// The environment a command acts on when `--env` is not given.
    pub fn default_environment_name(&self) -> &str {
        self.default_environment.as_deref().unwrap_or("local")
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Local,
    Aws,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Local => "local",
            Provider::Aws => "aws",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[serde(default)]
    pub provider: Provider,
    /// Docker Engine to talk to (`unix://`, `tcp://`, `ssh://`); default: the local engine.
    #[serde(default)]
    pub docker_host: Option<String>,
    /// Address `docker swarm init` advertises.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_managers")]
    pub managers: u32,
    /// Swarm workers; on an aws environment, the desired size of chapter 10's autoscaling group.
    #[serde(default)]
    pub workers: u32,
    /// Chapter 10: the fewest workers the autoscaling group scales in to; default `workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<u32>,
    /// Chapter 10: the most workers the autoscaling group scales out to; default twice
    /// `workers`, at least 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u32>,
    #[serde(default)]
    pub domain: Option<String>,
    /// `up`, `down` and `deploy` need `--yes` (or a typed confirmation) here.
    #[serde(default)]
    pub protected: bool,
    /// The `ssh://` host's public keys as `known_hosts` lines (`host ssh-ed25519 AAAA…`), pinned
    /// in the deploy workflow (chapter 04): CI never trusts a host key on first use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_hosts: Vec<String>,
    /// An aws environment without `docker_host`: the user beamops logs in as on the manager
    /// whose address chapter 06 recorded (`ssh://<ssh_user>@<manager>`); default `admin`, the
    /// login of chapter 06's Debian image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    /// An aws environment: the IAM role chapter 04's deploy workflow assumes through GitHub's
    /// OIDC issuer; default chapter 02's recorded `deploy_role_arn` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_role_arn: Option<String>,
}

impl Environment {
    /// The autoscaling group's (min, desired, max) workers.
    pub fn worker_bounds(&self) -> (u32, u32, u32) {
        let min = self.min_workers.unwrap_or(self.workers);
        let max = self
            .max_workers
            .unwrap_or_else(|| (self.workers * 2).max(2).max(min));
        (min, self.workers, max)
    }
}

impl Default for Environment {
    /// The same values an empty mapping (`local: {}`) deserializes to.
    fn default() -> Self {
        Environment {
            provider: Provider::Local,
            docker_host: None,
            advertise_addr: None,
            replicas: default_replicas(),
            region: None,
            managers: default_managers(),
            workers: 0,
            min_workers: None,
            max_workers: None,
            domain: None,
            protected: false,
            known_hosts: Vec::new(),
            ssh_user: None,
            deploy_role_arn: None,
        }
    }
}

/// Options for single chapters. Later chapters add their keys here.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChapterOptions {
    #[serde(default)]
    pub foundation: FoundationOptions,
    #[serde(default)]
    pub development: DevelopmentOptions,
    #[serde(default)]
    pub swarm: SwarmOptions,
    #[serde(default)]
    pub distributed: DistributedOptions,
    #[serde(default)]
    pub instrumentation: InstrumentationOptions,
    #[serde(default)]
    pub monitoring: MonitoringOptions,
    #[serde(default)]
    pub terraform: TerraformOptions,
    #[serde(default)]
    pub production: ProductionOptions,
    #[serde(default)]
    pub autoscaling: AutoscalingOptions,
}

/// Chapter 10: the workers' autoscaling group, its scaling policy and the nodes' lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingOptions {
    /// Target-tracking scaling keeps the group's average CPU at this percentage.
    #[serde(default = "default_cpu_target")]
    pub cpu_target: u32,
    /// EC2 instance type of the workers.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Seconds the lifecycle hooks hold an instance (AWS allows 30 to 7200): the budget of a
    /// node's bootstrap and of its drain.
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout: u32,
    /// Seconds a new node may take to serve the app before its launch is abandoned; less than
    /// `hook_timeout`.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: u32,
    /// The ACM certificate (ARN) of the load balancer's HTTPS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// The S3 bucket the load balancer writes its access logs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logs_bucket: Option<String>,
}

impl Default for AutoscalingOptions {
    fn default() -> Self {
        AutoscalingOptions {
            cpu_target: default_cpu_target(),
            instance_type: default_instance_type(),
            hook_timeout: default_hook_timeout(),
            ready_timeout: default_ready_timeout(),
            certificate_arn: None,
            access_logs_bucket: None,
        }
    }
}

fn default_cpu_target() -> u32 {
    60
}
fn default_instance_type() -> String {
    "t3.small".into()
}
fn default_hook_timeout() -> u32 {
    300
}
fn default_ready_timeout() -> u32 {
    240
}

/// The monitoring stack's name: `<app stack>-monitoring`.
pub fn monitoring_stack_name(config: &Config) -> String {
    format!("{}-monitoring", config.app.stack_name())
}

/// Chapter 11: the monitoring stack beside the app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentationOptions {
    /// How often Prometheus scrapes every target and evaluates rules, e.g. `15s`.
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval: String,
    /// How long Prometheus keeps samples (`--storage.tsdb.retention.time`), e.g. `15d`.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Host port (host mode, on the manager that runs it) of Prometheus' HTTP API.
    #[serde(default = "default_prometheus_port")]
    pub prometheus_port: u16,
    /// Host port of Alertmanager's HTTP API.
    #[serde(default = "default_alertmanager_port")]
    pub alertmanager_port: u16,
    /// Host port of Grafana (where its image can be had).
    #[serde(default = "default_grafana_port")]
    pub grafana_port: u16,
    /// The app's metrics path, named in the opt-in label `prometheus.path`.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// How long `up` waits for every app task to be a target with `up == 1`, e.g. `2m`.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: String,
}

impl Default for InstrumentationOptions {
    fn default() -> Self {
        InstrumentationOptions {
            scrape_interval: default_scrape_interval(),
            retention: default_retention(),
            prometheus_port: default_prometheus_port(),
            alertmanager_port: default_alertmanager_port(),
            grafana_port: default_grafana_port(),
            metrics_path: default_metrics_path(),
            verify_timeout: default_verify_timeout(),
        }
    }
}

fn default_scrape_interval() -> String {
    "15s".into()
}
fn default_retention() -> String {
    "15d".into()
}
fn default_prometheus_port() -> u16 {
    9090
}
fn default_alertmanager_port() -> u16 {
    9093
}
fn default_grafana_port() -> u16 {
    3000
}
fn default_metrics_path() -> String {
    "/metrics".into()
}

/// Chapter 12: alert thresholds and where alerts go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringOptions {
    /// Alertmanager's webhook receiver; none routes alerts to no one (they still show in its API).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// `AppHighCpu` fires when a task's VM uses more than this many CPU cores (5-minute rate
    /// of `beam_cpu_seconds_total`).
    #[serde(default = "default_cpu_threshold")]
    pub cpu_threshold: f64,
    /// How long a rule's condition must hold before it fires, e.g. `1m`.
    #[serde(default = "default_alert_for")]
    pub alert_for: String,
    /// `ClaimLatencyHigh` fires above this p95 claim latency, in seconds.
    #[serde(default = "default_claim_latency_p95")]
    pub claim_latency_p95: f64,
    /// `BeamMemoryHigh` fires above this many bytes of VM memory per task.
    #[serde(default = "default_memory_bytes")]
    pub memory_bytes: u64,
    /// `HttpErrorRate` fires above this ratio of 5xx answers.
    #[serde(default = "default_error_ratio")]
    pub error_ratio: f64,
}

impl Default for MonitoringOptions {
    fn default() -> Self {
        MonitoringOptions {
            webhook_url: None,
            cpu_threshold: default_cpu_threshold(),
            alert_for: default_alert_for(),
            claim_latency_p95: default_claim_latency_p95(),
            memory_bytes: default_memory_bytes(),
            error_ratio: default_error_ratio(),
        }
    }
}

fn default_cpu_threshold() -> f64 {
    0.8
}
fn default_alert_for() -> String {
    "1m".into()
}
fn default_claim_latency_p95() -> f64 {
    0.25
}
fn default_memory_bytes() -> u64 {
    1_073_741_824
}
fn default_error_ratio() -> f64 {
    0.05
}

/// Chapter 09: how the release's nodes name and find each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedOptions {
    /// The first and last port Erlang distribution listens on (`inet_dist_listen_min/max`).
    #[serde(default = "default_distribution_ports")]
    pub distribution_ports: [u16; 2],
    /// Seconds between DNS polls for peers (libcluster's `polling_interval`, in ms there).
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u32,
    /// The part of a node name before `@`; default: `app.otp_app`.
    #[serde(default)]
    pub node_basename: Option<String>,
    /// How long `up` waits for every node to see all its peers, e.g. `2m`.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: String,
    /// Seconds until a silent peer is taken for dead (`net_ticktime`; Erlang's default is 60).
    /// A killed container never closes its connections, so this is how long the survivors
    /// keep a lost node in their lists.
    #[serde(default = "default_net_ticktime")]
    pub net_ticktime: u32,
    /// How `up` asks each node which peers it sees: `exec` into the tasks this Engine runs and
    /// a probe job for the others, or `job` for every node (no exec at all).
    #[serde(default)]
    pub ask: AskNodes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AskNodes {
    #[default]
    Exec,
    Job,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        DistributedOptions {
            distribution_ports: default_distribution_ports(),
            poll_seconds: default_poll_seconds(),
            node_basename: None,
            verify_timeout: default_verify_timeout(),
            net_ticktime: default_net_ticktime(),
            ask: AskNodes::default(),
        }
    }
}

fn default_distribution_ports() -> [u16; 2] {
    [9100, 9105]
}
fn default_poll_seconds() -> u32 {
    5
}
fn default_verify_timeout() -> String {
    "2m".into()
}
fn default_net_ticktime() -> u32 {
    15
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevelopmentOptions {
    /// Host port (on 127.0.0.1) for the app; default: `app.port`.
    #[serde(default)]
    pub app_port: Option<u16>,
    /// Host port (on 127.0.0.1) for Postgres.
    #[serde(default = "default_db_port")]
    pub db_port: u16,
}

impl Default for DevelopmentOptions {
    fn default() -> Self {
        DevelopmentOptions {
            app_port: None,
            db_port: default_db_port(),
        }
    }
}

/// Chapter 08: what the rendered stack file contains and how long `up` waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmOptions {
    /// Run PostgreSQL in the stack (pinned to one node, with its volume).
    #[serde(default = "yes")]
    pub database: bool,
    /// Secrets the app reads from `/run/secrets/<key in lowercase>` through `<KEY>_FILE`.
    /// `DATABASE_PASSWORD` and `DATABASE_URL` are added when `database` is on.
    #[serde(default = "default_stack_secrets")]
    pub secrets: Vec<String>,
    /// The app's `DRAIN_SECONDS`; the stop grace period is this plus 10 s.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u32,
    /// The app's healthcheck command, exec form.
    #[serde(default = "default_app_healthcheck")]
    pub healthcheck: Vec<String>,
    /// Publish the app's port on the swarm's ingress at this port; none publishes nothing.
    #[serde(default)]
    pub publish: Option<u16>,
    /// How long `up` waits for every task to run healthy, e.g. `5m`.
    #[serde(default = "default_converge_timeout")]
    pub converge_timeout: String,
    /// The app's `update_config.monitor` (and `rollback_config.monitor`): how long Swarm
    /// watches new tasks after an update before it calls the update completed; a task failing
    /// within it rolls the update back, and `deploy` waits it out. E.g. `45s`.
    #[serde(default = "default_update_monitor")]
    pub update_monitor: String,
    /// How the app's tasks are reached: `vip` (a virtual IP balanced by IPVS, the routing mesh)
    /// or `dnsrr` (DNS answers with every task's address; for kernels without IPVS).
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// `ingress` (every node answers on the port) or `host` (the node running a task does;
    /// one task per node). `dnsrr` needs `host`.
    #[serde(default)]
    pub publish_mode: PublishMode,
    /// The app network's subnet, fixed so a task can name its Erlang node after its own address
    /// on it before any DNS answers (chapter 09). Default: a /24 in 10.200.0.0–10.249.255.0
    /// derived from the stack name, so two stacks on one swarm rarely share one.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Let plain containers (`docker run --network`) join the app network: probes, debugging.
    #[serde(default)]
    pub attachable: bool,
    /// Extra environment variables of the app service (e.g. `COORDINATION_DEBUG: "1"` for the
    /// monitoring fire drill). Never secrets: those are `secrets`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            database: true,
            secrets: default_stack_secrets(),
            drain_seconds: default_drain_seconds(),
            healthcheck: default_app_healthcheck(),
            publish: None,
            converge_timeout: default_converge_timeout(),
            update_monitor: default_update_monitor(),
            endpoint_mode: EndpointMode::default(),
            publish_mode: PublishMode::default(),
            subnet: None,
            attachable: false,
            environment: BTreeMap::new(),
        }
    }
}

fn default_db_port() -> u16 {
    5432
}

impl SwarmOptions {
    /// The app network's subnet: the configured one (validated when the file loads), or one
    /// derived from the stack name.
    pub fn subnet(&self, stack: &str) -> Ipv4Net {
        if let Some(net) = self.subnet.as_deref().and_then(Ipv4Net::parse) {
            return net;
        }
        // FNV-1a: stable across Rust versions, unlike the std hasher.
        let hash = stack.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let second = 200 + (hash % 50) as u8;
        let third = (hash >> 8) as u8;
        Ipv4Net {
            address: std::net::Ipv4Addr::new(10, second, third, 0),
            prefix: 24,
        }
    }

    /// Every secret the stack mounts: the one list the template and the interpolation share.
    pub fn stack_secrets(&self) -> Vec<String> {
        let mut keys = self.secrets.clone();
        if self.database {
            for key in ["DATABASE_PASSWORD", "DATABASE_URL"] {
                if !keys.iter().any(|k| k == key) {
                    keys.push(key.to_string());
                }
            }
        }
        keys
    }
}

fn default_stack_secrets() -> Vec<String> {
    ["SECRET_KEY_BASE", "RELEASE_COOKIE"]
        .map(String::from)
        .to_vec()
}
fn default_drain_seconds() -> u32 {
    5
}
fn default_app_healthcheck() -> Vec<String> {
    ["CMD", "/usr/local/bin/healthcheck"]
        .map(String::from)
        .to_vec()
}
fn default_converge_timeout() -> String {
    "5m".into()
}
fn default_update_monitor() -> String {
    "45s".into()
}

/// Changing a swarm: the deploy lock and what stays on the nodes afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployOptions {
    /// A deploy lock older than this is reported stale (never taken over silently), e.g. `30m`.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: String,
    /// Release images of `image.repository` kept on a node after a deploy: the newest N.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// A shell command run once in the new image (as a one-off Swarm job, with the app's
    /// environment, secrets and network) before any service changes; its failure aborts the
    /// deploy. Default: `bin/<otp_app> eval "<App>.Release.migrate()"` when
    /// `chapters.swarm.database` is on, none otherwise; `""` turns it off.
    #[serde(default)]
    pub release_command: Option<String>,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            lock_timeout: default_lock_timeout(),
            keep_releases: default_keep_releases(),
            release_command: None,
        }
    }
}

impl DeployOptions {
    pub fn lock_timeout(&self) -> anyhow::Result<std::time::Duration> {
        humantime::parse_duration(&self.lock_timeout).map_err(|e| {
            anyhow::anyhow!(
                "beamops.yaml: deploy.lock_timeout `{}` is not a duration like 30m: {e}",
                self.lock_timeout
            )
        })
    }
}

/// Chapter 04: the GitHub repository, its API and what the workflows deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiOptions {
    /// `owner/name` on GitHub; default: the `origin` remote's path when it is a network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The REST API's base URL (GitHub Enterprise: `https://HOST/api/v3`). https only; plain
    /// http is accepted for a loopback address (a local stand-in) and nothing else.
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// The branch CI runs on pushes to and whose pushes deploy `deploy_on_push`.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// The environment pushes to the default branch deploy; default `staging` when it exists;
    /// `""` deploys none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_on_push: Option<String>,
    /// The environment a `v*` tag deploys; default `production` when it exists; `""` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_on_tag: Option<String>,
    /// Where the deploy workflow installs beamops from.
    #[serde(default)]
    pub beamops: CiBeamops,
}

impl Default for CiOptions {
    fn default() -> Self {
        CiOptions {
            repository: None,
            api_url: default_github_api(),
            default_branch: default_branch(),
            deploy_on_push: None,
            deploy_on_tag: None,
            beamops: CiBeamops::default(),
        }
    }
}

impl CiOptions {
    /// The environment `key` names (`deploy_on_push`/`deploy_on_tag`), or `fallback` when unset
    /// and it exists; `""` means none.
    fn target(
        key: &Option<String>,
        fallback: &str,
        environments: &BTreeMap<String, Environment>,
    ) -> Option<String> {
        match key.as_deref() {
            Some("") => None,
            Some(name) => Some(name.to_string()),
            None => environments
                .contains_key(fallback)
                .then(|| fallback.to_string()),
        }
    }

    pub fn push_target(&self, environments: &BTreeMap<String, Environment>) -> Option<String> {
        Self::target(&self.deploy_on_push, "staging", environments)
    }

    pub fn tag_target(&self, environments: &BTreeMap<String, Environment>) -> Option<String> {
        Self::target(&self.deploy_on_tag, "production", environments)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiBeamops {
    /// A git URL `cargo install --git` accepts.
    #[serde(default = "default_beamops_git")]
    pub git: String,
    /// The full commit (40 hex digits) the deploy workflow installs: a pinned revision, never a
    /// branch or a tag that can move. Required before the deploy workflow can run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
}

impl Default for CiBeamops {
    fn default() -> Self {
        CiBeamops {
            git: default_beamops_git(),
            rev: None,
        }
    }
}

pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
fn default_github_api() -> String {
    DEFAULT_GITHUB_API.into()
}
fn default_branch() -> String {
    "main".into()
}
fn default_beamops_git() -> String {
    "https://github.com/beamops/beamops".into()
}

fn default_lock_timeout() -> String {
    "30m".into()
}
fn default_keep_releases() -> u32 {
    3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoundationOptions {
    /// Append `.beamops/` to `.gitignore` when it is missing.
    #[serde(default = "yes")]
    pub gitignore: bool,
}

impl Default for FoundationOptions {
    fn default() -> Self {
        FoundationOptions { gitignore: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorktreeOptions {
    /// Ignored paths `worktree remove` may delete without asking: build output only.
    #[serde(default = "default_allow_list")]
    pub allow_list: Vec<String>,
}

impl Default for WorktreeOptions {
    fn default() -> Self {
        WorktreeOptions {
            allow_list: default_allow_list(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_port() -> u16 {
    4000
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_replicas() -> u32 {
    1
}
fn default_managers() -> u32 {
    1
}
fn default_environments() -> BTreeMap<String, Environment> {
    BTreeMap::from([("local".to_string(), Environment::default())])
}
pub fn default_allow_list() -> Vec<String> {
    ["_build", "deps", "node_modules", "target", ".elixir_ls"]
        .map(String::from)
        .to_vec()
}

/// An IPv4 network `a.b.c.d/prefix`, as the app network's subnet is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl Ipv4Net {
    /// Prefixes outside 8..=29 leave no room for tasks or are not a network a swarm would use.
    pub fn parse(text: &str) -> Option<Ipv4Net> {
        let (address, prefix) = text.split_once('/')?;
        let address: std::net::Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if !(8..=29).contains(&prefix) {
            return None;
        }
        let mask = u32::MAX << (32 - prefix);
        (u32::from(address) & !mask == 0).then_some(Ipv4Net { address, prefix })
    }

    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.address)
    }
}

#[cfg(test)]
mod ipv4_tests {
    use super::Ipv4Net;

    #[test]
    fn subnets_parse_only_when_the_host_bits_are_zero() {
        let net = Ipv4Net::parse("10.213.0.0/24").unwrap();
        assert!(net.contains("10.213.0.7".parse().unwrap()));
        assert!(!net.contains("10.213.1.7".parse().unwrap()));
        assert!(Ipv4Net::parse("10.213.0.1/24").is_none());
        assert!(Ipv4Net::parse("10.213.0.0/31").is_none());
        assert!(Ipv4Net::parse("10.213.0.0").is_none());
        assert!(Ipv4Net::parse("fd00::/64").is_none());
    }

    #[test]
    fn a_derived_subnet_is_stable_per_stack_and_differs_between_stacks() {
        let options = super::SwarmOptions::default();
        let a = options.subnet("coordination");
        assert_eq!(a, options.subnet("coordination"));
        assert_ne!(a, options.subnet("coordination-staging"));
        assert_eq!(a.prefix, 24);
        assert!((200..250).contains(&a.address.octets()[1]), "{a}");
        assert_eq!(Ipv4Net::parse(&a.to_string()), Some(a));
    }
}
