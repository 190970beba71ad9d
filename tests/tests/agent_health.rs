//! Health checks, automatic rollback, quarantine and dependency order, with `ferry-agent
//! reconcile` running inside a real nspawn systemd host against the bed's Garage and the real
//! test closures: a broken version (its `/health` answers 503) and a crash-looping one are
//! rolled back, quarantined and not retried; `--retry-failed` retries; a fixed version
//! deploys; a `dependsOn` chain starts in order and a failing middle skips the last.

use anyhow::{Context, Result};
use ferry_tests::Output;
use ferry_tests::agent_bed::{AGENT, AgentBed, manifest, service, summary};
use ferry_tests::request_loop::{Answer, Pace, Target, answers_during, count_failed, count_ok};
use serde_json::{Value, json};

/// A test service on `port` with a quick HTTP check of `/health`: first probe after 1 s,
/// 3 tries a second apart.
fn checked(name: &str, store_path: &str, port: u16) -> Value {
    let mut s = service(name, store_path, port);
    s["healthCheck"] = json!({
        "type": "http", "path": "/health", "port": port,
        "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 1, "retries": 3,
    });
    s
}

fn depends_on(mut s: Value, deps: &[&str]) -> Value {
    s["dependsOn"] = json!(deps);
    s
}

fn reconcile_with(t: &AgentBed, args: &[&str]) -> Result<Output> {
    let mut argv = vec![AGENT, "reconcile"];
    argv.extend_from_slice(args);
    let out = t.host().exec(&argv)?;
    eprintln!(
        "--- reconcile {args:?} (exit {})\n{}{}",
        out.status, out.stdout, out.stderr
    );
    Ok(out)
}

/// The last line of `out` about `service` (quarantine notes come before the outcome).
fn line<'a>(out: &'a Output, service: &str) -> &'a str {
    let prefix = format!("{service}: ");
    out.stdout
        .lines()
        .rfind(|l| l.starts_with(&prefix))
        .unwrap_or("")
}

fn profile_target(t: &AgentBed, service: &str) -> Result<String> {
    Ok(t.host()
        .sh_ok(&format!(
            "readlink -f /nix/var/nix/profiles/ferry/{service}"
        ))?
        .trim()
        .to_owned())
}

/// Answers to `GET /version` on `port` inside the host while `during` runs: a bounded loop
/// (at most 600 requests, 20 a second, 1 s timeout each) that stops when `during` returns.
fn poll_version_during<T>(
    t: &AgentBed,
    port: u16,
    during: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<Answer>)> {
    let pace = Pace {
        per_second: 20,
        max_requests: 600,
        timeout_sec: 1,
    };
    answers_during(t.host(), &Target::direct(port, "/version"), pace, during)
}

#[tokio::test]
async fn broken_update_is_rolled_back_quarantined_not_retried_and_a_fixed_version_deploys()
-> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8201;

    t.publish(&manifest(1, vec![checked("web", &c.v1, port)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "v1 did not deploy");
    assert!(
        line(&out, "web").contains("healthy after"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("phases: pullMs=")),
        "{}",
        out.stdout
    );

    // v2 is broken: it starts, but /health answers 503.
    t.publish(&manifest(2, vec![checked("web", &c.broken, port)]))
        .await?;
    let (out, answers) = poll_version_during(&t, port, || t.reconcile())?;
    assert_eq!(out.status, 1, "a rolled-back update must fail the tick");
    assert_eq!(
        line(&out, "web"),
        format!(
            "web: FAILED (update closure): {} failed health check (HTTP 503 on /health after 3 tries); rolled back to {}",
            c.broken, c.v1
        )
    );
    let (v1, broken, errors) = (
        count_ok(&answers, "1.0.0"),
        count_ok(&answers, "3.0.0-broken"),
        count_failed(&answers),
    );
    eprintln!(
        "/version during the failed update: {} requests, {v1} v1, {broken} broken, {errors} failed",
        answers.len()
    );
    assert_eq!(
        v1 + broken + errors,
        answers.len(),
        "unexpected answers: {answers:?}"
    );
    // The restart strategy has one port: the broken version answers while it is checked,
    // and v1 answers again after the rollback, to the end of the tick.
    assert!(broken > 0 && v1 > 0, "{answers:?}");
    let last_broken = answers
        .iter()
        .rposition(|a| a.body() == Some("3.0.0-broken"));
    let last = answers.last().and_then(Answer::body);
    assert_eq!(last, Some("1.0.0"), "{answers:?}");
    assert!(last_broken < answers.iter().rposition(|a| a.body() == Some("1.0.0")));
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");
    assert_eq!(t.show("ferry-web.service", "ActiveState")?, "active");
    assert_eq!(profile_target(&t, "web")?, c.v1, "profile not pointed back");
    let state = t.state()?;
    assert_eq!(state["quarantine"]["web"]["storePath"], c.broken.as_str());
    assert_eq!(state["quarantine"]["web"]["rolledBackTo"], c.v1.as_str());
    assert_eq!(
        state["services"]["web"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );
    assert!(
        t.unit_files()?.contains(&format!("storePath={}", c.v1)),
        "unit not rendered back"
    );

    // Next tick, same manifest: not retried, says why.
    let inv = t.show("ferry-web.service", "InvocationID")?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        line(&out, "web").starts_with(&format!(
            "web: skipped {} (quarantined: failed health check (HTTP 503 on /health after 3 tries)); keeps running {}",
            c.broken, c.v1
        )),
        "{}",
        out.stdout
    );
    let s = summary(&out)?;
    assert_eq!(s.get("reloads")?, 0, "{s}");
    assert_eq!(t.show("ferry-web.service", "InvocationID")?, inv, "retried");

    // status and plan show it.
    let status: Value = serde_json::from_str(&t.host().sh_ok(&format!("{AGENT} status --json"))?)?;
    assert_eq!(status["quarantine"]["web"]["storePath"], c.broken.as_str());
    let web = status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "web"))
        .context("web missing from status")?;
    assert_eq!(web["quarantined"], c.broken.as_str());
    let text = t.host().sh_ok(&format!("{AGENT} status"))?;
    assert!(
        text.contains(&format!("web: quarantined {}", c.broken)),
        "{text}"
    );
    let plan = t.host().exec(&[AGENT, "plan"])?;
    assert!(
        plan.stdout
            .contains(&format!("! web: skipped {} (quarantined:", c.broken)),
        "{}",
        plan.stdout
    );

    // --retry-failed clears the quarantine: the broken version is tried (and fails) again.
    let out = reconcile_with(&t, &["--retry-failed"])?;
    assert_eq!(out.status, 1);
    assert!(
        out.stdout
            .contains(&format!("web: quarantine of {} cleared", c.broken)),
        "{}",
        out.stdout
    );
    assert!(
        line(&out, "web").contains("failed health check"),
        "{}",
        out.stdout
    );
    assert_ne!(
        t.show("ferry-web.service", "InvocationID")?,
        inv,
        "not retried"
    );
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");

    // A fixed version (a different store path) lifts the quarantine and deploys.
    t.publish(&manifest(3, vec![checked("web", &c.v2, port)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "fixed version did not deploy");
    assert!(
        out.stdout
            .contains(&format!("web: quarantine of {} lifted", c.broken)),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");
    assert_eq!(profile_target(&t, "web")?, c.v2);
    assert!(t.state()?.get("quarantine").is_none());
    Ok(())
}

/// `checked` with extra environment variables.
fn configured(name: &str, store_path: &str, port: u16, env: &[(&str, &str)]) -> Value {
    let mut s = checked(name, store_path, port);
    for (k, v) in env {
        s["env"][*k] = json!(v);
    }
    s
}

#[tokio::test]
async fn a_failed_config_change_quarantines_that_config_not_the_running_store_path() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8205;
    fn version(v: &str) -> [(&str, &str); 1] {
        [("FERRY_TESTSVC_VERSION", v)]
    }

    t.publish(&manifest(
        1,
        vec![configured("web", &c.v1, port, &version("config-1"))],
    ))
    .await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    assert_eq!(t.get(port, "/version")?.trim(), "config-1");

    // Same store path, a configuration that makes it unhealthy: rolled back and quarantined.
    let bad = [
        ("FERRY_TESTSVC_VERSION", "config-2"),
        ("FERRY_TESTSVC_MODE", "unhealthy"),
    ];
    t.publish(&manifest(2, vec![configured("web", &c.v1, port, &bad)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "the failed config change must fail the tick");
    assert!(
        line(&out, "web").contains("failed health check"),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "config-1");
    assert_eq!(t.state()?["quarantine"]["web"]["storePath"], c.v1.as_str());

    // That configuration again (the next tick on the same manifest) is not retried.
    let inv = t.show("ferry-web.service", "InvocationID")?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        line(&out, "web").starts_with(&format!("web: skipped {} (quarantined:", c.v1)),
        "{}",
        out.stdout
    );
    assert_eq!(t.show("ferry-web.service", "InvocationID")?, inv, "retried");

    // A config-only fix (same store path, new env) deploys: the quarantine was of the
    // configuration that failed, not of the store path that keeps running.
    t.publish(&manifest(
        3,
        vec![configured("web", &c.v1, port, &version("config-3"))],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(
        out.status, 0,
        "the config fix was held back:\n{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "config-3");
    assert!(t.state()?.get("quarantine").is_none(), "{}", out.stdout);
    Ok(())
}

#[tokio::test]
async fn crash_looping_update_is_caught_by_nrestarts_and_rolled_back() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8211;
    // No health check and no http: systemd's view at the end of the 2 s start period.
    t.publish(&manifest(1, vec![service("worker", &c.v1, port)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0);

    t.publish(&manifest(2, vec![service("worker", &c.crashing, port)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    let l = line(&out, "worker");
    assert!(
        l.starts_with(&format!(
            "worker: FAILED (update closure): {} crash-looping: ferry-worker.service restarted",
            c.crashing
        )) && l.ends_with(&format!("rolled back to {}", c.v1)),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");
    assert_eq!(t.show("ferry-worker.service", "ActiveState")?, "active");
    assert_eq!(profile_target(&t, "worker")?, c.v1);
    assert_eq!(
        t.state()?["quarantine"]["worker"]["storePath"],
        c.crashing.as_str()
    );

    // A new service that fails has nothing to roll back to: stopped, unit deleted, reported.
    t.publish(&manifest(
        3,
        vec![
            service("worker", &c.v1, port),
            checked("fresh", &c.broken, 8212),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert_eq!(
        line(&out, "fresh"),
        format!(
            "fresh: FAILED (add): {} failed health check (HTTP 503 on /health after 3 tries); stopped and ferry-fresh.service deleted (nothing to roll back to)",
            c.broken
        )
    );
    assert!(
        out.stdout
            .contains(&format!("worker: quarantine of {} lifted", c.crashing)),
        "{}",
        out.stdout
    );
    assert!(
        !t.host()
            .path_in_host("/run/systemd/system/ferry-fresh.service")
            .exists()
    );
    assert_ne!(t.show("ferry-fresh.service", "ActiveState")?, "active");
    let state = t.state()?;
    assert!(state["services"].get("fresh").is_none());
    assert_eq!(state["quarantine"]["fresh"]["storePath"], c.broken.as_str());
    let out = t.reconcile()?;
    assert!(
        line(&out, "fresh").ends_with("not running; publish a different store path or configuration, or run `ferry-agent reconcile --retry-failed`"),
        "{}",
        out.stdout
    );
    let s = summary(&out)?;
    assert_eq!(s.get("unitsTouched")?, 0, "{s}");
    Ok(())
}

/// `ActiveEnterTimestampMonotonic` of a unit, in microseconds.
fn entered(t: &AgentBed, unit: &str) -> Result<u64> {
    t.show(unit, "ActiveEnterTimestampMonotonic")?
        .parse()
        .with_context(|| format!("ActiveEnterTimestampMonotonic of {unit}"))
}

#[tokio::test]
async fn depends_on_chain_starts_in_order_and_a_failing_middle_skips_the_last() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    // Listed last-first, so only dependsOn can put them in order.
    let chain = |b_path: &str, c_path: &str| {
        vec![
            depends_on(checked("c", c_path, 8223), &["b"]),
            depends_on(checked("b", b_path, 8222), &["a"]),
            checked("a", &c.v1, 8221),
        ]
    };
    t.publish(&manifest(1, chain(&c.v1, &c.v1))).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    let (a, b, cc) = (
        entered(&t, "ferry-a.service")?,
        entered(&t, "ferry-b.service")?,
        entered(&t, "ferry-c.service")?,
    );
    eprintln!("active since (monotonic µs): a={a} b={b} c={cc}");
    // Each waits for the one before to pass its check (first probe 1 s after its start).
    assert!(
        b >= a + 1_000_000,
        "b started {} µs after a",
        b.saturating_sub(a)
    );
    assert!(
        cc >= b + 1_000_000,
        "c started {} µs after b",
        cc.saturating_sub(b)
    );

    // b's new version is broken: b is rolled back, c (also changed) is skipped untouched.
    let c_inv = t.show("ferry-c.service", "InvocationID")?;
    let a_inv = t.show("ferry-a.service", "InvocationID")?;
    t.publish(&manifest(2, chain(&c.broken, &c.v2))).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        line(&out, "b").contains(&format!("rolled back to {}", c.v1)),
        "{}",
        out.stdout
    );
    assert_eq!(line(&out, "c"), "c: skipped: depends on b, which failed");
    assert_eq!(t.show("ferry-c.service", "InvocationID")?, c_inv);
    assert_eq!(t.show("ferry-a.service", "InvocationID")?, a_inv);
    assert_eq!(t.get(8223, "/version")?.trim(), "1.0.0");
    assert_eq!(t.get(8222, "/version")?.trim(), "1.0.0");
    assert!(
        t.unit_files()?
            .contains(&format!("service=c storePath={}", c.v1)),
        "c's unit not put back"
    );
    let state = t.state()?;
    assert_eq!(
        state["services"]["c"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );
    assert!(state["quarantine"].get("c").is_none());
    Ok(())
}

/// A test service whose `/health` is probed on `port` with every timing left to the
/// defaults (no startPeriodSec, intervalSec, timeoutSec, retries or deadlineSec), binding
/// its port `bind_delay_sec` seconds after it starts.
fn default_checked(name: &str, store_path: &str, port: u16, bind_delay_sec: u32) -> Value {
    let mut s = service(name, store_path, port);
    s["healthCheck"] = json!({"type": "http", "path": "/health", "port": port});
    s["env"]["FERRY_TESTSVC_BIND_DELAY_SEC"] = json!(bind_delay_sec.to_string());
    s
}

/// Issue 22 item 9: a service that binds its port 20 s after starting (a migration at
/// start) deploys with the default health check instead of being rolled back, and a version
/// that never becomes healthy is rolled back once the default 60 s deadline has passed: its
/// probes run from the 2 s start period, a second apart, the last one started so that its
/// 2 s timeout ends by the deadline (57 tries).
#[tokio::test]
async fn a_slow_starter_deploys_with_default_checks_and_a_never_healthy_one_is_rolled_back_at_the_deadline()
-> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8231;

    t.publish(&manifest(1, vec![default_checked("web", &c.v1, port, 0)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");

    // v2 binds its port only after 20 s.
    t.publish(&manifest(2, vec![default_checked("web", &c.v2, port, 20)]))
        .await?;
    let started = std::time::Instant::now();
    let out = t.reconcile()?;
    let took = started.elapsed();
    eprintln!("the slow starter's tick took {took:?}");
    assert_eq!(
        out.status, 0,
        "the slow starter was not deployed:\n{}",
        out.stdout
    );
    assert!(
        line(&out, "web").contains("healthy after"),
        "{}",
        out.stdout
    );
    assert!(took.as_secs() >= 20, "healthy before it bound: {took:?}");
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");
    assert_eq!(profile_target(&t, "web")?, c.v2);
    assert!(t.state()?.get("quarantine").is_none());

    // A version that never becomes healthy (its /health answers 503) is given the whole
    // deadline, then rolled back to v2 (which again takes 20 s to come back).
    t.publish(&manifest(
        3,
        vec![default_checked("web", &c.broken, port, 0)],
    ))
    .await?;
    let started = std::time::Instant::now();
    let out = t.reconcile()?;
    let took = started.elapsed();
    eprintln!("the never-healthy version's tick took {took:?}");
    assert_eq!(out.status, 1, "{}", out.stdout);
    assert_eq!(
        line(&out, "web"),
        format!(
            "web: FAILED (update closure): {} failed health check (HTTP 503 on /health after 57 tries); rolled back to {}",
            c.broken, c.v2
        )
    );
    assert!(
        took.as_secs() >= 60,
        "rolled back before the deadline: {took:?}"
    );
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");
    assert_eq!(
        t.state()?["quarantine"]["web"]["storePath"],
        c.broken.as_str()
    );
    Ok(())
}
