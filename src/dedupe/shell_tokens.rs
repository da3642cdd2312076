//! A shell lexer that knows quoting well enough to tell a comment from a `#` that is data.
//!
//! It is not a parser: it only has to split a script into words, operators, newlines and heredoc
//! bodies so that comments, blank lines and spacing can be dropped without ever touching a `#`
//! inside quotes, `${#var}`, `$#`, `$((16#ff))`, a heredoc body or the middle of a word.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word, or an operator whose spacing matters (redirections, parentheses); `spaced` says
    /// whether blanks came before it, because `2>x` and `2 >x` mean different things.
    Word {
        text: Vec<u8>,
        spaced: bool,
    },
    /// `;` `&` `|` `&&` `||` `;;` `|&`…: blanks around these never change the meaning.
    Control(Vec<u8>),
    Newline,
    /// A heredoc body, byte for byte: everything in it is data.
    Heredoc(Vec<u8>),
    /// `#!…` on the first line picks the interpreter, so it is not a comment.
    Shebang(Vec<u8>),
}

/// Split `src` into tokens, dropping comments, blank lines and insignificant blanks.
pub fn tokenize(src: &[u8]) -> Vec<Token> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        pending_heredocs: Vec::new(),
    };
    let mut tokens = Vec::new();
    if src.starts_with(b"#!") {
        let end = src.iter().position(|&b| b == b'\n').unwrap_or(src.len());
        tokens.push(Token::Shebang(trim_end(&src[..end]).to_vec()));
        lexer.pos = end;
    }
    lexer.commands(&mut tokens, false);
    while tokens.last() == Some(&Token::Newline) {
        tokens.pop();
    }
    tokens
}

/// The canonical text of a script: equal for two scripts that differ only in comments, blank
/// lines and spacing, different otherwise.
pub fn normalize(src: &[u8]) -> Vec<u8> {
    render(&tokenize(src))
}

pub fn render(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut after_control = false;
    for token in tokens {
        match token {
            Token::Word { text, spaced } => {
                if !line_start && (*spaced || after_control) {
                    out.push(b' ');
                }
                out.extend_from_slice(text);
                line_start = false;
                after_control = false;
            }
            Token::Control(op) => {
                if !line_start {
                    out.push(b' ');
                }
                out.extend_from_slice(op);
                line_start = false;
                after_control = true;
            }
            Token::Newline => {
                out.push(b'\n');
                line_start = true;
                after_control = false;
            }
            Token::Heredoc(body) => {
                // A marker byte keeps a body from ever reading like commands.
                out.push(0x01);
                out.extend_from_slice(body);
                out.push(0x01);
                out.push(b'\n');
                line_start = true;
            }
            Token::Shebang(line) => {
                out.extend_from_slice(line);
                out.push(b'\n');
                line_start = true;
            }
        }
    }
    out
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn is_meta(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')'
    )
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Heredocs opened on the current line: (delimiter, strip leading tabs).
    pending_heredocs: Vec<(Vec<u8>, bool)>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.src.get(self.pos + offset).copied()
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.src[self.pos..].starts_with(s)
    }

    /// Lex commands until the end, or (inside `$(`) until its unmatched `)`.
    fn commands(&mut self, tokens: &mut Vec<Token>, in_subst: bool) {
        let mut spaced = true;
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => {
                    self.pos += 1;
                    spaced = true;
                }
                b'\\' if self.peek_at(1) == Some(b'\n') => {
                    self.pos += 2;
                    spaced = true;
                }
                b'\n' => {
                    self.pos += 1;
                    if !matches!(tokens.last(), None | Some(Token::Newline)) {
                        tokens.push(Token::Newline);
                    }
                    self.heredoc_bodies(tokens);
                    spaced = true;
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                b';' | b'|' | b'&' => {
                    if self.starts_with(b"&>>") || self.starts_with(b"&>") {
                        let len = if self.starts_with(b"&>>") { 3 } else { 2 };
                        self.word_op(tokens, len, spaced);
                    } else {
                        let len = [&b";;&"[..], b";;", b";&", b"&&", b"||", b"|&"]
                            .iter()
                            .find(|op| self.starts_with(op))
                            .map_or(1, |op| op.len());
                        tokens.push(Token::Control(self.src[self.pos..self.pos + len].to_vec()));
                        self.pos += len;
                    }
                    spaced = false;
                }
                b'<' | b'>' => {
                    self.redirection(tokens, spaced);
                    spaced = false;
                }
                b'(' => {
                    depth += 1;
                    self.word_op(tokens, 1, spaced);
                    spaced = false;
                }
                b')' => {
                    if in_subst && depth == 0 {
                        return;
                    }
                    depth = depth.saturating_sub(1);
                    self.word_op(tokens, 1, spaced);
                    spaced = false;
                }
                _ => {
                    let text = self.word();
                    tokens.push(Token::Word { text, spaced });
                    spaced = false;
                }
            }
        }
    }

    fn word_op(&mut self, tokens: &mut Vec<Token>, len: usize, spaced: bool) {
        tokens.push(Token::Word {
            text: self.src[self.pos..self.pos + len].to_vec(),
            spaced,
        });
        self.pos += len;
    }

    fn redirection(&mut self, tokens: &mut Vec<Token>, spaced: bool) {
        if self.starts_with(b"<(") || self.starts_with(b">(") {
            // Process substitution is a word, like `$(`.
            let text = self.word();
            tokens.push(Token::Word { text, spaced });
            return;
        }
        if self.starts_with(b"<<<") {
            self.word_op(tokens, 3, spaced);
            return;
        }
        if self.starts_with(b"<<") {
            let strip_tabs = self.peek_at(2) == Some(b'-');
            self.word_op(tokens, if strip_tabs { 3 } else { 2 }, spaced);
            let mut delim_spaced = false;
            while self.peek().is_some_and(is_blank) {
                self.pos += 1;
                delim_spaced = true;
            }
            if self.peek().is_some_and(|c| !is_meta(c)) {
                let text = self.word();
                let delimiter = unquote(&text);
                tokens.push(Token::Word {
                    text,
                    spaced: delim_spaced,
                });
                self.pending_heredocs.push((delimiter, strip_tabs));
            }
            return;
        }
        let len = [&b">>"[..], b"<&", b">&", b"<>", b">|"]
            .iter()
            .find(|op| self.starts_with(op))
            .map_or(1, |op| op.len());
        self.word_op(tokens, len, spaced);
    }

    /// Read the bodies of the heredocs opened on the line that just ended.
    fn heredoc_bodies(&mut self, tokens: &mut Vec<Token>) {
        for (delimiter, strip_tabs) in std::mem::take(&mut self.pending_heredocs) {
            let start = self.pos;
            let mut body_end = self.src.len();
            while self.pos < self.src.len() {
                let line_end = self.src[self.pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.src.len(), |i| self.pos + i);
                let mut line = &self.src[self.pos..line_end];
                if strip_tabs {
                    while line.first() == Some(&b'\t') {
                        line = &line[1..];
                    }
                }
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let at = self.pos;
                self.pos = (line_end + 1).min(self.src.len());
                if line == delimiter.as_slice() {
                    body_end = at;
                    break;
                }
            }
            let mut body = self.src[start..body_end.min(self.pos)].to_vec();
            body.extend_from_slice(b"\x02");
            body.extend_from_slice(&delimiter);
            tokens.push(Token::Heredoc(body));
            tokens.push(Token::Newline);
        }
    }

    /// One word, quotes and expansions included, up to an unquoted metacharacter.
    fn word(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            match b {
                b'\\' => {
                    if self.peek_at(1) == Some(b'\n') {
                        self.pos += 2;
                    } else {
                        let end = (self.pos + 2).min(self.src.len());
                        out.extend_from_slice(&self.src[self.pos..end]);
                        self.pos = end;
                    }
                }
                b'\'' => self.single_quoted(&mut out),
                b'"' => self.double_quoted(&mut out),
                b'`' => self.backquoted(&mut out),
                b'$' => self.dollar(&mut out),
                b'<' | b'>' if self.peek_at(1) == Some(b'(') => {
                    out.push(b);
                    out.push(b'(');
                    self.pos += 2;
                    self.substitution(&mut out);
                }
                _ if is_meta(b) => break,
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        out
    }

    fn single_quoted(&mut self, out: &mut Vec<u8>) {
        let start = self.pos;
        self.pos += 1;
        while self.peek().is_some_and(|c| c != b'\'') {
            self.pos += 1;
        }
        self.pos = (self.pos + 1).min(self.src.len());
        out.extend_from_slice(&self.src[start..self.pos]);
    }

    fn double_quoted(&mut self, out: &mut Vec<u8>) {
        out.push(b'"');
        self.pos += 1;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    out.push(b'"');
                    self.pos += 1;
                    return;
                }
                b'\\' => {
                    let end = (self.pos + 2).min(self.src.len());
                    out.extend_from_slice(&self.src[self.pos..end]);
                    self.pos = end;
                }
                b'`' => self.backquoted(out),
                b'$' => self.dollar(out),
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn backquoted(&mut self, out: &mut Vec<u8>) {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => self.pos = (self.pos + 1).min(self.src.len()),
                b'`' => break,
                _ => {}
            }
        }
        out.extend_from_slice(&self.src[start..self.pos]);
    }

    /// `$'…'`, `$((…))`, `$(…)`, `${…}`, or a plain `$name`/`$#`/`$$`.
    fn dollar(&mut self, out: &mut Vec<u8>) {
        if self.starts_with(b"$'") {
            let start = self.pos;
            self.pos += 2;
            while let Some(b) = self.peek() {
                self.pos += 1;
                match b {
                    b'\\' => self.pos = (self.pos + 1).min(self.src.len()),
                    b'\'' => break,
                    _ => {}
                }
            }
            out.extend_from_slice(&self.src[start..self.pos]);
        } else if self.starts_with(b"$((") {
            self.balanced(out, 3, b'(', b')', 2);
        } else if self.starts_with(b"$(") {
            out.extend_from_slice(b"$(");
            self.pos += 2;
            self.substitution(out);
        } else if self.starts_with(b"${") {
            self.balanced(out, 2, b'{', b'}', 1);
        } else {
            // `$#`, `$$`, `$?`…: the character after `$` is data, never a comment.
            let end = (self.pos + 2).min(self.src.len());
            let next = self.peek_at(1);
            if next.is_some_and(|c| !is_meta(c) && c != b'"' && c != b'\'' && c != b'\\') {
                out.extend_from_slice(&self.src[self.pos..end]);
                self.pos = end;
            } else {
                out.push(b'$');
                self.pos += 1;
            }
        }
    }

    /// Copy an expansion whose inside is data (`${…}`, `$((…))`) up to its closing bracket.
    fn balanced(
        &mut self,
        out: &mut Vec<u8>,
        open_len: usize,
        open: u8,
        close: u8,
        closers: usize,
    ) {
        let start = self.pos;
        self.pos += open_len;
        let mut depth = closers;
        while let Some(b) = self.peek() {
            match b {
                b'\\' => {
                    self.pos = (self.pos + 2).min(self.src.len());
                    continue;
                }
                b'\'' if open == b'{' => {
                    let mut scratch = Vec::new();
                    self.single_quoted(&mut scratch);
                    continue;
                }
                b'"' => {
                    let mut scratch = Vec::new();
                    self.double_quoted(&mut scratch);
                    continue;
                }
                _ if b == open => depth += 1,
                _ if b == close => depth -= 1,
                _ => {}
            }
            self.pos += 1;
            if depth == 0 {
                break;
            }
        }
        out.extend_from_slice(&self.src[start..self.pos]);
    }

    /// The inside of `$(…)` / `<(…)` is commands of its own, comments and all.
    fn substitution(&mut self, out: &mut Vec<u8>) {
        let mut inner = Vec::new();
        self.commands(&mut inner, true);
        while inner.last() == Some(&Token::Newline) {
            inner.pop();
        }
        while inner.first() == Some(&Token::Newline) {
            inner.remove(0);
        }
        out.extend_from_slice(&render(&inner));
        if self.peek() == Some(b')') {
            self.pos += 1;
        }
        out.push(b')');
    }
}

/// A heredoc delimiter as the shell compares it: quotes and backslashes removed.
fn unquote(word: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < word.len() {
        match word[i] {
            b'\'' | b'"' => {}
            b'\\' if i + 1 < word.len() => {
                i += 1;
                out.push(word[i]);
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The tokens as byte strings for shingling (heredoc bodies split into their words).
pub fn shingle_units(tokens: &[Token]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    for token in tokens {
        match token {
            Token::Word { text, .. } | Token::Control(text) | Token::Shebang(text) => {
                units.push(text.as_slice())
            }
            Token::Newline => units.push(b"\n".as_slice()),
            Token::Heredoc(body) => units.extend(
                body.split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty()),
            ),
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        String::from_utf8_lossy(&normalize(s.as_bytes())).into_owned()
    }

    fn same(a: &str, b: &str) -> bool {
        normalize(a.as_bytes()) == normalize(b.as_bytes())
    }

    #[test]
    fn comments_blank_lines_and_spacing_do_not_matter() {
        let a = "#!/bin/sh\n# header\nset -e\n\n  echo   hi   # trailing\n\tfoo | bar;baz\n";
        let b = "#!/bin/sh\nset -e\necho hi\nfoo|bar ; baz   \n\n# end\n";
        assert!(same(a, b), "{:?} vs {:?}", norm(a), norm(b));
    }

    #[test]
    fn a_hash_inside_quotes_is_data() {
        assert!(!same("echo \"a # b\"\n", "echo \"a # c\"\n"));
        assert!(!same("echo 'a # b'\n", "echo 'a # c'\n"));
        assert!(!same("echo $'a # b'\n", "echo $'a # c'\n"));
        assert!(!same(
            "echo \"$(echo \"x # y\")\"\n",
            "echo \"$(echo \"x # z\")\"\n"
        ));
        assert!(norm("echo \"a # b\" # real\n").contains("a # b"));
        assert!(!norm("echo \"a # b\" # real\n").contains("real"));
    }

    #[test]
    fn a_hash_inside_a_heredoc_is_data() {
        let a = "cat <<EOF\nline # one\nEOF\necho done\n";
        let b = "cat <<EOF\nline # two\nEOF\necho done\n";
        assert!(!same(a, b));
        let quoted = "cat <<-'END' > f\n\tx # y\n\tEND\n# gone\necho ok\n";
        assert!(norm(quoted).contains("x # y"));
        assert!(!norm(quoted).contains("gone"));
        assert!(norm(quoted).ends_with("echo ok"));
    }

    #[test]
    fn parameter_forms_with_hash_are_data() {
        assert!(!same("echo ${#a}\n", "echo ${#b}\n"));
        assert!(!same("echo $# x\n", "echo $# y\n"));
        assert!(!same("echo ${v#pre} x\n", "echo ${v#pre} y\n"));
        assert!(!same("echo $((16#ff)) x\n", "echo $((16#ff)) y\n"));
        assert!(!same("echo a#b x\n", "echo a#b y\n"));
    }

    #[test]
    fn comments_inside_command_substitution_are_dropped() {
        assert!(same("x=$(ls # list\n)\n", "x=$(ls)\n"));
    }

    #[test]
    fn significant_spacing_is_kept() {
        assert!(!same("echo 2>x\n", "echo 2 >x\n"));
        assert!(!same("echo a b\n", "echo ab\n"));
        assert!(!same("echo 'a  b'\n", "echo 'a b'\n"));
        assert!(!same("#!/bin/sh\necho\n", "#!/bin/bash\necho\n"));
    }

    #[test]
    fn line_continuations_are_blanks() {
        assert!(same("echo a \\\n  b\n", "echo a b\n"));
    }
}
