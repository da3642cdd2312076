//! Telemetry spans: one per change, written to `telemetry_spans.jsonl` as real JSON Lines in
//! the legacy span shape, its `trace_id` the work item's. A span file the legacy helper wrote
//! (pretty-printed, with broken fragments) is rewritten as JSON Lines once, its unparseable
//! text moved verbatim to `telemetry_spans.unparsed.txt` and reported once.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::legacy::{self, Entry, Record};
use super::store::Locked;
use super::{Context, SPANS_FILE, UNPARSED_SPANS_FILE};

#[derive(Debug, Clone)]
pub struct Span {
    pub operation: String,
    /// `ok` or `error`.
    pub status: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub start: SystemTime,
    pub duration: Duration,
    pub attributes: Record,
}

impl Span {
    pub fn new(ctx: &Context, operation: &str, trace_id: &str, span_id: &str) -> Span {
        Span {
            operation: operation.to_string(),
            status: "ok".into(),
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
            parent_span_id: ctx.parent_span_id.clone().unwrap_or_default(),
            start: SystemTime::now(),
            duration: Duration::ZERO,
            attributes: Record::new(),
        }
    }

    /// The legacy helper's span object, key for key.
    pub fn to_record(&self, ctx: &Context) -> Record {
        let service = serde_json::json!({"name": ctx.service_name, "version": ctx.service_version});
        let resource = Record::new()
            .with("service.name", ctx.service_name.as_str())
            .with("service.version", ctx.service_version.as_str())
            .with("s2s.component", "coordination_helper")
            .with("deployment.environment", ctx.deployment_env.as_str());
        Record::new()
            .with("trace_id", self.trace_id.as_str())
            .with("span_id", self.span_id.as_str())
            .with("parent_span_id", self.parent_span_id.as_str())
            .with("operation_name", self.operation.as_str())
            .with("span_kind", "internal")
            .with("status", self.status.as_str())
            .with(
                "start_time",
                humantime::format_rfc3339_millis(self.start).to_string(),
            )
            .with("duration_ms", self.duration.as_millis() as u64)
            .with("service", service)
            .with("resource_attributes", record_value(&resource))
            .with("span_attributes", record_value(&self.attributes))
    }

    pub fn start_unix_nanos(&self) -> u128 {
        self.start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }
}

/// A record as a JSON value for nesting (nested objects are written with sorted keys).
fn record_value(record: &Record) -> Value {
    record.to_value()
}

/// Append one span as one line. When the span file is not (or may no longer be) JSON Lines,
/// it is first rewritten as JSON Lines; returns the warnings to report.
pub fn append(lock: &mut Locked<'_>, ctx: &Context, span: &Span) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let path = lock.store().path(SPANS_FILE);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if len > 0 && lock.spans_hint() != Some(len) {
        // Forget the hint first: if this process dies mid-way, the next one scans again.
        lock.set_spans_hint(None);
        warnings.extend(normalise(lock)?);
    }
    let mut line = serde_json::to_vec(&span.to_record(ctx))?;
    line.push(b'\n');
    let new_len = lock.append(SPANS_FILE, &line)?;
    lock.set_spans_hint(Some(new_len));
    Ok(warnings)
}

/// Make the span file JSON Lines: every span that parses on a line of its own, every fragment
/// that does not moved (first, and synced) to the unparsed file, so none is ever lost.
fn normalise(lock: &Locked<'_>) -> Result<Vec<String>> {
    let store = lock.store();
    let Some(text) = store.read_text(SPANS_FILE)? else {
        return Ok(Vec::new());
    };
    let scan = legacy::scan_spans(&text);
    if scan.is_json_lines {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    if !scan.fragments.is_empty() {
        let unparsed = store.path(UNPARSED_SPANS_FILE);
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&unparsed)
            .with_context(|| format!("opening {}", unparsed.display()))?;
        let now = humantime::format_rfc3339_seconds(SystemTime::now());
        let mut out = String::new();
        for fragment in &scan.fragments {
            out += &format!(
                "# beamops moved this text from {SPANS_FILE} at {now}: it does not parse as JSON\n{fragment}"
            );
            if !fragment.ends_with('\n') {
                out.push('\n');
            }
        }
        file.write_all(out.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", unparsed.display()))?;
        warnings.push(format!(
            "{}: {} fragment(s) did not parse as JSON; kept verbatim in {}",
            store.path(SPANS_FILE).display(),
            scan.fragments.len(),
            unparsed.display()
        ));
    }
    let mut bytes = Vec::with_capacity(text.len());
    for span in &scan.spans {
        serde_json::to_writer(&mut bytes, span)?;
        bytes.push(b'\n');
    }
    lock.write(SPANS_FILE, &bytes, true)?;
    lock.sync_dir()?;
    Ok(warnings)
}

/// Every span of a span file, however it was written (for reports and tests).
pub fn read_all(text: &str) -> Vec<Entry> {
    legacy::scan_spans(text).spans
}
