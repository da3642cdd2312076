//! The age identity (outside the repository) and the recipients listed in `.sops.yaml`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::exit::Failure;
use crate::project::Project;

pub const SOPS_CONFIG: &str = ".sops.yaml";
/// The files the creation rule covers, relative to the project root.
const PATH_REGEX: &str = r"^secrets/[^/]+\.enc\.yaml$";

/// `$BEAMOPS_AGE_KEY_FILE`, else `$XDG_CONFIG_HOME/beamops/age/<app>.key` (default `~/.config`).
/// Refused inside the project: a private key there is one `git add -A` from being published.
pub fn key_file(project: &Project) -> Result<PathBuf> {
    let path = match std::env::var_os("BEAMOPS_AGE_KEY_FILE").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .context("neither XDG_CONFIG_HOME nor HOME is set\n  fix: set BEAMOPS_AGE_KEY_FILE to where the age key lives")?;
            config
                .join("beamops/age")
                .join(format!("{}.key", project.config.app.name))
        }
    };
    // Relative to where beamops was started, made absolute once: sops runs in the project root,
    // and the inside-the-project check must see the real place.
    let path = std::path::absolute(&path)
        .with_context(|| format!("BEAMOPS_AGE_KEY_FILE {}: not a usable path", path.display()))?;
    if super::is_inside(&project.root, &path) {
        return Err(Failure::refused(
            format!("the age key {} is inside the project", path.display()),
            "  fix: point BEAMOPS_AGE_KEY_FILE outside the repository (default ~/.config/beamops/age/<app>.key)",
        )
        .into());
    }
    Ok(path)
}

/// Creates the identity with `age-keygen` if absent (mode 0600, directory 0700).
/// Returns the public key and whether it was created now.
pub fn ensure_identity(path: &Path) -> Result<(String, bool)> {
    if path.exists() {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            // Only the owner may read a private key; tighten rather than refuse.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod 600 {}", path.display()))?;
        }
        return Ok((public_key(path)?, false));
    }
    let keygen = super::tool("age-keygen")?;
    // The key comes back through a pipe and is written once, by us, with 0600 from the start.
    let out = Command::new(keygen)
        .stdin(Stdio::null())
        .output()
        .context("running age-keygen")?;
    if !out.status.success() {
        anyhow::bail!(
            "age-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = path.parent().context("key path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ok();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&out.stdout)?;
    file.sync_all()?;
    Ok((public_key(path)?, true))
}

/// The `# public key: age1…` line age-keygen writes above the secret key.
pub fn public_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the age key {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .map(|k| k.trim().to_string())
        .with_context(|| {
            format!(
                "{}: no `# public key:` line\n  fix: a key made by age-keygen has one; `age-keygen -y {}` prints it",
                path.display(),
                path.display()
            )
        })
}

pub fn validate_recipient(r: &str) -> Result<()> {
    // age X25519 recipients: "age1" + 58 bech32 characters.
    let bech32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if r.len() == 62 && r.starts_with("age1") && r[4..].chars().all(|c| bech32.contains(c)) {
        Ok(())
    } else {
        anyhow::bail!(
            "`{r}` is not an age recipient\n  fix: pass a public key like age1… (`age-keygen -y KEYFILE` prints yours)"
        )
    }
}

/// The recipients in `.sops.yaml`, or `None` when there is no `.sops.yaml`.
pub fn recipients(root: &Path) -> Result<Option<Vec<String>>> {
    let path = root.join(SOPS_CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The same bounds as beamops.yaml: no alias bomb or deep nesting reaches the parser.
    if let Err(e) = crate::config::guard::check(&text) {
        anyhow::bail!(
            "{}:{}:{}: {}\n  fix: {}",
            path.display(),
            e.line,
            e.column,
            e.message,
            e.fix
        );
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).with_context(|| {
        format!(
            "{}: not YAML\n  fix: repair it or delete it and run `beamops secrets init`",
            path.display()
        )
    })?;
    let age = doc
        .get("creation_rules")
        .and_then(|r| r.as_sequence())
        .and_then(|rules| rules.iter().find_map(|r| r.get("age")))
        .with_context(|| format!("{}: no creation rule with `age` recipients\n  fix: run `beamops secrets recipients add age1…`", path.display()))?;
    let list: Vec<String> = match age {
        serde_yaml_ng::Value::String(s) => s.split(',').map(|r| r.trim().to_string()).collect(),
        serde_yaml_ng::Value::Sequence(seq) => seq
            .iter()
            .filter_map(|v| v.as_str().map(|s| s.trim().to_string()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some(list.into_iter().filter(|r| !r.is_empty()).collect()))
}

/// Writes `.sops.yaml` with one creation rule for `secrets/*.enc.yaml`. The file belongs to
/// `beamops secrets`: recipients change through `recipients add|remove`, which re-encrypt.
pub fn write_recipients(root: &Path, recipients: &[String]) -> Result<()> {
    let mut text = String::from(
        "# Written by `beamops secrets`; change recipients with `beamops secrets recipients add|remove`\n# (they re-encrypt every secrets/*.enc.yaml with `sops updatekeys`).\ncreation_rules:\n",
    );
    text.push_str(&format!("  - path_regex: '{PATH_REGEX}'\n    age: >-\n"));
    let joined = recipients.join(",\n      ");
    text.push_str(&format!("      {joined}\n"));
    crate::fsutil::atomic_write(&root.join(SOPS_CONFIG), text.as_bytes(), Some(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const R2: &str = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg";

    #[test]
    fn recipients_round_trip_through_sops_yaml() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recipients(dir.path()).unwrap(), None);
        let list = vec![R1.to_string(), R2.to_string()];
        write_recipients(dir.path(), &list).unwrap();
        assert_eq!(recipients(dir.path()).unwrap(), Some(list));
    }

    #[test]
    fn recipients_are_validated() {
        validate_recipient(R1).unwrap();
        assert!(validate_recipient("age1short").is_err());
        assert!(validate_recipient(&R1.replace("age1", "agex")).is_err());
    }
}
