use serde::{Deserialize, Serialize};

use super::span::{self, Step};
use crate::action::ActionSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: u8,
    pub slug: String,
    pub title: String,
    pub summary: String,
    #[serde(default)]
    pub needs: Vec<String>,
    /// False until the chapter really works; `up` then refuses instead of pretending.
    #[serde(default)]
    pub implemented: bool,
    /// What this machine can apply for real, and where the chapter stops here.
    #[serde(default)]
    pub boundary: Option<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Terraform modules this chapter writes into the project, verbatim: beamops' own
    /// `terraform/modules/<name>/` becomes the project's `terraform/modules/<name>/`
    /// (docs/terraform.md). Roots call them with `source = "../modules/<name>"`.
    #[serde(default)]
    pub modules: Vec<ModuleSpec>,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// The directory under `terraform/modules/` in beamops' source.
    pub name: String,
    /// A template expression; the module is written only when it is true.
    #[serde(default)]
    pub when: Option<String>,
}

impl Manifest {
    /// `08-swarm`: the stable key used in the lock, the state and file names.
    pub fn key(&self) -> String {
        format!("{:02}-{}", self.id, self.slug)
    }

    /// `chapter-08`: how people name it on the command line.
    pub fn label(&self) -> String {
        format!("chapter-{:02}", self.id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path inside `templates/`.
    pub template: String,
    /// Project-relative destination; may use template expressions (`secrets/{{ env.name }}.yaml`).
    pub path: String,
    /// Octal mode, e.g. `"0755"`; default 0644.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub policy: Policy,
    /// For `append-if-marker-missing`: the line whose presence means the block is there.
    #[serde(default)]
    pub marker: Option<String>,
    /// A template expression; the file is rendered only when it is true.
    #[serde(default)]
    pub when: Option<String>,
}

impl FileSpec {
    /// The file's mode; 0644 when the manifest names none. A mode that does not parse never gets
    /// here: [`Manifest::problems`] refuses it when the manifests load.
    pub fn mode_bits(&self) -> u32 {
        self.mode.as_deref().and_then(parse_mode).unwrap_or(0o644)
    }
}

/// `"0755"`, `"755"` or `"0o755"` → the permission bits; `None` for anything else.
pub fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// The `{{ … }}` parts of a templated text (`terraform/{{ env.name }}` → ` env.name `): only
/// those are expressions.
fn template_parts(text: &str) -> impl Iterator<Item = &str> {
    text.split("{{")
        .skip(1)
        .filter_map(|p| p.split("}}").next())
}

/// Words of tera's expression language that are not names in the context.
const EXPRESSION_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "true",
    "false",
    "True",
    "False",
    "defined",
    "undefined",
    "none",
    "starting_with",
    "ending_with",
    "containing",
    "matching",
    "odd",
    "even",
];

/// The context paths a `when:` or path expression reads (`project.phoenix`,
/// `config.chapters.foundation.gitignore`), so a typo can be found before it silently reads as
/// false. Quoted strings, numbers, keywords, filters and tests are not paths.
pub fn expression_paths(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let mut after_pipe = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                for (_, d) in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '|' => after_pipe = true,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = expr[i..end].trim_end_matches('.');
                let is_call = expr[end..].trim_start().starts_with('(');
                if !(after_pipe || is_call || EXPRESSION_KEYWORDS.contains(&word)) {
                    out.push(word.to_string());
                }
                after_pipe = false;
            }
            c if c.is_whitespace() => {}
            _ => after_pipe = false,
        }
    }
    out
}

impl Manifest {
    /// What is wrong with a manifest that serde cannot see, each naming the manifest file, the
    /// line and the fix. `text` is the manifest's source, for line numbers.
    pub fn problems(&self, file: &str, text: &str) -> Vec<String> {
        use Step::{Index, Key};
        let at = |path: &[Step]| span::at(file, text, path);
        let mut out = Vec::new();
        let mut paths = std::collections::BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let entry = |key: &'static str| [Key("files"), Index(i), Key(key)];
            if !paths.insert(f.path.as_str()) {
                out.push(format!(
                    "{}: `{}` is written twice\n  fix: one file entry per path",
                    at(&entry("path")),
                    f.path
                ));
            }
            if let Some(mode) = &f.mode
                && parse_mode(mode).is_none()
            {
                out.push(format!(
                    "{}: mode `{mode}` is not an octal file mode\n  fix: write it like \"0755\"",
                    at(&entry("mode"))
                ));
            }
            let marker = f.marker.as_deref().map(str::trim);
            match (f.policy, marker) {
                (Policy::AppendIfMarkerMissing, None | Some("")) => out.push(format!(
                    "{}: `{}` is appended when its marker is missing, but it has no marker (an \
                     empty one matches any blank line, so the block would never be appended)\n  \
                     fix: give a `marker:` line that the appended block contains",
                    at(&entry("marker")),
                    f.path
                )),
                (Policy::Managed | Policy::CreateOnce, Some(m)) => out.push(format!(
                    "{}: `marker: {m}` means nothing for policy {:?}\n  fix: remove it, or use \
                     policy: append-if-marker-missing",
                    at(&entry("marker")),
                    f.policy
                )),
                _ => {}
            }
            if f.when.as_deref().is_some_and(|w| w.trim().is_empty()) {
                out.push(format!(
                    "{}: `when:` is empty\n  fix: remove it, or give a condition",
                    at(&entry("when"))
                ));
            }
        }
        let mut modules = std::collections::BTreeSet::new();
        for (i, m) in self.modules.iter().enumerate() {
            if !modules.insert(m.name.as_str()) {
                out.push(format!(
                    "{}: module `{}` is listed twice\n  fix: list each module once",
                    at(&[Key("modules"), Index(i), Key("name")]),
                    m.name
                ));
            }
            if m.when.as_deref().is_some_and(|w| w.trim().is_empty()) {
                out.push(format!(
                    "{}: `when:` is empty\n  fix: remove it, or give a condition",
                    at(&[Key("modules"), Index(i), Key("when")])
                ));
            }
        }
        // A stack converged on another chapter's behalf is that chapter's: it must come first.
        for (i, a) in self.actions.iter().enumerate() {
            if let crate::action::ActionSpec::StackConverged(p) = a
                && let Some(owner) = &p.owner
                && *owner != self.key()
                // By name alone: `resolve` here would re-enter the loading of the extra
                // chapters this manifest may be one of (a deadlock, not an error).
                && !owner
                    .split_once('-')
                    .and_then(|(id, slug)| Some((id.parse::<u8>().ok()?, slug)))
                    .is_some_and(|(id, slug)| {
                        self.needs
                            .iter()
                            .any(|n| crate::chapter::names(n, id, slug))
                    })
            {
                out.push(format!(
                    "{}: `owner: {owner}` is not a chapter this one needs\n  fix: name the key of a chapter in `needs:` (e.g. 08-swarm), whose stack this converges",
                    at(&[Key("actions"), Index(i), Key("owner")])
                ));
            }
        }
        // An action's id keys its record in the state: two with one id would share a record.
        let mut ids = std::collections::BTreeSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            let id = a.build(&self.key()).id();
            if !ids.insert(id.clone()) {
                out.push(format!(
                    "{}: action `{id}` is listed twice\n  fix: list each action once",
                    at(&[Key("actions"), Index(i)])
                ));
            }
        }
        out
    }

    /// Every template expression of the manifest with where it is: a file's `when:` and the
    /// `{{ … }}` parts of its `path:`, a module's `when:`, an action's templated parameters
    /// (`root:`, `file:`, `stack:`).
    pub(crate) fn expressions(&self) -> Vec<(Vec<Step<'static>>, &str)> {
        use Step::{Index, Key};
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if let Some(when) = &f.when {
                out.push((vec![Key("files"), Index(i), Key("when")], when.as_str()));
            }
            for part in template_parts(&f.path) {
                out.push((vec![Key("files"), Index(i), Key("path")], part));
            }
        }
        for (i, m) in self.modules.iter().enumerate() {
            if let Some(when) = &m.when {
                out.push((vec![Key("modules"), Index(i), Key("when")], when.as_str()));
            }
        }
        for (i, a) in self.actions.iter().enumerate() {
            for (key, text) in a.expressions() {
                for part in template_parts(text) {
                    out.push((vec![Key("actions"), Index(i), Key(key)], part));
                }
            }
        }
        out
    }

    /// The expressions that read a name the template context does not have (`resolves` says
    /// which it has), each naming the manifest file and line: a typo in a `when:` would
    /// otherwise read as false and silently skip a file.
    pub fn expression_problems(
        &self,
        file: &str,
        text: &str,
        resolves: &dyn Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (path, expr) in self.expressions() {
            for name in expression_paths(expr) {
                if !resolves(&name) {
                    let key = match path.last() {
                        Some(Step::Key(k)) => *k,
                        _ => "expression",
                    };
                    out.push(format!(
                        "{}: `{key}: {}` reads `{name}`, which the template context does not have\n  fix: use a name of the context (docs/architecture.md, \"Adding a chapter\": app.*, image.*, env.*, project.*, config.*…)",
                        span::at(file, text, &path),
                        expr.trim()
                    ));
                }
            }
        }
        out
    }

    /// How many expressions [`Manifest::expression_problems`] checks (a test's proof it checked
    /// something).
    pub fn expression_count(&self) -> usize {
        self.expressions()
            .iter()
            .map(|(_, e)| expression_paths(e).len())
            .sum()
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// beamops owns the file: updated on every run, conflicts when a person edited it.
    #[default]
    Managed,
    /// Written once as a starting point, then the user's.
    CreateOnce,
    /// A block appended to a user's file (like `.gitignore`) when its marker line is missing.
    AppendIfMarkerMissing,
}
