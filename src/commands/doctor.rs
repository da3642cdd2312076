use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::exit::Exit;
use crate::output::{Paint, Report, Ui, emit};
use crate::tools;

#[derive(Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// A failing required check makes doctor exit 3 (blocked).
    pub required: bool,
}

#[derive(Serialize)]
pub struct DoctorReport {
    pub findings: Vec<Finding>,
}

impl Report for DoctorReport {
    fn text(&self, _ui: &Ui) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let mark = if f.ok {
                Paint::ok("✓")
            } else if f.required {
                Paint::bad("✗")
            } else {
                Paint::warn("!")
            };
            out += &format!("{mark} {:<22} {}\n", f.check, f.detail);
            if let (false, Some(fix)) = (f.ok, &f.fix) {
                out += &format!("  {}\n", Paint::dim(format!("fix: {fix}")));
            }
        }
        out
    }
    fn exit(&self) -> Exit {
        if self.findings.iter().any(|f| f.required && !f.ok) {
            Exit::Blocked
        } else {
            Exit::Ok
        }
    }
}

pub fn run(global: &Global, ui: &Ui) -> Result<Exit> {
    let mut findings = Vec::new();
    let mut reach = Ok(crate::docker::Reach::of(None));
    match global.project() {
        Ok(project) => {
            if let Ok(engine) = global.engine(&project, ui) {
                reach = crate::docker::Reach::for_environment(&project, &engine.env_name);
            }
            findings.push(Finding {
                check: "configuration".into(),
                ok: true,
                detail: format!("{} is valid", crate::config::CONFIG_FILE),
                fix: None,
                required: true,
            });
            findings.push(match git2::Repository::discover(&project.root) {
                Ok(_) => Finding {
                    check: "git repository".into(),
                    ok: true,
                    detail: "found".into(),
                    fix: None,
                    required: false,
                },
                Err(e) => Finding {
                    check: "git repository".into(),
                    ok: false,
                    detail: e.message().to_string(),
                    fix: Some("git init".into()),
                    required: false,
                },
            });
        }
        Err(e) => {
            // The error carries its own fix; print it once.
            let text = format!("{e:#}");
            let (detail, fix) = match text.split_once("\n  fix: ") {
                Some((why, fix)) => (why.to_string(), fix.to_string()),
                None => (text, "beamops init, or --project DIR".to_string()),
            };
            findings.push(Finding {
                check: "configuration".into(),
                ok: false,
                detail,
                fix: Some(fix),
                required: true,
            })
        }
    }
    for t in tools::probe_all() {
        findings.push(Finding {
            check: t.name.to_string(),
            ok: t.path.is_some(),
            detail: match (&t.version, t.path.is_some()) {
                (Some(v), true) => format!("{v} — {}", t.purpose),
                (None, true) => format!("found — {}", t.purpose),
                _ => format!("not found — {}", t.purpose),
            },
            fix: Some(t.install.to_string()),
            required: false,
        });
    }
    findings.push(engine_finding(reach));
    emit(&DoctorReport { findings }, ui)
}

/// Reaches the environment's Engine the way every command does (opening an ssh tunnel if the
/// address says so) and names the route. Not required: many commands never need an Engine.
fn engine_finding(reach: Result<crate::docker::Reach>) -> Finding {
    let reach = match reach {
        Ok(reach) => reach,
        // An aws environment whose manager is unknown or whose host key is not pinned.
        Err(e) => {
            let text = format!("{e:#}");
            let (why, fix) = match text.split_once("\n  fix: ") {
                Some((why, fix)) => (why.to_string(), Some(fix.to_string())),
                None => (text, None),
            };
            return Finding {
                check: "docker engine".into(),
                ok: false,
                detail: why.strip_prefix("blocked: ").unwrap_or(&why).to_string(),
                fix,
                required: false,
            };
        }
    };
    let probe = crate::docker::block_on(async {
        let daemon = crate::docker::connect(&reach.host).await?;
        let version = daemon.client.version().await?;
        anyhow::Ok((daemon, version))
    });
    let (ok, detail, fix) = match probe.and_then(|r| r) {
        Ok((daemon, version)) => (
            true,
            format!(
                "{} {} (API {}) via {}",
                reach.host,
                version.version.unwrap_or_else(|| "?".into()),
                daemon.api_version,
                reach.describe
            ),
            None,
        ),
        Err(e) => {
            let text = format!("{e:#}");
            let (why, fix) = match text.split_once("\n  fix: ") {
                Some((why, fix)) => (why.to_string(), Some(fix.to_string())),
                None => (text, None),
            };
            let why = why.strip_prefix("blocked: ").unwrap_or(&why);
            (false, format!("{why} (via {})", reach.describe), fix)
        }
    };
    Finding {
        check: "docker engine".into(),
        ok,
        detail,
        fix,
        required: false,
    }
}
