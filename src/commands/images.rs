use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::cli::ImagesCommand;
use crate::docker::images::{self, Action, ImageOutcome};
use crate::docker::prune;
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
            let environment = global.env_name(&project, None)?;
            let images = images::ensure_images(
                &project,
                &environment,
                ui,
                *rebuild,
                images::all_images(&project.config)?,
            )?;
            emit(
                &ImagesReport {
                    docker_host: crate::docker::host_for(&project, &environment)?,
                    environment,
                    images,
                },
                ui,
            )
        }
        ImagesCommand::Prune {
            environment,
            dry_run,
        } => {
            let project = global.project()?;
            let environment = global.env_name(&project, environment.as_deref())?;
            let host = crate::docker::host_for(&project, &environment)?;
            let repository = project.config.image_repository();
            let keep = project.config.deploy.keep_releases;
            let rt = crate::docker::runtime()?;
            let pruned = rt.block_on(async {
                let daemon = crate::docker::connect(&host).await?;
                let mut pruned =
                    prune::prune_release_images(&daemon, &repository, keep, *dry_run).await?;
                let (untagged, in_use) =
                    prune::prune_untagged_builds(&daemon, &repository, *dry_run).await?;
                pruned.untagged = untagged;
                pruned.in_use.extend(in_use);
                anyhow::Ok(pruned)
            })?;
            emit(
                &PruneReport {
                    environment,
                    docker_host: host,
                    dry_run: *dry_run,
                    pruned,
                },
                ui,
            )
        }
    }
}

#[derive(Serialize)]
pub struct PruneReport {
    pub environment: String,
    pub docker_host: String,
    pub dry_run: bool,
    #[serde(flatten)]
    pub pruned: prune::Pruned,
}

impl Report for PruneReport {
    fn text(&self, _ui: &Ui) -> String {
        let p = &self.pruned;
        let line = |mark: String, verb: &str, image: &prune::PrunedImage| {
            format!(
                "{mark} {verb} {} {}\n",
                if image.tags.is_empty() {
                    "<untagged build step>".to_string()
                } else {
                    image.tags.join(", ")
                },
                Paint::dim(
                    image
                        .id
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect::<String>()
                )
            )
        };
        let mut out = format!(
            "{} on {}: keeping the newest {}\n",
            Paint::bold(&p.repository),
            self.docker_host,
            p.keep
        );
        for image in &p.kept {
            out += &line(Paint::ok("✓"), "kept   ", image);
        }
        for image in &p.in_use {
            out += &line(Paint::warn("•"), "in use ", image);
        }
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for image in p.removed.iter().chain(&p.untagged) {
            out += &line(Paint::bad("-"), verb, image);
        }
        if p.removed.is_empty() && p.untagged.is_empty() {
            out += &Paint::dim("nothing to remove\n");
        }
        out
    }
    fn exit(&self) -> Exit {
        if self.dry_run && !(self.pruned.removed.is_empty() && self.pruned.untagged.is_empty()) {
            Exit::Pending
        } else {
            Exit::Ok
        }
    }
}
