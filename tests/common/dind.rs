//! A throwaway multi-node swarm for tests: dockerd from Debian's `docker.io` running inside
//! containers of the outer Engine, on a private bridge network, each reached over plain tcp://
//! on that network.
//!
//! Why not `--privileged`: on this machine every process's capability bounding set lacks
//! CAP_SYS_RESOURCE, and a privileged container asks runc for all capabilities, so it fails with
//! `unable to apply caps: operation not permitted` (with or without `--cap-drop`, which Docker
//! ignores for privileged containers). The nodes get what privileged would give, minus that one
//! capability: every other capability, no seccomp/AppArmor profile, unmasked /proc, every device
//! in the device cgroup, a private cgroup namespace; the entrypoint remounts /sys and the cgroup
//! hierarchies read-write (see ENTRYPOINT).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian suite the node image is built from; its `docker.io` is the inner Engine.
pub const SUITE: &str = "trixie";
/// Inner Engine API port, plain HTTP: it listens only on the test's private bridge network.
pub const API_PORT: u16 = 2375;
/// Storage drivers tried in order, the first whose dockerd comes up wins.
pub const STORAGE_DRIVERS: &[&str] = &["overlay2", "fuse-overlayfs", "vfs"];

/// Cached across runs under a fixed tag, like the base images: the image depends only on the suite.
pub fn image_tag() -> String {
    format!("beamops-dind:{SUITE}")
}

/// Run as the nodes' PID 1 wrapper. Without --privileged, /sys and the cgroup hierarchies come
/// read-only; a fresh mount of each hierarchy inside the private cgroup namespace is rooted at
/// the node's own cgroup, so inner containers nest below it.
const ENTRYPOINT: &str = r#"#!/bin/sh
mount -o remount,rw /sys || echo "beamops-dind: remount /sys read-write failed" >&2
for d in /sys/fs/cgroup/*; do
  [ -L "$d" ] && continue
  name=$(basename "$d")
  umount "$d" || { echo "beamops-dind: umount $d failed" >&2; continue; }
  case "$name" in
    unified) mount -t cgroup2 cgroup2 "$d" ;;
    systemd) mount -t cgroup -o none,name=systemd cgroup "$d" ;;
    *) mount -t cgroup -o "$name" cgroup "$d" ;;
  esac || echo "beamops-dind: mount cgroup $name failed" >&2
done
mountpoint -q /tmp || mount -t tmpfs none /tmp
exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 --tls=false \
  --storage-driver="${DIND_STORAGE_DRIVER:-overlay2}" "$@"
"#;

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node image, built once per machine from the cached Debian minbase (needs root, like
/// `beamops images bootstrap`) and imported; later runs find it under its tag.
pub fn ensure_image() -> String {
    // Tests of one binary run in parallel: on a fresh machine only one of them builds it.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tag = image_tag();
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let started = Instant::now();
    use beamops::docker::{debian, rootfs};
    rootfs::require_tools().expect("root with debootstrap and chroot");
    let mirror = debian::host_mirror(Path::new("/etc/apt")).expect("the host's Debian mirror");
    let base = rootfs::minbase(SUITE, &mirror, &|step| eprintln!("dind image: {step}"))
        .expect("the minbase rootfs");
    let mut root = rootfs::Rootfs::copy_of(&base).expect("a copy of the rootfs");
    root.prepare_chroot().expect("chroot");
    root.run(&["apt-get", "update", "-q"])
        .expect("apt-get update");
    root.run(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "docker.io",
        "docker-cli",
        "iptables",
        "fuse-overlayfs",
        "ca-certificates",
        "procps",
    ])
    .expect("installing docker.io");
    let entry = root.path().join("usr/local/bin/beamops-dind");
    std::fs::write(&entry, ENTRYPOINT).unwrap();
    beamops::fsutil::set_mode(&entry, 0o755).unwrap();
    let tar = root.finish_into_tar().expect("packing the rootfs");
    docker_ok(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/usr/local/bin/beamops-dind\"]",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        "VOLUME /var/lib/docker",
        "--message",
        "beamops test swarm node: Debian docker.io",
        &tar.path().display().to_string(),
        &tag,
    ]);
    eprintln!(
        "dind image {tag} built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tag
}

/// The node image with more Debian packages (chapter 10's nodes need the AWS CLI and curl),
/// built once on top of [`ensure_image`] with `docker build --network host` (apt reaches the
/// node image's own Debian mirror) and cached under `beamops-dind-<name>:<suite>`.
pub fn ensure_image_with(name: &str, packages: &[&str]) -> String {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let base = ensure_image();
    let _one = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tag = format!("beamops-dind-{name}:{SUITE}");
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let started = Instant::now();
    let dockerfile = format!(
        "FROM {base}\nRUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \\\n  --no-install-recommends {} && rm -rf /var/lib/apt/lists/*\n",
        packages.join(" ")
    );
    let mut child = Command::new("docker")
        .args(["build", "--network", "host", "-q", "-t", &tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker CLI");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "building {tag}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "dind image {tag} (+ {}) built in {:.1}s",
        packages.join(" "),
        started.elapsed().as_secs_f64()
    );
    tag
}

pub struct Node {
    pub name: String,
    pub volume: String,
    pub ip: String,
}

impl Node {
    /// The inner Engine's address for beamops, bollard and the docker CLI.
    pub fn host(&self) -> String {
        format!("tcp://{}:{API_PORT}", self.ip)
    }

    /// The docker CLI against the inner Engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `docker secret create NAME -` with the value on stdin, never in argv.
    pub fn create_secret(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args(["-H", &self.host(), "secret", "create", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the docker CLI");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "creating secret {name}");
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        docker_ok(&all)
    }
}

/// N nodes on one bridge network; dropping it removes the containers, their volumes and the
/// network, whatever happened to the test.
pub struct Lab {
    pub prefix: String,
    pub network: String,
    pub nodes: Vec<Node>,
    pub storage_driver: String,
    /// Node numbers ever started: a node whose start failed half-way is removed too.
    started: usize,
}

impl Lab {
    pub fn start(prefix: &str, count: usize) -> Lab {
        Lab::start_with(prefix, count, &ensure_image())
    }

    /// [`Lab::start`] with another node image (one of [`ensure_image_with`]).
    pub fn start_with(prefix: &str, count: usize, image: &str) -> Lab {
        let image = image.to_string();
        let network = format!("{prefix}-net");
        let mut lab = Lab {
            prefix: prefix.to_string(),
            network: network.clone(),
            nodes: Vec::new(),
            storage_driver: String::new(),
            started: count,
        };
        docker_ok(&["network", "create", "--driver", "bridge", &network]);
        let mut failures = Vec::new();
        for driver in STORAGE_DRIVERS {
            let node = lab.run_node(&image, 1, driver);
            match wait_for_engine(&node) {
                Ok(()) => {
                    lab.nodes.push(node);
                    lab.storage_driver = driver.to_string();
                    break;
                }
                Err(why) => {
                    failures.push(format!("{driver}: {why}"));
                    remove_node(&node);
                }
            }
        }
        assert!(
            !lab.nodes.is_empty(),
            "no nested dockerd came up:\n{}",
            failures.join("\n")
        );
        for (driver, why) in failures.iter().map(|f| f.split_once(": ").unwrap()) {
            eprintln!("dind: storage driver {driver} failed: {why}");
        }
        for i in 2..=count {
            let node = lab.run_node(&image, i, &lab.storage_driver.clone());
            let up = wait_for_engine(&node);
            lab.nodes.push(node);
            up.unwrap_or_else(|why| panic!("node {i}: {why}"));
        }
        lab
    }

    fn node_names(&self, i: usize) -> (String, String) {
        let name = format!("{}-n{i}", self.prefix);
        let volume = format!("{name}-data");
        (name, volume)
    }

    fn run_node(&self, image: &str, i: usize, driver: &str) -> Node {
        let (name, volume) = self.node_names(i);
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--network",
            &self.network,
            "--cgroupns",
            "private",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "--device-cgroup-rule",
            "a *:* rwm",
            "--device",
            "/dev/fuse",
            "--env",
            &format!("DIND_STORAGE_DRIVER={driver}"),
            // The inner /var/lib/docker on the host's filesystem, not on the outer Engine's
            // fuse-overlayfs: overlay2 cannot stack on an overlay.
            "--volume",
            &format!("{volume}:/var/lib/docker"),
            image,
        ]);
        let ip = docker_ok(&[
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network
            ),
            &name,
        ]);
        Node { name, volume, ip }
    }

    /// `swarm init` on node 1, every other node joins as a manager: with three managers the
    /// raft quorum (2) survives the loss of any one node, so the test may kill any of them and
    /// still drive the swarm from a survivor.
    pub fn form_swarm(&self) {
        let first = &self.nodes[0];
        first.docker_ok(&["swarm", "init", "--advertise-addr", &first.ip]);
        let token = first.docker_ok(&["swarm", "join-token", "-q", "manager"]);
        for node in &self.nodes[1..] {
            node.docker_ok(&[
                "swarm",
                "join",
                "--advertise-addr",
                &node.ip,
                "--token",
                &token,
                &format!("{}:2377", first.ip),
            ]);
        }
    }

    /// `docker save` once on the outer Engine, `docker load` into every node.
    pub fn load_image(&self, image: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().display().to_string();
        docker_ok(&["save", "-o", &path, image]);
        for node in &self.nodes {
            node.docker_ok(&["load", "-q", "-i", &path]);
        }
    }

    /// The host's address on the lab's bridge: what the nodes reach the host's services at.
    pub fn gateway(&self) -> String {
        docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.network,
        ])
    }

    pub fn node_by_hostname(&self, hostname: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == hostname)
    }

    /// Kills a node's container: its dockerd and every task on it stop at once, no goodbye.
    pub fn kill(&self, node: &Node) {
        docker_ok(&["kill", &node.name]);
    }

    pub fn logs(&self, node: &Node) -> String {
        let out = docker(&["logs", "--tail", "30", &node.name]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

fn wait_for_engine(node: &Node) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let running = docker(&["inspect", "--format", "{{.State.Running}}", &node.name]);
        if String::from_utf8_lossy(&running.stdout).trim() != "true" {
            let logs = docker(&["logs", "--tail", "8", &node.name]);
            return Err(format!(
                "the node's dockerd exited:\n{}",
                String::from_utf8_lossy(&logs.stderr)
            ));
        }
        let probe = Command::new("docker")
            .args([
                "-H",
                &node.host(),
                "version",
                "--format",
                "{{.Server.Version}}",
            ])
            .stderr(Stdio::null())
            .output()
            .expect("the docker CLI");
        if probe.status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err("no API answer on the bridge in 60 s".into())
}

fn remove_node(node: &Node) {
    remove_container(&node.name, &node.volume);
}

fn remove_container(name: &str, volume: &str) {
    let _ = docker(&["rm", "-f", "-v", name]);
    let _ = docker(&["volume", "rm", "-f", volume]);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.started {
            let (name, volume) = self.node_names(i);
            remove_container(&name, &volume);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}
