//! Day-to-day operations against the real swarm: the deploy lock (atomic, waited for, named,
//! stale never stolen), ps, logs, scale, console, and release image pruning.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1. Everything created is prefixed `boops<pid>` and removed by
//! Drop guards, also when a test fails.

#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::process::Command as Process;
use std::sync::OnceLock;
use std::time::Duration;

use beamops::swarm::{converge, lock};
use busybox::connect;
use common::{TestProject, docker_tests_enabled, json};

const IMAGE: &str = "boops-httpd:latest";

fn name(tag: &str) -> String {
    format!("boops{}{tag}", std::process::id())
}

/// A static busybox: says hello on start, serves /health on 4000, and has a `bin/<otp_app>`
/// whose `remote` answers each line of input — enough to test the console's plumbing.
fn build_image(tag: &str, marker: &str) {
    let dockerfile = format!(
        r#"FROM scratch
COPY busybox /bin/busybox
COPY bin /bin
COPY www /www
COPY app /app
WORKDIR /app
LABEL boops.marker="{marker}"
CMD ["/bin/busybox", "sh", "-c", "echo hello from $(/bin/busybox hostname); trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait"]
"#
    );
    // Piped console input runs through `sh -c '… rpc "$(cat)"'`: busybox answers as both.
    let shell = std::fs::read("/bin/busybox").unwrap();
    let app: &[u8] = b"#!/bin/busybox sh\n[ \"$1\" = rpc ] && { echo \"rpc($(/bin/busybox hostname)) got: $2\"; exit 0; }\n[ \"$1\" = remote ] || exit 64\nwhile read -r line; do echo \"remote($(/bin/busybox hostname)) got: $line\"; done\nexit 0\n";
    busybox::build(
        tag,
        &dockerfile,
        &[
            ("www/health", b"ok\n", 0o644),
            ("bin/sh", &shell, 0o755),
            ("bin/cat", &shell, 0o755),
            ("app/bin/coordination", app, 0o755),
        ],
    );
}

fn image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| build_image(IMAGE, "shared"));
}

/// Removes what a test made, whatever happened to it.
#[derive(Default)]
struct Cleanup {
    stacks: Vec<String>,
    secrets: Vec<String>,
    configs: Vec<String>,
    images: Vec<String>,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (rt, daemon) = connect();
        for stack in &self.stacks {
            let _ = rt.block_on(converge::remove(&daemon, stack, true));
            let _ = rt.block_on(daemon.client.delete_config(&lock::lock_name(stack)));
        }
        for c in &self.containers {
            let _ = rt.block_on(daemon.client.remove_container(
                c,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            ));
        }
        for s in &self.secrets {
            let _ = rt.block_on(daemon.client.delete_secret(s));
        }
        for c in &self.configs {
            let _ = rt.block_on(daemon.client.delete_config(c));
        }
        for i in &self.images {
            let _ = rt.block_on(daemon.client.remove_image(
                i,
                Some(bollard::query_parameters::RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            ));
        }
    }
}

/// A project running the busybox image as its stack's app, with the stack's secrets.
fn project(stack: &str, replicas: u32, cleanup: &mut Cleanup) -> TestProject {
    image();
    busybox::stack_secrets(
        stack,
        &["secret_key_base", "release_cookie"],
        &mut cleanup.secrets,
    );
    let p = TestProject::new();
    busybox::write_stack_config(&p, stack, replicas, IMAGE);
    p
}

/// The binary as a std Command (spawned, not waited for), without inherited BEAMOPS_* settings.
fn process(p: &TestProject) -> Process {
    let mut cmd = Process::new(assert_cmd::cargo::cargo_bin("beamops"));
    cmd.current_dir(p.path()).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMOPS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A lock config written by hand, as an older beamops (or a dead run) would have left it.
fn plant_lock(stack: &str, user: &str, since: &str, message: &str) -> String {
    let (rt, daemon) = connect();
    let labels = [
        ("beamops.lock", "deploy"),
        ("beamops.lock.user", user),
        ("beamops.lock.host", "ci-runner-7"),
        ("beamops.lock.pid", "4242"),
        ("beamops.lock.command", "deploy"),
        ("beamops.lock.run_id", "github:987/1"),
        ("beamops.lock.since", since),
        ("beamops.lock.message", message),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rt.block_on(daemon.client.create_config(bollard::models::ConfigSpec {
        name: Some(lock::lock_name(stack)),
        labels: Some(labels),
        data: Some("e30=".into()),
        ..Default::default()
    }))
    .unwrap()
    .id
}

/// A lock as a run of this host would write it, with `overrides` applied to its labels.
fn plant_local_lock(stack: &str, overrides: &[(&str, String)]) {
    let (rt, daemon) = connect();
    let me = lock::Holder::current("deploy", Some("planted".into()));
    let mut labels: std::collections::HashMap<String, String> = [
        ("beamops.lock", "deploy".to_string()),
        ("beamops.lock.user", me.user.clone()),
        ("beamops.lock.host", me.host.clone()),
        ("beamops.lock.pid", me.pid.to_string()),
        ("beamops.lock.command", "deploy".to_string()),
        ("beamops.lock.since", beamops::state::now_rfc3339()),
        ("beamops.lock.boot_id", me.boot_id.clone().unwrap()),
        ("beamops.lock.pid_ns", me.pid_ns.clone().unwrap()),
        ("beamops.lock.pid_start", me.pid_start.unwrap().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        labels.insert(k.to_string(), v.clone());
    }
    rt.block_on(daemon.client.create_config(bollard::models::ConfigSpec {
        name: Some(lock::lock_name(stack)),
        labels: Some(labels),
        data: Some("e30=".into()),
        ..Default::default()
    }))
    .unwrap();
}

fn lock_labels(stack: &str) -> std::collections::HashMap<String, String> {
    let (rt, daemon) = connect();
    rt.block_on(daemon.client.inspect_config(&lock::lock_name(stack)))
        .ok()
        .and_then(|c| c.spec)
        .and_then(|s| s.labels)
        .unwrap_or_default()
}

fn lock_exists(stack: &str) -> bool {
    let (rt, daemon) = connect();
    rt.block_on(daemon.client.inspect_config(&lock::lock_name(stack)))
        .is_ok()
}

/// A spawned `logs -f` must not outlive a failed test (it would hold the harness's pipes).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Process::new("kill").arg(self.0.to_string()).status();
    }
}

#[test]
fn a_second_create_of_the_same_config_name_fails_so_the_lock_is_atomic() {
    if !docker_tests_enabled("a_second_create_of_the_same_config_name_fails_so_the_lock_is_atomic")
    {
        return;
    }
    let stack = name("atom");
    let mut _cleanup = Cleanup::default();
    _cleanup.stacks.push(stack.clone());
    let (rt, daemon) = connect();
    rt.block_on(beamops::swarm::ensure(&daemon, "127.0.0.1"))
        .unwrap();
    // The raft store's claim itself: many racing creates of one name, exactly one wins.
    let spec = || bollard::models::ConfigSpec {
        name: Some(format!("{stack}_race")),
        data: Some("e30=".into()),
        ..Default::default()
    };
    let results = rt.block_on(futures_util::future::join_all(
        (0..8).map(|_| daemon.client.create_config(spec())),
    ));
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(
                e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    ..
                }
            )),
        "every loser gets 409: {results:?}"
    );
    let _ = rt.block_on(daemon.client.delete_config(&format!("{stack}_race")));

    // Through the library: a holder, a second holder that cannot wait, re-entry, release.
    let opts = lock::AcquireOptions {
        env: "local",
        wait: Duration::ZERO,
        timeout: Duration::from_secs(1800),
        poll: Duration::from_millis(100),
    };
    let me = lock::Holder::current("deploy", Some("testing the lock".into()));
    let guard = rt
        .block_on(lock::acquire(&daemon, &stack, &me, &opts, |_| {}))
        .unwrap();
    assert!(guard.owns());
    let other = lock::Holder {
        pid: me.pid + 1,
        user: "someone-else".into(),
        ..me.clone()
    };
    let err = rt
        .block_on(lock::acquire(&daemon, &stack, &other, &opts, |_| {}))
        .unwrap_err();
    assert_eq!(
        beamops::exit::exit_for(&err),
        beamops::exit::Exit::Blocked,
        "{err:#}"
    );
    let held = err
        .downcast_ref::<lock::LockHeld>()
        .expect("typed LockHeld");
    assert_eq!(held.lock.holder, me);
    assert!(format!("{err:#}").contains("testing the lock"), "{err:#}");
    // The same process again (deploy → up): a guard that does not release the outer one.
    let inner = rt
        .block_on(lock::acquire(&daemon, &stack, &me, &opts, |_| {}))
        .unwrap();
    assert!(!inner.owns());
    drop(inner);
    assert!(lock_exists(&stack), "an inner guard must not release");
    drop(guard);
    assert!(!lock_exists(&stack), "dropping the guard releases");
}

#[test]
fn two_concurrent_ups_take_turns_and_a_held_lock_is_named_stale_never_stolen() {
    let test = "two_concurrent_ups_take_turns_and_a_held_lock_is_named_stale_never_stolen";
    if !docker_tests_enabled(test) {
        return;
    }
    let stack = name("lock");
    let mut cleanup = Cleanup::default();
    cleanup.stacks.push(stack.clone());
    // Two checkouts (a laptop and CI) of one project deploying the same stack.
    let a = project(&stack, 2, &mut cleanup);
    let b = project(&stack, 2, &mut cleanup);
    let spawn = |p: &TestProject, who: &str| {
        let mut cmd = process(p);
        cmd.args(["up", "chapter-08", "--lock-wait", "5m", "--message"])
            .arg(format!("deploy from {who}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&a, "a");
    let second = spawn(&b, "b");
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success(), "{}", text(&first));
    assert!(second.status.success(), "{}", text(&second));
    let waited: Vec<&std::process::Output> = [&first, &second]
        .into_iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("waiting up to"))
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "exactly one run waits for the other:\n{}\n{}",
        text(&first),
        text(&second)
    );
    let note = String::from_utf8_lossy(&waited[0].stderr);
    assert!(note.contains("`beamops up`"), "{note}");
    assert!(note.contains("deploy from"), "{note}");
    assert!(!lock_exists(&stack), "both runs released the lock");

    // A held lock and a short wait: exit 3 naming the holder; the lock stays.
    busybox::write_stack_config(&a, &stack, 1, IMAGE);
    let since = beamops::state::now_rfc3339();
    plant_lock(&stack, "ana", &since, "hotfix 1.2.3");
    let status = a
        .beamops()
        .args(["lock", "status", "local", "--format", "json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let report = json(&status.stdout);
    assert_eq!(report["state"], "held");
    assert_eq!(report["lock"]["holder"]["user"], "ana");
    assert_eq!(report["lock"]["holder"]["host"], "ci-runner-7");
    assert_eq!(report["lock"]["holder"]["run_id"], "github:987/1");
    let blocked = a
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "2s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert_eq!(blocked.status.code(), Some(3), "{}", text(&blocked));
    for part in ["ana@ci-runner-7", "pid 4242", "hotfix 1.2.3", "waited"] {
        assert!(err.contains(part), "{part}: {err}");
    }
    // Another host's holder cannot be checked from here: the way out is named, not taken.
    assert!(err.contains("beamops lock release local --yes"), "{err}");
    assert!(lock_exists(&stack), "a held lock is never taken");
    let (rt, daemon) = connect();
    rt.block_on(daemon.client.delete_config(&lock::lock_name(&stack)))
        .unwrap();

    // Stale: reported as such, still not stolen; release needs --yes.
    plant_lock(&stack, "bob", "2001-01-01T00:00:00Z", "crashed long ago");
    let status = a
        .beamops()
        .args(["lock", "status", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(json(&status.stdout)["state"], "stale");
    let blocked = a
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert_eq!(blocked.status.code(), Some(3), "{}", text(&blocked));
    assert!(err.contains("STALE"), "{err}");
    assert!(err.contains("beamops lock release local --yes"), "{err}");
    assert!(lock_exists(&stack), "a stale lock is never stolen");
    let dry = a
        .beamops()
        .args(["lock", "release", "local"])
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(2), "{}", text(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would release"));
    assert!(lock_exists(&stack));
    let released = a
        .beamops()
        .args(["lock", "release", "local", "--yes", "--format", "json"])
        .output()
        .unwrap();
    assert!(released.status.success(), "{}", text(&released));
    assert_eq!(json(&released.stdout)["release"], "released");
    assert!(!lock_exists(&stack));
    // Now the pending replica change goes through.
    let up = a.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    assert!(!lock_exists(&stack));
}

#[test]
fn a_dead_holders_lock_is_taken_over_and_one_it_cannot_prove_dead_names_lock_release() {
    let test = "a_dead_holders_lock_is_taken_over_and_one_it_cannot_prove_dead_names_lock_release";
    if !docker_tests_enabled(test) {
        return;
    }
    let stack = name("stale");
    let mut cleanup = Cleanup::default();
    cleanup.stacks.push(stack.clone());
    let p = project(&stack, 1, &mut cleanup);
    let up = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));

    // 1. kill -9 of a run that holds the lock, started without $USER or $LOGNAME (cron,
    // systemd): the lock stays behind, naming the uid's user.
    busybox::write_stack_config(&p, &stack, 3, IMAGE);
    let mut child = process(&p)
        .args(["up", "chapter-08", "--lock-wait", "5m"])
        .env_remove("USER")
        .env_remove("LOGNAME")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !lock_exists(&stack) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lock_exists(&stack), "the killed run held the lock");
    let labels = lock_labels(&stack);
    let whoami = Process::new("id").arg("-un").output().unwrap();
    assert_eq!(
        labels["beamops.lock.user"],
        String::from_utf8_lossy(&whoami.stdout).trim(),
        "{labels:?}"
    );
    assert_eq!(labels["beamops.lock.pid"], child.id().to_string());
    // `status` reports it, stale because its pid is gone.
    let status = p
        .beamops()
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let report = json(&status.stdout);
    assert_eq!(report["lock"]["stale"], true, "{report:#}");
    assert!(
        report["lock"]["stale_reason"]
            .as_str()
            .is_some_and(|r| r.contains("is gone")),
        "{report:#}"
    );
    let status = p.beamops().arg("status").output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("STALE deploy lock"),
        "{}",
        text(&status)
    );
    // The next plain run takes it over, says so, and finishes the change.
    let up = p
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "0"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("took over the deploy lock"),
        "{}",
        text(&up)
    );
    assert!(!lock_exists(&stack), "the run released the lock it took");
    // A run that changes nothing leaves no lock either.
    let up = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    assert!(!lock_exists(&stack));

    // 2. A live process of this host holds it: waited for, named, never taken. (A run with
    // nothing to change never takes the lock: the stack gets a change to make.)
    busybox::write_stack_config(&p, &stack, 2, IMAGE);
    let mut sleeper = Process::new("sleep").arg("120").spawn().unwrap();
    let _reap = KillOnDrop(sleeper.id());
    let start = lock::process_start(sleeper.id()).unwrap();
    plant_local_lock(
        &stack,
        &[
            ("beamops.lock.pid", sleeper.id().to_string()),
            ("beamops.lock.pid_start", start.to_string()),
        ],
    );
    let blocked = p
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "1s"])
        .output()
        .unwrap();
    assert_eq!(blocked.status.code(), Some(3), "{}", text(&blocked));
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        err.contains(&format!("pid {} runs on this host", sleeper.id())),
        "{err}"
    );
    assert!(lock_exists(&stack), "a live holder's lock is never taken");
    let (rt, daemon) = connect();
    rt.block_on(daemon.client.delete_config(&lock::lock_name(&stack)))
        .unwrap();

    // 3. The same PID with another start time: the PID was reused, the holder is dead.
    plant_local_lock(
        &stack,
        &[
            ("beamops.lock.pid", sleeper.id().to_string()),
            ("beamops.lock.pid_start", (start + 1).to_string()),
        ],
    );
    let up = p
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "0"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("now belongs to another process"),
        "{}",
        text(&up)
    );
    assert!(!lock_exists(&stack));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    // 4. A lock from an earlier boot of this host: stale, but only released deliberately.
    busybox::write_stack_config(&p, &stack, 1, IMAGE);
    plant_local_lock(
        &stack,
        &[(
            "beamops.lock.boot_id",
            "00000000-0000-0000-0000-000000000000".into(),
        )],
    );
    let blocked = p
        .beamops()
        .args(["up", "chapter-08", "--lock-wait", "0"])
        .output()
        .unwrap();
    assert_eq!(blocked.status.code(), Some(3), "{}", text(&blocked));
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert!(err.contains("rebooted since"), "{err}");
    assert!(err.contains("beamops lock release local --yes"), "{err}");
    assert!(lock_exists(&stack));
}

#[test]
fn a_second_run_on_one_checkout_is_blocked_naming_the_first_ones_pid() {
    // The local run lock needs no Engine: it is taken before anything talks to Docker.
    let p = TestProject::new();
    busybox::write_stack_config(&p, "boopsrunlock", 1, IMAGE);
    let _held =
        beamops::state::RunLock::acquire(&p.path().join(".beamops"), Duration::ZERO, |_| {})
            .unwrap();
    for args in [
        &["deploy", "local", "--allow-dirty", "--lock-wait", "1s"][..],
        &["up", "chapter-01", "--lock-wait", "0"][..],
    ] {
        let out = p.beamops().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{args:?}: {err}"
        );
        assert!(err.contains("retry later"), "{args:?}: {err}");
        assert!(!err.contains("pid unknown"), "{err}");
    }
}

#[test]
fn ps_logs_scale_and_console_work_against_the_running_stack() {
    let test = "ps_logs_scale_and_console_work_against_the_running_stack";
    if !docker_tests_enabled(test) {
        return;
    }
    let stack = name("ops");
    let mut cleanup = Cleanup::default();
    cleanup.stacks.push(stack.clone());
    let p = project(&stack, 2, &mut cleanup);
    let up = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let service = format!("{stack}_app");

    let ps = p
        .beamops()
        .args(["ps", "local", "--format", "json"])
        .output()
        .unwrap();
    assert!(ps.status.success(), "{}", text(&ps));
    let report = json(&ps.stdout);
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{report:#}");
    let node = common::docker(&["info", "--format", "{{.Name}}"]);
    let node = String::from_utf8_lossy(&node.stdout).trim().to_string();
    for t in tasks {
        assert_eq!(t["service"], service.as_str());
        assert_eq!(t["state"], "running");
        assert_eq!(t["desired"], "running");
        assert_eq!(t["health"], "healthy");
        assert_eq!(t["image"], IMAGE);
        assert_eq!(t["node"], node.as_str());
    }
    let ps_text = p.beamops().args(["ps", "local"]).output().unwrap();
    assert!(String::from_utf8_lossy(&ps_text.stdout).contains(&format!("{service}.1")));

    // Logs: each task's start line, named by the task.
    let logs = p.beamops().args(["logs", "local", "app"]).output().unwrap();
    assert!(logs.status.success(), "{}", text(&logs));
    let out = String::from_utf8_lossy(&logs.stdout);
    for slot in [1, 2] {
        let prefix = format!("{service}.{slot}");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains("| hello from")),
            "{out}"
        );
    }
    let logs = p
        .beamops()
        .args(["logs", "local", "--tail", "1", "--format", "json"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per task with --tail 1: {lines:?}");
    assert!(lines.iter().all(|l| l["stream"] == "stdout"));

    // Follow: lines keep coming until the process is stopped.
    let mut child = process(&p)
        .args(["logs", "local", "app", "-f", "--since", "10m"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let follower = KillOnDrop(child.id());
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.matches("hello from").count() >= 3 {
                break;
            }
        }
        seen
    });

    // Scale to 3 while the follower runs (it follows the tasks running when it started).
    let before: Vec<String> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let scaled = p
        .beamops()
        .args(["scale", "local", "3", "--format", "json"])
        .output()
        .unwrap();
    assert!(scaled.status.success(), "{}", text(&scaled));
    let report = json(&scaled.stdout);
    assert_eq!(report["from"], 2);
    assert_eq!(report["to"], 3);
    assert_eq!(report["durable_setting"], "environments.local.replicas");
    let ps = json(
        &p.beamops()
            .args(["ps", "local", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    );
    let running = ps["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running" && t["health"] == "healthy")
        .count();
    assert_eq!(running, 3, "{ps:#}");
    let after: Vec<&str> = ps["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(
        before.iter().all(|id| after.contains(&id.as_str())),
        "scaling must only add a task, not replace the running ones: {before:?} vs {after:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    drop(follower);
    let _ = child.wait();
    let seen = reader.join().unwrap();
    assert!(
        seen.matches("hello from").count() >= 2,
        "follow printed the running tasks' lines: {seen}"
    );

    // Console through a pipe: the code on our stdin is evaluated with `rpc` (a piped remote
    // shell would halt the node at end of input) and its answer comes back.
    let console = p
        .beamops()
        .args(["console", "local"])
        .write_stdin("IO.puts(node())\nNode.list()\n")
        .output()
        .unwrap();
    assert!(console.status.success(), "{}", text(&console));
    let out = String::from_utf8_lossy(&console.stdout);
    assert!(out.contains("got: IO.puts(node())\nNode.list()"), "{out}");

    // The next up restores the file's replicas (2): scale is not durable.
    let up = p.beamops().args(["up", "chapter-08"]).output().unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let ps = json(
        &p.beamops()
            .args(["ps", "local", "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(ps["tasks"].as_array().unwrap().len(), 2, "{ps:#}");
}

#[test]
fn prune_keeps_the_newest_releases_and_every_image_in_use() {
    let test = "prune_keeps_the_newest_releases_and_every_image_in_use";
    if !docker_tests_enabled(test) {
        return;
    }
    let repo = name("prune");
    let mut cleanup = Cleanup::default();
    let tags: Vec<String> = (1..=5).map(|i| format!("{repo}:r{i}")).collect();
    for (i, tag) in tags.iter().enumerate() {
        // Distinct creation seconds: the order is by creation time.
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        build_image(tag, &format!("{repo}-{i}"));
        cleanup.images.push(tag.clone());
    }
    let (rt, daemon) = connect();
    // r1 is used by a (never started) container, r2 by a service with no replicas.
    let container = format!("{repo}-holder");
    rt.block_on(
        daemon.client.create_container(
            Some(
                bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(&container)
                    .build(),
            ),
            bollard::models::ContainerCreateBody {
                image: Some(tags[0].clone()),
                ..Default::default()
            },
        ),
    )
    .unwrap();
    cleanup.containers.push(container);
    let service = format!("{repo}-svc");
    cleanup.stacks.push(format!("{repo}stack"));
    rt.block_on(beamops::swarm::ensure(&daemon, "127.0.0.1"))
        .unwrap();
    rt.block_on(
        daemon.client.create_service(
            serde_json::from_value(serde_json::json!({
                "Name": service,
                "Labels": {beamops::swarm::spec::NAMESPACE_LABEL: format!("{repo}stack")},
                "TaskTemplate": {"ContainerSpec": {"Image": tags[1]}},
                "Mode": {"Replicated": {"Replicas": 0}},
            }))
            .unwrap(),
            None,
        ),
    )
    .unwrap();

    let dry = rt
        .block_on(beamops::docker::prune::prune_release_images(
            &daemon, &repo, 2, true,
        ))
        .unwrap();
    let tags_of = |images: &[beamops::docker::prune::PrunedImage]| -> Vec<String> {
        let mut t: Vec<String> = images.iter().flat_map(|i| i.tags.clone()).collect();
        t.sort();
        t
    };
    assert_eq!(tags_of(&dry.kept), vec![tags[3].clone(), tags[4].clone()]);
    assert_eq!(tags_of(&dry.in_use), vec![tags[0].clone(), tags[1].clone()]);
    assert_eq!(tags_of(&dry.removed), vec![tags[2].clone()]);
    let exists = |tag: &str| rt.block_on(daemon.client.inspect_image(tag)).is_ok();
    assert!(exists(&tags[2]), "a dry run removes nothing");

    let done = rt
        .block_on(beamops::docker::prune::prune_release_images(
            &daemon, &repo, 2, false,
        ))
        .unwrap();
    assert_eq!(tags_of(&done.removed), vec![tags[2].clone()]);
    assert!(!exists(&tags[2]));
    for kept in [&tags[0], &tags[1], &tags[3], &tags[4]] {
        assert!(exists(kept), "{kept} must stay");
    }
}

#[test]
fn ctrl_c_during_a_rollout_releases_the_deploy_lock() {
    let test = "ctrl_c_during_a_rollout_releases_the_deploy_lock";
    if !docker_tests_enabled(test) {
        return;
    }
    let stack = name("int");
    let mut cleanup = Cleanup {
        stacks: vec![stack.clone()],
        secrets: vec![],
        configs: vec![],
        images: vec![],
        containers: vec![],
    };
    let p = project(&stack, 1, &mut cleanup);
    // A healthcheck that never passes keeps `up` waiting, holding the lock, until interrupted.
    let yaml = p.read("beamops.yaml").replace(
        r#"healthcheck: ["CMD", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:4000/health"]"#,
        r#"healthcheck: ["CMD", "/bin/busybox", "false"]"#,
    );
    assert!(yaml.contains("busybox\", \"false"), "{yaml}");
    p.write("beamops.yaml", &yaml);
    let mut child = process(&p)
        .args(["up", "chapter-08"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !lock_exists(&stack) {
        assert!(
            std::time::Instant::now() < deadline,
            "up never took the deploy lock"
        );
        assert!(child.try_wait().unwrap().is_none(), "up ended early");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Let it get into the wait for healthy tasks, then Ctrl-C.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "up ended early");
    let interrupted = Process::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(2),
        "beamops dies of the SIGINT: {status:?}"
    );
    assert!(
        !lock_exists(&stack),
        "the deploy lock outlived the interrupted run"
    );
}
