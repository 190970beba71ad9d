//! The small vocabulary the pure core and the backends share: the systemd job a service
//! needs, unit names and a unit's runtime state, a proxy route, how a hook run ended, and a
//! system's boot parts.
//! The planner, renderer and route computation produce these; the backends take them.
//! Neither side imports the other: both import this.

pub mod boot;
pub mod hook;
pub mod job;
pub mod profile_link;
pub mod route;
pub mod unit;

pub use hook::HookRun;
pub use job::Job;
pub use route::Route;
pub use unit::UnitState;
