//! beamops: the BEAMOps method as idempotent chapters. See docs/architecture.md for the map.

pub mod action;
pub mod chapter;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod config;
pub mod coord;
pub mod dedupe;
pub mod deploy;
pub mod docker;
pub mod engine;
pub mod exit;
pub mod fsutil;
pub mod interrupt;
pub mod lockfile;
pub mod output;
pub mod plan;
pub mod project;
pub mod render;
pub mod rollout;
pub mod secrets;
pub mod state;
pub mod swarm;
pub mod tools;
pub mod worktree;
