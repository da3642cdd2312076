//! `beamops scale`: a service's replicas changed through the API, then the wait until they run.
//!
//! Not durable: the next `up chapter-08` or `deploy` converges the service back to the stack
//! file, whose replicas come from `environments.<env>.replicas` — the setting to change for good.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::query_parameters::UpdateServiceOptions;
use serde::Serialize;

use super::{converge, ps};
use crate::docker::Daemon;
use crate::output::Ui;

#[derive(Debug, Clone, Serialize)]
pub struct Scaled {
    pub service: String,
    pub from: u64,
    pub to: u64,
    /// Seconds until every wanted task ran healthy.
    pub seconds: f64,
}

pub async fn scale(
    daemon: &Daemon,
    stack: &str,
    service: &str,
    replicas: u64,
    ui: &Ui,
    timeout: Duration,
) -> Result<Scaled> {
    let name = ps::service_name(stack, service);
    let Some((version, mut spec)) = converge::current_service(daemon, &name).await? else {
        bail!(
            "no service {name} on {}\n  fix: beamops up chapter-08 (or beamops deploy) creates it",
            daemon.host
        );
    };
    let Some(current) = spec["Mode"]["Replicated"]["Replicas"].as_u64() else {
        bail!("{name} is not a replicated service: it runs one task per node and cannot be scaled");
    };
    let started = Instant::now();
    if current != replicas {
        spec["Mode"]["Replicated"]["Replicas"] = replicas.into();
        let spec = converge::typed_spec(spec)?;
        daemon
            .client
            .update_service(
                &name,
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).context("service version out of range")?,
                    ..Default::default()
                },
                None,
            )
            .await
            .with_context(|| format!("scaling {name} to {replicas}"))?;
    }
    converge::wait(daemon, std::slice::from_ref(&name), ui, timeout).await?;
    Ok(Scaled {
        service: name,
        from: current,
        to: replicas,
        seconds: started.elapsed().as_secs_f64(),
    })
}
