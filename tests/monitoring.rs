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
    let project = beamops::project::Project::discover(Some(dir)).unwrap();
    let ctx = beamops::render::context(&project, "local").unwrap();
    let chapter = beamops::chapter::by_key("11-instrumentation").unwrap();
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
