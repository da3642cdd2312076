//! Chapters 11 and 12: the monitoring stack's rendered files, checked by the real linters, and
//! the stack itself on the real swarm.
//!
//! - Without Docker: every rendered file parses; the dashboards are structurally sound (unique
//!   uids, every datasource uid provisioned, every panel has a query); every metric a rule or a
//!   panel reads is one the example app exposes; the stack file is in beamops' compose subset.
//! - BEAMOPS_DOCKER_TESTS=1: `promtool check config`, `check rules`, `test rules`,
//!   `promql format` of every expression and `amtool check-config`, run inside the Prometheus and
//!   Alertmanager images `images bootstrap` builds from Debian trixie (the host's bookworm
//!   promtool 2.42 has no `promql format`).
//! - BEAMOPS_DOCKER_TESTS=1 and BEAMOPS_HEAVY_TESTS=1: the example app with 3 replicas and the
//!   monitoring stack converged; every replica a target with up == 1; `scale local 4`; a changed
//!   scrape interval rolls Prometheus; a fire drill through Alertmanager to a webhook; `down`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{EXAMPLE, TestProject, docker, docker_tests_enabled, example_copy};

/// Chapter 11's files rendered for a project, by path.
fn rendered(dir: &Path) -> BTreeMap<String, String> {
    rendered_chapter(dir, "11-instrumentation")
}

fn rendered_chapter(dir: &Path, key: &str) -> BTreeMap<String, String> {
    let project = beamops::project::Project::discover(Some(dir)).unwrap();
    let ctx = beamops::render::context(&project, "local").unwrap();
    let chapter = beamops::chapter::by_key(key).unwrap();
    beamops::render::render_chapter(chapter, &ctx)
        .unwrap()
        .into_iter()
        .map(|r| (r.path, String::from_utf8(r.content).unwrap()))
        .collect()
}

fn dashboards(files: &BTreeMap<String, String>) -> Vec<(String, String)> {
    files
        .iter()
        .filter(|(p, _)| p.ends_with(".json"))
        .map(|(p, t)| (p.clone(), t.clone()))
        .collect()
}

/// The metric families the example app's /metrics declares (`# TYPE` lines come from
/// `family("name", …)` and the claim histogram in metrics.ex).
fn example_metrics() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(Path::new(EXAMPLE).join("lib/coordination/metrics.ex")).unwrap();
    let family = regex::Regex::new(r#"family\(\s*"([a-z_]+)""#).unwrap();
    let mut names: BTreeSet<String> = family
        .captures_iter(&source)
        .map(|c| c[1].to_string())
        .collect();
    for suffix in ["_bucket", "_sum", "_count"] {
        names.insert(format!("coordination_claim_duration_seconds{suffix}"));
    }
    names.insert("up".into());
    names
}

#[test]
fn rendered_monitoring_files_parse_and_the_dashboards_are_sound() {
    let project = TestProject::new();
    let files = rendered(project.path());
    for path in [
        "deploy/monitoring.yml",
        "deploy/monitoring/prometheus.yml",
        "deploy/monitoring/rules/alerts.yml",
        "deploy/monitoring/rules/alerts.test.yml",
        "deploy/monitoring/alertmanager.yml",
        "deploy/monitoring/loki.yml",
        "deploy/monitoring/promtail.yml",
        "deploy/monitoring/grafana/datasources.yml",
        "deploy/monitoring/grafana/dashboards.yml",
    ] {
        let text = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not rendered"));
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
    }
    // No PromEx files for a project without Phoenix.
    assert!(
        !files.keys().any(|p| p.ends_with("prom_ex.ex")),
        "{files:?}"
    );

    let boards = dashboards(&files);
    assert_eq!(boards.len(), 2, "{:?}", files.keys());
    let problems = beamops::monitoring::dashboards::problems(
        &files["deploy/monitoring/grafana/datasources.yml"],
        &boards,
    )
    .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    // Every rule and panel reads only metrics the example app exposes, scoped to its service.
    let known = example_metrics();
    let expressions =
        beamops::monitoring::expressions(&files["deploy/monitoring/rules/alerts.yml"], &boards)
            .unwrap();
    assert!(expressions.len() >= 20, "{expressions:#?}");
    for e in &expressions {
        for metric in beamops::monitoring::metrics_of(&e.expr) {
            assert!(
                known.contains(&metric),
                "{}: {metric} is not exposed by the example app ({known:?})",
                e.origin
            );
        }
        assert!(
            e.expr.contains("service=\"coordination_app\""),
            "{}: {}",
            e.origin,
            e.expr
        );
    }
    let rules: BTreeSet<String> = expressions
        .iter()
        .filter_map(|e| e.origin.strip_prefix("rule ").map(String::from))
        .collect();
    for rule in [
        "AppDown",
        "TaskFlapping",
        "AppHighCpu",
        "ClaimLatencyHigh",
        "HttpErrorRate",
        "BeamMemoryHigh",
        "ErlangNodeMissing",
    ] {
        assert!(rules.contains(rule), "{rule} missing: {rules:?}");
    }
    // Every rule has a unit test beside it.
    let tests = &files["deploy/monitoring/rules/alerts.test.yml"];
    for rule in &rules {
        assert!(
            tests.contains(&format!("alertname: {rule}")),
            "no promtool test for {rule}"
        );
    }

    // The stack file is in the compose subset beamops converges, on the app's network, with
    // Grafana's admin password a secret and no anonymous access.
    let stack = &files["deploy/monitoring.yml"];
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in &files {
        let target = dir.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
    let parsed = beamops::swarm::stack::StackFile::parse(
        &dir.path().join("deploy/monitoring.yml"),
        stack,
        &BTreeMap::new(),
    )
    .unwrap();
    let services: Vec<&String> = parsed.services.keys().collect();
    assert_eq!(
        services,
        ["alertmanager", "grafana", "loki", "prometheus", "promtail"]
    );
    assert!(stack.contains("name: coordination_backend"), "{stack}");
    assert!(
        stack.contains("GF_AUTH_ANONYMOUS_ENABLED: \"false\""),
        "{stack}"
    );
    assert!(
        stack.contains("GF_SECURITY_ADMIN_PASSWORD__FILE"),
        "{stack}"
    );
    let prometheus = &files["deploy/monitoring/prometheus.yml"];
    assert!(
        prometheus.contains("dockerswarm_sd_configs"),
        "{prometheus}"
    );
    assert!(prometheus.contains("role: tasks"), "{prometheus}");
}

#[test]
fn phoenix_projects_get_prom_ex_started_before_the_repo_and_a_coordination_plugin() {
    let project = TestProject::new();
    let mix = project.read("mix.exs");
    project.write(
        "mix.exs",
        &mix.replacen(
            "defp deps do\n    [",
            "defp deps do\n    [\n      {:phoenix, \"~> 1.7\"},",
            1,
        ),
    );
    assert!(project.read("mix.exs").contains(":phoenix"), "{mix}");
    let eleven = rendered(project.path());
    let prom_ex = &eleven["lib/coordination/prom_ex.ex"];
    assert!(
        prom_ex.contains("defmodule Coordination.PromEx do"),
        "{prom_ex}"
    );
    assert!(prom_ex.contains("plug PromEx.Plug, prom_ex_module: Coordination.PromEx"));
    let promex_at = prom_ex.find("Coordination.PromEx,\n").unwrap();
    let repo_at = prom_ex.find("Coordination.Repo,").unwrap();
    assert!(
        promex_at < repo_at,
        "PromEx must start before the Repo:\n{prom_ex}"
    );
    assert!(prom_ex.contains("def dashboards, do: []"), "{prom_ex}");
    let twelve = rendered_chapter(project.path(), "12-monitoring");
    let plugin = &twelve["lib/coordination/prom_ex/coordination_plugin.ex"];
    assert!(plugin.contains("defmodule Coordination.PromEx.CoordinationPlugin do"));
    assert!(plugin.contains("coordination.claims.total"), "{plugin}");

    // beamops never edits the project's own modules: `prom-ex-wired` names each missing line,
    // and is satisfied only when PromEx is a dependency, started before the Repo, and plugged.
    let wiring = || {
        let out = project
            .beamops()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["plan", "chapter-11", "--format", "json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["actions"].as_array().unwrap().clone())
            .find(|a| a["id"] == "prom-ex-wired")
            .unwrap_or_else(|| panic!("no prom-ex-wired action: {report}"))
    };
    let bare = wiring();
    assert_eq!(bare["status"], "failed", "{bare}");
    let detail = bare["detail"].as_str().unwrap();
    for needed in [
        "{:prom_ex",
        "add Coordination.PromEx to the children in lib/coordination/application.ex",
        "plug PromEx.Plug, prom_ex_module: Coordination.PromEx` to lib/coordination_web/endpoint.ex",
    ] {
        assert!(detail.contains(needed), "{needed} not in {detail}");
    }
    let mix = project.read("mix.exs");
    project.write(
        "mix.exs",
        &mix.replacen(
            "{:phoenix, \"~> 1.7\"},",
            "{:phoenix, \"~> 1.7\"},\n      {:prom_ex, \"~> 1.11\"},",
            1,
        ),
    );
    let children = |first: &str, second: &str| {
        format!(
            "defmodule Coordination.Application do\n  use Application\n  def start(_t, _a) do\n    children = [\n      {first},\n      {second}\n    ]\n    Supervisor.start_link(children, strategy: :one_for_one)\n  end\nend\n"
        )
    };
    project.write(
        "lib/coordination/application.ex",
        &children("Coordination.Repo", "Coordination.PromEx"),
    );
    project.write(
        "lib/coordination_web/endpoint.ex",
        "defmodule CoordinationWeb.Endpoint do\n  use Phoenix.Endpoint, otp_app: :coordination\n  plug PromEx.Plug, prom_ex_module: Coordination.PromEx\n  plug CoordinationWeb.Router\nend\n",
    );
    let late = wiring();
    assert_eq!(late["status"], "failed", "{late}");
    let detail = late["detail"].as_str().unwrap();
    assert!(
        detail.contains("start Coordination.PromEx before Coordination.Repo")
            && !detail.contains("{:prom_ex")
            && !detail.contains("PromEx.Plug"),
        "{detail}"
    );
    project.write(
        "lib/coordination/application.ex",
        &children("Coordination.PromEx", "Coordination.Repo"),
    );
    let wired = wiring();
    assert_eq!(wired["status"], "satisfied", "{wired}");
}

#[test]
fn config_changes_reach_the_rendered_files() {
    let project = TestProject::new();
    let yaml = project.read("beamops.yaml");
    project.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  instrumentation:\n    scrape_interval: 7s\n    retention: 3d\n  monitoring:\n    webhook_url: http://hooks.example:8080/alerts\n    cpu_threshold: 0.5\n"
        ),
    );
    let files = rendered(project.path());
    assert!(files["deploy/monitoring/prometheus.yml"].contains("scrape_interval: 7s"));
    assert!(files["deploy/monitoring.yml"].contains("--storage.tsdb.retention.time=3d"));
    let am = &files["deploy/monitoring/alertmanager.yml"];
    assert!(
        am.contains("url: \"http://hooks.example:8080/alerts\""),
        "{am}"
    );
    assert!(am.contains("send_resolved: true"), "{am}");
    assert!(files["deploy/monitoring/rules/alerts.yml"].contains("[1m]) > 0.5"));
}

/// Runs `args` in a throwaway container of `image` with `dir` at /w (and its rules where
/// Prometheus' config expects them); returns (success, output).
fn run_in(image: &str, dir: &Path, entrypoint: &str, args: &[&str]) -> (bool, String) {
    let mount = format!("{}:/w:ro", dir.display());
    let rules = format!("{}/rules:/etc/prometheus/rules:ro", dir.display());
    let mut all = vec![
        "run",
        "--rm",
        "--user",
        "0",
        "-v",
        &mount,
        "-v",
        &rules,
        "--entrypoint",
        entrypoint,
        image,
    ];
    all.extend_from_slice(args);
    let out = docker(&all);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn image_present(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

#[test]
fn promtool_and_amtool_accept_the_rendered_files() {
    if !docker_tests_enabled("promtool_and_amtool_accept_the_rendered_files") {
        return;
    }
    let prometheus = "prom/prometheus:2.53.3-trixie";
    let alertmanager = "prom/alertmanager:0.28.1-trixie";
    if !image_present(prometheus) || !image_present(alertmanager) {
        let out = common::beamops_in(Path::new(EXAMPLE))
            .args(["images", "bootstrap"])
            .output()
            .unwrap();
        assert!(out.status.success(), "images bootstrap: {out:?}");
    }
    for (label, extra) in [
        ("defaults", ""),
        (
            "a webhook",
            "\nchapters:\n  monitoring:\n    webhook_url: http://hook:9999/x\n",
        ),
    ] {
        let project = TestProject::new();
        let yaml = project.read("beamops.yaml");
        project.write("beamops.yaml", &format!("{yaml}{extra}"));
        let files = rendered(project.path());
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in &files {
            if let Some(rel) = path.strip_prefix("deploy/monitoring/") {
                let target = dir.path().join(rel);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(target, text).unwrap();
            }
        }
        let expressions = beamops::monitoring::expressions(
            &files["deploy/monitoring/rules/alerts.yml"],
            &dashboards(&files),
        )
        .unwrap();
        let list: String = expressions
            .iter()
            .map(|e| format!("{}\n", e.expr))
            .collect();
        std::fs::write(dir.path().join("expressions.txt"), list).unwrap();

        let started = Instant::now();
        for (what, image, entrypoint, args) in [
            (
                "promtool check config",
                prometheus,
                "promtool",
                vec!["check", "config", "/w/prometheus.yml"],
            ),
            (
                "promtool check rules",
                prometheus,
                "promtool",
                vec!["check", "rules", "/w/rules/alerts.yml"],
            ),
            (
                "promtool test rules",
                prometheus,
                "promtool",
                vec!["test", "rules", "/w/rules/alerts.test.yml"],
            ),
            (
                "promtool promql format (every expression)",
                prometheus,
                "sh",
                vec![
                    "-c",
                    "n=0; while IFS= read -r e; do promtool --experimental promql format \"$e\" >/dev/null || { echo \"does not parse: $e\"; exit 1; }; n=$((n+1)); done < /w/expressions.txt; echo \"$n formatted\"",
                ],
            ),
            (
                "amtool check-config",
                alertmanager,
                "amtool",
                vec!["check-config", "/w/alertmanager.yml"],
            ),
        ] {
            let (ok, out) = run_in(image, dir.path(), entrypoint, &args);
            assert!(ok, "{label}: {what} failed:\n{out}");
            eprintln!(
                "{label}: {what}: ok — {}",
                out.lines().last().unwrap_or_default()
            );
        }
        assert!(
            run_in(
                prometheus,
                dir.path(),
                "sh",
                &["-c", "cat /w/expressions.txt | wc -l"]
            )
            .1
            .trim()
            .parse::<usize>()
            .unwrap()
                == expressions.len()
        );
        eprintln!(
            "measured: {label}: linters in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }

    // A wrong expectation fails `promtool test rules`: the unit tests really compare.
    let project = TestProject::new();
    let files = rendered(project.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/alerts.yml"),
        &files["deploy/monitoring/rules/alerts.yml"],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/alerts.test.yml"),
        files["deploy/monitoring/rules/alerts.test.yml"].replacen(
            "severity: critical",
            "severity: info",
            1,
        ),
    )
    .unwrap();
    let (ok, out) = run_in(
        prometheus,
        dir.path(),
        "promtool",
        &["test", "rules", "/w/rules/alerts.test.yml"],
    );
    assert!(!ok, "a wrong expectation passed promtool test rules: {out}");

    // A broken rule is caught: the linters are not rubber stamps.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/alerts.yml"),
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(up[5m] > 1\n",
    )
    .unwrap();
    let (ok, out) = run_in(
        prometheus,
        dir.path(),
        "promtool",
        &["check", "rules", "/w/rules/alerts.yml"],
    );
    assert!(!ok, "a broken rule passed promtool: {out}");
}

/// The example app (3 replicas) and its monitoring stack on the real swarm, removed however
/// the test ends.
struct Monitored {
    project: TestProject,
    name: String,
    keys: tempfile::TempDir,
    prometheus: String,
    alertmanager: String,
}

impl Monitored {
    fn beamops(&self) -> assert_cmd::Command {
        let mut cmd = self.project.beamops();
        cmd.env("BEAMOPS_AGE_KEY_FILE", self.keys.path().join("age.key"));
        cmd
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
        let out = self
            .beamops()
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            report,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn get(&self, url: &str) -> serde_json::Value {
        beamops::http::client()
            .build()
            .and_then(|c| c.get(url).send())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Task id → value of `up` for the app's tasks, as Prometheus says.
    fn up(&self) -> BTreeMap<String, String> {
        let query = format!("up{{job=\"swarm-tasks\",service=\"{}_app\"}}", self.name);
        let body = self.get(&format!(
            "{}/api/v1/query?query={}",
            self.prometheus,
            urlencode(&query)
        ));
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["metric"]["task"].as_str().unwrap_or_default().to_string(),
                    s["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn running_tasks(&self, service: &str) -> BTreeSet<String> {
        let out = docker(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            service,
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn wait_until<T>(&self, what: &str, timeout: Duration, f: impl Fn() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not so within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        let _ = self
            .beamops()
            .args(["lock", "release", "local", "--yes", "-q"])
            .output();
        let _ = self
            .beamops()
            .args(["down", "11", "--purge", "-q"])
            .output();
        let _ = self.beamops().args(["down", "08", "-q"]).output();
        for kind in ["secret", "config"] {
            let ls = docker(&[kind, "ls", "-q", "--filter", &format!("name={}", self.name)]);
            for id in String::from_utf8_lossy(&ls.stdout).lines() {
                let _ = docker(&[kind, "rm", id]);
            }
        }
        let containers = docker(&["ps", "-aq", "--filter", &format!("name={}", self.name)]);
        for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let volumes = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.name),
        ]);
        for v in String::from_utf8_lossy(&volumes.stdout).lines() {
            let _ = docker(&["volume", "rm", v]);
        }
        let images = docker(&["images", "-q", &self.name]);
        for id in String::from_utf8_lossy(&images.stdout).lines() {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A webhook receiver on the host: every request body it gets, in order.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

/// The gateway of docker_gwbridge: where a task's container reaches this host.
fn host_seen_from_tasks() -> String {
    let out = docker(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        "docker_gwbridge",
    ]);
    let gw = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!gw.is_empty(), "no docker_gwbridge gateway: {out:?}");
    gw
}

#[test]
fn every_replica_is_a_target_and_an_alert_fires_and_resolves() {
    if !common::heavy_tests_enabled(
        "every_replica_is_a_target_and_an_alert_fires_and_resolves",
        "builds the example, runs 3 replicas and the monitoring stack, several minutes",
    ) {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("bo11m{}x{:x}", std::process::id(), nanos % 0xfffff);
    let base_port = 20000 + (std::process::id() % 4000) as u16 * 10;
    let (hook_port, hook) = webhook_receiver();
    let gateway = host_seen_from_tasks();
    // Swarm mode first: docker_gwbridge exists only on a swarm node.
    let project = example_copy(&name);
    let yaml = project.read("beamops.yaml").replace(
        "  local:\n    provider: local\n    replicas: 1\n",
        "  local:\n    provider: local\n    replicas: 3\n",
    );
    let config = |scrape: &str| {
        format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    publish_mode: host\n    environment:\n      COORDINATION_DEBUG: \"1\"\n  instrumentation:\n    scrape_interval: {scrape}\n    prometheus_port: {}\n    alertmanager_port: {}\n    grafana_port: {}\n  monitoring:\n    webhook_url: http://{gateway}:{hook_port}/alerts\n    alert_for: 15s\n    cpu_threshold: 0.08\n",
            base_port,
            base_port + 3,
            base_port + 5
        )
    };
    project.write("beamops.yaml", &config("5s"));
    project.commit_all("3 replicas, monitored");
    let stack = Monitored {
        project,
        prometheus: format!("http://127.0.0.1:{base_port}"),
        alertmanager: format!("http://127.0.0.1:{}", base_port + 3),
        name,
        keys: tempfile::tempdir().unwrap(),
    };
    stack.beamops().args(["secrets", "init"]).assert().success();
    let app = format!("{}_app", stack.name);
    let monitoring = format!("{}-monitoring", stack.name);

    let started = Instant::now();
    let (code, _, out) = stack.run(&["up", "09"]);
    assert_eq!(code, Some(0), "up 09: {out}");
    eprintln!("measured: up 09 in {:.0}s", started.elapsed().as_secs_f64());

    // Chapter 11: Prometheus and Alertmanager converge; Grafana, Loki and Promtail have no
    // image here: that action alone is blocked, exit 3.
    let started = Instant::now();
    let (code, report, out) = stack.run(&["up", "11"]);
    eprintln!("measured: up 11 in {:.0}s", started.elapsed().as_secs_f64());
    assert_eq!(code, Some(3), "up 11: {out}");
    let actions: BTreeMap<String, (String, String)> = report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["chapter"] == "11-instrumentation")
        .flat_map(|c| c["actions"].as_array().unwrap().clone())
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                (
                    a["status"].as_str().unwrap().to_string(),
                    a["detail"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(actions["stack-converged"].0, "applied", "{actions:#?}");
    assert!(
        actions["stack-converged"]
            .1
            .contains("left out (no image): grafana, loki, promtail"),
        "{actions:#?}"
    );
    assert!(
        matches!(
            actions["prometheus-targets"].0.as_str(),
            "applied" | "satisfied"
        ),
        "{actions:#?}"
    );
    assert_eq!(actions["pull-only-images"].0, "blocked", "{actions:#?}");
    assert!(
        actions["pull-only-images"]
            .1
            .contains("image not available"),
        "{actions:#?}"
    );
    for service in ["prometheus", "alertmanager"] {
        assert!(
            docker(&["service", "inspect", &format!("{monitoring}_{service}")])
                .status
                .success()
        );
    }
    assert!(
        !docker(&["service", "inspect", &format!("{monitoring}_grafana")])
            .status
            .success()
    );

    // Every replica a target with up == 1, checked here against Swarm's own task list.
    let tasks = stack.running_tasks(&app);
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let up = stack.up();
    assert_eq!(up.keys().cloned().collect::<BTreeSet<_>>(), tasks, "{up:?}");
    assert!(up.values().all(|v| v == "1"), "{up:?}");

    // Chapter 12: rules and routing loaded, every expression evaluated; chapter 11 counts as
    // done (its blocked action is optional), so this exits 0.
    let (code, report, out) = stack.run(&["up", "12"]);
    assert_eq!(code, Some(0), "up 12: {out}");
    assert!(
        !report["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["chapter"] == "11-instrumentation"),
        "{out}"
    );
    let rules = stack.get(&format!("{}/api/v1/rules", stack.prometheus));
    let loaded: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(loaded.contains(&"AppHighCpu"), "{loaded:?}");

    // A fourth replica is a target within two scrape intervals, with no config change.
    let prometheus_service = format!("{monitoring}_prometheus");
    let version = |s: &str| {
        String::from_utf8_lossy(
            &docker(&["service", "inspect", "--format", "{{.Version.Index}}", s]).stdout,
        )
        .trim()
        .to_string()
    };
    let before = version(&prometheus_service);
    let (code, _, out) = stack.run(&["scale", "local", "4"]);
    assert_eq!(code, Some(0), "scale: {out}");
    let scaled = Instant::now();
    let tasks = stack.running_tasks(&app);
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    stack.wait_until(
        "every one of 4 tasks a target with up == 1",
        Duration::from_secs(10),
        || {
            let up = stack.up();
            (up.keys().cloned().collect::<BTreeSet<_>>() == tasks && up.values().all(|v| v == "1"))
                .then_some(())
        },
    );
    eprintln!(
        "measured: the 4th task a target {:.1}s after scale returned",
        scaled.elapsed().as_secs_f64()
    );
    assert_eq!(version(&prometheus_service), before, "Prometheus changed");

    // A changed scrape interval rolls Prometheus to the new config.
    let old_tasks = stack.running_tasks(&prometheus_service);
    stack.project.write("beamops.yaml", &config("6s"));
    let (code, _, out) = stack.run(&["up", "11"]);
    assert_eq!(code, Some(3), "up 11 again: {out}");
    assert_ne!(stack.running_tasks(&prometheus_service), old_tasks);
    let live = stack.get(&format!("{}/api/v1/status/config", stack.prometheus));
    assert!(
        live["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("scrape_interval: 6s"),
        "{live}"
    );

    // Fire drill: one task burns CPU; AppHighCpu fires in Alertmanager and reaches the
    // webhook; once the load stops it resolves. The threshold is low (0.08 cores, idle tasks
    // use ~0.01): on a 2-core CI machine shared with other builds the burning task got only
    // 0.15–0.3 of a core.
    // A task of the app whose container runs on this Engine, found by Swarm's own label.
    let (task, container) = stack.wait_until(
        "a running app task's container",
        Duration::from_secs(60),
        || {
            stack.running_tasks(&app).into_iter().find_map(|task| {
                let out = docker(&[
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.swarm.task.id={task}"),
                ]);
                let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                (!id.is_empty()).then_some((task, id))
            })
        },
    );
    let drill = Instant::now();
    let out = docker(&[
        "exec",
        &container,
        "curl",
        "-fsS",
        "-X",
        "POST",
        "http://127.0.0.1:4000/debug/load?cpu=2&seconds=90",
    ]);
    assert!(out.status.success(), "debug/load: {out:?}");
    stack.wait_until(
        "AppHighCpu active in Alertmanager",
        Duration::from_secs(240),
        || {
            let alerts = stack.get(&format!(
                "{}/api/v2/alerts?filter={}",
                stack.alertmanager,
                urlencode("alertname=\"AppHighCpu\"")
            ));
            alerts
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["status"]["state"] == "active" && a["labels"]["task"] == task.as_str())
                .then_some(())
        },
    );
    eprintln!(
        "measured: AppHighCpu active in Alertmanager {:.0}s after the load started",
        drill.elapsed().as_secs_f64()
    );
    let got = |status: &str| {
        hook.lock().unwrap().iter().any(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
            v["status"] == status
                && v["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["labels"]["alertname"] == "AppHighCpu" && a["status"] == status)
        })
    };
    stack.wait_until(
        "AppHighCpu firing at the webhook",
        Duration::from_secs(60),
        || got("firing").then_some(()),
    );
    eprintln!(
        "measured: firing at the webhook {:.0}s after the load started",
        drill.elapsed().as_secs_f64()
    );
    stack.wait_until(
        "AppHighCpu resolved at the webhook",
        Duration::from_secs(420),
        || got("resolved").then_some(()),
    );
    eprintln!(
        "measured: resolved at the webhook {:.0}s after the load started",
        drill.elapsed().as_secs_f64()
    );

    // down chapter-11: the monitoring stack goes, the app's tasks stay, volumes stay.
    let app_tasks = stack.running_tasks(&app);
    let (code, _, out) = stack.run(&["down", "11"]);
    assert_eq!(code, Some(0), "down 11: {out}");
    let left = docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.stack.namespace={monitoring}"),
    ]);
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "{left:?}"
    );
    assert_eq!(stack.running_tasks(&app), app_tasks);
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={monitoring}_"),
    ]);
    let volumes = String::from_utf8_lossy(&volumes.stdout).to_string();
    assert!(
        volumes.contains(&format!("{monitoring}_prometheus_data")),
        "{volumes}"
    );
    assert!(
        volumes.contains(&format!("{monitoring}_alertmanager_data")),
        "{volumes}"
    );
}
