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
use ferry_agent::route_step::{Routing, reassert, server_value};
use ferry_agent::routes::{RouteSpec, ordered_routes};
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

fn ids(routes: &Value) -> Vec<String> {
    routes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["@id"].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .unwrap_or_default()
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
    assert_eq!(ids(&server["routes"]), ["ferry-web", "-"]);
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
        ids(&server["routes"]),
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
    assert_eq!(ids(&server["routes"]), ["ferry-api", "ferry-web", "-"]);

    // Deleting twice: the second is a 404, which counts as done.
    proxy.delete("ferry-api").await?;
    proxy.delete("ferry-api").await?;
    let server = proxy.server("srv0").await?.context("srv0 missing")?;
    assert_eq!(ids(&server["routes"]), ["ferry-web", "-"]);

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
