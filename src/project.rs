//! Finding the project: walk up from the working directory to the nearest `beamops.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{self, CONFIG_FILE, Config};

/// Where beamops keeps runtime state; git-ignored.
pub const STATE_DIR: &str = ".beamops";

#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    pub config: Config,
    /// The git repository's facts, read on first use: opening a repository costs more than
    /// anything else a plan of a small chapter does, and several parts of a run ask.
    git: std::sync::OnceLock<Option<GitFacts>>,
}

/// What beamops reads from the git repository the project is in.
#[derive(Debug, Clone)]
pub struct GitFacts {
    /// None for a bare repository.
    pub workdir: Option<PathBuf>,
    /// The `origin` remote's URL, when there is one.
    pub origin: Option<String>,
}

impl Project {
    /// `explicit` comes from `--project` / `BEAMOPS_PROJECT`; otherwise search upwards.
    pub fn discover(explicit: Option<&Path>) -> Result<Project> {
        let root = find_root(explicit)?;
        let config = config::load(&root.join(CONFIG_FILE))?;
        Ok(Project::new(root, config))
    }

    pub fn new(root: PathBuf, config: Config) -> Project {
        Project {
            root,
            config,
            git: std::sync::OnceLock::new(),
        }
    }

    /// The repository the root is in (None outside one), opened once per `Project`: nothing a
    /// command does changes the repository's location or its origin remote.
    pub fn git(&self) -> Option<&GitFacts> {
        self.git
            .get_or_init(|| {
                let repo = git2::Repository::discover(&self.root).ok()?;
                let origin = repo
                    .find_remote("origin")
                    .ok()
                    .and_then(|r| r.url().ok().map(str::to_string));
                Some(GitFacts {
                    workdir: repo.workdir().map(Path::to_path_buf),
                    origin,
                })
            })
            .as_ref()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// A project-relative path for output, the lock and the state: never absolute.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

pub fn find_root(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--project {}: no such directory", dir.display()))?;
        if !dir.join(CONFIG_FILE).is_file() {
            anyhow::bail!(
                "{}: no {CONFIG_FILE} here\n  fix: run `beamops init` there, or point --project at the directory that has it",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let cwd = std::env::current_dir()
        .context("cannot read the working directory")?
        .canonicalize()?;
    cwd.ancestors()
        .find(|dir| dir.join(CONFIG_FILE).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no {CONFIG_FILE} in {} or any parent directory\n  fix: run `beamops init` in the project root, or pass --project DIR",
                cwd.display()
            )
        })
}
