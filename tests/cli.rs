//! First contact and bad input (issue 14): usage errors in the format asked for, closed pipes,
//! the whole configuration validated at load, help, and the committed example kept current.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{EXAMPLE, TestProject, beamops_in};

fn json_of(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

#[test]
fn every_usage_error_answers_json_on_stdout_when_json_was_asked_for() {
    let p = TestProject::new();
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["plan", "01", "--frmat", "json"], None),
        (&["plan", "01", "--format", "yaml"], None),
        (&["bogus", "--format", "json"], None),
        (&["--format", "json", "scale", "local", "abc"], None),
        (&["plan", "--format=json"], None),
        (&["up", "01", "--all", "--format", "json"], None),
        (&["plan"], Some("json")),
        (&["--nope"], Some("json")),
        // A `--format` missing its value leaves the choice to BEAMOPS_FORMAT.
        (&["coord", "claim", "f", "--format"], Some("json")),
        (&["deploy", "--lock-wait", "soon", "--format", "json"], None),
    ];
    for (args, env) in cases {
        let mut cmd = p.beamops();
        cmd.args(*args);
        if let Some(format) = env {
            cmd.env("BEAMOPS_FORMAT", format);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let report = json_of(&out.stdout);
        assert_eq!(report["exit"], 1, "{args:?}: {report}");
        assert_eq!(report["kind"], "usage", "{args:?}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(!error.is_empty() && !error.starts_with("error:"), "{error}");
        // The person still reads it on stderr.
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    // Text asked for (or nothing said): stdout stays empty. A `--format` missing its value
    // (last, empty, or followed by another flag) asks for no format at all.
    for args in [
        &["plan", "--format", "text"][..],
        &["bogus"][..],
        &["coord", "claim", "f", "--format"][..],
        &["plan", "01", "--format="][..],
        &["plan", "--format", "--all"][..],
    ] {
        let out = p.beamops().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// A pipe whose reading end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn assert_quiet_end(cmd: &mut Command, code: i32, what: &str) {
    let mut child = cmd
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(code),
        "{what}: {status:?}, stderr: {stderr}"
    );
    // A command that failed says so on stderr; nothing says anything about the pipe.
    let bad: &[&str] = if code == 1 {
        &["panicked", "Broken pipe"]
    } else {
        &["panicked", "Broken pipe", "error"]
    };
    for bad in bad {
        assert!(!stderr.contains(bad), "{what}: stderr says {bad}: {stderr}");
    }
}

fn bin(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beamops"));
    cmd.current_dir(dir).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMOPS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn a_closed_stdout_ends_quietly_in_every_format() {
    let p = TestProject::new();
    for format in ["text", "json"] {
        assert_quiet_end(
            bin(p.path()).args(["chapters", "--format", format]),
            0,
            &format!("chapters {format}"),
        );
        // Errors too: the JSON error object has nowhere to go either.
        assert_quiet_end(
            bin(p.path()).args(["plan", "99", "--format", format]),
            1,
            &format!("plan error {format}"),
        );
    }
    assert_quiet_end(
        bin(p.path()).args(["completions", "bash"]),
        0,
        "completions",
    );
    assert_quiet_end(bin(p.path()).arg("--help"), 0, "help");

    // dedupe: a report (exit 2: duplicates), an apply and its undo, in both formats.
    let dir = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\nset -eu\necho building the release for production\n";
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("build.sh"), script).unwrap();
    }
    for format in ["text", "json"] {
        assert_quiet_end(
            bin(dir.path()).args(["dedupe", "--format", format]),
            2,
            &format!("dedupe {format}"),
        );
    }
    let applied = bin(dir.path())
        .args(["dedupe", "--apply", "--format", "json"])
        .output()
        .unwrap();
    let report = json_of(&applied.stdout);
    let manifest = report["apply"]["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest in {report}"))
        .to_string();
    assert_quiet_end(
        bin(dir.path()).args(["dedupe", "--undo", &manifest, "--format", "json"]),
        0,
        "dedupe --undo json",
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b/build.sh")).unwrap(),
        script
    );
}

#[test]
fn a_closed_stderr_ends_quietly_too() {
    let p = TestProject::new();
    let mut child = bin(p.path())
        .args(["plan", "99"])
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

/// `(what, edit of the example's beamops.yaml, text the error must hold)`.
type Edit = Box<dyn Fn(&str) -> String>;

fn validation_table() -> Vec<(&'static str, Edit, &'static str)> {
    let set = |key: &'static str, value: &'static str| -> Box<dyn Fn(&str) -> String> {
        Box::new(move |yaml: &str| {
            let mut out = String::new();
            for line in yaml.lines() {
                if line.trim_start().starts_with(&format!("{key}:")) {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    out += &format!("{indent}{key}: {value}\n");
                } else {
                    out += &format!("{line}\n");
                }
            }
            out
        })
    };
    let append = |text: &'static str| -> Box<dyn Fn(&str) -> String> {
        Box::new(move |yaml: &str| format!("{yaml}{text}"))
    };
    vec![
        (
            "converge abc",
            append("chapters:\n  swarm:\n    converge_timeout: abc\n"),
            "chapters.swarm.converge_timeout",
        ),
        (
            "converge negative",
            append("chapters:\n  swarm:\n    converge_timeout: -5m\n"),
            "converge_timeout",
        ),
        (
            "converge empty",
            append("chapters:\n  swarm:\n    converge_timeout: \"\"\n"),
            "is empty",
        ),
        (
            "converge huge",
            append("chapters:\n  swarm:\n    converge_timeout: 99999999999999999999h\n"),
            "converge_timeout",
        ),
        (
            "converge unitless",
            append("chapters:\n  swarm:\n    converge_timeout: \"300\"\n"),
            "converge_timeout",
        ),
        (
            "verify timeout",
            append("chapters:\n  distributed:\n    verify_timeout: soon\n"),
            "verify_timeout",
        ),
        (
            "lock timeout",
            append("deploy:\n  lock_timeout: -5m\n"),
            "deploy.lock_timeout",
        ),
        (
            "otp_app NUL",
            set("otp_app", "\"coord\\0ination\""),
            "U+0000",
        ),
        (
            "otp_app emoji",
            set("otp_app", "coordination🚀"),
            "app.otp_app",
        ),
        (
            "otp_app zero-width",
            set("otp_app", "coord\u{200b}ination"),
            "U+200B",
        ),
        (
            "otp_app capital",
            set("otp_app", "Coordination"),
            "app.otp_app",
        ),
        (
            "repository",
            set("repository", "'Demo:bad tag'"),
            "image.repository",
        ),
        (
            "managers 0",
            append("  lab:\n    managers: 0\n"),
            "environments.lab.managers",
        ),
        (
            "managers even",
            append("  lab:\n    managers: 2\n"),
            "odd number",
        ),
        (
            "app_port 0",
            append("chapters:\n  development:\n    app_port: 0\n"),
            "app_port is 0",
        ),
        (
            "app_port = db_port",
            append("chapters:\n  development:\n    app_port: 5432\n"),
            "app_port 5432 is also chapters.development.db_port",
        ),
        (
            "db_port = the default app_port (app.port)",
            append("chapters:\n  development:\n    db_port: 4000\n"),
            "app.port (the default app_port) 4000 is also chapters.development.db_port",
        ),
        (
            "update_monitor 1s",
            append("chapters:\n  swarm:\n    update_monitor: 1s\n"),
            "shorter than one healthcheck interval",
        ),
        (
            "update_monitor 0m",
            append("chapters:\n  swarm:\n    update_monitor: 0m\n"),
            "shorter than one healthcheck interval",
        ),
        (
            "update_monitor 1.5s",
            append("chapters:\n  swarm:\n    update_monitor: 1.5s\n"),
            "not a duration in seconds or minutes",
        ),
        ("app.port 0", set("port", "0"), "app.port is 0"),
        ("otp string", set("otp", "\"string\""), "app.otp"),
        ("elixir string", set("elixir", "latest"), "app.elixir"),
        (
            "runtime package",
            append("  runtime_packages: [\"libssl3; rm -rf /\"]\n").into_image(),
            "runtime_packages",
        ),
    ]
}

/// Append a key under `image:` rather than at the end of the file.
trait IntoImage {
    fn into_image(self) -> Box<dyn Fn(&str) -> String>;
}

impl IntoImage for Box<dyn Fn(&str) -> String> {
    fn into_image(self) -> Box<dyn Fn(&str) -> String> {
        Box::new(move |yaml: &str| {
            let appended = self("");
            yaml.replacen("image:\n", &format!("image:\n{appended}"), 1)
        })
    }
}

#[test]
fn every_value_is_validated_at_load_with_its_place_and_a_fix() {
    let p = TestProject::new();
    let original = p.read("beamops.yaml");
    let place = regex::Regex::new(r"beamops\.yaml:\d+:\d+: ").unwrap();
    for (what, edit, expected) in validation_table() {
        let yaml = edit(&original);
        assert_ne!(yaml, original, "{what}: the edit changed nothing");
        p.write("beamops.yaml", &yaml);
        for args in [
            &["doctor", "--format", "json"][..],
            &["plan", "01", "--format", "json"][..],
        ] {
            let out = p.beamops().args(args).output().unwrap();
            let report = json_of(&out.stdout);
            let text = if args[0] == "doctor" {
                assert_eq!(out.status.code(), Some(3), "{what}: doctor {report}");
                let finding = &report["findings"][0];
                assert_eq!(finding["check"], "configuration");
                assert_eq!(finding["ok"], false, "{what}: {finding}");
                format!("{}\n  fix: {}", finding["detail"], finding["fix"])
            } else {
                assert_eq!(out.status.code(), Some(1), "{what}: plan {report}");
                report["error"].as_str().unwrap().to_string()
            };
            assert!(text.contains(expected), "{what}: {text}");
            assert!(
                place.is_match(&text),
                "{what}: no file:line:column in {text}"
            );
            assert!(text.contains("fix: "), "{what}: no fix in {text}");
        }
    }
    p.write("beamops.yaml", &original);
    p.beamops()
        .args(["doctor", "--format", "json"])
        .assert()
        .code(0);
}

#[test]
fn the_line_and_column_point_at_the_bad_value() {
    let p = TestProject::new();
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &yaml.replace("  otp_app: coordination", "  otp_app: Coord"),
    );
    let line = yaml.lines().position(|l| l.contains("otp_app")).unwrap() + 1;
    let out = p.beamops().args(["plan", "01"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("beamops.yaml:{line}:3: app.otp_app `Coord`")),
        "{stderr}"
    );
}

#[test]
fn invalid_utf8_names_its_byte_and_a_real_fix() {
    let p = TestProject::new();
    let mut bytes = p.read("beamops.yaml").into_bytes();
    let at = bytes
        .windows(12)
        .position(|w| w == b"coordination")
        .unwrap();
    bytes[at + 2] = 0xff;
    std::fs::write(p.file("beamops.yaml"), &bytes).unwrap();
    let out = p
        .beamops()
        .args(["plan", "01", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = json_of(&out.stdout)["error"].as_str().unwrap().to_string();
    assert!(error.contains(&format!("byte {}", at + 2)), "{error}");
    assert!(
        error.contains("UTF-8") && !error.contains("beamops init"),
        "{error}"
    );
}

#[test]
fn overrides_that_match_no_key_or_hold_a_bad_value_name_the_variable() {
    let line_of_file = regex::Regex::new(r"beamops\.yaml:\d+").unwrap();
    let p = TestProject::new();
    let cases = [
        ("BEAMOPS_APP__PROT", "4100", "unknown field `prot`"),
        (
            "BEAMOPS_ENVIRONMENTS__STAGNG__REPLICAS",
            "2",
            "did you mean `staging`",
        ),
        ("BEAMOPS_APP__PORT", "0", "app.port is 0"),
        ("BEAMOPS_APP__PORT", "lots", "invalid type"),
        (
            "BEAMOPS_CHAPTERS__SWARM__CONVERGE_TIMEOUT",
            "-5m",
            "converge_timeout",
        ),
        ("BEAMOPS_ENVIRONMENTS__STAGING__MANAGERS", "4", "odd number"),
        (
            "BEAMOPS_CHAPTERS__SWARM__UPDATE_MONITOR",
            "1s",
            "shorter than one healthcheck interval",
        ),
        (
            "BEAMOPS_CHAPTERS__DEVELOPMENT__APP_PORT",
            "5432",
            "is also chapters.development.db_port",
        ),
        // Top-level names (no `__`): a misspelt key or variable, with the nearest real one.
        (
            "BEAMOPS_DEFAULT_ENVIRONEMNT",
            "staging",
            "did you mean BEAMOPS_DEFAULT_ENVIRONMENT?",
        ),
        ("BEAMOPS_PROJCT", "/tmp", "did you mean BEAMOPS_PROJECT?"),
        ("BEAMOPS_BOGUS", "1", "matches no configuration key"),
        ("BEAMOPS_", "1", "names no configuration key"),
        // A group of keys is not a value: the fix names a key inside it.
        (
            "BEAMOPS_APP",
            "1",
            "fix: set one key inside it, e.g. BEAMOPS_APP__NAME=…",
        ),
        ("BEAMOPS_CHAPTERS", "x", "BEAMOPS_CHAPTERS__"),
        (
            "BEAMOPS_ENVIRONMENTS",
            "staging",
            "BEAMOPS_ENVIRONMENTS__<ENV>__REPLICAS",
        ),
        ("BEAMOPS_APP____PORT", "4100", "an empty key between `__`s"),
        ("BEAMOPS_APP__PORT__X", "1", "not a mapping"),
        // A key that needs a value gets one.
        ("BEAMOPS_DEFAULT_ENVIRONMENT", "", "an empty value"),
        ("BEAMOPS_APP__PORT", " ", "an empty value"),
        ("BEAMOPS_APP__NAME", "", "an empty value"),
    ];
    for (name, value, expected) in cases {
        let out = p
            .beamops()
            .env(name, value)
            .args(["plan", "01", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let error = json_of(&out.stdout)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(&format!("environment variable {name}={value}")),
            "{error}"
        );
        assert!(error.contains(expected), "{name}: {error}");
        // The variable is to blame, not a line of the file.
        assert!(!line_of_file.is_match(&error), "{error}");
    }
    p.beamops()
        .env("BEAMOPS_ENVIRONMENTS__STAGING__MANAGERS", "3")
        .env("BEAMOPS_DEFAULT_ENVIRONMENT", "staging")
        // The deploy tests' short window (one healthcheck interval) stays valid.
        .env("BEAMOPS_CHAPTERS__SWARM__UPDATE_MONITOR", "5s")
        .args(["plan", "01"])
        .assert()
        .code(2);
}

/// beamops's own `BEAMOPS_*` variables — flags, secrets, test gates `.ci/run` exports into every
/// command it runs — are never taken for misspelt keys; and the one list of them covers every
/// one the sources read, and docs/config.md names each.
#[test]
fn beamops_own_variables_are_never_config_overrides() {
    use beamops::config::variables::{PREFIXES, VARIABLES, is_beamops_variable};
    let p = TestProject::new();
    let key = tempfile::tempdir().unwrap();
    let baseline = p.beamops().args(["plan", "01"]).output().unwrap();
    let mut cmd = p.beamops();
    for (name, _) in VARIABLES {
        let value = match *name {
            "BEAMOPS_PROJECT" => p.path().to_str().unwrap().to_string(),
            "BEAMOPS_ENV" => "local".into(),
            "BEAMOPS_FORMAT" => "text".into(),
            "BEAMOPS_AGE_KEY_FILE" => key.path().join("age.key").to_str().unwrap().into(),
            // A directory of extra chapters that holds none.
            "BEAMOPS_CHAPTERS_DIR" => {
                std::fs::create_dir_all(key.path().join("chapters")).unwrap();
                key.path().to_str().unwrap().into()
            }
            // Set, it turns the binary into the shell's completer: tested in completions.
            "BEAMOPS_COMPLETE" => continue,
            _ => "1".into(),
        };
        cmd.env(name, value);
    }
    for prefix in PREFIXES {
        cmd.env(
            format!("{prefix}SECRET_KEY_BASE"),
            "coordination_secret_key_base_v9",
        );
    }
    let out = cmd.args(["plan", "01"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        baseline.status.code(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, baseline.stdout);

    // Every name the sources read or set: std::env::var*, clap's `env =`, `.env(…)`, constants,
    // `${…}` in scripts and templates, `.ci/run` exports.
    let read = regex::Regex::new(
        r#"(?:var(?:_os)?\(|env(?: = |\()|: &str = |\[|, |export |\$\{\{?)"?(BEAMOPS_[A-Z0-9_]*[A-Z0-9])\b"#,
    )
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join(".ci/run")];
    for dir in ["src", "tests", "templates"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs" || e == "j2") {
                    files.push(path);
                }
            }
        }
    }
    let mut found = std::collections::BTreeSet::new();
    for file in &files {
        // The configuration loader's own tests use deliberately wrong names.
        if file.ends_with("src/config/load.rs") || file.ends_with("tests/cli.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for c in read.captures_iter(&text) {
            let name = c[1].to_string();
            if !name.contains("__") {
                found.insert((name, file.strip_prefix(root).unwrap().display().to_string()));
            }
        }
    }
    assert!(
        found.iter().any(|(n, _)| n == "BEAMOPS_HEAVY_TESTS"),
        "{found:?}"
    );
    let unlisted: Vec<_> = found
        .iter()
        .filter(|(n, _)| !is_beamops_variable(n))
        .collect();
    assert!(
        unlisted.is_empty(),
        "read by beamops but missing from src/config/variables.rs: {unlisted:?}"
    );
    let docs = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
    for name in VARIABLES
        .iter()
        .map(|(n, _)| *n)
        .chain(PREFIXES.iter().copied())
    {
        assert!(
            docs.contains(&format!("`{name}")),
            "docs/config.md lacks {name}"
        );
        assert!(
            found.iter().any(|(n, _)| n == name || n.starts_with(name)) || name.ends_with('_'),
            "{name} is listed but nothing reads it"
        );
    }
}

/// beamops.yaml is optional for `worktree`, `dedupe` and `coord`: an empty one is all defaults
/// for each of them, while a broken one is still refused with its place.
#[test]
fn an_empty_beamops_yaml_is_the_defaults_for_worktree_dedupe_and_coord() {
    let p = TestProject::new();
    p.commit_all("initial");
    let wt = tempfile::tempdir().unwrap();
    let wt_path = wt.path().join("wt-empty-config");
    let status = Command::new("git")
        .current_dir(p.path())
        .args(["worktree", "add", "-q", "-b", "side"])
        .arg(&wt_path)
        .status()
        .unwrap();
    assert!(status.success());
    for empty in ["", "\n  \n\t\n"] {
        p.write("beamops.yaml", empty);
        for args in [
            &["worktree", "list"][..],
            &["worktree", "prune"][..],
            &["dedupe"][..],
            &["coord", "list"][..],
        ] {
            let out = p.beamops().args(args).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?} with {empty:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = p
            .beamops()
            .args(["worktree", "list", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("wt-empty-config"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    p.write("beamops.yaml", "");
    let out = p
        .beamops()
        .args(["worktree", "remove", wt_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!wt_path.exists());
    // Not empty but broken: still refused, with the file and line.
    p.write("beamops.yaml", "version: [\n");
    let out = p.beamops().args(["worktree", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("beamops.yaml:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn yaml_bombs_are_refused_before_parsing() {
    let p = TestProject::new();
    let original = p.read("beamops.yaml");
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..40 {
        let prev = format!("*a{}", i - 1);
        laughs += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 9].join(", "));
    }
    let cases = [
        ("aliases", format!("{original}{laughs}"), "aliases"),
        (
            "flow nesting",
            format!(
                "{original}deep: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "levels deep",
        ),
        (
            "block nesting",
            format!("{original}deep:\n  {}x\n", "- ".repeat(100_000)),
            "levels deep",
        ),
        (
            "size",
            format!("{original}#{}\n", "x".repeat(2 * 1024 * 1024)),
            "bytes",
        ),
    ];
    for (what, text, expected) in cases {
        p.write("beamops.yaml", &text);
        let out = p
            .beamops()
            .args(["plan", "01", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        let error = json_of(&out.stdout)["error"].as_str().unwrap().to_string();
        assert!(error.contains("beamops.yaml:"), "{what}: {error}");
        assert!(error.contains(expected), "{what}: {error}");
    }
}

#[test]
fn versions_agree_compares_what_tool_versions_pins() {
    let p = TestProject::new();
    p.write(".tool-versions", "erlang 26.2.5\nelixir 1.15.7-otp-26\n");
    let out = p
        .beamops()
        .args(["plan", "01", "--format", "json"])
        .output()
        .unwrap();
    let report = json_of(&out.stdout);
    let action = report["chapters"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "versions-agree")
        .unwrap()
        .clone();
    assert_eq!(action["status"], "failed", "{action}");
    assert!(
        action["detail"].as_str().unwrap().contains("1.15.7"),
        "{action}"
    );
    // Once beamops wrote the file itself, the rendering is what counts.
    std::fs::remove_file(p.file(".tool-versions")).unwrap();
    p.beamops().args(["up", "01"]).assert().code(0);
    p.beamops().args(["plan", "01"]).assert().code(0);
}

#[test]
fn help_describes_every_argument_and_lists_only_flags_a_command_reads() {
    let p = TestProject::new();
    let help = |args: &[&str]| {
        let out = p.beamops().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let chapters = help(&["chapters", "--help"]);
    for flag in ["--message", "--lock-wait", "--yes"] {
        assert!(
            !chapters.contains(flag),
            "chapters lists {flag}:\n{chapters}"
        );
    }
    let deploy = help(&["deploy", "--help"]);
    for flag in ["--message", "--lock-wait", "--yes"] {
        assert!(deploy.contains(flag), "deploy lacks {flag}:\n{deploy}");
    }
    // Hidden is not refused: the flag still works where it is harmless.
    p.beamops().args(["chapters", "--yes"]).assert().code(0);
    assert!(help(&["help", "--help"]).contains("Usage: beamops"));
    // Every positional argument of every subcommand says what it is, and no description is
    // cut short at a full stop clap strips.
    let mut missing = Vec::new();
    let cmd = beamops_cli_command();
    let plan_about = cmd
        .find_subcommand("plan")
        .unwrap()
        .get_about()
        .unwrap()
        .to_string();
    assert!(
        plan_about.ends_with("(exit 2 when anything would change)"),
        "{plan_about}"
    );
    walk_positionals(&cmd, &mut Vec::new(), &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without a description: {missing:?}"
    );
    let plan = p.beamops().arg("plan").output().unwrap();
    assert!(String::from_utf8_lossy(&plan.stderr).contains("--all"));
}

/// The whole command tree, every subcommand defined: a run defines only the one it parses
/// (`cli::Lazy`), so a walk over an unbuilt tree would find no arguments to check.
fn beamops_cli_command() -> clap::Command {
    let mut cmd = beamops::cli::command();
    cmd.build();
    cmd
}

fn walk_positionals(cmd: &clap::Command, path: &mut Vec<String>, missing: &mut Vec<String>) {
    if cmd.get_name() == "help" {
        return;
    }
    path.push(cmd.get_name().to_string());
    for arg in cmd.get_arguments() {
        if !arg.is_hide_set()
            && arg.get_help().is_none()
            && arg.get_id() != "help"
            && arg.get_id() != "version"
        {
            missing.push(format!("{} {}", path.join(" "), arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        walk_positionals(sub, path, missing);
    }
    path.pop();
}

/// Every command with an ENV argument takes `--env` after its name too (clap gives a
/// subcommand the global flag only when none of its own arguments shares the flag's id), and
/// ENV and a typed `--env` that disagree are an error — BEAMOPS_ENV is only a default.
#[test]
fn env_flag_is_read_wherever_an_env_argument_is_and_never_silently_overruled() {
    /// A command with an ENV argument: its words, whether ENV is required, and a value for
    /// each required argument after ENV.
    struct WithEnv {
        words: Vec<String>,
        required: bool,
        rest: Vec<String>,
    }
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, found: &mut Vec<WithEnv>) {
        path.push(cmd.get_name().to_string());
        let positionals: Vec<&clap::Arg> =
            cmd.get_arguments().filter(|a| a.is_positional()).collect();
        if let Some(at) = positionals.iter().position(|a| {
            a.get_value_names()
                .is_some_and(|n| n.iter().any(|n| n == "ENV"))
        }) {
            found.push(WithEnv {
                words: path[1..].to_vec(),
                required: positionals[at].is_required_set(),
                rest: positionals[at + 1..]
                    .iter()
                    .filter(|a| a.is_required_set())
                    .map(|_| "2".to_string())
                    .collect(),
            });
        }
        for sub in cmd.get_subcommands() {
            walk(sub, path, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    walk(&beamops_cli_command(), &mut Vec::new(), &mut found);
    let names: Vec<String> = found.iter().map(|c| c.words.join(" ")).collect();
    for expected in [
        "deploy",
        "rollback",
        "ps",
        "logs",
        "console",
        "lock status",
        "scale",
        "secrets set",
        "secrets edit",
        "secrets push-github",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    let p = common::example_copy("envflag");
    for c in &found {
        let run = |flag: Option<&str>, positional: Option<&str>, var: Option<&str>| {
            let mut cmd = p.beamops();
            cmd.args(&c.words).env_remove("BEAMOPS_ENV");
            if let Some(flag) = flag {
                cmd.args(["--env", flag]);
            }
            if let Some(positional) = positional {
                cmd.arg(positional).args(&c.rest);
            }
            if let Some(var) = var {
                cmd.env("BEAMOPS_ENV", var);
            }
            let out = cmd.write_stdin("").output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let path = &c.words;
        // --env after the command is read: an unknown one is named.
        if !c.required {
            let (code, said) = run(Some("nosuch"), None, None);
            assert_eq!(code, Some(1), "{path:?}: {said}");
            assert!(said.contains("no environment `nosuch`"), "{path:?}: {said}");
        }
        // ENV beside a different --env: refused, naming both.
        let (code, said) = run(Some("nosuch"), Some("staging"), None);
        assert_eq!(code, Some(1), "{path:?}: {said}");
        assert!(
            said.contains("two environments given: ENV `staging` and --env `nosuch`"),
            "{path:?}: {said}"
        );
        // BEAMOPS_ENV is a default: ENV wins over it (the command then fails or not for
        // its own reasons, never because of the variable).
        let (_, said) = run(None, Some("nosuch2"), Some("nosuch"));
        assert!(
            said.contains("no environment `nosuch2`"),
            "{path:?}: {said}"
        );
    }
}

#[test]
fn chapters_not_implemented_are_described_as_planned() {
    let p = TestProject::new();
    let out = p.beamops().arg("chapters").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for block in text
        .split("\nchapter-")
        .filter(|b| b.contains("[not implemented]"))
    {
        assert!(block.contains("planned: "), "{block}");
        assert!(!block.contains("\n    here: "), "{block}");
    }
}

#[test]
fn init_explains_its_versions_and_adds_environments_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(EXAMPLE).join("mix.exs"),
        dir.path().join("mix.exs"),
    )
    .unwrap();
    let out = beamops_in(dir.path()).arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("there is no .tool-versions") && said.contains("Debian trixie"),
        "{said}"
    );
    let yaml = std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap();
    assert!(!yaml.contains("staging") && !yaml.contains("aws"), "{yaml}");
    std::fs::remove_file(dir.path().join("beamops.yaml")).unwrap();
    beamops_in(dir.path())
        .args(["init", "--add-env", "staging", "--add-env", "production"])
        .assert()
        .code(0);
    let yaml = std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap();
    assert!(yaml.contains("  staging:\n    provider: aws"), "{yaml}");
    assert!(yaml.contains("    protected: true"), "{yaml}");
}

#[test]
fn doctor_prints_a_fix_once_outside_a_project() {
    let dir = tempfile::tempdir().unwrap();
    let out = beamops_in(dir.path()).arg("doctor").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("beamops init").count(), 1, "{text}");
}

#[test]
fn quiet_plan_prints_only_what_would_change() {
    let p = TestProject::new();
    p.beamops().args(["up", "01"]).assert().code(0);
    let out = p.beamops().args(["plan", "01", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    p.write(".tool-versions", "erlang 26\n");
    let out = p.beamops().args(["plan", "01", "-q"]).output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "chapter-01 conflict .tool-versions\nchapter-01 failed versions-agree\n"
    );
    let forced = p.beamops().args(["up", "01", "--force"]).output().unwrap();
    let text = String::from_utf8(forced.stdout).unwrap();
    assert!(
        text.contains("overwrote .tool-versions") && !text.contains("conflict"),
        "{text}"
    );
}

/// The committed example is exactly what beamops renders today, as `dist generate --check`:
/// rendered in a copy, `plan` finds no file to change and no lock record to rewrite — whatever
/// the clone's origin (a local path, as CI clones, or a web address).
#[test]
fn the_committed_example_is_what_beamops_renders_today() {
    for origin in [EXAMPLE, "https://github.com/acme/beamops.git"] {
        let copy = example_with_origin(origin);
        let (stale, lock) = plan_example(copy.path());
        assert!(
            stale.is_empty() && lock == "unchanged",
            "examples/coordination is not what beamops renders (origin {origin}, lock: {lock}); re-render it: {stale:#?}"
        );
        let dockerfile = std::fs::read_to_string(copy.path().join("Dockerfile")).unwrap();
        assert!(!dockerfile.contains("image.source"), "{dockerfile}");
    }
}

/// The image's source label: the origin's web address, never a local path.
#[test]
fn the_image_source_label_is_a_web_address_or_absent() {
    for (origin, label) in [
        ("/work/somewhere/beamops", None),
        (
            "git@github.com:Acme/Beamops.git",
            Some("https://github.com/Acme/Beamops"),
        ),
        (
            "https://ci:secret@git.example.com/a/b.git",
            Some("https://git.example.com/a/b"),
        ),
    ] {
        let copy = example_with_origin(origin);
        let yaml = std::fs::read_to_string(copy.path().join("beamops.yaml")).unwrap();
        std::fs::write(
            copy.path().join("beamops.yaml"),
            yaml.replace("  source: \"\"\n", ""),
        )
        .unwrap();
        let (stale, _) = plan_example(copy.path());
        let diff = stale.join("\n");
        match label {
            None => assert!(stale.is_empty(), "{origin}: {diff}"),
            Some(url) => {
                assert!(
                    diff.contains(&format!(
                        "+      org.opencontainers.image.source=\\\"{url}\\\""
                    )),
                    "{origin}: {diff}"
                );
                assert!(!diff.contains("secret"), "{diff}");
            }
        }
    }
}

fn example_with_origin(origin: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(Path::new(EXAMPLE), copy.path());
    let repo = git2::Repository::init(copy.path()).unwrap();
    repo.remote("origin", origin).unwrap();
    copy
}

/// `plan` of the chapters the example's lock records: the files it would change, and `lock`.
fn plan_example(dir: &Path) -> (Vec<String>, String) {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("beamops.lock")).unwrap()).unwrap();
    let mut chapters: Vec<String> = lock["files"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["chapter"].as_str().unwrap()[..2].to_string())
        .collect();
    chapters.sort();
    chapters.dedup();
    let out = beamops_in(dir)
        .args(["plan", "--format", "json"])
        .args(&chapters)
        .output()
        .unwrap();
    let report = json_of(&out.stdout);
    let mut stale = Vec::new();
    for chapter in report["chapters"].as_array().unwrap() {
        for file in chapter["files"].as_array().unwrap() {
            if file["status"] != "unchanged" {
                stale.push(format!(
                    "{} {}\n{}",
                    file["status"], file["path"], file["diff"]
                ));
            }
        }
    }
    (
        stale,
        report["lock"].as_str().unwrap_or_default().to_string(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() == "_build" || entry.file_name() == "deps" {
                continue;
            }
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What the registered shell function gets on Tab (fish's protocol: one `value\thelp` a line).
fn complete(dir: &Path, words: &[&str]) -> Vec<String> {
    let out = bin(dir)
        .env("BEAMOPS_COMPLETE", "fish")
        .arg("--")
        .arg("beamops")
        .args(words)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// `beamops help <command> <Tab>` offers the command's own subcommands, at every depth: clap
/// copies the tree into its `help` subcommand when it builds the root, so a subcommand defined
/// late (`cli::Lazy`) would be copied without them.
#[test]
fn help_completes_every_nested_subcommand() {
    fn walk(
        cmd: &clap::Command,
        path: &mut Vec<String>,
        found: &mut Vec<(Vec<String>, Vec<String>)>,
    ) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            path.push(sub.get_name().to_string());
            let children: Vec<String> = sub
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .filter(|n| n != "help")
                .collect();
            if !children.is_empty() {
                found.push((path.clone(), children));
            }
            walk(sub, path, found);
            path.pop();
        }
    }
    let mut nested = Vec::new();
    walk(&beamops_cli_command(), &mut Vec::new(), &mut nested);
    let paths: Vec<String> = nested.iter().map(|(p, _)| p.join(" ")).collect();
    for expected in [
        "images",
        "secrets",
        "secrets recipients",
        "lock",
        "worktree",
        "coord",
    ] {
        assert!(paths.contains(&expected.to_string()), "{paths:?}");
    }
    let p = TestProject::new();
    for (path, children) in &nested {
        let mut words = vec!["help"];
        words.extend(path.iter().map(String::as_str));
        words.push("");
        let offered = complete(p.path(), &words);
        for child in children {
            assert!(
                offered.contains(child),
                "help {path:?} <Tab> lacks {child}: {offered:?}"
            );
        }
    }
}

#[test]
fn completions_offer_chapters_environments_worktrees_and_manifests() {
    let p = TestProject::new();
    let chapters = complete(p.path(), &["plan", ""]);
    assert!(
        chapters.contains(&"chapter-08".to_string()) && chapters.contains(&"swarm".to_string()),
        "{chapters:?}"
    );
    assert!(complete(p.path(), &["down", "sw"]).contains(&"swarm".to_string()));
    let envs = complete(p.path(), &["deploy", ""]);
    for env in ["local", "staging", "production"] {
        assert!(envs.contains(&env.to_string()), "{envs:?}");
    }
    assert_eq!(
        complete(p.path(), &["--env", "sta"]),
        vec!["staging".to_string()]
    );
    assert!(complete(p.path(), &["ps", ""]).contains(&"production".to_string()));

    // A linked worktree and a dedupe manifest of this repository.
    p.write(
        "a/run.sh",
        "#!/bin/sh\necho the same script in two places\n",
    );
    p.write(
        "b/run.sh",
        "#!/bin/sh\necho the same script in two places\n",
    );
    p.commit_all("scripts");
    let repo = git2::Repository::open(p.path()).unwrap();
    let linked = tempfile::tempdir().unwrap();
    repo.worktree("feature-x", &linked.path().join("fx"), None)
        .unwrap();
    assert!(complete(p.path(), &["worktree", "remove", ""]).contains(&"feature-x".to_string()));
    let applied = bin(p.path())
        .args(["dedupe", "--apply", "--format", "json"])
        .output()
        .unwrap();
    let manifest = json_of(&applied.stdout)["apply"]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let stem = Path::new(&manifest)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        complete(p.path(), &["dedupe", "--undo", ""]).contains(&stem),
        "{stem}"
    );
    // What it completes is what the command takes.
    bin(p.path())
        .args(["dedupe", "--undo", &stem, "-q"])
        .status()
        .map(|s| assert_eq!(s.code(), Some(0)))
        .unwrap();

    // `completions <shell>` registers that function for each shell clap knows.
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bin(p.path()).args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("BEAMOPS_COMPLETE"), "{shell}: {script}");
    }
}

/// An aws deploy without image.registry where more than one node can run the app (several
/// managers, or chapter 10's workers, by default up to two): refused before anything is built
/// or connected to, naming the keys and the fix. A single node, or a registry, passes the check
/// (and stops later, here without an Engine or known_hosts, at something else).
#[test]
fn an_aws_deploy_without_a_registry_is_refused_when_other_nodes_could_run_the_app() {
    let p = common::example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    let staging = "  staging:\n    provider: aws\n";
    assert!(yaml.contains(staging), "the example's staging changed");
    // beamops.yaml with `extra` added to staging, then `deploy staging`.
    let deploy_with = |yaml: &str, extra: &str| {
        p.write(
            "beamops.yaml",
            &yaml.replace(staging, &format!("{staging}{extra}")),
        );
        let out = p
            .beamops()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["deploy", "staging", "--allow-dirty"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for (extra, names) in [
        ("", "environments.staging.max_workers, by default"),
        ("    managers: 3\n", "environments.staging.managers is 3"),
        (
            "    managers: 1\n    workers: 1\n    max_workers: 4\n",
            "up to 4 workers",
        ),
    ] {
        let (code, text) = deploy_with(&yaml, extra);
        assert_eq!(code, Some(4), "{extra}: {text}");
        assert!(
            text.contains(names) && text.contains("image.registry") && text.contains("fix:"),
            "{extra}: {text}"
        );
        assert!(text.contains("No such image"), "{text}");
    }
    // A single node, or a registry every node pulls from: not this refusal.
    let single = deploy_with(&yaml, "    max_workers: 0\n");
    let with_registry = yaml.replace("image:\n", "image:\n  registry: registry.example.com\n");
    assert!(with_registry.contains("registry.example.com"));
    let registry = deploy_with(&with_registry, "    managers: 3\n");
    for (code, text) in [single, registry] {
        assert_ne!(code, Some(0), "{text}");
        assert!(!text.contains("No such image"), "{text}");
        assert!(text.contains("fix:"), "{text}");
    }
}
