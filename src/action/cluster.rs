//! Chapter 09 as actions: a Phoenix project wired for libcluster, and the Erlang cluster whole.

use std::time::Duration;

use anyhow::{Context, Result};

use super::record::{self, ClusterRecord};
use super::{Action, ActionContext, Applied, Check};
use crate::config::{Config, Provider};
use crate::swarm::{self, cluster, job};

/// The app service's nodes as beamops.yaml names them.
fn topology(config: &Config, chapter: &str) -> cluster::Topology {
    let stack = config.app.stack_name();
    cluster::Topology {
        service: swarm::spec::scoped(stack, "app"),
        otp_app: config.app.otp_app.clone(),
        basename: config
            .chapters
            .distributed
            .node_basename
            .clone()
            .unwrap_or_else(|| config.app.otp_app.clone()),
        subnet: config.chapters.swarm.subnet(stack),
        ask: match config.chapters.distributed.ask {
            crate::config::AskNodes::Exec => cluster::Ask::Exec,
            crate::config::AskNodes::Job => cluster::Ask::Job,
        },
        chapter: chapter.to_string(),
    }
}

/// Every node of the app service sees all the others.
pub struct ClusterFormed {
    /// The key of the chapter whose manifest lists it: its probe jobs are labelled so.
    pub chapter: String,
}

impl ClusterFormed {
    fn timeout(cx: &ActionContext) -> Result<Duration> {
        let text = &cx.project.config.chapters.distributed.verify_timeout;
        humantime::parse_duration(text).with_context(|| {
            format!(
                "beamops.yaml: chapters.distributed.verify_timeout `{text}` is not a duration like 2m"
            )
        })
    }
}

impl Action for ClusterFormed {
    fn id(&self) -> String {
        "cluster-formed".into()
    }
    fn describe(&self) -> String {
        "every node of the app service connected to every other (asked through `bin/<app> rpc`)"
            .into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    /// The app service's tasks exist once the swarm and the stack do.
    fn needs(&self) -> &'static [&'static str] {
        &["swarm-mode", "stack-converged"]
    }
    /// Asks the running nodes through execs (read-only: `rpc` starts a hidden node that only
    /// lists its peers), so a deploy that replaced every task is no drift and a node cut off from
    /// the others is. Where only a probe job could ask (tasks on other swarm nodes, `ask: job`),
    /// the tasks running now are compared with the ones the last verification asked instead:
    /// a job would add a service, which belongs to apply. A leftover probe job of a killed run
    /// is work for apply too.
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let topology = topology(&cx.project.config, &self.chapter);
        let (rt, daemon) = match cx.engine() {
            Ok(engine) => engine,
            Err(e) => return Ok(Check::Blocked(format!("{e:#}"))),
        };
        let Some((replicas, members)) = rt.block_on(cluster::members(
            daemon,
            &topology.service,
            &topology.basename,
            topology.subnet,
        ))?
        else {
            return Ok(Check::Pending(format!(
                "verify the cluster once service {} exists (chapter 08)",
                topology.service
            )));
        };
        let stack = cx.project.config.app.stack_name();
        let leftovers = rt.block_on(job::leftovers(daemon, stack, Some(self.chapter.as_str())))?;
        if !leftovers.is_empty() {
            return Ok(Check::Pending(format!(
                "remove the leftover job(s) of killed runs ({}), then ask the nodes",
                leftovers
                    .iter()
                    .map(|(j, why)| format!("{}: {why}", j.service))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let ask_them = format!(
            "ask the {} running node(s) of {} (of {replicas}) which peers they see",
            members.len(),
            topology.service
        );
        if members.len() as u64 != replicas || members.is_empty() {
            return Ok(Check::Pending(ask_them));
        }
        if let Some(report) = rt.block_on(cluster::observe_by_exec(daemon, &topology))? {
            return Ok(if report.whole() {
                Check::Satisfied(format!(
                    "{} nodes of {} connected to each other (asked now)",
                    report.members.len(),
                    topology.service
                ))
            } else {
                Check::Pending(format!("{ask_them}: {}", report.problems().join("; ")))
            });
        }
        let mut running: Vec<String> = members.iter().map(|m| m.task.clone()).collect();
        running.sort();
        let verified: Vec<String> = match cx.recorded::<ClusterRecord>() {
            Ok(r) => r.map(|r| r.tasks).unwrap_or_default(),
            Err(e) => return Ok(Check::Pending(format!("{ask_them}: {e:#}"))),
        };
        Ok(if running == verified {
            Check::Satisfied(format!(
                "{} nodes of {} verified connected to each other; the same tasks run",
                running.len(),
                topology.service
            ))
        } else {
            Check::Pending(ask_them)
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let topology = topology(&cx.project.config, &self.chapter);
        let timeout = Self::timeout(cx)?;
        let (rt, daemon) = cx.engine()?;
        let stack = cx.project.config.app.stack_name();
        for removed in rt.block_on(job::sweep(daemon, stack, Some(self.chapter.as_str())))? {
            cx.ui.warning(removed.to_string());
        }
        let report = rt.block_on(cluster::wait_whole(daemon, &topology, cx.ui, timeout))?;
        let remote = report.members.iter().filter(|m| m.via_job).count();
        let mut summary = format!(
            "{} nodes connected, each sees the other {} (after {:.1}s)",
            report.members.len(),
            report.members.len().saturating_sub(1),
            report.seconds
        );
        if remote > 0 {
            summary.push_str(&format!("; {remote} asked through a probe job"));
        }
        Ok(Applied {
            summary,
            data: record::to_data(&ClusterRecord {
                service: report.service.clone(),
                tasks: report.task_ids(),
                nodes: cluster::by_node(&report),
                asked_through_job: Some(remote),
                seconds: report.seconds,
            }),
            inputs_digest: None,
        })
    }
    /// Apply asked every node and failed unless the cluster was whole.
    fn verify(&self, _cx: &ActionContext) -> Result<()> {
        Ok(())
    }
    /// The probe jobs chapter 09 made in this stack (a killed run's, or a live one's: the
    /// stack goes with `down` anyway).
    fn undo(&self, cx: &ActionContext) -> Result<Option<String>> {
        let (rt, daemon) = cx.engine()?;
        let stack = cx.project.config.app.stack_name();
        let removed = rt.block_on(job::remove_all(daemon, stack, Some(self.chapter.as_str())))?;
        Ok((!removed.is_empty()).then(|| format!("removed the job(s) {}", removed.join(", "))))
    }
}

/// A Phoenix project has libcluster and starts its supervisor; the example app polls DNS itself.
pub struct LibclusterWired;

impl LibclusterWired {
    fn missing(cx: &ActionContext) -> Option<Vec<String>> {
        let deps = crate::render::mix_deps(&cx.project.root);
        if !deps.iter().any(|d| d == "phoenix") {
            return None;
        }
        let module = crate::render::elixir_module(&cx.project.config.app.otp_app);
        let mut missing = Vec::new();
        if !deps.iter().any(|d| d == "libcluster") {
            missing.push("add {:libcluster, \"~> 3.4\"} to deps in mix.exs".to_string());
        }
        let mut starts_supervisor = false;
        crate::worktree::backup::walk_files(&cx.project.root.join("lib"), &mut |path| {
            starts_supervisor = starts_supervisor
                || (path.extension().is_some_and(|e| e == "ex")
                    && std::fs::read_to_string(path)
                        .is_ok_and(|text| text.contains("Cluster.Supervisor")));
        });
        if !starts_supervisor {
            missing.push(format!(
                "add {{Cluster.Supervisor, [Application.get_env(:libcluster, :topologies, []), [name: {module}.ClusterSupervisor]]}} to the children in lib/{}/application.ex",
                cx.project.config.app.otp_app
            ));
        }
        Some(missing)
    }
}

impl Action for LibclusterWired {
    fn id(&self) -> String {
        "libcluster-wired".into()
    }
    fn describe(&self) -> String {
        "a Phoenix project depends on libcluster and starts Cluster.Supervisor".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        Ok(match Self::missing(cx) {
            None => Check::Satisfied(
                "not a Phoenix project: the app finds its peers itself through CLUSTER_DNS_QUERY"
                    .into(),
            ),
            Some(missing) if missing.is_empty() => Check::Satisfied(
                "libcluster DNSPoll configured in config/runtime.exs and started".into(),
            ),
            Some(missing) => Check::Failed(missing.join("; ")),
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        match Self::missing(cx) {
            Some(missing) if !missing.is_empty() => anyhow::bail!(
                "libcluster is not wired into the project (beamops does not edit mix.exs or application.ex):\n  fix: {}",
                missing.join("\n  fix: ")
            ),
            _ => Ok(Applied {
                summary: "nothing to wire".into(),
                ..Default::default()
            }),
        }
    }
}
