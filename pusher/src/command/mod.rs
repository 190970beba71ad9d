//! One module per `ferry` verb, each with its clap `Args` and a `run` function.

pub mod keygen;
pub mod schema;
pub mod sign;
pub mod upload;
pub mod validate;
pub mod verify;
