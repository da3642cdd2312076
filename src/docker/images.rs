//! The base images the project's Dockerfiles and stacks name: present, pulled, or built from
//! Debian's own packages when no registry answers. An image is only ever tagged with versions it
//! really contains.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use regex::Regex;
use serde::Serialize;

use super::Daemon;
use super::debian::{self, Mirror};
use super::rootfs::{self, Rootfs};
use crate::config::Config;
use crate::output::Ui;
use crate::project::Project;

/// A registry that answers at all answers within this; offline, the daemon fails at once.
const PULL_TIMEOUT: Duration = Duration::from_secs(15);
const ENTRYPOINT: &str = "images/postgres/docker-entrypoint.sh";
const PGDATA: &str = "/var/lib/postgresql/data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Compiles the release: Elixir, Erlang/OTP with headers, git.
    Builder,
    /// Runs the release: the libraries ERTS links, CA certificates, curl for health checks.
    Runner,
    /// The database the stacks run, with the official image's entrypoint contract.
    Postgres,
    /// Chapter 11's metrics store, with `promtool` (trixie packages it apart).
    Prometheus,
    /// Chapter 11's alert router, with `amtool`.
    Alertmanager,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Builder => "builder",
            Role::Runner => "runner",
            Role::Postgres => "postgres",
            Role::Prometheus => "prometheus",
            Role::Alertmanager => "alertmanager",
        })
    }
}

/// One base image and the versions its name promises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseImage {
    pub role: Role,
    pub reference: String,
    pub suite: &'static str,
    /// Versions read from the tag (`elixir`, `otp`, `postgres`); the image must contain them.
    pub promised: BTreeMap<String, String>,
}

/// The images the configuration names, in build order: the builder first, so a version mismatch
/// stops the run before anything is built.
pub fn base_images(config: &Config) -> Result<Vec<BaseImage>> {
    let builder = config.builder_image();
    let tag = tag_of(&builder);
    let hexpm = Regex::new(r"^(\d+(?:\.\d+)*)-erlang-(\d+(?:\.\d+)*)-").expect("static regex");
    let Some(versions) = hexpm.captures(tag) else {
        bail!(
            "image.builder {builder}: the tag names no Elixir/OTP versions\n  fix: use a hexpm-style tag, ELIXIR-erlang-OTP-debian-SUITE-DATE-slim (e.g. 1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim)"
        );
    };
    let postgres = config.postgres_image();
    let Some(pg_version) = Regex::new(r"^(\d+(?:\.\d+)?)")
        .expect("static regex")
        .captures(tag_of(&postgres))
    else {
        bail!(
            "image.postgres {postgres}: the tag names no PostgreSQL version\n  fix: use MAJOR.MINOR-SUITE, e.g. postgres:17.12-trixie"
        );
    };
    let runner = config.runner_image();
    Ok(vec![
        BaseImage {
            role: Role::Builder,
            suite: debian::require_suite(&builder)?,
            promised: BTreeMap::from([
                ("elixir".to_string(), versions[1].to_string()),
                ("otp".to_string(), versions[2].to_string()),
            ]),
            reference: builder,
        },
        BaseImage {
            role: Role::Runner,
            suite: debian::require_suite(&runner)?,
            promised: BTreeMap::new(),
            reference: runner,
        },
        BaseImage {
            role: Role::Postgres,
            suite: debian::require_suite(&postgres)?,
            promised: BTreeMap::from([("postgres".to_string(), pg_version[1].to_string())]),
            reference: postgres,
        },
    ])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The tag was already on the Engine.
    Present,
    /// A registry had it.
    Pulled,
    /// Built here from Debian's packages.
    Built,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ImageOutcome {
    pub image: String,
    pub role: Role,
    pub suite: String,
    pub action: Action,
    /// Why the pull did not give the image (set when it was built instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_error: Option<String>,
    pub id: String,
    pub size_bytes: u64,
    /// Wall time spent on this image, pull attempt and build included.
    pub seconds: f64,
    /// Versions the image contains (from its labels), e.g. elixir, otp, postgres.
    pub versions: BTreeMap<String, String>,
}

/// The monitoring stack's images (chapter 11): Prometheus (with promtool) and Alertmanager (with
/// amtool), built from Debian's packages when no registry has them. A tag without a suite is
/// built from trixie, the suite whose versions the defaults name.
pub fn monitoring_images(config: &Config) -> Result<Vec<BaseImage>> {
    let version = Regex::new(r"^v?(\d+\.\d+\.\d+)").expect("static regex");
    let mut out = Vec::new();
    for (role, reference, key) in [
        (
            Role::Prometheus,
            config.prometheus_image(),
            "image.prometheus",
        ),
        (
            Role::Alertmanager,
            config.alertmanager_image(),
            "image.alertmanager",
        ),
    ] {
        let Some(v) = version.captures(tag_of(&reference)) else {
            bail!(
                "{key} {reference}: the tag names no version\n  fix: use VERSION-SUITE, e.g. {}",
                if role == Role::Prometheus {
                    "prom/prometheus:2.53.3-trixie"
                } else {
                    "prom/alertmanager:0.28.1-trixie"
                }
            );
        };
        out.push(BaseImage {
            role,
            suite: debian::suite_of(&reference).unwrap_or(crate::config::DEFAULT_DEBIAN_SUITE),
            promised: BTreeMap::from([(role.to_string(), v[1].to_string())]),
            reference,
        });
    }
    Ok(out)
}

/// Every image `images bootstrap` puts on the Engine: the base images, then the monitoring ones.
pub fn all_images(config: &Config) -> Result<Vec<BaseImage>> {
    let mut images = base_images(config)?;
    images.extend(monitoring_images(config)?);
    Ok(images)
}

/// Makes sure every base image is on the environment's Engine: present → nothing; absent → try a
/// pull (quickly) → build from Debian. `rebuild` builds even tags that exist.
pub fn ensure_base_images(
    project: &Project,
    environment: &str,
    ui: &Ui,
    rebuild: bool,
) -> Result<Vec<ImageOutcome>> {
    ensure_images(
        project,
        environment,
        ui,
        rebuild,
        base_images(&project.config)?,
    )
}

/// [`ensure_base_images`] for a given list (`all_images`, `monitoring_images`).
pub fn ensure_images(
    project: &Project,
    environment: &str,
    ui: &Ui,
    rebuild: bool,
    images: Vec<BaseImage>,
) -> Result<Vec<ImageOutcome>> {
    let host = super::host_for(project, environment)?;
    let runtime = super::runtime()?;
    let daemon = runtime.block_on(super::connect(&host))?;
    let mut builder = Builder::new(ui);
    let mut outcomes = Vec::new();
    for image in &images {
        let outcome = runtime
            .block_on(ensure(&daemon, image, &mut builder, ui, rebuild))
            .with_context(|| format!("{} image {}", image.role, image.reference))?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn ensure(
    daemon: &Daemon,
    image: &BaseImage,
    builder: &mut Builder<'_>,
    ui: &Ui,
    rebuild: bool,
) -> Result<ImageOutcome> {
    let started = Instant::now();
    if !rebuild && let Some(found) = inspect(daemon, &image.reference).await? {
        ui.detail(format!("{} present", image.reference));
        return Ok(found.outcome(image, Action::Present, None, started));
    }
    let mut pull_error = None;
    if !rebuild {
        let spinner = ui.spinner(format!("pulling {}", image.reference));
        let pulled = pull(daemon, &image.reference).await;
        spinner.finish_and_clear();
        match pulled {
            Ok(()) => {
                if let Some(found) = inspect(daemon, &image.reference).await? {
                    return Ok(found.outcome(image, Action::Pulled, None, started));
                }
                pull_error = Some("the pull finished but the tag is not there".to_string());
            }
            Err(e) => pull_error = Some(format!("{e:#}")),
        }
        ui.note(format!(
            "{}: pull failed ({}); building it from Debian {}",
            image.reference,
            pull_error.as_deref().unwrap_or_default(),
            image.suite
        ));
    } else {
        ui.note(format!(
            "{}: rebuilding from Debian {}",
            image.reference, image.suite
        ));
    }
    let tar = builder.build(image)?;
    import(daemon, image, tar.path()).await?;
    let found = inspect(daemon, &image.reference)
        .await?
        .context("the import finished but the tag is not on the Engine")?;
    let outcome = found.outcome(image, Action::Built, pull_error, started);
    ui.note(format!(
        "{}: built in {:.0}s, {} MB",
        image.reference,
        outcome.seconds,
        outcome.size_bytes / 1_000_000
    ));
    Ok(outcome)
}

struct Found {
    id: String,
    size: u64,
    labels: BTreeMap<String, String>,
}

impl Found {
    fn outcome(
        self,
        image: &BaseImage,
        action: Action,
        pull_error: Option<String>,
        started: Instant,
    ) -> ImageOutcome {
        let versions = self
            .labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_VERSION)?.to_string(), v.clone())))
            .collect();
        ImageOutcome {
            image: image.reference.clone(),
            role: image.role,
            suite: image.suite.to_string(),
            action,
            pull_error,
            id: self.id,
            size_bytes: self.size,
            seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            versions,
        }
    }
}

const LABEL_VERSION: &str = "io.beamops.version.";

async fn inspect(daemon: &Daemon, reference: &str) -> Result<Option<Found>> {
    match daemon.client.inspect_image(reference).await {
        Ok(info) => Ok(Some(Found {
            id: info.id.unwrap_or_default(),
            size: info.size.unwrap_or_default().max(0) as u64,
            labels: info
                .config
                .and_then(|c| c.labels)
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
        })),
        Err(e) if super::is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("inspecting {reference} on {}", daemon.host)),
    }
}

pub async fn pull(daemon: &Daemon, reference: &str) -> Result<()> {
    let (repo, tag) = split_reference(reference);
    let options = CreateImageOptionsBuilder::new()
        .from_image(repo)
        .tag(tag)
        .build();
    let mut stream = daemon.client.create_image(Some(options), None, None);
    let drained = tokio::time::timeout(PULL_TIMEOUT, async {
        while let Some(event) = stream.next().await {
            event?;
        }
        Ok::<(), bollard::errors::Error>(())
    })
    .await;
    match drained {
        Err(_) => bail!("no answer from a registry in {}s", PULL_TIMEOUT.as_secs()),
        Ok(result) => Ok(result?),
    }
}

/// `docker import` semantics: the rootfs tar becomes a one-layer image, with the Dockerfile
/// instructions a base image needs applied as changes.
async fn import(daemon: &Daemon, image: &BaseImage, tar: &Path) -> Result<()> {
    let (repo, tag) = split_reference(&image.reference);
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .message(&format!(
            "built by beamops from Debian {} packages",
            image.suite
        ))
        .changes(changes(image))
        .build();
    let file = tokio::fs::File::open(tar)
        .await
        .with_context(|| format!("opening {}", tar.display()))?;
    let body = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 1 << 20];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(bytes::Bytes::from(chunk)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut stream =
        daemon
            .client
            .create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    while let Some(event) = stream.next().await {
        event.with_context(|| format!("importing {} into {}", image.reference, daemon.host))?;
    }
    Ok(())
}

fn changes(image: &BaseImage) -> Vec<String> {
    let mut out = vec![
        "ENV LANG=C.UTF-8".to_string(),
        format!(
            "LABEL io.beamops.base={} io.beamops.suite={}",
            image.role, image.suite
        ),
    ];
    for (name, version) in &image.promised {
        out.push(format!("LABEL {LABEL_VERSION}{name}={version}"));
    }
    match image.role {
        Role::Builder => {
            out.push(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
            out.push(r#"CMD ["iex"]"#.into());
        }
        Role::Runner => {
            out.push(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
            out.push(r#"CMD ["bash"]"#.into());
        }
        Role::Postgres => {
            let major = postgres_major(image);
            out.push(format!(
                "ENV PATH=/usr/lib/postgresql/{major}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ));
            out.push(format!("ENV PGDATA={PGDATA}"));
            out.push(format!("VOLUME {PGDATA}"));
            out.push("EXPOSE 5432".into());
            // No USER: the entrypoint reads secrets as root, then drops to postgres itself.
            out.push(r#"ENTRYPOINT ["docker-entrypoint.sh"]"#.into());
            out.push(r#"CMD ["postgres"]"#.into());
        }
        // The official images' contract: same config and data paths, same arguments.
        Role::Prometheus => {
            out.push(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
            out.push("EXPOSE 9090".into());
            out.push("VOLUME /prometheus".into());
            out.push("WORKDIR /prometheus".into());
            out.push("USER prometheus".into());
            out.push(r#"ENTRYPOINT ["/usr/bin/prometheus"]"#.into());
            out.push(r#"CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]"#.into());
        }
        Role::Alertmanager => {
            out.push(
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
            out.push("EXPOSE 9093".into());
            out.push("VOLUME /alertmanager".into());
            out.push("WORKDIR /alertmanager".into());
            out.push("USER prometheus".into());
            out.push(r#"ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]"#.into());
            out.push(r#"CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]"#.into());
        }
    }
    out
}

fn postgres_major(image: &BaseImage) -> String {
    image
        .promised
        .get("postgres")
        .and_then(|v| v.split('.').next())
        .unwrap_or("17")
        .to_string()
}

/// Builds rootfs tars; knows the host mirror once it has looked.
struct Builder<'a> {
    ui: &'a Ui,
    mirror: Option<Mirror>,
}

impl<'a> Builder<'a> {
    fn new(ui: &'a Ui) -> Self {
        Builder { ui, mirror: None }
    }

    fn build(&mut self, image: &BaseImage) -> Result<tempfile::NamedTempFile> {
        rootfs::require_tools()?;
        let mirror = match &self.mirror {
            Some(m) => m.clone(),
            None => {
                let m = debian::host_mirror(Path::new("/etc/apt"))?;
                self.mirror = Some(m.clone());
                m
            }
        };
        const STEPS: u64 = 7;
        let bar = self.ui.progress(STEPS, image.reference.clone());
        let step = |message: &str| {
            bar.inc(1);
            bar.set_message(format!("{}: {message}", image.reference));
            self.ui.detail(format!("{}: {message}", image.reference));
        };
        step("minbase rootfs");
        let base = rootfs::minbase(image.suite, &mirror, &|m| self.ui.note(m))?;
        let mut root = Rootfs::copy_of(&base)?;
        root.prepare_chroot()?;
        step("apt-get update");
        slim_dpkg(root.path())?;
        root.run(&["apt-get", "-q", "update"])?;
        step("checking versions");
        let packages = packages(image, &root)?;
        step("installing packages");
        root.run(&["apt-get", "-y", "-q", "upgrade"])?;
        let mut install = vec!["apt-get", "-y", "-q", "install", "--no-install-recommends"];
        install.extend(packages.iter().map(String::as_str));
        root.run(&install)?;
        root.run(&["apt-get", "clean"])?;
        step("configuring");
        configure(image, &root)?;
        verify(image, &root)?;
        step("packing the rootfs");
        let tar = root.finish_into_tar()?;
        drop(root);
        step("importing");
        bar.finish_and_clear();
        Ok(tar)
    }
}

/// What the Debian slim images do: no manuals, docs or translations in an image.
fn slim_dpkg(root: &Path) -> Result<()> {
    std::fs::write(
        root.join("etc/dpkg/dpkg.cfg.d/beamops-slim"),
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-exclude /usr/share/lintian/*\n",
    )?;
    std::fs::write(
        root.join("etc/apt/apt.conf.d/beamops-slim"),
        "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
    )?;
    Ok(())
}

/// The packages for an image, after checking that the suite offers the versions its tag names.
fn packages(image: &BaseImage, root: &Rootfs) -> Result<Vec<String>> {
    let suite = image.suite;
    let list: Vec<String> = match image.role {
        Role::Builder => {
            let offered = BTreeMap::from([
                ("elixir", candidate(root, "elixir")?),
                ("otp", candidate(root, "erlang-base")?),
            ]);
            refuse_mislabel(image, &offered)?;
            [
                "elixir",
                "erlang-nox",
                "erlang-dev",
                "git",
                "ca-certificates",
            ]
            .map(String::from)
            .to_vec()
        }
        Role::Runner => vec![
            "ca-certificates".into(),
            "curl".into(),
            debian::libssl_package(suite).into(),
            "libstdc++6".into(),
            "libtinfo6".into(),
            "libncurses6".into(),
            "zlib1g".into(),
            "libsystemd0".into(),
        ],
        Role::Postgres => {
            let package = format!("postgresql-{}", postgres_major(image));
            let offered = BTreeMap::from([("postgres", candidate(root, &package)?)]);
            refuse_mislabel(image, &offered)?;
            // No cluster from the package: the entrypoint runs initdb into PGDATA on first start.
            std::fs::create_dir_all(root.path().join("etc/postgresql-common"))?;
            std::fs::write(
                root.path().join("etc/postgresql-common/createcluster.conf"),
                "create_main_cluster = false\n",
            )?;
            vec![package, "ca-certificates".into()]
        }
        // curl: the stack's health checks. Debian's packages create the `prometheus` user.
        Role::Prometheus => {
            let offered = BTreeMap::from([
                ("prometheus", candidate(root, "prometheus")?),
                ("promtool", candidate(root, "promtool")?),
            ]);
            let mut promised = image.promised.clone();
            promised.insert("promtool".into(), image.promised["prometheus"].clone());
            refuse_mislabel(
                &BaseImage {
                    promised,
                    ..image.clone()
                },
                &offered,
            )?;
            ["prometheus", "promtool", "ca-certificates", "curl"]
                .map(String::from)
                .to_vec()
        }
        Role::Alertmanager => {
            let offered =
                BTreeMap::from([("alertmanager", candidate(root, "prometheus-alertmanager")?)]);
            refuse_mislabel(image, &offered)?;
            ["prometheus-alertmanager", "ca-certificates", "curl"]
                .map(String::from)
                .to_vec()
        }
    };
    Ok(list)
}

/// The version apt would install, upstream part only; `None` when the suite lacks the package.
fn candidate(root: &Rootfs, package: &str) -> Result<Option<String>> {
    let policy = root.run(&["apt-cache", "policy", package])?;
    Ok(policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
        .map(debian::upstream_version))
}

/// Never tag an image with versions it does not contain: stop and say what the suite offers.
fn refuse_mislabel(image: &BaseImage, offered: &BTreeMap<&str, Option<String>>) -> Result<()> {
    let wrong: Vec<String> = image
        .promised
        .iter()
        .filter(|(name, promised)| {
            offered
                .get(name.as_str())
                .is_none_or(|got| got.as_deref() != Some(promised.as_str()))
        })
        .map(|(name, promised)| format!("{name} {promised}"))
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let offers: Vec<String> = offered
        .iter()
        .map(|(name, v)| format!("{name} {}", v.as_deref().unwrap_or("(not packaged)")))
        .collect();
    let hint = debian::known_versions(image.suite)
        .map(|known| format!("\n  (for reference, as beamops was written: {known}; bookworm: Elixir 1.14 / OTP 25)"))
        .unwrap_or_default();
    bail!(
        "refusing to build {}: it names {}, but Debian {} offers {}{hint}\n  fix: name the versions {} offers in beamops.yaml (app.elixir / app.otp, or image.builder / image.postgres), or a suite that ships the ones you want",
        image.reference,
        wrong.join(", "),
        image.suite,
        offers.join(", "),
        image.suite
    )
}

/// A data directory the packaged daemon (user `prometheus`, as Debian's packages run both) owns.
fn data_dir(root: &Rootfs, path: &str) -> Result<()> {
    root.run(&[
        "install",
        "-d",
        "-o",
        "prometheus",
        "-g",
        "prometheus",
        "-m",
        "755",
        path,
    ])?;
    Ok(())
}

fn configure(image: &BaseImage, root: &Rootfs) -> Result<()> {
    match image.role {
        Role::Prometheus => {
            data_dir(root, "/prometheus")?;
            return Ok(());
        }
        Role::Alertmanager => {
            data_dir(root, "/alertmanager")?;
            root.run(&["install", "-d", "-m", "755", "/etc/alertmanager"])?;
            // The official image's binary name, for commands written against it.
            std::os::unix::fs::symlink(
                "/usr/bin/prometheus-alertmanager",
                root.path().join("usr/local/bin/alertmanager"),
            )?;
            return Ok(());
        }
        Role::Postgres => {}
        Role::Builder | Role::Runner => return Ok(()),
    }
    let entrypoint = crate::render::template_source(ENTRYPOINT)
        .with_context(|| format!("{ENTRYPOINT} is not embedded"))?;
    let target = root.path().join("usr/local/bin/docker-entrypoint.sh");
    std::fs::write(&target, entrypoint)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    }
    root.run(&[
        "install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700", PGDATA,
    ])?;
    root.run(&[
        "install",
        "-d",
        "-o",
        "postgres",
        "-g",
        "postgres",
        "-m",
        "2775",
        "/var/run/postgresql",
    ])?;
    root.run(&["install", "-d", "-m", "755", "/docker-entrypoint-initdb.d"])?;
    Ok(())
}

/// Reads the installed versions back from the rootfs itself, not from apt's word.
fn verify(image: &BaseImage, root: &Rootfs) -> Result<()> {
    let mut installed = BTreeMap::new();
    match image.role {
        Role::Builder => {
            let out = root.run(&["elixir", "--version"])?;
            let elixir = out
                .lines()
                .find_map(|l| l.strip_prefix("Elixir "))
                .and_then(|l| l.split_whitespace().next())
                .context("`elixir --version` printed no version")?;
            installed.insert("elixir", Some(elixir.to_string()));
            let otp = root.run(&[
                "erl",
                "-noshell",
                "-eval",
                "{ok, V} = file:read_file(filename:join([code:root_dir(), \"releases\", erlang:system_info(otp_release), \"OTP_VERSION\"])), io:format(\"~s\", [V]), halt().",
            ])?;
            installed.insert("otp", Some(otp.trim().to_string()));
        }
        Role::Postgres => {
            let major = postgres_major(image);
            let out = root.run(&[
                &format!("/usr/lib/postgresql/{major}/bin/postgres"),
                "--version",
            ])?;
            // `postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)`
            let version = out
                .split_once("(PostgreSQL)")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .context("`postgres --version` printed no version")?;
            installed.insert("postgres", Some(version.to_string()));
        }
        Role::Runner => {
            root.run(&["curl", "--version"])?;
        }
        // `prometheus, version 2.53.3+ds (branch: debian/sid, …)`
        Role::Prometheus => {
            for binary in ["prometheus", "promtool"] {
                let out = root.run(&[binary, "--version"])?;
                installed.insert(
                    if binary == "prometheus" {
                        "prometheus"
                    } else {
                        "promtool"
                    },
                    Some(version_word(&out)?),
                );
            }
            let mut promised = image.promised.clone();
            promised.insert("promtool".into(), image.promised["prometheus"].clone());
            return refuse_mislabel(
                &BaseImage {
                    promised,
                    ..image.clone()
                },
                &installed,
            );
        }
        Role::Alertmanager => {
            let out = root.run(&["prometheus-alertmanager", "--version"])?;
            installed.insert("alertmanager", Some(version_word(&out)?));
            root.run(&["amtool", "--version"])?;
        }
    }
    refuse_mislabel(image, &installed)
}

/// The upstream version after `version ` in a Prometheus-style `--version` line.
fn version_word(out: &str) -> Result<String> {
    let word = out
        .split_once("version ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .with_context(|| format!("no version in `{}`", out.trim()))?;
    Ok(debian::upstream_version(word))
}

fn tag_of(reference: &str) -> &str {
    split_reference(reference).1
}

/// `host:5000/team/app:1.2` → (`host:5000/team/app`, `1.2`); no tag means `latest`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

/// Removes images by reference; for tests and `--rebuild` callers that clean up after themselves.
pub fn remove_images(daemon: &Daemon, references: &[String]) -> Result<()> {
    super::block_on(async {
        for reference in references {
            let options = RemoveImageOptionsBuilder::new().force(true).build();
            match daemon
                .client
                .remove_image(reference, Some(options), None)
                .await
            {
                Ok(_) => {}
                Err(e) if super::is_not_found(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("removing {reference}")),
            }
        }
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        crate::config::load_str(
            Path::new("beamops.yaml"),
            &format!(
                "version: 1\napp:\n  name: shop\n  otp_app: shop\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local:\n    replicas: 1\n{extra}"
            ),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn defaults_name_three_trixie_images_with_their_versions() {
        let images = base_images(&config("")).unwrap();
        let roles: Vec<Role> = images.iter().map(|i| i.role).collect();
        assert_eq!(roles, vec![Role::Builder, Role::Runner, Role::Postgres]);
        assert!(images.iter().all(|i| i.suite == "trixie"));
        assert_eq!(images[0].promised["elixir"], "1.18.3");
        assert_eq!(images[0].promised["otp"], "27.3.4.1");
        assert_eq!(images[2].reference, "postgres:17.12-trixie");
        assert_eq!(images[2].promised["postgres"], "17.12");
    }

    #[test]
    fn a_builder_tag_without_versions_is_an_error_with_a_fix() {
        let err = base_images(&config("image:\n  builder: elixir:latest\n")).unwrap_err();
        assert!(format!("{err:#}").contains("fix:"), "{err:#}");
    }

    #[test]
    fn references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_reference("debian:trixie-slim"),
            ("debian", "trixie-slim")
        );
        assert_eq!(
            split_reference("host:5000/app"),
            ("host:5000/app", "latest")
        );
        assert_eq!(split_reference("host:5000/app:1"), ("host:5000/app", "1"));
    }

    #[test]
    fn postgres_image_carries_the_official_contract() {
        let images = base_images(&config("")).unwrap();
        let changes = changes(&images[2]).join("\n");
        for needle in [
            "EXPOSE 5432",
            "ENV PGDATA=/var/lib/postgresql/data",
            "ENTRYPOINT [\"docker-entrypoint.sh\"]",
            "CMD [\"postgres\"]",
            "/usr/lib/postgresql/17/bin",
        ] {
            assert!(
                changes.contains(needle),
                "{needle} missing from:\n{changes}"
            );
        }
    }

    #[test]
    fn mislabels_are_refused_naming_what_the_suite_offers() {
        let images = base_images(&config(
            "image:\n  builder: hexpm/elixir:1.17.0-erlang-26.2-debian-trixie-20251117-slim\n",
        ))
        .unwrap();
        let offered = BTreeMap::from([
            ("elixir", Some("1.18.3".to_string())),
            ("otp", Some("27.3.4.1".to_string())),
        ]);
        let err = refuse_mislabel(&images[0], &offered)
            .unwrap_err()
            .to_string();
        assert!(err.contains("elixir 1.18.3"), "{err}");
        assert!(err.contains("otp 27.3.4.1"), "{err}");
        assert!(err.contains("elixir 1.17.0, otp 26.2"), "{err}");
        let right = base_images(&config("")).unwrap();
        refuse_mislabel(&right[0], &offered).unwrap();
    }
}
