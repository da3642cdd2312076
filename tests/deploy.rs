//! `beamops deploy` / `rollback` against the real Docker Engine, with the example app's real
//! release images and 3 replicas: zero downtime, a bad release rolled back (exit 5), rollback to
//! the previous release, and the secret canary.
//!
//! The request loop: the issue asks for HTTP requests on 127.0.0.1 against the published port.
//! This machine's kernel has no IPVS, so the ingress routing mesh never answers, and a host-mode
//! port allows one task per node — not 3 replicas on one node. The loop therefore runs in a
//! probe container (static busybox) on the stack's attachable overlay network, against the
//! `dnsrr` service name: every request is a new `wget`, so a new DNS lookup and a new TCP
//! connection, exactly what a client behind a load balancer that follows the task list sees.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{TestProject, docker, docker_tests_enabled, example_copy, json};

struct Cleanup {
    stack: String,
    app: String,
    probe: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.probe]);
        let rt = beamops::docker::runtime().unwrap();
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        if let Ok(daemon) = rt.block_on(beamops::docker::connect(&host))
            && let Err(e) =
                rt.block_on(beamops::swarm::converge::remove(&daemon, &self.stack, true))
        {
            eprintln!("cleanup of stack {} failed: {e:#}", self.stack);
        }
        // Chapter 07's versions outlive `down`; this test made them, so they go.
        let out = docker(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={}", self.stack),
        ]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["secret", "rm", id]);
        }
        // Task containers of the removed services may still be stopping and hold the images.
        let out = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.stack.namespace={}", self.stack),
        ]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["rm", "-f", id]);
        }
        for image in [self.app.clone(), self.probe.clone()] {
            let out = docker(&["images", "-q", &image]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
    }
}

struct Project {
    p: TestProject,
    keys: tempfile::TempDir,
}

impl Project {
    fn beamops(&self) -> assert_cmd::Command {
        let mut cmd = self.p.beamops();
        cmd.env("BEAMOPS_AGE_KEY_FILE", self.keys.path().join("age.key"))
            .env("PATH", common::tool_path());
        cmd
    }

    /// Runs beamops, returns (exit code, stdout, stderr) and prints the seconds it took.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let started = Instant::now();
        let out = self.beamops().args(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        eprintln!(
            "beamops {}: exit {:?} in {:.1}s",
            args.join(" "),
            out.status.code(),
            started.elapsed().as_secs_f64()
        );
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }
}

impl Project {
    /// `beamops deploy local` started and not waited for, its output discarded.
    fn spawn_deploy(&self) -> std::process::Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("beamops"));
        cmd.current_dir(self.p.path()).env("NO_COLOR", "1");
        for (k, _) in std::env::vars() {
            if k.starts_with("BEAMOPS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("BEAMOPS_AGE_KEY_FILE", self.keys.path().join("age.key"))
            .env("PATH", common::tool_path())
            .args(["deploy", "local"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// (release, kind, outcome) of every deploy record, oldest first.
    fn records(&self) -> Vec<(String, String, String)> {
        let state: serde_json::Value =
            serde_json::from_str(&self.p.read(".beamops/state.json")).unwrap();
        state["environments"]["local"]["records"]["deploys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                (
                    d["release"].as_str().unwrap().to_string(),
                    d["kind"].as_str().unwrap().to_string(),
                    d["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn head(&self) -> String {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.p.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The service's UpdateStatus state (`updating`, `completed`, `rollback_completed`…), empty
/// when it has none.
fn update_state(service: &str) -> String {
    let out = docker(&[
        "service",
        "inspect",
        "--format",
        "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
        service,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn service_label(service: &str, label: &str) -> String {
    let out = docker(&[
        "service",
        "inspect",
        "--format",
        &format!("{{{{index .Spec.Labels \"{label}\"}}}}"),
        service,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn service_version(service: &str) -> String {
    let out = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}}",
        service,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lock_left(stack: &str) -> bool {
    docker(&["config", "inspect", &beamops::swarm::lock::lock_name(stack)])
        .status
        .success()
}

/// Services of the stack that are release jobs (`beamops.release-job`).
fn release_jobs(stack: &str) -> Vec<String> {
    let out = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=com.docker.stack.namespace={stack}"),
        "--filter",
        "label=beamops.release-job",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `done` every 100 ms for up to `secs`; whether it came true.
fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A copy of the example for deploy tests: `replicas` tasks, dnsrr, an attachable network,
/// no database, `extra` appended to chapters.swarm, the secrets set and the first chapters
/// built and committed.
fn deploy_project(app: &str, replicas: u32, swarm_extra: &str, deploy_extra: &str) -> Project {
    let p = example_copy(app);
    let yaml = p.read("beamops.yaml").replacen(
        "  local:\n    provider: local\n    replicas: 1\n",
        &format!("  local:\n    provider: local\n    replicas: {replicas}\n"),
        1,
    );
    assert!(yaml.contains(&format!("replicas: {replicas}")), "{yaml}");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    attachable: true\n    converge_timeout: 6m\n{swarm_extra}\ndeploy:\n  release_command: \"{deploy_extra}\"\n"
        ),
    );
    let project = Project {
        p,
        keys: tempfile::tempdir().unwrap(),
    };
    let (code, _, err) = project.run(&["secrets", "init"]);
    assert_eq!(code, 0, "{err}");
    let set = project
        .beamops()
        .args(["secrets", "set", "local", "SECRET_KEY_BASE"])
        .write_stdin(format!("kb{}", "k".repeat(64)))
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let (code, out, err) = project.run(&["up", "chapter-03", "chapter-07"]);
    assert_eq!(code, 0, "{out}\n{err}");
    project.p.commit_all("deploy test config and secrets");
    project
}

/// A FROM-scratch busybox image running the request loop against `url` until /tmp/stop exists.
fn start_probe(name: &str, network: &str, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("/bin/busybox (apt-get install busybox-static)");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let build = docker(&["build", "-q", "-t", name, &dir.path().display().to_string()]);
    assert!(build.status.success(), "{build:?}");
    // One line per request: `ok <body>` or `fail <why>`. Each request resolves the name anew
    // (busybox nslookup against Docker's DNS) and opens a new connection (nc) to one of the
    // task addresses, picked at random. busybox's wget is no use here: this static build
    // segfaults in a FROM-scratch image (glibc looking for NSS modules), even for an address.
    let (host, rest) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("http://name:port/path");
    let (port, path) = rest.split_once('/').expect("a path");
    let script = format!(
        r#"while [ ! -f /tmp/stop ]; do
  addrs=$(nslookup {host} 2>/dev/null | awk '/^Address/ && $2 !~ /:53$/ {{print $2}}')
  n=$(echo "$addrs" | grep -c .)
  if [ "$n" -eq 0 ]; then echo "fail no address for {host}"; usleep 100000; continue; fi
  ip=$(echo "$addrs" | sed -n "$((RANDOM % n + 1))p")
  resp=$(printf 'GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n' | nc -w 3 "$ip" {port} 2>&1)
  status=$(echo "$resp" | head -n 1 | tr -d '\r')
  case "$status" in
    HTTP/1.?\ 200*) echo "ok $(echo "$resp" | tail -n 1 | tr -d '\r')" ;;
    *) echo "fail $ip: $status" ;;
  esac
  usleep 100000
done"#
    );
    let run = docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        name,
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert!(run.status.success(), "{run:?}");
}

fn probe_lines(name: &str) -> Vec<String> {
    let out = docker(&["logs", name]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Failed requests and versions seen in probe lines `from..`.
fn tally(
    lines: &[String],
    from: usize,
) -> (usize, usize, std::collections::BTreeMap<String, usize>) {
    let mut fails = 0;
    let mut versions = std::collections::BTreeMap::new();
    for line in &lines[from.min(lines.len())..] {
        if let Some(v) = line.strip_prefix("ok ") {
            *versions.entry(v.trim().to_string()).or_insert(0) += 1;
        } else {
            fails += 1;
            eprintln!("probe: {line}");
        }
    }
    (lines.len().saturating_sub(from), fails, versions)
}

/// Waits until the probe's last `n` answers are all `version`.
fn wait_for_version(probe: &str, version: &str, n: usize, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let lines = probe_lines(probe);
        if lines.len() >= n
            && lines[lines.len() - n..]
                .iter()
                .all(|l| l.trim() == format!("ok {version}"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// The release label and the images of the service's running tasks.
fn service_release(service: &str) -> (String, String) {
    let out = docker(&[
        "service",
        "inspect",
        "--format",
        "{{index .Spec.Labels \"beamops.release\"}} {{.Spec.TaskTemplate.ContainerSpec.Image}}",
        service,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
    (a.to_string(), b.to_string())
}

fn running_task_images(service: &str) -> Vec<String> {
    let out = docker(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}} {{.CurrentState}}",
        service,
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn set_version(p: &TestProject, from: &str, to: &str) {
    let mix = p.read("mix.exs");
    assert!(mix.contains(&format!("version: \"{from}\"")));
    p.write(
        "mix.exs",
        &mix.replace(
            &format!("version: \"{from}\""),
            &format!("version: \"{to}\""),
        ),
    );
}

#[test]
fn deploy_is_zero_downtime_a_bad_release_rolls_back_and_rollback_returns() {
    let test = "deploy_is_zero_downtime_a_bad_release_rolls_back_and_rollback_returns";
    if !docker_tests_enabled(test) {
        return;
    }
    let pid = std::process::id();
    let app = format!("bodeploy{pid}");
    let stack = app.clone();
    let service = format!("{stack}_app");
    let probe = format!("{app}-probe");
    let _cleanup = Cleanup {
        stack: stack.clone(),
        app: app.clone(),
        probe: probe.clone(),
    };
    let p = example_copy(&app);
    let yaml = p.read("beamops.yaml").replacen(
        "  local:\n    provider: local\n    replicas: 1\n",
        "  local:\n    provider: local\n    replicas: 3\n",
        1,
    );
    assert!(yaml.contains("replicas: 3"), "{yaml}");
    // No IPVS here: dnsrr, and an attachable network for the probe. The release command runs
    // for real (the example has no database, so nothing to migrate: it prints a marker).
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    attachable: true\n    converge_timeout: 6m\n\ndeploy:\n  release_command: bin/coordination eval 'IO.puts(:release_command_ran)'\n"
        ),
    );
    let project = Project {
        p,
        keys: tempfile::tempdir().unwrap(),
    };
    let p = &project.p;
    let canary = format!("canary{pid}x{}", "s".repeat(64));
    let (code, _, err) = project.run(&["secrets", "init"]);
    assert_eq!(code, 0, "{err}");
    let set = project
        .beamops()
        .args(["secrets", "set", "local", "SECRET_KEY_BASE"])
        .write_stdin(canary.clone())
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    // The copy's Dockerfile names the example's app: render and build once, as a person would
    // have before a first deploy, and commit what beamops wrote.
    let (code, out, err) = project.run(&["up", "chapter-03", "chapter-07"]);
    assert_eq!(code, 0, "{out}\n{err}");
    p.commit_all("deploy test config and secrets");
    let mut outputs = Vec::new();

    // A dirty tree is refused before anything happens.
    p.write("lib/scratch.ex", "# uncommitted\n");
    let (code, _, err) = project.run(&["deploy", "local"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--allow-dirty"), "{err}");
    std::fs::remove_file(p.file("lib/scratch.ex")).unwrap();

    // First deploy (0.1.0), verbose: it creates the stack.
    let (code, out, err) = project.run(&["deploy", "local", "-v"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("deployed r1-"), "{out}");
    outputs.push(out + &err);
    p.commit_all("generated by the first deploy");
    let (r1, _) = service_release(&service);
    assert!(r1.starts_with("r1-"), "{r1}");

    start_probe(
        &probe,
        &format!("{stack}_backend"),
        &format!("http://{service}:4000/"),
    );
    assert!(
        wait_for_version(&probe, "0.1.0", 10, 60),
        "the probe never got 0.1.0: {:?}",
        probe_lines(&probe).iter().rev().take(5).collect::<Vec<_>>()
    );

    // 1. Zero downtime: 0.2.0 under the request loop.
    set_version(p, "0.1.0", "0.2.0");
    p.commit_all("0.2.0");

    // While another machine holds the stack's deploy lock, deploy waits, then gives up naming
    // the holder, and changes nothing (docs/operations.md).
    let version_before = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}}",
        &service,
    ]);
    let labels = [
        ("beamops.lock", "deploy"),
        ("beamops.lock.user", "ana"),
        ("beamops.lock.host", "ci-runner-7"),
        ("beamops.lock.pid", "4242"),
        ("beamops.lock.command", "deploy"),
        ("beamops.lock.since", &beamops::state::now_rfc3339()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let rt = beamops::docker::runtime().unwrap();
    let daemon = rt
        .block_on(beamops::docker::connect("unix:///var/run/docker.sock"))
        .unwrap();
    rt.block_on(daemon.client.create_config(bollard::models::ConfigSpec {
        name: Some(beamops::swarm::lock::lock_name(&stack)),
        labels: Some(labels),
        data: Some("e30=".into()),
        ..Default::default()
    }))
    .expect("planting another machine's deploy lock");
    let (code, out, err) = project.run(&["deploy", "local", "--lock-wait", "2s"]);
    let _ = docker(&["config", "rm", &beamops::swarm::lock::lock_name(&stack)]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("ana@ci-runner-7"), "{err}");
    let version_after = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}}",
        &service,
    ]);
    assert_eq!(
        version_before.stdout, version_after.stdout,
        "a refused deploy changed the service"
    );

    let from = probe_lines(&probe).len();
    let (code, out, err) = project.run(&["deploy", "local", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json(out.as_bytes());
    outputs.push(out.clone() + &err);
    assert_eq!(report["kind"], "deploy");
    assert_eq!(report["previous_release"], r1.as_str());
    assert_eq!(report["updated"][0], service.as_str());
    assert!(
        report["release_command"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("release_command_ran")),
        "{report}"
    );
    eprintln!(
        "deploy 0.2.0: {:.1}s in all, of which {:.1}s from the update until every task ran healthy (then Swarm's monitor window)",
        report["seconds"].as_f64().unwrap_or_default(),
        report["converge_seconds"].as_f64().unwrap_or_default()
    );
    let r2 = report["release"].as_str().unwrap().to_string();
    let image2 = report["image"].as_str().unwrap().to_string();
    assert!(wait_for_version(&probe, "0.2.0", 15, 30));
    let (requests, fails, versions) = tally(&probe_lines(&probe), from);
    eprintln!("zero downtime: {requests} requests, {fails} failed, versions {versions:?}");
    assert_eq!(fails, 0, "requests failed during the deploy");
    assert!(versions.contains_key("0.1.0") && versions.contains_key("0.2.0"));
    let tasks = running_task_images(&service);
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.starts_with(&image2)), "{tasks:?}");
    assert_eq!(service_release(&service), (r2.clone(), image2.clone()));

    // Deploy is idempotent: the live commit again is nothing to do, said so, and changes
    // nothing — no release job, no service update, no new release id, no lock left.
    let records = project.records();
    let version = service_version(&service);
    let (code, out, err) = project.run(&["deploy", "local", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json(out.as_bytes());
    assert_eq!(report["changed"], false, "{report}");
    assert_eq!(report["release"], r2.as_str());
    assert!(report["release_command"].is_null(), "{report}");
    assert_eq!(report["updated"], serde_json::json!([]));
    let (code, out, err) = project.run(&["deploy", "local"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("nothing to deploy"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert!(!err.contains("release command"), "{err}");
    assert_eq!(
        service_version(&service),
        version,
        "a no-op deploy updated the service"
    );
    assert_eq!(
        project.records(),
        records,
        "a no-op deploy recorded a release"
    );
    assert!(
        !lock_left(&stack),
        "a run that changed nothing left the deploy lock"
    );

    // 2. A bad release: /health never passes. Swarm rolls back; exit 5 names the task.
    let router = p.read("lib/coordination/http/router.ex");
    let broken = router.replace(
        "json(if(ready, do: 200, else: 503), body)",
        "_ = ready\n    json(503, body)",
    );
    assert_ne!(router, broken);
    p.write("lib/coordination/http/router.ex", &broken);
    set_version(p, "0.2.0", "0.3.0");
    p.commit_all("0.3.0, unhealthy");
    let from = probe_lines(&probe).len();
    let (code, out, err) = project.run(&["deploy", "local"]);
    outputs.push(out.clone() + &err);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        err.contains(&format!("{service}.")),
        "the failing task is named: {err}"
    );
    assert!(err.contains("last log lines"), "{err}");
    // The task Swarm blamed, and the health check that failed with its output.
    assert!(
        err.contains("the task Swarm's update status blames"),
        "{err}"
    );
    assert!(
        err.contains("health check `CMD /usr/local/bin/healthcheck` failed"),
        "{err}"
    );
    assert!(err.contains("answered HTTP 503"), "{err}");
    let (requests, fails, versions) = tally(&probe_lines(&probe), from);
    eprintln!("bad release: {requests} requests, {fails} failed, versions {versions:?}");
    assert_eq!(fails, 0, "requests failed during the rolled-back deploy");
    assert!(!versions.contains_key("0.3.0"), "{versions:?}");
    assert!(wait_for_version(&probe, "0.2.0", 15, 10));
    assert_eq!(service_release(&service), (r2.clone(), image2.clone()));
    let tasks = running_task_images(&service);
    assert!(tasks.iter().all(|t| t.starts_with(&image2)), "{tasks:?}");
    // A later `up chapter-08` keeps the live release (the stack file's variables come from
    // the deploy record), so it changes nothing.
    let (version_before, _) = (
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &service,
        ])
        .stdout,
        (),
    );
    let (code, out, err) = project.run(&["up", "chapter-08"]);
    assert_eq!(code, 0, "{out}\n{err}");
    outputs.push(out + &err);
    assert_eq!(
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &service
        ])
        .stdout,
        version_before,
        "up chapter-08 after a deploy must not touch the service"
    );
    // Nor on a checkout that never deployed (a fresh CI clone, a laptop): the live release is
    // read from the swarm, so converging the stack does not roll production back to `:latest`.
    let state_text = p.read(".beamops/state.json");
    let mut forgetful: serde_json::Value = serde_json::from_str(&state_text).unwrap();
    forgetful["environments"]["local"]["records"]["deploys"] = serde_json::json!([]);
    p.write(".beamops/state.json", &forgetful.to_string());
    let (code, out, err) = project.run(&["up", "chapter-08"]);
    p.write(".beamops/state.json", &state_text);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{.Version.Index}}",
            &service
        ])
        .stdout,
        version_before,
        "up chapter-08 without the deploy history rolled the service back"
    );
    assert_eq!(service_release(&service), (r2.clone(), image2.clone()));

    // 3. rollback: back to r1 (0.1.0) under the request loop.
    let from = probe_lines(&probe).len();
    let (code, out, err) = project.run(&["rollback", "local"]);
    outputs.push(out.clone() + &err);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("rolled back to {r1}")), "{out}");
    assert!(wait_for_version(&probe, "0.1.0", 15, 30));
    let (requests, fails, versions) = tally(&probe_lines(&probe), from);
    eprintln!("rollback: {requests} requests, {fails} failed, versions {versions:?}");
    assert_eq!(fails, 0, "requests failed during the rollback");
    assert_eq!(service_release(&service).0, r1);
    // An unknown release: exit 1, naming the known ones.
    let (code, _, err) = project.run(&["rollback", "local", "--to", "r99-nothing"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&r1) && err.contains(&r2), "{err}");

    // The state records every run, the failed one as rolled-back.
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let deploys = state["environments"]["local"]["records"]["deploys"]
        .as_array()
        .unwrap();
    let outcomes: Vec<(String, String)> = deploys
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("deploy", "succeeded"),
            ("deploy", "succeeded"),
            ("deploy", "rolled-back"),
            ("rollback", "succeeded")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // 4. Canary: the secret value never left memory for output, state, labels or the spec.
    let inspect = docker(&["service", "inspect", &service]);
    let mut places: Vec<(String, String)> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("output {i}"), o.clone()))
        .collect();
    places.push(("state".into(), p.read(".beamops/state.json")));
    places.push((
        "service inspect".into(),
        String::from_utf8_lossy(&inspect.stdout).to_string(),
    ));
    for file in walk(p.path()) {
        if let Ok(text) = std::fs::read_to_string(&file) {
            places.push((file.display().to_string(), text));
        }
    }
    for (place, text) in places {
        assert!(
            !text.contains(&canary),
            "the secret value leaked into {place}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Removes a test stack, its secrets, containers and images (the Cleanup above).
fn cleanup_for(app: &str) -> Cleanup {
    Cleanup {
        stack: app.to_string(),
        app: app.to_string(),
        probe: format!("{app}-probe"),
    }
}

#[test]
fn a_rerun_after_a_killed_deploy_judges_the_interrupted_release_and_never_calls_it_good() {
    let test =
        "a_rerun_after_a_killed_deploy_judges_the_interrupted_release_and_never_calls_it_good";
    if !docker_tests_enabled(test) {
        return;
    }
    let app = format!("bokill{}", std::process::id());
    let service = format!("{app}_app");
    let _cleanup = cleanup_for(&app);
    // The stack's own monitor window (45 s): the release below fails inside it.
    let project = deploy_project(&app, 3, "", "");
    let p = &project.p;
    let (code, out, err) = project.run(&["deploy", "local"]);
    assert_eq!(code, 0, "{out}\n{err}");
    p.commit_all("generated by the first deploy");
    let r1 = service_label(&service, "beamops.release");
    let image1 = service_release(&service).1;

    let probe = format!("{app}-probe");
    start_probe(
        &probe,
        &format!("{app}_backend"),
        &format!("http://{service}:4000/"),
    );
    assert!(wait_for_version(&probe, "0.1.0", 10, 60));

    // 0.2.0 passes its health check for its first 25 s, then fails it: Swarm calls the tasks
    // healthy, finishes the rollout, and only its monitor window catches the failure.
    let router = p.read("lib/coordination/http/router.ex");
    let late = router.replace(
        "json(if(ready, do: 200, else: 503), body)",
        "young = elem(:erlang.statistics(:wall_clock), 0) < 25_000\n    json(if(ready and young, do: 200, else: 503), body)",
    );
    assert_ne!(router, late);
    p.write("lib/coordination/http/router.ex", &late);
    set_version(p, "0.1.0", "0.2.0");
    p.commit_all("0.2.0, fails its health check after 25 s");

    // Killed mid-rollout, with the update issued: the deploy lock and Swarm's update are left.
    let mut killed = project.spawn_deploy();
    assert!(
        wait_until(180, || service_label(&service, "beamops.release") != r1),
        "the deploy never updated the service"
    );
    let r2 = service_label(&service, "beamops.release");
    std::thread::sleep(Duration::from_secs(8));
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(update_state(&service), "updating");
    assert!(lock_left(&app), "kill -9 cannot release the lock");
    assert!(
        project
            .records()
            .contains(&(r2.clone(), "deploy".into(), "in-progress".into())),
        "{:?}",
        project.records()
    );

    // The plain re-run: takes the dead run's lock, watches the update to Swarm's verdict
    // instead of replacing it, and reports the rollback.
    let (code, out, err) = project.run(&["deploy", "local"]);
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(!out.contains("deployed"), "{out}");
    assert!(!err.contains("succeeded"), "{err}");
    assert!(err.contains("took over the deploy lock"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains(&format!("{r2}: ")), "{err}");
    assert!(
        err.contains(&format!("{service}.")),
        "the blamed task: {err}"
    );
    assert!(
        err.contains("answered HTTP 503"),
        "the failed health check: {err}"
    );
    let records = project.records();
    assert!(
        records.contains(&(r2.clone(), "deploy".into(), "rolled-back".into())),
        "{records:?}"
    );
    assert!(
        !records.iter().any(|(r, _, o)| *r == r2 && o == "succeeded"),
        "a broken release recorded as good: {records:?}"
    );
    assert!(!lock_left(&app));
    assert_eq!(service_label(&service, "beamops.release"), r1);
    let tasks = running_task_images(&service);
    assert!(tasks.iter().all(|t| t.starts_with(&image1)), "{tasks:?}");
    // Settled: the old release answers every request.
    let from = probe_lines(&probe).len();
    assert!(wait_for_version(&probe, "0.1.0", 30, 60));
    let (requests, fails, versions) = tally(&probe_lines(&probe), from);
    eprintln!("after the judged rollback: {requests} requests, {fails} failed, {versions:?}");
    assert_eq!(fails, 0, "requests failed after the rollback settled");
}

fn heavy_tests_enabled(test: &str) -> bool {
    common::heavy_tests_enabled(test, "kill -9 trials of deploy")
}

#[test]
fn kill_9_of_deploy_at_any_point_then_a_plain_run_finishes_with_nothing_left_behind() {
    let test = "kill_9_of_deploy_at_any_point_then_a_plain_run_finishes_with_nothing_left_behind";
    if !heavy_tests_enabled(test) {
        return;
    }
    let app = format!("bokill9{}", std::process::id());
    let service = format!("{app}_app");
    let _cleanup = cleanup_for(&app);
    // A short monitor window keeps each deploy near 20 s; the release command runs for real.
    let project = deploy_project(
        &app,
        2,
        "    update_monitor: 5s\n",
        "bin/coordination eval 'IO.puts(:release_command_ran)'",
    );
    let p = &project.p;
    let (code, out, err) = project.run(&["deploy", "local"]);
    assert_eq!(code, 0, "{out}\n{err}");
    p.commit_all("generated by the first deploy");

    // A pseudo-random kill time per trial, from the clock; printed so a failure can be re-run.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut random_ms = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    let kill_points = [
        "release job",
        "rollout",
        "monitor window",
        "after completion, before the record",
        "random",
        "random",
        "random",
        "random",
        "random",
        "random",
        "random",
    ];
    for (trial, point) in kill_points.iter().enumerate() {
        // A commit whose build context is unchanged (test/ is not in it): a re-tag, not a
        // rebuild, and still a new release for the services.
        p.write("test/kill_trial.txt", &format!("trial {trial}\n"));
        p.commit_all(&format!("kill trial {trial}"));
        let head = project.head();
        let before = service_label(&service, "beamops.release");
        if *point == "after completion, before the record" {
            // The state a kill right after Swarm completed leaves: the update done, the record
            // still in progress.
            let (code, out, err) = project.run(&["deploy", "local"]);
            assert_eq!(code, 0, "{out}\n{err}");
            let mut state: serde_json::Value =
                serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
            let deploys = state["environments"]["local"]["records"]["deploys"]
                .as_array_mut()
                .unwrap();
            deploys.last_mut().unwrap()["outcome"] = "in-progress".into();
            p.write(".beamops/state.json", &state.to_string());
        } else {
            let mut child = project.spawn_deploy();
            let started = Instant::now();
            let reached = match *point {
                "release job" => wait_until(120, || !release_jobs(&app).is_empty()),
                "rollout" => {
                    wait_until(120, || service_label(&service, "beamops.release") != before)
                }
                "monitor window" => wait_until(120, || {
                    service_label(&service, "beamops.release") != before
                        && update_state(&service) == "updating"
                        && running_task_images(&service).len() == 2
                        && running_task_images(&service)
                            .iter()
                            .all(|t| t.contains(&head[..12]) && t.contains("Running"))
                }),
                _ => {
                    std::thread::sleep(Duration::from_millis(random_ms(25_000)));
                    true
                }
            };
            assert!(reached, "trial {trial}: never reached the {point}");
            child.kill().unwrap();
            child.wait().unwrap();
            eprintln!(
                "trial {trial}: killed at the {point} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        // The next plain run: no manual step, success, nothing left behind.
        let (code, out, err) = project.run(&["deploy", "local"]);
        assert_eq!(code, 0, "trial {trial} ({point}):\n{out}\n{err}");
        assert!(!lock_left(&app), "trial {trial}: the deploy lock was left");
        assert!(
            release_jobs(&app).is_empty(),
            "trial {trial}: a release job was left: {:?}",
            release_jobs(&app)
        );
        let records = project.records();
        assert!(
            !records.iter().any(|(_, _, o)| o == "in-progress"),
            "trial {trial}: {records:?}"
        );
        let live = service_label(&service, "beamops.release");
        assert_eq!(service_label(&service, "beamops.git_sha"), head);
        assert!(
            records.contains(&(live.clone(), "deploy".into(), "succeeded".into())),
            "trial {trial}: the live release {live} is not recorded good: {records:?}"
        );
        assert_eq!(update_state(&service), "completed", "trial {trial}");
        let tasks = running_task_images(&service);
        assert!(
            tasks.len() == 2 && tasks.iter().all(|t| t.contains(&head[..12])),
            "trial {trial}: {tasks:?}"
        );
    }

    // `--force` redeploys the live commit on purpose: a new release, the services rolled.
    let live = service_label(&service, "beamops.release");
    let (code, out, err) = project.run(&["deploy", "local", "--force", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json(out.as_bytes());
    assert_eq!(report["changed"], true, "{report}");
    assert_ne!(report["release"], live.as_str());
    assert_eq!(report["git_sha"], project.head().as_str());
    assert!(!report["release_command"].is_null(), "{report}");
}
