//! Git worktrees: list them, and remove one only when nothing in it can be lost.
//!
//! The repository model comes from git2. The git CLI is used where libgit2 has no equivalent
//! (bundles, `git worktree remove`'s own last-moment safety check, detached `worktree add`);
//! see `gitcli`.

pub mod audit;
pub mod backup;
pub mod gitcli;
pub mod inventory;
pub mod links;
pub mod processes;
pub mod prune;
pub mod remove;
pub mod restore;
pub mod risk;

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::Repository;

use crate::config::{self, CONFIG_FILE};
use crate::project::STATE_DIR;

pub use inventory::{Inventory, WorktreeInfo};

/// The repository whose worktrees we manage, seen from its common git directory.
pub struct Repo {
    pub git: Repository,
    /// The main worktree (where `.beamops/` lives); `None` for a bare repository.
    pub main_worktree: Option<PathBuf>,
    /// Ignored paths a removal may delete: build output only.
    pub allow_list: Vec<String>,
}

impl Repo {
    /// The git repository containing `start` (the cwd when `None`). It needs no beamops.yaml; when
    /// one is found its `worktree.allow_list` applies.
    pub fn discover(start: Option<&Path>) -> Result<Repo> {
        let start = match start {
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("--project {}: no such directory", dir.display()))?,
            None => std::env::current_dir()
                .context("cannot read the working directory")?
                .canonicalize()?,
        };
        let found = Repository::discover(&start).map_err(|e| {
            anyhow::anyhow!(
                "{}: not inside a git repository ({})\n  fix: run this in a git checkout, or pass --project DIR",
                start.display(),
                e.message()
            )
        })?;
        let git = Repository::open(found.commondir()).with_context(|| {
            format!(
                "opening the common git directory {}",
                found.commondir().display()
            )
        })?;
        let main_worktree = git.workdir().map(canonical);
        let config_file = start
            .ancestors()
            .map(|d| d.join(CONFIG_FILE))
            .chain(main_worktree.iter().map(|m| m.join(CONFIG_FILE)))
            .find(|f| f.is_file());
        let allow_list = match config_file {
            Some(file) => config::load(&file)?.worktree.allow_list,
            None => config::default_allow_list(),
        };
        Ok(Repo {
            git,
            main_worktree,
            allow_list,
        })
    }

    /// `.beamops/` in the main worktree (the common git dir for a bare repository). A
    /// `.gitignore` of `*` keeps backups and the audit log out of `git status` even where the
    /// project never ran `beamops init`.
    pub fn state_dir(&self) -> Result<PathBuf> {
        let dir = match &self.main_worktree {
            Some(main) => main.join(STATE_DIR),
            None => self.git.path().join("beamops"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n")
                .with_context(|| format!("writing {}", ignore.display()))?;
        }
        Ok(dir)
    }

    /// Find a worktree by admin name, branch, path, or the last component of its path. Only the
    /// match is described in full (its status is the expensive part).
    pub fn find(&self, spec: &str) -> Result<WorktreeInfo> {
        let all = inventory::entries(self)?;
        let as_path = absolute(Path::new(spec));
        let real = as_path.canonicalize().ok();
        let matches: Vec<&inventory::Entry> = all
            .iter()
            .filter(|w| {
                w.name == spec
                    || w.path == as_path
                    || real.as_ref() == Some(&w.path)
                    || w.branch().as_deref() == Some(spec)
            })
            .collect();
        let matches = if matches.is_empty() {
            all.iter()
                .filter(|w| w.path.file_name().is_some_and(|n| n == spec))
                .collect()
        } else {
            matches
        };
        match matches.as_slice() {
            [one] => inventory::describe(
                self,
                (*one).clone(),
                inventory::default_branch(self).map(|d| d.1),
            ),
            [] => {
                let known: Vec<String> = all
                    .iter()
                    .map(|w| format!("{} ({})", w.name, w.path.display()))
                    .collect();
                bail!(
                    "no worktree named `{spec}`\n  known: {}\n  fix: pass a name, branch or path from `beamops worktree list`",
                    known.join(", ")
                )
            }
            many => {
                let names: Vec<String> =
                    many.iter().map(|w| w.path.display().to_string()).collect();
                bail!(
                    "`{spec}` names several worktrees: {}\n  fix: pass the path",
                    names.join(", ")
                )
            }
        }
    }
}

/// A canonical path when it exists, the path as given otherwise.
pub fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| normalize(path))
}

/// `path` made absolute against the cwd, with `.` and `..` resolved lexically.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(
            &std::env::current_dir()
                .unwrap_or_else(|_| PathBuf::from("/"))
                .join(path),
        )
    }
}

/// Resolve `.` and `..` without touching the file system (the path may not exist).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `true` when an ignored path is build output on the allow-list: an entry without a slash
/// matches any path component (`_build` matches `apps/web/_build/`), one with a slash matches
/// that path prefix.
pub fn allow_listed(allow_list: &[String], relative: &str) -> bool {
    let relative = relative.trim_end_matches('/');
    allow_list.iter().any(|entry| {
        let entry = entry.trim_matches('/');
        if entry.is_empty() {
            return false;
        }
        if entry.contains('/') {
            relative == entry || relative.starts_with(&format!("{entry}/"))
        } else {
            relative.split('/').any(|component| component == entry)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_components_and_prefixes() {
        let list = vec!["_build".to_string(), "assets/node_modules".to_string()];
        assert!(allow_listed(&list, "_build/"));
        assert!(allow_listed(&list, "apps/web/_build/dev/x.beam"));
        assert!(allow_listed(&list, "assets/node_modules/"));
        assert!(!allow_listed(&list, "node_modules/"));
        assert!(!allow_listed(&list, ".env"));
        assert!(!allow_listed(&list, "_build_old/x"));
    }

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
