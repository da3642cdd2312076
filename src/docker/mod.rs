//! Talking to a Docker Engine through its API (bollard), never through the docker CLI.

pub mod context;
pub mod debian;
pub mod images;
pub mod prune;
pub mod rootfs;
pub mod ssh;
pub mod target;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;
use serde::Serialize;

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
    /// How the Engine is reached.
    pub route: Route,
    /// What `raw_get` dials: the same transport bollard uses.
    dial: Dial,
}

#[derive(Debug, Clone)]
enum Dial {
    Unix(PathBuf),
    Tcp(String),
    Tls {
        address: String,
        config: Arc<rustls::ClientConfig>,
    },
}

/// How an Engine address is reached, decided without connecting (for `env` and messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum Route {
    /// A local unix socket.
    Unix { socket: String },
    /// Plain HTTP over TCP: anyone on the path can drive the Engine.
    Tcp { address: String },
    /// HTTPS with a client certificate; the server is verified against `cert_path`/ca.pem.
    Tls { address: String, cert_path: String },
    /// The remote Engine's socket forwarded by the system ssh client.
    Ssh { destination: ssh::Destination },
}

impl Route {
    /// Reads DOCKER_TLS_VERIFY, DOCKER_TLS and DOCKER_CERT_PATH for `tcp://` addresses.
    pub fn parse(host: &str) -> Result<Route> {
        Route::parse_with(host, &tls::process_env)
    }

    pub fn parse_with(host: &str, env: tls::Env) -> Result<Route> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Route::Unix {
                socket: path.to_string(),
            });
        }
        if host.starts_with("ssh://") {
            return Ok(Route::Ssh {
                destination: ssh::Destination::parse(host)?,
            });
        }
        let (address, forced_tls) = if let Some(rest) = host.strip_prefix("tcp://") {
            (rest, false)
        } else if let Some(rest) = host.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = host.strip_prefix("https://") {
            (rest, true)
        } else {
            anyhow::bail!("unsupported address (use unix://, tcp://, https:// or ssh://)");
        };
        let address = address.trim_end_matches('/').to_string();
        let port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        Ok(if forced_tls || tls::wanted(port, env) {
            Route::Tls {
                address,
                cert_path: tls::cert_path(env).display().to_string(),
            }
        } else {
            Route::Tcp { address }
        })
    }

    /// One line for reports: which transport, and where.
    pub fn describe(&self) -> String {
        match self {
            Route::Unix { socket } => format!("unix socket {socket}"),
            Route::Tcp { address } => format!("tcp {address} (plain HTTP, no TLS)"),
            Route::Tls { address, cert_path } => {
                format!("tcp+TLS {address} (client certificate and CA from {cert_path})")
            }
            Route::Ssh { destination } => {
                format!("ssh tunnel to {destination}, remote {}", ssh::REMOTE_SOCKET)
            }
        }
    }
}

/// The Engine address for an environment: its `docker_host` in beamops.yaml, else `DOCKER_HOST`,
/// else the local socket. The file wins so `--env prod` cannot reach a dev engine by accident.
/// An aws environment's is a manager's (`target.rs`); blocked when none is known.
pub fn host_for(project: &Project, environment: &str) -> Result<String> {
    target::resolve(project, environment)
}

/// Which Engine an environment reaches and how, decided without connecting.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    pub host: String,
    /// Where the address came from: `beamops.yaml`, `DOCKER_HOST`, `default`, or (an aws
    /// environment) `terraform outputs`.
    pub source: &'static str,
    /// `None` when the address cannot be used; `describe` says why.
    pub route: Option<Route>,
    pub describe: String,
}

impl Reach {
    pub fn of(configured: Option<&str>) -> Reach {
        let host = host_from(configured);
        let source = if configured.is_some() {
            "beamops.yaml"
        } else if host == DEFAULT_HOST && std::env::var("DOCKER_HOST").is_err() {
            "default"
        } else {
            "DOCKER_HOST"
        };
        Reach::with_source(host, source)
    }

    /// The environment's Engine as every command reaches it: an aws environment's manager
    /// (`target.rs`, its host keys pinned for this process), else [`Reach::of`] its docker_host.
    pub fn for_environment(project: &Project, environment: &str) -> Result<Reach> {
        let Some(env) = project.config.environment(environment) else {
            return Ok(Reach::of(None));
        };
        if env.provider == crate::config::Provider::Local {
            host_for(project, environment)?; // pins the host keys known_hosts lists
            return Ok(Reach::of(env.docker_host.as_deref()));
        }
        let (_, source) = target::address(project, environment, env)?;
        let host = host_for(project, environment)?;
        Ok(Reach::with_source(
            host,
            match source {
                target::Source::TerraformOutputs => "terraform outputs",
                _ => "beamops.yaml",
            },
        ))
    }

    /// An environment without a usable address (`env` reports why instead of failing).
    pub fn unresolved(why: &anyhow::Error) -> Reach {
        Reach {
            host: String::new(),
            source: "none",
            route: None,
            describe: format!("unusable: {why:#}"),
        }
    }

    fn with_source(host: String, source: &'static str) -> Reach {
        let (route, describe) = match Route::parse(&host) {
            Ok(route) => {
                let describe = route.describe();
                (Some(route), describe)
            }
            Err(e) => (None, format!("unusable: {e:#}")),
        };
        Reach {
            host,
            source,
            route,
            describe,
        }
    }
}

/// The address from a configured `docker_host`, else `DOCKER_HOST`, else the local socket.
pub fn host_from(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// An error with every cause in its chain: TLS and connection errors say why only deep down.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text += &format!(": {more}");
        }
        source = cause.source();
    }
    text
}

/// Connects and negotiates the API version first: the daemon may be older than bollard's default.
pub async fn connect(host: &str) -> Result<Daemon> {
    let unreachable = |why: String| {
        anyhow::Error::new(Failure::Blocked(format!(
            "no Docker Engine at {host}: {why}\n  fix: start dockerd, or point DOCKER_HOST (or the environment's docker_host in beamops.yaml) at a running engine"
        )))
    };
    let route = Route::parse(host).map_err(|e| unreachable(format!("{e:#}")))?;
    let version = bollard::API_DEFAULT_VERSION;
    let (client, dial) = match &route {
        Route::Unix { socket } => (
            Docker::connect_with_unix(socket, REQUEST_TIMEOUT_SECS, version),
            Dial::Unix(socket.into()),
        ),
        Route::Tcp { address } => (
            Docker::connect_with_http(address, REQUEST_TIMEOUT_SECS, version),
            Dial::Tcp(address.clone()),
        ),
        Route::Tls { address, cert_path } => {
            let config = tls::client_config(std::path::Path::new(cert_path))?;
            (
                tls::client(address, config.clone(), REQUEST_TIMEOUT_SECS, version),
                Dial::Tls {
                    address: address.clone(),
                    config,
                },
            )
        }
        Route::Ssh { destination } => {
            let socket = ssh::socket_for(destination)?;
            let path = socket.display().to_string();
            (
                Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, version),
                Dial::Unix(socket),
            )
        }
    };
    let client = client.map_err(|e| unreachable(chain(&e)))?;
    let client = tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version())
        .await
        .map_err(|_| unreachable(format!("no answer in {}s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| {
            let why = chain(&e);
            match &route {
                Route::Ssh { .. } => anyhow::Error::new(Failure::Blocked(format!(
                    "no Docker Engine at {host}: {why}\n  fix: the ssh login works; the remote user must be able to open {} (root, or the docker group)",
                    ssh::REMOTE_SOCKET
                ))),
                Route::Tls { cert_path, .. } => anyhow::Error::new(Failure::Blocked(format!(
                    "no Docker Engine at {host} over TLS: {why}\n  fix: check that {cert_path}/ca.pem signed the Engine's certificate (which must name the host you dial) and that the Engine trusts {cert_path}/cert.pem"
                ))),
                _ => unreachable(why),
            }
        })?;
    let api_version = client.client_version().to_string();
    Ok(Daemon {
        client,
        host: host.to_string(),
        api_version,
        route,
        dial,
    })
}

/// One GET against the Engine API over the daemon's own transport, HTTP/1.0 so the answer ends
/// with the connection and is never chunked: for the few answers bollard's types would lose.
pub async fn raw_get(daemon: &Daemon, path: &str) -> Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        request: &str,
    ) -> std::io::Result<Vec<u8>> {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer).await {
            // A TLS peer may close without close_notify; HTTP/1.0 ends with the connection anyway.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            other => {
                other?;
            }
        }
        Ok(answer)
    }
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    let answer = match &daemon.dial {
        Dial::Unix(socket) => {
            exchange(tokio::net::UnixStream::connect(socket).await?, &request).await?
        }
        Dial::Tcp(address) => {
            exchange(tokio::net::TcpStream::connect(address).await?, &request).await?
        }
        Dial::Tls { address, config } => {
            exchange(tls::stream(address, config.clone()).await?, &request).await?
        }
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the Engine's answer has no header end")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the Engine's answer has no status")?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// `raw_get` of a JSON answer: None for 404, an error naming `what` for any other non-200.
pub async fn get_json(
    daemon: &Daemon,
    path: &str,
    what: &str,
) -> Result<Option<serde_json::Value>> {
    let (status, body) = raw_get(daemon, path)
        .await
        .with_context(|| format!("{what} on {}", daemon.host))?;
    if status == 404 {
        return Ok(None);
    }
    if status != 200 {
        anyhow::bail!(
            "{what}: the Engine answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body)
        .map(Some)
        .with_context(|| format!("{what}: the answer is not JSON"))
}

/// A single-threaded runtime so synchronous commands can drive the async Engine API.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime for the Docker Engine API")
}

/// One runtime and one Engine connection for a whole run, each made on first use: a run that
/// never asks the Engine (chapter 01) opens nothing, and every check, apply and lock of a run
/// that does shares one connection (the API version is negotiated once).
#[derive(Debug)]
pub struct Connection {
    host: String,
    /// Why the environment has no address (blocked): reported by the first call that needs it.
    unresolved: Option<String>,
    runtime: std::cell::OnceCell<tokio::runtime::Runtime>,
    daemon: std::cell::OnceCell<Daemon>,
}

impl Connection {
    /// Nothing is opened until [`Connection::daemon`] or [`Connection::runtime`] is called.
    pub fn lazy(host: String) -> Connection {
        Connection {
            host,
            unresolved: None,
            runtime: std::cell::OnceCell::new(),
            daemon: std::cell::OnceCell::new(),
        }
    }

    /// The environment's Engine, by its `docker_host` (or `DOCKER_HOST`).
    /// An environment with no address yet (an aws one before chapter 06) is an error only
    /// for a run that needs its Engine.
    pub fn for_environment(project: &Project, environment: &str) -> Connection {
        match host_for(project, environment) {
            Ok(host) => Connection::lazy(host),
            Err(e) => Connection {
                // Kept as text (errors do not clone); a Blocked's own words, not its prefix.
                unresolved: Some(match e.downcast_ref::<Failure>() {
                    Some(Failure::Blocked(why)) => why.clone(),
                    _ => format!("{e:#}"),
                }),
                ..Connection::lazy(format!("(no address for {environment})"))
            },
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        if self.runtime.get().is_none() {
            let _ = self.runtime.set(runtime()?);
        }
        Ok(self.runtime.get().expect("set just above"))
    }

    /// The runtime and the connected Engine. A failed connect is not kept: the next call tries
    /// again (an Engine started meanwhile is found).
    pub fn daemon(&self) -> Result<(&tokio::runtime::Runtime, &Daemon)> {
        let rt = self.runtime()?;
        if let Some(daemon) = self.daemon.get() {
            return Ok((rt, daemon));
        }
        if let Some(why) = &self.unresolved {
            return Err(Failure::Blocked(why.clone()).into());
        }
        let daemon = rt.block_on(connect(&self.host))?;
        Ok((rt, self.daemon.get_or_init(|| daemon)))
    }

    /// Whether the connection was opened (for tests of "one connection per run").
    pub fn is_open(&self) -> bool {
        self.daemon.get().is_some()
    }
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
    #[test]
    fn a_connection_opens_on_first_use_once_and_keeps_no_failure() {
        let connection = Connection::lazy("unix:///nonexistent/docker.sock".into());
        assert!(!connection.is_open());
        let first = connection.runtime().unwrap() as *const _;
        assert_eq!(
            first,
            connection.runtime().unwrap() as *const _,
            "one runtime"
        );
        let err = connection.daemon().unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(
            !connection.is_open(),
            "a failed connect is tried again next time"
        );
        assert!(connection.daemon().is_err());
    }

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
    fn routes_follow_the_docker_cli_rules() {
        let none = |_: &str| None;
        let verify = |name: &str| match name {
            "DOCKER_TLS_VERIFY" => Some("1".to_string()),
            "DOCKER_CERT_PATH" => Some("/certs".to_string()),
            _ => None,
        };
        let route = |host: &str, env: tls::Env| Route::parse_with(host, env).unwrap();
        assert_eq!(
            route("unix:///var/run/docker.sock", &none),
            Route::Unix {
                socket: "/var/run/docker.sock".into()
            }
        );
        assert_eq!(
            route("tcp://10.0.0.5:2375", &none),
            Route::Tcp {
                address: "10.0.0.5:2375".into()
            }
        );
        assert_eq!(
            route("tcp://10.0.0.5:2375", &verify),
            Route::Tls {
                address: "10.0.0.5:2375".into(),
                cert_path: "/certs".into()
            }
        );
        let home = |name: &str| (name == "HOME").then(|| "/home/ci".to_string());
        assert_eq!(
            route("tcp://engine.internal:2376/", &home),
            Route::Tls {
                address: "engine.internal:2376".into(),
                cert_path: "/home/ci/.docker".into()
            }
        );
        assert!(matches!(
            route("ssh://deploy@engine:2222", &none),
            Route::Ssh { .. }
        ));
        assert!(Route::parse_with("npipe:////./pipe/docker", &none).is_err());
    }

    #[test]
    fn refused_tcp_port_is_blocked() {
        // Port 1 on loopback: nothing listens there, so the connect is refused at once.
        let err = block_on(connect("tcp://127.0.0.1:1")).unwrap().unwrap_err();
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(format!("{err:#}").contains("tcp://127.0.0.1:1"));
    }
}
