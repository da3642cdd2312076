//! Git repositories inside build output: a mix git dependency (`deps/foo/.git`) is build output
//! while it only holds what its remote has, but a patch committed or edited there lives nowhere
//! else. Removing the worktree deletes the whole directory, so each nested repository is asked
//! what it holds that no remote-tracking ref does.

use std::path::Path;

use super::gitcli;

/// One repository inside build output that holds work of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nested {
    /// Its working directory, relative to the worktree, `/`-separated.
    pub path: String,
    /// What a backup saves: the working directory, and its git directory when a `.git` file
    /// points elsewhere inside the worktree (relative to the worktree).
    pub saved: Vec<String>,
    pub why: Vec<String>,
}

impl Nested {
    pub fn item(&self) -> String {
        format!("{}: {}", self.path, self.why.join(", "))
    }
}

/// Every repository (a `.git` directory or file) under the worktree's allow-listed ignored
/// paths that holds work of its own.
pub fn at_risk(worktree: &Path, build_output: &[String]) -> Vec<Nested> {
    let mut repos = Vec::new();
    for root in build_output {
        find(&worktree.join(root.trim_end_matches('/')), &mut repos);
    }
    repos.sort();
    repos.dedup();
    repos
        .iter()
        .filter_map(|dir| {
            let why = work_of_its_own(dir);
            if why.is_empty() {
                return None;
            }
            let relative = |p: &Path| {
                p.strip_prefix(worktree)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned())
            };
            let path = relative(dir)?;
            let mut saved = vec![path.clone()];
            for which in ["--git-dir", "--git-common-dir"] {
                if let Ok(out) =
                    gitcli::run(dir, &["rev-parse", "--path-format=absolute", which], None)
                    && let Ok(gitdir) = Path::new(out.trim()).canonicalize()
                    && let Some(rel) = relative(&gitdir)
                    && !Path::new(&rel).starts_with(&path)
                {
                    saved.push(rel);
                }
            }
            saved.sort();
            saved.dedup();
            Some(Nested { path, saved, why })
        })
        .collect()
}

/// The commits `FETCH_HEAD` names (one per fetched ref), if the repository has one.
fn fetch_head(dir: &Path) -> Vec<String> {
    let Ok(gitdir) = gitcli::run(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-dir"],
        None,
    ) else {
        return Vec::new();
    };
    std::fs::read_to_string(Path::new(gitdir.trim()).join("FETCH_HEAD"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() >= 40 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(String::from)
        .collect()
}

/// Directories holding a `.git`, depth first; symlinks are not followed (what they lead to is
/// not deleted with the worktree).
fn find(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(meta) = dir.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    if dir.join(".git").symlink_metadata().is_ok() {
        out.push(dir.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() == ".git" {
            continue;
        }
        find(&entry.path(), out);
    }
}

/// What the repository at `dir` holds that would be lost with it; a repository git cannot read
/// counts as at risk (conservatively: nothing proves it holds nothing).
fn work_of_its_own(dir: &Path) -> Vec<String> {
    let mut why = Vec::new();
    let ask = |args: &[&str]| gitcli::run(dir, args, None);
    match ask(&["status", "--porcelain", "--ignore-submodules=none"]) {
        Ok(out) if !out.trim().is_empty() => why.push(format!(
            "{} uncommitted or untracked paths",
            out.lines().count()
        )),
        Ok(_) => {}
        Err(e) => return vec![format!("unreadable by git ({e})")],
    }
    if let Ok(out) = ask(&["stash", "list"])
        && !out.trim().is_empty()
    {
        why.push(format!("{} stash entries", out.lines().count()));
    }
    let remotes = ask(&["remote"]).unwrap_or_default();
    // An error is no evidence of nothing: it counts as at risk.
    let mut count = |args: &[&str]| match ask(args)
        .map_err(|e| format!("{e:#}"))
        .and_then(|out| out.trim().parse::<usize>().map_err(|e| e.to_string()))
    {
        Ok(n) => n,
        Err(e) => {
            why.push(format!("cannot count its commits ({e})"));
            0
        }
    };
    if remotes.trim().is_empty() {
        // Without a remote nothing shows what it was cloned at: any commit may be its own.
        let commits = count(&["rev-list", "--count", "--all"]);
        if commits > 0 {
            why.push(format!("no remote, {commits} commits"));
        }
    } else {
        // What the last fetch brought counts as the remote's even without a remote-tracking
        // ref: mix fetches a pinned revision (`--depth 1 origin <rev>`) into FETCH_HEAD only.
        let fetched = fetch_head(dir);
        let mut args = vec!["rev-list", "--count", "--all", "--not", "--remotes"];
        args.extend(fetched.iter().map(String::as_str));
        let own = count(&args);
        if own > 0 {
            why.push(format!("{own} commits on no remote-tracking ref"));
        }
    }
    why
}
