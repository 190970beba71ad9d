//! Fleet status end to end (issue 16): two bed hosts whose agents report to a status store
//! (a second Garage bucket with its own key, `[status]` in agent.toml), and the developer's
//! real `ferry` following those reports with `push --wait` and `status`. One test, in
//! steps, so the hosts boot once: a good push both hosts answer healthy; a broken version
//! both roll back; a host powered off; the status store's key revoked and restored. Ticks
//! are run by hand (`ferry-agent reconcile` in each host), so every step knows exactly
//! which ticks happened.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use ferry_schema::host_status::manifest_sha256;
use ferry_tests::agent_bed::{AGENT, agent_binary, summary};
use ferry_tests::binaries::built_binary;
use ferry_tests::fleet_dev::{FleetDev, finished, report, tick};
use ferry_tests::{Bed, BedOptions, BindRo, Closures, Host, Output, S3, install_agent_config};
use serde_json::{Value, json};

const HOST_A: &str = "host-a";
const HOST_B: &str = "host-b";
const WEB_PORT: u16 = 8300;
/// Where each host keeps the status store's key.
const STATUS_CREDENTIALS: &str = "/etc/ferry/status-credentials";

/// An object of `s3`'s bucket, `None` when missing.
async fn object(s3: &S3, key: &str) -> Result<Option<Vec<u8>>> {
    match s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(got) => Ok(Some(got.body.collect().await?.into_bytes().to_vec())),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {key}"))),
    }
}

/// The live manifest's bytes once they differ from `before` (a verb published).
async fn next_live(s3: &S3, before: &[u8]) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(now) = object(s3, "manifest.json").await?
            && now != before
        {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("the manifest was not written within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report `host` last wrote to the status store, parsed.
fn web(path: &str) -> Value {
    json!({
        "name": "web",
        "artifact": {"type": "nix-closure", "storePath": path},
        "hosts": [HOST_A, HOST_B],
        "exec": {"command": "ferry-testsvc"},
        "env": {"PORT": WEB_PORT.to_string()},
        "healthCheck": {"type": "http", "path": "/health", "port": WEB_PORT,
                        "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 1, "retries": 2},
        "hardening": {"dynamicUser": true},
    })
}

/// agent.toml for a bed host reporting to `status` every `every_sec`, with the store's key.
fn configure(
    host: &Host,
    name: &str,
    deploy: &S3,
    status: &S3,
    key: &str,
    every_sec: u64,
) -> Result<()> {
    let extra = format!(
        "[timeouts]\nsettleSec = 1\n[status]\nbucket = \"{}\"\neverySec = {every_sec}\n[status.credentials]\nfile = \"{STATUS_CREDENTIALS}\"\n",
        status.url()
    );
    let keys = [key.to_owned()];
    install_agent_config(host, deploy, name, &keys, &keys, &extra)?;
    host.put_bytes(
        STATUS_CREDENTIALS,
        status.credentials_text().as_bytes(),
        0o600,
    )
}

fn has_line(out: &Output, prefix: &str) -> bool {
    out.stdout.lines().any(|l| l.starts_with(prefix))
}

#[tokio::test]
async fn hosts_report_and_ferry_waits_for_them_sees_failures_silence_and_a_store_outage()
-> Result<()> {
    let t = Instant::now();
    let step = |what: &str| eprintln!("=== {what} at {:.1} s", t.elapsed().as_secs_f64());
    let closures = Closures::get()?;
    let ferry = built_binary("ferry", "FERRY_BIN")?;
    step("closures and binaries ready");
    let mut bed = Bed::start(BedOptions {
        hosts: 2,
        bind_ro: vec![BindRo {
            source: agent_binary()?,
            target: AGENT.into(),
        }],
        ..Default::default()
    })?;
    step("bed up");
    let deploy = bed.s3().clone();
    let status = bed.add_bucket("ferry-status")?;
    // Host B reports every 5 s when idle, so once powered off it is stale within seconds.
    configure(
        bed.host(0),
        HOST_A,
        &deploy,
        &status,
        &closures.public_key,
        300,
    )?;
    configure(
        bed.host(1),
        HOST_B,
        &deploy,
        &status,
        &closures.public_key,
        5,
    )?;
    let dev = FleetDev::new(ferry, &deploy, &status, &closures.secret_key_file)?;

    // v1 on both hosts; their first ticks report it.
    dev.ok(&["upload", &closures.v1])?;
    let manifest = json!({"version": 1, "generation": "2026-01-01T00:00:00Z",
                          "services": [web(&closures.v1)]});
    let file = dev.dir().join("manifest.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&manifest)?)?;
    dev.ok(&["publish", &file.to_string_lossy()])?;
    for (i, name) in [HOST_A, HOST_B].iter().enumerate() {
        let out = tick(bed.host(i), name)?;
        ensure!(out.success(), "{name}'s first tick failed");
        ensure!(
            has_line(&out, "status: reported to hosts/"),
            "{name} did not report"
        );
    }

    step("v1 on both hosts");
    // (a) A good push: --wait returns 0 once both hosts report v2 healthy.
    let before = object(&deploy, "manifest.json").await?.unwrap_or_default();
    let push = dev.spawn(&["push", "web", &closures.v2, "--wait=180s"])?;
    let live = next_live(&deploy, &before).await?;
    for (i, name) in [HOST_A, HOST_B].iter().enumerate() {
        ensure!(
            tick(bed.host(i), name)?.success(),
            "{name} did not deploy v2"
        );
    }
    let out = finished(push, "ferry push web v2 --wait", Duration::from_secs(60))?;
    ensure!(
        out.success(),
        "push --wait did not return 0 with both hosts healthy"
    );
    ensure!(
        out.stderr.contains("runs healthy on all 2 host(s)"),
        "{}",
        out.stderr
    );
    let shown = dev.run(&["status"])?;
    ensure!(
        shown.success(),
        "ferry status is not 0 with both hosts converged"
    );
    for name in [HOST_A, HOST_B] {
        ensure!(
            shown
                .stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains("converged")),
            "{name} is not shown converged:\n{}",
            shown.stdout
        );
    }
    let a = report(&status, HOST_A).await?;
    ensure!(a["manifest"]["sha256"] == manifest_sha256(&live), "{a}");
    ensure!(a["services"][0]["storePath"] == closures.v2.as_str(), "{a}");
    ensure!(a["services"][0]["state"] == "running", "{a}");

    step("(a) done");
    // Between reports a no-op tick makes exactly one bucket request (the manifest GET) and
    // leaves the status store alone.
    let noop = tick(bed.host(0), HOST_A)?;
    let s = summary(&noop)?;
    ensure!(s.outcome()? == "ok" && s.get("requests")? == 1, "{noop:?}");
    ensure!(
        !has_line(&noop, "status:"),
        "a quiet tick reported:\n{}",
        noop.stdout
    );
    ensure!(
        report(&status, HOST_A).await?["time"] == a["time"],
        "the report was rewritten"
    );

    step("no-op checked");
    // (b) A broken version: both hosts roll back; --wait exits 1 naming them, web and the
    // health failure; status shows it rolled back and quarantined.
    let before = live;
    let push = dev.spawn(&["push", "web", &closures.broken, "--wait=180s"])?;
    next_live(&deploy, &before).await?;
    for (i, name) in [HOST_A, HOST_B].iter().enumerate() {
        let out = tick(bed.host(i), name)?;
        ensure!(out.status == 1, "{name}: the failed update did not exit 1");
        ensure!(
            has_line(&out, "status: reported to hosts/"),
            "{name} did not report the failure"
        );
    }
    let out = finished(
        push,
        "ferry push web broken --wait",
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status == 1,
        "push --wait did not fail on a rolled-back version"
    );
    for name in [HOST_A, HOST_B] {
        ensure!(
            out.stderr.contains(name),
            "push --wait does not name {name}:\n{}",
            out.stderr
        );
    }
    ensure!(
        out.stderr.contains("web: rolled-back") && out.stderr.contains("health"),
        "push --wait does not name web and its health failure:\n{}",
        out.stderr
    );
    let shown = dev.run(&["status"])?;
    ensure!(
        shown.status == 1,
        "ferry status is 0 with a rolled-back host"
    );
    ensure!(
        shown.stdout.contains("web: rolled-back")
            && shown
                .stdout
                .contains(&format!("quarantined: {}", closures.broken)),
        "ferry status does not show web rolled back and quarantined:\n{}",
        shown.stdout
    );

    step("(b) done");
    // (c) Host B powered off: --wait gives up naming it; status shows it stale.
    bed.host_mut(1).poweroff()?;
    let before = object(&deploy, "manifest.json").await?.unwrap_or_default();
    let push = dev.spawn(&["push", "web", &closures.v1, "--wait=30s"])?;
    next_live(&deploy, &before).await?;
    ensure!(
        tick(bed.host(0), HOST_A)?.success(),
        "{HOST_A} did not deploy v1"
    );
    let out = finished(
        push,
        "ferry push web v1 --wait=30s",
        Duration::from_secs(90),
    )?;
    ensure!(out.status == 1, "push --wait did not fail with a host off");
    ensure!(
        out.stderr.contains("timed out after 30s")
            && out.stderr.contains(&format!("{HOST_B} (stale"))
            && !out.stderr.contains(&format!("{HOST_A} (")),
        "push --wait does not name {HOST_B} alone as not reporting:\n{}",
        out.stderr
    );
    let shown = dev.run(&["status"])?;
    ensure!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with(HOST_B) && l.contains("stale"))
            && shown
                .stdout
                .lines()
                .any(|l| l.starts_with(HOST_A) && l.contains("converged")),
        "ferry status does not show {HOST_B} stale and {HOST_A} converged:\n{}",
        shown.stdout
    );

    step("(c) done");
    // (d) The status store's key revoked: the tick deploys and exits 0, saying the report
    // could not be written; the first tick after the key is back writes it.
    bed.set_bucket_access(&status, false)?;
    let before = object(&deploy, "manifest.json").await?.unwrap_or_default();
    dev.ok(&["push", "web", &closures.v2])?;
    let live = next_live(&deploy, &before).await?;
    let out = tick(bed.host(0), HOST_A)?;
    ensure!(
        out.success(),
        "a tick failed because the status store is down"
    );
    ensure!(
        has_line(&out, "status: cannot write hosts/host-a.json"),
        "the tick does not say the report was not written:\n{}",
        out.stdout
    );
    ensure!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("web:") && l.contains(&closures.v2)),
        "v2 was not deployed:\n{}",
        out.stdout
    );
    bed.set_bucket_access(&status, true)?;
    let stale = report(&status, HOST_A).await?;
    ensure!(
        stale["manifest"]["sha256"] != manifest_sha256(&live),
        "{stale}"
    );
    let out = tick(bed.host(0), HOST_A)?;
    ensure!(out.success(), "the tick after the store came back failed");
    ensure!(summary(&out)?.get("requests")? == 1, "{}", out.stdout);
    ensure!(
        has_line(&out, "status: reported to hosts/host-a.json"),
        "the owed report was not written on the first tick after the store came back:\n{}",
        out.stdout
    );
    let a = report(&status, HOST_A).await?;
    ensure!(a["manifest"]["sha256"] == manifest_sha256(&live), "{a}");
    ensure!(
        a["services"][0]["storePath"] == closures.v2.as_str()
            && a["services"][0]["state"] == "running",
        "{a}"
    );
    step("(d) done");
    let problems = bed.tear_down()?;
    ensure!(problems.is_empty(), "{problems:?}");
    Ok(())
}
