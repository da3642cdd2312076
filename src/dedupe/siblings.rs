//! What a script reaches relative to its own location, and who `source`s it.
//!
//! Consolidating a copy changes the path it runs from. A script that finds its own directory
//! (`$(dirname "$0")`, `${BASH_SOURCE[0]}`, `SCRIPT_DIR=…`, `readlink -f "$0"`) and then reads,
//! runs or sources files there would reach the canonical's neighbours instead of its own —
//! unless the replacement keeps the copy's path visible. How each idiom sees a replacement:
//!
//! | idiom                                     | symlink          | wrapper (`exec canonical`) |
//! |-------------------------------------------|------------------|----------------------------|
//! | `$0`, `dirname "$0"`, `${0%/*}`           | the copy's dir   | the canonical's dir        |
//! | `${BASH_SOURCE[0]}`, `$BASH_SOURCE`       | the copy's dir   | the canonical's dir        |
//! | `cd "$(dirname …)" && pwd` (also `-P`)    | the copy's dir   | the canonical's dir        |
//! | `readlink -f`/`realpath` of `$0`/`BASH_SOURCE` | the canonical's dir | the canonical's dir |
//!
//! (`pwd -P` resolves symlinked *directories* only; `dirname` of a symlinked file is still the
//! copy's own directory.) A sourced file's `$0` is its caller's, which no replacement changes.
//!
//! This is a line-based reading of the script, not a parser: it errs towards finding a
//! reference (which keeps a copy or picks a symlink) rather than missing one.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

/// How a script finds its own location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Idiom {
    /// `$0` through `dirname`, `${0%/*}` or `cd … && pwd`: a symlink keeps it.
    Dollar0,
    /// `${BASH_SOURCE[0]}` / `$BASH_SOURCE`: the path as invoked or sourced; a symlink keeps it.
    BashSource,
    /// `readlink -f` / `realpath` of its own path: sees through a symlink.
    Resolved,
}

impl Idiom {
    pub fn describe(self) -> &'static str {
        match self {
            Idiom::Dollar0 => "$(dirname \"$0\")",
            Idiom::BashSource => "${BASH_SOURCE[0]}",
            Idiom::Resolved => "readlink -f/realpath of its own path",
        }
    }
}

/// One `source X` / `. X` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTarget {
    /// Relative to the sourcing script's own directory (`"$DIR/lib.sh"`, `$(dirname "$0")/x`).
    Sibling(String),
    /// An absolute path.
    Absolute(PathBuf),
    /// Relative to the working directory, or with a variable part: only its file name is known.
    Named(String),
}

#[derive(Debug, Clone, Default)]
pub struct ScriptFacts {
    pub idioms: BTreeSet<Idiom>,
    /// Paths reached relative to the script's directory (lexical, may contain `..`).
    pub siblings: BTreeSet<String>,
    /// Sibling references with a variable or glob part: what they reach cannot be known.
    pub dynamic: BTreeSet<String>,
    /// (line number, target) of every `source`/`.` command.
    pub sources: Vec<(usize, SourceTarget)>,
    /// The first line that reads the script's own path (`$0`, `BASH_SOURCE`) for any purpose,
    /// a usage message included: a wrapper would change what it prints or does.
    pub names_itself: Option<usize>,
    /// Starts with `#!`: run as a program, it picks its own interpreter. Without one it is run
    /// by whatever shell runs it (or sourced), which a wrapper cannot know.
    pub shebang: bool,
}

impl ScriptFacts {
    pub fn self_locating(&self) -> bool {
        !self.idioms.is_empty()
    }
}

// A self-reference: `$0`, `${0}`, `${0%/*}`, `$BASH_SOURCE`, `${BASH_SOURCE[0]}`…
static SELF_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\$(?:0\b|\{0[}%#:/]|\{?BASH_SOURCE\b)"#).expect("static regex"));
static BASH_SOURCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bBASH_SOURCE\b").expect("static regex"));
static LOCATING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\bdirname\b|%/\*|\bpwd\b|\breadlink\b|\brealpath\b|\bcd\b"#)
        .expect("static regex")
});
static RESOLVING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\breadlink\b|\brealpath\b").expect("static regex"));
static ASSIGN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"^\s*(?:export\s+|local\s+|readonly\s+|declare\s+(?:-\w+\s+)*|typeset\s+(?:-\w+\s+)*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$"#,
    )
    .expect("static regex")
});
// `source X` or `. X` in command position.
static SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?:^\s*|[;&|({!]\s*|\b(?:then|do|else|elif|if|while|until)\s+)(?:source|\.)\s+((?:"[^"]*"|'[^']*'|[^\s;&|)])+)"#,
    )
    .expect("static regex")
});
// A location expression directly followed by `/rest`, e.g. `$(dirname "$0")/lib.sh`.
static DIR_EXPR_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?:\$\(\s*dirname\s+(?:--\s+)?"?(?:\$0|\$\{0\}|\$\{?BASH_SOURCE(?:\[0\])?\}?)"?\s*\)|`\s*dirname\s+(?:--\s+)?"?(?:\$0|\$\{0\}|\$\{?BASH_SOURCE(?:\[0\])?\}?)"?\s*`|\$\{(?:0|BASH_SOURCE(?:\[0\])?)%/\*\})"?/"#,
    )
    .expect("static regex")
});
static CD_SELF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[;&|({!]\s*)\s*(?:cd|pushd)\s+(\S.*)"#).expect("static regex")
});
static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?:^|[\s=<>"'(])((?:\.{1,2}/)?[A-Za-z0-9_][A-Za-z0-9_.+@-]*(?:/[A-Za-z0-9_.+@-]+)*)"#,
    )
    .expect("static regex")
});

/// The literal path after a location expression, up to a quote, blank or operator; `None` with
/// the prefix when a variable, glob or command substitution follows.
fn literal_tail(rest: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '"' | '\'' => {
                chars.next();
            }
            c if c.is_whitespace() || ";&|)<>`".contains(c) => break,
            '$' | '*' | '?' | '[' | '{' => return Err(out.trim_end_matches('/').to_string()),
            c => {
                out.push(c);
                chars.next();
            }
        }
    }
    Ok(out)
}

/// Join a variable's offset and a tail lexically (`..` climbs), as the shell would.
fn join(offset: &str, tail: &str) -> String {
    let joined = if offset.is_empty() {
        tail.to_string()
    } else if tail.is_empty() {
        offset.to_string()
    } else {
        format!("{offset}/{tail}")
    };
    normalize(Path::new(&joined)).display().to_string()
}

/// `a/./b/../c` → `a/c`, keeping leading `..` (the path is relative to a directory).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    let p: PathBuf = out.iter().collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// The line without its comment (a `#` that starts a word outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

pub fn analyse(bytes: &[u8]) -> ScriptFacts {
    let text = String::from_utf8_lossy(bytes);
    let mut facts = ScriptFacts {
        shebang: bytes.starts_with(b"#!"),
        ..ScriptFacts::default()
    };
    // Variables holding the script's directory, with the path they add to it (`ROOT=$DIR/..`).
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut patterns: HashMap<String, Regex> = HashMap::new();
    let mut cd_offset: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        if facts.names_itself.is_none() && SELF_REF.is_match(line) {
            facts.names_itself = Some(n + 1);
        }
        let self_ref = SELF_REF.is_match(line) && LOCATING.is_match(line);
        if self_ref {
            if RESOLVING.is_match(line) {
                facts.idioms.insert(Idiom::Resolved);
            }
            if BASH_SOURCE.is_match(line) {
                facts.idioms.insert(Idiom::BashSource);
            }
            if !RESOLVING.is_match(line) && !BASH_SOURCE.is_match(line) {
                facts.idioms.insert(Idiom::Dollar0);
            }
        }
        // Every place the line names a path under the script's directory.
        let mut reached: Vec<(usize, Result<String, String>)> = Vec::new();
        for m in DIR_EXPR_PATH.find_iter(line) {
            reached.push((m.start(), literal_tail(&line[m.end()..])));
        }
        for (var, offset) in &vars {
            let re = patterns.entry(var.clone()).or_insert_with(|| {
                Regex::new(&format!(r#"\$(?:\{{{var}\}}|{var}\b)"?(/?)"#))
                    .expect("a shell name is a valid pattern")
            });
            for c in re.captures_iter(line) {
                let whole = c.get(0).expect("match");
                let tail = if c[1].is_empty() {
                    // `"$DIR"` alone: the directory itself (or `"$DIR$x"`: unknown).
                    match line[whole.end()..].chars().next() {
                        Some('$') => Err(String::new()),
                        _ => Ok(String::new()),
                    }
                } else {
                    literal_tail(&line[whole.end()..])
                };
                reached.push((
                    whole.start(),
                    tail.map(|t| join(offset, &t)).map_err(|t| join(offset, &t)),
                ));
            }
        }
        for (_, r) in &reached {
            match r {
                Ok(p) if p != "." && !p.is_empty() => {
                    facts.siblings.insert(p.clone());
                }
                Ok(_) => {}
                Err(prefix) => {
                    facts.dynamic.insert(format!("{prefix}/…"));
                }
            }
        }
        // A variable assigned from a self-reference or a location variable holds a location.
        if let Some(a) = ASSIGN.captures(line) {
            let (name, rhs) = (a[1].to_string(), &a[2]);
            let rhs_start = a.get(2).expect("group").start();
            let from_var = reached
                .iter()
                .filter(|(at, _)| *at >= rhs_start)
                .map(|(_, r)| r.clone())
                .next();
            if let Some(r) = from_var {
                vars.insert(name, r.unwrap_or_else(|p| p));
            } else if SELF_REF.is_match(rhs) && LOCATING.is_match(rhs)
                || vars
                    .keys()
                    .any(|v| rhs.contains(&format!("${v}")) || rhs.contains(&format!("${{{v}}}")))
            {
                let offset = vars
                    .iter()
                    .find(|(v, _)| {
                        rhs.contains(&format!("${v}")) || rhs.contains(&format!("${{{v}}}"))
                    })
                    .map(|(_, o)| o.clone())
                    .unwrap_or_default();
                vars.insert(name, offset);
            } else {
                vars.remove(&name);
            }
        }
        // After `cd "$(dirname "$0")"` / `cd "$DIR"`, relative words are siblings.
        if let Some(offset) = &cd_offset {
            for w in WORD.captures_iter(line) {
                let word = &w[1];
                if word.contains('/') || word.contains('.') {
                    let p = join(offset, word);
                    if p != "." && p != ".." {
                        facts.siblings.insert(p);
                    }
                }
            }
        }
        let sourcing_from = cd_offset.clone();
        if let Some(cd) = CD_SELF.captures(line) {
            let arg_start = cd.get(1).expect("group").start();
            let here = reached
                .iter()
                .find(|(at, _)| *at >= arg_start)
                .and_then(|(_, r)| r.clone().ok());
            cd_offset = match here {
                Some(p) => Some(p),
                None if SELF_REF.is_match(&cd[1]) => Some(String::new()),
                None => None,
            };
        }
        for s in SOURCE.captures_iter(line) {
            let arg = &s[1];
            let target = source_target(arg, &vars, sourcing_from.as_deref());
            facts.sources.push((n + 1, target));
        }
    }
    facts
}

fn source_target(arg: &str, vars: &HashMap<String, String>, cd: Option<&str>) -> SourceTarget {
    let unquoted: String = arg.chars().filter(|c| *c != '"' && *c != '\'').collect();
    if let Some(m) = DIR_EXPR_PATH.find(arg)
        && matches!(&arg[..m.start()], "" | "\"")
        && let Ok(tail) = literal_tail(&arg[m.end()..])
    {
        return SourceTarget::Sibling(join("", &tail));
    }
    for (var, offset) in vars {
        for prefix in [format!("${var}/"), format!("${{{var}}}/")] {
            if let Some(tail) = unquoted.strip_prefix(&prefix)
                && !tail.contains('$')
            {
                return SourceTarget::Sibling(join(offset, tail));
            }
        }
    }
    if !unquoted.contains('$') {
        if unquoted.starts_with('/') {
            return SourceTarget::Absolute(PathBuf::from(unquoted));
        }
        if let Some(offset) = cd {
            return SourceTarget::Sibling(join(offset, &unquoted));
        }
    }
    let name = unquoted.rsplit('/').next().unwrap_or_default().to_string();
    SourceTarget::Named(name)
}

/// Whether `relative` names the same thing under both directories: both missing, both
/// directories, or both files with the same bytes.
pub fn same_in(copy_dir: &Path, canonical_dir: &Path, relative: &str) -> bool {
    let (a, b) = (
        normalize(&copy_dir.join(relative)),
        normalize(&canonical_dir.join(relative)),
    );
    match (std::fs::metadata(&a), std::fs::metadata(&b)) {
        (Err(_), Err(_)) => true,
        (Ok(x), Ok(y)) if x.is_dir() && y.is_dir() => true,
        (Ok(x), Ok(y)) if x.is_file() && y.is_file() => {
            x.len() == y.len()
                && matches!((std::fs::read(&a), std::fs::read(&b)), (Ok(p), Ok(q)) if p == q)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(src: &str) -> ScriptFacts {
        analyse(src.as_bytes())
    }

    #[test]
    fn each_idiom_is_recognised_with_what_it_reaches() {
        let f =
            facts("#!/bin/sh\n. \"$(dirname \"$0\")/lib.sh\"\n\"$(dirname -- \"$0\")/run.sh\" x\n");
        assert_eq!(f.idioms, BTreeSet::from([Idiom::Dollar0]));
        assert_eq!(
            f.siblings,
            BTreeSet::from(["lib.sh".into(), "run.sh".into()])
        );
        assert_eq!(f.sources, vec![(2, SourceTarget::Sibling("lib.sh".into()))]);

        let f = facts(
            "#!/bin/bash\nSCRIPT_DIR=\"$( cd -- \"$( dirname -- \"${BASH_SOURCE[0]}\" )\" &> /dev/null && pwd )\"\nsource \"$SCRIPT_DIR/helper.sh\"\ncat \"${SCRIPT_DIR}/data/x.txt\"\nROOT=\"$SCRIPT_DIR/..\"\nbash $ROOT/bin/tool.sh # a comment $SCRIPT_DIR/not.sh\n",
        );
        assert_eq!(f.idioms, BTreeSet::from([Idiom::BashSource]));
        assert_eq!(
            f.siblings,
            BTreeSet::from([
                "helper.sh".into(),
                "data/x.txt".into(),
                "../bin/tool.sh".into(),
                "..".into()
            ])
        );
        assert_eq!(
            f.sources,
            vec![(3, SourceTarget::Sibling("helper.sh".into()))]
        );

        let f =
            facts("#!/bin/bash\nHERE=$(dirname \"$(readlink -f \"$0\")\")\n\"$HERE\"/conf.env\n");
        assert!(f.idioms.contains(&Idiom::Resolved));
        assert_eq!(f.siblings, BTreeSet::from(["conf.env".into()]));

        let f = facts(
            "#!/bin/sh\ncd \"$(dirname \"$0\")\" || exit 1\n. ./common.sh\n./other.sh \"$@\"\n",
        );
        assert_eq!(f.idioms, BTreeSet::from([Idiom::Dollar0]));
        assert!(f.siblings.contains("common.sh") && f.siblings.contains("other.sh"));
        assert_eq!(
            f.sources,
            vec![(3, SourceTarget::Sibling("common.sh".into()))]
        );

        let f = facts("#!/bin/sh\nfor t in \"${0%/*}\"/tests/*.sh; do sh \"$t\"; done\n");
        assert_eq!(f.dynamic, BTreeSet::from(["tests/…".into()]));
    }

    #[test]
    fn scripts_that_do_not_locate_themselves_reach_nothing_relative() {
        let f = facts("#!/bin/sh\n. ./env.sh\nsource lib/x.sh\necho \"$0 done\"\n");
        assert!(!f.self_locating());
        assert!(f.siblings.is_empty());
        assert_eq!(
            f.sources,
            vec![
                (2, SourceTarget::Named("env.sh".into())),
                (3, SourceTarget::Named("x.sh".into()))
            ]
        );
        let f = facts(
            "#!/bin/sh\nx=1; . /etc/profile\n[ -f a ] && . \"$HOME/.rc\"\necho . not-sourced\n",
        );
        assert_eq!(
            f.sources,
            vec![
                (2, SourceTarget::Absolute("/etc/profile".into())),
                (3, SourceTarget::Named(".rc".into()))
            ]
        );
    }
}
