//! Versioned Docker secrets `<stack>_<key>_v<N>` on the Engine, through bollard.
//!
//! Docker secrets are immutable: a changed value becomes the next version, services that used
//! the old one are moved to it, and versions no service uses are pruned. Whether a value
//! changed is decided by the keyed HMAC recorded in the state, never by the Engine (which does
//! not return secret data) and never by a plain hash (which would let anyone test guesses).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::models::SecretSpec;
use bollard::query_parameters::{ListSecretsOptions, UpdateServiceOptions};

use super::{Applied, AppliedSecret, Plaintext, docker_secret_name, hmac_hex};
use crate::docker::Daemon;

pub const LABEL_STACK: &str = "com.docker.stack.namespace";
pub const LABEL_KEY: &str = "beamops.key";
pub const LABEL_VERSION: &str = "beamops.version";

/// A secret beamops made for a stack, as the Engine lists it.
#[derive(Debug, Clone)]
pub struct EngineSecret {
    pub id: String,
    pub name: String,
    pub key: String,
    pub version: u32,
}

/// Every beamops secret of `stack` on the Engine.
pub async fn stack_secrets(daemon: &Daemon, stack: &str) -> Result<Vec<EngineSecret>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_STACK}={stack}"), LABEL_KEY.to_string()],
    )]);
    let secrets = daemon
        .client
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(filters),
        }))
        .await
        .with_context(|| format!("listing secrets on {}", daemon.host))?;
    Ok(secrets
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let labels = spec.labels.unwrap_or_default();
            Some(EngineSecret {
                id: s.id?,
                name: spec.name?,
                key: labels.get(LABEL_KEY)?.clone(),
                version: labels.get(LABEL_VERSION)?.parse().ok()?,
            })
        })
        .collect())
}

/// What one apply did on the Engine.
#[derive(Debug, Clone, Default)]
pub struct Converged {
    pub applied: Applied,
    pub created: Vec<String>,
    pub kept: Vec<String>,
    /// `service: old → new` lines for services moved to a new version.
    pub rotated: Vec<String>,
    pub pruned: Vec<String>,
}

/// Creates a new version for every key whose value's HMAC differs from the recorded one (or
/// whose recorded secret is gone), labelled as `chapter`'s, moves services to it, then prunes
/// unused versions.
pub async fn converge(
    daemon: &Daemon,
    stack: &str,
    chapter: &str,
    values: &Plaintext,
    hmac_key: &[u8],
    previous: Option<&Applied>,
) -> Result<Converged> {
    let existing = stack_secrets(daemon, stack).await?;
    let mut done = Converged {
        applied: Applied {
            stack: stack.to_string(),
            secrets: BTreeMap::new(),
        },
        ..Default::default()
    };
    for (key, value) in &values.0 {
        let mac = hmac_hex(hmac_key, stack, key, value);
        let recorded = previous
            .filter(|p| p.stack == stack)
            .and_then(|p| p.secrets.get(key));
        if let Some(rec) = recorded
            && rec.hmac == mac
            && existing.iter().any(|e| e.name == rec.name)
        {
            done.kept.push(rec.name.clone());
            done.applied.secrets.insert(key.clone(), rec.clone());
            continue;
        }
        // The next number after anything on the Engine or in the record: names are never reused.
        let version = existing
            .iter()
            .filter(|e| &e.key == key)
            .map(|e| e.version)
            .chain(recorded.map(|r| r.version))
            .max()
            .unwrap_or(0)
            + 1;
        let name = docker_secret_name(stack, key, version);
        let labels = HashMap::from([
            (LABEL_STACK.to_string(), stack.to_string()),
            (LABEL_KEY.to_string(), key.clone()),
            (LABEL_VERSION.to_string(), version.to_string()),
            // Which chapter made it, as on everything beamops makes on the swarm.
            (
                crate::swarm::spec::CHAPTER_LABEL.to_string(),
                chapter.to_string(),
            ),
        ]);
        let created = daemon
            .client
            .create_secret(SecretSpec {
                name: Some(name.clone()),
                labels: Some(labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating Docker secret {name} on {}", daemon.host))?;
        // Read it back: the apply verifies its own result, since the engine's generic verify
        // re-runs `check` before the new record is in the state.
        daemon
            .client
            .inspect_secret(&created.id)
            .await
            .with_context(|| format!("{name} was created but cannot be inspected"))?;
        // Every older version of this key, not only the recorded one: a lost state must not
        // leave services on a value that was replaced.
        for old in existing.iter().filter(|e| &e.key == key) {
            done.rotated
                .extend(rotate_services(daemon, &old.name, &name, &created.id).await?);
        }
        done.created.push(name.clone());
        done.applied.secrets.insert(
            key.clone(),
            AppliedSecret {
                name,
                version,
                hmac: mac,
            },
        );
    }
    let keep: BTreeSet<String> = done
        .applied
        .secrets
        .values()
        .map(|s| s.name.clone())
        .collect();
    done.pruned = prune_unused(daemon, stack, &keep).await?;
    Ok(done)
}

/// Moves every service that mounts `old` to `new`, keeping the file name it is mounted as,
/// so the running release sees the new value after a rolling update.
async fn rotate_services(
    daemon: &Daemon,
    old: &str,
    new: &str,
    new_id: &str,
) -> Result<Vec<String>> {
    // Raw specs, not bollard's list: its model drops the healthcheck, and the update would then
    // replace every task with one that has none (converge::typed_spec).
    let services = crate::swarm::converge::raw_services(daemon).await?;
    let mut moved = Vec::new();
    for service in services {
        let (Some(id), Some(version)) = (
            service["ID"].as_str().map(str::to_string),
            service["Version"]["Index"].as_u64(),
        ) else {
            continue;
        };
        let mut spec = service["Spec"].clone();
        // A one-off job is never restarted onto a new secret: a leftover of a killed run
        // would run again, and the next run removes it anyway.
        if spec["Labels"].get(crate::swarm::job::JOB_LABEL).is_some() {
            continue;
        }
        let Some(secrets) = spec["TaskTemplate"]["ContainerSpec"]["Secrets"].as_array_mut() else {
            continue;
        };
        let mut changed = false;
        for s in secrets.iter_mut() {
            if s["SecretName"].as_str() == Some(old) {
                s["SecretName"] = new.into();
                s["SecretID"] = new_id.into();
                changed = true;
            }
        }
        if !changed {
            continue;
        }
        let name = spec["Name"].as_str().unwrap_or(&id).to_string();
        let spec = crate::swarm::converge::typed_spec(spec)?;
        daemon
            .client
            .update_service(
                &id,
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..Default::default()
                },
                None,
            )
            .await
            .with_context(|| format!("updating service {name} to secret {new}"))?;
        moved.push(format!("{name}: {old} → {new}"));
    }
    Ok(moved)
}

/// Removes `stack`'s beamops secrets that no service references and that are not in `keep`
/// (the current versions, which a deploy about to happen will use). Returns the names removed.
pub async fn prune_unused(
    daemon: &Daemon,
    stack: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>> {
    // Only the services' current specs count: a rotation moves them to the new version and the
    // old one goes at once (stack configs keep what a previous spec names: `converge`).
    let used = crate::swarm::converge::objects_in_use(daemon, false).await?;
    let mut removed = Vec::new();
    for secret in stack_secrets(daemon, stack).await? {
        if keep.contains(&secret.name) || used.contains(&secret.name) || used.contains(&secret.id) {
            continue;
        }
        match daemon.client.delete_secret(&secret.id).await {
            Ok(()) => removed.push(secret.name),
            // Gone already, or a service started using it in the meantime: leave it.
            Err(e) if crate::docker::is_not_found(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400, ..
            }) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing unused secret {}", secret.name));
            }
        }
    }
    Ok(removed)
}
