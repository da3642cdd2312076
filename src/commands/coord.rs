use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::Global;
use crate::cli::{CoordArgs, CoordCommand};
use crate::coord::{self, Context, CoordError, Store, or_default};
use crate::exit::{Exit, Failure};
use crate::output::{Report, Ui, emit};

pub fn run(global: &Global, ui: &Ui, args: &CoordArgs) -> Result<Exit> {
    dispatch(global, ui, args).map_err(classify)
}

/// Give the coordination errors a caller branches on their exit code.
fn classify(err: anyhow::Error) -> anyhow::Error {
    let kind = err.chain().find_map(|c| c.downcast_ref::<CoordError>());
    match kind {
        Some(CoordError::LockTimeout { .. }) => err.context(Failure::Blocked(
            "could not get the coordination lock".into(),
        )),
        Some(CoordError::Unreadable { .. }) => err.context(Failure::refused(
            "a coordination file does not parse; beamops never overwrites what it cannot read",
            "",
        )),
        _ => err,
    }
}

fn dispatch(global: &Global, ui: &Ui, args: &CoordArgs) -> Result<Exit> {
    let store = || -> Result<Store> {
        Ok(Store::new(coord::resolve_dir(
            args.dir.as_deref(),
            global.project.as_deref(),
        )?))
    };
    let ctx = Context::from_env(global.lock_wait);
    match &args.command {
        CoordCommand::Claim {
            work_type,
            description,
            priority,
            team,
        } => {
            let store = store()?;
            let req = coord::claims::ClaimRequest {
                work_type: work_type.clone(),
                description: description.clone().unwrap_or_default(),
                priority: or_default(priority.as_deref(), coord::DEFAULT_PRIORITY),
                team: or_default(team.as_deref(), coord::DEFAULT_TEAM),
            };
            let claimed = coord::claims::claim(&store, &ctx, &req)?;
            warn(ui, &claimed.warnings);
            emit(&ClaimReport(claimed), ui)
        }
        CoordCommand::Progress {
            work_id,
            percent,
            status,
        } => {
            let store = store()?;
            let id = coord::claims::work_id_or_current(Some(work_id), &ctx)?;
            let status = or_default(status.as_deref(), coord::DEFAULT_PROGRESS_STATUS);
            let done = coord::claims::progress(&store, &ctx, &id, percent, &status)?;
            warn(ui, &done.warnings);
            emit(&ProgressReport(done), ui)
        }
        CoordCommand::Complete {
            work_id,
            result,
            velocity_points,
        } => {
            let store = store()?;
            let id = coord::claims::work_id_or_current(work_id.as_deref(), &ctx)?;
            let result = or_default(result.as_deref(), coord::DEFAULT_RESULT);
            let points = or_default(velocity_points.as_deref(), coord::DEFAULT_VELOCITY);
            let done = coord::claims::complete(&store, &ctx, &id, &result, &points)?;
            warn(ui, &done.warnings);
            emit(&CompleteReport(done), ui)
        }
        CoordCommand::Register {
            agent_id,
            team,
            capacity,
            specialization,
        } => {
            let store = store()?;
            let capacity = coord::claims::parse_count(
                "capacity",
                &or_default(capacity.as_deref(), coord::DEFAULT_CAPACITY),
            )?;
            let agent = coord::agents::Agent::new(
                agent_id,
                &or_default(team.as_deref(), coord::DEFAULT_TEAM),
                capacity,
                &or_default(specialization.as_deref(), coord::DEFAULT_SPECIALIZATION),
            );
            coord::agents::register(&store, &ctx, &agent)?;
            emit(&RegisterReport(agent), ui)
        }
        CoordCommand::Dashboard => emit(&DashboardReport(coord::dashboard::read(&store()?)?), ui),
        CoordCommand::GenerateId => emit(
            &IdReport {
                agent_id: coord::ids::agent_id(),
            },
            ui,
        ),
        CoordCommand::List { status } => {
            let claims = coord::claims::list(&store()?, status.as_deref())?;
            emit(
                &ListReport {
                    claims: claims.iter().map(|e| e.to_value()).collect(),
                },
                ui,
            )
        }
        CoordCommand::Shim { path } => {
            let exe = std::env::current_exe()?;
            let script = coord::shim_script(&exe);
            if let Some(path) = path {
                crate::fsutil::atomic_write(path, script.as_bytes(), Some(0o755))?;
            }
            emit(
                &ShimReport {
                    path: path.as_ref().map(|p| p.display().to_string()),
                    script,
                },
                ui,
            )
        }
    }
}

fn warn(ui: &Ui, warnings: &[String]) {
    for w in warnings {
        ui.warning(w);
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct ClaimReport(coord::claims::Claimed);

impl Report for ClaimReport {
    fn text(&self, _ui: &Ui) -> String {
        let c = &self.0;
        format!(
            "🔍 Trace ID: {}\n🤖 Agent {} claiming work: {}\n✅ SUCCESS: Claimed work item {} for team {}\n🔧 REGISTERED: Agent {} in team {} with 100% capacity\n",
            c.trace_id, c.agent_id, c.work_item_id, c.work_item_id, c.team, c.agent_id, c.team
        )
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct ProgressReport(coord::claims::Progressed);

impl Report for ProgressReport {
    fn text(&self, _ui: &Ui) -> String {
        let p = &self.0;
        format!(
            "🔍 Trace ID: {}\n📈 PROGRESS: Updated {} to {}% ({})\n",
            p.trace_id, p.work_item_id, p.progress, p.status
        )
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct CompleteReport(coord::claims::Completed);

impl Report for CompleteReport {
    fn text(&self, _ui: &Ui) -> String {
        let c = &self.0;
        format!(
            "✅ COMPLETED: Released claim for {} ({}) - {} velocity points\n📊 VELOCITY: Added {} points to team {} velocity\n",
            c.work_item_id, c.result, c.velocity_points, c.velocity_points, c.team
        )
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct RegisterReport(coord::agents::Agent);

impl Report for RegisterReport {
    fn text(&self, _ui: &Ui) -> String {
        let a = &self.0;
        format!(
            "🔧 REGISTERED: Agent {} in team {} with {}% capacity\n",
            a.agent_id, a.team, a.capacity
        )
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct DashboardReport(coord::dashboard::Dashboard);

impl Report for DashboardReport {
    fn text(&self, _ui: &Ui) -> String {
        let d = &self.0;
        let mut out = String::from(
            "🚀 SCRUM AT SCALE DASHBOARD\n============================\n\n👥 AGENT TEAMS & STATUS:\n",
        );
        out += &format!("  📊 Active Agents: {}\n", d.agents.len());
        for a in &d.agents {
            out += &format!(
                "  🤖 Agent {}: {} team ({})\n",
                a.agent_id, a.team, a.specialization
            );
        }
        out += "\n📋 ACTIVE WORK (CURRENT SPRINT):\n";
        out += &format!("  📊 Active Work Items: {}\n", d.active.len());
        for w in &d.active {
            out += &format!(
                "  🔧 {}: {} ({}, {})\n",
                w.work_item_id, w.description, w.work_type, w.priority
            );
        }
        out += &format!(
            "  📊 In Progress: {} · Completed: {} · Total: {}\n",
            d.in_progress, d.completed, d.total
        );
        out += &format!(
            "\n📈 VELOCITY & METRICS:\n  📊 Current Sprint Velocity: {} story points\n",
            d.velocity
        );
        out
    }
}

#[derive(Serialize)]
struct IdReport {
    agent_id: String,
}

impl Report for IdReport {
    fn text(&self, _ui: &Ui) -> String {
        format!("{}\n", self.agent_id)
    }
}

#[derive(Serialize)]
struct ListReport {
    claims: Vec<Value>,
}

impl Report for ListReport {
    fn text(&self, _ui: &Ui) -> String {
        let field = |c: &Value, k: &str| match c.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "-".into(),
        };
        self.claims
            .iter()
            .map(|c| {
                let description = field(c, "description");
                let first_line = description.lines().next().unwrap_or("");
                format!(
                    "{}  {}  {}  {}  {}  {}\n",
                    field(c, "work_item_id"),
                    field(c, "status"),
                    field(c, "work_type"),
                    field(c, "priority"),
                    field(c, "team"),
                    first_line
                )
            })
            .collect()
    }
}

#[derive(Serialize)]
struct ShimReport {
    path: Option<String>,
    script: String,
}

impl Report for ShimReport {
    fn text(&self, _ui: &Ui) -> String {
        match &self.path {
            Some(p) => format!("wrote {p}: coordination_helper.sh callers now run beamops coord\n"),
            None => self.script.clone(),
        }
    }
}
