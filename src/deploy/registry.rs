//! Pushing the release image when the environment names a registry (`image.registry`).
//!
//! Credentials come from the environment (`BEAMOPS_REGISTRY_USERNAME`/`_PASSWORD`) or from the
//! Docker config file's `auths` (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`),
//! as `docker login` writes them — never from the command line, where every process could read
//! them. Credential helpers (`credsStore`) are not consulted.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptionsBuilder};
use futures_util::StreamExt;

use crate::docker::{Daemon, images};
use crate::exit::Failure;

pub const USERNAME_VARIABLE: &str = "BEAMOPS_REGISTRY_USERNAME";
pub const PASSWORD_VARIABLE: &str = "BEAMOPS_REGISTRY_PASSWORD";

fn docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// Credentials for `registry`, or none (an open registry, e.g. a local one for tests).
pub fn credentials(registry: &str) -> Result<Option<DockerCredentials>> {
    Ok(found_credentials(registry)?.map(|(c, _)| c))
}

/// Credentials for `registry` and where they came from (a variable pair or a file's `auths`
/// entry), for an error that points at the right place to fix. Never the values.
fn found_credentials(registry: &str) -> Result<Option<(DockerCredentials, String)>> {
    if let (Ok(username), Ok(password)) = (
        std::env::var(USERNAME_VARIABLE),
        std::env::var(PASSWORD_VARIABLE),
    ) {
        return Ok(Some((
            DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            },
            format!("{USERNAME_VARIABLE}/{PASSWORD_VARIABLE}"),
        )));
    }
    let Some(path) = docker_config() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let auths = config["auths"].as_object();
    let entry = auths.and_then(|a| {
        a.iter().find(|(k, _)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            host.split('/').next() == Some(registry)
        })
    });
    let Some((key, entry)) = entry else {
        return Ok(None);
    };
    let source = format!("{} (auths.\"{key}\")", path.display());
    if let Some(token) = entry["identitytoken"].as_str() {
        return Ok(Some((
            DockerCredentials {
                identitytoken: Some(token.into()),
                serveraddress: Some(registry.into()),
                ..Default::default()
            },
            source,
        )));
    }
    let Some(auth) = entry["auth"].as_str() else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .with_context(|| {
            format!(
                "{}: the auth entry for {registry} is not base64 of user:password",
                path.display()
            )
        })?;
    let (username, password) = decoded.split_once(':').with_context(|| {
        format!(
            "{}: the auth entry for {registry} is not user:password",
            path.display()
        )
    })?;
    Ok(Some((
        DockerCredentials {
            username: Some(username.into()),
            password: Some(password.into()),
            serveraddress: Some(registry.into()),
            ..Default::default()
        },
        source,
    )))
}

/// The registry refused the credentials (or wanted some): the daemon's wording, registry 2.x
/// and Docker Hub alike.
fn is_auth_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "requested access to the resource is denied",
        "incorrect username or password",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// Tags `local` as `remote` (`registry/repository:tag`) and pushes it.
///
/// A rejected or missing credential is [`Failure::Blocked`] (exit 3): nothing was changed, and
/// the same command succeeds once the credential is fixed. Anything else is an error (exit 1).
pub async fn push(daemon: &Daemon, local: &str, remote: &str, registry: &str) -> Result<()> {
    let (repo, tag) = images::split_reference(remote);
    daemon
        .client
        .tag_image(
            local,
            Some(TagImageOptionsBuilder::new().repo(repo).tag(tag).build()),
        )
        .await
        .with_context(|| format!("tagging {local} as {remote}"))?;
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let found = found_credentials(registry)?;
    let source = found.as_ref().map(|(_, s)| s.clone());
    let mut stream = daemon
        .client
        .push_image(repo, Some(options), found.map(|(c, _)| c));
    while let Some(item) = stream.next().await {
        // The daemon reports a failed push in the stream: as an error message bollard turns
        // into `DockerStreamError`, or in a progress item's `error_detail`.
        let message = match item {
            Ok(info) => match info.error_detail {
                Some(detail) => detail.message.unwrap_or_default(),
                None => continue,
            },
            Err(bollard::errors::Error::DockerStreamError { error }) => error,
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => message,
            Err(e) => return Err(e).with_context(|| format!("pushing {remote}")),
        };
        if is_auth_error(&message) {
            let used = match &source {
                Some(source) => format!("with the credentials from {source}"),
                None => format!(
                    "with no credentials: neither {USERNAME_VARIABLE}/{PASSWORD_VARIABLE} nor an `auths` entry in {}",
                    docker_config()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "$DOCKER_CONFIG/config.json".into())
                ),
            };
            return Err(Failure::Blocked(format!(
                "registry {registry} refused the push of {remote} {used}: {message}\n  fix: `docker login {registry}` (or set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}), then deploy again"
            ))
            .into());
        }
        anyhow::bail!("pushing {remote} to {registry}: {message}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_told_from_other_push_failures() {
        // The daemon's words for registry 2.x with htpasswd, for no credentials at all, and
        // for Docker Hub; an unreachable registry is not a credential problem.
        assert!(is_auth_error("unauthorized: authentication required"));
        assert!(is_auth_error("no basic auth credentials"));
        assert!(is_auth_error(
            "denied: requested access to the resource is denied"
        ));
        assert!(!is_auth_error(
            "open /var/lib/docker-registry/x: permission denied"
        ));
        assert!(!is_auth_error(
            "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
        ));
    }

    #[test]
    fn auth_from_the_docker_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        // SAFETY: this unit test is the only one in the crate touching DOCKER_CONFIG.
        unsafe { std::env::set_var("DOCKER_CONFIG", dir.path()) };
        let found = credentials("reg.example:5000").unwrap().unwrap();
        assert_eq!(found.username.as_deref(), Some("ci"));
        assert_eq!(found.password.as_deref(), Some("s3cret"));
        assert!(credentials("other.example").unwrap().is_none());
        unsafe { std::env::remove_var("DOCKER_CONFIG") };
    }
}
