//! `--apply`: replace each exact or normalized copy with a symlink or wrapper to its canonical,
//! so that no byte is ever lost: backups first, then the manifest, then atomic replacements.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use super::Tier;
use super::manifest::{self, Entry, EntryState, Manifest, Replacement, RunState, Strategy};
use super::scan::{self, WRAPPER_MARKER};
use super::siblings::{self, Idiom, ScriptFacts, SourceTarget};
use super::{FileInfo, Findings, worktrees};
use crate::exit::Failure;
use crate::fsutil;
use crate::output::Ui;
use crate::project::STATE_DIR;
use crate::state::{RunLock, now_rfc3339};

/// Test hook: sleep this long after N replacements so a test can kill -9 the run mid-apply.
pub const PAUSE_AFTER_ENV: &str = "BEAMOPS_DEDUPE_PAUSE_AFTER";

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub strategy: Strategy,
    pub allow_dirty: bool,
    pub lock_wait: Duration,
}

#[derive(Debug, Serialize)]
pub struct ApplyOutcome {
    pub manifest: String,
    pub strategy: Strategy,
    pub replaced: Vec<String>,
    /// Copies left alone, and why.
    pub skipped: Vec<Skipped>,
    /// Copies whose own location or callers decided how they were consolidated: a symlink
    /// instead of a wrapper, or kept as they are (`action` "keep").
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Serialize)]
pub struct Decision {
    pub path: String,
    /// `symlink`, `wrapper` or `keep`.
    pub action: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

fn skip(list: &mut Vec<Skipped>, path: &str, reason: impl Into<String>) {
    list.push(Skipped {
        path: path.to_string(),
        reason: reason.into(),
    });
}

struct Planned {
    entry: Entry,
    /// Absolute, as the scan found them (the entry holds them relative to the root).
    path: PathBuf,
    canonical: PathBuf,
    display: String,
    scan_hash: Option<u128>,
    canonical_hash: Option<u128>,
    wrapper: Option<Vec<u8>>,
}

pub fn apply(findings: &Findings, opts: &ApplyOptions, ui: &Ui) -> Result<ApplyOutcome> {
    let dir = manifest::dedupe_dir(&findings.root);
    let manifest_path = manifest::new_manifest_path(&dir);
    refuse_dirty_copies(findings, opts.allow_dirty, ui)?;
    let (mut planned, decisions) = plan(findings, opts.strategy, &manifest_path, ui)?;

    let _lock = RunLock::acquire(&findings.root.join(STATE_DIR), opts.lock_wait, |m| {
        ui.note(m)
    })?;
    let mut skipped = Vec::new();
    // A symlink to a file without the copy's execute bits would stop `./copy` from running.
    planned.retain(|p| {
        if !matches!(p.entry.replacement, Replacement::Symlink { .. }) {
            return true;
        }
        let lost = p.entry.mode & 0o111 & !mode_of(&p.canonical);
        if lost != 0 {
            skip(
                &mut skipped,
                &p.display,
                "executable but its canonical is not: a symlink would change its mode (use --strategy wrapper)",
            );
        }
        lost == 0
    });
    // Every original is stored (fsynced) before the manifest names it, and the manifest is on
    // disk before the first copy is touched: a kill at any point leaves an undoable state.
    // The canonicals are stored too, so that undo can show what an edit through a symlink
    // changed and give the old bytes back.
    let bar = ui.progress(planned.len() as u64, "backing up copies");
    let mut canonical_sha: HashMap<PathBuf, Option<String>> = HashMap::new();
    planned.retain_mut(|p| {
        bar.inc(1);
        let sha = canonical_sha
            .entry(p.canonical.clone())
            .or_insert_with(|| {
                read_if_unchanged(&p.canonical, p.canonical_hash)
                    .and_then(|b| manifest::store_backup(&dir, &b).ok())
            })
            .clone();
        let Some(sha) = sha else {
            skip(
                &mut skipped,
                &p.display,
                "its canonical changed since the scan",
            );
            return false;
        };
        p.entry.canonical_sha256 = Some(sha);
        match read_if_unchanged(&p.path, p.scan_hash) {
            Some(bytes) => match manifest::store_backup(&dir, &bytes) {
                Ok(sha) => {
                    p.entry.original_sha256 = sha;
                    true
                }
                Err(e) => {
                    skip(
                        &mut skipped,
                        &p.display,
                        format!("could not be backed up: {e:#}"),
                    );
                    false
                }
            },
            None => {
                skip(&mut skipped, &p.display, "changed since the scan");
                false
            }
        }
    });
    bar.finish_and_clear();
    let mut manifest = Manifest {
        schema: manifest::MANIFEST_SCHEMA,
        created: now_rfc3339(),
        root: findings.root.clone(),
        strategy: opts.strategy,
        state: RunState::InProgress,
        entries: planned.iter().map(|p| p.entry.clone()).collect(),
    };
    manifest.write(&manifest_path)?;

    let pause_after: Option<usize> = std::env::var(PAUSE_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut canonical_ok: HashMap<PathBuf, bool> = HashMap::new();
    let mut replaced = Vec::new();
    let mut last_flush = Instant::now();
    let bar = ui.progress(planned.len() as u64, "replacing copies");
    for (k, p) in planned.iter().enumerate() {
        bar.inc(1);
        let canonical_intact = *canonical_ok
            .entry(p.canonical.clone())
            .or_insert_with(|| read_if_unchanged(&p.canonical, p.canonical_hash).is_some());
        // Just before replacing: the copy may have changed since it was backed up.
        let still_original =
            std::fs::read(&p.path).is_ok_and(|b| fsutil::sha256_hex(&b) == p.entry.original_sha256);
        if !canonical_intact || !still_original {
            manifest.entries[k].state = EntryState::SkippedChanged;
            let what = if canonical_intact {
                "the copy"
            } else {
                "its canonical"
            };
            skip(
                &mut skipped,
                &p.display,
                format!("{what} changed since the scan"),
            );
            continue;
        }
        replace(&p.path, &p.entry, p.wrapper.as_deref())
            .with_context(|| format!("replacing {}", p.display))?;
        manifest.entries[k].state = EntryState::Replaced;
        replaced.push(p.display.clone());
        // The manifest already lists this copy, so flushing its state is only bookkeeping:
        // every time for small runs, at most a few times a second for huge ones.
        if planned.len() <= 200
            || last_flush.elapsed() > Duration::from_millis(250)
            || pause_after.is_some()
        {
            manifest.write(&manifest_path)?;
            last_flush = Instant::now();
        }
        if pause_after == Some(replaced.len()) {
            std::thread::sleep(Duration::from_secs(120));
        }
    }
    bar.finish_and_clear();
    manifest.state = RunState::Complete;
    manifest.write(&manifest_path)?;
    Ok(ApplyOutcome {
        manifest: scan::relative_path(&findings.root, &manifest_path)
            .display()
            .to_string(),
        strategy: opts.strategy,
        replaced,
        skipped,
        decisions,
    })
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(0)
}

/// What to do with one copy once its own location and its callers are taken into account.
enum Choice {
    Use(Strategy, Option<String>),
    Keep(String),
}

/// Who sources which file: exact paths, and file names for `source` lines whose directory
/// depends on the working directory or a variable.
#[derive(Default)]
struct Sourced {
    by_path: HashMap<PathBuf, String>,
    by_name: HashMap<String, String>,
}

impl Sourced {
    fn of(&self, path: &Path) -> Option<String> {
        if let Some(by) = self.by_path.get(path) {
            return Some(by.clone());
        }
        let name = path.file_name()?.to_string_lossy();
        self.by_name.get(name.as_ref()).map(|by| {
            format!("{by} (a file of this name, by a path that depends on where it runs)")
        })
    }
}

fn plan(
    findings: &Findings,
    strategy: Strategy,
    manifest_path: &Path,
    ui: &Ui,
) -> Result<(Vec<Planned>, Vec<Decision>)> {
    // Every scanned script is read for `source` lines and self-location, in parallel.
    let bar = ui.progress(
        findings.files.len() as u64,
        "reading sibling and source references",
    );
    let facts: Vec<Option<ScriptFacts>> = findings
        .files
        .par_iter()
        .map(|f| {
            bar.inc(1);
            std::fs::read(&f.path).ok().map(|b| siblings::analyse(&b))
        })
        .collect();
    bar.finish_and_clear();
    let mut sourced = Sourced::default();
    for (file, facts) in findings.files.iter().zip(&facts) {
        let Some(facts) = facts else { continue };
        let dir = file.path.parent().unwrap_or(Path::new("/"));
        for (line, target) in &facts.sources {
            let by = format!("{}:{line}", file.display);
            match target {
                SourceTarget::Sibling(rel) => {
                    sourced
                        .by_path
                        .entry(siblings::normalize(&dir.join(rel)))
                        .or_insert(by);
                }
                SourceTarget::Absolute(p) => {
                    sourced.by_path.entry(siblings::normalize(p)).or_insert(by);
                }
                SourceTarget::Named(name) if !name.is_empty() => {
                    sourced.by_name.entry(name.clone()).or_insert(by);
                }
                SourceTarget::Named(_) => {}
            }
        }
    }

    let mut planned = Vec::new();
    let mut decisions = Vec::new();
    for group in &findings.groups {
        let canonical = &findings.files[group.canonical];
        for &(copy, tier) in &group.copies {
            let file = &findings.files[copy];
            let dir = file.path.parent().context("a file without a directory")?;
            let choice = match &facts[copy] {
                Some(f) => choose(strategy, tier, file, canonical, f, sourced.of(&file.path)),
                None => Choice::Use(strategy, None),
            };
            let chosen = match choice {
                Choice::Keep(reason) => {
                    decisions.push(Decision {
                        path: file.display.clone(),
                        action: "keep",
                        reason,
                    });
                    continue;
                }
                Choice::Use(chosen, Some(reason)) => {
                    decisions.push(Decision {
                        path: file.display.clone(),
                        action: match chosen {
                            Strategy::Symlink => "symlink",
                            Strategy::Wrapper => "wrapper",
                        },
                        reason,
                    });
                    chosen
                }
                Choice::Use(chosen, None) => chosen,
            };
            let target = scan::relative_path(dir, &canonical.path);
            let (replacement, wrapper) = match chosen {
                Strategy::Symlink => (Replacement::Symlink { target }, None),
                Strategy::Wrapper => {
                    let bytes = wrapper_script(&target, canonical, manifest_path, &findings.root);
                    (
                        Replacement::Wrapper {
                            sha256: fsutil::sha256_hex(&bytes),
                        },
                        Some(bytes),
                    )
                }
            };
            planned.push(Planned {
                entry: Entry {
                    path: scan::relative_path(&findings.root, &file.path),
                    canonical: scan::relative_path(&findings.root, &canonical.path),
                    canonical_sha256: None,
                    tier,
                    original_sha256: String::new(),
                    size: file.size,
                    mode: file.mode,
                    replacement,
                    state: EntryState::Planned,
                },
                path: file.path.clone(),
                canonical: canonical.path.clone(),
                display: file.display.clone(),
                scan_hash: file.hash,
                canonical_hash: canonical.hash,
                wrapper,
            });
        }
    }
    Ok((planned, decisions))
}

/// Whether consolidating `copy` into `canonical` keeps what it reaches and how it is loaded.
fn choose(
    requested: Strategy,
    tier: Tier,
    copy: &FileInfo,
    canonical: &FileInfo,
    facts: &ScriptFacts,
    sourced_by: Option<String>,
) -> Choice {
    let (Some(copy_dir), Some(canonical_dir)) = (copy.path.parent(), canonical.path.parent())
    else {
        return Choice::Use(requested, None);
    };
    let symlink_keeps_mode = copy.mode & 0o111 & !mode_of(&canonical.path) == 0;
    if facts.self_locating() && copy_dir != canonical_dir {
        let differing: Vec<&str> = facts
            .siblings
            .iter()
            .filter(|s| !siblings::same_in(copy_dir, canonical_dir, s))
            .map(String::as_str)
            .collect();
        let what = if !differing.is_empty() {
            Some(format!(
                "{} beside it differ{} from the canonical's",
                shown(&differing),
                if differing.len() == 1 { "s" } else { "" }
            ))
        } else if !facts.dynamic.is_empty() {
            let dynamic: Vec<&str> = facts.dynamic.iter().map(String::as_str).collect();
            Some(format!(
                "it reaches {} beside it, which cannot be resolved without running it",
                shown(&dynamic)
            ))
        } else {
            None
        };
        if let Some(what) = what {
            let idioms: Vec<&str> = facts.idioms.iter().map(|i| i.describe()).collect();
            let idioms = idioms.join(" and ");
            if facts.idioms.contains(&Idiom::Resolved) {
                return Choice::Keep(format!(
                    "finds its own directory with {idioms} and {what}: readlink -f/realpath see through a symlink and a wrapper runs the canonical, so either would make it reach the canonical's neighbours"
                ));
            }
            if !symlink_keeps_mode {
                return Choice::Keep(format!(
                    "finds its own directory with {idioms} and {what}: only a symlink keeps its path, and a symlink would take away its execute bit"
                ));
            }
            let instead = if requested == Strategy::Wrapper {
                " (a wrapper would run the canonical, which finds the canonical's directory)"
            } else {
                ""
            };
            return Choice::Use(
                Strategy::Symlink,
                Some(format!(
                    "finds its own directory with {idioms} and {what}: a symlink keeps the copy's own path in $0 and BASH_SOURCE, so it still reaches its own neighbours{instead}"
                )),
            );
        }
    }
    if let Some(by) = sourced_by
        && requested == Strategy::Wrapper
    {
        if !symlink_keeps_mode {
            return Choice::Keep(format!(
                "sourced by {by}: a wrapper's exec would end the shell that sources it, and a symlink would take away its execute bit"
            ));
        }
        return Choice::Use(
            Strategy::Symlink,
            Some(format!(
                "sourced by {by}: a wrapper's exec would end the shell that sources it, so a symlink instead"
            )),
        );
    }
    // A copy equal only once comments and blanks are dropped, that reads its own path, may read
    // its own text (`sed -n 's/^# //p' "$0"` for its usage): consolidated, it would read the
    // canonical's comments.
    if let Some(line) = facts.names_itself
        && tier != Tier::Exact
    {
        return Choice::Keep(format!(
            "reads its own path ($0 or BASH_SOURCE, line {line}) and differs from the canonical in comments or blank lines, which it may print"
        ));
    }
    // Without `#!` the file is run by whichever shell runs it, or sourced from places no scan
    // sees (an interactive shell, `.envrc`): a wrapper would pick a shell for it, or end the
    // shell that sources it.
    if !facts.shebang && requested == Strategy::Wrapper {
        let why = "has no #! line: it is run by whichever shell runs it, or sourced, and a wrapper would pick a shell for it or end the shell that sources it";
        if !symlink_keeps_mode {
            return Choice::Keep(format!("{why}; a symlink would take away its execute bit"));
        }
        return Choice::Use(
            Strategy::Symlink,
            Some(format!("{why}, so a symlink instead")),
        );
    }
    // Behaviour, not bytes: a wrapper runs the canonical, so `$0` and `BASH_SOURCE` name the
    // canonical's path — in a usage line, a log, a lock file name. A symlink keeps the copy's.
    if let Some(line) = facts.names_itself
        && requested == Strategy::Wrapper
    {
        let why = format!(
            "reads its own path ($0 or BASH_SOURCE, line {line}): under a wrapper it would see the canonical's path"
        );
        if !symlink_keeps_mode {
            return Choice::Keep(format!(
                "{why}, and a symlink would take away its execute bit"
            ));
        }
        return Choice::Use(
            Strategy::Symlink,
            Some(format!("{why}, so a symlink instead")),
        );
    }
    Choice::Use(requested, None)
}

fn shown(list: &[&str]) -> String {
    let mut out = list
        .iter()
        .take(5)
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > 5 {
        out += &format!(" and {} more", list.len() - 5);
    }
    out
}

fn refuse_dirty_copies(findings: &Findings, allow_dirty: bool, ui: &Ui) -> Result<()> {
    if allow_dirty {
        return Ok(());
    }
    // One pass over each worktree's status, not one per copy.
    let copies: Vec<&FileInfo> = findings
        .groups
        .iter()
        .flat_map(|g| g.copies.iter())
        .map(|&(f, _)| &findings.files[f])
        .collect();
    let bar = ui.progress(copies.len() as u64, "checking copies against git");
    let mut per_worktree: HashMap<usize, Vec<&Path>> = HashMap::new();
    for file in &copies {
        if let Some(w) = file.worktree
            && let Ok(rel) = file.path.strip_prefix(&findings.worktrees[w].path)
        {
            per_worktree.entry(w).or_default().push(rel);
        } else {
            bar.inc(1); // outside any git worktree: not checked
        }
    }
    let mut dirty_set: HashSet<PathBuf> = HashSet::new();
    for (w, rels) in &per_worktree {
        let wt = &findings.worktrees[*w];
        for rel in worktrees::uncommitted(wt, rels) {
            dirty_set.insert(wt.path.join(rel));
        }
        bar.inc(rels.len() as u64);
    }
    bar.finish_and_clear();
    let dirty: Vec<&str> = copies
        .iter()
        .filter(|f| dirty_set.contains(&f.path))
        .map(|f| f.display.as_str())
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = dirty.iter().take(20).map(|d| format!("  {d}")).collect();
    let more = if dirty.len() > 20 {
        format!("\n  … and {} more", dirty.len() - 20)
    } else {
        String::new()
    };
    Err(Failure::refused(
        format!("{} copies have uncommitted changes (modified or untracked in git)", dirty.len()),
        format!(
            "{}{more}\n  fix: commit them first, or pass --allow-dirty (originals are backed up either way)",
            shown.join("\n")
        ),
    )
    .into())
}

/// The bytes of `path` if they still hash as they did at scan time.
fn read_if_unchanged(path: &Path, scan_hash: Option<u128>) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    match scan_hash {
        Some(h) if xxh3_128(&bytes) != h => None,
        _ => Some(bytes),
    }
}

/// A wrapper that runs the canonical with the same arguments; `exec` passes the exit status.
fn wrapper_script(
    target: &Path,
    canonical: &super::FileInfo,
    manifest: &Path,
    root: &Path,
) -> Vec<u8> {
    let quoted = format!("'{}'", target.display().to_string().replace('\'', r"'\''"));
    let runner = if canonical.mode & 0o111 != 0 {
        String::new()
    } else {
        // Not executable: run it with the interpreter its shebang names, else sh.
        std::fs::read(&canonical.path)
            .ok()
            .and_then(|b| {
                let line = b
                    .split(|&c| c == b'\n')
                    .next()?
                    .strip_prefix(b"#!")?
                    .to_vec();
                Some(String::from_utf8_lossy(&line).trim().to_string() + " ")
            })
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "sh ".into())
    };
    format!(
        "#!/bin/sh\n# {WRAPPER_MARKER}: consolidated into {target}; `beamops dedupe --undo {manifest}` restores the original.\nexec {runner}\"$(dirname -- \"$0\")\"/{quoted} \"$@\"\n",
        target = target.display(),
        manifest = scan::relative_path(root, manifest).display(),
    )
    .into_bytes()
}

/// Swap the copy for its replacement in one rename, so it is never missing or half-written.
fn replace(path: &Path, entry: &Entry, wrapper: Option<&[u8]>) -> Result<()> {
    match (&entry.replacement, wrapper) {
        (Replacement::Wrapper { .. }, Some(bytes)) => {
            fsutil::atomic_write(path, bytes, Some(entry.mode))
        }
        (Replacement::Symlink { target }, _) => {
            let dir = path.parent().context("a file without a directory")?;
            let name = path.file_name().context("a path without a name")?;
            let tmp = dir.join(format!(
                ".{}{}{}",
                name.to_string_lossy(),
                fsutil::TEMP_MARKER,
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .with_context(|| format!("creating a symlink in {}", dir.display()))?;
            std::fs::rename(&tmp, path)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        (Replacement::Wrapper { .. }, None) => {
            unreachable!("wrappers are planned with their bytes")
        }
    }
}
