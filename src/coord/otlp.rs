//! Optional OTLP/HTTP export of a span (JSON encoding) when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set: after the lock is released, with short timeouts, and a failure is only a warning, so
//! a collector that is down or slow never blocks or fails a claim. Plain `http://` endpoints
//! (a local collector or agent); no TLS, so no new dependency.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

use super::Context;
use super::spans::Span;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Export if configured; add a warning on failure.
pub fn export(ctx: &Context, span: &Span, warnings: &mut Vec<String>) {
    let Some(endpoint) = ctx.otlp_endpoint.as_deref() else {
        return;
    };
    if let Err(e) = post(endpoint, &body(ctx, span)) {
        warnings.push(format!(
            "OTLP export to {endpoint} failed ({e}); the span is in the span file"
        ));
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for one span.
pub fn body(ctx: &Context, span: &Span) -> Value {
    let start = span.start_unix_nanos();
    let end = start + span.duration.as_nanos();
    let attrs = |r: &Value| -> Vec<Value> {
        r.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Value::String(s) => json!({"stringValue": s}),
                            Value::Number(n) if n.is_u64() || n.is_i64() => {
                                json!({"intValue": n.to_string()})
                            }
                            Value::Number(n) => json!({"doubleValue": n.as_f64()}),
                            Value::Bool(b) => json!({"boolValue": b}),
                            other => json!({"stringValue": other.to_string()}),
                        };
                        json!({"key": k, "value": value})
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let resource = json!({
        "service.name": ctx.service_name,
        "service.version": ctx.service_version,
        "deployment.environment": ctx.deployment_env,
    });
    json!({"resourceSpans": [{
        "resource": {"attributes": attrs(&resource)},
        "scopeSpans": [{
            "scope": {"name": "beamops.coord"},
            "spans": [{
                "traceId": span.trace_id,
                "spanId": span.span_id,
                "parentSpanId": span.parent_span_id,
                "name": span.operation,
                "kind": 1,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": attrs(&span.attributes.to_value()),
                "status": {"code": if span.status == "ok" { 1 } else { 2 }},
            }]
        }]
    }]})
}

/// POST `body` to `<endpoint>/v1/traces`; Ok on a 2xx answer.
fn post(endpoint: &str, body: &Value) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are supported")?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let host_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host has no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.set_write_timeout(Some(TIMEOUT)).ok();
    let payload = body.to_string();
    let request = format!(
        "POST {base}/v1/traces HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("answer: {}", line.lines().next().unwrap_or("none")))
    }
}
