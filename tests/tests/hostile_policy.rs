//! Attacks by a *signed* manifest on the host around its services (issue 14, items 6–12),
//! each played on a real bed host: running as root's group or a host account, names that
//! land on Ferry's own units and directories, pulling in host units, reading another
//! service's secrets, routing to other domains and ports, and touching unit files Ferry did
//! not write — and one bad service blocking the rest.

use anyhow::Result;
use ferry_tests::Output;
use ferry_tests::agent_bed::{AgentBed, manifest, service};
use serde_json::{Value, json};

/// The last line of `out` about `service`.
fn line<'a>(out: &'a Output, service: &str) -> &'a str {
    let prefix = format!("{service}: ");
    out.stdout
        .lines()
        .rfind(|l| l.starts_with(&prefix))
        .unwrap_or("")
}

/// Asserts `service` was refused by host policy for a reason containing every one of `why`.
fn refused(out: &Output, service: &str, why: &[&str]) {
    let l = line(out, service);
    assert!(
        l.contains("REFUSED by host policy") && why.iter().all(|w| l.contains(w)),
        "{service} not refused for {why:?}:\n{}",
        out.stdout
    );
}

fn unit_exists(t: &AgentBed, unit: &str) -> bool {
    t.host()
        .path_in_host(&format!("/run/systemd/system/{unit}"))
        .exists()
}

/// The `Uid:` and `Gid:` lines of the main process of `unit`.
fn ids_of(t: &AgentBed, unit: &str) -> Result<String> {
    t.host().sh_ok(&format!(
        "grep -E '^(Uid|Gid|Groups):' /proc/$(systemctl show -p MainPID --value {unit})/status"
    ))
}

fn with(mut s: Value, pointer: &str, value: Value) -> Value {
    if let Some(slot) = s.pointer_mut(pointer) {
        *slot = value;
        return s;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if s.pointer(parent).is_none_or(Value::is_null) {
        s = with(s, parent, json!({}));
    }
    if let Some(obj) = s.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.insert(key.to_owned(), value);
    }
    s
}

#[tokio::test]
async fn services_cannot_run_with_roots_group_or_a_hosts_account() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let plain = service("plain", &c.v1, 8141);
    let rootgroup = with(
        service("rootgroup", &c.v1, 8142),
        "/exec/group",
        json!("root"),
    );
    let caddyuser = with(
        service("caddyuser", &c.v1, 8143),
        "/exec/user",
        json!("caddy"),
    );
    t.publish(&manifest(1, vec![plain.clone(), rootgroup, caddyuser]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(&out, "rootgroup", &["exec.group root", "allowedGroups"]);
    refused(&out, "caddyuser", &["exec.user caddy", "allowedUsers"]);
    for unit in ["ferry-rootgroup.service", "ferry-caddyuser.service"] {
        assert!(!unit_exists(&t, unit), "{unit} written");
        assert_ne!(t.show(unit, "ActiveState")?, "active", "{unit} started");
    }
    let ids = ids_of(&t, "ferry-plain.service")?;
    eprintln!("plain: {ids}");
    for l in ids.lines().filter(|l| l.starts_with("Gid:")) {
        assert!(
            !l.split_whitespace().skip(1).any(|g| g == "0"),
            "GID 0: {ids}"
        );
    }

    // Accounts the host allows: still never a group below GID 1000.
    t.host().sh_ok(
        "groupadd -g 1500 app && useradd -u 1500 -g app -M -s /usr/sbin/nologin app \
         && getent group caddy",
    )?;
    t.configure("allowedUsers = [\"app\", \"caddy\"]\nallowedGroups = [\"app\", \"caddy\"]")?;
    let app = with(
        with(service("app", &c.v1, 8144), "/exec/user", json!("app")),
        "/exec/group",
        json!("app"),
    );
    let caddygroup = with(
        service("caddygroup", &c.v1, 8145),
        "/exec/group",
        json!("caddy"),
    );
    let caddyuser = with(
        service("caddyuser", &c.v1, 8143),
        "/exec/user",
        json!("caddy"),
    );
    t.publish(&manifest(2, vec![plain, app, caddygroup, caddyuser]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(&out, "caddygroup", &["exec.group caddy", "below 1000"]);
    refused(&out, "caddyuser", &["exec.user caddy", "below 1000"]);
    let ids = ids_of(&t, "ferry-app.service")?;
    assert!(
        ids.contains("Uid:\t1500\t") && ids.contains("Gid:\t1500\t"),
        "{ids}"
    );
    Ok(())
}

#[tokio::test]
async fn services_named_after_ferrys_own_units_and_directories_are_refused() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let h = t.host();
    h.put_bytes("/var/lib/ferry-secrets/good.env", b"K=V\n", 0o600)?;
    h.sh_ok("chmod 0700 /var/lib/ferry-secrets")?;
    // The agent's own unit where NixOS puts it, an operator's unit that happens to start
    // with `ferry-`, and an operator's directory under /var/lib with that prefix.
    h.put_bytes(
        "/etc/systemd/system/ferry-agent.service",
        b"[Service]\nType=oneshot\nExecStart=/bin/true\n",
        0o644,
    )?;
    h.put_bytes(
        "/etc/systemd/system/ferry-metrics.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    )?;
    h.sh_ok("systemctl daemon-reload && mkdir -m 0700 /var/lib/ferry-backup && echo keep > /var/lib/ferry-backup/data")?;

    t.publish(&manifest(
        1,
        vec![
            service("agent", &c.v1, 8151),
            service("secrets", &c.v1, 8152),
            service("metrics", &c.v1, 8153),
            service("backup", &c.v1, 8154),
            service("web", &c.v1, 8155),
            // `nix-env --profile …/web-1-link` would re-point web's first generation.
            service("web-1-link", &c.v2, 8156),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    eprintln!(
        "after the tick:\n{}",
        h.sh("stat -c '%n %U %a' /var/lib/ferry-secrets /var/lib/ferry-secrets/good.env /var/lib/ferry-backup; \
              readlink -f /nix/var/nix/profiles/ferry/web; ls /run/systemd/system | grep ferry-")?
            .stdout
    );
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(&out, "agent", &["ferry-agent.service"]);
    refused(&out, "secrets", &["/var/lib/ferry-secrets"]);
    refused(&out, "metrics", &["ferry-metrics.service"]);
    refused(&out, "backup", &["/var/lib/ferry-backup"]);
    refused(&out, "web-1-link", &["profile", "web"]);
    for name in ["agent", "secrets", "metrics", "backup", "web-1-link"] {
        assert!(
            !unit_exists(&t, &format!("ferry-{name}.service")),
            "{name}: unit written"
        );
    }
    assert_eq!(
        h.sh_ok(
            "stat -c '%U %a' /var/lib/ferry-secrets /var/lib/ferry-secrets/good.env /var/lib/ferry-backup"
        )?,
        "root 700\nroot 600\nroot 700\n"
    );
    assert_eq!(t.show("ferry-metrics.service", "ActiveState")?, "inactive");
    assert_eq!(
        h.sh_ok("readlink -f /nix/var/nix/profiles/ferry/web")?
            .trim(),
        c.v1
    );
    assert_eq!(t.get(8155, "/version")?.trim(), "1.0.0");
    Ok(())
}

#[tokio::test]
async fn a_service_cannot_pull_in_or_order_itself_after_host_units() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    t.host().put_bytes(
        "/etc/systemd/system/host-secret.service",
        b"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/touch /run/host-secret-ran\n",
        0o644,
    )?;
    // The agent's own unit, as NixOS has it.
    t.host().put_bytes(
        "/etc/systemd/system/ferry-agent.service",
        b"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/touch /run/agent-unit-ran\n",
        0o644,
    )?;
    t.host().sh_ok("systemctl daemon-reload")?;
    // dependsOn becomes Wants= and After= of ferry-<target>.service: a target named
    // `agent` (deployed elsewhere, so not refused here by name) would pull in the agent.
    let mut elsewhere = service("agent", &c.v1, 8165);
    elsewhere["hosts"] = json!(["another-host"]);
    let chain = with(
        service("chain", &c.v1, 8166),
        "/dependsOn",
        json!(["agent"]),
    );
    let puller = with(
        service("puller", &c.v1, 8161),
        "/systemd",
        json!({"requires": ["host-secret.service"]}),
    );
    let late = with(
        service("late", &c.v1, 8162),
        "/systemd",
        json!({"after": ["multi-user.target"]}),
    );
    let ok = with(
        service("ok", &c.v1, 8163),
        "/systemd",
        json!({"after": ["network-online.target"]}),
    );
    let dep = with(
        service("dep", &c.v1, 8164),
        "/systemd",
        json!({"requires": ["ferry-ok.service"], "after": ["ferry-ok.service"]}),
    );
    t.publish(&manifest(
        1,
        vec![
            puller.clone(),
            late,
            ok.clone(),
            dep.clone(),
            elsewhere,
            chain,
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(
        &out,
        "puller",
        &["systemd.requires", "host-secret.service", "allowedUnits"],
    );
    refused(&out, "late", &["systemd.after", "multi-user.target"]);
    refused(
        &out,
        "chain",
        &["dependsOn names agent", "ferry-agent.service"],
    );
    assert!(
        !t.host().path_in_host("/run/host-secret-ran").exists(),
        "the host's unit was started"
    );
    assert!(
        !t.host().path_in_host("/run/agent-unit-ran").exists(),
        "the agent's unit was pulled in"
    );
    for unit in ["ferry-ok.service", "ferry-dep.service"] {
        assert_eq!(t.show(unit, "ActiveState")?, "active", "{unit}");
    }

    // The host's allowlist lets it through.
    t.configure("allowedUnits = [\"network-online.target\", \"host-secret.service\"]")?;
    t.publish(&manifest(2, vec![puller, ok, dep])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(t.host().path_in_host("/run/host-secret-ran").exists());
    Ok(())
}

#[tokio::test]
async fn a_service_cannot_read_another_services_secrets() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let h = t.host();
    h.put_bytes(
        "/var/lib/ferry-secrets/victim.env",
        b"SECRET=victim-only\n",
        0o600,
    )?;
    h.put_bytes(
        "/var/lib/ferry-secrets/thief/own.env",
        b"OWN=thief\n",
        0o600,
    )?;
    let victim = with(
        service("victim", &c.v1, 8171),
        "/envFile",
        json!("/var/lib/ferry-secrets/victim.env"),
    );
    let thief = with(
        service("thief", &c.v1, 8172),
        "/envFile",
        json!("/var/lib/ferry-secrets/victim.env"),
    );
    t.publish(&manifest(1, vec![victim.clone(), thief])).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(
        &out,
        "thief",
        &[
            "envFile /var/lib/ferry-secrets/victim.env",
            "/var/lib/ferry-secrets/thief.env",
            "/var/lib/ferry-secrets/thief/",
        ],
    );
    assert!(
        t.host()
            .sh("curl -sf http://127.0.0.1:8172/env/SECRET")?
            .stdout
            .is_empty(),
        "the thief read the secret"
    );
    assert_eq!(t.get(8171, "/env/SECRET")?, "victim-only");

    // Its own directory is fine.
    let thief = with(
        service("thief", &c.v1, 8172),
        "/envFile",
        json!("/var/lib/ferry-secrets/thief/own.env"),
    );
    t.publish(&manifest(2, vec![victim, thief])).await?;
    assert_eq!(t.reconcile()?.status, 0);
    assert_eq!(t.get(8172, "/env/OWN")?, "thief");
    Ok(())
}

/// `GET /version` through the host's Caddy on :80 with `Host: domain`: (status, body).
fn via_caddy(t: &AgentBed, domain: &str) -> Result<(u16, String)> {
    let out = t.host().sh_ok(&format!(
        "curl -s -o - -w '\\n%{{http_code}}' -H 'Host: {domain}' http://127.0.0.1/version"
    ))?;
    ferry_tests::host::parse_curl_output(&out)
}

fn routed(name: &str, path: &str, domain: &str, port: u16) -> Value {
    with(
        service(name, path, port),
        "/http",
        json!({"domain": domain, "path": "/", "internalPort": port}),
    )
}

#[tokio::test]
async fn routes_stay_on_allowed_domains_and_ports_and_never_take_a_hosts_site() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let h = t.host();
    // A site the host's own Caddyfile serves, and a listener of the host's own on a port
    // inside allowedPorts (Caddy's admin API, the obvious target, has no TCP port on a
    // host set up as the module does). Appended: the global options block must stay first.
    h.sh_ok(
        "printf '\\nhttp://host.ferry.test {\\n\\trespond /version \"host-site\"\\n}\\n\\nhttp://:9019 {\\n\\trespond \"host-listener\"\\n}\\n' >> /etc/caddy/Caddyfile \
         && systemctl reload caddy",
    )?;
    ferry_tests::agent_bed::eventually(
        "the host's site served",
        std::time::Duration::from_secs(20),
        || Ok(via_caddy(&t, "host.ferry.test")?.1 == "host-site"),
    )?;

    let hijack = routed("hijack", &c.v1, "host.ferry.test", 8181);
    // Its program listens on 8182; the route would dial the host's own listener.
    let mut admin = routed("admin", &c.v1, "admin.ferry.test", 9019);
    admin["env"]["PORT"] = json!("8182");
    let ok = routed("ok", &c.v1, "ok.ferry.test", 8183);
    t.publish(&manifest(1, vec![hijack, admin, ok])).await?;
    let out = t.reconcile()?;
    eprintln!("routes: {:?}", t.caddy_route_ids()?);
    assert_eq!(out.status, 1, "{}", out.stdout);
    assert_eq!(via_caddy(&t, "host.ferry.test")?, (200, "host-site".into()));
    assert!(
        out.stdout.contains("host.ferry.test") && out.stdout.contains("host's own Caddy"),
        "{}",
        out.stdout
    );
    refused(&out, "admin", &["9019", "listens"]);
    assert!(!unit_exists(&t, "ferry-admin.service"));
    assert_eq!(via_caddy(&t, "ok.ferry.test")?, (200, "1.0.0".into()));
    let ids = t.caddy_route_ids()?;
    assert!(
        !ids.iter()
            .any(|i| i == "ferry-hijack" || i == "ferry-admin"),
        "{ids:?}"
    );

    // The host narrows domains and ports.
    t.configure("allowedPorts = \"8180-8189\"\n[caddy]\ndomains = [\"*.apps.ferry.test\"]")?;
    let inside = routed("inside", &c.v1, "a.apps.ferry.test", 8184);
    let elsewhere = routed("elsewhere", &c.v1, "shop.example.test", 8185);
    let high = routed("high", &c.v1, "b.apps.ferry.test", 8300);
    t.publish(&manifest(2, vec![inside, elsewhere, high]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(&out, "elsewhere", &["shop.example.test", "caddy.domains"]);
    refused(&out, "high", &["8300", "allowedPorts"]);
    assert_eq!(via_caddy(&t, "a.apps.ferry.test")?, (200, "1.0.0".into()));
    assert_eq!(via_caddy(&t, "host.ferry.test")?, (200, "host-site".into()));
    Ok(())
}

#[tokio::test]
async fn unit_files_ferry_did_not_write_are_neither_stopped_nor_deleted() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let h = t.host();
    // An operator's unit in the agent's unit directory, with Ferry's prefix but not its
    // header.
    h.put_bytes(
        "/run/systemd/system/ferry-foreign.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    )?;
    h.sh_ok("systemctl daemon-reload && systemctl start ferry-foreign.service")?;
    t.publish(&manifest(1, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(line(&out, "foreign").is_empty(), "{}", out.stdout);
    assert!(unit_exists(&t, "ferry-foreign.service"), "deleted");
    assert_eq!(t.show("ferry-foreign.service", "ActiveState")?, "active");

    // Nor written over: a service of that name is refused.
    t.publish(&manifest(
        2,
        vec![
            service("alpha", &c.v1, 8101),
            service("foreign", &c.v1, 8102),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(
        &out,
        "foreign",
        &["ferry-foreign.service", "not written by Ferry"],
    );
    assert_eq!(
        h.sh_ok("cat /run/systemd/system/ferry-foreign.service")?,
        "[Service]\nExecStart=/bin/sleep infinity\n"
    );
    assert_eq!(t.show("ferry-foreign.service", "ActiveState")?, "active");
    Ok(())
}

#[tokio::test]
async fn one_service_breaking_host_policy_does_not_block_the_others() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    t.publish(&manifest(
        1,
        vec![service("alpha", &c.v1, 8101), service("beta", &c.v1, 8102)],
    ))
    .await?;
    assert_eq!(t.reconcile()?.status, 0);

    let beta = with(
        service("beta", &c.v2, 8102),
        "/envFile",
        json!("/etc/shadow"),
    );
    t.publish(&manifest(
        2,
        vec![
            service("alpha", &c.v2, 8101),
            beta,
            service("gamma", &c.v1, 8103),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "{}", out.stdout);
    refused(&out, "beta", &["envFile /etc/shadow"]);
    assert!(
        line(&out, "beta").contains(&format!("keeps running {}", c.v1)),
        "{}",
        out.stdout
    );
    assert_eq!(
        t.get(8101, "/version")?.trim(),
        "2.0.0",
        "alpha not updated"
    );
    assert_eq!(t.get(8102, "/version")?.trim(), "1.0.0", "beta changed");
    assert_eq!(t.get(8103, "/version")?.trim(), "1.0.0", "gamma not added");
    let state = t.state()?;
    assert_eq!(
        state["services"]["beta"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );

    // Unsigned, or not a manifest at all: refused whole, nothing changes.
    let before = t.unit_files()?;
    t.publish_unsigned(&manifest(3, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2, "{}", out.stdout);
    assert!(out.stdout.contains("not signed"), "{}", out.stdout);
    t.publish_bytes(b"{\"version\": 1, \"services\": [".to_vec())
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2, "{}", out.stdout);
    assert_eq!(t.unit_files()?, before);
    assert_eq!(t.get(8101, "/version")?.trim(), "2.0.0");
    Ok(())
}
