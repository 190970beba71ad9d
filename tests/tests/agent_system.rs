//! Whole-host systems (issue 18), the agent's side, inside a real nspawn host with the real
//! system profile (`/nix/var/nix/profiles/system`), real `nix-env`, and the commands run as
//! transient units by the host's systemd over D-Bus. NixOS cannot boot on the bed, so the
//! systems are stand-ins (`closures.nix`) whose `switch-to-configuration` records each call
//! and, on `test`, does what the test needs: succeed, fail, leave a unit failed, take the
//! network down, stop a Ferry service, or hang.
//!
//! One host, one boot: off by default (a line, nothing run); a switch (`test`, then `boot`
//! only after the check); a system that fails to activate, one that fails a unit, one that
//! cuts the host off from the bucket, one that stops a Ferry service and one whose switch
//! never returns (stopped at `switchTimeoutSec`) are each switched back and quarantined,
//! never made the boot default, their generation deleted, while the services still deploy;
//! a path that is not a system is refused; a new kernel, pushed with `ferry push --system`,
//! is reported as a reboot needed; a tick cut off mid-switch is undone by the next.

use anyhow::Result;
use ferry_tests::Output;
use ferry_tests::agent_bed::{AGENT, AgentBed, HOST, manifest, service};
use ferry_tests::binaries::built_binary;
use ferry_tests::fleet_dev::FleetDev;
use serde_json::{Value, json};

const PORT: u16 = 8261;

fn with_system(generation: u32, web: &str, system: &str) -> Value {
    let mut m = manifest(generation, vec![service("web", web, PORT)]);
    m["systems"] = json!({ HOST: {"storePath": system, "revision": format!("rev-{generation}")} });
    m
}

fn profile(t: &AgentBed) -> Result<String> {
    Ok(t.host()
        .sh_ok("readlink -e /nix/var/nix/profiles/system || true")?
        .trim()
        .to_owned())
}

/// The stand-ins' calls since the last look, as `(path, action)`.
fn calls(t: &AgentBed) -> Result<Vec<(String, String)>> {
    let text = t.host().sh_ok(
        "cat /var/lib/ferry-bed-system/calls 2>/dev/null; rm -f /var/lib/ferry-bed-system/calls",
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, a)| (p.to_owned(), a.to_owned()))
        .collect())
}

fn call(path: &str, action: &str) -> (String, String) {
    (path.to_owned(), action.to_owned())
}

/// The system profile's generation links, e.g. `["system-1-link"]`.
fn generations(t: &AgentBed) -> Result<Vec<String>> {
    Ok(t.host()
        .sh_ok("cd /nix/var/nix/profiles && ls -d system-*-link 2>/dev/null || true")?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn has(out: &Output, text: &str) -> bool {
    out.stdout.contains(text)
}

#[tokio::test]
async fn systems_switch_check_then_boot_and_every_failure_is_switched_back() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let s = &c.systems;

    // Off by default: the entry is named, nothing runs.
    t.publish(&with_system(1, &c.v1, &s.ok)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert!(has(&out, "system deploys are off here"), "{}", out.stdout);
    assert_eq!(profile(&t)?, "", "a system was set with system deploys off");
    assert_eq!(calls(&t)?, []);

    t.configure("[timeouts]\nsettleSec = 1\n[system]\nenable = true\nswitchTimeoutSec = 60\n")?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "the first system did not switch");
    assert!(has(&out, &format!("system: switched to {}", s.ok)));
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(calls(&t)?, [call(&s.ok, "test"), call(&s.ok, "boot")]);
    assert_eq!(t.get(PORT, "/version")?.trim(), "1.0.0");
    let status = t.host().exec(&[AGENT, "status", "--json"])?;
    let doc: Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(doc["system"]["running"], json!(s.ok));
    let out = t.reconcile()?;
    assert_eq!(out.status, 0);
    assert_eq!(calls(&t)?, [], "a running system was switched to again");

    // Not a system (a service's closure): refused before anything changes.
    t.publish(&with_system(2, &c.v1, &c.v2)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        has(&out, "is not a NixOS system") && has(&out, "nothing changed"),
        "{}",
        out.stdout
    );
    assert_eq!((profile(&t)?, calls(&t)?), (s.ok.clone(), vec![]));

    // Activation fails: back to the good system, never its boot entry, generation gone.
    let before = generations(&t)?;
    t.publish(&with_system(3, &c.v1, &s.fails)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        has(&out, "switch-to-configuration test failed")
            && has(&out, &format!("switched back to {}", s.ok))
            && has(&out, "quarantined"),
        "{}",
        out.stdout
    );
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(calls(&t)?, [call(&s.fails, "test"), call(&s.ok, "test")]);
    assert_eq!(
        generations(&t)?,
        before,
        "the failed generation is still there"
    );
    // Quarantined: the same manifest tries nothing.
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(has(&out, "is quarantined"), "{}", out.stdout);
    assert_eq!(calls(&t)?, []);

    // A unit failed by the switch: switched back; the service change of the same tick
    // still deploys, after it.
    t.publish(&with_system(4, &c.v2, &s.fails_a_unit)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        has(&out, "units failed by the switch: ferry-bed-broken.service"),
        "{}",
        out.stdout
    );
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(
        calls(&t)?,
        [call(&s.fails_a_unit, "test"), call(&s.ok, "test")]
    );
    assert_eq!(t.get(PORT, "/version")?.trim(), "2.0.0");

    // Cut off from the bucket by the switch: switched back, which brings the network back.
    t.publish(&with_system(5, &c.v2, &s.breaks_network)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(has(&out, "the bucket no longer answers"), "{}", out.stdout);
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(
        calls(&t)?,
        [call(&s.breaks_network, "test"), call(&s.ok, "test")]
    );

    // A system that stops one of Ferry's services: switched back, and the service is
    // running again by the end of the tick.
    t.publish(&with_system(7, &c.v2, &s.stops_web)).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(has(&out, "Ferry services down: web"), "{}", out.stdout);
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(
        calls(&t)?,
        [call(&s.stops_web, "test"), call(&s.ok, "test")]
    );
    assert_eq!(t.get(PORT, "/version")?.trim(), "2.0.0");

    // A switch that never returns is stopped at system.switchTimeoutSec and switched back.
    t.configure("[timeouts]\nsettleSec = 1\n[system]\nenable = true\nswitchTimeoutSec = 3\n")?;
    t.publish(&with_system(8, &c.v2, &s.hangs)).await?;
    let started = std::time::Instant::now();
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        has(&out, "ran past its limit of 3 s and was stopped"),
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the hung switch held the tick for {:?}",
        started.elapsed()
    );
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(calls(&t)?, [call(&s.hangs, "test"), call(&s.ok, "test")]);
    assert_eq!(
        t.host().sh_ok("pgrep -f 'sleep 3600' || true")?.trim(),
        "",
        "the hung switch's process outlived its unit"
    );
    t.configure("[timeouts]\nsettleSec = 1\n[system]\nenable = true\nswitchTimeoutSec = 60\n")?;

    // A new kernel, pushed as the developer does (`ferry push --system` against Garage):
    // switched, made the boot default, and a reboot reported, not done.
    t.host()
        .sh_ok(&format!("ln -sfn {} /run/booted-system", s.ok))?;
    let s3 = t.bed.s3();
    let dev = FleetDev::new(
        built_binary("ferry", "FERRY_BIN")?,
        s3,
        s3,
        &c.secret_key_file,
    )?;
    let pushed = dev.ok(&[
        "push",
        "--system",
        HOST,
        &s.ok_new_kernel,
        "--revision",
        "kernel-6.6",
    ])?;
    assert!(
        pushed.stdout.contains(&format!(
            "~ system {HOST}: {} -> {}",
            s.hangs, s.ok_new_kernel
        )),
        "{}",
        pushed.stdout
    );
    let out = t.reconcile()?;
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(has(&out, "reboot the host"), "{}", out.stdout);
    assert_eq!(profile(&t)?, s.ok_new_kernel);
    assert_eq!(
        calls(&t)?,
        [
            call(&s.ok_new_kernel, "test"),
            call(&s.ok_new_kernel, "boot")
        ]
    );

    // A tick cut off after setting the profile (its pending mark left in state): the next
    // one switches back and quarantines that system.
    let mut state = t.state()?;
    state["system"]["pending"] = json!(s.ok_new_kernel);
    t.host().put_bytes(
        "/var/lib/ferry/state.json",
        &serde_json::to_vec(&state)?,
        0o600,
    )?;
    let state = t.state()?;
    assert_eq!(
        state["system"]["pending"],
        json!(s.ok_new_kernel),
        "{state}"
    );
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(has(&out, "cut off during its switch"), "{}", out.stdout);
    assert_eq!(profile(&t)?, s.ok);
    assert_eq!(calls(&t)?, [call(&s.ok, "test")]);
    Ok(())
}
