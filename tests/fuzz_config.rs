//! Mutation fuzzing of the files beamops reads before it acts: `beamops.yaml`, `beamops.lock`
//! and `.beamops/state.json`. Whatever the bytes, beamops answers with a report or an error that
//! names the file: never a panic, an abort or a hang.
//!
//! Bounded: a fixed number of mutations from a fixed seed (so a failure reproduces), and a time
//! budget after which the remaining mutations are skipped (said on stderr). Set
//! `BEAMOPS_FUZZ_SEED` / `BEAMOPS_FUZZ_ITERATIONS` to explore further by hand.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestProject;

/// xorshift64*: enough randomness for mutations, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that mean something to YAML or JSON, or to the values beamops checks.
const TOKENS: &[&[u8]] = &[
    b":",
    b"- ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a ",
    b"<<: *a\n",
    b"!!binary ",
    b"!!str ",
    b"\"",
    b"'",
    b"\t",
    b"\0",
    "\u{feff}".as_bytes(),
    "\u{200b}".as_bytes(),
    "🚀".as_bytes(),
    b"~",
    b"null",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"1e400",
    b"\xff",
    b"\xc3",
    b"\n  ",
    b"%YAML 1.2\n",
    b"---\n",
    b"...\n",
    b"? ",
    b"|\n",
    b">-\n",
    b"\\u0000",
    b"\\",
    b",",
    b"true",
    b"\"version\": 2,",
    b"\"schema\": 99,",
    b"-5m",
    b"abc",
];

fn mutate(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => bytes[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                bytes.drain(at.min(len - 1)..end);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                bytes.splice(at..at, token.iter().copied());
            }
            3 => bytes.truncate(at),
            4 => {
                // Repeat a line: duplicate keys, longer sequences.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    let mut out: Vec<&str> = lines.clone();
                    out.insert(i, lines[i]);
                    bytes = (out.join("\n") + "\n").into_bytes();
                }
            }
            5 => {
                // Shift a line's indentation: a key moves to another mapping.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    if rng.below(2) == 0 {
                        lines[i] = format!("  {}", lines[i]);
                    } else {
                        lines[i] = lines[i].trim_start().to_string();
                    }
                    bytes = (lines.join("\n") + "\n").into_bytes();
                }
            }
            6 => {
                // Replace a scalar after a `:` with a token.
                if let Some(colon) = bytes[at.min(len)..].iter().position(|&b| b == b':') {
                    let start = at + colon + 1;
                    let end = bytes[start..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b',')
                        .map_or(bytes.len(), |e| start + e);
                    let token = TOKENS[rng.below(TOKENS.len())];
                    let mut with_space = b" ".to_vec();
                    with_space.extend_from_slice(token);
                    bytes.splice(start..end, with_space);
                }
            }
            _ => {
                // Nest: wrap a stretch in brackets many times over.
                let depth = 1 + rng.below(200);
                let mut nested = b"[".repeat(depth);
                nested.extend_from_slice(b"x");
                nested.extend(b"]".repeat(depth));
                bytes.splice(at..at, nested);
            }
        }
    }
    bytes
}

/// Run beamops with a deadline; a run past it is a hang: killed, and the test fails.
fn run_bounded(p: &TestProject, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beamops"));
    cmd.current_dir(p.path()).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMOPS_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("beamops {args:?} hung (killed after 30 s)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn mutated_config_lock_and_state_never_panic_hang_or_lose_the_file_name() {
    let p = TestProject::new();
    // A project with all three files: chapter 01 writes the lock and the state.
    p.beamops().args(["up", "01"]).assert().code(0);
    let files = ["beamops.yaml", "beamops.lock", ".beamops/state.json"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(p.file(f)).unwrap())
        .collect();

    let seed: u64 = std::env::var("BEAMOPS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0014);
    let iterations: usize = std::env::var("BEAMOPS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let budget = Duration::from_secs(90);
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut ran = 0;
    let mut errors = 0;
    for i in 0..iterations {
        if started.elapsed() > budget {
            eprintln!(
                "fuzz: time budget spent after {ran} of {iterations} mutations (seed {seed:#x}); the rest skipped"
            );
            break;
        }
        for (f, bytes) in files.iter().zip(&originals) {
            std::fs::write(p.file(f), bytes).unwrap();
        }
        let which = [0, 0, 1, 2][rng.below(4)];
        let mutated = mutate(&mut rng, &originals[which]);
        std::fs::write(p.file(files[which]), &mutated).unwrap();
        // doctor loads the configuration as plan does, but probes every tool (a second each):
        // one run in ten is enough to check its finding names the file.
        let args: &[&str] = match i % 10 {
            0 => &["doctor", "--format", "json"],
            1 | 4 | 7 => &["status", "--format", "json"],
            _ => &["plan", "01", "--format", "json"],
        };
        let (code, stdout, stderr) = run_bounded(&p, args);
        let context = || {
            format!(
                "mutation {i} (seed {seed:#x}) of {}: beamops {args:?} → {code:?}\n--- file ---\n{}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                files[which],
                String::from_utf8_lossy(&mutated)
                    .chars()
                    .take(2000)
                    .collect::<String>()
            )
        };
        assert!(
            code.is_some_and(|c| (0..=5).contains(&c)),
            "not an exit code of the table (a panic is 101, an abort a signal): {}",
            context()
        );
        assert!(!stderr.contains("panicked"), "{}", context());
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", context()));
        let name = files[which].rsplit('/').next().unwrap();
        if let Some(error) = report["error"].as_str() {
            errors += 1;
            assert!(
                error.contains(name),
                "the error does not name {name}: {}",
                context()
            );
        }
        if args[0] == "doctor"
            && let Some(config) = report["findings"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["check"] == "configuration"))
            && config["ok"] == false
        {
            errors += 1;
            assert!(
                config["detail"].as_str().unwrap_or_default().contains(name),
                "doctor's finding does not name {name}: {}",
                context()
            );
        }
        ran += 1;
    }
    eprintln!("fuzz: {ran} mutations, {errors} refused with the file named");
    assert!(ran > 0);
}
