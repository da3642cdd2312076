//! Day-to-day commands against an environment's running stack: ps, logs, console, scale.

use std::io::IsTerminal;
use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Global;
use crate::cli::{ConsoleArgs, LogsArgs, PsArgs, ScaleArgs};
use crate::docker::{self, Daemon};
use crate::exit::Exit;
use crate::output::{Format, Paint, Report, Ui, emit};
use crate::project::Project;
use crate::swarm::{console as remote, logs as service_logs, ps as tasks, scale as scaling};

struct Target {
    project: Project,
    environment: String,
    stack: String,
    /// The command's one Engine connection; the deploy lock `scale` takes uses it too.
    docker: docker::Connection,
}

impl Target {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.docker.daemon().expect("connected in target()").0
    }
    fn daemon(&self) -> &Daemon {
        self.docker.daemon().expect("connected in target()").1
    }
}

fn target(global: &Global, positional: Option<&str>) -> Result<Target> {
    let project = global.project()?;
    let environment = global.env_name(&project, positional)?;
    let stack = project.config.app.stack_name().to_string();
    let docker = docker::Connection::for_environment(&project, &environment);
    // Connect now: an unreachable Engine stops the command before anything else (exit 3).
    docker.daemon()?;
    Ok(Target {
        project,
        environment,
        stack,
        docker,
    })
}

#[derive(Serialize)]
pub struct PsReport {
    pub environment: String,
    pub stack: String,
    pub tasks: Vec<tasks::TaskRow>,
}

impl Report for PsReport {
    fn text(&self, _ui: &Ui) -> String {
        let header = [
            "TASK", "NODE", "DESIRED", "STATE", "HEALTH", "IMAGE", "RELEASE",
        ];
        let rows: Vec<[String; 7]> = self
            .tasks
            .iter()
            .map(|t| {
                [
                    t.name.clone(),
                    t.node.clone(),
                    t.desired.clone(),
                    t.state.clone(),
                    t.health.clone(),
                    t.image.clone(),
                    t.release.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        };
        let mut out = Paint::bold(line(&header.map(String::from)));
        for (row, task) in rows.iter().zip(&self.tasks) {
            out += &line(row);
            if let Some(err) = &task.error {
                out += &Paint::dim(format!("    {err}\n"));
            }
        }
        if self.tasks.is_empty() {
            out += &Paint::dim(format!("no tasks in stack {}\n", self.stack));
        }
        out
    }
}

pub fn ps(global: &Global, ui: &Ui, args: &PsArgs) -> Result<Exit> {
    let t = target(global, args.environment.as_deref())?;
    let rows = t.rt().block_on(tasks::tasks(
        t.daemon(),
        &t.stack,
        args.service.as_deref(),
        args.all,
    ))?;
    emit(
        &PsReport {
            environment: t.environment,
            stack: t.stack,
            tasks: rows,
        },
        ui,
    )
}

/// Logs are a stream, not one report: text lines `<task> | <line>`, or with --format json one
/// JSON object per line (docs/json.md).
pub fn logs(global: &Global, ui: &Ui, args: &LogsArgs) -> Result<Exit> {
    let t = target(global, args.environment.as_deref())?;
    let opts = service_logs::LogOptions {
        follow: args.follow,
        since: args.since,
        tail: args.tail,
    };
    let json = ui.format == Format::Json;
    let width = std::cell::Cell::new(0usize);
    t.rt().block_on(service_logs::stream(
        t.daemon(),
        &t.stack,
        args.service.as_deref(),
        &opts,
        |line| {
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer(&mut out, &line)?;
                writeln!(out)?;
            } else {
                width.set(width.get().max(line.task.len()));
                let prefix = format!("{:<w$} |", line.task, w = width.get());
                writeln!(out, "{} {}", Paint::dim(prefix), line.line)?;
            }
            // A closed pipe (`| head`) ends the command quietly.
            out.flush().or_else(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(0)
                } else {
                    Err(e)
                }
            })?;
            Ok(())
        },
    ))?;
    Ok(Exit::Ok)
}

#[derive(Serialize)]
pub struct ConsoleReport {
    pub environment: String,
    pub task: String,
    pub container: String,
    pub exit_code: i64,
}

pub fn console(global: &Global, ui: &Ui, args: &ConsoleArgs) -> Result<Exit> {
    let t = target(global, args.environment.as_deref())?;
    let target = t
        .rt()
        .block_on(remote::target(t.daemon(), &t.stack, &args.service))?;
    let app = &t.project.config.app.otp_app;
    // A remote shell fed from a pipe ends at end of input by halting, and an IEx remote shell
    // halts the node it is attached to: the task dies and Swarm replaces it. Piped input is
    // evaluated with `rpc` instead, read inside the container so it is in no argv on the host.
    let interactive = std::io::stdin().is_terminal();
    let command = if interactive {
        ui.note(format!(
            "{}: bin/{app} remote in {} (leave with Ctrl-C then a; never System.halt(), which stops the node)",
            t.environment, target.task
        ));
        vec![format!("bin/{app}"), "remote".to_string()]
    } else {
        ui.note(format!(
            "{}: bin/{app} rpc in {}, with the code read from standard input",
            t.environment, target.task
        ));
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("exec bin/{app} rpc \"$(cat)\""),
        ]
    };
    let code = t
        .rt()
        .block_on(remote::attach(t.daemon(), &target, command))
        .with_context(|| format!("console in {}", target.task))?;
    if ui.format == Format::Json {
        // After the session's own bytes: one line saying where it ran and how it ended.
        println!(
            "{}",
            serde_json::to_string(&ConsoleReport {
                environment: t.environment,
                task: target.task,
                container: target.container,
                exit_code: code,
            })?
        );
    }
    Ok(if code == 0 { Exit::Ok } else { Exit::Error })
}

#[derive(Serialize)]
pub struct ScaleReport {
    pub environment: String,
    #[serde(flatten)]
    pub scaled: scaling::Scaled,
    /// Where the replicas are set for good: the next `up`/`deploy` converges back to it.
    pub durable_setting: String,
    pub durable_replicas: u32,
}

impl Report for ScaleReport {
    fn text(&self, _ui: &Ui) -> String {
        let s = &self.scaled;
        format!(
            "{} {}: {} → {} replicas, running healthy after {:.1}s\n{}\n",
            Paint::ok("scaled"),
            s.service,
            s.from,
            s.to,
            s.seconds,
            Paint::dim(format!(
                "not durable: the next `beamops up chapter-08` or `deploy` restores {} ({}); change that key to keep it",
                self.durable_setting, self.durable_replicas
            ))
        )
    }
}

pub fn scale(global: &Global, ui: &Ui, args: &ScaleArgs) -> Result<Exit> {
    let t = target(global, Some(&args.environment))?;
    if args.replicas == 0 {
        ui.note("scaling to 0 stops every task of the service");
    }
    let timeout = humantime::parse_duration(&t.project.config.chapters.swarm.converge_timeout)
        .context("chapters.swarm.converge_timeout")?;
    // Scaling changes the swarm: it waits for a deploy in progress like up does.
    let holder = crate::swarm::lock::Holder::current("scale", global.message.clone());
    let _lock = crate::swarm::lock::acquire_for_environment(
        &t.project,
        &t.environment,
        &t.docker,
        &holder,
        global.lock_wait,
        |m| ui.note(m),
    )?;
    let scaled = t.rt().block_on(scaling::scale(
        t.daemon(),
        &t.stack,
        &args.service,
        args.replicas,
        ui,
        timeout,
    ))?;
    let env = t.project.config.require_environment(&t.environment)?;
    emit(
        &ScaleReport {
            durable_setting: format!("environments.{}.replicas", t.environment),
            durable_replicas: env.replicas,
            environment: t.environment,
            scaled,
        },
        ui,
    )
}
