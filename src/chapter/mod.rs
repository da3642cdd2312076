//! Chapters are data: `chapters/NN-slug.yaml` manifests embedded in the binary. The engine reads
//! them; adding a chapter means adding a manifest, its templates and (maybe) an action type.

mod manifest;
mod name;
pub mod span;

pub use manifest::{FileSpec, Manifest, ModuleSpec, Policy, expression_paths, parse_mode};
pub use name::{names, resolve};

use std::sync::OnceLock;

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};

static CHAPTER_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/chapters");

/// A manifest known by its file name (`NN-slug.yaml`), parsed on first use: resolving a name and
/// planning one chapter parse only the manifests involved (parsing all twelve was a third of
/// `plan chapter-01`). Manifests are embedded, so a broken one is a build-time bug that the test
/// suite catches (`all_manifests_parse_…`, which also checks each file is named after its id
/// and slug, and [`Manifest::problems`]).
struct Entry {
    id: u8,
    slug: &'static str,
    text: &'static str,
    parsed: OnceLock<Manifest>,
}

impl Entry {
    fn key(&self) -> String {
        format!("{:02}-{}", self.id, self.slug)
    }

    fn manifest(&'static self) -> &'static Manifest {
        self.parsed.get_or_init(|| {
            serde_yaml_ng::from_str(self.text).unwrap_or_else(|e| {
                panic!("embedded chapters/{}.yaml does not parse: {e}", self.key())
            })
        })
    }
}

/// Names a directory of extra chapters outside the embedded set: `chapters/NN-slug.yaml`
/// manifests and the `templates/` they render, laid out as in this repository. For developing a
/// chapter before it is embedded, and for tests that feed the engine a chapter made of data only.
pub const CHAPTERS_DIR_VARIABLE: &str = "BEAMOPS_CHAPTERS_DIR";

/// The directory [`CHAPTERS_DIR_VARIABLE`] names, if any.
pub fn extra_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHAPTERS_DIR_VARIABLE)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// The extra chapters, read and checked once: each parses, is named after its id and slug, has
/// no [`Manifest::problems`], and takes no id an embedded chapter has.
fn extra() -> &'static std::result::Result<Vec<Entry>, String> {
    static EXTRA: OnceLock<std::result::Result<Vec<Entry>, String>> = OnceLock::new();
    EXTRA.get_or_init(|| {
        let Some(dir) = extra_dir() else {
            return Ok(Vec::new());
        };
        load_extra(&dir.join("chapters")).map_err(|e| {
            format!(
                "{CHAPTERS_DIR_VARIABLE}={}: {e:#}\n  fix: a directory holding chapters/NN-slug.yaml and templates/ (docs/architecture.md, \"Adding a chapter\")",
                dir.display()
            )
        })
    })
}

fn load_extra(dir: &std::path::Path) -> Result<Vec<Entry>> {
    let mut sources: Vec<(String, &'static str)> = Vec::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for item in listing {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            // Read once per process and kept for its life, like the embedded manifests.
            sources.push((path.display().to_string(), Box::leak(text.into_boxed_str())));
        }
    }
    sources.sort();
    let embedded = embedded();
    let mut out = Vec::new();
    for manifest in parse_manifests(&sources)? {
        let (name, text) = sources
            .iter()
            .find(|(name, _)| name.ends_with(&format!("/{}.yaml", manifest.key())))
            .expect("a parsed manifest has its source");
        if let Some(twin) = embedded.iter().find(|e| e.id == manifest.id) {
            anyhow::bail!(
                "{}: id {} is also the embedded chapter {}\n  fix: give the chapter an id of its own (13 and up)",
                span::at(name, text, &[span::Step::Key("id")]),
                manifest.id,
                twin.key()
            );
        }
        out.push(Entry {
            id: manifest.id,
            slug: Box::leak(manifest.slug.clone().into_boxed_str()),
            text,
            parsed: OnceLock::from(manifest),
        });
    }
    Ok(out)
}

/// The extra chapters' load error, if [`CHAPTERS_DIR_VARIABLE`] names a directory that does not
/// hold valid chapters. Commands call it before resolving any chapter name; without it a broken
/// extra chapter would only be missing.
pub fn check_extra() -> Result<()> {
    extra()
        .as_ref()
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// An extra chapter's expressions checked against the context it is about to render with: a
/// typo is an error naming the manifest and line, not a `when:` that silently reads as false.
/// Embedded chapters are checked once, by the test suite (`every_expression_of_the_embedded_…`),
/// so no run pays for them.
pub fn check_extra_expressions(chapter: &Manifest, resolves: &dyn Fn(&str) -> bool) -> Result<()> {
    let (Ok(extra), Some(dir)) = (extra(), extra_dir()) else {
        return Ok(());
    };
    let Some(entry) = extra.iter().find(|e| e.id == chapter.id) else {
        return Ok(());
    };
    let file = dir.join("chapters").join(format!("{}.yaml", entry.key()));
    let problems = chapter.expression_problems(&file.display().to_string(), entry.text, resolves);
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The embedded chapters and the extra ones, by id.
fn entries() -> &'static [Entry] {
    static ALL: OnceLock<Vec<Entry>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<Entry> = embedded()
            .iter()
            .map(|e| Entry {
                id: e.id,
                slug: e.slug,
                text: e.text,
                parsed: OnceLock::new(),
            })
            .collect();
        if let Ok(extra) = extra() {
            all.extend(extra.iter().map(|e| Entry {
                id: e.id,
                slug: e.slug,
                text: e.text,
                parsed: e.parsed.clone(),
            }));
        }
        all.sort_by_key(|e| e.id);
        all
    })
}

fn embedded() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut entries: Vec<Entry> = CHAPTER_DIR
            .files()
            .filter_map(|f| {
                let name = f.path().to_str()?.strip_suffix(".yaml")?;
                let (id, slug) = name.split_once('-')?;
                Some(Entry {
                    id: id.parse().ok()?,
                    slug,
                    text: f.contents_utf8()?,
                    parsed: OnceLock::new(),
                })
            })
            .collect();
        entries.sort_by_key(|e| e.id);
        entries
    })
}

/// Every chapter, ordered by id.
pub fn all() -> Vec<&'static Manifest> {
    entries().iter().map(Entry::manifest).collect()
}

/// The manifest a chapter's id and slug name, parsed now if it was not yet.
fn find(matches: impl Fn(u8, &str) -> bool) -> Option<&'static Manifest> {
    entries()
        .iter()
        .find(|e| matches(e.id, e.slug))
        .map(Entry::manifest)
}

#[cfg(test)]
fn load_all() -> Result<Vec<Manifest>> {
    let sources: Vec<(String, &str)> = CHAPTER_DIR
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "yaml"))
        .map(|f| {
            let name = format!("chapters/{}", f.path().display());
            let text = f
                .contents_utf8()
                .with_context(|| format!("{name}: not UTF-8"))?;
            Ok((name, text))
        })
        .collect::<Result<_>>()?;
    parse_manifests(&sources)
}

/// Manifests from their sources (`chapters/NN-slug.yaml`, text), checked as a set: each parses,
/// is named after its id and slug, has no [`Manifest::problems`], and no two share an id.
pub fn parse_manifests(sources: &[(String, &str)]) -> Result<Vec<Manifest>> {
    let mut chapters: Vec<Manifest> = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in sources {
        let manifest: Manifest = serde_yaml_ng::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", span::parse_error(name, text, &e)))?;
        let id_at = || span::at(name, text, &[span::Step::Key("id")]);
        let expected = format!("{}.yaml", manifest.key());
        if !name.ends_with(&format!("/{expected}")) {
            problems.push(format!(
                "{}: id and slug say it should be named {expected}\n  fix: rename the file, or change `id:`/`slug:`",
                id_at()
            ));
        }
        problems.extend(manifest.problems(name, text));
        if let Some(twin) = chapters.iter().find(|c| c.id == manifest.id) {
            problems.push(format!(
                "{}: id {} is also chapter {}\n  fix: give each chapter its own id",
                id_at(),
                manifest.id,
                twin.key()
            ));
        }
        chapters.push(manifest);
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    chapters.sort_by_key(|c| c.id);
    Ok(chapters)
}

pub fn by_key(key: &str) -> Option<&'static Manifest> {
    find(|id, slug| format!("{id:02}-{slug}") == key)
}

/// `targets` plus every chapter they need, dependencies first.
pub fn with_dependencies(targets: &[&'static Manifest]) -> Result<Vec<&'static Manifest>> {
    with_dependencies_by(targets, &resolve)
}

/// [`with_dependencies`] with `resolve` naming each need's manifest (a test's own chapters).
pub fn with_dependencies_by(
    targets: &[&'static Manifest],
    resolve: &dyn Fn(&str) -> Result<&'static Manifest>,
) -> Result<Vec<&'static Manifest>> {
    fn visit(
        chapter: &'static Manifest,
        path: &mut Vec<String>,
        out: &mut Vec<&'static Manifest>,
        resolve: &dyn Fn(&str) -> Result<&'static Manifest>,
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
            visit(dep, path, out, resolve)?;
        }
        path.pop();
        out.push(chapter);
        Ok(())
    }
    let mut out = Vec::new();
    for t in targets {
        visit(t, &mut Vec::new(), &mut out, resolve)?;
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

    fn one(yaml: &str) -> String {
        let err = parse_manifests(&[("chapters/13-extra.yaml".into(), yaml)]).unwrap_err();
        format!("{err:#}")
    }

    const HEAD: &str = "id: 13\nslug: extra\ntitle: T\nsummary: S\n";

    #[test]
    fn a_bad_mode_an_empty_marker_or_a_twin_is_refused_naming_file_and_line() {
        let bad_mode = one(&format!(
            "{HEAD}files:\n  - template: a.j2\n    path: a\n    mode: \"0x755\"\n"
        ));
        assert!(bad_mode.contains("chapters/13-extra.yaml:8"), "{bad_mode}");
        assert!(bad_mode.contains("not an octal file mode"), "{bad_mode}");

        let no_marker = one(&format!(
            "{HEAD}files:\n  - template: a.j2\n    path: .gitignore\n    policy: append-if-marker-missing\n    marker: \"  \"\n"
        ));
        assert!(no_marker.contains("has no marker"), "{no_marker}");
        assert!(
            no_marker.contains("chapters/13-extra.yaml:9:"),
            "{no_marker}"
        );

        let twice = one(&format!(
            "{HEAD}files:\n  - template: a.j2\n    path: a\n  - template: b.j2\n    path: a\n"
        ));
        assert!(twice.contains("written twice"), "{twice}");
        assert!(twice.contains("chapters/13-extra.yaml:9:"), "{twice}");

        let actions = one(&format!(
            "{HEAD}actions:\n  - action: git-repository\n  - action: git-repository\n"
        ));
        assert!(actions.contains("listed twice"), "{actions}");
        assert!(actions.contains(":7"), "{actions}");

        let misnamed = one("id: 14\nslug: extra\ntitle: T\nsummary: S\n");
        assert!(misnamed.contains("14-extra.yaml"), "{misnamed}");

        let a = "id: 13\nslug: extra\ntitle: T\nsummary: S\n";
        let b = "id: 13\nslug: other\ntitle: T\nsummary: S\n";
        let err = parse_manifests(&[
            ("chapters/13-extra.yaml".into(), a),
            ("chapters/13-other.yaml".into(), b),
        ])
        .unwrap_err();
        assert!(
            format!("{err}").contains("id 13 is also chapter 13-extra"),
            "{err}"
        );

        for ok in ["0755", "644", "0o600"] {
            assert!(parse_mode(ok).is_some(), "{ok}");
        }
        for bad in ["", "0x755", "abc", "99", "07777777", "-1"] {
            assert!(parse_mode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn stack_converged_takes_parameters_with_todays_defaults_and_refuses_a_typo() {
        use crate::action::{ActionSpec, stack::Params};
        let ok = parse_manifests(&[(
            "chapters/13-extra.yaml".into(),
            &format!(
                "{HEAD}needs: [swarm]\nactions:\n  - action: stack-converged\n    file: deploy/extra.yml\n    stack: \"{{{{ app.stack }}}}-extra\"\n"
            ),
        )])
        .unwrap();
        let ActionSpec::StackConverged(params) = &ok[0].actions[0] else {
            panic!("{:?}", ok[0].actions[0]);
        };
        assert_eq!(params.file.as_deref(), Some("deploy/extra.yml"));
        assert_eq!(params.stack.as_deref(), Some("{{ app.stack }}-extra"));
        assert_eq!(params.owner, None);
        // Without parameters: today's behaviour, the app's stack from deploy/stack.yml.
        let swarm = by_key("08-swarm").unwrap();
        assert!(
            swarm
                .actions
                .iter()
                .any(|a| matches!(a, ActionSpec::StackConverged(p) if *p == Params::default()))
        );
        // Chapter 09 rolls out into chapter 08's stack, never owning it.
        let distributed = by_key("09-distributed").unwrap();
        assert!(distributed.actions.iter().any(|a| matches!(
            a,
            ActionSpec::StackConverged(p) if p.owner.as_deref() == Some("08-swarm")
        )));

        let typo = one(&format!(
            "{HEAD}actions:\n  - action: stack-converged\n    stak: x\n"
        ));
        assert!(typo.starts_with("chapters/13-extra.yaml:7: "), "{typo}");
        assert!(typo.contains("stak"), "{typo}");

        let stranger = one(&format!(
            "{HEAD}needs: [foundation]\nactions:\n  - action: stack-converged\n    owner: 08-swarm\n"
        ));
        assert!(stranger.contains("chapters/13-extra.yaml:8"), "{stranger}");
        assert!(
            stranger.contains("not a chapter this one needs"),
            "{stranger}"
        );
    }

    #[test]
    fn expression_paths_are_the_names_an_expression_reads() {
        assert_eq!(expression_paths("project.phoenix"), ["project.phoenix"]);
        assert_eq!(
            expression_paths(
                "not project.has_database and env.provider == \"local\" or x | length > 2"
            ),
            ["project.has_database", "env.provider", "x"]
        );
        assert_eq!(
            expression_paths("secrets/{{ env.name }}.yaml"),
            ["secrets", "env.name", "yaml"]
        );
    }

    /// The example project's real template context, as a resolver of dotted names.
    fn example_context() -> tera::Context {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coordination");
        let project = crate::project::Project::discover(Some(&root)).unwrap();
        crate::render::context(&project, "local").unwrap()
    }

    /// Every `when:` (of a file or a module), every templated path and every templated action
    /// parameter (`root:`, `file:`, `stack:`) of the embedded manifests reads names the real
    /// template context has: a typo would otherwise read as false and silently skip a file.
    #[test]
    fn every_expression_of_the_embedded_manifests_reads_a_real_context_name() {
        let ctx = example_context();
        let resolves = |path: &str| crate::render::resolves(&ctx, path);
        let mut checked = 0;
        let mut kinds = std::collections::BTreeSet::new();
        for f in CHAPTER_DIR.files() {
            let name = format!("chapters/{}", f.path().display());
            let text = f.contents_utf8().unwrap();
            let manifest: Manifest = serde_yaml_ng::from_str(text).unwrap();
            let problems = manifest.expression_problems(&name, text, &resolves);
            assert!(problems.is_empty(), "{}", problems.join("\n"));
            checked += manifest.expression_count();
            for (path, _) in manifest.expressions() {
                kinds.insert(format!("{:?}.{:?}", path[0], path[2]));
            }
        }
        assert!(
            checked > 20,
            "the manifests have expressions to check: {checked}"
        );
        // Each kind of expression is among those checked.
        for kind in [
            r#"Key("files").Key("when")"#,
            r#"Key("files").Key("path")"#,
            r#"Key("modules").Key("when")"#,
            r#"Key("actions").Key("root")"#,
        ] {
            assert!(kinds.contains(kind), "{kind} not checked: {kinds:?}");
        }
        assert!(!resolves("project.phonix"), "a typo does not resolve");
    }

    /// A typo in any kind of expression is an error naming the manifest, the line and the name.
    #[test]
    fn a_typo_in_any_expression_names_its_manifest_and_line() {
        let ctx = example_context();
        let resolves = |path: &str| crate::render::resolves(&ctx, path);
        for (yaml, line, typo) in [
            (
                "files:\n  - template: a.j2\n    path: a\n    when: project.phonix\n",
                8,
                "project.phonix",
            ),
            (
                "files:\n  - template: a.j2\n    path: \"deploy/{{ env.nmae }}.yml\"\n",
                7,
                "env.nmae",
            ),
            (
                "modules:\n  - name: network\n  - name: swarm\n    when: env.provider == \"aws\" and enV.region\n",
                8,
                "enV.region",
            ),
            (
                "actions:\n  - action: terraform-applied\n    root: \"terraform/{{ env.name }}\"\n  - action: terraform-applied\n    root: \"terraform/{{ env.nam }}-x\"\n",
                9,
                "env.nam",
            ),
            (
                "needs: [swarm]\nactions:\n  - action: stack-converged\n    file: deploy/x.yml\n    stack: \"{{ ap.stack }}-x\"\n",
                9,
                "ap.stack",
            ),
        ] {
            let text = format!("{HEAD}{yaml}");
            let manifests =
                parse_manifests(&[("chapters/13-extra.yaml".into(), text.as_str())]).unwrap();
            let problems =
                manifests[0].expression_problems("chapters/13-extra.yaml", &text, &resolves);
            assert_eq!(problems.len(), 1, "{problems:?}");
            let want = format!("chapters/13-extra.yaml:{line}: ");
            assert!(problems[0].starts_with(&want), "{want} in {}", problems[0]);
            assert!(
                problems[0].contains(&format!("`{typo}`")),
                "{}",
                problems[0]
            );
            assert!(problems[0].contains("fix:"), "{}", problems[0]);
        }
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
            for m in &c.modules {
                assert!(
                    !crate::render::module_files(&m.name).is_empty(),
                    "{}: module {} is not in terraform/modules/",
                    c.key(),
                    m.name
                );
            }
        }
    }
}
