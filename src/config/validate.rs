//! Every value of a parsed configuration checked against what Docker, Erlang, Elixir and Swarm
//! accept, so that a bad value stops `doctor` and `plan` at load instead of a deploy later.
//!
//! A problem names the key path it is about; the loader turns that into a file:line:column, or
//! into the `BEAMOPS_*` variable that set the value.

use std::sync::LazyLock;
use std::time::Duration;

use regex_lite::Regex;

use super::{Config, SCHEMA_VERSION};

mod infrastructure;
mod shape;
use infrastructure::infrastructure;
pub use infrastructure::ipv4_cidr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `["environments", "prod", "managers"]`.
    pub path: Vec<String>,
    pub message: String,
    pub fix: String,
}

fn problem(path: &[&str], message: String, fix: impl Into<String>) -> Problem {
    Problem {
        path: path.iter().map(|s| s.to_string()).collect(),
        message,
        fix: fix.into(),
    }
}

/// The longest a beamops wait may be: a week. Longer is a typo, not a timeout.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A duration key's value (`30s`, `5m`, `1h 30m`): positive and at most [`MAX_DURATION`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value.is_zero() {
        return Err("is zero".into());
    }
    if value > MAX_DURATION {
        return Err(format!(
            "is longer than {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(value)
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static NODE_BASENAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_-]+$"));
static CERTIFICATE_ARN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$"));
static S3_BUCKET: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"));
static PACKAGE: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9][a-z0-9+.-]+$"));
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:\*\.)?[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$",
    )
});

/// The first problem in `config`, in the order a person reads the file.
pub fn first_problem(config: &Config) -> Option<Problem> {
    all(config).into_iter().next()
}

fn all(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    // Control characters (NUL, escapes) end up in Dockerfiles, stack files and shells. The
    // config's JSON text says whether any string may hold one; only then is the config walked
    // as a tree to name where (a tree of every value cost ~0.4 M instructions on every run).
    if may_hold_unclean_text(&serde_json::to_string(config).unwrap_or_default()) {
        text_is_clean(
            &serde_json::to_value(config).unwrap_or_default(),
            &mut Vec::new(),
            &mut out,
        );
    }
    if config.version != SCHEMA_VERSION {
        out.push(problem(
            &["version"],
            format!(
                "schema version {} is not known to this beamops (it reads version {SCHEMA_VERSION})",
                config.version
            ),
            format!("set `version: {SCHEMA_VERSION}` or upgrade beamops"),
        ));
    }
    let app = &config.app;
    if app.name.len() > 63 || !shape::is_component(&app.name) {
        out.push(problem(
            &["app", "name"],
            format!("app.name `{}` cannot name an image or a stack", app.name),
            "use lowercase letters and digits, joined by single `-`, `_` or `.`, at most 63 characters, e.g. `coordination`",
        ));
    }
    if app.otp_app.len() > 255 || !shape::is_otp_app(&app.otp_app) {
        out.push(problem(
            &["app", "otp_app"],
            format!("app.otp_app `{}` is not an OTP application name", app.otp_app.escape_debug()),
            "use the atom from mix.exs `app: :name`: a lowercase ASCII letter, then lowercase letters, digits and `_`",
        ));
    }
    if !shape::is_elixir_version(&app.elixir) {
        out.push(problem(
            &["app", "elixir"],
            format!("app.elixir `{}` is not an Elixir version", app.elixir.escape_debug()),
            "write MAJOR.MINOR.PATCH as Elixir releases are numbered, e.g. 1.18.3 (quote it in YAML: \"1.18.3\")",
        ));
    }
    if !shape::is_otp_version(&app.otp) {
        out.push(problem(
            &["app", "otp"],
            format!(
                "app.otp `{}` is not an Erlang/OTP version",
                app.otp.escape_debug()
            ),
            "write the OTP release number, e.g. 27.3.4.1 or 27 (quote it in YAML: \"27.3.4.1\")",
        ));
    }
    if app.port == 0 {
        out.push(port_problem(&["app", "port"]));
    }
    if !app.health_path.starts_with('/') || app.health_path.chars().any(char::is_whitespace) {
        out.push(problem(
            &["app", "health_path"],
            format!(
                "app.health_path `{}` is not a path",
                app.health_path.escape_debug()
            ),
            format!(
                "write it with a leading slash and no spaces: `/{}`",
                app.health_path.trim().trim_start_matches('/')
            ),
        ));
    }
    if let Some(stack) = &app.stack
        && (stack.len() > 63 || !shape::is_component(stack))
    {
        out.push(problem(
            &["app", "stack"],
            format!(
                "app.stack `{}` cannot name a Swarm stack",
                stack.escape_debug()
            ),
            "use lowercase letters and digits, joined by single `-` or `_`, at most 63 characters",
        ));
    }

    let image = &config.image;
    if let Some(repository) = &image.repository
        && (repository.len() > 255 || !shape::is_repository(repository))
    {
        out.push(problem(
            &["image", "repository"],
            format!("image.repository `{}` is not a Docker image repository", repository.escape_debug()),
            "write [registry/]path in lowercase without a tag (beamops adds the tag), e.g. ghcr.io/acme/coordination",
        ));
    }
    if let Some(registry) = &image.registry
        && !shape::is_registry(registry)
    {
        out.push(problem(
            &["image", "registry"],
            format!(
                "image.registry `{}` is not a registry address",
                registry.escape_debug()
            ),
            "write host[:port], e.g. ghcr.io or 127.0.0.1:5000",
        ));
    }
    for (key, value) in [
        ("builder", &image.builder),
        ("runner", &image.runner),
        ("postgres", &image.postgres),
        ("prometheus", &image.prometheus),
        ("alertmanager", &image.alertmanager),
        ("grafana", &image.grafana),
        ("loki", &image.loki),
        ("promtail", &image.promtail),
    ] {
        if let Some(reference) = value
            && (reference.len() > 255 || !shape::is_reference(reference))
        {
            out.push(problem(
                &["image", key],
                format!(
                    "image.{key} `{}` is not a Docker image reference",
                    reference.escape_debug()
                ),
                "write [registry/]repository[:tag][@sha256:digest], e.g. debian:trixie-slim",
            ));
        }
    }
    if let Some(source) = &image.source
        && !source.is_empty()
        && crate::render::web_address(source).as_deref() != Some(source.trim_end_matches('/'))
    {
        out.push(problem(
            &["image", "source"],
            format!("image.source `{}` is not a web address", source.escape_debug()),
            "write the repository's https address, e.g. https://github.com/acme/coordination, or \"\" for no label",
        ));
    }
    if let Some(packages) = &image.runtime_packages {
        for package in packages {
            if !PACKAGE.is_match(package) {
                out.push(problem(
                    &["image", "runtime_packages"],
                    format!(
                        "image.runtime_packages: `{}` is not a Debian package name",
                        package.escape_debug()
                    ),
                    "list package names as apt knows them, e.g. libssl3t64",
                ));
            }
        }
    }

    for (name, env) in &config.environments {
        if name.len() > 63 || !shape::is_environment(name) {
            out.push(problem(
                &["environments", name],
                format!(
                    "environment name `{}` cannot name files and stacks",
                    name.escape_debug()
                ),
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            ));
        }
        if env.replicas == 0 {
            out.push(problem(
                &["environments", name, "replicas"],
                format!("environments.{name}.replicas is 0"),
                "give at least 1 replica; use `beamops down` to stop an environment",
            ));
        }
        if env.managers == 0 || env.managers % 2 == 0 {
            out.push(problem(
                &["environments", name, "managers"],
                format!(
                    "environments.{name}.managers is {}: a swarm needs an odd number of managers for a majority (Raft)",
                    env.managers
                ),
                "use 1, 3 or 5 managers (an even number tolerates no more failures than one fewer)",
            ));
        }
        let (min, desired, max) = env.worker_bounds();
        if min > desired || desired > max {
            out.push(problem(
                &["environments", name, "workers"],
                format!(
                    "environments.{name}: workers {desired} is outside min_workers {min} .. max_workers {max}"
                ),
                "keep min_workers ≤ workers ≤ max_workers (the autoscaling group's min, desired and max)",
            ));
        }
        if max > 1000 {
            out.push(problem(
                &["environments", name, "max_workers"],
                format!("environments.{name}.max_workers is {max}"),
                "use at most 1000 workers (a swarm of thousands of nodes is no longer one cluster)",
            ));
        }
        if let Some(domain) = &env.domain
            && !HOSTNAME.is_match(domain)
        {
            out.push(problem(
                &["environments", name, "domain"],
                format!(
                    "environments.{name}.domain `{}` is not a host name",
                    domain.escape_debug()
                ),
                "write a DNS name without scheme or path, e.g. app.example.com",
            ));
        }
        if let Some(host) = &env.docker_host
            && !["unix://", "tcp://", "ssh://", "npipe://"]
                .iter()
                .any(|scheme| host.starts_with(scheme))
        {
            out.push(problem(
                &["environments", name, "docker_host"],
                format!(
                    "environments.{name}.docker_host `{}` is not a Docker Engine address",
                    host.escape_debug()
                ),
                "write unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host",
            ));
        }
        // An aws environment is reached through one of its managers: a local socket would
        // deploy to this machine's Engine instead, whatever the environment is called.
        if env.provider == crate::config::Provider::Aws
            && let Some(host) = &env.docker_host
            && ["unix://", "npipe://"]
                .iter()
                .any(|scheme| host.starts_with(scheme))
        {
            out.push(problem(
                &["environments", name, "docker_host"],
                format!(
                    "environments.{name}.docker_host `{}` is a local socket, but {name} is an aws environment, reached through its managers",
                    host.escape_debug()
                ),
                "write ssh://user@manager (or tcp://manager:2376 with TLS), or leave docker_host out to use the manager chapter 06 recorded",
            ));
        }
    }
    if let Some(default) = &config.default_environment
        && !config.environments.contains_key(default)
    {
        let names: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        out.push(problem(
            &["default_environment"],
            format!("default_environment `{default}` is not one of the environments"),
            format!("use one of: {}", names.join(", ")),
        ));
    }

    let dev = &config.chapters.development;
    if dev.app_port == Some(0) {
        out.push(port_problem(&["chapters", "development", "app_port"]));
    }
    if dev.db_port == 0 {
        out.push(port_problem(&["chapters", "development", "db_port"]));
    }
    let dev_app_port = dev.app_port.unwrap_or(config.app.port);
    if dev.db_port != 0 && dev_app_port == dev.db_port {
        // Both are published on 127.0.0.1: the second bind fails when the stack starts.
        let (path, key): (&[&str], &str) = if dev.app_port.is_some() {
            (
                &["chapters", "development", "app_port"],
                "chapters.development.app_port",
            )
        } else {
            (
                &["chapters", "development", "db_port"],
                "app.port (the default app_port)",
            )
        };
        out.push(problem(
            path,
            format!(
                "{key} {dev_app_port} is also chapters.development.db_port: both are published on 127.0.0.1"
            ),
            "give the app and Postgres different host ports, e.g. app_port: 4000 and db_port: 5432",
        ));
    }

    let swarm = &config.chapters.swarm;
    if swarm.publish == Some(0) {
        out.push(port_problem(&["chapters", "swarm", "publish"]));
    }
    if let Err(why) = duration(&swarm.converge_timeout) {
        out.push(duration_problem(
            &["chapters", "swarm", "converge_timeout"],
            &swarm.converge_timeout,
            &why,
            "5m",
        ));
    }
    for secret in &swarm.secrets {
        if !shape::is_secret(secret) {
            out.push(problem(
                &["chapters", "swarm", "secrets"],
                format!("chapters.swarm.secrets: `{}` is not an environment variable name", secret.escape_debug()),
                "use uppercase letters, digits and `_`, starting with a letter, e.g. SECRET_KEY_BASE",
            ));
        }
    }
    for name in swarm.environment.keys() {
        if !shape::is_secret(name) || name.starts_with("BEAMOPS_") {
            out.push(problem(
                &["chapters", "swarm", "environment"],
                format!("chapters.swarm.environment: `{}` is not an environment variable name the stack may set", name.escape_debug()),
                "use uppercase letters, digits and `_`, starting with a letter (not BEAMOPS_…), e.g. COORDINATION_DEBUG",
            ));
        }
    }
    if swarm.healthcheck.is_empty()
        || !["CMD", "CMD-SHELL", "NONE"].contains(&swarm.healthcheck[0].as_str())
    {
        out.push(problem(
            &["chapters", "swarm", "healthcheck"],
            format!("chapters.swarm.healthcheck {:?} is not a Docker healthcheck test", swarm.healthcheck),
            "start the list with CMD (exec form), CMD-SHELL (a shell command) or NONE, e.g. [CMD, /usr/local/bin/healthcheck]",
        ));
    }
    if let Some(subnet) = &swarm.subnet
        && super::Ipv4Net::parse(subnet).is_none()
    {
        out.push(problem(
            &["chapters", "swarm", "subnet"],
            format!("chapters.swarm.subnet `{subnet}` is not an IPv4 network"),
            "write it as address/prefix with a prefix from 8 to 29, e.g. 10.213.0.0/24",
        ));
    }
    // Written into the stack file as a Go duration: whole seconds or minutes only.
    match monitor_seconds(&swarm.update_monitor) {
        None => out.push(problem(
            &["chapters", "swarm", "update_monitor"],
            format!(
                "chapters.swarm.update_monitor `{}` is not a duration in seconds or minutes",
                swarm.update_monitor
            ),
            "write it like 45s or 2m",
        )),
        Some(s) if s < MIN_UPDATE_MONITOR_SECS => out.push(problem(
            &["chapters", "swarm", "update_monitor"],
            format!(
                "chapters.swarm.update_monitor `{}` is shorter than one healthcheck interval ({MIN_UPDATE_MONITOR_SECS}s): Swarm would call the update completed before any task reports its health",
                swarm.update_monitor
            ),
            "write at least 5s; 45s (start_period + interval × retries) also catches a release that never turns healthy",
        )),
        Some(_) => {}
    }
    if swarm.endpoint_mode == super::EndpointMode::Dnsrr
        && swarm.publish.is_some()
        && swarm.publish_mode == super::PublishMode::Ingress
    {
        out.push(problem(
            &["chapters", "swarm", "endpoint_mode"],
            "chapters.swarm.endpoint_mode dnsrr cannot publish through the ingress mesh".into(),
            "set chapters.swarm.publish_mode: host, or endpoint_mode: vip",
        ));
    }

    let distributed = &config.chapters.distributed;
    let [low, high] = distributed.distribution_ports;
    if low == 0 || low > high || (low..=high).contains(&4369) {
        out.push(problem(
            &["chapters", "distributed", "distribution_ports"],
            format!("chapters.distributed.distribution_ports [{low}, {high}] is not a port range"),
            "give [first, last] with first <= last, leaving out epmd's 4369, e.g. [9100, 9105]",
        ));
    }
    if distributed.net_ticktime < 4 {
        out.push(problem(
            &["chapters", "distributed", "net_ticktime"],
            format!(
                "chapters.distributed.net_ticktime {} is too short to tell a slow peer from a dead one",
                distributed.net_ticktime
            ),
            "use 4 seconds or more; 15 is the default, Erlang's own is 60",
        ));
    }
    if distributed.poll_seconds == 0 {
        out.push(problem(
            &["chapters", "distributed", "poll_seconds"],
            "chapters.distributed.poll_seconds is 0".into(),
            "poll every 1 s or more; 5 is the default",
        ));
    }
    if let Err(why) = duration(&distributed.verify_timeout) {
        out.push(duration_problem(
            &["chapters", "distributed", "verify_timeout"],
            &distributed.verify_timeout,
            &why,
            "2m",
        ));
    }
    if let Some(base) = &distributed.node_basename
        && (base.len() > 200 || !NODE_BASENAME.is_match(base))
    {
        out.push(problem(
            &["chapters", "distributed", "node_basename"],
            format!(
                "chapters.distributed.node_basename `{}` cannot start an Erlang node name",
                base.escape_debug()
            ),
            "use ASCII letters, digits, `_` and `-`, e.g. coordination",
        ));
    }

    instrumentation(config, &mut out);
    let scaling = &config.chapters.autoscaling;
    if !(10..=90).contains(&scaling.cpu_target) {
        out.push(problem(
            &["chapters", "autoscaling", "cpu_target"],
            format!(
                "chapters.autoscaling.cpu_target is {}%: target tracking needs room both ways",
                scaling.cpu_target
            ),
            "use a percentage from 10 to 90, e.g. 60",
        ));
    }
    if !shape::is_instance_type(&scaling.instance_type, true) {
        out.push(problem(
            &["chapters", "autoscaling", "instance_type"],
            format!(
                "chapters.autoscaling.instance_type `{}` is not an EC2 instance type",
                scaling.instance_type.escape_debug()
            ),
            "write a family and size, e.g. t3.small or m7g.large",
        ));
    }
    if !(30..=7200).contains(&scaling.hook_timeout) {
        out.push(problem(
            &["chapters", "autoscaling", "hook_timeout"],
            format!(
                "chapters.autoscaling.hook_timeout is {}s; a lifecycle hook holds an instance 30 to 7200 s",
                scaling.hook_timeout
            ),
            "use seconds from 30 to 7200, e.g. 300",
        ));
    } else if scaling.ready_timeout == 0 || scaling.ready_timeout >= scaling.hook_timeout {
        out.push(problem(
            &["chapters", "autoscaling", "ready_timeout"],
            format!(
                "chapters.autoscaling.ready_timeout is {}s, hook_timeout {}s: the launch hook would time out before the node could be marked ready",
                scaling.ready_timeout, scaling.hook_timeout
            ),
            "keep ready_timeout positive and below hook_timeout",
        ));
    }
    if let Some(arn) = &scaling.certificate_arn
        && !CERTIFICATE_ARN.is_match(arn)
    {
        out.push(problem(
            &["chapters", "autoscaling", "certificate_arn"],
            format!(
                "chapters.autoscaling.certificate_arn `{}` is not an ACM certificate ARN",
                arn.escape_debug()
            ),
            "copy it from ACM: arn:aws:acm:<region>:<account>:certificate/<id>",
        ));
    }
    if let Some(bucket) = &scaling.access_logs_bucket
        && !(S3_BUCKET.is_match(bucket) && (3..=63).contains(&bucket.len()))
    {
        out.push(problem(
            &["chapters", "autoscaling", "access_logs_bucket"],
            format!(
                "chapters.autoscaling.access_logs_bucket `{}` is not an S3 bucket name",
                bucket.escape_debug()
            ),
            "3 to 63 lowercase letters, digits, `.` and `-`, e.g. acme-alb-logs",
        ));
    }

    if let Err(why) = duration(&config.deploy.lock_timeout) {
        out.push(duration_problem(
            &["deploy", "lock_timeout"],
            &config.deploy.lock_timeout,
            &why,
            "30m",
        ));
    }
    if config.deploy.keep_releases == 0 {
        out.push(problem(
            &["deploy", "keep_releases"],
            "deploy.keep_releases is 0: the running release's image would be pruned".into(),
            "keep at least 1 (the default is 3)",
        ));
    }
    ci_problems(config, &mut out);
    infrastructure(config, &mut out);
    for entry in &config.worktree.allow_list {
        if entry.trim().is_empty() || entry.starts_with('/') || entry.split('/').any(|p| p == "..")
        {
            out.push(problem(
                &["worktree", "allow_list"],
                format!(
                    "worktree.allow_list: `{}` is not a path inside a worktree",
                    entry.escape_debug()
                ),
                "list relative paths of build output, e.g. _build, deps",
            ));
        }
    }
    out
}

static GITHUB_REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"));

/// Is `url` an address beamops may send a GitHub token to: https, or http to this machine only.
pub fn api_url_is_safe(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let bare = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let valid_host = !bare.is_empty()
        && !host.contains('@')
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    match scheme {
        "https" => valid_host,
        "http" => valid_host && matches!(bare, "127.0.0.1" | "localhost" | "[::1]"),
        _ => false,
    }
}

/// A `known_hosts` line: `[@marker] hosts keytype base64-key [comment]`.
pub fn known_hosts_line_ok(line: &str) -> bool {
    use base64::Engine as _;
    let mut words = line.split_whitespace().peekable();
    if words.peek().is_some_and(|w| w.starts_with('@')) {
        let marker = words.next().unwrap_or_default();
        if marker != "@cert-authority" && marker != "@revoked" {
            return false;
        }
    }
    let (Some(_hosts), Some(kind), Some(key)) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let known_kind = matches!(
        kind,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "sk-ssh-ed25519@openssh.com"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
    );
    known_kind
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|bytes| {
                bytes.len() >= 4 + kind.len() && bytes[4..4 + kind.len()] == *kind.as_bytes()
            })
}

fn ci_problems(config: &Config, out: &mut Vec<Problem>) {
    let ci = &config.ci;
    if let Some(repo) = &ci.repository
        && !GITHUB_REPOSITORY.is_match(repo)
    {
        out.push(problem(
            &["ci", "repository"],
            format!(
                "ci.repository `{}` is not a GitHub repository",
                repo.escape_debug()
            ),
            "write owner/name, e.g. acme/coordination",
        ));
    }
    if !api_url_is_safe(&ci.api_url) {
        out.push(problem(
            &["ci", "api_url"],
            format!(
                "ci.api_url `{}` is not an https address (the GitHub token is sent there)",
                ci.api_url.escape_debug()
            ),
            "write https://api.github.com or, for GitHub Enterprise, https://HOST/api/v3 (plain http only to 127.0.0.1/localhost)",
        ));
    }
    let branch = &ci.default_branch;
    if !shape::is_branch_chars(branch)
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.contains("..")
        || branch.contains("//")
        || branch.ends_with(".lock")
    {
        out.push(problem(
            &["ci", "default_branch"],
            format!(
                "ci.default_branch `{}` is not a branch name",
                branch.escape_debug()
            ),
            "write the repository's default branch, e.g. main",
        ));
    }
    for (key, value) in [
        ("deploy_on_push", &ci.deploy_on_push),
        ("deploy_on_tag", &ci.deploy_on_tag),
    ] {
        if let Some(name) = value
            && !name.is_empty()
            && !config.environments.contains_key(name)
        {
            let names: Vec<&str> = config.environments.keys().map(String::as_str).collect();
            out.push(problem(
                &["ci", key],
                format!(
                    "ci.{key} `{}` is not one of the environments",
                    name.escape_debug()
                ),
                format!("use one of: {}, or \"\" to deploy none", names.join(", ")),
            ));
        }
    }
    if let Some(rev) = &ci.beamops.rev
        && !shape::is_commit(rev)
    {
        out.push(problem(
            &["ci", "beamops", "rev"],
            format!(
                "ci.beamops.rev `{}` is not a full commit id",
                rev.escape_debug()
            ),
            "write the 40 lowercase hex digits of a beamops commit (a branch or tag can move)",
        ));
    }
    let git = &ci.beamops.git;
    if git.is_empty()
        || git
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '$')
    {
        out.push(problem(
            &["ci", "beamops", "git"],
            format!("ci.beamops.git `{}` is not a git URL", git.escape_debug()),
            "write a URL `cargo install --git` accepts, e.g. https://github.com/beamops/beamops",
        ));
    }
    for (name, env) in &config.environments {
        for line in &env.known_hosts {
            if !known_hosts_line_ok(line) {
                out.push(problem(
                    &["environments", name, "known_hosts"],
                    format!(
                        "environments.{name}.known_hosts: `{}` is not a known_hosts line",
                        line.escape_debug()
                    ),
                    "copy lines from `ssh-keyscan HOST` checked against the host's own `ssh-keygen -lf` fingerprints: `host ssh-ed25519 AAAA…`",
                ));
            }
        }
    }
}

/// Prometheus' own duration syntax (`15s`, `1m30s`, `15d`; units ms, s, m, h, d, w, y), in
/// seconds (None when it is not one). By hand, not a regex: every run validates two of them.
pub fn prometheus_seconds(text: &str) -> Option<f64> {
    let mut rest = text;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, seconds) = [
            ("ms", 0.001),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
            ("d", 86_400.0),
            ("w", 604_800.0),
            ("y", 31_536_000.0),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total += n * seconds;
    }
    Some(total)
}

/// Chapters 11 and 12: the monitoring stack's keys.
fn instrumentation(config: &Config, out: &mut Vec<Problem>) {
    let ins = &config.chapters.instrumentation;
    for (key, text, example, min) in [
        ("scrape_interval", &ins.scrape_interval, "15s", 1.0),
        ("retention", &ins.retention, "15d", 3600.0),
    ] {
        match prometheus_seconds(text) {
            None => out.push(problem(
                &["chapters", "instrumentation", key],
                format!(
                    "chapters.instrumentation.{key} `{}` is not a Prometheus duration",
                    text.escape_debug()
                ),
                format!("write a number with a unit (ms, s, m, h, d, w, y), e.g. {example}"),
            )),
            Some(s) if s < min => out.push(problem(
                &["chapters", "instrumentation", key],
                format!("chapters.instrumentation.{key} `{text}` is shorter than {min}s"),
                format!("write at least {min}s, e.g. {example}"),
            )),
            Some(_) => {}
        }
    }
    let ports = [
        ("prometheus_port", ins.prometheus_port),
        ("alertmanager_port", ins.alertmanager_port),
        ("grafana_port", ins.grafana_port),
    ];
    for (i, (key, port)) in ports.iter().enumerate() {
        if *port == 0 {
            out.push(port_problem(&["chapters", "instrumentation", key]));
        } else if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            out.push(problem(
                &["chapters", "instrumentation", key],
                format!("chapters.instrumentation.{key} {port} is also {other}: both are published on the manager"),
                "give Prometheus, Alertmanager and Grafana different ports, e.g. 9090, 9093, 3000",
            ));
        }
    }
    if !ins.metrics_path.starts_with('/')
        || ins
            .metrics_path
            .chars()
            .any(|c| c.is_whitespace() || c == '"')
    {
        out.push(problem(
            &["chapters", "instrumentation", "metrics_path"],
            format!(
                "chapters.instrumentation.metrics_path `{}` is not a path",
                ins.metrics_path.escape_debug()
            ),
            "write it with a leading slash and no spaces or quotes, e.g. /metrics",
        ));
    }
    if let Err(why) = duration(&ins.verify_timeout) {
        out.push(duration_problem(
            &["chapters", "instrumentation", "verify_timeout"],
            &ins.verify_timeout,
            &why,
            "2m",
        ));
    }
    let mon = &config.chapters.monitoring;
    if let Some(url) = &mon.webhook_url {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        }) && !url.chars().any(|c| c.is_whitespace() || c == '"');
        if !ok {
            out.push(problem(
                &["chapters", "monitoring", "webhook_url"],
                format!(
                    "chapters.monitoring.webhook_url `{}` is not an http(s) address",
                    url.escape_debug()
                ),
                "write the receiver's address, e.g. http://alert-receiver:8080/alerts",
            ));
        }
    }
    // The rendered promtool tests evaluate at 12 minutes: a rule must be able to fire by then.
    if prometheus_seconds(&mon.alert_for).is_none_or(|s| s > 600.0) {
        out.push(problem(
            &["chapters", "monitoring", "alert_for"],
            format!(
                "chapters.monitoring.alert_for `{}` is not a Prometheus duration of at most 10m",
                mon.alert_for.escape_debug()
            ),
            "write a number with a unit, at most 10m, e.g. 1m or 30s",
        ));
    }
    for (key, value) in [
        ("cpu_threshold", mon.cpu_threshold),
        ("claim_latency_p95", mon.claim_latency_p95),
        ("error_ratio", mon.error_ratio),
    ] {
        if !(value.is_finite() && value > 0.0) || (key == "error_ratio" && value >= 1.0) {
            out.push(problem(
                &["chapters", "monitoring", key],
                format!("chapters.monitoring.{key} {value} is not a usable threshold"),
                if key == "error_ratio" {
                    "give a ratio above 0 and below 1, e.g. 0.05"
                } else {
                    "give a positive number, e.g. 0.8 (cores) or 0.25 (seconds)"
                },
            ));
        }
    }
    if mon.memory_bytes == 0 {
        out.push(problem(
            &["chapters", "monitoring", "memory_bytes"],
            "chapters.monitoring.memory_bytes is 0".into(),
            "give the VM memory per task to alert on, in bytes, e.g. 1073741824",
        ));
    }
}

fn port_problem(path: &[&str]) -> Problem {
    problem(
        path,
        format!("{} is 0, which is no port", path.join(".")),
        "use a port from 1 to 65535",
    )
}

/// The app's healthcheck `interval` in templates/swarm/stack.yml.j2: a monitor window shorter
/// than one interval ends before Swarm has seen a single health result.
pub const MIN_UPDATE_MONITOR_SECS: u64 = 5;

/// `45s` → 45, `2m` → 120: the whole seconds or minutes the stack file's Go duration takes.
fn monitor_seconds(text: &str) -> Option<u64> {
    let (digits, unit) = match text.strip_suffix('s') {
        Some(n) => (n, 1),
        None => (text.strip_suffix('m')?, 60),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

fn duration_problem(path: &[&str], text: &str, why: &str, example: &str) -> Problem {
    problem(
        path,
        format!(
            "{} `{}` is not a usable duration: {why}",
            path.join("."),
            text.escape_debug()
        ),
        format!(
            "write a positive duration of at most {} with a unit, e.g. {example}, 90s or 1h 30m",
            humantime::format_duration(MAX_DURATION)
        ),
    )
}

/// A character no configuration string may hold (see [`text_is_clean`]).
fn is_unclean(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Whether a string or key in `json` (serde_json's text of a value) may hold an unclean
/// character: one written raw, or escaped — serde_json escapes only `"`, `\\` and the C0
/// controls, so any escape but `\"`, `\\`, `\n` and `\t` may be one.
fn may_hold_unclean_text(json: &str) -> bool {
    let mut chars = json.chars();
    while let Some(c) = chars.next() {
        let unclean = match c {
            '\\' => !matches!(chars.next(), Some('"' | '\\' | 'n' | 't')),
            c => is_unclean(c),
        };
        if unclean {
            return true;
        }
    }
    false
}

/// Strings anywhere in the configuration: no control characters except tab and newline (which
/// a release command may hold), and no invisible format characters (zero-width spaces, bidi
/// overrides) that make two different values look alike.
fn text_is_clean(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Problem>) {
    match value {
        serde_json::Value::String(s) => {
            if let Some((i, c)) = s.char_indices().find(|&(_, c)| is_unclean(c)) {
                out.push(Problem {
                    path: path.clone(),
                    message: format!(
                        "{} holds the invisible character U+{:04X} at character {}: `{}`",
                        path.join("."),
                        c as u32,
                        s[..i].chars().count() + 1,
                        s.escape_debug()
                    ),
                    fix: "retype the value; it is written into Dockerfiles, stack files and shell commands".into(),
                });
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                text_is_clean(item, path, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                path.push(key.clone());
                if key.chars().any(is_unclean) {
                    out.push(Problem {
                        path: path.clone(),
                        message: format!(
                            "the key `{}` holds an invisible character",
                            key.escape_debug()
                        ),
                        fix: "retype the key".into(),
                    });
                }
                text_is_clean(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_positive_bounded_and_have_units() {
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["abc", "-5m", "", "0s", "99999999999999999999h", "8d", "5"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prometheus_durations() {
        assert_eq!(prometheus_seconds("15s"), Some(15.0));
        assert_eq!(prometheus_seconds("1m30s"), Some(90.0));
        assert_eq!(prometheus_seconds("15d"), Some(1_296_000.0));
        for bad in ["", "15", "1.5s", "15 s", "s", "-1s"] {
            assert_eq!(prometheus_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn monitoring_keys_are_checked() {
        let load = |extra: &str| {
            crate::config::load_str(
                std::path::Path::new("beamops.yaml"),
                &format!(
                    "version: 1\napp:\n  name: shop\n  otp_app: shop\n  elixir: 1.18.3\n  otp: 27.3.4.1\n{extra}"
                ),
                &[],
            )
        };
        load("chapters:\n  instrumentation:\n    scrape_interval: 5s\n  monitoring:\n    webhook_url: http://hook:8080/x\n").unwrap();
        for (bad, needle) in [
            (
                "chapters:\n  instrumentation:\n    scrape_interval: 15\n",
                "scrape_interval",
            ),
            (
                "chapters:\n  instrumentation:\n    alertmanager_port: 9090\n",
                "alertmanager_port",
            ),
            (
                "chapters:\n  instrumentation:\n    metrics_path: metrics\n",
                "metrics_path",
            ),
            (
                "chapters:\n  monitoring:\n    webhook_url: ftp://x/y\n",
                "webhook_url",
            ),
            (
                "chapters:\n  monitoring:\n    error_ratio: 2\n",
                "error_ratio",
            ),
            (
                "chapters:\n  monitoring:\n    alert_for: soon\n",
                "alert_for",
            ),
            ("image:\n  grafana: \"Bad Image\"\n", "image.grafana"),
            (
                "chapters:\n  monitoring:\n    alert_for: 11m\n",
                "alert_for",
            ),
            (
                "chapters:\n  monitoring:\n    error_ratio: 1\n",
                "error_ratio",
            ),
            (
                "chapters:\n  swarm:\n    environment:\n      bad-name: x\n",
                "environment",
            ),
        ] {
            let err = format!("{:#}", load(bad).unwrap_err());
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn docker_references() {
        for good in [
            "coordination",
            "ghcr.io/acme/coord",
            "127.0.0.1:5000/a/b",
            "localhost/x",
        ] {
            assert!(super::shape::is_repository(good), "{good}");
        }
        for bad in ["Demo:bad tag", "Demo", "a:1", "-a", "a//b", ""] {
            assert!(!super::shape::is_repository(bad), "{bad}");
        }
        for good in [
            "debian:trixie-slim",
            "postgres:17.12-trixie",
            "hexpm/elixir:1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim",
        ] {
            assert!(super::shape::is_reference(good), "{good}");
        }
        assert!(!super::shape::is_reference("debian:bad tag"));
    }

    fn with(yaml_tail: &str) -> Vec<Problem> {
        let text = format!(
            "version: 1\napp:\n  name: coordination\n  otp_app: coordination\n  elixir: \"1.18.3\"\n  otp: \"27.3.4.1\"\n{yaml_tail}"
        );
        let config: Config = serde_yaml_ng::from_str(&text).unwrap();
        all(&config)
    }

    #[test]
    fn an_aws_environment_is_never_reached_through_a_local_socket() {
        let aws = "environments:\n  prod:\n    provider: aws\n    region: eu-west-1\n";
        for ok in ["ssh://admin@10.0.1.5", "tcp://10.0.1.5:2376"] {
            let problems = with(&format!("{aws}    docker_host: {ok}\n"));
            assert!(problems.is_empty(), "{ok}: {problems:?}");
        }
        for bad in [
            "unix:///var/run/docker.sock",
            "npipe:////./pipe/docker_engine",
        ] {
            let problems = with(&format!("{aws}    docker_host: {bad}\n"));
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].path, ["environments", "prod", "docker_host"]);
            assert!(problems[0].fix.contains("ssh://"), "{:?}", problems[0]);
        }
        // A local environment may use its socket.
        assert!(
            with("environments:\n  dev:\n    docker_host: unix:///var/run/docker.sock\n")
                .is_empty()
        );
    }

    #[test]
    fn autoscaling_bounds_and_options() {
        assert!(with("").is_empty());
        let ok = "environments:\n  prod:\n    provider: aws\n    region: eu-west-1\n    workers: 2\n    min_workers: 1\n    max_workers: 6\n";
        assert!(with(ok).is_empty(), "{:?}", with(ok));
        // Defaults: min = workers, max = twice workers (at least 2).
        assert!(with("environments:\n  prod:\n    workers: 3\n").is_empty());
        for (yaml, path) in [
            (
                "environments:\n  prod:\n    workers: 1\n    min_workers: 2\n    max_workers: 4\n",
                "workers",
            ),
            (
                "environments:\n  prod:\n    workers: 5\n    max_workers: 4\n",
                "workers",
            ),
            (
                "environments:\n  prod:\n    workers: 1\n    max_workers: 5000\n",
                "max_workers",
            ),
            (
                "chapters:\n  autoscaling:\n    cpu_target: 95\n",
                "cpu_target",
            ),
            (
                "chapters:\n  autoscaling:\n    instance_type: huge\n",
                "instance_type",
            ),
            (
                "chapters:\n  autoscaling:\n    hook_timeout: 10\n",
                "hook_timeout",
            ),
            (
                "chapters:\n  autoscaling:\n    hook_timeout: 120\n    ready_timeout: 120\n",
                "ready_timeout",
            ),
        ] {
            let problems = with(yaml);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert_eq!(problems[0].path.last().unwrap(), path, "{yaml}");
        }
    }
}

#[cfg(test)]
mod ci_tests {
    #[test]
    fn a_github_token_goes_to_https_or_to_this_machine_only() {
        for ok in [
            "https://api.github.com",
            "https://ghe.example.com/api/v3",
            "http://127.0.0.1:8080",
            "http://localhost:9000/api",
        ] {
            assert!(super::api_url_is_safe(ok), "{ok}");
        }
        for bad in [
            "http://api.github.com",
            "http://127.0.0.1.evil.com",
            "https://user:pw@api.github.com",
            "ftp://api.github.com",
            "api.github.com",
            "https://",
        ] {
            assert!(!super::api_url_is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn known_hosts_lines_carry_a_key_of_their_type() {
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert!(super::known_hosts_line_ok(&format!(
            "h1,h2 ssh-ed25519 {key}"
        )));
        assert!(super::known_hosts_line_ok(&format!(
            "@cert-authority *.example.com ssh-ed25519 {key} ca"
        )));
        assert!(!super::known_hosts_line_ok(&format!("h1 ssh-rsa {key}")));
        assert!(!super::known_hosts_line_ok("h1 ssh-ed25519 bm90LWEta2V5"));
        assert!(!super::known_hosts_line_ok("h1 ssh-ed25519"));
        assert!(!super::known_hosts_line_ok(&format!(
            "@trust h1 ssh-ed25519 {key}"
        )));
    }

    /// The JSON text of a string, or a key, says it may hold an unclean character exactly when
    /// it does: for every character, alone and between others.
    #[test]
    fn json_text_shows_every_unclean_character() {
        use super::{is_unclean, may_hold_unclean_text};
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let text = format!("a{c}\"b\\\n\t");
            let value = serde_json::to_string(&text).unwrap();
            let key =
                serde_json::to_string(&std::collections::BTreeMap::from([(&text, 1)])).unwrap();
            assert_eq!(
                may_hold_unclean_text(&value),
                is_unclean(c),
                "{c:?} in {value}"
            );
            assert_eq!(may_hold_unclean_text(&key), is_unclean(c), "{c:?} in {key}");
        }
    }
}
