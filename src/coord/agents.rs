//! Agent registration in `agent_status.json`: one entry per agent id, replaced on each
//! registration as the legacy helper does.

use anyhow::Result;
use serde::Serialize;

use super::legacy::{Entry, Record};
use super::store::Locked;
use super::{AGENTS_FILE, Context, Store};

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub agent_id: String,
    pub team: String,
    pub capacity: u64,
    pub specialization: String,
    pub last_heartbeat: String,
}

impl Agent {
    pub fn new(agent_id: &str, team: &str, capacity: u64, specialization: &str) -> Agent {
        Agent {
            agent_id: agent_id.to_string(),
            team: team.to_string(),
            capacity,
            specialization: specialization.to_string(),
            last_heartbeat: super::claims::now_seconds(),
        }
    }

    fn record(&self) -> Record {
        Record::new()
            .with("agent_id", self.agent_id.as_str())
            .with("team", self.team.as_str())
            .with("status", "active")
            .with("capacity", self.capacity)
            .with("current_workload", 0)
            .with("specialization", self.specialization.as_str())
            .with("last_heartbeat", self.last_heartbeat.as_str())
            .with(
                "performance_metrics",
                serde_json::json!({
                    "tasks_completed": 0,
                    "average_completion_time": "0m",
                    "success_rate": 100.0
                }),
            )
    }
}

/// Replace the agent's entry (or add it) under a lock the caller holds.
pub fn upsert(lock: &Locked<'_>, agent: &Agent, durable: bool) -> Result<()> {
    let mut agents = lock.read_array(AGENTS_FILE)?;
    agents.retain(|e| e.record().and_then(|r| r.str("agent_id")) != Some(agent.agent_id.as_str()));
    agents.push(Entry::Record(agent.record()));
    lock.write_array(AGENTS_FILE, &agents, durable)
}

/// Register an agent on its own (`coord register`).
pub fn register(store: &Store, ctx: &Context, agent: &Agent) -> Result<()> {
    let lock = store.lock(ctx.lock_wait)?;
    upsert(&lock, agent, true)?;
    lock.sync_dir()
}
