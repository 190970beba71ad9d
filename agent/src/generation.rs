//! Manifest generations in order: the schema's comparison (`ferry status` judges the waves
//! with it too), under the name the agent's modules use.

pub use ferry_schema::generation::{compare, is_older};
