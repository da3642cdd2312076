//! A stack file converged through the Engine API: chapter 08's app stack by default; any
//! chapter may converge a stack file of its own with `file:` and `stack:`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::record::{self, StackRecord};
use super::{Action, ActionContext, Applied, Check};
use crate::config::Provider;
use crate::docker::Daemon;
use crate::swarm::{self, SwarmMode, converge, spec::Owner, stack::StackFile};

/// What a manifest may pass to `stack-converged`. Each is a template expression over the
/// render context, like a file's `path:` (`stack: "{{ app.stack }}-monitoring"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The stack file, relative to the project root; default `deploy/stack.yml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The stack's name on the swarm; default the app's stack (`app.stack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The chapter (key, `08-swarm`) whose stack this converges on its behalf: everything is
    /// labelled as that chapter's, and `down` of this chapter leaves the stack to it. Chapter 09
    /// rolls out the image it rebuilt into chapter 08's stack this way. Default: this chapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Services whose image only a registry can give (Grafana, Loki, Promtail: no Debian
    /// package): pulled when absent; where no registry has it, the service is left out of the
    /// converge (with the configs, secrets and volumes only it uses) and the record says so.
    /// Another action reports them blocked (chapter 11's `pull-only-images`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_only: Vec<String>,
}

impl Params {
    /// The template expressions among the parameters (`file:`, `stack:`), for the test that
    /// checks every manifest expression against the real context.
    pub fn expressions(&self) -> Vec<(&'static str, &str)> {
        [("file", &self.file), ("stack", &self.stack)]
            .into_iter()
            .filter_map(|(key, text)| Some((key, text.as_deref()?)))
            .collect()
    }
}

pub struct StackConverged {
    pub params: Params,
    /// The key of the chapter whose manifest lists this action.
    pub chapter: String,
}

/// Service → local image id as the last converge in this environment saw it. An unreadable
/// record counts as no converge yet (with a warning naming it): every service is compared with
/// its spec, only the rebuilt-under-the-same-tag detection has nothing to go on.
fn previous_images(cx: &ActionContext) -> BTreeMap<String, String> {
    cx.recorded_or_warn::<StackRecord>(None)
        .map(|r| r.images)
        .unwrap_or_default()
}

struct Target<'a> {
    rt: &'a tokio::runtime::Runtime,
    daemon: &'a Daemon,
    stack: String,
    file: StackFile,
    /// `pull_only` services left out: service key → image.
    left_out: BTreeMap<String, String>,
}

/// The parameters with their templates rendered: (file, stack).
struct Resolved {
    file: String,
    stack: String,
}

impl StackConverged {
    fn resolved(&self, cx: &ActionContext) -> Result<Resolved> {
        let expand = |text: &str, what: &str| {
            crate::render::expand(text, cx.project, cx.env_name)
                .with_context(|| format!("chapter {}: stack-converged `{what}`", self.chapter))
        };
        Ok(Resolved {
            file: match &self.params.file {
                Some(file) => expand(file, "file")?,
                None => swarm::STACK_FILE.to_string(),
            },
            stack: match &self.params.stack {
                Some(stack) => expand(stack, "stack")?,
                None => cx.project.config.app.stack_name().to_string(),
            },
        })
    }

    /// Who the converge labels everything as, and whether it adopts the stack's unlabelled
    /// objects (made before chapter labels: only ever chapter 08's defaults).
    fn owner(&self, cx: &ActionContext, resolved: &Resolved) -> Owner {
        swarm::owner(
            cx.project,
            self.params.owner.as_deref().unwrap_or(&self.chapter),
            &resolved.file,
            &resolved.stack,
        )
    }

    fn target<'a>(&self, cx: &'a ActionContext) -> Result<Target<'a>> {
        self.target_pulling(cx, false)
    }

    /// The target; `pull` tries a registry for absent `pull_only` images first (apply only:
    /// a check never waits on a registry).
    fn target_pulling<'a>(&self, cx: &'a ActionContext, pull: bool) -> Result<Target<'a>> {
        let resolved = self.resolved(cx)?;
        let text = cx.file(&resolved.file).with_context(|| {
            format!(
                "{} is missing\n  fix: beamops up {} renders it",
                resolved.file,
                self.params.owner.as_deref().unwrap_or(&self.chapter)
            )
        })?;
        let (rt, daemon) = cx.engine()?;
        let stack = resolved.stack.clone();
        // Which release: the deploy target, an exported variable, the live service, the
        // record, the file's default (`crate::rollout`, the one place that decides it).
        let (live, _) = rt.block_on(swarm::live_releases(daemon, &stack))?;
        let sources = crate::rollout::sources(cx.project, cx.env_name, cx.stack_variables, live)?;
        let mut file = swarm::parse_stack_file(
            cx.project,
            cx.env_name,
            &resolved.file,
            &text,
            &crate::rollout::variables(&sources),
        )?;
        file.owner = self.owner(cx, &resolved);
        // Configs and secrets the stack reads from files, as this run will leave them: a managed
        // file as rendered; a create-once or appended one is the user's once it exists.
        for r in cx.rendered {
            let path = cx.project.root.join(&r.path);
            if r.spec.policy == crate::chapter::Policy::Managed || !path.exists() {
                file.contents
                    .insert(swarm::stack::normalise_path(&path), r.content.clone());
            }
        }
        let left_out = super::monitoring::leave_out_missing(
            &mut file,
            &self.params.pull_only,
            daemon,
            rt,
            pull.then_some(cx.ui),
        );
        Ok(Target {
            rt,
            daemon,
            stack,
            file,
            left_out,
        })
    }

    /// The check itself: inspect calls comparing the rendered stack with the Engine's.
    fn inspect(&self, cx: &ActionContext, images: &BTreeMap<String, String>) -> Result<Check> {
        let target = self.target(cx)?;
        let rt = target.rt;
        if !matches!(
            rt.block_on(swarm::mode(target.daemon))?,
            SwarmMode::Manager { .. }
        ) {
            return Ok(Check::Pending(format!(
                "deploy stack {} once the Engine is a swarm manager",
                target.stack
            )));
        }
        let pending = rt.block_on(converge::pending(
            target.daemon,
            &target.stack,
            &target.file,
            images,
        ))?;
        Ok(if pending.is_empty() {
            Check::Satisfied(format!(
                "stack {}: {} service(s) as specified, every task running healthy{}",
                target.stack,
                target.file.services.len(),
                if target.left_out.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (left out, no image: {})",
                        target
                            .left_out
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))
        } else {
            Check::Pending(
                pending
                    .iter()
                    .map(|p| format!("{}: {}", p.object, p.change))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }

    fn timeout(cx: &ActionContext) -> Result<Duration> {
        let text = &cx.project.config.chapters.swarm.converge_timeout;
        humantime::parse_duration(text).with_context(|| {
            format!(
                "beamops.yaml: chapters.swarm.converge_timeout `{text}` is not a duration like 5m"
            )
        })
    }
}

impl Action for StackConverged {
    fn id(&self) -> String {
        "stack-converged".into()
    }
    fn describe(&self) -> String {
        let file = self.params.file.as_deref().unwrap_or(swarm::STACK_FILE);
        let mut text = format!("{file} applied through the Engine API, every task running healthy");
        if let Some(stack) = &self.params.stack {
            text.push_str(&format!(" (stack {stack})"));
        }
        if let Some(owner) = &self.params.owner {
            text.push_str(&format!("; the stack is chapter {owner}'s"));
        }
        text
    }
    fn providers(&self) -> &'static [Provider] {
        // Chapter 08's app stack is deployed to an aws environment's managers too (through
        // `ssh://`); the other chapters' stacks use images built on this machine.
        if self.params == Params::default() {
            &[Provider::Local, Provider::Aws]
        } else {
            &[Provider::Local]
        }
    }
    /// The swarm, the stack's secrets and the app image come from these; a plan that applies
    /// them first reports this action pending, not failed or blocked on their absence.
    fn needs(&self) -> &'static [&'static str] {
        &["swarm-mode", "docker-secrets", "release-image"]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        // An unreachable Engine or a missing secret is an error the engine reports as blocked
        // (its exit code), or as pending when a need above is pending earlier in the plan.
        self.inspect(cx, &previous_images(cx))
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let target = self.target_pulling(cx, true)?;
        let rt = target.rt;
        let timeout = Self::timeout(cx)?;
        let done = rt.block_on(converge::converge(
            target.daemon,
            &target.stack,
            &target.file,
            cx.ui,
            timeout,
            &previous_images(cx),
        ))?;
        let mut parts = Vec::new();
        if !done.created.is_empty() {
            parts.push(format!("created {}", done.created.join(", ")));
        }
        if !done.updated.is_empty() {
            parts.push(format!("updated {}", done.updated.join(", ")));
        }
        if !done.removed.is_empty() {
            parts.push(format!("removed {}", done.removed.join(", ")));
        }
        if !done.unchanged.is_empty() {
            parts.push(format!("unchanged {}", done.unchanged.join(", ")));
        }
        if !done.pruned.is_empty() {
            parts.push(format!("removed unused {}", done.pruned.join(", ")));
        }
        if !target.left_out.is_empty() {
            parts.push(format!(
                "left out (no image): {}",
                target
                    .left_out
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Applied {
            summary: format!(
                "stack {}: {}; converged in {:.1}s",
                target.stack,
                parts.join("; "),
                done.wait_seconds
            ),
            data: record::to_data(&StackRecord {
                stack: target.stack,
                created: done.created,
                updated: done.updated,
                unchanged: done.unchanged,
                removed: done.removed,
                pruned: done.pruned,
                converge_seconds: done.wait_seconds,
                images: done.images,
                left_out: target.left_out,
            }),
            inputs_digest: None,
        })
    }
    /// Apply waited for convergence; the rebuilt-image comparison would still see the record
    /// from before this apply, so it is left out here.
    fn verify(&self, cx: &ActionContext) -> Result<()> {
        match self.inspect(cx, &BTreeMap::new())? {
            Check::Satisfied(_) => Ok(()),
            other => anyhow::bail!("{}: still not satisfied after apply: {other:?}", self.id()),
        }
    }
    fn touches_swarm(&self) -> bool {
        true
    }
    /// Removes what this chapter's converge made in the stack, nothing of another chapter's.
    /// A stack converged on another chapter's behalf (`owner:`) is that chapter's to remove.
    fn undo(&self, cx: &ActionContext) -> Result<Option<String>> {
        if self
            .params
            .owner
            .as_ref()
            .is_some_and(|o| *o != self.chapter)
        {
            return Ok(None);
        }
        let resolved = self.resolved(cx)?;
        let owner = self.owner(cx, &resolved);
        let (rt, daemon) = cx.engine()?;
        let removed = rt.block_on(converge::remove_owned(
            daemon,
            &resolved.stack,
            &owner,
            cx.purge,
        ))?;
        Ok((!removed.is_empty()).then(|| format!("removed {}", removed.join(", "))))
    }
}
