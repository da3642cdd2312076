//! Chapter 03's actions: base images on the Engine, then the release image built through the
//! Engine API from the rendered Dockerfile.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::record::{self, BaseImagesRecord, ReleaseImageRecord};
use super::{Action, ActionContext, Applied, Check};
use crate::docker::{Daemon, context, images};

/// Base images (builder, runner, database) present on the environment's Engine.
pub struct BaseImages;

impl Action for BaseImages {
    fn id(&self) -> String {
        "base-images".into()
    }
    fn describe(&self) -> String {
        "base images on the Engine (pulled, or built from Debian's packages offline)".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let wanted = images::base_images(&cx.project.config)?;
        let (rt, daemon) = cx.engine()?;
        let mut missing = Vec::new();
        for image in &wanted {
            if rt
                .block_on(daemon.client.inspect_image(&image.reference))
                .is_err()
            {
                missing.push(image.reference.clone());
            }
        }
        Ok(if missing.is_empty() {
            Check::Satisfied(format!("{} base images present", wanted.len()))
        } else {
            Check::Pending(format!("missing {}", missing.join(", ")))
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let outcomes = images::ensure_base_images(cx.project, cx.env_name, cx.ui, false)?;
        let built: Vec<String> = outcomes
            .iter()
            .filter(|o| o.action == images::Action::Built)
            .map(|o| o.image.clone())
            .collect();
        let summary = if built.is_empty() {
            "base images present".to_string()
        } else {
            format!(
                "no registry answered; built from Debian's packages: {}",
                built.join(", ")
            )
        };
        Ok(Applied {
            summary,
            data: record::to_data(&BaseImagesRecord(outcomes)),
            inputs_digest: None,
        })
    }
}

/// The release image, built from the project through the Engine API.
pub struct ReleaseImage;

/// The project's git revision: what chapter 03 tags the release image with.
pub struct Revision {
    pub sha: String,
    pub dirty: bool,
}

impl Revision {
    /// `<sha12>` or `<sha12>-dirty`.
    pub fn tag(&self) -> String {
        let short = &self.sha[..self.sha.len().min(12)];
        if self.dirty {
            format!("{short}-dirty")
        } else {
            short.to_string()
        }
    }
}

pub fn revision(root: &std::path::Path) -> Result<Revision> {
    let repo = git2::Repository::discover(root)
        .context("chapter 03 tags images with the git revision; fix: run `git init` and commit")?;
    let sha = match repo.head().ok().and_then(|h| h.peel_to_commit().ok()) {
        Some(c) => c.id().to_string(),
        None => "0000000".to_string(),
    };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).include_ignored(false);
    // A project inside a larger repository is dirty only when its own files are.
    if let (Some(workdir), Ok(root)) = (repo.workdir(), root.canonicalize())
        && let Ok(sub) = root.strip_prefix(workdir.canonicalize().unwrap_or(workdir.to_path_buf()))
        && !sub.as_os_str().is_empty()
    {
        opts.pathspec(sub);
    }
    let dirty = !repo.statuses(Some(&mut opts))?.is_empty();
    Ok(Revision { sha, dirty })
}

fn app_version(root: &std::path::Path) -> String {
    let mix = std::fs::read_to_string(root.join("mix.exs")).unwrap_or_default();
    regex::Regex::new(r#"version:\s*"([^"]+)""#)
        .expect("static regex")
        .captures(&mix)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl ReleaseImage {
    fn repository(cx: &ActionContext) -> String {
        cx.project.config.image_repository()
    }
}

impl Action for ReleaseImage {
    fn id(&self) -> String {
        "release-image".into()
    }
    fn describe(&self) -> String {
        "release image built through the Docker Engine API".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        if cx.no_cache {
            return Ok(Check::Pending("--no-cache: rebuild".into()));
        }
        let entries = context::entries(&cx.project.root)?;
        let digest = context::digest(&entries)?;
        let rev = revision(&cx.project.root)?;
        let wanted_tag = format!("{}:{}", Self::repository(cx), rev.tag());
        let (rt, daemon) = cx.engine()?;
        let labelled = rt.block_on(image_for_context(daemon, &Self::repository(cx), &digest))?;
        let recorded = match cx.recorded_for::<ReleaseImageRecord>(&digest) {
            Ok(r) => r.map(|r| r.id),
            // Explicitly "not built": the check says why and apply records it anew.
            Err(e) => return Ok(Check::Pending(format!("{e:#}"))),
        };
        let Some(id) = labelled.or(recorded) else {
            return Ok(Check::Pending("the build context changed".into()));
        };
        let id = id.as_str();
        let Ok(image) = rt.block_on(daemon.client.inspect_image(id)) else {
            return Ok(Check::Pending(format!(
                "image {id} is gone from the Engine"
            )));
        };
        let tags = image.repo_tags.unwrap_or_default();
        if !tags.contains(&wanted_tag) {
            return Ok(Check::Pending(format!(
                "tag {wanted_tag} (context unchanged: no build)"
            )));
        }
        Ok(Check::Satisfied(format!("{wanted_tag} ({})", short_id(id))))
    }

    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let entries = context::entries(&cx.project.root)?;
        let digest = context::digest(&entries)?;
        let rev = revision(&cx.project.root)?;
        let repository = Self::repository(cx);
        let sha_tag = format!("{repository}:{}", rev.tag());
        let latest = format!("{repository}:latest");
        let (rt, daemon) = cx.engine()?;

        // An image of this very context exists (built by this chapter or another one that
        // renders into the build context): only the tags may be missing, nothing to build.
        let existing = if cx.no_cache {
            None
        } else {
            rt.block_on(image_for_context(daemon, &repository, &digest))?
                .or_else(|| {
                    cx.recorded_or_warn::<ReleaseImageRecord>(Some(&digest))
                        .map(|r| r.id)
                })
                .filter(|id| rt.block_on(daemon.client.inspect_image(id)).is_ok())
        };
        if let Some(id) = existing.as_deref() {
            for t in [&sha_tag, &latest] {
                rt.block_on(tag(daemon, id, t))?;
            }
            return Ok(Applied {
                summary: format!("tagged {sha_tag} (context unchanged, no build)"),
                data: record::to_data(&ReleaseImageRecord {
                    id: id.to_string(),
                    tags: vec![sha_tag, latest],
                    built: false,
                    cached_steps: None,
                }),
                inputs_digest: Some(digest),
            });
        }

        let tar = context::tar(&entries)?;
        let created = crate::state::now_rfc3339();
        let build_args = HashMap::from([
            ("VERSION".to_string(), app_version(&cx.project.root)),
            ("REVISION".to_string(), rev.sha.clone()),
            ("CREATED".to_string(), created),
        ]);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(&sha_tag)
            .nocache(cx.no_cache)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&HashMap::from([(
                CONTEXT_LABEL.to_string(),
                digest.clone(),
            )]))
            // The runner stage may reach the Debian mirror for runtime packages.
            .networkmode("host")
            .version(BuilderVersion::BuilderV1)
            .build();
        let spinner = cx.ui.spinner(format!("building {sha_tag}"));
        let mut log = String::new();
        let mut id = None;
        let result: Result<()> = rt.block_on(async {
            let mut stream =
                daemon
                    .client
                    .build_image(options, None, Some(bollard::body_full(tar.into())));
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(text) = &info.stream {
                    log.push_str(text);
                    cx.ui.detail(text.trim_end());
                    if let Some(step) = text.lines().find(|l| l.starts_with("Step ")) {
                        spinner.set_message(format!("building {sha_tag}: {step}"));
                    }
                }
                if let Some(detail) = &info.error_detail {
                    anyhow::bail!("{}", detail.message.clone().unwrap_or_default());
                }
                if let Some(aux) = &info.aux
                    && let Some(i) = &aux.id
                {
                    id = Some(i.clone());
                }
            }
            Ok(())
        });
        spinner.finish_and_clear();
        if let Err(e) = result {
            // The whole log on failure: the last step's output is what a person needs.
            return Err(anyhow::anyhow!("{log}\nbuild of {sha_tag} failed: {e}"));
        }
        let image = rt
            .block_on(daemon.client.inspect_image(&sha_tag))
            .with_context(|| format!("inspecting {sha_tag} after the build"))?;
        let id = image.id.or(id).context("the Engine reported no image id")?;
        rt.block_on(tag(daemon, &id, &latest))?;
        let cached = log.matches("Using cache").count();
        Ok(Applied {
            summary: format!(
                "built {sha_tag} and {latest} ({}; {cached} cached steps)",
                short_id(&id)
            ),
            data: record::to_data(&ReleaseImageRecord {
                id: id.to_string(),
                tags: vec![sha_tag, latest],
                built: true,
                cached_steps: Some(cached as u64),
            }),
            inputs_digest: Some(digest),
        })
    }

    fn undo(&self, cx: &ActionContext) -> Result<Option<String>> {
        // Images are cheap to rebuild but may be what is running: `down` keeps them.
        let _ = cx;
        Ok(None)
    }
}

/// The image label holding the digest of the build context an image was built from.
pub const CONTEXT_LABEL: &str = "dev.beamops.context";

/// The newest image of `repository` built from the context with this digest.
async fn image_for_context(
    daemon: &Daemon,
    repository: &str,
    digest: &str,
) -> Result<Option<String>> {
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![format!("{CONTEXT_LABEL}={digest}")],
        ),
        ("reference".to_string(), vec![repository.to_string()]),
    ]);
    let mut images = daemon
        .client
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .with_context(|| format!("listing images of {repository}"))?;
    images.sort_by_key(|i| std::cmp::Reverse(i.created));
    Ok(images.into_iter().next().map(|i| i.id))
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

async fn tag(daemon: &Daemon, id: &str, reference: &str) -> Result<()> {
    let (repo, tag) = images::split_reference(reference);
    let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
    daemon
        .client
        .tag_image(id, Some(options))
        .await
        .with_context(|| format!("tagging {reference}"))?;
    Ok(())
}
