//! The file half of a plan: what writing a chapter's rendered files would do to the project.

use serde::Serialize;

use crate::chapter::Policy;
use crate::fsutil::{self, sha256_hex};
use crate::lockfile::{LockFile, LockedFile};
use crate::project::Project;
use crate::render::Rendered;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FileStatus {
    Create,
    Update,
    Unchanged,
    /// Identical to the rendering but not (or differently) recorded in the lock: record it.
    Adopt,
    /// Edited since beamops wrote it (or never written by beamops and different): needs --force.
    Conflict,
    /// Written by an earlier version of the chapter and no longer rendered.
    Stale,
}

impl FileStatus {
    pub fn is_change(self) -> bool {
        !matches!(self, FileStatus::Unchanged)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    pub path: String,
    pub chapter: String,
    pub status: FileStatus,
    pub policy: Policy,
    /// A plain unified diff of the change; colour is added when printing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
    #[serde(skip)]
    pub mode: u32,
    #[serde(skip)]
    pub record: Option<LockedFile>,
}

/// What the earlier steps of one plan will have done by the time a later action runs: the files
/// earlier chapters write (None: removed) and the actions still pending, by id, with the chapter
/// that applies them. A plan's checks see it, so a chapter does not fail on an input an earlier
/// chapter of the same run creates (chapter 08's stack file, chapter 07's swarm).
#[derive(Debug, Default, Clone)]
pub struct Planned {
    pub files: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    pub pending: std::collections::BTreeMap<String, String>,
}

impl Planned {
    /// Records a chapter's file plans: what will be on disk after it is written.
    pub fn add_files(&mut self, files: &[FilePlan]) {
        for f in files {
            match f.status {
                FileStatus::Create | FileStatus::Update => {
                    self.files.insert(f.path.clone(), f.content.clone());
                }
                FileStatus::Stale if f.note.as_deref() == Some(STALE_REMOVED) => {
                    self.files.insert(f.path.clone(), None);
                }
                _ => {}
            }
        }
    }

    /// The file as it will be when this plan reaches the asking chapter, if an earlier chapter
    /// writes or removes it: Some(None) for removed.
    pub fn file(&self, path: &str) -> Option<Option<&[u8]>> {
        self.files.get(path).map(|c| c.as_deref())
    }

    /// The first of `ids` still pending earlier in this plan, with the chapter applying it.
    pub fn pending_of<'a>(&'a self, ids: &[&'a str]) -> Option<(&'a str, &'a str)> {
        ids.iter()
            .find_map(|id| self.pending.get(*id).map(|c| (*id, c.as_str())))
    }
}

const STALE_REMOVED: &str = "no longer rendered; removed";

pub fn plan_files(
    project: &Project,
    chapter: &str,
    rendered: &[Rendered],
    lock: &LockFile,
) -> anyhow::Result<Vec<FilePlan>> {
    let mut plans = Vec::new();
    for r in rendered {
        let abs = fsutil::resolve_inside(&project.root, std::path::Path::new(&r.path))?;
        let current = std::fs::read(&abs).ok();
        let mode = r.spec.mode_bits();
        let mode_differs = current.is_some()
            && fsutil::existing_mode(&abs)
                .is_some_and(|now| crate::lockfile::mode_edited(mode, now));
        let recorded = lock.files.get(&r.path);
        let mut plan = FilePlan {
            path: r.path.clone(),
            chapter: chapter.to_string(),
            status: FileStatus::Unchanged,
            policy: r.spec.policy,
            diff: None,
            note: None,
            content: None,
            mode,
            record: None,
        };
        match r.spec.policy {
            Policy::Managed => {
                let record = LockedFile {
                    chapter: chapter.to_string(),
                    template: r.spec.template.clone(),
                    template_digest: r.template_digest.clone(),
                    sha256: sha256_hex(&r.content),
                    mode: Some(format!("{mode:04o}")),
                };
                // A person's chmod since beamops wrote the file is an edit like any other.
                let disk_mode = fsutil::existing_mode(&abs);
                let chmodded = match (recorded.and_then(LockedFile::mode_bits), disk_mode) {
                    (Some(wrote), Some(now)) => crate::lockfile::mode_edited(wrote, now),
                    _ => false,
                };
                plan.status = match &current {
                    None => FileStatus::Create,
                    Some(c) if *c == r.content && mode_differs && chmodded => {
                        plan.note = Some(format!(
                            "mode changed since beamops wrote it: {:04o} → {:04o}",
                            recorded.and_then(LockedFile::mode_bits).unwrap_or(mode),
                            disk_mode.unwrap_or_default() & 0o7777
                        ));
                        FileStatus::Conflict
                    }
                    Some(c) if *c == r.content && mode_differs => FileStatus::Update,
                    Some(c) if *c == r.content => {
                        if recorded.is_some_and(|rec| rec.matches(&record)) {
                            FileStatus::Unchanged
                        } else {
                            FileStatus::Adopt
                        }
                    }
                    Some(c) if recorded.is_some_and(|rec| rec.sha256 == sha256_hex(c)) => {
                        FileStatus::Update
                    }
                    Some(_) => {
                        plan.note = Some(if recorded.is_some() {
                            "edited since beamops wrote it".into()
                        } else {
                            "exists and was not written by beamops".into()
                        });
                        FileStatus::Conflict
                    }
                };
                plan.record = Some(record);
                plan.content = Some(r.content.clone());
            }
            Policy::CreateOnce => {
                if current.is_none() {
                    plan.status = FileStatus::Create;
                    plan.content = Some(r.content.clone());
                } else {
                    plan.note = Some("yours: written once, never updated".into());
                }
            }
            Policy::AppendIfMarkerMissing => {
                let marker = r.spec.marker.as_deref().unwrap_or_default();
                let text = current
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                if current.is_some() && text.lines().any(|l| l.trim() == marker.trim()) {
                    plan.note = Some(format!("already has `{marker}`"));
                } else {
                    let mut new = text.to_string();
                    if !new.is_empty() && !new.ends_with('\n') {
                        new.push('\n');
                    }
                    let block = String::from_utf8_lossy(&r.content);
                    // A new file needs no blank line separating the block from what came before.
                    new.push_str(if new.is_empty() {
                        block.trim_start()
                    } else {
                        &block
                    });
                    plan.status = if current.is_some() {
                        FileStatus::Update
                    } else {
                        FileStatus::Create
                    };
                    plan.content = Some(new.into_bytes());
                }
            }
        }
        if matches!(
            plan.status,
            FileStatus::Create | FileStatus::Update | FileStatus::Conflict
        ) {
            let old = current
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let new = String::from_utf8_lossy(plan.content.as_deref().unwrap_or_default());
            if old != new {
                plan.diff = Some(plain_diff(&r.path, &old, &new));
            } else if mode_differs && plan.note.is_none() {
                plan.note = Some(format!("mode becomes {mode:o}"));
            }
        }
        plans.push(plan);
    }
    for (path, record) in lock.chapter_files(chapter) {
        if rendered.iter().any(|r| &r.path == path) {
            continue;
        }
        // A template that moved to another chapter in a newer beamops: that chapter adopts or
        // updates the file (its record still proves whether a person edited it); removing it
        // here would only make it disappear until then.
        if crate::chapter::all()
            .iter()
            .any(|m| m.key() != chapter && m.files.iter().any(|f| &f.path == path))
        {
            continue;
        }
        let abs = project.root.join(path);
        let current = std::fs::read(&abs).ok();
        let note = match &current {
            None => "already gone; the record is dropped".to_string(),
            Some(c) if sha256_hex(c) == record.sha256 => STALE_REMOVED.into(),
            Some(_) => "no longer rendered, but edited: kept, record dropped".into(),
        };
        plans.push(FilePlan {
            path: path.clone(),
            chapter: chapter.to_string(),
            status: FileStatus::Stale,
            policy: Policy::Managed,
            diff: None,
            note: Some(note),
            content: None,
            mode: 0,
            record: Some(record.clone()),
        });
    }
    Ok(plans)
}

pub fn plain_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Carry out one file plan, keeping the lock in step. Files are written before their record so
/// a run killed in between finds the new file equal to the rendering and simply adopts it.
pub fn apply_file(project: &Project, plan: &FilePlan, lock: &mut LockFile) -> anyhow::Result<()> {
    let abs = fsutil::resolve_inside(&project.root, std::path::Path::new(&plan.path))?;
    match plan.status {
        FileStatus::Unchanged => {}
        FileStatus::Create | FileStatus::Update | FileStatus::Conflict => {
            let content = plan.content.as_deref().unwrap_or_default();
            fsutil::atomic_write(&abs, content, Some(plan.mode))?;
        }
        FileStatus::Adopt => {}
        FileStatus::Stale => {
            if let (Ok(c), Some(rec)) = (std::fs::read(&abs), &plan.record)
                && sha256_hex(&c) == rec.sha256
            {
                std::fs::remove_file(&abs)?;
            }
            lock.files.remove(&plan.path);
            return Ok(());
        }
    }
    record_in_lock(plan, lock);
    Ok(())
}

/// What applying `plan` records in the lock (with nothing written to disk).
pub fn record_in_lock(plan: &FilePlan, lock: &mut LockFile) {
    if plan.status == FileStatus::Stale {
        lock.files.remove(&plan.path);
    } else if plan.policy == Policy::Managed
        && let Some(rec) = &plan.record
    {
        lock.files.insert(plan.path.clone(), rec.clone());
    }
}

/// Would `up` of these file plans rewrite beamops.lock (a new record, or an older format)?
pub fn lock_would_change<'a>(
    root: &std::path::Path,
    plans: impl IntoIterator<Item = &'a FilePlan>,
) -> anyhow::Result<bool> {
    let mut lock = LockFile::read(root)?;
    for plan in plans {
        record_in_lock(plan, &mut lock);
    }
    let on_disk = std::fs::read(root.join(crate::lockfile::LOCK_FILE)).ok();
    // No lock and nothing to record: up writes none either.
    if on_disk.is_none() && lock.files.is_empty() {
        return Ok(false);
    }
    Ok(on_disk.as_deref() != Some(lock.to_bytes().as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, status: FileStatus, content: Option<&str>, note: Option<&str>) -> FilePlan {
        FilePlan {
            path: path.into(),
            chapter: "08-swarm".into(),
            status,
            policy: Policy::Managed,
            diff: None,
            note: note.map(String::from),
            content: content.map(|c| c.as_bytes().to_vec()),
            mode: 0o644,
            record: None,
        }
    }

    #[test]
    fn later_chapters_see_what_earlier_ones_write_remove_or_leave() {
        let mut planned = Planned::default();
        planned.add_files(&[
            file("deploy/stack.yml", FileStatus::Create, Some("new"), None),
            file("Dockerfile", FileStatus::Update, Some("changed"), None),
            file("a.txt", FileStatus::Unchanged, None, None),
            // An edited file up refuses to overwrite: the disk stays what it is.
            file(
                "b.txt",
                FileStatus::Conflict,
                Some("beamops'"),
                Some("edited"),
            ),
            file("old.yml", FileStatus::Stale, None, Some(STALE_REMOVED)),
            file(
                "kept.yml",
                FileStatus::Stale,
                None,
                Some("no longer rendered, but edited: kept, record dropped"),
            ),
        ]);
        assert_eq!(planned.file("deploy/stack.yml"), Some(Some(&b"new"[..])));
        assert_eq!(planned.file("Dockerfile"), Some(Some(&b"changed"[..])));
        assert_eq!(planned.file("old.yml"), Some(None));
        for on_disk in ["a.txt", "b.txt", "kept.yml", "never.txt"] {
            assert_eq!(planned.file(on_disk), None, "{on_disk}");
        }
    }

    #[test]
    fn the_first_pending_need_is_named_with_its_chapter() {
        let mut planned = Planned::default();
        assert_eq!(planned.pending_of(&["swarm-mode"]), None);
        planned
            .pending
            .insert("docker-secrets".into(), "chapter-07".into());
        planned
            .pending
            .insert("swarm-mode".into(), "chapter-07".into());
        assert_eq!(
            planned.pending_of(&["swarm-mode", "docker-secrets"]),
            Some(("swarm-mode", "chapter-07"))
        );
        assert_eq!(planned.pending_of(&["release-image"]), None);
    }
}
