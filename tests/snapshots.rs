//! Every file beamops renders, as an insta snapshot: a template change shows up in review.

mod common;

use common::{TestProject, example_copy, render_into};

#[test]
fn chapter_01_files() {
    let p = TestProject::new();
    p.beamops().args(["up", "1", "-q"]).assert().code(0);
    insta::assert_snapshot!("tool-versions", p.read(".tool-versions"));
    insta::assert_snapshot!("gitignore", p.read(".gitignore"));
}

#[test]
fn init_beamops_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(common::EXAMPLE).join("mix.exs"),
        dir.path().join("mix.exs"),
    )
    .unwrap();
    assert_cmd::Command::cargo_bin("beamops")
        .unwrap()
        .current_dir(dir.path())
        .env_remove("BEAMOPS_PROJECT")
        .arg("init")
        .assert()
        .code(0);
    insta::assert_snapshot!(
        "init-beamops-yaml",
        std::fs::read_to_string(dir.path().join("beamops.yaml")).unwrap()
    );
}

#[test]
fn chapter_08_stack_files() {
    let p = example_copy("coordination");
    let files = render_into(&p, "08");
    assert_eq!(files, ["deploy/stack.yml", "deploy/release.env"]);
    for f in &files {
        insta::assert_snapshot!(f.replace('/', "_"), p.read(f));
    }
}
