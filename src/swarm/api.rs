//! The Engine calls the swarm layer makes, as one narrow trait: services, their tasks and the
//! containers and images those run, networks, configs, secrets and the swarm state. [`Daemon`]
//! is the real Engine (bollard); `swarm::fake::FakeSwarm` (tests only) is an in-memory swarm
//! that applies creates and updates the way Swarm does, so `plan`'s [`super::converge::pending`]
//! and `up`'s [`super::converge::converge`] run their real code without Docker.
//!
//! Answers the Engine gives as "not found" are `Ok(None)` / `Ok(false)` here, so the callers
//! branch on values, not on bollard's error type. Services come both raw (the Engine's JSON:
//! see `converge::current_service` for why) and typed (bollard's model, as `inspect_service`
//! returns it); an implementation must give the same service both ways.

use std::collections::HashMap;
use std::future::Future;

use anyhow::{Context, Result};
use bollard::models::{
    Config, ConfigSpec, ContainerInspectResponse, Network, NetworkCreateRequest, Secret,
    SecretSpec, Service, ServiceSpec, SwarmInfo, Task,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListConfigsOptions, ListNetworksOptions, ListSecretsOptions,
    ListServicesOptions, ListTasksOptions, UpdateServiceOptions,
};
use serde_json::Value;

use crate::docker::{Daemon, is_not_found};

/// One list filter as the Engine's `filters` query takes it: `("label", "k=v")`,
/// `("name", "x")` (a substring match, as the Engine's), `("service", "s")`.
pub type Filter<'a> = (&'a str, &'a str);

/// What removing a config or secret came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// It was gone already.
    Gone,
    /// A service uses it (the Engine answers 400).
    InUse,
}

pub trait SwarmApi {
    /// Where the Engine is, for messages.
    fn host(&self) -> &str;
    /// The swarm part of `docker info`.
    fn swarm_info(&self) -> impl Future<Output = Result<SwarmInfo>>;

    /// Services, typed; with a filter only those it matches.
    fn services(&self, filter: Option<Filter<'_>>) -> impl Future<Output = Result<Vec<Service>>>;
    /// One service, typed (bollard's model).
    fn inspect_service(&self, name: &str) -> impl Future<Output = Result<Option<Service>>>;
    /// Every service as the Engine writes it (`Spec`, `PreviousSpec`, `Version`…).
    fn raw_services(&self) -> impl Future<Output = Result<Vec<Value>>>;
    /// One service as the Engine writes it.
    fn raw_service(&self, name: &str) -> impl Future<Output = Result<Option<Value>>>;
    fn create_service(&self, spec: ServiceSpec) -> impl Future<Output = Result<()>>;
    /// An update of the service at `version` (refused when it changed since).
    fn update_service(
        &self,
        name: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<()>>;
    /// `false`: it was gone already.
    fn remove_service(&self, name: &str) -> impl Future<Output = Result<bool>>;

    /// The tasks of the services whose name starts with `service` (the Engine's filter).
    fn tasks(&self, service: &str) -> impl Future<Output = Result<Vec<Task>>>;
    /// A container on this Engine; none when it is not here (another node, or gone).
    fn container(&self, id: &str)
    -> impl Future<Output = Result<Option<ContainerInspectResponse>>>;
    /// The id of the local image a tag names; none for an image only a registry has.
    fn image_id(&self, image: &str) -> impl Future<Output = Result<Option<String>>>;

    fn networks(&self, filter: Filter<'_>) -> impl Future<Output = Result<Vec<Network>>>;
    /// Returns the new network's id.
    fn create_network(&self, request: NetworkCreateRequest)
    -> impl Future<Output = Result<String>>;

    fn configs(&self, filter: Filter<'_>) -> impl Future<Output = Result<Vec<Config>>>;
    /// Returns the new config's id.
    fn create_config(&self, spec: ConfigSpec) -> impl Future<Output = Result<String>>;
    fn remove_config(&self, id: &str) -> impl Future<Output = Result<Removal>>;

    fn secrets(&self, filter: Filter<'_>) -> impl Future<Output = Result<Vec<Secret>>>;
    /// Returns the new secret's id.
    fn create_secret(&self, spec: SecretSpec) -> impl Future<Output = Result<String>>;
    fn remove_secret(&self, id: &str) -> impl Future<Output = Result<Removal>>;
}

fn filters(filter: Filter<'_>) -> Option<HashMap<String, Vec<String>>> {
    Some(HashMap::from([(
        filter.0.to_string(),
        vec![filter.1.to_string()],
    )]))
}

fn removal(result: Result<(), bollard::errors::Error>) -> Result<Removal, bollard::errors::Error> {
    match result {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if is_not_found(&e) => Ok(Removal::Gone),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400, ..
        }) => Ok(Removal::InUse),
        Err(e) => Err(e),
    }
}

impl SwarmApi for Daemon {
    fn host(&self) -> &str {
        &self.host
    }

    async fn swarm_info(&self) -> Result<SwarmInfo> {
        let info = self
            .client
            .info()
            .await
            .with_context(|| format!("asking {} for its swarm state", self.host))?;
        Ok(info.swarm.unwrap_or_default())
    }

    async fn services(&self, filter: Option<Filter<'_>>) -> Result<Vec<Service>> {
        self.client
            .list_services(Some(ListServicesOptions {
                filters: filter.and_then(filters),
                ..Default::default()
            }))
            .await
            .context("listing services")
    }

    async fn inspect_service(&self, name: &str) -> Result<Option<Service>> {
        match self
            .client
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) => Ok(Some(service)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting service {name}")),
        }
    }

    async fn raw_services(&self) -> Result<Vec<Value>> {
        let path = format!("/v{}/services", self.api_version);
        let listed = crate::docker::get_json(self, &path, "listing services").await?;
        Ok(match listed {
            Some(Value::Array(services)) => services,
            _ => Vec::new(),
        })
    }

    async fn raw_service(&self, name: &str) -> Result<Option<Value>> {
        let path = format!("/v{}/services/{name}", self.api_version);
        crate::docker::get_json(self, &path, &format!("inspecting service {name}")).await
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<()> {
        let name = spec.name.clone().unwrap_or_default();
        self.client
            .create_service(spec, None)
            .await
            .with_context(|| format!("creating service {name}"))?;
        Ok(())
    }

    async fn update_service(&self, name: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        let options = UpdateServiceOptions {
            version: i32::try_from(version).context("service version out of range")?,
            ..Default::default()
        };
        self.client
            .update_service(name, spec, options, None)
            .await
            .with_context(|| format!("updating service {name}"))?;
        Ok(())
    }

    async fn remove_service(&self, name: &str) -> Result<bool> {
        match self.client.delete_service(name).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing service {name}")),
        }
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Task>> {
        match self
            .client
            .list_tasks(Some(ListTasksOptions {
                filters: filters(("service", service)),
            }))
            .await
        {
            Ok(tasks) => Ok(tasks),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("listing tasks of {service}")),
        }
    }

    async fn container(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.client.inspect_container(id, None).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting container {id}")),
        }
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.client.inspect_image(image).await {
            Ok(found) => Ok(found.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
        }
    }

    async fn networks(&self, filter: Filter<'_>) -> Result<Vec<Network>> {
        self.client
            .list_networks(Some(ListNetworksOptions {
                filters: filters(filter),
            }))
            .await
            .with_context(|| format!("listing networks ({}={})", filter.0, filter.1))
    }

    async fn create_network(&self, request: NetworkCreateRequest) -> Result<String> {
        let name = request.name.clone();
        Ok(self
            .client
            .create_network(request)
            .await
            .with_context(|| format!("creating overlay network {name}"))?
            .id)
    }

    async fn configs(&self, filter: Filter<'_>) -> Result<Vec<Config>> {
        self.client
            .list_configs(Some(ListConfigsOptions {
                filters: filters(filter),
            }))
            .await
            .with_context(|| format!("listing configs ({}={})", filter.0, filter.1))
    }

    async fn create_config(&self, spec: ConfigSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_default();
        Ok(self
            .client
            .create_config(spec)
            .await
            .with_context(|| format!("creating config {name}"))?
            .id)
    }

    async fn remove_config(&self, id: &str) -> Result<Removal> {
        removal(self.client.delete_config(id).await)
            .with_context(|| format!("removing config {id}"))
    }

    async fn secrets(&self, filter: Filter<'_>) -> Result<Vec<Secret>> {
        self.client
            .list_secrets(Some(ListSecretsOptions {
                filters: filters(filter),
            }))
            .await
            .with_context(|| format!("listing secrets ({}={})", filter.0, filter.1))
    }

    async fn create_secret(&self, spec: SecretSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_default();
        Ok(self
            .client
            .create_secret(spec)
            .await
            .with_context(|| format!("creating secret {name}"))?
            .id)
    }

    async fn remove_secret(&self, id: &str) -> Result<Removal> {
        removal(self.client.delete_secret(id).await)
            .with_context(|| format!("removing secret {id}"))
    }
}
