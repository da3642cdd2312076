//! The part of the compose file format beamops renders, and reads back as the stack's truth.
//!
//! Every struct rejects keys it does not know: a key beamops would silently drop is a key the
//! running stack would silently lack. Supported keys are listed in docs/swarm.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A parsed stack file, after `${VAR}` interpolation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    /// Informational: compose v3 files carry it; the Engine API does not care.
    #[serde(default)]
    pub version: Option<String>,
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObjectDef>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObjectDef>,
    /// Where the file was read from: relative `file:` paths resolve against its directory.
    #[serde(skip)]
    pub dir: PathBuf,
    /// The chapter converging it: labels, strays and removal (`spec::Owner`).
    #[serde(skip)]
    pub owner: super::spec::Owner,
    /// Contents of `file:` configs and secrets as this run will write them (absolute path →
    /// bytes), read before the disk: a plan sees a rendered config that is not written yet.
    #[serde(skip)]
    pub contents: BTreeMap<PathBuf, Vec<u8>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: String,
    /// Overrides the image's CMD (`Args` in the Engine API).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT (`Command` in the Engine API).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub secrets: Vec<FileRef>,
    #[serde(default)]
    pub configs: Vec<FileRef>,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Short syntax only: `volume:/path[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub stop_grace_period: Option<String>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub deploy: Deploy,
    /// Container labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// A YAML scalar that compose accepts where a string is meant (`PORT: 4000`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A secret or config a service mounts: `- name` or the long form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileRef {
    Short(String),
    Long(FileRefLong),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRefLong {
    pub source: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub gid: Option<String>,
    /// Octal as YAML writes it (`0440`) is read as a decimal number by YAML 1.2; compose files
    /// write it as an integer either way, so it is taken as the Engine's decimal mode.
    #[serde(default)]
    pub mode: Option<u32>,
}

impl FileRef {
    pub fn long(&self) -> FileRefLong {
        match self {
            FileRef::Short(source) => FileRefLong {
                source: source.clone(),
                target: None,
                uid: None,
                gid: None,
                mode: None,
            },
            FileRef::Long(long) => long.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub target: u16,
    #[serde(default)]
    pub published: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<u64>,
    #[serde(default)]
    pub start_period: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// `replicated` (default) or `global`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub replicas: Option<u64>,
    #[serde(default)]
    pub update_config: Option<UpdateConfig>,
    #[serde(default)]
    pub rollback_config: Option<UpdateConfig>,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub placement: Option<Placement>,
    /// Service labels (container labels are the service's `labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub endpoint_mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    #[serde(default)]
    pub parallelism: Option<u64>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default)]
    pub failure_action: Option<String>,
    #[serde(default)]
    pub monitor: Option<String>,
    #[serde(default)]
    pub max_failure_ratio: Option<f64>,
    #[serde(default)]
    pub order: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub delay: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u64>,
    #[serde(default)]
    pub window: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub limits: Option<ResourceAmounts>,
    #[serde(default)]
    pub reservations: Option<ResourceAmounts>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default)]
    pub cpus: Option<Scalar>,
    #[serde(default)]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<PlacementPreference>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    pub ipam: Option<IpamDef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamPool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    pub subnet: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config: from a file next to the stack, or external (made elsewhere).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObjectDef {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl StackFile {
    /// Parses `text` (the content of `path`) after interpolating `${VAR}` from `vars`.
    pub fn parse(path: &Path, text: &str, vars: &BTreeMap<String, String>) -> Result<StackFile> {
        let interpolated = interpolate(text, vars).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: {}\n  fix: define the variable, or give it a default with ${{VAR:-default}}",
                path.display(),
                e.line,
                e.message
            )
        })?;
        let mut stack: StackFile = serde_yaml_ng::from_str(&interpolated).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}:{}", path.display(), l.line(), l.column()))
                .unwrap_or_else(|| path.display().to_string());
            anyhow::anyhow!(
                "{at}: {e}\n  fix: beamops applies a subset of the compose format (docs/swarm.md lists it); remove the key or write it in a supported form"
            )
        })?;
        stack.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        stack.validate(path)?;
        Ok(stack)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let file = path.display();
        for (name, service) in &self.services {
            for net in &service.networks {
                if !self.networks.contains_key(net) {
                    bail!(
                        "{file}: service `{name}` uses network `{net}`, which the top-level `networks` does not define\n  fix: add `{net}:` under `networks:`"
                    );
                }
            }
            for r in &service.secrets {
                let source = r.long().source;
                if !self.secrets.contains_key(&source) {
                    bail!(
                        "{file}: service `{name}` uses secret `{source}`, which the top-level `secrets` does not define"
                    );
                }
            }
            for r in &service.configs {
                let source = r.long().source;
                if !self.configs.contains_key(&source) {
                    bail!(
                        "{file}: service `{name}` uses config `{source}`, which the top-level `configs` does not define"
                    );
                }
            }
            for v in &service.volumes {
                let mount = VolumeMount::parse(v)
                    .with_context(|| format!("{file}: service `{name}`, volume `{v}`"))?;
                if !self.volumes.contains_key(&mount.source) {
                    bail!(
                        "{file}: service `{name}` mounts volume `{}`, which the top-level `volumes` does not define\n  fix: beamops supports named volumes only",
                        mount.source
                    );
                }
            }
            if let Some(mode) = &service.deploy.mode
                && mode != "replicated"
                && mode != "global"
            {
                bail!("{file}: service `{name}`: deploy.mode `{mode}` is not replicated or global");
            }
            let endpoint_mode = service.deploy.endpoint_mode.as_deref().unwrap_or("vip");
            if endpoint_mode != "vip" && endpoint_mode != "dnsrr" {
                bail!(
                    "{file}: service `{name}`: deploy.endpoint_mode `{endpoint_mode}` is not vip or dnsrr"
                );
            }
            // The Engine refuses this too, but only when the service is created.
            if endpoint_mode == "dnsrr"
                && service
                    .ports
                    .iter()
                    .any(|p| p.mode.as_deref().unwrap_or("ingress") == "ingress")
            {
                bail!(
                    "{file}: service `{name}` publishes a port in ingress mode with deploy.endpoint_mode dnsrr\n  fix: `mode: host` on the port (beamops.yaml: chapters.swarm.publish_mode: host)"
                );
            }
        }
        for (name, def) in self.secrets.iter().chain(self.configs.iter()) {
            if def.external == def.file.is_some() {
                bail!(
                    "{file}: secret/config `{name}` needs exactly one of `file:` or `external: true`"
                );
            }
        }
        Ok(())
    }

    /// Resolves a `file:` path of a secret or config against the stack file's directory.
    pub fn file_path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A `file:` config's or secret's content: as this run renders it, else from the disk.
    pub fn file_content(&self, file: &str) -> Result<Vec<u8>> {
        let path = self.file_path(file);
        let normal = normalise_path(&path);
        if let Some(data) = self.contents.get(&normal) {
            return Ok(data.clone());
        }
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// `source:target[:ro]` in a service's `volumes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl VolumeMount {
    pub fn parse(short: &str) -> Result<VolumeMount> {
        let parts: Vec<&str> = short.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => bail!("expected `volume:/path` or `volume:/path:ro`"),
        };
        if source.starts_with('/') || source.starts_with('.') {
            bail!("bind mounts are not supported in a stack beamops applies; use a named volume");
        }
        Ok(VolumeMount {
            source: source.into(),
            target: target.into(),
            read_only,
        })
    }
}

/// A compose duration (`15s`, `1m30s`, `500ms`) as the Engine's nanoseconds.
pub fn duration_nanos(text: &str) -> Result<i64> {
    let d: Duration = humantime::parse_duration(text)
        .with_context(|| format!("`{text}` is not a duration like 15s, 1m30s or 500ms"))?;
    Ok(d.as_nanos() as i64)
}

/// A compose byte size (`512M`, `1G`, `256m`, `1024`) in bytes; units are powers of 1024.
pub fn bytes(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: i64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => bail!("`{text}` is not a size like 512M or 1G"),
    };
    let number: f64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a size like 512M or 1G"))?;
    Ok((number * scale as f64) as i64)
}

#[derive(Debug)]
pub struct InterpolationError {
    pub line: usize,
    pub message: String,
}

/// Compose variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty),
/// `${VAR-default}` (unset), `${VAR:?message}`, and `$$` for a literal `$`. Unlike the docker CLI,
/// an unset variable without a default is an error, not an empty string: an empty secret name
/// would otherwise reach the Engine as a confusing failure.
pub fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut line = 1;
    let mut chars = text.char_indices().peekable();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                let rest = &text[i + 2..];
                let Some(end) = rest.find('}') else {
                    return Err(InterpolationError {
                        line,
                        message: "`${` without a closing `}`".into(),
                    });
                };
                let body = &rest[..end];
                for _ in 0..body.chars().count() + 2 {
                    chars.next();
                }
                out.push_str(
                    &expand(body, vars).map_err(|message| InterpolationError { line, message })?,
                );
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let rest = &text[i + 1..];
                let name: String = rest.chars().take_while(|&c| is_name(c)).collect();
                for _ in 0..name.chars().count() {
                    chars.next();
                }
                out.push_str(
                    &expand(&name, vars).map_err(|message| InterpolationError { line, message })?,
                );
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

fn expand(body: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_end);
    if name.is_empty() {
        return Err(format!("`${{{body}}}` does not start with a variable name"));
    }
    let value = vars.get(name);
    let set_nonempty = value.filter(|v| !v.is_empty());
    if op.is_empty() {
        return value
            .cloned()
            .ok_or_else(|| format!("variable `{name}` is not set"));
    }
    if let Some(default) = op.strip_prefix(":-") {
        return Ok(set_nonempty.cloned().unwrap_or_else(|| default.to_string()));
    }
    if let Some(default) = op.strip_prefix('-') {
        return Ok(value.cloned().unwrap_or_else(|| default.to_string()));
    }
    if let Some(message) = op.strip_prefix(":?").or_else(|| op.strip_prefix('?')) {
        return set_nonempty
            .cloned()
            .ok_or_else(|| format!("variable `{name}` is required: {message}"));
    }
    Err(format!("`${{{body}}}`: unsupported substitution `{op}`"))
}

/// `a/./b/../c` → `a/c`, lexically (the file need not exist yet).
pub fn normalise_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interpolation_forms() {
        let v = vars(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(
            interpolate("$A ${A} ${B:-d} ${EMPTY:-d} ${EMPTY-d} $$A", &v).unwrap(),
            "x x d d  $A"
        );
    }

    #[test]
    fn unset_variable_names_its_line() {
        let err = interpolate("a: 1\nb: ${MISSING}\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("MISSING"));
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = "services:\n  app:\n    image: x\n    privileged: true\n";
        let err = StackFile::parse(Path::new("deploy/stack.yml"), text, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("deploy/stack.yml:4"), "{err}");
        assert!(err.contains("privileged"), "{err}");
    }

    #[test]
    fn undefined_network_is_named() {
        let text = "services:\n  app:\n    image: x\n    networks: [nope]\n";
        let err = StackFile::parse(Path::new("s.yml"), text, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn dnsrr_refuses_an_ingress_port_before_the_engine_does() {
        let text = "services:\n  app:\n    image: x\n    ports:\n      - target: 80\n        published: 8080\n    deploy:\n      endpoint_mode: dnsrr\n";
        let err = StackFile::parse(Path::new("s.yml"), text, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode: host"), "{err}");
        let host = text.replace("published: 8080\n", "published: 8080\n        mode: host\n");
        StackFile::parse(Path::new("s.yml"), &host, &BTreeMap::new()).unwrap();
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes("512M").unwrap(), 512 << 20);
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("64mb").unwrap(), 64 << 20);
        assert!(bytes("lots").is_err());
        assert_eq!(duration_nanos("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_nanos("500ms").unwrap(), 500_000_000);
    }

    #[test]
    fn volume_short_syntax() {
        assert_eq!(
            VolumeMount::parse("pgdata:/var/lib/postgresql/data:ro").unwrap(),
            VolumeMount {
                source: "pgdata".into(),
                target: "/var/lib/postgresql/data".into(),
                read_only: true
            }
        );
        assert!(VolumeMount::parse("/host:/data").is_err());
    }
}
