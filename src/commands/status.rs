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
}

impl Report for StatusReport {
    fn text(&self, _ui: &Ui) -> String {
        if self.drift.is_empty() {
            return format!("{} no drift in {}\n", Paint::ok("✓"), self.environment);
        }
        let mut out = format!(
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
            environment: engine.env_name.clone(),
            drift,
        },
        ui,
    )
}
