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
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let (rt, daemon) = cx.engine()?;
        Ok(match rt.block_on(swarm::mode(daemon))? {
            SwarmMode::Manager { node_id } => Check::Satisfied(format!("manager {node_id}")),
            // On AWS the first manager's user data (chapter 06) made the swarm and wrote its
            // join token to SSM; a second swarm initialised from here would split the cluster.
            SwarmMode::Inactive if cx.env.provider == Provider::Aws => Check::Failed(format!(
                "{} is not in a swarm: on aws the first manager initialises it at boot (chapter 06's user data) and beamops never does\n  fix: check the first manager's bootstrap log (/var/log/cloud-init-output.log), or point environments.{}.docker_host at a manager of the swarm",
                daemon.host, cx.env_name
            )),
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
        if cx.env.provider == Provider::Aws {
            // Only reached when the check found a swarm in flight: wait for it, never init.
            anyhow::bail!(
                "{} is not a swarm manager yet; on aws beamops does not initialise the swarm (chapter 06's first manager does)",
                daemon.host
            );
        }
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
