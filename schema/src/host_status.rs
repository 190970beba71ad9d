//! Host status report v1: what one host's agent last did, written to the status store as
//! `hosts/<host>.json` and read by `ferry status` and `ferry push --wait`. Agents write it,
//! developers' tools read it, so, like the manifest, it is a contract: versioned, with a
//! committed JSON Schema (`schema/host-status.v1.schema.json`).
//!
//! Unlike the manifest, readers accept fields they do not know: an older `ferry` must still
//! read the report of a newer agent. Nothing secret goes in (no env values, no secrets' paths'
//! contents): the status store is readable by whoever deploys.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The format version this code writes and reads.
pub const HOST_STATUS_VERSION: u32 = 1;

/// Largest report `ferry status` reads (a host with hundreds of services stays far below).
pub const MAX_REPORT_BYTES: u64 = 1024 * 1024;

/// One host's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// Format version. Always 1 for this schema.
    pub version: u32,
    /// The host's name, as manifests name it (`hostName` in agent.toml).
    pub host: String,
    /// The agent's version (`ferry-agent --version`).
    pub agent_version: String,
    /// When the report was written, RFC 3339 UTC.
    pub time: String,
    /// How often the agent reports when nothing changes, in seconds (`status.everySec`):
    /// a report older than three of these means the host is not ticking.
    pub every_sec: u64,
    /// The last tick.
    pub last_tick: LastTick,
    /// The manifest the host last applied; absent before the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<AppliedManifest>,
    /// Every Ferry service on the host, by name.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// Store paths the host refuses to deploy again after they failed their health check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
    /// The host's whole NixOS system (the manifest's `systems`): present once the
    /// manifest names one for this host or the agent switched one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemStatus>,
}

/// The whole NixOS system of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemStatus {
    /// Whether agent.toml enables system deploys (`[system] enable`); when not, the
    /// manifest's system for this host is not applied.
    pub enabled: bool,
    /// The system the agent switched to and kept (it passed the check after the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    /// Since when it runs, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A system that failed here and was switched back from; the host does not try it
    /// again until the manifest names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedSystem>,
    /// The running system has another kernel, initrd or kernel modules than the booted one:
    /// the host needs a reboot, which the agent never does by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot_needed: bool,
}

/// A system that failed on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedSystem {
    /// Its store path.
    pub store_path: String,
    /// Why it failed.
    pub message: String,
}

/// The last tick of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastTick {
    /// What the tick came to.
    pub outcome: TickOutcome,
    /// The exit code of `ferry-agent reconcile`.
    pub exit_code: i32,
    /// Wall time of the tick, milliseconds.
    pub wall_ms: u64,
    /// Wall time per phase, milliseconds (`pullMs`, `systemdMs`, `healthMs`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, u64>,
    /// Why the tick failed or was refused, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a tick came to (`outcome=` in the agent's `tick:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TickOutcome {
    /// The host matches the manifest.
    Ok,
    /// At least one service failed.
    Failed,
    /// The manifest was refused; nothing changed.
    Refused,
    /// The deploy bucket could not be reached.
    Unreachable,
}

/// The manifest a host applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedManifest {
    /// Its `generation`.
    pub generation: String,
    /// Its `revision`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// SHA-256 of its bytes as fetched, lowercase hex: the same bytes give the same digest
    /// on the developer's machine, whatever the generation says.
    pub sha256: String,
}

/// One service on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// The store path it runs (or, when `pending` or `refused`, the one it was asked to).
    pub store_path: String,
    /// Where it stands.
    pub state: ServiceState,
    /// A blue-green service's live port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_port: Option<u16>,
    /// Since when it is in this state, RFC 3339 UTC.
    pub since: String,
    /// The last thing the agent said about it (a health failure, a refusal's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a service stands on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// Runs the manifest's store path and passed its health check.
    Running,
    /// Failed and nothing earlier could be put back.
    Failed,
    /// The manifest's version failed; the previous one runs again.
    RolledBack,
    /// The manifest's store path is quarantined: the host does not try it again.
    Quarantined,
    /// The host's policy refused it.
    Refused,
    /// Not applied yet (waiting for a dependency or the next tick).
    Pending,
    /// Keeps its current version until the hosts of the earlier waves of its `rollout`
    /// report the new one healthy for `soakSec` (the message says for whom). Not a failure.
    Waiting,
    /// Keeps its current version because a host of an earlier wave reported the new one
    /// failed or rolled back (the message names the host); the next generation starts the
    /// waves again.
    Halted,
}

impl ServiceState {
    /// The name as written in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Failed => "failed",
            ServiceState::RolledBack => "rolled-back",
            ServiceState::Quarantined => "quarantined",
            ServiceState::Refused => "refused",
            ServiceState::Pending => "pending",
            ServiceState::Waiting => "waiting",
            ServiceState::Halted => "halted",
        }
    }
}

impl TickOutcome {
    /// The name as written in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            TickOutcome::Ok => "ok",
            TickOutcome::Failed => "failed",
            TickOutcome::Refused => "refused",
            TickOutcome::Unreachable => "unreachable",
        }
    }
}

/// The digest a report gives for the manifest it applied (`manifest.sha256`): SHA-256 of
/// the bytes as fetched, lowercase hex. Agents and `ferry` both take it from here, so they
/// agree on it by construction.
pub fn manifest_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// Not JSON of the report's shape.
    #[error("{key} is not a host status report: {reason}")]
    Malformed {
        /// The object's key.
        key: String,
        /// serde's message.
        reason: String,
    },
    /// A version this code does not read.
    #[error(
        "{key} is a version {version} host status report; this ferry reads version {HOST_STATUS_VERSION}: upgrade ferry"
    )]
    Version {
        /// The object's key.
        key: String,
        /// The version it says.
        version: u32,
    },
    /// The report's `host` is not the host its key names: a host wrote another's report.
    #[error(
        "{key} says it is the report of host {host:?}: a report only counts under its own name"
    )]
    WrongHost {
        /// The object's key.
        key: String,
        /// The host it names.
        host: String,
    },
}

/// Parses the report stored under `key`, which is `hosts/<host>.json`: the version must be
/// one this code reads and the report must name that same host.
pub fn parse_report(key: &str, host: &str, bytes: &[u8]) -> Result<HostStatus, ReportError> {
    let malformed = |e: serde_json::Error| ReportError::Malformed {
        key: key.to_owned(),
        reason: e.to_string(),
    };
    // The version first, so a future format is named as such rather than as malformed.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes).map_err(malformed)?;
    if v.version != HOST_STATUS_VERSION {
        return Err(ReportError::Version {
            key: key.to_owned(),
            version: v.version,
        });
    }
    let report: HostStatus = serde_json::from_slice(bytes).map_err(malformed)?;
    if report.host != host {
        return Err(ReportError::WrongHost {
            key: key.to_owned(),
            host: report.host,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{
        "version": 1, "host": "web-1", "agentVersion": "0.1.0",
        "time": "2026-12-01T10:00:00Z", "everySec": 300,
        "lastTick": {"outcome": "failed", "exitCode": 1, "wallMs": 1831,
                     "phases": {"pullMs": 221}, "message": "web: health check failed"},
        "manifest": {"generation": "2026-12-01T09:59:00Z", "sha256": "ab"},
        "services": [
            {"name": "web", "storePath": "/nix/store/x-web", "state": "rolled-back",
             "since": "2026-12-01T10:00:00Z", "message": "GET /health: 503"},
            {"name": "api", "storePath": "/nix/store/y-api", "state": "running",
             "livePort": 8312, "since": "2026-12-01T09:00:00Z"}
        ],
        "quarantined": ["/nix/store/z-web"],
        "aFieldOfANewerAgent": true
    }"#;

    #[test]
    fn a_report_parses_with_fields_it_does_not_know() {
        let r = parse_report("hosts/web-1.json", "web-1", REPORT.as_bytes()).unwrap();
        assert_eq!(r.last_tick.outcome, TickOutcome::Failed);
        assert_eq!(r.services[0].state, ServiceState::RolledBack);
        assert_eq!(r.services[1].live_port, Some(8312));
        assert_eq!(r.quarantined, ["/nix/store/z-web"]);
        // Written back, it says the same (minus what this version does not know).
        let again: HostStatus = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn another_hosts_report_under_this_name_is_refused() {
        let e = parse_report("hosts/db-1.json", "db-1", REPORT.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hosts/db-1.json says it is the report of host \"web-1\": a report only counts under its own name"
        );
    }

    #[test]
    fn a_newer_version_says_upgrade_and_garbage_says_what_it_is() {
        let v2 = REPORT.replace("\"version\": 1", "\"version\": 2");
        let e = parse_report("hosts/web-1.json", "web-1", v2.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("version 2") && e.to_string().contains("upgrade ferry"));
        let e = parse_report("hosts/web-1.json", "web-1", b"<html>").unwrap_err();
        assert!(
            matches!(&e, ReportError::Malformed { key, .. } if key == "hosts/web-1.json"),
            "{e}"
        );
        let bad_state = REPORT.replace("rolled-back", "exploded");
        assert!(parse_report("hosts/web-1.json", "web-1", bad_state.as_bytes()).is_err());
    }

    #[test]
    fn the_manifest_digest_is_sha256_hex() {
        assert_eq!(
            manifest_sha256(b"test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn state_and_outcome_names_are_the_wire_names() {
        for s in [
            ServiceState::Running,
            ServiceState::Failed,
            ServiceState::RolledBack,
            ServiceState::Quarantined,
            ServiceState::Refused,
            ServiceState::Pending,
            ServiceState::Waiting,
            ServiceState::Halted,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for o in [
            TickOutcome::Ok,
            TickOutcome::Failed,
            TickOutcome::Refused,
            TickOutcome::Unreachable,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
