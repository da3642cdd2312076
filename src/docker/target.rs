//! Which Engine an environment's commands talk to. A local-provider environment: its
//! `docker_host`, else `DOCKER_HOST`, else the local socket. An aws environment: a swarm manager,
//! by its `docker_host`, else the first manager's public address from chapter 06's recorded
//! Terraform outputs, logged in as `ssh_user` — never `DOCKER_HOST` or the local socket, so
//! `--env production` cannot reach a laptop's Engine. An `ssh://` address with `known_hosts` in
//! beamops.yaml gets those host keys pinned; an aws environment's must be pinned.

use anyhow::Result;

use super::{Route, host_from, ssh};
use crate::action::record::TerraformRecord;
use crate::config::{Environment, Provider};
use crate::exit::Failure;
use crate::project::Project;
use crate::state::State;

/// Chapter 06's Terraform output with the managers' public addresses (`managers.tf`).
pub const MANAGERS_OUTPUT: &str = "manager_public_ips";
/// The login of chapter 06's Debian image, which `setup.sh` puts in the `docker` group.
pub const DEFAULT_SSH_USER: &str = "admin";

/// Where an environment's address came from, for `env` and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `docker_host` in beamops.yaml.
    Config,
    /// Chapter 06's recorded `manager_public_ips`.
    TerraformOutputs,
    /// `DOCKER_HOST`, or the local socket.
    Process,
}

/// The environment's Engine address, its host keys pinned when it is `ssh://`. Errors are
/// blocked (exit 3) and name the fix: an aws environment with no manager address known, or a
/// manager whose host key beamops would have to trust on first use.
pub fn resolve(project: &Project, environment: &str) -> Result<String> {
    let Some(env) = project.config.environment(environment) else {
        return Ok(host_from(None));
    };
    let (host, _) = address(project, environment, env)?;
    if let Ok(Route::Ssh { destination }) = Route::parse(&host) {
        if !env.known_hosts.is_empty() {
            ssh::pin_host_keys(&destination, &env.known_hosts);
        } else if env.provider == Provider::Aws {
            return Err(Failure::Blocked(format!(
                "the host key of ssh://{destination} (the manager of aws environment `{environment}`) is not pinned: beamops never trusts a host key on first use\n  fix: add the manager's key to environments.{environment}.known_hosts in beamops.yaml (a line of `ssh-keyscan -t ed25519 {host}`, checked against the fingerprint the instance printed to its console: `aws ec2 get-console-output`)",
                host = destination.host
            ))
            .into());
        }
    }
    Ok(host)
}

/// The address and where it came from, without pinning or connecting.
pub fn address(
    project: &Project,
    environment: &str,
    env: &Environment,
) -> Result<(String, Source)> {
    match (env.provider, &env.docker_host) {
        (_, Some(host)) => Ok((host.clone(), Source::Config)),
        (Provider::Local, None) => Ok((host_from(None), Source::Process)),
        (Provider::Aws, None) => {
            let state = State::read(&project.state_dir())?;
            let manager = state
                .find_record_where::<TerraformRecord>(environment, |r| first_manager(r).is_some())?
                .as_ref()
                .and_then(first_manager);
            match manager {
                Some(ip) => {
                    let user = env.ssh_user.as_deref().unwrap_or(DEFAULT_SSH_USER);
                    Ok((format!("ssh://{user}@{ip}"), Source::TerraformOutputs))
                }
                None => Err(Failure::Blocked(format!(
                    "aws environment `{environment}` has no manager address: neither environments.{environment}.docker_host nor chapter 06's Terraform output `{MANAGERS_OUTPUT}` (in .beamops/state.json)\n  fix: `beamops up chapter-06 --env {environment}` applies the managers and records their addresses, or set environments.{environment}.docker_host: ssh://{DEFAULT_SSH_USER}@<manager address>"
                ))
                .into()),
            }
        }
    }
}

/// The first manager initialised the swarm (chapter 06's user data): the one to deploy through.
fn first_manager(record: &TerraformRecord) -> Option<String> {
    record
        .outputs
        .get(MANAGERS_OUTPUT)?
        .as_array()?
        .iter()
        .find_map(|ip| {
            ip.as_str()
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_manager_with_an_address_is_the_one() {
        let record = |v: serde_json::Value| TerraformRecord {
            root: "terraform/prod".into(),
            outputs: serde_json::from_value(serde_json::json!({ MANAGERS_OUTPUT: v })).unwrap(),
        };
        assert_eq!(
            first_manager(&record(serde_json::json!(["203.0.113.7", "203.0.113.8"]))),
            Some("203.0.113.7".into())
        );
        // Not yet known (an instance without a public address), or not an address at all: an
        // output never becomes an ssh option.
        assert_eq!(first_manager(&record(serde_json::json!([]))), None);
        assert_eq!(
            first_manager(&record(serde_json::json!(["-oProxyCommand=x"]))),
            None
        );
        assert_eq!(
            first_manager(&record(serde_json::json!("203.0.113.7"))),
            None
        );
    }
}
