//! Pure text rendering: systemd unit files and the escaping they need.

pub mod escape;
pub mod unit;
