//! Unit names and what is read back from a unit: how the agent names a service's units
//! (`ferry-<service>.service`, the blue-green template `ferry-<service>@.service` and its
//! instances `ferry-<service>@<port>.service`), the header line that marks a unit file as the
//! agent's, and a unit's runtime state as systemd reports it. The renderer writes these names
//! and the header; the unit directory and systemd backends read them.

/// The first line of every unit the agent writes; `observe` reads the store path back from it
/// when the state file is lost.
pub const HEADER_PREFIX: &str = "# Managed by ferry-agent; do not edit. service=";

/// The unit file name for a service.
pub fn unit_name(service: &str) -> String {
    format!("{}{service}.service", crate::UNIT_PREFIX)
}

/// The template unit file name of a blue-green service.
pub fn template_name(service: &str) -> String {
    format!("{}{service}@.service", crate::UNIT_PREFIX)
}

/// The instance of a blue-green service that listens on `port`.
pub fn instance_name(service: &str, port: u16) -> String {
    format!("{}{service}@{port}.service", crate::UNIT_PREFIX)
}

/// The unit that serves a service: its live blue-green instance, else its plain unit.
pub fn serving_unit(service: &str, live_port: Option<u16>) -> String {
    match live_port {
        Some(port) => instance_name(service, port),
        None => unit_name(service),
    }
}

/// The service a unit file of this agent belongs to (`ferry-web.service` and
/// `ferry-web@.service` both give `web`); `None` for other files and for instance files.
pub fn service_of_file(file: &str) -> Option<&str> {
    let stem = file
        .strip_prefix(crate::UNIT_PREFIX)?
        .strip_suffix(".service")?;
    let service = stem.strip_suffix('@').unwrap_or(stem);
    (!service.is_empty() && !service.contains('@')).then_some(service)
}

/// The store path named in a unit's header line, if the text is a unit this agent wrote.
pub fn header_store_path(text: &str) -> Option<(&str, &str)> {
    let first = text.lines().next()?;
    let rest = first.strip_prefix(HEADER_PREFIX)?;
    let (service, path) = rest.split_once(" storePath=")?;
    Some((service, path))
}

/// A unit's runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `ActiveState` (active, failed, inactive, activating…).
    pub active_state: String,
    /// `SubState` (running, exited, dead, auto-restart…).
    pub sub_state: String,
    /// `NRestarts`: automatic restarts since the last explicit start.
    pub n_restarts: u32,
    /// `ExecMainStatus`: exit status of the main process, when it exited.
    pub exec_main_status: i32,
}
