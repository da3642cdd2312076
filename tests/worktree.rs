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
    /// The directory holding both worktrees.
    root: PathBuf,
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
    // Where the builds put their output: `_build/` and `deps/` beside mix.exs,
    // `node_modules/` beside assets/package.json.
    write(&main.join("mix.exs"), "defmodule App.MixProject do\nend\n");
    write(&main.join("assets/package.json"), "{}\n");
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
        root,
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

/// Everything a refused removal must leave byte for byte: the worktree's files, its
/// administrative directory (index, HEAD, reflog, per-worktree refs), the repository's refs and
/// reflogs, and git's list of worktrees.
fn untouched_state(fx: &Fixture) -> Vec<(String, BTreeMap<String, String>)> {
    let common = fx.main.join(".git");
    let mut out = vec![
        ("worktree".to_string(), digest(&fx.wt)),
        ("admin".to_string(), digest(&common.join("worktrees/wt"))),
        ("refs".to_string(), digest(&common.join("refs"))),
    ];
    for optional in ["logs", "packed-refs"] {
        let path = common.join(optional);
        if path.is_dir() {
            out.push((optional.to_string(), digest(&path)));
        } else if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((
                optional.to_string(),
                BTreeMap::from([(optional.into(), text)]),
            ));
        }
    }
    out.push((
        "worktree list".to_string(),
        BTreeMap::from([(String::new(), porcelain(&fx.main))]),
    ));
    out
}

/// `remove` exits 4 naming `check` among the blocking checks, and nothing changed.
fn assert_refused(fx: &Fixture, args: &[&str], check: &str) -> Value {
    let before = untouched_state(fx);
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
    let after = untouched_state(fx);
    for ((what, then), (_, now)) in before.iter().zip(&after) {
        assert_eq!(then, now, "the refusal changed the {what}");
    }
    report
}

/// The items of one check in a report.
fn items(report: &Value, check: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .map(|c| {
            c["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What a restore must bring back: every file (but the `.git` link file) with its mode, the
/// index (entries, stages, flags), HEAD, its history and the worktree's own refs.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: BTreeMap<String, String>,
    index: String,
    index_flags: String,
    status: String,
    staged: String,
    head: String,
    branch: String,
    history: String,
    own_refs: String,
}

fn snapshot(wt: &Path) -> Snapshot {
    let mut files = digest(wt);
    files.remove(".git");
    Snapshot {
        files,
        index: git(wt, &["ls-files", "--stage"]),
        // `h` assume-unchanged, `S` skip-worktree; intent-to-add shows in the status.
        index_flags: git(wt, &["ls-files", "-v"]),
        status: git(
            wt,
            &[
                "status",
                "--porcelain=v2",
                "--ignored",
                "--untracked-files=all",
            ],
        ),
        staged: git(wt, &["diff", "--cached"]),
        head: git(wt, &["rev-parse", "HEAD"]),
        branch: git(wt, &["branch", "--show-current"]),
        history: git(wt, &["log", "--format=%H %T %s"]),
        own_refs: git(
            wt,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/worktree/",
            ],
        ),
    }
}

/// Commits the worktree itself knows of: its HEAD reflog and its own refs.
fn own_commits(wt: &Path) -> Vec<String> {
    let mut out: Vec<String> = git(wt, &["reflog", "--format=%H", "HEAD"])
        .lines()
        .chain(
            git(
                wt,
                &["for-each-ref", "--format=%(objectname)", "refs/worktree/"],
            )
            .lines(),
        )
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn exists(main: &Path, oid: &str) -> bool {
    Process::new("git")
        .arg("-C")
        .arg(main)
        .args(["cat-file", "-e", &format!("{oid}^{{commit}}")])
        .stdin(Stdio::piped())
        .output()
        .unwrap()
        .status
        .success()
}

/// `remove --backup` succeeds and keeps the backup private; then, with every commit only the
/// worktree held made unreachable and collected, `restore` brings back exactly what was there.
/// Returns how many of the worktree's own commits only the bundle brought back.
/// With `stat_dependent`, what `git status` says is not compared:
/// it depends on stat data no restore can (or should) fake.
fn assert_backup_restores(fx: &Fixture, stat_dependent: bool) -> usize {
    let before = snapshot(&fx.wt);
    let commits = own_commits(&fx.wt);
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
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&backup), 0o700, "{}", backup.display());
    for entry in std::fs::read_dir(&backup).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }

    // Make the bundle the only copy of the worktree's own commits.
    if !before.branch.trim().is_empty() {
        git(&fx.main, &["branch", "-D", before.branch.trim()]);
    }
    git(&fx.main, &["reflog", "expire", "--expire=now", "--all"]);
    // `prune` rather than `gc`: the objects are loose here, and it runs no child git.
    git(&fx.main, &["prune", "--expire=now"]);
    let head = before.head.trim();
    let held =
        exists(&fx.main, head) && !git(&fx.main, &["for-each-ref", "--contains", head]).is_empty();
    assert!(
        held || !exists(&fx.main, head),
        "HEAD {head} survived; the restore would not prove the bundle works"
    );
    let gone = commits.iter().filter(|c| !exists(&fx.main, c)).count();

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
    let mut after = snapshot(&fx.wt);
    if stat_dependent {
        after.status = before.status.clone();
    }
    assert_eq!(after, before);
    assert!(porcelain(&fx.main).contains(fx.wt.to_str().unwrap()));
    let now = own_commits(&fx.wt);
    for commit in &commits {
        assert!(exists(&fx.main, commit), "{commit} did not come back");
        assert!(
            now.contains(commit),
            "{commit} is no longer in the HEAD reflog"
        );
    }
    gone
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

// More states: edits git status hides, ignored files that only look like build output, commits
// only the worktree holds, links from outside, and their neighbours that lose nothing.

fn assume_unchanged_edit(fx: &Fixture) {
    git(
        &fx.wt,
        &["update-index", "--assume-unchanged", "lib/app.ex"],
    );
    write(
        &fx.wt.join("lib/app.ex"),
        "defmodule App do\n  # edited\nend\n",
    );
}

fn skip_worktree_edit(fx: &Fixture) {
    git(&fx.wt, &["update-index", "--skip-worktree", "README.md"]);
    write(&fx.wt.join("README.md"), "hello, hidden\n");
}

fn assume_unchanged_deleted(fx: &Fixture) {
    git(&fx.wt, &["update-index", "--assume-unchanged", "README.md"]);
    std::fs::remove_file(fx.wt.join("README.md")).unwrap();
}

fn assume_unchanged_mode(fx: &Fixture) {
    git(
        &fx.wt,
        &["update-index", "--assume-unchanged", "bin/run.sh"],
    );
    std::fs::set_permissions(
        fx.wt.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// Same size, same mtime: with `core.checkStat=minimal` git trusts the stat data and reports
/// nothing (as when a tool restores timestamps after an edit).
fn stat_faked_edit(fx: &Fixture) {
    git(&fx.wt, &["config", "core.checkStat", "minimal"]);
    git(&fx.wt, &["config", "core.trustctime", "false"]);
    let file = fx.wt.join("lib/app.ex");
    // An old mtime, recorded in the index well before the index is written (not racy).
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    let set_mtime = |path: &Path| {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    };
    set_mtime(&file);
    git(&fx.wt, &["update-index", "--refresh"]);
    write(&file, "defmodule Apq do\nend\n");
    set_mtime(&file);
    assert_eq!(
        git(&fx.wt, &["status", "--porcelain"]),
        "",
        "git sees the edit"
    );
}

fn file_mode_ignored(fx: &Fixture) {
    git(&fx.main, &["config", "core.fileMode", "false"]);
    std::fs::set_permissions(
        fx.wt.join("README.md"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(
        git(&fx.wt, &["status", "--porcelain"]),
        "",
        "git sees the mode"
    );
}

/// A CRLF working copy under `core.autocrlf=true` is what the index holds: not a change.
fn autocrlf_copy(fx: &Fixture) {
    git(&fx.main, &["config", "core.autocrlf", "true"]);
    write(&fx.wt.join("README.md"), "hello\r\n");
    // A fresh index, as after a checkout under autocrlf.
    git(&fx.wt, &["read-tree", "HEAD"]);
    assert_eq!(git(&fx.wt, &["status", "--porcelain"]), "");
}

fn sparse_clean(fx: &Fixture) {
    git(
        &fx.wt,
        &[
            "sparse-checkout",
            "set",
            "--no-cone",
            "/lib/",
            "/*.md",
            "/mix.exs",
        ],
    );
    assert!(!fx.wt.join("bin/run.sh").exists());
}

/// An edit inside a sparse checkout: the restore must bring back the sparse state too.
fn sparse_edit(fx: &Fixture) {
    sparse_clean(fx);
    write(
        &fx.wt.join("lib/app.ex"),
        "defmodule App do\n  # sparse\nend\n",
    );
}

fn staged_deletion(fx: &Fixture) {
    git(&fx.wt, &["rm", "-q", "lib/app.ex"]);
}

fn intent_to_add(fx: &Fixture) {
    write(&fx.wt.join("lib/planned.ex"), "defmodule Planned do\nend\n");
    git(&fx.wt, &["add", "--intent-to-add", "lib/planned.ex"]);
}

fn staged_mode_change(fx: &Fixture) {
    git(&fx.wt, &["update-index", "--chmod=+x", "README.md"]);
}

fn staged_symlink(fx: &Fixture) {
    std::os::unix::fs::symlink("README.md", fx.wt.join("readme")).unwrap();
    git(&fx.wt, &["add", "readme"]);
}

fn hand_written_under_ignored_deps(fx: &Fixture) {
    write(
        &fx.wt.join("docs/deps/audit-notes.md"),
        "# audit\nwritten by hand\n",
    );
}

fn node_modules_without_package_json(fx: &Fixture) {
    write(&fx.wt.join("tools/node_modules/notes.txt"), "mine\n");
}

fn build_named_dir_at_the_root_without_its_build_file(fx: &Fixture) {
    // `target/` is Cargo's beside a Cargo.toml; this repository has none.
    write(&fx.wt.join("target/report.md"), "mine\n");
    write(&fx.wt.join(".gitignore"), "target/\n");
    git(&fx.wt, &["commit", "-q", "-am", "ignore target"]);
    git(&fx.wt, &["branch", "-f", "keep-target"]);
}

fn build_dir_nested_without_mix_exs(fx: &Fixture) {
    write(&fx.wt.join("docs/_build/index.html"), "<p>by hand</p>\n");
}

fn build_output_beside_its_build_files(fx: &Fixture) {
    write(&fx.wt.join("_build/dev/lib/app/ebin/app.beam"), "beam");
    write(
        &fx.wt.join("deps/jason/mix.exs"),
        "defmodule Jason.MixProject do end",
    );
    write(
        &fx.wt.join("assets/node_modules/x/index.js"),
        "module.exports = 1",
    );
}

/// A clone of the main repository at `deps/mydep`, as mix puts a git dependency: its origin
/// holds everything it has.
fn git_dependency(fx: &Fixture) -> PathBuf {
    let dep = fx.wt.join("deps/mydep");
    git(
        &fx.root,
        &[
            "clone",
            "-q",
            fx.main.to_str().unwrap(),
            dep.to_str().unwrap(),
        ],
    );
    dep
}

fn clean_git_dependency(fx: &Fixture) {
    let dep = git_dependency(fx);
    write(&fx.wt.join("_build/dev/lib/mydep/ebin/mydep.beam"), "beam");
    assert_eq!(git(&dep, &["status", "--porcelain"]), "");
}

/// A dependency fetched the way mix fetches a pinned revision with `depth: 1`: the commit is
/// only in FETCH_HEAD, on no remote-tracking ref.
fn pinned_shallow_git_dependency(fx: &Fixture) {
    let dep = fx.wt.join("deps/pinned");
    std::fs::create_dir_all(&dep).unwrap();
    git(&dep, &["init", "-q"]);
    let url = format!("file://{}", fx.main.display());
    git(&dep, &["remote", "add", "origin", &url]);
    let rev = git(&fx.main, &["rev-parse", "HEAD"]);
    git(&dep, &["fetch", "-q", "--depth", "1", "origin", rev.trim()]);
    git(&dep, &["checkout", "-q", rev.trim()]);
    assert_eq!(git(&dep, &["for-each-ref"]), "");
}

fn git_dependency_patched_and_edited(fx: &Fixture) {
    let dep = git_dependency(fx);
    write(&dep.join("fix.ex"), "p\n");
    git(&dep, &["add", "fix.ex"]);
    git(&dep, &["commit", "-q", "-m", "patch"]);
    write(&dep.join("fix.ex"), "p\nwip\n");
}

fn git_dependency_unpushed_commit(fx: &Fixture) {
    let dep = git_dependency(fx);
    write(&dep.join("fix.ex"), "p\n");
    git(&dep, &["add", "fix.ex"]);
    git(&dep, &["commit", "-q", "-m", "patch"]);
}

fn git_dependency_untracked_file(fx: &Fixture) {
    let dep = git_dependency(fx);
    write(&dep.join("lib/new_helper.ex"), "defmodule Helper do end\n");
}

fn git_dependency_stash(fx: &Fixture) {
    let dep = git_dependency(fx);
    write(&dep.join("README.md"), "stashed edit\n");
    git(&dep, &["stash", "-q"]);
    assert_eq!(git(&dep, &["status", "--porcelain"]), "");
}

/// A repository of its own in `_build/`, with a `.git` file pointing at a git dir that lives
/// inside the worktree too, and no remote.
fn repository_without_remote_in_build(fx: &Fixture) {
    let tool = fx.wt.join("_build/tool");
    std::fs::create_dir_all(&tool).unwrap();
    let gitdir = fx.wt.join("_build/tool-git");
    git(
        &tool,
        &[
            "init",
            "-q",
            "-b",
            "main",
            "--separate-git-dir",
            gitdir.to_str().unwrap(),
        ],
    );
    assert!(tool.join(".git").is_file());
    write(&tool.join("notes.md"), "mine\n");
    git(&tool, &["add", "."]);
    git(&tool, &["commit", "-q", "-m", "mine"]);
}

/// A filter driver whose clean step blanks secrets, `*.conf` files under it, committed on both
/// branches.
fn secret_filter(fx: &Fixture) {
    git(
        &fx.main,
        &[
            "config",
            "filter.strip.clean",
            "sed 's/^SECRET=.*/SECRET=/'",
        ],
    );
    git(&fx.main, &["config", "filter.strip.smudge", "cat"]);
    write(&fx.wt.join(".gitattributes"), "*.conf filter=strip\n");
    write(&fx.wt.join("app.conf"), "SECRET=\n");
    git(&fx.wt, &["add", "-A"]);
    git(&fx.wt, &["commit", "-q", "-m", "filtered config"]);
    git(&fx.main, &["merge", "-q", "--ff-only", "feature"]);
}

fn secret_stripped_when_staged(fx: &Fixture) {
    secret_filter(fx);
    write(&fx.wt.join("app.conf"), "SECRET=hunter2\n");
    git(&fx.wt, &["add", "app.conf"]);
    assert_eq!(git(&fx.wt, &["status", "--porcelain"]), "");
}

fn secret_stripped_on_disk_only(fx: &Fixture) {
    secret_filter(fx);
    write(&fx.wt.join("app.conf"), "SECRET=hunter2\n");
    // A fresh index, as after a checkout: no size recorded, so git compares content, through
    // the clean filter, and the index entry stays HEAD's.
    git(&fx.wt, &["read-tree", "HEAD"]);
    assert_eq!(git(&fx.wt, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&fx.wt, &["rev-parse", ":app.conf"]),
        git(&fx.wt, &["rev-parse", "HEAD:app.conf"])
    );
}

fn secret_filter_unchanged(fx: &Fixture) {
    secret_filter(fx);
    assert_eq!(std::fs::read(fx.wt.join("app.conf")).unwrap(), b"SECRET=\n");
}

/// A `text eol=crlf` file checked out with CRLF: its bytes differ from the blob, and that is
/// no change.
fn eol_conversion(fx: &Fixture) {
    write(&fx.wt.join(".gitattributes"), "*.txt text eol=crlf\n");
    write(&fx.wt.join("notes.txt"), "a\nb\n");
    git(&fx.wt, &["add", "-A"]);
    git(&fx.wt, &["commit", "-q", "-m", "crlf notes"]);
    git(&fx.main, &["merge", "-q", "--ff-only", "feature"]);
    std::fs::remove_file(fx.wt.join("notes.txt")).unwrap();
    git(&fx.wt, &["checkout", "--", "notes.txt"]);
    assert_eq!(
        std::fs::read(fx.wt.join("notes.txt")).unwrap(),
        b"a\r\nb\r\n"
    );
    assert_eq!(git(&fx.wt, &["status", "--porcelain"]), "");
}

fn configured_deps_path(fx: &Fixture) {
    write(
        &fx.wt.join("mix.exs"),
        "defmodule App.MixProject do\n  def project, do: [deps_path: \"vendor/deps\"]\nend\n",
    );
    write(&fx.wt.join(".gitignore"), "vendor/deps/\n");
    git(&fx.wt, &["commit", "-q", "-am", "vendored deps"]);
    git(&fx.main, &["merge", "-q", "--ff-only", "feature"]);
    write(
        &fx.wt.join("vendor/deps/jason/lib/jason.ex"),
        "defmodule Jason do end",
    );
}

/// A commit on a detached HEAD, left by checking the branch out again: only the worktree's
/// HEAD reflog holds it.
fn left_detached_commit(fx: &Fixture) -> String {
    git(&fx.wt, &["checkout", "-q", "--detach"]);
    write(&fx.wt.join("experiment.ex"), "1\n");
    git(&fx.wt, &["add", "."]);
    git(&fx.wt, &["commit", "-q", "-m", "left behind"]);
    let oid = git(&fx.wt, &["rev-parse", "HEAD"]).trim().to_string();
    git(&fx.wt, &["checkout", "-q", "feature"]);
    oid
}

fn reflog_only_commit(fx: &Fixture) {
    left_detached_commit(fx);
}

fn reset_away_commit(fx: &Fixture) {
    write(&fx.wt.join("lib/gone.ex"), "1\n");
    git(&fx.wt, &["add", "."]);
    git(&fx.wt, &["commit", "-q", "-m", "reset away"]);
    git(&fx.wt, &["reset", "-q", "--hard", "HEAD~"]);
}

fn per_worktree_ref_commit(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    git(&fx.wt, &["update-ref", "refs/worktree/keep", &oid]);
    // The reflog alone would also hold it; without the reflog only refs/worktree/keep does.
    git(&fx.wt, &["reflog", "expire", "--expire=now", "--all"]);
}

fn left_commit_tagged(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    git(&fx.main, &["tag", "kept", &oid]);
}

fn left_commit_in_another_worktree(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    let other = fx.root.join("other");
    git(
        &fx.main,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            other.to_str().unwrap(),
            &oid,
        ],
    );
}

fn left_commit_in_another_worktrees_own_ref(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    let other = fx.root.join("other");
    git(
        &fx.main,
        &["worktree", "add", "-q", "--detach", other.to_str().unwrap()],
    );
    git(&other, &["update-ref", "refs/worktree/kept", &oid]);
}

fn left_commit_stashed_elsewhere(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    // A stash entry whose base is that commit: the stash survives and holds it.
    git(&fx.main, &["checkout", "-q", "--detach", &oid]);
    write(&fx.main.join("README.md"), "stashed\n");
    git(&fx.main, &["stash", "-q"]);
    git(&fx.main, &["checkout", "-q", "main"]);
}

fn commits_on_a_remote_tracking_ref(fx: &Fixture) {
    commits_on_branch(fx);
    let head = git(&fx.wt, &["rev-parse", "HEAD"]);
    git(
        &fx.main,
        &["update-ref", "refs/remotes/origin/feature", head.trim()],
    );
}

fn everything_at_once(fx: &Fixture) {
    commits_on_branch(fx);
    staged(fx);
    untracked(fx);
    ignored(fx);
    git(
        &fx.wt,
        &["update-index", "--assume-unchanged", "bin/run.sh"],
    );
    write(&fx.wt.join("bin/run.sh"), "#!/bin/sh\necho hidden\n");
    hand_written_under_ignored_deps(fx);
    git(&fx.wt, &["update-ref", "refs/worktree/mark", "HEAD~"]);
}

fn locked(fx: &Fixture) {
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
}

fn merging(fx: &Fixture) {
    conflicting_branch(fx);
    git_may_fail(&fx.wt, &["merge", "-q", "other"]);
    assert!(fx.main.join(".git/worktrees/wt/MERGE_HEAD").exists());
}

fn rebasing(fx: &Fixture) {
    conflicting_branch(fx);
    git_may_fail(&fx.wt, &["rebase", "-q", "other"]);
}

fn cherry_picking(fx: &Fixture) {
    conflicting_branch(fx);
    git_may_fail(&fx.wt, &["cherry-pick", "other"]);
    assert!(fx.main.join(".git/worktrees/wt/CHERRY_PICK_HEAD").exists());
}

fn bisecting(fx: &Fixture) {
    git(&fx.wt, &["bisect", "start"]);
    git(&fx.wt, &["bisect", "bad"]);
}

fn symlink_in_main(fx: &Fixture) {
    std::os::unix::fs::symlink("../../wt/lib", fx.main.join("lib/feature-lib")).unwrap();
}

fn wrapper_in_main(fx: &Fixture) {
    write(
        &fx.main.join("scripts/run"),
        "#!/bin/sh\nexec \"$(dirname \"$0\")/../../wt/bin/run.sh\" \"$@\"\n",
    );
}

fn marked_dedupe_wrapper(fx: &Fixture) {
    write(
        &fx.main.join("tools/run"),
        "#!/bin/sh\n# beamops dedupe wrapper\nhere=$(cd \"$(dirname \"$0\")\" && pwd)\nscript=$here/../../wt/bin/run.sh\nexec \"$script\" \"$@\"\n",
    );
}

fn symlink_beside_the_worktrees(fx: &Fixture) {
    std::os::unix::fs::symlink("wt", fx.root.join("current")).unwrap();
}

fn wrapper_beside_the_worktrees(fx: &Fixture) {
    write(
        &fx.root.join("run-feature.sh"),
        "#!/bin/sh\nexec \"$(dirname \"$0\")/wt/bin/run.sh\" \"$@\"\n",
    );
}

fn symlink_in_another_worktree(fx: &Fixture) {
    let other = fx.root.join("other");
    git(
        &fx.main,
        &["worktree", "add", "-q", "--detach", other.to_str().unwrap()],
    );
    std::os::unix::fs::symlink("../wt/README.md", other.join("feature-readme")).unwrap();
}

fn symlink_in_build_output(fx: &Fixture) {
    // A path dependency linked into deps/ (allow-listed build output of main).
    std::fs::create_dir_all(fx.main.join("deps")).unwrap();
    std::os::unix::fs::symlink("../../wt/lib", fx.main.join("deps/feature_lib")).unwrap();
}

fn symlink_in_the_project_root(fx: &Fixture) {
    // beamops.yaml above the repository: the project root is walked as well.
    write(
        &fx.root.join("beamops.yaml"),
        "version: 1\napp:\n  name: demo\n  otp_app: demo\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local: {}\n",
    );
    std::fs::create_dir_all(fx.root.join("ops/bin")).unwrap();
    std::os::unix::fs::symlink("../../wt/bin/run.sh", fx.root.join("ops/bin/run")).unwrap();
}

fn unlinked_neighbours(fx: &Fixture) {
    // Links beside the worktrees that lead elsewhere are not links into it.
    std::os::unix::fs::symlink("main", fx.root.join("current")).unwrap();
    write(
        &fx.root.join("notes.sh"),
        "#!/bin/sh\nexec ls \"$(dirname \"$0\")\"\n",
    );
}

fn clean(_fx: &Fixture) {}

fn assume_unchanged_type_change(fx: &Fixture) {
    git(&fx.wt, &["update-index", "--assume-unchanged", "README.md"]);
    std::fs::remove_file(fx.wt.join("README.md")).unwrap();
    std::os::unix::fs::symlink("mix.exs", fx.wt.join("README.md")).unwrap();
}

/// A conflict with no operation in progress (a `stash pop` that conflicted): stages 1–3 in
/// the index, conflict markers in the file.
fn stash_pop_conflict(fx: &Fixture) {
    write(&fx.wt.join("README.md"), "stashed side\n");
    git(&fx.wt, &["stash", "-q"]);
    write(&fx.wt.join("README.md"), "committed side\n");
    git(&fx.wt, &["commit", "-q", "-am", "other side"]);
    git(&fx.main, &["branch", "-f", "keep-other-side", "feature"]);
    git_may_fail(&fx.wt, &["stash", "pop", "-q"]);
    assert!(git(&fx.wt, &["ls-files", "--stage", "README.md"]).contains(" 3\t"));
}

fn left_commit_at_mains_detached_head(fx: &Fixture) {
    let oid = left_detached_commit(fx);
    git(&fx.main, &["checkout", "-q", "--detach", &oid]);
}

fn absolute_symlink_beside_the_worktrees(fx: &Fixture) {
    std::os::unix::fs::symlink(fx.wt.join("bin/run.sh"), fx.root.join("run")).unwrap();
}

/// What a state must lead to.
#[derive(Clone, Copy)]
enum Expect {
    /// Exit 4 naming `check`, each of `items` among its items, nothing changed; then
    /// `--backup` removes it and `restore` brings everything back. `commits_die`: the
    /// restore needs the bundle for some of the worktree's own commits.
    BackedUp {
        check: &'static str,
        items: &'static [&'static str],
        commits_die: bool,
        stat_dependent: bool,
    },
    /// Exit 4 naming `check`, with or without `--backup`; nothing changed, no backup made.
    Refused {
        check: &'static str,
        items: &'static [&'static str],
    },
    /// Nothing can be lost: removed without a backup.
    Removed,
}

struct State {
    name: &'static str,
    setup: fn(&Fixture),
    expect: Expect,
}

const fn backed_up(
    name: &'static str,
    setup: fn(&Fixture),
    check: &'static str,
    items: &'static [&'static str],
) -> State {
    State {
        name,
        setup,
        expect: Expect::BackedUp {
            check,
            items,
            commits_die: false,
            stat_dependent: false,
        },
    }
}

const fn backed_up_stat(
    name: &'static str,
    setup: fn(&Fixture),
    check: &'static str,
    items: &'static [&'static str],
) -> State {
    State {
        name,
        setup,
        expect: Expect::BackedUp {
            check,
            items,
            commits_die: false,
            stat_dependent: true,
        },
    }
}

const fn commits_die(
    name: &'static str,
    setup: fn(&Fixture),
    items: &'static [&'static str],
) -> State {
    State {
        name,
        setup,
        expect: Expect::BackedUp {
            check: "unique-commits",
            items,
            commits_die: true,
            stat_dependent: false,
        },
    }
}

const fn refused(
    name: &'static str,
    setup: fn(&Fixture),
    check: &'static str,
    items: &'static [&'static str],
) -> State {
    State {
        name,
        setup,
        expect: Expect::Refused { check, items },
    }
}

const fn removed(name: &'static str, setup: fn(&Fixture)) -> State {
    State {
        name,
        setup,
        expect: Expect::Removed,
    }
}

const STATES: &[State] = &[
    // Changes git status shows.
    backed_up(
        "modified, deleted, chmod",
        modified,
        "tracked-changes",
        &["README.md", "lib/app.ex", "bin/run.sh"],
    ),
    backed_up(
        "staged over an unstaged edit",
        staged,
        "tracked-changes",
        &["staged: README.md", "staged: lib/new.ex"],
    ),
    backed_up(
        "staged deletion (git rm)",
        staged_deletion,
        "tracked-changes",
        &["staged: lib/app.ex"],
    ),
    backed_up(
        "intent to add",
        intent_to_add,
        "tracked-changes",
        &["lib/planned.ex"],
    ),
    backed_up(
        "staged mode change",
        staged_mode_change,
        "tracked-changes",
        &["staged: README.md"],
    ),
    backed_up(
        "staged symlink",
        staged_symlink,
        "tracked-changes",
        &["staged: readme"],
    ),
    backed_up(
        "untracked files and a symlink",
        untracked,
        "untracked",
        &["notes/todo.md", "scratch.exs", "notes/readme-link"],
    ),
    // Changes git status hides.
    backed_up(
        "assume-unchanged edit",
        assume_unchanged_edit,
        "hidden-changes",
        &["lib/app.ex (content differs from the index; git status hides it: assume-unchanged)"],
    ),
    backed_up(
        "skip-worktree edit",
        skip_worktree_edit,
        "hidden-changes",
        &["README.md (content differs from the index; git status hides it: skip-worktree)"],
    ),
    backed_up(
        "assume-unchanged deletion",
        assume_unchanged_deleted,
        "hidden-changes",
        &["README.md (deleted; git status hides it: assume-unchanged)"],
    ),
    backed_up(
        "assume-unchanged chmod",
        assume_unchanged_mode,
        "hidden-changes",
        &["bin/run.sh (no longer executable; git status hides it: assume-unchanged)"],
    ),
    backed_up(
        "assume-unchanged file replaced by a symlink",
        assume_unchanged_type_change,
        "hidden-changes",
        &["README.md (type changed; git status hides it: assume-unchanged)"],
    ),
    backed_up(
        "conflict left by stash pop",
        stash_pop_conflict,
        "tracked-changes",
        &["conflicted: README.md"],
    ),
    backed_up_stat(
        "edit with faked stat data",
        stat_faked_edit,
        "hidden-changes",
        &[
            "lib/app.ex (content differs from the index; git status hides it: its stat data matches the index)",
        ],
    ),
    backed_up(
        "chmod under core.fileMode=false",
        file_mode_ignored,
        "hidden-changes",
        &["README.md (made executable; git status hides it: core.fileMode=false)"],
    ),
    backed_up(
        "edit in a sparse checkout",
        sparse_edit,
        "tracked-changes",
        &["modified: lib/app.ex"],
    ),
    // Ignored files that are not build output.
    backed_up(
        "ignored .env, dumps",
        ignored,
        "ignored",
        &[".env", "dumps/prod.sql", "lib/data.dump"],
    ),
    backed_up(
        "hand-written file under an ignored deps/",
        hand_written_under_ignored_deps,
        "ignored",
        &["docs/deps/audit-notes.md"],
    ),
    backed_up(
        "node_modules/ with no package.json",
        node_modules_without_package_json,
        "ignored",
        &["tools/node_modules/notes.txt"],
    ),
    backed_up(
        "target/ with no Cargo.toml",
        build_named_dir_at_the_root_without_its_build_file,
        "ignored",
        &["target/report.md"],
    ),
    backed_up(
        "_build/ with no mix.exs beside it",
        build_dir_nested_without_mix_exs,
        "ignored",
        &["docs/_build/index.html"],
    ),
    // Commits only the worktree holds.
    commits_die(
        "commits on the branch only",
        commits_on_branch,
        &["more feature work"],
    ),
    commits_die(
        "commits on a detached HEAD",
        commits_detached,
        &["detached experiment"],
    ),
    commits_die(
        "a commit only the HEAD reflog holds",
        reflog_only_commit,
        &["left behind", "HEAD reflog"],
    ),
    commits_die("a commit reset away", reset_away_commit, &["reset away"]),
    commits_die(
        "a commit only refs/worktree/* holds",
        per_worktree_ref_commit,
        &["left behind", "refs/worktree/keep"],
    ),
    commits_die("everything at once", everything_at_once, &["feature work"]),
    // Not saved by a backup.
    refused("locked", locked, "locked", &["on a usb disk"]),
    refused(
        "merge in progress",
        merging,
        "operation-in-progress",
        &["merge"],
    ),
    refused(
        "rebase in progress",
        rebasing,
        "operation-in-progress",
        &["rebase"],
    ),
    refused(
        "cherry-pick in progress",
        cherry_picking,
        "operation-in-progress",
        &["cherry-pick"],
    ),
    refused(
        "bisect in progress",
        bisecting,
        "operation-in-progress",
        &["bisect"],
    ),
    refused(
        "symlink in the main worktree",
        symlink_in_main,
        "links-into",
        &["lib/feature-lib -> ../../wt/lib (symlink)"],
    ),
    refused(
        "wrapper in the main worktree",
        wrapper_in_main,
        "links-into",
        &["scripts/run"],
    ),
    refused(
        "marked dedupe wrapper",
        marked_dedupe_wrapper,
        "links-into",
        &["tools/run"],
    ),
    refused(
        "symlink beside the worktrees",
        symlink_beside_the_worktrees,
        "links-into",
        &["current -> wt (symlink)"],
    ),
    refused(
        "absolute symlink beside the worktrees",
        absolute_symlink_beside_the_worktrees,
        "links-into",
        &["run -> /"],
    ),
    refused(
        "wrapper beside the worktrees",
        wrapper_beside_the_worktrees,
        "links-into",
        &["run-feature.sh"],
    ),
    refused(
        "symlink in another worktree",
        symlink_in_another_worktree,
        "links-into",
        &["other/feature-readme"],
    ),
    refused(
        "symlink in build output",
        symlink_in_build_output,
        "links-into",
        &["deps/feature_lib"],
    ),
    refused(
        "symlink in the project root",
        symlink_in_the_project_root,
        "links-into",
        &["ops/bin/run"],
    ),
    // Nothing to lose.
    removed("clean", clean),
    removed(
        "build output beside its build files",
        build_output_beside_its_build_files,
    ),
    removed("deps_path configured in mix.exs", configured_deps_path),
    removed("CRLF copy under core.autocrlf", autocrlf_copy),
    removed("clean sparse checkout", sparse_clean),
    removed("left commit tagged", left_commit_tagged),
    removed(
        "left commit at another worktree's HEAD",
        left_commit_in_another_worktree,
    ),
    removed(
        "left commit in another worktree's refs/worktree",
        left_commit_in_another_worktrees_own_ref,
    ),
    removed(
        "left commit at the main worktree's detached HEAD",
        left_commit_at_mains_detached_head,
    ),
    removed(
        "left commit under a stash entry",
        left_commit_stashed_elsewhere,
    ),
    removed(
        "commits on a remote-tracking ref",
        commits_on_a_remote_tracking_ref,
    ),
    removed("links beside it that lead elsewhere", unlinked_neighbours),
    // Repositories inside build output.
    backed_up(
        "git dependency with a patch commit and an edit",
        git_dependency_patched_and_edited,
        "nested-repos",
        &["deps/mydep: 1 uncommitted or untracked paths, 1 commits on no remote-tracking ref"],
    ),
    backed_up(
        "git dependency with an unpushed commit",
        git_dependency_unpushed_commit,
        "nested-repos",
        &["deps/mydep: 1 commits on no remote-tracking ref"],
    ),
    backed_up(
        "git dependency with an untracked file",
        git_dependency_untracked_file,
        "nested-repos",
        &["deps/mydep: 1 uncommitted or untracked paths"],
    ),
    backed_up(
        "git dependency with a stash",
        git_dependency_stash,
        "nested-repos",
        &["deps/mydep: ", "stash entries"],
    ),
    backed_up(
        "repository without a remote in _build",
        repository_without_remote_in_build,
        "nested-repos",
        &["_build/tool: no remote, 1 commits"],
    ),
    removed("clean git dependency", clean_git_dependency),
    removed(
        "pinned shallow git dependency (FETCH_HEAD only)",
        pinned_shallow_git_dependency,
    ),
    // Clean filters that strip the change.
    backed_up(
        "secret stripped by a clean filter, staged",
        secret_stripped_when_staged,
        "hidden-changes",
        &[
            "app.conf (content differs from what the index checks out; git status hides it: the clean filter `strip`",
        ],
    ),
    backed_up(
        "secret stripped by a clean filter, on disk only",
        secret_stripped_on_disk_only,
        "hidden-changes",
        &["app.conf (", "filter `strip`"],
    ),
    removed("filtered file unchanged", secret_filter_unchanged),
    removed("text eol=crlf checkout", eol_conversion),
];

fn assert_items(state: &str, report: &Value, check: &str, wanted: &[&str]) {
    let got = items(report, check);
    for want in wanted {
        assert!(
            got.iter().any(|item| item.contains(want)),
            "{state}: `{want}` not among the {check} items {got:?}"
        );
    }
}

fn run_state(state: &State) {
    let fx = fixture();
    (state.setup)(&fx);
    match state.expect {
        Expect::BackedUp {
            check,
            items,
            commits_die,
            stat_dependent,
        } => {
            let report = assert_refused(&fx, &[], check);
            assert_items(state.name, &report, check, items);
            let gone = assert_backup_restores(&fx, stat_dependent);
            assert_eq!(
                gone > 0,
                commits_die,
                "{}: {gone} of the worktree's own commits needed the bundle",
                state.name
            );
        }
        Expect::Refused { check, items } => {
            assert_refused(&fx, &[], check);
            let report = assert_refused(&fx, &["--backup"], check);
            assert_items(state.name, &report, check, items);
            let backups = fx.main.join(".beamops/backups");
            assert!(
                !backups.exists() || std::fs::read_dir(&backups).unwrap().next().is_none(),
                "{}: a backup was made for a refusal",
                state.name
            );
        }
        Expect::Removed => {
            let report = assert_removed(&fx, &[]);
            assert!(
                report["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["ok"] == true),
                "{}: {report:#}",
                state.name
            );
        }
    }
}

/// Every state in `STATES`, each in a repository of its own, a few at a time.
#[test]
fn worktree_state_matrix() {
    assert!(STATES.len() >= 40, "{} states", STATES.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(state) = STATES.get(i) else { break };
                    let result = std::panic::catch_unwind(|| run_state(state));
                    if let Err(panic) = result {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {message}", state.name));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} states failed:\n{}",
        failures.len(),
        STATES.len(),
        failures.join("\n\n")
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

/// The reviewer's reproduction: a patched git dependency is refused, then saved by `--backup`
/// and usable after `restore` (its commit in its log, its edit in its status).
#[test]
fn a_patched_git_dependency_survives_backup_and_restore() {
    let fx = fixture();
    git_dependency_patched_and_edited(&fx);
    let report = assert_refused(&fx, &[], "nested-repos");
    assert_items(
        "patched dependency",
        &report,
        "nested-repos",
        &["deps/mydep"],
    );
    assert_backup_restores(&fx, false);
    let dep = fx.wt.join("deps/mydep");
    assert!(git(&dep, &["log", "--format=%s"]).starts_with("patch\n"));
    assert_eq!(git(&dep, &["status", "--porcelain"]), " M fix.ex\n");
    assert_eq!(std::fs::read(dep.join("fix.ex")).unwrap(), b"p\nwip\n");
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
