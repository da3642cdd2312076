//! The one exit-code table every command uses.
//!
//! Commands never pick a number themselves: a successful command's report says whether changes
//! are pending, and a failed one carries a [`Failure`] somewhere in its error chain. `main` maps
//! both to a code here, so the table in the README and this file are the whole story.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// Done, or nothing to do.
    Ok = 0,
    /// Bad input, a failure, or a chapter that is not implemented.
    Error = 1,
    /// Changes are pending (plan, `up --dry-run`, status with drift, dedupe found duplicates).
    Pending = 2,
    /// A tool or credential is missing, or another deploy holds the swarm's deploy lock:
    /// nothing was changed and the same command can succeed later.
    Blocked = 3,
    /// Refused to protect data: a user-edited file, a worktree at risk, a dirty copy.
    Refused = 4,
    /// A deploy failed and was rolled back.
    RolledBack = 5,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// How bad an outcome is, when one report holds several (a plan of many chapters, a chapter of
    /// many actions): the worst decides the exit code. Codes are numbered for users, not by
    /// severity, so the order lives here: a failure outranks a rollback (the deploy machinery
    /// itself broke), a rollback outranks a refusal (something ran and was undone), a refusal
    /// outranks blocked (data protected beats "try later"), blocked outranks pending.
    pub fn severity(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Pending => 1,
            Exit::Blocked => 2,
            Exit::Refused => 3,
            Exit::RolledBack => 4,
            Exit::Error => 5,
        }
    }

    /// The worst of several outcomes; `Ok` for none.
    pub fn worst(outcomes: impl IntoIterator<Item = Exit>) -> Exit {
        outcomes
            .into_iter()
            .max_by_key(|e| e.severity())
            .unwrap_or(Exit::Ok)
    }

    pub const TABLE: [(Exit, &'static str); 6] = [
        (Exit::Ok, "done, or nothing to do"),
        (
            Exit::Error,
            "error: bad input, a failure, or `up` of a chapter that is not implemented",
        ),
        (
            Exit::Pending,
            "changes pending: plan, up --dry-run, status with drift, dedupe found duplicates",
        ),
        (
            Exit::Blocked,
            "blocked: a tool or credential is missing, or another deploy holds the lock",
        ),
        (
            Exit::Refused,
            "refused to protect data: user-edited file, worktree at risk, dirty copy",
        ),
        (Exit::RolledBack, "deploy failed and was rolled back"),
    ];
}

/// Failures a caller may branch on; anything else in an error chain is exit 1.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("blocked: {0}")]
    Blocked(String),
    #[error("refused: {reason}\n{detail}")]
    Refused { reason: String, detail: String },
    #[error("deploy failed and was rolled back: {0}")]
    RolledBack(String),
    #[error("{0}: not implemented")]
    NotImplemented(String),
}

impl Failure {
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Blocked(_) => Exit::Blocked,
            Failure::Refused { .. } => Exit::Refused,
            Failure::RolledBack(_) => Exit::RolledBack,
            Failure::NotImplemented(_) => Exit::Error,
        }
    }

    pub fn refused(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Failure::Refused {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// The exit code for an error: the first [`Failure`] in its chain decides, else 1.
/// A `Failure` attached as context (around a typed error such as `swarm::lock::LockHeld`) is
/// found too: `chain()` yields context layers as opaque wrappers, `downcast_ref` sees through.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.downcast_ref::<Failure>()
        .or_else(|| {
            err.chain()
                .find_map(|cause| cause.downcast_ref::<Failure>())
        })
        .map(Failure::exit)
        .unwrap_or(Exit::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn failure_deep_in_a_chain_decides_the_code() {
        let err = Err::<(), _>(Failure::Blocked("docker".into()))
            .context("applying chapter 03")
            .unwrap_err();
        assert_eq!(exit_for(&err), Exit::Blocked);
        assert_eq!(exit_for(&anyhow::anyhow!("plain")), Exit::Error);
    }

    #[test]
    fn failure_given_as_context_decides_the_code() {
        #[derive(Debug, thiserror::Error)]
        #[error("typed")]
        struct Typed;
        let err = anyhow::Error::new(Typed)
            .context(Failure::Blocked("held".into()))
            .context("deploying");
        assert_eq!(exit_for(&err), Exit::Blocked);
        assert!(err.downcast_ref::<Typed>().is_some());
    }

    #[test]
    fn the_worst_outcome_decides_whatever_its_code() {
        use Exit::*;
        assert_eq!(Exit::worst([]), Ok);
        assert_eq!(Exit::worst([Ok, Pending]), Pending);
        assert_eq!(Exit::worst([Pending, Blocked, Ok]), Blocked);
        // Refused (4) outranks blocked (3) and pending (2): a refused check is never hidden.
        assert_eq!(Exit::worst([Refused, Pending, Ok]), Refused);
        assert_eq!(Exit::worst([Blocked, Refused]), Refused);
        assert_eq!(Exit::worst([Refused, RolledBack]), RolledBack);
        // A plain failure (1) outranks everything, though its code is the smallest but one.
        assert_eq!(Exit::worst([RolledBack, Error, Refused]), Error);
        // Every code has its own rank: no two outcomes tie.
        let mut ranks: Vec<u8> = Exit::TABLE.iter().map(|(e, _)| e.severity()).collect();
        ranks.sort();
        ranks.dedup();
        assert_eq!(ranks.len(), Exit::TABLE.len());
    }

    #[test]
    fn table_codes_are_the_documented_numbers() {
        let codes: Vec<i32> = Exit::TABLE.iter().map(|(e, _)| e.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
    }
}
