use serde::{Deserialize, Serialize};

use crate::action::ActionSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: u8,
    pub slug: String,
    pub title: String,
    pub summary: String,
    #[serde(default)]
    pub needs: Vec<String>,
    /// False until the chapter really works; `up` then refuses instead of pretending.
    #[serde(default)]
    pub implemented: bool,
    /// What this machine can apply for real, and where the chapter stops here.
    #[serde(default)]
    pub boundary: Option<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

impl Manifest {
    /// `08-swarm`: the stable key used in the lock, the state and file names.
    pub fn key(&self) -> String {
        format!("{:02}-{}", self.id, self.slug)
    }

    /// `chapter-08`: how people name it on the command line.
    pub fn label(&self) -> String {
        format!("chapter-{:02}", self.id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path inside `templates/`.
    pub template: String,
    /// Project-relative destination; may use template expressions (`secrets/{{ env.name }}.yaml`).
    pub path: String,
    /// Octal mode, e.g. `"0755"`; default 0644.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub policy: Policy,
    /// For `append-if-marker-missing`: the line whose presence means the block is there.
    #[serde(default)]
    pub marker: Option<String>,
    /// A template expression; the file is rendered only when it is true.
    #[serde(default)]
    pub when: Option<String>,
}

impl FileSpec {
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
            .unwrap_or(0o644)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// beamops owns the file: updated on every run, conflicts when a person edited it.
    #[default]
    Managed,
    /// Written once as a starting point, then the user's.
    CreateOnce,
    /// A block appended to a user's file (like `.gitignore`) when its marker line is missing.
    AppendIfMarkerMissing,
}
