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

/// With PostgreSQL, an aws environment's stack pins the database to the node chapter 06's first
/// manager labels (its volume is there); a local single node keeps the manager constraint only.
#[test]
fn chapter_08_stack_on_aws_pins_postgres_to_the_labelled_node() {
    let p = example_copy("coordination");
    let yaml = p.read("beamops.yaml");
    p.write(
        "beamops.yaml",
        &format!("{yaml}\nchapters:\n  swarm:\n    database: true\n"),
    );
    let constraints = |env: &str| {
        common::render_env_into(&p, "08", env);
        let text = p.read("deploy/stack.yml");
        let stack: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let list: Vec<String> = stack["services"]["db"]["deploy"]["placement"]["constraints"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        (list, text)
    };
    let (local, _) = constraints("local");
    assert_eq!(local, ["node.role == manager"]);
    let (aws, text) = constraints("staging");
    assert_eq!(
        aws,
        ["node.role == manager", "node.labels.beamops.pgdata == true"]
    );
    // Only the database is pinned: the app spreads over every node.
    let stack: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert!(
        !serde_yaml_ng::to_string(&stack["services"]["app"])
            .unwrap()
            .contains("pgdata")
    );
    insta::assert_snapshot!("aws_stack.yml", text);
}

#[test]
fn chapter_09_release_files() {
    let p = example_copy("coordination");
    let files = render_into(&p, "09");
    // The example has no Phoenix: its own poller reads CLUSTER_DNS_QUERY, no libcluster block.
    assert_eq!(files, ["rel/env.sh.eex", "rel/vm.args.eex"]);
    for f in &files {
        insta::assert_snapshot!(f.replace('/', "_"), p.read(f));
    }
    // The example commits what chapter 09 renders for it, so its own `up chapter-09` is clean.
    for f in &files {
        assert_eq!(
            std::fs::read_to_string(std::path::Path::new(common::EXAMPLE).join(f)).unwrap(),
            p.read(f),
            "examples/coordination/{f} differs from the rendering"
        );
    }
}

#[test]
fn chapter_09_configures_libcluster_for_a_phoenix_project() {
    let p = example_copy("shop");
    let mix = p.read("mix.exs");
    let start = mix
        .find("defp deps")
        .expect("the example has a deps function");
    let body_end = start + mix[start..].find("\n  end").unwrap();
    let deps = "  defp deps do\n    [\n      {:phoenix, \"~> 1.7\"},\n      {:libcluster, \"~> 3.4\"}\n    ]";
    p.write(
        "mix.exs",
        &format!("{}{}{}", &mix[..start - 2], deps, &mix[body_end..]),
    );
    let files = render_into(&p, "09");
    assert_eq!(
        files,
        ["rel/env.sh.eex", "rel/vm.args.eex", "config/runtime.exs"]
    );
    let block = p.read("config/runtime.exs");
    insta::assert_snapshot!("phoenix_libcluster_block", block);
    // The block is Elixir that parses, with the keys libcluster's DNSPoll reads.
    for key in ["polling_interval:", "query:", "node_basename:"] {
        assert!(block.contains(key), "{key} missing:\n{block}");
    }
    if which::which("elixir").is_ok() {
        let out = std::process::Command::new("elixir")
            .args([
                "-e",
                "Code.string_to_quoted!(File.read!(\"config/runtime.exs\"))",
            ])
            .current_dir(p.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "elixir must be on PATH in CI (.ci/setup installs it)"
        );
    }
}
