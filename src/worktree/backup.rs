//! `--backup`: everything a removal would lose, saved under `.beamops/backups/<name>-<time>/` and
//! read back before anything is deleted.
//!
//! A backup directory holds `manifest.json` (what was saved, with digests), `files.tar` (the
//! worktree's modified, untracked and non-allow-listed ignored files under `worktree/`, and the
//! staged version of staged files under `index/`) and, when the worktree had commits on no other
//! ref, `commits.bundle`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::Repository;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::inventory::open;
use super::risk::Assessment;
use super::{Repo, WorktreeInfo, gitcli, normalize};
use crate::fsutil;

pub const MANIFEST: &str = "manifest.json";
pub const ARCHIVE: &str = "files.tar";
pub const BUNDLE: &str = "commits.bundle";
pub const SCHEMA: u32 = 1;
const WORKTREE_PREFIX: &str = "worktree";
const INDEX_PREFIX: &str = "index";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub path: PathBuf,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub detached: bool,
    pub created: String,
    /// Files (and empty directories) saved from the working tree, relative to it.
    pub files: Vec<SavedFile>,
    /// Staged index entries that differ from HEAD.
    pub staged: Vec<StagedEntry>,
    /// Tracked files deleted in the working tree.
    pub deleted: Vec<String>,
    /// `commits.bundle` when commits were on no other ref.
    pub bundle: Option<String>,
    pub commits: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedFile {
    pub path: String,
    pub kind: FileKind,
    /// Of the content, or of the link target for a symlink; empty for a directory.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Symlink,
    Dir,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StagedEntry {
    pub path: String,
    /// The git file mode (0o100644, 0o100755, 0o120000); 0 when the deletion is staged.
    pub mode: u32,
    pub sha256: Option<String>,
}

/// Call `visit` for every file and symlink under `path` (symlinks are not followed) and for each
/// empty directory, so an archive of them recreates the tree.
pub fn walk_files(path: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        visit(path);
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        visit(path);
        return;
    };
    let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if children.is_empty() {
        visit(path);
    }
    children.sort();
    for child in children {
        walk_files(&child, visit);
    }
}

/// A reader that digests what passes through it, so a file is read once for both.
struct Digesting<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn digest_reader(reader: impl Read) -> std::io::Result<String> {
    let mut d = Digesting {
        inner: reader,
        hasher: Sha256::new(),
    };
    std::io::copy(&mut d, &mut std::io::sink())?;
    Ok(hex::encode(d.hasher.finalize()))
}

/// The paths (relative to the worktree) a backup saves from the working tree.
pub fn paths_at_risk(wt: &Path, assessment: &Assessment) -> Vec<String> {
    let files = &assessment.files;
    let mut roots: Vec<&String> = files
        .staged
        .iter()
        .chain(&files.unstaged)
        .chain(&files.conflicted)
        .chain(&files.untracked)
        .chain(&files.ignored_at_risk)
        .filter(|p| !files.deleted.contains(p))
        .collect();
    roots.sort();
    roots.dedup();
    let mut out = Vec::new();
    for root in roots {
        let full = wt.join(root.trim_end_matches('/'));
        walk_files(&full, &mut |p| {
            if let Ok(rel) = p.strip_prefix(wt) {
                out.push(rel.to_string_lossy().into_owned());
            }
        });
    }
    out.sort();
    out.dedup();
    out
}

/// Save, then read back; returns the backup directory. On any failure the partial backup is
/// deleted and the worktree is untouched.
pub fn create(repo: &Repo, wt: &WorktreeInfo, assessment: &Assessment) -> Result<PathBuf> {
    let backups = repo.state_dir()?.join("backups");
    std::fs::create_dir_all(&backups).with_context(|| format!("creating {}", backups.display()))?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let mut dir = backups.join(format!("{}-{stamp}", wt.name));
    let mut n = 2;
    while dir.exists() {
        dir = backups.join(format!("{}-{stamp}-{n}", wt.name));
        n += 1;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match write(wt, assessment, &dir).and_then(|manifest| {
        verify(&dir, Some(&repo_dir(repo)))?;
        Ok(manifest)
    }) {
        Ok(_) => Ok(dir),
        Err(err) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(err.context(format!(
                "backing up {} failed; nothing was removed",
                wt.path.display()
            )))
        }
    }
}

/// Where git commands about the repository run: the main worktree, else the git dir.
pub fn repo_dir(repo: &Repo) -> PathBuf {
    repo.main_worktree
        .clone()
        .unwrap_or_else(|| repo.git.path().to_path_buf())
}

fn write(wt: &WorktreeInfo, assessment: &Assessment, dir: &Path) -> Result<Manifest> {
    let wt_repo = open(&wt.path)?;
    let archive = dir.join(ARCHIVE);
    let mut builder = tar::Builder::new(BufWriter::new(
        File::create(&archive).with_context(|| format!("creating {}", archive.display()))?,
    ));
    builder.follow_symlinks(false);
    let mut files = Vec::new();
    for rel in paths_at_risk(&wt.path, assessment) {
        let full = wt.path.join(&rel);
        let name = format!("{WORKTREE_PREFIX}/{rel}");
        files.push(append(&mut builder, &full, &name).with_context(|| format!("archiving {rel}"))?);
        files.last_mut().expect("pushed").path = rel;
    }
    let staged = append_staged(&mut builder, &wt_repo, &assessment.files.staged)?;
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", archive.display()))?;

    let bundle = if assessment.unique_commits.is_empty() {
        None
    } else {
        write_bundle(wt, assessment, &dir.join(BUNDLE))?;
        Some(BUNDLE.to_string())
    };
    let manifest = Manifest {
        schema: SCHEMA,
        name: wt.name.clone(),
        path: wt.path.clone(),
        branch: wt.branch.clone(),
        head: wt.head.clone(),
        detached: wt.detached,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files,
        staged,
        deleted: assessment.files.deleted.clone(),
        bundle,
        commits: assessment
            .unique_commits
            .iter()
            .map(|o| o.to_string())
            .collect(),
    };
    fsutil::atomic_write(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        Some(0o644),
    )?;
    Ok(manifest)
}

fn append(
    builder: &mut tar::Builder<impl std::io::Write>,
    full: &Path,
    name: &str,
) -> Result<SavedFile> {
    let meta = full.symlink_metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(full)?;
        header.set_size(0);
        builder.append_link(&mut header, name, &target)?;
        Ok(SavedFile {
            path: String::new(),
            kind: FileKind::Symlink,
            sha256: fsutil::sha256_hex(target.as_os_str().as_encoded_bytes()),
        })
    } else if meta.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, std::io::empty())?;
        Ok(SavedFile {
            path: String::new(),
            kind: FileKind::Dir,
            sha256: String::new(),
        })
    } else {
        let size = meta.len();
        let mut reader = Digesting {
            inner: File::open(full)?.take(size),
            hasher: Sha256::new(),
        };
        builder.append_data(&mut header, name, &mut reader)?;
        Ok(SavedFile {
            path: String::new(),
            kind: FileKind::File,
            sha256: hex::encode(reader.hasher.finalize()),
        })
    }
}

fn append_staged(
    builder: &mut tar::Builder<impl std::io::Write>,
    wt_repo: &Repository,
    staged: &[String],
) -> Result<Vec<StagedEntry>> {
    let index = wt_repo.index()?;
    let mut out = Vec::new();
    for path in staged {
        match index.get_path(Path::new(path), 0) {
            Some(entry) => {
                let blob = wt_repo
                    .find_blob(entry.id)
                    .with_context(|| format!("reading the staged version of {path}"))?;
                let mut header = tar::Header::new_gnu();
                header.set_size(blob.content().len() as u64);
                header.set_mode(if entry.mode & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                });
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(
                    &mut header,
                    format!("{INDEX_PREFIX}/{path}"),
                    blob.content(),
                )?;
                out.push(StagedEntry {
                    path: path.clone(),
                    mode: entry.mode,
                    sha256: Some(fsutil::sha256_hex(blob.content())),
                });
            }
            None => out.push(StagedEntry {
                path: path.clone(),
                mode: 0,
                sha256: None,
            }),
        }
    }
    Ok(out)
}

/// `git bundle create` — libgit2 cannot write bundles. The bundle holds the worktree's branch
/// (or detached HEAD) minus what every other branch and remote-tracking ref already has.
fn write_bundle(wt: &WorktreeInfo, assessment: &Assessment, file: &Path) -> Result<()> {
    let tip = match &wt.branch {
        Some(branch) => format!("refs/heads/{branch}"),
        None => "HEAD".to_string(),
    };
    let mut revs = format!("{tip}\n");
    for oid in &assessment.other_tips {
        revs += &format!("^{oid}\n");
    }
    let file = file.to_str().context("a backup path that is not UTF-8")?;
    gitcli::run(
        &wt.path,
        &["bundle", "create", "--quiet", file, "--stdin"],
        Some(&revs),
    )
    .context("writing the commit bundle")?;
    Ok(())
}

/// Read a backup back: every saved file and staged entry is in the archive with its digest, and
/// the bundle (when there is one) verifies and holds HEAD. `repo_dir` is where `git bundle
/// verify` runs (it checks the bundle's prerequisites are present there).
pub fn verify(dir: &Path, repo_dir: Option<&Path>) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let archive = dir.join(ARCHIVE);
    let mut tar = tar::Archive::new(BufReader::new(
        File::open(&archive).with_context(|| format!("opening {}", archive.display()))?,
    ));
    for entry in tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let digest = match entry.header().entry_type() {
            tar::EntryType::Symlink => fsutil::sha256_hex(
                entry
                    .link_name()?
                    .context("a symlink without a target")?
                    .as_os_str()
                    .as_encoded_bytes(),
            ),
            tar::EntryType::Directory => String::new(),
            _ => digest_reader(&mut entry)?,
        };
        found.insert(name.trim_end_matches('/').to_string(), digest);
    }
    let expected = manifest
        .files
        .iter()
        .map(|f| (format!("{WORKTREE_PREFIX}/{}", f.path), f.sha256.clone()))
        .chain(
            manifest
                .staged
                .iter()
                .filter_map(|s| Some((format!("{INDEX_PREFIX}/{}", s.path), s.sha256.clone()?))),
        );
    for (name, digest) in expected {
        match found.get(&name) {
            Some(got) if *got == digest => {}
            Some(_) => bail!("{}: {name} does not match its digest", archive.display()),
            None => bail!("{}: {name} is missing", archive.display()),
        }
    }
    if let Some(bundle) = &manifest.bundle {
        let file = dir.join(bundle);
        let file_str = file.to_str().context("a backup path that is not UTF-8")?;
        let run_in = repo_dir.unwrap_or(dir);
        // `git bundle verify` — libgit2 has no bundle support.
        gitcli::run(run_in, &["bundle", "verify", "--quiet", file_str], None)
            .with_context(|| format!("verifying {}", file.display()))?;
        let heads = gitcli::run(run_in, &["bundle", "list-heads", file_str], None)?;
        if let Some(head) = &manifest.head
            && !heads.lines().any(|l| l.starts_with(head.as_str()))
        {
            bail!("{}: does not hold HEAD {head}", file.display());
        }
    }
    Ok(manifest)
}

pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: not a beamops worktree backup (no {MANIFEST})\n  fix: pass a directory under .beamops/backups/",
            dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: unreadable manifest", path.display()))?;
    if manifest.schema != SCHEMA {
        bail!(
            "{}: backup schema {} is not known to this beamops (it reads {SCHEMA})",
            path.display(),
            manifest.schema
        );
    }
    Ok(manifest)
}

/// Whether the working tree still holds exactly what was saved (nothing changed between the
/// backup and the cleanup that precedes removal).
pub fn still_matches(wt: &Path, manifest: &Manifest) -> Result<()> {
    for saved in &manifest.files {
        let full = wt.join(&saved.path);
        let now = match saved.kind {
            FileKind::File => File::open(&full)
                .and_then(digest_reader)
                .unwrap_or_default(),
            FileKind::Symlink => std::fs::read_link(&full)
                .map(|t| fsutil::sha256_hex(t.as_os_str().as_encoded_bytes()))
                .unwrap_or_default(),
            FileKind::Dir => String::new(),
        };
        if now != saved.sha256 {
            bail!(
                "{} changed after it was backed up; nothing was removed (the backup is kept)",
                full.display()
            );
        }
    }
    Ok(())
}

/// Unpack the archive into `wt`: `worktree/` entries over the working tree, `index/` entries
/// returned by path for the caller to stage.
pub fn extract(dir: &Path, wt: &Path) -> Result<(usize, BTreeMap<String, Vec<u8>>)> {
    let archive = dir.join(ARCHIVE);
    let mut tar = tar::Archive::new(BufReader::new(File::open(&archive)?));
    let mut restored = 0;
    let mut staged = BTreeMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if let Some(rel) = name.strip_prefix(&format!("{INDEX_PREFIX}/")) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            staged.insert(rel.to_string(), bytes);
            continue;
        }
        let Some(rel) = name.strip_prefix(&format!("{WORKTREE_PREFIX}/")) else {
            continue;
        };
        let dest = normalize(&wt.join(rel));
        if !dest.starts_with(wt) || dest == wt {
            bail!(
                "{}: {name} would land outside the worktree",
                archive.display()
            );
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if let Ok(meta) = dest.symlink_metadata() {
            if meta.is_dir() && entry.header().entry_type() == tar::EntryType::Directory {
                continue;
            }
            if meta.is_dir() {
                std::fs::remove_dir_all(&dest)?;
            } else {
                std::fs::remove_file(&dest)?;
            }
        }
        entry.set_preserve_permissions(true);
        entry
            .unpack(&dest)
            .with_context(|| format!("restoring {}", dest.display()))?;
        restored += 1;
    }
    Ok((restored, staged))
}
