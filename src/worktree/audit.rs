//! `.beamops/audit.jsonl`: one line per removal attempt, appended atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::risk::Check;

pub const AUDIT_FILE: &str = "audit.jsonl";

#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    pub time: String,
    pub user: String,
    pub command: &'static str,
    pub path: &'a Path,
    pub branch: Option<&'a str>,
    pub head: Option<&'a str>,
    pub outcome: &'a str,
    pub checks: &'a [Check],
    pub backup: Option<&'a Path>,
    pub branch_deleted: bool,
}

/// Append one line. O_APPEND and a single `write` keep concurrent writers' lines whole.
pub fn append(state_dir: &Path, line: &AuditLine) -> Result<PathBuf> {
    let path = state_dir.join(AUDIT_FILE);
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(&bytes)
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(path)
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The login name, or the numeric uid when the environment does not say.
pub fn user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(format!("uid {}", uid.split_whitespace().next()?))
        })
        .unwrap_or_else(|| "unknown".into())
}
