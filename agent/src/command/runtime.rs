//! What the verbs share: a small tokio runtime and the backends built from the configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_agent::apply::{ApplySettings, Backends};
use ferry_agent::backend::configured_bucket::ConfiguredBucket;
use ferry_agent::backend::probe::NetProbe;
use ferry_agent::backend::status_store::StatusBucket;
use ferry_agent::backend::store::NixCli;
use ferry_agent::backend::system::{NixosSystem, SYSTEM_PROFILE};
use ferry_agent::backend::systemd::DbusSystemd;
use ferry_agent::backend::units::UnitDir;
use ferry_agent::config::Config;
use ferry_agent::host_facts::FactSources;
use ferry_agent::policy::HostPolicy;
use ferry_agent::policy::identity::IdentityRules;
use ferry_agent::tick::report::Reporting;
use ferry_agent::verify::Trust;
use ferry_bucket::BucketUrl;
use ferry_schema::PublicKey;

/// A single-threaded runtime: a tick is mostly waiting, and a small RSS matters on small hosts.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The configured bucket.
pub async fn bucket(config: &Config) -> anyhow::Result<ConfiguredBucket> {
    let url = config.bucket.as_deref().context(
        "no bucket configured: set bucket = \"s3://BUCKET?endpoint=HOST&region=…&profile=…\" (Nix's S3 store URL) or \"file:///DIR\" in agent.toml",
    )?;
    let url = BucketUrl::parse(url).context("bucket in agent.toml")?;
    Ok(ConfiguredBucket::open(&url, config).await)
}

/// The nix CLI store.
pub fn store(config: &Config) -> NixCli {
    NixCli {
        nix: config.nix_bin.clone(),
        trusted_keys: config.trusted_keys.clone(),
        pull_timeout: Duration::from_secs(config.timeouts.pull_sec),
        command_timeout: Duration::from_secs(config.timeouts.job_sec),
    }
}

/// systemd over the configured bus.
pub async fn systemd(config: &Config) -> anyhow::Result<DbusSystemd> {
    Ok(DbusSystemd::connect(
        config.bus_address.as_deref(),
        Duration::from_secs(config.timeouts.job_sec),
    )
    .await?)
}

/// The host policy from the configuration.
pub fn host_policy(config: &Config) -> anyhow::Result<HostPolicy> {
    Ok(HostPolicy {
        host: config
            .effective_host_name()
            .context("reading this machine's hostname (set hostName in agent.toml)")?,
        secrets_dir: config.secrets_dir.clone(),
        identity: IdentityRules {
            allow_root: config.allow_root,
            users: config.allowed_users.iter().cloned().collect(),
            groups: config.allowed_groups.iter().cloned().collect(),
        },
        allowed_units: config.allowed_units.iter().cloned().collect(),
        domains: config.caddy.domains.clone(),
        ports: config.allowed_ports,
        write_prefixes: config.allowed_write_paths.clone(),
        own_dirs: config.own_dirs(),
    })
}

/// Whose manifests this host applies.
pub fn trust(config: &Config) -> Trust {
    Trust {
        manifest_keys: config.manifest_keys.clone(),
        allow_unsigned: config.allow_unsigned_manifests,
        rollback_by_copy: config.rollback_by_copy,
    }
}

/// Where the host facts the policy needs are read.
pub fn fact_sources(config: &Config) -> FactSources {
    FactSources::host(
        &config.unit_dir,
        config.allow_root,
        config.allowed_users.iter().cloned().collect(),
    )
}

/// The unit directory.
pub fn units(config: &Config) -> UnitDir {
    UnitDir {
        dir: config.unit_dir.clone(),
    }
}

/// All backends.
pub async fn backends(
    config: &Config,
) -> anyhow::Result<Backends<ConfiguredBucket, NixCli, DbusSystemd, UnitDir>> {
    Ok(Backends {
        bucket: Arc::new(bucket(config).await?),
        store: store(config),
        systemd: systemd(config).await?,
        units: units(config),
        probe: NetProbe,
    })
}

/// The host's NixOS system for the system step; `None` unless agent.toml's `system.enable`.
pub fn system_host(config: &Config, systemd: &DbusSystemd) -> Option<NixosSystem> {
    config.system.enable.then(|| NixosSystem {
        systemd: systemd.clone(),
        nix_env: store(config).nix_env(),
        profile: SYSTEM_PROFILE.into(),
        switch_timeout: Duration::from_secs(config.system.switch_timeout_sec),
        command_timeout: Duration::from_secs(config.timeouts.job_sec),
    })
}

/// The report step's settings from `[status]`; `None` without a status store. Makes no
/// request.
pub async fn reporting(config: &Config) -> anyhow::Result<Option<Reporting<StatusBucket>>> {
    let Some(text) = &config.status.bucket else {
        return Ok(None);
    };
    let url = BucketUrl::parse(text).context("status.bucket in agent.toml")?;
    let timeout = Duration::from_secs(config.timeouts.fetch_sec);
    Ok(Some(Reporting {
        store: StatusBucket::open(&url, &config.status, timeout).await,
        every_sec: config.status.every_sec,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

/// Apply settings from the configuration.
pub fn apply_settings(config: &Config) -> anyhow::Result<ApplySettings> {
    let trusted_keys = config
        .trusted_keys
        .iter()
        .map(|k| PublicKey::parse(k).with_context(|| format!("trustedKeys entry {k:?}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(ApplySettings {
        profile_dir: config.profile_dir.clone(),
        generations_to_keep: config.generations_to_keep,
        removed_profile_retention_days: config.removed_profile_retention_days,
        settle: Duration::from_secs(config.timeouts.settle_sec),
        trusted_keys,
        deadline: None,
    })
}
