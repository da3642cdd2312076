//! Chapter 09: is the Erlang cluster whole? Each running task of the app service is asked which
//! nodes it is connected to (`bin/<app> rpc`): by an exec when beamops' Engine runs the task,
//! else through a one-off probe job on the app network. Every node must see every other one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::InspectServiceOptions;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::config::Ipv4Net;
use crate::docker::Daemon;
use crate::output::Ui;

/// One running task of the app service as the cluster check sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    pub task: String,
    pub slot: u64,
    /// `<basename>@<address on the app network>`: the name rel/env.sh.eex gives the node.
    pub node_name: String,
    pub swarm_node: String,
    #[serde(skip)]
    pub container: Option<String>,
}

/// What each member reported.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    #[serde(flatten)]
    pub member: Member,
    /// The nodes it is connected to; none when it could not be asked.
    pub connected: Option<Vec<String>>,
    /// Peers it should see and does not.
    pub missing: Vec<String>,
    /// Why it could not be asked (on another swarm node, exec failed…).
    pub unverified: Option<String>,
    /// On another swarm node than the Engine beamops talks to.
    pub remote: bool,
    /// Asked through the probe job rather than an exec into its container.
    pub via_job: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub service: String,
    pub replicas: u64,
    pub members: Vec<MemberView>,
    pub seconds: f64,
}

impl ClusterReport {
    /// Every replica runs and every node, asked, sees all its peers.
    pub fn whole(&self) -> bool {
        self.members.len() as u64 == self.replicas
            && self
                .members
                .iter()
                .all(|m| m.connected.is_some() && m.missing.is_empty())
    }

    /// The members that do not see all their peers, for an error or a report.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if (self.members.len() as u64) < self.replicas {
            out.push(format!(
                "{} of {} replicas running",
                self.members.len(),
                self.replicas
            ));
        }
        for m in &self.members {
            let who = format!(
                "{}.{} ({})",
                self.service, m.member.slot, m.member.node_name
            );
            if let Some(why) = &m.unverified {
                out.push(format!("{who}: could not be asked: {why}"));
            } else if !m.missing.is_empty() {
                out.push(format!("{who} does not see {}", m.missing.join(", ")));
            }
        }
        out
    }

    /// Task ids, sorted: a check compares them with what the last verification saw.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.members.iter().map(|m| m.member.task.clone()).collect();
        ids.sort();
        ids
    }
}

/// The running tasks of `service` with the node name each one has on `subnet`, and the replicas
/// it should have; none when the service does not exist.
pub async fn members(
    daemon: &Daemon,
    service: &str,
    basename: &str,
    subnet: Ipv4Net,
) -> Result<Option<(u64, Vec<Member>)>> {
    let inspected = match daemon
        .client
        .inspect_service(service, None::<InspectServiceOptions>)
        .await
    {
        Ok(found) => found,
        Err(e) if crate::docker::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("inspecting service {service}")),
    };
    let service_id = inspected.id.clone().unwrap_or_default();
    let replicas = inspected
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1) as u64;
    // Raw JSON: bollard's Task model has no NetworksAttachments, which hold the addresses.
    let filters = serde_json::json!({
        "service": {service: true},
        "desired-state": {"running": true},
    });
    let path = format!(
        "/v{}/tasks?filters={}",
        daemon.api_version,
        percent_encode(&filters.to_string())
    );
    let what = format!("listing tasks of {service}");
    let tasks: Vec<Value> = crate::docker::get_json(daemon, &path, &what)
        .await?
        .and_then(|answer| serde_json::from_value(answer).ok())
        .with_context(|| format!("{what}: no list of tasks in the answer"))?;
    let mut members: Vec<Member> = tasks
        .iter()
        // The service filter also matches services whose name starts with this one.
        .filter(|t| t["ServiceID"].as_str() == Some(service_id.as_str()))
        .filter(|t| t["Status"]["State"].as_str() == Some("running"))
        .filter_map(|t| member(t, basename, subnet))
        .collect();
    members.sort_by_key(|m| m.slot);
    Ok(Some((replicas, members)))
}

fn member(task: &Value, basename: &str, subnet: Ipv4Net) -> Option<Member> {
    let address = task["NetworksAttachments"]
        .as_array()?
        .iter()
        .flat_map(|a| a["Addresses"].as_array().into_iter().flatten())
        .filter_map(|cidr| cidr.as_str()?.split('/').next()?.parse::<Ipv4Addr>().ok())
        .find(|ip| subnet.contains(*ip))?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    Some(Member {
        task: text(&task["ID"]).unwrap_or_default(),
        slot: task["Slot"].as_u64().unwrap_or_default(),
        node_name: format!("{basename}@{address}"),
        swarm_node: text(&task["NodeID"]).unwrap_or_default(),
        container: text(&task["Status"]["ContainerStatus"]["ContainerID"]),
    })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Runs `command` in `container` and returns its standard output, failing on a non-zero exit.
pub async fn exec_output(daemon: &Daemon, container: &str, command: Vec<String>) -> Result<String> {
    let exec = daemon
        .client
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(command.clone()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("exec in container {container}"))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        daemon.client.start_exec(&exec.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.push_str(&String::from_utf8_lossy(&message))
                }
                bollard::container::LogOutput::StdErr { message } => {
                    stderr.push_str(&String::from_utf8_lossy(&message))
                }
                _ => {}
            }
        }
    }
    let code = daemon
        .client
        .inspect_exec(&exec.id)
        .await?
        .exit_code
        .unwrap_or(-1);
    if code != 0 {
        bail!(
            "`{}` exited with {code}: {}",
            command.join(" "),
            last_lines(&format!("{stdout}{stderr}"), 3)
        );
    }
    Ok(stdout)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Asks the node in `container` for its connected nodes.
async fn connected(daemon: &Daemon, container: &str, otp_app: &str) -> Result<Vec<String>> {
    // `rpc` starts a hidden node, so it is not in the list it prints.
    let command = vec![
        format!("/app/bin/{otp_app}"),
        "rpc".into(),
        r#"IO.puts(Enum.join(Enum.map(Node.list(), &Atom.to_string/1), " "))"#.into(),
    ];
    let out = exec_output(daemon, container, command).await?;
    Ok(out.split_whitespace().map(str::to_string).collect())
}

/// Which service's nodes, how they are named, and how to ask them.
#[derive(Debug, Clone)]
pub struct Topology {
    pub service: String,
    pub otp_app: String,
    /// The part of node names before `@`.
    pub basename: String,
    /// The app network's subnet: each node is named after its address there.
    pub subnet: Ipv4Net,
    pub ask: Ask,
    /// The chapter asking (its key): its probe jobs carry it, so its `down` removes them.
    pub chapter: String,
}

/// How the nodes are asked which peers they see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// An exec into each task this Engine runs; a probe job for the tasks on other nodes.
    Exec,
    /// A probe job for every node: no exec at all (and the same path a manager that runs no
    /// app task takes).
    Job,
}

/// Prefix of each answer line the probe job prints: `beamops-probe <node> ok|failed <text>`.
const PROBE_PREFIX: &str = "beamops-probe";

/// Asks `nodes` through a one-off Swarm job in the app service's image, environment, secrets
/// and networks: `bin/<app> rpc` with RELEASE_NODE set to each node in turn reaches it over
/// the app network from wherever the job runs, with the cookie from the same Docker secret.
async fn ask_through_job(
    daemon: &Daemon,
    ui: &Ui,
    chapter: &str,
    service: &str,
    otp_app: &str,
    nodes: &[String],
) -> Result<BTreeMap<String, Result<Vec<String>, String>>> {
    let app = daemon
        .client
        .inspect_service(service, None::<InspectServiceOptions>)
        .await
        .with_context(|| format!("inspecting service {service}"))?
        .spec
        .with_context(|| format!("service {service} has no spec"))?;
    let script = format!(
        r#"for n in $CLUSTER_PROBE_NODES; do
  if out=$(RELEASE_DISTRIBUTION=name RELEASE_NODE="$n" /app/bin/{otp_app} rpc 'IO.puts(Enum.join(Node.list(), " "))' 2>&1); then
    echo "{PROBE_PREFIX} $n ok $(printf %s "$out" | tr '
' ' ')"
  else
    echo "{PROBE_PREFIX} $n failed $(printf %s "$out" | tr '
' ' ')"
  fi
done"#
    );
    // Per run: two runs of chapter 09 must not remove each other's probe.
    let name = format!("{service}-cluster-probe-{}", std::process::id());
    let mut job = crate::swarm::job::spec(
        &app,
        &name,
        &script,
        crate::swarm::job::CLUSTER_PROBE,
        chapter,
        ("beamops.cluster-probe", service),
    );
    if let Some(container) = job
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        let mut env = container.env.take().unwrap_or_default();
        env.push(format!("CLUSTER_PROBE_NODES={}", nodes.join(" ")));
        container.env = Some(env);
    }
    let output = crate::swarm::job::run(
        daemon,
        job,
        ui,
        Duration::from_secs(60 + 10 * nodes.len() as u64),
        nodes.len() * 4 + 20,
    )
    .await
    .with_context(|| {
        format!(
            "asking {} node(s) through the probe job {name}",
            nodes.len()
        )
    })?;
    let mut answers = BTreeMap::new();
    for line in output.lines() {
        let mut parts = line.trim().splitn(4, ' ');
        if parts.next() != Some(PROBE_PREFIX) {
            continue;
        }
        let (Some(node), Some(verdict)) = (parts.next(), parts.next()) else {
            continue;
        };
        let text = parts.next().unwrap_or_default().trim();
        answers.insert(
            node.to_string(),
            if verdict == "ok" {
                Ok(text.split_whitespace().map(str::to_string).collect())
            } else {
                Err(format!(
                    "rpc from the probe job failed: {}",
                    last_lines(text, 3)
                ))
            },
        );
    }
    Ok(answers)
}

/// One round: every member asked once, through execs and a probe job.
pub async fn observe(daemon: &Daemon, ui: &Ui, topology: &Topology) -> Result<ClusterReport> {
    observe_with(daemon, Some(ui), topology)
        .await?
        .context("the cluster was observed without its probe job")
}

/// One round asked through execs only, as `plan` and `status` may: a probe job would add a
/// service to the swarm. `None` when some member can only be asked through the job (on another
/// swarm node, or `ask: job`).
pub async fn observe_by_exec(
    daemon: &Daemon,
    topology: &Topology,
) -> Result<Option<ClusterReport>> {
    observe_with(daemon, None, topology).await
}

/// `ui` is the permission to run the probe job; without it, `None` when the job is needed.
async fn observe_with(
    daemon: &Daemon,
    ui: Option<&Ui>,
    topology: &Topology,
) -> Result<Option<ClusterReport>> {
    let Topology {
        service,
        otp_app,
        ask,
        ..
    } = topology;
    let (service, otp_app, ask) = (service.as_str(), otp_app.as_str(), *ask);
    let started = Instant::now();
    let (replicas, members) = members(daemon, service, &topology.basename, topology.subnet)
        .await?
        .with_context(|| {
            format!("service {service} does not exist\n  fix: beamops up chapter-08")
        })?;
    let local_node = match crate::swarm::mode(daemon).await? {
        crate::swarm::SwarmMode::Manager { node_id } => node_id,
        _ => String::new(),
    };
    let exec_here =
        |m: &Member| ask == Ask::Exec && m.swarm_node == local_node && m.container.is_some();
    let through_job: Vec<String> = members
        .iter()
        .filter(|m| !exec_here(m))
        .map(|m| m.node_name.clone())
        .collect();
    let job_answers = match (through_job.is_empty(), ui) {
        (true, _) => BTreeMap::new(),
        (false, None) => return Ok(None),
        (false, Some(ui)) => {
            match ask_through_job(
                daemon,
                ui,
                &topology.chapter,
                service,
                otp_app,
                &through_job,
            )
            .await
            {
                Ok(answers) => answers,
                Err(e) => through_job
                    .iter()
                    .map(|n| (n.clone(), Err(format!("{e:#}"))))
                    .collect(),
            }
        }
    };
    // The execs at once: each `rpc` boots a VM of its own, which takes about a second.
    let exec_answers = futures_util::future::join_all(members.iter().filter(|m| exec_here(m)).map(
        |m| async move {
            let container = m.container.as_deref().unwrap_or_default();
            (
                m.node_name.clone(),
                connected(daemon, container, otp_app)
                    .await
                    .map_err(|e| format!("{e:#}")),
            )
        },
    ))
    .await;
    let mut answers: BTreeMap<String, Result<Vec<String>, String>> =
        exec_answers.into_iter().collect();
    answers.extend(job_answers);
    let names: BTreeSet<String> = members.iter().map(|m| m.node_name.clone()).collect();
    let mut views = Vec::new();
    for member in members {
        let expected: BTreeSet<&String> =
            names.iter().filter(|n| **n != member.node_name).collect();
        let remote = member.swarm_node != local_node;
        let via_job = !exec_here(&member);
        let answer = answers.get(&member.node_name).cloned().unwrap_or_else(|| {
            Err(if via_job {
                "the probe job printed no answer for it".into()
            } else {
                "the exec gave no answer".into()
            })
        });
        let (connected, unverified) = match answer {
            Ok(nodes) => (Some(nodes), None),
            Err(why) => (None, Some(why)),
        };
        let missing = match &connected {
            Some(seen) => expected
                .into_iter()
                .filter(|n| !seen.contains(n))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        views.push(MemberView {
            member,
            connected,
            missing,
            unverified,
            remote,
            via_job,
        });
    }
    Ok(Some(ClusterReport {
        service: service.to_string(),
        replicas,
        members: views,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// Observes until the cluster is whole or `timeout` passes; the DNS poll takes a few seconds
/// to connect a node that just started.
pub async fn wait_whole(
    daemon: &Daemon,
    topology: &Topology,
    ui: &Ui,
    timeout: Duration,
) -> Result<ClusterReport> {
    let service = topology.service.as_str();
    let started = Instant::now();
    let bar = ui.spinner("waiting for every node to see its peers");
    loop {
        let mut report = observe(daemon, ui, topology).await?;
        report.seconds = started.elapsed().as_secs_f64();
        if report.whole() {
            bar.finish_and_clear();
            return Ok(report);
        }
        if started.elapsed() >= timeout {
            bar.finish_and_clear();
            bail!(
                "the Erlang cluster of {service} is not whole after {}:\n  {}\n  fix: `beamops logs` or `docker service logs {service}` show the DNS poller; check RELEASE_COOKIE is the same secret everywhere and rel/env.sh.eex is in the image (beamops up chapter-09 rebuilds it)",
                humantime::format_duration(timeout),
                report.problems().join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Member views keyed by node name, for reports that list who sees whom.
pub fn by_node(report: &ClusterReport) -> BTreeMap<String, Vec<String>> {
    report
        .members
        .iter()
        .map(|m| {
            (
                m.member.node_name.clone(),
                m.connected.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(slot: u64, ip: &str, connected: Option<&[&str]>, remote: bool) -> MemberView {
        MemberView {
            member: Member {
                task: format!("t{slot}"),
                slot,
                node_name: format!("app@{ip}"),
                swarm_node: if remote {
                    "other".into()
                } else {
                    "here".into()
                },
                container: None,
            },
            connected: connected.map(|c| c.iter().map(|s| s.to_string()).collect()),
            missing: Vec::new(),
            unverified: connected
                .is_none()
                .then(|| "the probe job failed".to_string()),
            remote,
            via_job: remote,
        }
    }

    fn report(members: Vec<MemberView>) -> ClusterReport {
        ClusterReport {
            service: "s_app".into(),
            replicas: members.len() as u64,
            members,
            seconds: 0.0,
        }
    }

    #[test]
    fn every_member_must_answer_and_see_all_its_peers() {
        let whole = report(vec![
            view(1, "10.0.0.2", Some(&["app@10.0.0.3"]), false),
            view(2, "10.0.0.3", Some(&["app@10.0.0.2"]), true),
        ]);
        assert!(whole.whole());
        assert!(whole.problems().is_empty(), "{:?}", whole.problems());
        let unanswered = report(vec![
            view(1, "10.0.0.2", Some(&["app@10.0.0.3"]), false),
            view(2, "10.0.0.3", None, true),
        ]);
        assert!(!unanswered.whole());
        let problems = unanswered.problems().join("\n");
        assert!(problems.contains("app@10.0.0.3"), "{problems}");
        assert!(problems.contains("probe job failed"), "{problems}");
    }
}
