//! `ferry-agent`'s library: the reconcile tick and everything it is built from. A tick is one
//! pipeline (`tick`: fetch → verify → observe → plan → apply → record → route → retire →
//! report → metrics → hooks). The pure core (`plan`, `render`, `routes`, `policy`,
//! `health::spec`, `health::quarantine`, `state`, `tick::summary`, `host_report`, `metrics`,
//! `hooks`, `wave_gate`) does no I/O; the backends (`backend`) do, behind traits over the vocabulary
//! both sides share (`vocab`). `tests/architecture.rs` keeps it so.

// Tests may panic on unexpected errors: that is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod apply;
pub mod backend;
pub mod closure_trust;
pub mod config;
pub mod generation;
pub mod health;
pub mod hooks;
pub mod host_facts;
pub mod host_report;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod profile_retention;
pub mod render;
pub mod rollback_hold;
pub mod routes;
pub mod self_usage;
pub mod state;
pub mod state_file;
pub mod system_deploy;
pub mod tick;
pub mod tick_lock;
pub mod verify;
pub mod vocab;
pub mod wave_gate;

/// Prefix of every unit and route the agent owns.
pub const UNIT_PREFIX: &str = "ferry-";
