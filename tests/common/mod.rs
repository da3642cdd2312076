//! Helpers shared by the integration tests: a throwaway project and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/coordination");

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
        let mut cmd = Command::cargo_bin("beamops").expect("binary");
        cmd.current_dir(self.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("BEAMOPS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        cmd
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
