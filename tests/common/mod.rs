//! Helpers shared by the integration tests: a throwaway project and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/coordination");

/// The binary, run in `dir`, with no inherited `BEAMOPS_*` settings and no colour.
pub fn beamops_in(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("beamops").expect("binary");
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMOPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    /// A git repository holding the example's mix.exs and beamops.yaml, nothing generated yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["mix.exs", "beamops.yaml"] {
            std::fs::copy(Path::new(EXAMPLE).join(f), dir.path().join(f)).expect("copy example");
        }
        git2::Repository::init(dir.path()).expect("git init");
        TestProject { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.file(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The binary, run inside the project, with no inherited beamops settings.
    pub fn beamops(&self) -> Command {
        beamops_in(self.path())
    }

    /// Every file under the project (but .git) with its bytes, for before/after comparisons.
    pub fn snapshot(&self, skip_state: bool) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        walk(self.path(), self.path(), skip_state, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, skip_state: bool, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        // run.lock holds the last holder's PID: it says who ran, not what changed.
        if rel == ".git" || (skip_state && rel == ".beamops") || rel.ends_with("run.lock") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, skip_state, out);
        } else {
            out.push((rel, std::fs::read(&p).unwrap_or_default()));
        }
    }
}

pub fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(output)))
}

pub const DOCKER_GATE: &str = "BEAMOPS_DOCKER_TESTS";
pub const HEAVY_GATE: &str = "BEAMOPS_HEAVY_TESTS";
pub const MULTINODE_GATE: &str = "BEAMOPS_MULTINODE_TESTS";

/// Whether the gate `var` is on (`=1`). Gated tests run only when asked (`.ci/run` asks every
/// gate); otherwise they say so loudly, and in CI a gate that is off is a broken set-up.
pub fn gate_enabled(test: &str, var: &str, what: &str) -> bool {
    let on = std::env::var(var).is_ok_and(|v| v == "1");
    assert!(
        on || std::env::var_os("CI").is_none(),
        "{test}: CI must set {var}=1 (see .ci/run)"
    );
    if !on {
        // Straight to the stderr handle: the harness captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED {test}: set {var}=1 to run it ({what}) !!!!!\n"
        );
    }
    on
}

/// Docker-backed tests: [`gate_enabled`] on [`DOCKER_GATE`].
pub fn docker_tests_enabled(test: &str) -> bool {
    gate_enabled(test, DOCKER_GATE, "against the Docker Engine")
}

/// Heavy Docker scenarios (minutes each): the Docker gate and [`HEAVY_GATE`].
pub fn heavy_tests_enabled(test: &str, what: &str) -> bool {
    docker_tests_enabled(test) && gate_enabled(test, HEAVY_GATE, what)
}

/// Docker-in-Docker swarms: the Docker gate and [`MULTINODE_GATE`].
pub fn multinode_tests_enabled(test: &str, what: &str) -> bool {
    docker_tests_enabled(test) && gate_enabled(test, MULTINODE_GATE, what)
}

/// A copy of the whole example app (sources, generated files, lock) in a fresh git repository.
pub fn example_copy(app_name: &str) -> TestProject {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(Path::new(EXAMPLE), dir.path());
    let yaml = std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap();
    std::fs::write(
        dir.path().join("beamops.yaml"),
        yaml.replace("  name: coordination\n", &format!("  name: {app_name}\n"))
            .replace(
                "  repository: coordination\n",
                &format!("  repository: {app_name}\n"),
            ),
    )
    .unwrap();
    let p = TestProject { dir };
    p.commit_all("example");
    p
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if matches!(n.as_ref(), "_build" | "deps" | ".beamops" | ".elixir_ls") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl TestProject {
    /// `git add -A && git commit` through libgit2 (no user config needed).
    pub fn commit_all(&self, message: &str) {
        let repo = git2::Repository::open(self.path())
            .or_else(|_| git2::Repository::init(self.path()))
            .unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("beamops tests", "tests@beamops.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or None while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// A plain HTTP/1.0 GET to `host:port`, giving up after 2 s to connect and 5 s to answer.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(host.parse().ok()?, port);
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Poll until `path` answers 200, for at most `secs` seconds.
pub fn wait_http_ok(port: u16, path: &str, secs: u64) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Some((200, body)) = http_get(port, path) {
            return Some(body);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    None
}

pub fn docker(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI")
}

/// Render a chapter's files for a project into its directory, through the library.
pub fn render_into(p: &TestProject, chapter: &str) -> Vec<String> {
    render_env_into(p, chapter, "local")
}

/// [`render_into`] for a named environment of the project's beamops.yaml.
pub fn render_env_into(p: &TestProject, chapter: &str, env: &str) -> Vec<String> {
    let project = beamops::project::Project::discover(Some(p.path())).unwrap();
    let manifest = beamops::chapter::resolve(chapter).unwrap();
    let ctx = beamops::render::context(&project, env).unwrap();
    let mut paths = Vec::new();
    for r in beamops::render::render_chapter(manifest, &ctx).unwrap() {
        let target = p.file(&r.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &r.content).unwrap();
        beamops::fsutil::set_mode(&target, r.spec.mode_bits()).unwrap();
        paths.push(r.path);
    }
    paths
}

/// `beamops up CHAPTER --format json` that must succeed: its report.
pub fn up_json(p: &TestProject, chapter: &str) -> serde_json::Value {
    let out = p
        .beamops()
        .args(["up", chapter, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "up {chapter} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

/// PATH with the checkout's own tool venv first (`.ci/setup` installs sops, hadolint there).
pub fn tool_path() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/venv/bin");
    format!("{venv}:{}", std::env::var("PATH").unwrap_or_default())
}
