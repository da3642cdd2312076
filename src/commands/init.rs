use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use super::Global;
use crate::action::foundation::{mix_elixir_requirement, tool_versions};
use crate::cli::InitArgs;
use crate::config::CONFIG_FILE;
use crate::exit::{Exit, Failure};
use crate::output::{Report, Ui, emit};

#[derive(Serialize)]
pub struct InitReport {
    pub path: String,
    pub app: String,
    pub otp_app: String,
    pub elixir: String,
    pub otp: String,
    pub repository: String,
    /// Where each value came from, so a person can check the guesses.
    pub sources: Vec<String>,
}

impl Report for InitReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut out = format!(
            "wrote {} for {} (Elixir {} / OTP {}, image {})\n",
            self.path, self.app, self.elixir, self.otp, self.repository
        );
        for s in &self.sources {
            out += &format!("  {s}\n");
        }
        out += "next: beamops plan chapter-01\n";
        out
    }
}

/// Versions the default builder image can really be made with (Debian trixie's packages).
const FALLBACK_ELIXIR: &str = "1.18.3";
const FALLBACK_OTP: &str = "27.3.4.1";

pub fn run(global: &Global, ui: &Ui, args: &InitArgs) -> Result<Exit> {
    let dir: PathBuf = match &global.project {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    let target = dir.join(CONFIG_FILE);
    if target.exists() {
        return Err(Failure::refused(
            format!("{} already exists", target.display()),
            "  fix: edit it, or move it aside and run `beamops init` again",
        )
        .into());
    }
    let mix = std::fs::read_to_string(dir.join("mix.exs")).with_context(|| {
        format!(
            "{}: no mix.exs\n  fix: run `beamops init` in the Elixir project's root",
            dir.display()
        )
    })?;
    let mut sources = Vec::new();
    let otp_app = regex::Regex::new(r"app:\s*:([a-z_][a-z0-9_]*)")
        .expect("static regex")
        .captures(&mix)
        .map(|c| c[1].to_string())
        .context(
            "mix.exs: no `app: :name` in project/0\n  fix: add it to the project keyword list",
        )?;
    sources.push(format!("app and otp_app from mix.exs (app: :{otp_app})"));
    let name = otp_app.replace('_', "-");

    let (tv_elixir, tv_erlang) = std::fs::read_to_string(dir.join(".tool-versions"))
        .map(|t| tool_versions(&t))
        .unwrap_or((None, None));
    let elixir = match tv_elixir {
        Some(v) => {
            sources.push(format!("elixir from .tool-versions ({v})"));
            v.split("-otp-").next().unwrap_or(&v).to_string()
        }
        None => {
            let req = mix_elixir_requirement(&mix).unwrap_or_default();
            let host = host_version("elixir", &["--version"], "Elixir ")
                .map(|v| format!(" The Elixir on this machine ({v}) is not used: the release is built in the builder image, not here."))
                .unwrap_or_default();
            sources.push(format!(
                "elixir {FALLBACK_ELIXIR}: there is no .tool-versions, so beamops takes the Elixir of Debian trixie, the suite its builder and runtime images are made from (it satisfies mix.exs \"{req}\").{host} To choose another, pin it in .tool-versions (`elixir 1.18.3-otp-27`) or edit app.elixir"
            ));
            FALLBACK_ELIXIR.to_string()
        }
    };
    let otp = match tv_erlang {
        Some(v) => {
            sources.push(format!("otp from .tool-versions ({v})"));
            v
        }
        None => {
            let host = host_version(
                "erl",
                &[
                    "-noshell",
                    "-eval",
                    "io:format(\"~s\", [erlang:system_info(otp_release)]), halt().",
                ],
                "",
            )
            .map(|v| format!(" (this machine has OTP {v}; not used, as for Elixir)"))
            .unwrap_or_default();
            sources.push(format!(
                "otp {FALLBACK_OTP}: there is no .tool-versions, so beamops takes Debian trixie's Erlang/OTP{host}; pin `erlang …` in .tool-versions or edit app.otp to change it"
            ));
            FALLBACK_OTP.to_string()
        }
    };
    let repository = git_remote_repository(&dir).unwrap_or_else(|| {
        sources.push(format!(
            "image repository `{name}`: no GitHub remote named origin"
        ));
        name.clone()
    });
    if repository != name {
        sources.push(format!(
            "image repository from the git remote ({repository})"
        ));
    }
    let mut environments: Vec<String> = Vec::new();
    for env in &args.add_env {
        if env == "local" || environments.contains(env) {
            continue;
        }
        environments.push(env.clone());
    }
    if environments.is_empty() {
        sources.push(
            "environments: only `local`; add cloud ones with `beamops init --add-env staging --add-env production`, or in beamops.yaml".into(),
        );
    } else {
        sources.push(format!(
            "environments: local and {} (asked for with --add-env; provider aws, edit region and replicas)",
            environments.join(", ")
        ));
    }
    let ctx = tera::Context::from_value(json!({
        "name": name, "otp_app": otp_app, "elixir": elixir, "otp": otp,
        "repository": repository, "schema": crate::config::SCHEMA_VERSION,
        "environments": environments,
    }))?;
    let text = crate::render::render_one("init/beamops.yaml.j2", &ctx)?;
    // Never ship a file we could not read back.
    // An --add-env name that cannot be an environment is refused here, with the file's reason.
    crate::config::load_str(&target, &text, &[])
        .map_err(|e| anyhow::anyhow!("{}\n  fix: {}", e.message, e.fix))?;
    // create_new: a file that appeared since the check above is still never overwritten.
    use std::io::Write;
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    file.write_all(text.as_bytes())?;
    emit(
        &InitReport {
            path: CONFIG_FILE.to_string(),
            app: name,
            otp_app,
            elixir,
            otp,
            repository,
            sources,
        },
        ui,
    )
}

/// The version a tool on this machine reports (first word after `prefix`), if it is installed.
fn host_version(tool: &str, args: &[&str], prefix: &str) -> Option<String> {
    let out = std::process::Command::new(which::which(tool).ok()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// `git@github.com:acme/coord.git` or `https://github.com/acme/coord` → `ghcr.io/acme/coord`.
pub fn git_remote_repository(dir: &std::path::Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let remote = repo.find_remote("origin").ok()?;
    registry_for_remote(remote.url().ok()?)
}

pub fn registry_for_remote(url: &str) -> Option<String> {
    let re = regex::Regex::new(r"github\.com[:/]([^/]+)/([^/]+?)(?:\.git)?/?$").expect("static");
    let c = re.captures(url)?;
    Some(format!(
        "ghcr.io/{}/{}",
        c[1].to_ascii_lowercase(),
        c[2].to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn github_remotes_map_to_ghcr() {
        for url in [
            "git@github.com:Acme/Coord.git",
            "https://github.com/acme/coord",
            "ssh://git@github.com/acme/coord.git",
        ] {
            assert_eq!(
                super::registry_for_remote(url).as_deref(),
                Some("ghcr.io/acme/coord"),
                "{url}"
            );
        }
        assert_eq!(super::registry_for_remote("https://gitlab.com/a/b"), None);
    }
}
