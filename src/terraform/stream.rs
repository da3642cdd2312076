//! Terraform's own narration (init, plan, apply) shown as it happens, on stderr only: stdout
//! belongs to beamops' report, which in `--format json` must stay one JSON document. The lines
//! are kept too, so a failure can quote Terraform's words.
//!
//! Only commands whose output is narration are echoed: `show -json` and `output -json` print
//! data (the latter with sensitive values in it) and are never shown. Terraform itself prints a
//! sensitive value as `(sensitive value)` in a plan and `<sensitive>` after an apply.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::Ran;
use crate::output::Ui;

/// Where an echoed command's lines go: a spinner on a terminal (its lines printed above it),
/// else plain lines on stderr.
pub struct Echo {
    bar: ProgressBar,
}

impl Echo {
    /// None when the user asked for quiet: Terraform's lines are then only quoted on failure.
    pub fn new(ui: &Ui, what: String) -> Option<Echo> {
        if ui.quiet {
            return None;
        }
        Some(Echo {
            bar: ui.spinner(what),
        })
    }

    fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            crate::output::write_stderr(&format!("{line}\n"));
        } else {
            self.bar.println(line);
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Spawns `cmd` and waits, keeping what it printed; with `echo`, every line also goes to
/// stderr as it is printed. With `stop_on_interrupt`, a signal that ends beamops first stops
/// Terraform and waits for it (a plan in a private copy, which is removed next): otherwise
/// Terraform gets its one SIGINT when beamops dies, and finishes writing the state.
pub fn run(cmd: &mut Command, echo: Option<&Echo>, stop_on_interrupt: bool) -> Result<Ran> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // As for the private copy: registered first, the child spawned while the slot is held.
    let slot: Arc<Mutex<Option<libc::pid_t>>> = Arc::default();
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop = stop_on_interrupt.then(|| {
        let (slot, stopped) = (slot.clone(), stopped.clone());
        crate::interrupt::on_interrupt(move || {
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(pid) = *slot.lock().unwrap_or_else(|e| e.into_inner()) {
                stop(pid);
            }
        })
    });
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    let mut child: Child = cmd.spawn().context("starting terraform")?;
    *held = Some(child.id() as libc::pid_t);
    drop(held);
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stdout, stderr) = std::thread::scope(|scope| {
        let collect = |pipe: Box<dyn Read + Send>| {
            let lines = lines.clone();
            scope.spawn(move || {
                let mut kept = String::new();
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    kept.push_str(&line);
                    if echo.is_some() {
                        lines
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(line.trim_end().to_string());
                    }
                    buf.clear();
                }
                kept
            })
        };
        let out = collect(Box::new(out));
        let err = collect(Box::new(err));
        // Lines are shown from this thread, in the order they arrived on either pipe.
        if let Some(echo) = echo {
            while !(out.is_finished() && err.is_finished()) {
                flush(&lines, echo);
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            flush(&lines, echo);
        }
        (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    });
    let status = child.wait().context("waiting for terraform")?;
    if stopped.load(std::sync::atomic::Ordering::SeqCst) {
        // beamops is dying of a signal and stopped Terraform itself: this thread waits for the
        // end (the signal's exit status) instead of reporting Terraform's stop as a failure.
        loop {
            std::thread::park();
        }
    }
    Ok(Ran {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

fn flush(lines: &Mutex<Vec<String>>, echo: &Echo) {
    let taken = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    for line in taken {
        echo.line(&line);
    }
}

/// SIGINT to Terraform's process group, then up to 5 s for it to end.
fn stop(pid: libc::pid_t) {
    // SAFETY: kill has no memory effects; the group is Terraform's own (process_group(0)).
    unsafe {
        libc::kill(-pid, libc::SIGINT);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        // Gone, or a zombie the waiting thread has yet to reap.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat)
                if !stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z')) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return,
        }
    }
}
