//! Release images pruned after a deploy: the newest `keep` images of the app's repository stay,
//! older ones go, and never one that a service names or a container (running or stopped) uses.
//!
//! `images prune` also removes the untagged images beamops' builds of this repository left: a
//! killed build leaves the last image of each stage it got through. The Dockerfile labels every
//! stage with [`BUILD_LABEL`], so an untagged image without it (anyone else's) is never touched.
//!
//! On the node this Engine is: each node of a multi-node swarm keeps its own images; `deploy`
//! prunes the Engine it talks to, the others need `images prune` against them.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, ListServicesOptions, RemoveImageOptions,
};
use serde::Serialize;

use super::{Daemon, is_not_found};

#[derive(Debug, Clone, Serialize)]
pub struct PrunedImage {
    pub id: String,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub created: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    pub repository: String,
    pub keep: u32,
    pub kept: Vec<PrunedImage>,
    /// Older than the newest `keep`, but a service or container uses it.
    pub in_use: Vec<PrunedImage>,
    pub removed: Vec<PrunedImage>,
    /// Untagged images of this repository's builds (a killed build's stages, an earlier
    /// build's builder stage) removed, or that a dry run would remove.
    pub untagged: Vec<PrunedImage>,
}

/// The label the generated Dockerfile puts on every stage: the image repository it builds.
pub const BUILD_LABEL: &str = "dev.beamops.build";

/// The ids of images in use: by any container (stopped ones too, which `docker rm` would need
/// first) and by any service's spec (its tasks may be rescheduled here at any time).
async fn images_in_use(daemon: &Daemon) -> Result<BTreeSet<String>> {
    let mut used = BTreeSet::new();
    let containers = daemon
        .client
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .context("listing containers")?;
    used.extend(containers.into_iter().filter_map(|c| c.image_id));
    // Not a swarm manager: no services to ask about.
    let services = daemon
        .client
        .list_services(None::<ListServicesOptions>)
        .await
        .unwrap_or_default();
    for service in services {
        let image = service
            .spec
            .and_then(|s| s.task_template)
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default();
        let reference = image.split('@').next().unwrap_or_default();
        if reference.is_empty() {
            continue;
        }
        match daemon.client.inspect_image(reference).await {
            Ok(found) => used.extend(found.id),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }
    Ok(used)
}

/// Removes images of `repository` older than the newest `keep` (by creation time), except those
/// in use. `dry_run` only reports.
pub async fn prune_release_images(
    daemon: &Daemon,
    repository: &str,
    keep: u32,
    dry_run: bool,
) -> Result<Pruned> {
    let images = daemon
        .client
        .list_images(Some(ListImagesOptions {
            filters: Some(HashMap::from([(
                "reference".to_string(),
                vec![format!("{repository}:*")],
            )])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing images of {repository}"))?;
    let mut images: Vec<PrunedImage> = images
        .into_iter()
        .map(|i| PrunedImage {
            // The reference filter also matches other repositories' tags of a shared id.
            tags: i
                .repo_tags
                .into_iter()
                .filter(|t| t.rsplit_once(':').is_some_and(|(r, _)| r == repository))
                .collect(),
            id: i.id,
            created: i.created,
        })
        .filter(|i| !i.tags.is_empty())
        .collect();
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    let used = images_in_use(daemon).await?;
    let mut out = Pruned {
        repository: repository.to_string(),
        keep,
        ..Default::default()
    };
    for (i, image) in images.into_iter().enumerate() {
        if i < keep as usize {
            out.kept.push(image);
        } else if used.contains(&image.id) {
            out.in_use.push(image);
        } else {
            if !dry_run {
                // By tag, unforced: other repositories' tags of the same id keep it alive, and
                // the Engine refuses (409) an image a container started meanwhile uses.
                for tag in &image.tags {
                    match daemon
                        .client
                        .remove_image(tag, None::<RemoveImageOptions>, None)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            ..
                        }) => {
                            out.in_use.push(image.clone());
                            break;
                        }
                        Err(e) => return Err(e).with_context(|| format!("removing image {tag}")),
                    }
                }
                if out.in_use.last().is_some_and(|u| u.id == image.id) {
                    continue;
                }
            }
            out.removed.push(image);
        }
    }
    Ok(out)
}

/// Removes the untagged (dangling) images labelled as builds of `repository` that no container
/// uses; `dry_run` only lists them. Removing one also removes its untagged parents: the whole
/// chain of steps the build got through. The next build of a changed context starts again from
/// the base image for the stages they held.
pub async fn prune_untagged_builds(
    daemon: &Daemon,
    repository: &str,
    dry_run: bool,
) -> Result<(Vec<PrunedImage>, Vec<PrunedImage>)> {
    let images = daemon
        .client
        .list_images(Some(ListImagesOptions {
            filters: Some(HashMap::from([
                ("dangling".to_string(), vec!["true".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{BUILD_LABEL}={repository}")],
                ),
            ])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing untagged images of {repository}'s builds"))?;
    let used = images_in_use(daemon).await?;
    let (mut removed, mut in_use) = (Vec::new(), Vec::new());
    for image in images {
        let image = PrunedImage {
            id: image.id,
            tags: Vec::new(),
            created: image.created,
        };
        if used.contains(&image.id) {
            in_use.push(image);
            continue;
        }
        if !dry_run {
            match daemon
                .client
                .remove_image(&image.id, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {}
                // Gone with another chain, or a container started on it meanwhile.
                Err(e) if is_not_found(&e) => continue,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {
                    in_use.push(image);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing untagged image {}", image.id));
                }
            }
        }
        removed.push(image);
    }
    removed.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    Ok((removed, in_use))
}
