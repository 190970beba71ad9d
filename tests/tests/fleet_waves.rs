//! Health-gated waves on the bed (issue 17): three hosts report to a status store, the
//! manifest's rollout is `[[host-a], [host-b, host-c]]` with a short soak, and ticks are
//! run by hand so every step knows which ticks happened. One test, in steps, so the hosts
//! boot once: B and C keep the old version until A's report shows the new one healthy for
//! `soakSec` (the reports' times prove the order); a broken version rolled back on A halts
//! B and C, which never start it, and `publish --wait` exits 1; a fixed version then rolls
//! through all three.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::DateTime;
use ferry_tests::agent_bed::{AGENT, agent_binary};
use ferry_tests::binaries::built_binary;
use ferry_tests::fleet_dev::{FleetDev, finished, report, tick};
use ferry_tests::{Bed, BedOptions, BindRo, Closures, S3, install_agent_config};
use serde_json::{Value, json};

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
const WEB_PORT: u16 = 8310;
const SOAK_SEC: i64 = 3;
const STATUS_CREDENTIALS: &str = "/etc/ferry/status-credentials";

/// `web` in `host`'s report: (state, store path, since, message).
async fn web_of(status: &S3, host: &str) -> Result<(String, String, String, String)> {
    let r = report(status, host).await?;
    let s = &r["services"][0];
    ensure!(s["name"] == "web", "{host}: {r}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok((
        text(&s["state"]),
        text(&s["storePath"]),
        text(&s["since"]),
        text(&s["message"]),
    ))
}

fn secs(t: &str) -> Result<i64> {
    Ok(DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("time {t:?}"))?
        .timestamp())
}

fn manifest(path: &str, rollout: bool) -> Value {
    let mut m = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{
            "name": "web",
            "artifact": {"type": "nix-closure", "storePath": path},
            "hosts": HOSTS,
            "exec": {"command": "ferry-testsvc"},
            "env": {"PORT": WEB_PORT.to_string()},
            "healthCheck": {"type": "http", "path": "/health", "port": WEB_PORT,
                            "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 1, "retries": 2},
            "hardening": {"dynamicUser": true},
        }],
    });
    if rollout {
        m["rollout"] = json!({"waves": [["host-a"], ["host-b", "host-c"]], "soakSec": SOAK_SEC});
    }
    m
}

fn publish(dev: &FleetDev, m: &Value, wait: bool) -> Result<Option<Child>> {
    let file = dev.dir().join("manifest.json");
    std::fs::write(&file, serde_json::to_vec_pretty(m)?)?;
    let path = file.to_string_lossy().into_owned();
    if wait {
        // The status store is listed before the write; the write is seen by the ticks.
        let child = dev.spawn(&["publish", &path, "--wait=120s"])?;
        std::thread::sleep(Duration::from_secs(3));
        return Ok(Some(child));
    }
    dev.ok(&["publish", &path])?;
    Ok(None)
}

/// Ticks A until a report written after its soak is in the store (a quiet tick reports
/// then), returning A's `since` for web.
async fn soak_a(bed: &Bed, status: &S3, want: &str) -> Result<i64> {
    let (state, path, since, _) = web_of(status, HOSTS[0]).await?;
    ensure!(state == "running" && path == want, "A: {state} {path}");
    let since = secs(&since)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Waiting for time to pass, not asserting with it: the soak is wall time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        ensure!(
            tick(bed.host(0), HOSTS[0])?.success(),
            "A's quiet tick failed"
        );
        let r = report(status, HOSTS[0]).await?;
        if secs(r["time"].as_str().unwrap_or_default())? - since >= SOAK_SEC {
            return Ok(since);
        }
        ensure!(Instant::now() < deadline, "A never reported after its soak");
    }
}

#[tokio::test]
async fn waves_wait_for_the_canary_halt_on_its_failure_and_roll_a_fix_through() -> Result<()> {
    let t = Instant::now();
    let step = |what: &str| eprintln!("=== {what} at {:.1} s", t.elapsed().as_secs_f64());
    let closures = Closures::get()?;
    let ferry = built_binary("ferry", "FERRY_BIN")?;
    let bed = Bed::start(BedOptions {
        hosts: 3,
        bind_ro: vec![BindRo {
            source: agent_binary()?,
            target: AGENT.into(),
        }],
        ..Default::default()
    })?;
    step("bed up");
    let deploy = bed.s3().clone();
    let status = bed.add_bucket("ferry-status")?;
    for (i, name) in HOSTS.iter().enumerate() {
        let extra = format!(
            "[timeouts]\nsettleSec = 1\n[status]\nbucket = \"{}\"\neverySec = 300\n[status.credentials]\nfile = \"{STATUS_CREDENTIALS}\"\n",
            status.url()
        );
        let keys = [closures.public_key.clone()];
        install_agent_config(bed.host(i), &deploy, name, &keys, &keys, &extra)?;
        bed.host(i).put_bytes(
            STATUS_CREDENTIALS,
            status.credentials_text().as_bytes(),
            0o600,
        )?;
    }
    let dev = FleetDev::new(ferry, &deploy, &status, &closures.secret_key_file)?;
    for p in [&closures.v1, &closures.v2, &closures.broken] {
        dev.ok(&["upload", p])?;
    }

    // v1 everywhere, no rollout: no host reads a report.
    publish(&dev, &manifest(&closures.v1, false), false)?;
    for (i, name) in HOSTS.iter().enumerate() {
        let out = tick(bed.host(i), name)?;
        ensure!(out.success(), "{name}'s first tick failed");
        ensure!(
            out.stdout.contains("statusReads=0"),
            "{name} read reports without a rollout"
        );
    }
    step("v1 on all three");

    // (a) v2 with waves: B waits for A (exit 0, the old version kept, reported waiting).
    publish(&dev, &manifest(&closures.v2, true), false)?;
    let out = tick(bed.host(1), HOSTS[1])?;
    ensure!(out.status == 0, "a waiting tick is not a failure");
    ensure!(
        out.stdout.contains("web: wave 2: waiting before") && out.stdout.contains("host-a"),
        "B does not say it waits for host-a"
    );
    ensure!(
        out.stdout.contains("statusReads=1"),
        "B reads exactly A's report"
    );
    let (state, path, _, _) = web_of(&status, HOSTS[1]).await?;
    ensure!(
        state == "waiting" && path == closures.v1,
        "B: {state} {path}"
    );
    // A applies; B, ticking right after, still waits (A is soaking).
    ensure!(
        tick(bed.host(0), HOSTS[0])?.success(),
        "A did not deploy v2"
    );
    let out = tick(bed.host(1), HOSTS[1])?;
    ensure!(
        out.status == 0 && out.stdout.contains("soaking until"),
        "B does not wait for A's soak"
    );
    ensure!(
        web_of(&status, HOSTS[1]).await?.1 == closures.v1,
        "B moved early"
    );
    // Once A reports the soak over, B and C apply, and their reports say it after A's.
    let a_since = soak_a(&bed, &status, &closures.v2).await?;
    for (i, name) in HOSTS.iter().enumerate().skip(1) {
        let out = tick(bed.host(i), name)?;
        ensure!(out.success(), "{name} did not deploy v2");
        let (state, path, since, _) = web_of(&status, name).await?;
        ensure!(
            state == "running" && path == closures.v2,
            "{name}: {state} {path}"
        );
        ensure!(
            secs(&since)? >= a_since + SOAK_SEC,
            "{name} runs v2 since {since}, before A's soak ended ({a_since} + {SOAK_SEC})"
        );
    }
    step("(a) v2 rolled through in waves");

    // (b) A broken version: A rolls back; B and C halt without ever trying it.
    let wait = publish(&dev, &manifest(&closures.broken, true), true)?;
    ensure!(
        tick(bed.host(0), HOSTS[0])?.status == 1,
        "A's failed update did not exit 1"
    );
    for (i, name) in HOSTS.iter().enumerate().skip(1) {
        let out = tick(bed.host(i), name)?;
        ensure!(out.status == 1, "{name}: a halted tick exits 1");
        ensure!(
            out.stdout.contains("halted, not applying")
                && out.stdout.contains("host-a reports web rolled-back"),
            "{name} does not name host-a's rollback"
        );
        let r = report(&status, name).await?;
        let (state, path, _, message) = web_of(&status, name).await?;
        ensure!(
            state == "halted" && path == closures.v2,
            "{name}: {state} {path}"
        );
        ensure!(message.contains("host-a"), "{name}: {message}");
        ensure!(
            r.get("quarantined").is_none(),
            "{name} tried the broken version: {r}"
        );
        let unit = bed
            .host(i)
            .sh_ok("cat /run/systemd/system/ferry-web.service")?;
        ensure!(
            !unit.contains(&closures.broken),
            "{name} wrote a unit for the broken version"
        );
    }
    let out = finished(
        wait.context("spawned")?,
        "publish broken --wait",
        Duration::from_secs(60),
    )?;
    ensure!(out.status == 1, "publish --wait did not fail on the halt");
    ensure!(
        out.stderr.contains("host-a") && out.stderr.contains("web: halted"),
        "publish --wait does not name host-a and the halt:\n{}",
        out.stderr
    );
    step("(b) broken version halted after the canary");

    // (c) The fix (v1 again, a new generation) rolls through all three.
    publish(&dev, &manifest(&closures.v1, true), false)?;
    ensure!(
        tick(bed.host(1), HOSTS[1])?.status == 0,
        "B waits on the fix"
    );
    ensure!(
        web_of(&status, HOSTS[1]).await?.0 == "waiting",
        "B is not waiting on the fix"
    );
    ensure!(
        tick(bed.host(0), HOSTS[0])?.success(),
        "A did not deploy the fix"
    );
    soak_a(&bed, &status, &closures.v1).await?;
    for (i, name) in HOSTS.iter().enumerate().skip(1) {
        ensure!(
            tick(bed.host(i), name)?.success(),
            "{name} did not deploy the fix"
        );
        let (state, path, _, _) = web_of(&status, name).await?;
        ensure!(
            state == "running" && path == closures.v1,
            "{name}: {state} {path}"
        );
    }
    // Converged: nothing is gated, no report is read.
    let out = tick(bed.host(2), HOSTS[2])?;
    ensure!(
        out.success() && out.stdout.contains("statusReads=0"),
        "a converged host read reports"
    );
    step("(c) fix rolled through");
    bed.tear_down()?;
    Ok(())
}
