//! Work items: claim, progress, complete, list. Each change is one read-modify-write of
//! `work_claims.json` under the lock; the replace of that file is the commit point, and what
//! follows it (agent status, log, velocity, span) only adds warnings, never a failure that
//! would make a caller retry a change that is already stored.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::agents::{self, Agent};
use super::legacy::{Entry, Record};
use super::spans::{self, Span};
use super::{CLAIMS_FILE, Context, CoordError, LOG_FILE, Store, VELOCITY_FILE, ids};

pub fn now_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub work_type: String,
    pub description: String,
    pub priority: String,
    pub team: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Claimed {
    pub work_item_id: String,
    pub agent_id: String,
    pub team: String,
    pub trace_id: String,
    pub span_id: String,
    pub claimed_at: String,
    pub warnings: Vec<String>,
}

/// Store a new claim with a fresh id (never a conflict: an id already in the file is drawn
/// again), register its agent, and log its span.
pub fn claim(store: &Store, ctx: &Context, req: &ClaimRequest) -> Result<Claimed> {
    let started = Instant::now();
    let trace_id = ctx.trace_id.clone().unwrap_or_else(ids::trace_id);
    let span_id = ids::span_id();
    let agent_id = ctx.agent_id.clone().unwrap_or_else(ids::agent_id);
    let mut span = Span::new(ctx, "s2s.work.claim", &trace_id, &span_id);

    let mut lock = store.lock(ctx.lock_wait)?;
    let mut claims = lock.read_array(CLAIMS_FILE)?;
    let taken: HashSet<&str> = claims
        .iter()
        .filter_map(|e| e.record()?.str("work_item_id"))
        .collect();
    let mut work_item_id = ids::work_id();
    while taken.contains(work_item_id.as_str()) {
        work_item_id = ids::work_id();
    }
    let claimed_at = now_seconds();
    let telemetry = Record::new()
        .with("trace_id", trace_id.as_str())
        .with("span_id", span_id.as_str())
        .with("operation", "s2s.work.claim")
        .with("service", ctx.service_name.as_str());
    let record = Record::new()
        .with("work_item_id", work_item_id.as_str())
        .with("agent_id", agent_id.as_str())
        .with("reactor_id", "shell_agent")
        .with("claimed_at", claimed_at.as_str())
        .with("estimated_duration", "30m")
        .with("work_type", req.work_type.as_str())
        .with("priority", req.priority.as_str())
        .with("description", req.description.as_str())
        .with("status", "active")
        .with("team", req.team.as_str())
        .with("telemetry", telemetry.to_value());
    claims.push(Entry::Record(record));
    lock.write_array(CLAIMS_FILE, &claims, true)?;

    // Replaced. From here on, trouble is a warning, except the sync that makes it stored.
    let mut warnings = Vec::new();
    let agent = Agent::new(&agent_id, &req.team, 100, super::DEFAULT_SPECIALIZATION);
    if let Err(e) = agents::upsert(&lock, &agent, false) {
        warnings.push(format!(
            "the claim is stored, but registering the agent failed: {e:#}"
        ));
    }
    lock.sync_dir()?;
    span.duration = started.elapsed();
    span.attributes = Record::new()
        .with("s2s.work_item_id", work_item_id.as_str())
        .with("s2s.agent_id", agent_id.as_str())
        .with("s2s.work_type", req.work_type.as_str())
        .with("s2s.priority", req.priority.as_str())
        .with("s2s.team", req.team.as_str())
        .with("s2s.operation", "work_claim")
        .with("s2s.status", "success");
    log_span(&mut lock, ctx, &span, &mut warnings);
    drop(lock);
    super::otlp::export(ctx, &span, &mut warnings);
    Ok(Claimed {
        work_item_id,
        agent_id,
        team: req.team.clone(),
        trace_id,
        span_id,
        claimed_at,
        warnings,
    })
}

fn log_span(
    lock: &mut super::store::Locked<'_>,
    ctx: &Context,
    span: &Span,
    warnings: &mut Vec<String>,
) {
    match spans::append(lock, ctx, span) {
        Ok(w) => warnings.extend(w),
        Err(e) => warnings.push(format!(
            "the change is stored, but its span was not logged: {e:#}"
        )),
    }
}

/// The work id to act on: the argument, else `$CURRENT_WORK_ITEM`.
pub fn work_id_or_current(arg: Option<&str>, ctx: &Context) -> Result<String, CoordError> {
    arg.filter(|a| !a.is_empty())
        .map(str::to_string)
        .or_else(|| ctx.current_work_item.clone())
        .ok_or(CoordError::NoWorkId)
}

/// A percentage from 0 to 100 (decimals allowed, as the legacy `tonumber` took them; a
/// trailing `%` is tolerated), as the JSON number to store.
pub fn parse_percent(text: &str) -> Result<Value, CoordError> {
    let bad = || CoordError::BadValue {
        what: "percent",
        value: text.to_string(),
        expected: "a number from 0 to 100",
    };
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix('%').unwrap_or(trimmed);
    if let Ok(n) = trimmed.parse::<u64>() {
        return if n <= 100 {
            Ok(Value::from(n))
        } else {
            Err(bad())
        };
    }
    match trimmed.parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=100.0).contains(&f) => Ok(Value::from(f)),
        _ => Err(bad()),
    }
}

/// A whole number for fields the legacy helper wrote as bare JSON numbers.
pub fn parse_count(what: &'static str, text: &str) -> Result<u64, CoordError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| CoordError::BadValue {
            what,
            value: text.to_string(),
            expected: "a whole number",
        })
}

#[derive(Debug, Clone, Serialize)]
pub struct Progressed {
    pub work_item_id: String,
    pub progress: Value,
    pub status: String,
    pub trace_id: String,
    pub last_update: String,
    pub warnings: Vec<String>,
}

/// Completed means `complete` ran: it set `completed_at` and credited the velocity once. An
/// item `progress 100 completed` only marked may still be completed.
fn refuse_if_completed(record: &Record, work_item_id: &str) -> Result<()> {
    match record.str("completed_at") {
        Some(at) => Err(CoordError::AlreadyCompleted {
            id: work_item_id.to_string(),
            at: at.to_string(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Record progress on a claimed item; an unknown id changes nothing and is an error.
pub fn progress(
    store: &Store,
    ctx: &Context,
    work_item_id: &str,
    percent: &str,
    status: &str,
) -> Result<Progressed> {
    let started = Instant::now();
    let progress = parse_percent(percent)?;
    let mut lock = store.lock(ctx.lock_wait)?;
    let mut claims = lock.read_array(CLAIMS_FILE)?;
    let last_update = now_seconds();
    let mut trace_id = ctx.trace_id.clone();
    let mut found = false;
    for record in matching(&mut claims, work_item_id) {
        // A completed item stays completed: progress would re-open it, and its next
        // `complete` would credit its velocity twice.
        refuse_if_completed(record, work_item_id)?;
        found = true;
        // The item's own trace unless the caller forces one: one trace per work item.
        let claim_trace = record
            .get("telemetry")
            .and_then(|t| t.get("trace_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let trace = trace_id
            .get_or_insert_with(|| claim_trace.unwrap_or_else(ids::trace_id))
            .clone();
        record.set("status", status);
        record.set("progress", progress.clone());
        record.set("last_update", last_update.as_str());
        let mut telemetry = match record.get("telemetry") {
            Some(Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        telemetry.insert("last_progress_trace_id".into(), Value::from(trace));
        record.set("telemetry", Value::Object(telemetry));
    }
    if !found {
        return Err(unknown(store, work_item_id).into());
    }
    lock.write_array(CLAIMS_FILE, &claims, true)?;
    lock.sync_dir()?;
    let trace_id = trace_id.unwrap_or_else(ids::trace_id);
    let mut warnings = Vec::new();
    let mut span = Span::new(ctx, "s2s.work.progress", &trace_id, &ids::span_id());
    span.duration = started.elapsed();
    span.attributes = Record::new()
        .with("s2s.work_item_id", work_item_id)
        .with("s2s.progress_percent", progress.clone())
        .with("s2s.status", status)
        .with("s2s.operation", "progress_update");
    log_span(&mut lock, ctx, &span, &mut warnings);
    drop(lock);
    super::otlp::export(ctx, &span, &mut warnings);
    Ok(Progressed {
        work_item_id: work_item_id.to_string(),
        progress,
        status: status.to_string(),
        trace_id,
        last_update,
        warnings,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Completed {
    pub work_item_id: String,
    pub result: String,
    pub velocity_points: u64,
    pub team: String,
    pub completed_at: String,
    pub warnings: Vec<String>,
}

/// Mark an item completed, add it to the coordination log and credit the velocity.
pub fn complete(
    store: &Store,
    ctx: &Context,
    work_item_id: &str,
    result: &str,
    velocity_points: &str,
) -> Result<Completed> {
    let started = Instant::now();
    let points = parse_count("velocity points", velocity_points)?;
    let mut lock = store.lock(ctx.lock_wait)?;
    let mut claims = lock.read_array(CLAIMS_FILE)?;
    let completed_at = now_seconds();
    let mut claim_team = None;
    let mut trace_id = ctx.trace_id.clone();
    let mut found = false;
    for record in matching(&mut claims, work_item_id) {
        refuse_if_completed(record, work_item_id)?;
        found = true;
        claim_team = record.str("team").map(str::to_string);
        if trace_id.is_none() {
            trace_id = record
                .get("telemetry")
                .and_then(|t| t.get("trace_id"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        record.set("status", "completed");
        record.set("completed_at", completed_at.as_str());
        record.set("result", result);
    }
    if !found {
        return Err(unknown(store, work_item_id).into());
    }
    lock.write_array(CLAIMS_FILE, &claims, true)?;

    let mut warnings = Vec::new();
    let agent_id = ctx.agent_id.clone().unwrap_or_else(ids::agent_id);
    // The legacy helper credits $AGENT_TEAM; without it, the item's own team.
    let team = ctx
        .agent_team
        .clone()
        .or(claim_team)
        .unwrap_or_else(|| super::DEFAULT_TEAM.to_string());
    let logged = lock.read_array(LOG_FILE).and_then(|mut log| {
        log.push(Entry::Record(
            Record::new()
                .with("work_item_id", work_item_id)
                .with("completed_at", completed_at.as_str())
                .with("agent_id", agent_id.as_str())
                .with("result", result)
                .with("velocity_points", points),
        ));
        lock.write_array(LOG_FILE, &log, false)
    });
    if let Err(e) = logged {
        warnings.push(format!(
            "completed, but the coordination log was not extended: {e:#}"
        ));
    }
    lock.sync_dir()?;
    let line = format!("{completed_at}: Team {team} +{points} velocity points\n");
    if let Err(e) = lock.append(VELOCITY_FILE, line.as_bytes()) {
        warnings.push(format!("completed, but the velocity was not logged: {e:#}"));
    }
    let trace_id = trace_id.unwrap_or_else(ids::trace_id);
    let mut span = Span::new(ctx, "s2s.work.complete", &trace_id, &ids::span_id());
    span.duration = started.elapsed();
    span.attributes = Record::new()
        .with("s2s.work_item_id", work_item_id)
        .with("s2s.agent_id", agent_id.as_str())
        .with("s2s.result", result)
        .with("s2s.velocity_points", points)
        .with("s2s.team", team.as_str())
        .with("s2s.operation", "work_complete");
    log_span(&mut lock, ctx, &span, &mut warnings);
    drop(lock);
    super::otlp::export(ctx, &span, &mut warnings);
    Ok(Completed {
        work_item_id: work_item_id.to_string(),
        result: result.to_string(),
        velocity_points: points,
        team,
        completed_at,
        warnings,
    })
}

fn matching<'a>(claims: &'a mut [Entry], id: &'a str) -> impl Iterator<Item = &'a mut Record> {
    claims
        .iter_mut()
        .filter_map(Entry::record_mut)
        .filter(move |r| r.str("work_item_id") == Some(id))
}

fn unknown(store: &Store, id: &str) -> CoordError {
    CoordError::UnknownWork {
        id: id.to_string(),
        path: store.path(CLAIMS_FILE),
    }
}

/// The claims, optionally only those with `status`; reads need no lock.
pub fn list(store: &Store, status: Option<&str>) -> Result<Vec<Entry>> {
    let claims = store.read_array(CLAIMS_FILE)?;
    Ok(claims
        .into_iter()
        .filter(|e| status.is_none_or(|s| e.record().and_then(|r| r.str("status")) == Some(s)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_accepts_0_to_100_only() {
        assert_eq!(parse_percent("50").unwrap(), Value::from(50));
        assert_eq!(parse_percent("100%").unwrap(), Value::from(100));
        assert_eq!(parse_percent("12.5").unwrap(), Value::from(12.5));
        for bad in ["101", "-1", "abc", "", "NaN", "1e9"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }
}
