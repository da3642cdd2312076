//! `--backup`: everything a removal would lose, saved under `.beamops/backups/<name>-<time>/` and
//! read back before anything is deleted.
//!
//! A backup directory (mode 0700; every file in it 0600: it holds `.env` files and keys) holds
//! `manifest.json` (what was saved, with digests, and every index entry with its flags),
//! `files.tar` (the worktree's modified — also where git status hides it — untracked and
//! non-allow-listed ignored files under `worktree/`, the staged version of staged files under
//! `index/`, every index blob HEAD lacks under `blobs/<id>`, and the per-worktree files of its
//! administrative directory — HEAD reflog, sparse-checkout patterns, `config.worktree` — under
//! `admin/`) and, when commits die with the worktree, `commits.bundle` with a ref for each.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::Repository;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use super::inventory::open;
use super::risk::{self, Assessment};
use super::{Repo, WorktreeInfo, canonical, gitcli, hidden, normalize};
use crate::fsutil;

pub const MANIFEST: &str = "manifest.json";
pub const ARCHIVE: &str = "files.tar";
pub const BUNDLE: &str = "commits.bundle";
pub const SCHEMA: u32 = 1;
const WORKTREE_PREFIX: &str = "worktree";
const INDEX_PREFIX: &str = "index";
const BLOB_PREFIX: &str = "blobs";
const ADMIN_PREFIX: &str = "admin";
/// Per-worktree state git keeps in `.git/worktrees/<name>/` that a restore brings back.
pub const ADMIN_FILES: [&str; 3] = ["logs/HEAD", "info/sparse-checkout", "config.worktree"];

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
    /// Every index entry (all stages) with its flags: the index is restored exactly from this.
    #[serde(default)]
    pub index: Vec<IndexRecord>,
    /// Paths of HEAD or the index missing from the working tree (deletions, sparse-checkout).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Refs in `commits.bundle`, each with what held its commit in the worktree.
    #[serde(default)]
    pub bundle_refs: Vec<SavedRef>,
    /// The worktree's own refs (`refs/worktree/*`, `refs/bisect/*`), recreated by restore.
    #[serde(default)]
    pub worktree_refs: Vec<SavedRef>,
    /// Files of the administrative directory saved under `admin/` (of `ADMIN_FILES`).
    #[serde(default)]
    pub admin_files: Vec<SavedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexRecord {
    pub path: String,
    /// The git file mode (0o100644, 0o100755, 0o120000, 0o160000).
    pub mode: u32,
    pub oid: String,
    /// 0, or 1–3 for a conflict.
    pub stage: u16,
    #[serde(default, skip_serializing_if = "is_false")]
    pub assume_unchanged: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_worktree: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub intent_to_add: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl IndexRecord {
    pub fn of(entry: &git2::IndexEntry) -> IndexRecord {
        let flags = hidden::Flags::of(entry);
        IndexRecord {
            path: String::from_utf8_lossy(&entry.path).into_owned(),
            mode: entry.mode,
            oid: entry.id.to_string(),
            stage: hidden::stage(entry),
            assume_unchanged: flags.assume_unchanged,
            skip_worktree: flags.skip_worktree,
            intent_to_add: flags.intent_to_add,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedRef {
    pub name: String,
    pub oid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
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
        .chain(
            assessment
                .hidden
                .iter()
                .filter(|h| h.present)
                .map(|h| &h.path),
        )
        .chain(assessment.nested.iter().flat_map(|n| &n.saved))
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
    fsutil::set_mode(&backups, 0o700)?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let mut dir = backups.join(format!("{}-{stamp}", wt.name));
    let mut n = 2;
    while dir.exists() {
        dir = backups.join(format!("{}-{stamp}-{n}", wt.name));
        n += 1;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The mode given to mkdir is masked by the umask; 0700 is meant exactly.
    fsutil::set_mode(&dir, 0o700)?;
    match write(repo, wt, assessment, &dir).and_then(|manifest| {
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

fn write(repo: &Repo, wt: &WorktreeInfo, assessment: &Assessment, dir: &Path) -> Result<Manifest> {
    let wt_repo = open(&wt.path)?;
    let archive = dir.join(ARCHIVE);
    let mut builder = tar::Builder::new(BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&archive)
            .with_context(|| format!("creating {}", archive.display()))?,
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
    let (index, absent) = append_index(&mut builder, &wt_repo, &wt.path)?;
    // A directory a deletion left empty stays on restore (only `git rm` removes it).
    let mut kept: Vec<String> = absent
        .iter()
        .flat_map(|p| Path::new(p).ancestors().skip(1).map(Path::to_path_buf))
        .filter(|d| !d.as_os_str().is_empty())
        .filter(|d| {
            std::fs::read_dir(wt.path.join(d)).is_ok_and(|mut entries| entries.next().is_none())
        })
        .map(|d| d.to_string_lossy().into_owned())
        .filter(|d| !files.iter().any(|f: &SavedFile| f.path == *d))
        .collect();
    kept.sort();
    kept.dedup();
    for rel in kept {
        let mut saved = append(
            &mut builder,
            &wt.path.join(&rel),
            &format!("{WORKTREE_PREFIX}/{rel}"),
        )?;
        saved.path = rel;
        files.push(saved);
    }
    let admin = wt_repo.path().to_path_buf();
    let mut admin_files = Vec::new();
    if !wt.main {
        for rel in ADMIN_FILES {
            let full = admin.join(rel);
            if full.is_file() {
                let mut saved = append(&mut builder, &full, &format!("{ADMIN_PREFIX}/{rel}"))
                    .with_context(|| format!("archiving {}", full.display()))?;
                saved.path = rel.to_string();
                admin_files.push(saved);
            }
        }
    }
    let worktree_refs: Vec<SavedRef> = if wt.main {
        Vec::new()
    } else {
        risk::admin_tips(&repo.git, &admin)
            .into_iter()
            .filter(|(name, _)| name.starts_with("refs/"))
            .map(|(name, oid)| SavedRef {
                name,
                oid: oid.to_string(),
                held_by: Vec::new(),
            })
            .collect()
    };
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", archive.display()))?;

    let (bundle, bundle_refs) = if assessment.unique_commits.is_empty() {
        (None, Vec::new())
    } else {
        let refs = write_bundle(repo, assessment, dir)?;
        (Some(BUNDLE.to_string()), refs)
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
        index,
        absent,
        bundle_refs,
        worktree_refs,
        admin_files,
    };
    fsutil::atomic_write(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        Some(0o600),
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

/// Every index entry, and the blobs of those HEAD does not hold at that path (under
/// `blobs/<id>`), so the index can be rebuilt exactly; also every path of HEAD or the index the
/// working tree lacks.
fn append_index(
    builder: &mut tar::Builder<impl std::io::Write>,
    wt_repo: &Repository,
    root: &Path,
) -> Result<(Vec<IndexRecord>, Vec<String>)> {
    let index = wt_repo.index()?;
    let head_tree = wt_repo.head().ok().and_then(|h| h.peel_to_tree().ok());
    let mut records = Vec::new();
    let mut saved_blobs = std::collections::BTreeSet::new();
    let mut absent = std::collections::BTreeSet::new();
    for entry in index.iter() {
        let path = String::from_utf8_lossy(&entry.path).into_owned();
        let stage = hidden::stage(&entry);
        let in_head = head_tree
            .as_ref()
            .and_then(|t| t.get_path(Path::new(&path)).ok())
            .is_some_and(|e| e.id() == entry.id);
        if !in_head && entry.mode != 0o160000 && saved_blobs.insert(entry.id) {
            let blob = wt_repo
                .find_blob(entry.id)
                .with_context(|| format!("reading the index blob of {path}"))?;
            let mut header = tar::Header::new_gnu();
            header.set_size(blob.content().len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(
                &mut header,
                format!("{BLOB_PREFIX}/{}", entry.id),
                blob.content(),
            )?;
        }
        if stage == 0 && root.join(&path).symlink_metadata().is_err() {
            absent.insert(path.clone());
        }
        records.push(IndexRecord::of(&entry));
    }
    if let Some(tree) = &head_tree {
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Tree) {
                let path = format!("{dir}{}", entry.name().unwrap_or_default());
                if root.join(&path).symlink_metadata().is_err() {
                    absent.insert(path);
                }
            }
            git2::TreeWalkResult::Ok
        })?;
    }
    Ok((records, absent.into_iter().collect()))
}

/// `git bundle create` — libgit2 cannot write bundles. The bundle holds every commit that dies
/// with the worktree, minus what surviving tips already have, with a ref for each dying tip
/// (its branch, `refs/worktree/…`, or `refs/beamops/…` for a detached HEAD or a reflog entry).
/// The refs are made in a scratch repository borrowing the objects (`objects/info/alternates`),
/// so the user's repository never sees them.
fn write_bundle(repo: &Repo, assessment: &Assessment, dir: &Path) -> Result<Vec<SavedRef>> {
    let mut refs: Vec<SavedRef> = Vec::new();
    for (n, (oid, held_by)) in assessment.dying_tips.iter().enumerate() {
        let branch = held_by.iter().find_map(|h| h.strip_prefix("branch "));
        let own_ref = held_by.iter().find(|h| h.starts_with("refs/"));
        let name = match (branch, own_ref) {
            (Some(b), _) => format!("refs/heads/{b}"),
            (None, Some(r)) => r.clone(),
            _ if held_by.iter().any(|h| h == "detached HEAD") => "refs/beamops/HEAD".into(),
            _ => format!("refs/beamops/reflog/{n}"),
        };
        let name = if refs.iter().any(|r| r.name == name) {
            format!("refs/beamops/tip/{n}")
        } else {
            name
        };
        refs.push(SavedRef {
            name,
            oid: oid.to_string(),
            held_by: held_by.clone(),
        });
    }
    let scratch = dir.join(".bundle-scratch");
    let scratch_str = scratch
        .to_str()
        .context("a backup path that is not UTF-8")?;
    let result = (|| -> Result<()> {
        gitcli::run(dir, &["init", "--bare", "-q", scratch_str], None)?;
        let objects = canonical(&repo.git.path().join("objects"));
        std::fs::write(
            scratch.join("objects/info/alternates"),
            format!("{}\n", objects.display()),
        )?;
        let updates: String = refs
            .iter()
            .map(|r| format!("create {} {}\n", r.name, r.oid))
            .collect();
        gitcli::run(&scratch, &["update-ref", "--stdin"], Some(&updates))?;
        let mut revs: String = refs.iter().map(|r| format!("{}\n", r.name)).collect();
        for oid in &assessment.other_tips {
            revs += &format!("^{oid}\n");
        }
        let file = dir.join(BUNDLE);
        let file_str = file.to_str().context("a backup path that is not UTF-8")?;
        gitcli::run(
            &scratch,
            &["bundle", "create", "--quiet", file_str, "--stdin"],
            Some(&revs),
        )?;
        fsutil::set_mode(&file, 0o600)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result.context("writing the commit bundle")?;
    Ok(refs)
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
            _ if name.starts_with(&format!("{BLOB_PREFIX}/")) => {
                // A blob is checked against its own name: git's id of its content.
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                let id = git2::Oid::hash_object(git2::ObjectType::Blob, &bytes)?;
                if name != format!("{BLOB_PREFIX}/{id}") {
                    bail!("{}: {name} does not match its id", archive.display());
                }
                id.to_string()
            }
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
        )
        .chain(
            manifest
                .admin_files
                .iter()
                .map(|f| (format!("{ADMIN_PREFIX}/{}", f.path), f.sha256.clone())),
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
        if manifest.bundle_refs.is_empty()
            && let Some(head) = &manifest.head
            && !heads.lines().any(|l| l.starts_with(head.as_str()))
        {
            bail!("{}: does not hold HEAD {head}", file.display());
        }
        for saved in &manifest.bundle_refs {
            let line = format!("{} {}", saved.oid, saved.name);
            if !heads.lines().any(|l| l.trim() == line) {
                bail!("{}: does not hold {line}", file.display());
            }
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

/// What an archive holds besides the working-tree files.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Working-tree entries written.
    pub restored: usize,
    /// `index/` entries: the staged version of each staged path.
    pub staged: BTreeMap<String, Vec<u8>>,
    /// `blobs/` entries: index blobs by id.
    pub blobs: Vec<Vec<u8>>,
    /// `admin/` entries: administrative files by path relative to the admin directory.
    pub admin: BTreeMap<String, Vec<u8>>,
}

/// Unpack the archive into `wt`: `worktree/` entries over the working tree; the rest returned
/// for the caller to put into git.
pub fn extract(dir: &Path, wt: &Path) -> Result<Extracted> {
    let archive = dir.join(ARCHIVE);
    let mut tar = tar::Archive::new(BufReader::new(File::open(&archive)?));
    let mut out = Extracted::default();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = || -> Result<Vec<u8>> {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        if let Some(rel) = name.strip_prefix(&format!("{INDEX_PREFIX}/")) {
            out.staged.insert(rel.to_string(), bytes()?);
            continue;
        }
        if name.starts_with(&format!("{BLOB_PREFIX}/")) {
            out.blobs.push(bytes()?);
            continue;
        }
        if let Some(rel) = name.strip_prefix(&format!("{ADMIN_PREFIX}/")) {
            out.admin.insert(rel.to_string(), bytes()?);
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
        out.restored += 1;
    }
    Ok(out)
}
