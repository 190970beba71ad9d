//! `agent.toml`: the agent's configuration, parsed strictly, with a named default for every
//! field that has a safe one. The doc comments here are the user documentation of each key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::hooks::Hooks;
pub use crate::policy::ports::PortRange;

/// Where the configuration lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ferry/agent.toml";

/// The agent's configuration (`/etc/ferry/agent.toml`). Keys are camelCase, like the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// This host's name as the manifest's `hosts` lists use it. Default: the machine's
    /// hostname (`/proc/sys/kernel/hostname`).
    #[serde(default = "default_host_name")]
    pub host_name: Option<String>,
    /// The bucket holding `manifest.json` and the binary cache, as a Nix S3 store URL
    /// (`s3://BUCKET?endpoint=HOST&scheme=https&region=REGION&profile=PROFILE`; `endpoint`
    /// may also be a whole `https://…` URL; `region` defaults to `us-east-1`, `scheme` to
    /// `https`, no `endpoint` means AWS) or `file:///DIR`. `ferry-agent config` prints it as
    /// understood. No default: `reconcile` and `plan` need it; `render` does not.
    #[serde(default = "default_bucket")]
    pub bucket: Option<String>,
    /// Where S3 credentials come from. Default: the AWS default chain (environment,
    /// `~/.aws/credentials`, …).
    #[serde(default)]
    pub credentials: Credentials,
    /// Public keys (`name:base64`, Nix format) whose narinfo signatures make a closure
    /// trusted. Passed to `nix copy` as `trusted-public-keys`; closures signed by no key here
    /// are refused. Default: none (every closure is refused until a key is configured).
    #[serde(default = "default_trusted_keys")]
    pub trusted_keys: Vec<String>,
    /// Public keys (`name:base64`) allowed to sign `manifest.json`; a manifest without a
    /// valid signature by one of them is refused whole. Default: none — and with none, every
    /// manifest is refused (restore-only, exit 2) unless `allowUnsignedManifests = true`.
    #[serde(default = "default_manifest_keys")]
    pub manifest_keys: Vec<String>,
    /// Apply manifests without checking any signature when `manifestKeys` is empty. Anyone
    /// who can write to the bucket then runs code on this host; meant for trying Ferry out
    /// on a throw-away bucket. Ignored when `manifestKeys` is set. Default: false.
    #[serde(default = "default_allow_unsigned_manifests")]
    pub allow_unsigned_manifests: bool,
    /// Apply a manifest whose generation is older than the last one applied (an archived
    /// manifest copied back over `manifest.json`, the design's rollback by copy). With
    /// false, such a manifest is refused whole and rollback is `ferry rollback`, which
    /// re-signs the old content as a new generation. Either way a store path quarantined
    /// here stays quarantined when an older manifest names it again. Default: true.
    #[serde(default = "default_rollback_by_copy")]
    pub rollback_by_copy: bool,
    /// Directory for `state.json` and its lock file. Default: `/var/lib/ferry`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory the agent writes `ferry-<service>.service` files to. Default:
    /// `/run/systemd/system` (writable on NixOS; emptied at boot, re-rendered from state).
    #[serde(default = "default_unit_dir")]
    pub unit_dir: PathBuf,
    /// Directory of the per-service Nix profiles (GC roots). Default:
    /// `/nix/var/nix/profiles/ferry`.
    #[serde(default = "default_profile_dir")]
    pub profile_dir: PathBuf,
    /// Profile generations kept per service (the newest N; older ones are deleted so Nix can
    /// collect them). At least 2, so rollback has somewhere to go. Default: 5.
    #[serde(default = "default_generations_to_keep")]
    pub generations_to_keep: u32,
    /// Days a removed service's profile is kept (its closures with it) before the agent
    /// deletes it, so Nix can collect them. 0 deletes it on the tick that removes the
    /// service. Default: 30.
    #[serde(default = "default_removed_profile_retention_days")]
    pub removed_profile_retention_days: u32,
    /// The only directory a manifest's `envFile` may name a file under. Default:
    /// `/var/lib/ferry-secrets`.
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: PathBuf,
    /// Whether a service may run as root (`user = "root"`, or no user with
    /// `dynamicUser = false`). Default: false.
    #[serde(default = "default_allow_root")]
    pub allow_root: bool,
    /// Host accounts a service's `exec.user` may name (never root, whose own switch is
    /// `allowRoot`; the account's primary group needs a GID of 1000 or more unless
    /// `exec.group` names another). Default: none — services run as systemd's DynamicUser.
    #[serde(default = "default_allowed_users")]
    pub allowed_users: Vec<String>,
    /// Host groups a service's `exec.group` may name; a group with a GID below 1000 (a
    /// system group such as root, wheel or adm) is refused even when listed here. Default:
    /// none — services get a dynamic group.
    #[serde(default = "default_allowed_groups")]
    pub allowed_groups: Vec<String>,
    /// Units of the host a service's `systemd.requires` and `systemd.after` may name, besides
    /// the units of this host's Ferry services (`ferry-<service>.service`). Default:
    /// `["network-online.target"]`.
    #[serde(default = "default_allowed_units")]
    pub allowed_units: Vec<String>,
    /// The loopback ports a manifest may route to and health-check (`http.internalPort`,
    /// the blue-green `internalPort + 1`, `healthCheck.port`), as `FIRST-LAST`. Besides this
    /// range, a port something else on the host listens on is refused. Default:
    /// `1024-65535`.
    #[serde(default = "default_allowed_ports")]
    pub allowed_ports: PortRange,
    /// Directories under which a service's `hardening.readWritePaths` may name paths for
    /// it to write (e.g. `/var/podcastitlater`, or `/srv` for every directory there); each
    /// must be absolute and may neither be, hold nor lie inside a system directory (`/etc`,
    /// `/nix`, `/usr`, `/run`, …), one of the agent's own directories or
    /// `/var/lib/ferry-*`. Default: none — services write only their own `StateDirectory`.
    #[serde(default = "default_allowed_write_paths")]
    pub allowed_write_paths: Vec<PathBuf>,
    /// Time limits for each step of a tick.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// D-Bus address of the system bus to drive systemd through, e.g.
    /// `unix:path=/run/dbus/system_bus_socket`. Default: the standard system bus.
    #[serde(default = "default_bus_address")]
    pub bus_address: Option<String>,
    /// Program used for `nix copy`, `nix-env` and friends (looked up in `PATH` when not
    /// absolute). Default: `nix`; `nix-env` is found beside it.
    #[serde(default = "default_nix_bin")]
    pub nix_bin: String,
    /// How the agent routes HTTP services through Caddy's admin API.
    #[serde(default)]
    pub caddy: Caddy,
    /// Metrics for Prometheus, in node_exporter's textfile format (`[metrics]`).
    #[serde(default)]
    pub metrics: Metrics,
    /// Commands and a webhook run after a tick that changed or failed something
    /// (`[hooks]`).
    #[serde(default)]
    pub hooks: Hooks,
    /// Where the agent reports what it did (`[status]`), for `ferry status` and
    /// `ferry push --wait`. Default: nowhere.
    #[serde(default)]
    pub status: Status,
    /// Whole NixOS system deploys (`[system]`): whether this host switches to the system
    /// the manifest's `systems` names for it. Default: off.
    #[serde(default)]
    pub system: SystemDeploys,
}

/// Whole NixOS system deploys (`[system]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemDeploys {
    /// Switch this host to the NixOS system the manifest's `systems` names for it: pull
    /// it (signatures checked as for services), make it the system profile's next
    /// generation, run its `switch-to-configuration test`, check the host (the bucket still
    /// answers, no unit newly failed, Ferry's services still up), and only then `boot` (the
    /// default boot entry); on a failed check, switch back and quarantine it. Default:
    /// false — an entry for this host is ignored, with a line saying so.
    #[serde(default)]
    pub enable: bool,
    /// Seconds one `switch-to-configuration` may run before systemd stops it and the switch
    /// counts as failed. Default: 600.
    #[serde(default = "default_switch_timeout_sec")]
    pub switch_timeout_sec: u64,
}

impl Default for SystemDeploys {
    fn default() -> Self {
        Self {
            enable: false,
            switch_timeout_sec: default_switch_timeout_sec(),
        }
    }
}

fn default_switch_timeout_sec() -> u64 {
    600
}

/// Metrics for Prometheus (`[metrics]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    /// The file the agent writes its metrics to after every tick, in Prometheus' text
    /// format, replaced atomically (a reader never sees half a file): put it in the
    /// directory node_exporter's textfile collector reads (`--collector.textfile.directory`);
    /// the name must end in `.prom`, the only files the collector reads. A write that
    /// fails is reported in the tick's lines and never fails the tick. Default: none (no
    /// metrics written).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Metrics {
    /// Checks the values that `serde` cannot: returns what is wrong, naming the key.
    fn problems(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        if !file.is_absolute() {
            return Some(format!(
                "metrics.file must be an absolute path, got {}",
                file.display()
            ));
        }
        if file.extension().is_none_or(|e| e != "prom") || file.file_stem().is_none() {
            return Some(format!(
                "metrics.file {} must end in `.prom`: node_exporter's textfile collector reads no other file (e.g. {}/ferry.prom)",
                file.display(),
                file.parent().unwrap_or(Path::new("/")).display()
            ));
        }
        None
    }
}

/// The status store (`[status]`): where the agent writes `hosts/<hostName>.json` after its
/// ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Status {
    /// The status store, a bucket URL of the same forms as `bucket` (`s3://…` or
    /// `file:///DIR`). Use a second bucket: the host needs write access here, and keeps
    /// read-only access to the deploy bucket. A failed write never fails a tick; it is
    /// reported in the tick's lines and tried again on the next tick. Default: none —
    /// nothing is reported and nothing else changes.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Where the status store's S3 credentials come from, like `credentials` for the
    /// deploy bucket (`profile`, `file`). Default: the AWS default chain.
    #[serde(default)]
    pub credentials: Credentials,
    /// Seconds between reports while nothing happens: a tick that changed or failed
    /// something reports at once, a quiet one only when this long has passed since the last
    /// report. `ferry status` calls a host stale after three of these without a report.
    /// Default: 300.
    #[serde(default = "default_status_every_sec")]
    pub every_sec: u64,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            bucket: None,
            credentials: Credentials::default(),
            every_sec: default_status_every_sec(),
        }
    }
}

fn default_status_every_sec() -> u64 {
    300
}

/// Where S3 credentials come from. Both unset: the AWS default chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    /// Named profile in the shared credentials/config files (overrides the bucket URL's
    /// `profile=`). Default: none.
    #[serde(default)]
    pub profile: Option<String>,
    /// Path of a shared-credentials file (`[default]` / `[PROFILE]` sections with
    /// `aws_access_key_id` and `aws_secret_access_key`). Default: none (`~/.aws/credentials`).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Time limits, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// One deadline for fetching `manifest.json`: connecting, retries, headers and the whole
    /// body (a bucket that trickles its answer cannot hold a tick longer). On expiry the
    /// tick restores services from state. Default: 30.
    #[serde(default = "default_fetch_sec")]
    pub fetch_sec: u64,
    /// One `nix copy` of one closure. Default: 600.
    #[serde(default = "default_pull_sec")]
    pub pull_sec: u64,
    /// Waiting for one systemd job (start/restart/stop) to finish; also the limit for each
    /// D-Bus call (and connecting to the bus) and each `nix-env` call, so a stuck systemd or
    /// a held Nix lock cannot hold a tick. Default: 90.
    #[serde(default = "default_job_sec")]
    pub job_sec: u64,
    /// How long a started unit must stay up before it counts as running (catches
    /// immediate crashes and restart loops). Default: 2.
    #[serde(default = "default_settle_sec")]
    pub settle_sec: u64,
    /// How long a tick waits for another tick's lock before giving up. Default: 10.
    #[serde(default = "default_lock_wait_sec")]
    pub lock_wait_sec: u64,
    /// How long the old instance of a blue-green service keeps running after Caddy routes
    /// to the new one, so requests in flight finish. Default: 5.
    #[serde(default = "default_drain_sec")]
    pub drain_sec: u64,
    /// The whole tick: once this many seconds have passed, nothing new is started (no pull,
    /// no unit written, no service started); what runs stays as it is, the services not
    /// reached are named and the tick exits 1, and the next tick carries on. A step already
    /// under way ends within its own limit. Default: 900.
    #[serde(default = "default_tick_sec")]
    pub tick_sec: u64,
    /// The boot tick (the one systemd runs before `multi-user.target`, recognised by
    /// systemd still starting up): after this many seconds it stops applying the manifest,
    /// even half-way (a slow bucket, a long health check), and restores the services from
    /// state, so a boot is not held by a deploy. The next timer tick applies the manifest.
    /// Default: 120.
    #[serde(default = "default_boot_sec")]
    pub boot_sec: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            fetch_sec: default_fetch_sec(),
            pull_sec: default_pull_sec(),
            job_sec: default_job_sec(),
            settle_sec: default_settle_sec(),
            lock_wait_sec: default_lock_wait_sec(),
            drain_sec: default_drain_sec(),
            tick_sec: default_tick_sec(),
            boot_sec: default_boot_sec(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_name: default_host_name(),
            bucket: default_bucket(),
            credentials: Credentials::default(),
            trusted_keys: default_trusted_keys(),
            manifest_keys: default_manifest_keys(),
            state_dir: default_state_dir(),
            unit_dir: default_unit_dir(),
            profile_dir: default_profile_dir(),
            generations_to_keep: default_generations_to_keep(),
            removed_profile_retention_days: default_removed_profile_retention_days(),
            secrets_dir: default_secrets_dir(),
            allow_root: default_allow_root(),
            allow_unsigned_manifests: default_allow_unsigned_manifests(),
            rollback_by_copy: default_rollback_by_copy(),
            allowed_users: default_allowed_users(),
            allowed_groups: default_allowed_groups(),
            allowed_units: default_allowed_units(),
            allowed_ports: default_allowed_ports(),
            allowed_write_paths: default_allowed_write_paths(),
            timeouts: Timeouts::default(),
            bus_address: default_bus_address(),
            nix_bin: default_nix_bin(),
            caddy: Caddy::default(),
            metrics: Metrics::default(),
            hooks: Hooks::default(),
            status: Status::default(),
            system: SystemDeploys::default(),
        }
    }
}

/// Caddy routing (`[caddy]`): where the admin API is and which server holds Ferry's routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Caddy {
    /// Whether the agent manages Caddy routes at all. Turn it off on hosts without Caddy;
    /// services with `http` then run without a route. Default: true.
    #[serde(default = "default_caddy_enable")]
    pub enable: bool,
    /// Caddy's admin API: `HOST:PORT` (loopback, e.g. `localhost:2019`) or a unix socket in
    /// Caddy's own syntax, `unix//run/caddy/admin.sock`. Default: `localhost:2019`.
    #[serde(default = "default_caddy_admin")]
    pub admin: String,
    /// The Caddy server (`apps.http.servers.<name>`) that holds Ferry's routes. Caddy names a
    /// Caddyfile's first server `srv0`. Default: `srv0`.
    #[serde(default = "default_caddy_server")]
    pub server: String,
    /// Create that server when Caddy has none of that name (e.g. Caddy runs with an empty
    /// config). When false, a missing server is reported every tick. Default: true.
    #[serde(default = "default_caddy_create_server")]
    pub create_server: bool,
    /// Listen addresses of a server the agent creates (Caddy syntax, e.g. `:443`).
    /// Default: `[":443"]`.
    #[serde(default = "default_caddy_listen")]
    pub listen: Vec<String>,
    /// Automatic HTTPS (certificates and HTTP→HTTPS redirects) on a server the agent
    /// creates. Turn it off for a plain-HTTP listener. Default: true.
    #[serde(default = "default_caddy_automatic_https")]
    pub automatic_https: bool,
    /// Seconds one admin API request may take. Default: 5.
    #[serde(default = "default_caddy_timeout_sec")]
    pub timeout_sec: u64,
    /// The domains a manifest may route: `example.com` (that name), `*.example.com` (any
    /// name under it) or `*` (any). A domain the host's own Caddy configuration serves is
    /// never routed, whatever this says. Default: `["*"]`.
    #[serde(default = "default_caddy_domains")]
    pub domains: Vec<String>,
}

impl Default for Caddy {
    fn default() -> Self {
        Self {
            enable: default_caddy_enable(),
            admin: default_caddy_admin(),
            server: default_caddy_server(),
            create_server: default_caddy_create_server(),
            listen: default_caddy_listen(),
            automatic_https: default_caddy_automatic_https(),
            timeout_sec: default_caddy_timeout_sec(),
            domains: default_caddy_domains(),
        }
    }
}

fn default_caddy_enable() -> bool {
    true
}
fn default_caddy_admin() -> String {
    "localhost:2019".to_owned()
}
fn default_caddy_server() -> String {
    "srv0".to_owned()
}
fn default_caddy_create_server() -> bool {
    true
}
fn default_caddy_listen() -> Vec<String> {
    vec![":443".to_owned()]
}
fn default_caddy_automatic_https() -> bool {
    true
}
fn default_caddy_timeout_sec() -> u64 {
    5
}
fn default_caddy_domains() -> Vec<String> {
    vec!["*".to_owned()]
}

impl Caddy {
    /// Checks the values that `serde` cannot: returns what is wrong, naming the key.
    fn problems(&self) -> Option<String> {
        if let Err(e) = crate::backend::caddy::AdminAddress::parse(&self.admin) {
            return Some(format!("caddy.admin: {e}"));
        }
        let server_ok = !self.server.is_empty()
            && self
                .server
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !server_ok {
            return Some(format!(
                "caddy.server {:?} must be a Caddy server name of letters, digits, `_` and `-` (e.g. srv0)",
                self.server
            ));
        }
        if self.create_server && self.listen.is_empty() {
            return Some(
                "caddy.listen is empty but caddy.createServer is true; give at least one address like \":443\""
                    .to_owned(),
            );
        }
        if self.timeout_sec == 0 {
            return Some("caddy.timeoutSec must be at least 1".to_owned());
        }
        if let Some(bad) = self
            .domains
            .iter()
            .find(|d| !crate::policy::routing::is_valid_domain_pattern(d))
        {
            return Some(format!(
                "caddy.domains: {bad:?} is not a domain pattern; use `example.com`, `*.example.com` or `*`"
            ));
        }
        None
    }
}

fn default_host_name() -> Option<String> {
    None
}
fn default_bucket() -> Option<String> {
    None
}
fn default_trusted_keys() -> Vec<String> {
    Vec::new()
}
fn default_manifest_keys() -> Vec<String> {
    Vec::new()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ferry")
}
fn default_unit_dir() -> PathBuf {
    PathBuf::from("/run/systemd/system")
}
fn default_profile_dir() -> PathBuf {
    PathBuf::from("/nix/var/nix/profiles/ferry")
}
fn default_generations_to_keep() -> u32 {
    5
}
fn default_removed_profile_retention_days() -> u32 {
    30
}
fn default_secrets_dir() -> PathBuf {
    PathBuf::from("/var/lib/ferry-secrets")
}
fn default_allow_root() -> bool {
    false
}
fn default_allow_unsigned_manifests() -> bool {
    false
}
fn default_rollback_by_copy() -> bool {
    true
}
fn default_allowed_users() -> Vec<String> {
    Vec::new()
}
fn default_allowed_groups() -> Vec<String> {
    Vec::new()
}
fn default_allowed_units() -> Vec<String> {
    vec!["network-online.target".to_owned()]
}
fn default_allowed_write_paths() -> Vec<PathBuf> {
    Vec::new()
}
fn default_allowed_ports() -> PortRange {
    PortRange {
        first: 1024,
        last: 65535,
    }
}

fn default_fetch_sec() -> u64 {
    30
}
fn default_pull_sec() -> u64 {
    600
}
fn default_job_sec() -> u64 {
    90
}
fn default_drain_sec() -> u64 {
    5
}
fn default_tick_sec() -> u64 {
    900
}
fn default_boot_sec() -> u64 {
    120
}
fn default_settle_sec() -> u64 {
    2
}
fn default_lock_wait_sec() -> u64 {
    10
}
fn default_bus_address() -> Option<String> {
    None
}
fn default_nix_bin() -> String {
    "nix".to_owned()
}

/// Why a configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the agent configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid for this schema.
    #[error("invalid agent configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml/serde said (names the key).
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("invalid agent configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which key and why.
        message: String,
    },
}

impl Config {
    /// Parse and check a configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Read and parse the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.generations_to_keep < 2 {
            return Err(invalid(format!(
                "generationsToKeep is {}; keep at least 2 so a rollback target exists",
                self.generations_to_keep
            )));
        }
        if let Some(bucket) = &self.bucket {
            ferry_bucket::BucketUrl::parse(bucket).map_err(|e| invalid(format!("bucket: {e}")))?;
        }
        if let Some(bucket) = &self.status.bucket {
            ferry_bucket::BucketUrl::parse(bucket)
                .map_err(|e| invalid(format!("status.bucket: {e}")))?;
        }
        if self.status.every_sec == 0 {
            return Err(invalid("status.everySec must be at least 1".to_owned()));
        }
        for (key, dir) in [
            ("stateDir", &self.state_dir),
            ("unitDir", &self.unit_dir),
            ("profileDir", &self.profile_dir),
            ("secretsDir", &self.secrets_dir),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(format!(
                    "{key} must be an absolute path, got {}",
                    dir.display()
                )));
            }
        }
        for (key, sec) in [
            ("timeouts.tickSec", self.timeouts.tick_sec),
            ("timeouts.bootSec", self.timeouts.boot_sec),
            ("system.switchTimeoutSec", self.system.switch_timeout_sec),
        ] {
            if sec == 0 {
                return Err(invalid(format!("{key} must be at least 1")));
            }
        }
        if let Some(problem) = self
            .caddy
            .problems()
            .or_else(|| self.metrics.problems())
            .or_else(|| self.hooks.problems())
        {
            return Err(invalid(problem));
        }
        for (key, list) in [
            ("trustedKeys", &self.trusted_keys),
            ("manifestKeys", &self.manifest_keys),
        ] {
            for (i, k) in list.iter().enumerate() {
                if let Err(e) = ferry_schema::PublicKey::parse(k) {
                    return Err(invalid(format!(
                        "{key}[{i}]: {k:?} is not a public key in Nix format `name:base64` ({e})"
                    )));
                }
            }
        }
        for (key, list) in [
            ("allowedUsers", &self.allowed_users),
            ("allowedGroups", &self.allowed_groups),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|n| !ferry_schema::names::is_valid_posix_name(n))
            {
                return Err(invalid(format!(
                    "{key}: {bad:?} is not a user or group name"
                )));
            }
            if list.iter().any(|n| n == "root") {
                return Err(invalid(format!(
                    "{key} may not list root; services run as root only with allowRoot = true"
                )));
            }
        }
        if let Some(bad) = self
            .allowed_units
            .iter()
            .find(|u| !ferry_schema::names::is_valid_unit_name(u))
        {
            return Err(invalid(format!(
                "allowedUnits: {bad:?} is not a unit name (e.g. postgresql.service)"
            )));
        }
        let own_dirs = self.own_dirs();
        for prefix in &self.allowed_write_paths {
            if let Some(why) =
                crate::policy::writable::check_prefix(&prefix.to_string_lossy(), &own_dirs)
            {
                return Err(invalid(format!("allowedWritePaths: {why}")));
            }
        }
        Ok(())
    }

    /// The agent's own directories by agent.toml key: no service may write them or have
    /// them as its `StateDirectory`.
    pub fn own_dirs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("stateDir", self.state_dir.clone()),
            ("secretsDir", self.secrets_dir.clone()),
            ("profileDir", self.profile_dir.clone()),
            ("unitDir", self.unit_dir.clone()),
        ]
    }

    /// This host's name: the configured one, or the machine's hostname.
    pub fn effective_host_name(&self) -> std::io::Result<String> {
        match &self.host_name {
            Some(name) => Ok(name.clone()),
            None => Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
                .trim()
                .to_owned()),
        }
    }

    /// The state file's path.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The tick lock's path.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("state.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("t")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.generations_to_keep, 5);
        assert_eq!(c.removed_profile_retention_days, 30);
        assert_eq!(c.unit_dir, PathBuf::from("/run/systemd/system"));
        assert!(!c.allow_root);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
hostName = "biz"
bucket = "s3://ferry?endpoint=http://127.0.0.1:3900&region=garage"
trustedKeys = ["cache:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="]
manifestKeys = ["dev:bP9CzN+0ddRk1Wil4V+L70AdaoPmZ8hFqcm0Y5UM0CY="]
generationsToKeep = 3
removedProfileRetentionDays = 0
allowRoot = true
busAddress = "unix:path=/tmp/bus"
[credentials]
profile = "ferry"
file = "/etc/ferry/credentials"
[timeouts]
pullSec = 60
"#;
        let c = Config::parse(text, Path::new("t")).unwrap();
        assert_eq!(c.host_name.as_deref(), Some("biz"));
        assert_eq!(c.credentials.profile.as_deref(), Some("ferry"));
        assert_eq!(c.timeouts.pull_sec, 60);
        assert_eq!(c.timeouts.job_sec, 90);
        assert_eq!(c.generations_to_keep, 3);
        assert_eq!(c.removed_profile_retention_days, 0);
    }

    #[test]
    fn system_table_is_off_by_default_and_checked() {
        let c = Config::parse("", Path::new("t")).unwrap();
        assert!(!c.system.enable);
        assert_eq!(c.system.switch_timeout_sec, 600);
        let c = Config::parse(
            "[system]\nenable = true\nswitchTimeoutSec = 120\n",
            Path::new("t"),
        )
        .unwrap();
        assert!(c.system.enable);
        assert_eq!(c.system.switch_timeout_sec, 120);
        for (bad, names) in [
            ("[system]\nswitchTimeoutSec = 0", "system.switchTimeoutSec"),
            ("[system]\nenabled = true", "enabled"),
        ] {
            let e = Config::parse(bad, Path::new("t")).unwrap_err().to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn status_table_parses_and_checks() {
        let c = Config::parse("", Path::new("t")).unwrap();
        assert_eq!(c.status.bucket, None);
        assert_eq!(c.status.every_sec, 300);
        let text = "[status]\nbucket = \"s3://ferry-status?endpoint=http://127.0.0.1:3900&region=garage\"\neverySec = 60\n[status.credentials]\nfile = \"/etc/ferry/status-credentials\"\n";
        let c = Config::parse(text, Path::new("t")).unwrap();
        assert_eq!(c.status.every_sec, 60);
        assert_eq!(
            c.status.credentials.file.as_deref(),
            Some(Path::new("/etc/ferry/status-credentials"))
        );
        for (bad, names) in [
            ("[status]\nbucket = \"ftp://x\"", "status.bucket"),
            ("[status]\neverySec = 0", "status.everySec"),
            ("[status]\nevery = 5", "every"),
        ] {
            let e = Config::parse(bad, Path::new("t")).unwrap_err().to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn caddy_table_parses_and_checks() {
        let c = Config::parse("", Path::new("t")).unwrap();
        assert!(c.caddy.enable);
        assert_eq!(c.caddy.admin, "localhost:2019");
        assert_eq!(c.caddy.server, "srv0");
        let text = "[caddy]\nadmin = \"unix//run/caddy/admin.sock\"\nserver = \"ferry\"\nlisten = [\":8080\"]\nautomaticHttps = false\n";
        let c = Config::parse(text, Path::new("t")).unwrap();
        assert_eq!(c.caddy.server, "ferry");
        assert!(!c.caddy.automatic_https);
        for bad in [
            "[caddy]\nadmin = \"http://x\"",
            "[caddy]\nserver = \"a/b\"",
            "[caddy]\nlisten = []",
            "[caddy]\nadminAddress = \"x:1\"",
        ] {
            let e = Config::parse(bad, Path::new("t")).unwrap_err().to_string();
            assert!(
                e.contains("caddy") || e.contains("adminAddress"),
                "{bad}: {e}"
            );
        }
        assert!(
            Config::parse(
                "[caddy]\nenable = false\nlisten = []\ncreateServer = false",
                Path::new("t")
            )
            .is_ok()
        );
    }

    #[test]
    fn metrics_and_hooks_tables_parse_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.metrics.file, None);
        assert!(c.hooks.on_change.is_empty() && c.hooks.on_failure.is_empty());
        assert_eq!(
            (c.hooks.webhook.as_deref(), c.hooks.timeout_sec),
            (None, 10)
        );
        let text = r#"
[metrics]
file = "/var/lib/prometheus-node-exporter-text-files/ferry.prom"
[hooks]
onChange = ["/run/current-system/sw/bin/logger", "-t", "ferry", "deployed"]
onFailure = ["/usr/local/bin/page-oncall"]
webhook = "https://hooks.example.com/ferry?token=abc"
timeoutSec = 30
"#;
        let c = Config::parse(text, Path::new("t")).unwrap();
        assert_eq!(
            c.metrics.file.as_deref(),
            Some(Path::new(
                "/var/lib/prometheus-node-exporter-text-files/ferry.prom"
            ))
        );
        assert_eq!(c.hooks.on_change.len(), 4);
        assert_eq!(c.hooks.timeout_sec, 30);
        for (bad, says) in [
            (
                "[metrics]\nfile = \"ferry.prom\"",
                "metrics.file must be an absolute path",
            ),
            (
                "[metrics]\nfile = \"/var/lib/node/ferry.txt\"",
                "metrics.file /var/lib/node/ferry.txt must end in `.prom`",
            ),
            (
                "[hooks]\nonChange = [\"curl\", \"-d\", \"x\"]",
                "hooks.onChange: the program \"curl\" must be an absolute path",
            ),
            ("[hooks]\ntimeoutSec = 0", "hooks.timeoutSec is 0"),
            (
                "[hooks]\nwebhook = \"mailto:ops@example.com\"",
                "hooks.webhook",
            ),
            (
                "[hooks]\nonSuccess = [\"/bin/true\"]",
                "unknown field `onSuccess`",
            ),
            ("[metrics]\ndir = \"/x\"", "unknown field `dir`"),
        ] {
            let e = Config::parse(bad, Path::new("agent.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = Config::parse("stateDirectory = \"/x\"", Path::new("agent.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("stateDirectory"), "{msg}");
        assert!(msg.contains("agent.toml"), "{msg}");
        let e = Config::parse("[timeouts]\npull = 3", Path::new("t")).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown field `pull`, expected one of `fetchSec`, `pullSec`"),
            "{e}"
        );
    }

    #[test]
    fn nonsense_values_are_refused() {
        // Each refusal names the key and what is wrong with its value.
        for (bad, reason) in [
            (
                "generationsToKeep = 1",
                "generationsToKeep is 1; keep at least 2",
            ),
            (
                "stateDir = \"rel\"",
                "stateDir must be an absolute path, got rel",
            ),
            (
                "trustedKeys = [\"nocolon\"]",
                "trustedKeys[0]: \"nocolon\" is not a public key",
            ),
            (
                "manifestKeys = [\"dev:AAAA\"]",
                "manifestKeys[0]: \"dev:AAAA\" is not a public key",
            ),
            (
                "bucket = \"http://x\"",
                "bucket: \"http://x\" is neither s3://",
            ),
        ] {
            let e = Config::parse(bad, Path::new("agent.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid agent configuration agent.toml: ") && e.contains(reason),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bad_manifest_key_is_named_at_load_and_two_keys_may_share_a_name() {
        let key = |_| {
            ferry_schema::SecretKey::generate("deploy")
                .unwrap()
                .public()
                .to_nix_string()
        };
        let (good, rotated) = (key(1), key(2));
        let text = format!("manifestKeys = [\"{good}\", \"deploy:AAAA\"]");
        let msg = Config::parse(&text, Path::new("/etc/ferry/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/etc/ferry/agent.toml")
                && msg.contains("manifestKeys[1]: \"deploy:AAAA\" is not a public key"),
            "{msg}"
        );
        let text = format!("manifestKeys = [\"{good}\", \"{rotated}\"]");
        let c = Config::parse(&text, Path::new("t")).unwrap();
        assert_eq!(c.manifest_keys, [good, rotated]);
    }

    #[test]
    fn host_policy_keys_default_strict_and_are_checked() {
        let c = Config::default();
        assert!(!c.allow_unsigned_manifests);
        assert!(c.rollback_by_copy);
        assert!(c.allowed_users.is_empty() && c.allowed_groups.is_empty());
        assert_eq!(c.allowed_units, ["network-online.target"]);
        assert_eq!(c.allowed_ports.to_string(), "1024-65535");
        assert_eq!(c.caddy.domains, ["*"]);
        assert!(c.allowed_write_paths.is_empty());
        let text = "allowUnsignedManifests = true\nrollbackByCopy = false\n\
            allowedUsers = [\"app\"]\nallowedGroups = [\"app\"]\n\
            allowedUnits = [\"postgresql.service\"]\nallowedPorts = \"8000-8999\"\n\
            allowedWritePaths = [\"/var/podcastitlater\", \"/srv\"]\n\
            [caddy]\ndomains = [\"*.example.com\", \"example.com\"]\n";
        let c = Config::parse(text, Path::new("t")).unwrap();
        assert!(c.allow_unsigned_manifests && !c.rollback_by_copy);
        assert_eq!(
            c.allowed_write_paths,
            [PathBuf::from("/var/podcastitlater"), PathBuf::from("/srv")]
        );
        assert_eq!((c.allowed_ports.first, c.allowed_ports.last), (8000, 8999));
        assert!(c.allowed_ports.contains(8999) && !c.allowed_ports.contains(9000));
        assert_eq!(
            Config::parse("allowedPorts = \"8080\"", Path::new("t"))
                .unwrap()
                .allowed_ports
                .to_string(),
            "8080-8080"
        );
        for (bad, named) in [
            ("allowedUsers = [\"root\"]", "allowedUsers"),
            ("allowedGroups = [\"root\"]", "allowedGroups"),
            ("allowedGroups = [\"a b\"]", "allowedGroups"),
            ("allowedUnits = [\"debug-shell\"]", "allowedUnits"),
            ("allowedPorts = \"9000-8000\"", "9000-8000"),
            ("allowedPorts = \"0-10\"", "0-10"),
            ("allowedPorts = \"x\"", "port range"),
            (
                "allowedWritePaths = [\"/etc\"]",
                "allowedWritePaths: /etc can never be writable by a service: it overlaps /etc",
            ),
            (
                "allowedWritePaths = [\"/var\"]",
                "allowedWritePaths: /var can never be writable by a service: it overlaps /var/lib/ferry",
            ),
            (
                "secretsDir = \"/srv/secrets\"\nallowedWritePaths = [\"/srv\"]",
                "it overlaps the agent's secretsDir (/srv/secrets)",
            ),
            (
                "allowedWritePaths = [\"srv\"]",
                "allowedWritePaths: \"srv\": it is not absolute",
            ),
            ("[caddy]\ndomains = [\"http://a\"]", "caddy.domains"),
        ] {
            let e = Config::parse(bad, Path::new("t")).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
    }
}
