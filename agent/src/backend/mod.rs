//! Side effects behind small traits, one real implementation each: the bucket (read-only,
//! over `ferry-bucket`'s S3 and directory stores), the Nix store, systemd over D-Bus, the unit directory, and the loopback cache
//! proxy that lets `nix copy` read an S3 bucket. Routing (`Proxy`) and health probes
//! (`Health`) join these in the routing work; the tick's `apply` step is where they plug in.

pub mod bucket;
pub mod cache_proxy;
pub mod caddy;
pub mod configured_bucket;
pub mod probe;
pub mod store;
pub mod systemd;
pub mod units;
