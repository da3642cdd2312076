//! `ssh://user@host[:port]` engines: the remote Engine's socket forwarded to a local unix socket
//! by the system ssh client. One master connection per destination serves every API call of
//! the run; it is closed when the run ends, on Ctrl-C/SIGTERM/SIGHUP, and (PR_SET_PDEATHSIG)
//! even if beamops is killed outright.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::exit::Failure;

/// Where the Engine listens on the remote host; the docker CLI's ssh:// assumes the same.
pub const REMOTE_SOCKET: &str = "/var/run/docker.sock";
/// ssh's own limit for reaching the host; the login itself must also finish in READY_TIMEOUT.
const CONNECT_TIMEOUT_SECS: u64 = 10;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A unix socket path must fit in sun_path (108 bytes), with room for ssh's temporary suffix.
const MAX_SOCKET_DIR: usize = 60;

/// `user@host:port` from an `ssh://` address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Destination {
    pub fn parse(address: &str) -> Result<Self> {
        let rest = address
            .strip_prefix("ssh://")
            .with_context(|| format!("{address} is not an ssh:// address"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            bail!(
                "{address}: a path is not supported; beamops forwards the remote {REMOTE_SOCKET}"
            );
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user.to_string()), hostport),
            None => (None, rest),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("{address}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .with_context(|| format!("{address}: {p} is not a port"))
            })
            .transpose()?;
        // Both end up in ssh's argv: a leading '-' would be read as an option.
        let bad =
            |s: &str| s.is_empty() || s.starts_with('-') || s.chars().any(char::is_whitespace);
        if bad(host) || user.as_deref().is_some_and(bad) {
            bail!("{address}: not a valid ssh destination");
        }
        Ok(Destination {
            user,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// One ssh master process and the private directory holding its sockets and log.
struct Tunnel {
    destination: Destination,
    ssh: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl Tunnel {
    fn control(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("ssh.log")
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if self.alive() {
            // Ask the master to close its connection; a master that does not answer is killed.
            let _ = Command::new(&self.ssh)
                .arg("-S")
                .arg(self.control())
                .args(["-O", "exit", "--", &self.destination.host])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The open tunnels of this process, by destination.
static TUNNELS: Mutex<Vec<Tunnel>> = Mutex::new(Vec::new());

fn tunnels() -> std::sync::MutexGuard<'static, Vec<Tunnel>> {
    // A panic while the list was held leaves it usable: each entry is still a whole tunnel.
    TUNNELS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Host keys pinned per destination: an environment's `known_hosts` lines from beamops.yaml.
/// A pinned destination is checked against these alone, never the user's known_hosts files.
static PINNED: Mutex<Vec<(Destination, Vec<String>)>> = Mutex::new(Vec::new());

/// Pins `destination`'s host keys for this process: its tunnel accepts only a host that shows
/// one of them (`StrictHostKeyChecking yes`, no trust on first use, no other known_hosts file).
pub fn pin_host_keys(destination: &Destination, known_hosts: &[String]) {
    let mut pinned = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    pinned.retain(|(d, _)| d != destination);
    pinned.push((destination.clone(), known_hosts.to_vec()));
}

fn pinned_host_keys(destination: &Destination) -> Option<Vec<String>> {
    PINNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(d, _)| d == destination)
        .map(|(_, lines)| lines.clone())
}

/// Closes every tunnel this process opened. Safe to call more than once.
pub fn close_all() {
    let open = std::mem::take(&mut *tunnels());
    drop(open);
}

/// Closes every tunnel when dropped: held by the command runner for the whole run.
pub struct CloseOnDrop;

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        close_all();
    }
}

/// The local unix socket that reaches `destination`'s Engine, opening the tunnel on first use.
pub fn socket_for(destination: &Destination) -> Result<PathBuf> {
    {
        let mut open = tunnels();
        if let Some(i) = open.iter().position(|t| &t.destination == destination) {
            if open[i].alive() {
                return Ok(open[i].socket());
            }
            // The connection dropped mid-run: open a fresh one below.
            open.remove(i);
        }
    }
    open(destination)
}

fn blocked(destination: &Destination, why: &str, fix: &str) -> anyhow::Error {
    Failure::Blocked(format!(
        "cannot reach the Docker Engine at ssh://{destination}: {why}\n  fix: {fix}"
    ))
    .into()
}

fn private_dir() -> Result<tempfile::TempDir> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > MAX_SOCKET_DIR {
        PathBuf::from("/tmp")
    } else {
        base
    };
    let dir = tempfile::Builder::new()
        .prefix("beamops-ssh-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a private directory in {}", base.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The options that make `known_hosts` the only source of trusted host keys. Options on the
/// command line win over any ssh_config, the user's included: a `KnownHostsCommand` there
/// would add keys of its own (OpenSSH 8.5+), and `CheckHostIP` would consult the address's keys.
fn pin_options(known_hosts: &Path) -> Vec<String> {
    [
        format!("UserKnownHostsFile=\"{}\"", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "KnownHostsCommand=none".into(),
        "CheckHostIP=no".into(),
        "StrictHostKeyChecking=yes".into(),
        "UpdateHostKeys=no".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

fn open(destination: &Destination) -> Result<PathBuf> {
    let ssh = which::which("ssh").map_err(|_| {
        blocked(
            destination,
            "no ssh client on PATH",
            "install OpenSSH's client (apt-get install openssh-client)",
        )
    })?;
    let dir = private_dir()?;
    let log = std::fs::File::create(dir.path().join("ssh.log"))?;
    let mut cmd = Command::new(&ssh);
    cmd.arg("-N")
        .arg("-M")
        .arg("-S")
        .arg(dir.path().join("ctl"))
        // The master stays our child: ControlPersist would fork it into the background.
        .args(["-o", "ControlPersist=no"])
        // Never prompt: a password or host-key question would hang a CI job.
        .args(["-o", "BatchMode=yes"])
        .args(["-o", &format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}")])
        .args(["-o", "ExitOnForwardFailure=yes"])
        .args([
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ])
        .arg("-L")
        .arg(format!(
            "{}:{REMOTE_SOCKET}",
            dir.path().join("docker.sock").display()
        ));
    if let Some(lines) = pinned_host_keys(destination) {
        // In the 0700 directory; the keys are public, but nobody else may add one.
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
        cmd.args(pin_options(&file));
    }
    if let Some(port) = destination.port {
        cmd.args(["-p", &port.to_string()]);
    }
    if let Some(user) = &destination.user {
        cmd.args(["-l", user]);
    }
    cmd.args(["--", &destination.host])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a terminal's Ctrl-C reaches beamops alone, which then closes
        // the tunnel in order instead of racing ssh's own exit.
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Dies with beamops even on SIGKILL. Checked again afterwards: beamops may have died
            // between fork and prctl, and then no signal would ever come.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    install_signal_handler();
    let child = spawn(cmd).with_context(|| format!("starting {}", ssh.display()))?;
    tunnels().push(Tunnel {
        destination: destination.clone(),
        ssh,
        child,
        dir,
    });
    wait_ready(destination)
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process. A
/// thread that lives as long as the process does the forking, so a tunnel opened from a
/// short-lived thread is not torn down with it.
fn spawn(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("beamops-ssh-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the ssh spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the ssh spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the ssh spawner thread is gone"))?
}

/// Ctrl-C, SIGTERM and SIGHUP end beamops as they would have, taking the tunnels with it.
fn install_signal_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Registered for the whole run, and before any deploy lock: cleanups run newest first,
        // so a lock held through a tunnel is released while the tunnel still stands.
        std::mem::forget(crate::interrupt::on_interrupt(|| {
            // ssh is not closed first: the command would see its Engine vanish and could
            // finish "normally" before the signal lands. The private directories go now
            // (holding the list so no tunnel opens meanwhile); beamops then dies of the
            // signal and PR_SET_PDEATHSIG ends each ssh with it.
            let open = tunnels();
            for tunnel in open.iter() {
                let _ = std::fs::remove_dir_all(tunnel.dir.path());
            }
            std::mem::forget(open);
        }));
    });
}

/// Waits until the forwarded socket accepts connections, or ssh has exited and said why.
fn wait_ready(destination: &Destination) -> Result<PathBuf> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (socket, exited, log) = {
            let mut open = tunnels();
            let Some(t) = open.iter_mut().find(|t| &t.destination == destination) else {
                bail!("the tunnel to ssh://{destination} was closed while it opened");
            };
            (t.socket(), !t.alive(), t.log())
        };
        if exited || Instant::now() > deadline {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let mut open = tunnels();
            open.retain(|t| &t.destination != destination);
            drop(open);
            return Err(diagnose(destination, &said, exited));
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(socket);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Turns what ssh printed into the cause and the fix.
fn diagnose(destination: &Destination, said: &str, exited: bool) -> anyhow::Error {
    let said = said.trim();
    let last: Vec<&str> = said.lines().rev().take(3).collect();
    let said_short = last.into_iter().rev().collect::<Vec<_>>().join(" / ");
    let port = destination.port.unwrap_or(22);
    let login = match &destination.user {
        Some(user) => format!("{user}@{}", destination.host),
        None => destination.host.clone(),
    };
    let (why, fix) = if said.contains("Permission denied") {
        (
            "ssh login refused (no key it accepts)".to_string(),
            format!(
                "load a key {login} accepts into ssh-agent or name it with IdentityFile in ~/.ssh/config; beamops runs ssh with BatchMode=yes and never asks for a password"
            ),
        )
    } else if said.contains("Host key verification failed")
        || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    {
        (
            "the host key is unknown or changed".to_string(),
            if pinned_host_keys(destination).is_some() {
                "the host showed a key that is not among the environment's pinned known_hosts in beamops.yaml; check the host's key (a replaced instance has a new one) and update environments.<env>.known_hosts".to_string()
            } else {
                format!(
                    "check the host's key and add it to known_hosts (e.g. `ssh -p {port} {login} true` once, interactively)"
                )
            },
        )
    } else if said.contains("Could not resolve")
        || said.contains("Connection refused")
        || said.contains("timed out")
        || said.contains("No route to host")
        || said.contains("Network is unreachable")
    {
        (
            "the host is unreachable".to_string(),
            format!(
                "check the address and that sshd listens on {}:{port}",
                destination.host
            ),
        )
    } else if !exited {
        (
            format!("the tunnel was not ready in {}s", READY_TIMEOUT.as_secs()),
            "check that `ssh HOST` logs in without prompting and that the remote user may open /var/run/docker.sock".to_string(),
        )
    } else {
        (
            "ssh exited".to_string(),
            format!(
                "run `ssh -p {port} {login} docker version` by hand to see the problem; the remote user must be able to open {REMOTE_SOCKET}"
            ),
        )
    };
    let why = if said_short.is_empty() {
        why
    } else {
        format!("{why} (ssh: {said_short})")
    };
    blocked(destination, &why, &fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_like_the_docker_cli() {
        let d = Destination::parse("ssh://deploy@build.example:2222").unwrap();
        assert_eq!(d.user.as_deref(), Some("deploy"));
        assert_eq!(d.host, "build.example");
        assert_eq!(d.port, Some(2222));
        assert_eq!(d.to_string(), "deploy@build.example:2222");
        let d = Destination::parse("ssh://host").unwrap();
        assert_eq!((d.user, d.port), (None, None));
        let d = Destination::parse("ssh://root@[::1]:22").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", Some(22)));
        assert_eq!(d.to_string(), "root@[::1]:22");
        for bad in [
            "ssh://-oProxyCommand=x",
            "ssh://user@host:port",
            "ssh://host/var/run/x.sock",
            "ssh://",
            "ssh://-u@host",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    /// ssh's own view of its configuration (`ssh -G`) with a user config that tries to widen
    /// the pin: the pinned file alone decides.
    #[test]
    fn pinned_host_keys_cannot_be_widened_by_an_ssh_config() {
        let Ok(ssh) = which::which("ssh") else {
            eprintln!("skipped: no ssh client");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "Host *\n  KnownHostsCommand /bin/echo widened %H\n  CheckHostIP yes\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile ~/.ssh/other\n  GlobalKnownHostsFile /etc/ssh/ssh_known_hosts\n",
        )
        .unwrap();
        let pinned = dir.path().join("known_hosts");
        let out = std::process::Command::new(ssh)
            .arg("-G")
            .arg("-F")
            .arg(&config)
            .args(pin_options(&pinned))
            .arg("manager.example")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let effective = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let value = |key: &str| {
            effective
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .map(str::to_string)
        };
        assert_eq!(value("knownhostscommand"), None, "{effective}");
        assert_eq!(value("checkhostip").as_deref(), Some("no"));
        assert_eq!(value("stricthostkeychecking").as_deref(), Some("true"));
        assert_eq!(
            value("userknownhostsfile").as_deref(),
            Some(pinned.display().to_string().to_lowercase().as_str())
        );
        assert_eq!(value("globalknownhostsfile").as_deref(), Some("/dev/null"));
    }

    #[test]
    fn ssh_failures_name_the_cause_and_the_fix() {
        let d = Destination::parse("ssh://deploy@h:2222").unwrap();
        let err = diagnose(&d, "deploy@h: Permission denied (publickey).", true);
        let text = format!("{err:#}");
        assert_eq!(crate::exit::exit_for(&err), crate::exit::Exit::Blocked);
        assert!(
            text.contains("ssh://deploy@h:2222") && text.contains("IdentityFile"),
            "{text}"
        );
        let err = diagnose(&d, "Host key verification failed.", true);
        assert!(format!("{err:#}").contains("known_hosts"));
        let err = diagnose(
            &d,
            "ssh: connect to host h port 2222: Connection refused",
            true,
        );
        assert!(format!("{err:#}").contains("sshd listens on h:2222"));
    }
}
