//! `beamops coord` end to end with the real binary and real processes: 100 agents at once,
//! kill -9 during writes, legacy files as the legacy helper leaves them, any text, exit codes,
//! the shim under an existing-style caller, and OTLP export to a local listener.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use beamops::coord::legacy;
use serde_json::Value;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("beamops")
}

/// `beamops coord ARGS` against `dir`, with none of the caller's coordination settings.
fn coord(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMOPS_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    for k in [
        "AGENT_ID",
        "AGENT_TEAM",
        "CURRENT_WORK_ITEM",
        "FORCE_TRACE_ID",
        "COORDINATION_TRACE_ID",
        "TRACE_ID",
        "DEPLOYMENT_ENV",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("NO_COLOR", "1")
        .env("COORDINATION_DIR", dir)
        .arg("coord");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("beamops runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What callers do: `grep -o 'work_[0-9]*' | head -1`.
fn work_id(stdout: &str) -> String {
    let re = regex::Regex::new(r"work_[0-9]*").unwrap();
    re.find(stdout).expect("a work id").as_str().to_string()
}

/// A strict JSON array (not beamops' lenient reader): what other tools will see.
fn array(dir: &Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        other => panic!("{name} is not a JSON array: {other:?}\n{text}"),
    }
}

/// Every line of the span file, parsed; `torn_tail_ok` allows one unterminated last line (an
/// append cut by kill -9, which the next write moves to the unparsed file).
fn span_lines(dir: &Path, torn_tail_ok: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("telemetry_spans.jsonl")).unwrap_or_default();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if torn_tail_ok && lines.last().is_some_and(|l| !l.ends_with('\n')) {
        lines.pop();
    }
    lines
        .iter()
        .map(|l| {
            assert!(l.ends_with('\n'), "an unterminated span line: {l:?}");
            serde_json::from_str(l.trim_end_matches('\n'))
                .unwrap_or_else(|e| panic!("span line does not parse ({e}): {l:?}"))
        })
        .collect()
}

fn jq_parses(dir: &Path, name: &str) {
    let path = dir.join(name);
    let out = Command::new("jq")
        .args(["-e", "."])
        .arg(&path)
        .stdout(Stdio::null())
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "jq cannot read {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("jq is needed for this test (.ci/setup installs it): {e}"),
    }
}

fn by_id(claims: &[Value]) -> HashMap<String, Value> {
    claims
        .iter()
        .map(|c| (c["work_item_id"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn spawn_all(cmds: Vec<Command>) -> Vec<Output> {
    let children: Vec<Child> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect()
}

#[test]
fn hundred_agents_claim_at_once_and_every_claim_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let cmds = (0..100)
        .map(|i| {
            let mut c = coord(dir.path());
            c.args(["--lock-wait", "300", "claim", "load", &format!("item {i}")]);
            if i % 2 == 0 {
                c.env("AGENT_ID", format!("agent_{i}"));
            }
            c
        })
        .collect();
    let ids: Vec<String> = spawn_all(cmds).iter().map(|o| work_id(&ok(o))).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 100, "ids are distinct");

    let claims = array(dir.path(), "work_claims.json");
    assert_eq!(claims.len(), 100);
    let stored = by_id(&claims);
    assert_eq!(stored.len(), 100, "each claim once");
    for id in &ids {
        assert_eq!(stored[id]["status"], "active");
    }
    let agents = array(dir.path(), "agent_status.json");
    assert_eq!(agents.len(), 100);
    // One span per claim, a JSON Lines file, each span in its claim's trace.
    let spans = span_lines(dir.path(), false);
    assert_eq!(spans.len(), 100);
    for span in &spans {
        let id = span["span_attributes"]["s2s.work_item_id"]
            .as_str()
            .unwrap();
        assert_eq!(span["trace_id"], stored[id]["telemetry"]["trace_id"]);
        assert_eq!(span["span_id"], stored[id]["telemetry"]["span_id"]);
    }
    for f in ["work_claims.json", "agent_status.json"] {
        jq_parses(dir.path(), f);
    }
}

/// Claims in the legacy helper's shape, written the way it writes them (jq, two spaces).
fn legacy_claims(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "work_item_id": format!("work_17500000000000{i:05}"),
                "agent_id": format!("agent_{i}"),
                "reactor_id": "shell_agent",
                "claimed_at": "2025-06-15T10:00:00Z",
                "estimated_duration": "30m",
                "work_type": "legacy",
                "priority": "high",
                "description": format!("legacy item {i}"),
                "status": "active",
                "team": "legacy_team",
                "telemetry": {"trace_id": format!("{i:032x}"), "span_id": "00000000000000aa",
                              "operation": "s2s.work.claim", "service": "s2s-coordination"}
            })
        })
        .collect()
}

#[test]
fn hundred_agents_complete_at_once_and_all_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let claims = legacy_claims(100);
    std::fs::write(
        dir.path().join("work_claims.json"),
        serde_json::to_string_pretty(&claims).unwrap(),
    )
    .unwrap();
    let cmds = claims
        .iter()
        .map(|c| {
            let mut cmd = coord(dir.path());
            cmd.args(["--lock-wait", "300", "complete"])
                .arg(c["work_item_id"].as_str().unwrap())
                .args(["success", "3"]);
            cmd
        })
        .collect();
    for out in spawn_all(cmds) {
        ok(&out);
    }
    let after = array(dir.path(), "work_claims.json");
    assert_eq!(after.len(), 100);
    assert!(after.iter().all(|c| c["status"] == "completed"));
    let log = array(dir.path(), "coordination_log.json");
    let logged: HashSet<&str> = log
        .iter()
        .map(|e| e["work_item_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged.len(), 100);
    let velocity = std::fs::read_to_string(dir.path().join("velocity_log.txt")).unwrap();
    assert_eq!(velocity.lines().count(), 100);
    // The velocity goes to the item's team when AGENT_TEAM is unset.
    assert!(
        velocity
            .lines()
            .all(|l| l.ends_with(": Team legacy_team +3 velocity points"))
    );
    let dash = ok(&run(coord(dir.path()).arg("dashboard")));
    assert!(dash.contains("📊 Active Work Items: 0\n"), "{dash}");
    assert!(
        dash.contains("Current Sprint Velocity: 300 story points"),
        "{dash}"
    );
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn kill_9_at_random_points_never_breaks_a_file_or_loses_a_stored_claim() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ok_file = dir.path().join("returned0");
    let done_file = dir.path().join("completed0");
    // The loop an agent runs: claim, progress, complete; it records an id only after
    // beamops exited 0.
    let script = r#"
while :; do
  out=$("$B" coord claim crash "trial $T \"quoted\"") || continue
  id=$(printf '%s\n' "$out" | grep -o 'work_[0-9]*' | head -1)
  printf '%s\n' "$id" >> "$OK"
  "$B" coord progress "$id" 50 >/dev/null 2>&1 || true
  "$B" coord complete "$id" >/dev/null 2>&1 && printf '%s\n' "$id" >> "$DONE"
done
"#;
    let complete_lines = |p: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && l.len() > 1)
            .map(|l| l.trim_end().to_string())
            .collect()
    };
    // At least 60 kills, and until at least 20 claims returned 0, however slow the machine.
    let mut trials = 0;
    while trials < 60 || complete_lines(&ok_file).len() < 20 {
        assert!(trials < 1000, "no progress: {trials} trials");
        let trial = trials;
        trials += 1;
        let mut child = Command::new("bash")
            .args(["-c", script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("NO_COLOR", "1")
            .env("COORDINATION_DIR", &data)
            .env("B", bin())
            .env("T", trial.to_string())
            .env("OK", &ok_file)
            .env("DONE", &done_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + random_below(180)));
        // The whole group: bash and whichever beamops is mid-write.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().unwrap();
        for f in [
            "work_claims.json",
            "agent_status.json",
            "coordination_log.json",
        ] {
            if data.join(f).exists() {
                array(&data, f);
            }
        }
        span_lines(&data, true);
    }
    let returned0 = complete_lines(&ok_file);
    let claims = array(&data, "work_claims.json");
    let mut count: HashMap<&str, usize> = HashMap::new();
    for c in &claims {
        *count
            .entry(c["work_item_id"].as_str().unwrap())
            .or_default() += 1;
    }
    for id in &returned0 {
        assert_eq!(
            count.get(id.as_str()),
            Some(&1),
            "{id} returned 0: stored once"
        );
    }
    let stored = by_id(&claims);
    let log = array(&data, "coordination_log.json");
    for id in complete_lines(&done_file) {
        assert_eq!(stored[&id]["status"], "completed", "{id}");
        assert!(log.iter().any(|e| e["work_item_id"] == id.as_str()), "{id}");
    }
    // One more write repairs a torn span line, if a kill left one: the file is JSON Lines again.
    ok(&run(coord(&data).args(["claim", "after", "the storm"])));
    span_lines(&data, false);
    for f in [
        "work_claims.json",
        "agent_status.json",
        "coordination_log.json",
    ] {
        jq_parses(&data, f);
    }
}

const LEGACY_SPANS: &str = r#"{
  "trace_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "span_id": "1111111111111111",
  "parent_span_id": "",
  "operation_name": "s2s.work.claim",
  "span_kind": "internal",
  "status": "ok",
  "start_time": "2025-06-15T10:00:00.123Z",
  "duration_ms": 812,
  "service": {
    "name": "s2s-coordination",
    "version": "1.0.0"
  },
  "resource_attributes": {
    "service.name": "s2s-coordination",
    "s2s.component": "coordination_helper"
  },
  "span_attributes": {
  "s2s.work_item_id": "work_1750000000000000001",
  "s2s.status": "success"
}
}
{
  "trace_id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
  "operation_name": "s2s.work.progress",
  "duration_ms": ,
  "span_attributes": {
  "s2s.work_item_id": "work_1750000000000000001",
  "s2s.progress_percent": 
}
}
{"trace_id": "cccccccccccccccccccccccccccccccc", "operation_name": "s2s.work.claim", "duration_ms": 5}
"#;

#[test]
fn legacy_files_are_read_as_they_are_and_extended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut claims = legacy_claims(2);
    claims[0]["custom_field"] = serde_json::json!({"kept": [1, 2]});
    claims[1]["status"] = "in_progress".into();
    claims[1]["progress"] = 30.into();
    claims[1]["last_update"] = "2025-06-15T11:00:00Z".into();
    std::fs::write(
        d.join("work_claims.json"),
        serde_json::to_string_pretty(&claims).unwrap(),
    )
    .unwrap();
    // agent_status.json as the helper's no-jq fallback leaves it: objects one after another.
    let agent = |id: &str| {
        serde_json::to_string_pretty(&serde_json::json!({
            "agent_id": id, "team": "legacy_team", "status": "active", "capacity": 100,
            "current_workload": 0, "specialization": "general_development",
            "last_heartbeat": "2025-06-15T10:00:00Z",
            "performance_metrics": {"tasks_completed": 0, "average_completion_time": "0m", "success_rate": 100.0}
        }))
        .unwrap()
    };
    std::fs::write(
        d.join("agent_status.json"),
        format!("{}\n{}\n", agent("agent_old_1"), agent("agent_old_2")),
    )
    .unwrap();
    std::fs::write(
        d.join("coordination_log.json"),
        r#"[{"work_item_id": "work_1", "completed_at": "2025-06-01T00:00:00Z", "agent_id": "agent_x", "result": "success", "velocity_points": 8}]"#,
    )
    .unwrap();
    std::fs::write(
        d.join("velocity_log.txt"),
        "2025-06-01T00:00:00Z: Team legacy_team +8 velocity points\n",
    )
    .unwrap();
    std::fs::write(d.join("telemetry_spans.jsonl"), LEGACY_SPANS).unwrap();

    let first = run(coord(d).args(["claim", "new", "on top of legacy"]));
    let new_id = work_id(&ok(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(
        stderr.matches("did not parse").count(),
        1,
        "the broken fragment is reported once: {stderr}"
    );
    ok(&run(coord(d).args([
        "progress",
        "work_1750000000000000000",
        "60",
    ])));
    let done = run(coord(d).args(["complete", "work_1750000000000000000", "merged", "13"]));
    ok(&done);
    assert!(
        !String::from_utf8_lossy(&done.stderr).contains("did not parse"),
        "reported once only"
    );

    let after = array(d, "work_claims.json");
    assert_eq!(after.len(), 3);
    let stored = by_id(&after);
    // Every legacy key is kept, in its order, with its value unless beamops changed it.
    let legacy0 = &claims[0];
    let now0 = &stored["work_1750000000000000000"];
    for (k, v) in legacy0.as_object().unwrap() {
        if !["status", "telemetry"].contains(&k.as_str()) {
            assert_eq!(&now0[k], v, "{k}");
        }
    }
    assert_eq!(
        now0["telemetry"]["trace_id"],
        legacy0["telemetry"]["trace_id"]
    );
    assert_eq!(now0["status"], "completed");
    assert_eq!(now0["progress"], 60);
    assert_eq!(now0["result"], "merged");
    // Keys stay in the file's order; beamops' keys come after them.
    let keys = |text: &str| -> Vec<String> {
        legacy::parse_array(text).unwrap()[0]
            .record()
            .unwrap()
            .keys()
            .map(str::to_string)
            .collect()
    };
    let original = keys(&serde_json::to_string_pretty(&claims).unwrap());
    let now = keys(&std::fs::read_to_string(d.join("work_claims.json")).unwrap());
    assert_eq!(now[..original.len()], original[..]);
    assert_eq!(
        now[original.len()..],
        ["progress", "last_update", "completed_at", "result"]
    );
    assert_eq!(
        stored["work_1750000000000000001"]["progress"], 30,
        "untouched item"
    );
    assert_eq!(stored[&new_id]["status"], "active");

    let agents = array(d, "agent_status.json");
    let names: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..2], ["agent_old_1", "agent_old_2"]);
    assert_eq!(agents.len(), 3);
    assert_eq!(array(d, "coordination_log.json").len(), 2);
    let velocity = std::fs::read_to_string(d.join("velocity_log.txt")).unwrap();
    assert!(velocity.starts_with("2025-06-01T00:00:00Z: Team legacy_team +8"));
    assert!(velocity.ends_with("+13 velocity points\n"));

    // Spans: JSON Lines now; both legacy spans that parse kept, plus claim, progress, complete.
    let spans = span_lines(d, false);
    let traces: Vec<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 5, "{traces:?}");
    assert_eq!(traces[0], "a".repeat(32));
    assert_eq!(traces[1], "c".repeat(32));
    assert_eq!(spans[0]["service"]["version"], "1.0.0");
    // The progress and complete spans are in the legacy item's own trace.
    assert_eq!(traces[3], format!("{:032x}", 0));
    assert_eq!(traces[4], format!("{:032x}", 0));
    // The fragment that did not parse is kept verbatim.
    let unparsed = std::fs::read_to_string(d.join("telemetry_spans.unparsed.txt")).unwrap();
    let broken = &LEGACY_SPANS[LEGACY_SPANS.find("{\n  \"trace_id\": \"bbbb").unwrap()
        ..LEGACY_SPANS.find("{\"trace_id\": \"cccc").unwrap()];
    assert!(unparsed.contains(broken), "{unparsed}");
    // And the reader used by beamops agrees with a strict one.
    let scan =
        legacy::scan_spans(&std::fs::read_to_string(d.join("telemetry_spans.jsonl")).unwrap());
    assert!(scan.is_json_lines && scan.fragments.is_empty());
    for f in [
        "work_claims.json",
        "agent_status.json",
        "coordination_log.json",
    ] {
        jq_parses(d, f);
    }
    let jq_lines = Command::new("jq")
        .args(["-c", ".trace_id"])
        .arg(d.join("telemetry_spans.jsonl"))
        .output()
        .unwrap();
    assert!(jq_lines.status.success());
    assert_eq!(String::from_utf8_lossy(&jq_lines.stdout).lines().count(), 5);
}

#[test]
fn any_text_is_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let big: String = "x\"y\\z ✓ \u{1F600}\n".repeat(100 * 1024 / 16);
    let texts = [
        "plain".to_string(),
        r#"she said "hi" and left"#.to_string(),
        "line one\nline two\ttabbed\r\n".to_string(),
        "$(touch /tmp/never) `id` ${HOME} 'single' \\ backslash".to_string(),
        "ünïcødé — 日本語 — \u{0007}\u{001b}[31m".to_string(),
        "--looks-like-a-flag -x".to_string(),
        big,
    ];
    for text in &texts {
        let out = run(coord(dir.path()).args(["claim", "type \"q\"", text, "p'ri", "team\nnl"]));
        let id = work_id(&ok(&out));
        let stored = by_id(&array(dir.path(), "work_claims.json"));
        assert_eq!(stored[&id]["description"].as_str(), Some(text.as_str()));
        assert_eq!(stored[&id]["work_type"], "type \"q\"");
        assert_eq!(stored[&id]["priority"], "p'ri");
        assert_eq!(stored[&id]["team"], "team\nnl");
        ok(&run(coord(dir.path()).args(["complete", &id, text, "1"])));
        let stored = by_id(&array(dir.path(), "work_claims.json"));
        assert_eq!(stored[&id]["result"].as_str(), Some(text.as_str()));
    }
    span_lines(dir.path(), false);
    jq_parses(dir.path(), "work_claims.json");
    jq_parses(dir.path(), "coordination_log.json");
}

#[test]
fn exit_codes_mean_something_and_failures_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = work_id(&ok(&run(coord(d).args(["claim", "t", "d"]))));
    // The legacy helper took a claim without a description: so does beamops.
    let no_description = work_id(&ok(&run(coord(d).args(["claim", "only-a-type"]))));
    assert_eq!(
        by_id(&array(d, "work_claims.json"))[&no_description]["description"],
        ""
    );
    let before = std::fs::read(d.join("work_claims.json")).unwrap();
    let code = |out: Output| {
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (c, err) = code(run(coord(d).args(["progress", "work_42", "10"])));
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("unknown work item work_42"), "{err}");
    for bad in ["101", "-5", "half", ""] {
        let (c, err) = code(run(coord(d).args(["progress", &id, bad])));
        assert_eq!(c, Some(1), "{bad}: {err}");
        assert!(err.contains("bad percent"), "{err}");
    }
    let (c, err) = code(run(coord(d).args(["complete", "work_42"])));
    assert_eq!(c, Some(1), "{err}");
    let (c, err) = code(run(coord(d).args(["complete", &id, "success", "many"])));
    assert_eq!(c, Some(1), "{err}");
    let (c, err) = code(run(coord(d).args(["complete"])));
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("CURRENT_WORK_ITEM"), "{err}");
    assert_eq!(std::fs::read(d.join("work_claims.json")).unwrap(), before);

    // $CURRENT_WORK_ITEM stands in for an empty id, as in the legacy helper.
    let out = ok(&run(coord(d)
        .env("CURRENT_WORK_ITEM", &id)
        .args(["progress", "", "75"])));
    assert!(
        out.contains(&format!("📈 PROGRESS: Updated {id} to 75% (in_progress)")),
        "{out}"
    );
    let out = ok(&run(coord(d).env("CURRENT_WORK_ITEM", &id).arg("complete")));
    assert!(out.contains(&format!(
        "✅ COMPLETED: Released claim for {id} (success) - 5 velocity points"
    )));
    let (c, err) = code(run(coord(d).args(["complete", &id])));
    assert_eq!(c, Some(1), "completing twice: {err}");
    assert!(err.contains("already completed"), "{err}");

    // Another agent holds the lock past --lock-wait: exit 3 (blocked), nothing stored.
    let lock = std::fs::File::options()
        .write(true)
        .open(d.join(".beamops-coord.lock"))
        .unwrap();
    lock.lock().unwrap();
    let before = std::fs::read(d.join("work_claims.json")).unwrap();
    let out = run(coord(d).args(["--lock-wait", "1", "claim", "t", "blocked"]));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (c, err) = code(out);
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("lock"), "{err}");
    assert!(
        !stdout.contains("work_"),
        "no id printed for a claim not stored: {stdout}"
    );
    assert_eq!(std::fs::read(d.join("work_claims.json")).unwrap(), before);
    drop(lock);

    // A claims file that does not parse is never overwritten: exit 4, bytes unchanged.
    std::fs::write(
        d.join("work_claims.json"),
        "[{\"work_item_id\": \"work_1\",",
    )
    .unwrap();
    let (c, err) = code(run(coord(d).args(["claim", "t", "d"])));
    assert_eq!(c, Some(4), "{err}");
    assert!(
        err.contains("work_claims.json") && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("work_claims.json")).unwrap(),
        "[{\"work_item_id\": \"work_1\","
    );
}

#[test]
fn trace_ids_follow_the_legacy_precedence_and_match_the_span() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vars = [
        ("FORCE_TRACE_ID", "f".repeat(32)),
        ("COORDINATION_TRACE_ID", "c".repeat(32)),
        ("TRACE_ID", "7".repeat(32)),
        ("OTEL_TRACE_ID", "0".repeat(32)),
    ];
    for skip in 0..vars.len() {
        let mut cmd = coord(d);
        for (k, v) in &vars[skip..] {
            cmd.env(k, v);
        }
        let out = ok(&run(cmd.args(["claim", "t", "d"])));
        let expected = &vars[skip].1;
        assert!(
            out.starts_with(&format!("🔍 Trace ID: {expected}\n")),
            "{out}"
        );
        let stored = by_id(&array(d, "work_claims.json"));
        assert_eq!(
            stored[&work_id(&out)]["telemetry"]["trace_id"],
            expected.as_str()
        );
        let spans = span_lines(d, false);
        assert_eq!(spans.last().unwrap()["trace_id"], expected.as_str());
    }
    let out = ok(&run(coord(d)
        .env("OTEL_SERVICE_NAME", "svc-x")
        .args(["--format", "json", "claim", "t", "d"])));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["trace_id"].as_str().unwrap().len(), 32);
    let stored = by_id(&array(d, "work_claims.json"));
    let claim = &stored[report["work_item_id"].as_str().unwrap()];
    assert_eq!(claim["telemetry"]["service"], "svc-x");
    assert_eq!(claim["telemetry"]["trace_id"], report["trace_id"]);
}

#[test]
fn the_shim_serves_an_existing_caller_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shim = d.join("bin/coordination_helper.sh");
    ok(&run(coord(d).arg("shim").arg(&shim)));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&shim).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let printed = ok(&run(coord(d).arg("shim")));
    assert_eq!(printed, std::fs::read_to_string(&shim).unwrap());

    // A caller written for the legacy helper, as teams have them.
    let caller = d.join("agent.sh");
    std::fs::write(
        &caller,
        r#"#!/bin/bash
set -e
HELPER="$1"
WORK_ID=$("$HELPER" claim "feature" "caller's \"quoted\" work" "high" "team_x" | grep -o 'work_[0-9]*' | head -1)
echo "claimed $WORK_ID"
"$HELPER" progress "$WORK_ID" 40 "in_progress" >/dev/null
"$HELPER" complete "$WORK_ID" "success" 8 | grep -q "COMPLETED: Released claim for $WORK_ID"
"$HELPER" dashboard | grep '📊 Active Work Items:'
"$HELPER" generate-id | grep -q '^agent_[0-9]*$'
"#,
    )
    .unwrap();
    let out = run(Command::new("bash")
        .arg(&caller)
        .arg(&shim)
        .env("COORDINATION_DIR", d.join("coordination"))
        .env("AGENT_TEAM", "team_x")
        .env_remove("CURRENT_WORK_ITEM"));
    let stdout = ok(&out);
    let id = work_id(&stdout);
    assert!(stdout.contains("📊 Active Work Items: 0"), "{stdout}");
    let stored = by_id(&array(&d.join("coordination"), "work_claims.json"));
    assert_eq!(stored[&id]["status"], "completed");
    assert_eq!(stored[&id]["description"], "caller's \"quoted\" work");
    assert_eq!(stored[&id]["team"], "team_x");
    assert_eq!(stored[&id]["progress"], 40);
}

#[test]
fn the_default_directory_is_in_the_project_state_dir() {
    let project = common::TestProject::new();
    let out = project
        .beamops()
        .env_remove("COORDINATION_DIR")
        .args(["coord", "claim", "t", "in the project"])
        .output()
        .unwrap();
    ok(&out);
    let claims = array(&project.file(".beamops/coordination"), "work_claims.json");
    assert_eq!(claims.len(), 1);
}

/// A one-request HTTP listener that records what it was sent.
fn listener() -> (String, std::thread::JoinHandle<String>) {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len: usize = text[..head_end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= head_end + 4 + len {
                    break;
                }
            }
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (format!("http://{addr}"), handle)
}

#[test]
fn spans_are_exported_over_otlp_http_and_a_dead_collector_never_fails_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, server) = listener();
    let out = ok(&run(coord(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .args(["claim", "t", "exported"])));
    let request = server.join().unwrap();
    assert!(
        request.starts_with("POST /v1/traces HTTP/1.1\r\n"),
        "{request}"
    );
    let body: Value =
        serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    let trace = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("🔍 Trace ID: ");
    assert_eq!(span["traceId"], trace);
    assert_eq!(span["name"], "s2s.work.claim");

    // Nobody listens: the claim is stored, exit 0, a warning on stderr.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = run(coord(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &dead)
        .args(["claim", "t", "not exported"]));
    let id = work_id(&ok(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTLP export"));
    assert!(by_id(&array(dir.path(), "work_claims.json")).contains_key(&id));
}

/// Completed is final: `progress` never re-opens an item, `complete` credits it once however
/// the calls interleave, and an item whose status `progress` set to completed can still be
/// completed (that is what records its velocity).
#[test]
fn a_completed_item_stays_completed_and_is_credited_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id = work_id(&ok(&run(coord(dir).args(["claim", "feature", "d"]))));
    ok(&run(coord(dir).args(["complete", &id, "success", "5"])));
    let reopened = run(coord(dir).args(["progress", &id, "50"]));
    assert_eq!(reopened.status.code(), Some(1), "{reopened:?}");
    assert_eq!(
        run(coord(dir).args(["complete", &id])).status.code(),
        Some(1)
    );
    let claim = by_id(&array(dir, "work_claims.json"))[&id].clone();
    assert_eq!(claim["status"], "completed", "{claim}");
    assert_eq!(array(dir, "coordination_log.json").len(), 1);

    // progress 100 completed, then complete: recorded once, with its completion time.
    let id2 = work_id(&ok(&run(coord(dir).args(["claim", "feature", "e"]))));
    ok(&run(coord(dir).args([
        "progress",
        &id2,
        "100",
        "completed",
    ])));
    ok(&run(coord(dir).args(["complete", &id2, "success", "3"])));
    let claim = by_id(&array(dir, "work_claims.json"))[&id2].clone();
    assert!(claim["completed_at"].is_string(), "{claim}");
    assert_eq!(array(dir, "coordination_log.json").len(), 2);

    // Interleaved at once: 30 progress and 10 complete calls on one item.
    let id3 = work_id(&ok(&run(coord(dir).args(["claim", "feature", "f"]))));
    let mut cmds = Vec::new();
    for n in 0..40 {
        let mut c = coord(dir);
        if n % 4 == 0 {
            c.args(["complete", &id3, "success", "7"]);
        } else {
            c.args(["progress", &id3, "40"]);
        }
        cmds.push(c);
    }
    let outs = spawn_all(cmds);
    let completes_ok = outs
        .iter()
        .enumerate()
        .filter(|(n, o)| n % 4 == 0 && o.status.success())
        .count();
    assert_eq!(completes_ok, 1, "exactly one complete is stored");
    let claim = by_id(&array(dir, "work_claims.json"))[&id3].clone();
    assert_eq!(claim["status"], "completed", "{claim}");
    let log = array(dir, "coordination_log.json");
    assert_eq!(log.len(), 3, "{log:#?}");
    let velocity = std::fs::read_to_string(dir.join("velocity_log.txt")).unwrap();
    assert_eq!(velocity.matches("+7 velocity").count(), 1, "{velocity}");
}
