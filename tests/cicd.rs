//! Chapter 04 (CI/CD): the generated workflows under the field's strictest linters, the CI
//! workflow really run by act on this machine (self-hosted, remote actions mapped to local
//! stand-ins in tests/act/), and `secrets push-github` against a local HTTPS stand-in of the two
//! GitHub endpoints that opens the sealed box with the matching private key.
//!
//! What cannot run here: GitHub-hosted runners and the real API (no route to GitHub).
//! The act runs are gated by BEAMOPS_DOCKER_TESTS=1 (act starts by talking to the Engine).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::{
    TestProject, docker, docker_tests_enabled, example_copy, json, render_into, tool_path,
};

const STANDINS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/act");

/// A GitHub host key (github.com's published ed25519 key): a well-formed known_hosts line.
const KNOWN_HOST: &str = "swarm1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn run_tool(tool: &str, args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("PATH", tool_path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{tool} is not on PATH ({e}); run `bash .ci/setup` (it installs it into .ci/venv)"
            )
        })
}

/// The tool must pass with nothing at all to say.
fn zero_findings(tool: &str, args: &[&str], dir: &Path) {
    let out = run_tool(tool, args, dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{tool} {args:?} has findings:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if tool == "actionlint" {
        assert!(stdout.trim().is_empty(), "{stdout}");
    }
}

/// A Phoenix project with Ecto/PostgreSQL, assets and dialyxir; staging deployed over ssh://,
/// production by tags; the Postgres image pinned by digest.
fn phoenix_project() -> TestProject {
    let p = example_copy("phx");
    let mix = p.read("mix.exs").replace(
        "defp deps do\n    []",
        "defp deps do\n    [\n      {:phoenix, \"~> 1.7\"},\n      {:phoenix_ecto, \"~> 4.5\"},\n      {:ecto_sql, \"~> 3.12\"},\n      {:postgrex, \">= 0.0.0\"},\n      {:dialyxir, \"~> 1.4\", only: [:dev, :test], runtime: false}\n    ]",
    );
    assert!(
        mix.contains(":postgrex"),
        "the example's deps/0 changed shape"
    );
    p.write("mix.exs", &mix);
    p.write("mix.lock", "%{}\n");
    p.write("assets/js/app.js", "console.log(\"app\")\n");
    let yaml = p
        .read("beamops.yaml")
        .replacen(
            "image:\n",
            &format!(
                "image:\n  postgres: postgres:17.12-trixie@sha256:{}\n",
                "0123456789abcdef".repeat(4)
            ),
            1,
        )
        .replacen(
            "  staging:\n    provider: aws\n",
            &format!(
                "  staging:\n    provider: aws\n    docker_host: ssh://deploy@swarm1.example.com\n    known_hosts:\n      - {KNOWN_HOST}\n"
            ),
            1,
        );
    assert!(
        yaml.contains("known_hosts") && yaml.contains("@sha256:"),
        "{yaml}"
    );
    p.write("beamops.yaml", &yaml);
    p
}

/// The example deploying two aws environments: staging with its deploy role in beamops.yaml,
/// reached at the manager chapter 06 records (host key pinned), production by tags with neither;
/// a shared (S3) Terraform state, so the deploy jobs apply the environment's root too.
fn aws_project() -> TestProject {
    let p = example_copy("awsci");
    let yaml = p
        .read("beamops.yaml")
        .replacen(
            "  staging:\n    provider: aws\n",
            &format!(
                "  staging:\n    provider: aws\n    deploy_role_arn: {ROLE}\n    known_hosts:\n      - {KNOWN_HOST}\n"
            ),
            1,
        );
    assert!(yaml.contains(ROLE), "{yaml}");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  terraform:\n    state:\n      backend: s3\n      bucket: acme-tfstate\n      region: eu-west-1\n"
        ),
    );
    p
}

const ROLE: &str = "arn:aws:iam::123456789012:role/coordination-staging-deploy";

/// The example's beamops.yaml with `lines` added to its `ci:` mapping.
fn with_ci(yaml: &str, lines: &str) -> String {
    assert!(yaml.contains("\nci:\n"), "{yaml}");
    yaml.replacen("\nci:\n", &format!("\nci:\n{lines}"), 1)
}

fn uses_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("uses: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_workflows_have_zero_findings_for_the_example_and_a_phoenix_database_project() {
    let example = example_copy("lintci");
    let phoenix = phoenix_project();
    let aws = aws_project();
    for (name, p) in [("example", &example), ("phoenix", &phoenix), ("aws", &aws)] {
        let files = render_into(p, "04");
        assert_eq!(
            files,
            [".github/workflows/ci.yml", ".github/workflows/deploy.yml"],
            "{name}"
        );
        zero_findings("actionlint", &["-no-color"], p.path());
        zero_findings(
            "zizmor",
            &["--offline", "--persona=pedantic", ".github/workflows"],
            p.path(),
        );
        zero_findings(
            "check-jsonschema",
            &[
                "--builtin-schema",
                "vendor.github-workflows",
                ".github/workflows/ci.yml",
                ".github/workflows/deploy.yml",
            ],
            p.path(),
        );
        // Every `uses:` is a full commit from the embedded table, with its version as comment.
        let pins: Vec<String> = beamops::cicd::pins().iter().map(|p| p.uses()).collect();
        for f in &files {
            let text = p.read(f);
            let uses = uses_lines(&text);
            assert!(!uses.is_empty(), "{f}");
            for u in uses {
                // `owner/name/sub@commit # v` (actions/cache/restore) is the repository's pin.
                let (action, rest) = u.split_once('@').unwrap();
                let repo: Vec<&str> = action.splitn(3, '/').take(2).collect();
                let pinned = format!("{}@{rest}", repo.join("/"));
                assert!(
                    pins.contains(&pinned),
                    "{name} {f}: `{u}` is not a pin of the table"
                );
            }
            assert!(!text.contains("pull_request_target"), "{f}");
            assert!(text.contains("permissions: {}"), "{f}");
            // No expression inside a `run:` line: untrusted input goes through `env:`.
            for line in text.lines().filter(|l| l.trim_start().starts_with("run:")) {
                assert!(!line.contains("${{"), "{f}: {line}");
            }
        }
    }

    let ci = example.read(".github/workflows/ci.yml");
    assert!(!ci.contains("services:") && !ci.contains("dialyzer") && !ci.contains("assets"));
    let ci = phoenix.read(".github/workflows/ci.yml");
    for expected in [
        "services:",
        &format!(
            "image: postgres:17.12-trixie@sha256:{}",
            "0123456789abcdef".repeat(4)
        ),
        "run: mix assets.build",
        "run: mix dialyzer --format github",
        "hashFiles('mix.lock')",
        "steps.beam.outputs.otp-version",
    ] {
        assert!(
            ci.contains(expected),
            "phoenix ci.yml lacks {expected}:\n{ci}"
        );
    }
    let deploy = phoenix.read(".github/workflows/deploy.yml");
    assert!(deploy.contains(KNOWN_HOST), "{deploy}");
    assert!(deploy.contains("StrictHostKeyChecking yes"));
    assert!(!deploy.contains("StrictHostKeyChecking no"));
    assert!(deploy.contains("secrets.DEPLOY_SSH_KEY"));
    assert!(deploy.contains("cancel-in-progress: false"));
    // The install is cached by its pinned revision: restored first, built only on a miss, and
    // saved only by a run on a branch (the default branch: a pull request's caches stay its own).
    let restore = deploy
        .find("uses: actions/cache/restore@")
        .expect("a restore step");
    let install = deploy.find("name: Install beamops").unwrap();
    let save = deploy
        .find("uses: actions/cache/save@")
        .expect("a save step");
    assert!(restore < install && install < save, "{deploy}");
    assert!(deploy.contains("if: steps.beamops-cache.outputs.cache-hit != 'true'"));
    assert!(deploy.contains(
        "if: github.ref_type == 'branch' && steps.beamops-cache.outputs.cache-hit != 'true'"
    ));
    assert!(!deploy.contains("uses: actions/cache@"), "{deploy}");
    assert!(
        deploy.contains("beamops deploy production --yes"),
        "{deploy}"
    );
    // Every template change visible in review (the example's own are committed files).
    insta::assert_snapshot!("phoenix_ci.yml", ci);
    insta::assert_snapshot!("phoenix_deploy.yml", deploy);
    let example_deploy = example.read(".github/workflows/deploy.yml");
    assert!(
        !example_deploy.contains("DEPLOY_SSH_KEY"),
        "{example_deploy}"
    );

    // aws environments: each deploy job assumes its environment's role through OIDC, with
    // `id-token: write` on that job only and no stored AWS key anywhere.
    let deploy = aws.read(".github/workflows/deploy.yml");
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&deploy).unwrap();
    assert_eq!(
        parsed["permissions"],
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>("{}").unwrap()
    );
    let aws_pin = beamops::cicd::pin("aws-actions/configure-aws-credentials")
        .unwrap()
        .uses();
    for (job, env, role) in [
        ("deploy-staging", "staging", ROLE),
        (
            "deploy-production",
            "production",
            "${{ vars.AWS_DEPLOY_ROLE_ARN }}",
        ),
    ] {
        let job = &parsed["jobs"][job];
        assert_eq!(job["environment"].as_str(), Some(env), "{deploy}");
        assert_eq!(job["permissions"]["id-token"].as_str(), Some("write"));
        assert_eq!(job["permissions"]["contents"].as_str(), Some("read"));
        let steps = job["steps"].as_sequence().unwrap();
        let at = |needle: &str| {
            steps
                .iter()
                .position(|s| {
                    s["uses"].as_str().is_some_and(|u| u.starts_with(needle))
                        || s["run"].as_str().is_some_and(|r| r.starts_with(needle))
                })
                .unwrap_or_else(|| panic!("{env}: no step {needle}:\n{deploy}"))
        };
        let credentials = &steps[at("aws-actions/configure-aws-credentials@")];
        assert_eq!(credentials["with"]["role-to-assume"].as_str(), Some(role));
        assert_eq!(
            credentials["with"]["aws-region"].as_str(),
            Some("eu-west-1")
        );
        assert_eq!(credentials["with"].as_mapping().unwrap().len(), 2);
        // Credentials first, then the shared state's root applied, then the deploy.
        let apply = at(&format!("beamops up chapter-06 --env {env} --no-deps"));
        assert!(at("aws-actions/configure-aws-credentials@") < apply);
        assert!(at("hashicorp/setup-terraform@") < apply);
        assert!(apply < at(&format!("beamops deploy {env}")));
    }
    assert!(deploy.contains(&format!("uses: {aws_pin}")), "{deploy}");
    for stored in [
        "aws-access-key-id",
        "aws-secret-access-key",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(!deploy.contains(stored), "{stored}:\n{deploy}");
    }
    // Staging's pinned host key reaches the ssh config; production has none, so no ssh step
    // (its deploy is blocked naming known_hosts) and no DEPLOY_SSH_KEY secret is asked for.
    assert_eq!(
        deploy.matches("secrets.DEPLOY_SSH_KEY").count(),
        1,
        "{deploy}"
    );
    assert!(deploy.contains(KNOWN_HOST));
    // With a local state (the example, the Phoenix project) no Terraform runs from a runner's
    // throwaway copy, so no job asks for an OIDC token.
    for text in [
        &example_deploy,
        &phoenix.read(".github/workflows/deploy.yml"),
    ] {
        assert!(!text.contains("id-token"), "{text}");
        assert!(!text.contains("configure-aws-credentials"), "{text}");
    }
    insta::assert_snapshot!("aws_deploy.yml", deploy);
}

/// Chapter 02's branch protection requires exactly the checks chapter 04's ci.yml reports (a
/// check is a job's `name:`): a required name no job has would block every merge.
#[test]
fn branch_protection_requires_exactly_the_checks_ci_yml_reports() {
    for (p, dialyzer) in [(example_copy("checks"), false), (phoenix_project(), true)] {
        render_into(&p, "04");
        render_into(&p, "02");
        let ci: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&p.read(".github/workflows/ci.yml")).unwrap();
        let mut jobs: Vec<String> = ci["jobs"]
            .as_mapping()
            .unwrap()
            .values()
            .map(|j| j["name"].as_str().expect("every job is named").to_string())
            .collect();
        jobs.sort();
        let main = p.read("terraform/github/main.tf");
        let line = main
            .lines()
            .find_map(|l| l.trim().strip_prefix("required_checks"))
            .expect("required_checks in the github root");
        let list = line.trim().trim_start_matches('=').trim();
        let mut required: Vec<String> = serde_json::from_str(list).unwrap();
        required.sort();
        assert_eq!(required, jobs, "{main}");
        assert_eq!(jobs.iter().any(|j| j == "Dialyzer"), dialyzer, "{jobs:?}");
    }
    // Configured, the list is the user's.
    let p = example_copy("checks2");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  terraform:\n    github:\n      required_checks: [Test, Audit]\n"
        ),
    );
    render_into(&p, "02");
    assert!(
        p.read("terraform/github/main.tf")
            .contains("required_checks      = [\"Test\", \"Audit\"]")
    );
}

#[test]
fn without_a_deployed_environment_there_is_no_deploy_workflow() {
    let p = example_copy("nodeploy");
    p.write(
        "beamops.yaml",
        &with_ci(
            &p.read("beamops.yaml"),
            "  deploy_on_push: \"\"\n  deploy_on_tag: \"\"\n",
        ),
    );
    assert_eq!(render_into(&p, "04"), [".github/workflows/ci.yml"]);
}

#[test]
fn bad_ci_settings_are_refused_when_the_file_loads() {
    for (extra, key) in [
        ("  api_url: http://api.github.com\n", "ci.api_url"),
        ("  deploy_on_push: stagin\n", "ci.deploy_on_push"),
        ("  repository: not a repo\n", "ci.repository"),
        ("  default_branch: \"ma..in\"\n", "ci.default_branch"),
    ] {
        let p = TestProject::new();
        p.write("beamops.yaml", &with_ci(&p.read("beamops.yaml"), extra));
        let out = p.beamops().args(["plan", "04"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(key), "{extra}: {err}");
    }
    let p = TestProject::new();
    let yaml = p.read("beamops.yaml").replacen(
        "  staging:\n    provider: aws\n",
        "  staging:\n    provider: aws\n    known_hosts:\n      - \"swarm1 ssh-ed25519 bm90LWEta2V5\"\n",
        1,
    );
    p.write("beamops.yaml", &yaml);
    let out = p.beamops().args(["plan", "04"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("known_hosts"), "{err}");
}

/// Without `deploy_role_arn` in beamops.yaml, the role chapter 02 recorded (its Terraform output
/// in the state) is the one the job assumes; without either, the GitHub environment variable.
#[test]
fn the_deploy_job_assumes_the_role_chapter_02_recorded() {
    let p = aws_project();
    let recorded = "arn:aws:iam::210987654321:role/coordination-production-deploy";
    let dir = p.path().join(".beamops");
    let mut state = beamops::state::State::read(&dir).unwrap();
    state
        .chapter_mut("production", "02-terraform")
        .actions
        .insert(
            "terraform-applied".into(),
            beamops::state::ActionRecord {
                outcome: beamops::state::Outcome::Applied,
                inputs_digest: None,
                data: serde_json::json!({
                    "root": "terraform/production",
                    "outputs": { "deploy_role_arn": recorded },
                }),
                at: beamops::state::now_rfc3339(),
            },
        );
    state.write(&dir).unwrap();
    render_into(&p, "04");
    let deploy: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&p.read(".github/workflows/deploy.yml")).unwrap();
    let role = |job: &str| {
        deploy["jobs"][job]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .find_map(|s| s["with"]["role-to-assume"].as_str())
            .unwrap()
            .to_string()
    };
    assert_eq!(role("deploy-production"), recorded);
    // beamops.yaml wins over the record.
    assert_eq!(role("deploy-staging"), ROLE);
}

/// An aws environment deployed without docker_host needs what a runner cannot make up: the
/// manager's address (from a shared Terraform state) and its pinned host key.
#[test]
fn an_aws_deploy_job_needs_a_shared_state_and_pinned_host_keys() {
    let workflows_valid = |p: &TestProject| {
        let out = p
            .beamops()
            .env("PATH", tool_path())
            .args(["plan", "04", "--format", "json"])
            .output()
            .unwrap();
        let plan = json(&out.stdout);
        plan["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["actions"].as_array().unwrap())
            .find(|a| a["id"] == "workflows-valid")
            .cloned()
            .unwrap_or_else(|| panic!("no workflows-valid in {plan}"))
    };
    // The example: staging and production on aws, a local state, no host keys.
    let example = example_copy("awsneeds");
    // Blocked (exit 3), not failed: what is missing is the user's to supply, as on a fresh project.
    let check = workflows_valid(&example);
    assert_eq!(check["status"], "blocked", "{check}");
    let detail = check["detail"].as_str().unwrap();
    for env in ["staging", "production"] {
        assert!(
            detail.contains(&format!(
                "aws environment {env} has no docker_host and the Terraform state is local"
            )),
            "{detail}"
        );
        assert!(
            detail.contains(&format!("environments.{env}.known_hosts")),
            "{detail}"
        );
    }
    // A shared state and staging's key pinned: only production's missing key is left.
    let aws = aws_project();
    let check = workflows_valid(&aws);
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("state is local"), "{detail}");
    assert!(
        !detail.contains("environments.staging.known_hosts"),
        "{detail}"
    );
    assert!(
        detail.contains("environments.production.known_hosts"),
        "{detail}"
    );
}

// ---------------------------------------------------------------------------------------------
// act: the generated ci.yml run on this machine

/// act on `dir`'s workflow, self-hosted, the pinned actions mapped to tests/act's stand-ins.
/// Returns (success, log).
fn act(dir: &Path, workflow: &str, job: &str, extra: &[String]) -> (bool, String) {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("act");
    cmd.current_dir(dir)
        .env("PATH", tool_path())
        // act keeps its host workspaces under $XDG_CACHE_HOME/act: a throwaway one per run.
        .env("XDG_CACHE_HOME", cache.path())
        .args(["push", "-W", workflow, "-j", job])
        .args(["-P", "ubuntu-24.04=-self-hosted", "--no-cache-server"])
        .args(["--env", &format!("STANDIN_SOURCE_DIR={}", dir.display())]);
    for (action, standin) in [
        ("actions/checkout", "checkout"),
        ("erlef/setup-beam", "setup-beam"),
        ("actions/cache", "cache"),
        ("docker/setup-buildx-action", "setup-buildx"),
        ("docker/build-push-action", "build-push"),
    ] {
        let pin = beamops::cicd::pin(action).unwrap();
        cmd.arg("--local-repository")
            .arg(format!("{action}@{}={STANDINS}/{standin}", pin.commit));
    }
    cmd.args(extra);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("act is not on PATH ({e}); run `bash .ci/setup`"));
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), log)
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "beamops tests")
        .env("GIT_AUTHOR_EMAIL", "tests@beamops.invalid")
        .env("GIT_COMMITTER_NAME", "beamops tests")
        .env("GIT_COMMITTER_EMAIL", "tests@beamops.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// The step names act reports as passed and as failed, in order.
fn steps(log: &str) -> (Vec<String>, Vec<String>) {
    let pick = |mark: &str| {
        log.lines()
            .filter_map(|l| l.split_once(mark).map(|(_, rest)| rest))
            .map(|rest| {
                rest.rsplit_once(" [")
                    .map_or(rest, |(name, _)| name)
                    .trim()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    (pick("✅  Success - Main "), pick("❌  Failure - Main "))
}

const CI_STEPS: [&str; 7] = [
    "Check out",
    "Set up Erlang/OTP and Elixir from .tool-versions",
    "Cache deps and _build",
    "Fetch dependencies",
    "Compile (warnings are errors)",
    "Check formatting",
    "Run tests",
];

#[test]
fn act_runs_the_generated_ci_workflow_and_it_stops_at_the_failing_step() {
    if !docker_tests_enabled("act_runs_the_generated_ci_workflow_and_it_stops_at_the_failing_step")
    {
        return;
    }
    let p = example_copy("actci");
    assert!(
        p.file(".github/workflows/ci.yml").is_file(),
        "the example commits its workflows"
    );
    git(p.path(), &["branch", "-M", "main"]);
    let started = std::time::Instant::now();
    let (ok, log) = act(p.path(), ".github/workflows/ci.yml", "test", &[]);
    eprintln!(
        "act ci.yml on the example: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (passed, failed) = steps(&log);
    assert!(ok && failed.is_empty(), "{log}");
    for step in CI_STEPS {
        assert!(
            passed.iter().any(|s| s.contains(step)),
            "step `{step}` did not pass:\n{log}"
        );
    }
    assert!(log.contains(" 0 failures"), "{log}");

    // A formatting violation: the run fails at "Check formatting" and runs no tests.
    p.write(
        "lib/coordination/badly_formatted.ex",
        "defmodule Coordination.BadlyFormatted do\n  def x(  ),   do:   1\nend\n",
    );
    git(p.path(), &["add", "-A"]);
    git(p.path(), &["commit", "-qm", "badly formatted"]);
    let (ok, log) = act(p.path(), ".github/workflows/ci.yml", "test", &[]);
    let (passed, failed) = steps(&log);
    assert!(!ok, "{log}");
    assert_eq!(failed, ["Check formatting"], "{log}");
    assert!(passed.iter().any(|s| s.contains("Compile")), "{log}");
    assert!(!passed.iter().any(|s| s == "Run tests"), "{log}");

    // A failing test: formatting passes, the run fails at "Run tests".
    git(
        p.path(),
        &["rm", "-q", "lib/coordination/badly_formatted.ex"],
    );
    p.write(
        "test/failing_test.exs",
        "defmodule Coordination.FailingTest do\n  use ExUnit.Case\n\n  test \"fails\" do\n    assert 1 + 1 == 3\n  end\nend\n",
    );
    git(p.path(), &["add", "-A"]);
    git(p.path(), &["commit", "-qm", "a failing test"]);
    let (ok, log) = act(p.path(), ".github/workflows/ci.yml", "test", &[]);
    let (passed, failed) = steps(&log);
    assert!(!ok, "{log}");
    assert_eq!(failed, ["Run tests"], "{log}");
    assert!(passed.iter().any(|s| s == "Check formatting"), "{log}");
    assert!(log.contains("1 failure"), "{log}");
}

/// The `image` job of the example's ci.yml: chapter 03's Dockerfile built from a fresh checkout
/// (the Engine's builder stands in for Buildx; GitHub's cache service cannot be reached, so
/// `cache-from`/`cache-to` are the one part not run).
#[test]
fn act_runs_the_ci_workflows_image_job_and_it_builds_chapter_03s_dockerfile() {
    let test = "act_runs_the_ci_workflows_image_job_and_it_builds_chapter_03s_dockerfile";
    if !docker_tests_enabled(test) {
        return;
    }
    let p = example_copy("actimg");
    git(p.path(), &["branch", "-M", "main"]);
    // The Dockerfile's base images: built offline from Debian when absent (no registry here).
    let bootstrap = p.beamops().args(["images", "bootstrap"]).output().unwrap();
    assert!(bootstrap.status.success(), "{bootstrap:?}");
    let ci = p.read(".github/workflows/ci.yml");
    let tag = ci
        .lines()
        .find_map(|l| l.trim().strip_prefix("tags: "))
        .expect("the image job names its tag")
        .to_string();
    let started = std::time::Instant::now();
    let (ok, log) = act(p.path(), ".github/workflows/ci.yml", "image", &[]);
    eprintln!(
        "act ci.yml image job on the example: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (passed, failed) = steps(&log);
    let built = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    let _ = docker(&["rmi", "-f", &tag]);
    assert!(ok && failed.is_empty(), "{log}");
    for step in [
        "Check out",
        "Set up Buildx",
        "Build the release image (chapter 03's Dockerfile), layers cached",
    ] {
        assert!(
            passed.iter().any(|s| s == step),
            "step `{step}` did not pass:\n{log}"
        );
    }
    assert!(
        built.status.success(),
        "no image {tag} after the job:\n{log}"
    );
    let id = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(log.contains(&format!("built {tag}: {id}")), "{id}\n{log}");
}

// ---------------------------------------------------------------------------------------------
// push-github against a local HTTPS stand-in of GitHub's API

/// A test CA and a server certificate for 127.0.0.1, made with openssl.
fn test_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=stand-in CA",
    ]);
    openssl(&args);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&args);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    dir
}

#[derive(Default)]
struct Api {
    /// (environment, name) → the value, opened from the sealed box with the private key.
    stored: Vec<(String, String, Vec<u8>)>,
    /// Every request line and its headers, as received (to check the value never travels plain).
    raw: Vec<String>,
}

/// The stand-in: `GET …/environments/ENV/secrets/public-key`, `PUT …/secrets/NAME`,
/// `GET …/secrets` for repository acme/app; token `good` may do everything, `readonly` may not
/// write (403), anything else is 401; another repository is 404.
fn serve(pki: &Path, key: crypto_box::SecretKey) -> (u16, Arc<Mutex<Api>>) {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let private =
        rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join("server-key.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let api = Arc::new(Mutex::new(Api::default()));
    let state = api.clone();
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key().as_bytes());
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let _ = handle(&mut tls, &state, &key, &public);
        }
    });
    (port, api)
}

fn handle(
    stream: &mut impl ReadWrite,
    api: &Mutex<Api>,
    key: &crypto_box::SecretKey,
    public: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let length: usize = head
        .iter()
        .find_map(|h| {
            h.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (method, path) = {
        let mut words = head[0].split_whitespace();
        (
            words.next().unwrap_or("").to_string(),
            words.next().unwrap_or("").to_string(),
        )
    };
    let auth = head
        .iter()
        .find_map(|h| {
            h.strip_prefix("authorization: ")
                .or_else(|| h.strip_prefix("Authorization: "))
        })
        .unwrap_or("")
        .to_string();
    let mut state = api.lock().unwrap();
    state.raw.push(format!(
        "{}\n{}",
        head.join("\n"),
        String::from_utf8_lossy(&body)
    ));
    let path = path.split('?').next().unwrap_or("").to_string();
    let (status, answer) = if auth != "Bearer good" && auth != "Bearer readonly" {
        (401, r#"{"message":"Bad credentials"}"#.to_string())
    } else if !path.starts_with("/repos/acme/app/") {
        (404, r#"{"message":"Not Found"}"#.to_string())
    } else if let Some(rest) = path.strip_prefix("/repos/acme/app/environments/") {
        let (env, tail) = rest.split_once("/secrets").unwrap_or((rest, ""));
        match (method.as_str(), tail) {
            ("GET", "/public-key") => (200, format!(r#"{{"key_id":"kid-7","key":"{public}"}}"#)),
            ("GET", "") => {
                let names: Vec<String> = state
                    .stored
                    .iter()
                    .filter(|(e, _, _)| e == env)
                    .map(|(_, n, _)| format!(r#"{{"name":"{n}"}}"#))
                    .collect();
                (
                    200,
                    format!(
                        r#"{{"total_count":{},"secrets":[{}]}}"#,
                        names.len(),
                        names.join(",")
                    ),
                )
            }
            ("PUT", name) if auth == "Bearer readonly" => {
                let _ = name;
                (
                    403,
                    r#"{"message":"Resource not accessible by personal access token"}"#.into(),
                )
            }
            ("PUT", name) => {
                let name = name.trim_start_matches('/').to_string();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["key_id"], "kid-7");
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(json["encrypted_value"].as_str().unwrap())
                    .unwrap();
                let value = key
                    .unseal(&sealed)
                    .expect("the sealed box opens with the private key");
                let existed = state.stored.iter().any(|(e, n, _)| e == env && *n == name);
                state.stored.retain(|(e, n, _)| !(e == env && *n == name));
                state.stored.push((env.to_string(), name, value));
                (if existed { 204 } else { 201 }, String::new())
            }
            _ => (404, r#"{"message":"Not Found"}"#.into()),
        }
    } else {
        (404, r#"{"message":"Not Found"}"#.to_string())
    };
    drop(state);
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Not Found",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn api_project(port: u16, repository: &str) -> TestProject {
    let p = TestProject::new();
    p.write(
        "beamops.yaml",
        &with_ci(
            &p.read("beamops.yaml"),
            &format!("  repository: {repository}\n  api_url: https://127.0.0.1:{port}\n"),
        ),
    );
    p
}

/// `secrets push-github ENV NAME` with `value` on stdin, the token in GH_TOKEN (or none), the
/// stand-in's CA trusted through SSL_CERT_FILE; (exit code, stdout, stderr).
fn push(
    p: &TestProject,
    ca: &Path,
    token: Option<&str>,
    args: &[&str],
    value: &str,
) -> (i32, String, String) {
    let mut cmd = p.beamops();
    cmd.args(["secrets", "push-github"])
        .args(args)
        .env("SSL_CERT_FILE", ca)
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        // No `gh` to fall back on: only GH_TOKEN speaks for the user here.
        .env("PATH", "/usr/bin:/bin")
        .write_stdin(value.to_string());
    if let Some(t) = token {
        cmd.env("GH_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn files_contain(root: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(hit) = files_contain(&path, needle) {
                return Some(hit);
            }
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            return Some(path);
        }
    }
    None
}

#[test]
fn push_github_seals_the_exact_value_for_the_environment_and_never_shows_it() {
    let pki = test_pki();
    let key = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
    let (port, api) = serve(pki.path(), key);
    let ca = pki.path().join("ca.pem");
    let p = api_project(port, "acme/app");
    let value =
        "AGE-SECRET-KEY-1\"quoted\" 'single' $HOME `tick`\nline two\ttab ünïcødé ✓ 🗝\n\nlast";

    let (code, out, err) = push(&p, &ca, Some("good"), &["staging", "SOPS_AGE_KEY"], value);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("SOPS_AGE_KEY stored") && out.contains("(created)"),
        "{out}"
    );
    {
        let api = api.lock().unwrap();
        assert_eq!(api.stored.len(), 1);
        let (env, name, got) = &api.stored[0];
        assert_eq!((env.as_str(), name.as_str()), ("staging", "SOPS_AGE_KEY"));
        assert_eq!(
            got.as_slice(),
            value.as_bytes(),
            "the sealed box holds exactly the value"
        );
        for raw in &api.raw {
            assert!(
                !raw.contains("ünïcødé") && !raw.contains("line two"),
                "plain value on the wire: {raw}"
            );
        }
    }
    for text in [&out, &err] {
        assert!(
            !text.contains("ünïcødé") && !text.contains("line two"),
            "{text}"
        );
    }
    assert_eq!(files_contain(p.path(), "ünïcødé".as_bytes()), None);

    // Again: updated, not created; JSON names no value either.
    let (code, out, _) = push(
        &p,
        &ca,
        Some("good"),
        &["staging", "SOPS_AGE_KEY", "--format", "json"],
        "second",
    );
    assert_eq!(code, 0, "{out}");
    let report = json(out.as_bytes());
    assert_eq!(report["created"], false, "{report}");
    assert_eq!(report["repository"], "acme/app");
    assert!(!out.contains("second"), "{out}");
    assert_eq!(api.lock().unwrap().stored[0].2, b"second");

    // Chapter 04's check reads the names back: production still lacks its key.
    let plan = p
        .beamops()
        .args(["plan", "04", "--format", "json"])
        .env("SSL_CERT_FILE", &ca)
        .env("GH_TOKEN", "good")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let report = json(&plan.stdout);
    let action = report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actions"].as_array().unwrap().clone())
        .find(|a| a["id"] == "github-secrets")
        .unwrap_or_else(|| panic!("no github-secrets action: {report}"));
    assert_eq!(action["status"], "failed", "{action}");
    let detail = action["detail"].as_str().unwrap();
    assert!(
        detail.contains("SOPS_AGE_KEY in environment production")
            && !detail.contains("environment staging"),
        "{detail}"
    );
}

#[test]
fn push_github_names_the_token_scope_or_the_repository_when_github_refuses() {
    let pki = test_pki();
    let key = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
    let (port, api) = serve(pki.path(), key);
    let ca = pki.path().join("ca.pem");
    let p = api_project(port, "acme/app");

    let (code, _, err) = push(&p, &ca, Some("wrong"), &["staging", "SOPS_AGE_KEY"], "v");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401") && err.contains("GH_TOKEN"), "{err}");

    let (code, _, err) = push(&p, &ca, Some("readonly"), &["staging", "SOPS_AGE_KEY"], "v");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("403") && err.contains("Secrets: read and write"),
        "{err}"
    );

    let missing = api_project(port, "acme/missing");
    let (code, _, err) = push(
        &missing,
        &ca,
        Some("good"),
        &["staging", "SOPS_AGE_KEY"],
        "v",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("404") && err.contains("acme/missing") && err.contains("ci.repository"),
        "{err}"
    );

    // No token at all: blocked before any value is read or any request is made.
    let before = api.lock().unwrap().raw.len();
    let (code, _, err) = push(&p, &ca, None, &["staging", "SOPS_AGE_KEY"], "v");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("GH_TOKEN") && err.contains("gh auth login"),
        "{err}"
    );
    assert_eq!(api.lock().unwrap().raw.len(), before);
    assert!(api.lock().unwrap().stored.is_empty());

    // A server whose certificate no trusted CA signed is refused: the default is verified https.
    let (code, _, err) = push(
        &p,
        Path::new("/dev/null"),
        Some("good"),
        &["staging", "SOPS_AGE_KEY"],
        "v",
    );
    assert_ne!(code, 0, "{err}");
    assert!(api.lock().unwrap().stored.is_empty());
}

// ---------------------------------------------------------------------------------------------
// act: the generated deploy.yml run against the local swarm

/// Removes what the deploy test made on the Engine: the stack, its secrets, containers, images.
struct StackCleanup(String);

impl Drop for StackCleanup {
    fn drop(&mut self) {
        let stack = &self.0;
        let rt = beamops::docker::runtime().unwrap();
        if let Ok(daemon) = rt.block_on(beamops::docker::connect("unix:///var/run/docker.sock"))
            && let Err(e) = rt.block_on(beamops::swarm::converge::remove(&daemon, stack, true))
        {
            eprintln!("cleanup of stack {stack} failed: {e:#}");
        }
        let label = format!("label=com.docker.stack.namespace={stack}");
        for kind in ["secret", "config"] {
            let out = common::docker(&[kind, "ls", "-q", "--filter", &label]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = common::docker(&[kind, "rm", id]);
            }
        }
        let out = common::docker(&["ps", "-aq", "--filter", &label]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = common::docker(&["rm", "-f", id]);
        }
        let out = common::docker(&["images", "-q", stack]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = common::docker(&["rmi", "-f", id]);
        }
    }
}

fn service_image(service: &str) -> String {
    let out = common::docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        service,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The deploy workflow, run by act on this machine: the job installs beamops with
/// `cargo install --locked --git <this checkout's repository> --rev <its HEAD>` (the workflow's
/// own step; CARGO_TARGET_DIR keeps the compiled dependencies between runs), installs sops from
/// PyPI, writes the age key given as a secret, and `beamops deploy local` rolls the new commit
/// out on the local swarm. The key never appears in act's log nor stays on disk.
#[test]
fn act_runs_the_generated_deploy_workflow_against_the_local_swarm() {
    let test = "act_runs_the_generated_deploy_workflow_against_the_local_swarm";
    if !common::heavy_tests_enabled(test, "a cold cargo install and a deploy through act") {
        return;
    }
    let app = format!("cicd{}", std::process::id());
    let service = format!("{app}_app");
    let _cleanup = StackCleanup(app.clone());
    let p = example_copy(&app);
    git(p.path(), &["branch", "-M", "main"]);

    // beamops as the workflow installs it: this checkout's committed HEAD, from its repository.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let common_dir = git_out(
        source,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    );
    let rev = git_out(source, &["rev-parse", "HEAD"]);
    let yaml = p.read("beamops.yaml");
    // The example's ci mapping, minus its `beamops:` part, then ours.
    let yaml: String = yaml
        .lines()
        .filter(|l| !l.starts_with("  beamops:") && !l.starts_with("    rev: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let yaml = with_ci(
        &yaml,
        &format!(
            "  deploy_on_push: local\n  deploy_on_tag: \"\"\n  beamops:\n    git: file://{common_dir}\n    rev: {rev}\n"
        ),
    )
    .replacen(
        "  local:\n    provider: local\n    replicas: 1\n",
        "  local:\n    provider: local\n    replicas: 1\n    docker_host: unix:///var/run/docker.sock\n",
        1,
    );
    assert!(
        yaml.contains("docker_host") && yaml.contains("file://"),
        "{yaml}"
    );
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    attachable: true\n    converge_timeout: 6m\ndeploy:\n  release_command: \"\"\n"
        ),
    );
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("age.key");
    let beamops = |args: &[&str]| {
        let out = p
            .beamops()
            .args(args)
            .env("BEAMOPS_AGE_KEY_FILE", &key_file)
            .env("PATH", tool_path())
            .output()
            .unwrap();
        assert!(out.status.success(), "beamops {args:?}: {out:?}");
    };
    beamops(&["secrets", "init"]);
    let set = p
        .beamops()
        .args(["secrets", "set", "local", "SECRET_KEY_BASE"])
        .env("BEAMOPS_AGE_KEY_FILE", &key_file)
        .env("PATH", tool_path())
        .write_stdin(format!("kb{}", "k".repeat(64)))
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    beamops(&["up", "chapter-03", "chapter-07"]);
    let rendered = render_into(&p, "04");
    assert!(rendered.contains(&".github/workflows/deploy.yml".to_string()));
    let workflow = p.read(".github/workflows/deploy.yml");
    assert!(
        workflow.contains("deploy-local:") && workflow.contains(&rev),
        "{workflow}"
    );
    p.commit_all("ci deploys local");
    beamops(&["deploy", "local"]);
    let first = service_image(&service);

    // A new version committed: the workflow must roll it out.
    let mix = p
        .read("mix.exs")
        .replace("version: \"0.1.0\"", "version: \"0.2.0\"");
    p.write("mix.exs", &mix);
    p.commit_all("0.2.0");
    let head = git_out(p.path(), &["rev-parse", "HEAD"]);

    let age_key = std::fs::read_to_string(&key_file).unwrap();
    let secret_line = age_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("an age secret key")
        .to_string();
    let cache = tempfile::tempdir().unwrap();
    let cargo_target = concat!(env!("CARGO_TARGET_TMPDIR"), "/act-cargo-install");
    let mut cmd = Command::new("act");
    cmd.current_dir(p.path())
        .env("PATH", tool_path())
        .env("XDG_CACHE_HOME", cache.path())
        // `-s SOPS_AGE_KEY` alone: act reads the value from this variable, never from argv.
        .env("SOPS_AGE_KEY", &age_key)
        .args([
            "push",
            "-W",
            ".github/workflows/deploy.yml",
            "-j",
            "deploy-local",
        ])
        .args(["-P", "ubuntu-24.04=-self-hosted", "--no-cache-server"])
        .args(["-s", "SOPS_AGE_KEY"])
        .args([
            "--env",
            &format!("STANDIN_SOURCE_DIR={}", p.path().display()),
        ])
        .args(["--env", &format!("CARGO_TARGET_DIR={cargo_target}")])
        // The workflow's own `cargo install` is a release build of every dependency: on a fresh
        // CI machine that cold build dominated this test (half an hour on a loaded one). The
        // test checks what the job does with the binary, not how fast it runs, so its release
        // profile is compiled without optimisation or LTO; the workflow's command line is
        // unchanged.
        .args(["--env", "CARGO_PROFILE_RELEASE_OPT_LEVEL=0"])
        .args(["--env", "CARGO_PROFILE_RELEASE_LTO=false"])
        .args(["--env", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256"])
        .args(["--env", "CARGO_PROFILE_RELEASE_INCREMENTAL=false"]);
    for (action, standin) in [("actions/checkout", "checkout"), ("actions/cache", "cache")] {
        let pin = beamops::cicd::pin(action).unwrap();
        cmd.arg("--local-repository")
            .arg(format!("{action}@{}={STANDINS}/{standin}", pin.commit));
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("act on PATH (bash .ci/setup)");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("act deploy.yml: {:.1}s", started.elapsed().as_secs_f64());
    assert!(!log.contains(&secret_line), "the age key is in act's log");
    assert!(
        !log.contains(&secret_line[15..40]),
        "part of the age key is in act's log"
    );
    let (passed, failed) = steps(&log);
    assert!(out.status.success() && failed.is_empty(), "{log}");
    for step in [
        "Install beamops (pinned revision)",
        "Install sops",
        "Write the age key (0600, never echoed)",
        "beamops deploy local",
        "Remove the keys",
    ] {
        assert!(
            passed.iter().any(|s| s == step),
            "step `{step}` did not pass:\n{log}"
        );
    }
    let image = service_image(&service);
    assert_ne!(image, first, "{log}");
    assert!(
        image.contains(&head[..12]),
        "{image} is not the commit {head}:\n{log}"
    );
    // The key file was removed at the end, and no file act left holds the key.
    assert_eq!(files_contain(cache.path(), secret_line.as_bytes()), None);
}
