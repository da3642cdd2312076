//! `beamops worktree` against real repositories made with git in temp dirs.
//!
//! Every at-risk state: `remove` refuses with exit 4 and leaves the worktree byte-identical; the
//! states a backup covers: `remove --backup` then `restore` brings every file and commit back.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use assert_cmd::Command;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Fixture

struct Fixture {
    _tmp: tempfile::TempDir,
    main: PathBuf,
    wt: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Process::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_EDITOR", "true")
        .stdin(Stdio::piped())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like `git`, for commands that are expected to stop half-way (a conflicting merge).
fn git_may_fail(dir: &Path, args: &[&str]) {
    let _ = Process::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_EDITOR", "true")
        .stdin(Stdio::piped())
        .output()
        .expect("git runs");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A main worktree on `main` with a few tracked files, and a linked worktree `wt` on branch
/// `feature` with no commits of its own.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let main = root.join("main");
    std::fs::create_dir(&main).unwrap();
    git(&main, &["init", "-q", "-b", "main"]);
    write(&main.join("README.md"), "hello\n");
    write(&main.join("lib/app.ex"), "defmodule App do\nend\n");
    write(&main.join("bin/run.sh"), "#!/bin/sh\necho run\n");
    std::fs::set_permissions(
        main.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(
        &main.join(".gitignore"),
        ".env\n*.dump\ndumps/\n_build/\ndeps/\nnode_modules/\n.cache/\n",
    );
    git(&main, &["add", "."]);
    git(&main, &["commit", "-q", "-m", "initial"]);
    let wt = root.join("wt");
    git(
        &main,
        &[
            "worktree",
            "add",
            "-q",
            wt.to_str().unwrap(),
            "-b",
            "feature",
        ],
    );
    Fixture {
        _tmp: tmp,
        main,
        wt,
    }
}

fn beamops(dir: &Path) -> Command {
    common::beamops_in(dir)
}

/// Every file under `dir`: relative path -> kind, mode and content digest (symlinks by target).
fn digest(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = path.symlink_metadata().unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("link {}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(
                    rel,
                    format!("file {mode:o} {}", beamops::fsutil::sha256_hex(&bytes)),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn porcelain(main: &Path) -> String {
    git(main, &["worktree", "list", "--porcelain"])
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(out));
    })
}

/// `remove` exits 4 naming `check` among the blocking checks, and nothing changed.
fn assert_refused(fx: &Fixture, args: &[&str], check: &str) -> Value {
    let files_before = digest(&fx.wt);
    let list_before = porcelain(&fx.main);
    let mut all = vec![
        "worktree",
        "remove",
        fx.wt.to_str().unwrap(),
        "--format",
        "json",
    ];
    all.extend_from_slice(args);
    let out = beamops(&fx.main).args(&all).output().unwrap();
    let report = json(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected a refusal for {check}: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "refused");
    let blocking: Vec<&str> = report["blocking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(blocking.contains(&check), "{check} not in {blocking:?}");
    assert_eq!(digest(&fx.wt), files_before, "the worktree changed");
    assert_eq!(
        porcelain(&fx.main),
        list_before,
        "git's worktree list changed"
    );
    report
}

/// What a restore must bring back: every file (but the `.git` link file), the index's view,
/// HEAD and its history.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: BTreeMap<String, String>,
    status: String,
    staged: String,
    head: String,
    branch: String,
    history: String,
}

fn snapshot(wt: &Path) -> Snapshot {
    let mut files = digest(wt);
    files.remove(".git");
    Snapshot {
        files,
        status: git(
            wt,
            &[
                "status",
                "--porcelain=v1",
                "--ignored",
                "--untracked-files=all",
            ],
        ),
        staged: git(wt, &["diff", "--cached"]),
        head: git(wt, &["rev-parse", "HEAD"]),
        branch: git(wt, &["branch", "--show-current"]),
        history: git(wt, &["log", "--format=%H %T %s"]),
    }
}

/// `remove --backup` succeeds; then, with the commits made unreachable and collected, `restore`
/// brings back exactly what was there.
fn assert_backup_restores(fx: &Fixture) {
    let before = snapshot(&fx.wt);
    let out = beamops(&fx.main)
        .args(["worktree", "remove", "--backup", "--format", "json"])
        .arg(&fx.wt)
        .output()
        .unwrap();
    let report = json(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "removed");
    assert!(!fx.wt.exists());
    assert!(!porcelain(&fx.main).contains(fx.wt.to_str().unwrap()));
    let backup = PathBuf::from(report["backup"].as_str().unwrap());
    assert!(backup.starts_with(fx.main.join(".beamops/backups")));

    // Make the bundle the only copy of the worktree's own commits.
    if !before.branch.trim().is_empty() {
        git(&fx.main, &["branch", "-D", before.branch.trim()]);
    }
    git(&fx.main, &["reflog", "expire", "--expire=now", "--all"]);
    // `prune` rather than `gc`: the objects are loose here, and it runs no child git.
    git(&fx.main, &["prune", "--expire=now"]);
    let head = before.head.trim();
    let still_there = Process::new("git")
        .arg("-C")
        .arg(&fx.main)
        .args(["cat-file", "-e", head])
        .stdin(Stdio::piped())
        .output()
        .unwrap()
        .status
        .success();
    let on_main = git(&fx.main, &["rev-parse", "main"]).trim() == head;
    assert!(
        on_main || !still_there,
        "HEAD {head} survived; the restore would not prove the bundle works"
    );

    let out = beamops(&fx.main)
        .args(["worktree", "restore", "--format", "json"])
        .arg(&backup)
        .output()
        .unwrap();
    let restored = json(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{restored:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&fx.wt), before);
    assert!(porcelain(&fx.main).contains(fx.wt.to_str().unwrap()));
}

// ---------------------------------------------------------------------------------------------
// States at risk

fn modified(fx: &Fixture) {
    write(&fx.wt.join("README.md"), "hello, edited\n");
    std::fs::remove_file(fx.wt.join("lib/app.ex")).unwrap();
    // Dropping the executable bit is a change git tracks.
    std::fs::set_permissions(
        fx.wt.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

fn staged(fx: &Fixture) {
    write(&fx.wt.join("README.md"), "staged version\n");
    write(&fx.wt.join("lib/new.ex"), "defmodule New do\nend\n");
    git(&fx.wt, &["add", "README.md", "lib/new.ex"]);
    git(&fx.wt, &["rm", "-q", "--cached", "lib/app.ex"]);
    // A later, unstaged edit on top: both versions must survive.
    write(&fx.wt.join("README.md"), "working version\n");
}

fn untracked(fx: &Fixture) {
    write(&fx.wt.join("notes/todo.md"), "- finish\n");
    write(&fx.wt.join("scratch.exs"), "IO.puts(:hi)\n");
    std::os::unix::fs::symlink("../README.md", fx.wt.join("notes/readme-link")).unwrap();
}

fn ignored(fx: &Fixture) {
    write(&fx.wt.join(".env"), "SECRET=1\n");
    std::fs::set_permissions(fx.wt.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write(
        &fx.wt.join("dumps/prod.sql"),
        "insert into users values (1);\n",
    );
    write(&fx.wt.join("lib/data.dump"), "binary-ish\n");
}

fn commits_on_branch(fx: &Fixture) {
    write(&fx.wt.join("lib/feature.ex"), "defmodule Feature do\nend\n");
    git(&fx.wt, &["add", "."]);
    git(&fx.wt, &["commit", "-q", "-m", "feature work"]);
    write(
        &fx.wt.join("lib/feature.ex"),
        "defmodule Feature do\n  def x, do: 1\nend\n",
    );
    git(&fx.wt, &["commit", "-q", "-am", "more feature work"]);
}

fn commits_detached(fx: &Fixture) {
    git(&fx.wt, &["checkout", "-q", "--detach"]);
    write(&fx.wt.join("experiment.ex"), "1\n");
    git(&fx.wt, &["add", "."]);
    git(&fx.wt, &["commit", "-q", "-m", "detached experiment"]);
}

#[test]
fn modified_tracked_files_refuse() {
    let fx = fixture();
    modified(&fx);
    let report = assert_refused(&fx, &[], "tracked-changes");
    let items = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "tracked-changes")
        .unwrap()["items"]
        .to_string();
    assert!(
        items.contains("README.md") && items.contains("lib/app.ex"),
        "{items}"
    );
}

#[test]
fn modified_tracked_files_back_up_and_restore() {
    let fx = fixture();
    modified(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn staged_files_refuse() {
    let fx = fixture();
    staged(&fx);
    assert_refused(&fx, &[], "tracked-changes");
}

#[test]
fn staged_files_back_up_and_restore_with_the_index() {
    let fx = fixture();
    staged(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn untracked_files_refuse() {
    let fx = fixture();
    untracked(&fx);
    assert_refused(&fx, &[], "untracked");
}

#[test]
fn untracked_files_back_up_and_restore() {
    let fx = fixture();
    untracked(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn ignored_files_off_the_allow_list_refuse_listing_each() {
    let fx = fixture();
    ignored(&fx);
    // Build output alongside does not matter.
    write(&fx.wt.join("_build/dev/app.beam"), "beam");
    let report = assert_refused(&fx, &[], "ignored");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "ignored")
        .unwrap()
        .clone();
    let mut items: Vec<&str> = check["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    items.sort();
    assert_eq!(items, vec![".env", "dumps/prod.sql", "lib/data.dump"]);
}

#[test]
fn ignored_files_back_up_and_restore() {
    let fx = fixture();
    ignored(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn commits_only_on_the_branch_refuse() {
    let fx = fixture();
    commits_on_branch(&fx);
    let report = assert_refused(&fx, &[], "unique-commits");
    assert!(report.to_string().contains("more feature work"));
}

#[test]
fn commits_only_on_the_branch_back_up_and_restore() {
    let fx = fixture();
    commits_on_branch(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn commits_on_a_detached_head_refuse() {
    let fx = fixture();
    commits_detached(&fx);
    assert_refused(&fx, &[], "unique-commits");
}

#[test]
fn commits_on_a_detached_head_back_up_and_restore() {
    let fx = fixture();
    commits_detached(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn commits_also_on_a_remote_tracking_ref_are_not_at_risk() {
    let fx = fixture();
    commits_on_branch(&fx);
    let head = git(&fx.wt, &["rev-parse", "HEAD"]);
    git(
        &fx.main,
        &["update-ref", "refs/remotes/origin/feature", head.trim()],
    );
    beamops(&fx.main)
        .args(["worktree", "remove"])
        .arg(&fx.wt)
        .assert()
        .code(0);
}

#[test]
fn everything_at_once_backs_up_and_restores() {
    let fx = fixture();
    commits_on_branch(&fx);
    staged(&fx);
    untracked(&fx);
    ignored(&fx);
    assert_backup_restores(&fx);
}

#[test]
fn a_locked_worktree_refuses_even_with_backup() {
    let fx = fixture();
    git(
        &fx.main,
        &[
            "worktree",
            "lock",
            "--reason",
            "on a usb disk",
            fx.wt.to_str().unwrap(),
        ],
    );
    let report = assert_refused(&fx, &["--backup"], "locked");
    assert!(report.to_string().contains("on a usb disk"));
    assert!(
        !fx.main.join(".beamops/backups").exists()
            || std::fs::read_dir(fx.main.join(".beamops/backups"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// A worktree with a submodule initialized from a sibling repository; its commit is also on a
/// remote-tracking ref, so only the submodule is at risk.
fn with_submodule(fx: &Fixture) {
    let sub = fx.main.parent().unwrap().join("sub-origin");
    std::fs::create_dir(&sub).unwrap();
    git(&sub, &["init", "-q", "-b", "main"]);
    write(&sub.join("lib.txt"), "sub\n");
    git(&sub, &["add", "."]);
    git(&sub, &["commit", "-q", "-m", "sub"]);
    git(
        &fx.wt,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            sub.to_str().unwrap(),
            "vendor/sub",
        ],
    );
    git(&fx.wt, &["commit", "-q", "-m", "add submodule"]);
    let head = git(&fx.wt, &["rev-parse", "HEAD"]);
    git(
        &fx.main,
        &["update-ref", "refs/remotes/origin/feature", head.trim()],
    );
}

#[test]
fn a_submodule_with_changes_refuses() {
    let fx = fixture();
    with_submodule(&fx);
    write(
        &fx.wt.join("vendor/sub/lib.txt"),
        "changed inside the submodule\n",
    );
    let report = assert_refused(&fx, &["--backup"], "submodules");
    assert!(
        report.to_string().contains("vendor/sub: modified files"),
        "{report:#}"
    );
}

#[test]
fn a_clean_initialized_submodule_refuses_before_git_would() {
    let fx = fixture();
    with_submodule(&fx);
    untracked(&fx);
    // Without this check the backup would be taken and git would refuse afterwards.
    assert_refused(&fx, &["--backup"], "submodules");
    git(&fx.wt, &["submodule", "deinit", "-q", "vendor/sub"]);
    assert_refused(&fx, &["--backup"], "submodules");
}

fn conflicting_branch(fx: &Fixture) {
    write(&fx.main.join("conflict.txt"), "base\n");
    git(&fx.main, &["add", "conflict.txt"]);
    git(&fx.main, &["commit", "-q", "-m", "base"]);
    git(&fx.main, &["branch", "other"]);
    git(&fx.main, &["checkout", "-q", "other"]);
    write(&fx.main.join("conflict.txt"), "theirs\n");
    git(&fx.main, &["commit", "-q", "-am", "theirs"]);
    git(&fx.main, &["checkout", "-q", "main"]);
    git(&fx.wt, &["reset", "-q", "--hard", "main"]);
    write(&fx.wt.join("conflict.txt"), "ours\n");
    git(&fx.wt, &["commit", "-q", "-am", "ours"]);
}

#[test]
fn a_merge_in_progress_refuses() {
    let fx = fixture();
    conflicting_branch(&fx);
    git_may_fail(&fx.wt, &["merge", "-q", "other"]);
    assert!(fx.main.join(".git/worktrees/wt/MERGE_HEAD").exists());
    assert_refused(&fx, &["--backup"], "operation-in-progress");
}

#[test]
fn a_rebase_in_progress_refuses() {
    let fx = fixture();
    conflicting_branch(&fx);
    git_may_fail(&fx.wt, &["rebase", "-q", "other"]);
    assert_refused(&fx, &["--backup"], "operation-in-progress");
}

#[test]
fn a_cherry_pick_in_progress_refuses() {
    let fx = fixture();
    conflicting_branch(&fx);
    git_may_fail(&fx.wt, &["cherry-pick", "other"]);
    assert!(fx.main.join(".git/worktrees/wt/CHERRY_PICK_HEAD").exists());
    assert_refused(&fx, &["--backup"], "operation-in-progress");
}

#[test]
fn a_bisect_in_progress_refuses() {
    let fx = fixture();
    git(&fx.wt, &["bisect", "start"]);
    assert_refused(&fx, &["--backup"], "operation-in-progress");
}

#[test]
fn the_main_worktree_refuses() {
    let fx = fixture();
    let list_before = porcelain(&fx.main);
    let files_before = digest(&fx.main);
    let out = beamops(&fx.wt)
        .args(["worktree", "remove", "--format", "json"])
        .arg(&fx.main)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let report = json(&out.stdout);
    assert!(report["blocking"].to_string().contains("main-worktree"));
    assert_eq!(porcelain(&fx.main), list_before);
    let mut after = digest(&fx.main);
    // Only the audit trail (and its ignore file) may appear.
    after.retain(|k, _| !k.starts_with(".beamops"));
    assert_eq!(after, files_before);
}

/// Kills the child when the test ends, pass or fail.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_working_inside_refuses() {
    let fx = fixture();
    std::fs::create_dir(fx.wt.join("lib/deep")).unwrap();
    let child = Sleeper(
        Process::new("sleep")
            .arg("30")
            .current_dir(fx.wt.join("lib/deep"))
            .spawn()
            .unwrap(),
    );
    let report = assert_refused(&fx, &["--backup"], "processes");
    assert!(
        report
            .to_string()
            .contains(&format!("pid {}", child.0.id()))
    );
    drop(child);
    std::fs::remove_dir(fx.wt.join("lib/deep")).unwrap();
    beamops(&fx.main)
        .args(["worktree", "remove"])
        .arg(&fx.wt)
        .assert()
        .code(0);
}

#[test]
fn a_symlink_elsewhere_pointing_in_refuses() {
    let fx = fixture();
    std::os::unix::fs::symlink("../../wt/lib", fx.main.join("lib/feature-lib")).unwrap();
    let report = assert_refused(&fx, &["--backup"], "links-into");
    assert!(report.to_string().contains("feature-lib"));
}

#[test]
fn a_wrapper_script_elsewhere_exec_ing_into_it_refuses() {
    let fx = fixture();
    write(
        &fx.main.join("scripts/run"),
        "#!/bin/sh\nexec \"$(dirname \"$0\")/../../wt/bin/run.sh\" \"$@\"\n",
    );
    assert_refused(&fx, &["--backup"], "links-into");
}

#[test]
fn a_marked_dedupe_wrapper_pointing_in_refuses() {
    let fx = fixture();
    write(
        &fx.main.join("tools/run"),
        "#!/bin/sh\n# beamops dedupe wrapper\nhere=$(cd \"$(dirname \"$0\")\" && pwd)\nscript=$here/../../wt/bin/run.sh\nexec \"$script\" \"$@\"\n",
    );
    assert_refused(&fx, &[], "links-into");
}

#[test]
fn an_unmerged_branch_refuses_delete_branch() {
    let fx = fixture();
    commits_on_branch(&fx);
    // The commits are safe on another branch, but `feature` is not merged into main.
    git(&fx.main, &["branch", "keep", "feature"]);
    assert_refused(&fx, &["--delete-branch"], "branch-merged");
    assert!(git(&fx.main, &["branch", "--list", "feature"]).contains("feature"));
}

// ---------------------------------------------------------------------------------------------
// Removals that go ahead

fn assert_removed(fx: &Fixture, args: &[&str]) -> Value {
    let out = beamops(&fx.main)
        .args(["worktree", "remove", "--format", "json"])
        .arg(&fx.wt)
        .args(args)
        .output()
        .unwrap();
    let report = json(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["outcome"], "removed");
    assert!(!fx.wt.exists());
    let listed = porcelain(&fx.main);
    assert!(!listed.contains(fx.wt.to_str().unwrap()), "{listed}");
    assert!(listed.contains(fx.main.to_str().unwrap()));
    report
}

#[test]
fn a_clean_worktree_is_removed_and_audited() {
    let fx = fixture();
    let report = assert_removed(&fx, &[]);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );
    let audit = std::fs::read_to_string(fx.main.join(".beamops/audit.jsonl")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "removed");
    assert_eq!(last["path"], fx.wt.to_str().unwrap());
    assert_eq!(last["branch"], "feature");
    assert!(last["checks"].as_array().unwrap().len() >= 10);
    assert!(last["user"].as_str().is_some_and(|u| !u.is_empty()));
    // The branch stays unless asked.
    assert!(git(&fx.main, &["branch", "--list", "feature"]).contains("feature"));
    // beamops' own state never shows up as untracked in the main worktree.
    assert_eq!(git(&fx.main, &["status", "--porcelain"]), "");
}

#[test]
fn a_worktree_with_only_build_output_is_removed() {
    let fx = fixture();
    write(&fx.wt.join("_build/dev/lib/app/ebin/app.beam"), "beam");
    write(
        &fx.wt.join("deps/jason/mix.exs"),
        "defmodule Jason.MixProject do end",
    );
    write(&fx.wt.join("node_modules/x/index.js"), "module.exports = 1");
    assert_removed(&fx, &[]);
}

#[test]
fn the_allow_list_comes_from_beamops_yaml() {
    let fx = fixture();
    write(&fx.wt.join(".cache/blob"), "cached");
    assert_refused(&fx, &[], "ignored");
    write(
        &fx.main.join("beamops.yaml"),
        "version: 1\napp:\n  name: demo\n  otp_app: demo\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local: {}\nworktree:\n  allow_list: [_build, .cache]\n",
    );
    assert_removed(&fx, &[]);
}

#[test]
fn delete_branch_deletes_a_merged_branch() {
    let fx = fixture();
    let report = assert_removed(&fx, &["--delete-branch"]);
    assert_eq!(report["branch_deleted"], "feature");
    assert_eq!(git(&fx.main, &["branch", "--list", "feature"]), "");
}

#[test]
fn backup_of_a_clean_worktree_restores_at_another_path() {
    let fx = fixture();
    let report = assert_removed(&fx, &["--backup"]);
    let elsewhere = fx.main.parent().unwrap().join("elsewhere");
    let out = beamops(&fx.main)
        .args(["worktree", "restore", "--format", "json", "--path"])
        .arg(&elsewhere)
        .arg(report["backup"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        git(&elsewhere, &["branch", "--show-current"]).trim(),
        "feature"
    );
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("README.md")).unwrap(),
        "hello\n"
    );
}

#[test]
fn restore_refuses_to_overwrite_an_existing_directory() {
    let fx = fixture();
    untracked(&fx);
    let report = assert_removed(&fx, &["--backup"]);
    write(&fx.wt.join("someone-else.txt"), "mine");
    beamops(&fx.main)
        .args(["worktree", "restore"])
        .arg(report["backup"].as_str().unwrap())
        .assert()
        .code(4);
    assert_eq!(
        std::fs::read_to_string(fx.wt.join("someone-else.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn a_worktree_is_found_by_name_or_branch() {
    let fx = fixture();
    beamops(&fx.main)
        .args(["worktree", "remove", "feature"])
        .assert()
        .code(0);
    assert!(!fx.wt.exists());
}

// ---------------------------------------------------------------------------------------------
// list and prune

#[test]
fn list_reports_every_worktree_in_json() {
    let fx = fixture();
    staged(&fx);
    untracked(&fx);
    ignored(&fx);
    write(&fx.wt.join("_build/x"), "x");
    git(&fx.main, &["worktree", "lock", fx.wt.to_str().unwrap()]);
    let out = beamops(&fx.wt)
        .args(["worktree", "list", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let list = json(&out.stdout);
    let worktrees = list["worktrees"].as_array().unwrap();
    assert_eq!(worktrees.len(), 2);
    let main = &worktrees[0];
    assert_eq!(main["main"], true);
    assert_eq!(main["branch"], "main");
    assert_eq!(main["merged"], true);
    let wt = &worktrees[1];
    assert_eq!(wt["path"], fx.wt.to_str().unwrap());
    assert_eq!(wt["branch"], "feature");
    assert_eq!(
        wt["head"].as_str().unwrap(),
        git(&fx.wt, &["rev-parse", "HEAD"]).trim()
    );
    assert_eq!(wt["locked"], true);
    assert_eq!(wt["prunable"], false);
    assert_eq!(wt["files"]["staged"], 3);
    assert_eq!(wt["files"]["untracked"], 4);
    // .env, dumps/, lib/data.dump, _build/ — all but _build at risk.
    assert_eq!(wt["files"]["ignored"], 4);
    assert_eq!(wt["files"]["ignored_at_risk"], 3);
    assert_eq!(list["default_branch"], "main");

    let text = beamops(&fx.main)
        .args(["worktree", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("feature") && text.contains("locked"),
        "{text}"
    );
}

#[test]
fn list_shows_ahead_behind_its_upstream() {
    let fx = fixture();
    git(
        &fx.main,
        &["remote", "add", "origin", fx.main.to_str().unwrap()],
    );
    git(
        &fx.main,
        &["update-ref", "refs/remotes/origin/feature", "HEAD"],
    );
    git(
        &fx.wt,
        &["branch", "-q", "--set-upstream-to", "origin/feature"],
    );
    commits_on_branch(&fx);
    let out = beamops(&fx.main)
        .args(["worktree", "list", "--format", "json"])
        .output()
        .unwrap();
    let list = json(&out.stdout);
    let wt = &list["worktrees"][1];
    assert_eq!(wt["upstream"], "origin/feature");
    assert_eq!(wt["ahead"], 2);
    assert_eq!(wt["behind"], 0);
    assert_eq!(wt["merged"], false);
}

#[test]
fn prune_is_a_dry_run_until_apply() {
    let fx = fixture();
    std::fs::remove_dir_all(&fx.wt).unwrap();
    let out = beamops(&fx.main)
        .args(["worktree", "prune", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report = json(&out.stdout);
    assert_eq!(report["applied"], false);
    assert_eq!(report["entries"][0]["name"], "wt");
    assert!(porcelain(&fx.main).contains("prunable"));

    beamops(&fx.main)
        .args(["worktree", "prune", "--apply"])
        .assert()
        .code(0);
    assert!(!porcelain(&fx.main).contains(fx.wt.to_str().unwrap()));
    beamops(&fx.main)
        .args(["worktree", "prune"])
        .assert()
        .code(0);
}

#[test]
fn outside_a_repository_is_an_error_with_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = beamops(tmp.path())
        .args(["worktree", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a git repository"));
}

#[test]
fn the_callers_own_shell_inside_refuses() {
    let fx = fixture();
    let bin = assert_cmd::cargo::cargo_bin("beamops");
    let files_before = digest(&fx.wt);
    // The shell stays the parent (no `exec`), its cwd inside the worktree.
    let out = Process::new("sh")
        .arg("-c")
        .arg(r#"cd "$1" && "$2" worktree remove "$1" --format json; echo "exit=$?""#)
        .arg("sh")
        .arg(&fx.wt)
        .arg(&bin)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exit=4"), "{stdout}");
    assert!(stdout.contains("\"processes\""), "{stdout}");
    assert!(stdout.contains("(sh)"), "{stdout}");
    assert_eq!(digest(&fx.wt), files_before);
}

#[test]
fn a_wrapper_building_its_exec_path_in_a_variable_refuses() {
    let fx = fixture();
    write(
        &fx.main.join("scripts/build"),
        "#!/bin/sh\nset -e\nself_dir=${0%/*}\ntarget=\"$self_dir/../../wt/bin/run.sh\"\nexec \"$target\" \"$@\"\n",
    );
    // A script that merely runs something else is not a wrapper into the worktree.
    write(
        &fx.main.join("scripts/other"),
        "#!/bin/sh\nexec ls \"$(dirname \"$0\")/..\"\n",
    );
    let report = assert_refused(&fx, &[], "links-into");
    let links = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "links-into")
        .unwrap()["items"]
        .to_string();
    assert!(
        links.contains("scripts/build") && !links.contains("scripts/other"),
        "{links}"
    );
}

#[test]
fn a_beamops_dedupe_wrapper_as_dedupe_writes_it_refuses() {
    let fx = fixture();
    // The exact shape `beamops dedupe --apply` writes (a quoted path after the script's dir).
    write(
        &fx.main.join("bin/run.sh"),
        "#!/bin/sh\n# beamops-dedupe-wrapper: consolidated into ../../wt/bin/run.sh; `beamops dedupe --undo .beamops/dedupe/x.json` restores the original.\nexec \"$(dirname -- \"$0\")\"/'../../wt/bin/run.sh' \"$@\"\n",
    );
    let report = assert_refused(&fx, &[], "links-into");
    assert!(report.to_string().contains("bin/run.sh"));
}
