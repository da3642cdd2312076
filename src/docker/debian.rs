//! Which Debian to build from: the mirror the host's apt already trusts, and the suite an image
//! name asks for.

use std::path::Path;

use anyhow::{Result, bail};

use crate::exit::Failure;

/// Debian releases beamops knows how to name; their package names differ (libssl3 → libssl3t64).
pub const SUITES: &[&str] = &["bookworm", "trixie", "forky"];

/// What each suite shipped when beamops was written: only a hint in a refusal, never a label.
/// The versions that decide are always read from the suite's own package index.
pub fn known_versions(suite: &str) -> Option<&'static str> {
    match suite {
        "bookworm" => Some("Elixir 1.14 / OTP 25, PostgreSQL 15"),
        "trixie" => Some("Elixir 1.18.3 / OTP 27.3.4.1, PostgreSQL 17"),
        _ => None,
    }
}

/// The suite named in an image reference: `…-debian-trixie-…`, `debian:bookworm-slim`,
/// `postgres:17.12-trixie`.
pub fn suite_of(image: &str) -> Option<&'static str> {
    let tag = image.rsplit_once(':').map_or(image, |(_, tag)| tag);
    let words: Vec<&str> = tag.split(['-', '.', '_']).collect();
    SUITES.iter().copied().find(|suite| words.contains(suite))
}

/// The Debian archive and, when the host uses one, its security archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub archive: String,
    pub security: Option<String>,
}

impl Mirror {
    /// `sources.list` lines for `suite` inside a rootfs.
    pub fn sources_list(&self, suite: &str) -> String {
        let mut out = format!(
            "deb {0} {suite} main\ndeb {0} {suite}-updates main\n",
            self.archive
        );
        if let Some(security) = &self.security {
            out += &format!("deb {security} {suite}-security main\n");
        }
        out
    }

    /// A short stable key for caches: the rootfs depends on the mirror as much as on the suite.
    pub fn cache_key(&self, suite: &str) -> String {
        let digest = crate::fsutil::sha256_hex(self.sources_list(suite).as_bytes());
        format!("{suite}-{}", &digest[..12])
    }
}

/// Reads the host's apt sources (`*.sources` deb822 `URIs:` lines, then one-line `deb` entries).
/// `BEAMOPS_DEBIAN_MIRROR` overrides, for hosts whose apt points elsewhere (a proxy, a CD).
pub fn host_mirror(apt_dir: &Path) -> Result<Mirror> {
    if let Ok(uri) = std::env::var("BEAMOPS_DEBIAN_MIRROR")
        && !uri.trim().is_empty()
    {
        return Ok(Mirror {
            archive: uri.trim().trim_end_matches('/').to_string(),
            security: None,
        });
    }
    let mut uris = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => uris.extend(deb822_uris(&text)),
            Some("list") => uris.extend(one_line_uris(&text)),
            _ => {}
        }
    }
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        uris.extend(one_line_uris(&text));
    }
    mirror_from(&uris).ok_or_else(|| {
        Failure::Blocked(format!(
            "no Debian archive in {0}/sources.list or {0}/sources.list.d/*.sources\n  fix: add one to apt, or set BEAMOPS_DEBIAN_MIRROR to a Debian mirror URL",
            apt_dir.display()
        ))
        .into()
    })
}

fn mirror_from(uris: &[String]) -> Option<Mirror> {
    let is_security = |u: &&String| u.trim_end_matches('/').ends_with("-security");
    let archive = uris
        .iter()
        .find(|u| !is_security(u) && u.trim_end_matches('/').ends_with("/debian"))
        .or_else(|| uris.iter().find(|u| !is_security(u)))?;
    Some(Mirror {
        archive: archive.trim_end_matches('/').to_string(),
        security: uris
            .iter()
            .find(is_security)
            .map(|u| u.trim_end_matches('/').to_string()),
    })
}

/// `URIs:` values of the stanzas that are enabled and of type `deb`.
pub fn deb822_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let types = field("Types").unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        if enabled
            && types.split_whitespace().any(|t| t == "deb")
            && let Some(uris) = field("URIs")
        {
            out.extend(
                uris.split_whitespace()
                    .filter(|u| u.starts_with("http"))
                    .map(String::from),
            );
        }
    }
    out
}

/// URIs of `deb [options] URI suite components` lines.
pub fn one_line_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.trim().strip_prefix("deb ")?.split_whitespace();
            let mut word = words.next()?;
            if word.starts_with('[') {
                while !word.ends_with(']') {
                    word = words.next()?;
                }
                word = words.next()?;
            }
            word.starts_with("http").then(|| word.to_string())
        })
        .collect()
}

/// The upstream version in a Debian version: `1:27.3.4.1+dfsg-1+deb13u4` → `27.3.4.1`,
/// `1.18.3.dfsg-1` → `1.18.3`, `17.12-0+deb13u1` → `17.12`.
pub fn upstream_version(debian: &str) -> String {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let upstream = no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u);
    upstream
        .split(['+', '~'])
        .next()
        .unwrap_or(upstream)
        .split('.')
        .take_while(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Debian renamed the 64-bit-time libraries in trixie; the runtime needs the right name.
pub fn libssl_package(suite: &str) -> &'static str {
    match suite {
        "bookworm" => "libssl3",
        _ => "libssl3t64",
    }
}

pub fn require_suite(image: &str) -> Result<&'static str> {
    match suite_of(image) {
        Some(suite) => Ok(suite),
        None => bail!(
            "{image}: no Debian suite in the image name\n  fix: name one of {} in the tag (e.g. debian:trixie-slim, postgres:17.12-trixie)",
            SUITES.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_come_from_the_tag() {
        assert_eq!(
            suite_of("hexpm/elixir:1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim"),
            Some("trixie")
        );
        assert_eq!(suite_of("debian:bookworm-slim"), Some("bookworm"));
        assert_eq!(suite_of("postgres:17.12-trixie"), Some("trixie"));
        assert_eq!(suite_of("registry:5000/debian:trixie"), Some("trixie"));
        assert_eq!(suite_of("postgres:17"), None);
        assert_eq!(suite_of("trixie/postgres:17"), None);
    }

    #[test]
    fn deb822_and_one_line_sources() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb-src\nURIs: http://src.example/debian\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb\nEnabled: no\nURIs: http://off.example/debian\n";
        assert_eq!(
            deb822_uris(text),
            vec![
                "http://mirror.example/debian",
                "http://mirror.example/debian-security"
            ]
        );
        let list = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main\ndeb-src http://b.example/debian bookworm main\ndeb http://a.example/debian-security/ bookworm-security main\n";
        let uris = one_line_uris(list);
        assert_eq!(
            mirror_from(&uris),
            Some(Mirror {
                archive: "http://a.example/debian".into(),
                security: Some("http://a.example/debian-security".into()),
            })
        );
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("1:27.3.4.1+dfsg-1+deb13u4"), "27.3.4.1");
        assert_eq!(upstream_version("1.18.3.dfsg-1"), "1.18.3");
        assert_eq!(upstream_version("17.12-0+deb13u1"), "17.12");
        assert_eq!(upstream_version("1.14.0.dfsg-2"), "1.14.0");
    }

    #[test]
    fn sources_list_names_updates_and_security() {
        let m = Mirror {
            archive: "http://m.example/debian".into(),
            security: Some("http://m.example/debian-security".into()),
        };
        let list = m.sources_list("trixie");
        assert!(list.contains("deb http://m.example/debian trixie main\n"));
        assert!(list.contains("trixie-updates"));
        assert!(list.contains("deb http://m.example/debian-security trixie-security main"));
        assert_ne!(m.cache_key("trixie"), m.cache_key("bookworm"));
    }
}
