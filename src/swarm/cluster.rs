//! Chapter 09: is the Erlang cluster whole? Each running task of the app service is asked, by
//! an exec of `bin/<app> rpc` through the Engine that runs it, which nodes it is connected to;
//! every node must see every other one.

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
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub service: String,
    pub replicas: u64,
    pub members: Vec<MemberView>,
    pub seconds: f64,
}

impl ClusterReport {
    /// Every replica runs, every member asked sees all its peers, and at least one was asked.
    /// Distribution connections are two-way, so a member on another swarm node that every local
    /// member sees is connected to them too; only its links to other remote members go unasked.
    pub fn whole(&self) -> bool {
        self.members.len() as u64 == self.replicas
            && self.members.iter().any(|m| m.connected.is_some())
            && self
                .members
                .iter()
                .all(|m| m.missing.is_empty() && (m.connected.is_some() || m.remote))
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
        if !self.members.is_empty() && self.members.iter().all(|m| m.remote) {
            out.push(format!(
                "none of the {} running tasks is on the swarm node whose Engine beamops talks to, so none could be asked\n  fix: point the environment's docker_host at a manager that runs a task of {}",
                self.members.len(),
                self.service
            ));
        }
        for m in &self.members {
            let who = format!(
                "{}.{} ({})",
                self.service, m.member.slot, m.member.node_name
            );
            if let Some(why) = &m.unverified
                && !m.remote
            {
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
    let (status, body) = crate::docker::raw_get(daemon, &path)
        .await
        .with_context(|| format!("listing tasks of {service} on {}", daemon.host))?;
    if status != 200 {
        bail!(
            "listing tasks of {service}: the Engine answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let tasks: Vec<Value> = serde_json::from_slice(&body)
        .with_context(|| format!("listing tasks of {service}: the answer is not JSON"))?;
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

/// One round: every member asked once.
pub async fn observe(
    daemon: &Daemon,
    service: &str,
    otp_app: &str,
    basename: &str,
    subnet: Ipv4Net,
) -> Result<ClusterReport> {
    let started = Instant::now();
    let (replicas, members) = members(daemon, service, basename, subnet)
        .await?
        .with_context(|| {
            format!("service {service} does not exist\n  fix: beamops up chapter-08")
        })?;
    let local_node = match crate::swarm::mode(daemon).await? {
        crate::swarm::SwarmMode::Manager { node_id } => node_id,
        _ => String::new(),
    };
    let names: BTreeSet<String> = members.iter().map(|m| m.node_name.clone()).collect();
    let mut views = Vec::new();
    for member in members {
        let expected: BTreeSet<&String> =
            names.iter().filter(|n| **n != member.node_name).collect();
        let remote = member.swarm_node != local_node;
        let (connected, unverified) = match (&member.container, !remote) {
            (Some(container), true) => match connected(daemon, container, otp_app).await {
                Ok(nodes) => (Some(nodes), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
            _ => (
                None,
                Some(format!(
                    "it runs on swarm node {}, and beamops execs only through the Engine it is connected to",
                    member.swarm_node
                )),
            ),
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
        });
    }
    Ok(ClusterReport {
        service: service.to_string(),
        replicas,
        members: views,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Observes until the cluster is whole or `timeout` passes; the DNS poll takes a few seconds
/// to connect a node that just started.
pub async fn wait_whole(
    daemon: &Daemon,
    service: &str,
    otp_app: &str,
    basename: &str,
    subnet: Ipv4Net,
    ui: &Ui,
    timeout: Duration,
) -> Result<ClusterReport> {
    let started = Instant::now();
    let bar = ui.spinner("waiting for every node to see its peers");
    loop {
        let mut report = observe(daemon, service, otp_app, basename, subnet).await?;
        report.seconds = started.elapsed().as_secs_f64();
        if report.whole() {
            bar.finish_and_clear();
            return Ok(report);
        }
        // Waiting cannot help when every replica runs and none of them can be asked.
        let unaskable = report.members.len() as u64 == report.replicas
            && report.members.iter().all(|m| m.remote);
        if unaskable || started.elapsed() >= timeout {
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
            unverified: remote.then(|| "on another node".to_string()),
            remote,
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
    fn a_remote_member_every_local_member_sees_counts_as_connected() {
        let r = report(vec![
            view(1, "10.0.0.2", Some(&["app@10.0.0.3"]), false),
            view(2, "10.0.0.3", None, true),
        ]);
        assert!(r.whole());
        assert!(r.problems().is_empty(), "{:?}", r.problems());
    }

    #[test]
    fn with_no_member_to_ask_the_cluster_is_not_whole_and_says_why() {
        let r = report(vec![
            view(1, "10.0.0.2", None, true),
            view(2, "10.0.0.3", None, true),
        ]);
        assert!(!r.whole());
        let problems = r.problems().join("\n");
        assert!(problems.contains("none could be asked"), "{problems}");
        assert!(problems.contains("docker_host"), "{problems}");
    }
}
