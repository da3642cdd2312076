//! Edits `git status` does not show: files flagged `--assume-unchanged` or `--skip-worktree`,
//! files whose stat data matches the index although their content does not (git trusts the stat
//! data), and executable-bit changes under `core.fileMode=false`. Removing the worktree would
//! delete them without a word from git, so every tracked file is compared by content with its
//! index entry instead of trusting the status.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use git2::{IndexEntryExtendedFlag, IndexEntryFlag, ObjectType, Oid, Repository};

use super::gitcli;
use super::inventory::FileStatus;

const MODE_FILE: u32 = 0o100644;
const MODE_EXECUTABLE: u32 = 0o100755;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_GITLINK: u32 = 0o160000;

/// One tracked file whose working-tree state differs from the index although status is silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// Relative to the worktree, `/`-separated.
    pub path: String,
    /// Whether the file is still there (a hidden deletion has nothing to archive).
    pub present: bool,
    pub why: String,
}

impl Hidden {
    pub fn item(&self) -> String {
        format!("{} ({})", self.path, self.why)
    }
}

/// Index flags of one entry, as `git ls-files -v` would show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub assume_unchanged: bool,
    pub skip_worktree: bool,
    pub intent_to_add: bool,
}

impl Flags {
    pub fn of(entry: &git2::IndexEntry) -> Flags {
        let flags = IndexEntryFlag::from_bits_truncate(entry.flags);
        let extended = IndexEntryExtendedFlag::from_bits_truncate(entry.flags_extended);
        Flags {
            assume_unchanged: flags.is_valid(),
            skip_worktree: extended.is_skip_worktree(),
            intent_to_add: extended.is_intent_to_add(),
        }
    }

    fn label(self) -> Option<&'static str> {
        if self.assume_unchanged {
            Some("assume-unchanged")
        } else if self.skip_worktree {
            Some("skip-worktree")
        } else {
            None
        }
    }
}

/// The index stage of an entry (0 unless conflicted).
pub fn stage(entry: &git2::IndexEntry) -> u16 {
    (entry.flags >> 12) & 0x3
}

/// Every tracked file whose content, type or mode differs from its index entry while `shown`
/// (the status) does not list it.
pub fn changes(repo: &Repository, shown: &FileStatus) -> Result<Vec<Hidden>> {
    let Some(root) = repo.workdir() else {
        return Ok(Vec::new());
    };
    let reported: HashSet<&str> = shown
        .staged
        .iter()
        .chain(&shown.unstaged)
        .chain(&shown.conflicted)
        .chain(&shown.deleted)
        .chain(&shown.untracked)
        .map(String::as_str)
        .collect();
    let file_mode = repo
        .config()
        .and_then(|c| c.get_bool("core.fileMode"))
        .unwrap_or(true);
    let index = repo.index().context("reading the worktree's index")?;
    let mut found = Vec::new();
    // Raw content differs from the index blob: possibly a real edit, possibly only what the
    // clean filters (autocrlf, filter drivers) normalize; git decides those below.
    let mut differing: Vec<(String, Oid, Flags)> = Vec::new();
    // Regular files whose clean-filtered content may match the index: a filter driver's clean
    // step can strip what was changed (a secret blanked on `git add`), so those are compared
    // with what the smudge step checks out instead.
    let mut unfiltered: Vec<(String, Oid, Flags)> = Vec::new();
    for entry in index.iter() {
        if stage(&entry) != 0 || entry.mode == MODE_GITLINK {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path).into_owned();
        if reported.contains(path.as_str()) {
            continue;
        }
        let flags = Flags::of(&entry);
        if flags.intent_to_add {
            // Status reports these as new files; their content is saved with the untracked.
            continue;
        }
        let full = root.join(&path);
        let because = |what: &str| match flags.label() {
            Some(flag) => format!("{what}; git status hides it: {flag}"),
            None => format!("{what}; git status hides it"),
        };
        let Ok(meta) = full.symlink_metadata() else {
            // Outside a sparse checkout a skip-worktree file is absent by design.
            if flags.assume_unchanged {
                found.push(Hidden {
                    path,
                    present: false,
                    why: because("deleted"),
                });
            }
            continue;
        };
        let is_link = meta.file_type().is_symlink();
        if is_link != (entry.mode == MODE_SYMLINK) || meta.is_dir() {
            found.push(Hidden {
                path,
                present: true,
                why: because("type changed"),
            });
            continue;
        }
        let raw = if is_link {
            let target = std::fs::read_link(&full)
                .with_context(|| format!("reading the link {}", full.display()))?;
            Oid::hash_object(ObjectType::Blob, target.as_os_str().as_encoded_bytes())?
        } else {
            Oid::hash_file(ObjectType::Blob, &full)
                .with_context(|| format!("hashing {}", full.display()))?
        };
        if raw != entry.id {
            differing.push((path.clone(), entry.id, flags));
            continue;
        }
        if !is_link {
            unfiltered.push((path.clone(), entry.id, flags));
        }
        if matches!(entry.mode, MODE_FILE | MODE_EXECUTABLE) {
            let executable = meta.permissions().mode() & 0o111 != 0;
            if executable != (entry.mode == MODE_EXECUTABLE) {
                let what = if executable {
                    "made executable"
                } else {
                    "no longer executable"
                };
                let why = match flags.label() {
                    Some(_) => because(what),
                    None if !file_mode => {
                        format!("{what}; git status hides it: core.fileMode=false")
                    }
                    None => because(what),
                };
                found.push(Hidden {
                    path,
                    present: true,
                    why,
                });
            }
        }
    }
    if !differing.is_empty() {
        let filtered = filtered_hashes(root, &differing)?;
        for ((path, index_oid, flags), hashed) in differing.into_iter().zip(filtered) {
            if hashed == index_oid {
                unfiltered.push((path, index_oid, flags));
            } else {
                let why = match flags.label() {
                    Some(flag) => format!("content differs from the index; git status hides it: {flag}"),
                    None => "content differs from the index; git status hides it: its stat data matches the index".to_string(),
                };
                found.push(Hidden {
                    path,
                    present: true,
                    why,
                });
            }
        }
    }
    found.extend(stripped_by_filters(root, &unfiltered)?);
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Files with a `filter` attribute whose bytes differ from what the filter's smudge step makes
/// of their index blob: git status compares through the clean step, which may strip exactly
/// the change (`SECRET=hunter2` cleaned to `SECRET=`), so git would call them unchanged.
/// `text`/`eol` conversions are no filter driver and stay out of this.
fn stripped_by_filters(root: &Path, files: &[(String, Oid, Flags)]) -> Result<Vec<Hidden>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let input: String = files.iter().map(|(p, _, _)| format!("{p}\0")).collect();
    let out = gitcli::run(
        root,
        &["check-attr", "-z", "--stdin", "filter"],
        Some(&input),
    )
    .context("reading the filter attributes of tracked files")?;
    // `-z` output: path NUL attribute NUL value NUL, per path.
    let fields: Vec<&str> = out.split('\0').collect();
    let mut found = Vec::new();
    for triple in fields.chunks(3) {
        let [path, _, value] = triple else { continue };
        if matches!(*value, "unspecified" | "unset" | "set" | "") {
            continue;
        }
        let Some((_, oid, flags)) = files.iter().find(|(p, _, _)| p == path) else {
            continue;
        };
        let smudged = match gitcli::run_bytes(
            root,
            &[
                "cat-file",
                "--filters",
                &format!("--path={path}"),
                &oid.to_string(),
            ],
            None,
        ) {
            Ok(bytes) => bytes,
            // Nothing then shows the file matches what git holds: conservatively at risk.
            Err(e) => {
                found.push(Hidden {
                    path: path.to_string(),
                    present: true,
                    why: format!("its smudge filter `{value}` failed, so it cannot be compared with the index: {e:#}"),
                });
                continue;
            }
        };
        let full = root.join(path);
        let disk = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
        if disk != smudged {
            let hides = match flags.label() {
                Some(flag) => format!("{flag}; "),
                None => String::new(),
            };
            found.push(Hidden {
                path: path.to_string(),
                present: true,
                why: format!(
                    "content differs from what the index checks out; git status hides it: {hides}the clean filter `{value}` strips the difference"
                ),
            });
        }
    }
    Ok(found)
}

/// The blob ids git would store for these files, with the clean filters their attributes name
/// (`core.autocrlf`, `filter=`): `git hash-object --stdin-paths`, since libgit2 has no way to
/// hash a file through the repository's filters.
fn filtered_hashes(root: &Path, files: &[(String, Oid, Flags)]) -> Result<Vec<Oid>> {
    let input: String = files.iter().map(|(p, _, _)| format!("{p}\n")).collect();
    let out = gitcli::run(root, &["hash-object", "--stdin-paths"], Some(&input))
        .context("hashing files git status does not report")?;
    let hashes = out
        .lines()
        .map(Oid::from_str)
        .collect::<Result<Vec<_>, _>>()
        .context("reading `git hash-object` output")?;
    if hashes.len() != files.len() {
        anyhow::bail!(
            "git hash-object answered {} hashes for {} files",
            hashes.len(),
            files.len()
        );
    }
    Ok(hashes)
}
