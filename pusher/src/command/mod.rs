//! One module per `ferry` verb, each with its clap `Args` and a `run` function.

pub mod diff;
pub mod gc;
pub mod history;
pub mod init;
pub mod keygen;
pub mod publish;
pub mod push;
pub mod rollback;
pub mod schema;
pub mod show;
pub mod sign;
pub mod status;
pub mod upload;
pub mod validate;
pub mod verify;
pub mod writing;
