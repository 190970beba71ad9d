//! One module per CLI verb, plus the runtime and backend setup they share.

pub mod config;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod runtime;
pub mod status;
