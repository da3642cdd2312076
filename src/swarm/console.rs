//! `beamops console`: `bin/<otp_app> remote` exec'd in a running task's container, attached to
//! this terminal (a TTY when stdin is one), or to a pipe so scripts and tests can talk to it.
//!
//! Exec goes to the Engine that runs the container: the task is picked among those on the node
//! this environment's `docker_host` reaches.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result, bail};
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ExecConfig, TaskState};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::ps;
use crate::docker::{Daemon, is_not_found};

#[derive(Debug, Clone)]
pub struct Target {
    pub task: String,
    pub container: String,
    pub working_dir: Option<String>,
}

/// A running task of `service` whose container this Engine has.
pub async fn target(daemon: &Daemon, stack: &str, service: &str) -> Result<Target> {
    let (name, id, _) = ps::services(daemon, stack, Some(service))
        .await?
        .into_iter()
        .next()
        .context("no such service")?;
    let mut elsewhere = Vec::new();
    for task in ps::service_tasks(daemon, &name, &id, false).await? {
        let running = task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
        let Some(container) = ps::container_id(&task).filter(|_| running) else {
            continue;
        };
        match daemon.client.inspect_container(&container, None).await {
            Ok(c) => {
                return Ok(Target {
                    task: ps::task_name(&name, &task),
                    container,
                    working_dir: c
                        .config
                        .and_then(|c| c.working_dir)
                        .filter(|d| !d.is_empty()),
                });
            }
            Err(e) if is_not_found(&e) => elsewhere.push(ps::task_name(&name, &task)),
            Err(e) => return Err(e).with_context(|| format!("inspecting container {container}")),
        }
    }
    if elsewhere.is_empty() {
        bail!(
            "no running task of {name} on {}\n  fix: beamops ps shows the tasks and why they stopped",
            daemon.host
        );
    }
    bail!(
        "the running tasks of {name} ({}) are on other nodes than {}\n  fix: point the environment's docker_host at a node that runs one",
        elsewhere.join(", "),
        daemon.host
    )
}

/// Restores the terminal's mode when the session ends, however it ends.
struct RawTerminal(Option<String>);

impl RawTerminal {
    /// `stty` rather than termios bindings: one less dependency, and the same effect.
    fn enter() -> RawTerminal {
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if saved.is_some() {
            let _ = std::process::Command::new("stty")
                .args(["raw", "-echo"])
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        RawTerminal(saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(mode) = &self.0 {
            let _ = std::process::Command::new("stty")
                .arg(mode)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// Runs `command` in the target's container with this process's stdin, stdout and stderr;
/// returns the command's exit code.
pub async fn attach(daemon: &Daemon, target: &Target, command: Vec<String>) -> Result<i64> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let exec = daemon
        .client
        .create_exec(
            &target.container,
            ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty),
                cmd: Some(command.clone()),
                working_dir: target.working_dir.clone(),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("exec {} in {}", command.join(" "), target.task))?;
    let started = daemon
        .client
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("starting {} in {}", command.join(" "), target.task))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        bail!("the Engine started the exec detached");
    };
    let _raw = tty.then(RawTerminal::enter);
    // stdin is read on a plain thread (blocking reads), handed over through a channel; at its
    // end the write side is shut so the remote shell sees end of input and exits.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let writer = async move {
        while let Some(chunk) = rx.recv().await {
            if input.write_all(&chunk).await.is_err() {
                return;
            }
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    };
    let reader = async {
        while let Some(item) = output.next().await {
            let item = item.context("reading the console's output")?;
            match item {
                bollard::container::LogOutput::StdErr { message } => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&message)?;
                    err.flush()?;
                }
                other => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&other.into_bytes())?;
                    out.flush()?;
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::pin!(writer);
    tokio::pin!(reader);
    // Output ending means the command ended; stdin may still be open (a terminal), so the
    // writer is not waited for then.
    let mut writer_done = false;
    loop {
        tokio::select! {
            result = &mut reader => { result?; break; }
            () = &mut writer, if !writer_done => { writer_done = true; }
        }
    }
    let inspected = daemon
        .client
        .inspect_exec(&exec.id)
        .await
        .context("reading the console's exit code")?;
    Ok(inspected.exit_code.unwrap_or(0))
}
