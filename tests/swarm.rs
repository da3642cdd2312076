//! Chapter 08 against the real Docker Engine: the stack converges through the API, stays put
//! when nothing changed, changes only what changed, and matches what `docker stack deploy` makes.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1 (the daemon is shared; these create swarm services).

#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::process::Command as Process;
use std::sync::OnceLock;

use beamops::swarm::{converge, spec};
use busybox::connect;
use common::{TestProject, docker_tests_enabled};
use serde_json::Value;

const TEST_IMAGE: &str = "beamops-swarm-test-httpd:latest";

/// Written to the real stderr, past libtest's capture, so a skip is seen without --nocapture.
fn loud_skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***");
}

/// A static busybox serving /health on port 4000, built once per test run through the API.
fn test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(TEST_IMAGE, "ok"));
}

/// The busybox httpd image under `tag`; `health` is the /health body, so two builds differ.
fn build_image(tag: &str, health: &str) {
    let dockerfile = r#"FROM scratch
COPY busybox /bin/busybox
COPY www /www
# sh as PID 1 with a TERM trap: a bare httpd as PID 1 ignores SIGTERM and every stop would
# wait out the grace period.
CMD ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait"]
"#;
    let body = format!("{health}\n");
    busybox::build(tag, dockerfile, &[("www/health", body.as_bytes(), 0o644)]);
}

/// Removes the stacks and secrets a test made, whatever happened to it.
struct Cleanup {
    stacks: Vec<String>,
    secrets: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (rt, daemon) = connect();
        for stack in &self.stacks {
            if let Err(e) = rt.block_on(converge::remove(&daemon, stack, true)) {
                eprintln!("cleanup of stack {stack} failed: {e:#}");
            }
        }
        for secret in &self.secrets {
            let _ = rt.block_on(daemon.client.delete_secret(secret));
        }
        for image in &self.images {
            let _ = rt.block_on(daemon.client.remove_image(
                image,
                // Forced: stopped task containers of the removed services may still hold it.
                Some(bollard::query_parameters::RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            ));
        }
    }
}

/// A project whose stack runs the busybox image, without Postgres, with its secrets created.
fn project(stack: &str, replicas: u32, cleanup: &mut Cleanup) -> TestProject {
    test_image();
    let p = TestProject::new();
    busybox::write_stack_config(&p, stack, replicas, TEST_IMAGE);
    busybox::stack_secrets(
        stack,
        &["secret_key_base", "release_cookie"],
        &mut cleanup.secrets,
    );
    p
}

/// The service as the Engine stores it: version index and spec.
fn inspect(name: &str) -> (u64, Value) {
    let out = Process::new("docker")
        .args(["service", "inspect", name])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        all[0]["Version"]["Index"].as_u64().unwrap(),
        all[0]["Spec"].clone(),
    )
}

/// Running tasks of a service whose containers report healthy.
fn healthy_tasks(service: &str) -> usize {
    let (rt, daemon) = connect();
    current_containers(service)
        .iter()
        .filter(|id| {
            let c = rt
                .block_on(daemon.client.inspect_container(id, None))
                .unwrap();
            c.state.and_then(|s| s.health).and_then(|h| h.status)
                == Some(bollard::models::HealthStatusEnum::HEALTHY)
        })
        .count()
}

fn stack_name(tag: &str) -> String {
    format!("bt{}{tag}", std::process::id())
}

#[test]
fn up_converges_then_changes_only_what_changed() {
    if !docker_tests_enabled("up_converges_then_changes_only_what_changed") {
        return;
    }
    let stack = stack_name("conv");
    let mut cleanup = Cleanup {
        stacks: vec![stack.clone()],
        secrets: vec![],
        images: vec![],
    };
    let p = project(&stack, 3, &mut cleanup);
    // Its own image tag: this test rebuilds it, and other tests share TEST_IMAGE.
    let image = format!("{stack}-httpd:latest");
    build_image(&image, "first");
    cleanup.images.push(image.clone());
    busybox::write_stack_config(&p, &stack, 3, &image);
    let service = format!("{stack}_app");

    let first = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(
        first.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        healthy_tasks(&service),
        3,
        "every replica runs healthy after up"
    );
    let (version, created) = inspect(&service);
    assert_eq!(created["Labels"][spec::NAMESPACE_LABEL], stack.as_str());

    // Nothing changed: no service update, and the plan has nothing pending.
    let again = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(again.status.success());
    assert_eq!(
        inspect(&service).0,
        version,
        "an unchanged spec must not be updated"
    );
    p.beamops().args(["plan", "chapter-08"]).assert().code(0);

    // A service labelled as the stack's that the file lacks goes, as with --prune.
    let stray = format!("{stack}_stray");
    let (rt, daemon) = connect();
    rt.block_on(
        daemon.client.create_service(
            serde_json::from_value(serde_json::json!({
                "Name": stray,
                "Labels": {spec::NAMESPACE_LABEL: stack},
                "TaskTemplate": {"ContainerSpec": {"Image": TEST_IMAGE}},
                "Mode": {"Replicated": {"Replicas": 0}},
            }))
            .unwrap(),
            None,
        ),
    )
    .unwrap();
    let plan = p.beamops().args(["plan", "chapter-08"]).output().unwrap();
    assert_eq!(plan.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("no longer in the stack file"));
    p.beamops().args(["up", "chapter-08"]).assert().success();
    assert!(
        !Process::new("docker")
            .args(["service", "inspect", &stray])
            .output()
            .unwrap()
            .status
            .success(),
        "{stray} should be gone"
    );
    assert_eq!(
        inspect(&service).0,
        version,
        "removing a stray leaves the app alone"
    );

    // Replicas only: the plan names that one field, and up changes nothing else.
    busybox::write_stack_config(&p, &stack, 2, &image);
    let plan = p.beamops().args(["plan", "chapter-08"]).output().unwrap();
    assert_eq!(plan.status.code(), Some(2));
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("update Mode.Replicated.Replicas\n")
            || plan_text.contains("update Mode.Replicated.Replicas"),
        "{plan_text}"
    );
    p.beamops().args(["up", "chapter-08"]).assert().success();
    let (new_version, scaled) = inspect(&service);
    assert!(new_version > version);
    assert_eq!(scaled["Mode"]["Replicated"]["Replicas"], 2);
    let changed = spec::differences(
        &spec::normalise_value(created),
        &spec::normalise_value(scaled.clone()),
    );
    assert_eq!(changed, vec!["Mode.Replicated.Replicas".to_string()]);
    assert_eq!(healthy_tasks(&service), 2);

    // The image rebuilt under the same tag: the spec names only the tag, yet the tasks roll.
    build_image(&image, "second");
    let plan = p.beamops().args(["plan", "chapter-08"]).output().unwrap();
    assert_eq!(plan.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("roll out the rebuilt image"));
    p.beamops().args(["up", "chapter-08"]).assert().success();
    let (rolled_version, rolled) = inspect(&service);
    assert!(rolled_version > new_version);
    assert_eq!(
        spec::differences(
            &spec::normalise_value(scaled),
            &spec::normalise_value(rolled)
        ),
        Vec::<String>::new(),
        "only ForceUpdate may change"
    );
    let (rt, daemon) = connect();
    let new_id = rt
        .block_on(daemon.client.inspect_image(&image))
        .unwrap()
        .id
        .unwrap();
    let running: Vec<String> = running_images(&service);
    assert_eq!(running.len(), 2);
    assert!(
        running.iter().all(|id| *id == new_id),
        "{running:?} vs {new_id}"
    );
    p.beamops().args(["plan", "chapter-08"]).assert().code(0);
}

/// Image ids of the containers of a service's tasks that should be running.
fn running_images(service: &str) -> Vec<String> {
    let (rt, daemon) = connect();
    current_containers(service)
        .iter()
        .map(|id| {
            rt.block_on(daemon.client.inspect_container(id, None))
                .unwrap()
                .image
                .unwrap()
        })
        .collect()
}

/// Container ids of a service's tasks whose desired state is running.
fn current_containers(service: &str) -> Vec<String> {
    let (rt, daemon) = connect();
    let tasks = rt
        .block_on(
            daemon
                .client
                .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
                    filters: Some(
                        [
                            ("service".to_string(), vec![service.to_string()]),
                            ("desired-state".to_string(), vec!["running".to_string()]),
                        ]
                        .into(),
                    ),
                })),
        )
        .unwrap();
    tasks
        .iter()
        .filter_map(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.container_status.as_ref())
                .and_then(|c| c.container_id.clone())
        })
        .collect()
}

/// Replaces what depends on the stack's name, and ids, so two stacks' specs compare.
/// Secret names stay: both stacks use the same external secrets.
fn comparable(spec: Value, stack: &str) -> Value {
    let secret_names = spec["TaskTemplate"]["ContainerSpec"]["Secrets"].clone();
    let text = serde_json::to_string(&spec)
        .unwrap()
        .replace(&format!("\"{stack}_"), "\"STACK_")
        .replace(&format!("\"{stack}\""), "\"STACK\"");
    let mut value = spec::normalise_value(serde_json::from_str(&text).unwrap());
    let container = &mut value["TaskTemplate"]["ContainerSpec"];
    if let (Some(items), Some(originals)) =
        (container["Secrets"].as_array_mut(), secret_names.as_array())
    {
        for (item, original) in items.iter_mut().zip(originals) {
            item["SecretName"] = original["SecretName"].clone();
        }
    }
    for (list, id) in [("Secrets", "SecretID"), ("Configs", "ConfigID")] {
        if let Some(items) = container[list].as_array_mut() {
            for item in items {
                item.as_object_mut().unwrap().remove(id);
            }
        }
    }
    // beamops names a config by its content (`<stack>_<key>_<10 hex>`), the CLI by its key.
    if let Some(items) = container["Configs"].as_array_mut() {
        for item in items {
            let name = item["ConfigName"].as_str().unwrap_or_default().to_string();
            if let Some((base, hash)) = name.rsplit_once('_')
                && hash.len() == 10
                && hash.chars().all(|c| c.is_ascii_hexdigit())
            {
                item["ConfigName"] = base.into();
            }
        }
    }
    // The chapter that converged it, which the CLI knows nothing of.
    if let Some(labels) = value["Labels"].as_object_mut() {
        labels.remove(spec::CHAPTER_LABEL);
    }
    if let Some(networks) = value["TaskTemplate"]["Networks"].as_array_mut() {
        for n in networks {
            n.as_object_mut().unwrap().remove("Target");
        }
    }
    value
}

#[test]
fn the_cli_accepts_the_stack_file_and_deploys_the_same_specs() {
    if !docker_tests_enabled("the_cli_accepts_the_stack_file_and_deploys_the_same_specs") {
        return;
    }
    if which::which("docker").is_err() {
        loud_skip(
            "the_cli_accepts_the_stack_file_and_deploys_the_same_specs: no docker CLI on PATH",
        );
        return;
    }
    let ours = stack_name("api");
    let theirs = stack_name("cli");
    let mut cleanup = Cleanup {
        stacks: vec![ours.clone(), theirs.clone()],
        secrets: vec![],
        images: vec![],
    };
    let p = project(&ours, 2, &mut cleanup);
    p.beamops().args(["up", "chapter-08"]).assert().success();

    // The variables beamops interpolated, exported as a user would for the CLI.
    let exported = [
        (
            "BEAMOPS_SECRET_SECRET_KEY_BASE",
            format!("{ours}_secret_key_base_v1"),
        ),
        (
            "BEAMOPS_SECRET_RELEASE_COOKIE",
            format!("{ours}_release_cookie_v1"),
        ),
    ];
    let config = Process::new("docker")
        .args(["stack", "config", "-c", "deploy/stack.yml"])
        .current_dir(p.path())
        .envs(exported.clone())
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "docker stack config: {}",
        String::from_utf8_lossy(&config.stderr)
    );

    // Two stacks on one swarm cannot share the app network's fixed subnet: the CLI's copy of the
    // file differs in that one line.
    let rendered = std::fs::read_to_string(p.path().join("deploy/stack.yml")).unwrap();
    let ours_subnet = subnet_in(&rendered);
    let theirs_subnet = if ours_subnet == "10.199.1.0/24" {
        "10.199.2.0/24"
    } else {
        "10.199.1.0/24"
    };
    std::fs::write(
        p.path().join("deploy/stack-cli.yml"),
        // Only the network's IPAM: CLUSTER_SUBNET in the app's environment stays, so the
        // service specs can still be compared.
        rendered.replace(
            &format!("- subnet: {ours_subnet}"),
            &format!("- subnet: {theirs_subnet}"),
        ),
    )
    .unwrap();
    let deploy = Process::new("docker")
        .args([
            "stack",
            "deploy",
            "--detach=true",
            "-c",
            "deploy/stack-cli.yml",
            &theirs,
        ])
        .current_dir(p.path())
        .envs(exported)
        .output()
        .unwrap();
    assert!(
        deploy.status.success(),
        "docker stack deploy: {}",
        String::from_utf8_lossy(&deploy.stderr)
    );

    let (_, api) = inspect(&format!("{ours}_app"));
    let (_, cli) = inspect(&format!("{theirs}_app"));
    let (api, cli) = (comparable(api, &ours), comparable(cli, &theirs));
    assert_eq!(
        spec::differences(&api, &cli),
        Vec::<String>::new(),
        "\nbeamops: {api:#}\ncli: {cli:#}"
    );
    // Same network and config shapes too.
    let net = |stack: &str| {
        let out = Process::new("docker")
            .args([
                "network",
                "inspect",
                &format!("{stack}_backend"),
                "--format",
                "{{.Driver}} {{.Scope}} {{json .Labels}}",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace(stack, "STACK");
        // Less the chapter label beamops adds (checked below), which the CLI knows nothing of.
        let (shape, labels) = text.trim().split_at(text.find('{').unwrap());
        let mut labels: Value = serde_json::from_str(labels).unwrap();
        let chapter = labels
            .as_object_mut()
            .unwrap()
            .remove(spec::CHAPTER_LABEL)
            .unwrap_or_default();
        (format!("{shape}{labels}"), chapter)
    };
    assert_eq!(net(&ours).0, net(&theirs).0);
    assert_eq!(
        net(&ours).1,
        "08-swarm",
        "beamops labels the network with its chapter"
    );
    let net = |stack: &str| net(stack).0;
    assert!(net(&ours).starts_with("overlay swarm"));
    let subnet = |stack: &str| {
        let out = Process::new("docker")
            .args([
                "network",
                "inspect",
                &format!("{stack}_backend"),
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(subnet(&ours), ours_subnet);
    assert_eq!(subnet(&theirs), theirs_subnet);
}

/// The app network's subnet as the rendered stack file fixes it.
fn subnet_in(stack_file: &str) -> String {
    stack_file
        .lines()
        .find_map(|line| line.trim().strip_prefix("- subnet: "))
        .expect("the stack file fixes a subnet")
        .to_string()
}

#[test]
fn postgres_runs_pinned_with_its_volume_and_down_removes_the_stack() {
    let test = "postgres_runs_pinned_with_its_volume_and_down_removes_the_stack";
    if !docker_tests_enabled(test) {
        return;
    }
    let (rt, daemon) = connect();
    let postgres = "postgres:17.12-trixie";
    if rt.block_on(daemon.client.inspect_image(postgres)).is_err() {
        loud_skip(&format!(
            "{test}: no {postgres} image on this Engine (beamops images bootstrap builds it)"
        ));
        return;
    }
    let stack = stack_name("db");
    let mut cleanup = Cleanup {
        stacks: vec![stack.clone()],
        secrets: vec![],
        images: vec![],
    };
    let p = project(&stack, 1, &mut cleanup);
    let config = p
        .read("beamops.yaml")
        .replace("database: false", "database: true");
    p.write("beamops.yaml", &config);
    busybox::stack_secrets(
        &stack,
        &["database_password", "database_url"],
        &mut cleanup.secrets,
    );
    let up = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(
        up.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let db = format!("{stack}_db");
    assert_eq!(healthy_tasks(&db), 1, "postgres runs healthy");
    let (_, spec) = inspect(&db);
    let mount = &spec["TaskTemplate"]["ContainerSpec"]["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Source"], format!("{stack}_pgdata").as_str());
    assert_eq!(
        mount["VolumeOptions"]["Labels"][spec::NAMESPACE_LABEL],
        stack.as_str()
    );
    assert_eq!(
        spec["TaskTemplate"]["Placement"]["Constraints"][0],
        "node.role == manager"
    );

    // down keeps the data; the services go.
    p.beamops().args(["down", "chapter-08"]).assert().success();
    let gone = Process::new("docker")
        .args(["service", "inspect", &db])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "service {db} is still there after down"
    );
    assert!(
        rt.block_on(daemon.client.inspect_volume(&format!("{stack}_pgdata")))
            .is_ok(),
        "down without --purge must keep the database volume"
    );
}

#[test]
fn a_missing_secret_blocks_and_an_unhealthy_app_times_out_naming_its_task() {
    let test = "a_missing_secret_blocks_and_an_unhealthy_app_times_out_naming_its_task";
    if !docker_tests_enabled(test) {
        return;
    }
    let stack = stack_name("bad");
    let mut cleanup = Cleanup {
        stacks: vec![stack.clone()],
        secrets: vec![],
        images: vec![],
    };
    test_image();
    let p = TestProject::new();
    busybox::write_stack_config(&p, &stack, 1, TEST_IMAGE);

    // No secrets yet: blocked (exit 3), naming the secret and the chapter that makes it.
    let blocked = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert_eq!(blocked.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("{stack}_release_cookie_v1")),
        "{stderr}"
    );
    assert!(stderr.contains("chapter-07"), "{stderr}");

    // With the secrets but a healthcheck that never passes: the wait ends with the task named.
    let p = project(&stack, 1, &mut cleanup);
    let config = p
        .read("beamops.yaml")
        .replace(
            r#"healthcheck: ["CMD", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:4000/health"]"#,
            r#"healthcheck: ["CMD", "/bin/busybox", "false"]"#,
        )
        .replace("converge_timeout: 3m", "converge_timeout: 8s");
    p.write("beamops.yaml", &config);
    let failed = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not converge in 8s"), "{stderr}");
    assert!(stderr.contains(&format!("{stack}_app.1")), "{stderr}");
}
