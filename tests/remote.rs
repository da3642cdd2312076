//! Remote engines for real: a loopback sshd in front of the local Engine (ssh://) and stunnel
//! terminating TLS with client certificates in front of it (tcp:// + TLS).
//!
//! Gated by BEAMOPS_DOCKER_TESTS=1. Needs root (sshd, and a mount namespace for the hung engine), and
//! Debian's openssh-server, openssh-client, stunnel4 and openssl (.ci/setup installs them).

// Only the image build and the secrets: the stack config is the test's own (an aws environment).
#[allow(dead_code)]
#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestProject, docker_tests_enabled, json};
use serde_json::Value;

fn suffix() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A child process killed and reaped when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every process whose command line mentions `needle`: the ssh clients a run started.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == me || !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push(format!("{name}: {line}"));
        }
    }
    found
}

/// Polls for up to 10 s: a killed ssh takes a moment to be reaped by init.
fn assert_no_ssh_left(alias: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(alias);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "ssh processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two loopback sshds on free ports: `alias` reaches the real Engine; `hung_alias` reaches one
/// started in its own mount namespace, where /var/run/docker.sock is a socket that accepts and
/// never answers, to catch beamops mid-call. `bad_key_alias` logs in with a key sshd refuses.
struct Sshd {
    dir: tempfile::TempDir,
    /// The real Engine's sshd.
    port: u16,
    /// An address the test's ssh config sends to that sshd, as a user's ~/.ssh/config might:
    /// what an aws environment's recorded manager address stands for.
    manager_ip: String,
    _sshd: Reaped,
    _hung_sshd: Reaped,
    alias: String,
    hung_alias: String,
    bad_key_alias: String,
    hung_accepts: Arc<AtomicUsize>,
}

impl Sshd {
    fn start() -> Sshd {
        let id = suffix();
        let dir = tempfile::Builder::new()
            .prefix("boremote-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key", "stranger_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory; Debian's package makes it only at boot.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let hung = d.join("hung.sock");
        let listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
        let hung_accepts = Arc::new(AtomicUsize::new(0));
        let counter = hung_accepts.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let (port, hung_port) = (free_port(), free_port());
        // StrictModes off: the keys live under /tmp, which sshd would refuse as world-writable.
        for (name, port) in [("sshd", port), ("hung-sshd", hung_port)] {
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nAllowStreamLocalForwarding yes\n\
                 LogLevel DEBUG1\n",
                d = d.display(),
            );
            std::fs::write(d.join(format!("{name}_config")), config).unwrap();
        }
        let sshd = Reaped(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-f"])
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("sshd (apt-get install openssh-server)"),
        );
        // `unshare` without --fork execs, and so does sh: the child's PID is sshd's.
        let hung_sshd = Reaped(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {hung} /var/run/docker.sock && exec /usr/sbin/sshd -D -f {d}/hung-sshd_config -E {d}/hung-sshd.log",
                    hung = hung.display(),
                    d = d.display()
                ))
                .stdin(Stdio::null())
                .spawn()
                .expect("unshare (util-linux)"),
        );
        wait_port(port, "sshd");
        wait_port(hung_port, "the hung engine's sshd");
        let (alias, hung_alias, bad_key_alias) = (
            format!("boremote-{id}"),
            format!("boremote-hung-{id}"),
            format!("boremote-badkey-{id}"),
        );
        let host = |alias: &str, port: u16, key: &str| {
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {d}/{key}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking accept-new\n",
                d = d.display()
            )
        };
        // A loopback address of its own per run, so a leftover ssh is told apart by its argv.
        let manager_ip = format!(
            "127.0.{}.{}",
            1 + id.as_bytes()[0] % 250,
            2 + id.as_bytes()[1] % 250
        );
        let ssh_config = host(&alias, port, "client_key")
            + &host(&hung_alias, hung_port, "client_key")
            + &host(&bad_key_alias, port, "stranger_key")
            + &host(&manager_ip, port, "client_key");
        std::fs::write(d.join("ssh_config"), ssh_config).unwrap();
        // beamops runs the `ssh` it finds on PATH; this one reads the test's config, since ssh
        // takes ~/.ssh/config from the password database, not from $HOME.
        std::fs::create_dir_all(d.join("bin")).unwrap();
        let wrapper = d.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {}/ssh_config \"$@\"\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Sshd {
            dir,
            port,
            manager_ip,
            _sshd: sshd,
            _hung_sshd: hung_sshd,
            alias,
            hung_alias,
            bad_key_alias,
            hung_accepts,
        }
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The sshd's host key as a known_hosts line for `host` (ssh looks keys up under the
    /// HostName it dials and, off port 22, `[host]:port`).
    fn known_host(&self, host: &str, key: &str) -> String {
        let public = std::fs::read_to_string(self.dir.path().join(format!("{key}.pub"))).unwrap();
        let mut parts = public.split_whitespace();
        format!("{host} {} {}", parts.next().unwrap(), parts.next().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// Connections forwarded to a unix socket: one per Engine connection through the tunnel.
    fn forwarded(&self) -> usize {
        self.log()
            .matches("ctype direct-streamlocal@openssh.com")
            .count()
    }
}

/// beamops in `project` with DOCKER_HOST and a private TMPDIR (to see what the run leaves).
fn beamops(project: &TestProject, sshd: &Sshd, host: &str, tmp: &Path) -> assert_cmd::Command {
    let mut cmd = project.beamops();
    cmd.env("PATH", sshd.path_env())
        .env("DOCKER_HOST", host)
        .env("TMPDIR", tmp)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd
}

fn finding<'a>(doctor: &'a Value, check: &str) -> &'a Value {
    doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {doctor}"))
}

fn action<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actions"].as_array().unwrap())
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no action {id} in {plan}"))
}

fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("beamops-ssh-"))
        .collect()
}

#[test]
fn ssh_engine_is_reached_through_one_tunnel_closed_on_exit() {
    if !docker_tests_enabled("ssh_engine_is_reached_through_one_tunnel_closed_on_exit") {
        return;
    }
    let sshd = Sshd::start();
    let project = TestProject::new();
    let tmp = tempfile::tempdir().unwrap();
    let host = format!("ssh://{}", sshd.alias);

    let out = beamops(&project, &sshd, &host, tmp.path())
        .args(["doctor", "--format", "json"])
        .output()
        .unwrap();
    let engine = finding(&json(&out.stdout), "docker engine").clone();
    assert_eq!(engine["ok"], true, "{engine}");
    let detail = engine["detail"].as_str().unwrap();
    assert!(
        detail.contains("ssh tunnel to") && detail.contains("API 1."),
        "{detail}"
    );
    assert_eq!(sshd.logins(), 1, "{}", sshd.log());
    assert_no_ssh_left(&sshd.alias);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );

    // plan asks the Engine for its swarm state through the tunnel: one login for the whole
    // run, however many Engine connections the checks make.
    let before = sshd.forwarded();
    let out = beamops(&project, &sshd, &host, tmp.path())
        .args(["plan", "chapter-07", "--format", "json"])
        .output()
        .unwrap();
    let plan = json(&out.stdout);
    let swarm = action(&plan, "swarm-mode");
    assert_eq!(swarm["status"], "satisfied", "{swarm}");
    assert!(
        swarm["detail"].as_str().unwrap().starts_with("manager"),
        "{swarm}"
    );
    assert_eq!(sshd.logins(), 2, "{}", sshd.log());
    let forwarded = sshd.forwarded() - before;
    assert!(forwarded >= 2, "{forwarded} forwarded connections");
    println!("plan chapter-07 over ssh: 1 login, {forwarded} forwarded Engine connections");
    assert_no_ssh_left(&sshd.alias);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );

    // env names the route without connecting.
    let out = beamops(&project, &sshd, &host, tmp.path())
        .args(["env", "--format", "json"])
        .output()
        .unwrap();
    let env = json(&out.stdout);
    assert_eq!(env["engine"]["route"]["via"], "ssh", "{env}");
    assert_eq!(env["engine"]["source"], "DOCKER_HOST", "{env}");
    assert_eq!(sshd.logins(), 2);
}

#[test]
fn ssh_login_refused_is_blocked_and_names_host_and_fix() {
    if !docker_tests_enabled("ssh_login_refused_is_blocked_and_names_host_and_fix") {
        return;
    }
    let sshd = Sshd::start();
    let project = TestProject::new();
    let tmp = tempfile::tempdir().unwrap();
    let host = format!("ssh://{}", sshd.bad_key_alias);
    let out = beamops(&project, &sshd, &host, tmp.path())
        .args(["plan", "chapter-07", "--format", "json"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let plan = json(&out.stdout);
    let swarm = action(&plan, "swarm-mode");
    assert_eq!(swarm["status"], "blocked", "{swarm}");
    let detail = swarm["detail"].as_str().unwrap();
    assert!(
        detail.contains(&host) && detail.contains("Permission denied"),
        "{detail}"
    );
    assert!(
        detail.contains("fix:") && detail.contains("IdentityFile"),
        "{detail}"
    );
    assert_no_ssh_left(&sshd.bad_key_alias);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
fn ssh_tunnel_dies_with_beamops_on_sigint_sigterm_and_sigkill() {
    if !docker_tests_enabled("ssh_tunnel_dies_with_beamops_on_sigint_sigterm_and_sigkill") {
        return;
    }
    let sshd = Sshd::start();
    let project = TestProject::new();
    let binary = assert_cmd::cargo::cargo_bin("beamops");
    let host = format!("ssh://{}", sshd.hung_alias);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let tmp = tempfile::tempdir().unwrap();
        let accepted = sshd.hung_accepts.load(Ordering::SeqCst);
        let mut child = Reaped(
            Command::new(&binary)
                .current_dir(project.path())
                .args(["doctor", "--format", "json"])
                .env("PATH", sshd.path_env())
                .env("DOCKER_HOST", &host)
                .env("TMPDIR", tmp.path())
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Two connections reached the hung Engine: the tunnel's readiness probe, then the API
        // call beamops is now waiting on.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sshd.hung_accepts.load(Ordering::SeqCst) < accepted + 2 {
            assert!(
                Instant::now() < deadline,
                "the tunnel never reached the hung engine: {}",
                sshd.log()
            );
            if child.0.try_wait().unwrap().is_some() {
                let mut said = String::new();
                use std::io::Read;
                let _ = child.0.stderr.take().unwrap().read_to_string(&mut said);
                panic!(
                    "beamops ended before the signal: {said}\nsshd: {}",
                    std::fs::read_to_string(sshd.dir.path().join("hung-sshd.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !processes_mentioning(&sshd.hung_alias).is_empty(),
            "no ssh running mid-call"
        );
        let started = Instant::now();
        assert_eq!(unsafe { libc::kill(child.0.id() as i32, signal) }, 0);
        let status = child.0.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        assert_no_ssh_left(&sshd.hung_alias);
        println!(
            "signal {signal}: beamops and its ssh gone in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        if signal != libc::SIGKILL {
            // A catchable signal also removes the tunnel's private directory.
            assert!(
                leftovers(tmp.path()).is_empty(),
                "{:?}",
                leftovers(tmp.path())
            );
        }
    }
}

/// A test CA, a server certificate for 127.0.0.1, a client certificate, and a second CA that
/// signed neither.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(d));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (ca, cn) in [("ca", "beamops test CA"), ("other-ca", "some other CA")] {
            let subject = format!("/CN={cn}");
            let (key, cert) = (format!("{ca}-key.pem"), format!("{ca}.pem"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
            ]);
            openssl(&args);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "127.0.0.1"), ("client", "beamops")] {
            let (key, csr, cert, ext) = (
                format!("{name}-key.pem"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subject = format!("/CN={cn}");
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    /// A DOCKER_CERT_PATH directory: the client's certificate and key, and `ca` as ca.pem.
    fn cert_path(&self, ca: &str) -> PathBuf {
        let out = self.dir.path().join(format!("docker-{ca}"));
        std::fs::create_dir_all(&out).unwrap();
        let d = self.dir.path();
        std::fs::copy(d.join(format!("{ca}.pem")), out.join("ca.pem")).unwrap();
        std::fs::copy(d.join("client.pem"), out.join("cert.pem")).unwrap();
        std::fs::copy(d.join("client-key.pem"), out.join("key.pem")).unwrap();
        out
    }
}

#[test]
fn tls_engine_with_client_certificates_and_a_wrong_ca() {
    if !docker_tests_enabled("tls_engine_with_client_certificates_and_a_wrong_ca") {
        return;
    }
    let pki = Pki::new();
    let d = pki.dir.path();
    let port = free_port();
    // stunnel verifies the client's certificate against the test CA before the Engine sees a byte.
    let conf = format!(
        "foreground = yes\npid =\ndebug = 4\n[docker]\naccept = 127.0.0.1:{port}\n\
         connect = /var/run/docker.sock\ncert = {d}/server.pem\nkey = {d}/server-key.pem\n\
         CAfile = {d}/ca.pem\nverifyChain = yes\nrequireCert = yes\n",
        d = d.display()
    );
    std::fs::write(d.join("stunnel.conf"), conf).unwrap();
    let _stunnel = Reaped(
        Command::new("stunnel4")
            .arg(d.join("stunnel.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stunnel.log")).unwrap())
            .spawn()
            .expect("stunnel4 (apt-get install stunnel4)"),
    );
    wait_port(port, "stunnel");
    let project = TestProject::new();
    let host = format!("tcp://127.0.0.1:{port}");
    let with = |cert_path: &Path, args: &[&str]| {
        project
            .beamops()
            .env("DOCKER_HOST", &host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", cert_path)
            .args(args)
            .output()
            .unwrap()
    };

    let good = pki.cert_path("ca");
    let doctor = json(&with(&good, &["doctor", "--format", "json"]).stdout);
    let engine = finding(&doctor, "docker engine");
    assert_eq!(engine["ok"], true, "{engine}");
    assert!(
        engine["detail"].as_str().unwrap().contains("tcp+TLS"),
        "{engine}"
    );
    let plan = json(&with(&good, &["plan", "chapter-07", "--format", "json"]).stdout);
    assert_eq!(action(&plan, "swarm-mode")["status"], "satisfied", "{plan}");

    // The client certificate is fine, but the server's is not signed by this ca.pem: blocked
    // (exit 3), like every Engine beamops cannot reach, naming the file to fix.
    let wrong = pki.cert_path("other-ca");
    let out = with(&wrong, &["plan", "chapter-07", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let swarm = action(&json(&out.stdout), "swarm-mode").clone();
    assert_eq!(swarm["status"], "blocked", "{swarm}");
    let detail = swarm["detail"].as_str().unwrap();
    assert!(
        detail.contains("UnknownIssuer") && detail.contains(&host),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("{}/ca.pem", wrong.display())),
        "{detail}"
    );

    // No certificates where DOCKER_CERT_PATH points: blocked before any connection.
    let empty = tempfile::tempdir().unwrap();
    let out = with(empty.path(), &["plan", "chapter-07", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let swarm = action(&json(&out.stdout), "swarm-mode").clone();
    assert!(
        swarm["detail"].as_str().unwrap().contains("ca.pem"),
        "{swarm}"
    );
}

/// beamops.yaml of a busybox stack with an aws environment `staging`: no docker_host (the
/// manager's address comes from chapter 06's outputs) unless `docker_host` is given.
fn aws_config(stack: &str, known_hosts: &[String], docker_host: Option<&str>) -> String {
    // One manager and no autoscaled workers: the image built on the manager is on every node.
    let mut env = "  staging:\n    provider: aws\n    region: eu-west-1\n    replicas: 1\n    ssh_user: root\n    max_workers: 0\n".to_string();
    if let Some(host) = docker_host {
        env += &format!("    docker_host: {host}\n");
    }
    if !known_hosts.is_empty() {
        env += "    known_hosts:\n";
        for line in known_hosts {
            env += &format!("      - \"{line}\"\n");
        }
    }
    format!(
        r#"version: 1
app:
  name: coordination
  otp_app: coordination
  elixir: "1.18.3"
  otp: "27.3.4.1"
  stack: {stack}
image:
  repository: {stack}-img
chapters:
  swarm:
    database: false
    healthcheck: ["CMD", "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:4000/health"]
    converge_timeout: 3m
environments:
  local:
    replicas: 1
{env}"#
    )
}

/// Chapter 06's outputs as `up chapter-06` records them (the non-sensitive ones, in state).
fn record_manager_outputs(project: &TestProject, ips: &[&str]) {
    let dir = project.path().join(".beamops");
    let mut state = beamops::state::State::read(&dir).unwrap();
    state
        .chapter_mut("staging", "06-production")
        .actions
        .insert(
            "terraform-applied".into(),
            beamops::state::ActionRecord {
                outcome: beamops::state::Outcome::Applied,
                inputs_digest: None,
                data: serde_json::json!({
                    "root": "terraform/staging",
                    "outputs": {
                        "manager_public_ips": ips,
                        "join_token_parameter": "/coordination-staging/swarm/join-token",
                    },
                }),
                at: beamops::state::now_rfc3339(),
            },
        );
    state.write(&dir).unwrap();
}

fn swarm_state() -> String {
    let out = common::docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's stack, secrets and image; leaves the swarm it made if nothing else runs.
struct AwsCleanup {
    stack: String,
    made_swarm: bool,
}

impl Drop for AwsCleanup {
    fn drop(&mut self) {
        let (rt, daemon) = busybox::connect();
        let _ = rt.block_on(beamops::swarm::converge::remove(&daemon, &self.stack, true));
        for key in ["secret_key_base", "release_cookie"] {
            let _ = rt.block_on(
                daemon
                    .client
                    .delete_secret(&format!("{}_{key}_v1", self.stack)),
            );
        }
        let _ = common::docker(&["image", "rm", "-f", &format!("{}-img:latest", self.stack)]);
        if self.made_swarm {
            let services = common::docker(&["service", "ls", "-q"]);
            if services.stdout.iter().all(u8::is_ascii_whitespace) {
                let _ = common::docker(&["swarm", "leave", "--force"]);
            }
        }
    }
}

#[test]
fn aws_environment_converges_chapter_08_through_its_manager_with_a_pinned_host_key() {
    if !docker_tests_enabled(
        "aws_environment_converges_chapter_08_through_its_manager_with_a_pinned_host_key",
    ) {
        return;
    }
    let sshd = Sshd::start();
    let project = TestProject::new();
    let tmp = tempfile::tempdir().unwrap();
    let stack = format!("awsdeploy{}", &suffix()[..6]);
    let found_swarm = swarm_state();
    let mut cleanup = AwsCleanup {
        stack: stack.clone(),
        made_swarm: false,
    };
    let manager = sshd.manager_ip.clone();
    // ssh checks the key under the address it dials (the config's HostName) and port.
    let pinned = sshd.known_host(&format!("[127.0.0.1]:{}", sshd.port), "host_key");
    project.write(
        "beamops.yaml",
        &aws_config(&stack, std::slice::from_ref(&pinned), None),
    );
    // Never DOCKER_HOST or the local socket for an aws environment: this one does not exist.
    let run = |args: &[&str]| {
        beamops(
            &project,
            &sshd,
            "unix:///nonexistent/docker.sock",
            tmp.path(),
        )
        .args(args)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap()
    };
    let clean = |what: &str| {
        assert_no_ssh_left(&manager);
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{what}: {:?}",
            leftovers(tmp.path())
        );
    };

    // 1. No address recorded yet: blocked, naming chapter 06 and docker_host; no login.
    let out = run(&["plan", "chapter-08", "--env", "staging", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let plan = json(&out.stdout);
    let detail = action(&plan, "swarm-mode")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("up chapter-06 --env staging")
            && detail.contains("environments.staging.docker_host"),
        "{detail}"
    );
    assert_eq!(sshd.logins(), 0);

    // 2. Chapter 06's recorded outputs give the manager; not a swarm yet: reported, never
    // initialised from here (the first manager's user data does that).
    record_manager_outputs(&project, &[&manager, "127.0.0.1"]);
    if found_swarm == "inactive" {
        let out = run(&["up", "chapter-08", "--env", "staging"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("is not in a swarm") && text.contains("chapter 06"),
            "{text}"
        );
        assert_eq!(
            swarm_state(),
            "inactive",
            "beamops initialised a swarm on aws"
        );
        assert!(sshd.logins() >= 1, "{}", sshd.log());
        clean("not a swarm");
        cleanup.made_swarm = true;
    } else {
        println!("the Engine is already a swarm ({found_swarm}): the not-a-swarm case is not run");
    }

    // 3. The swarm (the test's stand-in for the managers' bootstrap) and chapter 07's secrets;
    // then up chapter-08 converges the stack through the tunnel.
    let mut made = Vec::new();
    busybox::stack_secrets(&stack, &["secret_key_base", "release_cookie"], &mut made);
    let image = format!("{stack}-img:latest");
    busybox::build(
        &image,
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait\"]\n",
        &[("www/health", b"ok\n", 0o644)],
    );
    let logins = sshd.logins();
    let started = Instant::now();
    let out = run(&["up", "chapter-08", "--env", "staging", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let seconds = started.elapsed().as_secs_f64();
    let report = json(&out.stdout);
    let text = report.to_string();
    assert!(text.contains("stack-converged"), "{text}");
    assert_eq!(
        sshd.logins(),
        logins + 1,
        "one login for the run: {}",
        sshd.log()
    );
    let ps = common::docker(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
        &format!("{stack}_app"),
    ]);
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(ps.starts_with("Running"), "{ps}");
    println!("up chapter-08 --env staging through ssh://root@{manager}: {seconds:.1} s");
    clean("up");
    // Again: nothing to change.
    let out = run(&["plan", "chapter-08", "--env", "staging", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    clean("plan");
    // env names the manager and where its address came from, without logging in; doctor
    // reaches it the way every command does.
    let logins = sshd.logins();
    let env = json(&run(&["env", "--env", "staging", "--format", "json"]).stdout);
    assert_eq!(env["engine"]["source"], "terraform outputs", "{env}");
    assert_eq!(
        env["engine"]["host"],
        format!("ssh://root@{manager}"),
        "{env}"
    );
    assert_eq!(env["engine"]["route"]["via"], "ssh", "{env}");
    assert_eq!(sshd.logins(), logins);
    let doctor = json(&run(&["doctor", "--env", "staging", "--format", "json"]).stdout);
    let engine = finding(&doctor, "docker engine");
    assert_eq!(engine["ok"], true, "{engine}");
    assert_eq!(sshd.logins(), logins + 1);
    clean("doctor");

    // 4. The host key is pinned, never trusted on first use: a pin for another address (the
    // test's ssh config says accept-new, which beamops overrides), a wrong key, and none.
    for (known_hosts, expected) in [
        (
            vec![sshd.known_host("[127.0.0.1]:1", "host_key")],
            "pinned known_hosts",
        ),
        (
            vec![sshd.known_host(&format!("[127.0.0.1]:{}", sshd.port), "stranger_key")],
            "pinned known_hosts",
        ),
        (vec![], "environments.staging.known_hosts"),
    ] {
        project.write("beamops.yaml", &aws_config(&stack, &known_hosts, None));
        let logins = sshd.logins();
        for args in [
            &["plan", "chapter-08", "--env", "staging", "--format", "json"][..],
            &["deploy", "staging", "--allow-dirty"][..],
        ] {
            let out = run(args);
            assert_eq!(
                out.status.code(),
                Some(3),
                "{args:?} {known_hosts:?}: {out:?}"
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                text.contains(expected) && text.contains("fix:"),
                "{args:?}: {text}"
            );
            clean("pinning");
        }
        assert_eq!(sshd.logins(), logins, "a refused host key means no login");
    }
    let written = std::fs::read_to_string(sshd.dir.path().join("known_hosts")).unwrap_or_default();
    assert!(
        !written.contains("127.0.0.1"),
        "ssh trusted a key on first use: {written}"
    );

    // 5. docker_host in beamops.yaml wins over the recorded outputs.
    project.write(
        "beamops.yaml",
        &aws_config(
            &stack,
            &[pinned],
            Some(&format!("ssh://root@{}", sshd.alias)),
        ),
    );
    let out = run(&["plan", "chapter-08", "--env", "staging", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        action(&json(&out.stdout), "swarm-mode")["status"],
        "satisfied"
    );
    assert_no_ssh_left(&sshd.alias);
    drop(cleanup);
}

/// Removes what a deploy of `app` left: its stack, the stack's secrets, its images.
struct DeployCleanup(String);

impl Drop for DeployCleanup {
    fn drop(&mut self) {
        let (rt, daemon) = busybox::connect();
        let _ = rt.block_on(beamops::swarm::converge::remove(&daemon, &self.0, true));
        let label = format!("label=com.docker.stack.namespace={}", self.0);
        let out = common::docker(&["secret", "ls", "-q", "--filter", &label]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = common::docker(&["secret", "rm", id]);
        }
        let out = common::docker(&["ps", "-aq", "--filter", &label]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = common::docker(&["rm", "-f", id]);
        }
        let out = common::docker(&["images", "-q", &self.0]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = common::docker(&["rmi", "-f", id]);
        }
    }
}

/// `beamops deploy staging` of the example, an aws environment, through its manager's ssh://
/// address from chapter 06's recorded outputs: the build (chapter 03), the Docker secrets
/// (chapter 07) and the rollout (chapter 08) all go through one tunnel, and the release is live.
#[test]
fn deploy_of_an_aws_environment_goes_through_its_manager() {
    if !docker_tests_enabled("deploy_of_an_aws_environment_goes_through_its_manager") {
        return;
    }
    let sshd = Sshd::start();
    let app = format!("boawsdep{}", &suffix()[..6]);
    let _cleanup = DeployCleanup(app.clone());
    let p = common::example_copy(&app);
    let keys = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pinned = sshd.known_host(&format!("[127.0.0.1]:{}", sshd.port), "host_key");
    let yaml = p.read("beamops.yaml").replacen(
        "  staging:\n    provider: aws\n    replicas: 3\n",
        &format!(
            "  staging:\n    provider: aws\n    replicas: 1\n    ssh_user: root\n    max_workers: 0\n    known_hosts:\n      - \"{pinned}\"\n"
        ),
        1,
    );
    assert!(yaml.contains("ssh_user: root"), "{yaml}");
    p.write(
        "beamops.yaml",
        &format!(
            "{yaml}\nchapters:\n  swarm:\n    database: false\n    endpoint_mode: dnsrr\n    converge_timeout: 6m\n    update_monitor: 5s\n"
        ),
    );
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = p.beamops();
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                sshd.dir.path().join("bin").display(),
                common::tool_path()
            ),
        )
        .env("BEAMOPS_AGE_KEY_FILE", keys.path().join("age.key"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("TMPDIR", tmp.path())
        .timeout(Duration::from_secs(900))
        .args(args);
        if let Some(input) = stdin {
            cmd.write_stdin(input.to_string());
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        out
    };
    run(&["secrets", "init"], None);
    run(
        &["secrets", "set", "staging", "SECRET_KEY_BASE"],
        Some(&format!("kb{}", "k".repeat(64))),
    );
    record_manager_outputs(&p, &[&sshd.manager_ip]);
    p.commit_all("an aws environment reached through its manager");
    // The managers' bootstrap made the swarm (chapter 06's user data); never beamops on aws.
    let (rt, daemon) = busybox::connect();
    rt.block_on(beamops::swarm::ensure(&daemon, "127.0.0.1"))
        .unwrap();

    let logins = sshd.logins();
    let started = Instant::now();
    let out = run(&["deploy", "staging", "--format", "json"], None);
    let seconds = started.elapsed().as_secs_f64();
    let report = json(&out.stdout);
    assert_eq!(
        sshd.logins(),
        logins + 1,
        "one login for the deploy: {}",
        sshd.log()
    );
    let head = {
        let repo = git2::Repository::open(p.path()).unwrap();
        repo.head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string()
    };
    let image = common::docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        &format!("{app}_app"),
    ]);
    let image = String::from_utf8_lossy(&image.stdout).trim().to_string();
    assert!(
        image.starts_with(&format!("{app}:{}", &head[..12])),
        "the service runs {image}, not HEAD's release: {report}"
    );
    let state: Value = serde_json::from_str(&p.read(".beamops/state.json")).unwrap();
    let deploys = state["environments"]["staging"]["records"]["deploys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        deploys.last().map(|d| d["outcome"].clone()),
        Some(Value::from("succeeded")),
        "{deploys:?}"
    );
    println!(
        "deploy staging (aws) through ssh://root@{}: {seconds:.1} s",
        sshd.manager_ip
    );
    assert_no_ssh_left(&sshd.manager_ip);
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}
