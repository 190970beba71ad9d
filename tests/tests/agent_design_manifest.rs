//! The original design's example manifest (`schema/tests/fixtures/example.json`), with its
//! store path replaced by a real closure, deployed on a bed host set up as the design says:
//! its secrets in `/var/lib/biz-secrets/`, the accounts `pil-web`/`pil` existing (and
//! allowed for Ferry by one line beside their NixOS declaration, `ferry.allowServices`),
//! and `DATA_DIR=/var/podcastitlater` writable by the service — which asks for it with
//! `hardening.readWritePaths`, under a prefix the host allows in `allowedWritePaths`. The
//! agent runs in the module's own unit (`ferry_tests::module_unit`).
//!
//! The test service writes `$DATA_DIR/ferry-testsvc.written` at start and exits when it
//! cannot, as an app that needs its data directory would.

use anyhow::{Context as _, Result, ensure};
use ferry_tests::agent_bed::{AgentBed, HOST};
use serde_json::{Value, json};

const SERVICE: &str = "podcastitlater-web";
const UNIT: &str = "ferry-podcastitlater-web.service";
const PORT: u16 = 8000;
const DATA_DIR: &str = "/var/podcastitlater";
const WRITTEN: &str = "/var/podcastitlater/ferry-testsvc.written";
const ENV_FILE: &str = "/var/lib/biz-secrets/podcastitlater-web.env";
const SECRET: &str = "biz-secret-0123456789";

/// The design's example manifest as it is, but for the closure (`store_path`, whose program
/// is `ferry-testsvc`), the bed's host name and the generation.
fn example(generation: u32, store_path: &str) -> Result<Value> {
    let mut m: Value =
        serde_json::from_str(include_str!("../../schema/tests/fixtures/example.json"))?;
    m["generation"] = json!(format!("2025-01-15T12:34:{generation:02}Z"));
    let s = &mut m["services"][0];
    ensure!(
        s["name"] == SERVICE && s["env"]["DATA_DIR"] == DATA_DIR,
        "{s}"
    );
    ensure!(
        s["envFile"] == ENV_FILE && s["exec"]["user"] == "pil-web",
        "{s}"
    );
    s["artifact"]["storePath"] = json!(store_path);
    s["exec"]["command"] = json!("ferry-testsvc");
    s["hosts"] = json!([HOST]);
    Ok(m)
}

/// `example` asking to write `paths`.
fn writing(generation: u32, store_path: &str, paths: &[&str]) -> Result<Value> {
    let mut m = example(generation, store_path)?;
    m["services"][0]["hardening"]["readWritePaths"] = json!(paths);
    Ok(m)
}

/// A bed host set up as the design says, its agent in the module's unit.
async fn design_host() -> Result<AgentBed> {
    let t = AgentBed::start().await?;
    // What NixOS makes of the README's `users.users.pil-web`/`users.groups.pil` and
    // `systemd.tmpfiles.rules` lines (the bed host is Debian).
    t.host().sh_ok(&format!(
        "groupadd -g 1300 pil && useradd -u 1200 -g pil -M -d / -s /usr/sbin/nologin pil-web \
         && install -d -m 0750 -o pil-web -g pil {DATA_DIR}"
    ))?;
    let mut options = t.module_unit_options()?;
    options["secretsDir"] = json!("/var/lib/biz-secrets");
    options["allowedWritePaths"] = json!([DATA_DIR]);
    options["allowedUnits"] = json!(["network-online.target", "postgresql.service"]);
    options[ferry_tests::module_render::NIXOS_KEY] = json!({
        "users": {"pil-web": {"group": "pil", "ferry": {"allowServices": true}}},
        "groups": {"pil": {"gid": 1300}},
    });
    t.use_module_unit_with(&options)?;
    // The module's tmpfiles rule made the secrets directory (root, 0700).
    let dir = t.host().sh_ok("stat -c '%U %a' /var/lib/biz-secrets")?;
    ensure!(dir.trim() == "root 700", "secrets directory: {dir}");
    t.host()
        .put_bytes(ENV_FILE, format!("SECRET_KEY={SECRET}\n").as_bytes(), 0o600)?;
    Ok(t)
}

/// The journal of the service's unit.
fn service_journal(t: &AgentBed) -> Result<String> {
    t.host()
        .sh_ok(&format!("journalctl -q -o cat --no-pager -u {UNIT}"))
}

/// Deploys the example writing its data directory and checks it runs as the design says.
async fn deploy_example(t: &AgentBed, generation: u32) -> Result<()> {
    t.publish(&writing(generation, &t.closures.v1, &[DATA_DIR])?)
        .await?;
    let out = t.tick_in_unit()?;
    ensure!(
        out.status == 0,
        "the design's example did not deploy: {}\n{}",
        out.stdout,
        service_journal(t)?
    );
    ensure!(t.get(PORT, "/version")?.trim() == "1.0.0");
    // The secret came from /var/lib/biz-secrets, the user and group are the design's.
    ensure!(t.get(PORT, "/env/SECRET_KEY")? == SECRET);
    ensure!(t.show(UNIT, "User")? == "pil-web" && t.show(UNIT, "Group")? == "pil");
    // It wrote its data directory: the file is there, written by it, as pil-web.
    let written = t
        .host()
        .sh_ok(&format!("stat -c '%U:%G' {WRITTEN} && cat {WRITTEN}"))?;
    let pid = t.show(UNIT, "MainPID")?;
    ensure!(
        written == format!("pil-web:pil\n1.0.0 {pid}\n"),
        "{WRITTEN}: {written:?} (MainPID {pid})"
    );
    Ok(())
}

#[tokio::test]
async fn the_designs_example_manifest_deploys_and_writes_its_data_dir() -> Result<()> {
    let t = design_host().await?;

    // Before: the example as the design writes it. Under ProtectSystem=strict its data
    // directory is read-only, so the service cannot start: it is not deployed.
    t.publish(&example(1, &t.closures.v1)?).await?;
    let out = t.tick_in_unit()?;
    ensure!(out.status == 1, "exit {}: {}", out.status, out.stdout);
    let journal = service_journal(&t)?;
    ensure!(
        journal.contains(&format!("cannot write {WRITTEN}: Read-only file system")),
        "{journal}"
    );
    ensure!(!t.host().path_in_host(WRITTEN).exists());

    // With its data directory in hardening.readWritePaths it deploys and writes there.
    deploy_example(&t, 2).await?;
    let unit = t.host().sh_ok(&format!("cat /run/systemd/system/{UNIT}"))?;
    ensure!(
        unit.contains("\nReadWritePaths=/var/podcastitlater\n")
            && unit.contains("\nSystemCallErrorNumber=EPERM\n"),
        "{unit}"
    );
    ensure!(t.show(UNIT, "ReadWritePaths")? == DATA_DIR);
    // Everything else stays read-only to it.
    ensure!(t.show(UNIT, "ProtectSystem")? == "strict");
    Ok(())
}

#[tokio::test]
async fn a_write_path_outside_the_allowed_prefixes_is_refused_and_nothing_running_changes()
-> Result<()> {
    let t = design_host().await?;
    deploy_example(&t, 1).await?;
    let invocation = t.show(UNIT, "InvocationID")?;
    let unit = t.host().sh_ok(&format!("cat /run/systemd/system/{UNIT}"))?;
    let written = t.host().sh_ok(&format!("cat {WRITTEN}"))?;

    // A signed manifest that would also make /etc and a directory the host never allowed
    // writable, with a new version to carry it in.
    t.publish(&writing(
        2,
        &t.closures.v2,
        &[DATA_DIR, "/etc", "/opt/pil"],
    )?)
    .await?;
    let out = t.tick_in_unit()?;
    ensure!(out.status == 1, "exit {}: {}", out.status, out.stdout);
    let line = out
        .stdout
        .lines()
        .rfind(|l| l.starts_with(&format!("{SERVICE}: ")))
        .context("no line about the service")?;
    ensure!(
        line.contains("REFUSED by host policy")
            && line.contains(
                "hardening.readWritePaths /etc can never be writable by a service: it overlaps /etc"
            )
            && line.contains(
                "hardening.readWritePaths /opt/pil is not under allowedWritePaths in agent.toml \
                 (now: /var/podcastitlater)"
            ),
        "{line}"
    );
    // Nothing that runs changed: same process, same unit, same version, same data.
    ensure!(t.show(UNIT, "InvocationID")? == invocation);
    ensure!(t.host().sh_ok(&format!("cat /run/systemd/system/{UNIT}"))? == unit);
    ensure!(t.get(PORT, "/version")?.trim() == "1.0.0");
    ensure!(t.host().sh_ok(&format!("cat {WRITTEN}"))? == written);
    Ok(())
}
