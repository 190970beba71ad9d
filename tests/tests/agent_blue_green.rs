//! Blue-green updates (`http.strategy: "blue-green"`) with `ferry-agent reconcile` inside a
//! real nspawn systemd host, routed through that host's own Caddy 2.6, while a bounded
//! request loop (loopback, through Caddy with the service's domain) watches every answer:
//! an update switches ports without a failed request (and a restart-strategy update, for
//! comparison, drops some), a broken version never takes traffic and leaves the old
//! instance untouched, removal stops both instances, and a host that lost /run gets its
//! live instance back.

use anyhow::{Context, Result, bail};
use ferry_tests::Output;
use ferry_tests::agent_bed::{AGENT, AgentBed, manifest, service};
use ferry_tests::request_loop::{Answer, Pace, Target, answers_during, count_failed, count_ok};
use serde_json::{Value, json};

/// agent.toml additions: quick settle, a one-second drain, routes in Debian Caddy's srv0.
const CONFIG: &str = "[timeouts]\nsettleSec = 1\ndrainSec = 1\n[caddy]\nserver = \"srv0\"\n";

/// The loop every update runs under: 200 requests a second through Caddy, at most 12,000
/// (a minute), each given one second.
const PACE: Pace = Pace {
    per_second: 200,
    max_requests: 12_000,
    timeout_sec: 1,
};

/// A quick HTTP check of `/health` on whichever port the instance has: first probe after
/// 1 s, 3 tries a second apart.
fn health() -> Value {
    json!({
        "type": "http", "path": "/health",
        "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 1, "retries": 3,
    })
}

/// A blue-green test service on `domain` with instances on `port` and `port + 1`; PORT
/// comes from the instance name, so the manifest's env has none.
fn blue_green(name: &str, store_path: &str, domain: &str, port: u16) -> Value {
    let mut s = service(name, store_path, port);
    s["env"] = json!({});
    s["http"] = json!({
        "domain": domain, "path": "/", "internalPort": port, "strategy": "blue-green",
    });
    s["healthCheck"] = health();
    s
}

/// A restart-strategy test service on `domain` and `port`.
fn restarted(name: &str, store_path: &str, domain: &str, port: u16) -> Value {
    let mut s = service(name, store_path, port);
    s["http"] = json!({"domain": domain, "path": "/", "internalPort": port});
    s["healthCheck"] = health();
    s
}

fn instance(service: &str, port: u16) -> String {
    format!("ferry-{service}@{port}.service")
}

fn active_state(t: &AgentBed, unit: &str) -> Result<String> {
    t.show(unit, "ActiveState")
}

/// GET `path` through the host's Caddy (127.0.0.1:80 inside the host) as `domain`.
fn via_caddy(t: &AgentBed, domain: &str, path: &str) -> Result<(u16, String)> {
    let out = t.host().sh_ok(&format!(
        "curl -s -m 2 -o - -w '\\n%{{http_code}}' -H 'Host: {domain}' http://127.0.0.1:80{path}"
    ))?;
    ferry_tests::host::parse_curl_output(&out)
}

/// The upstream (`127.0.0.1:<port>`) of route `ferry-<service>` in the host's Caddy.
fn upstream(t: &AgentBed, service: &str) -> Result<String> {
    let (status, body) = t
        .host()
        .caddy_admin("GET", &format!("/id/ferry-{service}"), None)?;
    if status != 200 {
        bail!("GET /id/ferry-{service} answered {status}: {body}");
    }
    let route: Value = serde_json::from_str(&body)?;
    route["handle"][0]["upstreams"][0]["dial"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("route ferry-{service} has no upstream: {body}"))
}

fn live_port(t: &AgentBed, service: &str) -> Result<Value> {
    Ok(t.state()?["services"][service]["livePort"].clone())
}

fn unit_file_exists(t: &AgentBed, file: &str) -> bool {
    t.host()
        .path_in_host(&format!("/run/systemd/system/{file}"))
        .exists()
}

/// The last line of `out` about `service`.
fn line<'a>(out: &'a Output, service: &str) -> &'a str {
    let prefix = format!("{service}: ");
    out.stdout
        .lines()
        .rfind(|l| l.starts_with(&prefix))
        .unwrap_or("")
}

/// One tick under the request loop through Caddy as `domain`; prints a one-line account.
fn tick_under_loop(t: &AgentBed, domain: &str, what: &str) -> Result<(Output, Vec<Answer>)> {
    let (out, answers) = answers_during(
        t.host(),
        &Target::via_caddy(domain, "/version"),
        PACE,
        || t.reconcile(),
    )?;
    eprintln!(
        "{what}: {} requests through Caddy, {} × 1.0.0, {} × 2.0.0, {} failed {:?}, answer changed {} times",
        answers.len(),
        count_ok(&answers, "1.0.0"),
        count_ok(&answers, "2.0.0"),
        count_failed(&answers),
        failures(&answers),
        changes(&answers),
    );
    Ok((out, answers))
}

/// The distinct failures in `answers` (status, 0 for no HTTP answer) with their counts.
fn failures(answers: &[Answer]) -> Vec<(u16, usize)> {
    let mut seen: Vec<(u16, usize)> = Vec::new();
    for a in answers {
        if let Answer::Failed(code) = a {
            match seen.iter_mut().find(|(c, _)| c == code) {
                Some((_, n)) => *n += 1,
                None => seen.push((*code, 1)),
            }
        }
    }
    seen
}

/// How often an answer differs from the one before it (1 for a clean switch).
fn changes(answers: &[Answer]) -> usize {
    answers.windows(2).filter(|w| w[0] != w[1]).count()
}

/// Asserts a clean switch from `old` to `new`: only those two answers, none failed, both
/// seen, and the last one `new`.
fn assert_switched(answers: &[Answer], old: &str, new: &str) {
    let (o, n) = (count_ok(answers, old), count_ok(answers, new));
    assert_eq!(
        count_failed(answers),
        0,
        "failed requests: {:?}",
        failures(answers)
    );
    assert_eq!(o + n, answers.len(), "unexpected answers: {answers:?}");
    assert!(
        o > 0 && n > 0,
        "the loop did not span the switch: {o} × {old}, {n} × {new}"
    );
    assert_eq!(
        answers.last().and_then(Answer::body),
        Some(new),
        "the loop did not end on {new}"
    );
}

#[tokio::test]
async fn blue_green_update_switches_ports_without_a_failed_request_and_back() -> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (domain, port) = ("bg.test", 8301);
    let web = |path: &str| blue_green("web", path, domain, port);

    t.publish(&manifest(1, vec![web(&c.v1)])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "v1 did not deploy");
    assert!(
        unit_file_exists(&t, "ferry-web@.service"),
        "{}",
        t.unit_files()?
    );
    assert!(
        !unit_file_exists(&t, "ferry-web.service"),
        "{}",
        t.unit_files()?
    );
    assert_eq!(active_state(&t, &instance("web", port))?, "active");
    assert_ne!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_eq!(live_port(&t, "web")?, json!(port));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{port}"));
    assert_eq!(via_caddy(&t, domain, "/version")?, (200, "1.0.0".into()));
    // The instance's PORT comes from its name.
    assert_eq!(t.get(port, "/env/PORT")?, port.to_string());

    // v1 → v2: the new version starts on the idle port, the route switches, v1 is drained.
    t.publish(&manifest(2, vec![web(&c.v2)])).await?;
    let (out, answers) = tick_under_loop(&t, domain, "blue-green v1 → v2")?;
    assert_eq!(out.status, 0, "v2 did not deploy");
    assert_eq!(
        line(&out, "web"),
        format!("web: stopped {} after a 1 s drain", instance("web", port))
    );
    assert_switched(&answers, "1.0.0", "2.0.0");
    assert_eq!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_ne!(active_state(&t, &instance("web", port))?, "active");
    assert_eq!(live_port(&t, "web")?, json!(port + 1));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{}", port + 1));
    assert_eq!(via_caddy(&t, domain, "/version")?, (200, "2.0.0".into()));
    assert_eq!(t.get(port + 1, "/env/PORT")?, (port + 1).to_string());
    // `status` names the live instance and the route's upstream.
    let text = t.host().sh_ok(&format!("{AGENT} status"))?;
    let want = format!(
        "unit={} active/running generation=2 route={domain}/ -> 127.0.0.1:{}",
        instance("web", port + 1),
        port + 1
    );
    assert!(text.contains(&want), "{text}");

    // v2 → v1: back to the first port, again without a failed request.
    t.publish(&manifest(3, vec![web(&c.v1)])).await?;
    let (out, answers) = tick_under_loop(&t, domain, "blue-green v2 → v1")?;
    assert_eq!(out.status, 0, "v1 did not deploy again");
    assert_eq!(
        line(&out, "web"),
        format!(
            "web: stopped {} after a 1 s drain",
            instance("web", port + 1)
        )
    );
    assert_switched(&answers, "2.0.0", "1.0.0");
    assert_eq!(active_state(&t, &instance("web", port))?, "active");
    assert_ne!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_eq!(live_port(&t, "web")?, json!(port));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{port}"));

    // Converged: nothing to do, nothing touched.
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    let s = ferry_tests::agent_bed::summary(&out)?;
    assert_eq!(s.get("unitsTouched")?, 0, "{}", out.stdout);
    Ok(())
}

#[tokio::test]
async fn restart_strategy_update_fails_requests_that_blue_green_serves() -> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (bg_domain, plain_domain) = ("bg.test", "restart.test");
    let both = |bg_path: &str, plain_path: &str| {
        vec![
            blue_green("web", bg_path, bg_domain, 8311),
            restarted("plain", plain_path, plain_domain, 8315),
        ]
    };
    t.publish(&manifest(1, both(&c.v1, &c.v1))).await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");

    // The same loop, the same v1 → v2 update: first blue-green, then restart.
    t.publish(&manifest(2, both(&c.v2, &c.v1))).await?;
    let (out, bg) = tick_under_loop(&t, bg_domain, "blue-green v1 → v2")?;
    assert_eq!(out.status, 0);
    assert_switched(&bg, "1.0.0", "2.0.0");

    t.publish(&manifest(3, both(&c.v2, &c.v2))).await?;
    let (out, plain) = tick_under_loop(&t, plain_domain, "restart v1 → v2")?;
    assert_eq!(out.status, 0);
    let (n, m, k) = (bg.len(), plain.len(), count_failed(&plain));
    eprintln!("blue-green: {n} requests, 0 errors; restart: {m} requests, {k} errors");
    assert_eq!(
        count_ok(&plain, "1.0.0") + count_ok(&plain, "2.0.0") + k,
        m,
        "unexpected answers: {plain:?}"
    );
    assert!(
        k > 0,
        "the restart-strategy update failed no request at {} requests a second",
        PACE.per_second
    );
    assert_eq!(plain.last().and_then(Answer::body), Some("2.0.0"));
    assert_eq!(
        via_caddy(&t, plain_domain, "/version")?,
        (200, "2.0.0".into())
    );
    Ok(())
}

#[tokio::test]
async fn blue_green_broken_update_never_takes_traffic_and_leaves_the_old_instance_alone()
-> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (domain, port) = ("bg.test", 8321);
    t.publish(&manifest(1, vec![blue_green("web", &c.v1, domain, port)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    let live = instance("web", port);
    let (inv, pid) = (t.show(&live, "InvocationID")?, t.show(&live, "MainPID")?);

    // The broken closure starts, but its /health answers 503: it never gets the route.
    t.publish(&manifest(
        2,
        vec![blue_green("web", &c.broken, domain, port)],
    ))
    .await?;
    let (out, answers) = tick_under_loop(&t, domain, "blue-green broken update")?;
    assert_eq!(out.status, 1, "a failed update must fail the tick");
    let l = line(&out, "web");
    assert!(
        l.starts_with(&format!("web: FAILED (update closure): {}", c.broken))
            && l.contains("failed health check (HTTP 503 on /health after 3 tries)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        count_ok(&answers, "1.0.0"),
        answers.len(),
        "something other than v1 answered through Caddy: {:?}",
        failures(&answers)
    );
    assert_eq!(
        t.show(&live, "InvocationID")?,
        inv,
        "the live instance was restarted"
    );
    assert_eq!(
        t.show(&live, "MainPID")?,
        pid,
        "the live instance was restarted"
    );
    assert_ne!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_eq!(live_port(&t, "web")?, json!(port));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{port}"));
    let state = t.state()?;
    assert_eq!(state["quarantine"]["web"]["storePath"], c.broken.as_str());
    assert_eq!(
        state["services"]["web"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );
    assert!(
        t.unit_files()?.contains(&format!("storePath={}", c.v1)),
        "template not rendered back: {}",
        t.unit_files()?
    );

    // Next tick, same manifest: quarantined, not retried, v1 still untouched.
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        line(&out, "web").starts_with(&format!("web: skipped {} (quarantined:", c.broken)),
        "{}",
        out.stdout
    );
    assert_eq!(t.show(&live, "InvocationID")?, inv, "retried");
    assert_ne!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_eq!(via_caddy(&t, domain, "/version")?, (200, "1.0.0".into()));
    Ok(())
}

#[tokio::test]
async fn removing_a_blue_green_service_stops_both_instances_and_deletes_template_and_route()
-> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (domain, port) = ("bg.test", 8331);
    let other = service("other", &c.v1, 8339);
    t.publish(&manifest(
        1,
        vec![blue_green("web", &c.v1, domain, port), other.clone()],
    ))
    .await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    // Both instances running, as during a drain that was cut short.
    t.host()
        .sh_ok(&format!("systemctl start {}", instance("web", port + 1)))?;
    assert_eq!(active_state(&t, &instance("web", port + 1))?, "active");
    assert_eq!(t.caddy_route_ids()?, ["ferry-web", "-"]);

    t.publish(&manifest(2, vec![other])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "removal failed");
    assert!(
        out.stdout.contains("routes: deleted ferry-web"),
        "{}",
        out.stdout
    );
    for p in [port, port + 1] {
        assert_ne!(
            active_state(&t, &instance("web", p))?,
            "active",
            "{} still runs",
            instance("web", p)
        );
    }
    assert!(
        !unit_file_exists(&t, "ferry-web@.service"),
        "{}",
        t.unit_files()?
    );
    assert_eq!(t.caddy_route_ids()?, ["-"]);
    assert!(t.state()?["services"].get("web").is_none());
    assert_eq!(t.show("ferry-other.service", "ActiveState")?, "active");
    let (status, body) = via_caddy(&t, domain, "/version")?;
    assert!(
        status != 200 || body != "1.0.0",
        "still served: {status} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_host_that_lost_run_gets_its_live_instance_back_and_routed() -> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (domain, port) = ("bg.test", 8341);
    t.publish(&manifest(1, vec![blue_green("web", &c.v1, domain, port)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    t.publish(&manifest(2, vec![blue_green("web", &c.v2, domain, port)]))
        .await?;
    assert_eq!(t.reconcile()?.status, 0, "v2 did not deploy");
    let live = instance("web", port + 1);
    assert_eq!(active_state(&t, &live)?, "active");

    // As after a reboot: the live instance is gone, /run/systemd/system is empty of it, and
    // Caddy restarted without the API's routes.
    t.host().sh_ok(&format!(
        "systemctl stop {live} && rm /run/systemd/system/ferry-web@.service && systemctl daemon-reload && systemctl restart caddy"
    ))?;
    ferry_tests::agent_bed::eventually(
        "Caddy back after restart",
        std::time::Duration::from_secs(20),
        || Ok(t.host().caddy_admin("GET", "/config/", None)?.0 == 200),
    )?;
    assert_ne!(active_state(&t, &live)?, "active");
    assert_eq!(t.caddy_route_ids()?, ["-"]);

    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "restore failed");
    assert!(
        unit_file_exists(&t, "ferry-web@.service"),
        "{}",
        t.unit_files()?
    );
    assert_eq!(active_state(&t, &live)?, "active");
    assert_ne!(active_state(&t, &instance("web", port))?, "active");
    assert_eq!(live_port(&t, "web")?, json!(port + 1));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{}", port + 1));
    assert_eq!(via_caddy(&t, domain, "/version")?, (200, "2.0.0".into()));
    Ok(())
}

#[tokio::test]
async fn a_lost_or_stale_state_file_never_routes_to_a_stopped_instance() -> Result<()> {
    let t = AgentBed::start_with(CONFIG).await?;
    let c = t.closures;
    let (domain, port) = ("bg.test", 8351);
    let web = |path: &str| blue_green("web", path, domain, port);
    t.publish(&manifest(1, vec![web(&c.v1)])).await?;
    assert_eq!(t.reconcile()?.status, 0, "v1 did not deploy");
    // The state of that moment, to be put back later as a stale copy.
    t.host()
        .sh_ok("cp /var/lib/ferry/state.json /var/lib/ferry/state.v1.json")?;
    t.publish(&manifest(2, vec![web(&c.v2)])).await?;
    assert_eq!(t.reconcile()?.status, 0, "v2 did not deploy");
    let live = instance("web", port + 1);
    assert_eq!(active_state(&t, &live)?, "active");
    assert_ne!(active_state(&t, &instance("web", port))?, "active");

    // State lost: v2 serves from the second port, and only systemd and Caddy say so.
    t.host().sh_ok("rm /var/lib/ferry/state.json")?;
    let (out, answers) = tick_under_loop(&t, domain, "state lost, same manifest")?;
    assert_eq!(out.status, 0, "the tick after losing state failed");
    assert_eq!(count_failed(&answers), 0, "{:?}", failures(&answers));
    assert_eq!(count_ok(&answers, "2.0.0"), answers.len(), "{answers:?}");
    assert_eq!(live_port(&t, "web")?, json!(port + 1));
    assert_eq!(upstream(&t, "web")?, format!("127.0.0.1:{}", port + 1));
    assert_eq!(active_state(&t, &live)?, "active");

    // A stale state file put back (it names v1 live on the first port, stopped since):
    // the update to the manifest's v2 starts beside what serves, never in its place.
    t.host()
        .sh_ok("cp /var/lib/ferry/state.v1.json /var/lib/ferry/state.json")?;
    let (out, answers) = tick_under_loop(&t, domain, "stale state, same manifest")?;
    assert_eq!(out.status, 0, "the tick after a stale state failed");
    assert_eq!(count_failed(&answers), 0, "{:?}", failures(&answers));
    assert_eq!(count_ok(&answers, "2.0.0"), answers.len(), "{answers:?}");
    let live_now = live_port(&t, "web")?;
    let dialled = upstream(&t, "web")?;
    assert_eq!(dialled, format!("127.0.0.1:{live_now}"));
    let serving = instance("web", u16::try_from(live_now.as_u64().unwrap_or(0))?);
    assert_eq!(active_state(&t, &serving)?, "active");
    assert_eq!(via_caddy(&t, domain, "/version")?, (200, "2.0.0".into()));
    Ok(())
}
