//! Chapter 09 against the real Docker Engine: the example app, 3 replicas on the single-node
//! swarm, forms one Erlang cluster; a killed task is replaced and the cluster heals.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1 (it builds the example's release image and runs a stack).
//! What the nodes see is asked here with the docker CLI (`docker exec … rpc`), not through
//! beamops, so the test does not grade beamops with its own code.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{TestProject, docker, docker_tests_enabled, example_copy, json};

struct Stack {
    project: TestProject,
    name: String,
    keys: tempfile::TempDir,
}

impl Stack {
    fn beamops(&self) -> assert_cmd::Command {
        let mut cmd = self.project.beamops();
        cmd.env("BEAMOPS_AGE_KEY_FILE", self.keys.path().join("age.key"));
        cmd
    }

    fn service(&self) -> String {
        format!("{}_app", self.name)
    }

    /// Container id → node name (`coordination@<address on the app network>`) of the tasks
    /// Swarm wants running (not the ones still draining after an update).
    fn nodes(&self) -> Vec<(String, String)> {
        let tasks = docker(&[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &self.service(),
        ]);
        let network = format!("{}_backend", self.name);
        String::from_utf8_lossy(&tasks.stdout)
            .lines()
            .filter_map(|task| {
                let out = docker(&[
                    "inspect",
                    "--format",
                    "{{.Status.State}} {{.Status.ContainerStatus.ContainerID}}",
                    task,
                ]);
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let container = text.strip_prefix("running ")?.to_string();
                let template =
                    format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
                let ip = docker(&["inspect", "--format", &template, &container]);
                let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
                Some((container, format!("coordination@{ip}")))
            })
            .collect()
    }

    /// Every running node connected to every other running node, as the nodes themselves say.
    fn whole(&self, replicas: usize) -> Result<(), String> {
        let nodes = self.nodes();
        if nodes.len() != replicas {
            return Err(format!("{} of {replicas} containers running", nodes.len()));
        }
        for (container, name) in &nodes {
            let out = docker(&[
                "exec",
                container,
                "/app/bin/coordination",
                "rpc",
                r#"IO.puts(Enum.join(Node.list(), " "))"#,
            ]);
            if !out.status.success() {
                return Err(format!(
                    "{name}: rpc failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let seen: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for (_, peer) in nodes.iter().filter(|(_, n)| n != name) {
                if !seen.contains(peer) {
                    return Err(format!("{name} does not see {peer} (sees {seen:?})"));
                }
            }
        }
        Ok(())
    }

    fn service_version(&self) -> String {
        let out = docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &self.service(),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.beamops().args(["down", "08", "-q"]).output();
        // down keeps chapter 07's secrets and every image: remove this test's own.
        let secrets = docker(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("name={}_", self.name),
        ]);
        for id in String::from_utf8_lossy(&secrets.stdout).lines() {
            let _ = docker(&["secret", "rm", id]);
        }
        let images = docker(&["images", "-q", &self.name]);
        for id in String::from_utf8_lossy(&images.stdout).lines() {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}x{:x}", std::process::id(), nanos % 0xfffff)
}

fn three_replica_stack() -> Stack {
    let name = unique("bo9c");
    let project = example_copy(&name);
    let yaml = project.read("beamops.yaml");
    let yaml = yaml.replace(
        "  local:\n    provider: local\n    replicas: 1\n",
        "  local:\n    provider: local\n    replicas: 3\n",
    );
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    // No IPVS in this kernel (docs/swarm.md): task addresses through DNS, not a virtual IP.
    project.write(
        "beamops.yaml",
        &format!("{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n"),
    );
    project.commit_all("three replicas");
    let stack = Stack {
        project,
        name,
        keys: tempfile::tempdir().unwrap(),
    };
    stack.beamops().args(["secrets", "init"]).assert().success();
    stack
}

fn cluster_action(report: &serde_json::Value) -> serde_json::Value {
    report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chapter"] == "09-distributed")
        .and_then(|c| {
            c["actions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == "cluster-formed")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no cluster-formed action in {report:#}"))
}

#[test]
fn three_replicas_form_one_cluster_and_heal_after_a_task_is_killed() {
    if !docker_tests_enabled("three_replicas_form_one_cluster_and_heal_after_a_task_is_killed") {
        return;
    }
    let stack = three_replica_stack();

    let started = Instant::now();
    let out = stack
        .beamops()
        .args(["up", "09", "--format", "json"])
        .output()
        .unwrap();
    // Chapter 09 needs 03 (the image), 07 (the cookie) and 08 (the stack): all applied first.
    assert!(
        out.status.success(),
        "up 09: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "build, secrets, stack and cluster: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let report = json(&out.stdout);
    let ran: Vec<&str> = report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["chapter"].as_str())
        .collect();
    for needed in ["03-docker", "07-secrets", "08-swarm"] {
        assert!(
            ran.contains(&needed),
            "{needed} was not applied first: {ran:?}"
        );
    }
    let action = cluster_action(&report);
    assert_eq!(action["status"], "applied", "{action:#}");

    // The nodes agree with beamops: each one sees the other two, named by overlay address.
    stack
        .whole(3)
        .expect("the cluster beamops verified is whole");
    let names: Vec<String> = stack.nodes().into_iter().map(|(_, n)| n).collect();
    let subnet_prefix = {
        let stack_file = stack.project.read("deploy/stack.yml");
        let subnet = stack_file
            .lines()
            .find_map(|l| l.trim().strip_prefix("CLUSTER_SUBNET: "))
            .expect("the stack passes CLUSTER_SUBNET")
            .to_string();
        subnet.trim_end_matches(".0/24").to_string()
    };
    for name in &names {
        assert!(
            name.starts_with(&format!("coordination@{subnet_prefix}.")),
            "{name} is not named after its app-network address ({subnet_prefix}.x)"
        );
    }

    // `beamops console` reaches a running release; piped code is evaluated there, and the node
    // lives on (the task set is the same below).
    let console = stack
        .beamops()
        .args(["console", "local"])
        .write_stdin("IO.puts(\"peers=#{length(Node.list())}\")\n")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&console.stdout);
    assert!(
        said.contains("peers=2"),
        "console: {said}{}",
        String::from_utf8_lossy(&console.stderr)
    );

    // Nothing changed: a second run verifies nothing anew and updates no service.
    let version = stack.service_version();
    let again = stack
        .beamops()
        .args(["up", "09", "--format", "json"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let again_action = cluster_action(&json(&again.stdout));
    assert_eq!(again_action["status"], "satisfied", "{again_action:#}");
    assert_eq!(
        stack.service_version(),
        version,
        "a no-op run updated the service"
    );

    // Kill one task's container: Swarm replaces it and the DNS poller reconnects everyone.
    let (victim, victim_name) = stack.nodes().remove(0);
    let killed = Instant::now();
    assert!(docker(&["kill", &victim]).status.success());
    let deadline = killed + Duration::from_secs(180);
    loop {
        let nodes = stack.nodes();
        let replaced = nodes.len() == 3 && nodes.iter().all(|(id, _)| *id != victim);
        let last = if replaced {
            match stack.whole(3) {
                Ok(()) => break,
                Err(why) => why,
            }
        } else {
            format!("{} containers running, victim replaced: no", nodes.len())
        };
        assert!(
            Instant::now() < deadline,
            "the cluster did not heal within 180 s of killing {victim_name}: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "killed {victim_name}: replaced and the cluster whole again after {:.1}s",
        killed.elapsed().as_secs_f64()
    );

    // beamops sees a new set of tasks and verifies the healed cluster itself, this time without
    // any exec: a probe job on the app network asks every node (what a manager that runs no
    // app task does for all of them).
    let healed = stack
        .beamops()
        .env("BEAMOPS_CHAPTERS__DISTRIBUTED__ASK", "job")
        .args(["up", "09", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        healed.status.success(),
        "{}",
        String::from_utf8_lossy(&healed.stderr)
    );
    let action = cluster_action(&json(&healed.stdout));
    assert_eq!(action["status"], "applied", "{action:#}");
    assert!(
        action["detail"]
            .as_str()
            .unwrap()
            .contains("3 asked through a probe job"),
        "{action:#}"
    );
    // The probe job is gone again.
    let services = docker(&["service", "ls", "--format", "{{.Name}}"]);
    assert!(
        !String::from_utf8_lossy(&services.stdout).contains("cluster-probe"),
        "the probe job was left behind"
    );
}

#[test]
fn a_missing_peer_is_named_and_the_run_fails() {
    if !docker_tests_enabled("a_missing_peer_is_named_and_the_run_fails") {
        return;
    }
    let stack = three_replica_stack();
    let yaml = stack.project.read("beamops.yaml");
    stack.project.write(
        "beamops.yaml",
        &format!("{yaml}  distributed:\n    verify_timeout: 15s\n"),
    );
    stack.project.commit_all("short verification");
    let out = stack
        .beamops()
        .args(["up", "03", "07", "08"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cut one node off: a different cookie in its environment, so no peer can connect to it.
    let (victim, victim_name) = stack.nodes().remove(0);
    let out = docker(&[
        "exec",
        &victim,
        "/app/bin/coordination",
        "rpc",
        r#":erlang.set_cookie(node(), :wrong_cookie); Enum.each(Node.list(), &Node.disconnect/1)"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stack.beamops().args(["up", "09"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not whole"), "{stderr}");
    assert!(stderr.contains(&victim_name), "{stderr}");
}
