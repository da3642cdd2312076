//! Chapter 07's action: the environment's encrypted secrets as versioned Docker secrets.

use anyhow::Result;

use super::{Action, ActionContext, Applied, Check};
use crate::secrets::{self, RELEASE_COOKIE, SECRET_KEY_BASE, age, encrypted_file, sops::Sops};

pub struct DockerSecrets {
    /// The key of the chapter whose manifest lists it: the secrets it creates are labelled so.
    pub chapter: String,
}

impl DockerSecrets {
    /// The ciphertext and the stack: when neither changed since the last apply and the recorded
    /// secrets still exist, nothing needs decrypting. sops re-encrypts with fresh IVs, so an
    /// unchanged value re-set still shows as pending; the apply's HMACs then create nothing.
    fn inputs_digest(cx: &ActionContext) -> String {
        let stack = cx.project.config.app.stack_name();
        let cipher = std::fs::read(cx.path(&encrypted_file(cx.env_name))).unwrap_or_default();
        let mut input = format!("{stack}\0").into_bytes();
        input.extend(cipher);
        crate::fsutil::sha256_hex(&input)
    }
}

impl Action for DockerSecrets {
    fn id(&self) -> String {
        <super::record::DockerSecretsRecord as super::record::Record>::ACTION.into()
    }
    fn describe(&self) -> String {
        "decrypt secrets in memory and create versioned Docker secrets".into()
    }
    fn touches_swarm(&self) -> bool {
        true
    }
    /// The secrets live in the swarm: on an Engine a plan has yet to make a swarm, checking
    /// them is pending.
    fn needs(&self) -> &'static [&'static str] {
        &["swarm-mode"]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        for tool in ["sops", "age"] {
            if let Err(e) = secrets::tool(tool) {
                return Ok(Check::Blocked(format!("{e:#}")));
            }
        }
        let key_file = age::key_file(cx.project)?;
        if !key_file.is_file() || !cx.path(age::SOPS_CONFIG).is_file() {
            return Ok(Check::Blocked(format!(
                "no age key at {} or no .sops.yaml; fix: run `beamops secrets init`",
                key_file.display()
            )));
        }
        let stack = cx.project.config.app.stack_name();
        let recorded = match cx.recorded_for::<secrets::Applied>(&Self::inputs_digest(cx)) {
            Ok(r) => r,
            Err(e) => return Ok(Check::Pending(format!("{e:#}"))),
        };
        let Some(recorded) = recorded else {
            return Ok(Check::Pending(format!(
                "{} changed since the last apply (or never applied)",
                encrypted_file(cx.env_name)
            )));
        };
        let (rt, daemon) = cx.engine()?;
        let on_engine = rt.block_on(secrets::docker::stack_secrets(daemon, stack))?;
        let missing: Vec<&str> = recorded
            .secrets
            .values()
            .filter(|s| !on_engine.iter().any(|e| e.name == s.name))
            .map(|s| s.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Ok(Check::Pending(format!(
                "missing on the Engine: {}",
                missing.join(", ")
            )));
        }
        let names: Vec<&str> = recorded.secrets.values().map(|s| s.name.as_str()).collect();
        Ok(Check::Satisfied(format!(
            "{} secret(s) current: {}",
            names.len(),
            names.join(", ")
        )))
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let sops = Sops::new(cx.project)?;
        let mut values = sops.decrypt(cx.env_name)?;
        let mut generated = Vec::new();
        // 64 random bytes each: the cookie must be the same on every node, SECRET_KEY_BASE
        // at least 64 characters; both are written back encrypted so every run agrees.
        for key in [RELEASE_COOKIE, SECRET_KEY_BASE] {
            if !values.0.contains_key(key) {
                let value = secrets::generate_value(64)?;
                sops.set(cx.env_name, key, &value, &values)?;
                values.0.insert(key.to_string(), value);
                generated.push(key);
            }
        }
        let hmac_key = secrets::hmac_key(cx.project)?;
        let stack = cx.project.config.app.stack_name();
        let previous = cx.recorded_or_warn::<secrets::Applied>(None);
        let (rt, daemon) = cx.engine()?;
        let done = rt.block_on(secrets::docker::converge(
            daemon,
            stack,
            &self.chapter,
            &values,
            &hmac_key,
            previous.as_ref(),
        ))?;
        drop(values);
        let mut parts = Vec::new();
        if !generated.is_empty() {
            parts.push(format!(
                "generated {} into {}",
                generated.join(", "),
                encrypted_file(cx.env_name)
            ));
        }
        if !done.created.is_empty() {
            parts.push(format!("created {}", done.created.join(", ")));
        }
        if !done.kept.is_empty() {
            parts.push(format!("unchanged {}", done.kept.join(", ")));
        }
        if !done.rotated.is_empty() {
            parts.push(format!("services moved: {}", done.rotated.join("; ")));
        }
        if !done.pruned.is_empty() {
            parts.push(format!("removed unused {}", done.pruned.join(", ")));
        }
        for line in &parts {
            cx.ui.detail(format!("  {line}"));
        }
        Ok(Applied {
            summary: parts.join("; "),
            data: super::record::to_data(&done.applied),
            inputs_digest: Some(Self::inputs_digest(cx)),
        })
    }
    /// `apply` reads back every secret it creates; the generic verify would re-run `check`
    /// against the record this apply has not stored yet.
    fn verify(&self, _cx: &ActionContext) -> Result<()> {
        Ok(())
    }
    // No undo: removing secrets a running stack mounts would break it; `deploy` prunes unused ones.
}
