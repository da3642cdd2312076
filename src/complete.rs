//! Values the shell completes, read when a person presses Tab (`BEAMOPS_COMPLETE=<shell>
//! beamops`, registered by `beamops completions <shell>`): chapters, the project's environments,
//! the repository's worktrees and dedupe's manifests. Every source is local and offline; one
//! that cannot be read offers nothing rather than an error in the middle of a command line.

use std::path::PathBuf;

use clap_complete::engine::CompletionCandidate;

/// The variable the registered shell function sets to ask for completions.
pub const VAR: &str = "BEAMOPS_COMPLETE";

pub fn chapters() -> Vec<CompletionCandidate> {
    crate::chapter::all()
        .iter()
        .flat_map(|c| {
            let help = Some(c.title.clone().into());
            [
                CompletionCandidate::new(c.label()).help(help.clone()),
                CompletionCandidate::new(c.slug.clone()).help(help),
            ]
        })
        .collect()
}

fn project_dir() -> Option<PathBuf> {
    let explicit = std::env::var_os("BEAMOPS_PROJECT").map(PathBuf::from);
    crate::project::find_root(explicit.as_deref()).ok()
}

pub fn environments() -> Vec<CompletionCandidate> {
    let Some(root) = project_dir() else {
        return Vec::new();
    };
    let Ok(config) = crate::config::load(&root.join(crate::config::CONFIG_FILE)) else {
        return Vec::new();
    };
    config
        .environments
        .iter()
        .map(|(name, env)| {
            CompletionCandidate::new(name.clone()).help(Some(format!("{}", env.provider).into()))
        })
        .collect()
}

pub fn worktrees() -> Vec<CompletionCandidate> {
    let Ok(cwd) = std::env::current_dir() else {
        return Vec::new();
    };
    let Ok(repo) = git2::Repository::discover(&cwd) else {
        return Vec::new();
    };
    let Ok(names) = repo.worktrees() else {
        return Vec::new();
    };
    names
        .iter()
        .flatten()
        .flatten()
        .filter_map(|name| {
            let wt = repo.find_worktree(name).ok()?;
            Some(
                CompletionCandidate::new(name.to_string())
                    .help(Some(wt.path().display().to_string().into())),
            )
        })
        .collect()
}

pub fn manifests() -> Vec<CompletionCandidate> {
    let root = project_dir()
        .or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            git2::Repository::discover(&cwd)
                .ok()?
                .workdir()
                .map(PathBuf::from)
        })
        .or_else(|| std::env::current_dir().ok());
    let Some(root) = root else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(crate::dedupe::manifest::dedupe_dir(&root)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    // Newest first: the timestamps sort.
    names.sort_unstable_by(|a, b| b.cmp(a));
    names.into_iter().map(CompletionCandidate::new).collect()
}
