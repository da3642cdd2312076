//! `beamops lock status|release ENV`: the stack's deploy lock on the environment's swarm.

use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::cli::LockCommand;
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};
use crate::swarm::{self, SwarmMode, lock};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    Free,
    Held,
    /// Held for longer than deploy.lock_timeout.
    Stale,
    /// The Engine is not a swarm manager: there is nothing to lock.
    NoSwarm,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    Released,
    /// Without --yes: what a release would remove.
    WouldRelease,
}

#[derive(Serialize)]
pub struct LockReport {
    pub environment: String,
    pub stack: String,
    pub name: String,
    pub state: LockState,
    pub lock: Option<lock::Lock>,
    pub timeout_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
}

impl Report for LockReport {
    fn text(&self, _ui: &Ui) -> String {
        let what = match (&self.lock, self.state) {
            (_, LockState::NoSwarm) => format!("{}: no swarm, nothing to lock", self.stack),
            (None, _) => format!("{} {}", Paint::ok("free"), self.name),
            (Some(l), LockState::Stale) => {
                format!(
                    "{} {}: held by {}",
                    Paint::bad("STALE"),
                    self.name,
                    l.describe()
                )
            }
            (Some(l), _) => format!("{} {}: by {}", Paint::warn("held"), self.name, l.describe()),
        };
        match self.release {
            Some(Release::Released) => format!("{what}\n{}\n", Paint::ok("released")),
            Some(Release::WouldRelease) => format!(
                "{what}\nwould release it; run again with --yes to remove it (make sure its holder is not running)\n"
            ),
            None => format!("{what}\n"),
        }
    }
    fn exit(&self) -> Exit {
        if self.release == Some(Release::WouldRelease) {
            Exit::Pending
        } else {
            Exit::Ok
        }
    }
}

pub fn run(global: &Global, ui: &Ui, command: &LockCommand) -> Result<Exit> {
    let (positional, releasing) = match command {
        LockCommand::Status { environment } => (environment, false),
        LockCommand::Release { environment } => (environment, true),
    };
    let project = global.project()?;
    let environment = global.env_name(&project, positional.as_deref())?;
    let stack = project.config.app.stack_name().to_string();
    let timeout = project.config.deploy.lock_timeout()?;
    let rt = crate::docker::runtime()?;
    let daemon = rt.block_on(crate::docker::connect(&crate::docker::host_for(
        &project,
        &environment,
    )?))?;
    let mut report = LockReport {
        environment,
        name: lock::lock_name(&stack),
        stack: stack.clone(),
        state: LockState::NoSwarm,
        lock: None,
        timeout_seconds: timeout.as_secs(),
        release: None,
    };
    if !matches!(
        rt.block_on(swarm::mode(&daemon))?,
        SwarmMode::Manager { .. }
    ) {
        return emit(&report, ui);
    }
    let found = rt.block_on(lock::current(&daemon, &stack, timeout))?;
    report.state = match &found {
        None => LockState::Free,
        Some(l) if l.stale => LockState::Stale,
        Some(_) => LockState::Held,
    };
    report.lock = found;
    if releasing && report.lock.is_some() {
        if global.yes {
            // Removes whatever holds it now, which is what the person asked for.
            if rt
                .block_on(lock::release(&daemon, &stack, timeout))?
                .is_some()
            {
                report.release = Some(Release::Released);
            }
        } else {
            report.release = Some(Release::WouldRelease);
        }
    }
    emit(&report, ui)
}
