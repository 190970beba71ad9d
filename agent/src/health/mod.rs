//! Health checks and what follows from them: which check a service gets (`spec`, pure),
//! watching a started unit until it is healthy or has failed (`watch`), and the quarantine of
//! store paths that failed (`quarantine`, pure).

pub mod quarantine;
pub mod spec;
pub mod watch;
