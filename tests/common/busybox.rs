//! Tiny FROM-scratch images around a static busybox, for swarm tests that need no Erlang:
//! they build in about a second through the Engine API.

use beamops::docker::{self, Daemon};

use crate::common::TestProject;

/// The local Engine (or DOCKER_HOST), version negotiated.
pub fn connect() -> (tokio::runtime::Runtime, Daemon) {
    let rt = docker::runtime().unwrap();
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let daemon = rt.block_on(docker::connect(&host)).unwrap();
    (rt, daemon)
}

/// Builds `dockerfile` under `tag` with `/bin/busybox` as `busybox` in the context, plus `files`
/// (path, content, mode).
pub fn build(tag: &str, dockerfile: &str, files: &[(&str, &[u8], u32)]) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644);
    add(
        "busybox",
        &std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)"),
        0o755,
    );
    for (path, data, mode) in files {
        add(path, data, *mode);
    }
    let context = tar.into_inner().unwrap();
    let (rt, daemon) = connect();
    rt.block_on(async {
        use futures_util::StreamExt;
        let options = bollard::query_parameters::BuildImageOptions {
            t: Some(tag.into()),
            rm: true,
            ..Default::default()
        };
        let mut stream =
            daemon
                .client
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = stream.next().await {
            let step = step.expect("building the test image");
            assert!(
                step.error_detail.is_none(),
                "test image build: {:?}",
                step.error_detail
            );
        }
    });
}

/// beamops.yaml for a stack that runs a busybox httpd image (`repository:latest`) serving
/// /health on port 4000, without Postgres.
pub fn write_stack_config(p: &TestProject, stack: &str, replicas: u32, image: &str) {
    p.write(
        "beamops.yaml",
        &format!(
            r#"version: 1
app:
  name: coordination
  otp_app: coordination
  elixir: "1.18.3"
  otp: "27.3.4.1"
  stack: {stack}
image:
  repository: {repo}
chapters:
  swarm:
    database: false
    healthcheck: ["CMD", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:4000/health"]
    converge_timeout: 3m
environments:
  local:
    replicas: {replicas}
"#,
            repo = image.trim_end_matches(":latest")
        ),
    );
}

/// Swarm mode, and a `<stack>_<key>_v1` Docker secret for each of `keys` that `made` does not
/// hold yet (added to it, for the test's cleanup).
pub fn stack_secrets(stack: &str, keys: &[&str], made: &mut Vec<String>) {
    let (rt, daemon) = connect();
    rt.block_on(beamops::swarm::ensure(&daemon, "127.0.0.1"))
        .unwrap();
    for key in keys {
        let name = format!("{stack}_{key}_v1");
        if made.contains(&name) {
            continue;
        }
        rt.block_on(daemon.client.create_secret(bollard::models::SecretSpec {
            name: Some(name.clone()),
            data: Some("dGVzdA==".into()),
            ..Default::default()
        }))
        .unwrap();
        made.push(name);
    }
}
