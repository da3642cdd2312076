//! Reading the files the legacy helper (or its no-jq fallback) left, as they are: objects keep
//! every key in their order, arrays may be concatenated objects, and span files may be
//! pretty-printed across lines with fragments that do not parse.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A JSON object that keeps its keys in file order, so a rewritten legacy file differs from
/// the original only where beamops changed something.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record(Vec<(String, Value)>);

impl Record {
    pub fn new() -> Self {
        Record(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Set `key`, in place when present (a duplicated key collapses to its first place).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.0[i].1 = value;
                let mut seen = false;
                self.0.retain(|(k, _)| {
                    if k != key {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.0.push((key.to_string(), value)),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.set(key, value);
        self
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// As a plain JSON value (keys sorted), for JSON reports.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.iter().cloned().collect())
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecordVisitor;
        impl<'de> Visitor<'de> for RecordVisitor {
            type Value = Record;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    entries.push((k, v));
                }
                Ok(Record(entries))
            }
        }
        deserializer.deserialize_map(RecordVisitor)
    }
}

/// One element of a legacy array file: an object, or anything else kept as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Record(Record),
    Other(Value),
}

impl Entry {
    pub fn record(&self) -> Option<&Record> {
        match self {
            Entry::Record(r) => Some(r),
            Entry::Other(_) => None,
        }
    }

    pub fn record_mut(&mut self) -> Option<&mut Record> {
        match self {
            Entry::Record(r) => Some(r),
            Entry::Other(_) => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Entry::Record(r) => r.to_value(),
            Entry::Other(v) => v.clone(),
        }
    }
}

/// Parse an array file: a JSON array, or (what the legacy helper writes without jq) a sequence
/// of objects and arrays one after another. Empty text is an empty array. `Err` carries the
/// parser's message with line and column.
pub fn parse_array(text: &str) -> Result<Vec<Entry>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let first = match serde_json::from_str::<Vec<Entry>>(text) {
        Ok(entries) => return Ok(entries),
        Err(e) => e,
    };
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Many(Vec<Entry>),
        One(Entry),
    }
    let mut entries = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Item>() {
        match item.map_err(|_| first.to_string())? {
            Item::Many(items) => entries.extend(items),
            Item::One(entry) => entries.push(entry),
        }
    }
    Ok(entries)
}

/// What a span file holds: spans that parse, text that does not (verbatim), and whether the
/// file already is JSON Lines (one value per line, newline-terminated, nothing else).
#[derive(Debug, Default)]
pub struct SpanScan {
    pub spans: Vec<Entry>,
    pub fragments: Vec<String>,
    pub is_json_lines: bool,
}

/// Read a span file however it was written: JSON Lines, pretty-printed objects spanning many
/// lines, or a mix, with broken fragments in between. After a fragment, reading resumes at the
/// next line that starts with `{`, where both the legacy writer and JSON Lines start a span.
pub fn scan_spans(text: &str) -> SpanScan {
    let mut scan = SpanScan {
        is_json_lines: true,
        ..SpanScan::default()
    };
    let mut pos = 0;
    let mut expect_at = 0;
    loop {
        let rest = &text[pos..];
        let skipped = rest.len() - rest.trim_start().len();
        let start = pos + skipped;
        if start >= text.len() {
            if pos != text.len() || (pos > 0 && !text.ends_with('\n')) {
                scan.is_json_lines = false;
            }
            break;
        }
        if start != expect_at {
            scan.is_json_lines = false;
        }
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Entry>();
        match stream.next() {
            Some(Ok(entry)) => {
                let end = start + stream.byte_offset();
                if text[start..end].contains('\n') {
                    scan.is_json_lines = false;
                }
                scan.spans.push(entry);
                // JSON Lines: exactly one newline after each span.
                if text[end..].starts_with('\n') {
                    pos = end + 1;
                    expect_at = pos;
                } else {
                    scan.is_json_lines = false;
                    pos = end;
                    expect_at = usize::MAX;
                }
            }
            Some(Err(_)) | None => {
                let next = next_span_start(text, start);
                scan.fragments.push(text[start..next].to_string());
                scan.is_json_lines = false;
                pos = next;
                expect_at = next;
            }
        }
    }
    scan
}

/// The byte offset of the next line after the one holding `from` that starts with `{`.
fn next_span_start(text: &str, from: usize) -> usize {
    let mut offset = match text[from..].find('\n') {
        Some(i) => from + i + 1,
        None => return text.len(),
    };
    while offset < text.len() {
        if text[offset..].starts_with('{') {
            return offset;
        }
        match text[offset..].find('\n') {
            Some(i) => offset += i + 1,
            None => return text.len(),
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_key_order_and_unknown_keys() {
        let text = r#"[{"z": 1, "a": {"y": 2}, "m": "x"}, 3]"#;
        let entries = parse_array(text).unwrap();
        let keys: Vec<&str> = entries[0].record().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(entries[1], Entry::Other(Value::from(3)));
        let back = serde_json::to_string(&entries).unwrap();
        assert_eq!(back, r#"[{"z":1,"a":{"y":2},"m":"x"},3]"#);
    }

    #[test]
    fn concatenated_objects_read_as_an_array() {
        let text = "{\"agent_id\": \"a\"}\n{\"agent_id\": \"b\"}\n[{\"agent_id\": \"c\"}]";
        let entries = parse_array(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(parse_array("[{\"a\": }").is_err());
        assert!(parse_array("  \n").unwrap().is_empty());
    }

    #[test]
    fn set_replaces_in_place() {
        let mut r = Record::new().with("a", 1).with("b", 2);
        r.set("a", 3);
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn span_files_of_every_shape() {
        let jsonl = "{\"a\":1}\n{\"b\":2}\n";
        let scan = scan_spans(jsonl);
        assert!(scan.is_json_lines && scan.spans.len() == 2 && scan.fragments.is_empty());
        assert!(scan_spans("").is_json_lines);
        assert!(!scan_spans("{\"a\":1}").is_json_lines);
        assert!(!scan_spans("{\"a\":1}\n\n{\"b\":1}\n").is_json_lines);

        let pretty = "{\n  \"a\": 1,\n  \"s\": {\n    \"x\": 2\n  }\n}\n{\n  \"broken\": ,\n  \"d\": 1\n}\n{\"c\":3}\n{\"torn\": \"ab";
        let scan = scan_spans(pretty);
        assert!(!scan.is_json_lines);
        assert_eq!(scan.spans.len(), 2);
        assert_eq!(
            scan.fragments,
            vec![
                "{\n  \"broken\": ,\n  \"d\": 1\n}\n".to_string(),
                "{\"torn\": \"ab".to_string()
            ]
        );
        // Nothing is lost: spans and fragments account for every non-blank byte.
        let kept: usize = scan.fragments.iter().map(|f| f.trim().len()).sum();
        assert!(kept > 0);
    }
}
