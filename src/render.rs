//! Rendering a chapter's templates with the project's configuration as context.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::Result;
use include_dir::{Dir, include_dir};

mod context;

pub use context::TemplateContext;

use crate::chapter::{FileSpec, Manifest};
use crate::fsutil::sha256_hex;
use crate::project::Project;

static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");
/// Terraform modules, copied verbatim into projects (docs/terraform.md).
static MODULES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/terraform/modules");

/// A module's files (name inside the module, content), sorted by name; empty when unknown.
pub fn module_files(name: &str) -> Vec<(String, &'static [u8])> {
    let mut files: Vec<(String, &'static [u8])> = MODULES
        .get_dir(name)
        .map(|d| {
            d.files()
                .filter_map(|f| {
                    let file = f.path().file_name()?.to_str()?.to_string();
                    Some((file, f.contents()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The source of a template, by its path inside `templates/`: embedded, else in the extra
/// chapters' directory (`BEAMOPS_CHAPTERS_DIR/templates/`). An extra template never replaces an
/// embedded one of the same name.
pub fn template_source(name: &str) -> Option<&'static str> {
    if let Some(embedded) = TEMPLATES.get_file(name).and_then(|f| f.contents_utf8()) {
        return Some(embedded);
    }
    extra_template(name)
}

/// A template of the extra chapters' directory, read once and kept for the process's life.
fn extra_template(name: &str) -> Option<&'static str> {
    static READ: OnceLock<Mutex<std::collections::HashMap<String, &'static str>>> = OnceLock::new();
    let dir = crate::chapter::extra_dir()?.join("templates");
    // Only paths inside the directory: a manifest's template never reads elsewhere.
    if Path::new(name)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    let mut read = READ
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(text) = read.get(name) {
        return Some(text);
    }
    let text: &'static str = Box::leak(
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .into_boxed_str(),
    );
    read.insert(name.to_string(), text);
    Some(text)
}

/// Every embedded template, by its path inside `templates/` (the test suite parses them all).
#[cfg(test)]
fn all_templates(dir: &'static Dir<'static>, out: &mut Vec<(String, &'static str)>) {
    for f in dir.files() {
        if let Some(text) = f.contents_utf8() {
            out.push((f.path().to_string_lossy().into_owned(), text));
        }
    }
    for d in dir.dirs() {
        all_templates(d, out);
    }
}

/// Renders one embedded template, parsing it on first use only: a command pays for the templates
/// of the chapters it touches, not for all of them (parsing every template was 82% of
/// `plan chapter-01`). Templates use no `include`/`extends`, so each parses on its own.
fn render_template(name: &str, ctx: &tera::Context) -> Result<String, tera::Error> {
    static ENGINE: OnceLock<Mutex<tera::Tera>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        let mut tera = tera::Tera::default();
        // Generated files are YAML, shell and Dockerfiles, not HTML: no escaping.
        tera.autoescape_on(vec![]);
        tera.register_filter("hcl", hcl_filter);
        Mutex::new(tera)
    });
    let mut tera = engine
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !tera.get_template_names().any(|known| known == name) {
        let source = match inline_source(name) {
            Some(text) => text,
            None => template_source(name).ok_or_else(|| tera::Error::template_not_found(name))?,
        };
        tera.add_raw_template(name, source)?;
    }
    tera.render(name, ctx)
}

/// Inline templates (a manifest's `when:` and templated `path:`) are named by their text behind
/// this prefix, which no file name has.
const INLINE: &str = "\u{0}inline:";

fn inline_source(name: &str) -> Option<&str> {
    name.strip_prefix(INLINE)
}

/// A short template given as text, parsed once per process by the same engine as the files
/// (`Tera::one_off` builds a whole engine, filters and all, for every expression it renders).
fn render_inline(text: &str, ctx: &tera::Context) -> Result<String, tera::Error> {
    render_template(&format!("{INLINE}{text}"), ctx)
}

/// Whether a `when:` condition holds.
fn holds(cond: &str, ctx: &tera::Context) -> Result<bool, tera::Error> {
    Ok(render_inline(&format!("{{% if {cond} %}}yes{{% endif %}}"), ctx)? == "yes")
}

/// A manifest's text with its `{{ … }}` expressions rendered; text without any as it is.
fn expand_text(text: &str, ctx: &tera::Context) -> Result<String, tera::Error> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    render_inline(text, ctx)
}

/// `{{ value | hcl }}`: a value as an HCL literal on one line (strings escaped, `${` and `%{`
/// doubled so no configuration value is ever interpolated by Terraform or Packer).
fn hcl_filter(
    value: &tera::Value,
    _args: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(hcl_literal(value)))
}

pub fn hcl_literal(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => crate::terraform::hcl_string(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(hcl_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{} = {}", hcl_key(k), hcl_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn hcl_key(k: &str) -> String {
    let bare = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        crate::terraform::hcl_string(k)
    }
}

/// One file as this run would write it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub spec: FileSpec,
    /// Project-relative destination.
    pub path: String,
    pub content: Vec<u8>,
    pub template_digest: String,
}

/// The template context for `env_name`, serialised for tera: [`TemplateContext`] says what is in
/// it.
pub fn context(project: &Project, env_name: &str) -> Result<tera::Context> {
    TemplateContext::new(project, env_name)?.to_tera()
}

/// The repository's web address for image labels: the origin remote as https, or empty when
/// origin is no network address (a clone of a local path): a label names where the source can
/// be found by whoever runs the image, never a path on the machine that built it.
fn source_url(project: &Project) -> String {
    project
        .git()
        .and_then(|git| git.origin.as_deref())
        .and_then(web_address)
        .unwrap_or_default()
}

/// `git@host:a/b.git`, `ssh://git@host:22/a/b`, `https://user:token@host/a/b.git` →
/// `https://host/a/b` (credentials never kept); a local path or `file://` → None.
pub fn web_address(url: &str) -> Option<String> {
    let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "git+ssh") {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        // An ssh port is no web port.
        let host = if scheme == "https" || scheme == "http" {
            host
        } else {
            host.split(':').next()?
        };
        (host.to_string(), path.to_string())
    } else {
        // scp-like `user@host:path`; a plain path has no `host:` before its first slash.
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') || path.starts_with("//") {
            return None;
        }
        (authority.rsplit('@').next()?.to_string(), path.to_string())
    };
    let path = path.trim_matches('/').trim_end_matches(".git");
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    (valid_host && !path.is_empty() && !path.chars().any(|c| c.is_whitespace() || c == '"'))
        .then(|| format!("https://{host}/{path}"))
}

/// The dependencies `deps` in mix.exs lists, by name (`{:phoenix, "~> 1.7"}` → `phoenix`).
pub fn mix_deps(root: &Path) -> Vec<String> {
    let Ok(mix) = std::fs::read_to_string(root.join("mix.exs")) else {
        return Vec::new();
    };
    let Some(start) = mix.find("defp deps") else {
        return Vec::new();
    };
    let body = &mix[start..];
    let body = &body[..body.find("\n  end").unwrap_or(body.len())];
    body.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split("{:").skip(1))
        .map(|dep| {
            dep.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// `my_app` → `MyApp`, the module name `mix new` gives an OTP app.
pub fn elixir_module(otp_app: &str) -> String {
    otp_app
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Whether the context has the value a dotted path names (`project.phoenix`).
pub fn resolves(ctx: &tera::Context, path: &str) -> bool {
    let mut keys = path.split('.');
    let Some(top) = keys.next().and_then(|k| ctx.get(k)) else {
        return false;
    };
    keys.try_fold(top, |v, key| v.get(key)).is_some()
}

pub fn render_chapter(chapter: &Manifest, ctx: &tera::Context) -> Result<Vec<Rendered>> {
    crate::chapter::check_extra_expressions(chapter, &|path| resolves(ctx, path))?;
    let mut out = Vec::new();
    for spec in &chapter.files {
        if let Some(cond) = &spec.when
            && !holds(cond, ctx).map_err(|e| {
                anyhow::anyhow!(
                    "chapter {}: `when: {cond}`: {}",
                    chapter.key(),
                    tera_chain(&e)
                )
            })?
        {
            continue;
        }
        let path = expand_text(&spec.path, ctx).map_err(|e| {
            anyhow::anyhow!(
                "chapter {}: path `{}`: {}",
                chapter.key(),
                spec.path,
                tera_chain(&e)
            )
        })?;
        let content = render_template(&spec.template, ctx).map_err(|e| {
            anyhow::anyhow!(
                "rendering {} for chapter {}: {}",
                spec.template,
                chapter.key(),
                tera_chain(&e)
            )
        })?;
        let source = template_source(&spec.template).unwrap_or_default();
        out.push(Rendered {
            spec: spec.clone(),
            path,
            content: content.into_bytes(),
            template_digest: sha256_hex(source.as_bytes())[..16].to_string(),
        });
    }
    for module in &chapter.modules {
        if let Some(cond) = &module.when
            && !holds(cond, ctx).map_err(|e| {
                anyhow::anyhow!(
                    "chapter {}: module `when: {cond}`: {}",
                    chapter.key(),
                    tera_chain(&e)
                )
            })?
        {
            continue;
        }
        let files = module_files(&module.name);
        anyhow::ensure!(
            !files.is_empty(),
            "chapter {}: no module terraform/modules/{}",
            chapter.key(),
            module.name
        );
        for (file, content) in files {
            let path = format!("terraform/modules/{}/{file}", module.name);
            out.push(Rendered {
                spec: FileSpec {
                    template: path.clone(),
                    path: path.clone(),
                    mode: None,
                    policy: crate::chapter::Policy::Managed,
                    marker: None,
                    when: None,
                },
                path,
                content: content.to_vec(),
                template_digest: sha256_hex(content)[..16].to_string(),
            });
        }
    }
    Ok(out)
}

fn tera_chain(e: &tera::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A manifest parameter (an action's `file:` or `stack:`) with its template expressions
/// rendered against the project's context, as a file's `path:` is; text without `{{` as it is.
pub fn expand(text: &str, project: &Project, env_name: &str) -> Result<String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let ctx = context(project, env_name)?;
    expand_text(text, &ctx).map_err(|e| anyhow::anyhow!("`{text}`: {}", tera_chain(&e)))
}

/// Render a template outside any chapter (used by `init`).
pub fn render_one(template: &str, ctx: &tera::Context) -> Result<String> {
    render_template(template, ctx)
        .map_err(|e| anyhow::anyhow!("rendering {template}: {}", tera_chain(&e)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_source_labels_are_web_addresses_or_nothing() {
        for (url, want) in [
            (
                "git@github.com:Acme/coord.git",
                Some("https://github.com/Acme/coord"),
            ),
            (
                "ssh://git@git.example.com:2222/a/b.git",
                Some("https://git.example.com/a/b"),
            ),
            (
                "https://user:token@github.com/a/b.git",
                Some("https://github.com/a/b"),
            ),
            ("/work/main", None),
            ("../main", None),
            ("file:///work/main", None),
        ] {
            assert_eq!(super::web_address(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn every_embedded_template_parses() {
        let mut sources = Vec::new();
        super::all_templates(&super::TEMPLATES, &mut sources);
        assert!(sources.len() > 10, "templates are embedded");
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(sources)
            .expect("every embedded template parses");
    }

    #[test]
    fn a_template_is_parsed_on_first_use_and_rendered_again_from_cache() {
        let ctx = tera::Context::from_value(serde_json::json!({
            "app": {"elixir": "1.18.3", "otp": "27.3.4.1"}
        }))
        .unwrap();
        let first = super::render_one("foundation/tool-versions.j2", &ctx).unwrap();
        let again = super::render_one("foundation/tool-versions.j2", &ctx).unwrap();
        assert_eq!(first, again);
        assert!(first.contains("1.18.3"), "{first}");
        let missing = super::render_one("no/such.j2", &ctx).unwrap_err();
        assert!(format!("{missing:#}").contains("no/such.j2"), "{missing:#}");
    }
}
