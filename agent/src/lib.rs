//! `ferry-agent`'s library: the reconcile tick and everything it is built from. Pure modules
//! (config, plan, policy, render, state) are separate from the backends that do I/O.

// Tests may panic on unexpected errors: that is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod apply;
pub mod backend;
pub mod closure_trust;
pub mod config;
pub mod generation;
pub mod health;
pub mod host_facts;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod profile_retention;
pub mod render;
pub mod retire_step;
pub mod rollback_hold;
pub mod route_step;
pub mod routes;
pub mod self_usage;
pub mod state;
pub mod state_file;
pub mod tick;
pub mod tick_lock;
pub mod verify;

/// Prefix of every unit and route the agent owns.
pub const UNIT_PREFIX: &str = "ferry-";
