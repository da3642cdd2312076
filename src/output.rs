//! How every command speaks: one typed report per command, rendered as text or JSON.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use console::Style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::exit::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Output settings shared by every command.
#[derive(Debug, Clone)]
pub struct Ui {
    pub format: Format,
    pub quiet: bool,
    pub verbose: bool,
    pub color: bool,
    /// Progress bars only where a person watches: text mode on a terminal.
    pub progress: bool,
}

impl Ui {
    pub fn new(format: Format, quiet: bool, verbose: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = format == Format::Text && !no_color && std::io::stdout().is_terminal();
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color && std::io::stderr().is_terminal());
        Ui {
            format,
            quiet,
            verbose,
            color,
            progress: format == Format::Text && !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// A quiet, colourless UI for library callers and tests.
    pub fn plain() -> Self {
        Ui {
            format: Format::Text,
            quiet: true,
            verbose: false,
            color: false,
            progress: false,
        }
    }

    /// A progress bar on stderr, hidden unless a person is watching.
    pub fn progress(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if self.progress {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(message.into());
        bar
    }

    /// A spinner for work of unknown length (a build, a wait for health).
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        let bar = if self.progress {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_message(message.into());
        if self.progress {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        bar
    }

    /// A line of narration on stderr (never stdout, which belongs to the report).
    pub fn note(&self, line: impl AsRef<str>) {
        if !self.quiet && self.format == Format::Text {
            write_stderr(&format!("{}\n", line.as_ref()));
        }
    }

    /// Something went wrong that does not fail the command: on stderr in every format.
    pub fn warning(&self, line: impl AsRef<str>) {
        if !self.quiet {
            write_stderr(&format!("{} {}\n", Paint::warn("warning:"), line.as_ref()));
        }
    }

    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbose && self.format == Format::Text {
            write_stderr(&format!("{}\n", line.as_ref()));
        }
    }
}

/// Styles used across reports; all become no-ops when colour is off.
pub struct Paint;

impl Paint {
    pub fn ok(s: impl std::fmt::Display) -> String {
        Style::new().green().apply_to(s).to_string()
    }
    pub fn warn(s: impl std::fmt::Display) -> String {
        Style::new().yellow().apply_to(s).to_string()
    }
    pub fn bad(s: impl std::fmt::Display) -> String {
        Style::new().red().bold().apply_to(s).to_string()
    }
    pub fn dim(s: impl std::fmt::Display) -> String {
        Style::new().dim().apply_to(s).to_string()
    }
    pub fn bold(s: impl std::fmt::Display) -> String {
        Style::new().bold().apply_to(s).to_string()
    }
}

/// Every command returns one of these; `emit` renders it and decides the exit code.
pub trait Report: Serialize {
    fn text(&self, ui: &Ui) -> String;
    fn exit(&self) -> Exit {
        Exit::Ok
    }
}

pub fn emit<R: Report>(report: &R, ui: &Ui) -> Result<Exit> {
    let mut bytes = match ui.format {
        Format::Json => serde_json::to_vec_pretty(report)?,
        Format::Text => report.text(ui).into_bytes(),
    };
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    // A reader that stopped reading (`| head`) changes nothing about what the command did:
    // its exit code stays the report's.
    write_stdout(&bytes)?;
    Ok(report.exit())
}

/// Write to stdout; a closed pipe is not an error (the reader has all it wanted): `Ok(false)`.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Write to stderr, never failing: there is nowhere left to report a closed stderr.
pub fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `println!` and `eprintln!` panic when their stream is a closed pipe (Rust ignores SIGPIPE, so
/// the write fails with EPIPE). beamops' own writers go through [`write_stdout`]; this hook is
/// the net under any other print: such a panic ends the process quietly with exit 0, like a
/// reader closing `| head` expects. Resetting SIGPIPE to its default instead would also kill
/// beamops when an ssh child or the Docker socket closes, in the middle of a deploy.
pub fn quiet_on_closed_pipes() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(Exit::Ok.code());
        }
        previous(info);
    }));
}

/// Colour a plain unified diff (no-op when colour is off).
pub fn colour_diff(diff: &str) -> String {
    diff.lines()
        .map(|line| {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                Paint::bold(line)
            } else if line.starts_with('+') {
                Paint::ok(line)
            } else if line.starts_with('-') {
                Paint::bad(line)
            } else if line.starts_with("@@") {
                Style::new().cyan().apply_to(line).to_string()
            } else {
                line.to_string()
            };
            painted + "\n"
        })
        .collect()
}
