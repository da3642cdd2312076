//! The template context: one typed value, built once per run and environment, serialised once
//! into tera's context. A template reads `app.port`; this file is where `app.port` comes from.
//! A name a template or a manifest expression needs is a field here, never a key some chapter
//! adds to a JSON blob (`chapter::tests` checks every manifest expression against it).

use serde::Serialize;

use crate::config::{Config, Environment, Provider};
use crate::project::Project;

#[derive(Debug, Serialize)]
pub struct TemplateContext<'a> {
    /// The whole `beamops.yaml`, as loaded (`config.chapters.foundation.gitignore`…).
    pub config: &'a Config,
    pub app: App<'a>,
    pub image: Image<'a>,
    /// Chapter 05's development environment.
    pub dev: Dev<'a>,
    /// Chapter 08's stack.
    pub swarm: Swarm,
    /// Chapters 11 and 12.
    pub monitoring: Monitoring,
    /// Chapter 09's Erlang cluster.
    pub distributed: Distributed<'a>,
    /// Chapter 10's autoscaling group.
    pub autoscaling: Autoscaling<'a>,
    /// The environment this run renders for.
    pub env: Env<'a>,
    /// Facts read from the project's files.
    pub project: ProjectFacts,
    /// Chapter 04's workflows.
    pub ci: crate::cicd::CiContext<'a>,
    /// Chapters 02, 06 and 10: the Terraform roots and the GitHub repository they configure.
    pub terraform: Terraform,
    pub beamops: Beamops,
}

#[derive(Debug, Serialize)]
pub struct App<'a> {
    pub name: &'a str,
    pub otp_app: &'a str,
    pub elixir: &'a str,
    pub otp: &'a str,
    pub port: u16,
    pub health_path: &'a str,
    /// `app.stack` of the configuration, else the app's name.
    pub stack: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Image<'a> {
    pub repository: String,
    pub registry: Option<&'a str>,
    pub builder: String,
    pub runner: String,
    pub runtime_packages: Vec<String>,
    pub postgres: String,
}

#[derive(Debug, Serialize)]
pub struct Dev<'a> {
    pub app_port: u16,
    pub db_port: u16,
    pub db_user: &'a str,
    pub db_name: String,
}

#[derive(Debug, Serialize)]
pub struct Swarm {
    pub secrets: Vec<String>,
    pub stop_grace_seconds: u32,
    pub subnet: String,
}

#[derive(Debug, Serialize)]
pub struct Monitoring {
    pub stack: String,
    pub app_service: String,
    pub images: MonitoringImages,
    pub datasources: Datasources,
}

#[derive(Debug, Serialize)]
pub struct MonitoringImages {
    pub prometheus: String,
    pub alertmanager: String,
    pub grafana: String,
    pub loki: String,
    pub promtail: String,
}

/// Fixed uids: the dashboards name their datasource by uid, so a re-provisioned Grafana never
/// shows "datasource not found".
#[derive(Debug, Serialize)]
pub struct Datasources {
    pub prometheus: &'static str,
    pub loki: &'static str,
    pub alertmanager: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Distributed<'a> {
    pub node_basename: &'a str,
    /// The app's Elixir module (`my_app` → `MyApp`).
    pub module: String,
}

#[derive(Debug, Serialize)]
pub struct Autoscaling<'a> {
    pub cpu_target: u32,
    pub instance_type: &'a str,
    pub hook_timeout: u32,
    pub ready_timeout: u32,
    pub certificate_arn: Option<&'a str>,
    pub access_logs_bucket: Option<&'a str>,
    /// The port the load balancer targets on every worker: the stack's published port.
    pub app_port: u16,
    pub min_workers: u32,
    pub desired_workers: u32,
    pub max_workers: u32,
}

#[derive(Debug, Serialize)]
pub struct Env<'a> {
    pub name: &'a str,
    pub provider: Provider,
    pub replicas: u32,
    pub managers: u32,
    pub workers: u32,
    pub domain: Option<&'a str>,
    pub region: Option<&'a str>,
    pub protected: bool,
}

#[derive(Debug, Serialize)]
pub struct ProjectFacts {
    pub has_assets: bool,
    pub has_mix_lock: bool,
    pub has_deps: bool,
    pub phoenix: bool,
    pub has_database: bool,
    /// Directories the release build copies, in an order that keeps slow layers cached.
    pub source_dirs: Vec<&'static str>,
    /// Compile-time config the dependency layer needs (runtime.exs is read at boot).
    pub build_config: Vec<&'static str>,
    /// The image's source label: `image.source`, else the origin remote as a web address.
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct Terraform {
    /// One machine image serves every environment: it is built in the first aws environment's
    /// region (`packer build -var region=…` for another).
    pub image_region: String,
    /// GitHub environments: every `aws` environment.
    pub environments: Vec<GithubEnvironment>,
    /// `owner/name` on GitHub: configured, else from a github.com origin remote.
    pub repository: String,
    pub owner: String,
    pub repository_name: String,
    pub state_key_prefix: String,
    /// Branch protection waits for these: configured, else the jobs chapter 04's ci.yml has.
    pub required_checks: Vec<String>,
}

/// A protected one needs a review and deploys from the default branch only.
#[derive(Debug, Serialize)]
pub struct GithubEnvironment {
    pub name: String,
    pub protected: bool,
}

#[derive(Debug, Serialize)]
pub struct Beamops {
    pub version: &'static str,
}

impl<'a> TemplateContext<'a> {
    /// The context for `env_name`, which `beamops.yaml` must define.
    pub fn new(project: &'a Project, env_name: &'a str) -> anyhow::Result<Self> {
        let config = &project.config;
        let env = config
            .environment(env_name)
            .ok_or_else(|| anyhow::anyhow!("no environment `{env_name}` in beamops.yaml"))?;
        let root = &project.root;
        let deps = super::mix_deps(root);
        // The origin remote, read once: the image label and the GitHub repository both use it.
        let origin_url = std::cell::OnceCell::new();
        let origin = || {
            origin_url
                .get_or_init(|| super::source_url(project))
                .clone()
        };
        Ok(TemplateContext {
            config,
            app: App {
                name: &config.app.name,
                otp_app: &config.app.otp_app,
                elixir: &config.app.elixir,
                otp: &config.app.otp,
                port: config.app.port,
                health_path: &config.app.health_path,
                stack: config.app.stack_name(),
            },
            image: Image {
                repository: config.image_repository(),
                registry: config.image.registry.as_deref(),
                builder: config.builder_image(),
                runner: config.runner_image(),
                runtime_packages: config.runtime_packages(),
                postgres: config.postgres_image(),
            },
            dev: Dev {
                app_port: config
                    .chapters
                    .development
                    .app_port
                    .unwrap_or(config.app.port),
                db_port: config.chapters.development.db_port,
                db_user: &config.app.otp_app,
                db_name: format!("{}_dev", config.app.otp_app),
            },
            swarm: Swarm {
                secrets: config.chapters.swarm.stack_secrets(),
                stop_grace_seconds: config.chapters.swarm.drain_seconds + 10,
                subnet: config
                    .chapters
                    .swarm
                    .subnet(config.app.stack_name())
                    .to_string(),
            },
            monitoring: Monitoring {
                stack: crate::config::monitoring_stack_name(config),
                app_service: format!("{}_app", config.app.stack_name()),
                images: MonitoringImages {
                    prometheus: config.prometheus_image(),
                    alertmanager: config.alertmanager_image(),
                    grafana: config.grafana_image(),
                    loki: config.loki_image(),
                    promtail: config.promtail_image(),
                },
                datasources: Datasources {
                    prometheus: "beamops-prometheus",
                    loki: "beamops-loki",
                    alertmanager: "beamops-alertmanager",
                },
            },
            distributed: Distributed {
                node_basename: config
                    .chapters
                    .distributed
                    .node_basename
                    .as_deref()
                    .unwrap_or(&config.app.otp_app),
                module: super::elixir_module(&config.app.otp_app),
            },
            autoscaling: autoscaling(config, env),
            env: Env {
                name: env_name,
                provider: env.provider,
                replicas: env.replicas,
                managers: env.managers,
                workers: env.workers,
                domain: env.domain.as_deref(),
                region: env.region.as_deref(),
                protected: env.protected,
            },
            project: ProjectFacts {
                has_assets: root.join("assets").exists(),
                has_mix_lock: root.join("mix.lock").exists(),
                has_deps: !deps.is_empty(),
                phoenix: deps.iter().any(|d| d == "phoenix"),
                has_database: false,
                source_dirs: ["config", "priv", "lib", "assets", "rel"]
                    .into_iter()
                    .filter(|d| root.join(d).is_dir())
                    .collect(),
                build_config: ["config/config.exs", "config/prod.exs"]
                    .into_iter()
                    .filter(|f| root.join(f).is_file())
                    .collect(),
                source: config.image.source.clone().unwrap_or_else(origin),
            },
            ci: crate::cicd::CiContext::new(project, &deps),
            terraform: terraform(config, &deps, origin),
            beamops: Beamops {
                version: env!("CARGO_PKG_VERSION"),
            },
        })
    }

    /// Serialised once, for tera.
    pub fn to_tera(&self) -> anyhow::Result<tera::Context> {
        tera::Context::from_serialize(self).map_err(|e| {
            anyhow::anyhow!("building the template context: {}", super::tera_chain(&e))
        })
    }
}

fn autoscaling<'a>(config: &'a Config, env: &Environment) -> Autoscaling<'a> {
    let options = &config.chapters.autoscaling;
    let (min_workers, desired_workers, max_workers) = env.worker_bounds();
    Autoscaling {
        cpu_target: options.cpu_target,
        instance_type: &options.instance_type,
        hook_timeout: options.hook_timeout,
        ready_timeout: options.ready_timeout,
        certificate_arn: options.certificate_arn.as_deref(),
        access_logs_bucket: options.access_logs_bucket.as_deref(),
        app_port: config.chapters.swarm.publish.unwrap_or(config.app.port),
        min_workers,
        desired_workers,
        max_workers,
    }
}

fn terraform(config: &Config, deps: &[String], origin: impl FnOnce() -> String) -> Terraform {
    let options = &config.chapters.terraform;
    let repository = options.github.repository.clone().unwrap_or_else(|| {
        origin()
            .strip_prefix("https://github.com/")
            .map(str::to_string)
            .unwrap_or_default()
    });
    let (owner, repository_name) = repository
        .split_once('/')
        .map(|(o, n)| (o.to_string(), n.to_string()))
        .unwrap_or_default();
    let aws = || {
        config
            .environments
            .iter()
            .filter(|(_, e)| e.provider == Provider::Aws)
    };
    Terraform {
        image_region: aws()
            .next()
            .and_then(|(_, e)| e.region.clone())
            .unwrap_or_else(|| "eu-west-1".into()),
        environments: aws()
            .map(|(name, e)| GithubEnvironment {
                name: name.clone(),
                protected: e.protected,
            })
            .collect(),
        owner,
        repository_name,
        repository,
        state_key_prefix: options
            .state
            .key_prefix
            .clone()
            .unwrap_or_else(|| config.app.name.clone()),
        required_checks: options
            .github
            .required_checks
            .clone()
            .unwrap_or_else(|| crate::cicd::required_checks(deps)),
    }
}
