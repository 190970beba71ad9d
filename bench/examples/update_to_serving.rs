//! Benchmark: a one-service update from tick start to the new version serving through
//! Caddy, `restart` against `blue-green`, with the release-built `ferry-agent reconcile`
//! inside a bed host against the bed's Garage and the host's own Caddy. Run
//! `bench/update_to_serving.sh` (root; `BENCH_ROUNDS`, default 5).
//!
//! The host runs two services from the same closures, one per strategy, on their own
//! domains. Each round updates one of them (v1 ↔ v2, alternating; the strategies take turns)
//! while a poller on the machine asks the host's Caddy for `/version` as that service's
//! domain in a tight loop (a fresh connection per request, 1 ms apart). "To serving" runs
//! from the launch of `ferry-agent reconcile` to the first answer naming the new version.
//! The tick's own `phases:` line splits its work into pull, systemd, health, route (and, for
//! blue-green, drain). Both services have the same health check (first probe at once, then
//! every second; `settleSec = 1`, and the agent gives no healthy verdict before the settle
//! time, so the health phase is about 1 s) and the drain is 1 s. A restart-strategy update
//! serves the new version as soon as the process listens (the route already points at its
//! port), before the check passes; blue-green routes to it only after. One untimed update
//! per strategy comes first, so both closures are in the host's store before any timed
//! round.

#[path = "../shared/serving.rs"]
mod serving;
#[path = "../shared/strategies.rs"]
mod strategies;

use serving::{first_answer, version};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strategies::{STRATEGIES, service};

use anyhow::{Context, Result, bail};
use ferry_bench::stats::{Table, summarize};
use ferry_tests::agent_bed::{AGENT, bed_with_agent, sign};
use ferry_tests::{Bed, Closures, Host, Output, TickSummary, install_agent_config};
use serde_json::{Value, json};

/// The name the manifest uses for the bed host.
const HOST: &str = "bedhost";
/// agent.toml additions: routes in Debian Caddy's srv0, a 1 s drain.
const CONFIG: &str = "[timeouts]\nsettleSec = 1\ndrainSec = 1\n[caddy]\nserver = \"srv0\"\n";
/// How long a round may take before the poller gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// The numbers of the line of `out` that starts with `prefix` (`key=value` pairs).
fn fields(out: &Output, prefix: &str) -> Result<BTreeMap<String, f64>> {
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .with_context(|| format!("no `{prefix}` line in:\n{}{}", out.stdout, out.stderr))?;
    Ok(line
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse::<f64>().ok()?)))
        .collect())
}

/// What one timed update measured.
struct Round {
    to_serving_ms: f64,
    tick: TickSummary,
    phases: BTreeMap<String, f64>,
}

/// A figure of a round, summarised over the rounds.
#[derive(Clone, Copy)]
enum Metric {
    /// Tick start → the new version answering through Caddy.
    ToServing,
    /// A field of the tick's `phases:` line.
    Phase(&'static str),
    /// The tick's own wall time (`ms=` of its `tick:` line).
    TickMs,
}

impl Metric {
    fn value(self, r: &Round) -> Option<f64> {
        match self {
            Metric::ToServing => Some(r.to_serving_ms),
            Metric::Phase(key) => r.phases.get(key).copied(),
            Metric::TickMs => r.tick.get("ms").ok().map(|ms| ms as f64),
        }
    }

    fn median(self, rounds: &[Round]) -> Option<f64> {
        let values: Vec<f64> = rounds.iter().filter_map(|r| self.value(r)).collect();
        summarize(&values).map(|s| s.median)
    }
}

/// Publishes `manifest`, then times one tick until Caddy serves `want` for `domain`.
fn update(
    rt: &tokio::runtime::Runtime,
    bed: &Bed,
    host: &Host,
    manifest: &Value,
    domain: &'static str,
    want: &str,
) -> Result<Round> {
    publish(rt, bed, manifest)?;
    let addr: SocketAddr = format!("{}:80", host.ip())
        .parse()
        .context("the host's bridge address")?;
    if version(addr, domain).as_deref() == Some(want) {
        bail!("{domain} already serves {want} before the update");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let poller = first_answer(
        addr,
        domain,
        want.to_owned(),
        stop.clone(),
        Duration::from_millis(1),
        Some(ROUND_LIMIT),
    );
    let started = Instant::now();
    let out = host.exec(&[AGENT, "reconcile"])?;
    // The new version serves before the tick ends; give the poller a moment to see it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !poller.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let served = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the poller panicked"))?;
    if !out.success() {
        bail!(
            "the update tick failed ({}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    let served = served.with_context(|| {
        format!(
            "Caddy never answered {want} for {domain} after the tick:\n{}",
            out.stdout
        )
    })?;
    let tick = TickSummary::of(&out)?;
    if tick.get("unitsTouched")? == 0 {
        bail!(
            "the update tick touched no unit, so it timed no update:\n{}",
            out.stdout
        );
    }
    Ok(Round {
        to_serving_ms: served.duration_since(started).as_secs_f64() * 1000.0,
        tick,
        phases: fields(&out, "phases: ")?,
    })
}

/// Publishes `manifest` signed with the test key, as `ferry publish` would.
fn publish(rt: &tokio::runtime::Runtime, bed: &Bed, manifest: &Value) -> Result<()> {
    let s3 = bed.s3();
    let signed = sign(manifest, &Closures::get()?.secret_key_file)?;
    let body = serde_json::to_vec_pretty(&signed)?;
    rt.block_on(
        s3.client()
            .put_object()
            .bucket(&s3.bucket)
            .key("manifest.json")
            .body(body.into())
            .send(),
    )
    .context("publishing the manifest to Garage")?;
    Ok(())
}

fn manifest(generation: u32, versions: [&str; 2]) -> Value {
    json!({
        "version": 1,
        "generation": format!("2025-01-01T{:02}:{:02}:{:02}Z", generation / 3600, generation / 60 % 60, generation % 60),
        "services": [service(&STRATEGIES[0], versions[0], &[HOST]), service(&STRATEGIES[1], versions[1], &[HOST])],
    })
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(5)?;
    let agent = ferry_tests::workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?;
    let closures = Closures::get()?;
    let bed = bed_with_agent(agent.clone())?;
    let host = bed.host(0);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(closures.upload_signed(bed.s3(), ""))?;
    // The agent reaches Garage through a relay adding `BENCH_RTT_MS` (default 0) per round trip.
    let (_relay, through) = ferry_tests::latency::s3_behind(bed.s3(), ferry_bench::stats::rtt(0)?)?;
    install_agent_config(
        host,
        &through,
        HOST,
        std::slice::from_ref(&closures.public_key),
        std::slice::from_ref(&closures.public_key),
        CONFIG,
    )?;
    let (v1, v2) = (closures.v1.as_str(), closures.v2.as_str());
    let answer = |path: &str| if path == v1 { "1.0.0" } else { "2.0.0" };
    let mut generation = 1;
    let mut versions = [v1, v1];
    publish(&rt, &bed, &manifest(generation, versions))?;
    let first = host.exec(&[AGENT, "reconcile"])?;
    if !first.success() {
        bail!(
            "the deploying tick failed ({}):\n{}{}",
            first.status,
            first.stdout,
            first.stderr
        );
    }

    let mut measured: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    // Round 0 of each strategy is the untimed warm-up.
    for round in 0..=rounds {
        for (i, s) in STRATEGIES.iter().enumerate() {
            versions[i] = if versions[i] == v1 { v2 } else { v1 };
            generation += 1;
            let r = update(
                &rt,
                &bed,
                host,
                &manifest(generation, versions),
                s.domain,
                answer(versions[i]),
            )
            .with_context(|| format!("{} round {round}", s.label))?;
            eprintln!(
                "{} round {round}: to serving {:.0} ms, tick {:?} ms, phases {:?}",
                s.label,
                r.to_serving_ms,
                r.tick.get("ms").ok(),
                r.phases
            );
            if round > 0 {
                measured[i].push(r);
            }
        }
    }

    let metrics = [
        ("tick start → new version via Caddy", Metric::ToServing),
        ("  pull (pullMs)", Metric::Phase("pullMs")),
        ("  unit/systemd (systemdMs)", Metric::Phase("systemdMs")),
        ("  health (healthMs)", Metric::Phase("healthMs")),
        ("  route (routeMs)", Metric::Phase("routeMs")),
        ("drain (drainMs)", Metric::Phase("drainMs")),
        ("whole tick (ms=)", Metric::TickMs),
    ];
    let mut table = Table::new(&["median ms", "restart", "blue-green", "blue-green ÷ restart"]);
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    for (what, metric) in metrics {
        let (r, b) = (metric.median(&measured[0]), metric.median(&measured[1]));
        let ratio = match (r, b) {
            (Some(r), Some(b)) if r > 0.0 => format!("{:.2}", b / r),
            _ => String::new(),
        };
        table.row(vec![what.to_owned(), cell(r), cell(b), ratio]);
    }
    println!(
        "{rounds} updates per strategy (v1 ↔ v2, one service, after one untimed update each) with {} in bed host {}; health: first probe at once, then every 1 s, settle 1 s; drain 1 s\n",
        agent.display(),
        host.name()
    );
    print!("{}", table.render());
    Ok(())
}
