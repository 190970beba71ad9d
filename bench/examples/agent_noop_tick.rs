//! Benchmark: a no-op tick of the release-built `ferry-agent reconcile` inside a bed host
//! against the bed's Garage, manifest unchanged since the last tick. Run
//! `bench/agent_noop_tick.sh` (root; `BENCH_ROUNDS`, default 30).
//!
//! The host runs two services deployed by a first tick; then every tick finds the manifest
//! unchanged (a conditional GET answered 304) and only checks drift. The figures come from
//! the agent's own `tick:` line (requests, wall ms from the start of `reconcile`, CPU ms and
//! peak RSS of the process), plus the wall time seen from the machine, which adds process
//! start, minus the cost of entering the host (measured with `true`). Goal (issue 4): one
//! request, under 50 ms wall, under 30 MiB RSS; each ratio is median ÷ goal (below 1 meets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferry_bench::stats::{Summary, Table, summarize};
use ferry_tests::agent_bed::{AGENT, bed_with_agent, sign};
use ferry_tests::{Closures, Output, install_agent_config};
use serde_json::{Value, json};

/// The name the manifest uses for the bed host.
const HOST: &str = "bedhost";

/// The numeric fields of the agent's `tick: …` line.
fn tick_fields(out: &Output) -> Result<BTreeMap<String, f64>> {
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("tick: "))
        .with_context(|| format!("no `tick:` line in:\n{}{}", out.stdout, out.stderr))?;
    let mut fields = BTreeMap::new();
    for pair in line.split_whitespace() {
        if let Some((key, value)) = pair.split_once('=')
            && let Ok(number) = value.parse::<f64>()
        {
            fields.insert(key.to_owned(), number);
        }
    }
    if !line.contains("outcome=ok") {
        bail!("the tick did not succeed: {line}");
    }
    Ok(fields)
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

fn row(table: &mut Table, what: &str, unit: &str, s: Option<Summary>, goal: Option<f64>) {
    let Some(s) = s else { return };
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

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(30)?;
    let agent: PathBuf = ferry_tests::workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?;
    let closures = Closures::get()?;
    let bed = bed_with_agent(agent.clone())?;
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
    install_agent_config(
        host,
        s3,
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
    let mut fields: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut outside = Vec::new();
    // One untimed warm-up tick, then the measured ones.
    for round in 0..=rounds {
        let started = Instant::now();
        host.exec(&["true"])?;
        let enter_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let out = host.exec(&[AGENT, "reconcile"])?;
        let outside_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !out.success() {
            bail!(
                "no-op tick {round} failed ({}):\n{}{}",
                out.status,
                out.stdout,
                out.stderr
            );
        }
        let tick = tick_fields(&out)?;
        if round == 0 {
            continue;
        }
        if tick.get("reloads") != Some(&0.0) || tick.get("unitsTouched") != Some(&0.0) {
            bail!("tick {round} was not a no-op:\n{}", out.stdout);
        }
        for (key, value) in tick {
            fields.entry(key).or_default().push(value);
        }
        enter.push(enter_ms);
        outside.push(outside_ms);
    }
    let enter_median = summarize(&enter).map_or(0.0, |s| s.median);
    let outside_net: Vec<f64> = outside.iter().map(|o| o - enter_median).collect();
    let get = |key: &str| summarize(fields.get(key).map_or(&[][..], Vec::as_slice));
    let rss_mib = fields.get("peakRssKiB").map(|v| {
        let mib: Vec<f64> = v.iter().map(|kib| kib / 1024.0).collect();
        summarize(&mib)
    });

    let mut table = Table::new(&[
        "no-op tick",
        "median",
        "p90",
        "max",
        "goal",
        "median ÷ goal",
    ]);
    row(&mut table, "requests", "", get("requests"), Some(1.0));
    row(
        &mut table,
        "wall ms (agent's ms=)",
        "ms",
        get("ms"),
        Some(50.0),
    );
    row(
        &mut table,
        "wall ms incl. process start",
        "ms",
        summarize(&outside_net),
        Some(50.0),
    );
    row(&mut table, "CPU ms (user+sys)", "ms", get("cpuMs"), None);
    row(
        &mut table,
        "peak RSS MiB",
        "MiB",
        rss_mib.flatten(),
        Some(30.0),
    );
    println!(
        "{rounds} no-op ticks of {} in bed host {} against Garage (entering the host: {enter_median:.1} ms, subtracted)\n",
        agent.display(),
        host.name()
    );
    print!("{}", table.render());
    Ok(())
}
