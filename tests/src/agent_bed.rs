//! A bed with one host running `ferry-agent` inside it against the bed's Garage, with the
//! signed test closures uploaded and an agent.toml installed that trusts the test key for
//! closures and manifests alike (as the README's one-key set-up does); plus the manifest
//! builders, the manifest signer and the output readers the agent's tests share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::{Value, json};

use crate::{Bed, BedOptions, BindRo, Closures, Host, Output, TickSummary, install_agent_config};

/// The name the manifests use for the bed host.
pub const HOST: &str = "bedhost";
/// Where the agent binary appears inside the host.
pub const AGENT: &str = "/usr/local/bin/ferry-agent";

/// Builds the agent (so a test never runs a stale binary) and returns its path;
/// `FERRY_AGENT_BIN` names a prebuilt one instead (e.g. a release build for measurements).
pub fn agent_binary() -> Result<PathBuf> {
    crate::binaries::built_binary("ferry-agent", "FERRY_AGENT_BIN")
}

/// A bed with one host and `agent` bound read-only into it at [`AGENT`] (tests and the
/// benchmarks that run a real agent).
pub fn bed_with_agent(agent: PathBuf) -> Result<Bed> {
    Bed::start(BedOptions {
        hosts: 1,
        bind_ro: vec![BindRo {
            source: agent,
            target: AGENT.into(),
        }],
        ..Default::default()
    })
}

/// A bed with one host, the agent bound into it, the signed cache in the bucket, and an
/// agent.toml pointing at Garage.
pub struct AgentBed {
    /// The bed (Garage and the host).
    pub bed: Bed,
    /// The test closures.
    pub closures: &'static Closures,
    /// TOML appended to every agent.toml this bed writes (tables last).
    pub extra_config: String,
}

impl AgentBed {
    /// Starts the bed with `[timeouts] settleSec = 1`.
    pub async fn start() -> Result<Self> {
        Self::start_with("[timeouts]\nsettleSec = 1\n").await
    }

    /// Starts the bed; `extra_config` is appended to agent.toml.
    pub async fn start_with(extra_config: &str) -> Result<Self> {
        let closures = Closures::get()?;
        let bed = bed_with_agent(agent_binary()?)?;
        closures.upload_signed(bed.s3(), "").await?;
        let this = Self {
            bed,
            closures,
            extra_config: extra_config.to_owned(),
        };
        this.write_config(
            &closures.public_key,
            std::slice::from_ref(&closures.public_key),
        )?;
        Ok(this)
    }

    /// The host.
    pub fn host(&self) -> &Host {
        self.bed.host(0)
    }

    /// Writes agent.toml trusting `trusted_key` for closures and `manifest_keys`.
    pub fn write_config(&self, trusted_key: &str, manifest_keys: &[String]) -> Result<()> {
        install_agent_config(
            self.host(),
            self.bed.s3(),
            HOST,
            &[trusted_key.to_owned()],
            manifest_keys,
            &self.extra_config,
        )
    }

    /// Writes agent.toml trusting the test key for closures and manifests, with `extra` (TOML
    /// for the module's freeform settings, e.g. `allowedUsers = ["app"]`) merged over the
    /// bed's own extra settings, table by table.
    pub fn configure(&self, extra: &str) -> Result<()> {
        let mut merged: toml::Table = toml::from_str(&self.extra_config)
            .context("the bed's extra agent settings are not TOML")?;
        let more: toml::Table = toml::from_str(extra)
            .with_context(|| format!("extra settings are not TOML: {extra}"))?;
        for (key, value) in more {
            match (merged.get_mut(&key), value) {
                (Some(toml::Value::Table(old)), toml::Value::Table(new)) => old.extend(new),
                (_, value) => {
                    merged.insert(key, value);
                }
            }
        }
        let key = self.closures.public_key.clone();
        install_agent_config(
            self.host(),
            self.bed.s3(),
            HOST,
            std::slice::from_ref(&key),
            std::slice::from_ref(&key),
            &toml::to_string(&merged)?,
        )
    }

    /// Writes agent.toml like [`AgentBed::configure`] (the test key for closures and
    /// manifests) but with the bucket's S3 endpoint replaced by `endpoint` (e.g. a hostile
    /// server standing in for the bucket).
    pub fn write_config_with_endpoint(&self, endpoint: &str) -> Result<()> {
        let s3 = crate::S3 {
            endpoint: endpoint.to_owned(),
            ..self.bed.s3().clone()
        };
        let key = std::slice::from_ref(&self.closures.public_key);
        install_agent_config(self.host(), &s3, HOST, key, key, &self.extra_config)
    }

    /// From now on the agent runs from the NixOS module's own unit
    /// ([`crate::module_unit`]): agent.toml and the units as the module renders them (the
    /// credentials through `LoadCredential=`), a timer far enough apart (an hour) that only
    /// [`AgentBed::tick_in_unit`] ticks. Returns the module options used.
    pub fn use_module_unit(&self) -> Result<Value> {
        let options = self.module_unit_options()?;
        self.use_module_unit_with(&options)?;
        Ok(options)
    }

    /// The `services.ferry-agent` options [`AgentBed::use_module_unit`] uses, to change
    /// before [`AgentBed::use_module_unit_with`].
    pub fn module_unit_options(&self) -> Result<Value> {
        let key = std::slice::from_ref(&self.closures.public_key);
        crate::agent_config::module_unit_options(
            self.bed.s3(),
            HOST,
            key,
            key,
            &self.extra_config,
            Duration::from_secs(3600),
        )
    }

    /// [`AgentBed::use_module_unit`] with these options (the credentials file is written
    /// where `credentialsFile` says).
    pub fn use_module_unit_with(&self, options: &Value) -> Result<()> {
        crate::agent_config::install_module_agent_config(self.host(), self.bed.s3(), options)?;
        crate::module_unit::install(self.host(), options)?;
        // Installing restarted Caddy, whose start hook queues a tick: let it finish.
        self.wait_unit_idle()
    }

    fn wait_unit_idle(&self) -> Result<()> {
        eventually("ferry-agent.service idle", Duration::from_secs(300), || {
            let state = self.show("ferry-agent.service", "ActiveState")?;
            Ok(state != "activating")
        })
    }

    /// One tick in the module's unit (`systemctl start`, which waits for a oneshot): the
    /// unit's exit status and what the tick printed (its journal).
    pub fn tick_in_unit(&self) -> Result<Output> {
        self.wait_unit_idle()?;
        let cursor = self.host().sh_ok(
            "journalctl -q -n 0 --show-cursor -u ferry-agent.service | sed -n 's/^-- cursor: //p'",
        )?;
        let started = self.host().sh("systemctl start ferry-agent.service")?;
        let status = self
            .show("ferry-agent.service", "ExecMainStatus")?
            .parse()
            .unwrap_or(-1);
        let after = if cursor.trim().is_empty() {
            String::new()
        } else {
            format!("--after-cursor='{}'", cursor.trim())
        };
        let journal = self.host().sh_ok(&format!(
            "journalctl -q -o cat --no-pager -u ferry-agent.service {after}"
        ))?;
        eprintln!(
            "--- tick in ferry-agent.service (exit {status})\n{journal}{}",
            started.stderr
        );
        Ok(Output {
            status,
            stdout: journal,
            stderr: started.stderr,
        })
    }

    /// Publishes `manifest` as the bucket's manifest.json, signed with the test key (as
    /// `ferry publish` would). A document that is not a well-typed manifest (a test of the
    /// schema's refusals) cannot be signed and goes up as it is.
    pub async fn publish(&self, manifest: &Value) -> Result<()> {
        let signed = sign(manifest, &self.closures.secret_key_file)?;
        self.publish_bytes(serde_json::to_vec_pretty(&signed)?)
            .await
    }

    /// Publishes `manifest` as it is, without a signature (what anyone who can write to the
    /// bucket can do).
    pub async fn publish_unsigned(&self, manifest: &Value) -> Result<()> {
        self.publish_bytes(serde_json::to_vec_pretty(manifest)?)
            .await
    }

    /// Publishes raw bytes as manifest.json.
    pub async fn publish_bytes(&self, bytes: Vec<u8>) -> Result<()> {
        let s3 = self.bed.s3();
        s3.client()
            .put_object()
            .bucket(&s3.bucket)
            .key("manifest.json")
            .body(ByteStream::from(bytes))
            .send()
            .await?;
        Ok(())
    }

    /// One `ferry-agent reconcile` inside the host; its output is echoed to stderr.
    pub fn reconcile(&self) -> Result<Output> {
        let out = self.host().exec(&[AGENT, "reconcile"])?;
        eprintln!(
            "--- reconcile (exit {})\n{}{}",
            out.status, out.stdout, out.stderr
        );
        if out.status != 0 {
            self.print_service_journal();
        }
        Ok(out)
    }

    /// Print what the services' units (not the agent's) logged lately, so a failed tick
    /// in CI says why a unit failed, not only that it did.
    pub fn print_service_journal(&self) {
        let journal = self.host().sh(
            "journalctl -q --no-pager -o short-monotonic -n 80 -u 'ferry-*' | grep -v ' ferry-agent\\['",
        );
        match journal {
            Ok(j) => eprintln!("--- the services' journal\n{}{}", j.stdout, j.stderr),
            Err(e) => eprintln!("--- the services' journal could not be read: {e:#}"),
        }
    }

    /// `systemctl show -p P --value UNIT` inside the host.
    pub fn show(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .host()
            .sh_ok(&format!("systemctl show -p {prop} --value {unit}"))?
            .trim()
            .to_owned())
    }

    /// GET 127.0.0.1:port/path inside the host.
    pub fn get(&self, port: u16, path: &str) -> Result<String> {
        self.host()
            .sh_ok(&format!("curl -sf http://127.0.0.1:{port}{path}"))
    }

    /// The agent's state file, parsed.
    pub fn state(&self) -> Result<Value> {
        let text = self.host().sh_ok("cat /var/lib/ferry/state.json")?;
        serde_json::from_str(&text).context("state.json is not JSON")
    }

    /// Every `ferry-*.service` file in /run/systemd/system with its text.
    pub fn unit_files(&self) -> Result<String> {
        self.host()
            .sh_ok("cd /run/systemd/system && for f in ferry-*.service; do [ -e \"$f\" ] && echo \"== $f\" && cat \"$f\"; done; true")
    }

    /// The `@id`s of srv0's routes in the host's Caddy, in order (`-` for routes without
    /// one).
    pub fn caddy_route_ids(&self) -> Result<Vec<String>> {
        let (status, body) =
            self.host()
                .caddy_admin("GET", "/config/apps/http/servers/srv0/routes", None)?;
        if status != 200 {
            bail!("GET srv0 routes answered {status}: {body}");
        }
        Ok(route_ids(&serde_json::from_str(&body)?))
    }
}

/// The `@id`s of a Caddy routes array, in order (`-` for routes without one).
pub fn route_ids(routes: &Value) -> Vec<String> {
    routes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["@id"].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `manifest` signed with the secret key in `key_file` (any signature it had is replaced);
/// returned unchanged when it is not a well-typed manifest.
pub fn sign(manifest: &Value, key_file: &std::path::Path) -> Result<Value> {
    let Ok(mut typed) = serde_json::from_value::<ferry_schema::Manifest>(manifest.clone()) else {
        return Ok(manifest.clone());
    };
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading the signing key {}", key_file.display()))?;
    let key = ferry_schema::SecretKey::parse(&text).context("parsing the signing key")?;
    typed.signatures = None;
    ferry_schema::sign_manifest(&mut typed, &key).context("signing the manifest")?;
    Ok(serde_json::to_value(typed)?)
}

/// A test-service entry for the bed host listening on `port`.
pub fn service(name: &str, store_path: &str, port: u16) -> Value {
    json!({
        "name": name,
        "artifact": {"type": "nix-closure", "storePath": store_path},
        "hosts": [HOST],
        "exec": {"command": "ferry-testsvc"},
        "env": {"PORT": port.to_string()},
    })
}

/// A manifest with a generation that grows with `generation`.
pub fn manifest(generation: u32, services: Vec<Value>) -> Value {
    json!({
        "version": 1,
        "generation": format!("2025-01-01T00:{:02}:{:02}Z", generation / 60, generation % 60),
        "services": services,
    })
}

/// The `tick:` summary line of a reconcile, parsed (see [`TickSummary`]).
pub fn summary(out: &Output) -> Result<TickSummary> {
    TickSummary::of(out)
}

/// Poll until `f` is true or the deadline passes.
pub fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not true after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
