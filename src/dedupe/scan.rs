//! Walking the scanned roots in parallel and deciding which files are scripts.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Serialize;

/// Directories that hold tools' state or vendored code, never a maintainer's scripts.
pub const SKIPPED_DIRS: [&str; 6] = [
    ".git",
    ".beamops",
    "_build",
    "deps",
    "node_modules",
    "target",
];

/// Every wrapper `--strategy wrapper` writes carries this line, so a later scan skips it.
pub const WRAPPER_MARKER: &str = "beamops-dedupe-wrapper";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `*.sh`, `*.bash` or `--include`: a script by its name.
    ByName,
    /// No extension: a script only if its shebang names a shell.
    NeedsShebang,
    /// `--all-files`: any file without NUL bytes.
    NeedsText,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub kind: Kind,
    pub backup: bool,
    /// (device, inode): hard links are one file under two names.
    pub identity: (u64, u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct SymlinkEntry {
    pub path: String,
    pub target: String,
    /// Whether the link resolves to something inside the scanned roots.
    pub inside: bool,
}

pub struct Filter {
    include: GlobSet,
    exclude: GlobSet,
    all_files: bool,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String], all_files: bool) -> Result<Filter> {
        let set = |globs: &[String], flag: &str| -> Result<GlobSet> {
            let mut builder = GlobSetBuilder::new();
            for glob in globs {
                builder.add(Glob::new(glob).with_context(|| {
                    format!("{flag} {glob}: not a glob\n  fix: quote it, e.g. {flag} '*.sh'")
                })?);
            }
            Ok(builder.build()?)
        };
        Ok(Filter {
            include: set(include, "--include")?,
            exclude: set(exclude, "--exclude")?,
            all_files,
        })
    }

    fn matches(set: &GlobSet, root: &Path, path: &Path) -> bool {
        set.is_match(path.strip_prefix(root).unwrap_or(path))
            || path.file_name().is_some_and(|name| set.is_match(name))
    }

    /// What kind of candidate `path` is, or None when it cannot be a script.
    pub fn classify(&self, root: &Path, path: &Path) -> Option<(Kind, bool)> {
        if Self::matches(&self.exclude, root, path) {
            return None;
        }
        let name = path.file_name()?.to_string_lossy();
        let (stem, backup) = strip_backup_suffix(&name);
        if Self::matches(&self.include, root, path) {
            return Some((Kind::ByName, backup));
        }
        if self.all_files {
            return Some((Kind::NeedsText, backup));
        }
        let extension = |n: &str| {
            Path::new(n)
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
        };
        match extension(stem)
            .or_else(|| {
                name.contains("_backup_")
                    .then(|| extension(&name))
                    .flatten()
            })
            .as_deref()
        {
            Some("sh" | "bash") => Some((Kind::ByName, backup)),
            None => Some((Kind::NeedsShebang, backup)),
            Some(_) => None,
        }
    }
}

/// `x.sh.bak` → (`x.sh`, true): the name a backup-looking copy was made from.
pub fn strip_backup_suffix(name: &str) -> (&str, bool) {
    if let Some(i) = name.find(".80_20_backup_") {
        return (&name[..i], true);
    }
    if let Some(i) = name.find("_backup_") {
        return (&name[..i], true);
    }
    for suffix in [".bak", ".orig", "~"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return (stem, true);
        }
    }
    (name, false)
}

/// Whether the content makes a candidate a script (always true for names that say so).
pub fn is_script(kind: Kind, bytes: &[u8]) -> bool {
    match kind {
        Kind::ByName => true,
        Kind::NeedsText => !bytes[..bytes.len().min(8192)].contains(&0),
        Kind::NeedsShebang => shebang_names_a_shell(bytes),
    }
}

pub fn is_wrapper(bytes: &[u8]) -> bool {
    bytes.len() < 2048
        && bytes
            .windows(WRAPPER_MARKER.len())
            .any(|w| w == WRAPPER_MARKER.as_bytes())
}

pub fn shebang_names_a_shell(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"#!") else {
        return false;
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(mut program) = words.next() else {
        return false;
    };
    if program.rsplit('/').next() == Some("env") {
        match words.find(|w| !w.starts_with('-')) {
            Some(next) => program = next,
            None => return false,
        }
    }
    matches!(
        program.rsplit('/').next(),
        Some("sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "mksh" | "yash" | "posh")
    )
}

#[derive(Default)]
pub struct Walked {
    pub candidates: Vec<Candidate>,
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub errors: Vec<String>,
}

impl Walked {
    fn merge(mut self, other: Walked) -> Walked {
        self.candidates.extend(other.candidates);
        self.symlinks.extend(other.symlinks);
        self.errors.extend(other.errors);
        self
    }
}

/// Roots canonicalized, with any root inside another dropped: scanning a directory twice is how
/// a file ends up reported as its own duplicate.
pub fn disjoint_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            p.canonicalize()
                .with_context(|| format!("{}: no such file or directory", p.display()))
        })
        .collect::<Result<_>>()?;
    roots.sort_by_key(|p| p.components().count());
    let mut kept: Vec<PathBuf> = Vec::new();
    for root in roots {
        if !kept.iter().any(|k| root.starts_with(k)) {
            kept.push(root);
        }
    }
    Ok(kept)
}

/// Walk every root in parallel; symlinks are recorded, never followed.
pub fn walk(roots: &[PathBuf], scan_root: &Path, filter: &Filter) -> Walked {
    let walked = roots
        .par_iter()
        .map(|root| {
            if root.is_file() {
                let mut w = Walked::default();
                visit_file(root, scan_root, filter, &mut w);
                w
            } else {
                walk_dir(root, scan_root, filter)
            }
        })
        .reduce(Walked::default, Walked::merge);
    // Hard links are one file under two names; keep one name, never call it a duplicate.
    let mut seen = HashSet::new();
    let mut walked = walked;
    walked.candidates.sort_by(|a, b| a.path.cmp(&b.path));
    walked.candidates.retain(|c| seen.insert(c.identity));
    walked
}

fn walk_dir(dir: &Path, scan_root: &Path, filter: &Filter) -> Walked {
    let mut here = Walked::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            here.errors.push(format!("{}: {e}", dir.display()));
            return here;
        }
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if file_type.is_dir() {
            let name = entry.file_name();
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                subdirs.push(path);
            }
        } else if file_type.is_symlink() {
            if let Ok(target) = std::fs::read_link(&path) {
                here.symlinks.push((path, target));
            }
        } else if file_type.is_file() {
            visit_file(&path, scan_root, filter, &mut here);
        }
    }
    let below = subdirs
        .par_iter()
        .map(|d| walk_dir(d, scan_root, filter))
        .reduce(Walked::default, Walked::merge);
    here.merge(below)
}

fn visit_file(path: &Path, scan_root: &Path, filter: &Filter, out: &mut Walked) {
    let Some((kind, backup)) = filter.classify(scan_root, path) else {
        return;
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => out.candidates.push(Candidate {
            path: path.to_path_buf(),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            kind,
            backup,
            identity: (meta.dev(), meta.ino()),
        }),
        Err(e) => out.errors.push(format!("{}: {e}", path.display())),
    }
}

/// `to` relative to the directory `from` (both absolute), with `..` where needed.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_recognised() {
        assert_eq!(strip_backup_suffix("x.sh.bak"), ("x.sh", true));
        assert_eq!(strip_backup_suffix("x.sh~"), ("x.sh", true));
        assert_eq!(strip_backup_suffix("x.sh.orig"), ("x.sh", true));
        assert_eq!(
            strip_backup_suffix("x.sh.80_20_backup_2021"),
            ("x.sh", true)
        );
        assert_eq!(strip_backup_suffix("x_backup_2020.sh"), ("x", true));
        assert_eq!(strip_backup_suffix("x.sh"), ("x.sh", false));
    }

    #[test]
    fn shebangs_that_name_a_shell() {
        assert!(shebang_names_a_shell(b"#!/bin/sh\n"));
        assert!(shebang_names_a_shell(b"#!/usr/bin/env bash\n"));
        assert!(shebang_names_a_shell(b"#! /bin/zsh -e\n"));
        assert!(!shebang_names_a_shell(b"#!/usr/bin/env python3\n"));
        assert!(!shebang_names_a_shell(b"echo hi\n"));
    }

    #[test]
    fn relative_paths_climb_where_needed() {
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/d/e.sh")),
            PathBuf::from("../../d/e.sh")
        );
        assert_eq!(
            relative_path(Path::new("/a"), Path::new("/a/x")),
            PathBuf::from("x")
        );
    }
}
