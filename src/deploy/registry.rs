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
    if let (Ok(username), Ok(password)) = (
        std::env::var(USERNAME_VARIABLE),
        std::env::var(PASSWORD_VARIABLE),
    ) {
        return Ok(Some(DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(registry.to_string()),
            ..Default::default()
        }));
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
        a.iter()
            .find(|(k, _)| {
                let host = k
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                host.split('/').next() == Some(registry)
            })
            .map(|(_, v)| v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(token) = entry["identitytoken"].as_str() {
        return Ok(Some(DockerCredentials {
            identitytoken: Some(token.into()),
            serveraddress: Some(registry.into()),
            ..Default::default()
        }));
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
    Ok(Some(DockerCredentials {
        username: Some(username.into()),
        password: Some(password.into()),
        serveraddress: Some(registry.into()),
        ..Default::default()
    }))
}

/// Tags `local` as `remote` (`registry/repository:tag`) and pushes it.
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
    let mut stream = daemon
        .client
        .push_image(repo, Some(options), credentials(registry)?);
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("pushing {remote}"))?;
        if let Some(detail) = info.error_detail {
            anyhow::bail!(
                "pushing {remote}: {}\n  fix: `docker login {registry}` (or set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE})",
                detail.message.unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
