//! Git worktrees: list them, and remove one only when nothing in it can be lost.
//!
//! The repository model comes from git2. The git CLI is used where libgit2 has no equivalent
//! (bundles, `git worktree remove`'s own last-moment safety check, detached `worktree add`);
//! see `gitcli`.

pub mod audit;
pub mod backup;
pub mod gitcli;
pub mod hidden;
pub mod inventory;
pub mod links;
pub mod nested;
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
    /// The directory of the beamops.yaml in use, when there is one.
    pub project_root: Option<PathBuf>,
}

impl Repo {
    /// The git repository containing `start` (the cwd when `None`). It needs no beamops.yaml; when
    /// one is found its `worktree.allow_list` applies (an empty one is all defaults).
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
        let allow_list = match &config_file {
            // An empty beamops.yaml says nothing: the defaults, as for no file at all.
            Some(file) if !config::is_blank(file) => config::load(file)?.worktree.allow_list,
            _ => config::default_allow_list(),
        };
        Ok(Repo {
            git,
            main_worktree,
            allow_list,
            project_root: config_file.and_then(|f| f.parent().map(canonical)),
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

/// Build output directories and the build files that put them there: `deps/` is build output
/// beside a `mix.exs`, not in any folder that happens to be called `deps`.
pub const BUILD_OUTPUT: &[(&str, &[&str])] = &[
    ("_build", &["mix.exs"]),
    ("deps", &["mix.exs", "rebar.config"]),
    (".elixir_ls", &["mix.exs"]),
    ("node_modules", &["package.json"]),
    ("target", &["Cargo.toml", "pom.xml"]),
];

/// `true` when an ignored path (relative to the worktree `root`) is build output on the
/// allow-list, judged by where the build puts it:
/// - an entry with a slash is a path prefix from the root (`assets/node_modules`);
/// - a known build directory (`BUILD_OUTPUT`) matches where its build file is beside it
///   (`apps/web/deps/` needs `apps/web/mix.exs`), and `_build`/`deps` also match the
///   `build_path:`/`deps_path:` a `mix.exs` configures;
/// - `**/name` matches a directory of that name anywhere (the caller's explicit choice);
/// - any other name matches only at the root.
pub fn allow_listed(allow_list: &[String], root: &Path, relative: &str) -> bool {
    let relative = relative.trim_end_matches('/');
    let components: Vec<&str> = relative.split('/').collect();
    allow_list.iter().any(|entry| {
        let entry = entry.trim_matches('/');
        if let Some(name) = entry.strip_prefix("**/") {
            return !name.is_empty() && !name.contains('/') && components.contains(&name);
        }
        if entry.is_empty() {
            return false;
        }
        if entry.contains('/') {
            return relative == entry || relative.starts_with(&format!("{entry}/"));
        }
        let Some((_, build_files)) = BUILD_OUTPUT.iter().find(|(name, _)| *name == entry) else {
            return components[0] == entry;
        };
        let beside_build_file = components.iter().enumerate().any(|(i, component)| {
            *component == entry && {
                let dir = root.join(components[..i].join("/"));
                build_files.iter().any(|f| dir.join(f).is_file())
            }
        });
        beside_build_file || mix_configured(entry, root, &components)
    })
}

/// Whether `components` lies under a `build_path:` (for `_build`) or `deps_path:` (for `deps`)
/// that a `mix.exs` in one of its ancestor directories configures.
fn mix_configured(entry: &str, root: &Path, components: &[&str]) -> bool {
    let key = match entry {
        "_build" => "build_path:",
        "deps" => "deps_path:",
        _ => return false,
    };
    let full = root.join(components.join("/"));
    (0..components.len()).any(|depth| {
        let dir = root.join(components[..depth].join("/"));
        let Ok(text) = std::fs::read_to_string(dir.join("mix.exs")) else {
            return false;
        };
        text.match_indices(key).any(|(at, _)| {
            let rest = text[at + key.len()..].trim_start();
            let Some(quoted) = rest.strip_prefix('"') else {
                return false;
            };
            let Some(end) = quoted.find('"') else {
                return false;
            };
            let configured = normalize(&dir.join(&quoted[..end]));
            configured != normalize(root) && normalize(&full).starts_with(&configured)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_is_where_the_build_puts_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(
            root.join("mix.exs"),
            "def project, do: [app: :a, deps_path: \"vendor/deps\"]\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("assets")).unwrap();
        std::fs::write(root.join("assets/package.json"), "{}").unwrap();
        let list: Vec<String> = ["_build", "deps", "node_modules", "target", ".cache"]
            .map(String::from)
            .to_vec();
        assert!(allow_listed(&list, root, "_build/"));
        assert!(allow_listed(&list, root, "deps/jason/mix.exs"));
        assert!(allow_listed(&list, root, "assets/node_modules/"));
        assert!(allow_listed(&list, root, "vendor/deps/x/y.ex"));
        assert!(allow_listed(&list, root, ".cache/blob"));
        // Same names where no build puts them: hand-written, at risk.
        assert!(!allow_listed(&list, root, "docs/deps/audit-notes.md"));
        assert!(!allow_listed(&list, root, "docs/deps/"));
        assert!(!allow_listed(&list, root, "node_modules/"));
        assert!(!allow_listed(&list, root, "target/"));
        assert!(!allow_listed(&list, root, "lib/.cache/x"));
        assert!(!allow_listed(&list, root, ".env"));
        assert!(!allow_listed(&list, root, "_build_old/x"));
        let explicit = vec!["**/.cache".to_string(), "assets/vendor".to_string()];
        assert!(allow_listed(&explicit, root, "lib/.cache/x"));
        assert!(allow_listed(&explicit, root, "assets/vendor/a.js"));
        assert!(!allow_listed(&explicit, root, "vendor/a.js"));
    }

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
