//! Manifest v1 types. Field names are the wire contract: they come from the original design
//! and must not drift. Every type rejects unknown fields; validation (`validate`) reports
//! them with a suggestion before these types ever see the document.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bound for `restartSec` and the health check's timings: an hour. Anything longer is
/// almost certainly a unit mistake (milliseconds for seconds). In the schema, so editors
/// and the schema layer of validation both know it.
pub const MAX_SECONDS: u32 = 3600;

/// Upper bound for `healthCheck.retries`.
pub const MAX_RETRIES: u32 = 1000;

/// A Ferry manifest: which services run on which hosts, and from which Nix closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// Format version. Always 1 for this schema.
    pub version: u32,
    /// When this manifest was published, as an RFC 3339 timestamp (UTC, e.g.
    /// `2025-01-15T12:34:56Z`). Each published manifest has a strictly later generation
    /// than the one it replaces; archived copies are named after it.
    pub generation: String,
    /// The services, each deployed to the hosts it names.
    pub services: Vec<Service>,
    /// Hosts to empty on purpose: their agents stop and remove every Ferry service they run.
    /// An agent refuses a manifest that names none of its services while it still runs some
    /// (so a wrong `hostName` cannot wipe a host), unless its host is listed here. A host
    /// listed here must not be in any service's `hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decommission: Vec<String>,
    /// Health-gated waves for every service (a service's own `rollout` replaces it): a host
    /// applies a new version only once the hosts of the waves before its own report it
    /// healthy. Absent: every host applies as soon as it sees the manifest. An agent older
    /// than this field refuses the whole manifest, so a wave is never skipped by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Whole NixOS systems, by host name: the host's agent, when its agent.toml has
    /// `system.enable = true`, pulls the system closure, switches to it and keeps it only if
    /// the host stays healthy, before it deploys services. Hosts not listed keep whatever
    /// system they run. An agent older than this field refuses the whole manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub systems: BTreeMap<String, HostSystem>,
    /// Signatures over the RFC 8785 canonical form of this manifest without this field,
    /// each `keyname:base64` (ed25519, Nix key format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Vec<String>>,
}

/// One service: a program from a Nix closure, run as a systemd unit on some hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// Unique name; becomes the unit `ferry-<name>.service`, the Nix profile name and the
    /// Caddy route id `ferry-<name>`. A lowercase DNS label: 1-63 lowercase letters, digits
    /// and `-`, starting and ending with a letter or digit.
    pub name: String,
    /// What to run.
    pub artifact: Artifact,
    /// Host names this service is deployed to (at least one).
    pub hosts: Vec<String>,
    /// How to start the program.
    pub exec: Exec,
    /// Environment variables set in the unit. Never put secrets here: use `envFile`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Absolute path of an environment file on the host (secrets live there, never in the
    /// bucket). The agent only accepts files under its allowed secrets directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// How Caddy routes HTTP traffic to this service. Absent for services without HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// Unit ordering and restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdOptions>,
    /// Sandboxing switches on top of Ferry's hardening baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardening: Option<Hardening>,
    /// Free-form source revision (usually a git commit), for humans and `ferry history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// How the agent decides a freshly started version is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Names of services in this manifest that must be healthy before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// This service's own waves, in place of the manifest's `rollout` (whole, not field by
    /// field). `{"waves": [["*"]]}` lets every host apply at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// Upper bound for `rollout.soakSec`: a day.
pub const MAX_SOAK_SEC: u32 = 86_400;

/// Upper bound for `rollout.staleSec`: a week.
pub const MAX_STALE_SEC: u32 = 604_800;

/// Default `rollout.soakSec`.
pub const DEFAULT_SOAK_SEC: u32 = 60;

/// Default `rollout.staleSec`: three of the agents' default report intervals
/// (`status.everySec`, 300), the age at which `ferry status` calls a report stale.
pub const DEFAULT_STALE_SEC: u32 = 900;

/// Health-gated waves across hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    /// Ordered waves, each a list of host names or patterns (`*` matches any run of
    /// characters: `web-*`, `*`). A host belongs to the first wave that matches it and
    /// applies a new version once every host of the earlier waves that runs the service
    /// has reported it healthy for `soakSec`.
    pub waves: Vec<Vec<String>>,
    /// Seconds a host of an earlier wave must have run the new version healthy, as its own
    /// report shows, before the next wave applies it (default 60, at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_SOAK_SEC))]
    pub soak_sec: Option<u32>,
    /// Seconds after which a host of an earlier wave that has not reported the new version
    /// (no report, or none since the manifest was published) counts as not answering
    /// (default 900, 1-604800; keep it above the hosts' `status.everySec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_STALE_SEC))]
    pub stale_sec: Option<u32>,
    /// What later waves do about a host that does not answer: `wait` (default) holds them,
    /// `skip` goes on without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stale: Option<OnStale>,
}

impl Rollout {
    /// `soakSec` with its default.
    pub fn soak_sec(&self) -> u32 {
        self.soak_sec.unwrap_or(DEFAULT_SOAK_SEC)
    }

    /// `staleSec` with its default.
    pub fn stale_sec(&self) -> u32 {
        self.stale_sec.unwrap_or(DEFAULT_STALE_SEC)
    }

    /// `onStale` with its default.
    pub fn on_stale(&self) -> OnStale {
        self.on_stale.unwrap_or_default()
    }

    /// The index of the first wave that matches `host`, if any.
    pub fn wave_of(&self, host: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|wave| wave.iter().any(|p| wave_pattern_matches(p, host)))
    }
}

/// What later waves do about a host of an earlier wave that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnStale {
    /// Hold later waves until the host answers.
    #[default]
    Wait,
    /// Go on without the host once `staleSec` has passed.
    Skip,
}

impl OnStale {
    /// The name as written in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStale::Wait => "wait",
            OnStale::Skip => "skip",
        }
    }
}

/// Whether a wave entry (a host name, or a pattern where `*` matches any run of
/// characters, none included) matches `host`.
pub fn wave_pattern_matches(pattern: &str, host: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == host;
    };
    let Some(mut rest) = host.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A whole NixOS system for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSystem {
    /// The system's top store path (`config.system.build.toplevel`, named
    /// `nixos-system-<host>-<version>`), whose `bin/switch-to-configuration` the agent runs.
    /// It must be in the bucket's binary cache, signed by a key the host trusts.
    pub store_path: String,
    /// Free-form source revision (usually a git commit), for humans and `ferry history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// The deployable artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Artifact kind. Only `nix-closure` exists.
    #[serde(rename = "type")]
    pub kind: ArtifactKind,
    /// The closure's top store path, e.g. `/nix/store/<hash>-web-1.2.3`. It must be in the
    /// bucket's binary cache, signed by a key the host trusts.
    pub store_path: String,
}

/// Artifact kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ArtifactKind {
    /// A Nix store path and its closure, fetched from the bucket's binary cache.
    #[serde(rename = "nix-closure")]
    NixClosure,
}

/// How the service's program is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exec {
    /// A program name, run as `<storePath>/bin/<command>`, or a relative path inside the
    /// closure (`libexec/web/serve`). Never containing `..`; an absolute path is accepted
    /// only inside the service's own store path.
    pub command: String,
    /// Arguments passed to the command, each as one argument (no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// User to run as (POSIX name). Ignored when `hardening.dynamicUser` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group to run as (POSIX name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// HTTP routing through Caddy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    /// Lowercase domain name Caddy matches on, e.g. `example.com`.
    pub domain: String,
    /// Path prefix, starting with `/`; `/` matches everything under the domain.
    pub path: String,
    /// Loopback port the service listens on (1-65535). Blue-green also uses port + 1.
    pub internal_port: u16,
    /// How an update replaces the running version: `restart` (default) or `blue-green`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

/// Update strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Restart the single instance in place (a short gap in service).
    Restart,
    /// Start the new version beside the old one, switch traffic when healthy, stop the old.
    BlueGreen,
}

/// Unit ordering and restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemdOptions {
    /// Units this one is ordered after (`After=`), e.g. `postgresql.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// Units this one requires (`Requires=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<Vec<String>>,
    /// systemd `Restart=`: `no`, `on-success`, `on-failure`, `on-abnormal`, `on-watchdog`,
    /// `on-abort` or `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// systemd `RestartSec=`, in seconds (0-3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_SECONDS))]
    pub restart_sec: Option<u32>,
}

/// Sandboxing switches. Ferry always applies a strong baseline; these adjust it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hardening {
    /// Run as a transient user allocated by systemd (`DynamicUser=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_user: Option<bool>,
    /// Private `/tmp` and `/var/tmp` (`PrivateTmp=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_tmp: Option<bool>,
    /// `ProtectSystem=`: `true`, `false`, `"full"` or `"strict"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect_system: Option<ProtectSystem>,
    /// `ProtectHome=`: `true`, `false`, `"read-only"` or `"tmpfs"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect_home: Option<ProtectHome>,
    /// Absolute paths of host directories the service may write (`ReadWritePaths=`), e.g.
    /// its data directory `/var/podcastitlater`; everything else but its own
    /// `StateDirectory` stays read-only under `protectSystem: "strict"`. The host must allow
    /// each under a prefix of its `allowedWritePaths` (agent.toml, default none), and the
    /// directory must exist there, owned by the service's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_write_paths: Option<Vec<String>>,
}

/// systemd `ProtectSystem=` values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProtectSystem {
    /// `true` (read-only /usr and /boot) or `false` (off).
    Bool(bool),
    /// `"full"` (also /etc) or `"strict"` (the whole file system but API mounts).
    Mode(ProtectSystemMode),
}

/// String values of `ProtectSystem=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectSystemMode {
    /// Read-only /usr, /boot and /etc.
    Full,
    /// Read-only everything but /dev, /proc and /sys.
    Strict,
}

/// systemd `ProtectHome=` values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProtectHome {
    /// `true` (inaccessible) or `false` (off).
    Bool(bool),
    /// `"read-only"` or `"tmpfs"`.
    Mode(ProtectHomeMode),
}

/// String values of `ProtectHome=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectHomeMode {
    /// Home directories are read-only.
    ReadOnly,
    /// An empty tmpfs over the home directories.
    Tmpfs,
}

/// How the agent checks a newly started version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// `http` (GET expecting `expectStatus`), `tcp` (connect) or `none` (systemd's view only).
    #[serde(rename = "type")]
    pub kind: HealthCheckKind,
    /// HTTP path to GET, starting with `/` (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port to probe on 127.0.0.1 (default: `http.internalPort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// HTTP status that counts as healthy (default: any status below 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
    /// Seconds to wait after start before the first probe (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_SECONDS))]
    pub start_period_sec: Option<u32>,
    /// Seconds between probes (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub interval_sec: Option<u32>,
    /// Seconds one probe may take (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub timeout_sec: Option<u32>,
    /// Probes to try before the version counts as unhealthy. Default: as many as start by
    /// `deadlineSec`; given alone, exactly this many (and no deadline beyond them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_RETRIES))]
    pub retries: Option<u32>,
    /// Seconds from start within which the version must pass: probes run every
    /// `intervalSec` from `startPeriodSec` until one passes, none starting that could end
    /// after the deadline. Default 60, or what 5 tries take when that is longer; with
    /// `retries` set and no `deadlineSec`, the end of those tries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_SECONDS))]
    pub deadline_sec: Option<u32>,
}

/// Health check kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheckKind {
    /// HTTP GET on 127.0.0.1.
    #[default]
    Http,
    /// TCP connect on 127.0.0.1.
    Tcp,
    /// No probe: the unit being active and not restarting is enough.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_patterns_match_like_shell_globs_with_star_only() {
        for (p, h, yes) in [
            ("web-1", "web-1", true),
            ("web-1", "web-10", false),
            ("*", "anything", true),
            ("web-*", "web-", true),
            ("web-*", "web-eu-1", true),
            ("web-*", "db-1", false),
            ("*-1", "web-1", true),
            ("*-1", "web-2", false),
            ("w*b*1", "web-1", true),
            ("w*b*1", "wb1", true),
            ("a*a", "a", false),
            ("*eu*", "web-eu-1", true),
        ] {
            assert_eq!(wave_pattern_matches(p, h), yes, "{p} vs {h}");
        }
    }
}
