//! File writes that an interrupted run can never leave half-done, and that stay in the project.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Temp files carry this marker so a later run can sweep what a killed run left behind.
pub const TEMP_MARKER: &str = ".beamops-tmp";

/// Resolve `relative` under `root`, refusing `..`, absolute paths and symlinks that lead out.
pub fn resolve_inside(root: &Path, relative: &Path) -> Result<PathBuf> {
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        bail!(
            "{}: generated paths must stay inside the project",
            relative.display()
        );
    }
    let root = root.canonicalize()?;
    let target = root.join(relative);
    // The deepest existing ancestor decides where a write really lands.
    let mut existing = target.as_path();
    while !existing.exists() && existing.symlink_metadata().is_err() {
        existing = existing.parent().unwrap_or(&root);
    }
    let real = existing
        .canonicalize()
        .with_context(|| format!("{}: a dangling symlink", relative.display()))?;
    if !real.starts_with(&root) {
        bail!(
            "{}: a symlink leads outside the project ({}); refusing to write through it",
            relative.display(),
            real.display()
        );
    }
    if existing == target {
        Ok(real)
    } else {
        Ok(real.join(target.strip_prefix(existing).expect("ancestor")))
    }
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path.parent().context("a file path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a path without a file name")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}{TEMP_MARKER}", name.to_string_lossy()))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    let mode = mode.or_else(|| existing_mode(path)).unwrap_or(0o644);
    set_mode(tmp.path(), mode)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn existing_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

/// Remove temp files a killed run left in `dir` (only call while holding the run lock).
pub fn sweep_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_and_symlinks_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(resolve_inside(root.path(), Path::new("../x")).is_err());
        assert!(resolve_inside(root.path(), Path::new("/etc/passwd")).is_err());
        assert!(resolve_inside(root.path(), Path::new("link/file")).is_err());
        let inside = resolve_inside(root.path(), Path::new("a/b/c")).unwrap();
        assert!(inside.starts_with(root.path().canonicalize().unwrap()));
    }

    #[test]
    fn atomic_write_keeps_an_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script.sh");
        std::fs::write(&p, "old").unwrap();
        set_mode(&p, 0o755).unwrap();
        atomic_write(&p, b"new", None).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(existing_mode(&p), Some(0o755));
    }
}
