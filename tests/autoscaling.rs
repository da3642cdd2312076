//! Chapter 10 (autoscaling): the aws environment root it renders (linted, never applied here)
//! and the node lifecycle its scripts drive, run for real against a local AWS API (moto) and a
//! Docker-in-Docker swarm (tests/common/dind.rs).

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestProject, example_copy, render_env_into};

/// The example with an aws environment `production` beside `local`.
pub fn aws_project(extra: &str) -> TestProject {
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\n{}",
            format_args!(
                "{}{extra}",
                "  production:\n    provider: aws\n    region: eu-west-1\n    managers: 3\n    workers: 2\n    min_workers: 1\n    max_workers: 6\n    domain: coord.example.com\n"
            )
        )
        .replace("\nenvironments:\n", "\nenvironments:\n"),
    );
    p
}

const ROOT_FILES: [&str; 4] = [
    "terraform/production/autoscaling.tf",
    "terraform/production/node/beamops-node",
    "terraform/production/node/beamops-node-bootstrap.service",
    "terraform/production/node/beamops-node-watch.service",
];

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let path = common::tool_path();
    std::env::split_paths(&path)
        .chain(std::iter::once(Path::new("/work/main/.ci/venv/bin").to_path_buf()))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool the test needs: CI must have it (.ci/setup installs it); elsewhere its absence is
/// said out loud and that part is skipped.
fn required_tool(name: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = tool(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: `{name}` is missing (.ci/setup installs it)"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED part of {test}: `{name}` is not installed !!!!!\n"
        );
    }
    found
}

#[test]
fn chapter_10_renders_the_workers_group_only_for_aws_environments() {
    let p = aws_project("");
    let files = render_env_into(&p, "10", "production");
    assert_eq!(files, ROOT_FILES);
    let local = common::render_into(&p, "10");
    assert!(local.is_empty(), "a local environment gets no ASG: {local:?}");
    for f in &files {
        insta::assert_snapshot!(f.replace('/', "_"), p.read(f));
    }
    let tf = p.read(ROOT_FILES[0]);
    // beamops.yaml's bounds and options reach the group and the policy.
    for line in [
        "min_size                  = 1",
        "max_size                  = 6",
        "desired_capacity          = 2",
        "target_value = 60",
        "http_tokens                 = \"required\"",
        "path                = \"/health\"",
        "autoscaling:EC2_INSTANCE_TERMINATING",
    ] {
        assert!(tf.contains(line), "autoscaling.tf lacks `{line}`");
    }
    let mode = std::fs::metadata(p.file(ROOT_FILES[1])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o755);
}

#[test]
fn the_rendered_root_parses_is_formatted_and_passes_checkov() {
    let test = "the_rendered_root_parses_is_formatted_and_passes_checkov";
    let p = aws_project("");
    render_env_into(&p, "10", "production");
    let root = p.file("terraform/production");

    // HCL: every block parses, and the instance profile grants exactly two actions.
    let body: hcl::Body = hcl::from_str(&p.read(ROOT_FILES[0])).expect("autoscaling.tf parses");
    let actions: Vec<String> = body
        .blocks()
        .filter(|b| b.identifier() == "data" && b.labels().get(1).map(|l| l.as_str()) == Some("worker"))
        .flat_map(|b| b.body().blocks().filter(|s| s.identifier() == "statement"))
        .flat_map(|s| s.body().attributes().filter(|a| a.key() == "actions"))
        .map(|a| a.expr().to_string().split_whitespace().collect::<String>())
        .collect();
    assert_eq!(
        actions,
        [
            "[\"ssm:GetParameter\"]",
            "[\"autoscaling:CompleteLifecycleAction\"]"
        ],
        "least privilege"
    );

    if let Some(terraform) = required_tool("terraform", test) {
        let out = Command::new(terraform)
            .args(["fmt", "-check", "-diff", "-recursive"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform fmt -check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(shellcheck) = required_tool("shellcheck", test) {
        let out = Command::new(shellcheck)
            .arg(p.file(ROOT_FILES[1]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    if let Some(checkov) = required_tool("checkov", test) {
        let out = Command::new(checkov)
            .args(["--directory", ".", "--framework", "terraform", "--quiet", "--compact"])
            .args(["--output", "json", "--skip-download"])
            .current_dir(&root)
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("checkov JSON ({e}): {text}"));
        let summary = &report["summary"];
        eprintln!("checkov: {summary}");
        assert_eq!(summary["failed"], 0, "checkov failed checks: {text}");
        assert!(summary["passed"].as_u64().unwrap_or(0) > 10, "{summary}");
        // Each skip carries its reason inline, next to the resource.
        for skipped in report["results"]["skipped_checks"].as_array().into_iter().flatten() {
            let why = skipped["check_result"]["suppress_comment"].as_str().unwrap_or("");
            assert!(why.len() > 20, "a skip without a reason: {skipped}");
        }
    }
}
