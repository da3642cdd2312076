//! Driving the `sops` binary. Plaintext travels only through pipes (stdin/stdout), the age key
//! only through the child's `SOPS_AGE_KEY_FILE` — never argv, never a temporary file.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{Plaintext, age, encrypted_file};
use crate::exit::Failure;
use crate::project::Project;

pub struct Sops {
    bin: PathBuf,
    key_file: PathBuf,
    root: PathBuf,
}

impl Sops {
    /// sops on PATH, the age key present and `.sops.yaml` written; otherwise blocked with the fix.
    pub fn new(project: &Project) -> Result<Sops> {
        let bin = super::tool("sops")?;
        let key_file = age::key_file(project)?;
        if !key_file.is_file() {
            return Err(Failure::Blocked(format!(
                "no age key at {}\n  fix: run `beamops secrets init` (new key), or copy the team's key there (mode 0600), or set BEAMOPS_AGE_KEY_FILE",
                key_file.display()
            ))
            .into());
        }
        if !project.root.join(age::SOPS_CONFIG).is_file() {
            return Err(Failure::Blocked(format!(
                "no {} in {}\n  fix: run `beamops secrets init`",
                age::SOPS_CONFIG,
                project.root.display()
            ))
            .into());
        }
        Ok(Sops {
            bin,
            key_file,
            root: project.root.clone(),
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.root)
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .arg("--config")
            .arg(age::SOPS_CONFIG);
        cmd
    }

    pub fn exists(&self, env: &str) -> bool {
        self.root.join(encrypted_file(env)).is_file()
    }

    /// The environment's values, decrypted into memory; empty when it has no file yet.
    pub fn decrypt(&self, env: &str) -> Result<Plaintext> {
        let file = encrypted_file(env);
        if !self.exists(env) {
            return Ok(Plaintext::default());
        }
        let mut cmd = self.command();
        cmd.args(["decrypt", "--output-type", "json", &file]);
        let out =
            run(cmd, None, &Plaintext::default()).with_context(|| format!("decrypting {file}"))?;
        let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out)
            .with_context(|| format!("{file}: decrypted content is not a mapping of KEY: value"))?;
        let mut values = std::collections::BTreeMap::new();
        for (key, value) in doc {
            if key == "sops" {
                continue;
            }
            super::validate_key(&key).with_context(|| format!("in {file}"))?;
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => anyhow::bail!(
                    "{file}: `{key}` is not a single value\n  fix: `beamops secrets edit {env}` and make it a string"
                ),
            };
            values.insert(key, text);
        }
        Ok(Plaintext(values))
    }

    /// Sets one key, creating the file when absent. `known` only serves to redact tool output.
    pub fn set(&self, env: &str, key: &str, value: &str, known: &Plaintext) -> Result<()> {
        let file = encrypted_file(env);
        let mut redact = known.clone();
        redact.0.insert(key.to_string(), value.to_string());
        if self.exists(env) {
            let mut cmd = self.command();
            cmd.args([
                "set",
                "--value-stdin",
                &file,
                &format!("[{}]", serde_json::to_string(key)?),
            ]);
            let json = serde_json::to_string(value)?;
            run(cmd, Some(json.as_bytes()), &redact)
                .with_context(|| format!("setting {key} in {file}"))?;
        } else {
            let mut all = known.clone();
            all.0.insert(key.to_string(), value.to_string());
            self.encrypt_all(env, &all)?;
        }
        Ok(())
    }

    /// Encrypts a whole document read from stdin into `secrets/<env>.enc.yaml`.
    fn encrypt_all(&self, env: &str, values: &Plaintext) -> Result<()> {
        let file = encrypted_file(env);
        let yaml = serde_yaml_ng::to_string(&values.0)?;
        let mut cmd = self.command();
        cmd.args([
            "encrypt",
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
            "--filename-override",
            &file,
            "/dev/stdin",
        ]);
        let ciphertext = run(cmd, Some(yaml.as_bytes()), values)
            .with_context(|| format!("encrypting {file}"))?;
        crate::fsutil::atomic_write(&self.root.join(&file), &ciphertext, Some(0o644))
    }

    /// `sops edit`: sops decrypts to its own private temporary file for $EDITOR and re-encrypts.
    pub fn edit(&self, env: &str) -> Result<()> {
        let file = encrypted_file(env);
        let status = self
            .command()
            .args(["edit", &file])
            .status()
            .context("running sops edit")?;
        // sops exits 200 when the file was left unchanged.
        if !status.success() && status.code() != Some(200) {
            anyhow::bail!("sops edit {file} failed ({status})");
        }
        Ok(())
    }

    /// Re-encrypts the data key of an environment's file for the recipients in `.sops.yaml`.
    pub fn updatekeys(&self, env: &str) -> Result<()> {
        let file = encrypted_file(env);
        let mut cmd = self.command();
        cmd.args(["updatekeys", "--yes", &file]);
        run(cmd, None, &Plaintext::default()).with_context(|| format!("sops updatekeys {file}"))?;
        Ok(())
    }

    /// Every `secrets/<env>.enc.yaml` there is, by environment name.
    pub fn environments(&self) -> Result<Vec<String>> {
        let dir = self.root.join("secrets");
        let mut envs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(env) = name.strip_suffix(".enc.yaml") {
                    envs.push(env.to_string());
                }
            }
        }
        envs.sort();
        Ok(envs)
    }
}

/// Runs sops with `input` on stdin; returns stdout. Its stderr, redacted, goes into the error.
fn run(mut cmd: Command, input: Option<&[u8]>, redact: &Plaintext) -> Result<Vec<u8>> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting sops")?;
    let writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        // A separate thread, so a large input cannot deadlock against a full stdout pipe.
        std::thread::spawn(move || stdin.write_all(&bytes))
    });
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut stdout)?;
    stderr.extend(err_reader.join().unwrap_or_default());
    let status = child.wait()?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if !status.success() {
        let text = redact.redact(String::from_utf8_lossy(&stderr).trim());
        anyhow::bail!(
            "sops failed ({status}): {text}\n  fix: check that your age key is one of the recipients in .sops.yaml"
        );
    }
    Ok(stdout)
}
