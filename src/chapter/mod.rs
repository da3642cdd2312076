//! Chapters are data: `chapters/NN-slug.yaml` manifests embedded in the binary. The engine reads
//! them; adding a chapter means adding a manifest, its templates and (maybe) an action type.

mod manifest;
mod name;

pub use manifest::{FileSpec, Manifest, Policy};
pub use name::resolve;

use std::sync::OnceLock;

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};

static CHAPTER_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/chapters");

/// Every chapter, ordered by id. Manifests are embedded, so a broken one is a build-time bug that
/// the test suite catches (`all_manifests_parse`).
pub fn all() -> &'static [Manifest] {
    static CHAPTERS: OnceLock<Vec<Manifest>> = OnceLock::new();
    CHAPTERS.get_or_init(|| load_all().expect("embedded chapter manifests are valid"))
}

fn load_all() -> Result<Vec<Manifest>> {
    let mut chapters = CHAPTER_DIR
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "yaml"))
        .map(|f| {
            let text = f.contents_utf8().context("manifest is not UTF-8")?;
            let manifest: Manifest = serde_yaml_ng::from_str(text)
                .with_context(|| format!("chapters/{}", f.path().display()))?;
            let expected = format!("{}.yaml", manifest.key());
            anyhow::ensure!(
                f.path().to_string_lossy() == expected,
                "chapters/{}: id and slug say it should be named {expected}",
                f.path().display()
            );
            Ok(manifest)
        })
        .collect::<Result<Vec<_>>>()?;
    chapters.sort_by_key(|c| c.id);
    Ok(chapters)
}

pub fn by_key(key: &str) -> Option<&'static Manifest> {
    all().iter().find(|c| c.key() == key)
}

/// `targets` plus every chapter they need, dependencies first.
pub fn with_dependencies(targets: &[&'static Manifest]) -> Result<Vec<&'static Manifest>> {
    fn visit(
        chapter: &'static Manifest,
        path: &mut Vec<String>,
        out: &mut Vec<&'static Manifest>,
    ) -> Result<()> {
        if out.iter().any(|c| c.id == chapter.id) {
            return Ok(());
        }
        if path.contains(&chapter.key()) {
            anyhow::bail!(
                "chapter dependency cycle: {} → {}",
                path.join(" → "),
                chapter.key()
            );
        }
        path.push(chapter.key());
        for need in &chapter.needs {
            let dep =
                resolve(need).with_context(|| format!("chapter {} needs {need}", chapter.key()))?;
            visit(dep, path, out)?;
        }
        path.pop();
        out.push(chapter);
        Ok(())
    }
    let mut out = Vec::new();
    for t in targets {
        visit(t, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_manifests_parse_and_cover_the_twelve_chapters() {
        let keys: Vec<String> = load_all().unwrap().iter().map(|c| c.key()).collect();
        assert_eq!(
            keys,
            [
                "01-foundation",
                "02-terraform",
                "03-docker",
                "04-cicd",
                "05-development",
                "06-production",
                "07-secrets",
                "08-swarm",
                "09-distributed",
                "10-autoscaling",
                "11-instrumentation",
                "12-monitoring"
            ]
        );
    }

    #[test]
    fn every_need_resolves_and_templates_exist() {
        for c in all() {
            with_dependencies(&[c]).unwrap();
            for f in &c.files {
                assert!(
                    crate::render::template_source(&f.template).is_some(),
                    "{}: template {} is not in templates/",
                    c.key(),
                    f.template
                );
            }
        }
    }
}
