//! Processes whose working directory is inside a worktree: removing it would pull the floor from
//! under them (a shell, an editor, a running `mix phx.server`).

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Resident {
    pub pid: u32,
    pub command: String,
    pub cwd: String,
}

/// Scan `/proc/*/cwd`. Our own process is skipped (its cwd is where the user ran beamops), but
/// not its parent: the caller's shell sitting in the worktree is exactly what must block.
pub fn inside(worktree: &Path) -> Vec<Resident> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Resident> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            // Processes we may not inspect, or that exit mid-scan, have nothing to report.
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            if !cwd.starts_with(worktree) {
                return None;
            }
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            Some(Resident {
                pid,
                command,
                cwd: cwd.display().to_string(),
            })
        })
        .collect();
    found.sort_by_key(|r| r.pid);
    found
}
