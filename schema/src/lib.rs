//! The contract between `ferry` (the pusher) and `ferry-agent`: the manifest v1 types and
//! everything that can be decided about a manifest without I/O.

pub mod manifest;

pub use manifest::Manifest;
