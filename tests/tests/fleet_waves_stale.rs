//! A powered-off canary on the bed (issue 17 item 4): two hosts report to a status store,
//! the rollout is `[[host-a], [host-b]]` with a short `staleSec`, and host-a is powered off
//! after its last report, before a new version is published. Ticks are run by hand. With
//! `onStale = "wait"` host-b keeps the old version past `staleSec`, reported waiting and
//! naming host-a stale; with `onStale = "skip"` (a new generation) it waits until host-a
//! has been silent for `staleSec` (counted from the later of host-a's last report and the
//! generation, which here is the generation), then runs the new version. `ferry status`
//! names host-a stale and what `onStale` makes of it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use ferry_tests::agent_bed::{AGENT, agent_binary};
use ferry_tests::binaries::built_binary;
use ferry_tests::fleet_dev::{FleetDev, report, tick};
use ferry_tests::{Bed, BedOptions, BindRo, Closures, Host, Output, install_agent_config};
use serde_json::{Value, json};

const HOSTS: [&str; 2] = ["host-a", "host-b"];
const WEB_PORT: u16 = 8320;
const STALE_SEC: i64 = 10;
const STATUS_CREDENTIALS: &str = "/etc/ferry/status-credentials";

fn manifest(path: &str, on_stale: Option<&str>) -> Value {
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
    if let Some(on_stale) = on_stale {
        m["rollout"] = json!({
            "waves": [["host-a"], ["host-b"]], "soakSec": 1,
            "staleSec": STALE_SEC, "onStale": on_stale,
        });
    }
    m
}

/// Publishes `m` and returns the live generation (`ferry publish` makes it now when the
/// file's is not later than the live one).
fn publish(dev: &FleetDev, m: &Value) -> Result<DateTime<Utc>> {
    let file = dev.dir().join("manifest.json");
    std::fs::write(&file, serde_json::to_vec_pretty(m)?)?;
    dev.ok(&["publish", &file.to_string_lossy()])?;
    let (doc, _) = status_json(dev)?;
    let generation = doc["generation"].as_str().unwrap_or_default();
    Ok(DateTime::parse_from_rfc3339(generation)
        .with_context(|| format!("generation {generation:?}"))?
        .with_timezone(&Utc))
}

fn status_json(dev: &FleetDev) -> Result<(Value, Output)> {
    let out = dev.run(&["status", "--json"])?;
    let doc = serde_json::from_str(&out.stdout).context("ferry status --json")?;
    Ok((doc, out))
}

fn version(host: &Host) -> Result<String> {
    Ok(host
        .sh_ok(&format!("curl -sf http://127.0.0.1:{WEB_PORT}/version"))?
        .trim()
        .to_owned())
}

/// `web` in host-b's report: (state, store path, message).
async fn web_on_b(status: &ferry_tests::S3) -> Result<(String, String, String)> {
    let r = report(status, HOSTS[1]).await?;
    let s = &r["services"][0];
    ensure!(s["name"] == "web", "host-b: {r}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok((
        text(&s["state"]),
        text(&s["storePath"]),
        text(&s["message"]),
    ))
}

/// Ticks host-b until its output contains `until`, each tick first checked by `each`;
/// returns the last tick's output and when it started. At least one tick must come before
/// `until` shows (the wait is seen, not assumed), and it must show within a deadline.
fn tick_b_until(
    bed: &Bed,
    until: &str,
    each: impl Fn(&Output) -> Result<()>,
) -> Result<(Output, DateTime<Utc>, usize)> {
    let deadline = Instant::now() + Duration::from_secs(STALE_SEC as u64 + 60);
    let mut ticks = 0;
    loop {
        let started = Utc::now();
        let out = tick(bed.host(1), HOSTS[1])?;
        ticks += 1;
        if out.stdout.contains(until) {
            return Ok((out, started, ticks));
        }
        each(&out)?;
        ensure!(
            Instant::now() < deadline,
            "host-b never said {until:?} within {STALE_SEC} s + 60 s"
        );
        // Waiting for time to pass (staleSec is wall time), not asserting with it.
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// A line of `ferry status` about `host` in the waves (indented under its wave).
fn wave_line<'a>(text: &'a str, host: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with("    ") && l.trim_start().starts_with(host))
}

#[tokio::test]
async fn a_powered_off_canary_holds_the_next_wave_with_wait_and_is_left_out_with_skip() -> Result<()>
{
    let t = Instant::now();
    let step = |what: &str| eprintln!("=== {what} at {:.1} s", t.elapsed().as_secs_f64());
    let closures = Closures::get()?;
    let ferry = built_binary("ferry", "FERRY_BIN")?;
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
    for (i, name) in HOSTS.iter().enumerate() {
        // Reports at least every 2 s when ticked, well inside staleSec: only a host that
        // stops ticking goes stale.
        let extra = format!(
            "[timeouts]\nsettleSec = 1\n[status]\nbucket = \"{}\"\neverySec = 2\n[status.credentials]\nfile = \"{STATUS_CREDENTIALS}\"\n",
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
    for p in [&closures.v1, &closures.v2] {
        dev.ok(&["upload", p])?;
    }

    // v1 on both; host-a reports it, then is powered off.
    publish(&dev, &manifest(&closures.v1, None))?;
    for (i, name) in HOSTS.iter().enumerate() {
        ensure!(tick(bed.host(i), name)?.success(), "{name}'s first tick");
    }
    ensure!(
        report(&status, HOSTS[0]).await?["services"][0]["storePath"] == closures.v1.as_str(),
        "host-a did not report v1"
    );
    bed.host_mut(0).poweroff()?;
    step("v1 on both, host-a off");

    // (a) onStale = wait: host-b keeps v1 before and after staleSec.
    let generation = publish(&dev, &manifest(&closures.v2, Some("wait")))?;
    let waits = |out: &Output| {
        ensure!(out.status == 0, "a waiting tick is not a failure");
        ensure!(
            out.stdout.contains("web: wave 2: waiting before") && out.stdout.contains("host-a"),
            "host-b does not say it waits for host-a"
        );
        Ok(())
    };
    let (out, started, ticks) = tick_b_until(&bed, "host-a stale:", waits)?;
    waits(&out)?;
    ensure!(ticks > 1, "host-b's first tick already called host-a stale");
    ensure!(
        started >= generation + chrono::Duration::seconds(STALE_SEC),
        "host-a called stale at {started}, before staleSec from {generation}"
    );
    ensure!(
        out.stdout.contains("over rollout.staleSec (10 s)")
            && out.stdout.contains("onStale = wait"),
        "host-b's line does not say staleSec and onStale"
    );
    // One more tick past staleSec: still held.
    waits(&tick(bed.host(1), HOSTS[1])?)?;
    let (state, path, message) = web_on_b(&status).await?;
    ensure!(
        state == "waiting" && path == closures.v1 && message.contains("host-a stale"),
        "host-b reports {state} {path}: {message}"
    );
    ensure!(version(bed.host(1))? == "1.0.0", "host-b does not run v1");
    let unit = bed
        .host(1)
        .sh_ok("cat /run/systemd/system/ferry-web.service")?;
    ensure!(
        !unit.contains(&closures.v2),
        "host-b wrote a unit for v2 while host-a was stale"
    );
    let shown = dev.run(&["status"])?;
    ensure!(shown.status == 1, "ferry status exits 0 with a host held");
    let a = wave_line(&shown.stdout, HOSTS[0]).unwrap_or_default();
    let b = wave_line(&shown.stdout, HOSTS[1]).unwrap_or_default();
    ensure!(
        shown.stdout.contains("onStale wait")
            && a.contains("stale")
            && a.contains("onStale = wait: later waves wait for it")
            && b.contains("waiting")
            && b.contains("for host-a (stale)"),
        "ferry status does not show host-a stale (onStale wait) and host-b waiting for it:\n{}",
        shown.stdout
    );
    let (doc, _) = status_json(&dev)?;
    let wave1 = &doc["rollouts"][0]["waves"][0]["hosts"][0];
    ensure!(
        wave1["host"] == "host-a" && wave1["phase"] == "stale" && wave1["onStale"] == "wait",
        "ferry status --json: {wave1}"
    );
    step("(a) onStale wait: host-b held past staleSec");

    // (b) onStale = skip, a new generation: host-b waits until host-a is silent for
    // staleSec since it, then applies v2 without it.
    let generation = publish(&dev, &manifest(&closures.v2, Some("skip")))?;
    let (out, started, ticks) = tick_b_until(&bed, "left out host-a", waits)?;
    ensure!(ticks > 1, "host-b did not wait before leaving host-a out");
    ensure!(
        out.success(),
        "host-b's tick applying v2 past host-a failed"
    );
    ensure!(
        out.stdout.contains("(rollout.onStale = skip)"),
        "host-b's line does not say onStale"
    );
    ensure!(
        started >= generation + chrono::Duration::seconds(STALE_SEC),
        "host-b left host-a out at {started}, before staleSec from {generation}"
    );
    let (state, path, _) = web_on_b(&status).await?;
    ensure!(
        state == "running" && path == closures.v2,
        "host-b reports {state} {path}"
    );
    ensure!(version(bed.host(1))? == "2.0.0", "host-b does not run v2");
    let shown = dev.run(&["status"])?;
    let a = wave_line(&shown.stdout, HOSTS[0]).unwrap_or_default();
    let b = wave_line(&shown.stdout, HOSTS[1]).unwrap_or_default();
    ensure!(
        a.contains("stale")
            && a.contains("onStale = skip: later waves go on without it")
            && (b.contains("soaking") || b.contains("done")),
        "ferry status does not show host-a stale (onStale skip) and host-b on v2:\n{}",
        shown.stdout
    );
    step("(b) onStale skip: host-b runs v2 without host-a");
    bed.tear_down()?;
    Ok(())
}
