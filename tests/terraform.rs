//! The Terraform runner with a real Terraform and a real provider from an offline mirror, and the
//! files chapters 02 and 06 render, checked by the tools that know them (terraform fmt, hcl-rs,
//! checkov, packer, shellcheck). `BEAMOPS_TERRAFORM_TESTS=1` (set by `.ci/run`, which installs
//! the tools) makes every missing tool a failure; without it these tests say they skipped.

mod common;
#[path = "common/local_aws.rs"]
mod local_aws;

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

/// The PIDs of this process's children named `name` whose command line holds `needle` (other
/// tests of this binary run Terraform too).
fn children_named(name: &str, needle: &str) -> Vec<i32> {
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
        let argv = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == me && comm == name && String::from_utf8_lossy(&argv).contains(needle) {
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
    let pids = children_named("terraform", &format!("-chdir={}", root.display()));
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

/// Terraform's `h1:` hash of a provider package: SHA-256 over the sorted lines
/// `<sha256 hex>  <file name>` of the package's files (Go's dirhash Hash1), base64.
fn h1(files: &[(&str, &[u8])]) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = files
        .iter()
        .map(|(name, content)| format!("{:x}  {name}\n", Sha256::digest(content)))
        .collect();
    lines.sort();
    let sum = Sha256::digest(lines.concat().as_bytes());
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(sum)
    )
}

/// A mirror holding the real null provider for linux_amd64 (unpacked) and a package for a
/// second platform in the packed layout (`HOST/NAMESPACE/TYPE/terraform-provider-TYPE_VERSION_OS_ARCH.zip`):
/// Terraform hashes a package, it never runs one for another platform. Returns the second
/// package's h1 hash.
fn two_platform_mirror(dir: &Path) -> String {
    let unpacked = dir.join("registry.terraform.io/hashicorp/null/2.1.2/linux_amd64");
    std::fs::create_dir_all(&unpacked).unwrap();
    let binary = "terraform-provider-null_v2.1.2_x4";
    std::fs::copy(
        mirror()
            .join("registry.terraform.io/hashicorp/null/2.1.2/linux_amd64")
            .join(binary),
        unpacked.join(binary),
    )
    .unwrap();
    beamops::fsutil::set_mode(&unpacked.join(binary), 0o755).unwrap();
    let content: &[u8] =
        b"#!/bin/sh\n# the null provider for darwin_arm64 (a stand-in: never run here)\nexit 1\n";
    let zip = dir.join(
        "registry.terraform.io/hashicorp/null/terraform-provider-null_2.1.2_darwin_arm64.zip",
    );
    let staged = dir.join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join(binary), content).unwrap();
    let made = Command::new(tool("python3"))
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], sys.argv[3])",
        ])
        .arg(&zip)
        .arg(staged.join(binary))
        .arg(binary)
        .status()
        .expect("python3 builds the zip");
    assert!(made.success());
    std::fs::remove_dir_all(&staged).unwrap();
    h1(&[(binary, content)])
}

const NULL_ONLY_ROOT: &str = r#"terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
  backend "local" {}
}

resource "null_resource" "one" {}
"#;

fn lock_hashes(root: &Path) -> Vec<String> {
    let lock = std::fs::read_to_string(root.join(".terraform.lock.hcl")).unwrap();
    lock.lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',').trim_matches('"');
            l.starts_with("h1:").then(|| l.to_string())
        })
        .collect()
}

#[test]
fn lock_platforms_records_each_platform_once_and_ci_refuses_a_lock_that_does_not_fit() {
    let Some(()) = gate("lock_platforms") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mirror_dir = dir.path().join("mirror");
    let darwin = two_platform_mirror(&mirror_dir);
    let root = dir.path().join("terraform/locked");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("main.tf"), NULL_ONLY_ROOT).unwrap();
    let binary = std::fs::read(mirror_dir.join(
        "registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4",
    ))
    .unwrap();
    let linux = h1(&[("terraform-provider-null_v2.1.2_x4", &binary)]);
    let runner_for = |work: &str, readonly: bool| {
        let mut r = Runner::new(tool("terraform"), root.clone(), dir.path().join(work));
        r.mirror = Some(mirror_dir.clone());
        r.local_state = Some(dir.path().join("state/terraform.tfstate"));
        r.readonly_lockfile = readonly;
        r.lock_platforms = vec!["linux_amd64".into(), "darwin_arm64".into()];
        r
    };

    let dev = runner_for("work", false);
    dev.init().expect("init and providers lock");
    let mut hashes = lock_hashes(&root);
    hashes.sort();
    let mut want = vec![linux.clone(), darwin.clone()];
    want.sort();
    assert_eq!(
        hashes, want,
        "one h1 hash per platform, each of its package"
    );

    // A second run leaves the committed file alone: same bytes, same modification time.
    let lock = root.join(".terraform.lock.hcl");
    let before = (
        std::fs::read(&lock).unwrap(),
        std::fs::metadata(&lock).unwrap().modified().unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    dev.init().unwrap();
    let after = (
        std::fs::read(&lock).unwrap(),
        std::fs::metadata(&lock).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "a second run does not rewrite the lock");

    // CI (-lockfile=readonly, a fresh working directory): the lock fits, init passes.
    runner_for("ci", true)
        .init()
        .expect("CI init with the committed lock");
    assert_eq!(
        std::fs::read(&lock).unwrap(),
        before.0,
        "CI never writes the lock"
    );

    // A lock without this machine's platform: refused, naming the platform and the fix.
    let full = std::fs::read_to_string(&lock).unwrap();
    let without_host: String = full
        .lines()
        .filter(|l| !l.contains(&linux))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&lock, &without_host).unwrap();
    let refused = runner_for("ci-2", true).init().unwrap_err();
    assert_eq!(
        exit_of(&refused),
        beamops::exit::Exit::Refused,
        "{refused:#}"
    );
    let text = format!("{refused:#}");
    assert!(
        text.contains("linux_amd64") && text.contains("lock_platforms"),
        "{text}"
    );
    std::fs::write(&lock, &full).unwrap();

    // The provider package changed under the lock (a different build of the same version).
    let changed = mirror_dir.join(
        "registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4",
    );
    let mut bytes = binary.clone();
    bytes.extend_from_slice(b"\0changed");
    std::fs::write(&changed, bytes).unwrap();
    let refused = runner_for("ci-3", true).init().unwrap_err();
    assert_eq!(
        exit_of(&refused),
        beamops::exit::Exit::Refused,
        "{refused:#}"
    );
    assert!(
        format!("{refused:#}").contains(".terraform.lock.hcl"),
        "{refused:#}"
    );
    // Outside CI too: a package whose hash the lock does not record is refused, not taken.
    let refused = runner_for("dev-2", false).init().unwrap_err();
    assert_eq!(
        exit_of(&refused),
        beamops::exit::Exit::Refused,
        "{refused:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        full,
        "the lock is untouched"
    );
}

const TF_CHAPTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/terraform-chapter");

/// The example with the null-root chapter (tests/data/terraform-chapter, through
/// BEAMOPS_CHAPTERS_DIR) and the null provider's mirror; `state` is appended under
/// `chapters.terraform`.
fn null_root_project(state: &str) -> TestProject {
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  terraform:\n    provider_mirror: {}\n{state}",
            mirror().display()
        ),
    );
    p
}

/// beamops in `p` with Terraform on PATH, the extra chapter, `tmp` as TMPDIR, and no
/// credentials, CI or `BEAMOPS_*` setting inherited.
fn beamops_tf_std(p: &TestProject, tmp: &Path) -> Command {
    let bin = tool("terraform");
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("beamops"));
    cmd.current_dir(p.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("BEAMOPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("BEAMOPS_CHAPTERS_DIR", TF_CHAPTER)
        .env("TMPDIR", tmp)
        .env_remove("CI")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN");
    cmd
}

fn beamops_tf(p: &TestProject, tmp: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(beamops_tf_std(p, tmp))
}

/// Every file under `dir` (git's own data left out) with a digest of its content.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(&path, base, out);
            } else {
                out.insert(
                    rel,
                    beamops::fsutil::sha256_hex(&std::fs::read(&path).unwrap()),
                );
            }
        }
    }
    let mut out = Default::default();
    walk(dir, dir, &mut out);
    out
}

/// `tree` without the scratch a private plan keeps under `.beamops/terraform/` (the shared
/// plugin cache and the emptied copies directory); copies left behind are checked apart.
fn project_tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut t = tree(dir);
    t.retain(|k, _| {
        !(k == ".beamops/"
            || k == ".beamops/terraform/"
            || k.starts_with(".beamops/terraform/plugin-cache/")
            || k == ".beamops/terraform/plan-copies/")
    });
    t
}

/// The private copies under the project's `.beamops/`.
fn plan_copies(p: &TestProject) -> Vec<String> {
    let dir = p.file(".beamops/terraform/plan-copies");
    if dir.is_dir() {
        entries(&dir)
    } else {
        Vec::new()
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `plan` before `up`: Terraform plans a private copy of the root and its module (what `up`
/// would write), shows its per-resource plan, streams its narration to stderr (JSON stdout stays
/// one document) and leaves the project and the temporary directory as they were.
#[test]
fn plan_before_up_runs_terraform_on_a_private_copy_and_streams_its_output_to_stderr() {
    let Some(()) = gate("plan_before_up") else {
        return;
    };
    let p = null_root_project("");
    let tmp = tempfile::tempdir().unwrap();
    let before = project_tree(p.path());
    assert!(!p.file("terraform/local/main.tf").exists());

    let out = beamops_tf(&p, tmp.path())
        .args(["plan", "chapter-15"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    for line in [
        "+ module.counter.null_resource.node[0] (create)",
        "+ terraform_data.marker (create)",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    // Terraform's own narration, as it ran, on stderr.
    assert!(stderr.contains("Initializing provider plugins"), "{stderr}");
    assert!(stderr.contains("will be created"), "{stderr}");
    // The sensitive output's value (its expression is in the file diff): never shown.
    assert!(
        !format!("{stdout}{stderr}").contains("s3cret-1"),
        "a sensitive output shown"
    );
    assert_eq!(project_tree(p.path()), before, "plan touched the project");
    assert!(
        entries(tmp.path()).is_empty(),
        "left: {:?}",
        entries(tmp.path())
    );

    // --format json: stdout is one JSON document, Terraform's lines are on stderr.
    let out = beamops_tf(&p, tmp.path())
        .args(["--format", "json", "plan", "chapter-15"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    assert!(
        report
            .to_string()
            .contains("module.counter.null_resource.node[0] (create)"),
        "{report}"
    );
    assert!(stderr.contains("will be created"), "{stderr}");
    assert!(!stdout.contains("Initializing"), "{stdout}");
    assert_eq!(project_tree(p.path()), before);

    // up writes the files and applies; its narration is on stderr too, the secret nowhere.
    let out = beamops_tf(&p, tmp.path())
        .args(["--format", "json", "up", "chapter-15", "--no-deps"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    assert!(stderr.contains("Apply complete!"), "{stderr}");
    // One Terraform plan for one apply: `up` plans the root once its files are written, not
    // also a private copy of them before.
    assert_eq!(
        stderr
            .matches("terraform_data.marker will be created")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("s3cret-1"));
    assert!(!p.read(".beamops/state.json").contains("s3cret"));
    assert!(p.file("terraform/modules/counter/main.tf").is_file());

    // A plan once the files are written runs in the project's own working directory.
    let out = beamops_tf(&p, tmp.path())
        .args(["plan", "chapter-15"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(entries(tmp.path()).is_empty());

    // A new version of the chapter (two nodes): the private copy is planned against the
    // state `up` left, so only the new node is to create, and the state is only read.
    let chapter = tempfile::tempdir().unwrap();
    copy_tree(Path::new(TF_CHAPTER), chapter.path());
    let template = chapter.path().join("templates/nullroot/main.tf.j2");
    let source = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, source.replace("default = 1", "default = 2")).unwrap();
    let before = project_tree(p.path());
    let out = beamops_tf(&p, tmp.path())
        .env("BEAMOPS_CHAPTERS_DIR", chapter.path())
        .args(["plan", "chapter-15"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("+ module.counter.null_resource.node[1] (create)"),
        "{stdout}"
    );
    assert!(!stdout.contains("node[0] (create)"), "{stdout}");
    assert_eq!(
        project_tree(p.path()),
        before,
        "plan touched the project or its state"
    );
    assert!(entries(tmp.path()).is_empty());
    assert_eq!(plan_copies(&p), Vec::<String>::new(), "a private copy left");
    // The copies and the shared plugin cache are this user's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.file(".beamops/terraform/plan-copies"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "plan-copies is {mode:o}");
    assert!(
        p.file(".beamops/terraform/plugin-cache/registry.terraform.io/hashicorp/null")
            .is_dir(),
        "the plugin cache holds no provider"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Starts `plan chapter-15` in `p` and returns it once Terraform runs in a private copy, with
/// a counter of the Terraform processes running in one.
fn plan_in_private_copy(
    p: &TestProject,
    tmp: &Path,
) -> (std::process::Child, impl Fn() -> usize + use<>) {
    let mut cmd = beamops_tf_std(p, tmp);
    let mut child = cmd
        .args(["plan", "chapter-15"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Terraform's -chdir names the copy, under the project's .beamops/.
    let copies = p
        .file(".beamops/terraform/plan-copies")
        .display()
        .to_string();
    let in_copy = move || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&format!("-chdir={copies}/")))
            .count()
    };
    let started = std::time::Instant::now();
    while in_copy() == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "plan ended before Terraform ran in its private copy"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "plan never ran Terraform in a private copy"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    (child, in_copy)
}

fn wait_until_none(in_copy: impl Fn() -> usize) {
    let started = std::time::Instant::now();
    while in_copy() != 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "Terraform still runs in the copy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ctrl-C while `plan` runs Terraform on its private copy: the copy goes too.
#[test]
fn an_interrupted_plan_removes_its_private_copy() {
    let Some(()) = gate("interrupted_plan") else {
        return;
    };
    let p = null_root_project("");
    let tmp = tempfile::tempdir().unwrap();
    let before = project_tree(p.path());
    let (mut child, in_copy) = plan_in_private_copy(&p, tmp.path());
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(130),
        "plan was not interrupted: {status:?}"
    );
    assert!(
        entries(tmp.path()).is_empty(),
        "left: {:?}",
        entries(tmp.path())
    );
    assert_eq!(in_copy(), 0, "Terraform still runs");
    assert_eq!(
        project_tree(p.path()),
        before,
        "an interrupted plan touched the project"
    );
    assert_eq!(plan_copies(&p), Vec::<String>::new(), "a private copy left");
}

/// SIGKILL while `plan` runs Terraform on its private copy: nothing can remove the copy then,
/// so it is under the project's `.beamops/` (never /tmp), and the next run sweeps it.
#[test]
fn a_killed_plan_leaves_its_copy_under_the_project_and_the_next_run_sweeps_it() {
    let Some(()) = gate("killed_plan") else {
        return;
    };
    let p = null_root_project("");
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, in_copy) = plan_in_private_copy(&p, tmp.path());
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    child.wait().unwrap();
    // Terraform gets SIGINT when beamops dies, and stops.
    wait_until_none(&in_copy);
    let left = plan_copies(&p);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        p.file(&format!(
            ".beamops/terraform/plan-copies/{}/terraform/local/main.tf",
            left[0]
        ))
        .is_file(),
        "the copy has no root"
    );
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));

    // The next plain run sweeps it (and removes its own copy).
    let out = beamops_tf(&p, tmp.path())
        .args(["plan", "chapter-15"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        plan_copies(&p),
        Vec::<String>::new(),
        "the killed run's copy stayed"
    );
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
}

/// moto with the bucket `beamops-state` (eu-west-1) the S3 backend tests keep their state in.
fn moto_with_state_bucket() -> local_aws::Moto {
    let moto = local_aws::Moto::start().expect("moto_server (run .ci/setup)");
    moto.aws(&[
        "s3api",
        "create-bucket",
        "--bucket",
        "beamops-state",
        "--create-bucket-configuration",
        "LocationConstraint=eu-west-1",
    ]);
    moto
}

/// The S3 backend against moto: state in the bucket, locked with S3's lock file; a held lock
/// blocks `up` (exit 3) naming the lock and the command that releases it, which works;
/// credentials only ever in the environment.
#[test]
fn s3_state_with_a_lock_file_against_moto() {
    let Some(()) = gate("s3_backend") else {
        return;
    };
    let moto = moto_with_state_bucket();
    let p = null_root_project(&format!(
        "    state:\n      backend: s3\n      bucket: beamops-state\n      region: eu-west-1\n      key_prefix: coordination\n      endpoint: {}\n",
        moto.url()
    ));
    let tmp = tempfile::tempdir().unwrap();
    let nonce = std::process::id();
    let key_id = format!("AKIATFRUNNER{nonce}");
    let secret = format!("tfrunner-secret-{nonce}-do-not-leak");

    // Every process's argv, sampled while beamops runs: the credentials must be in none.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, key_id, secret) = (stop.clone(), key_id.clone(), secret.clone());
        std::thread::spawn(move || {
            let (mut seen, mut leaked) = (std::collections::BTreeSet::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else {
                        continue;
                    };
                    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                    if argv.contains(&secret) || argv.contains(&key_id) {
                        leaked.push(argv.clone());
                    }
                    if argv.contains("-chdir=")
                        && let Some(verb) = argv.split_whitespace().nth(2)
                    {
                        seen.insert(verb.to_string());
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            (seen, leaked)
        })
    };
    let run = |args: &[&str]| {
        let out = beamops_tf(&p, tmp.path())
            .env("AWS_ACCESS_KEY_ID", &key_id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    };

    let (code, said) = run(&["up", "chapter-15", "--no-deps"]);
    assert_eq!(code, Some(0), "{said}");
    let object = moto.aws(&[
        "s3",
        "cp",
        "s3://beamops-state/coordination/local.tfstate",
        "-",
    ]);
    let state: serde_json::Value = serde_json::from_str(&object).expect("the state object");
    assert!(object.contains("\"null_resource\""), "{object}");
    assert!(state["serial"].as_u64().unwrap() >= 1);
    assert!(
        !p.file(".beamops/terraform/terraform_local/terraform.tfstate")
            .exists()
    );
    let (code, said) = run(&["plan", "chapter-15"]);
    assert_eq!(code, Some(0), "a second plan shows no changes: {said}");

    // Another run holds the lock (as S3's lock file records it): up is blocked, nothing done.
    let lock_id = "0b1e3f2a-5c4d-4e6f-8a9b-7c6d5e4f3a2b";
    let lock = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        lock.path(),
        format!(r#"{{"ID":"{lock_id}","Operation":"OperationTypeApply","Info":"","Who":"alice@laptop","Version":"1.11.4","Created":"2026-11-30T10:00:00Z","Path":"beamops-state/coordination/local.tfstate"}}"#),
    )
    .unwrap();
    moto.aws(&[
        "s3",
        "cp",
        &lock.path().display().to_string(),
        "s3://beamops-state/coordination/local.tfstate.tflock",
    ]);
    p.write("terraform/local/terraform.tfvars", "size = 2\n");
    let (code, said) = run(&["up", "chapter-15", "--no-deps"]);
    assert_eq!(code, Some(3), "a held lock blocks: {said}");
    for part in [lock_id, "alice@laptop", "force-unlock", "locked"] {
        assert!(said.contains(part), "{part}: {said}");
    }
    let object = moto.aws(&[
        "s3",
        "cp",
        "s3://beamops-state/coordination/local.tfstate",
        "-",
    ]);
    assert_eq!(
        object.matches("\"index_key\"").count(),
        1,
        "nothing applied: {object}"
    );

    // The command the message gives releases it.
    let release = said
        .lines()
        .find(|l| l.contains("force-unlock"))
        .unwrap()
        .trim()
        .replace(" force-unlock ", " force-unlock -force ");
    let bin = tool("terraform");
    let unlocked = Command::new("sh")
        .args(["-c", &release])
        .current_dir(p.path())
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", bin.parent().unwrap().display()),
        )
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .output()
        .unwrap();
    assert!(
        unlocked.status.success(),
        "{release}: {}",
        text(&unlocked.stderr)
    );
    let (code, said) = run(&["up", "chapter-15", "--no-deps"]);
    assert_eq!(code, Some(0), "{said}");
    let object = moto.aws(&[
        "s3",
        "cp",
        "s3://beamops-state/coordination/local.tfstate",
        "-",
    ]);
    assert_eq!(object.matches("\"index_key\"").count(), 2, "{object}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, leaked) = sampler.join().unwrap();
    assert!(
        leaked.is_empty(),
        "credentials on a command line: {leaked:?}"
    );
    for verb in ["init", "plan", "apply"] {
        assert!(
            seen.contains(verb),
            "the sampler never saw terraform {verb}: {seen:?}"
        );
    }
    // …and in no file of the project, Terraform's working data included, nor the state.
    for (rel, _) in tree(p.path()) {
        let path = p.file(&rel);
        if path.is_file() {
            let content = std::fs::read(&path).unwrap();
            let content = String::from_utf8_lossy(&content);
            assert!(
                !content.contains(&secret) && !content.contains(&key_id),
                "credentials in {rel}"
            );
        }
    }
    assert!(!object.contains(&secret) && !object.contains(&key_id));
}

/// `state.dynamodb_table`: the S3 backend locks with the table as well (moto's DynamoDB), and a
/// lock item another run holds blocks `up` (exit 3) like S3's lock file does.
#[test]
fn s3_state_also_locked_with_a_dynamodb_table() {
    let Some(()) = gate("s3_dynamodb") else {
        return;
    };
    let moto = moto_with_state_bucket();
    moto.aws(&[
        "dynamodb",
        "create-table",
        "--table-name",
        "tf-locks",
        "--attribute-definitions",
        "AttributeName=LockID,AttributeType=S",
        "--key-schema",
        "AttributeName=LockID,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    let p = null_root_project(&format!(
        "    state:\n      backend: s3\n      bucket: beamops-state\n      region: eu-west-1\n      dynamodb_table: tf-locks\n      endpoint: {}\n",
        moto.url()
    ));
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = beamops_tf(&p, tmp.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    };
    let (code, said) = run(&["up", "chapter-15", "--no-deps"]);
    assert_eq!(code, Some(0), "{said}");
    // Terraform keeps the state's digest in the table: the table is in use.
    let items = moto.aws(&["dynamodb", "scan", "--table-name", "tf-locks"]);
    assert!(
        items.contains("beamops-state/coordination/local.tfstate-md5"),
        "{items}"
    );
    let info = r#"{"ID":"5f0c7c4e-0000-4000-8000-000000000001","Operation":"OperationTypeApply","Info":"","Who":"bob@ci","Version":"1.9.8","Created":"2026-11-30T11:00:00Z","Path":"beamops-state/coordination/local.tfstate"}"#;
    let item = serde_json::json!({
        "LockID": {"S": "beamops-state/coordination/local.tfstate"},
        "Info": {"S": info},
    })
    .to_string();
    moto.aws(&[
        "dynamodb",
        "put-item",
        "--table-name",
        "tf-locks",
        "--item",
        &item,
    ]);
    p.write("terraform/local/terraform.tfvars", "size = 2\n");
    let (code, said) = run(&["up", "chapter-15", "--no-deps"]);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("bob@ci") && said.contains("force-unlock"),
        "{said}"
    );
}

/// `TF_LOG` in beamops' environment: Terraform's debug logs (provider request and response
/// bodies) never reach its streamed output or a log file, unless BEAMOPS_TERRAFORM_LOG asks.
#[test]
fn terraform_debug_logs_are_off_unless_asked_for_by_name() {
    let Some(()) = gate("terraform_log") else {
        return;
    };
    let p = null_root_project("");
    let tmp = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("tf.log");
    let plan = |opt_in: bool| {
        let mut cmd = beamops_tf(&p, tmp.path());
        cmd.env("TF_LOG", "TRACE")
            .env("TF_LOG_PROVIDER", "TRACE")
            .env("TF_LOG_CORE", "TRACE");
        if opt_in {
            cmd.env("BEAMOPS_TERRAFORM_LOG", "1");
        }
        let out = cmd.args(["plan", "chapter-15"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let stderr = plan(false);
    assert!(stderr.contains("will be created"), "{stderr}");
    for level in ["[TRACE]", "[DEBUG]"] {
        assert!(!stderr.contains(level), "{level} logged: {stderr}");
    }
    // With the log sent to a file: no file either.
    let out = beamops_tf(&p, tmp.path())
        .env("TF_LOG", "TRACE")
        .env("TF_LOG_PATH", &log_file)
        .args(["plan", "chapter-15"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!log_file.exists(), "Terraform wrote a debug log");
    // Asked for by name, the same variables do reach Terraform.
    let stderr = plan(true);
    assert!(stderr.contains("[TRACE]"), "the opt-in had no effect");
}
