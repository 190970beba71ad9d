//! The original design's host settings, used as they are written there, on a real bed host:
//! the bucket URL in Nix's S3 store form and the host's existing `/root/.aws/credentials`
//! with a named profile, configured through nix/module.nix and read by the agent running as
//! the module's unit does it (`LoadCredential=`, `ProtectHome=`, its own `HOME`).

use anyhow::{Context as _, Result, ensure};
use ferry_tests::agent_bed::{AGENT, AgentBed, HOST, manifest, service};
use ferry_tests::agent_config::AGENT_CONFIG;
use ferry_tests::module_render::{eval_json, module_agent_toml};
use serde_json::{Value, json};

/// The host's own shared credentials file: the bucket's key only in `[digitalocean]`;
/// `[default]` is a key Garage does not know.
const HOST_CREDENTIALS: &str = "/root/.aws/credentials";

/// `config.systemd.services.ferry-agent` of the module for `options`.
fn module_unit(options: &Value) -> Result<Value> {
    let mut options = options.clone();
    options["enable"] = json!(true);
    eval_json(
        "{ options }: (import ./nix/tests/eval-module.nix { user = builtins.fromJSON options; }).config.systemd.services.ferry-agent",
        &[("options", &options.to_string())],
    )
}

/// One tick inside the host as the module's unit runs it, with the unit's credential,
/// home and cache settings (the rest of its sandbox assumes a nix-daemon, which the Debian
/// host does not run). Returns (exit status, output).
fn tick_as_the_module_unit(t: &AgentBed, options: &Value) -> Result<(i32, String)> {
    let unit = module_unit(options)?;
    let service = &unit["serviceConfig"];
    ensure!(service["ProtectHome"] == json!(true), "{service}");
    let mut argv: Vec<String> = [
        "systemd-run",
        "--unit=ferry-agent",
        "--wait",
        "--pipe",
        "--collect",
        "--quiet",
    ]
    .map(str::to_owned)
    .to_vec();
    for load in service["LoadCredential"]
        .as_array()
        .context("no LoadCredential=")?
    {
        argv.push(format!(
            "--property=LoadCredential={}",
            load.as_str().context("LoadCredential= not a string")?
        ));
    }
    argv.push("--property=ProtectHome=yes".into());
    argv.push(format!(
        "--property=CacheDirectory={}",
        service["CacheDirectory"]
            .as_str()
            .context("no CacheDirectory=")?
    ));
    argv.push(format!(
        "--setenv=HOME={}",
        unit["environment"]["HOME"]
            .as_str()
            .context("no HOME in the unit's environment")?
    ));
    argv.extend(
        [AGENT, "--config", AGENT_CONFIG, "reconcile"]
            .map(str::to_owned)
            .to_vec(),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = t.host().exec(&argv)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    eprintln!(
        "--- tick as ferry-agent.service (exit {})\n{text}",
        out.status
    );
    Ok((out.status, text))
}

/// Installs agent.toml as the module renders it for `options`.
fn install(t: &AgentBed, options: &Value) -> Result<()> {
    let text = module_agent_toml(&{
        let mut o = options.clone();
        o["enable"] = json!(true);
        o
    })?;
    eprintln!("--- agent.toml\n{text}");
    t.host().put_bytes(AGENT_CONFIG, text.as_bytes(), 0o644)
}

#[tokio::test]
async fn design_url_and_host_credentials_profile_reach_the_agent() -> Result<()> {
    let t = AgentBed::start().await?;
    let s3 = t.bed.s3();
    let host_port = s3
        .endpoint
        .strip_prefix("http://")
        .context("the bed's endpoint is http://")?;
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
    let common = json!({
        "hostName": HOST,
        "trustedKeys": [t.closures.public_key],
        "credentialsFile": HOST_CREDENTIALS,
        "caddy": {"enable": true},
        "settings": {"nixBin": "/usr/bin/nix", "timeouts": {"settleSec": 1}},
    });

    // 1. The design's URL as it is (the bed's Garage for nyc3.digitaloceanspaces.com, over
    //    http), its profile read from the host's credentials file.
    let mut design = common.clone();
    design["bucket"] = json!(format!(
        "s3://{}?profile=digitalocean&scheme=http&endpoint={host_port}&region={}",
        s3.bucket, s3.region
    ));
    install(&t, &design)?;
    t.publish(&manifest(1, vec![service("web", &t.closures.v1, 8301)]))
        .await?;
    let (status, out) = tick_as_the_module_unit(&t, &design)?;
    ensure!(status == 0, "tick with the design's URL failed: {out}");
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
    install(&t, &typed)?;
    t.publish(&manifest(2, vec![service("web", &t.closures.v2, 8301)]))
        .await?;
    let (status, out) = tick_as_the_module_unit(&t, &typed)?;
    ensure!(status == 0, "tick with credentialsProfile failed: {out}");
    ensure!(t.get(8301, "/version")?.trim() == "2.0.0");

    // Without the profile the agent gets `[default]`, which Garage refuses: the profile is
    // what made the ticks above work.
    let mut no_profile = typed.clone();
    no_profile["credentialsProfile"] = Value::Null;
    install(&t, &no_profile)?;
    t.publish(&manifest(3, vec![service("web", &t.closures.v1, 8301)]))
        .await?;
    let (status, out) = tick_as_the_module_unit(&t, &no_profile)?;
    ensure!(
        status == 3 && out.contains("No such key: GK000000000000000000000000"),
        "expected Garage to refuse the [default] key (exit 3): {out}"
    );
    ensure!(t.get(8301, "/version")?.trim() == "2.0.0");
    Ok(())
}
