//! `worktree restore`: recreate a removed worktree from its backup, files, index and commits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{BranchType, IndexEntry, IndexTime, Oid, WorktreeAddOptions};
use serde::Serialize;

use std::collections::{BTreeMap, BTreeSet};

use super::backup::{self, IndexRecord, Manifest};
use super::inventory::open;
use super::{Repo, absolute, gitcli, normalize};
use crate::exit::Failure;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where to recreate it (default: where it was).
    pub path: Option<PathBuf>,
    /// Branch name to use (default: the one it had).
    pub branch: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Restored {
    pub backup: PathBuf,
    pub name: String,
    pub path: PathBuf,
    pub branch: Option<String>,
    pub head: Option<String>,
    pub files_restored: usize,
    /// Index entries that differ from HEAD (staged changes).
    pub staged_restored: usize,
    /// Every index entry put back (with its stage and flags).
    pub index_entries_restored: usize,
    /// The worktree's own refs recreated (`refs/worktree/*`, …).
    pub worktree_refs_restored: usize,
    pub commits_restored: usize,
}

/// A backup named by path, or by its directory name under `.beamops/backups/`.
pub fn locate(repo: &Repo, spec: &Path) -> Result<PathBuf> {
    let direct = absolute(spec);
    if direct.join(backup::MANIFEST).is_file() {
        return Ok(direct);
    }
    let under = repo.state_dir()?.join("backups").join(spec);
    if under.join(backup::MANIFEST).is_file() {
        return Ok(under);
    }
    bail!(
        "{}: no backup there (looked for {} in it and under .beamops/backups/)\n  fix: pass a directory printed by `beamops worktree remove --backup`",
        spec.display(),
        backup::MANIFEST
    )
}

pub fn restore(repo: &Repo, spec: &Path, opts: &RestoreOptions) -> Result<Restored> {
    let dir = locate(repo, spec)?;
    let run_in = backup::repo_dir(repo);
    let manifest = backup::verify(&dir, Some(&run_in))?;
    let path = opts
        .path
        .as_deref()
        .map(absolute)
        .unwrap_or_else(|| manifest.path.clone());
    if path.symlink_metadata().is_ok() {
        return Err(Failure::refused(
            format!("{} already exists", path.display()),
            "  fix: move it away, or restore elsewhere with --path DIR",
        )
        .into());
    }
    if let Some(bundle) = &manifest.bundle {
        let file = dir.join(bundle);
        // `git bundle unbundle` — libgit2 cannot read bundles. It only adds objects; no ref moves.
        gitcli::run(
            &run_in,
            &[
                "bundle",
                "unbundle",
                file.to_str().context("a path that is not UTF-8")?,
            ],
            None,
        )
        .with_context(|| format!("reading commits from {}", file.display()))?;
    }
    let head = match &manifest.head {
        Some(h) => Some(repo.git.find_commit(Oid::from_str(h)?).with_context(|| {
            format!("commit {h} is neither in the repository nor in the backup's bundle")
        })?),
        None => None,
    };
    let Some(head) = head else {
        bail!("the backup records no HEAD commit; there is nothing to check out");
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }

    let branch = opts.branch.clone().or_else(|| manifest.branch.clone());
    match &branch {
        Some(name) => {
            let reference = match repo.git.find_branch(name, BranchType::Local) {
                Ok(existing) => {
                    let at = existing.get().peel_to_commit()?.id();
                    if at != head.id() {
                        return Err(Failure::refused(
                            format!(
                                "branch {name} now points at {at}, the backup at {}",
                                head.id()
                            ),
                            "  fix: restore onto a new branch with --branch NAME",
                        )
                        .into());
                    }
                    existing.into_reference()
                }
                Err(_) => repo.git.branch(name, &head, false)?.into_reference(),
            };
            let admin = free_admin_name(repo, &manifest);
            repo.git
                .worktree(
                    &admin,
                    &path,
                    Some(WorktreeAddOptions::new().reference(Some(&reference))),
                )
                .with_context(|| format!("adding worktree {admin} at {}", path.display()))?;
        }
        None => {
            // libgit2's worktree add always checks out a branch; only git can add a detached one.
            let p = path.to_str().context("a path that is not UTF-8")?;
            gitcli::run(
                &run_in,
                &["worktree", "add", "--detach", p, &head.id().to_string()],
                None,
            )?;
        }
    }

    let path = path.canonicalize()?;
    let (files_restored, index_entries_restored, admin) = put_back(&dir, &manifest, &path)?;
    restore_worktree_state(&path, &manifest, &admin)?;
    Ok(Restored {
        backup: dir,
        name: manifest.name.clone(),
        path,
        branch,
        head: manifest.head.clone(),
        files_restored,
        staged_restored: manifest.staged.len(),
        index_entries_restored,
        worktree_refs_restored: manifest.worktree_refs.len(),
        commits_restored: manifest.commits.len(),
    })
}

/// Over a checkout of the backup's HEAD at `path`: the saved files, the deletions and the index
/// (every entry, stage and flag). Returns how many files and index entries came back, and the
/// saved administrative files.
pub fn put_back(
    dir: &Path,
    manifest: &Manifest,
    path: &Path,
) -> Result<(usize, usize, BTreeMap<String, Vec<u8>>)> {
    let extracted = backup::extract(dir, path)?;
    let saved_dirs: BTreeSet<&str> = manifest
        .files
        .iter()
        .filter(|f| f.kind == backup::FileKind::Dir)
        .map(|f| f.path.as_str())
        .collect();
    let gone: BTreeSet<&String> = manifest.deleted.iter().chain(&manifest.absent).collect();
    for rel in gone {
        let full = normalize(&path.join(rel));
        if !full.starts_with(path) || !full.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            continue;
        }
        std::fs::remove_file(&full)
            .with_context(|| format!("deleting {} as it was", full.display()))?;
        // git leaves no empty directory behind a deletion; neither does a restore.
        let mut parent = full.parent();
        while let Some(p) = parent {
            let rel = p.strip_prefix(path).unwrap_or(p).to_string_lossy();
            if p == path || saved_dirs.contains(rel.as_ref()) || std::fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
    }
    let staged_restored = if manifest.index.is_empty() {
        // A backup from before the index was saved whole: its staged entries only.
        restage(path, manifest, &extracted.staged)?
    } else {
        restore_index(path, manifest, &extracted.blobs)?
    };
    Ok((extracted.restored, staged_restored, extracted.admin))
}

/// Rebuild the index exactly as saved: every entry with its mode, blob and stage, then the
/// intent-to-add, assume-unchanged and skip-worktree flags. git's own plumbing does it
/// (`read-tree --empty`, `update-index --index-info`, `add --intent-to-add`, `update-index
/// --assume-unchanged/--skip-worktree`): libgit2 drops those flags when adding entries. Then
/// the result is read back and compared with the manifest.
fn restore_index(path: &Path, manifest: &Manifest, blobs: &[Vec<u8>]) -> Result<usize> {
    let wt_repo = open(path)?;
    for bytes in blobs {
        wt_repo.blob(bytes).context("writing a saved index blob")?;
    }
    for record in manifest.index.iter().filter(|r| r.mode != 0o160000) {
        let id = Oid::from_str(&record.oid)?;
        wt_repo.find_blob(id).with_context(|| {
            format!(
                "the index blob {} of {} is neither in the repository nor in the backup",
                record.oid, record.path
            )
        })?;
    }
    // `add -N` needs the file; one that is gone keeps its (empty) entry without the flag.
    let intent =
        |r: &&IndexRecord| r.intent_to_add && path.join(&r.path).symlink_metadata().is_ok();
    let info: String = manifest
        .index
        .iter()
        .filter(|r| !intent(r))
        .map(|r| format!("{:o} {} {}\t{}\0", r.mode, r.oid, r.stage, r.path))
        .collect();
    gitcli::run(path, &["read-tree", "--empty"], None)?;
    gitcli::run(path, &["update-index", "-z", "--index-info"], Some(&info))?;
    let ita: Vec<&str> = manifest
        .index
        .iter()
        .filter(intent)
        .map(|r| r.path.as_str())
        .collect();
    if !ita.is_empty() {
        let mut args = vec!["add", "--force", "--intent-to-add", "--"];
        args.extend(&ita);
        gitcli::run(path, &args, None)?;
    }
    for (flag, wanted) in [
        (
            "--assume-unchanged",
            (|r: &IndexRecord| r.assume_unchanged) as fn(&IndexRecord) -> bool,
        ),
        ("--skip-worktree", |r: &IndexRecord| r.skip_worktree),
    ] {
        let paths: String = manifest
            .index
            .iter()
            .filter(|r| wanted(r))
            .map(|r| format!("{}\0", r.path))
            .collect();
        if !paths.is_empty() {
            gitcli::run(path, &["update-index", flag, "-z", "--stdin"], Some(&paths))?;
        }
    }
    // Fresh stat data, so git need not rehash every file; a file that differs is fine here.
    let _ = gitcli::run(path, &["update-index", "-q", "--refresh"], None);

    let index = open(path)?.index()?;
    let now: BTreeSet<IndexRecord> = index.iter().map(|e| IndexRecord::of(&e)).collect();
    let expected: BTreeSet<IndexRecord> = manifest
        .index
        .iter()
        .map(|r| IndexRecord {
            intent_to_add: intent(&r),
            ..r.clone()
        })
        .collect();
    let differing: Vec<&str> = expected
        .symmetric_difference(&now)
        .map(|r| r.path.as_str())
        .collect();
    if !differing.is_empty() {
        bail!(
            "the restored index differs from the backup at: {}",
            differing.join(", ")
        );
    }
    Ok(manifest.index.len())
}

/// What lived in the worktree's administrative directory: its own refs (`refs/worktree/*`,
/// `refs/bisect/*`), its HEAD reflog (the saved entries, then the restore's own), its
/// sparse-checkout patterns and `config.worktree`.
fn restore_worktree_state(
    path: &Path,
    manifest: &Manifest,
    admin: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let updates: String = manifest
        .worktree_refs
        .iter()
        .map(|r| format!("update {} {}\n", r.name, r.oid))
        .collect();
    if !updates.is_empty() {
        gitcli::run(path, &["update-ref", "--stdin"], Some(&updates))
            .context("recreating the worktree's own refs")?;
    }
    let admin_dir = open(path)?.path().to_path_buf();
    for (rel, bytes) in admin {
        if !backup::ADMIN_FILES.contains(&rel.as_str()) {
            continue;
        }
        let dest = admin_dir.join(rel);
        let mut content = bytes.clone();
        if rel == "logs/HEAD" {
            content.extend(std::fs::read(&dest).unwrap_or_default());
        }
        crate::fsutil::atomic_write(&dest, &content, Some(0o644))?;
    }
    Ok(())
}

fn free_admin_name(repo: &Repo, manifest: &Manifest) -> String {
    let taken = |n: &str| repo.git.find_worktree(n).is_ok();
    let mut name = manifest.name.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{}-{n}", manifest.name);
        n += 1;
    }
    name
}

/// Put the staged versions back into the worktree's index.
fn restage(
    path: &Path,
    manifest: &Manifest,
    blobs: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<usize> {
    if manifest.staged.is_empty() {
        return Ok(0);
    }
    let wt_repo = open(path)?;
    let mut index = wt_repo.index()?;
    for entry in &manifest.staged {
        match (&entry.sha256, blobs.get(&entry.path)) {
            (None, _) => index.remove_path(Path::new(&entry.path))?,
            (Some(_), Some(bytes)) => {
                let zero = IndexTime::new(0, 0);
                let index_entry = IndexEntry {
                    ctime: zero,
                    mtime: zero,
                    dev: 0,
                    ino: 0,
                    mode: entry.mode,
                    uid: 0,
                    gid: 0,
                    file_size: bytes.len() as u32,
                    id: Oid::ZERO_SHA1,
                    flags: entry.path.len().min(0xfff) as u16,
                    flags_extended: 0,
                    path: entry.path.as_bytes().to_vec(),
                };
                index.add_frombuffer(&index_entry, bytes)?;
            }
            (Some(_), None) => bail!("the backup lacks the staged version of {}", entry.path),
        }
    }
    index.write()?;
    Ok(manifest.staged.len())
}
