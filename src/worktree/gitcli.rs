//! The git command line, for the few things libgit2 cannot do (each caller says which).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::exit::Failure;

/// The `git` executable, found with `which`; a missing git blocks only the commands that need it.
pub fn git() -> Result<PathBuf> {
    which::which("git").map_err(|_| {
        Failure::Blocked(
            "git is not on PATH; worktree removal, bundles and restores need it\n  fix: install git (Debian: apt-get install git)"
                .into(),
        )
        .into()
    })
}

/// Run `git -C dir args…` (with `stdin` fed when given) and return stdout; a failure carries
/// git's own message.
pub fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    run_bytes(dir, args, stdin).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// Like [`run`], with stdout as raw bytes (file contents are not text).
pub fn run_bytes(dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<Vec<u8>> {
    let mut cmd = Command::new(git()?);
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("git -C {} {}", dir.display(), args.join(" "));
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("writing to {shown}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Paths `git worktree list --porcelain` reports: the ground truth after a removal.
pub fn listed_worktrees(dir: &Path) -> Result<Vec<PathBuf>> {
    let out = run(dir, &["worktree", "list", "--porcelain"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(PathBuf::from)
        .collect())
}
