//! Which chapters `deploy` and `rollback` run, found by what their manifests provide, never by
//! name: the chapter that builds the release image (lists `release-image`), the one that makes
//! the stack's Docker secrets (`docker-secrets`) and the one that owns the app stack (lists
//! `stack-converged` with no parameters: `deploy/stack.yml` as the app's stack, its own).
//! Renumber or rename them and deploy still finds them.
//!
//! When several chapters provide one thing (chapter 09 also builds a release image, on top of
//! chapter 03's), deploy takes the first in dependency order: the provider that needs no other
//! provider. Two providers neither of which needs the other are ambiguous: an error.

use anyhow::{Result, bail};

use crate::action::ActionSpec;
use crate::chapter::Manifest;
use crate::swarm::{STACK_FILE, stack::normalise_path};

/// The chapters a deploy runs, by role.
#[derive(Debug, Clone, Copy)]
pub struct DeployChapters {
    /// Builds the release image (`release-image`).
    pub build: &'static Manifest,
    /// Makes the stack's Docker secrets (`docker-secrets`).
    pub secrets: &'static Manifest,
    /// Converges the app stack (`stack-converged` with its defaults).
    pub stack: &'static Manifest,
}

/// What a deploy needs a chapter to provide.
struct Capability {
    what: &'static str,
    provides: fn(&ActionSpec) -> bool,
}

const BUILD: Capability = Capability {
    what: "`release-image` (builds the release image)",
    provides: |a| matches!(a, ActionSpec::ReleaseImage),
};

const SECRETS: Capability = Capability {
    what: "`docker-secrets` (the stack's Docker secrets)",
    provides: |a| matches!(a, ActionSpec::DockerSecrets),
};

const STACK: Capability = Capability {
    what: "`stack-converged` with no `file:`, `stack:` or `owner:` (the app stack, deploy/stack.yml)",
    provides: |a| match a {
        ActionSpec::StackConverged(p) => {
            p.owner.is_none()
                && p.stack.is_none()
                && p.file.as_deref().is_none_or(|f| {
                    normalise_path(std::path::Path::new(f)) == std::path::Path::new(STACK_FILE)
                })
        }
        _ => false,
    },
};

/// The chapters `engine`'s deploy runs (the embedded ones, or a test catalog's).
pub fn of(engine: &crate::engine::Engine) -> Result<DeployChapters> {
    find(&engine.chapters(), |c| engine.needs_of(c))
}

/// The deploy's chapters among `chapters`; `needs_of(c)` is `c` with every chapter it needs
/// (the engine's dependency resolution).
pub fn find(
    chapters: &[&'static Manifest],
    needs_of: impl Fn(&'static Manifest) -> Result<Vec<&'static Manifest>>,
) -> Result<DeployChapters> {
    let pick = |capability: &Capability| -> Result<&'static Manifest> {
        let providers: Vec<&'static Manifest> = chapters
            .iter()
            .copied()
            .filter(|c| c.actions.iter().any(capability.provides))
            .collect();
        let mut first = Vec::new();
        for provider in &providers {
            let needs = needs_of(provider)?;
            let builds_on_another = providers.iter().any(|other| {
                other.key() != provider.key() && needs.iter().any(|n| n.key() == other.key())
            });
            if !builds_on_another {
                first.push(*provider);
            }
        }
        match first.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "no chapter provides {}: deploy has nothing to run for it\n  fix: a chapter manifest must list it (chapters: {})",
                capability.what,
                chapters
                    .iter()
                    .map(|c| c.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            many => bail!(
                "chapters {} all provide {} and none needs another: deploy cannot tell which to run\n  fix: make one of them need the other (`needs:`), or list it in one only",
                many.iter().map(|c| c.key()).collect::<Vec<_>>().join(", "),
                capability.what
            ),
        }
    };
    Ok(DeployChapters {
        build: pick(&BUILD)?,
        secrets: pick(&SECRETS)?,
        stack: pick(&STACK)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::output::{Format, Ui};
    use crate::project::Project;

    fn manifest(id: u8, slug: &str, needs: &[&str], actions: &str) -> &'static Manifest {
        let yaml = format!(
            "id: {id}\nslug: {slug}\ntitle: {slug}\nsummary: test\nimplemented: true\nneeds: [{}]\nactions:\n{actions}",
            needs.join(", ")
        );
        Box::leak(Box::new(serde_yaml_ng::from_str(&yaml).unwrap()))
    }

    /// The embedded roles under other names and numbers, with a second image builder and two
    /// more stack converges: deploy finds the same roles, and plans them.
    #[test]
    fn renamed_chapters_still_deploy_by_what_they_provide() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("beamops.yaml"),
            "version: 1\napp:\n  name: demo\n  otp_app: demo\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local: {}\n",
        )
        .unwrap();
        let project = Project::discover(Some(dir.path())).unwrap();
        let ui = Ui::new(Format::Json, true, false);
        let chapters = vec![
            manifest(21, "base", &[], "  - action: git-repository\n"),
            manifest(22, "oci", &["base"], "  - action: release-image\n"),
            manifest(
                23,
                "vault",
                &["base"],
                "  - action: swarm-mode\n  - action: docker-secrets\n",
            ),
            manifest(
                24,
                "fleet",
                &["oci", "vault"],
                "  - action: stack-converged\n",
            ),
            manifest(
                25,
                "cluster",
                &["fleet"],
                "  - action: release-image\n  - action: stack-converged\n    owner: 24-fleet\n",
            ),
            manifest(
                26,
                "watch",
                &["fleet"],
                "  - action: stack-converged\n    file: deploy/watch.yml\n    stack: watch\n",
            ),
        ];
        let engine = Engine::new(&project, "local", &ui)
            .unwrap()
            .with_catalog(chapters.clone(), |_| Vec::new());
        let roles = of(&engine).unwrap();
        assert_eq!(roles.build.key(), "22-oci");
        assert_eq!(roles.secrets.key(), "23-vault");
        assert_eq!(roles.stack.key(), "24-fleet");
        // What deploy runs first (build and secrets) plans those chapters.
        let planned: Vec<String> = engine
            .plan(&[roles.build, roles.secrets], true)
            .unwrap()
            .iter()
            .map(|p| p.chapter.clone())
            .collect();
        assert_eq!(planned, ["22-oci", "23-vault"]);

        // A catalog without a secrets chapter: the error names what is missing.
        let without: Vec<&'static Manifest> = chapters
            .iter()
            .copied()
            .filter(|c| ["base", "oci", "fleet"].contains(&c.slug.as_str()))
            .collect();
        let err = find(&without, |c| Ok(vec![c])).unwrap_err().to_string();
        assert!(err.contains("`docker-secrets`"), "{err}");
        // Two builders neither of which needs the other: ambiguous, named.
        let twins = vec![
            manifest(31, "a", &[], "  - action: release-image\n"),
            manifest(32, "b", &[], "  - action: release-image\n"),
        ];
        let err = find(&twins, |c| Ok(vec![c])).unwrap_err().to_string();
        assert!(err.contains("31-a, 32-b"), "{err}");
    }

    #[test]
    fn the_embedded_chapters_are_found_by_what_they_provide() {
        let all = crate::chapter::all();
        let found = find(&all, |c| crate::chapter::with_dependencies(&[c])).unwrap();
        // Chapter 09 also builds a release image, but it needs chapter 03: 03 builds first.
        assert_eq!(found.build.key(), "03-docker");
        assert_eq!(found.secrets.key(), "07-secrets");
        // Chapters 09 (owner: 08-swarm) and 11 (its own file and stack) converge stacks too.
        assert_eq!(found.stack.key(), "08-swarm");
    }
}
