//! `ferry-demo`: Ferry's main job, narrated on the real test bed. A developer signs and
//! publishes manifests into a Garage bucket; `ferry-agent` inside a booted systemd host
//! deploys them, updates a service, and follows a rollback made by a plain bucket copy.
//! Run through `scripts/demo.sh`, which installs the bed and builds the binaries first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_s3::primitives::ByteStream;
use ferry_tests::{
    Bed, BedOptions, BindRo, Closures, Host, install_agent_config, workspace_binary,
};
use serde_json::{Value, json};

/// The name the demo host answers to in manifests.
const HOST: &str = "demo-host";
/// Where the agent binary appears inside the host.
const AGENT: &str = "/usr/local/bin/ferry-agent";
/// The port `web` listens on inside the host.
const WEB_PORT: u16 = 8000;

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferry-demo: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nferry-demo: FAILED: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let bins = Binaries::beside_self()?;
    let work = tempfile::tempdir().context("making a work folder for the developer's files")?;

    let closures = step(
        "Building the test service's Nix closures (v1, v2), signed",
        || {
            let c = Closures::get()?;
            say(&format!("v1: {}", c.v1));
            say(&format!("v2: {}", c.v2));
            Ok(c)
        },
    )?;

    let bed = step(
        "Starting the test bed: Garage (S3) and one systemd host in a container",
        || {
            let bed = Bed::start(BedOptions {
                hosts: 1,
                bind_ro: vec![BindRo {
                    source: bins.agent.clone(),
                    target: AGENT.into(),
                }],
                ..Default::default()
            })?;
            say(&format!(
                "bucket s3://{} at {}",
                bed.s3().bucket,
                bed.s3().endpoint
            ));
            say(&format!("host {} at {}", HOST, bed.host(0).ip()));
            Ok(bed)
        },
    )?;
    let demo = Demo {
        bed: &bed,
        bins: &bins,
        closures,
        work: work.path(),
    };

    let t = Instant::now();
    banner("Uploading the signed closures to the bucket's binary cache");
    let files = closures.upload_signed(bed.s3(), "").await?;
    say(&format!("{files} files (NARs, narinfos, nix-cache-info)"));
    done(t);

    step(
        "Configuring the agent on the host (as the NixOS module would)",
        || demo.configure_agent(),
    )?;

    let t = Instant::now();
    banner("Publishing manifest 1: web v1 (HTTP on :8000) and worker v1");
    demo.publish(1, &closures.v1).await?;
    done(t);
    demo.tick_and_show("web", "1.0.0")?;

    let t = Instant::now();
    banner("Publishing manifest 2: web v2 (the previous manifest is archived first)");
    demo.archive(1).await?;
    demo.publish(2, &closures.v2).await?;
    done(t);
    demo.tick_and_show("web", "2.0.0")?;

    let t = Instant::now();
    banner("Rolling back with a plain bucket copy: manifests/… → manifest.json");
    demo.copy_archived_over_live(1).await?;
    say("no Ferry tool involved: any S3 client can do this");
    done(t);
    demo.tick_and_show("web", "1.0.0")?;

    banner("What the host runs now (ferry-agent status)");
    let status = bed.host(0).exec(&[AGENT, "status"])?;
    print!("{}", indent(&status.stdout));

    println!(
        "\nDone in {:.1} s. The bed is torn down now (containers stopped, namespaces removed).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The developer's and the host's binaries, built by `scripts/demo.sh` beside this one.
struct Binaries {
    ferry: PathBuf,
    agent: PathBuf,
}

impl Binaries {
    fn beside_self() -> Result<Binaries> {
        Ok(Binaries {
            ferry: workspace_binary("ferry", "FERRY_BIN")?,
            agent: workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?,
        })
    }
}

struct Demo<'a> {
    bed: &'a Bed,
    bins: &'a Binaries,
    closures: &'a Closures,
    work: &'a Path,
}

impl Demo<'_> {
    fn host(&self) -> &Host {
        self.bed.host(0)
    }

    fn configure_agent(&self) -> Result<()> {
        let key = [self.closures.public_key.clone()];
        install_agent_config(self.host(), self.bed.s3(), HOST, &key, &key, "")?;
        say("/etc/ferry/agent.toml: bucket, trusted closure key, trusted manifest key");
        Ok(())
    }

    /// Writes a manifest naming `web_path` for web, validates and signs it with `ferry`,
    /// and uploads it as `manifest.json`.
    async fn publish(&self, generation: u32, web_path: &str) -> Result<()> {
        let file = self.work.join(format!("manifest-{generation}.json"));
        let manifest = manifest(generation, web_path, &self.closures.v1);
        std::fs::write(&file, serde_json::to_vec_pretty(&manifest)?)
            .with_context(|| format!("writing {}", file.display()))?;
        let file_arg = file.to_string_lossy().into_owned();
        let key = self.closures.secret_key_file.to_string_lossy().into_owned();
        self.ferry(&["validate", &file_arg])?;
        self.ferry(&["sign", &file_arg, "--key-file", &key])?;
        let signed = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        self.put("manifest.json", signed).await?;
        say("uploaded manifest.json (signed)");
        Ok(())
    }

    /// Copies the live manifest to `manifests/manifest-<generation>.json`.
    async fn archive(&self, generation: u32) -> Result<()> {
        let key = ferry_schema_archive_key(generation);
        let s3 = self.bed.s3();
        s3.client()
            .copy_object()
            .bucket(&s3.bucket)
            .copy_source(format!("{}/manifest.json", s3.bucket))
            .key(&key)
            .send()
            .await
            .with_context(|| format!("archiving manifest.json to {key}"))?;
        say(&format!("archived the live manifest as {key}"));
        Ok(())
    }

    async fn copy_archived_over_live(&self, generation: u32) -> Result<()> {
        let key = ferry_schema_archive_key(generation);
        let s3 = self.bed.s3();
        s3.client()
            .copy_object()
            .bucket(&s3.bucket)
            .copy_source(format!("{}/{key}", s3.bucket))
            .key("manifest.json")
            .send()
            .await
            .with_context(|| format!("copying {key} over manifest.json"))?;
        say(&format!("copied {key} over manifest.json"));
        Ok(())
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let s3 = self.bed.s3();
        s3.client()
            .put_object()
            .bucket(&s3.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("uploading {key}"))?;
        Ok(())
    }

    fn ferry(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.bins.ferry)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bins.ferry.display()))?;
        say(&format!("$ ferry {}", args.join(" ")));
        print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
        print!("{}", indent(&String::from_utf8_lossy(&out.stderr)));
        if !out.status.success() {
            bail!("ferry {} failed ({})", args.join(" "), out.status);
        }
        Ok(())
    }

    /// Runs one agent tick on the host (what its systemd timer does), then asks the service
    /// for its version.
    fn tick_and_show(&self, service: &str, expected_version: &str) -> Result<()> {
        let t = Instant::now();
        banner("On the host: ferry-agent reconcile (one tick, as the timer runs it)");
        let out = self.host().exec(&[AGENT, "reconcile"])?;
        print!("{}", indent(&out.stdout));
        print!("{}", indent(&out.stderr));
        if out.status != 0 {
            bail!("ferry-agent reconcile exited {}", out.status);
        }
        let version = self
            .host()
            .sh_ok(&format!("curl -sf http://127.0.0.1:{WEB_PORT}/version"))?;
        let version = version.trim();
        say(&format!("{service} answers: version {version}"));
        if version != expected_version {
            bail!("{service} should answer {expected_version}, answered {version}");
        }
        done(t);
        Ok(())
    }
}

/// `manifests/manifest-<generation>.json`, the archive name `ferry push` uses.
fn ferry_schema_archive_key(generation: u32) -> String {
    ferry_schema::layout::archive_key(&generation_stamp(generation))
}

fn generation_stamp(generation: u32) -> String {
    format!("2026-01-01T00:00:{generation:02}Z")
}

fn manifest(generation: u32, web_path: &str, worker_path: &str) -> Value {
    json!({
        "version": 1,
        "generation": generation_stamp(generation),
        "services": [
            {
                "name": "web",
                "artifact": {"type": "nix-closure", "storePath": web_path},
                "hosts": [HOST],
                "exec": {"command": "ferry-testsvc"},
                "env": {"PORT": WEB_PORT.to_string()},
                "http": {"domain": "web.demo.test", "path": "/", "internalPort": WEB_PORT},
                "hardening": {"dynamicUser": true},
                "revision": format!("demo-{generation}"),
            },
            {
                "name": "worker",
                "artifact": {"type": "nix-closure", "storePath": worker_path},
                "hosts": [HOST],
                "exec": {"command": "ferry-testsvc"},
                "env": {"PORT": "8100"},
                "hardening": {"dynamicUser": true},
                "revision": "demo-worker",
            },
        ],
    })
}

fn step<T>(title: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    banner(title);
    let value = f()?;
    done(t);
    Ok(value)
}

fn banner(title: &str) {
    println!("\n==> {title}");
}

fn say(line: &str) {
    println!("    {line}");
}

fn done(t: Instant) {
    println!("    ({:.2} s)", t.elapsed().as_secs_f64());
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}
