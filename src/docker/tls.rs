//! `tcp://` engines behind TLS, with the docker CLI's files and rules: DOCKER_CERT_PATH holds
//! ca.pem (the only authority the server's certificate is checked against), cert.pem and key.pem
//! (the client's certificate and key, which the Engine checks in turn).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::exit::Failure;

pub const CA: &str = "ca.pem";
pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";

/// An environment variable's value; empty counts as unset, as in the docker CLI.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The directory the docker CLI reads: DOCKER_CERT_PATH, else its config directory.
pub fn cert_path(env: Env) -> PathBuf {
    if let Some(path) = env("DOCKER_CERT_PATH") {
        return PathBuf::from(path);
    }
    if let Some(config) = env("DOCKER_CONFIG") {
        return PathBuf::from(config);
    }
    env("HOME")
        .map(|home| PathBuf::from(home).join(".docker"))
        .unwrap_or_else(|| PathBuf::from(".docker"))
}

/// Whether a `tcp://` address is spoken to over TLS. Like the docker CLI, any non-empty
/// DOCKER_TLS_VERIFY (or DOCKER_TLS) turns TLS on; port 2376, the Engine's TLS port by
/// convention, does too so a TLS daemon is never sent plain HTTP.
pub fn wanted(port: Option<u16>, env: Env) -> bool {
    env("DOCKER_TLS_VERIFY").is_some() || env("DOCKER_TLS").is_some() || port == Some(2376)
}

/// The client configuration from a certificate directory. The server is always verified:
/// beamops has no "TLS without verification" mode, unlike `docker --tls`.
pub fn client_config(dir: &Path) -> Result<Arc<ClientConfig>> {
    let missing = |file: &str, why: String| {
        anyhow::Error::new(Failure::Blocked(format!(
            "TLS to the Docker Engine needs {} ({why})\n  fix: point DOCKER_CERT_PATH at the directory holding {CA}, {CERT} and {KEY} (the files `docker --tlsverify` uses)",
            dir.join(file).display()
        )))
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::pem_file_iter(dir.join(CA))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| missing(CA, e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(ca);
    if added == 0 {
        return Err(missing(CA, "no certificate in it".into()));
    }
    let chain = CertificateDer::pem_file_iter(dir.join(CERT))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| missing(CERT, e.to_string()))?;
    if chain.is_empty() {
        return Err(missing(CERT, "no certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(dir.join(KEY)).map_err(|e| missing(KEY, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .with_context(|| {
            format!(
                "{} and {} do not make a client identity",
                dir.join(CERT).display(),
                dir.join(KEY).display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The body type bollard sends; named through the request type because bollard keeps it private.
trait RequestBody {
    type Body;
}
impl<B> RequestBody for http::Request<B> {
    type Body = B;
}
type Body = <BollardRequest as RequestBody>::Body;

/// A bollard client speaking HTTPS to `address` (host:port) with our configuration.
pub fn client(
    address: &str,
    config: Arc<ClientConfig>,
    timeout: u64,
    version: &bollard::ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, config));
    // No idle pool: beamops drives the API from short-lived runtimes, and a pooled connection
    // would outlive the runtime that owns its I/O.
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https);
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = client.clone();
            async move { Ok(client.request(request).await?) }
        },
        Some(format!("https://{address}")),
        timeout,
        version,
    )
}

/// The name the server's certificate must carry: the address without its port.
pub fn server_name(address: &str) -> Result<ServerName<'static>> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .with_context(|| format!("{host} is not a host name or address a certificate can name"))
}

/// One TLS connection to `address`, for requests bollard cannot make (see `super::raw_get`).
pub async fn stream(
    address: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = server_name(address)?;
    let tcp = tokio::net::TcpStream::connect(address).await?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}
