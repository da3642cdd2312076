//! The dashboard: agents, active work and velocity, read without taking the lock.

use anyhow::Result;
use serde::Serialize;

use super::{AGENTS_FILE, CLAIMS_FILE, Store, VELOCITY_FILE};

#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub agents: Vec<AgentLine>,
    /// Items whose status is `active`, as the legacy dashboard counts them.
    pub active: Vec<WorkLine>,
    pub in_progress: usize,
    pub completed: usize,
    pub total: usize,
    /// The sum of every `+N` in `velocity_log.txt`.
    pub velocity: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentLine {
    pub agent_id: String,
    pub team: String,
    pub specialization: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkLine {
    pub work_item_id: String,
    pub description: String,
    pub work_type: String,
    pub priority: String,
}

pub fn read(store: &Store) -> Result<Dashboard> {
    let text = |r: &super::legacy::Record, k: &str| r.str(k).unwrap_or("").to_string();
    let agents = store
        .read_array(AGENTS_FILE)?
        .iter()
        .filter_map(|e| e.record())
        .map(|r| AgentLine {
            agent_id: text(r, "agent_id"),
            team: text(r, "team"),
            specialization: text(r, "specialization"),
        })
        .collect();
    let claims = store.read_array(CLAIMS_FILE)?;
    let status_is = |s: &str| {
        claims
            .iter()
            .filter(|e| e.record().and_then(|r| r.str("status")) == Some(s))
            .count()
    };
    let active = claims
        .iter()
        .filter_map(|e| e.record())
        .filter(|r| r.str("status") == Some("active"))
        .map(|r| WorkLine {
            work_item_id: text(r, "work_item_id"),
            description: text(r, "description"),
            work_type: text(r, "work_type"),
            priority: text(r, "priority"),
        })
        .collect();
    let velocity = store
        .read_text(VELOCITY_FILE)?
        .map(|t| velocity_sum(&t))
        .unwrap_or(0);
    Ok(Dashboard {
        agents,
        active,
        in_progress: status_is("in_progress"),
        completed: status_is("completed"),
        total: claims.len(),
        velocity,
    })
}

/// Sum every `+<digits>` in the text (what `grep -o '+[0-9]*'` and awk added up).
pub fn velocity_sum(text: &str) -> u64 {
    let mut sum = 0u64;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if let Ok(n) = text[start..end].parse::<u64>() {
                sum = sum.saturating_add(n);
            }
            i = end.max(start);
        } else {
            i += 1;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn velocity_adds_every_plus_number() {
        let log =
            "2026-01-01T00:00:00Z: Team a +5 velocity points\nx: Team b +13 velocity points\n+\n";
        assert_eq!(super::velocity_sum(log), 18);
    }
}
