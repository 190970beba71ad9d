//! The agent's configuration on a bed host: `/etc/ferry/agent.toml` pointing at the bed's
//! Garage, and the S3 shared-credentials file it names (0600, like a real secret).

use anyhow::Result;

use crate::host::Host;
use crate::s3::S3;

/// Where the agent reads its configuration (its default path).
pub const AGENT_CONFIG: &str = "/etc/ferry/agent.toml";
/// Where the credentials file goes inside the host.
pub const CREDENTIALS: &str = "/etc/ferry/credentials";

/// Writes agent.toml and the credentials file into `host`. `extra` is appended TOML
/// (tables such as `[timeouts]` must come last, so it goes after `[credentials]`).
pub fn install_agent_config(
    host: &Host,
    s3: &S3,
    host_name: &str,
    trusted_keys: &[String],
    manifest_keys: &[String],
    extra: &str,
) -> Result<()> {
    // JSON strings and arrays of plain ASCII are valid TOML, and quote safely.
    let config = format!(
        "hostName = {}\nbucket = {}\ntrustedKeys = {}\nmanifestKeys = {}\nnixBin = \"/usr/bin/nix\"\n\
         [credentials]\nfile = \"{CREDENTIALS}\"\n{extra}",
        serde_json::to_string(host_name)?,
        serde_json::to_string(&format!(
            "s3://{}?endpoint={}&region={}",
            s3.bucket, s3.endpoint, s3.region
        ))?,
        serde_json::to_string(trusted_keys)?,
        serde_json::to_string(manifest_keys)?,
    );
    let credentials = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        s3.access_key, s3.secret_key
    );
    host.put_bytes(AGENT_CONFIG, config.as_bytes(), 0o644)?;
    host.put_bytes(CREDENTIALS, credentials.as_bytes(), 0o600)?;
    Ok(())
}
