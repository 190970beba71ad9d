//! Side effects behind small traits, one real implementation each: the bucket (read-only,
//! over `ferry-bucket`'s S3 and directory stores), the Nix store, systemd over D-Bus, the unit directory, and the loopback cache
//! proxy that lets `nix copy` read an S3 bucket; Caddy's admin API (`Proxy`) for routes, and
//! health probes (`Probe`) that the `apply` step runs after each start; the status store
//! (`StatusStore`) the report step writes the host's report to; and the hooks the tick
//! runs at its end (`hook`: a command, a webhook).

pub mod bucket;
pub mod cache_prefetch;
pub mod cache_proxy;
pub mod caddy;
pub mod configured_bucket;
pub mod hook;
pub mod probe;
pub mod status_store;
pub mod store;
pub mod system;
pub mod systemd;
pub mod units;
