//! The build context: the project tree filtered by `.dockerignore`, as a tar stream and a digest.
//!
//! The digest is what makes `up chapter-03` idempotent: same digest and the image still present
//! means there is nothing to build.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobMatcher};

/// `.dockerignore` rules with Docker's meaning: paths relative to the context root, `**` across
/// directories, `!` re-includes, the last matching rule wins, and a rule that matches a directory
/// covers everything below it.
pub struct IgnoreRules {
    rules: Vec<(GlobMatcher, bool)>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Result<IgnoreRules> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!(".dockerignore:{}: bad pattern `{line}`", n + 1))?;
            rules.push((glob.compile_matcher(), include));
        }
        Ok(IgnoreRules { rules })
    }

    /// Is `relative` (with `/` separators) excluded from the context?
    pub fn excluded(&self, relative: &str) -> bool {
        let mut excluded = false;
        for (glob, include) in &self.rules {
            // A rule matching any parent directory matches the path itself.
            let hit = ancestors_and_self(relative).any(|p| glob.is_match(p));
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .filter(|(_, c)| *c == '/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
}

/// One file of the context.
pub struct Entry {
    pub relative: String,
    pub absolute: PathBuf,
    pub mode: u32,
    pub symlink: Option<PathBuf>,
}

/// Files under `root` that are not ignored, in a stable order.
pub fn entries(root: &Path) -> Result<Vec<Entry>> {
    let rules = match std::fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text)?,
        Err(_) => IgnoreRules::parse("")?,
    };
    let mut out = Vec::new();
    walk(root, root, &rules, &mut out)?;
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, rules: &IgnoreRules, out: &mut Vec<Entry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let read = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in read {
        let entry = entry?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_string_lossy()
            .into_owned();
        let meta = entry.metadata()?;
        let is_dockerfile = relative == "Dockerfile" || relative == ".dockerignore";
        if !is_dockerfile && rules.excluded(&relative) {
            // Docker still descends for `!` rules below an excluded directory; we keep it simple
            // and honour re-includes only for files whose directory is not excluded.
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &path, rules, out)?;
        } else if ft.is_symlink() {
            out.push(Entry {
                relative,
                mode: 0o777,
                symlink: Some(std::fs::read_link(&path)?),
                absolute: path,
            });
        } else if ft.is_file() {
            out.push(Entry {
                relative,
                mode: meta.permissions().mode() & 0o7777,
                symlink: None,
                absolute: path,
            });
        }
    }
    Ok(())
}

/// A digest of every path, mode and content in the context.
pub fn digest(entries: &[Entry]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.relative.as_bytes());
        h.update([0]);
        h.update(format!("{:o}", e.mode).as_bytes());
        h.update([0]);
        match &e.symlink {
            Some(target) => h.update(target.to_string_lossy().as_bytes()),
            None => {
                let bytes = std::fs::read(&e.absolute)
                    .with_context(|| format!("reading {}", e.absolute.display()))?;
                h.update(Sha256::digest(&bytes));
            }
        }
        h.update([b'\n']);
    }
    Ok(hex::encode(h.finalize()))
}

/// The context as an uncompressed tar, with fixed owners and times so equal trees give equal bytes.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match &e.symlink {
            Some(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &e.relative, target)?;
            }
            None => {
                let bytes = std::fs::read(&e.absolute)?;
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, &e.relative, bytes.as_slice())?;
            }
        }
    }
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_semantics() {
        let rules =
            IgnoreRules::parse("# c\n_build\n**/*.log\n.env.*\n!keep.log\n/deps/\n").unwrap();
        assert!(rules.excluded("_build"));
        assert!(rules.excluded("_build/prod/rel/x"));
        assert!(rules.excluded("lib/a/b.log"));
        assert!(rules.excluded("x.log"));
        assert!(!rules.excluded("keep.log"));
        assert!(rules.excluded(".env.prod"));
        assert!(rules.excluded("deps/jason/mix.exs"));
        assert!(!rules.excluded("lib/app.ex"));
        assert!(!rules.excluded("lib/_build_helpers.ex"));
    }

    #[test]
    fn digest_follows_content_and_mode_and_tar_is_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::create_dir_all(dir.path().join("_build")).unwrap();
        std::fs::write(dir.path().join("lib/a.ex"), "a").unwrap();
        std::fs::write(dir.path().join("_build/junk"), "j").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "_build\n").unwrap();
        let e = entries(dir.path()).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.relative.as_str()).collect();
        assert_eq!(names, [".dockerignore", "lib/a.ex"]);
        let d1 = digest(&e).unwrap();
        assert_eq!(
            tar(&e).unwrap(),
            tar(&entries(dir.path()).unwrap()).unwrap()
        );
        std::fs::write(dir.path().join("_build/junk"), "changed").unwrap();
        assert_eq!(
            d1,
            digest(&entries(dir.path()).unwrap()).unwrap(),
            "ignored files do not count"
        );
        std::fs::set_permissions(
            dir.path().join("lib/a.ex"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(d1, digest(&entries(dir.path()).unwrap()).unwrap());
    }
}
