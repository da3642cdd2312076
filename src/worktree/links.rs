//! Things elsewhere in the repository that lead into a worktree and would dangle after it goes:
//! symlinks, and small wrapper scripts (such as `beamops dedupe`'s) that `exec` a script in it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{allow_listed, normalize};

/// Wrappers are a few lines; reading only files this small keeps the scan cheap.
const WRAPPER_MAX_BYTES: u64 = 4096;
/// Comments `beamops dedupe` writes into each wrapper it makes (the agreed one, and the one its
/// implementation writes).
pub const DEDUPE_MARKERS: [&str; 2] = ["beamops dedupe wrapper", "beamops-dedupe-wrapper"];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Link {
    /// The file that points in.
    pub from: PathBuf,
    /// What it names, as written.
    pub target: String,
    pub kind: LinkKind,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    Symlink,
    Wrapper,
}

/// Walk every root except `target` (and never into it, when it is nested) for links into
/// `target`: `roots` (every worktree, and the project root) throughout, `around` (the
/// directories that hold the worktrees, where a `current -> wt-x` link typically lives) one
/// level deep. `.git` and `.beamops` are skipped; of allow-listed build output only the direct
/// entries are looked at (`deps/my_lib -> ../../wt/my_lib` is how a path dependency is linked):
/// walking all of `deps/` or `node_modules/` would take longer than the removal.
pub fn into(
    target: &Path,
    roots: &[PathBuf],
    around: &[PathBuf],
    allow_list: &[String],
) -> Vec<Link> {
    let mut found = Vec::new();
    for root in roots {
        if root == target || root.starts_with(target) {
            continue;
        }
        let others: Vec<&PathBuf> = roots.iter().filter(|r| *r != root).collect();
        walk(root, root, target, &others, allow_list, &mut found);
    }
    for dir in around {
        if dir.starts_with(target) || roots.contains(dir) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path != target && !roots.contains(&path) {
                look_at(&path, dir, target, &mut found);
            }
        }
    }
    found.sort_by(|a, b| a.from.cmp(&b.from));
    found.dedup();
    found
}

/// Whether one file (not a directory) is a symlink or wrapper into `target`.
fn look_at(path: &Path, root: &Path, target: &Path, found: &mut Vec<Link>) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if meta.file_type().is_symlink() {
        let Ok(written) = std::fs::read_link(path) else {
            return;
        };
        let base = path.parent().unwrap_or(root);
        if leads_into(&base.join(&written), target) {
            found.push(Link {
                from: path.to_path_buf(),
                target: written.display().to_string(),
                kind: LinkKind::Symlink,
            });
        }
    } else if meta.is_file()
        && meta.len() < WRAPPER_MAX_BYTES
        && path.file_name().is_some_and(|n| n != ".git")
        && let Some(named) = wrapper_target(path, target)
    {
        found.push(Link {
            from: path.to_path_buf(),
            target: named,
            kind: LinkKind::Wrapper,
        });
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    target: &Path,
    other_roots: &[&PathBuf],
    allow_list: &[String],
    found: &mut Vec<Link>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let name = entry.file_name();
        if meta.is_dir() {
            let relative = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let skip = name == ".git"
                || name == ".beamops"
                || path == target
                // Other worktrees nested here are walked as roots of their own.
                || other_roots.iter().any(|r| **r == path);
            if skip {
                continue;
            }
            if allow_listed(allow_list, root, &relative) {
                if let Ok(children) = std::fs::read_dir(&path) {
                    for child in children.flatten() {
                        let child = child.path();
                        if child.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                            look_at(&child, root, target, found);
                        }
                    }
                }
            } else {
                walk(root, &path, target, other_roots, allow_list, found);
            }
        } else {
            look_at(&path, root, target, found);
        }
    }
}

/// Whether `path` (joined onto its base, possibly a dangling chain of links) ends up in `target`.
fn leads_into(path: &Path, target: &Path) -> bool {
    normalize(path).starts_with(target)
        || path
            .canonicalize()
            .is_ok_and(|real| real.starts_with(target))
}

/// A path named by a small wrapper script (one that `exec`s, or carries the dedupe marker) that
/// resolves into `target`. Shell expressions in front of a path (`$(dirname "$0")/`,
/// `${0%/*}/`, `$here/`) stand for the script's own directory, which is how wrappers find
/// their canonical script.
fn wrapper_target(file: &Path, target: &Path) -> Option<String> {
    let bytes = std::fs::read(file).ok()?;
    if bytes.contains(&0) {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    let code = || {
        text.lines()
            .map(str::trim_start)
            .filter(|line| !line.starts_with('#'))
    };
    let is_wrapper = DEDUPE_MARKERS.iter().any(|m| text.contains(m))
        || code().any(|line| line.split_whitespace().any(|word| word == "exec"));
    if !is_wrapper {
        return None;
    }
    let base = file.parent()?;
    // Every line counts, not only the `exec` one: wrappers often build the path in a variable.
    code()
        .flat_map(path_words)
        .find(|(word, relative)| {
            let candidate = if *relative || !word.starts_with('/') {
                base.join(word.trim_start_matches('/'))
            } else {
                PathBuf::from(word)
            };
            leads_into(&candidate, target)
        })
        .map(|(word, _)| word)
}

/// Words of a shell line that look like paths, each with whether a shell expression stood in
/// front of it (so it is relative to the script's directory).
fn path_words(line: &str) -> Vec<(String, bool)> {
    const DYNAMIC: char = '\u{1}';
    let mut plain = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek() == Some(&'(') || chars.peek() == Some(&'{') => {
                let open = chars.next().expect("peeked");
                let close = if open == '(' { ')' } else { '}' };
                let mut depth = 1;
                for inner in chars.by_ref() {
                    if inner == open {
                        depth += 1;
                    } else if inner == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
                plain.push(DYNAMIC);
            }
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_' || *n == '@')
                {
                    chars.next();
                }
                plain.push(DYNAMIC);
            }
            '`' => {
                for inner in chars.by_ref() {
                    if inner == '`' {
                        break;
                    }
                }
                plain.push(DYNAMIC);
            }
            '"' | '\'' => {}
            other => plain.push(other),
        }
    }
    plain
        .split(|c: char| c.is_whitespace() || c == ';' || c == '=' || c == '&' || c == '|')
        .filter(|w| w.contains('/'))
        .map(|w| {
            let relative = w.starts_with(DYNAMIC);
            (w.replace(DYNAMIC, ""), relative)
        })
        .filter(|(w, _)| !w.is_empty() && w != "/")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_expressions_before_a_path_mean_the_script_dir() {
        let words = path_words(r#"exec "$(dirname "$0")/../wt/bin/run.sh" "$@""#);
        assert_eq!(words, vec![("/../wt/bin/run.sh".to_string(), true)]);
        let words = path_words("exec ${0%/*}/x/y.sh");
        assert_eq!(words, vec![("/x/y.sh".to_string(), true)]);
        let words = path_words("exec /usr/bin/env bash");
        assert_eq!(words, vec![("/usr/bin/env".to_string(), false)]);
    }

    #[test]
    fn finds_symlinks_and_wrappers_into_a_worktree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let main = root.join("main");
        let wt = root.join("wt");
        std::fs::create_dir_all(main.join("bin")).unwrap();
        std::fs::create_dir_all(wt.join("scripts")).unwrap();
        std::fs::write(wt.join("scripts/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("../../wt/scripts", main.join("bin/link")).unwrap();
        std::fs::write(
            main.join("bin/run.sh"),
            "#!/bin/sh\nexec \"$(dirname \"$0\")/../../wt/scripts/run.sh\" \"$@\"\n",
        )
        .unwrap();
        std::fs::write(main.join("bin/other.sh"), "#!/bin/sh\nexec ls /tmp\n").unwrap();
        let found = into(&wt, &[main.clone(), wt.clone()], &[], &[]);
        let kinds: Vec<(PathBuf, LinkKind)> =
            found.iter().map(|l| (l.from.clone(), l.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (main.join("bin/link"), LinkKind::Symlink),
                (main.join("bin/run.sh"), LinkKind::Wrapper),
            ]
        );
    }
}
