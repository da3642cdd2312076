//! `beamops secrets …`: the age key, `.sops.yaml` recipients and values (chapter 07).

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Global;
use crate::cli::{RecipientsCommand, SecretsCommand};
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};
use crate::project::Project;
use crate::secrets::{self, age, encrypted_file, sops::Sops};

/// One report for every `secrets` subcommand; fields a subcommand does not touch are absent.
/// It never carries a value: only names, paths and public keys.
#[derive(Debug, Serialize, Default)]
pub struct SecretsReport {
    pub command: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_created: Option<bool>,
    pub recipients: Vec<String>,
    /// Files whose data key was re-encrypted for the new recipients (`sops updatekeys`).
    pub reencrypted: Vec<String>,
    /// Something was written.
    pub changed: bool,
    /// `push-github`: the GitHub repository and where in it (`repository` or `environment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `push-github`: the secret did not exist before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report for SecretsReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut out = String::new();
        let mark = if self.changed {
            Paint::ok("✓")
        } else {
            Paint::dim("=")
        };
        match self.command {
            "init" => {
                out += &format!(
                    "{mark} age key {} {}\n",
                    self.key_file.as_deref().unwrap_or(""),
                    Paint::dim(if self.key_created == Some(true) {
                        "(created, mode 0600)"
                    } else {
                        "(exists)"
                    })
                );
                out += &format!(
                    "  public key {}\n",
                    Paint::bold(self.public_key.as_deref().unwrap_or(""))
                );
            }
            "set" => {
                out += &format!(
                    "{mark} {} set in {}\n",
                    self.key.as_deref().unwrap_or(""),
                    self.file.as_deref().unwrap_or("")
                );
            }
            "edit" => {
                out += &format!("{mark} edited {}\n", self.file.as_deref().unwrap_or(""));
            }
            "push-github" => {
                out += &format!(
                    "{mark} {} stored in the {} secrets of {} {}\n",
                    self.key.as_deref().unwrap_or(""),
                    self.scope.as_deref().unwrap_or(""),
                    self.repository.as_deref().unwrap_or(""),
                    Paint::dim(if self.created == Some(true) {
                        "(created)"
                    } else {
                        "(updated)"
                    })
                );
                return out;
            }
            _ => {}
        }
        if self.command != "set" && self.command != "edit" {
            out += &format!("  recipients ({}):\n", self.recipients.len());
            for r in &self.recipients {
                out += &format!("    {r}\n");
            }
        }
        for f in &self.reencrypted {
            out += &format!("  re-encrypted {f}\n");
        }
        for n in &self.notes {
            out += &format!("  {} {n}\n", Paint::warn("!"));
        }
        out
    }
}

pub fn run(global: &Global, ui: &Ui, command: &SecretsCommand) -> Result<Exit> {
    let project = global.project()?;
    // Writers take the run lock: `up chapter-07` rewrites the same encrypted files.
    let _run = match command {
        SecretsCommand::Recipients(RecipientsCommand::List) | SecretsCommand::PushGithub { .. } => {
            None
        }
        _ => Some(crate::state::RunLock::acquire(
            &project.state_dir(),
            global.lock_wait,
            |m| ui.note(m),
        )?),
    };
    // A required ENV names the environment; a different --env typed beside it is an error.
    if let SecretsCommand::Set { environment, .. }
    | SecretsCommand::Edit { environment }
    | SecretsCommand::PushGithub { environment, .. } = command
    {
        global.env_given(Some(environment))?;
    }
    let report = match command {
        SecretsCommand::Init { recipients } => init(&project, recipients)?,
        SecretsCommand::Set { environment, key } => set(&project, ui, environment, key)?,
        SecretsCommand::Edit { environment } => {
            project.config.require_environment(environment)?;
            Sops::new(&project)?.edit(environment)?;
            SecretsReport {
                command: "edit",
                environment: Some(environment.clone()),
                file: Some(encrypted_file(environment)),
                changed: true,
                ..Default::default()
            }
        }
        SecretsCommand::PushGithub {
            environment,
            name,
            repository_level,
        } => push_github(&project, ui, environment, name, *repository_level)?,
        SecretsCommand::Recipients(RecipientsCommand::List) => SecretsReport {
            command: "recipients",
            recipients: current_recipients(&project)?,
            ..Default::default()
        },
        SecretsCommand::Recipients(RecipientsCommand::Add { recipient }) => {
            age::validate_recipient(recipient)?;
            let mut list = current_recipients(&project)?;
            change_recipients(&project, &mut list, |l| {
                if l.contains(recipient) {
                    false
                } else {
                    l.push(recipient.clone());
                    true
                }
            })?
        }
        SecretsCommand::Recipients(RecipientsCommand::Remove { recipient }) => {
            let mut list = current_recipients(&project)?;
            if !list.contains(recipient) {
                anyhow::bail!(
                    "{recipient} is not a recipient in .sops.yaml\n  fix: `beamops secrets recipients list` shows them"
                );
            }
            if list.len() == 1 {
                return Err(crate::exit::Failure::refused(
                    "that is the last recipient",
                    "  fix: add another recipient first; with none, nobody could decrypt the secrets",
                )
                .into());
            }
            change_recipients(&project, &mut list, |l| {
                l.retain(|r| r != recipient);
                true
            })?
        }
    };
    emit(&report, ui)
}

fn current_recipients(project: &Project) -> Result<Vec<String>> {
    age::recipients(&project.root)?.ok_or_else(|| {
        crate::exit::Failure::Blocked(format!(
            "no {} in {}\n  fix: run `beamops secrets init`",
            age::SOPS_CONFIG,
            project.root.display()
        ))
        .into()
    })
}

/// Applies `change` to the recipients, writes `.sops.yaml` and re-encrypts every file for them.
fn change_recipients(
    project: &Project,
    list: &mut Vec<String>,
    change: impl FnOnce(&mut Vec<String>) -> bool,
) -> Result<SecretsReport> {
    let mut report = SecretsReport {
        command: "recipients",
        ..Default::default()
    };
    // Checked before writing, so a missing sops or key leaves .sops.yaml as it was.
    let sops = Sops::new(project)?;
    let changed = change(list);
    let before = std::fs::read(project.root.join(age::SOPS_CONFIG))?;
    if changed {
        age::write_recipients(&project.root, list)?;
    }
    // Every file, even when the list did not change: `updatekeys` is idempotent, so running the
    // command again repairs a run that was killed or failed half-way.
    let mut done: Vec<String> = Vec::new();
    for env in sops.environments()? {
        if let Err(e) = sops.updatekeys(&env) {
            if changed {
                // Put the old recipients back, in .sops.yaml and in the files already done.
                crate::fsutil::atomic_write(
                    &project.root.join(age::SOPS_CONFIG),
                    &before,
                    Some(0o644),
                )?;
                for d in &done {
                    let _ = sops.updatekeys(d);
                }
            }
            return Err(e.context(
                "re-encrypting for the recipients failed; .sops.yaml and the files done so far are back to the old recipients",
            ));
        }
        if changed {
            report.reencrypted.push(encrypted_file(&env));
        }
        done.push(env.to_string());
    }
    report.changed = changed;
    report.recipients = list.clone();
    Ok(report)
}

fn init(project: &Project, extra: &[String]) -> Result<SecretsReport> {
    for r in extra {
        age::validate_recipient(r)?;
    }
    let key_file = age::key_file(project)?;
    let (public_key, key_created) = age::ensure_identity(&key_file)?;
    let mut report = SecretsReport {
        command: "init",
        key_file: Some(key_file.display().to_string()),
        public_key: Some(public_key.clone()),
        key_created: Some(key_created),
        changed: key_created,
        ..Default::default()
    };
    match age::recipients(&project.root)? {
        None => {
            let mut list = vec![public_key];
            for r in extra {
                if !list.contains(r) {
                    list.push(r.clone());
                }
            }
            age::write_recipients(&project.root, &list)?;
            report.recipients = list;
            report.changed = true;
        }
        Some(mut list) => {
            if !list.contains(&public_key) {
                // Adding ourselves needs someone who can already decrypt to re-encrypt.
                report.notes.push(format!(
                    "your key is not a recipient yet: ask a teammate to run `beamops secrets recipients add {public_key}`"
                ));
            }
            let missing: Vec<String> = extra
                .iter()
                .filter(|r| !list.contains(r))
                .cloned()
                .collect();
            if missing.is_empty() {
                report.recipients = list;
            } else {
                let changed = change_recipients(project, &mut list, |l| {
                    l.extend(missing);
                    true
                })?;
                report.recipients = changed.recipients;
                report.reencrypted = changed.reencrypted;
                report.changed = true;
            }
        }
    }
    Ok(report)
}

fn set(project: &Project, ui: &Ui, env: &str, key: &str) -> Result<SecretsReport> {
    project.config.require_environment(env)?;
    secrets::validate_key(key)?;
    let sops = Sops::new(project)?;
    let value = read_value(ui, key)?;
    // Decrypting first makes every existing value available for redacting sops' messages.
    let known = sops.decrypt(env)?;
    sops.set(env, key, &value, &known)?;
    Ok(SecretsReport {
        command: "set",
        environment: Some(env.to_string()),
        key: Some(key.to_string()),
        file: Some(encrypted_file(env)),
        changed: true,
        ..Default::default()
    })
}

/// `secrets push-github`: the token first (no value is asked for when it would go nowhere),
/// then the value from stdin, sealed and stored.
fn push_github(
    project: &Project,
    ui: &Ui,
    env: &str,
    name: &str,
    repository_level: bool,
) -> Result<SecretsReport> {
    use crate::cicd::{self, github};
    project.config.require_environment(env)?;
    anyhow::ensure!(
        github::secret_name_ok(name),
        "`{name}` is not a GitHub secret name\n  fix: use letters, digits and `_`, not starting with a digit or GITHUB_"
    );
    let repo = cicd::repository(project).ok_or_else(|| {
        anyhow::anyhow!(
            "no GitHub repository known\n  fix: set ci.repository (owner/name) in beamops.yaml, or an origin remote on GitHub"
        )
    })?;
    let api = &project.config.ci.api_url;
    let token = github::token(github::api_host(api)).ok_or_else(|| {
        crate::exit::Failure::Blocked(format!(
            "no GitHub token to store {name} with\n  fix: {}",
            github::HOW_TO_GET_A_TOKEN
        ))
    })?;
    let client = github::Client::new(api, &repo, token)?;
    let value = read_value(ui, name)?;
    let scope = if repository_level {
        github::Scope::Repository
    } else {
        github::Scope::Environment(env.to_string())
    };
    let created = client.put_secret(&scope, name, value.as_bytes())?;
    Ok(SecretsReport {
        command: "push-github",
        environment: (!repository_level).then(|| env.to_string()),
        key: Some(name.to_string()),
        repository: Some(repo),
        scope: Some(scope.to_string()),
        created: Some(created),
        changed: true,
        ..Default::default()
    })
}

/// The value from stdin: a hidden prompt on a terminal, else everything piped in, minus the
/// one trailing newline `echo` adds.
fn read_value(ui: &Ui, key: &str) -> Result<String> {
    let mut value = if std::io::stdin().is_terminal() {
        let _ = ui;
        console::Term::stderr()
            .write_str(&format!("{key} (input hidden): "))
            .ok();
        console::Term::stderr()
            .read_secure_line()
            .context("reading the value from the terminal")?
    } else {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading the value from stdin (it must be UTF-8 text)")?;
        buf
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        anyhow::bail!(
            "no value on stdin for {key}\n  fix: pipe it in, e.g. `pass show db | beamops secrets set ENV {key}`"
        );
    }
    Ok(value)
}
