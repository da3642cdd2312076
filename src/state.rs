//! `.beamops/state.json`: what happened last per environment, chapter and action (git-ignored),
//! and the run lock that keeps two beamops runs from interleaving.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil;

pub const STATE_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub schema: u32,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentState>,
}

impl Default for State {
    fn default() -> Self {
        State {
            schema: STATE_SCHEMA,
            environments: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EnvironmentState {
    #[serde(default)]
    pub chapters: BTreeMap<String, ChapterState>,
    /// Free-form records of later subsystems (deploy history, …), keyed by subsystem.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChapterState {
    #[serde(default)]
    pub actions: BTreeMap<String, ActionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionRecord {
    pub outcome: Outcome,
    /// Digest of the inputs the action last applied; a change means it must run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_digest: Option<String>,
    /// What the action wants to remember (an image id, a secret version…), never a secret.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    pub at: String,
}

impl ActionRecord {
    /// `data` as its typed record (`action::record`); `Ok(None)` when there is none.
    pub fn typed<R: crate::action::record::Record>(
        &self,
    ) -> Result<Option<R>, crate::action::record::Unreadable> {
        crate::action::record::parse(&self.data)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Applied,
    Satisfied,
    Failed,
    Blocked,
    Undone,
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    pub fn read(state_dir: &Path) -> Result<State> {
        let path = Self::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let state: State = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{}: unreadable state\n  fix: move it aside; beamops rebuilds it by checking every action",
                        path.display()
                    )
                })?;
                if state.schema > STATE_SCHEMA {
                    bail!(
                        "{}: state schema {} is newer than this beamops ({STATE_SCHEMA})\n  fix: upgrade beamops",
                        path.display(),
                        state.schema
                    );
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn write(&self, state_dir: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        let path = Self::path(state_dir);
        if std::fs::read(&path).ok().as_deref() == Some(text.as_bytes()) {
            return Ok(());
        }
        fsutil::atomic_write(&path, text.as_bytes(), Some(0o600))
    }

    pub fn chapter(&self, env: &str, chapter: &str) -> Option<&ChapterState> {
        self.environments.get(env)?.chapters.get(chapter)
    }

    /// The record of action `R::ACTION` in `env`, whichever chapter's manifest lists that action
    /// (the newest when several do): how one command reads what another chapter made, a typed
    /// output, not a chapter label and a JSON key. `Ok(None)` when it never applied there.
    pub fn find_record<R: crate::action::record::Record>(&self, env: &str) -> Result<Option<R>> {
        self.find_record_where(env, |_: &R| true)
    }

    /// [`State::find_record`] among the records `wanted` accepts (the app stack's converge, not
    /// another chapter's stack). Every record of the action is read: one of another shape is
    /// an error naming it, never skipped.
    pub fn find_record_where<R: crate::action::record::Record>(
        &self,
        env: &str,
        wanted: impl Fn(&R) -> bool,
    ) -> Result<Option<R>> {
        let mut found: Vec<(&str, R)> = Vec::new();
        for r in self
            .environments
            .get(env)
            .into_iter()
            .flat_map(|e| e.chapters.values())
            .filter_map(|c| c.actions.get(R::ACTION))
        {
            if let Some(typed) = r.typed::<R>()?
                && wanted(&typed)
            {
                found.push((r.at.as_str(), typed));
            }
        }
        Ok(found
            .into_iter()
            .max_by(|a, b| a.0.cmp(b.0))
            .map(|(_, r)| r))
    }

    pub fn chapter_mut(&mut self, env: &str, chapter: &str) -> &mut ChapterState {
        self.environments
            .entry(env.to_string())
            .or_default()
            .chapters
            .entry(chapter.to_string())
            .or_default()
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Held for the whole of a run that changes anything. The OS releases the underlying `flock`
/// when the process dies, even by kill -9 or Ctrl-C, so a dead holder's lock is simply taken.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Another run of this checkout holds `.beamops/run.lock` for the whole wait: exit 3 (blocked),
/// since nothing was changed and the same command succeeds once that run is done.
#[derive(Debug, thiserror::Error)]
#[error(
    "another beamops run ({holder}) holds {}\n  fix: retry later, once it is done, or pass --lock-wait with a longer wait (e.g. --lock-wait 10m)",
    path.display()
)]
pub struct RunLockHeld {
    pub path: PathBuf,
    /// `pid N`, as the holder wrote it.
    pub holder: String,
}

impl RunLock {
    pub fn acquire(state_dir: &Path, wait: Duration, on_wait: impl Fn(&str)) -> Result<RunLock> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join("run.lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= wait {
                        let holder = read_holder(&mut file);
                        let summary = format!("another beamops run ({holder}) holds the run lock");
                        return Err(anyhow::Error::new(RunLockHeld { path, holder })
                            .context(crate::exit::Failure::Blocked(summary)));
                    }
                    if !told {
                        let holder = read_holder(&mut file);
                        on_wait(&format!("waiting for another beamops run ({holder})"));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        // Overwritten in place, then cut to length, never emptied first: a waiter reading
        // meanwhile sees the previous holder's line or this one, not nothing.
        let line = format!("pid {}\n", std::process::id());
        file.rewind()?;
        file.write_all(line.as_bytes())?;
        file.set_len(line.len() as u64)?;
        file.flush()?;
        Ok(RunLock { _file: file })
    }
}

/// The holder's `pid N` line. A holder that has just taken the lock may not have written it
/// yet (a file created a moment ago is empty): read again for a short while.
fn read_holder(file: &mut File) -> String {
    for _ in 0..50 {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        if let Some(line) = text
            .lines()
            .next()
            .map(str::trim)
            .filter(|l| l.starts_with("pid ") && l[4..].parse::<u32>().is_ok())
        {
            return line.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "a run that has not written its pid yet".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RunLock::acquire(dir.path(), Duration::ZERO, |_| {}).unwrap();
        let err = RunLock::acquire(dir.path(), Duration::from_millis(200), |_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("pid {}", std::process::id())),
            "{err:#}"
        );
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(err.downcast_ref::<RunLockHeld>().is_some());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::default();
        s.chapter_mut("local", "01-foundation").actions.insert(
            "git-repository".into(),
            ActionRecord {
                outcome: Outcome::Satisfied,
                inputs_digest: None,
                data: serde_json::Value::Null,
                at: now_rfc3339(),
            },
        );
        s.write(dir.path()).unwrap();
        assert_eq!(State::read(dir.path()).unwrap(), s);
    }
}
