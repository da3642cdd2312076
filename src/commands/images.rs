use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::cli::ImagesCommand;
use crate::docker::images::{self, Action, ImageOutcome};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};

#[derive(Serialize)]
pub struct ImagesReport {
    pub environment: String,
    pub docker_host: String,
    pub images: Vec<ImageOutcome>,
}

impl Report for ImagesReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut out = String::new();
        for image in &self.images {
            let (mark, verb) = match image.action {
                Action::Present => (Paint::ok("✓"), "present"),
                Action::Pulled => (Paint::ok("↓"), "pulled "),
                Action::Built => (Paint::ok("+"), "built  "),
            };
            let versions: Vec<String> = image
                .versions
                .iter()
                .map(|(name, v)| format!("{name} {v}"))
                .collect();
            let versions = if versions.is_empty() {
                String::new()
            } else {
                format!(", {}", versions.join(", "))
            };
            out += &format!(
                "{mark} {verb} {} {}\n",
                Paint::bold(&image.image),
                Paint::dim(format!(
                    "({}: debian {}{versions}; {} MB; {:.0}s)",
                    image.role,
                    image.suite,
                    image.size_bytes / 1_000_000,
                    image.seconds
                ))
            );
        }
        out
    }
}

pub fn run(global: &Global, ui: &Ui, command: &ImagesCommand) -> Result<Exit> {
    match command {
        ImagesCommand::Bootstrap { rebuild } => {
            let project = global.project()?;
            let environment = global
                .environment
                .clone()
                .unwrap_or_else(|| project.config.default_environment_name().to_string());
            let images = images::ensure_base_images(&project, &environment, ui, *rebuild)?;
            emit(
                &ImagesReport {
                    docker_host: crate::docker::host_for(&project, &environment),
                    environment,
                    images,
                },
                ui,
            )
        }
    }
}
