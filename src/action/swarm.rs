//! Swarm mode as an action, shared by every chapter that needs a swarm (07 secrets, 08 swarm).

use anyhow::Result;

use super::{Action, ActionContext, Applied, Check};
use crate::config::Provider;
use crate::swarm::{self, SwarmMode};

pub struct SwarmModeAction;

impl Action for SwarmModeAction {
    fn id(&self) -> String {
        "swarm-mode".into()
    }
    fn describe(&self) -> String {
        "the Engine is a swarm manager".into()
    }
    fn providers(&self) -> &'static [Provider] {
        // On AWS the nodes are made a swarm by their bootstrap (chapter 10), not from a laptop.
        &[Provider::Local]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let (rt, daemon) = cx.engine()?;
        Ok(match rt.block_on(swarm::mode(daemon))? {
            SwarmMode::Manager { node_id } => Check::Satisfied(format!("manager {node_id}")),
            SwarmMode::Inactive => Check::Pending(format!(
                "swarm init, advertising {}",
                swarm::advertise_addr(cx.env)
            )),
            // Another run's init (or a join) in flight: `up` waits for it and carries on.
            SwarmMode::Pending(state) => Check::Pending(format!(
                "a swarm init or join is in flight on {} ({state}); up waits for it to finish",
                daemon.host
            )),
            SwarmMode::Worker => Check::Failed(format!(
                "{} is a swarm worker, not a manager; fix: point docker_host at a manager",
                daemon.host
            )),
            SwarmMode::Other(state) => Check::Failed(format!(
                "{} is in a swarm but not a manager ({state}); fix: point docker_host at a manager",
                daemon.host
            )),
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let (rt, daemon) = cx.engine()?;
        let addr = swarm::advertise_addr(cx.env);
        let (node_id, initialised) = rt.block_on(swarm::ensure(daemon, &addr))?;
        Ok(Applied {
            summary: if initialised {
                format!("initialised a swarm (manager {node_id}, advertising {addr})")
            } else {
                // Another run initialised it first (or it already was a manager).
                format!("a manager ({node_id}); the swarm was made by another run")
            },
            data: super::record::to_data(&super::record::SwarmModeRecord { node_id }),
            inputs_digest: None,
        })
    }
    fn touches_swarm(&self) -> bool {
        true
    }
    // No undo: leaving a swarm destroys every service, secret and network in it.
}
