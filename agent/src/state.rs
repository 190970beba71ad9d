//! The state file (`<stateDir>/state.json`): what the agent last deployed, the manifest it
//! last accepted and its ETag, the store paths in quarantine, when removed services' profiles
//! were left behind, and the last tick's result.
//! Versioned JSON; parsing is pure,
//! writing goes through `atomic_file`.

use std::collections::{BTreeMap, BTreeSet};

use ferry_schema::Manifest;
use ferry_schema::host_status::ServiceState;
use ferry_schema::manifest::Service;
use serde::{Deserialize, Serialize};

use crate::rollback_hold::RollbackHold;
use thiserror::Error;

/// The state format this agent writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Everything the agent remembers between ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// ETag of the `manifest.json` last fetched and accepted (for the conditional GET).
    #[serde(default)]
    pub manifest_etag: Option<String>,
    /// The manifest last accepted; re-planned on a 304 so failed pulls are retried.
    #[serde(default)]
    pub manifest: Option<Manifest>,
    /// SHA-256 of that manifest's bytes as fetched (lowercase hex), for the status report:
    /// the developer's tools tell manifests apart by it. Absent in state written before it
    /// was recorded (the next tick with a status store fetches the bytes again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Services deployed on this host, as last successfully applied. This is what the agent
    /// re-renders and starts when the bucket is unreachable (e.g. at boot).
    #[serde(default)]
    pub services: BTreeMap<String, Applied>,
    /// Services a tick is changing right now. Written before the tick touches units or runs
    /// jobs and cleared when it finishes, so a tick killed half-way (unit written but not
    /// reloaded, reloaded but not restarted) leaves a mark and the next tick redoes those
    /// services instead of trusting files that may not match the running process.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
    /// Store paths that failed their health check here, by service: not retried until the
    /// manifest names a different store path or `reconcile --retry-failed` clears them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quarantine: BTreeMap<String, Quarantined>,
    /// What a blue-green switch left to stop, by service: the old instance keeps serving
    /// until Caddy routes to the new one, then it is drained and stopped. Kept here so a
    /// switch whose route could not be written (Caddy down) is finished by a later tick.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retiring: BTreeMap<String, Retiring>,
    /// Profiles of services no longer on this host, by service: since when (RFC 3339). Each
    /// is deleted `removedProfileRetentionDays` later (`profile_retention`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed_profiles: BTreeMap<String, String>,
    /// Services `ferry-agent rollback` took back a profile generation, by service: held at
    /// that version until the manifest changes again (`rollback_hold`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollbacks: BTreeMap<String, RollbackHold>,
    /// The host's whole NixOS system, as the system step left it (`system_deploy`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub system: crate::system_deploy::SystemRecord,
    /// The last tick's outcome.
    #[serde(default)]
    pub last_tick: Option<TickRecord>,
    /// When the last tick whose outcome was `ok` started (RFC 3339): the metrics'
    /// `ferry_last_success_timestamp_seconds`, which must survive failed ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_at: Option<String>,
    /// Where each service stands as the status report says it, by service: kept across
    /// ticks for since when and the last message (`host_report`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_status: BTreeMap<String, ServiceStatusRecord>,
    /// When the status report was last written to the status store (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
    /// A report is owed: the last write failed, so the next tick writes one whatever it did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_owed: bool,
    /// The reports of the hosts of earlier waves the wave gate last read, by host, with
    /// their ETags: the next read is a conditional GET. Only while a service waits on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wave_reports: BTreeMap<String, WaveReport>,
}

/// A report of a host of an earlier wave, as the wave gate last read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaveReport {
    /// Its ETag, for the next conditional GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The report.
    pub report: ferry_schema::host_status::HostStatus,
}

/// Where one service stands, as the status report says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceStatusRecord {
    /// Its state (`running`, `rolled-back`, …).
    pub state: ServiceState,
    /// The store path it runs (when pending or refused: the one the manifest asked for).
    pub store_path: String,
    /// Since when it is in this state (RFC 3339).
    pub since: String,
    /// The last thing the agent said about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One service as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Applied {
    /// The manifest entry that was applied (its store path is the one pinned and running).
    pub service: Service,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
    /// The port of the live instance of a blue-green service (the one Caddy routes to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_port: Option<u16>,
}

/// What to stop and delete once a blue-green switch is routed and drained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retiring {
    /// Units to stop (the instance that served before the switch).
    pub units: Vec<String>,
    /// Unit files to delete (a plain unit the service had before it became blue-green).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// How a tick ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The host matches the manifest.
    Ok,
    /// At least one service failed.
    Failed,
    /// The manifest was refused; nothing changed.
    Refused,
    /// The bucket could not be reached; services were restored from state.
    Unreachable,
}

/// The last tick, for `ferry-agent status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TickRecord {
    /// When the tick started (RFC 3339).
    pub at: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Manifest generation the tick worked from, if any.
    #[serde(default)]
    pub generation: Option<String>,
    /// One line per service, plus refusal reasons.
    pub lines: Vec<String>,
    /// Wall time of the tick in milliseconds.
    pub duration_ms: u64,
}

/// Why a state file could not be used.
#[derive(Debug, Error)]
pub enum StateError {
    /// Not JSON, or not this shape.
    #[error("state file is corrupt: {0}")]
    Corrupt(String),
    /// Written by a newer agent.
    #[error("state file has format version {found}; this agent reads version {STATE_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            manifest_etag: None,
            manifest: None,
            manifest_sha256: None,
            services: BTreeMap::new(),
            pending: BTreeSet::new(),
            quarantine: BTreeMap::new(),
            retiring: BTreeMap::new(),
            removed_profiles: BTreeMap::new(),
            rollbacks: BTreeMap::new(),
            system: crate::system_deploy::SystemRecord::default(),
            last_tick: None,
            last_ok_at: None,
            service_status: BTreeMap::new(),
            reported_at: None,
            report_owed: false,
            wave_reports: BTreeMap::new(),
        }
    }
}

impl State {
    /// Parse a state file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, StateError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(e.to_string()))?;
        if v.version != STATE_VERSION {
            return Err(StateError::Version { found: v.version });
        }
        serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(e.to_string()))
    }

    /// The bytes written to disk (pretty JSON, newline-terminated).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail; fall back to an empty object just in case.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        out
    }

    /// The applied services as a manifest, for restoring units without the bucket.
    pub fn applied_manifest(&self, host: &str) -> Manifest {
        Manifest {
            version: 1,
            generation: self
                .manifest
                .as_ref()
                .map_or_else(String::new, |m| m.generation.clone()),
            services: self
                .services
                .values()
                .map(|a| {
                    let mut s = a.service.clone();
                    if !s.hosts.iter().any(|h| h == host) {
                        s.hosts.push(host.to_owned());
                    }
                    s
                })
                .collect(),
            decommission: Vec::new(),
            rollout: None,
            systems: Default::default(),
            signatures: None,
        }
    }
}

/// A store path that failed on this host (kept in the state file, by service name);
/// `health::quarantine` decides what holds it back and what lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quarantined {
    /// The store path that failed.
    pub store_path: String,
    /// The digest of the unit rendered for it ([`crate::health::quarantine::unit_digest`]): with the store path, what
    /// was tried. `None` in entries written before it was recorded (those match the store
    /// path alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Why, as reported ("failed health check (HTTP 503 on /health after 5 tries)").
    pub reason: String,
    /// When it failed (RFC 3339).
    pub at: String,
    /// The store path the service was returned to; `None` when it had no earlier version
    /// (it was stopped instead).
    #[serde(default)]
    pub rolled_back_to: Option<String>,
    /// The generation of the manifest that named the failed store path: only a newer one
    /// lifts the quarantine. `None` in entries written before it was recorded (any
    /// manifest naming another path lifts those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m: Manifest =
            serde_json::from_str(include_str!("../../schema/tests/fixtures/example.json")).unwrap();
        let mut s = State {
            manifest_etag: Some("\"abc\"".into()),
            manifest: Some(m.clone()),
            ..State::default()
        };
        s.services.insert(
            "podcastitlater-web".into(),
            Applied {
                service: m.services[0].clone(),
                applied_at: "2025-01-01T00:00:00Z".into(),
                live_port: Some(8001),
            },
        );
        s.retiring.insert(
            "podcastitlater-web".into(),
            Retiring {
                units: vec!["ferry-podcastitlater-web@8000.service".into()],
                files: vec![],
            },
        );
        s.last_tick = Some(TickRecord {
            at: "2025-01-01T00:00:00Z".into(),
            outcome: Outcome::Ok,
            generation: Some(m.generation.clone()),
            lines: vec!["web: ok".into()],
            duration_ms: 12,
        });
        s.quarantine.insert(
            "podcastitlater-web".into(),
            Quarantined {
                store_path: "/nix/store/b-web-2".into(),
                unit: Some("sha256:00".into()),
                reason: "failed health check (HTTP 503 on /health after 5 tries)".into(),
                at: "2025-01-01T00:00:00Z".into(),
                rolled_back_to: Some(m.services[0].artifact.store_path.clone()),
                generation: Some("2025-01-01T00:00:00Z".into()),
            },
        );
        s.manifest_sha256 = Some("ab".repeat(32));
        s.service_status.insert(
            "podcastitlater-web".into(),
            ServiceStatusRecord {
                state: ServiceState::RolledBack,
                store_path: m.services[0].artifact.store_path.clone(),
                since: "2025-01-01T00:00:00Z".into(),
                message: Some("failed health check".into()),
            },
        );
        s.reported_at = Some("2025-01-01T00:00:00Z".into());
        s.report_owed = true;
        let back = State::parse(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.applied_manifest("biz").services.len(), 1);
    }

    #[test]
    fn corrupt_and_future_versions_are_errors() {
        assert!(matches!(
            State::parse(b"{\"vers"),
            Err(StateError::Corrupt(_))
        ));
        assert!(matches!(State::parse(b"[]"), Err(StateError::Corrupt(_))));
        assert!(matches!(
            State::parse(b"{\"version\":2}"),
            Err(StateError::Version { found: 2 })
        ));
        assert!(matches!(
            State::parse(b"{\"version\":1,\"extra\":1}"),
            Err(StateError::Corrupt(_))
        ));
        assert_eq!(State::parse(b"{\"version\":1}").unwrap(), State::default());
    }
}
