//! `ferry-agent rollback SERVICE` (issue 22 item 8) inside a real nspawn host with real Nix
//! profiles: v1 then v2 deployed, the verb takes the profile one generation back, v1 runs
//! and is healthy, the next tick on the unchanged manifest keeps v1, and publishing v3
//! deploys v3. Unknown services and a profile with no earlier generation are refused with
//! nothing changed.

use anyhow::Result;
use ferry_tests::Output;
use ferry_tests::agent_bed::{AGENT, AgentBed, manifest, service};
use serde_json::{Value, json};

fn checked(store_path: &str, port: u16) -> Value {
    let mut s = service("web", store_path, port);
    s["healthCheck"] = json!({
        "type": "http", "path": "/health", "port": port,
        "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 1, "retries": 3,
    });
    s
}

fn agent(t: &AgentBed, args: &[&str]) -> Result<Output> {
    let mut argv = vec![AGENT];
    argv.extend_from_slice(args);
    let out = t.host().exec(&argv)?;
    eprintln!(
        "--- {args:?} (exit {})\n{}{}",
        out.status, out.stdout, out.stderr
    );
    Ok(out)
}

fn profile_target(t: &AgentBed) -> Result<String> {
    Ok(t.host()
        .sh_ok("readlink -f /nix/var/nix/profiles/ferry/web")?
        .trim()
        .to_owned())
}

#[tokio::test]
async fn rollback_goes_one_generation_back_holds_it_and_a_new_manifest_moves_on() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8241;
    let v3 = &c.series[0];

    t.publish(&manifest(1, vec![checked(&c.v1, port)])).await?;
    assert_eq!(agent(&t, &["reconcile"])?.status, 0, "v1 did not deploy");
    t.publish(&manifest(2, vec![checked(&c.v2, port)])).await?;
    assert_eq!(agent(&t, &["reconcile"])?.status, 0, "v2 did not deploy");
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");

    // Refused with nothing changed: a service this host does not run.
    let out = agent(&t, &["rollback", "nope"])?;
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .contains("unknown service `nope`: this host runs web"),
        "{}",
        out.stderr
    );

    let out = agent(&t, &["rollback", "web"])?;
    assert_eq!(out.status, 0, "the rollback failed");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("web: restarted on {} (was {})", c.v1, c.v2))),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");
    assert_eq!(t.show("ferry-web.service", "ActiveState")?, "active");
    assert_eq!(profile_target(&t)?, c.v1, "the profile did not go back");
    let state = t.state()?;
    assert_eq!(state["rollbacks"]["web"]["storePath"], c.v1.as_str());
    assert_eq!(state["rollbacks"]["web"]["from"], c.v2.as_str());
    assert_eq!(
        state["services"]["web"]["service"]["artifact"]["storePath"],
        c.v1.as_str()
    );

    // The next tick, on the unchanged manifest (still v2), keeps v1 running untouched.
    let inv = t.show("ferry-web.service", "InvocationID")?;
    let out = agent(&t, &["reconcile"])?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "web: held at {} by `ferry-agent rollback` (the manifest names {})",
            c.v1, c.v2
        )),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");
    assert_eq!(
        t.show("ferry-web.service", "InvocationID")?,
        inv,
        "restarted"
    );
    assert_eq!(profile_target(&t)?, c.v1);

    // Generation 1 has none before it: refused, nothing changed.
    let out = agent(&t, &["rollback", "web"])?;
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .contains("service `web`: no generation before 1 in /nix/var/nix/profiles/ferry/web"),
        "{}",
        out.stderr
    );
    assert_eq!(t.show("ferry-web.service", "InvocationID")?, inv);

    // Publishing v3 ends the hold and deploys v3.
    t.publish(&manifest(3, vec![checked(v3, port)])).await?;
    let out = agent(&t, &["reconcile"])?;
    assert_eq!(out.status, 0, "v3 did not deploy");
    assert!(
        out.stdout.contains(&format!(
            "web: rollback hold on {} ended (the manifest now names {v3})",
            c.v1
        )),
        "{}",
        out.stdout
    );
    assert_eq!(t.get(port, "/version")?.trim(), "6.1.0");
    assert_eq!(profile_target(&t)?, *v3);
    assert!(t.state()?.get("rollbacks").is_none());
    Ok(())
}
