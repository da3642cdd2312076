//! Talking to a Docker Engine through its API (bollard), never through the docker CLI.

pub mod context;
pub mod debian;
pub mod images;
pub mod prune;
mod rootfs;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;

use crate::exit::Failure;
use crate::project::Project;

/// bollard's per-request timeout; an image import of a few hundred MB must fit in it.
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// How long to wait for a daemon to answer at all before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A connected Engine, with the address it was reached at for messages.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub client: Docker,
    pub host: String,
    /// The API version both sides agreed on.
    pub api_version: String,
}

/// The Engine address for an environment: its `docker_host` in beamops.yaml, else `DOCKER_HOST`,
/// else the local socket. The file wins so `--env prod` cannot reach a dev engine by accident.
pub fn host_for(project: &Project, environment: &str) -> String {
    project
        .config
        .environment(environment)
        .and_then(|env| env.docker_host.clone())
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// Connects and negotiates the API version first: the daemon may be older than bollard's default.
pub async fn connect(host: &str) -> Result<Daemon> {
    let unreachable = |why: String| {
        anyhow::Error::new(Failure::Blocked(format!(
            "no Docker Engine at {host}: {why}\n  fix: start dockerd, or point DOCKER_HOST (or the environment's docker_host in beamops.yaml) at a running engine"
        )))
    };
    let client = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("ssh://") {
        return Err(Failure::Blocked(format!(
            "{host}: this beamops talks to ssh:// engines only through a tunnel\n  fix: ssh -NL /tmp/docker.sock:/var/run/docker.sock HOST, then DOCKER_HOST=unix:///tmp/docker.sock"
        ))
        .into());
    } else {
        return Err(unreachable(
            "unsupported address (use unix://, tcp:// or http://)".into(),
        ));
    }
    .map_err(|e| unreachable(e.to_string()))?;
    let client = tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version())
        .await
        .map_err(|_| unreachable(format!("no answer in {}s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let api_version = client.client_version().to_string();
    Ok(Daemon {
        client,
        host: host.to_string(),
        api_version,
    })
}

/// A single-threaded runtime so synchronous commands can drive the async Engine API.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime for the Docker Engine API")
}

/// Runs one future to completion from synchronous code.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(future))
}

/// Is this bollard error the Engine saying "no such image/container"?
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_daemon_is_blocked_and_named() {
        let err = block_on(connect("unix:///nonexistent/beamops-test.sock"))
            .unwrap()
            .unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(
            format!("{err:#}").contains("unix:///nonexistent/beamops-test.sock"),
            "{err:#}"
        );
    }

    #[test]
    fn refused_tcp_port_is_blocked() {
        // Port 1 on loopback: nothing listens there, so the connect is refused at once.
        let err = block_on(connect("tcp://127.0.0.1:1")).unwrap().unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(format!("{err:#}").contains("tcp://127.0.0.1:1"));
    }
}
