use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::engine::Drift;
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};

#[derive(Serialize)]
pub struct StatusReport {
    pub environment: String,
    pub drift: Vec<Drift>,
    /// The stack's deploy lock on the swarm, when a run holds it (or a dead run left it).
    pub lock: Option<crate::swarm::lock::Lock>,
}

impl Report for StatusReport {
    fn text(&self, _ui: &Ui) -> String {
        let lock = match &self.lock {
            Some(l) if l.stale => format!(
                "{} deploy lock {}: held by {}\n  fix: `beamops lock release {} --yes` once you checked the holder is gone\n",
                Paint::bad("STALE"),
                l.name,
                l.describe(),
                self.environment
            ),
            Some(l) => format!(
                "{} deploy lock {}: held by {}\n",
                Paint::warn("held"),
                l.name,
                l.describe()
            ),
            None => String::new(),
        };
        if self.drift.is_empty() {
            return format!(
                "{} no drift in {}\n{lock}",
                Paint::ok("✓"),
                self.environment
            );
        }
        let mut out = lock;
        out += &format!(
            "{} drift in {}:\n",
            Paint::warn(self.drift.len()),
            self.environment
        );
        for d in &self.drift {
            out += &format!(
                "  {} {}: {}\n",
                d.chapter,
                Paint::bold(&d.subject),
                d.detail
            );
        }
        out
    }
    fn exit(&self) -> Exit {
        if self.drift.is_empty() {
            Exit::Ok
        } else {
            Exit::Pending
        }
    }
}

pub fn run(global: &Global, ui: &Ui) -> Result<Exit> {
    let project = global.project()?;
    let engine = global.engine(&project, ui)?;
    let drift = engine.status()?;
    emit(
        &StatusReport {
            lock: crate::swarm::lock::held_for_environment(&project, &engine.docker),
            environment: engine.env_name.clone(),
            drift,
        },
        ui,
    )
}
