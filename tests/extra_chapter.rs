//! A chapter made of data only — a manifest and templates in a directory named by
//! `BEAMOPS_CHAPTERS_DIR`, no Rust — converging a second stack beside the app's on the real
//! swarm, following docs/architecture.md ("Adding a chapter"). And `down chapter-09`, which
//! only rolls out into chapter 08's stack, leaves that stack running.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1 (the daemon is shared; these create swarm services).

#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::path::Path;
use std::process::Output;

use beamops::swarm::{converge, spec};
use busybox::connect;
use common::{TestProject, docker, docker_tests_enabled};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/extra-chapters");

/// A static busybox httpd serving /www on port 4000 (no healthcheck), under `tag`.
fn build_image(tag: &str) {
    let dockerfile = r#"FROM scratch
COPY busybox /bin/busybox
COPY www /www
CMD ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait"]
"#;
    busybox::build(tag, dockerfile, &[("www/health", b"ok\n", 0o644)]);
}

/// Removes the stacks, secrets and image a test made, whatever happened to it.
struct Cleanup {
    stacks: Vec<String>,
    secrets: Vec<String>,
    image: String,
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
        let _ = rt.block_on(daemon.client.remove_image(
            &self.image,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                ..Default::default()
            }),
            None,
        ));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A busybox project (chapter 08's app stack runs the test image) with its secrets, and a copy
/// of the extra chapters' directory the test may edit.
struct Lab {
    project: TestProject,
    chapters: tempfile::TempDir,
    stack: String,
    /// Dropped with the lab: removes what the test made.
    _cleanup: Cleanup,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let stack = format!("sp{}{tag}", std::process::id());
        let image = format!("{stack}-httpd:latest");
        let mut cleanup = Cleanup {
            stacks: vec![stack.clone(), format!("{stack}-extra")],
            secrets: vec![],
            image: image.clone(),
        };
        build_image(&image);
        let project = TestProject::new();
        busybox::write_stack_config(&project, &stack, 2, &image);
        busybox::stack_secrets(
            &stack,
            &["secret_key_base", "release_cookie"],
            &mut cleanup.secrets,
        );
        let chapters = tempfile::tempdir().unwrap();
        copy_dir(Path::new(DATA), chapters.path());
        Lab {
            project,
            chapters,
            stack,
            _cleanup: cleanup,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.project
            .beamops()
            .env("BEAMOPS_CHAPTERS_DIR", self.chapters.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// `beamops ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "beamops {}: exit {:?}\n{}\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Every task id of a service, whatever its state: a replaced task shows as a new id.
fn task_ids(service: &str) -> Vec<String> {
    let out = docker(&["service", "ps", "-q", "--no-trunc", service]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// `objects`, once equal to `want`: a removed overlay network stays listed on the node for a
/// moment after the swarm has dropped it.
fn settled_objects(kind: &str, stack: &str, want: &[String]) -> Vec<String> {
    let mut seen = objects(kind, stack);
    for _ in 0..60 {
        if seen == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        seen = objects(kind, stack);
    }
    seen
}

/// Names of the services, networks or configs (`kind`) labelled with the stack's namespace.
fn objects(kind: &str, stack: &str) -> Vec<String> {
    let out = docker(&[
        kind,
        "ls",
        "--filter",
        &format!("label={}={stack}", spec::NAMESPACE_LABEL),
        "--format",
        "{{.Name}}",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn label(kind: &str, name: &str, key: &str) -> String {
    let out = docker(&[
        kind,
        "inspect",
        name,
        "--format",
        &format!("{{{{index .Spec.Labels \"{key}\"}}}}"),
    ]);
    let out = if out.status.success() {
        out
    } else {
        // Networks keep their labels at the top level.
        docker(&[
            kind,
            "inspect",
            name,
            "--format",
            &format!("{{{{index .Labels \"{key}\"}}}}"),
        ])
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The page the extra stack's running task serves, read inside its container; waits for the
/// rolled task.
fn served_page(service: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..60 {
        let out = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]);
        for container in String::from_utf8_lossy(&out.stdout).lines() {
            let cat = docker(&["exec", container, "/bin/busybox", "cat", "/www/page.txt"]);
            last = String::from_utf8_lossy(&cat.stdout).into_owned();
            if last.contains(want) {
                return last;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    last
}

#[test]
fn a_chapter_made_of_data_converges_a_second_stack_and_down_removes_exactly_it() {
    let test = "a_chapter_made_of_data_converges_a_second_stack_and_down_removes_exactly_it";
    if !docker_tests_enabled(test) {
        return;
    }
    let lab = Lab::new("x");
    let stack = lab.stack.clone();
    let extra = format!("{stack}-extra");
    let app = format!("{stack}_app");

    lab.ok(&["up", "chapter-08"]);
    assert_eq!(label("service", &app, spec::CHAPTER_LABEL), "08-swarm");
    let app_tasks = task_ids(&app);
    let app_objects = (
        objects("service", &stack),
        objects("network", &stack),
        objects("config", &stack),
    );

    // The extra chapter is listed and resolved like an embedded one.
    assert!(lab.ok(&["chapters"]).contains("chapter-13"));
    let up = lab.ok(&["up", "chapter-13"]);
    let web = format!("{extra}_web");
    assert_eq!(
        objects("service", &extra),
        std::slice::from_ref(&web),
        "{up}"
    );
    assert_eq!(objects("network", &extra), [format!("{extra}_front")]);
    let configs = objects("config", &extra);
    assert_eq!(configs.len(), 1, "{configs:?}");
    let secrets = objects("secret", &extra);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert!(
        secrets[0].starts_with(&format!("{extra}_page_secret_")),
        "{secrets:?}"
    );
    assert!(
        configs[0].starts_with(&format!("{extra}_page_")),
        "{configs:?}"
    );
    for (kind, name) in [
        ("service", &web),
        ("network", &format!("{extra}_front")),
        ("config", &configs[0]),
        ("secret", &secrets[0]),
    ] {
        assert_eq!(
            label(kind, name, spec::CHAPTER_LABEL),
            "13-extra",
            "{kind} {name}"
        );
    }
    assert!(served_page(&web, "first").contains("coordination extra page: first"));
    // Neither chapter sees the other's services as strays.
    lab.ok(&["up", "chapter-08"]);
    assert_eq!(objects("service", &extra), std::slice::from_ref(&web));
    assert_eq!(lab.run(&["plan", "chapter-08"]).status.code(), Some(0));
    assert_eq!(lab.run(&["plan", "chapter-13"]).status.code(), Some(0));

    // A changed template: the config is a new object, the service rolls to it.
    let page = lab.chapters.path().join("templates/extra/page.txt.j2");
    for (n, word) in ["second", "third"].into_iter().enumerate() {
        let text = std::fs::read_to_string(&page).unwrap();
        let before = if n == 0 { "first" } else { "second" };
        std::fs::write(&page, text.replace(before, word)).unwrap();
        let plan = lab.run(&["plan", "chapter-13"]);
        assert_eq!(plan.status.code(), Some(2), "the plan sees the new config");
        let up = lab.ok(&["up", "chapter-13"]);
        assert!(
            served_page(&web, word).contains(&format!("extra page: {word}")),
            "the service rolled to the new config: {up}"
        );
    }
    // The newest config, and the one the service's previous spec names (what Swarm's rollback
    // returns to); the first is gone.
    let configs_now = objects("config", &extra);
    assert_eq!(configs_now.len(), 2, "{configs_now:?}");
    assert!(!configs_now.contains(&configs[0]), "{configs_now:?}");
    // A file secret the same way (the Engine never returns its data: the name is how a changed
    // file shows).
    let secrets_now = objects("secret", &extra);
    assert_eq!(secrets_now.len(), 2, "{secrets_now:?}");
    assert!(!secrets_now.contains(&secrets[0]), "{secrets_now:?}");
    assert_eq!(lab.run(&["plan", "chapter-13"]).status.code(), Some(0));

    // down removes exactly the chapter's services, networks and configs.
    let down = lab.ok(&["down", "chapter-13"]);
    for kind in ["service", "network", "config", "secret"] {
        let left = settled_objects(kind, &extra, &[]);
        assert!(left.is_empty(), "{kind}s left: {left:?}\n{down}");
    }
    assert_eq!(
        (
            objects("service", &stack),
            objects("network", &stack),
            objects("config", &stack),
        ),
        app_objects,
        "the app stack keeps everything: {down}"
    );
    assert_eq!(task_ids(&app), app_tasks, "the app's tasks are untouched");
}

#[test]
fn a_chapter_converging_into_the_app_stack_never_removes_the_apps_services() {
    let test = "a_chapter_converging_into_the_app_stack_never_removes_the_apps_services";
    if !docker_tests_enabled(test) {
        return;
    }
    let lab = Lab::new("s");
    let stack = lab.stack.clone();
    let app = format!("{stack}_app");
    let sidecar = format!("{stack}_sidecar");
    lab.ok(&["up", "chapter-08"]);
    let app_tasks = task_ids(&app);

    // As a beamops before chapter labels left it: the app service without one. Only chapter
    // 08's converge (deploy/stack.yml into the app's stack) adopts it.
    let strip = docker(&[
        "service",
        "update",
        "--detach",
        "--label-rm",
        spec::CHAPTER_LABEL,
        &app,
    ]);
    assert!(
        strip.status.success(),
        "{}",
        String::from_utf8_lossy(&strip.stderr)
    );
    assert_eq!(label("service", &app, spec::CHAPTER_LABEL), "");

    lab.ok(&["up", "chapter-14"]);
    assert_eq!(
        label("service", &sidecar, spec::CHAPTER_LABEL),
        "14-sidecar"
    );
    assert!(
        objects("service", &stack).contains(&app),
        "chapter 14 left the app"
    );
    let plan = lab.run(&["plan", "chapter-08"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("service {app}: update Labels")),
        "{text}"
    );
    assert!(
        !text.contains(&sidecar),
        "the sidecar is not chapter 08's stray: {text}"
    );

    lab.ok(&["down", "chapter-14"]);
    assert_eq!(objects("service", &stack), std::slice::from_ref(&app));
    let networks: Vec<String> = objects("network", &stack)
        .into_iter()
        .filter(|n| *n != format!("{stack}_default"))
        .collect();
    assert_eq!(
        settled_objects("network", &stack, &networks),
        networks,
        "the network chapter 14 made went with it"
    );

    // Chapter 08 takes the unlabelled service as its own again: labelled, not replaced.
    lab.ok(&["up", "chapter-08"]);
    assert_eq!(label("service", &app, spec::CHAPTER_LABEL), "08-swarm");
    assert_eq!(task_ids(&app), app_tasks, "the app's tasks are untouched");
}

#[test]
fn down_chapter_09_leaves_the_app_stack_running() {
    if !docker_tests_enabled("down_chapter_09_leaves_the_app_stack_running") {
        return;
    }
    let lab = Lab::new("d");
    let app = format!("{}_app", lab.stack);
    lab.ok(&["up", "chapter-08"]);
    let tasks = task_ids(&app);
    let objects_before = (
        objects("service", &lab.stack),
        objects("network", &lab.stack),
        objects("config", &lab.stack),
    );
    lab.ok(&["down", "chapter-09"]);
    assert_eq!(
        (
            objects("service", &lab.stack),
            objects("network", &lab.stack),
            objects("config", &lab.stack),
        ),
        objects_before
    );
    assert_eq!(task_ids(&app), tasks);
    assert_eq!(lab.run(&["plan", "chapter-08"]).status.code(), Some(0));
}

/// Without Docker: the extra chapters load, are listed and rendered like embedded ones, and a
/// directory that does not hold valid chapters stops the command naming the file and the fix.
#[test]
fn extra_chapters_are_listed_rendered_and_refused_when_broken() {
    let project = TestProject::new();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(DATA), dir.path());
    let run = |args: &[&str]| {
        project
            .beamops()
            .env("BEAMOPS_CHAPTERS_DIR", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let listed = run(&["chapters", "--format", "json"]);
    assert!(listed.status.success());
    let listed = common::json(&listed.stdout);
    let keys: Vec<&str> = listed["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(
        keys.contains(&"13-extra") && keys.contains(&"14-sidecar"),
        "{listed}"
    );
    assert!(keys.contains(&"08-swarm"), "{listed}");

    // A chapter that converges into chapter 08's stack on its behalf (`owner:`) checks its
    // `needs:` while the extra chapters load: listed, not hung, and refused without the need.
    let owned = dir.path().join("chapters/15-owned.yaml");
    let owned_text = "id: 15\nslug: owned\ntitle: Owned\nsummary: Rolls out into chapter 08's stack.\n\
         needs: [swarm]\nimplemented: true\nboundary: test data only\nactions:\n  \
         - action: stack-converged\n    owner: 08-swarm\n";
    std::fs::write(&owned, owned_text).unwrap();
    let listed = run(&["chapters", "--format", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("\"15-owned\""),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    std::fs::write(&owned, owned_text.replace("needs: [swarm]", "needs: []")).unwrap();
    let refused = run(&["chapters"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("owner: 08-swarm"), "{stderr}");
    std::fs::remove_file(&owned).unwrap();

    // Its files render from the directory's templates (whatever the Engine says of its action).
    let plan = run(&["plan", "chapter-13", "--format", "json"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("\"deploy/extra/page.txt\"") && text.contains("\"deploy/extra/stack.yml\""),
        "{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("chapters/13-extra.yaml")).unwrap();

    // A typo in a parameter, and an id an embedded chapter has: refused, naming the file.
    let manifest = dir.path().join("chapters/13-extra.yaml");
    std::fs::write(&manifest, text.replace("    stack:", "    stak:")).unwrap();
    let broken = run(&["chapters"]);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("13-extra.yaml") && stderr.contains("stak"),
        "{stderr}"
    );
    assert!(stderr.contains("BEAMOPS_CHAPTERS_DIR"), "{stderr}");
    std::fs::write(&manifest, &text).unwrap();
    std::fs::write(
        dir.path().join("chapters/08-other.yaml"),
        "id: 8\nslug: other\ntitle: T\nsummary: S\n",
    )
    .unwrap();
    let twin = run(&["plan", "chapter-01"]);
    let stderr = String::from_utf8_lossy(&twin.stderr);
    assert_eq!(twin.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("also the embedded chapter 08-swarm"),
        "{stderr}"
    );
}
