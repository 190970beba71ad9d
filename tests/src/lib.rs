//! The test bed: real Garage, real systemd hosts in nspawn containers, Nix and Caddy.
//!
//! Prepare the machine once with `tests/bed/install.sh` (as root), then
//! `Bed::start(BedOptions { hosts: 2, ..Default::default() })` in a test. See
//! `tests/tests/bed_*.rs` for every handle in use.

pub mod agent_bed;
pub mod agent_config;
pub mod bed;
pub mod binaries;
pub mod cgroup;
pub mod closures;
pub mod fleet_dev;
pub mod footprint;
pub mod garage;
pub mod host;
pub mod latency;
pub mod module_render;
pub mod module_unit;
pub mod network;
pub mod noop_budget;
pub mod process;
mod random;
pub mod request_loop;
pub mod s3;
pub mod scenario;
pub mod slot;
pub mod slow_bucket;
mod stale;
mod stop;
pub mod tick_summary;

pub use agent_config::install_agent_config;
pub use bed::{Bed, BedOptions};
pub use binaries::workspace_binary;
pub use closures::Closures;
pub use footprint::Footprint;
pub use host::{BindRo, Host};
pub use process::Output;
pub use s3::S3;
pub use tick_summary::TickSummary;
