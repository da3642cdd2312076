//! Chapter 01's project checks.

use anyhow::Result;

use super::{Action, ActionContext, Applied, Check};
use crate::config::{requirement_matches, version_prefix_matches};

fn check_only(id: &str) -> Result<Applied> {
    anyhow::bail!("{id} is a check; beamops does not change this for you (see the fix above)")
}

pub struct GitRepository;

impl Action for GitRepository {
    fn id(&self) -> String {
        "git-repository".into()
    }
    fn describe(&self) -> String {
        "the project is a git repository".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        Ok(match cx.project.git() {
            Some(git) => Check::Satisfied(format!(
                "repository at {}",
                git.workdir
                    .as_deref()
                    .map(|w| { pathdiff(&cx.project.root, w) })
                    .unwrap_or_else(|| "(bare)".into())
            )),
            None => Check::Failed(
                "not inside a git repository; fix: run `git init` in the project root".into(),
            ),
        })
    }
    fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
        check_only("git-repository")
    }
}

/// How to reach `to` from `from`, for messages that must not print absolute paths.
fn pathdiff(from: &std::path::Path, to: &std::path::Path) -> String {
    let from = from.canonicalize().unwrap_or(from.to_path_buf());
    let to = to.canonicalize().unwrap_or(to.to_path_buf());
    if from == to {
        return ".".into();
    }
    let mut up = 0;
    let mut base = from.as_path();
    while !to.starts_with(base) {
        match base.parent() {
            Some(p) => {
                base = p;
                up += 1;
            }
            None => return to.display().to_string(),
        }
    }
    let mut parts: Vec<String> = vec!["..".into(); up];
    if let Ok(rest) = to.strip_prefix(base)
        && !rest.as_os_str().is_empty()
    {
        parts.push(rest.display().to_string());
    }
    parts.join("/")
}

pub struct MixProject;

impl Action for MixProject {
    fn id(&self) -> String {
        "mix-project".into()
    }
    fn describe(&self) -> String {
        "mix.exs exists".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        Ok(if cx.path("mix.exs").is_file() {
            Check::Satisfied("mix.exs found".into())
        } else {
            Check::Failed(
                "no mix.exs in the project root; fix: point --project at the Elixir project (the directory with mix.exs)".into(),
            )
        })
    }
    fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
        check_only("mix-project")
    }
}

pub struct VersionsAgree;

/// `.tool-versions` as asdf/mise write it: `elixir 1.18.3-otp-27`, `erlang 27.3.4.1`.
pub fn tool_versions(text: &str) -> (Option<String>, Option<String>) {
    let mut elixir = None;
    let mut erlang = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("elixir"), Some(v)) => elixir = Some(v.to_string()),
            (Some("erlang"), Some(v)) => erlang = Some(v.to_string()),
            _ => {}
        }
    }
    (elixir, erlang)
}

/// The `elixir: "~> 1.14"` requirement in mix.exs.
/// By hand: compiling a regex for it was a tenth of `plan chapter-01`.
pub fn mix_elixir_requirement(mix: &str) -> Option<String> {
    mix.match_indices("elixir:").find_map(|(at, key)| {
        let value = mix[at + key.len()..].trim_start().strip_prefix('"')?;
        let end = value.find('"')?;
        (end > 0).then(|| value[..end].to_string())
    })
}

/// What `.tool-versions` pins now, for asdf/mise and the person's shell: the file on disk,
/// unless it is beamops' own unedited rendering (which this run rewrites from beamops.yaml).
/// Comparing the rendering alone would always agree: chapter 01 renders it from the config.
fn pinned_tool_versions(cx: &ActionContext) -> Option<String> {
    let path = ".tool-versions";
    let Ok(on_disk) = std::fs::read(cx.path(path)) else {
        return cx.file(path);
    };
    let ours = crate::lockfile::LockFile::read(&cx.project.root)
        .ok()
        .and_then(|lock| lock.files.get(path).cloned())
        .is_some_and(|rec| rec.sha256 == crate::fsutil::sha256_hex(&on_disk));
    if ours {
        cx.file(path)
    } else {
        Some(String::from_utf8_lossy(&on_disk).into_owned())
    }
}

impl Action for VersionsAgree {
    fn id(&self) -> String {
        "versions-agree".into()
    }
    fn describe(&self) -> String {
        "Elixir/OTP versions in mix.exs, .tool-versions and beamops.yaml agree".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let app = &cx.project.config.app;
        let mut problems = Vec::new();
        if let Some(mix) = cx.file("mix.exs") {
            match mix_elixir_requirement(&mix) {
                Some(req) if !requirement_matches(&req, &app.elixir) => problems.push(format!(
                    "mix.exs requires Elixir \"{req}\" but beamops.yaml app.elixir is {}; fix: change one of them",
                    app.elixir
                )),
                _ => {}
            }
        }
        if let Some(tv) = pinned_tool_versions(cx) {
            let (elixir, erlang) = tool_versions(&tv);
            if let Some(e) = elixir.filter(|e| !version_prefix_matches(&app.elixir, e)) {
                problems.push(format!(
                    ".tool-versions pins elixir {e} but beamops.yaml app.elixir is {}; fix: make them equal (edit app.elixir, or let beamops write .tool-versions with `beamops up 01 --force`)",
                    app.elixir
                ));
            }
            if let Some(o) = erlang.filter(|o| !version_prefix_matches(&app.otp, o)) {
                problems.push(format!(
                    ".tool-versions pins erlang {o} but beamops.yaml app.otp is {}; fix: make them equal (edit app.otp, or let beamops write .tool-versions with `beamops up 01 --force`)",
                    app.otp
                ));
            }
        }
        Ok(if problems.is_empty() {
            Check::Satisfied(format!("Elixir {} / OTP {}", app.elixir, app.otp))
        } else {
            Check::Failed(problems.join("; "))
        })
    }
    fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
        check_only("versions-agree")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tool_versions_and_mix_requirements() {
        let (e, o) = tool_versions("erlang 27.3.4.1\nelixir 1.18.3-otp-27\n");
        assert_eq!(e.as_deref(), Some("1.18.3-otp-27"));
        assert_eq!(o.as_deref(), Some("27.3.4.1"));
        assert_eq!(
            mix_elixir_requirement("  elixir: \"~> 1.14\",").as_deref(),
            Some("~> 1.14")
        );
        // The first `elixir:` that has a quoted requirement, as the regex it replaces read it.
        for (mix, want) in [
            ("elixir:\n      \"== 1.18.3\"", Some("== 1.18.3")),
            ("# elixir: none\n  elixir: \"~> 1.17\"", Some("~> 1.17")),
            ("elixir: \"\" elixir: \">= 1.0\"", Some(">= 1.0")),
            ("elixir: @version", None),
            ("elixir: \"~> 1.14", None),
        ] {
            assert_eq!(mix_elixir_requirement(mix).as_deref(), want, "{mix}");
        }
    }
}
