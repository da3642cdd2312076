//! `beamops coord`: agents claim, progress and complete work items in shared JSON files, the
//! same files and shapes as the legacy `coordination_helper.sh`, but correct when 100+ agents
//! call at once: every change is a read-modify-write under one `flock`, written by atomic
//! replace, and an exit code of 0 means the change is stored.

pub mod agents;
pub mod claims;
pub mod dashboard;
pub mod ids;
pub mod legacy;
pub mod otlp;
pub mod spans;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use store::Store;

/// The files of a coordination directory, named as the legacy helper names them.
pub const CLAIMS_FILE: &str = "work_claims.json";
pub const AGENTS_FILE: &str = "agent_status.json";
pub const LOG_FILE: &str = "coordination_log.json";
pub const VELOCITY_FILE: &str = "velocity_log.txt";
pub const SPANS_FILE: &str = "telemetry_spans.jsonl";
/// Where span-file text that does not parse is moved, verbatim, when the span file is rewritten
/// as JSON Lines.
pub const UNPARSED_SPANS_FILE: &str = "telemetry_spans.unparsed.txt";
/// The advisory lock beside the data. Not the legacy `work_claims.json.lock`, whose mere
/// existence makes the legacy helper report a conflict.
pub const LOCK_FILE: &str = ".beamops-coord.lock";

pub const DEFAULT_PRIORITY: &str = "medium";
pub const DEFAULT_TEAM: &str = "autonomous_team";
pub const DEFAULT_PROGRESS_STATUS: &str = "in_progress";
pub const DEFAULT_RESULT: &str = "success";
pub const DEFAULT_VELOCITY: &str = "5";
pub const DEFAULT_CAPACITY: &str = "100";
pub const DEFAULT_SPECIALIZATION: &str = "general_development";
pub const DEFAULT_SERVICE: &str = "s2s-coordination";
pub const DEFAULT_SERVICE_VERSION: &str = "1.0.0";

/// What a coordination command can fail on; callers branch on these for exit codes.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(
        "{path}: another agent held the lock for longer than --lock-wait {waited:?}\n  fix: retry, or pass a longer --lock-wait"
    )]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error(
        "{path}: not JSON that beamops can read ({detail}); nothing was changed\n  fix: repair the file (`jq . {path}` shows where it breaks) or move it aside"
    )]
    Unreadable { path: PathBuf, detail: String },
    #[error("unknown work item {id} in {path}\n  fix: check the id (`beamops coord list`)")]
    UnknownWork { id: String, path: PathBuf },
    #[error("{id} was already completed at {at}; nothing was changed")]
    AlreadyCompleted { id: String, at: String },
    #[error("no work item id given and $CURRENT_WORK_ITEM is empty\n  fix: pass the work_… id")]
    NoWorkId,
    #[error("bad {what} {value:?}: {expected}")]
    BadValue {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CoordError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CoordError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Settings a coordination command takes from its caller's environment, read once so the
/// domain never looks at the process environment itself.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `AGENT_ID`.
    pub agent_id: Option<String>,
    /// `AGENT_TEAM`: the team velocity is credited to.
    pub agent_team: Option<String>,
    /// `CURRENT_WORK_ITEM`: the work id when none is given.
    pub current_work_item: Option<String>,
    /// The first set of `FORCE_TRACE_ID`, `COORDINATION_TRACE_ID`, `TRACE_ID`, `OTEL_TRACE_ID`.
    pub trace_id: Option<String>,
    /// `OTEL_PARENT_SPAN_ID`.
    pub parent_span_id: Option<String>,
    pub service_name: String,
    pub service_version: String,
    /// `DEPLOYMENT_ENV`.
    pub deployment_env: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans are also sent, when set.
    pub otlp_endpoint: Option<String>,
    pub lock_wait: Duration,
}

impl Context {
    /// Read from the variables the legacy helper honours, in its precedence.
    pub fn from_env(lock_wait: Duration) -> Context {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Context {
            agent_id: var("AGENT_ID"),
            agent_team: var("AGENT_TEAM"),
            current_work_item: var("CURRENT_WORK_ITEM"),
            trace_id: [
                "FORCE_TRACE_ID",
                "COORDINATION_TRACE_ID",
                "TRACE_ID",
                "OTEL_TRACE_ID",
            ]
            .iter()
            .find_map(|k| var(k)),
            parent_span_id: var("OTEL_PARENT_SPAN_ID"),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| DEFAULT_SERVICE.into()),
            service_version: var("OTEL_SERVICE_VERSION")
                .unwrap_or_else(|| DEFAULT_SERVICE_VERSION.into()),
            deployment_env: var("DEPLOYMENT_ENV").unwrap_or_else(|| "development".into()),
            otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            lock_wait,
        }
    }

    /// For tests and library callers: defaults, no environment.
    pub fn plain(lock_wait: Duration) -> Context {
        Context {
            service_name: DEFAULT_SERVICE.into(),
            service_version: DEFAULT_SERVICE_VERSION.into(),
            deployment_env: "development".into(),
            lock_wait,
            ..Context::default()
        }
    }
}

/// A positional argument the legacy helper defaults with `${N:-default}`: empty means default.
pub fn or_default(value: Option<&str>, default: &str) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => default.to_string(),
    }
}

/// The coordination directory: `--dir`/`$COORDINATION_DIR`, else `coordination/` in the state
/// directory (`$BEAMOPS_STATE_DIR` as `beamops env --shell` exports it, else the project's
/// `.beamops/`), so agents of one checkout share one directory without configuration.
pub fn resolve_dir(dir: Option<&Path>, project: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) {
        return Ok(dir.to_path_buf());
    }
    if let Some(state) = std::env::var_os("BEAMOPS_STATE_DIR").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(state).join("coordination"));
    }
    let root = crate::project::find_root(project).map_err(|e| {
        e.context("no coordination directory\n  fix: set COORDINATION_DIR (or --dir), or run inside a beamops project")
    })?;
    Ok(root.join(crate::project::STATE_DIR).join("coordination"))
}

/// The wrapper that replaces `coordination_helper.sh`: callers keep their command lines.
pub fn shim_script(beamops: &Path) -> String {
    let quoted = format!("'{}'", beamops.display().to_string().replace('\'', r"'\''"));
    format!(
        "#!/usr/bin/env bash\n\
         # coordination_helper.sh served by beamops: the same commands, positional arguments,\n\
         # files and output lines, safe for many agents at once (beamops docs/coord.md).\n\
         # Written by `beamops coord shim`; BEAMOPS_BIN chooses another beamops binary.\n\
         beamops_bin=${{BEAMOPS_BIN:-{quoted}}}\n\
         exec \"$beamops_bin\" coord \"$@\"\n"
    )
}
