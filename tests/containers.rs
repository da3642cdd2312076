//! Chapters 03 (release image) and 05 (dev environment) against the real Docker Engine, and the
//! field's own linters over what those chapters render.

mod common;

use std::path::Path;

use common::{
    docker, docker_tests_enabled, example_copy, json, render_into, up_json, wait_http_ok,
};

fn lint(tool: &str, args: &[&str], dir: &Path) {
    let out = std::process::Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool} is not on PATH ({e}); run `bash .ci/setup` and put .ci/venv/bin on PATH")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} rejected the generated file:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_dockerfile_compose_and_scripts_pass_their_linters() {
    let p = example_copy("lintapp");
    let mut files = render_into(&p, "03");
    files.extend(render_into(&p, "05"));
    assert_eq!(
        files,
        [
            "Dockerfile",
            ".dockerignore",
            "docker/healthcheck.sh",
            "compose.yaml"
        ]
    );
    lint(
        "hadolint",
        &["--failure-threshold", "info", "Dockerfile"],
        p.path(),
    );
    lint("shellcheck", &["docker/healthcheck.sh"], p.path());
    // Chapter 09's env.sh has no EEx tags, so it is plain sh to shellcheck as it is.
    let release = render_into(&p, "09");
    assert!(release.contains(&"rel/env.sh.eex".to_string()));
    assert!(!p.read("rel/env.sh.eex").contains("<%"));
    lint("shellcheck", &["--shell=sh", "rel/env.sh.eex"], p.path());
    lint(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        p.path(),
    );
    for f in &files {
        insta::assert_snapshot!(f.replace('/', "_"), p.read(f));
    }
}

#[test]
fn the_dockerfile_installs_dependencies_before_the_source_when_there_are_any() {
    let p = example_copy("depapp");
    let mix = p.read("mix.exs").replace(
        "defp deps do\n    []",
        "defp deps do\n    [{:jason, \"~> 1.4\"}]",
    );
    assert!(mix.contains(":jason"), "the example's deps/0 changed shape");
    p.write("mix.exs", &mix);
    p.write("mix.lock", "%{}\n");
    render_into(&p, "03");
    let dockerfile = p.read("Dockerfile");
    let deps = dockerfile
        .find("RUN mix deps.get --only prod")
        .expect("deps.get");
    let compile = dockerfile
        .find("RUN mix deps.compile")
        .expect("deps.compile");
    let source = dockerfile.find("COPY lib lib").expect("COPY lib");
    assert!(deps < compile && compile < source, "{dockerfile}");
    assert!(dockerfile.contains("COPY mix.exs mix.lock ./"));
    assert!(dockerfile.contains("COPY config/config.exs config/"));
}

struct Cleanup {
    project: std::path::PathBuf,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = assert_cmd::Command::cargo_bin("beamops")
            .unwrap()
            .current_dir(&self.project)
            .args(["down", "05", "--purge", "-q"])
            .output();
        let out = docker(&["images", "-q", &self.image]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

fn compose_container(project: &str, service: &str) -> String {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn action<'a>(report: &'a serde_json::Value, chapter: &str, id: &str) -> &'a serde_json::Value {
    report["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chapter"] == chapter)
        .and_then(|c| {
            c["actions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id)
        })
        .unwrap_or_else(|| panic!("{chapter}/{id} not in {report}"))
}

#[test]
fn release_image_and_dev_environment_on_the_real_engine() {
    if !docker_tests_enabled("release_image_and_dev_environment_on_the_real_engine") {
        return;
    }
    let pid = std::process::id();
    let app = format!("bt{pid}");
    let p = example_copy(&app);
    let app_port = 20000 + (pid % 20000) as u16;
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  development:\n    app_port: {app_port}\n    db_port: {}\n",
            app_port + 1
        ),
    );
    // A canary in the dev secrets: it must reach no image layer and no generated file.
    let canary = format!("canary-{pid}-{}", std::process::id() ^ 0x5eed);
    std::fs::create_dir_all(p.file(".beamops/dev-secrets")).unwrap();
    p.write(".beamops/dev-secrets/secret_key_base", &canary);
    beamops::fsutil::set_mode(&p.file(".beamops/dev-secrets/secret_key_base"), 0o600).unwrap();
    p.commit_all("test config");
    let _cleanup = Cleanup {
        project: p.path().to_path_buf(),
        image: app.clone(),
    };

    // Chapter 03: base images (built offline if absent), then the release image.
    let report = up_json(&p, "03");
    assert_eq!(
        action(&report, "03-docker", "release-image")["status"],
        "applied"
    );
    let latest = format!("{app}:latest");
    let container = format!("{app}-probe");
    let run = docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &container,
        "-p",
        &format!("127.0.0.1:{}:4000", app_port + 2),
        &latest,
    ]);
    assert!(run.status.success(), "{run:?}");
    let health = wait_http_ok(app_port + 2, "/health", 90);
    let version = wait_http_ok(app_port + 2, "/", 5);
    let _ = docker(&["stop", "-t", "10", &container]);
    let health = health.expect("the release image answers /health with 200");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert_eq!(version.as_deref().map(str::trim), Some("0.1.0"));
    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", &latest]);
    let labels = json(&labels.stdout);
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    let head = git2::Repository::open(p.path())
        .unwrap()
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    assert_eq!(labels["org.opencontainers.image.revision"], head.as_str());

    // A second up builds nothing.
    let again = up_json(&p, "03");
    assert_eq!(
        action(&again, "03-docker", "release-image")["status"],
        "satisfied"
    );

    // A one-line source change rebuilds, reusing the layers before the source is copied.
    let app_ex = p.file("lib/coordination/application.ex");
    let mut text = std::fs::read_to_string(&app_ex).unwrap();
    text.push_str("# one-line change\n");
    std::fs::write(&app_ex, text).unwrap();
    p.commit_all("touch");
    let rebuilt = up_json(&p, "03");
    let detail = action(&rebuilt, "03-docker", "release-image")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    let cached: usize = detail
        .split("; ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cached-step count in {detail}"));
    // FROM, ENV, WORKDIR and COPY mix.exs in the builder, and the runner's base steps.
    assert!(cached >= 6, "only {cached} steps reused: {detail}");

    // Chapter 05: app + Postgres healthy, the app sees its database.
    up_json(&p, "05");
    let health = wait_http_ok(app_port, "/health", 60).expect("dev app healthy");
    assert!(health.contains("\"db\":\"ok\""), "{health}");
    let project = format!("{app}-dev");
    let db = compose_container(&project, "db");
    let psql = |sql: &str| {
        docker(&[
            "exec",
            &db,
            "psql",
            "-U",
            "coordination",
            "-d",
            "coordination_dev",
            "-tAc",
            sql,
        ])
    };
    assert!(
        psql("create table kept (v text); insert into kept values ('survives down')")
            .status
            .success()
    );
    p.beamops().args(["down", "05"]).assert().code(0);
    assert!(
        compose_container(&project, "db").is_empty(),
        "down left containers running"
    );
    up_json(&p, "05");
    let db_again = compose_container(&project, "db");
    let out = docker(&[
        "exec",
        &db_again,
        "psql",
        "-U",
        "coordination",
        "-d",
        "coordination_dev",
        "-tAc",
        "select v from kept",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survives down");

    // The canary is in no image layer, no image history, no generated file, no container config.
    let history = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &latest,
    ]);
    assert!(!String::from_utf8_lossy(&history.stdout).contains(&canary));
    let saved = docker(&["save", &latest]);
    assert!(saved.status.success());
    assert!(
        !saved
            .stdout
            .windows(canary.len())
            .any(|w| w == canary.as_bytes()),
        "the canary is inside an image layer"
    );
    for f in [
        "Dockerfile",
        ".dockerignore",
        "compose.yaml",
        "beamops.lock",
        ".beamops/state.json",
    ] {
        assert!(!p.read(f).contains(&canary), "{f} contains the canary");
    }
    let app_container = compose_container(&project, "app");
    let inspect = docker(&["inspect", &app_container]);
    assert!(!String::from_utf8_lossy(&inspect.stdout).contains(&canary));
}
