//! `beamops dedupe` end to end on a synthetic repository: a main worktree, a linked worktree
//! inside it at the newest commit, another outside it at an older commit, and copied folders.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use sha2::Digest;

fn git(dir: &Path, args: &[&str]) {
    let out = Process::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A script long enough that a one-line edit keeps it near (similarity ≈ 0.9).
fn build_script(edit: &str) -> String {
    let mut s = String::from("#!/bin/sh\n# build every component\nset -e\n");
    for i in 0..40 {
        if i == 20 {
            s += &format!("echo {edit}\n");
        } else {
            s += &format!("echo \"step {i} of the build\" >/dev/null\n");
        }
    }
    s + "echo \"build: $# args: $*\"\nexit \"${1:-0}\"\n"
}

const DEPLOY: &str = "#!/bin/sh\n# deploy the release\nset -e\nname=${2:-none}\necho \"deploy $name: $# args\" # say it\nexit \"${1:-0}\"\n";
const RUNNER: &str = "#!/usr/bin/env bash\n# run a task\nfor a in \"$@\"; do\n  echo \"arg: $a\"\ndone\nexit \"${1:-0}\"\n";
// The same commands as RUNNER: comments, indentation, blank lines and spacing differ.
const RUNNER_VARIANT: &str = "#!/usr/bin/env bash\n\n# Run a task (copied from the old server)\nfor a in \"$@\" ;  do   # each argument\n        echo \"arg: $a\"   \ndone\n\nexit \"${1:-0}\"  # pass the status\n";
const QUOTE_1: &str = "#!/bin/sh\necho \"marker # one\"\n";
const QUOTE_2: &str = "#!/bin/sh\necho \"marker # two\"\n";
const HEREDOC_1: &str = "#!/bin/sh\ncat <<EOF\n# one\nEOF\n";
const HEREDOC_2: &str = "#!/bin/sh\ncat <<EOF\n# two\nEOF\n";

struct Fixture {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    repo: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().canonicalize().unwrap();
    let repo = top.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo.join("scripts/deploy.sh"), DEPLOY, 0o755);
    write(
        &repo.join("scripts/build.sh"),
        &build_script("original"),
        0o755,
    );
    write(&repo.join("tools/runner"), RUNNER, 0o755);
    write(
        &repo.join("tools/report"),
        "#!/usr/bin/env python3\nprint('not a shell script')\n",
        0o755,
    );
    write(
        &repo.join("notes.txt"),
        "#!/bin/sh\nnot a script by name\n",
        0o644,
    );
    std::fs::write(repo.join(".gitignore"), ".worktrees/\ncopies/\n*.bak\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    git(&repo, &["worktree", "add", "-q", "-b", "old", "../wt-old"]);

    write(
        &repo.join("scripts/build.sh"),
        &build_script("edited"),
        0o755,
    );
    write(&repo.join("scripts/quote.sh"), QUOTE_1, 0o755);
    write(&repo.join("scripts/heredoc.sh"), HEREDOC_1, 0o755);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "two"]);
    git(
        &repo,
        &["worktree", "add", "-q", "-b", "feature", ".worktrees/new"],
    );

    write(&repo.join("copies/legacy/deploy.sh"), DEPLOY, 0o644);
    write(&repo.join("copies/legacy/runner"), RUNNER_VARIANT, 0o700);
    write(&repo.join("copies/legacy/quote.sh"), QUOTE_2, 0o755);
    write(&repo.join("copies/legacy/heredoc.sh"), HEREDOC_2, 0o755);
    write(&repo.join("scripts/deploy.sh.bak"), DEPLOY, 0o755);
    std::os::unix::fs::symlink("deploy.sh", repo.join("scripts/link.sh")).unwrap();
    std::os::unix::fs::symlink(&top, repo.join("copies/escape")).unwrap();
    Fixture {
        _tmp: tmp,
        top,
        repo,
    }
}

fn beamops(dir: &Path) -> Command {
    common::beamops_in(dir)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn paths(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every file under `dir` (outside .git and .beamops): its kind, bytes digest and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, String, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                if name != ".git" && name != ".beamops" {
                    stack.push(path);
                }
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, ("symlink".into(), target.display().to_string(), 0));
            } else if name != ".git" {
                let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
                out.insert(
                    path,
                    ("file".into(), digest, meta.permissions().mode() & 0o7777),
                );
            }
        }
    }
    out
}

#[test]
fn finds_exactly_the_expected_exact_normalized_and_near_groups() {
    let fx = fixture();
    // The root given twice and a folder inside it: no file may become its own duplicate.
    let out = beamops(&fx.repo)
        .args(["dedupe", "--format", "json", ".", ".", "scripts"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let summary = &report["summary"];
    assert_eq!(summary["files_scanned"], 18, "{report:#}");
    assert_eq!(summary["exact_groups"], 5);
    assert_eq!(summary["normalized_groups"], 1);
    assert_eq!(summary["near_clusters"], 1);
    assert_eq!(summary["unique_after"], 8);

    let groups: BTreeMap<String, (String, BTreeSet<String>, String)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let canonical = g["canonical"]["path"].as_str().unwrap().to_string();
            (
                canonical.clone(),
                (
                    g["tier"].as_str().unwrap().to_string(),
                    paths(&g["copies"]),
                    g["reason"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, BTreeSet<String>)> = [
        (
            "scripts/deploy.sh",
            "exact",
            set(&[
                ".worktrees/new/scripts/deploy.sh",
                "../wt-old/scripts/deploy.sh",
                "copies/legacy/deploy.sh",
                "scripts/deploy.sh.bak",
            ]),
        ),
        (
            "scripts/build.sh",
            "exact",
            set(&[".worktrees/new/scripts/build.sh"]),
        ),
        (
            "scripts/quote.sh",
            "exact",
            set(&[".worktrees/new/scripts/quote.sh"]),
        ),
        (
            "scripts/heredoc.sh",
            "exact",
            set(&[".worktrees/new/scripts/heredoc.sh"]),
        ),
        (
            "tools/runner",
            "normalized",
            set(&[
                ".worktrees/new/tools/runner",
                "../wt-old/tools/runner",
                "copies/legacy/runner",
            ]),
        ),
    ]
    .into_iter()
    .map(|(c, t, copies)| (c.to_string(), (t.to_string(), copies)))
    .collect();
    let got: BTreeMap<String, (String, BTreeSet<String>)> = groups
        .iter()
        .map(|(c, (t, copies, _))| (c.clone(), (t.clone(), copies.clone())))
        .collect();
    assert_eq!(got, expected);
    // The reason is what beat the runner-up: an untracked copy in the main worktree here…
    assert_eq!(groups["scripts/deploy.sh"].2, "tracked by git");
    // …and the same file in a linked worktree there.
    assert_eq!(groups["scripts/build.sh"].2, "in the main worktree");

    let runner = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["canonical"]["path"] == "tools/runner")
        .unwrap();
    for copy in runner["copies"].as_array().unwrap() {
        let want = if copy["path"] == "copies/legacy/runner" {
            "normalized"
        } else {
            "exact"
        };
        assert_eq!(copy["match"], want, "{copy}");
    }
    let old = runner["copies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "../wt-old/tools/runner")
        .unwrap();
    assert_eq!(old["branch"], "old");
    assert_eq!(old["worktree"], "../wt-old");
    assert_eq!(old["tracked"], true);

    let near = &report["near"][0];
    assert_eq!(near["canonical"]["path"], "scripts/build.sh");
    let member = &near["members"][0];
    assert_eq!(member["file"]["path"], "../wt-old/scripts/build.sh");
    let similarity = member["similarity"].as_f64().unwrap();
    assert!((0.85..1.0).contains(&similarity), "{similarity}");
    assert!(
        member["differs"].as_str().unwrap().contains("edited"),
        "{member}"
    );

    assert_eq!(
        report["backups"],
        serde_json::json!(["scripts/deploy.sh.bak"])
    );
    let links: BTreeMap<String, bool> = report["symlinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_string(),
                l["inside"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(links.get("scripts/link.sh"), Some(&true));
    assert_eq!(links.get("copies/escape"), Some(&false));
    let worktrees: BTreeSet<String> = report["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{}@{}",
                w["path"].as_str().unwrap(),
                w["branch"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        worktrees,
        set(&[".@main", "../wt-old@old", ".worktrees/new@feature"])
    );
}

#[test]
fn a_hash_in_a_string_or_heredoc_keeps_scripts_apart_and_exact_only_skips_tiers() {
    let fx = fixture();
    let out = beamops(&fx.repo)
        .args(["dedupe", "--format", "json", "copies/legacy", "scripts"])
        .output()
        .unwrap();
    let report = json(&out);
    let all: BTreeSet<String> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            let mut v = paths(&g["copies"]);
            v.insert(g["canonical"]["path"].as_str().unwrap().into());
            v
        })
        .collect();
    for lone in ["copies/legacy/quote.sh", "copies/legacy/heredoc.sh"] {
        assert!(!all.contains(lone), "{lone} grouped: {report:#}");
    }

    let out = beamops(&fx.repo)
        .args(["dedupe", "--exact-only", "--format", "json"])
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(report["summary"]["normalized_groups"], 0);
    assert_eq!(report["near"], serde_json::json!([]));
    let runner = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["canonical"]["path"] == "tools/runner")
        .unwrap();
    assert!(!paths(&runner["copies"]).contains("copies/legacy/runner"));

    let text = beamops(&fx.repo).args(["dedupe"]).output().unwrap();
    assert_eq!(text.status.code(), Some(2));
    let first = String::from_utf8_lossy(&text.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        first,
        "18 files scanned: 5 exact groups, 1 normalized groups, 1 near clusters; 8 unique scripts after consolidation"
    );
}

#[test]
fn nothing_duplicated_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("a.sh"), "echo a\n", 0o755);
    write(&tmp.path().join("b.sh"), "echo b\n", 0o755);
    let out = beamops(tmp.path())
        .args(["dedupe", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["summary"]["files_scanned"], 2);
}

/// Stdout and status of `sh FILE 3 hello`.
fn run_script(path: &Path) -> (String, Option<i32>) {
    let out = Process::new("sh")
        .arg(path)
        .args(["3", "hello"])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

fn apply_then_undo(strategy: &str) {
    let fx = fixture();
    let before = snapshot(&fx.top);

    let refused = beamops(&fx.repo)
        .args(["dedupe", "--apply", "--strategy", strategy])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-dirty"));
    assert_eq!(snapshot(&fx.top), before, "a refused apply changed files");

    let out = beamops(&fx.repo)
        .args([
            "dedupe",
            "--format",
            "json",
            "--apply",
            "--allow-dirty",
            "--strategy",
            strategy,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let replaced = report["apply"]["replaced"].as_array().unwrap().len();
    assert_eq!(replaced, 10, "{report:#}");
    for group in report["groups"].as_array().unwrap() {
        let canonical = fx.repo.join(group["canonical"]["path"].as_str().unwrap());
        let expected = run_script(&canonical);
        for copy in group["copies"].as_array().unwrap() {
            let path = fx.repo.join(copy["path"].as_str().unwrap());
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                meta.file_type().is_symlink(),
                strategy == "symlink",
                "{}",
                path.display()
            );
            assert_eq!(run_script(&path), expected, "{}", path.display());
        }
    }
    let deploy = fx.repo.join("copies/legacy/deploy.sh");
    assert_eq!(
        run_script(&deploy),
        ("deploy hello: 2 args\n".to_string(), Some(3))
    );
    if strategy == "wrapper" {
        let mode = std::fs::metadata(&deploy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the wrapper keeps the copy's mode");
        // The wrapper also runs directly and passes arguments and status through.
        let direct = Process::new(fx.repo.join("copies/legacy/runner"))
            .args(["5", "x y"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&direct.stdout),
            "arg: 5\narg: x y\n"
        );
        assert_eq!(direct.status.code(), Some(5));
    }

    // A second scan finds nothing left to consolidate.
    let again = beamops(&fx.repo)
        .args(["dedupe", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(json(&again)["summary"]["duplicate_copies"], 0);

    let manifest = report["apply"]["manifest"].as_str().unwrap().to_string();
    let undo = beamops(&fx.repo)
        .args(["dedupe", "--undo", &manifest])
        .output()
        .unwrap();
    assert_eq!(
        undo.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&undo.stderr)
    );
    assert_eq!(snapshot(&fx.top), before, "undo did not restore the tree");
    // Undo is idempotent.
    let twice = beamops(&fx.repo)
        .args(["dedupe", "--format", "json", "--undo", &manifest])
        .output()
        .unwrap();
    assert_eq!(twice.status.code(), Some(0));
    assert_eq!(json(&twice)["restored"], serde_json::json!([]));
    assert_eq!(snapshot(&fx.top), before);
}

#[test]
fn symlink_apply_behaves_like_the_canonical_and_undo_restores_every_byte() {
    apply_then_undo("symlink");
}

#[test]
fn wrapper_apply_behaves_like_the_canonical_and_undo_restores_every_byte() {
    apply_then_undo("wrapper");
}

#[test]
fn undo_refuses_to_overwrite_a_copy_edited_after_the_apply() {
    let fx = fixture();
    let before = snapshot(&fx.top);
    let out = beamops(&fx.repo)
        .args([
            "dedupe",
            "--format",
            "json",
            "--apply",
            "--allow-dirty",
            "--strategy",
            "wrapper",
        ])
        .output()
        .unwrap();
    let manifest = json(&out)["apply"]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let edited = fx.repo.join("copies/legacy/quote.sh");
    let edited_before = std::fs::read(&edited).unwrap();
    let victim = fx.repo.join("copies/legacy/deploy.sh");
    std::fs::write(&victim, "echo mine\n").unwrap();
    let undo = beamops(&fx.repo)
        .args(["dedupe", "--undo", &manifest])
        .output()
        .unwrap();
    assert_eq!(undo.status.code(), Some(4));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "echo mine\n");
    assert_eq!(std::fs::read(&edited).unwrap(), edited_before);
    let mut expected = before;
    expected.remove(&victim);
    let mut now = snapshot(&fx.top);
    now.remove(&victim);
    assert_eq!(now, expected, "every other file is restored");
}

fn manifest_states(repo: &Path) -> Option<(PathBuf, usize)> {
    let dir = repo.join(".beamops/dedupe");
    let entry = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    let replaced = manifest["entries"]
        .as_array()?
        .iter()
        .filter(|e| e["state"] == "replaced")
        .count();
    Some((entry.path(), replaced))
}

#[test]
fn kill_9_mid_apply_then_undo_or_rerun_gives_back_the_original_tree() {
    for (pause_after, strategy) in [(1, "symlink"), (4, "wrapper"), (9, "symlink")] {
        let fx = fixture();
        let before = snapshot(&fx.top);
        let bin = assert_cmd::cargo::cargo_bin("beamops");
        let mut child = Process::new(&bin)
            .args(["dedupe", "--apply", "--allow-dirty", "--strategy", strategy])
            .current_dir(&fx.repo)
            .env_remove("BEAMOPS_PROJECT")
            .env("BEAMOPS_DEDUPE_PAUSE_AFTER", pause_after.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let manifest = loop {
            if let Some((path, replaced)) = manifest_states(&fx.repo)
                && replaced >= pause_after
            {
                break path;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "apply never paused"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_ne!(
            snapshot(&fx.top),
            before,
            "the kill came after some replacements"
        );

        if pause_after == 4 {
            // Re-running finishes the job; undoing both, newest first, restores everything.
            let rerun = beamops(&fx.repo)
                .args([
                    "dedupe",
                    "--format",
                    "json",
                    "--apply",
                    "--allow-dirty",
                    "--strategy",
                    strategy,
                ])
                .output()
                .unwrap();
            assert_eq!(
                rerun.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&rerun.stderr)
            );
            let second = json(&rerun)["apply"]["manifest"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                json(&rerun)["apply"]["replaced"].as_array().unwrap().len(),
                10 - 4
            );
            beamops(&fx.repo)
                .args(["dedupe", "--undo", &second])
                .assert()
                .code(0);
        }
        beamops(&fx.repo)
            .args(["dedupe", "--undo"])
            .arg(&manifest)
            .assert()
            .code(0);
        assert_eq!(snapshot(&fx.top), before, "pause after {pause_after}");
    }
}

fn all_grouped(report: &Value) -> BTreeSet<String> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            let mut v = paths(&g["copies"]);
            v.insert(g["canonical"]["path"].as_str().unwrap().into());
            v
        })
        .collect()
}

#[test]
fn include_exclude_all_files_and_threshold_change_what_is_compared() {
    let fx = fixture();
    write(
        &fx.repo.join("copies/notes.txt"),
        "#!/bin/sh\nnot a script by name\n",
        0o644,
    );
    let run = |args: &[&str]| {
        let out = beamops(&fx.repo)
            .args(["dedupe", "--format", "json"])
            .args(args)
            .output()
            .unwrap();
        json(&out)
    };

    let excluded = run(&["--exclude", "copies/**"]);
    assert!(
        all_grouped(&excluded)
            .iter()
            .all(|p| !p.starts_with("copies/"))
    );
    assert_eq!(excluded["summary"]["normalized_groups"], 0);

    let default = all_grouped(&run(&[]));
    assert!(!default.contains("notes.txt"));
    let included = all_grouped(&run(&["--include", "*.txt"]));
    assert!(included.contains("notes.txt") && included.contains("copies/notes.txt"));
    let every = run(&["--all-files"]);
    let every_grouped = all_grouped(&every);
    assert!(every_grouped.contains("notes.txt"));
    // Any text file: the python script (copied into every worktree) too, but not by default.
    assert!(every_grouped.contains("tools/report"));
    assert!(!default.contains("tools/report"));

    assert_eq!(run(&["--threshold", "0.99"])["summary"]["near_clusters"], 0);
    assert_eq!(run(&["--threshold", "0.5"])["summary"]["near_clusters"], 1);
    beamops(&fx.repo)
        .args(["dedupe", "--threshold", "1.5"])
        .assert()
        .code(1);
}

#[test]
fn a_symlink_never_takes_away_a_copys_execute_bit() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("a.sh"), "echo same\n", 0o644);
    write(&tmp.path().join("c/a.sh"), "echo same\n", 0o755);
    let out = beamops(tmp.path())
        .args(["dedupe", "--format", "json", "--apply"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let skipped = &json(&out)["apply"]["skipped"][0];
    assert_eq!(skipped["path"], "c/a.sh");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("--strategy wrapper")
    );
    assert!(
        !std::fs::symlink_metadata(tmp.path().join("c/a.sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let out = beamops(tmp.path())
        .args([
            "dedupe",
            "--format",
            "json",
            "--apply",
            "--strategy",
            "wrapper",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let direct = Process::new(tmp.path().join("c/a.sh")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "same\n");
}
