//! Benchmark: a no-op tick of the release-built `ferry-agent reconcile` inside a bed host
//! against the bed's Garage, manifest unchanged since the last tick. Run
//! `bench/agent_noop_tick.sh` (root; `BENCH_ROUNDS`, default 30).
//!
//! With `FERRY_AGENT_BASELINE_BIN` naming another build (`bench/before_after.sh` sets it),
//! both agents tick the same host in alternating order, round by round, on the same state,
//! and a last table gives each figure's after ÷ before ratio of medians: machine load that
//! drifts during the run falls on both alike.
//!
//! The host runs two services deployed by a first tick; then every tick finds the manifest
//! unchanged (a conditional GET answered 304) and only checks drift. The figures come from
//! the agent's own `tick:` line (requests, wall ms from the start of `reconcile`, CPU ms and
//! peak RSS of the process), plus the wall time seen from the machine, which adds process
//! start, minus the cost of entering the host (measured with `true`). Goal (issue 4): one
//! request, under 50 ms wall, under 30 MiB RSS; each ratio is median ÷ goal (below 1 meets it).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferry_bench::stats::{Table, summarize};
use ferry_tests::agent_bed::{AGENT, sign};
use ferry_tests::{
    Bed, BedOptions, BindRo, Closures, Host, Output, TickSummary, install_agent_config,
};
use serde_json::{Value, json};

/// The name the manifest uses for the bed host.
const HOST: &str = "bedhost";
/// Where the baseline agent appears inside the host, beside [`AGENT`].
const BASELINE: &str = "/usr/local/bin/ferry-agent-baseline";

/// The agent's `tick:` line of a no-op tick; an error unless the tick succeeded and
/// changed nothing (a benchmark of a tick that did work would time the wrong thing).
fn noop_tick(out: &Output) -> Result<TickSummary> {
    let tick = TickSummary::of(out)?;
    if !tick.is_noop()? {
        bail!("the tick was not a no-op:\n{}", out.stdout);
    }
    Ok(tick)
}

/// One figure of every measured tick: `Ok(None)` when a tick could not measure it (the
/// agent printed `unknown`), so it is reported as unknown and never as 0.
fn figure(ticks: &[TickSummary], key: &str, scale: f64) -> Result<Option<Vec<f64>>> {
    let mut values = Vec::with_capacity(ticks.len());
    for tick in ticks {
        match tick.measured(key)? {
            Some(v) => values.push(v as f64 / scale),
            None => return Ok(None),
        }
    }
    Ok(Some(values))
}

fn service(name: &str, store_path: &str, port: u16) -> Value {
    json!({
        "name": name,
        "artifact": {"type": "nix-closure", "storePath": store_path},
        "hosts": [HOST],
        "exec": {"command": "ferry-testsvc"},
        "env": {"PORT": port.to_string()},
    })
}

/// A table row; a figure that could not be measured prints as `unknown`.
fn row(table: &mut Table, what: &str, unit: &str, values: Option<Vec<f64>>, goal: Option<f64>) {
    let Some(s) = values.as_deref().and_then(summarize) else {
        table.row(vec![what.to_owned(), "unknown".to_owned()]);
        return;
    };
    let (goal_text, ratio) = match goal {
        Some(g) => (format!("{g} {unit}"), format!("{:.2}", s.median / g)),
        None => (String::new(), String::new()),
    };
    table.row(vec![
        what.to_owned(),
        format!("{:.1}", s.median),
        format!("{:.1}", s.p90),
        format!("{:.1}", s.max),
        goal_text,
        ratio,
    ]);
}

/// The figures of one agent's measured ticks.
#[derive(Default)]
struct Measured {
    ticks: Vec<TickSummary>,
    /// Wall ms seen from the machine, entering the host included.
    outside: Vec<f64>,
}

/// One timed no-op tick of the agent at `path` inside the host.
fn timed_tick(host: &Host, path: &str, round: usize) -> Result<(TickSummary, f64)> {
    let started = Instant::now();
    let out = host.exec(&[path, "reconcile"])?;
    let outside_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.success() {
        bail!(
            "no-op tick {round} of {path} failed ({}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    let tick = noop_tick(&out).with_context(|| format!("no-op tick {round} of {path}"))?;
    Ok((tick, outside_ms))
}

/// The table of one agent's figures; `enter` (the median cost of entering the host) is
/// taken off the wall time seen from outside.
fn table(m: &Measured, enter: f64) -> Result<Table> {
    let mut table = Table::new(&[
        "no-op tick",
        "median",
        "p90",
        "max",
        "goal",
        "median ÷ goal",
    ]);
    let outside_net: Vec<f64> = m.outside.iter().map(|o| o - enter).collect();
    row(
        &mut table,
        "requests",
        "",
        figure(&m.ticks, "requests", 1.0)?,
        Some(1.0),
    );
    row(
        &mut table,
        "wall ms (agent's ms=)",
        "ms",
        figure(&m.ticks, "ms", 1.0)?,
        Some(50.0),
    );
    row(
        &mut table,
        "wall ms incl. process start",
        "ms",
        Some(outside_net),
        Some(50.0),
    );
    row(
        &mut table,
        "CPU ms (user+sys)",
        "ms",
        figure(&m.ticks, "cpuMs", 1.0)?,
        None,
    );
    row(
        &mut table,
        "peak RSS MiB",
        "MiB",
        figure(&m.ticks, "peakRssKiB", 1024.0)?,
        Some(30.0),
    );
    Ok(table)
}

/// After ÷ before of the medians of each figure.
fn ratios(after: &Measured, before: &Measured, enter: f64) -> Result<Table> {
    let mut table = Table::new(&["no-op tick", "before", "after", "after ÷ before"]);
    let net = |m: &Measured| Some(m.outside.iter().map(|o| o - enter).collect::<Vec<_>>());
    let figures = [
        (
            "requests",
            figure(&before.ticks, "requests", 1.0)?,
            figure(&after.ticks, "requests", 1.0)?,
        ),
        (
            "wall ms (agent's ms=)",
            figure(&before.ticks, "ms", 1.0)?,
            figure(&after.ticks, "ms", 1.0)?,
        ),
        ("wall ms incl. process start", net(before), net(after)),
        (
            "CPU ms (user+sys)",
            figure(&before.ticks, "cpuMs", 1.0)?,
            figure(&after.ticks, "cpuMs", 1.0)?,
        ),
        (
            "peak RSS MiB",
            figure(&before.ticks, "peakRssKiB", 1024.0)?,
            figure(&after.ticks, "peakRssKiB", 1024.0)?,
        ),
    ];
    for (what, b, a) in figures {
        let median = |v: Option<Vec<f64>>| v.as_deref().and_then(summarize).map(|s| s.median);
        match (median(b), median(a)) {
            (Some(b), Some(a)) => table.row(vec![
                what.to_owned(),
                format!("{b:.1}"),
                format!("{a:.1}"),
                if b > 0.0 {
                    format!("{:.2}", a / b)
                } else {
                    String::new()
                },
            ]),
            _ => table.row(vec![what.to_owned(), "unknown".to_owned()]),
        }
    }
    Ok(table)
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(30)?;
    let agent: PathBuf = ferry_tests::workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?;
    let baseline: Option<PathBuf> = std::env::var_os("FERRY_AGENT_BASELINE_BIN").map(PathBuf::from);
    let closures = Closures::get()?;
    let mut bind_ro = vec![BindRo {
        source: agent.clone(),
        target: AGENT.into(),
    }];
    if let Some(b) = &baseline {
        bind_ro.push(BindRo {
            source: b.clone(),
            target: BASELINE.into(),
        });
    }
    let bed = Bed::start(BedOptions {
        hosts: 1,
        bind_ro,
        ..Default::default()
    })?;
    let host = bed.host(0);
    let s3 = bed.s3();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        closures.upload_signed(s3, "").await?;
        let manifest = json!({
            "version": 1,
            "generation": "2025-01-01T00:00:01Z",
            "services": [service("alpha", &closures.v1, 8101), service("beta", &closures.v1, 8102)],
        });
        s3.client()
            .put_object()
            .bucket(&s3.bucket)
            .key("manifest.json")
            .body(serde_json::to_vec_pretty(&sign(&manifest, &closures.secret_key_file)?)?.into())
            .send()
            .await?;
        anyhow::Ok(())
    })?;
    // The agent reaches Garage through a relay adding `BENCH_RTT_MS` (default 0) per round trip.
    let (_relay, through) = ferry_tests::latency::s3_behind(s3, ferry_bench::stats::rtt(0)?)?;
    install_agent_config(
        host,
        &through,
        HOST,
        std::slice::from_ref(&closures.public_key),
        std::slice::from_ref(&closures.public_key),
        "[timeouts]\nsettleSec = 1\n",
    )?;
    let first = host.exec(&[AGENT, "reconcile"])?;
    if !first.success() {
        bail!(
            "the deploying tick failed ({}):\n{}{}",
            first.status,
            first.stdout,
            first.stderr
        );
    }

    let mut enter = Vec::new();
    let mut measured = Measured::default();
    let mut before = Measured::default();
    // One untimed warm-up round, then the measured ones; with a baseline, the two agents
    // take turns going first.
    for round in 0..=rounds {
        let started = Instant::now();
        host.exec(&["true"])?;
        enter.push(started.elapsed().as_secs_f64() * 1000.0);
        let mut order = vec![(AGENT, &mut measured)];
        if baseline.is_some() {
            order.push((BASELINE, &mut before));
            if round % 2 == 1 {
                order.reverse();
            }
        }
        for (path, into) in order {
            let (tick, outside_ms) = timed_tick(host, path, round)?;
            if round > 0 {
                into.ticks.push(tick);
                into.outside.push(outside_ms);
            }
        }
    }
    let enter_median = summarize(enter.get(1..).unwrap_or_default())
        .context("no round was measured (BENCH_ROUNDS = 0?)")?
        .median;
    println!(
        "{rounds} no-op ticks of {} in bed host {} against Garage (entering the host: {enter_median:.1} ms, subtracted)\n",
        agent.display(),
        host.name()
    );
    print!("{}", table(&measured, enter_median)?.render());
    if let Some(b) = &baseline {
        println!(
            "\nbaseline: {rounds} no-op ticks of {}, taking turns with the one above\n",
            b.display()
        );
        print!("{}", table(&before, enter_median)?.render());
        println!("\nafter ÷ before (medians; below 1: the first agent is faster)\n");
        print!("{}", ratios(&measured, &before, enter_median)?.render());
    }
    Ok(())
}
