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
    write(&tmp.path().join("a.sh"), "#!/bin/sh\necho same\n", 0o644);
    write(&tmp.path().join("c/a.sh"), "#!/bin/sh\necho same\n", 0o755);
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

// ---- The corpus shapes of a legacy repository: scripts that find their own directory ----

/// Each idiom a script uses to find its own directory, then what it reaches there: it sources
/// or runs `id.sh`, whose bytes differ per directory, so the output names the directory reached.
const IDIOMS: [(&str, &str); 7] = [
    (
        "probe_dollar0.sh",
        "#!/bin/sh\n. \"$(dirname \"$0\")/id.sh\"\necho \"dollar0 reached $ID\"\n",
    ),
    (
        "probe_bash_source.sh",
        "#!/bin/bash\nsource \"$(dirname \"${BASH_SOURCE[0]}\")/id.sh\"\necho \"bash_source reached $ID\"\n",
    ),
    (
        "probe_script_dir.sh",
        "#!/bin/bash\nSCRIPT_DIR=\"$( cd -- \"$( dirname -- \"${BASH_SOURCE[0]}\" )\" &> /dev/null && pwd )\"\n. \"$SCRIPT_DIR/id.sh\"\necho \"script_dir reached $ID\"\n",
    ),
    (
        "probe_cd.sh",
        "#!/bin/sh\ncd \"$(dirname \"$0\")\" || exit 1\n. ./id.sh\necho \"cd reached $ID\"\n",
    ),
    (
        "probe_param.sh",
        "#!/bin/sh\nHERE=${0%/*}\nsh \"$HERE/id.sh\" print\n",
    ),
    (
        "probe_readlink.sh",
        "#!/bin/bash\nDIR=$(dirname \"$(readlink -f \"$0\")\")\n. \"$DIR/id.sh\"\necho \"readlink reached $ID\"\n",
    ),
    (
        "probe_realpath.sh",
        "#!/bin/bash\nHERE=\"$(dirname \"$(realpath \"${BASH_SOURCE[0]}\")\")\"\n. \"$HERE\"/id.sh\necho \"realpath reached $ID\"\n",
    ),
];

fn id_script(label: &str) -> String {
    format!("#!/bin/sh\nID={label}\n[ \"$1\" = print ] && echo \"param reached $ID\"\n:\n")
}

/// A library that is sourced, never run: a wrapper's `exec` would end its caller.
const COMMON_LIB: &str =
    "#!/bin/sh\n# shared helpers, sourced\ngreet() { echo \"hello from common\"; }\n";
/// Sources the library by a path relative to the working directory.
const CALLER: &str = "#!/bin/sh\n. lib/common.sh\ngreet\necho \"caller still running\"\n";
/// Main's helper and its test; a worktree's helper differs, and the test (byte-identical in
/// both) must keep testing its own worktree's helper.
const HELPER_TEST: &str = "#!/bin/bash\nsource \"$(dirname \"$0\")/coordination_helper.sh\"\necho \"testing $(helper_version)\"\n";

fn helper(version: &str) -> String {
    format!("#!/bin/bash\nhelper_version() {{ echo {version}; }}\n")
}

struct Corpus {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    repo: PathBuf,
    worktree: PathBuf,
}

/// A repository with the same scripts in main's `tools/`, a linked worktree's `tools/` whose
/// siblings differ (a feature branch), and `legacy/tools/` whose siblings are main's bytes.
fn corpus() -> Corpus {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().canonicalize().unwrap();
    let repo = top.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for dir in ["tools", "legacy/tools"] {
        for (name, body) in IDIOMS {
            write(&repo.join(dir).join(name), body, 0o755);
        }
        write(&repo.join(dir).join("id.sh"), &id_script("main"), 0o644);
        write(&repo.join(dir).join("lib/common.sh"), COMMON_LIB, 0o644);
        write(&repo.join(dir).join("caller.sh"), CALLER, 0o755);
        write(
            &repo.join(dir).join("test_coordination_helper.sh"),
            HELPER_TEST,
            0o755,
        );
        write(
            &repo.join(dir).join("coordination_helper.sh"),
            &helper("main-1.0"),
            0o644,
        );
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "tools"]);
    git(
        &repo,
        &["worktree", "add", "-q", "-b", "feature", "../wt-feature"],
    );
    let worktree = top.join("wt-feature");
    write(&worktree.join("tools/id.sh"), &id_script("feature"), 0o644);
    write(
        &worktree.join("tools/coordination_helper.sh"),
        &helper("feature-2.0"),
        0o644,
    );
    git(&worktree, &["commit", "-qam", "feature helpers"]);
    Corpus {
        _tmp: tmp,
        top,
        repo,
        worktree,
    }
}

/// What every script prints and exits with, run by absolute path from its own directory (so
/// that working-directory-relative `source` lines work as they do for their users).
fn probe(top: &Path) -> BTreeMap<PathBuf, (String, String, Option<i32>)> {
    snapshot(top)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .map(|p| {
            let out = Process::new("bash")
                .arg(&p)
                .current_dir(p.parent().unwrap())
                .output()
                .unwrap();
            let answer = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.status.code(),
            );
            (p, answer)
        })
        .collect()
}

fn decisions(report: &Value) -> BTreeMap<String, String> {
    report["apply"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn apply_json(dir: &Path, strategy: &str) -> Value {
    let out = beamops(dir)
        .args([
            "dedupe",
            "--format",
            "json",
            "--apply",
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
    json(&out)
}

#[test]
fn consolidated_self_locating_and_sourced_scripts_reach_the_same_files_as_before() {
    for strategy in ["wrapper", "symlink"] {
        let c = corpus();
        let before = snapshot(&c.top);
        let answers = probe(&c.top);
        // The probe sees the differences it must preserve.
        let wt = |p: &str| c.worktree.join("tools").join(p);
        assert_eq!(
            answers[&wt("probe_dollar0.sh")].0,
            "dollar0 reached feature\n"
        );
        assert_eq!(
            answers[&wt("test_coordination_helper.sh")].0,
            "testing feature-2.0\n"
        );
        assert_eq!(
            answers[&wt("caller.sh")].0,
            "hello from common\ncaller still running\n"
        );

        // Everything is committed, so no --allow-dirty is needed.
        let report = apply_json(&c.repo, strategy);
        let made = decisions(&report);
        let replaced: BTreeSet<String> = report["apply"]["replaced"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        // readlink -f / realpath see through a symlink: where siblings differ, the copy stays.
        for kept in ["probe_readlink.sh", "probe_realpath.sh"] {
            let path = format!("../wt-feature/tools/{kept}");
            assert_eq!(
                made.get(&path).map(String::as_str),
                Some("keep"),
                "{report:#}"
            );
            assert!(!replaced.contains(&path));
        }
        // Every other idiom keeps its own directory through a symlink, never a wrapper.
        for (name, _) in IDIOMS.iter().take(5) {
            let path = format!("../wt-feature/tools/{name}");
            assert!(replaced.contains(&path), "{path}: {report:#}");
            if strategy == "wrapper" {
                assert_eq!(made[&path], "symlink", "{path}");
            }
        }
        let path = "../wt-feature/tools/test_coordination_helper.sh".to_string();
        assert!(replaced.contains(&path));
        if strategy == "wrapper" {
            assert_eq!(made[&path], "symlink");
            // Same siblings in legacy/, but it reads its own path: under a wrapper `$0` would
            // name the canonical, so a symlink keeps what it sees.
            assert_eq!(
                made["legacy/tools/probe_dollar0.sh"], "symlink",
                "{report:#}"
            );
            // Sourced libraries are never wrappers.
            for lib in [
                "legacy/tools/lib/common.sh",
                "../wt-feature/tools/lib/common.sh",
            ] {
                assert_eq!(made[lib], "symlink", "{lib}: {report:#}");
            }
        }
        // Every consolidated script still parses and reaches what it reached before.
        for path in &replaced {
            let abs = c.repo.join(path);
            let syntax = Process::new("bash").arg("-n").arg(&abs).output().unwrap();
            assert!(syntax.status.success(), "bash -n {path}");
        }
        assert_eq!(probe(&c.top), answers, "{strategy}: {report:#}");

        let manifest = report["apply"]["manifest"].as_str().unwrap().to_string();
        beamops(&c.repo)
            .args(["dedupe", "--undo", &manifest])
            .assert()
            .code(0);
        assert_eq!(
            snapshot(&c.top),
            before,
            "{strategy}: undo restores every byte"
        );
    }
}

#[test]
fn an_edit_through_a_symlink_is_reported_by_undo_and_never_lost() {
    let c = corpus();
    let before = snapshot(&c.top);
    let report = apply_json(&c.repo, "symlink");
    let manifest = report["apply"]["manifest"].as_str().unwrap().to_string();
    // A person edits the worktree's copy; the symlink carries the edit into main's canonical.
    let copy = c.worktree.join("tools/caller.sh");
    assert!(
        std::fs::symlink_metadata(&copy)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let canonical = c.repo.join("tools/caller.sh");
    let original = std::fs::read_to_string(&canonical).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .unwrap();
    std::io::Write::write_all(&mut file, b"echo edited in the worktree\n").unwrap();
    drop(file);
    let edited = std::fs::read_to_string(&canonical).unwrap();
    assert_ne!(edited, original);

    let undo = beamops(&c.repo)
        .args(["dedupe", "--format", "json", "--undo", &manifest])
        .output()
        .unwrap();
    assert_eq!(undo.status.code(), Some(4), "a person must look");
    let out = json(&undo);
    let changed = out["canonical_changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{out:#}");
    assert_eq!(changed[0]["canonical"], canonical.display().to_string());
    assert!(
        changed[0]["copies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &Value::from(copy.display().to_string())),
        "{out:#}"
    );
    // The edit is kept where it landed and saved; the pre-apply bytes are there to put back.
    assert_eq!(std::fs::read_to_string(&canonical).unwrap(), edited);
    let saved = changed[0]["edited"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(saved).unwrap(), edited);
    let old = changed[0]["before_apply"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(old).unwrap(), original);
    // Every copy holds its own original again.
    let mut expected = before;
    let mut now = snapshot(&c.top);
    expected.remove(&canonical);
    now.remove(&canonical);
    assert_eq!(now, expected);
    // The text says so too.
    let text = beamops(&c.repo)
        .args(["dedupe", "--undo", &manifest])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(4));
    let said = String::from_utf8_lossy(&text.stdout);
    assert!(
        said.contains("changed since the apply") && said.contains("cp "),
        "{said}"
    );
}

#[test]
fn undo_after_the_repository_moved_restores_in_the_new_place() {
    // schema 2 (paths relative to the root), then an old schema-1 manifest (absolute paths).
    for old_schema in [false, true] {
        let c = corpus();
        let report = apply_json(&c.repo, "symlink");
        let manifest = c.repo.join(report["apply"]["manifest"].as_str().unwrap());
        let text = std::fs::read_to_string(&manifest).unwrap();
        let mut m: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["schema"], 2);
        for e in m["entries"].as_array().unwrap() {
            assert!(!e["path"].as_str().unwrap().starts_with('/'), "{e}");
        }
        if old_schema {
            m["schema"] = 1.into();
            for e in m["entries"].as_array_mut().unwrap() {
                for key in ["path", "canonical"] {
                    let abs = scan_normalize(&c.repo.join(e[key].as_str().unwrap()));
                    e[key] = abs.display().to_string().into();
                }
                e.as_object_mut().unwrap().remove("canonical_sha256");
            }
            std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        }
        // Undo the symlinks in a pristine copy of the tree would be the expectation: take it
        // from the scan before the apply, rebased onto the new place.
        let moved = c.top.join("moved-repo");
        std::fs::rename(&c.repo, &moved).unwrap();
        let name = manifest.file_name().unwrap().to_str().unwrap().to_string();
        let undo = beamops(&moved)
            .args(["dedupe", "--format", "json", "--undo", &name])
            .output()
            .unwrap();
        assert_eq!(
            undo.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&undo.stderr)
        );
        let out = json(&undo);
        assert_eq!(out["moved_from"], c.repo.display().to_string(), "{out:#}");
        assert!(!c.repo.exists(), "nothing is recreated under the old path");
        // No symlink is left, in the moved repository or the worktree beside it.
        for (path, (kind, _, _)) in snapshot(&c.top) {
            assert_eq!(kind, "file", "{} is still a symlink", path.display());
        }
        assert_eq!(
            std::fs::read_to_string(moved.join("legacy/tools/probe_dollar0.sh")).unwrap(),
            IDIOMS[0].1
        );
    }
}

fn scan_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A folder (outside git) with 30 scripts copied into 3 more folders: 90 copies.
fn many_copies(dir: &Path) {
    for k in 0..30 {
        let body = format!("#!/bin/sh\necho script {k}\nexit {}\n", k % 3);
        write(&dir.join(format!("base/s{k}.sh")), &body, 0o755);
        for copy in 0..3 {
            write(&dir.join(format!("copy{copy}/s{k}.sh")), &body, 0o755);
        }
    }
}

fn unfinished(dir: &Path) -> Vec<Value> {
    let out = beamops(dir)
        .args(["dedupe", "--format", "json"])
        .output()
        .unwrap();
    json(&out)["unfinished"].as_array().unwrap().clone()
}

#[test]
fn kill_9_at_random_points_of_apply_is_named_by_the_next_run_and_undone_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap().join("base-tree");
    many_copies(&base);
    let before = snapshot(&base);
    let bin = assert_cmd::cargo::cargo_bin("beamops");
    let spawn = |dir: &Path, pause: Option<usize>| {
        let mut cmd = Process::new(&bin);
        cmd.args(["dedupe", "--apply", "--allow-dirty"])
            .current_dir(dir)
            .env_remove("BEAMOPS_PROJECT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(n) = pause {
            cmd.env("BEAMOPS_DEDUPE_PAUSE_AFTER", n.to_string());
        }
        cmd.spawn().unwrap()
    };
    let copy_of_base = |name: &str| {
        let dir = tmp.path().join(name);
        let ok = Process::new("cp")
            .args(["-a"])
            .arg(&base)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success());
        dir.canonicalize().unwrap()
    };
    // How long a whole apply takes here, so the kills land across all of it.
    let probe_dir = copy_of_base("timing");
    let started = Instant::now();
    assert!(spawn(&probe_dir, None).wait().unwrap().success());
    let full = started.elapsed().max(Duration::from_millis(20));

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}, a full apply took {full:?}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut mid_apply = 0;
    for trial in 0..24 {
        let dir = copy_of_base(&format!("trial-{trial}"));
        let mut child = if trial % 2 == 0 {
            // A random moment anywhere in the run: scan, backups, manifest, replacements.
            let child = spawn(&dir, None);
            std::thread::sleep(full.mul_f64((next() % 1000) as f64 / 1000.0));
            child
        } else {
            // Deterministically between two replacements.
            let n = 1 + (next() % 89) as usize;
            let child = spawn(&dir, Some(n));
            let started = Instant::now();
            loop {
                if let Some((_, replaced)) = manifest_states(&dir)
                    && replaced >= n
                {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "never paused");
                std::thread::sleep(Duration::from_millis(10));
            }
            child
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let state = std::fs::read_dir(dir.join(".beamops/dedupe"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                (p, m["state"].as_str().unwrap().to_string())
            });
        let named = unfinished(&dir);
        match &state {
            None => {
                assert!(named.is_empty());
                assert_eq!(
                    snapshot(&dir),
                    rebase(&before, &base, &dir),
                    "trial {trial}"
                );
                continue;
            }
            Some((path, state)) if state.as_str() == "in-progress" => {
                mid_apply += 1;
                assert_eq!(named.len(), 1, "trial {trial}: {named:?}");
                let rel = format!(
                    ".beamops/dedupe/{}",
                    path.file_name().unwrap().to_str().unwrap()
                );
                assert_eq!(named[0]["manifest"], rel.as_str());
                assert_eq!(named[0]["undo"], format!("beamops dedupe --undo {rel}"));
                // The text names it too, with its undo.
                let text = beamops(&dir).args(["dedupe"]).output().unwrap();
                let said = String::from_utf8_lossy(&text.stdout);
                assert!(
                    said.contains(&format!("undo: beamops dedupe --undo {rel}")),
                    "{said}"
                );
            }
            Some(_) => assert!(
                named.is_empty(),
                "trial {trial}: a finished apply is not named"
            ),
        }
        let (path, _) = state.unwrap();
        beamops(&dir)
            .args(["dedupe", "--undo"])
            .arg(&path)
            .assert()
            .code(0);
        assert_eq!(
            snapshot(&dir),
            rebase(&before, &base, &dir),
            "trial {trial}"
        );
        assert!(
            unfinished(&dir).is_empty(),
            "trial {trial}: undone is finished"
        );
    }
    assert!(mid_apply >= 12, "only {mid_apply} kills landed mid-apply");
}

fn rebase(
    snap: &BTreeMap<PathBuf, (String, String, u32)>,
    from: &Path,
    to: &Path,
) -> BTreeMap<PathBuf, (String, String, u32)> {
    snap.iter()
        .map(|(p, v)| (to.join(p.strip_prefix(from).unwrap()), v.clone()))
        .collect()
}

#[test]
fn copies_edited_behind_assume_unchanged_or_skip_worktree_are_refused_without_allow_dirty() {
    for flag in ["--assume-unchanged", "--skip-worktree"] {
        let c = corpus();
        // The same local edit in every copy keeps them copies of each other, and git's status
        // shows none of them.
        for dir in [c.repo.join("tools"), c.repo.join("legacy/tools")] {
            git(&dir, &["update-index", flag, "caller.sh"]);
        }
        git(
            &c.worktree.join("tools"),
            &["update-index", flag, "caller.sh"],
        );
        for dir in [
            c.repo.join("tools"),
            c.repo.join("legacy/tools"),
            c.worktree.join("tools"),
        ] {
            let path = dir.join("caller.sh");
            let text = std::fs::read_to_string(&path).unwrap() + "# local edit\n";
            std::fs::write(&path, text).unwrap();
        }
        let status = Process::new("git")
            .args(["status", "--porcelain"])
            .current_dir(&c.repo)
            .output()
            .unwrap();
        assert!(status.stdout.is_empty(), "{flag}: git status shows nothing");
        let before = snapshot(&c.top);
        let out = beamops(&c.repo)
            .args(["dedupe", "--apply"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{flag}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("legacy/tools/caller.sh")
                && said.contains("../wt-feature/tools/caller.sh"),
            "{flag}: {said}"
        );
        assert_eq!(snapshot(&c.top), before);
    }
}

/// What a reviewer found a wrapper changing, as one class: anything a script does with its own
/// path or its own text, and a file with no `#!` (run by whichever shell runs it, or sourced).
/// Each copy, run the way its callers run it, prints the same before and after `--apply
/// --strategy wrapper`.
#[test]
fn a_wrapper_never_changes_what_a_script_does_with_its_own_name_or_text() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let scripts: [(&str, &str); 5] = [
        // Acts on the name it was called by.
        (
            "name.sh",
            "#!/bin/bash\ncase \"$(basename \"$0\")\" in\n  name.sh) echo \"as name.sh\" ;;\nesac\necho \"usage: ${0##*/}\"\n",
        ),
        // Finds its directory through a variable, then reads a file there that differs.
        (
            "indirect.sh",
            "#!/bin/bash\nme=$0\nhere=${me%/*}\ncat \"$here/data.txt\"\n",
        ),
        // bash-only, no #!: run with `bash`, or sourced.
        (
            "lib.sh",
            "arr=(one two)\n[[ ${#arr[@]} -eq 2 ]] && echo \"second=${arr[1]}\"\ngreet() { echo hi; }\n",
        ),
        // Prints its own usage comment; the copies differ only in that comment.
        (
            "help.sh",
            "#!/bin/bash\n# Usage: {WHO}\nsed -n 's/^# //p' \"$0\"\n",
        ),
        // A plain program: a wrapper is fine here and must still be used.
        ("plain.sh", "#!/bin/bash\necho plain\n"),
    ];
    for dir in ["a", "b"] {
        for (name, text) in scripts {
            write(
                &root.join(dir).join(name),
                &text.replace("{WHO}", dir),
                0o755,
            );
        }
        write(
            &root.join(dir).join("data.txt"),
            &format!("data of {dir}\n"),
            0o644,
        );
    }
    let runs = |when: &str| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for dir in ["a", "b"] {
            for (name, _) in scripts {
                let path = format!("{dir}/{name}");
                let ran = std::process::Command::new("bash")
                    .arg(&path)
                    .current_dir(root)
                    .output()
                    .unwrap();
                out.push((
                    format!("{when} bash {path}"),
                    format!(
                        "{}{}|{}",
                        String::from_utf8_lossy(&ran.stdout),
                        String::from_utf8_lossy(&ran.stderr),
                        ran.status.code().unwrap_or(-1)
                    ),
                ));
            }
            // Sourced, then the caller goes on.
            let sourced = std::process::Command::new("bash")
                .args(["-c", &format!("source {dir}/lib.sh; greet; echo survived")])
                .current_dir(root)
                .output()
                .unwrap();
            out.push((
                format!("{when} source {dir}/lib.sh"),
                String::from_utf8_lossy(&sourced.stdout).into_owned(),
            ));
        }
        out
    };
    let before = runs("");
    let out = beamops(root)
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
    let report = json(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = runs("");
    assert_eq!(before, after, "{report:#}");
    // Something was consolidated, and the plain program got the wrapper it asked for.
    let replaced = report["apply"]["replaced"].to_string();
    assert!(replaced.contains("plain.sh"), "{report:#}");
    let plain = ["a/plain.sh", "b/plain.sh"]
        .iter()
        .map(|p| std::fs::read_to_string(root.join(p)).unwrap_or_default())
        .any(|t| t.contains("beamops-dedupe-wrapper"));
    assert!(plain, "{report:#}");
}
