//! The example app on a 3-node swarm of Docker-in-Docker nodes (issue 6, multi-node): deployed
//! by `beamops up chapter-08` through a node's tcp:// Engine API, clustered across nodes, and
//! still answering while one node is killed and its task rescheduled.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1 and BEAMOPS_MULTINODE_TESTS=1: it builds the release image
//! and starts three dockerd containers on the shared outer Engine.

// The tiny images of the aws placement test only.
#[allow(dead_code)]
#[path = "common/busybox.rs"]
mod busybox;
mod common;
#[path = "common/dind.rs"]
mod dind;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{docker, example_copy, http_get_at};
use dind::{Lab, Node};
use serde_json::Value;

/// Host-mode published port of the app on every node that runs a task.
const PUBLISHED: u16 = 8080;

fn multinode_tests_enabled(test: &str) -> bool {
    common::multinode_tests_enabled(test, "the 3-node Docker-in-Docker swarm")
}

/// Removes the release image the test built on the outer Engine.
struct ReleaseImage(String);

impl Drop for ReleaseImage {
    fn drop(&mut self) {
        let out = docker(&["images", "-q", &self.0]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

/// The status of chapter 08's `stack-converged` action in an `up` report.
fn converged(report: &Value) -> String {
    report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actions"].as_array().unwrap())
        .find(|a| a["id"] == "stack-converged")
        .and_then(|a| a["status"].as_str())
        .unwrap_or_else(|| panic!("no stack-converged in {report}"))
        .to_string()
}

/// Nodes (by hostname) of the service's tasks that should run, with their current state.
fn tasks(manager: &Node, service: &str) -> Vec<(String, String)> {
    let out = manager.docker(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}\t{{.CurrentState}}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(node, state)| (node.to_string(), state.to_string()))
        .collect()
}

/// The app's /health on a node's published port: (Erlang node name, the peers it sees).
fn health(node: &Node) -> Option<(String, BTreeSet<String>)> {
    let (200, body) = http_get_at(&node.ip, PUBLISHED, "/health")? else {
        return None;
    };
    let v: Value = serde_json::from_str(&body).ok()?;
    let peers = v["cluster"]
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    Some((v["node"].as_str()?.to_string(), peers))
}

/// Every task runs, none on `gone`, and each task's Erlang node sees exactly the other tasks'.
fn settled<'a>(lab: &'a Lab, manager: &Node, service: &str, gone: &str) -> Option<Vec<&'a Node>> {
    let tasks = tasks(manager, service);
    if tasks.len() != 2
        || tasks
            .iter()
            .any(|(n, state)| n == gone || !state.starts_with("Running"))
    {
        return None;
    }
    let nodes: Vec<&Node> = tasks
        .iter()
        .map(|(n, _)| lab.node_by_hostname(n))
        .collect::<Option<_>>()?;
    let seen: Vec<(String, BTreeSet<String>)> =
        nodes.iter().map(|n| health(n)).collect::<Option<_>>()?;
    let names: BTreeSet<String> = seen.iter().map(|(name, _)| name.clone()).collect();
    let healed = seen.iter().all(|(name, peers)| {
        let mut others = names.clone();
        others.remove(name);
        *peers == others
    });
    healed.then_some(nodes)
}

fn wait_for<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> (T, f64) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return (v, started.elapsed().as_secs_f64());
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_lost_node_is_replaced_and_the_cluster_heals_while_requests_keep_succeeding() {
    let test = "a_lost_node_is_replaced_and_the_cluster_heals_while_requests_keep_succeeding";
    if !multinode_tests_enabled(test) {
        return;
    }
    let all = Instant::now();
    let app = format!("bomn{}", std::process::id());
    let service = format!("{app}_app");
    let p = example_copy(&app);

    // The release image on the outer Engine (chapter 03), then moved into every node.
    let _image = ReleaseImage(app.clone());
    let started = Instant::now();
    common::up_json(&p, "chapter-03");
    eprintln!(
        "release image built in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let lab = Lab::start(&app, 3);
    lab.form_swarm();
    eprintln!(
        "3 nodes up (storage driver {}) and in one swarm in {:.1}s",
        lab.storage_driver,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    lab.load_image(&format!("{app}:latest"));
    eprintln!(
        "release image loaded into 3 nodes in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let manager = &lab.nodes[0];
    for node in &lab.nodes {
        let nodes = node.docker_ok(&["info", "--format", "{{.Swarm.Managers}}"]);
        assert_eq!(nodes, "3", "{} sees 3 managers", node.name);
    }

    // Chapter 07's secret names, made directly on the swarm (chapter 07 needs sops and age).
    let cookie = format!("cookie-{app}-{:x}", std::process::id() ^ 0x5eed_c0de);
    manager.create_secret(&format!("{app}_release_cookie_v1"), &cookie);
    manager.create_secret(
        &format!("{app}_secret_key_base_v1"),
        &format!("{cookie}{cookie}{cookie}{cookie}"),
    );

    // Two replicas on three nodes, one per node through the host-mode port: losing a node with
    // a task leaves a free node to take it. dnsrr: this kernel has no IPVS for a VIP.
    let yaml = p.read("beamops.yaml");
    let local = "  local:\n    provider: local\n    replicas: 1\n";
    assert!(
        yaml.contains(local),
        "the example's local environment changed"
    );
    p.write(
        "beamops.yaml",
        &format!(
            "{}\nchapters:\n  swarm:\n    database: false\n    publish: {PUBLISHED}\n    publish_mode: host\n    endpoint_mode: dnsrr\n",
            yaml.replace(
                local,
                &format!(
                    "  local:\n    provider: local\n    replicas: 2\n    docker_host: {}\n",
                    manager.host()
                ),
            )
        ),
    );
    p.commit_all("multi-node config");
    let started = Instant::now();
    let report = common::up_json(&p, "chapter-08");
    eprintln!(
        "up chapter-08 on the 3-node swarm in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(converged(&report), "applied", "{report}");

    // The Erlang cluster forms across two nodes over the overlay network.
    let (nodes, secs) = wait_for("the cluster forms across nodes", 120, || {
        settled(&lab, manager, &service, "")
    });
    let hosts: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(hosts.len(), 2, "one task per node: {hosts:?}");
    eprintln!("cluster formed across {hosts:?} {secs:.1}s after up returned");

    // Kill a node running a task (not node 1, which beamops was pointed at); the other task's
    // node is the one clients keep calling.
    let victim = *nodes
        .iter()
        .find(|n| n.name != manager.name)
        .expect("a task off node 1");
    let survivor = *nodes.iter().find(|n| n.name != victim.name).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let requests = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let ip = survivor.ip.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http_get_at(&ip, PUBLISHED, "/health") {
                    Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    lab.kill(victim);
    eprintln!("killed {} (survivor {})", victim.name, survivor.name);

    let (rescheduled, down_secs) = wait_for("the task is rescheduled", 180, || {
        let t = tasks(manager, &service);
        (t.len() == 2 && t.iter().all(|(n, _)| *n != victim.name)).then_some(t)
    });
    let (healed, heal_secs) = wait_for("the cluster heals", 180, || {
        settled(&lab, manager, &service, &victim.name)
    });
    // Keep calling a little after the heal: the new peer joining must not disturb the survivor.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    requests.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "task rescheduled after {down_secs:.1}s ({rescheduled:?}); cluster healed after {:.1}s; requests to {}: {ok} ok, {failed} failed",
        down_secs + heal_secs,
        survivor.name
    );
    assert!(
        healed.iter().any(|n| n.name == survivor.name),
        "the survivor's task stayed"
    );
    assert!(
        healed.iter().all(|n| n.name != victim.name),
        "nothing runs on the dead node"
    );
    assert!(ok > 0, "the request loop ran");
    assert_eq!(failed, 0, "requests to the surviving node failed");
    let down = manager.docker_ok(&[
        "node",
        "inspect",
        &victim.name,
        "--format",
        "{{.Status.State}}",
    ]);
    assert_eq!(down, "down", "the swarm saw {} go", victim.name);
    // beamops still drives the degraded swarm: the stack it deployed is what the file says.
    let again = common::up_json(&p, "chapter-08");
    assert_eq!(converged(&again), "satisfied", "{again}");
    eprintln!("whole test {:.1}s", all.elapsed().as_secs_f64());
}

/// Removes images the test built on the outer Engine, by tag.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

/// An aws environment on a 2-node swarm of fresh Engines (reached over tcp://, the harness's
/// way; the ssh:// route is tests/remote.rs's): chapter 08 checks swarm mode and never
/// initialises it, and PostgreSQL's task lands on the node labelled `beamops.pgdata=true` — the
/// second node, so the placement, not the first manager's luck, put it there.
#[test]
fn on_aws_the_database_lands_on_the_labelled_node_and_swarm_mode_is_never_initialised() {
    let test = "on_aws_the_database_lands_on_the_labelled_node_and_swarm_mode_is_never_initialised";
    if !multinode_tests_enabled(test) {
        return;
    }
    let all = Instant::now();
    let stack = format!("boawsdb{}", std::process::id());
    let (app_image, pg_image) = (format!("{stack}-app:latest"), format!("{stack}-pg:latest"));
    let _images = Images(vec![app_image.clone(), pg_image.clone()]);
    let forever = "CMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait\"]\n";
    busybox::build(
        &app_image,
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n{forever}"),
        &[("www/health", b"ok\n", 0o644)],
    );
    // A stand-in for PostgreSQL that answers the stack's `pg_isready` healthcheck: placement is
    // what is tested here, not the database (tests/swarm.rs runs the real one).
    busybox::build(
        &pg_image,
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCOPY pg_isready /usr/bin/pg_isready\n{forever}"
        ),
        &[
            ("www/health", b"ok\n", 0o644),
            ("pg_isready", b"#!/bin/busybox sh\nexit 0\n", 0o755),
        ],
    );

    let lab = Lab::start(&stack, 2);
    let manager = &lab.nodes[0];
    let p = common::TestProject::new();
    p.write(
        "beamops.yaml",
        &format!(
            r#"version: 1
app:
  name: coordination
  otp_app: coordination
  elixir: "1.18.3"
  otp: "27.3.4.1"
  stack: {stack}
image:
  repository: {stack}-app
  postgres: {pg_image}
chapters:
  swarm:
    database: true
    healthcheck: ["CMD", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:4000/health"]
    converge_timeout: 3m
environments:
  local:
    replicas: 1
  staging:
    provider: aws
    region: eu-west-1
    replicas: 1
    docker_host: {host}
"#,
            host = manager.host()
        ),
    );

    // Fresh Engines, no swarm: reported, never initialised from here.
    let out = p
        .beamops()
        .args(["up", "chapter-08", "--env", "staging"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is not in a swarm") && text.contains("chapter 06"),
        "{text}"
    );
    assert_eq!(
        manager.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "inactive"
    );

    // The managers' bootstrap, as chapter 06's user data does it: one swarm, the database's node
    // labelled (here the second), chapter 07's secrets.
    lab.form_swarm();
    let labelled = &lab.nodes[1];
    manager.docker_ok(&[
        "node",
        "update",
        "--label-add",
        "beamops.pgdata=true",
        &labelled.name,
    ]);
    lab.load_image(&app_image);
    lab.load_image(&pg_image);
    for key in [
        "secret_key_base",
        "release_cookie",
        "database_password",
        "database_url",
    ] {
        manager.create_secret(&format!("{stack}_{key}_v1"), &format!("{key}-{stack}"));
    }
    let started = Instant::now();
    let out = p
        .beamops()
        .args(["up", "chapter-08", "--env", "staging", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = common::json(&out.stdout);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(converged(&report), "applied", "{report}");
    let db = tasks(manager, &format!("{stack}_db"));
    assert_eq!(db.len(), 1, "{db:?}");
    assert_eq!(
        db[0].0, labelled.name,
        "the database runs on the labelled node: {db:?}"
    );
    let spec = manager.docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Placement.Constraints}}",
        &format!("{stack}_db"),
    ]);
    assert!(
        spec.contains("node.labels.beamops.pgdata == true"),
        "{spec}"
    );
    // The label, not the scheduler's spreading, decides: moved to the first node, a forced
    // reschedule follows it there.
    manager.docker_ok(&[
        "node",
        "update",
        "--label-rm",
        "beamops.pgdata",
        &labelled.name,
    ]);
    manager.docker_ok(&[
        "node",
        "update",
        "--label-add",
        "beamops.pgdata=true",
        &manager.name,
    ]);
    manager.docker_ok(&[
        "service",
        "update",
        "--force",
        "--detach",
        &format!("{stack}_db"),
    ]);
    let (_, moved) = wait_for("the database task on the newly labelled node", 90, || {
        let db = tasks(manager, &format!("{stack}_db"));
        (db.len() == 1 && db[0].0 == manager.name && db[0].1.starts_with("Running")).then_some(())
    });
    eprintln!("the database followed its label in {moved:.1}s");
    eprintln!(
        "aws placement: up chapter-08 on 2 nodes in {seconds:.1}s, the whole test {:.1}s",
        all.elapsed().as_secs_f64()
    );
}
