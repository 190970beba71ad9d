//! Benchmark: restarting one changed service through the agent's zbus backend (one `Reload`
//! and one `RestartUnit` job awaited to its `JobRemoved`) vs the same done with
//! `systemctl daemon-reload` + `systemctl restart` processes, side by side in one run on a
//! bed host. Run `bench/restart_zbus_vs_systemctl.sh` (root; `BENCH_ROUNDS`, default 20).
//!
//! Each round rewrites the unit (a new `Environment=` value) before the timed part, so the
//! reload has a real change to pick up, and runs the three ways in turn:
//! - zbus: on the agent's open bus connection;
//! - zbus + connect: a new connection first, as one agent tick pays once;
//! - systemctl: timed inside the host by bash's `$EPOCHREALTIME` around the two commands,
//!   so the cost of entering the host from the machine is not counted against systemctl.
//!
//! `daemon-reload` dominates both, so the restart alone (unit unchanged, no reload) is
//! measured both ways too: that is where a process per call shows.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_agent::backend::systemd::{DbusSystemd, Systemd};
use ferry_agent::plan::Job;
use ferry_bench::stats::{Table, summarize};
use ferry_tests::{Bed, BedOptions, Host};

const UNIT: &str = "ferry-rb.service";
const UNIT_PATH: &str = "/run/systemd/system/ferry-rb.service";
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

fn unit_text(round: usize, how: &str) -> String {
    format!("[Service]\nType=exec\nExecStart=/bin/sleep 1000\nEnvironment=ROUND={round}-{how}\n")
}

/// One reload + restart on `sd`; fails unless the job ends `done`.
async fn reload_restart(sd: &DbusSystemd) -> Result<()> {
    sd.reload().await?;
    restart(sd).await
}

/// One restart on `sd`; fails unless the job ends `done`.
async fn restart(sd: &DbusSystemd) -> Result<()> {
    let result = sd.run_job(UNIT, Job::Restart).await?;
    if result != "done" {
        bail!("restart of {UNIT} through zbus ended {result:?}");
    }
    Ok(())
}

/// Reload + restart with systemctl inside the host; returns the time bash measured there.
fn systemctl_round(host: &Host, round: usize) -> Result<f64> {
    // The unit text has no quote or `%`, so it is a safe printf format.
    let script = format!(
        "printf '{}' > {UNIT_PATH} && t0=$EPOCHREALTIME && systemctl daemon-reload && systemctl restart {UNIT} && t1=$EPOCHREALTIME && echo \"$t0 $t1\"",
        unit_text(round, "systemctl").replace('\n', "\\n"),
    );
    bash_timed(host, &script)
}

/// `systemctl restart` alone inside the host, timed there.
fn systemctl_restart_only(host: &Host) -> Result<f64> {
    bash_timed(
        host,
        &format!(
            "t0=$EPOCHREALTIME && systemctl restart {UNIT} && t1=$EPOCHREALTIME && echo \"$t0 $t1\""
        ),
    )
}

/// Runs `script` with bash in the host; it prints two `$EPOCHREALTIME` stamps, and the
/// milliseconds between them are returned.
fn bash_timed(host: &Host, script: &str) -> Result<f64> {
    let out = host.exec(&["/bin/bash", "-c", script])?;
    if !out.success() {
        bail!(
            "systemctl in the host failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    let times: Vec<f64> = out
        .stdout
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading bash's timestamps from {:?}", out.stdout))?;
    match times.as_slice() {
        [t0, t1] => Ok((t1 - t0) * 1000.0),
        _ => bail!("expected two timestamps, got {:?}", out.stdout),
    }
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(20)?;
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
    let address = host.dbus_address()?;
    host.put_bytes(UNIT_PATH, unit_text(0, "start").as_bytes(), 0o644)?;
    let sd = DbusSystemd::connect(Some(&address), JOB_TIMEOUT).await?;
    sd.reload().await?;
    if sd.run_job(UNIT, Job::Start).await? != "done" {
        bail!("{UNIT} did not start in the bed host");
    }

    let (mut zbus, mut zbus_connect, mut systemctl) = (Vec::new(), Vec::new(), Vec::new());
    let (mut zbus_restart, mut systemctl_restart) = (Vec::new(), Vec::new());
    // One untimed warm-up round of each way, then the measured rounds.
    for round in 0..=rounds {
        host.put_bytes(UNIT_PATH, unit_text(round, "zbus").as_bytes(), 0o644)?;
        let started = Instant::now();
        reload_restart(&sd).await?;
        let a = ms(started.elapsed());

        host.put_bytes(UNIT_PATH, unit_text(round, "connect").as_bytes(), 0o644)?;
        let started = Instant::now();
        let fresh = DbusSystemd::connect(Some(&address), JOB_TIMEOUT).await?;
        reload_restart(&fresh).await?;
        let b = ms(started.elapsed());
        drop(fresh);

        let c = systemctl_round(host, round)?;

        let started = Instant::now();
        restart(&sd).await?;
        let d = ms(started.elapsed());
        let e = systemctl_restart_only(host)?;
        if round > 0 {
            zbus.push(a);
            zbus_connect.push(b);
            systemctl.push(c);
            zbus_restart.push(d);
            systemctl_restart.push(e);
        }
    }
    let state = host.sh_ok(&format!("systemctl is-active {UNIT}"))?;
    if state.trim() != "active" {
        bail!("{UNIT} is {state:?} after the rounds");
    }

    let mut table = Table::new(&[
        "one changed service",
        "median ms",
        "p90 ms",
        "min ms",
        "systemctl ÷ this (median)",
    ]);
    let groups = [
        (
            "reload + restart",
            vec![
                ("zbus (open connection)", &zbus),
                ("zbus + connect", &zbus_connect),
                ("systemctl processes", &systemctl),
            ],
        ),
        (
            "restart only",
            vec![
                ("zbus (open connection)", &zbus_restart),
                ("systemctl process", &systemctl_restart),
            ],
        ),
    ];
    for (group, ways) in groups {
        // The last way of each group is the systemctl baseline the ratios are against.
        let baseline = ways
            .last()
            .and_then(|(_, values)| summarize(values))
            .map_or(f64::NAN, |s| s.median);
        for (name, values) in ways {
            let Some(s) = summarize(values) else { continue };
            table.row(vec![
                format!("{group}: {name}"),
                format!("{:.2}", s.median),
                format!("{:.2}", s.p90),
                format!("{:.2}", s.min),
                format!("{:.2}x", baseline / s.median),
            ]);
        }
    }
    println!("{rounds} rounds on bed host {}\n", host.name());
    print!("{}", table.render());
    Ok(())
}
