use std::path::Path;

use serde_yaml_ng::Value;

use super::{Config, ConfigError, guard};

pub const CONFIG_FILE: &str = "beamops.yaml";

/// Load `beamops.yaml`, applying `BEAMOPS_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = read_bounded(path)?;
    let source = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        ConfigError {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "not UTF-8: byte {offset} (0x{:02x}) starts no UTF-8 character",
                e.as_bytes()[offset]
            ),
            fix: format!(
                "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {0} > {0}.new` and move it back), or retype that character",
                path.display()
            ),
        }
    })?;
    let overrides: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("BEAMOPS_"))
        .collect();
    load_str(path, &source, &overrides)
}

/// Is the file there but empty (whitespace only)? Commands for which beamops.yaml is optional
/// (`worktree`, `dedupe`, `coord`) read such a file as all defaults; the others refuse it.
pub fn is_blank(path: &Path) -> bool {
    read_bounded(path).is_ok_and(|bytes| bytes.iter().all(u8::is_ascii_whitespace))
}

/// Read at most [`guard::MAX_BYTES`] + 1 bytes: a huge file is refused without reading it all.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
        fix: if e.kind() == std::io::ErrorKind::NotFound {
            "run `beamops init` in the project root, or pass --project DIR".into()
        } else {
            "make it a readable file (check its permissions), or restore it from git".into()
        },
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(guard::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    Ok(bytes)
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
    guard::check(source).map_err(|e| err(Some(e.line), Some(e.column), e.message, e.fix))?;
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

    let active = active_overrides(path, &config, overrides)?;
    let config = if active.is_empty() {
        config
    } else {
        let base: Value = serde_yaml_ng::from_str(source).map_err(|e| {
            err(
                None,
                None,
                strip_location(&e.to_string()),
                fix_for(&e.to_string()),
            )
        })?;
        let mut value = base.clone();
        for (keys, name, raw) in &active {
            let blame = |message: String, fix: String| ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("environment variable {name}={raw}: {message}"),
                fix,
            };
            let unset = format!(
                "unset {name}, or name a key that exists (keys joined by `__`, e.g. BEAMOPS_APP__PORT)"
            );
            if keys.len() > 2
                && keys[0] == "environments"
                && !config.environments.contains_key(&keys[1])
            {
                let names: Vec<&str> = config.environments.keys().map(String::as_str).collect();
                let hint = nearest(&keys[1], &names)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                return Err(blame(
                    format!("no environment `{}` in {}{hint}", keys[1], path.display()),
                    format!("use one of: {}", names.join(", ")),
                ));
            }
            // Each variable on its own first, so an error names the variable that caused it.
            let mut alone = base.clone();
            set_path(&mut alone, keys, raw).map_err(|m| blame(m, unset.clone()))?;
            serde_yaml_ng::from_value::<Config>(alone).map_err(|e| {
                let message = with_suggestion(&strip_location(&e.to_string()));
                let fix = if message.contains("unknown field") {
                    unset.clone()
                } else {
                    format!("give {name} a value of the type docs/config.md names for this key")
                };
                blame(message, fix)
            })?;
            set_path(&mut value, keys, raw).map_err(|m| blame(m, unset.clone()))?;
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

    if let Some(p) = super::validate::first_problem(&config) {
        // A value set by a variable is that variable's fault, not the file's line.
        let by = active.iter().find(|(keys, _, _)| {
            let n = keys.len().min(p.path.len());
            n > 0 && keys[..n] == p.path[..n]
        });
        return Err(match by {
            Some((_, name, raw)) => ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("environment variable {name}={raw}: {}", p.message),
                fix: format!("{} (in {name})", p.fix),
            },
            None => {
                let keys: Vec<&str> = p.path.iter().map(String::as_str).collect();
                let (mut line, mut column) = locate_key(source, &keys);
                // A default the file does not spell out: point at the nearest parent it has.
                let mut n = keys.len();
                while line.is_none() && n > 1 {
                    n -= 1;
                    (line, column) = locate_key(source, &keys[..n]);
                }
                err(line, column, p.message, p.fix)
            }
        });
    }
    Ok(config)
}

/// One override: the key path it sets, the variable's name and its raw value.
type Override<'a> = (Vec<String>, &'a String, &'a String);

/// The overrides among `overrides`: every `BEAMOPS_*` variable that is not one of beamops's
/// own ([`super::variables`]) must name a key (`BEAMOPS_APP__PORT` → `["app", "port"]`;
/// a top-level value without `__`, like `BEAMOPS_DEFAULT_ENVIRONMENT`) and give it a value.
/// Keys below the top level are checked against the schema by the caller.
fn active_overrides<'a>(
    path: &Path,
    config: &Config,
    overrides: &'a [(String, String)],
) -> Result<Vec<Override<'a>>, ConfigError> {
    // Every top-level key with its value, defaults included, to tell a group from a value.
    // Made only when a variable names a key: a tenth of a plain `plan`'s instructions.
    let full = std::cell::LazyCell::new(|| serde_yaml_ng::to_value(config).unwrap_or(Value::Null));
    let mut active = Vec::new();
    for (name, raw) in overrides {
        let Some(rest) = name.strip_prefix("BEAMOPS_") else {
            continue;
        };
        if super::variables::is_beamops_variable(name) {
            continue;
        }
        let blame = |message: String, fix: String| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("environment variable {name}={raw}: {message}"),
            fix,
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            return Err(blame(
                "an empty key between `__`s names no configuration key".into(),
                format!(
                    "unset {name}, or join keys with exactly two underscores, e.g. BEAMOPS_APP__PORT"
                ),
            ));
        }
        if let [key] = keys.as_slice() {
            match full.get(key.as_str()) {
                Some(Value::Mapping(children)) => {
                    let example = if key == "environments" {
                        "BEAMOPS_ENVIRONMENTS__<ENV>__REPLICAS=…".to_string()
                    } else {
                        let child = children
                            .keys()
                            .find_map(Value::as_str)
                            .unwrap_or("KEY")
                            .to_ascii_uppercase();
                        format!("{name}__{child}=…")
                    };
                    return Err(blame(
                        format!("`{key}` is a group of keys, not a value"),
                        format!("set one key inside it, e.g. {example}, and unset {name}"),
                    ));
                }
                Some(_) if KNOWN_KEYS.contains(&key.as_str()) => {}
                _ => {
                    let mut candidates: Vec<String> = KNOWN_KEYS
                        .iter()
                        .filter(|k| !matches!(full.get(**k), Some(Value::Mapping(_))))
                        .map(|k| k.to_ascii_uppercase())
                        .collect();
                    candidates.extend(
                        super::variables::VARIABLES
                            .iter()
                            .map(|(v, _)| v.trim_start_matches("BEAMOPS_").to_string()),
                    );
                    let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
                    let hint = nearest(rest, &candidates)
                        .map(|n| format!("; did you mean BEAMOPS_{n}?"))
                        .unwrap_or_default();
                    return Err(blame(
                        format!(
                            "matches no configuration key and is not a variable beamops reads{hint}"
                        ),
                        format!(
                            "unset {name}, or name a key (keys joined by `__`, e.g. BEAMOPS_APP__PORT); docs/config.md lists the keys and beamops's own variables"
                        ),
                    ));
                }
            }
        }
        if raw.trim().is_empty() {
            return Err(blame(
                "an empty value: the key needs one".into(),
                format!("unset {name} to keep the file's value, or give it one"),
            ));
        }
        active.push((keys, name, raw));
    }
    Ok(active)
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
