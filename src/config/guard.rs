//! Bounds checked on configuration text before any YAML parser sees it.
//!
//! The YAML parser reads the whole event stream before serde looks at it, and an alias makes
//! the deserializer replay its anchor's events: a 1 MB file of nested aliases (a "billion laughs")
//! takes gigabytes, and 100,000 nested `[` take the parser tens of seconds. A beamops.yaml is a
//! few kilobytes, five levels deep, with a handful of aliases at most; this cheap scan refuses
//! anything far beyond that, naming the place and the limit.

/// Larger than any real beamops.yaml by two orders of magnitude.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Nesting of mappings and sequences, block and flow; the schema itself is 5 deep.
pub const MAX_DEPTH: usize = 32;
/// Aliases (`*name`). With n aliases a chain of anchors expands to at most about 3^(n/3)
/// nodes: 32 keeps even the worst arrangement near 100,000 nodes.
pub const MAX_ALIASES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub fix: String,
}

/// Scan `source` (a YAML document) for the bounds above.
pub fn check(source: &str) -> Result<(), Exceeded> {
    if source.len() > MAX_BYTES {
        return Err(Exceeded {
            line: 1,
            column: 1,
            message: format!(
                "the file is {} bytes; beamops reads at most {MAX_BYTES} bytes of configuration",
                source.len()
            ),
            fix:
                "this is not a beamops.yaml: restore it from git, or write one with `beamops init`"
                    .into(),
        });
    }
    let mut aliases = 0usize;
    // Indentation of the open block collections, innermost last.
    let mut indents: Vec<usize> = Vec::new();
    // Inside a literal or folded block scalar (`|`, `>`) whose lines are indented past this.
    let mut block_scalar: Option<usize> = None;
    // Flow nesting (`[`, `{`) carries over lines.
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    for (n, line) in source.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if let Some(parent) = block_scalar {
            if trimmed.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&i| i < indent) {
                indents.push(indent);
            }
        }
        // Compact nested block sequences and keys on one line: `- - - x`, `? ? x`.
        let mut compact = 0usize;
        if quote.is_none() && flow == 0 {
            let mut rest = trimmed;
            while let Some(r) = rest
                .strip_prefix("- ")
                .or_else(|| rest.strip_prefix("? "))
                .or_else(|| (rest == "-" || rest == "?").then_some(""))
            {
                compact += 1;
                rest = r.trim_start_matches(' ');
            }
        }
        let depth_here = indents.len() + compact;
        if depth_here > MAX_DEPTH {
            return Err(too_deep(line_no, indent + 1));
        }
        let mut previous = ' ';
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match quote {
                Some('"') => {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        quote = None;
                    }
                }
                Some(_) => {
                    if c == '\'' {
                        // `''` is an escaped quote inside a single-quoted scalar.
                        if chars.peek().is_some_and(|&(_, next)| next == '\'') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                }
                None => {
                    let starts_token = matches!(previous, ' ' | '\t' | '[' | '{' | ',' | ':');
                    match c {
                        '#' if previous == ' ' || previous == '\t' || i == 0 => break,
                        '"' | '\'' if starts_token => quote = Some(c),
                        '[' | '{' => {
                            flow += 1;
                            if depth_here + flow > MAX_DEPTH {
                                return Err(too_deep(line_no, i + 1));
                            }
                        }
                        ']' | '}' => flow = flow.saturating_sub(1),
                        '*' if starts_token => {
                            aliases += 1;
                            if aliases > MAX_ALIASES {
                                return Err(Exceeded {
                                    line: line_no,
                                    column: i + 1,
                                    message: format!(
                                        "more than {MAX_ALIASES} aliases (`*name`); beamops refuses \
                                         to expand more, since each can repeat a whole anchored part"
                                    ),
                                    fix: "write the values out, or share fewer anchors".into(),
                                });
                            }
                        }
                        '|' | '>' if starts_token && flow == 0 => {
                            // A block scalar header ends the line (modifiers and a comment aside).
                            let rest = line[i + 1..].trim_start_matches([
                                '+', '-', '1', '2', '3', '4', '5', '6', '7', '8', '9',
                            ]);
                            let rest = rest.trim();
                            if rest.is_empty() || rest.starts_with('#') {
                                block_scalar = Some(indent);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            previous = c;
        }
    }
    Ok(())
}

fn too_deep(line: usize, column: usize) -> Exceeded {
    Exceeded {
        line,
        column,
        message: format!(
            "nested more than {MAX_DEPTH} levels deep; beamops.yaml's own keys nest 5 levels"
        ),
        fix: "flatten the value: docs/config.md shows every key's shape".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_config_passes() {
        let src = "version: 1\napp:\n  name: a # note [\n  otp_app: a\nenvironments:\n  local: {}\n  prod: &p\n    replicas: 2\n  prod2: *p\ndeploy:\n  release_command: |\n    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n    *a *b\n";
        assert_eq!(check(src), Ok(()));
        assert_eq!(
            check("a: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\nb: \"*c\"\n"),
            Ok(())
        );
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_its_place() {
        let src = format!(
            "version: 1\napp: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = check(&src).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("levels"), "{e:?}");
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let compact = format!("a:\n  {}x\n", "- ".repeat(40));
        assert!(check(&compact).is_err());
        let mut indented = String::new();
        for level in 0..40 {
            indented += &format!("{}k{level}:\n", " ".repeat(level));
        }
        assert_eq!(check(&indented).unwrap_err().line, MAX_DEPTH + 1);
    }

    #[test]
    fn many_aliases_and_big_files_are_refused() {
        let mut src = String::from("a: &a [x, x]\n");
        for i in 0..40 {
            src += &format!("b{i}: *a\n");
        }
        let e = check(&src).unwrap_err();
        assert!(e.message.contains("aliases"), "{e:?}");
        assert_eq!(e.line, MAX_ALIASES + 2);
        assert!(check(&"#".repeat(MAX_BYTES + 1)).is_err());
    }
}
