//! `beamops images bootstrap` against a real Docker Engine.
//!
//! The build tests need root, debootstrap, a Debian mirror and a Docker Engine; they run when
//! BEAMOPS_DOCKER_TESTS=1 and otherwise say loudly that they were skipped.

use std::path::Path;
use std::process::Command as Std;
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;
use common::docker_tests_enabled;

fn write_project(dir: &Path, builder: &str, runner: &str, postgres: &str) {
    std::fs::write(
        dir.join("beamops.yaml"),
        format!(
            "version: 1\napp:\n  name: shop\n  otp_app: shop\n  elixir: 1.18.3\n  otp: 27.3.4.1\nimage:\n  builder: {builder}\n  runner: {runner}\n  postgres: {postgres}\nenvironments:\n  local:\n    replicas: 1\n"
        ),
    )
    .unwrap();
}

fn beamops(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("beamops").unwrap();
    cmd.current_dir(dir).env_remove("BEAMOPS_PROJECT");
    cmd
}

fn docker(args: &[&str]) -> std::process::Output {
    Std::new("docker").args(args).output().expect("docker CLI")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes this test's containers and images however the test ends.
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

#[test]
fn shellcheck_passes_on_the_postgres_entrypoint() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates/images/postgres/docker-entrypoint.sh");
    let out = Std::new("shellcheck")
        .arg(&script)
        .output()
        .expect("shellcheck must be installed (Debian: apt-get install shellcheck)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_unreachable_engine_is_blocked_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    write_project(
        dir.path(),
        "x/elixir:1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim",
        "x/debian:trixie-slim",
        "x/postgres:17.12-trixie",
    );
    let out = beamops(dir.path())
        .env(
            "DOCKER_HOST",
            "unix:///nonexistent/beamops-images-test.sock",
        )
        .args(["images", "bootstrap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unix:///nonexistent/beamops-images-test.sock"),
        "{stderr}"
    );
}

#[test]
fn bootstrap_builds_true_images_skips_existing_and_refuses_mislabels() {
    if !docker_tests_enabled("bootstrap_builds_true_images_skips_existing_and_refuses_mislabels") {
        return;
    }
    let ns = format!("beamops-test-{}", std::process::id());
    let builder = format!("{ns}/elixir:1.18.3-erlang-27.3.4.1-debian-trixie-20251117-slim");
    let runner = format!("{ns}/debian:trixie-slim");
    let postgres = format!("{ns}/postgres:17.12-trixie");
    let wrong = format!("{ns}/elixir:1.17.0-erlang-26.2.5-debian-trixie-20251117-slim");
    let pg_container = format!("{ns}-pg");
    let _cleanup = Cleanup {
        containers: vec![pg_container.clone()],
        images: vec![
            builder.clone(),
            runner.clone(),
            postgres.clone(),
            wrong.clone(),
        ],
    };

    // First run: nothing exists and no registry answers, so all three are built from Debian.
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path(), &builder, &runner, &postgres);
    let out = beamops(dir.path())
        .args(["--format", "json", "images", "bootstrap"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = report["images"].as_array().unwrap();
    // The monitoring images (chapter 11) come last, under their default names: another test
    // or an earlier run may have built them already, so only their roles are checked here.
    let roles: Vec<&str> = all.iter().map(|i| i["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        [
            "builder",
            "runner",
            "postgres",
            "prometheus",
            "alertmanager"
        ]
    );
    let images = &all[..3];
    for (image, expected) in images.iter().zip([&builder, &runner, &postgres]) {
        assert_eq!(image["image"], expected.as_str());
        assert_eq!(image["action"], "built", "{image}");
        assert!(image["pull_error"].is_string(), "{image}");
        assert!(
            image["size_bytes"].as_u64().unwrap() > 10_000_000,
            "{image}"
        );
        eprintln!(
            "measured: {} built in {}s, {} MB",
            image["image"],
            image["seconds"],
            image["size_bytes"].as_u64().unwrap() / 1_000_000
        );
    }
    assert_eq!(images[0]["versions"]["elixir"], "1.18.3");
    assert_eq!(images[0]["versions"]["otp"], "27.3.4.1");
    assert_eq!(images[2]["versions"]["postgres"], "17.12");

    // The builder really contains what its tag says.
    let out = docker(&["run", "--rm", &builder, "elixir", "--version"]);
    assert!(stdout(&out).contains("Elixir 1.18.3"), "{out:?}");
    let out = docker(&[
        "run",
        "--rm",
        &builder,
        "sh",
        "-c",
        "cat /usr/lib/erlang/releases/*/OTP_VERSION",
    ]);
    assert_eq!(stdout(&out).trim(), "27.3.4.1", "{out:?}");
    let out = docker(&[
        "run",
        "--rm",
        &builder,
        "sh",
        "-c",
        "echo $LANG; git --version",
    ]);
    assert!(stdout(&out).starts_with("C.UTF-8\ngit version"), "{out:?}");

    // The runner can serve a release: libssl for :crypto and curl for health checks.
    let out = docker(&[
        "run",
        "--rm",
        &runner,
        "sh",
        "-c",
        "curl --version >/dev/null && ls /usr/lib/x86_64-linux-gnu/libssl.so.3",
    ]);
    assert!(out.status.success(), "{out:?}");

    // Second run: every tag exists, nothing is rebuilt.
    let out = beamops(dir.path())
        .args(["--format", "json", "images", "bootstrap"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for image in report["images"].as_array().unwrap() {
        assert_eq!(image["action"], "present", "{image}");
    }

    // A builder tag naming versions trixie does not ship is refused, and never tagged.
    let wrong_dir = tempfile::tempdir().unwrap();
    write_project(wrong_dir.path(), &wrong, &runner, &postgres);
    let out = beamops(wrong_dir.path())
        .args(["images", "bootstrap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("elixir 1.18.3"), "{stderr}");
    assert!(stderr.contains("otp 27.3.4.1"), "{stderr}");
    assert!(stderr.contains("elixir 1.17.0"), "{stderr}");
    assert!(!docker(&["image", "inspect", &wrong]).status.success());

    // PostgreSQL: initdb on first start from a password file, pg_isready, a password login.
    let secret = dir.path().join("pg-password");
    std::fs::write(&secret, "s3cret-from-file\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mount = format!("{}:/run/secrets/pg:ro", secret.display());
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &pg_container,
        "-v",
        &mount,
        "-e",
        "POSTGRES_PASSWORD_FILE=/run/secrets/pg",
        "-e",
        "POSTGRES_USER=shop",
        "-e",
        "POSTGRES_DB=shop_prod",
        &postgres,
    ]);
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let ready = loop {
        let out = docker(&["exec", &pg_container, "pg_isready", "-h", "127.0.0.1"]);
        // The entrypoint's setup server listens on the socket only, so TCP answers once the
        // real server is up.
        if out.status.success() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(90) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs = docker(&["logs", &pg_container]);
    assert!(ready, "pg_isready never succeeded:\n{logs:?}");
    let login = |password: &str| {
        docker(&[
            "exec",
            "-e",
            &format!("PGPASSWORD={password}"),
            &pg_container,
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "shop",
            "-d",
            "shop_prod",
            "-tAc",
            "select current_user || '@' || current_database()",
        ])
    };
    let out = login("s3cret-from-file");
    assert_eq!(stdout(&out).trim(), "shop@shop_prod", "{out:?}");
    let out = login("wrong");
    assert!(!out.status.success(), "a wrong password logged in: {out:?}");
    // The server (PID 1 after the entrypoint drops privileges) runs as postgres, not root.
    let out = docker(&[
        "exec",
        &pg_container,
        "sh",
        "-c",
        "id -un $(awk '/^Uid:/ {print $2}' /proc/1/status); stat -c %U \"$PGDATA\"",
    ]);
    assert_eq!(stdout(&out), "postgres\npostgres\n");
    let out = docker(&[
        "exec",
        &pg_container,
        "psql",
        "-U",
        "shop",
        "-d",
        "shop_prod",
        "-tAc",
        "show listen_addresses",
    ]);
    assert_eq!(stdout(&out).trim(), "*", "{out:?}");
}
