//! A release build killed mid-way (kill -9 of `up chapter-03`) leaves untagged images behind;
//! `images prune` removes exactly those, by the label the generated Dockerfile puts on every
//! stage, and never an untagged image of anyone else's (issue 12, item 10).

#[allow(dead_code)]
#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{docker, docker_tests_enabled, example_copy, json};

const LABEL: &str = "dev.beamops.build";

/// Untagged images labelled as builds of `repository`.
fn untagged(filter_label: &str) -> BTreeSet<String> {
    let out = docker(&[
        "images",
        "-q",
        "--no-trunc",
        "--filter",
        "dangling=true",
        "--filter",
        &format!("label={filter_label}"),
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes whatever the test left under its labels, pass or fail.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for label in &self.0 {
            let out = docker(&["images", "-qa", "--filter", &format!("label={label}")]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
    }
}

#[test]
fn images_prune_removes_what_a_killed_build_left_and_no_one_elses_untagged_images() {
    let test = "images_prune_removes_what_a_killed_build_left_and_no_one_elses_untagged_images";
    if !docker_tests_enabled(test) {
        return;
    }
    let app = format!("bokb{}", std::process::id());
    let ours = format!("{LABEL}={app}");
    // Someone else's untagged image: a build (not beamops') whose tag moved on to a newer one,
    // labelled with another repository and with a label of its own.
    let foreign_label = format!("test.beamops.foreign={app}");
    let _cleanup = Cleanup(vec![ours.clone(), foreign_label.clone()]);
    let foreign_tag = format!("{app}-foreign:latest");
    for n in ["1", "2"] {
        busybox::build(
            &foreign_tag,
            &format!(
                "FROM scratch\nLABEL {foreign_label} {LABEL}=someone-else\nCOPY busybox /bin/busybox\nENV N={n}\n"
            ),
            &[],
        );
    }
    let foreign = untagged(&foreign_label);
    assert_eq!(foreign.len(), 1, "the first foreign build is untagged now");

    // `up chapter-03` on a copy of the example, killed once its build has made its first
    // stage images (the builder stage's label step is among the first).
    let p = example_copy(&app);
    assert!(untagged(&ours).is_empty());
    let mut up = std::process::Command::new(assert_cmd::cargo::cargo_bin("beamops"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BEAMOPS_")) {
        up.env_remove(k);
    }
    let mut up = up
        .current_dir(p.path())
        .args(["up", "chapter-03"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while untagged(&ours).is_empty() {
        assert!(
            up.try_wait().unwrap().is_none(),
            "up chapter-03 ended before the build made an image"
        );
        assert!(Instant::now() < deadline, "no build step within 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    up.kill().unwrap();
    up.wait().unwrap();
    // The Engine cancels the build when the client goes and cleans up in its own time: the
    // cancelled step's container goes (the build runs with forcerm), and while it lives it uses
    // a stage image, which prune rightly leaves. Wait until what is left is settled: the same
    // untagged images twice in a row, none of them used by a container.
    let in_use = |ids: &BTreeSet<String>| {
        ids.iter().any(|id| {
            let out = docker(&["ps", "-aq", "--filter", &format!("ancestor={id}")]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut left = untagged(&ours);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = untagged(&ours);
        if now == left && !in_use(&now) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed build's leftovers did not settle in 90 s: {now:?}"
        );
        left = now;
    }
    assert!(!left.is_empty());
    let out = docker(&["images", "-q", &app]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the killed build tagged an image"
    );

    // A dry run lists them and removes nothing.
    let out = p
        .beamops()
        .args(["images", "prune", "--dry-run", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let listed: BTreeSet<String> = json(&out.stdout)["untagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, left);
    assert_eq!(untagged(&ours), left);

    let out = p
        .beamops()
        .args(["images", "prune", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let removed: BTreeSet<String> = json(&out.stdout)["untagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, left, "exactly what the killed build left");
    assert!(
        untagged(&ours).is_empty(),
        "nothing of the killed build is left"
    );
    let out = docker(&["images", "-qa", "--filter", &format!("label={ours}")]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the killed build's intermediate images went with them"
    );
    assert_eq!(
        untagged(&foreign_label),
        foreign,
        "someone else's untagged image stays"
    );
}
