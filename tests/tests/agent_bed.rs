//! `ferry-agent reconcile` running inside a real nspawn systemd host against the bed's Garage,
//! with real signed closures: adds, no-op ticks, targeted restarts, env-only changes,
//! removals, refused manifests and services, untrusted closures, env escaping, and the
//! rendered units checked by the host's own `systemd-analyze`.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_tests::agent_bed::{AGENT, AgentBed, HOST, eventually, manifest, service, sign, summary};
use serde_json::{Value, json};

/// One HTTP request a listener received: its request line and headers, and its body.
type Received = (String, Vec<u8>);

/// A plain HTTP/1.1 listener on `ip` (the bed's bridge, which the hosts reach) answering
/// every request 204 and keeping what it got: the webhook's other end.
fn webhook_listener(ip: &str) -> Result<(u16, Arc<Mutex<Vec<Received>>>)> {
    let socket = TcpListener::bind((ip, 0)).with_context(|| format!("listening on {ip}"))?;
    let port = socket.local_addr()?.port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in socket.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            let head_end = loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while data.len() < head_end + length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let body = data[head_end..].to_vec();
            if let Ok(mut g) = keep.lock() {
                g.push((head, body));
            }
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    Ok((port, got))
}

/// The value of one series in the metrics file, as a real Prometheus text-format parser
/// reads it; labels in any order.
fn metric(text: &str, family: &str, labels: &[(&str, &str)]) -> Result<f64> {
    use openmetrics_parser::PrometheusValue;
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
        .map_err(|e| anyhow::anyhow!("the metrics file does not parse: {e:?}\n{text}"))?;
    let f = exposition
        .families
        .get(family)
        .with_context(|| format!("no {family} in\n{text}"))?;
    let values: Vec<String> = f
        .get_label_names()
        .iter()
        .map(|name| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        })
        .collect();
    match &f
        .get_sample_by_label_values(&values)
        .with_context(|| format!("no {family}{labels:?} in\n{text}"))?
        .value
    {
        PrometheusValue::Gauge(n) => Ok(n.as_f64()),
        other => anyhow::bail!("{family} is not a gauge: {other:?}"),
    }
}

fn unix_seconds(rfc3339: &Value) -> Result<f64> {
    let text = rfc3339.as_str().context("not a time")?;
    let t = chrono::DateTime::parse_from_rfc3339(text).with_context(|| text.to_owned())?;
    Ok(t.timestamp() as f64)
}

#[tokio::test]
async fn agent_deploys_noops_restarts_only_changed_units_and_removes() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    // Metrics, a hook and a webhook ride along (issue 16 items 4 and 5): the hook records
    // its environment and each run, the webhook goes to a listener on the bed's bridge.
    let (port, webhook) = webhook_listener(&t.bed.names().bridge_ip())?;
    t.host().sh_ok("mkdir -p /var/lib/node-text")?;
    t.configure(&format!(
        r#"
[metrics]
file = "/var/lib/node-text/ferry.prom"
[hooks]
onChange = ["/bin/sh", "-c", "/usr/bin/env > /tmp/hook.env; echo run >> /tmp/hook.runs"]
webhook = "http://{ip}:{port}/ferry?token=s3cret"
timeoutSec = 5
"#,
        ip = t.bed.names().bridge_ip()
    ))?;

    // Fresh host, two services.
    t.publish(&manifest(
        1,
        vec![service("alpha", &c.v1, 8101), service("beta", &c.v1, 8102)],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "first tick failed");
    let s = summary(&out)?;
    assert_eq!(s.get("reloads")?, 1, "{s}");
    for (unit, port) in [("ferry-alpha.service", 8101), ("ferry-beta.service", 8102)] {
        assert_eq!(t.show(unit, "ActiveState")?, "active");
        assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");
    }
    for name in ["alpha", "beta"] {
        let target = t
            .host()
            .sh_ok(&format!("readlink -f /nix/var/nix/profiles/ferry/{name}"))?;
        assert_eq!(target.trim(), c.v1, "profile of {name}");
    }
    let state = t.state()?;
    assert_eq!(state["version"], 1);
    assert_eq!(
        state["services"]["alpha"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );
    assert_eq!(state["lastTick"]["outcome"], "ok");
    // The deploy ran the hook once, with what item 5 says, and posted the status document.
    let env: std::collections::BTreeMap<String, String> = t
        .host()
        .sh_ok("cat /tmp/hook.env")?
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("FERRY_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("FERRY_HOOK", "onChange"),
        ("FERRY_HOST", HOST),
        ("FERRY_OUTCOME", "ok"),
        ("FERRY_EXIT_CODE", "0"),
        ("FERRY_GENERATION", "2025-01-01T00:00:01Z"),
        ("FERRY_SERVICES_CHANGED", "alpha beta"),
        ("FERRY_SERVICES_FAILED", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, want);
    assert!(
        out.stdout.contains("hooks.onChange: /bin/sh ran (")
            && out.stdout.contains(&format!(
                "hooks.webhook: POST http://{}:{port}/ferry answered 204 (",
                t.bed.names().bridge_ip()
            ))
            && !out.stdout.contains("s3cret"),
        "{}",
        out.stdout
    );
    let posts = webhook.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (head, body) = &posts[0];
    assert!(
        head.starts_with("POST /ferry?token=s3cret HTTP/1.1")
            && head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
        "{head}"
    );
    let report =
        ferry_schema::host_status::parse_report(&format!("hooks/{HOST}.json"), HOST, body)?;
    assert_eq!(report.last_tick.outcome.as_str(), "ok");
    assert_eq!(report.last_tick.exit_code, 0);
    let mut running: Vec<(&str, &str)> = report
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    running.sort_unstable();
    assert_eq!(running, [("alpha", "running"), ("beta", "running")]);

    // No change: one conditional GET, no unit touched, no Reload.
    let files_before = t.unit_files()?;
    let alpha_inv = t.show("ferry-alpha.service", "InvocationID")?;
    let beta_inv = t.show("ferry-beta.service", "InvocationID")?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    let s = summary(&out)?;
    assert_eq!(
        (
            s.get("reloads")?,
            s.get("unitsTouched")?,
            s.get("requests")?
        ),
        (0, 0, 1),
        "{s}"
    );
    assert_eq!(t.unit_files()?, files_before);
    assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, alpha_inv);

    // `status` and `plan` read the same host.
    let status: Value = serde_json::from_str(&t.host().sh_ok(&format!("{AGENT} status --json"))?)?;
    let alpha = status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "alpha"))
        .context("alpha missing from status")?;
    assert_eq!(alpha["activeState"], "active");
    assert_eq!(alpha["storePath"], c.v1.as_str());
    assert_eq!(alpha["profileGeneration"], 1);
    assert_eq!(status["lastTick"]["outcome"], "ok");
    // The no-op tick ran no hook and posted nothing; it rewrote the metrics file, which a
    // Prometheus parser reads and which says what `status --json` and the tick say.
    assert_eq!(t.host().sh_ok("cat /tmp/hook.runs")?, "run\n");
    assert_eq!(webhook.lock().map(|g| g.len()).unwrap_or_default(), 1);
    let text = t.host().sh_ok("cat /var/lib/node-text/ferry.prom")?;
    let mode = t.host().sh_ok("stat -c %a /var/lib/node-text/ferry.prom")?;
    assert_eq!(mode.trim(), "644");
    for svc in status["services"].as_array().context("no services")? {
        let name = svc["name"].as_str().context("no name")?;
        let path = svc["storePath"].as_str().context("no storePath")?;
        let generation = status["manifestGeneration"]
            .as_str()
            .context("no generation")?;
        let one = [("service", name)];
        assert_eq!(
            metric(
                &text,
                "ferry_service_info",
                &[
                    ("service", name),
                    ("store_path", path),
                    ("generation", generation)
                ]
            )?,
            1.0
        );
        assert_eq!(svc["activeState"], "active");
        assert_eq!(metric(&text, "ferry_service_healthy", &one)?, 1.0);
        assert!(svc["quarantined"].is_null());
        assert_eq!(metric(&text, "ferry_service_quarantined", &one)?, 0.0);
        assert_eq!(
            metric(&text, "ferry_service_last_change_timestamp_seconds", &one)?,
            unix_seconds(&svc["appliedAt"])?
        );
    }
    let outcome = status["lastTick"]["outcome"]
        .as_str()
        .context("no outcome")?;
    assert_eq!(
        metric(&text, "ferry_tick_outcome", &[("outcome", outcome)])?,
        1.0
    );
    assert_eq!(metric(&text, "ferry_tick_exit_code", &[])?, 0.0);
    let started = unix_seconds(&status["lastTick"]["at"])?;
    assert_eq!(metric(&text, "ferry_tick_timestamp_seconds", &[])?, started);
    assert_eq!(
        metric(&text, "ferry_last_success_timestamp_seconds", &[])?,
        started
    );
    // The pipeline's wall time holds the tick's own (status' durationMs) and more.
    let duration = metric(&text, "ferry_tick_duration_seconds", &[])?;
    let tick_ms = status["lastTick"]["durationMs"]
        .as_f64()
        .context("no durationMs")?;
    assert!(duration * 1000.0 >= tick_ms, "{duration} s < {tick_ms} ms");
    assert_eq!(metric(&text, "ferry_tick_bucket_requests", &[])?, 1.0);
    let s = summary(&out)?;
    assert_eq!(
        metric(&text, "ferry_tick_peak_rss_bytes", &[])?,
        (s.get("peakRssKiB")? * 1024) as f64
    );
    assert_eq!(metric(&text, "ferry_tick_services_changed", &[])?, 0.0);
    let plan = t.host().exec(&[AGENT, "plan"])?;
    assert_eq!(
        plan.status, 0,
        "plan of an unchanged host: {}{}",
        plan.stdout, plan.stderr
    );
    assert!(
        plan.stdout.contains("= alpha: unchanged"),
        "{}",
        plan.stdout
    );

    // Three services, alpha's store path changed: exactly alpha restarts, one Reload.
    t.publish(&manifest(
        2,
        vec![
            service("alpha", &c.v2, 8101),
            service("beta", &c.v1, 8102),
            service("gamma", &c.multi, 8103),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    let s = summary(&out)?;
    assert_eq!(s.get("reloads")?, 1, "{s}");
    assert_ne!(
        t.show("ferry-alpha.service", "InvocationID")?,
        alpha_inv,
        "alpha not restarted"
    );
    assert_eq!(
        t.show("ferry-beta.service", "InvocationID")?,
        beta_inv,
        "beta restarted"
    );
    assert_eq!(t.get(8101, "/version")?.trim(), "2.0.0");
    assert_eq!(t.show("ferry-gamma.service", "ActiveState")?, "active");

    // Only beta's env changes: unit rewritten and restarted, nothing pulled.
    let alpha_inv = t.show("ferry-alpha.service", "InvocationID")?;
    let mut beta = service("beta", &c.v1, 8102);
    beta["env"]["EXTRA"] = json!("1");
    t.publish(&manifest(
        3,
        vec![
            service("alpha", &c.v2, 8101),
            beta.clone(),
            service("gamma", &c.multi, 8103),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert!(
        out.stdout.contains("beta: restarted on")
            && out.stdout.contains("unit changed: Environment"),
        "{}",
        out.stdout
    );
    assert_ne!(t.show("ferry-beta.service", "InvocationID")?, beta_inv);
    assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, alpha_inv);
    assert_eq!(t.get(8102, "/env/EXTRA")?, "1");
    // Nothing pulled: the only bucket request was the manifest.
    let s = summary(&out)?;
    assert_eq!(s.get("requests")?, 1, "{s}");

    // gamma removed: stopped, unit deleted, profile kept.
    t.publish(&manifest(4, vec![service("alpha", &c.v2, 8101), beta]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert!(
        !t.host()
            .path_in_host("/run/systemd/system/ferry-gamma.service")
            .exists()
    );
    assert_ne!(t.show("ferry-gamma.service", "ActiveState")?, "active");
    let target = t
        .host()
        .sh_ok("readlink -f /nix/var/nix/profiles/ferry/gamma")?;
    assert_eq!(target.trim(), c.multi);
    assert!(t.state()?["services"].get("gamma").is_none());

    // The host's own systemd-analyze accepts the units rendered for real closures.
    let verify = t.host().sh("systemd-analyze verify /run/systemd/system/ferry-alpha.service /run/systemd/system/ferry-beta.service")?;
    assert!(
        verify.success(),
        "systemd-analyze verify: {}{}",
        verify.stdout,
        verify.stderr
    );
    Ok(())
}

/// The design's migration, phase 1: the agent deployed with an empty manifest does nothing
/// and says so (exit 0). Once the host runs a service, neither an empty manifest nor one
/// for other hosts only (a wrong `hostName`) removes it; a manifest that decommissions the
/// host does, and the emptied host then ticks clean.
#[tokio::test]
async fn agent_empty_manifest_is_a_noop_and_only_a_decommission_empties_a_host() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;

    // Phase 1: a fresh host and an empty manifest.
    t.publish(&manifest(1, vec![])).await?;
    let out = t.reconcile()?;
    assert_eq!(
        out.status, 0,
        "an empty manifest on a fresh host is refused"
    );
    assert!(
        out.stdout.contains(
            "names no service for host \"bedhost\" (hosts it names: none); nothing to run here"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(t.state()?["lastTick"]["outcome"], "ok");
    assert!(t.unit_files()?.is_empty());

    // The host gets a service.
    t.publish(&manifest(2, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0);
    let inv = t.show("ferry-alpha.service", "InvocationID")?;

    // Neither an empty manifest nor one only for another host removes it.
    let mut elsewhere = manifest(3, vec![service("alpha", &c.v1, 8101)]);
    elsewhere["services"][0]["hosts"] = json!(["someone-else"]);
    for (what, m) in [("empty", manifest(3, vec![])), ("elsewhere", elsewhere)] {
        t.publish(&m).await?;
        let out = t.reconcile()?;
        assert_eq!(out.status, 2, "{what}: not refused");
        assert!(
            out.stdout
                .contains("while it runs Ferry services (alpha); refusing to remove them all")
                && out.stdout.contains("ferry publish --decommission bedhost"),
            "{what}: {}",
            out.stdout
        );
        assert_eq!(
            t.show("ferry-alpha.service", "InvocationID")?,
            inv,
            "{what}"
        );
        assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0", "{what}");
    }

    // Another host's decommission does not cover this one; this host's does.
    let mut other = manifest(4, vec![]);
    other["decommission"] = json!(["someone-else"]);
    t.publish(&other).await?;
    assert_eq!(t.reconcile()?.status, 2);
    let mut empty_me = manifest(5, vec![]);
    empty_me["decommission"] = json!([HOST]);
    t.publish(&empty_me).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "a decommission was refused");
    assert!(
        out.stdout.contains(
            "the manifest decommissions host \"bedhost\": every Ferry service here is removed"
        ),
        "{}",
        out.stdout
    );
    assert!(t.unit_files()?.is_empty(), "{}", t.unit_files()?);
    assert_ne!(t.show("ferry-alpha.service", "ActiveState")?, "active");
    assert!(t.state()?["services"].get("alpha").is_none());

    // The emptied host accepts an empty manifest without the decommission again.
    t.publish(&manifest(6, vec![])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    Ok(())
}

#[tokio::test]
async fn agent_refuses_bad_manifests_and_untrusted_closures_without_changing_the_host() -> Result<()>
{
    let t = AgentBed::start().await?;
    let c = t.closures;
    t.publish(&manifest(1, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0);
    let files = t.unit_files()?;
    let inv = t.show("ferry-alpha.service", "InvocationID")?;
    let unchanged = |t: &AgentBed| -> Result<()> {
        assert_eq!(t.unit_files()?, files);
        assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, inv);
        assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0");
        Ok(())
    };

    // Schema error.
    let mut bad = manifest(2, vec![service("alpha", &c.v2, 8101)]);
    bad["services"][0]["exec"]["comand"] = json!("x");
    t.publish(&bad).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2, "schema error not refused");
    // Refused for the field, named by its JSON Pointer.
    assert!(
        out.stdout.lines().any(|l| l.trim()
            == "refused: manifest /services/0/exec/comand: service `alpha`: unknown field `comand`; did you mean `command`?"),
        "{}",
        out.stdout
    );
    unchanged(&t)?;

    // Env file outside the service's own, and root: the service is refused with both
    // reasons and keeps its running version.
    let mut bad = manifest(3, vec![service("alpha", &c.v2, 8101)]);
    bad["services"][0]["envFile"] = json!("/etc/shadow");
    bad["services"][0]["exec"]["user"] = json!("root");
    bad["services"][0]["hardening"] = json!({"dynamicUser": false});
    t.publish(&bad).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        out.stdout.contains("alpha: REFUSED by host policy")
            && out.stdout.contains("envFile /etc/shadow")
            && out.stdout.contains("exec.user root is root"),
        "{}",
        out.stdout
    );
    unchanged(&t)?;

    // A manifest only for another host.
    let mut other = manifest(4, vec![service("alpha", &c.v2, 8101)]);
    other["services"][0]["hosts"] = json!(["someone-else"]);
    t.publish(&other).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2);
    assert!(
        out.stdout.contains("names no service for host")
            && out.stdout.contains("while it runs Ferry services (alpha)"),
        "{}",
        out.stdout
    );
    unchanged(&t)?;

    // A manifest signed by a key the host does not trust for manifests.
    let key = t.host().sh_ok(
        "nix-store --generate-binary-cache-key mk /tmp/mk.sec /tmp/mk.pub && cat /tmp/mk.pub",
    )?;
    t.write_config(&c.public_key, &[key.trim().to_owned()])?;
    t.publish(&manifest(5, vec![service("alpha", &c.v2, 8101)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2);
    assert!(
        out.stdout.lines().any(|l| l
            .trim()
            .starts_with("refused: signature: no valid signature by a trusted key")),
        "{}",
        out.stdout
    );
    unchanged(&t)?;

    // A closure not signed by a trusted key: the pull fails, the old version keeps running.
    t.write_config(
        "other-key:MIhTFVvnU+7c0MJpLnL2DxsFQexj5m+mMdb0w3Fo/k8=",
        std::slice::from_ref(&c.public_key),
    )?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "untrusted closure not refused");
    assert!(out.stdout.contains("bad signature"), "{}", out.stdout);
    assert!(
        !t.host().path_in_host(&c.v2).exists(),
        "untrusted path reached the store"
    );
    unchanged(&t)?;
    Ok(())
}

#[tokio::test]
async fn agent_env_values_arrive_byte_for_byte_and_units_score_low_exposure() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let values = [
        ("QUOTES", r#"say "hi" and 'bye'"#),
        ("PERCENT", "100% of %n and %%"),
        ("DOLLAR", "$HOME ${PATH} $$"),
        ("BACKSLASH", r"C:\path\to\n and \\ end\"),
        ("SPACES", "  leading and trailing  "),
    ];
    let mut s = service("esc", &c.v1, 8111);
    for (k, v) in values {
        s["env"][k] = json!(v);
    }
    s["exec"]["args"] = json!(["--ignored", "a b", "%x $y"]);
    t.publish(&manifest(1, vec![s])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    for (k, v) in values {
        eventually("service answering", Duration::from_secs(10), || {
            Ok(t.host()
                .sh("curl -sf http://127.0.0.1:8111/health")?
                .success())
        })?;
        assert_eq!(t.get(8111, &format!("/env/{k}"))?, v, "env {k}");
    }
    let cmdline = t.host().sh_ok(
        "tr '\\0' '|' < /proc/$(systemctl show -p MainPID --value ferry-esc.service)/cmdline",
    )?;
    assert_eq!(
        cmdline,
        format!("{}/bin/ferry-testsvc|--ignored|a b|%x $y|", c.v1)
    );

    // The example manifest's unit, rendered and scored by the host's systemd.
    let example = include_str!("../../schema/tests/fixtures/example.json");
    t.host()
        .put_bytes("/tmp/example.json", example.as_bytes(), 0o644)?;
    t.host().sh_ok(&format!(
        "{AGENT} render --manifest /tmp/example.json --host biz --out /tmp/units"
    ))?;
    let sec = t.host().sh("systemd-analyze security --offline=yes --threshold=20 /tmp/units/ferry-podcastitlater-web.service")?;
    let line = sec
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure"))
        .unwrap_or("")
        .to_owned();
    eprintln!("example unit: {line}");
    assert!(sec.success(), "exposure above 2.0: {line}\n{}", sec.stderr);
    Ok(())
}

#[tokio::test]
async fn agent_restores_services_after_reboot_without_bucket_and_survives_corrupt_state()
-> Result<()> {
    let mut t = AgentBed::start().await?;
    let c = t.closures;
    t.publish(&manifest(1, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0);

    // A corrupt state file is reported, moved aside, and rebuilt without touching the unit.
    let inv = t.show("ferry-alpha.service", "InvocationID")?;
    t.host().put_bytes(
        "/var/lib/ferry/state.json",
        b"{\"version\": 1, \"serv",
        0o600,
    )?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "tick after corrupt state failed");
    assert!(out.stdout.contains("corrupt"), "{}", out.stdout);
    assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, inv);
    assert_eq!(
        t.state()?["services"]["alpha"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );
    let aside = t.host().sh_ok("ls /var/lib/ferry")?;
    assert!(aside.contains("state.json.corrupt-"), "{aside}");

    // Garage stops and the host reboots: /run is empty, yet the next tick brings alpha back
    // from state.
    t.bed.stop_garage();
    t.bed.host_mut(0).poweroff()?;
    t.bed.host_mut(0).boot()?;
    assert!(
        !t.host()
            .path_in_host("/run/systemd/system/ferry-alpha.service")
            .exists()
    );
    let out = t.reconcile()?;
    assert_eq!(out.status, 3, "expected the unreachable-bucket exit code");
    assert!(
        out.stdout.contains("restoring services from state"),
        "{}",
        out.stdout
    );
    assert_eq!(t.show("ferry-alpha.service", "ActiveState")?, "active");
    assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0");
    Ok(())
}

#[tokio::test]
async fn agent_killed_mid_tick_twenty_times_then_converges() -> Result<()> {
    const ROUNDS: u32 = 20;
    const SPREAD_MS: u64 = 2500;
    let t = AgentBed::start().await?;
    let c = t.closures;
    let versions = [&c.v1, &c.v2];
    // Random kill points, new each run; the seed is printed so a failure can be replayed.
    let mut rng = std::env::var("FERRY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0)
        });
    rng |= 1; // xorshift never leaves 0
    eprintln!("kill points: FERRY_KILL_SEED={rng}");
    // Every round changes alpha, so its tick restarts a unit and waits the 1 s settle time:
    // kills in the first second land in a running tick, and most of them after it saved its
    // `pending` mark, while it changes the host.
    let (mut landed, mut mid_apply) = (0u32, 0u32);
    let mut state_seen = false;
    for round in 0..ROUNDS {
        let path = versions[(round % 2) as usize];
        t.publish(&manifest(
            round,
            vec![service("alpha", path, 8101), service("beta", &c.v1, 8102)],
        ))
        .await?;
        // Kill points anywhere in the tick: before the fetch, during pulls, unit writes, jobs.
        // One per slice of the spread, in an order that jumps around, at a random point of
        // its slice.
        let slice = SPREAD_MS / u64::from(ROUNDS);
        let delay_ms = u64::from(round * 7 % ROUNDS) * slice + next_random(&mut rng) % slice;
        let before = state_inode(&t)?;
        // `wait` gives the tick's exit status: 137 (128 + SIGKILL) when the kill hit it.
        let out = t.host().sh(&format!(
            "{AGENT} reconcile >/dev/null 2>&1 & pid=$!; sleep {}.{:03}; kill -9 $pid 2>/dev/null; wait $pid; echo $?",
            delay_ms / 1000,
            delay_ms % 1000
        ))?;
        assert!(out.success(), "{}", out.stderr);
        let status: i32 = out
            .stdout
            .trim()
            .parse()
            .with_context(|| format!("round {round}: no exit status from `wait`: {out:?}"))?;
        let killed = match status {
            137 => true,
            0 => false,
            other => anyhow::bail!(
                "round {round}: the tick ended with {other}, neither killed nor converged"
            ),
        };
        let state = t.host().sh("cat /var/lib/ferry/state.json")?;
        let pending = if state.success() {
            state_seen = true;
            let parsed: Value = serde_json::from_str(&state.stdout).with_context(|| {
                format!("state unparseable after kill {round}: {}", state.stdout)
            })?;
            parsed["pending"].as_array().is_some_and(|p| !p.is_empty())
        } else {
            // Only a tick killed before its first save leaves no state file; once there is
            // one, it is replaced atomically and never missing.
            assert!(
                !state_seen,
                "round {round}: state.json vanished after a kill"
            );
            false
        };
        // This tick saved its mark (the file was replaced) and never cleared it: it was
        // killed while changing the host.
        let saved_here = state_inode(&t)? != before;
        let in_apply = killed && pending && saved_here;
        landed += u32::from(killed);
        mid_apply += u32::from(in_apply);
        eprintln!(
            "round {round}: kill after {delay_ms} ms {}",
            match (killed, in_apply) {
                (false, _) => "came after the tick ended",
                (true, false) => "hit the tick outside apply",
                (true, true) => "hit the tick while it changed the host (pending saved)",
            }
        );
    }
    eprintln!("{landed} of {ROUNDS} kills hit a running tick, {mid_apply} of them mid-apply");
    assert!(
        landed >= ROUNDS / 2,
        "only {landed} of {ROUNDS} kills hit a running tick: the test did not test kills"
    );
    assert!(
        mid_apply >= ROUNDS / 4,
        "only {mid_apply} of {ROUNDS} kills hit a tick while it changed the host"
    );
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "tick after the kills did not converge");
    let units = t
        .host()
        .sh_ok("ls /run/systemd/system | grep '^ferry-' || true")?;
    assert_eq!(
        units.split_whitespace().collect::<Vec<_>>(),
        ["ferry-alpha.service", "ferry-beta.service"]
    );
    assert_eq!(t.get(8101, "/version")?.trim(), "2.0.0");
    assert_eq!(t.get(8102, "/version")?.trim(), "1.0.0");
    let again = t.reconcile()?;
    let s = summary(&again)?;
    assert_eq!(s.get("unitsTouched")?, 0, "{s}");
    Ok(())
}

/// The inode of the agent's state file (each save replaces the file), or `None`.
fn state_inode(t: &AgentBed) -> Result<Option<String>> {
    let out = t.host().sh("stat -c %i /var/lib/ferry/state.json")?;
    Ok(out.success().then(|| out.stdout.trim().to_owned()))
}

#[tokio::test]
async fn agent_deploys_from_a_file_bucket() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    t.host().put_dir(&c.signed_cache, "/srv/bucket")?;
    let m = sign(
        &manifest(1, vec![service("alpha", &c.v1, 8101)]),
        &c.secret_key_file,
    )?;
    t.host()
        .put_bytes("/srv/bucket/manifest.json", &serde_json::to_vec(&m)?, 0o644)?;
    // The module's own agent.toml, with the bucket set through its freeform settings, as a
    // NixOS user with a local folder bucket would write it.
    ferry_tests::install_agent_config(
        t.host(),
        t.bed.s3(),
        HOST,
        std::slice::from_ref(&c.public_key),
        std::slice::from_ref(&c.public_key),
        "bucket = \"file:///srv/bucket\"\n[timeouts]\nsettleSec = 1\n",
    )?;
    let written = t.host().sh_ok("cat /etc/ferry/agent.toml")?;
    assert!(written.contains("file:///srv/bucket"), "{written}");
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0");
    let again = t.reconcile()?;
    let s = summary(&again)?;
    assert_eq!((s.get("requests")?, s.get("unitsTouched")?), (1, 0), "{s}");
    Ok(())
}

/// xorshift64: enough to spread kill points, reproducible from a printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// "GC roots keep old closures alive (last 5 versions per service)", with the host's own
/// Nix: after seven deploys of one service exactly the last five closures survive
/// `nix-store --gc`. A removed service's profile outlives the service by
/// `removedProfileRetentionDays` (the test moves the clock recorded in state.json back
/// instead of waiting a day), then the agent deletes it and the GC takes its closure.
#[tokio::test]
async fn agent_keeps_the_last_five_closures_and_deletes_removed_profiles_after_retention()
-> Result<()> {
    let t = AgentBed::start_with("removedProfileRetentionDays = 1\n[timeouts]\nsettleSec = 1\n")
        .await?;
    let c = t.closures;
    let profiles = "/nix/var/nix/profiles/ferry";
    let in_store = |path: &str| t.host().path_in_host(path).exists();
    let mut second = String::new();

    for (i, path) in c.series.iter().enumerate() {
        let mut services = vec![service("app", path, 8101)];
        if i == 0 {
            services.push(service("gone", &c.v1, 8102));
        }
        t.publish(&manifest(u32::try_from(i)? + 1, services))
            .await?;
        let out = t.reconcile()?;
        assert_eq!(out.status, 0, "deploy {}: {}", i + 1, out.stdout);
        assert_eq!(
            t.get(8101, "/version")?.trim(),
            format!("6.{}.0", i + 1),
            "deploy {}",
            i + 1
        );
        if i == 1 {
            second = out.stdout;
        }
    }
    let links = t.host().sh_ok(&format!(
        "cd {profiles} && ls -1 | grep '^app-' | sort -t- -k2 -n"
    ))?;
    assert_eq!(
        links.lines().collect::<Vec<_>>(),
        [
            "app-3-link",
            "app-4-link",
            "app-5-link",
            "app-6-link",
            "app-7-link"
        ]
    );
    let gc = t.host().sh("nix-store --gc 2>&1")?;
    assert!(gc.success(), "nix-store --gc: {}{}", gc.stdout, gc.stderr);
    for (i, path) in c.series.iter().enumerate() {
        assert_eq!(
            in_store(path),
            i >= 2,
            "after the GC, version 6.{}.0 ({path}) is {}",
            i + 1,
            if in_store(path) {
                "still there"
            } else {
                "gone"
            }
        );
    }
    // The removed service's profile still holds its closure.
    assert!(
        second.contains(&format!(
            "gone: no longer on this host; its profile {profiles}/gone is kept 1 days"
        )),
        "{second}"
    );
    assert!(
        in_store(&c.v1),
        "gone's closure was collected within its retention"
    );
    assert!(t.state()?["removedProfiles"]["gone"].is_string());

    // A day and a bit later (by the clock state.json keeps): deleted on the next tick.
    let mut state = t.state()?;
    state["removedProfiles"]["gone"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(
        t.host().path_in_host("/var/lib/ferry/state.json"),
        serde_json::to_vec_pretty(&state)?,
    )?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("gone: profile {profiles}/gone deleted (2 links)")),
        "{}",
        out.stdout
    );
    let left = t.host().sh_ok(&format!("ls -1 {profiles}"))?;
    assert!(!left.contains("gone"), "{left}");
    assert!(t.state()?.get("removedProfiles").is_none());
    let gc = t.host().sh("nix-store --gc 2>&1")?;
    assert!(gc.success(), "nix-store --gc: {}{}", gc.stdout, gc.stderr);
    assert!(!in_store(&c.v1), "gone's closure outlived its profile");
    assert!(in_store(&c.series[6]) && in_store(&c.series[2]));
    Ok(())
}
