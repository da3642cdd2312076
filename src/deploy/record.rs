//! The deploy history of an environment, in `.beamops/state.json` under
//! `environments.<env>.records.deploys`: what `rollback` returns to and what a later
//! `up chapter-08` keeps running.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::project::Project;
use crate::state::State;

/// The key of the deploy history in `EnvironmentState::records`.
pub const RECORDS_KEY: &str = "deploys";
/// Older entries are dropped; their images may be long gone anyway.
const KEEP: usize = 100;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Deploy,
    Rollback,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every task of every service ran the release healthy.
    Succeeded,
    /// Swarm rolled the update back; the release before it serves.
    RolledBack,
    /// Stopped before or during the update (build, push, release command, timeout…).
    Failed,
    /// Written before anything changes and replaced by the outcome: one still in progress when
    /// a run starts is a run that was killed, which that run judges first (docs/deploy.md).
    InProgress,
}

/// One deploy or rollback. Never holds a secret: names, ids and digests only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeployRecord {
    /// `r<N>-<sha7>`; a rollback carries the release it returned to.
    pub release: String,
    pub kind: Kind,
    pub outcome: Outcome,
    /// The immutable reference the services run: `[registry/]<repository>:<sha>`.
    pub image: String,
    /// The local image id behind `image` when it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub git_sha: String,
    /// sha256 of the stack file and the variables it was interpolated with.
    pub spec_digest: String,
    pub started_at: String,
    pub at: String,
    pub seconds: f64,
    /// Why it failed or rolled back (the failing task), for `--format json` and people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole history, oldest first.
pub fn history(state: &State, env: &str) -> Result<Vec<DeployRecord>> {
    let Some(value) = state
        .environments
        .get(env)
        .and_then(|e| e.records.get(RECORDS_KEY))
    else {
        return Ok(Vec::new());
    };
    serde_json::from_value(value.clone()).with_context(|| {
        format!("state: environments.{env}.records.{RECORDS_KEY} is not a deploy history")
    })
}

/// Adds a record, or replaces the in-progress one of the same run (same release, kind and
/// start) with its outcome.
pub fn push(state: &mut State, env: &str, record: DeployRecord) -> Result<()> {
    let mut all = history(state, env)?;
    match all.iter_mut().rev().find(|r| {
        r.outcome == Outcome::InProgress
            && r.release == record.release
            && r.kind == record.kind
            && r.started_at == record.started_at
    }) {
        Some(open) => *open = record,
        None => all.push(record),
    }
    if all.len() > KEEP {
        all.drain(..all.len() - KEEP);
    }
    state
        .environments
        .entry(env.to_string())
        .or_default()
        .records
        .insert(RECORDS_KEY.into(), serde_json::to_value(all)?);
    Ok(())
}

/// The release that is live: the last deploy or rollback that succeeded.
pub fn live_in(history: &[DeployRecord]) -> Option<&DeployRecord> {
    history
        .iter()
        .rev()
        .find(|r| r.outcome == Outcome::Succeeded)
}

/// Runs that were killed before they recorded an outcome, oldest first.
pub fn in_progress(history: &[DeployRecord]) -> Vec<&DeployRecord> {
    history
        .iter()
        .filter(|r| r.outcome == Outcome::InProgress)
        .collect()
}

/// The live release of `env`, read from the project's state.
pub fn live(project: &Project, env: &str) -> Result<Option<DeployRecord>> {
    let state = State::read(&project.state_dir())?;
    Ok(live_in(&history(&state, env)?).cloned())
}

/// What a plain `rollback` returns to: the release that was live before the live one (a
/// second `rollback` therefore undoes the first).
pub fn previous_in(history: &[DeployRecord]) -> Option<&DeployRecord> {
    let live = live_in(history)?;
    history
        .iter()
        .rev()
        .filter(|r| r.outcome == Outcome::Succeeded)
        .find(|r| r.release != live.release && r.image != live.image)
}

/// A release by its id, or by a prefix of its git sha when that names exactly one release.
pub fn find<'a>(history: &'a [DeployRecord], wanted: &str) -> Option<&'a DeployRecord> {
    let ok = || {
        history
            .iter()
            .rev()
            .filter(|r| r.outcome == Outcome::Succeeded)
    };
    if let Some(r) = ok().find(|r| r.release == wanted) {
        return Some(r);
    }
    if wanted.len() < 4 {
        return None;
    }
    let mut by_sha: Vec<&DeployRecord> = ok().filter(|r| r.git_sha.starts_with(wanted)).collect();
    by_sha.dedup_by(|a, b| a.release == b.release);
    match by_sha.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// The releases `rollback --to` accepts, newest first, each once.
pub fn known_releases(history: &[DeployRecord]) -> Vec<String> {
    let mut seen = Vec::new();
    for r in history
        .iter()
        .rev()
        .filter(|r| r.outcome == Outcome::Succeeded)
    {
        let line = format!(
            "{} ({}, {})",
            r.release,
            &r.git_sha[..r.git_sha.len().min(12)],
            r.at
        );
        if !seen
            .iter()
            .any(|s: &String| s.starts_with(&format!("{} ", r.release)))
        {
            seen.push(line);
        }
    }
    seen
}

/// The number in a release id: `r12-1a2b3c4` → 12.
fn release_number(release: &str) -> Option<u64> {
    release.strip_prefix('r')?.split('-').next()?.parse().ok()
}

/// The next release id: deploys (not rollbacks) are numbered per environment.
pub fn next_release(history: &[DeployRecord], git_sha: &str) -> String {
    next_release_after(history, None, git_sha)
}

/// The next release id, also after the release live on the swarm: a checkout whose history is
/// shorter (a fresh CI clone) must not reuse a number.
pub fn next_release_after(history: &[DeployRecord], live: Option<&str>, git_sha: &str) -> String {
    let n = history
        .iter()
        .filter(|r| r.kind == Kind::Deploy)
        .filter_map(|r| release_number(&r.release))
        .chain(live.and_then(release_number))
        .max()
        .unwrap_or(0)
        + 1;
    format!("r{n}-{}", &git_sha[..git_sha.len().min(7)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(release: &str, image: &str, outcome: Outcome, kind: Kind) -> DeployRecord {
        DeployRecord {
            release: release.into(),
            kind,
            outcome,
            image: image.into(),
            image_id: None,
            git_sha: format!(
                "{}0000000000",
                release.split('-').nth(1).unwrap_or("abcdef0")
            ),
            spec_digest: String::new(),
            started_at: String::new(),
            at: String::new(),
            seconds: 0.0,
            detail: None,
        }
    }

    #[test]
    fn rollback_goes_to_the_release_live_before_and_skips_failed_ones() {
        let h = vec![
            rec("r1-aaaaaaa", "app:a", Outcome::Succeeded, Kind::Deploy),
            rec("r2-bbbbbbb", "app:b", Outcome::Succeeded, Kind::Deploy),
            rec("r3-ccccccc", "app:c", Outcome::RolledBack, Kind::Deploy),
        ];
        assert_eq!(live_in(&h).unwrap().release, "r2-bbbbbbb");
        assert_eq!(previous_in(&h).unwrap().release, "r1-aaaaaaa");
        assert_eq!(next_release(&h, "dddddddddd"), "r4-ddddddd");
        // A fresh clone without history numbers after the release the swarm runs.
        assert_eq!(
            next_release_after(&[], Some("r7-abcdef0"), "dddddddddd"),
            "r8-ddddddd"
        );
        // Rolled back to r1: a second rollback returns to r2.
        let mut h2 = h.clone();
        h2.push(rec(
            "r1-aaaaaaa",
            "app:a",
            Outcome::Succeeded,
            Kind::Rollback,
        ));
        assert_eq!(live_in(&h2).unwrap().release, "r1-aaaaaaa");
        assert_eq!(previous_in(&h2).unwrap().release, "r2-bbbbbbb");
        assert_eq!(next_release(&h2, "eeeeeee"), "r4-eeeeeee");
    }

    #[test]
    fn an_outcome_replaces_its_own_in_progress_record_and_nothing_else() {
        let mut state = State::default();
        let mut open = rec("r2-bbbbbbb", "app:b", Outcome::InProgress, Kind::Deploy);
        open.started_at = "t2".into();
        push(
            &mut state,
            "local",
            rec("r1-aaaaaaa", "app:a", Outcome::Succeeded, Kind::Deploy),
        )
        .unwrap();
        push(&mut state, "local", open.clone()).unwrap();
        let h = history(&state, "local").unwrap();
        assert_eq!(in_progress(&h).len(), 1);
        // In progress is not live, and its number is taken.
        assert_eq!(live_in(&h).unwrap().release, "r1-aaaaaaa");
        assert_eq!(next_release(&h, "ccccccc"), "r3-ccccccc");
        let mut done = open.clone();
        done.outcome = Outcome::Succeeded;
        push(&mut state, "local", done).unwrap();
        let h = history(&state, "local").unwrap();
        assert_eq!(h.len(), 2);
        assert!(in_progress(&h).is_empty());
        assert_eq!(live_in(&h).unwrap().release, "r2-bbbbbbb");
        // Another run's record of the same release is added, not merged.
        let mut other = open;
        other.started_at = "t3".into();
        push(&mut state, "local", other).unwrap();
        assert_eq!(history(&state, "local").unwrap().len(), 3);
    }

    #[test]
    fn find_by_release_or_unique_sha_prefix_never_a_failed_one() {
        let h = vec![
            rec("r1-aaaaaaa", "app:a", Outcome::Succeeded, Kind::Deploy),
            rec("r2-bbbbbbb", "app:b", Outcome::Failed, Kind::Deploy),
        ];
        assert_eq!(find(&h, "r1-aaaaaaa").unwrap().image, "app:a");
        assert_eq!(find(&h, "aaaa").unwrap().release, "r1-aaaaaaa");
        assert!(find(&h, "r2-bbbbbbb").is_none());
        assert!(find(&h, "a").is_none(), "too short to be a sha prefix");
        assert_eq!(known_releases(&h).len(), 1);
    }
}
