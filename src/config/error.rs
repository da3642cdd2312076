use std::path::PathBuf;

use serde::Serialize;

/// A configuration problem, always pointing at a place and a fix.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{}{}: {message}\n  fix: {fix}", file.display(), place(*line, *column))]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub fix: String,
}

fn place(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}
