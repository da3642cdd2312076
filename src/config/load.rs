use std::path::Path;

use serde_yaml_ng::Value;

use super::{Config, ConfigError, SCHEMA_VERSION};

pub const CONFIG_FILE: &str = "beamops.yaml";

/// Load `beamops.yaml`, applying `BEAMOPS_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
        fix: "run `beamops init` in the project root, or pass --project DIR".into(),
    })?;
    let overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BEAMOPS_"))
        .collect();
    load_str(path, &source, &overrides)
}

/// Parse configuration text; `overrides` are `(BEAMOPS_A__B, value)` pairs.
pub fn load_str(
    path: &Path,
    source: &str,
    overrides: &[(String, String)],
) -> Result<Config, ConfigError> {
    let err =
        |line: Option<usize>, column: Option<usize>, message: String, fix: String| ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            message,
            fix,
        };
    if source.trim().is_empty() {
        return Err(err(
            Some(1),
            Some(1),
            "the file is empty".into(),
            "run `beamops init` to write a complete beamops.yaml".into(),
        ));
    }
    // Deserialize straight from the text first: only then do type errors carry a position.
    let config: Config = serde_yaml_ng::from_str(source).map_err(|e| {
        let message = strip_location(&e.to_string());
        let (line, column) = match e.location() {
            Some(l) if !message.starts_with("missing field") => (Some(l.line()), Some(l.column())),
            _ => locate_error(source, &message),
        };
        let fix = if message.contains("did not find expected")
            || message.contains("mapping values are not allowed")
            || message.contains("while parsing")
            || message.contains("while scanning")
        {
            "fix the YAML syntax at that place (indentation, a missing `:` or quote)".to_string()
        } else {
            fix_for(&message)
        };
        err(line, column, with_suggestion(&message), fix)
    })?;

    let active: Vec<(Vec<String>, &String, &String)> = overrides
        .iter()
        .filter_map(|(name, raw)| override_path(name).map(|keys| (keys, name, raw)))
        .collect();
    let config = if active.is_empty() {
        config
    } else {
        let mut value: Value = serde_yaml_ng::from_str(source).expect("parsed above");
        for (keys, name, raw) in &active {
            set_path(&mut value, keys, raw).map_err(|message| ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("environment variable {name}: {message}"),
                fix: format!(
                    "unset {name} or give it a path of keys that exist, separated by `__`"
                ),
            })?;
        }
        let names: Vec<&str> = active.iter().map(|(_, n, _)| n.as_str()).collect();
        serde_yaml_ng::from_value(value).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!(
                "with overrides from {}: {}",
                names.join(", "),
                with_suggestion(&strip_location(&e.to_string()))
            ),
            fix: "correct or unset those BEAMOPS_* variables".into(),
        })?
    };

    if config.version != SCHEMA_VERSION {
        let (line, column) = locate_key(source, &["version"]);
        return Err(err(
            line,
            column,
            format!(
                "schema version {} is not known to this beamops (it reads version {SCHEMA_VERSION})",
                config.version
            ),
            format!("set `version: {SCHEMA_VERSION}` or upgrade beamops"),
        ));
    }
    if let Some(default) = &config.default_environment
        && !config.environments.contains_key(default)
    {
        let (line, column) = locate_key(source, &["default_environment"]);
        let names: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        return Err(err(
            line,
            column,
            format!("default_environment `{default}` is not one of the environments"),
            format!("use one of: {}", names.join(", ")),
        ));
    }
    if config.app.name.is_empty()
        || !config
            .app
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        let (line, column) = locate_key(source, &["app", "name"]);
        return Err(err(
            line,
            column,
            format!(
                "app.name `{}` cannot name an image or a stack",
                config.app.name
            ),
            "use lowercase letters, digits, `-` and `_` only".into(),
        ));
    }
    if !config.app.health_path.starts_with('/') {
        let (line, column) = locate_key(source, &["app", "health_path"]);
        return Err(err(
            line,
            column,
            format!("app.health_path `{}` is not a path", config.app.health_path),
            format!(
                "write it with a leading slash: `/{}`",
                config.app.health_path
            ),
        ));
    }
    let swarm = &config.chapters.swarm;
    if let Some(subnet) = &swarm.subnet
        && super::Ipv4Net::parse(subnet).is_none()
    {
        let (line, column) = locate_key(source, &["chapters", "swarm", "subnet"]);
        return Err(err(
            line,
            column,
            format!("chapters.swarm.subnet `{subnet}` is not an IPv4 network"),
            "write it as address/prefix with a prefix from 8 to 29, e.g. 10.213.0.0/24".into(),
        ));
    }
    // Written into the stack file as a Go duration: whole seconds or minutes only.
    if !swarm
        .update_monitor
        .strip_suffix('s')
        .or_else(|| swarm.update_monitor.strip_suffix('m'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        let (line, column) = locate_key(source, &["chapters", "swarm", "update_monitor"]);
        return Err(err(
            line,
            column,
            format!(
                "chapters.swarm.update_monitor `{}` is not a duration in seconds or minutes",
                swarm.update_monitor
            ),
            "write it like 45s or 2m".into(),
        ));
    }
    if swarm.endpoint_mode == super::EndpointMode::Dnsrr
        && swarm.publish.is_some()
        && swarm.publish_mode == super::PublishMode::Ingress
    {
        let (line, column) = locate_key(source, &["chapters", "swarm", "endpoint_mode"]);
        return Err(err(
            line,
            column,
            "chapters.swarm.endpoint_mode dnsrr cannot publish through the ingress mesh".into(),
            "set chapters.swarm.publish_mode: host, or endpoint_mode: vip".into(),
        ));
    }
    let [low, high] = config.chapters.distributed.distribution_ports;
    if low == 0 || low > high || (low..=high).contains(&4369) {
        let (line, column) = locate_key(source, &["chapters", "distributed", "distribution_ports"]);
        return Err(err(
            line,
            column,
            format!("chapters.distributed.distribution_ports [{low}, {high}] is not a port range"),
            "give [first, last] with first <= last, leaving out epmd's 4369, e.g. [9100, 9105]"
                .into(),
        ));
    }
    if config.chapters.distributed.net_ticktime < 4 {
        let (line, column) = locate_key(source, &["chapters", "distributed", "net_ticktime"]);
        return Err(err(
            line,
            column,
            format!(
                "chapters.distributed.net_ticktime {} is too short to tell a slow peer from a dead one",
                config.chapters.distributed.net_ticktime
            ),
            "use 4 seconds or more; 15 is the default, Erlang's own is 60".into(),
        ));
    }
    if config.chapters.distributed.poll_seconds == 0 {
        let (line, column) = locate_key(source, &["chapters", "distributed", "poll_seconds"]);
        return Err(err(
            line,
            column,
            "chapters.distributed.poll_seconds is 0".into(),
            "poll every 1 s or more; 5 is the default".into(),
        ));
    }
    for (name, env) in &config.environments {
        if env.replicas == 0 {
            let (line, column) = locate_key(source, &["environments", name, "replicas"]);
            return Err(err(
                line,
                column,
                format!("environments.{name}.replicas is 0"),
                "give at least 1 replica; use `beamops down` to stop an environment".into(),
            ));
        }
    }
    Ok(config)
}

/// `BEAMOPS_APP__PORT` → `["app", "port"]`; names without `__` are flags, not config keys,
/// except the top-level scalar `BEAMOPS_DEFAULT_ENVIRONMENT`.
fn override_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("BEAMOPS_")?;
    if rest == "DEFAULT_ENVIRONMENT" {
        return Some(vec!["default_environment".into()]);
    }
    if !rest.contains("__") {
        return None;
    }
    Some(rest.split("__").map(|k| k.to_ascii_lowercase()).collect())
}

fn set_path(root: &mut Value, keys: &[String], raw: &str) -> Result<(), String> {
    let parsed: Value = serde_yaml_ng::from_str(raw).unwrap_or(Value::String(raw.to_string()));
    let mut node = root;
    for (i, key) in keys.iter().enumerate() {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("`{}` is not a mapping", keys[..i].join(".")))?;
        let k = Value::String(key.clone());
        if i + 1 == keys.len() {
            map.insert(k, parsed);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    Err("empty key path".into())
}

fn strip_location(message: &str) -> String {
    // serde_yaml_ng appends " at line L column C"; we report the place separately.
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Typed errors from a `Value` carry no position, but they name the key path
/// (`app.port: invalid type…` or `unknown field `x``); find that key in the source.
fn locate_error(source: &str, message: &str) -> (Option<usize>, Option<usize>) {
    let (path, detail) = match message.split_once(": ") {
        Some((p, d)) if !p.contains(' ') => (p, d),
        _ => ("", message),
    };
    let mut keys: Vec<&str> = path
        .split('.')
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .collect();
    if let Some(field) = backticked_after(detail, "unknown field ") {
        keys.push(field);
    }
    if keys.is_empty() {
        return (None, None);
    }
    let (line, col) = locate_key(source, &keys);
    if line.is_some() {
        return (line, col);
    }
    // A missing field: point at its parent mapping.
    locate_key(source, &keys[..keys.len() - 1])
}

fn backticked_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// Find the line and column of a nested key by indentation, the way a person reads YAML.
pub(crate) fn locate_key(source: &str, keys: &[&str]) -> (Option<usize>, Option<usize>) {
    if keys.is_empty() {
        return (Some(1), Some(1));
    }
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    for (n, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(p) = parent_indent
            && indent <= p
        {
            // Left the parent mapping without finding the key.
            return (None, None);
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(['"', '\'']));
        if key == Some(keys[depth]) && parent_indent.is_none_or(|p| indent > p) {
            if depth + 1 == keys.len() {
                return (Some(n + 1), Some(indent + 1));
            }
            parent_indent = Some(indent);
            depth += 1;
        }
    }
    (None, None)
}

const KNOWN_KEYS: &[&str] = &[
    "version",
    "app",
    "image",
    "environments",
    "default_environment",
    "chapters",
    "worktree",
    "deploy",
    "release_command",
    "name",
    "otp_app",
    "elixir",
    "otp",
    "port",
    "health_path",
    "stack",
    "repository",
    "registry",
    "builder",
    "runner",
    "runtime_packages",
    "postgres",
    "provider",
    "docker_host",
    "advertise_addr",
    "replicas",
    "region",
    "managers",
    "workers",
    "domain",
    "protected",
    "foundation",
    "gitignore",
    "development",
    "app_port",
    "db_port",
    "allow_list",
    "deploy",
    "lock_timeout",
    "keep_releases",
];

fn with_suggestion(message: &str) -> String {
    let Some(field) = backticked_after(message, "unknown field ") else {
        return message.to_string();
    };
    // serde lists the expected keys: "expected one of `a`, `b`"; prefer those.
    let expected: Vec<&str> = message
        .split("expected ")
        .nth(1)
        .map(|e| e.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let candidates: &[&str] = if expected.is_empty() {
        KNOWN_KEYS
    } else {
        &expected
    };
    match nearest(field, candidates) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message.to_string(),
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

fn fix_for(message: &str) -> String {
    if message.contains("unknown field") {
        "rename or remove the key; every key is listed in docs/config.md".into()
    } else if message.contains("missing field") {
        "add the key; see docs/config.md for its meaning and an example".into()
    } else if message.contains("invalid type") || message.contains("invalid value") {
        "give the value the type docs/config.md names for this key".into()
    } else if message.contains("unknown variant") {
        "use one of the values listed in the message".into()
    } else {
        "see docs/config.md".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GOOD: &str = "version: 1\napp:\n  name: coordination\n  otp_app: coordination\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local: {}\n  staging:\n    provider: aws\n    replicas: 3\n";

    fn parse(src: &str) -> Result<Config, ConfigError> {
        load_str(Path::new("beamops.yaml"), src, &[])
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.app.port, 4000);
        assert_eq!(c.environments["staging"].replicas, 3);
        assert_eq!(c.default_environment_name(), "local");
        assert_eq!(
            c.builder_image(),
            "hexpm/elixir:1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim"
        );
    }

    #[test]
    fn unknown_key_names_line_column_and_suggests() {
        let src = GOOD.replace("    replicas: 3", "    replica: 3");
        let e = parse(&src).unwrap_err();
        assert_eq!((e.line, e.column), (Some(11), Some(5)), "{e}");
        assert!(e.message.contains("did you mean `replicas`"), "{e}");
    }

    #[test]
    fn wrong_type_points_at_the_key() {
        let src = GOOD.replace("  otp: 27.3.4.1\n", "  otp: 27.3.4.1\n  port: lots\n");
        let e = parse(&src).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
    }

    #[test]
    fn syntax_error_has_a_place() {
        let e = parse("version: 1\napp:\n  name: [unclosed\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn environment_overrides_single_values() {
        let c = load_str(
            Path::new("beamops.yaml"),
            GOOD,
            &[
                ("BEAMOPS_APP__PORT".into(), "4100".into()),
                ("BEAMOPS_ENVIRONMENTS__STAGING__REPLICAS".into(), "5".into()),
                ("BEAMOPS_PROJECT".into(), "/elsewhere".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.app.port, 4100);
        assert_eq!(c.environments["staging"].replicas, 5);
    }

    #[test]
    fn a_missing_environments_key_gives_a_usable_local() {
        let src = GOOD.split("environments:").next().unwrap();
        let c = parse(src).unwrap();
        assert_eq!(c.environments["local"].replicas, 1);
        assert_eq!(c.environments["local"].managers, 1);
    }

    #[test]
    fn default_environment_must_exist() {
        let e = parse(&format!("{GOOD}default_environment: prod\n")).unwrap_err();
        assert_eq!(e.line, Some(12));
        assert!(e.fix.contains("local, staging"));
    }
}
