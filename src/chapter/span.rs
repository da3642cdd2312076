//! The line of a value in a manifest's YAML text, for errors that name it.
//!
//! serde_yaml_ng keeps no spans in what it deserializes, but it stamps an error a visitor raises
//! with the position of the event being read. So to find `files[2].mode`, one more parse walks
//! down that path only and fails on purpose at the value: the error's location is the value's
//! line. The text is read by the same YAML parser that read the manifest (flow style, block
//! scalars, comments, quoting), not by matching lines; and only a manifest with a problem pays
//! for it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a manifest: a mapping key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Step<'a> {
    fn from(key: &'a str) -> Self {
        Step::Key(key)
    }
}

impl From<usize> for Step<'_> {
    fn from(index: usize) -> Self {
        Step::Index(index)
    }
}

/// The 1-based line where the value at `path` starts (for a mapping, its first key), or `None`
/// when the text has no such value (or does not parse: its parse error has the line then).
pub fn line(text: &str, path: &[Step]) -> Option<usize> {
    let err = Probe(path)
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .err()?;
    err.to_string()
        .contains(HERE)
        .then(|| err.location().map(|l| l.line()))
        .flatten()
}

/// The closest line [`line`] finds: `path`, else the nearest enclosing value that exists (a
/// missing `marker:` is reported at its file entry), else 1.
pub fn line_or_parent(text: &str, path: &[Step]) -> usize {
    (0..=path.len())
        .rev()
        .find_map(|n| line(text, &path[..n]))
        .unwrap_or(1)
}

/// `file:line`, the prefix of a manifest error.
pub fn at(file: &str, text: &str, path: &[Step]) -> String {
    format!("{file}:{}", line_or_parent(text, path))
}

/// A serde_yaml_ng error as `file:line: message`: its own location moved to the front, where
/// editors and people look for it.
pub fn parse_error(file: &str, text: &str, err: &serde_yaml_ng::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            let message = message.replacen(&suffix, "", 1);
            let line = unknown_field_line(text, &message).unwrap_or(l.line());
            format!("{file}:{line}: {message}")
        }
        None => format!("{file}: {message}"),
    }
}

/// serde reads an action (a mapping tagged by its `action:` key) whole before it looks at its
/// fields, so an unknown field in one is reported at the start of the list (`actions: unknown
/// field …`). The line of the field itself: the first element of that list that has the key
/// (serde reads them in order, so it is the one it stopped at).
fn unknown_field_line(text: &str, message: &str) -> Option<usize> {
    let (path, rest) = message.split_once(": unknown field `")?;
    let field = rest.split('`').next()?;
    if path.contains(['[', ' ']) {
        return None;
    }
    let list: Vec<Step> = path.split('.').map(Step::Key).collect();
    (0..)
        .map_while(|i| {
            let mut element = list.clone();
            element.push(Step::Index(i));
            line(text, &element)?;
            element.push(Step::Key(field));
            Some(line(text, &element))
        })
        .flatten()
        .next()
}

/// The message the probe fails with, to tell its error from a real one.
const HERE: &str = "\u{0}beamops-span-probe";

struct Probe<'p>(&'p [Step<'p>]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Probe<'_> {
    /// At the end of the path: fail here, so the error carries this value's position.
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(HERE))
        } else {
            // A scalar where the path goes deeper: there is no such value.
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (index, rest) = match self.0.split_first() {
            None => return Err(de::Error::custom(HERE)),
            Some((Step::Index(i), rest)) => (*i, rest),
            Some((Step::Key(_), _)) => return Ok(()),
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe(rest)).map(|_| ())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (key, rest) = match self.0.split_first() {
            None => return Err(de::Error::custom(HERE)),
            Some((Step::Key(k), rest)) => (*k, rest),
            Some((Step::Index(_), _)) => return Ok(()),
        };
        while let Some(k) = map.next_key::<KeyText>()? {
            if k.0.as_deref() == Some(key) {
                return map.next_value_seed(Probe(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): the tag's position is the value's.
        if self.0.is_empty() {
            return Err(de::Error::custom(HERE));
        }
        let (_, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

/// A mapping key as text; a key that is no scalar (YAML allows it, manifests never use one)
/// matches nothing.
struct KeyText(Option<String>);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::{Step, line, line_or_parent};

    const TEXT: &str = "\
id: 13 # a comment
slug: extra
summary: >
  folded text
  over lines
needs: [swarm, foundation]
files:
  - template: a.j2
    path: a
  - {template: b.j2, path: b}
  -
    template: c.j2
    mode: \"0x755\"
    when: |
      project.phoenix
actions:
  - action: git-repository
  - action: stack-converged
    stack: \"{{ app.stack }}-x\"
";

    #[test]
    fn a_value_is_found_at_its_line_whatever_the_yaml_style() {
        use Step::{Index as I, Key as K};
        assert_eq!(line(TEXT, &[K("id")]), Some(1));
        assert_eq!(line(TEXT, &[K("summary")]), Some(3));
        assert_eq!(line(TEXT, &[K("needs"), I(1)]), Some(6));
        assert_eq!(line(TEXT, &[K("files"), I(0)]), Some(8));
        assert_eq!(line(TEXT, &[K("files"), I(0), K("path")]), Some(9));
        assert_eq!(line(TEXT, &[K("files"), I(1), K("path")]), Some(10));
        assert_eq!(line(TEXT, &[K("files"), I(2)]), Some(12));
        assert_eq!(line(TEXT, &[K("files"), I(2), K("mode")]), Some(13));
        assert_eq!(line(TEXT, &[K("files"), I(2), K("when")]), Some(14));
        assert_eq!(line(TEXT, &[K("actions"), I(1)]), Some(18));
        assert_eq!(line(TEXT, &[K("actions"), I(1), K("stack")]), Some(19));
    }

    #[test]
    fn a_parse_error_names_the_line_of_the_unknown_key() {
        let text = "id: 13\nactions:\n  - action: git-repository\n  - action: stack-converged\n    file: x\n    stak: y\n";
        let err = serde_yaml_ng::from_str::<crate::chapter::Manifest>(text).unwrap_err();
        let message = super::parse_error("m.yaml", text, &err);
        assert!(message.starts_with("m.yaml:6: "), "{message}");
        assert!(message.contains("unknown field `stak`"), "{message}");
        assert!(!message.contains("at line"), "{message}");
    }

    #[test]
    fn a_missing_value_is_none_and_its_nearest_parent_stands_in() {
        use Step::{Index as I, Key as K};
        assert_eq!(line(TEXT, &[K("files"), I(0), K("marker")]), None);
        assert_eq!(line(TEXT, &[K("files"), I(9)]), None);
        assert_eq!(line(TEXT, &[K("id"), K("deeper")]), None);
        assert_eq!(line(TEXT, &[K("nowhere")]), None);
        assert_eq!(
            line_or_parent(TEXT, &[K("files"), I(0), K("marker")]),
            8,
            "the file entry stands in for its missing marker"
        );
        assert_eq!(line_or_parent("id: [", &[K("id")]), 1, "unparsable text");
    }
}
