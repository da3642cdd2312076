//! Typed actions: what a chapter does after its files are rendered.
//!
//! A manifest names actions by type (`action: versions-agree`) with parameters; each type is a
//! struct implementing [`Action`]. The engine only ever sees the trait.

pub mod cicd;
pub mod cluster;
pub mod compose;
pub mod docker;
pub mod foundation;
pub mod monitoring;
pub mod record;
pub mod secrets;
pub mod stack;
pub mod swarm;
pub mod terraform;

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::{Environment, Provider};
use crate::output::Ui;
use crate::project::Project;
use crate::render::Rendered;
use crate::state::ActionRecord;

/// The action types a manifest may name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActionSpec {
    GitRepository,
    MixProject,
    VersionsAgree,
    SwarmMode,
    BaseImages,
    ReleaseImage,
    DevSecrets,
    DevEnvironment,
    DockerSecrets,
    /// Parameters: `file:`, `stack:`, `owner:` (`stack::Params`); none: chapter 08's app stack.
    StackConverged(stack::Params),
    LibclusterWired,
    ClusterFormed,
    WorkflowsValid,
    GithubSecrets,
    MonitoringImages,
    PrometheusTargets,
    PullOnlyImages,
    AlertingLoaded,
    ExpressionsAnswer,
    PromExWired,
    /// A Terraform root planned and applied (docs/terraform.md); `root` is a template
    /// expression, default `terraform/{{ env.name }}`.
    TerraformApplied {
        #[serde(default = "terraform::env_root")]
        root: String,
    },
    /// A placeholder for a chapter that is not implemented yet: describes what it will do.
    Planned {
        does: String,
    },
}

impl ActionSpec {
    /// The action, for the chapter (key, `08-swarm`) whose manifest lists it.
    pub fn build(&self, chapter: &str) -> Box<dyn Action> {
        match self {
            ActionSpec::GitRepository => Box::new(foundation::GitRepository),
            ActionSpec::MixProject => Box::new(foundation::MixProject),
            ActionSpec::VersionsAgree => Box::new(foundation::VersionsAgree),
            ActionSpec::SwarmMode => Box::new(swarm::SwarmModeAction),
            ActionSpec::BaseImages => Box::new(docker::BaseImages),
            ActionSpec::ReleaseImage => Box::new(docker::ReleaseImage),
            ActionSpec::DevSecrets => Box::new(compose::DevSecrets),
            ActionSpec::DevEnvironment => Box::new(compose::DevEnvironment),
            ActionSpec::DockerSecrets => Box::new(secrets::DockerSecrets {
                chapter: chapter.to_string(),
            }),
            ActionSpec::StackConverged(params) => Box::new(stack::StackConverged {
                params: params.clone(),
                chapter: chapter.to_string(),
            }),
            ActionSpec::LibclusterWired => Box::new(cluster::LibclusterWired),
            ActionSpec::ClusterFormed => Box::new(cluster::ClusterFormed {
                chapter: chapter.to_string(),
            }),
            ActionSpec::WorkflowsValid => Box::new(cicd::WorkflowsValid),
            ActionSpec::GithubSecrets => Box::new(cicd::GithubSecrets),
            ActionSpec::MonitoringImages => Box::new(monitoring::MonitoringImages),
            ActionSpec::PrometheusTargets => Box::new(monitoring::PrometheusTargets),
            ActionSpec::PullOnlyImages => Box::new(monitoring::PullOnlyImages),
            ActionSpec::AlertingLoaded => Box::new(monitoring::AlertingLoaded),
            ActionSpec::ExpressionsAnswer => Box::new(monitoring::ExpressionsAnswer),
            ActionSpec::PromExWired => Box::new(monitoring::PromExWired),
            ActionSpec::TerraformApplied { root } => {
                Box::new(terraform::TerraformApplied { root: root.clone() })
            }
            ActionSpec::Planned { does } => Box::new(Planned(does.clone())),
        }
    }
}

impl ActionSpec {
    /// The template expressions among the action's parameters.
    pub fn expressions(&self) -> Vec<(&'static str, &str)> {
        match self {
            ActionSpec::StackConverged(params) => params.expressions(),
            ActionSpec::TerraformApplied { root } => vec![("root", root.as_str())],
            _ => Vec::new(),
        }
    }
}

/// What a cheap inspection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum Check {
    Satisfied(String),
    /// `apply` would change something.
    Pending(String),
    /// A tool or credential is missing: what, and how to get it.
    Blocked(String),
    /// A precondition beamops will not fix for you: what is wrong and the fix.
    Failed(String),
}

/// What an apply did, for the report and the state.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub summary: String,
    /// The action's typed record (`record::to_data`); empty when it keeps none.
    pub data: record::Data,
    pub inputs_digest: Option<String>,
}

pub struct ActionContext<'a> {
    pub project: &'a Project,
    pub env_name: &'a str,
    pub env: &'a Environment,
    /// The files this run renders for the chapter, so checks see what will be on disk.
    pub rendered: &'a [Rendered],
    /// What this action recorded last time in this environment.
    pub previous: Option<&'a ActionRecord>,
    pub ui: &'a Ui,
    /// `down --purge`: volumes and data may go too.
    pub purge: bool,
    /// `up --no-cache`: rebuild instead of trusting what an earlier run built.
    pub no_cache: bool,
    /// Stack variables that win over the recorded ones (see `swarm::variables`).
    pub stack_variables: &'a std::collections::BTreeMap<String, String>,
    /// In a plan: the files earlier chapters write and the actions still pending before this
    /// one. Empty while `up` runs, when earlier steps have really happened.
    pub planned: &'a crate::plan::Planned,
    /// The run's Engine connection (lazy): reached through [`ActionContext::engine`].
    pub docker: &'a crate::docker::Connection,
    /// This check is `up`'s plan before it writes the chapter's files; the action is checked
    /// again once they are written, and that check decides. A check may then answer pending
    /// for what it could only preview ([`ActionContext::defer`]).
    pub rechecked_after_writing: bool,
    /// Set by [`ActionContext::defer`]: the engine keeps such an answer for that plan only.
    pub(crate) deferred: std::cell::Cell<bool>,
}

impl ActionContext<'_> {
    /// Pending, leaving what only a costly preview could tell (Terraform's plan of files not
    /// yet written) to the check `up` runs once it has written them. None unless
    /// `rechecked_after_writing`: a `plan` must run the preview and show it.
    pub fn defer(&self, detail: String) -> Option<Check> {
        if !self.rechecked_after_writing {
            return None;
        }
        self.deferred.set(true);
        Some(Check::Pending(detail))
    }

    pub fn deferred(&self) -> bool {
        self.deferred.get()
    }

    /// A file's content as it will be when this action runs: the rendering if the chapter
    /// renders it, else what an earlier chapter of the plan writes, else the disk.
    pub fn file(&self, relative: &str) -> Option<String> {
        if let Some(r) = self.rendered.iter().find(|r| r.path == relative) {
            return Some(String::from_utf8_lossy(&r.content).into_owned());
        }
        match self.planned.file(relative) {
            Some(planned) => planned.map(|c| String::from_utf8_lossy(c).into_owned()),
            None => std::fs::read_to_string(self.path(relative)).ok(),
        }
    }

    /// This action's previous record as `R`; `Ok(None)` when it never applied. An unreadable
    /// record is an error naming it: a check reports it (pending: apply records it anew).
    pub fn recorded<R: record::Record>(&self) -> Result<Option<R>, record::Unreadable> {
        match self.previous {
            Some(p) => p.typed::<R>(),
            None => Ok(None),
        }
    }

    /// The previous record, only if it was applied with these inputs (`inputs_digest`).
    pub fn recorded_for<R: record::Record>(
        &self,
        digest: &str,
    ) -> Result<Option<R>, record::Unreadable> {
        match self.previous {
            Some(p) if p.inputs_digest.as_deref() == Some(digest) => p.typed::<R>(),
            _ => Ok(None),
        }
    }

    /// For an apply, which makes a new record anyway: an unreadable previous record is taken
    /// for "not applied", said in a warning that names it.
    pub fn recorded_or_warn<R: record::Record>(&self, digest: Option<&str>) -> Option<R> {
        let found = match digest {
            Some(d) => self.recorded_for::<R>(d),
            None => self.recorded::<R>(),
        };
        found.unwrap_or_else(|e| {
            self.ui.warning(format!("{e}; taken as not applied"));
            None
        })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.project.root.join(relative)
    }

    /// The environment's Docker Engine, and the runtime to drive its async API from here: the
    /// run's one connection, opened by the first action that asks.
    pub fn engine(&self) -> Result<(&tokio::runtime::Runtime, &crate::docker::Daemon)> {
        self.docker.daemon()
    }
}

pub trait Action {
    /// Stable within its chapter; the key of its record in the state.
    fn id(&self) -> String;
    fn describe(&self) -> String;
    /// The providers this action applies to; elsewhere it is skipped.
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local, Provider::Aws]
    }
    /// Actions (by id, in this chapter or an earlier one) whose apply makes this check's inputs:
    /// while one of them is pending earlier in a plan, this check's failure or error means only
    /// "not there yet" and the plan reports it pending. A check's own `Blocked` (a missing tool
    /// or key) stands: the user must act whatever the plan applies first.
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }
    /// A cheap inspection: files, state, Engine API inspect calls. Never waits or execs.
    fn check(&self, cx: &ActionContext) -> Result<Check>;
    fn apply(&self, cx: &ActionContext) -> Result<Applied>;
    /// Probes that wait or exec belong here; by default the check must now be satisfied.
    fn verify(&self, cx: &ActionContext) -> Result<()> {
        match self.check(cx)? {
            Check::Satisfied(_) => Ok(()),
            other => anyhow::bail!("{}: still not satisfied after apply: {other:?}", self.id()),
        }
    }
    /// Undo for `down`; `None` means there is nothing to undo.
    fn undo(&self, _cx: &ActionContext) -> Result<Option<String>> {
        Ok(None)
    }
    /// False for chapters that exist as data only.
    fn implemented(&self) -> bool {
        true
    }
    /// True for an action whose `Blocked` stops neither the run nor the chapters after it: it
    /// is reported blocked (exit 3) while the rest applies, and its chapter counts as done for
    /// the chapters that need it (Grafana's image where no registry answers).
    fn optional(&self) -> bool {
        false
    }
    /// True for actions that change the swarm (swarm mode, secrets, services): `up` and `down`
    /// take the stack's deploy lock before the first of them that has work to do.
    fn touches_swarm(&self) -> bool {
        false
    }
}

struct Planned(String);

impl Action for Planned {
    fn id(&self) -> String {
        let slug: String = self
            .0
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("planned-{}", slug.trim_matches('-'))
    }
    fn describe(&self) -> String {
        self.0.clone()
    }
    fn check(&self, _cx: &ActionContext) -> Result<Check> {
        Ok(Check::Failed("not implemented".into()))
    }
    fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
        Err(crate::exit::Failure::NotImplemented(self.0.clone()).into())
    }
    fn implemented(&self) -> bool {
        false
    }
}
