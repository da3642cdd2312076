//! beamops on a Docker Engine that has never been in a swarm, as on a new CI machine (issue 12,
//! items 5 and 9): racing runs that both find the Engine outside a swarm, a plan or `up` while
//! another process's swarm init or join is in flight, and `plan` on a fresh project and Engine.
//!
//! The host Engine's swarm state is not ours to reset (other tests turn swarm mode on), so each
//! test starts a one-node Docker-in-Docker Engine (tests/common/dind.rs): never in a swarm.
//! Gated like tests/multinode.rs by BEAMOPS_DOCKER_TESTS=1 and BEAMOPS_MULTINODE_TESTS=1.

mod common;
#[path = "common/dind.rs"]
mod dind;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{TestProject, example_copy, json};
use dind::{Lab, Node};
use serde_json::Value;

fn enabled(test: &str) -> bool {
    common::multinode_tests_enabled(test, "on a Docker-in-Docker Engine")
}

/// An example copy whose `local` environment is the DinD node, with its own age key (outside
/// the project, as `secrets init` expects).
struct Project {
    p: TestProject,
    key: PathBuf,
    host: String,
    _keys: tempfile::TempDir,
}

impl Project {
    fn new(app: &str, node: &Node) -> Project {
        let keys = tempfile::tempdir().unwrap();
        Project {
            p: example_copy(app),
            key: keys.path().join("age.key"),
            host: node.host(),
            _keys: keys,
        }
    }

    fn path(&self) -> &Path {
        self.p.path()
    }

    /// beamops in the project against the node, with sops and age on PATH.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("beamops"));
        cmd.current_dir(self.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("BEAMOPS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .env("DOCKER_HOST", &self.host)
            .env("BEAMOPS_AGE_KEY_FILE", &self.key)
            .env("PATH", common::tool_path())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn secrets_init(&self) {
        let out = self.run(&["secrets", "init"]);
        assert!(out.status.success(), "secrets init: {}", text(&out));
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn swarm_state(node: &Node) -> String {
    node.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
}

/// (chapter, action id) → (status, detail) of a plan report.
fn actions(report: &Value) -> Vec<(String, String, String, String)> {
    report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["actions"].as_array().unwrap().iter().map(move |a| {
                (
                    c["chapter"].as_str().unwrap().to_string(),
                    a["id"].as_str().unwrap().to_string(),
                    a["status"].as_str().unwrap().to_string(),
                    a["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

fn status_of<'a>(
    all: &'a [(String, String, String, String)],
    chapter: &str,
    id: &str,
) -> (&'a str, &'a str) {
    all.iter()
        .find(|(c, a, _, _)| c == chapter && a == id)
        .map(|(_, _, s, d)| (s.as_str(), d.as_str()))
        .unwrap_or_else(|| panic!("no {chapter} {id} in {all:?}"))
}

/// Nothing an Engine that was never used holds: no swarm, images, containers or volumes.
fn assert_engine_untouched(node: &Node) {
    assert_eq!(swarm_state(node), "inactive");
    for what in [
        &["images", "-qa"][..],
        &["ps", "-qa"],
        &["volume", "ls", "-q"],
    ] {
        assert_eq!(
            node.docker_ok(what),
            "",
            "docker {what:?} on the fresh Engine"
        );
    }
}

#[test]
fn plan_on_a_fresh_project_and_engine_is_pending_and_changes_nothing_also_while_a_join_is_in_flight()
 {
    let test = "plan_on_a_fresh_project_and_engine_is_pending_and_changes_nothing_also_while_a_join_is_in_flight";
    if !enabled(test) {
        return;
    }
    let id = std::process::id();
    let lab = Lab::start(&format!("bofp{id}"), 1);
    let node = &lab.nodes[0];
    assert_engine_untouched(node);
    let p = Project::new(&format!("bofp{id}"), node);

    // Before `secrets init` the one thing the user must do is named: blocked (3), not failed.
    let before = p.p.snapshot(false);
    let out = p.run(&["plan", "chapter-09", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = actions(&json(&out.stdout));
    let not_pending: Vec<_> = all
        .iter()
        .filter(|(_, _, s, _)| !matches!(s.as_str(), "pending" | "satisfied"))
        .collect();
    assert_eq!(not_pending.len(), 1, "{all:?}");
    assert_eq!(
        (not_pending[0].1.as_str(), not_pending[0].2.as_str()),
        ("docker-secrets", "blocked")
    );
    assert!(not_pending[0].3.contains("beamops secrets init"), "{all:?}");
    assert_eq!(p.p.snapshot(false), before, "plan wrote into the project");

    p.secrets_init();
    let before = p.p.snapshot(false);
    for args in [&["plan", "chapter-09"][..], &["plan", "--all"]] {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let out = p.run(&args);
        // `--all` includes the GitHub chapters (02's repository root, 04's secrets check): no
        // repository or token here, so they are blocked (3), naming what is missing; and 04's
        // deploy workflow for the aws environments `init` writes needs their managers' host keys,
        // which exist only once chapter 06 has run: blocked too, naming `known_hosts`. Nothing
        // else may be anything but pending or satisfied.
        let all_chapters = args.contains(&"--all");
        let code = if all_chapters { 3 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let report = json(&out.stdout);
        let all = actions(&report);
        for (chapter, id, status, detail) in &all {
            let github = all_chapters
                && status == "blocked"
                && matches!(
                    (chapter.as_str(), id.as_str()),
                    ("02-terraform", "terraform-applied-github") | ("04-cicd", "github-secrets")
                )
                && detail.contains("GitHub repository");
            let host_keys = all_chapters
                && status == "blocked"
                && (chapter.as_str(), id.as_str()) == ("04-cicd", "workflows-valid")
                && detail.contains("known_hosts");
            assert!(
                github
                    || host_keys
                    || matches!(status.as_str(), "pending" | "satisfied" | "skipped"),
                "{args:?}: {chapter} {id} is {status}: {detail}"
            );
        }
        for chapter in ["07-secrets", "08-swarm"] {
            let (status, detail) = status_of(&all, chapter, "swarm-mode");
            assert_eq!(status, "pending", "{detail}");
        }
        // What chapter 07 makes (the swarm) and chapter 08 writes (the stack file) are not
        // failures of the chapters after them: pending, saying what they wait for.
        for (chapter, id) in [
            ("08-swarm", "stack-converged"),
            ("09-distributed", "stack-converged"),
            ("09-distributed", "cluster-formed"),
        ] {
            let (status, detail) = status_of(&all, chapter, id);
            assert_eq!(status, "pending", "{chapter} {id}: {detail}");
            assert!(
                detail.starts_with("after swarm-mode"),
                "{chapter} {id}: {detail}"
            );
            assert!(!detail.contains("is missing"), "{chapter} {id}: {detail}");
        }
        let stack_file = report["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["files"].as_array().unwrap())
            .find(|f| f["path"] == "deploy/stack.yml")
            .unwrap_or_else(|| panic!("no deploy/stack.yml in {report}"));
        assert_eq!(stack_file["status"], "create");
    }
    assert_eq!(p.p.snapshot(false), before, "plan wrote into the project");
    assert!(!p.path().join("deploy/stack.yml").exists());
    assert_engine_untouched(node);

    // Another process's swarm join that cannot reach its manager keeps the Engine `pending`
    // for about 20 s. A real token (from a swarm made and left at once) to an address on the
    // lab's network where nothing answers.
    node.docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let token = node.docker_ok(&["swarm", "join-token", "-q", "worker"]);
    node.docker_ok(&["swarm", "leave", "--force"]);
    let nowhere = format!(
        "{}.250:2377",
        node.ip.rsplit_once('.').expect("an IPv4 address").0
    );
    let mut join = Command::new("docker")
        .args([
            "-H",
            &node.host(),
            "swarm",
            "join",
            "--token",
            &token,
            &nowhere,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for _ in 0..40 {
        seen = swarm_state(node);
        if seen == "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        seen, "pending",
        "the join to {nowhere} never showed pending"
    );

    let out = p.run(&["plan", "chapter-08", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "plan during a pending join: {}",
        text(&out)
    );
    let all = actions(&json(&out.stdout));
    let (status, detail) = status_of(&all, "08-swarm", "swarm-mode");
    assert_eq!(status, "pending");
    assert!(detail.contains("in flight"), "{detail}");
    let out = p.run(&["status", "--format", "json"]);
    assert_ne!(
        out.status.code(),
        Some(1),
        "status during a pending join: {}",
        text(&out)
    );

    // `up` waits for the swarm state to settle; when the stuck join is cleared (as the error's
    // fix says) it finds the Engine outside a swarm and makes it a manager.
    let up = p.spawn(&["up", "chapter-07", "-v"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        swarm_state(node),
        "pending",
        "the join ended before the test cleared it"
    );
    node.docker_ok(&["swarm", "leave", "--force"]);
    let out = up.wait_with_output().unwrap();
    let _ = join.kill();
    let _ = join.wait();
    assert!(
        out.status.success(),
        "up after a pending join: {}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in flight"),
        "up never saw the pending join:\n{stderr}"
    );
    assert_eq!(swarm_state(node), "active");
    assert_eq!(
        node.docker_ok(&["info", "--format", "{{.Swarm.ControlAvailable}}"]),
        "true"
    );
}

#[test]
fn runs_racing_on_a_never_swarmed_engine_all_succeed_and_one_swarm_has_one_manager() {
    let test = "runs_racing_on_a_never_swarmed_engine_all_succeed_and_one_swarm_has_one_manager";
    if !enabled(test) {
        return;
    }
    let id = std::process::id();
    let lab = Lab::start(&format!("bors{id}"), 1);
    let node = &lab.nodes[0];
    assert_eq!(swarm_state(node), "inactive");

    // The library call the test helpers use (tests/common/busybox.rs): four at once.
    let rt = beamops::docker::runtime().unwrap();
    let daemon = rt.block_on(beamops::docker::connect(&node.host())).unwrap();
    let results = rt.block_on(futures_util::future::join_all(
        (0..4).map(|_| beamops::swarm::ensure(&daemon, "127.0.0.1")),
    ));
    let ok: Vec<(String, bool)> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a racing swarm::ensure failed: {e:#}")))
        .collect();
    assert_eq!(ok.iter().filter(|(_, made)| *made).count(), 1, "{ok:?}");
    assert!(ok.iter().all(|(n, _)| *n == ok[0].0), "{ok:?}");

    // Two `up chapter-07` of two projects at once, a few rounds: the race window is timing.
    let a = Project::new(&format!("bora{id}"), node);
    let b = Project::new(&format!("borb{id}"), node);
    a.secrets_init();
    b.secrets_init();
    for round in 1..=3 {
        // Outside a swarm again: what a never-swarmed Engine is.
        node.docker_ok(&["swarm", "leave", "--force"]);
        assert_eq!(swarm_state(node), "inactive");
        if round > 1 {
            // A checkout whose state says its secrets were made, on an Engine with no swarm
            // (a new machine, an old checkout): the plan is pending on the swarm, not failed.
            let out = a.run(&["plan", "chapter-07", "--format", "json"]);
            assert_eq!(out.status.code(), Some(2), "round {round}: {}", text(&out));
            let all = actions(&json(&out.stdout));
            let (status, detail) = status_of(&all, "07-secrets", "docker-secrets");
            assert_eq!(status, "pending", "round {round}: {detail}");
            assert!(
                detail.starts_with("after swarm-mode"),
                "round {round}: {detail}"
            );
        }
        let runs = [
            a.spawn(&["up", "chapter-07", "--format", "json"]),
            b.spawn(&["up", "chapter-07", "--format", "json"]),
        ];
        let outs: Vec<Output> = runs
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut initialised = 0;
        for out in &outs {
            assert!(out.status.success(), "round {round}: {}", text(out));
            let all = actions(&json(&out.stdout));
            let (status, detail) = status_of(&all, "07-secrets", "swarm-mode");
            assert!(
                matches!(status, "applied" | "satisfied"),
                "round {round}: {status} {detail}"
            );
            initialised += usize::from(detail.starts_with("initialised a swarm"));
            let (status, detail) = status_of(&all, "07-secrets", "docker-secrets");
            assert_eq!(status, "applied", "round {round}: {detail}");
        }
        assert!(initialised <= 1, "round {round}: two inits succeeded");
        let nodes = node.docker_ok(&["node", "ls", "--format", "{{.ManagerStatus}}"]);
        assert_eq!(nodes, "Leader", "round {round}: one node, the manager");
        for (app, project) in [("bora", &a), ("borb", &b)] {
            let secrets = node.docker_ok(&[
                "secret",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &format!("label=com.docker.stack.namespace={app}{id}"),
            ]);
            assert!(
                secrets.lines().count() >= 2,
                "round {round}: {app}'s secrets in {}: {secrets:?}",
                project.path().display()
            );
        }
    }
}
