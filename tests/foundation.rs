//! The chapter engine end to end, through the real binary, on chapter 01.

mod common;

use std::time::{Duration, Instant};

use common::{TestProject, json};
use predicates::prelude::*;

#[test]
fn up_twice_changes_nothing_the_second_time() {
    let p = TestProject::new();
    p.beamops().args(["up", "chapter-01"]).assert().code(0);
    let first = p.snapshot(false);
    assert!(p.read(".tool-versions").contains("erlang 27.3.4.1"));
    assert!(p.read(".gitignore").contains(".beamops/"));

    let out = p
        .beamops()
        .args(["up", "1", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out.stdout);
    for c in report["chapters"].as_array().unwrap() {
        for f in c["files"].as_array().unwrap() {
            assert_eq!(f["status"], "unchanged", "{f}");
        }
        for a in c["actions"].as_array().unwrap() {
            assert_ne!(a["status"], "applied", "{a}");
        }
    }
    assert_eq!(first, p.snapshot(false), "second up changed bytes");
    p.beamops().args(["plan", "chapter-01"]).assert().code(0);
}

#[test]
fn a_fresh_clone_with_the_lock_but_no_state_plans_clean() {
    let p = TestProject::new();
    p.beamops().args(["up", "foundation"]).assert().code(0);
    std::fs::remove_dir_all(p.file(".beamops")).unwrap();
    p.beamops().args(["plan", "1"]).assert().code(0);
    assert!(!p.file(".beamops").exists(), "plan must not create state");
}

#[test]
fn an_edited_file_is_refused_with_its_diff_and_force_takes_ours() {
    let p = TestProject::new();
    p.beamops().args(["up", "1"]).assert().code(0);
    let edited = "erlang 26.2\nelixir 1.16.0-otp-26\n";
    p.write(".tool-versions", edited);
    p.beamops()
        .args(["up", "1"])
        .assert()
        .code(4)
        .stderr(
            predicate::str::contains("-erlang 26.2")
                .and(predicate::str::contains("+erlang 27.3.4.1")),
        )
        .stderr(predicate::str::contains("--force"));
    assert_eq!(
        p.read(".tool-versions"),
        edited,
        "refused run must not touch the file"
    );
    p.beamops()
        .arg("status")
        .assert()
        .code(2)
        .stdout(predicate::str::contains("edited"));
    p.beamops().args(["up", "1", "--force"]).assert().code(0);
    assert!(p.read(".tool-versions").starts_with("erlang 27.3.4.1\n"));
    p.beamops().arg("status").assert().code(0);
}

#[test]
fn a_file_whose_template_moved_to_another_chapter_is_left_for_that_chapter() {
    let p = TestProject::new();
    p.beamops().args(["up", "1"]).assert().code(0);
    // As if an older beamops had rendered .tool-versions in chapter 03.
    let lock = p.read("beamops.lock");
    p.write(
        "beamops.lock",
        &lock.replace(
            "\"chapter\": \"01-foundation\"",
            "\"chapter\": \"03-docker\"",
        ),
    );
    let plan = p
        .beamops()
        .args(["plan", "3", "--format", "json"])
        .output()
        .unwrap();
    let report = common::json(&plan.stdout);
    let docker = report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chapter"] == "03-docker")
        .expect("chapter 03 planned");
    assert!(
        !docker["files"].to_string().contains(".tool-versions"),
        "chapter 03 must leave it: {docker:#}"
    );
    assert!(p.file(".tool-versions").exists());
    // Chapter 01 takes the record back without touching the file.
    let before = p.read(".tool-versions");
    p.beamops().args(["up", "1"]).assert().code(0);
    assert_eq!(p.read(".tool-versions"), before);
    assert!(
        p.read("beamops.lock")
            .contains("\"chapter\": \"01-foundation\"")
    );
}

#[test]
fn a_persons_chmod_of_a_generated_file_is_an_edit_too() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &TestProject| {
        std::fs::metadata(p.file(".tool-versions"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let p = TestProject::new();
    p.beamops().args(["up", "1"]).assert().code(0);
    assert_eq!(mode(&p), 0o644);
    let lock = p.read("beamops.lock");
    assert!(lock.contains("\"mode\": \"0644\""), "{lock}");
    // A checkout with umask 002 makes files group-writable: not an edit.
    std::fs::set_permissions(
        p.file(".tool-versions"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    p.beamops().args(["plan", "1"]).assert().code(0);
    // A person tightening the mode is: refused, kept, named; --force takes ours.
    std::fs::set_permissions(
        p.file(".tool-versions"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    p.beamops()
        .args(["up", "1"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains(
            "mode changed since beamops wrote it: 0644 → 0600",
        ));
    assert_eq!(mode(&p), 0o600, "a refused run must not touch the mode");
    p.beamops().args(["up", "1", "--force"]).assert().code(0);
    assert_eq!(mode(&p), 0o644);
}

#[test]
fn an_existing_file_beamops_never_wrote_is_a_conflict_unless_identical() {
    let p = TestProject::new();
    p.write(".tool-versions", "erlang 27.3.4.1\nelixir 1.18.3-otp-27\n");
    let out = p
        .beamops()
        .args(["plan", "1", "--format", "json"])
        .output()
        .unwrap();
    let plan = json(&out.stdout);
    assert_eq!(plan["chapters"][0]["files"][0]["status"], "adopt");
    p.write(".tool-versions", "erlang 27.3.4.1\n");
    p.beamops().args(["up", "1"]).assert().code(4);
}

#[test]
fn dry_run_touches_nothing_and_reports_pending() {
    let p = TestProject::new();
    let before = p.snapshot(false);
    p.beamops()
        .args(["up", "1", "--dry-run"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("+erlang 27.3.4.1"));
    assert_eq!(before, p.snapshot(false));
}

#[test]
fn a_stale_file_is_removed_only_when_unedited() {
    let p = TestProject::new();
    p.beamops().args(["up", "1"]).assert().code(0);
    // Pretend an earlier version of chapter 01 also wrote two files it no longer renders.
    let mut lock: serde_json::Value = serde_json::from_str(&p.read("beamops.lock")).unwrap();
    for (name, text) in [("old-a.txt", "a\n"), ("old-b.txt", "b\n")] {
        p.write(name, text);
        lock["files"][name] = serde_json::json!({
            "chapter": "01-foundation", "template": "foundation/old.j2",
            "template_digest": "0", "sha256": beamops::fsutil::sha256_hex(text.as_bytes()),
        });
    }
    p.write(
        "beamops.lock",
        &serde_json::to_string_pretty(&lock).unwrap(),
    );
    p.write("old-b.txt", "b, edited by a person\n");
    p.beamops()
        .args(["plan", "1"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("stale"));
    p.beamops().args(["up", "1"]).assert().code(0);
    assert!(!p.file("old-a.txt").exists());
    assert_eq!(p.read("old-b.txt"), "b, edited by a person\n");
    assert!(!p.read("beamops.lock").contains("old-"));
    p.beamops().args(["plan", "1"]).assert().code(0);
}

#[test]
fn writes_never_follow_a_symlink_out_of_the_project() {
    let p = TestProject::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, p.file(".tool-versions")).unwrap();
    p.beamops()
        .args(["up", "1", "--force"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("outside the project"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn config_errors_name_file_line_column_and_a_fix() {
    let p = TestProject::new();
    let text = p
        .read("beamops.yaml")
        .replace("  port: 4000", "  prot: 4000");
    p.write("beamops.yaml", &text);
    let line = text.lines().position(|l| l.contains("prot:")).unwrap() + 1;
    p.beamops()
        .args(["plan", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("beamops.yaml:{line}:3")))
        .stderr(predicate::str::contains("did you mean `port`"))
        .stderr(predicate::str::contains("fix:"));
}

#[test]
fn environment_variables_override_single_values() {
    let p = TestProject::new();
    p.beamops()
        .env("BEAMOPS_APP__ELIXIR", "1.17.0")
        .args(["plan", "1"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("+elixir 1.17.0-otp-27"));
}

#[test]
fn unknown_chapters_and_environments_suggest_the_nearest() {
    let p = TestProject::new();
    p.beamops()
        .args(["plan", "chapter-O8"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("did you mean `chapter-08`"));
    p.beamops()
        .args(["plan", "1", "--env", "stagin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("did you mean `staging`"));
}

/// Every embedded chapter is implemented now; a chapter that exists only as a plan (the
/// `planned` action) comes from `BEAMOPS_CHAPTERS_DIR`, the way a chapter is tried before it is
/// embedded (docs/architecture.md, "Adding a chapter").
#[test]
fn chapters_not_implemented_refuse_up_and_dependencies_are_planned_first() {
    let p = TestProject::new();
    let extra = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(extra.path().join("chapters")).unwrap();
    std::fs::create_dir_all(extra.path().join("templates")).unwrap();
    std::fs::write(
        extra.path().join("chapters/13-future.yaml"),
        "id: 13\nslug: future\ntitle: Future\nsummary: A chapter not built yet.\n\
         needs: [foundation]\nboundary: test data only\nactions:\n  \
         - action: planned\n    does: something later\n",
    )
    .unwrap();
    let beamops = || {
        let mut cmd = p.beamops();
        cmd.env("BEAMOPS_CHAPTERS_DIR", extra.path());
        cmd
    };
    let out = beamops()
        .args(["plan", "future", "--format", "json"])
        .output()
        .unwrap();
    let plan = json(&out.stdout);
    let keys: Vec<&str> = plan["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chapter"].as_str().unwrap())
        .collect();
    assert_eq!(keys.first(), Some(&"01-foundation"), "{keys:?}");
    assert_eq!(keys.last(), Some(&"13-future"));
    assert_eq!(plan["chapters"][0]["needed_by"], "chapter-13");
    let before = p.snapshot(false);
    beamops()
        .args(["up", "chapter-13"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not implemented"));
    assert_eq!(before, p.snapshot(false), "a refused up wrote something");
    beamops().args(["up", "1"]).assert().code(0);
}

/// Each kind of broken manifest in `BEAMOPS_CHAPTERS_DIR` stops the command with an error that
/// names the manifest's file and the line to fix: what serde refuses (an unknown key, a bad
/// value), what the load checks (a mode, a marker, a path or action twice), and an expression
/// reading a name the template context lacks (a file's or a module's `when:`, a templated
/// path, a `terraform-applied` root), which would otherwise read as false.
#[test]
fn a_broken_extra_chapter_is_refused_naming_its_file_and_line() {
    let p = TestProject::new();
    let extra = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(extra.path().join("chapters")).unwrap();
    std::fs::create_dir_all(extra.path().join("templates/extra")).unwrap();
    std::fs::write(
        extra.path().join("templates/extra/a.j2"),
        "{{ app.name }}\n",
    )
    .unwrap();
    let head = "id: 13\nslug: extra\ntitle: Extra\nsummary: Test data.\nimplemented: true\n";
    let file = |body: &str| format!("  - template: extra/a.j2\n{body}");
    let cases = [
        (
            "unknown key",
            format!("files:\n{}", file("    paht: x\n")),
            8,
            "paht",
        ),
        (
            "bad mode",
            format!("files:\n{}", file("    path: x\n    mode: \"0x755\"\n")),
            9,
            "not an octal file mode",
        ),
        (
            "empty marker",
            format!(
                "files:\n{}",
                file(
                    "    path: .gitignore\n    policy: append-if-marker-missing\n    marker: \"\"\n"
                )
            ),
            10,
            "has no marker",
        ),
        (
            "path twice",
            format!("files:\n{}{}", file("    path: x\n"), file("    path: x\n")),
            10,
            "written twice",
        ),
        (
            "action twice",
            "actions:\n  - action: git-repository\n  - action: git-repository\n".into(),
            8,
            "listed twice",
        ),
        (
            "when typo",
            format!(
                "files:\n{}",
                file("    path: x\n    when: project.phonix\n")
            ),
            9,
            "`project.phonix`",
        ),
        (
            "path typo",
            format!("files:\n{}", file("    path: \"x/{{ env.nmae }}\"\n")),
            8,
            "`env.nmae`",
        ),
        (
            "module when typo",
            "modules:\n  - name: network\n    when: env.provider == \"aws\" or env.provder\n"
                .into(),
            8,
            "`env.provder`",
        ),
        (
            "root typo",
            "actions:\n  - action: terraform-applied\n    root: \"terraform/{{ env.nme }}\"\n"
                .into(),
            8,
            "`env.nme`",
        ),
    ];
    let manifest = extra.path().join("chapters/13-extra.yaml");
    for (kind, body, line, what) in cases {
        std::fs::write(&manifest, format!("{head}{body}")).unwrap();
        let out = p
            .beamops()
            .env("BEAMOPS_CHAPTERS_DIR", extra.path())
            .args(["plan", "chapter-13"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{kind}: {stderr}");
        let at = format!("{}:{line}: ", manifest.display());
        assert!(stderr.contains(&at), "{kind}: want {at} in {stderr}");
        assert!(stderr.contains(what), "{kind}: want {what} in {stderr}");
    }
    // The same chapter without the typo plans.
    std::fs::write(
        &manifest,
        format!(
            "{head}files:\n{}",
            file("    path: x\n    when: project.phoenix\n")
        ),
    )
    .unwrap();
    p.beamops()
        .env("BEAMOPS_CHAPTERS_DIR", extra.path())
        .args(["plan", "chapter-13"])
        .assert()
        .success();
}

#[test]
fn no_deps_refuses_when_a_needed_chapter_is_not_satisfied() {
    let p = TestProject::new();
    p.beamops()
        .args(["up", "chapter-03", "--no-deps"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("chapter-01"));
}

#[test]
fn a_protected_environment_needs_yes() {
    let p = TestProject::new();
    p.beamops()
        .args(["up", "1", "--env", "production"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("protected"));
    assert!(!p.file(".tool-versions").exists());
    p.beamops()
        .args(["up", "1", "--env", "production", "--yes"])
        .assert()
        .code(0);
}

#[test]
fn failed_project_checks_exit_1_with_the_fix() {
    let p = TestProject::new();
    std::fs::remove_dir_all(p.file(".git")).unwrap();
    // The temp dir must not sit inside another repository for this test to mean anything.
    if git2::Repository::discover(p.path()).is_ok() {
        eprintln!("skipped: the temp dir is inside a git repository on this machine");
        return;
    }
    p.beamops()
        .args(["up", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("git init"));
}

#[test]
fn versions_that_disagree_with_mix_exs_fail_the_check() {
    let p = TestProject::new();
    let mix = p.read("mix.exs").replace("~> 1.14", "~> 1.19");
    p.write("mix.exs", &mix);
    p.beamops()
        .args(["plan", "1"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "mix.exs requires Elixir \"~> 1.19\"",
        ));
}

#[test]
fn a_second_run_waits_for_the_first_and_names_its_pid() {
    let p = TestProject::new();
    std::fs::create_dir_all(p.file(".beamops")).unwrap();
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(p.file(".beamops/run.lock"))
        .unwrap();
    lock.lock().unwrap();
    std::fs::write(
        p.file(".beamops/run.lock"),
        format!("pid {}\n", std::process::id()),
    )
    .unwrap();
    // Blocked (3), not failed: CI can tell "retry later" from a failure.
    p.beamops()
        .args(["up", "1", "--lock-wait", "0"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "pid {}",
            std::process::id()
        )))
        .stderr(predicate::str::contains("retry later"));
    assert!(!p.file(".tool-versions").exists());

    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
    });
    p.beamops()
        .args(["up", "1", "--lock-wait", "20"])
        .assert()
        .code(0);
    releaser.join().unwrap();
}

#[test]
fn concurrent_runs_never_interleave() {
    let p = TestProject::new();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("beamops"))
                .args(["up", "1", "-q"])
                .current_dir(p.path())
                .env("NO_COLOR", "1")
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    assert_eq!(state["schema"], 1);
    assert_eq!(p.read(".gitignore").matches(".beamops/").count(), 1);
    p.beamops().args(["plan", "1"]).assert().code(0);
}

/// A tiny deterministic generator, so a failing seed can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn kill_9_at_random_points_then_a_rerun_converges() {
    let p = TestProject::new();
    let bin = assert_cmd::cargo::cargo_bin("beamops");
    // Calibrate the kill window to how long one run takes on this machine.
    let start = Instant::now();
    p.beamops().args(["up", "1", "-q"]).assert().code(0);
    let window = start.elapsed().as_micros().max(2000) as u64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill -9 seed {seed}, window {window} µs");
    for round in 0..24 {
        // Start from a changed world each time so the run has real work to do.
        if round % 2 == 0 {
            std::fs::remove_file(p.file(".tool-versions")).ok();
        } else {
            std::fs::remove_dir_all(p.file(".beamops")).ok();
            std::fs::remove_file(p.file(".gitignore")).ok();
        }
        let mut child = std::process::Command::new(&bin)
            .args(["up", "1", "-q"])
            .current_dir(p.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(next(&mut seed) % window));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        p.beamops().args(["up", "1", "-q"]).assert().code(0);
        let state: serde_json::Value =
            serde_json::from_str(&p.read(".beamops/state.json")).expect("state parses");
        assert_eq!(state["schema"], 1);
        p.beamops().args(["plan", "1"]).assert().code(0);
    }
    let leftovers: Vec<_> = std::fs::read_dir(p.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".beamops-tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}

#[test]
fn json_reports_parse() {
    let p = TestProject::new();
    for args in [
        vec!["plan", "--all"],
        vec!["status"],
        vec!["chapters"],
        vec!["env"],
        vec!["doctor"],
    ] {
        let out = p
            .beamops()
            .args(&args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        let v = json(&out.stdout);
        assert!(v.is_object(), "{args:?}: {v}");
    }
    let chapters = json(
        &p.beamops()
            .args(["chapters", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(chapters["chapters"].as_array().unwrap().len(), 12);
}

#[test]
fn env_reports_the_root_and_tools() {
    let p = TestProject::new();
    let v = json(
        &p.beamops()
            .args(["env", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        std::path::Path::new(v["root"].as_str().unwrap()),
        p.path().canonicalize().unwrap()
    );
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "docker",
        "terraform",
        "packer",
        "sops",
        "age",
        "git",
        "erl",
        "mix",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    p.beamops()
        .args(["env", "--shell"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("export BEAMOPS_ROOT="));
}

#[test]
fn discovery_walks_up_and_project_flag_overrides() {
    let p = TestProject::new();
    std::fs::create_dir_all(p.file("lib/deep")).unwrap();
    p.beamops()
        .current_dir(p.file("lib/deep"))
        .args(["up", "1", "-q"])
        .assert()
        .code(0);
    assert!(p.file(".tool-versions").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    p.beamops()
        .current_dir(elsewhere.path())
        .args(["plan", "1", "--project"])
        .arg(p.path())
        .assert()
        .code(0);
    p.beamops()
        .current_dir(elsewhere.path())
        .args(["plan", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("beamops init"));
}

#[test]
fn no_absolute_path_reaches_the_lock_or_the_state() {
    let p = TestProject::new();
    p.beamops().args(["up", "1"]).assert().code(0);
    let root = p.path().canonicalize().unwrap().display().to_string();
    for f in [
        "beamops.lock",
        ".beamops/state.json",
        ".tool-versions",
        ".gitignore",
    ] {
        assert!(!p.read(f).contains(&root), "{f} names {root}");
    }
}

#[test]
fn init_reads_the_project_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(common::EXAMPLE).join("mix.exs"),
        dir.path().join("mix.exs"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".tool-versions"),
        "erlang 27.3.4.1\nelixir 1.18.3-otp-27\n",
    )
    .unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    repo.remote("origin", "git@github.com:Acme/agent-coordination.git")
        .unwrap();
    let run = || {
        let mut c = assert_cmd::Command::cargo_bin("beamops").unwrap();
        c.current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("BEAMOPS_PROJECT");
        c
    };
    run().arg("init").assert().code(0);
    let text = std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap();
    assert!(text.contains("otp_app: coordination"), "{text}");
    assert!(
        text.contains("repository: ghcr.io/acme/agent-coordination"),
        "{text}"
    );
    assert!(text.contains("elixir: \"1.18.3\""), "{text}");
    run().arg("init").assert().code(4);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap(),
        text
    );
    run().args(["up", "1"]).assert().code(0);
}

#[test]
fn usage_errors_exit_1_not_the_pending_code() {
    let p = TestProject::new();
    p.beamops().arg("--bogus").assert().code(1);
    p.beamops().args(["up"]).assert().code(1);
    p.beamops().arg("--version").assert().code(0);
}

#[test]
fn completions_are_generated() {
    let p = TestProject::new();
    p.beamops()
        .args(["completions", "bash"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("beamops"));
}
