//! The contract between `ferry` (the pusher) and `ferry-agent`: the manifest v1 types and
//! everything that can be decided about a manifest without I/O: its JSON Schema,
//! validation, signing, key format, narinfo fingerprints, the order `nix copy` fetches a
//! closure in, `nix path-info` output, bucket layout and names; and the host status report
//! hosts write and `ferry status` reads.

// Tests may panic on a broken precondition; the library itself may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod copy_order;
pub mod generation;
pub mod health_budget;
pub mod host_status;
pub mod json_schema;
pub mod keys;
pub mod layout;
pub mod manifest;
pub mod names;
pub mod narinfo;
pub mod path_info;
pub mod signing;
pub mod validate;
pub mod wave_standing;

pub use json_schema::{schema_json, schema_value};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use manifest::Manifest;
pub use names::StorePath;
pub use signing::{SignError, VerifyError, canonical_bytes, sign_manifest, verify_manifest};
pub use validate::{
    DEFAULT_SIZE_CAP, Problem, Severity, Validated, validate_bytes, validate_manifest,
};
