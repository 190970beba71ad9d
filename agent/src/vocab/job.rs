//! The systemd job a service needs: what the planner decides and the systemd backend runs.

use serde::Serialize;

/// The systemd job a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    /// `StartUnit`.
    Start,
    /// `RestartUnit`.
    Restart,
    /// `StopUnit`.
    Stop,
}
