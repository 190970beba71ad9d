//! The original design's host settings, used as they are written there, on a real bed host:
//! the bucket URL in Nix's S3 store form and the host's existing `/root/.aws/credentials`
//! with a named profile, configured through nix/module.nix and read by the agent running in
//! the module's own unit (`LoadCredential=`, `ProtectHome=`, its own `HOME`: see
//! `ferry_tests::module_unit`).

use anyhow::{Context as _, Result, ensure};
use ferry_tests::agent_bed::{AGENT, AgentBed, manifest, service};
use ferry_tests::agent_config::AGENT_CONFIG;
use serde_json::{Value, json};

/// The host's own shared credentials file: the bucket's key only in `[digitalocean]`;
/// `[default]` is a key Garage does not know.
const HOST_CREDENTIALS: &str = "/root/.aws/credentials";

/// Runs the agent from the module's unit configured with `options`, then puts the host's
/// own credentials file in place (installing writes a working `[default]` there).
fn configure(t: &AgentBed, options: &Value) -> Result<()> {
    ensure!(
        options["credentialsFile"] == json!(HOST_CREDENTIALS),
        "{options}"
    );
    t.use_module_unit_with(options)?;
    let s3 = t.bed.s3();
    t.host().put_bytes(
        HOST_CREDENTIALS,
        format!(
            "[default]\naws_access_key_id = GK000000000000000000000000\naws_secret_access_key = {}\n\n\
             [digitalocean]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            "0".repeat(64),
            s3.access_key,
            s3.secret_key
        )
        .as_bytes(),
        0o600,
    )?;
    ensure!(
        t.show("ferry-agent.service", "ProtectHome")? == "yes",
        "the module's unit does not hide /root"
    );
    Ok(())
}

#[tokio::test]
async fn design_url_and_host_credentials_profile_reach_the_agent() -> Result<()> {
    let t = AgentBed::start().await?;
    let s3 = t.bed.s3().clone();
    let host_port = s3
        .endpoint
        .strip_prefix("http://")
        .context("the bed's endpoint is http://")?;
    let mut common = t.module_unit_options()?;
    common["credentialsFile"] = json!(HOST_CREDENTIALS);
    for key in ["bucket", "endpoint", "region"] {
        common
            .as_object_mut()
            .context("options are an object")?
            .remove(key);
    }

    // 1. The design's URL as it is (the bed's Garage for nyc3.digitaloceanspaces.com, over
    //    http), its profile read from the host's credentials file.
    let mut design = common.clone();
    design["bucket"] = json!(format!(
        "s3://{}?profile=digitalocean&scheme=http&endpoint={host_port}&region={}",
        s3.bucket, s3.region
    ));
    configure(&t, &design)?;
    t.publish(&manifest(1, vec![service("web", &t.closures.v1, 8301)]))
        .await?;
    let out = t.tick_in_unit()?;
    ensure!(
        out.status == 0,
        "tick with the design's URL failed: {}",
        out.stdout
    );
    ensure!(t.get(8301, "/version")?.trim() == "1.0.0");
    let understood = t
        .host()
        .sh_ok(&format!("{AGENT} --config {AGENT_CONFIG} config --json"))?;
    let understood: Value = serde_json::from_str(&understood)?;
    assert_eq!(
        understood["bucket"],
        format!(
            "s3://{}?endpoint=http://{host_port}&region={}&profile=digitalocean",
            s3.bucket, s3.region
        )
    );

    // 2. The module's typed options, the profile named by credentialsProfile.
    let mut typed = common.clone();
    typed["bucket"] = json!(s3.bucket);
    typed["region"] = json!(s3.region);
    typed["endpoint"] = json!(s3.endpoint);
    typed["credentialsProfile"] = json!("digitalocean");
    configure(&t, &typed)?;
    t.publish(&manifest(2, vec![service("web", &t.closures.v2, 8301)]))
        .await?;
    let out = t.tick_in_unit()?;
    ensure!(
        out.status == 0,
        "tick with credentialsProfile failed: {}",
        out.stdout
    );
    ensure!(t.get(8301, "/version")?.trim() == "2.0.0");

    // Without the profile the agent gets `[default]`, which Garage refuses: the profile is
    // what made the ticks above work.
    let mut no_profile = typed.clone();
    no_profile
        .as_object_mut()
        .context("options are an object")?
        .remove("credentialsProfile");
    configure(&t, &no_profile)?;
    t.publish(&manifest(3, vec![service("web", &t.closures.v1, 8301)]))
        .await?;
    let out = t.tick_in_unit()?;
    ensure!(
        out.status == 3 && out.stdout.contains("GK000000000000000000000000"),
        "expected Garage to refuse the [default] key (exit 3): {}",
        out.stdout
    );
    ensure!(t.get(8301, "/version")?.trim() == "2.0.0");
    Ok(())
}
