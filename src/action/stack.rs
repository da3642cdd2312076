//! Chapter 08's stack as an action: the rendered stack file, converged through the Engine API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use super::record::{self, StackRecord};
use super::{Action, ActionContext, Applied, Check};
use crate::config::Provider;
use crate::docker::Daemon;
use crate::swarm::{self, SwarmMode, converge, stack::StackFile};

pub struct StackConverged;

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
}

impl StackConverged {
    fn target<'a>(&self, cx: &'a ActionContext) -> Result<Target<'a>> {
        let text = cx.file(swarm::STACK_FILE).with_context(|| {
            format!(
                "{} is missing\n  fix: beamops up chapter-08 renders it",
                swarm::STACK_FILE
            )
        })?;
        let (rt, daemon) = cx.engine()?;
        let stack = cx.project.config.app.stack_name().to_string();
        // Which release: the deploy target, an exported variable, the live service, the
        // record, the file's default (`crate::rollout`, the one place that decides it).
        let (live, _) = rt.block_on(swarm::live_releases(daemon, &stack))?;
        let sources = crate::rollout::sources(cx.project, cx.env_name, cx.stack_variables, live)?;
        let file = swarm::parse_stack(
            cx.project,
            cx.env_name,
            &text,
            &crate::rollout::variables(&sources),
        )?;
        Ok(Target {
            rt,
            daemon,
            stack,
            file,
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
                "stack {}: {} service(s) as specified, every task running healthy",
                target.stack,
                target.file.services.len()
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
        format!(
            "{} applied through the Engine API, every task running healthy",
            swarm::STACK_FILE
        )
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
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
        let target = self.target(cx)?;
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
                converge_seconds: done.wait_seconds,
                images: done.images,
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
    fn undo(&self, cx: &ActionContext) -> Result<Option<String>> {
        let (rt, daemon) = cx.engine()?;
        let stack = cx.project.config.app.stack_name();
        let removed = rt.block_on(converge::remove(&daemon, stack, cx.purge))?;
        Ok((!removed.is_empty()).then(|| format!("removed {}", removed.join(", "))))
    }
}
