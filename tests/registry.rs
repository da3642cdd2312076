//! `beamops deploy` pushing to a real registry: Debian's `docker-registry` (the distribution
//! project's registry 2.8), started by the test with its own config — storage in a temp dir,
//! 127.0.0.1 on a free port, htpasswd auth with a test user. The Engine trusts 127.0.0.0/8
//! registries over plain http by default (`InsecureRegistryCIDRs`), checked first.
//!
//! One deploy of the example app pushes `127.0.0.1:<port>/<repo>:<sha12>` with credentials from a
//! temporary `$DOCKER_CONFIG/config.json`; then one with a wrong password fails (exit 3) before
//! any service changes; then BEAMOPS_REGISTRY_USERNAME/PASSWORD, which win over the file, push
//! again. The password must never show in beamops' output (`-v` too), its state, the
//! project's files, the service spec, or any process's argv while beamops runs.
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1; needs `docker-registry` and `htpasswd` (.ci/setup).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{TestProject, docker, docker_tests_enabled, example_copy, json};

const USER: &str = "beamops-ci";

/// A registry process of this test's own; killed (by its pid) and its storage removed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        // The password goes to htpasswd on stdin (-i), not in its argv.
        let mut htpasswd = Command::new("htpasswd")
            .args(["-i", "-B", "-n", USER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("htpasswd (apt-get install apache2-utils)");
        htpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = htpasswd.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        // A free port: bound and released; the registry takes it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: beamops-test\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Without credentials /v2/ answers 401: the registry is up and asks for auth.
            if let Ok((status, _)) = registry.get("/v2/", None)
                && status == 401
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registry never answered /v2/: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A plain HTTP/1.0 GET: (status, body).
    fn get(&self, path: &str, auth: Option<(&str, &str)>) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n", self.address());
        if let Some((user, password)) = auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request += &format!("Authorization: Basic {token}\r\n");
        }
        request += "\r\n";
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stack, its secrets, its task containers and every tag of the app's images, local and
/// pushed: all made by this test.
struct Cleanup {
    stack: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = beamops::docker::runtime().unwrap();
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        if let Ok(daemon) = rt.block_on(beamops::docker::connect(&host))
            && let Err(e) =
                rt.block_on(beamops::swarm::converge::remove(&daemon, &self.stack, true))
        {
            eprintln!("cleanup of stack {} failed: {e:#}", self.stack);
        }
        let label = format!("label=com.docker.stack.namespace={}", self.stack);
        let out = docker(&["secret", "ls", "-q", "--filter", &label]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["secret", "rm", id]);
        }
        let out = docker(&["ps", "-aq", "--filter", &label]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["rm", "-f", id]);
        }
        for image in &self.images {
            let out = docker(&["images", "-q", image]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
    }
}

/// Every process's argv containing `needle`, sampled every 20 ms until stopped.
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl ArgvWatch {
    fn start(needle: &str) -> ArgvWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, needle) = (stop.clone(), needle.to_string());
        let thread = std::thread::spawn(move || {
            let (mut samples, mut hits) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(argv) = std::fs::read(entry.path().join("cmdline")) {
                        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                        if argv.contains(&needle) {
                            hits.push(argv);
                        }
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, hits)
        });
        ArgvWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn write_docker_config(dir: &Path, registry: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
}

fn service_version(service: &str) -> String {
    let out = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Version.Index}} {{index .Spec.Labels \"beamops.release\"}} {{.Spec.TaskTemplate.ContainerSpec.Image}}",
        service,
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run(p: &TestProject, env: &[(&str, &Path)], args: &[&str]) -> (i32, String, String) {
    let started = Instant::now();
    let mut cmd = p.beamops();
    cmd.env("PATH", common::tool_path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    eprintln!(
        "beamops {}: exit {:?} in {:.1}s",
        args.join(" "),
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn deploy_pushes_to_a_registry_with_auth_and_a_wrong_password_changes_nothing() {
    let test = "deploy_pushes_to_a_registry_with_auth_and_a_wrong_password_changes_nothing";
    if !docker_tests_enabled(test) {
        return;
    }
    // The Engine's default: registries on 127.0.0.0/8 are spoken to over plain http.
    let info = docker(&[
        "info",
        "--format",
        "{{json .RegistryConfig.InsecureRegistryCIDRs}}",
    ]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("127.0.0.0/8"),
        "the Engine does not treat 127.0.0.0/8 as insecure: {info:?}"
    );

    let pid = std::process::id();
    let password = format!("pw{pid}-{}", "Zq7".repeat(8));
    let registry = Registry::start(&password);
    let address = registry.address();
    let app = format!("boregistry{pid}");
    let service = format!("{app}_app");
    let _cleanup = Cleanup {
        stack: app.clone(),
        images: vec![app.clone(), format!("{address}/{app}")],
    };

    let p = example_copy(&app);
    let yaml = p.read("beamops.yaml").replacen(
        "image:\n",
        &format!("image:\n  registry: \"{address}\"\n"),
        1,
    );
    assert!(yaml.contains(&format!("registry: \"{address}\"")), "{yaml}");
    // No IPVS here: dnsrr. No database, so no release command.
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    converge_timeout: 5m\n"
        ),
    );
    let keys = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    write_docker_config(docker_config.path(), &address, USER, &password);
    let key_file = keys.path().join("age.key");
    let env: [(&str, &Path); 2] = [
        ("BEAMOPS_AGE_KEY_FILE", &key_file),
        ("DOCKER_CONFIG", docker_config.path()),
    ];

    let (code, _, err) = run(&p, &env, &["secrets", "init"]);
    assert_eq!(code, 0, "{err}");
    let set = p
        .beamops()
        .env("PATH", common::tool_path())
        .env("BEAMOPS_AGE_KEY_FILE", &key_file)
        .args(["secrets", "set", "local", "SECRET_KEY_BASE"])
        .write_stdin(format!("skb{pid}{}", "k".repeat(64)))
        .output()
        .unwrap();
    assert!(set.status.success(), "{set:?}");
    let (code, out, err) = run(&p, &env, &["up", "chapter-03", "chapter-07"]);
    assert_eq!(code, 0, "{out}\n{err}");
    p.commit_all("registry test config and secrets");
    let mut outputs = Vec::new();

    // 1. A deploy, verbose, pushes <registry>/<repo>:<sha12> with the config file's credentials.
    let watch = ArgvWatch::start(&password);
    let (code, out, err) = run(&p, &env, &["deploy", "local", "-v"]);
    let (samples, hits) = watch.finish();
    eprintln!("argv: {samples} samples of /proc during the deploy");
    assert!(
        hits.is_empty(),
        "the password was in a process's argv: {hits:?}"
    );
    assert_eq!(code, 0, "{out}\n{err}\nregistry log:\n{}", registry.log());
    outputs.push(out.clone() + &err);
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let first = &state["environments"]["local"]["records"]["deploys"][0];
    let image = first["image"].as_str().unwrap().to_string();
    let sha12 = &first["git_sha"].as_str().unwrap()[..12];
    assert_eq!(image, format!("{address}/{app}:{sha12}"));
    assert!(out.contains(&format!("pushed {image}")), "{out}");
    let (status, body) = registry
        .get(&format!("/v2/{app}/tags/list"), Some((USER, &password)))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let tags = json(body.as_bytes());
    assert!(
        tags["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == sha12)),
        "the registry lists {tags} — not {sha12}"
    );
    // Without credentials the registry shows nothing: the push above did authenticate.
    let (status, _) = registry.get(&format!("/v2/{app}/tags/list"), None).unwrap();
    assert_eq!(status, 401);
    let before = service_version(&service);
    assert!(before.ends_with(&image), "{before}");
    p.commit_all("generated by the first deploy");

    // 2. A wrong password: the push fails, naming the registry and the fix; nothing changes.
    let wrong = format!("wrong{pid}-{}", "Xy5".repeat(8));
    write_docker_config(docker_config.path(), &address, USER, &wrong);
    let deploys_before = state["environments"]["local"]["records"]["deploys"]
        .as_array()
        .unwrap()
        .len();
    let watch = ArgvWatch::start(&password);
    let (code, out, err) = run(&p, &env, &["deploy", "local", "-v"]);
    let (_, hits) = watch.finish();
    assert!(hits.is_empty(), "{hits:?}");
    outputs.push(out.clone() + &err);
    eprintln!("wrong password: exit {code}\n{err}");
    assert_eq!(code, 3, "a rejected credential is `blocked`: {out}\n{err}");
    assert!(err.contains(&address), "the registry is named: {err}");
    assert!(err.contains("docker login"), "the fix is named: {err}");
    assert!(
        err.contains("config.json"),
        "where the refused credentials came from: {err}"
    );
    assert!(!err.contains(&wrong), "the wrong password is echoed: {err}");
    assert_eq!(
        service_version(&service),
        before,
        "a failed push must not touch the service"
    );
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let deploys = state["environments"]["local"]["records"]["deploys"]
        .as_array()
        .unwrap();
    assert_eq!(
        deploys.len(),
        deploys_before + 1,
        "the failed run is recorded"
    );
    let last = deploys.last().unwrap();
    assert_eq!(last["outcome"], "failed", "{last}");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&address)),
        "{last}"
    );

    // No credentials at all (an empty DOCKER_CONFIG): the same exit 3, saying where it looked.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        &p,
        &[
            ("BEAMOPS_AGE_KEY_FILE", &key_file),
            ("DOCKER_CONFIG", empty.path()),
        ],
        &["deploy", "local"],
    );
    outputs.push(out.clone() + &err);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("no credentials") && err.contains(&address),
        "{err}"
    );
    assert_eq!(service_version(&service), before);

    // 3. The variables win over the config file (still the wrong password): a deploy again.
    let watch = ArgvWatch::start(&password);
    let out = p
        .beamops()
        .env("PATH", common::tool_path())
        .env("BEAMOPS_AGE_KEY_FILE", &key_file)
        .env("DOCKER_CONFIG", docker_config.path())
        .env("BEAMOPS_REGISTRY_USERNAME", USER)
        .env("BEAMOPS_REGISTRY_PASSWORD", &password)
        .args(["deploy", "local", "-v"])
        .output()
        .unwrap();
    let (_, hits) = watch.finish();
    assert!(hits.is_empty(), "{hits:?}");
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    outputs.push(out.clone() + &err);
    let state: serde_json::Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let last = state["environments"]["local"]["records"]["deploys"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["outcome"], "succeeded", "{last}\n{out}\n{err}");
    let image3 = last["image"].as_str().unwrap();
    assert!(out.contains(&format!("pushed {image3}")), "{out}\n{err}");
    let sha12 = &last["git_sha"].as_str().unwrap()[..12];
    let (_, body) = registry
        .get(&format!("/v2/{app}/tags/list"), Some((USER, &password)))
        .unwrap();
    assert!(body.contains(&format!("\"{sha12}\"")), "{body}");
    assert!(service_version(&service).contains(last["release"].as_str().unwrap()));

    // 4. The password is nowhere: output, state, project files, the service spec.
    let inspect = docker(&["service", "inspect", &service]);
    let mut places: Vec<(String, String)> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("output {i}"), o.clone()))
        .collect();
    places.push((
        "service inspect".into(),
        String::from_utf8_lossy(&inspect.stdout).to_string(),
    ));
    for (rel, bytes) in p.snapshot(false) {
        places.push((rel, String::from_utf8_lossy(&bytes).to_string()));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    for (place, text) in places {
        assert!(
            !text.contains(&password),
            "the password leaked into {place}"
        );
        assert!(
            !text.contains(&encoded),
            "the encoded auth leaked into {place}"
        );
    }
}
