//! Ferry's developer side as a library: every `ferry` verb (`command/`), the manifest
//! write protocol and the upload pipeline. The `ferry` binary (`main.rs`) only parses the
//! command line and calls [`cli::run`]; tests drive the same flows in process, over a
//! bucket wrapped in `ferry_bucket::fault` to inject delays and pauses at every store call.

// Tests may panic on a broken precondition; the library itself may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cache_index;
pub mod cache_index_store;
pub mod cli;
pub mod command;
pub mod fleet_reports;
pub mod fleet_view;
pub mod fleet_wait;
pub mod gc_plan;
pub mod lease;
pub mod lease_holder;
pub mod live_manifest;
pub mod manifest_edit;
pub mod manifest_trust;
pub mod manifest_write;
pub mod nar_dump;
pub mod nar_stream;
pub mod narinfo_order;
pub mod narinfo_text;
pub mod nix_cli;
pub mod progress;
pub mod resolve;
pub mod retry;
pub mod revision;
pub mod rollout_view;
pub mod settings;
pub mod signing_key;
pub mod starter;
pub mod upload_plan;
pub mod uploader;
pub mod wait_view;
