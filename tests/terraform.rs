//! The Terraform runner with a real Terraform and a real provider from an offline mirror, and the
//! files chapters 02 and 06 render, checked by the tools that know them (terraform fmt, hcl-rs,
//! checkov, packer, shellcheck). `BEAMOPS_TERRAFORM_TESTS=1` (set by `.ci/run`, which installs
//! the tools) makes every missing tool a failure; without it these tests say they skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use beamops::terraform::Runner;
use common::{TestProject, example_copy};

/// The tools the gated tests need, or None (after saying why) when the gate is off.
fn gate(test: &str) -> Option<()> {
    common::gate_enabled(
        test,
        "BEAMOPS_TERRAFORM_TESTS",
        "after .ci/setup: terraform, the null provider mirror in .ci/tf-mirror, checkov, packer, shellcheck",
    )
    .then_some(())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool on PATH (with .ci's own directories first), or the test fails naming it.
fn tool(name: &str) -> PathBuf {
    let ci = repo().join(".ci");
    let path = format!(
        "{}:{}:{}",
        ci.join("bin").display(),
        ci.join("venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    which::which_in(name, Some(path), ".")
        .unwrap_or_else(|_| panic!("{name} is not installed: run .ci/setup"))
}

fn mirror() -> PathBuf {
    let dir = repo().join(".ci/tf-mirror");
    assert!(
        dir.join("registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4")
            .is_file(),
        "the null provider is not in {}: run .ci/setup",
        dir.display()
    );
    dir
}

const NULL_ROOT: &str = r#"terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
  backend "local" {}
}

variable "size" {
  type = number
}

resource "null_resource" "node" {
  count = var.size
  triggers = {
    size = var.size
  }
}

resource "terraform_data" "marker" {
  input = var.size
}

output "ids" {
  value = null_resource.node[*].id
}

output "size" {
  value = terraform_data.marker.output
}

output "password" {
  value     = "s3cret-${var.size}"
  sensitive = true
}
"#;

fn runner(dir: &Path, root: &Path) -> Runner {
    let mut r = Runner::new(tool("terraform"), root.to_path_buf(), dir.join("work"));
    r.mirror = Some(mirror());
    r.local_state = Some(dir.join("work/terraform.tfstate"));
    r.readonly_lockfile = false;
    r
}

fn exit_of(e: &anyhow::Error) -> beamops::exit::Exit {
    beamops::exit::exit_for(e)
}

#[test]
fn runner_plans_applies_and_refuses_a_stale_plan_with_a_real_provider_from_a_mirror() {
    let Some(()) = gate("runner_end_to_end") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("terraform/e2e");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("main.tf"), NULL_ROOT).unwrap();
    std::fs::write(root.join("terraform.tfvars"), "size = 1\n").unwrap();
    let tf = runner(dir.path(), &root);

    tf.init().expect("init from the mirror");
    let lock = std::fs::read_to_string(root.join(".terraform.lock.hcl")).unwrap();
    assert!(
        lock.contains("registry.terraform.io/hashicorp/null"),
        "{lock}"
    );
    assert!(
        !root.join(".terraform").exists(),
        "working data stays out of the root"
    );

    let plan = tf.plan().unwrap();
    assert!(plan.changes, "a fresh root plans exit 2");
    let summary = plan.summary();
    assert!(
        summary.contains("+ null_resource.node[0] (create)"),
        "{summary}"
    );
    assert!(
        summary.contains("+ terraform_data.marker (create)"),
        "{summary}"
    );

    tf.apply_saved().unwrap();
    assert!(!tf.plan_file().exists(), "a plan is applied once");
    assert!(!tf.plan().unwrap().changes, "after apply the plan exits 0");

    let outputs = tf.outputs().unwrap();
    assert_eq!(outputs["size"], 1);
    assert_eq!(outputs["ids"].as_array().unwrap().len(), 1);
    assert!(
        !outputs.contains_key("password"),
        "sensitive outputs are dropped"
    );
    assert!(!serde_json::to_string(&outputs).unwrap().contains("s3cret"));

    // A changed variable: pending again.
    std::fs::write(root.join("terraform.tfvars"), "size = 2\n").unwrap();
    let plan = tf.plan().unwrap();
    assert!(plan.changes);
    assert!(
        plan.summary().contains("+ null_resource.node[1] (create)"),
        "{}",
        plan.summary()
    );

    // The configuration changes after the plan: the plan is refused, nothing applied.
    std::fs::write(root.join("terraform.tfvars"), "size = 3\n").unwrap();
    let refused = tf.apply_saved().unwrap_err();
    assert_eq!(
        exit_of(&refused),
        beamops::exit::Exit::Refused,
        "{refused:#}"
    );
    assert!(format!("{refused:#}").contains("changed since it was planned"));
    let state = std::fs::read_to_string(dir.path().join("work/terraform.tfstate")).unwrap();
    assert_eq!(
        state.matches("\"null_resource\"").count(),
        1,
        "nothing applied"
    );
    assert!(state.contains("\"index_key\": 0") && !state.contains("\"index_key\": 1"));

    // A plan made before someone else's apply: Terraform refuses it as stale.
    std::fs::write(root.join("terraform.tfvars"), "size = 2\n").unwrap();
    tf.plan().unwrap();
    let old_plan = std::fs::read(tf.plan_file()).unwrap();
    let old_record = std::fs::read(dir.path().join("work/plan.json")).unwrap();
    tf.apply_saved().unwrap();
    std::fs::write(tf.plan_file(), old_plan).unwrap();
    std::fs::write(dir.path().join("work/plan.json"), old_record).unwrap();
    let stale = tf.apply_saved().unwrap_err();
    assert_eq!(exit_of(&stale), beamops::exit::Exit::Refused, "{stale:#}");
    assert!(
        !tf.plan().unwrap().changes,
        "the refused plan changed nothing"
    );
}

/// The PIDs of this process's children named `name`.
fn children_named(name: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).unwrap_or_default();
        if ppid == me && comm == name {
            out.push(entry.file_name().to_string_lossy().parse().unwrap());
        }
    }
    out
}

#[test]
fn a_killed_apply_leaves_a_state_the_next_run_converges() {
    let Some(()) = gate("killed_apply") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("terraform/killed");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("main.tf"),
        r#"terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
  backend "local" {}
}

resource "terraform_data" "first" {
  input = "first"
}

resource "null_resource" "slow" {
  depends_on = [terraform_data.first]
  provisioner "local-exec" {
    command = "if [ ! -e go ]; then touch started; sleep 120; fi"
  }
}
"#,
    )
    .unwrap();
    let tf = runner(dir.path(), &root);
    tf.init().unwrap();
    assert!(tf.plan().unwrap().changes);
    let applying = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        let root = root.clone();
        move || runner(&dir, &root).apply_saved()
    });
    // The slow resource is being created: the first one is done.
    let started = root.join("started");
    let mut waited = 0;
    while !started.exists() {
        assert!(waited < 600, "the slow resource never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    let pids = children_named("terraform");
    assert_eq!(pids.len(), 1, "one terraform child: {pids:?}");
    // SIGKILL to its whole process group: Terraform, its provisioner's shell and the sleep.
    unsafe {
        libc::kill(-pids[0], libc::SIGKILL);
    }
    let killed = applying.join().unwrap();
    assert!(killed.is_err(), "a killed apply fails");

    std::fs::write(root.join("go"), "").unwrap();
    let next = runner(dir.path(), &root);
    next.init().expect("init after the kill");
    let plan = next.plan().expect("plan after the kill");
    assert!(plan.changes, "the unfinished resource is still to create");
    assert!(
        plan.resources
            .iter()
            .any(|r| r.address == "null_resource.slow"),
        "{}",
        plan.summary()
    );
    next.apply_saved().expect("the next run applies");
    assert!(!next.plan().unwrap().changes, "converged: plan exits 0");
    let state = std::fs::read_to_string(dir.path().join("work/terraform.tfstate")).unwrap();
    assert!(
        state.contains("\"first\"") && state.contains("\"slow\""),
        "{state}"
    );
}

/// The example with chapters 02 and 06 rendered for `staging`, in a variant of the config.
fn rendered_example(database: bool, managers: u32) -> TestProject {
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml").replace(
        "  staging:\n    provider: aws\n",
        &format!("  staging:\n    provider: aws\n    managers: {managers}\n"),
    );
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: {database}\n  terraform:\n    github:\n      repository: acme/coordination\n      labels:\n        - name: deploy\n          color: 0e8a16\n          description: ships to production\n  production:\n    ssh_allow: [203.0.113.7/32]\n    key_name: ops\n"
        ),
    );
    let project = beamops::project::Project::discover(Some(p.path())).unwrap();
    let ctx = beamops::render::context(&project, "staging").unwrap();
    for chapter in ["02", "06"] {
        let manifest = beamops::chapter::resolve(chapter).unwrap();
        for r in beamops::render::render_chapter(manifest, &ctx).unwrap() {
            p.write(&r.path, &String::from_utf8(r.content).unwrap());
            beamops::fsutil::set_mode(&p.file(&r.path), r.spec.mode_bits()).unwrap();
        }
    }
    p
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.to_string_lossy().ends_with(ext) {
            out.push(path);
        }
    }
    out.sort();
}

const VARIANTS: [(bool, u32); 3] = [(true, 1), (false, 1), (true, 3)];

/// Golden copies of every environment root (tests/snapshots/): a template change is a diff.
#[test]
fn environment_roots_match_their_golden_copies() {
    for (database, managers) in VARIANTS {
        let p = rendered_example(database, managers);
        let mut files = Vec::new();
        files_under(&p.file("terraform"), ".tf", &mut files);
        files_under(&p.file("packer"), "", &mut files);
        let mut all = String::new();
        for f in &files {
            let rel = f.strip_prefix(p.path()).unwrap().display().to_string();
            if rel.starts_with("terraform/modules/") {
                continue; // verbatim copies of terraform/modules/, checked by the lint test
            }
            all.push_str(&format!("==> {rel} <==\n{}\n", p.read(&rel)));
        }
        let db = if database { "db" } else { "nodb" };
        insta::assert_snapshot!(format!("staging-root-{db}-{managers}-managers"), all);
    }
}

#[test]
fn rendered_terraform_is_formatted_parses_and_passes_checkov() {
    for (database, managers) in VARIANTS {
        let p = rendered_example(database, managers);
        let mut tf_files = Vec::new();
        files_under(&p.file("terraform"), ".tf", &mut tf_files);
        assert!(tf_files.len() >= 8, "{tf_files:?}");
        for f in &tf_files {
            let text = std::fs::read_to_string(f).unwrap();
            hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        // Every file says what swarm ports it opens: udp 7946 too, which the book forgets.
        let network = p.read("terraform/modules/network/main.tf");
        for port in [
            "2377, protocol = \"tcp\"",
            "7946, protocol = \"tcp\"",
            "7946, protocol = \"udp\"",
            "4789, protocol = \"udp\"",
        ] {
            assert!(network.contains(port), "swarm port {port}");
        }
        let Some(()) = gate("rendered_terraform_tools") else {
            continue;
        };
        let fmt = Command::new(tool("terraform"))
            .args(["fmt", "-check", "-recursive", "-diff"])
            .arg(p.file("terraform"))
            .output()
            .unwrap();
        assert!(
            fmt.status.success(),
            "terraform fmt -check:\n{}{}",
            String::from_utf8_lossy(&fmt.stdout),
            String::from_utf8_lossy(&fmt.stderr)
        );
        let checkov = Command::new(tool("checkov"))
            .args([
                "--quiet",
                "--compact",
                "--framework",
                "terraform",
                "-o",
                "json",
                "-d",
            ])
            .arg(p.file("terraform"))
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&checkov.stdout).unwrap_or_else(|e| {
                panic!(
                    "checkov printed no JSON ({e}):\n{}{}",
                    String::from_utf8_lossy(&checkov.stdout),
                    String::from_utf8_lossy(&checkov.stderr)
                )
            });
        let summary = &report["summary"];
        assert!(summary["passed"].as_u64().unwrap() > 10, "{summary}");
        assert_eq!(
            summary["failed"],
            0,
            "checkov failed checks:\n{}",
            serde_json::to_string_pretty(&report["results"]["failed_checks"]).unwrap()
        );
        // Every skip is justified next to the resource it skips.
        for skipped in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let why = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(why.len() > 20, "unjustified skip: {skipped}");
        }
    }
}

#[test]
fn the_packer_template_validates_and_the_setup_script_passes_shellcheck() {
    let p = rendered_example(true, 1);
    for f in ["packer/plugins.pkr.hcl", "packer/node.pkr.hcl"] {
        hcl::parse(&p.read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let node = p.read("packer/node.pkr.hcl");
    assert!(
        node.contains("http_tokens                 = \"required\""),
        "IMDSv2"
    );
    assert!(
        node.contains("owners      = [\"136693071363\"]"),
        "owner-pinned base image"
    );
    assert!(
        !node.contains("required_plugins"),
        "required_plugins in its own file"
    );
    let setup = p.read("packer/setup.sh");
    assert!(setup.contains("PasswordAuthentication no"));
    assert!(setup.contains("systemctl enable docker"));
    let Some(()) = gate("packer_and_shellcheck") else {
        return;
    };
    let shellcheck = Command::new(tool("shellcheck"))
        .arg(p.file("packer/setup.sh"))
        .output()
        .unwrap();
    assert!(
        shellcheck.status.success(),
        "{}",
        String::from_utf8_lossy(&shellcheck.stdout)
    );
    // The managers' user data, rendered by Terraform's own templatefile(), for the first
    // manager with PostgreSQL (with and without its own volume) and for the others:
    // shellcheck-clean, and only the first labels itself as the database's node.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::copy(
        p.file("terraform/modules/swarm-managers/join.sh.tftpl"),
        scratch.path().join("join.sh.tftpl"),
    )
    .unwrap();
    for (first, pgdata, database) in [
        ("true", "true", "true"),
        ("true", "false", "true"),
        ("true", "false", "false"),
        ("false", "false", "false"),
    ] {
        let expr = format!(
            "templatefile(\"join.sh.tftpl\", {{first={first}, pgdata={pgdata}, database={database}, parameter=\"/c/swarm/join-token\", worker=\"/c/swarm/worker-join-token\", region=\"eu-west-1\"}})\n"
        );
        let mut console = Command::new(tool("terraform"))
            .args(["console", "-no-color"])
            .current_dir(scratch.path())
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        console
            .stdin
            .take()
            .unwrap()
            .write_all(expr.as_bytes())
            .unwrap();
        let out = console.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // A multi-line string prints as a heredoc: <<EOT … EOT.
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 10 && lines[0].starts_with("<<"), "{text}");
        let script = scratch
            .path()
            .join(format!("join-{first}-{pgdata}-{database}.sh"));
        let body = lines[1..lines.len() - 1].join("\n") + "\n";
        assert_eq!(
            body.contains("docker node update --label-add beamops.pgdata=true"),
            database == "true",
            "the pgdata label ({first}, {pgdata}, {database}):\n{body}"
        );
        assert_eq!(body.contains("mkfs.ext4"), pgdata == "true");
        std::fs::write(&script, body).unwrap();
        let check = Command::new(tool("shellcheck"))
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "join.sh ({first}, {pgdata}, {database}): {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    // Debian's packer 1.6.6 knows neither required_plugins nor the amazon plugin's newer
    // options: it validates the template without them (they are HCL-parsed above).
    let old = tempfile::tempdir().unwrap();
    let mut kept = String::new();
    let mut skipping = false;
    for line in node.lines() {
        if line.contains("# beamops:packer>=1.7") {
            skipping = true;
        } else if line.contains("# beamops:end") {
            skipping = false;
        } else if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    assert!(!kept.contains("metadata_options"));
    std::fs::write(old.path().join("node.pkr.hcl"), kept).unwrap();
    std::fs::copy(p.file("packer/setup.sh"), old.path().join("setup.sh")).unwrap();
    let validate = Command::new(tool("packer"))
        .args(["validate", "."])
        .current_dir(old.path())
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "packer validate:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    let fmt = Command::new(tool("packer"))
        .args(["fmt", "-check", "."])
        .current_dir(old.path())
        .output()
        .unwrap();
    assert!(
        fmt.status.success(),
        "packer fmt -check: {}",
        String::from_utf8_lossy(&fmt.stdout)
    );
}

#[test]
fn up_chapter_02_without_a_token_or_credentials_is_blocked_naming_them() {
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  terraform:\n    github:\n      repository: acme/coordination\n"
        ),
    );
    let home = tempfile::tempdir().unwrap();
    let run = |env: &str| {
        let mut cmd = p.beamops();
        cmd.args(["--env", env, "plan", "chapter-02"])
            .env("HOME", home.path())
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN");
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.output().unwrap()
    };
    let out = run("staging");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("GITHUB_TOKEN"), "{text}");
    assert!(text.contains("AWS credentials"), "{text}");

    let mut up = p.beamops();
    up.args(["up", "chapter-02"])
        .env("HOME", home.path())
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN");
    let out = up.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("GITHUB_TOKEN (or GH_TOKEN) is not set"),
        "{text}"
    );
}

/// Through the CLI: a file of the user's own in `terraform/local/` (the null provider from the
/// mirror) is planned, applied and recorded by `up chapter-02`; the repository's root then
/// stops it, blocked on the missing token.
#[test]
fn up_applies_an_environment_root_and_records_its_public_outputs() {
    let Some(()) = gate("up_applies_an_environment_root") else {
        return;
    };
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  terraform:\n    provider_mirror: {}\n    github:\n      repository: acme/coordination\n",
            mirror().display()
        ),
    );
    p.write("terraform/local/main.tf", NULL_ROOT);
    p.write("terraform/local/terraform.tfvars", "size = 2\n");
    let bin = tool("terraform");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        p.beamops()
            .args(args)
            .env("PATH", &path)
            .env_remove("GITHUB_TOKEN")
            .env_remove("GH_TOKEN")
            // Outside CI, init writes .terraform.lock.hcl; CI gets -lockfile=readonly (below).
            .env_remove("CI")
            .output()
            .unwrap()
    };
    // Before anything is applied: the plan names Terraform's changes per resource.
    let out = run(&["plan", "chapter-02"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("+ null_resource.node[1] (create)"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "the github root is blocked: {text}"
    );

    let out = run(&["up", "chapter-02"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("GITHUB_TOKEN"), "{text}");
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let record =
        &state["environments"]["local"]["chapters"]["02-terraform"]["actions"]["terraform-applied"];
    assert_eq!(record["outcome"], "applied", "{state}");
    assert_eq!(record["data"]["outputs"]["size"], 2, "{record}");
    assert!(
        record["data"]["outputs"].get("password").is_none(),
        "{record}"
    );
    assert!(!p.read(".beamops/state.json").contains("s3cret"));
    assert!(p.file("terraform/local/.terraform.lock.hcl").is_file());

    // Nothing changed: the environment's root is satisfied (terraform plan exits 0).
    let out = run(&["plan", "chapter-02"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("terraform/local: terraform plan shows no changes"),
        "{text}"
    );
}
