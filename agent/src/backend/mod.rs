//! Side effects behind small traits, one real implementation each: the bucket (S3 or a
//! directory), the Nix store, systemd over D-Bus, the unit directory, and the loopback cache
//! proxy that lets `nix copy` read an S3 bucket. Routing (`Proxy`) and health probes
//! (`Health`) join these in the routing work; the tick's `apply` step is where they plug in.

pub mod bucket;
pub mod bucket_dir;
pub mod bucket_s3;
pub mod cache_proxy;
pub mod configured_bucket;
pub mod store;
pub mod systemd;
pub mod units;
