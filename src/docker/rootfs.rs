//! A Debian root filesystem made by debootstrap, changed inside a chroot, packed as a tar for
//! the Engine's image import.
//!
//! The minbase rootfs of a suite is made once per mirror and kept in the cache; each image
//! starts from a copy, so three images of one suite debootstrap once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use super::debian::Mirror;
use crate::exit::Failure;

/// A cached minbase older than this is made again; newer ones are brought up to date by apt.
const CACHE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `BEAMOPS_CACHE_DIR`, else /var/cache/beamops: building needs root, and the rootfs serves
/// every project on the machine, so it does not belong in one project's state dir.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BEAMOPS_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/beamops"))
}

/// debootstrap and chroot need root; say so before spending a minute on the way there.
pub fn require_tools() -> Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Err(Failure::Blocked(
            "building base images from Debian needs root (debootstrap and chroot)\n  fix: run `sudo beamops images bootstrap`".into(),
        )
        .into());
    }
    for (tool, package) in [("debootstrap", "debootstrap"), ("chroot", "coreutils")] {
        if which::which(tool).is_err() {
            return Err(Failure::Blocked(format!(
                "{tool} not found: it builds the base images from Debian\n  fix: apt-get install {package}"
            ))
            .into());
        }
    }
    Ok(())
}

/// The cached minbase rootfs for `suite` from `mirror`, made now when missing or stale.
pub fn minbase(suite: &str, mirror: &Mirror, on_step: &dyn Fn(&str)) -> Result<CachedRootfs> {
    cached(
        &cache_dir().join("rootfs"),
        &mirror.cache_key(suite),
        |target| {
            on_step(&format!(
                "debootstrap --variant=minbase {suite} from {}",
                mirror.archive
            ));
            let out = Command::new("debootstrap")
                .args(["--variant=minbase", suite])
                .arg(target)
                .arg(&mirror.archive)
                .stdin(Stdio::null())
                .output()
                .context("running debootstrap")?;
            if !out.status.success() {
                bail!(
                    "debootstrap {suite} from {} failed:\n{}\n  fix: check that the mirror is reachable (apt-get update on the host) and names {suite}",
                    mirror.archive,
                    tail(&out.stdout, &out.stderr, 20)
                );
            }
            std::fs::write(
                target.join("etc/apt/sources.list"),
                mirror.sources_list(suite),
            )?;
            Ok(())
        },
    )
}

/// `cache/<key>`, made by `make` (into a staging directory, renamed in) when missing or older
/// than [`CACHE_MAX_AGE`], and held under a shared lock until the returned value is dropped.
///
/// Readers share the lock while they copy the directory; a refresh takes it alone, so it never
/// deletes a directory another process (a parallel test, a second `images bootstrap`) is
/// copying, and two processes that both find it missing build it once.
fn cached(cache: &Path, key: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<CachedRootfs> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let dir = cache.join(key);
    let marker = cache.join(format!("{key}.complete"));
    let lock_path = cache.join(format!("{key}.lock"));
    let fresh = || {
        dir.is_dir()
            && std::fs::metadata(&marker)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < CACHE_MAX_AGE)
    };
    let locked = |shared: bool| -> Result<std::fs::File> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if shared {
            file.lock_shared()
        } else {
            file.lock()
        }
        .with_context(|| format!("locking {}", lock_path.display()))?;
        Ok(file)
    };
    let mut make = Some(make);
    loop {
        let shared = locked(true)?;
        if fresh() {
            return Ok(CachedRootfs {
                path: dir,
                _lock: shared,
            });
        }
        drop(shared);
        let exclusive = locked(false)?;
        // Another process may have made it while this one waited for the lock.
        if !fresh() {
            let make = make
                .take()
                .context("the cached directory went stale again at once")?;
            // Made beside its final place and renamed in, so a crash never leaves a half-made
            // directory under the cached name.
            let staging = tempfile::Builder::new()
                .prefix(&format!(".{key}-"))
                .tempdir_in(cache)?;
            let target = staging.path().join("rootfs");
            make(&target)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("replacing the stale {}", dir.display()))?;
            }
            std::fs::rename(&target, &dir)
                .with_context(|| format!("moving the new rootfs to {}", dir.display()))?;
            std::fs::write(&marker, crate::state::now_rfc3339())?;
        }
        drop(exclusive);
    }
}

/// A cached rootfs, held under a shared lock so no refresh replaces it while it is in use.
#[derive(Debug)]
pub struct CachedRootfs {
    path: PathBuf,
    _lock: std::fs::File,
}

impl std::ops::Deref for CachedRootfs {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// A private copy of a rootfs to change in a chroot. Dropping it unmounts what it mounted and,
/// only when nothing is mounted below it any more, deletes it.
pub struct Rootfs {
    dir: Option<tempfile::TempDir>,
    proc_mounted: bool,
}

impl Rootfs {
    pub fn copy_of(base: &Path) -> Result<Rootfs> {
        let parent = cache_dir().join("work");
        std::fs::create_dir_all(&parent)?;
        sweep_abandoned(&parent);
        let dir = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(&parent)?;
        // cp -a keeps owners, modes, hard links and device nodes, which std::fs::copy does not.
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", base.display()))
            .arg(dir.path())
            .status()
            .context("running cp -a")?;
        if !status.success() {
            bail!(
                "copying {} to {} failed",
                base.display(),
                dir.path().display()
            );
        }
        // cp -a gave the copy the cached rootfs's age; the sweep of abandoned copies goes by it.
        std::fs::File::open(dir.path())
            .and_then(|d| d.set_modified(SystemTime::now()))
            .with_context(|| format!("touching {}", dir.path().display()))?;
        Ok(Rootfs {
            dir: Some(dir),
            proc_mounted: false,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("rootfs dir lives until drop")
            .path()
    }

    /// Mounts /proc (some maintainer scripts read it) and stops services from starting.
    pub fn prepare_chroot(&mut self) -> Result<()> {
        let root = self.path().to_path_buf();
        std::fs::write(
            root.join("usr/sbin/policy-rc.d"),
            "#!/bin/sh\n# beamops: no daemons start while an image is built\nexit 101\n",
        )?;
        set_mode(&root.join("usr/sbin/policy-rc.d"), 0o755)?;
        // apt in the chroot resolves the mirror with the host's resolver.
        if let Ok(resolv) = std::fs::read("/etc/resolv.conf") {
            let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
            std::fs::write(root.join("etc/resolv.conf"), resolv)?;
        }
        let status = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.join("proc"))
            .status()
            .context("mounting /proc in the rootfs")?;
        if !status.success() {
            bail!(
                "mount -t proc proc {}/proc failed\n  fix: run as root on a host that allows mounts",
                root.display()
            );
        }
        self.proc_mounted = true;
        Ok(())
    }

    /// Runs a command inside the rootfs; its output is kept for the error when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("chroot")
            .arg(self.path())
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LANG", "C.UTF-8")
            .env("HOME", "/root")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running `{}` in the rootfs", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`{}` failed in the {} rootfs:\n{}",
                args.join(" "),
                self.path().display(),
                tail(&out.stdout, &out.stderr, 30)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.proc_mounted {
            return Ok(());
        }
        let proc_dir = self.path().join("proc");
        let ok = Command::new("umount")
            .arg(&proc_dir)
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("umount")
                .arg("-l")
                .arg(&proc_dir)
                .status()
                .is_ok_and(|s| s.success());
        if !ok || is_mounted_below(self.path()) {
            bail!(
                "{} is still mounted\n  fix: umount -l {} and delete the directory",
                proc_dir.display(),
                proc_dir.display()
            );
        }
        self.proc_mounted = false;
        Ok(())
    }

    /// Leaves the chroot, removes what only the build needed, and packs the rootfs as a tar
    /// file for the Engine (owners and modes kept, symlinks not followed).
    pub fn finish_into_tar(&mut self) -> Result<tempfile::NamedTempFile> {
        self.unmount()?;
        let root = self.path().to_path_buf();
        let _ = std::fs::remove_file(root.join("usr/sbin/policy-rc.d"));
        // Docker supplies /dev, /proc, /sys and resolv.conf at run time; caches are dead weight.
        for dir in [
            "dev",
            "proc",
            "sys",
            "tmp",
            "run/lock",
            "var/tmp",
            "var/cache/apt",
            "var/lib/apt/lists",
            "var/cache/debconf",
            "var/log",
        ] {
            empty_dir(&root.join(dir))?;
        }
        std::fs::write(root.join("etc/resolv.conf"), "")?;
        set_mode(&root.join("tmp"), 0o1777)?;
        set_mode(&root.join("var/tmp"), 0o1777)?;
        let file = tempfile::Builder::new()
            .prefix("image-")
            .suffix(".tar")
            .tempfile_in(cache_dir().join("work"))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file.reopen()?));
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        builder
            .append_dir_all(".", &root)
            .with_context(|| format!("packing {}", root.display()))?;
        builder
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        Ok(file)
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            // Deleting a tree with a live mount below it could reach into that mount: keep it.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("warning: left {} in place: {e:#}", kept.display());
            }
        }
    }
}

/// A run killed mid-build (Ctrl-C, kill -9) never ran its guard: its copy may still have /proc
/// mounted. Copies older than any build are unmounted and deleted by the next run.
fn sweep_abandoned(work: &Path) {
    const ABANDONED_AFTER: Duration = Duration::from_secs(6 * 3600);
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > ABANDONED_AFTER);
        if !old {
            continue;
        }
        if is_mounted_below(&path) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(path.join("proc"))
                .status();
        }
        if is_mounted_below(&path) {
            continue;
        }
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

fn is_mounted_below(dir: &Path) -> bool {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .any(|mount_point| {
                mount_point == prefix || mount_point.starts_with(&format!("{prefix}/"))
            })
    })
}

fn empty_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let is_dir = std::fs::symlink_metadata(&path)?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The last lines a failed tool printed, stderr after stdout.
fn tail(stdout: &[u8], stderr: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(stdout).into_owned() + &String::from_utf8_lossy(stderr);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    #[test]
    fn parallel_callers_build_a_cached_directory_once_and_a_reader_keeps_it() {
        let cache = tempfile::tempdir().unwrap();
        let builds = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let held = super::cached(cache.path(), "k", |target| {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::fs::create_dir_all(target)?;
                        std::thread::sleep(Duration::from_millis(200));
                        std::fs::write(target.join("f"), "made")?;
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(std::fs::read_to_string(held.join("f")).unwrap(), "made");
                });
            }
        });
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "built once for four callers"
        );

        // A stale cache is rebuilt only once no reader holds it.
        let reader = super::cached(cache.path(), "k", |_| unreachable!("fresh")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(cache.path().join("k.complete"))
            .unwrap()
            .set_modified(SystemTime::now() - super::CACHE_MAX_AGE * 2)
            .unwrap();
        std::thread::scope(|scope| {
            let refresh = scope.spawn(|| {
                super::cached(cache.path(), "k", |target| {
                    std::fs::create_dir_all(target)?;
                    std::fs::write(target.join("f"), "new")?;
                    Ok(())
                })
                .map(|held| std::fs::read_to_string(held.join("f")).unwrap())
            });
            std::thread::sleep(Duration::from_millis(300));
            // Still the reader's copy: the refresh waits until the reader lets go.
            assert_eq!(std::fs::read_to_string(reader.join("f")).unwrap(), "made");
            drop(reader);
            assert_eq!(refresh.join().unwrap().unwrap(), "new");
        });
    }
}
