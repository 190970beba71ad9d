//! Caddy routes: the agent's `Proxy` backend against a real Caddy 2.6 on the machine (TCP and
//! unix-socket admin API, upsert without duplicates, ordering before a catch-all, server
//! creation on an empty Caddy), and `ferry-agent reconcile` inside a bed host routing
//! through that host's own Caddy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_agent::backend::caddy::{CaddyAdmin, Proxy};
use ferry_agent::routes::{RouteSpec, ordered_routes};
use ferry_agent::tick::route::{Routing, reassert, server_value};
use ferry_tests::agent_bed::{AGENT, AgentBed, eventually, manifest, route_ids, service, summary};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Caddy run on the machine for one test, killed (by its own PID) when dropped.
struct MachineCaddy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl MachineCaddy {
    /// Starts `caddy run` with `config` and waits until the admin API at `admin` answers.
    async fn start(config: &Value, admin: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("caddy.json");
        std::fs::write(&file, serde_json::to_vec(config)?)?;
        let child = Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting caddy (apt-get install caddy; tests/bed/install.sh does)")?;
        let this = Self { child, _dir: dir };
        let probe = CaddyAdmin::new(admin, Duration::from_secs(1))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while probe.server("none").await.is_err() {
            if Instant::now() > deadline {
                bail!("Caddy's admin API at {admin} did not answer within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(this)
    }
}

impl Drop for MachineCaddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A loopback HTTP upstream answering every request with `body`.
async fn upstream(body: &'static str) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// GET `path` from Caddy's listener on 127.0.0.1:`port` with a Host header.
async fn through(port: u16, host: &str, path: &str) -> Result<(u16, String)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Host", host)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

fn spec(service: &str, domain: &str, path: &str, port: u16) -> RouteSpec {
    RouteSpec {
        service: service.into(),
        domain: domain.into(),
        path: path.into(),
        port,
    }
}

#[tokio::test]
async fn caddy_backend_upserts_without_duplicates_orders_before_a_catch_all_and_deletes()
-> Result<()> {
    let (admin_port, http_port) = (free_port()?, free_port()?);
    let admin = format!("127.0.0.1:{admin_port}");
    // Like Debian's default Caddyfile: one server whose only route is a catch-all.
    let config = json!({
        "admin": {"listen": admin},
        "apps": {"http": {"servers": {"srv0": {
            "listen": [format!("127.0.0.1:{http_port}")],
            "automatic_https": {"disable": true},
            "routes": [{"handle": [{"handler": "static_response", "body": "catch-all"}]}],
        }}}},
    });
    let _caddy = MachineCaddy::start(&config, &admin).await?;
    let proxy = CaddyAdmin::new(&admin, Duration::from_secs(5))?;
    let (web, api) = (upstream("web").await?, upstream("api").await?);
    let routes = ordered_routes(&[
        spec("web", "example.test", "/", web),
        spec("api", "example.test", "/api/", api),
    ]);

    // The duplicate-id trap: upserting twice leaves one copy, before the catch-all.
    for _ in 0..2 {
        proxy.upsert("srv0", 0, &routes[1]).await?;
    }
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    assert_eq!(route_ids(&server["routes"]), ["ferry-web", "-"]);
    assert_eq!(
        through(http_port, "example.test", "/x").await?,
        (200, "web".into())
    );
    assert_eq!(
        through(http_port, "other.test", "/").await?,
        (200, "catch-all".into())
    );
    // Insert the specific route first; appending at the end also works.
    proxy.insert("srv0", 0, &routes[0]).await?;
    let extra = ordered_routes(&[spec("tail", "tail.test", "/", web)]);
    proxy.insert("srv0", 3, &extra[0]).await?;
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    assert_eq!(
        route_ids(&server["routes"]),
        ["ferry-api", "ferry-web", "-", "ferry-tail"]
    );
    assert_eq!(
        through(http_port, "example.test", "/api/v1").await?,
        (200, "api".into())
    );
    assert_eq!(
        through(http_port, "example.test", "/apix").await?,
        (200, "web".into())
    );

    // The tick step: ferry-tail is unwanted and sits behind the catch-all; one pass deletes
    // it, the next pass is one GET and no write.
    let routing = Routing {
        proxy: proxy.clone(),
        server: "srv0".into(),
        create: None,
    };
    let specs = [
        spec("web", "example.test", "/", web),
        spec("api", "example.test", "/api/", api),
    ];
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(r.ok, "{:?}", r.lines);
    assert_eq!(r.writes, 1, "{:?}", r.lines);
    assert!(r.lines[0].contains("ferry-tail"), "{:?}", r.lines);
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(r.ok && r.writes == 0 && r.lines.is_empty(), "{r:?}");

    // Someone reorders (general route first): one rewrite restores the order and keeps the
    // catch-all last.
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    let mut swapped = server["routes"].as_array().cloned().unwrap_or_default();
    swapped.swap(0, 1);
    proxy.set_routes("srv0", &swapped, true).await?;
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(r.ok && r.writes == 1, "{r:?}");
    assert!(r.lines.iter().any(|l| l.contains("order")), "{:?}", r.lines);
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    assert_eq!(
        route_ids(&server["routes"]),
        ["ferry-api", "ferry-web", "-"]
    );

    // Deleting twice: the second is a 404, which counts as done.
    proxy.delete("ferry-api").await?;
    proxy.delete("ferry-api").await?;
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    assert_eq!(route_ids(&server["routes"]), ["ferry-web", "-"]);

    // Errors name the admin address and the route.
    let Err(e) = proxy.insert("nope", 0, &routes[0]).await else {
        bail!("inserting into a missing server worked");
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&admin) && msg.contains("ferry-api") && !e.is_unreachable(),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn caddy_backend_over_a_unix_socket_creates_a_missing_server_and_reports_unreachable()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket: PathBuf = dir.path().join("admin.sock");
    let admin = format!("unix/{}", socket.display());
    // An empty Caddy: no apps at all, as a NixOS Caddy without virtual hosts.
    let caddy = MachineCaddy::start(&json!({"admin": {"listen": admin}}), &admin).await?;
    let proxy = CaddyAdmin::new(&admin, Duration::from_secs(5))?;
    assert_eq!(proxy.server("ferry").await?, None);
    let http_port = free_port()?;
    let web = upstream("web").await?;
    let routing = Routing {
        proxy: proxy.clone(),
        server: "ferry".into(),
        create: Some(server_value(&[format!("127.0.0.1:{http_port}")], false)),
    };
    let specs = [spec("web", "example.test", "/", web)];
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(r.ok && r.writes == 1, "{r:?}");
    assert!(
        r.lines[0].contains("created Caddy server ferry"),
        "{:?}",
        r.lines
    );
    assert_eq!(
        through(http_port, "example.test", "/").await?,
        (200, "web".into())
    );
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(r.ok && r.writes == 0, "{r:?}");

    // Caddy gone: an error naming the socket, and "retrying next tick" from the step.
    drop(caddy);
    let Err(e) = proxy.server("ferry").await else {
        bail!("a stopped Caddy answered");
    };
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().contains(&admin), "{e}");
    let r = reassert(&routing, &specs, &BTreeSet::new()).await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.lines[0].contains(&admin) && r.lines[0].contains("retrying next tick"),
        "{:?}",
        r.lines
    );
    // Nothing to route: an unreachable Caddy is not an error.
    let r = reassert(&routing, &[], &BTreeSet::new()).await;
    assert!(r.ok && r.lines.is_empty(), "{r:?}");
    Ok(())
}

/// GET `path` through the host's Caddy (its bridge address, port 80) with a Host header,
/// from inside the host; returns the status and body.
fn via_caddy(t: &AgentBed, domain: &str, path: &str) -> Result<(u16, String)> {
    let out = t.host().sh_ok(&format!(
        "curl -s -o - -w '\\n%{{http_code}}' -H 'Host: {domain}' http://{}:80{path}",
        t.host().ip()
    ))?;
    ferry_tests::host::parse_curl_output(&out)
}

fn with_http(mut s: Value, who: &str, domain: &str, path: &str) -> Value {
    let port: u16 = s["env"]["PORT"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    s["env"]["WHO"] = json!(who);
    s["http"] = json!({"domain": domain, "path": path, "internalPort": port});
    s
}

fn phases(out: &ferry_tests::Output) -> &str {
    out.stdout
        .lines()
        .find(|l| l.starts_with("phases: "))
        .unwrap_or("")
}

/// Checks what a request loop through Caddy saw while a restart-strategy update ran (one
/// `CODE RELEASE` line per request): it began with the old release answering and ended with
/// the new one, the old never answered after the new one did, and every failure is Caddy's
/// 502 (upstream down) inside the one window between the old release's last answer and the
/// new one's first: the restart's gap, not a lost route (404, the host's own site) nor a
/// timeout. Returns a line with the counts.
fn restart_window(answers: &str) -> Result<String> {
    let lines: Vec<(&str, &str)> = answers
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    fn ok<'a>(release: &'a str) -> impl Fn(&(&str, &str)) -> bool + 'a {
        move |&(code, body)| code == "200" && body == release
    }
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        bail!("the request loop recorded nothing");
    };
    if !ok("1")(first) || !ok("2")(last) {
        bail!("the loop did not span the update (first {first:?}, last {last:?}):\n{answers}");
    }
    let last_old = lines.iter().rposition(ok("1")).unwrap_or(0);
    let first_new = lines.iter().position(ok("2")).unwrap_or(lines.len());
    if last_old > first_new {
        bail!(
            "release 1 answered after release 2 had (lines {first_new} and {last_old}):\n{answers}"
        );
    }
    for (i, line) in lines.iter().enumerate() {
        let answered = ok("1")(line) || ok("2")(line);
        let in_gap = i > last_old && i < first_new;
        if !(answered || (in_gap && line.0 == "502")) {
            bail!("request {i} got {line:?}, outside the restart's gap or not a 502:\n{answers}");
        }
    }
    Ok(format!(
        "{} requests, {} failed (502, all in the restart's gap), release 1 until request {last_old}, release 2 from request {first_new}",
        lines.len(),
        first_new - last_old - 1
    ))
}

#[tokio::test]
async fn agent_routes_services_through_the_hosts_caddy_and_repairs_drift() -> Result<()> {
    // The bed hosts run Debian's Caddy: srv0 on :80 with a catch-all file server.
    let t = AgentBed::start_with("[timeouts]\nsettleSec = 1\n[caddy]\nserver = \"srv0\"\n").await?;
    let c = t.closures;
    // RELEASE tells the request loop below which version answered (api owns /version).
    let web = |path: &str| {
        let mut s = with_http(service("web", path, 8101), "web", "example.test", "/");
        s["env"]["RELEASE"] = json!(if path == c.v1 { "1" } else { "2" });
        s
    };
    // `api` owns /version on the same domain: the more specific path must win.
    let api = |path: &str| {
        with_http(
            service("api", path, 8102),
            "api",
            "example.test",
            "/version",
        )
    };

    t.publish(&manifest(1, vec![web(&c.v1), api(&c.v2)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "first tick failed");
    assert!(
        out.stdout
            .contains("routes: added ferry-web → 127.0.0.1:8101"),
        "{}",
        out.stdout
    );
    assert_eq!(t.caddy_route_ids()?, ["ferry-api", "ferry-web", "-"]);
    assert_eq!(
        via_caddy(&t, "example.test", "/version")?,
        (200, "2.0.0".into())
    );
    assert_eq!(
        via_caddy(&t, "example.test", "/env/WHO")?,
        (200, "web".into())
    );
    // Other domains still reach the host's own site.
    let (status, body) = via_caddy(&t, "other.test", "/")?;
    assert!(status == 200 && !body.contains("WHO"), "{status} {body}");

    // Converged: one GET of the routes, no write.
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    let s = summary(&out)?;
    assert_eq!(
        (s.get("caddyRequests")?, s.get("routeWrites")?),
        (1, 0),
        "{s}"
    );
    assert!(!out.stdout.contains("routes: "), "{}", out.stdout);

    // Caddy restarted without --resume: the API's routes are gone; the next (no-op) tick
    // puts them back and says it was drift.
    t.host().sh_ok("systemctl restart caddy")?;
    eventually("Caddy back after restart", Duration::from_secs(20), || {
        Ok(t.host().caddy_admin("GET", "/config/", None)?.0 == 200)
    })?;
    assert_eq!(t.caddy_route_ids()?, ["-"], "the restart kept API routes");
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert!(
        out.stdout
            .contains("routes: repaired ferry-web (missing — Caddy restarted or reloaded?)"),
        "{}",
        out.stdout
    );
    let s = summary(&out)?;
    assert_eq!(s.get("routeWrites")?, 2, "{s}");
    assert_eq!(t.caddy_route_ids()?, ["ferry-api", "ferry-web", "-"]);
    assert_eq!(
        via_caddy(&t, "example.test", "/version")?,
        (200, "2.0.0".into())
    );

    // A one-service update (web v1 → v2, restart strategy), timed by phase, while a request
    // loop (loopback, bounded) goes through Caddy to web from before the tick until after it.
    t.publish(&manifest(2, vec![web(&c.v2), api(&c.v2)]))
        .await?;
    let bound = 20_000;
    t.host().sh_ok(&format!(
        "rm -f /tmp/loop.txt /tmp/loop.done /tmp/loop.stop; \
         (i=0; while [ ! -e /tmp/loop.stop ] && [ $i -lt {bound} ]; do i=$((i+1)); rm -f /tmp/loop.body; \
         code=$(curl -s -o /tmp/loop.body -m 2 -w '%{{http_code}}' -H 'Host: example.test' http://{}:80/env/RELEASE); \
         echo \"$code $(cat /tmp/loop.body 2>/dev/null)\"; done > /tmp/loop.txt; touch /tmp/loop.done) >/dev/null 2>&1 &",
        t.host().ip()
    ))?;
    eventually(
        "the request loop's first answer",
        Duration::from_secs(20),
        || Ok(!t.host().sh_ok("head -n 1 /tmp/loop.txt")?.trim().is_empty()),
    )?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    t.host().sh_ok("touch /tmp/loop.stop")?;
    eventually("request loop finished", Duration::from_secs(20), || {
        Ok(t.host().path_in_host("/tmp/loop.done").exists())
    })?;
    let answers = t.host().sh_ok("cat /tmp/loop.txt")?;
    let loop_report = restart_window(&answers)?;
    eprintln!(
        "one-service update (restart strategy): {}\n{}\nrequest loop through Caddy: {loop_report}",
        summary(&out)?,
        phases(&out)
    );
    assert_eq!(
        via_caddy(&t, "example.test", "/env/WHO")?,
        (200, "web".into())
    );

    // api removed: its route goes, /version falls through to web.
    t.publish(&manifest(3, vec![web(&c.v2)])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert!(
        out.stdout.contains("routes: deleted ferry-api"),
        "{}",
        out.stdout
    );
    assert_eq!(t.caddy_route_ids()?, ["ferry-web", "-"]);
    assert_eq!(
        via_caddy(&t, "example.test", "/version")?,
        (200, "2.0.0".into())
    );

    // Caddy stopped: the update still deploys, the tick says where Caddy was expected and
    // exits 1; once Caddy is back the next tick routes again.
    t.host().sh_ok("systemctl stop caddy")?;
    t.publish(&manifest(4, vec![web(&c.v1), api(&c.v1)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "an unreachable Caddy must fail the tick");
    let config: Value = serde_json::from_str(&t.host().sh_ok(&format!("{AGENT} config --json"))?)?;
    let admin = config["caddy"]["admin"].as_str().unwrap_or("?");
    assert!(
        out.stdout
            .contains(&format!("Caddy admin API at {admin} unreachable"))
            && out.stdout.contains("retrying next tick"),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0", "web not deployed");
    assert_eq!(t.get(8102, "/version")?.trim(), "1.0.0", "api not deployed");
    t.host().sh_ok("systemctl start caddy")?;
    eventually("Caddy started", Duration::from_secs(20), || {
        Ok(t.host().caddy_admin("GET", "/config/", None)?.0 == 200)
    })?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "routes not repaired after Caddy came back");
    assert_eq!(t.caddy_route_ids()?, ["ferry-api", "ferry-web", "-"]);
    assert_eq!(
        via_caddy(&t, "example.test", "/version")?,
        (200, "1.0.0".into())
    );
    assert_eq!(
        via_caddy(&t, "example.test", "/env/WHO")?,
        (200, "web".into())
    );
    Ok(())
}
