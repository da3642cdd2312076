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
            eprintln!("{}", line.as_ref());
        }
    }

    /// Something went wrong that does not fail the command: on stderr in every format.
    pub fn warning(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{} {}", Paint::warn("warning:"), line.as_ref());
        }
    }

    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbose && self.format == Format::Text {
            eprintln!("{}", line.as_ref());
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
    let mut stdout = std::io::stdout().lock();
    match ui.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut stdout, report)?;
            writeln!(stdout)?;
        }
        Format::Text => {
            let text = report.text(ui);
            if !text.is_empty() {
                write!(stdout, "{text}")?;
                if !text.ends_with('\n') {
                    writeln!(stdout)?;
                }
            }
        }
    }
    Ok(report.exit())
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
