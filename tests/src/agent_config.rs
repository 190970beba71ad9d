//! The agent's configuration on a bed host: `/etc/ferry/agent.toml` pointing at the bed's
//! Garage, written exactly as the NixOS module writes it (nix/module.nix evaluated by the
//! real Nix, see [`crate::module_render`]), and the S3 shared-credentials file it names
//! (0600, like a real secret).

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::host::Host;
use crate::module_render::module_agent_toml;
use crate::s3::S3;

/// Where the agent reads its configuration (its default path, and where the module puts it).
pub const AGENT_CONFIG: &str = "/etc/ferry/agent.toml";
/// Where the credentials file goes inside the host.
pub const CREDENTIALS: &str = "/etc/ferry/credentials";
/// The bed's hosts have Debian's Nix, not a NixOS `nix.package`.
const NIX_BIN: &str = "/usr/bin/nix";

/// Writes agent.toml and the credentials file into `host`. `extra` is TOML for the module's
/// freeform `settings` (for example `[timeouts]\nsettleSec = 1\n`, or a table the module
/// has no typed option for); it wins over everything else, key by key.
pub fn install_agent_config(
    host: &Host,
    s3: &S3,
    host_name: &str,
    trusted_keys: &[String],
    manifest_keys: &[String],
    extra: &str,
) -> Result<()> {
    let options = module_options(s3, host_name, trusted_keys, manifest_keys, extra)?;
    let config = module_agent_toml(&options)?;
    let credentials = s3.credentials_text();
    host.put_bytes(AGENT_CONFIG, config.as_bytes(), 0o644)?;
    host.put_bytes(CREDENTIALS, credentials.as_bytes(), 0o600)?;
    Ok(())
}

/// The `services.ferry-agent` options for a host whose agent runs from the module's own
/// unit ([`crate::module_unit`]): like [`module_options`], but the credentials go in through
/// `credentialsFile` (the unit's `LoadCredential=`) as on NixOS, and the timer ticks every
/// `interval` without random delay.
pub fn module_unit_options(
    s3: &S3,
    host_name: &str,
    trusted_keys: &[String],
    manifest_keys: &[String],
    extra: &str,
    interval: std::time::Duration,
) -> Result<Value> {
    let mut options = module_options(s3, host_name, trusted_keys, manifest_keys, extra)?;
    if let Some(settings) = options["settings"].as_object_mut() {
        settings.remove("credentials");
    }
    options["credentialsFile"] = json!(CREDENTIALS);
    options["interval"] = json!(format!("{}s", interval.as_secs().max(1)));
    options["randomizedDelay"] = json!("0");
    Ok(options)
}

/// Writes the agent.toml the module renders for `options` and the credentials file (where
/// its `credentialsFile` says) into `host`.
pub fn install_module_agent_config(host: &Host, s3: &S3, options: &Value) -> Result<()> {
    let config = module_agent_toml(options)?;
    let credentials = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        s3.access_key, s3.secret_key
    );
    let file = options["credentialsFile"].as_str().unwrap_or(CREDENTIALS);
    host.put_bytes(AGENT_CONFIG, config.as_bytes(), 0o644)?;
    host.put_bytes(file, credentials.as_bytes(), 0o600)?;
    Ok(())
}

/// The `services.ferry-agent` options a NixOS user would write for this bed host (a host
/// with the module's Caddy).
pub fn module_options(
    s3: &S3,
    host_name: &str,
    trusted_keys: &[String],
    manifest_keys: &[String],
    extra: &str,
) -> Result<Value> {
    let extra: toml::Table = toml::from_str(extra)
        .with_context(|| format!("the bed's extra agent settings are not TOML:\n{extra}"))?;
    let extra = serde_json::to_value(extra).context("converting the extra agent settings")?;
    // Run by hand (not from the module's unit) the agent has no LoadCredential= directory:
    // the file's path goes in through the freeform settings (credentialsFile would point
    // agent.toml at /run/credentials/…). module_unit_options switches to credentialsFile.
    let mut settings = json!({
        "nixBin": NIX_BIN,
        "credentials": { "file": CREDENTIALS },
    });
    merge(&mut settings, extra)?;
    Ok(json!({
        "bucket": s3.bucket,
        "endpoint": s3.endpoint,
        "region": s3.region,
        "hostName": host_name,
        "trustedKeys": trusted_keys,
        "manifestKeys": manifest_keys,
        // Bed hosts run Caddy with its admin API on the module's unix socket.
        "caddy": { "enable": true },
        "settings": settings,
    }))
}

/// `right` into `left`, table by table, as the module merges `settings`; anything else in
/// `right` replaces what `left` had.
fn merge(left: &mut Value, right: Value) -> Result<()> {
    let (Value::Object(l), Value::Object(r)) = (&mut *left, right) else {
        bail!("agent settings must be a table");
    };
    for (key, value) in r {
        match l.get_mut(&key) {
            Some(existing @ Value::Object(_)) if value.is_object() => merge(existing, value)?,
            _ => {
                l.insert(key, value);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> S3 {
        S3 {
            endpoint: "http://10.0.0.1:3900".into(),
            region: "garage".into(),
            bucket: "ferry".into(),
            access_key: "GK1".into(),
            secret_key: "s".into(),
        }
    }

    #[test]
    fn extra_tables_merge_into_the_freeform_settings() -> Result<()> {
        let options = module_options(
            &s3(),
            "h1",
            &["k:1".into()],
            &[],
            "nixBin = \"/opt/nix\"\n[credentials]\nprofile = \"p\"\n[caddy]\nadmin = \"x\"\n",
        )?;
        assert_eq!(
            options["settings"],
            json!({
                "nixBin": "/opt/nix",
                "credentials": {"file": CREDENTIALS, "profile": "p"},
                "caddy": {"admin": "x"},
            })
        );
        assert_eq!(options["bucket"], "ferry");
        assert_eq!(options["trustedKeys"], json!(["k:1"]));
        assert!(module_options(&s3(), "h", &[], &[], "[broken").is_err());
        Ok(())
    }
}
