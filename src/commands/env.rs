use anyhow::Result;
use serde::Serialize;

use super::Global;
use crate::exit::Exit;
use crate::output::{Format, Paint, Report, Ui, emit};
use crate::tools::{self, Tool};

#[derive(Serialize)]
pub struct EnvReport {
    pub root: String,
    pub config: String,
    pub state_dir: String,
    pub environment: String,
    pub provider: String,
    pub docker_host: Option<String>,
    /// The Engine this environment reaches and how (unix socket, tcp, tcp+TLS, ssh tunnel).
    pub engine: crate::docker::Reach,
    pub tools: Vec<Tool>,
    #[serde(skip)]
    shell: bool,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Report for EnvReport {
    fn text(&self, _ui: &Ui) -> String {
        if self.shell {
            let mut out = format!(
                "export BEAMOPS_ROOT={}\nexport BEAMOPS_STATE_DIR={}\nexport BEAMOPS_ENV={}\n",
                quote(&self.root),
                quote(&self.state_dir),
                quote(&self.environment)
            );
            if let Some(h) = &self.docker_host {
                out += &format!("export DOCKER_HOST={}\n", quote(h));
            }
            return out;
        }
        let mut out = format!(
            "root         {}\nconfig       {}\nstate dir    {}\nenvironment  {} ({})\n",
            self.root, self.config, self.state_dir, self.environment, self.provider
        );
        out += &format!(
            "engine       {} ({}) via {}\n",
            self.engine.host, self.engine.source, self.engine.describe
        );
        out += "tools\n";
        for t in &self.tools {
            match (&t.path, &t.version) {
                (Some(p), v) => {
                    out += &format!(
                        "  {:<10} {} {}\n",
                        t.name,
                        v.as_deref().unwrap_or("?"),
                        Paint::dim(p)
                    )
                }
                (None, _) => out += &format!("  {:<10} {}\n", t.name, Paint::warn("not found")),
            }
        }
        out
    }
}

pub fn run(global: &Global, ui: &Ui, shell: bool) -> Result<Exit> {
    let project = global.project()?;
    let engine = global.engine(&project, ui)?;
    let report = EnvReport {
        root: project.root.display().to_string(),
        config: project
            .root
            .join(crate::config::CONFIG_FILE)
            .display()
            .to_string(),
        state_dir: project.state_dir().display().to_string(),
        environment: engine.env_name.clone(),
        provider: engine.env.provider.to_string(),
        docker_host: engine.env.docker_host.clone(),
        engine: crate::docker::Reach::for_environment(&project, &engine.env_name)
            .unwrap_or_else(|e| crate::docker::Reach::unresolved(&e)),
        tools: if shell {
            Vec::new()
        } else {
            tools::probe_all()
        },
        shell: shell && ui.format == Format::Text,
    };
    emit(&report, ui)
}
