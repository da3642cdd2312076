//! `terraform-applied`: a Terraform root planned and applied through [`crate::terraform`].
//!
//! A manifest names the root with a template expression, so one action serves every
//! environment and every chapter that contributes files to it:
//!
//! ```yaml
//! actions:
//!   - action: terraform-applied
//!     root: "terraform/{{ env.name }}"
//! ```
//!
//! The check runs `terraform plan` (read-only; the one check that asks an outside service,
//! like `cluster-formed` asks the nodes) and saves the plan; `apply` applies exactly that plan
//! file; `verify` plans again and must find no changes. Outputs, sensitive ones dropped, are
//! recorded in the action's state as `outputs`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Action, ActionContext, Applied, Check};
use crate::config::StateBackend;
use crate::exit::Failure;
use crate::terraform::{self, Runner};

/// The root every environment has: chapters 02, 06, 08 (aws) and 10 add files to it.
pub const ENV_ROOT: &str = "terraform/{{ env.name }}";

pub fn env_root() -> String {
    ENV_ROOT.into()
}

pub struct TerraformApplied {
    /// A template expression for the root's project-relative directory.
    pub root: String,
}

impl TerraformApplied {
    /// The root's directory for this environment, e.g. `terraform/staging`.
    pub fn root_for(&self, cx: &ActionContext) -> Result<String> {
        let ctx = crate::render::context(cx.project, cx.env_name)?;
        let root = tera::Tera::one_off(&self.root, &ctx, false)
            .with_context(|| format!("terraform-applied root `{}`", self.root))?;
        let root = root.trim().trim_end_matches('/').to_string();
        anyhow::ensure!(
            !root.is_empty() && !root.starts_with('/') && !root.split('/').any(|p| p == ".."),
            "terraform-applied root `{root}` must be a directory inside the project"
        );
        Ok(root)
    }

    /// The root's `.tf` files as this run will have them: rendered ones first, then the disk.
    fn files(&self, cx: &ActionContext, root: &str) -> Vec<(String, String)> {
        let mut files: std::collections::BTreeMap<String, String> = Default::default();
        if let Ok(dir) = std::fs::read_dir(cx.path(root)) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tf") {
                    let rel = format!("{root}/{name}");
                    if let Some(text) = cx.file(&rel) {
                        files.insert(rel, text);
                    }
                }
            }
        }
        for r in cx.rendered {
            if r.path.ends_with(".tf")
                && r.path.rsplit_once('/').is_some_and(|(dir, _)| dir == root)
            {
                files.insert(
                    r.path.clone(),
                    String::from_utf8_lossy(&r.content).into_owned(),
                );
            }
        }
        files.into_iter().collect()
    }

    /// The runner for `root`, with its working data in `.beamops/terraform/<root>/`.
    fn runner(&self, cx: &ActionContext, root: &str) -> Result<Runner> {
        let slug = root.replace('/', "_");
        let work = cx.project.state_dir().join("terraform").join(&slug);
        let mut runner = self.runner_in(cx, root, cx.path(root), work.clone())?;
        runner.lock_platforms = cx.project.config.chapters.terraform.lock_platforms.clone();
        if cx.project.config.chapters.terraform.state.backend == StateBackend::Local {
            runner.local_state = Some(work.join("terraform.tfstate"));
        }
        Ok(runner)
    }

    /// A runner for the root in `dir` with its working data in `work`: the mirror, the state
    /// backend and the UI from the project.
    fn runner_in(
        &self,
        cx: &ActionContext,
        root: &str,
        dir: PathBuf,
        work: PathBuf,
    ) -> Result<Runner> {
        let bin = terraform::find()?;
        let options = &cx.project.config.chapters.terraform;
        let mut runner = Runner::new(bin, dir, work);
        runner.plugin_cache = Some(terraform::preview::plugin_cache(&cx.project.state_dir()));
        if let Some(mirror) = &options.provider_mirror {
            let dir = PathBuf::from(mirror);
            let dir = if dir.is_absolute() {
                dir
            } else {
                cx.project.root.join(dir)
            };
            if !dir.is_dir() {
                return Err(Failure::Blocked(format!(
                    "chapters.terraform.provider_mirror `{mirror}` is not a directory\n  fix: \
                     create it with `terraform providers mirror DIR` on a connected machine"
                ))
                .into());
            }
            runner.mirror = Some(dir);
        }
        if options.state.backend == StateBackend::S3 {
            let prefix = options
                .state
                .key_prefix
                .clone()
                .unwrap_or_else(|| cx.project.config.app.name.clone());
            runner.backend_config = terraform::backend::s3_config(&options.state, &prefix, root);
        }
        runner.ui = Some(cx.ui.clone());
        Ok(runner)
    }

    /// `terraform plan` of the root as this run will write it, in a private copy: for a `plan`
    /// before `up` has written the files. The copy holds the root and the modules beside it
    /// (disk, then what earlier chapters and this one write); a local state is read where it
    /// is, never written; the copy is removed afterwards (also on Ctrl-C).
    fn plan_privately(&self, cx: &ActionContext, root: &str) -> Result<terraform::SavedPlan> {
        let parent = root.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let modules = if parent.is_empty() {
            "modules".to_string()
        } else {
            format!("{parent}/modules")
        };
        let within = |path: &str| {
            [root, modules.as_str()].iter().any(|dir| {
                path.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        };
        let mut files = std::collections::BTreeMap::new();
        terraform::preview::read_tree(&cx.path(root), root, &mut files)?;
        terraform::preview::read_tree(&cx.path(&modules), &modules, &mut files)?;
        for (path, content) in &cx.planned.files {
            if within(path) {
                match content {
                    Some(c) => files.insert(path.clone(), c.clone()),
                    None => files.remove(path),
                };
            }
        }
        for r in cx.rendered {
            if within(&r.path) {
                files.insert(r.path.clone(), r.content.clone());
            }
        }
        let copy = terraform::preview::PrivateCopy::new(&cx.project.state_dir(), &files)?;
        cx.ui.note(format!(
            "terraform: planning {root} as `up` would write it, in a private copy ({})",
            copy.path().display()
        ));
        let mut runner = self.runner_in(cx, root, copy.join(root), copy.join(".work"))?;
        runner.stop_on_interrupt = true;
        if cx.project.config.chapters.terraform.state.backend == StateBackend::Local {
            let state = cx
                .project
                .state_dir()
                .join("terraform")
                .join(root.replace('/', "_"))
                .join("terraform.tfstate");
            runner.local_state = Some(if state.is_file() {
                state
            } else {
                copy.join(".work/terraform.tfstate")
            });
        }
        runner.init()?;
        runner.plan()
    }
}

impl Action for TerraformApplied {
    fn id(&self) -> String {
        if self.root == ENV_ROOT {
            return "terraform-applied".into();
        }
        let slug: String = self
            .root
            .replace("{{ env.name }}", "env")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let slug = slug
            .trim_start_matches("terraform-")
            .trim_matches('-')
            .to_string();
        format!("terraform-applied-{slug}")
    }

    fn describe(&self) -> String {
        format!("Terraform root {} planned and applied", self.root)
    }

    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let root = self.root_for(cx)?;
        let files = self.files(cx, &root);
        if files.is_empty() {
            return Ok(Check::Satisfied(format!(
                "no Terraform files in {root} for this environment"
            )));
        }
        let all: String = files
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let mut missing = crate::terraform::credentials::missing_for(&all);
        if let Err(e) = terraform::find() {
            missing.insert(
                0,
                format!("{e:#}").trim_start_matches("blocked: ").to_string(),
            );
        }
        if !missing.is_empty() {
            return Ok(Check::Blocked(format!(
                "{root} cannot be planned; missing: {}",
                missing.join("; ")
            )));
        }
        // Files this run still writes: Terraform plans what is on disk, so it plans after.
        let unwritten: Vec<&str> = files
            .iter()
            .filter(|(p, t)| std::fs::read_to_string(cx.path(p)).ok().as_deref() != Some(t))
            .map(|(p, _)| p.as_str())
            .collect();
        if !unwritten.is_empty() {
            let files = format!(
                "once {} written: {}",
                if unwritten.len() == 1 {
                    "this file is"
                } else {
                    "these files are"
                },
                unwritten.join(", ")
            );
            // In `up`, which writes them next and plans the root itself: a private plan now
            // would run Terraform twice for one apply.
            if let Some(check) = cx.defer(format!("{root}: planned {files}")) {
                return Ok(check);
            }
            let plan = self.plan_privately(cx, &root)?;
            return Ok(if plan.changes {
                Check::Pending(format!("{} ({files})", plan.summary()))
            } else {
                Check::Satisfied(format!("{root}: terraform plan shows no changes {files}"))
            });
        }
        let runner = self.runner(cx, &root)?;
        runner.init()?;
        let plan = runner.plan()?;
        Ok(if plan.changes {
            Check::Pending(plan.summary())
        } else {
            Check::Satisfied(format!("{root}: terraform plan shows no changes"))
        })
    }

    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let root = self.root_for(cx)?;
        let runner = self.runner(cx, &root)?;
        let planned = runner.saved_plan();
        runner.apply_saved()?;
        let outputs = runner.outputs()?;
        let summary = planned
            .map(|p| p.summary().replacen("terraform plan: ", "applied: ", 1))
            .unwrap_or_else(|| "applied".into());
        Ok(Applied {
            summary: format!("{root} {summary}"),
            data: super::record::to_data(&super::record::TerraformRecord {
                root: root.to_string(),
                outputs,
            }),
            inputs_digest: terraform::config_digest(&cx.path(&root)).ok(),
        })
    }
}
