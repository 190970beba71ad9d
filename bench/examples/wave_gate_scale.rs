//! Benchmark (issue 17, scale): the wave gate of a simulated fleet of 200 agents against the
//! bed's Garage. Run `bench/wave_gate_scale.sh` (root; `BENCH_ROUNDS`, default 3).
//!
//! Each simulated agent is a tokio task running the agent's own gate step
//! (`ferry_agent::tick::gate::gate`, with `wave_gate` and the `StatusBucket` the tick uses)
//! on a state of its own: it runs version 1 of one service `web` that the manifest moves to
//! version 2 on all 200 hosts, with `rollout.waves = [["canary-*"], ["web-*"], ["*"]]`
//! (2 canaries, 20 web hosts, 178 others). Every host's report is in the status store (a
//! Garage bucket of the bed, no nspawn host): the canaries report version 2 running and
//! soaking, the others version 1 under the generation before, so wave 2 waits on the
//! soak and wave 3 on wave 2, as in a rollout under way. Like a real tick (one
//! `ferry-agent reconcile` process), each tick opens a fresh `StatusBucket`, so its reads
//! open new connections.
//!
//! The agents reach Garage through a `LatencyRelay` (0 or 50 ms RTT) and, behind it, a
//! counting relay that counts the requests and the answers' status codes as Garage sees
//! them. One fleet tick starts the agents one every 25 ms (a 5 s timer's worth of 200
//! hosts), wave by wave, the counts read between waves. Each round is two fleet ticks per
//! RTT: "first reads" (no ETag kept: the rollout under way, every read a 200) and
//! "unchanged" (the ETags of the first: every read a conditional GET answered 304, what a
//! waiting fleet costs while nothing moves).
//!
//! The prediction (PLAN.md, "Waves"): a host of wave k makes R = the number of hosts of
//! waves 1..k−1 that run its gated services, here 0, 2 and 22; the fleet Σ n_k·R_k per tick.

#[path = "../shared/counting_relay.rs"]
mod counting_relay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{SecondsFormat, Utc};
use counting_relay::{CountingRelay, Counts};
use ferry_agent::backend::status_store::{StatusBucket, StatusStore as _};
use ferry_agent::config::Status;
use ferry_agent::state::{Applied, State};
use ferry_agent::tick::gate::gate;
use ferry_bench::stats::{Table, summarize};
use ferry_bucket::BucketUrl;
use ferry_schema::Manifest;
use ferry_schema::layout::host_status_key;
use ferry_tests::latency::LatencyRelay;
use ferry_tests::{Bed, BedOptions, S3};
use serde_json::{Value, json};

/// The waves: name prefix and size of each (the last is `*`: everyone else).
const WAVES: [(&str, usize); 3] = [("canary-", 2), ("web-", 20), ("node-", 178)];
const PATTERNS: [&str; 3] = ["canary-*", "web-*", "*"];
const SOAK_SEC: u64 = 60;
/// The agents' timer: a fleet tick starts one agent every `TIMER / fleet size`.
const TIMER: Duration = Duration::from_secs(5);
/// The RTTs added between the agents and Garage.
const RTTS_MS: [u64; 2] = [0, 50];
/// Each read's bound, as agent.toml's default `timeouts.fetchSec`.
const READ_BOUND: Duration = Duration::from_secs(30);
const V1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";

/// The two kinds of fleet tick measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// No ETag kept: every read is answered in full.
    First,
    /// The ETags of the tick before, nothing changed: every read a 304.
    Unchanged,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::First => "first reads (200)",
            Case::Unchanged => "unchanged (304)",
        }
    }
}

/// One simulated agent.
struct Agent {
    name: String,
    /// 0-based.
    wave: usize,
    state: State,
}

/// What one agent's gate did in one tick.
struct Sample {
    wall_ms: f64,
    /// Requests by the agent's own count (`StatusStore::requests`).
    requests: u64,
    /// Reads that failed (the gate's `cannot read` lines).
    read_errors: u64,
}

/// What one wave measured in one case at one RTT, over all rounds.
#[derive(Default)]
struct Measured {
    /// At the relay.
    counts: Counts,
    /// Ticks (agents × rounds).
    ticks: u64,
    samples: Vec<Sample>,
}

fn hosts() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (wave, (prefix, n)) in WAVES.iter().enumerate() {
        let width = n.to_string().len();
        out.extend((1..=*n).map(|i| (format!("{prefix}{i:0width$}"), wave)));
    }
    out
}

/// Reads per tick the formula predicts for a host of `wave`: every host of the earlier
/// waves runs the gated service.
fn predicted(wave: usize) -> u64 {
    WAVES[..wave].iter().map(|(_, n)| *n as u64).sum()
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn manifest(generation: &str, hosts: &[(String, usize)]) -> Result<Manifest> {
    let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
    let waves: Vec<Vec<&str>> = PATTERNS.iter().map(|p| vec![*p]).collect();
    serde_json::from_value(json!({
        "version": 1,
        "generation": generation,
        "services": [{
            "name": "web",
            "artifact": {"type": "nix-closure", "storePath": V2},
            "hosts": names,
            "exec": {"command": "web"},
        }],
        "rollout": {"waves": waves, "soakSec": SOAK_SEC},
    }))
    .context("the benchmark's manifest")
}

/// An agent that applied version 1 of `web` under an earlier generation.
fn agent(name: &str, wave: usize, manifest: &Manifest) -> Agent {
    let mut service = manifest.services[0].clone();
    service.artifact.store_path = V1.into();
    let mut state = State::default();
    state.services.insert(
        "web".into(),
        Applied {
            service,
            applied_at: "2026-11-30T10:00:00Z".into(),
            live_port: None,
        },
    );
    Agent {
        name: name.to_owned(),
        wave,
        state,
    }
}

/// `host`'s report: canaries run version 2 under `generation`, soaking; the others still
/// run version 1 under `previous`.
fn report(host: &str, wave: usize, generation: &str, previous: &str) -> Value {
    let now = Utc::now();
    let (applied, path, since) = if wave == 0 {
        (generation, V2, rfc3339(now - chrono::Duration::seconds(10)))
    } else {
        (previous, V1, "2026-11-30T10:00:00Z".to_owned())
    };
    json!({
        "version": 1, "host": host, "agentVersion": env!("CARGO_PKG_VERSION"),
        "time": rfc3339(now), "everySec": 300,
        "lastTick": {"outcome": "ok", "exitCode": 0, "wallMs": 912,
                     "phases": {"fetch": 12, "verify": 3, "observe": 20, "plan": 1,
                                "apply": 850, "record": 2, "route": 14, "retire": 0}},
        "manifest": {"generation": applied,
                     "sha256": "5f0c7e3d2b1a49788c6e0d1f2a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5"},
        "services": [{"name": "web", "storePath": path, "state": "running", "since": since}],
    })
}

/// The status store as an agent opens it: an S3 URL at `endpoint`, the key in a
/// shared-credentials file.
fn store_url(status: &S3, endpoint: &str) -> Result<BucketUrl> {
    BucketUrl::parse(&format!(
        "s3://{}?endpoint={endpoint}&region={}",
        status.bucket, status.region
    ))
    .context("the status store's URL")
}

fn status_settings(dir: &Path, status: &S3) -> Result<Status> {
    let file = dir.join("status-credentials");
    std::fs::write(&file, status.credentials_text())?;
    let mut settings = Status::default();
    settings.credentials.file = Some(file);
    Ok(settings)
}

/// One agent's gate, as a tick runs it: a fresh store, the manifest, its state, the clock.
async fn gate_tick(
    mut agent: Agent,
    url: BucketUrl,
    settings: Status,
    manifest: Manifest,
) -> (Agent, Result<Sample>) {
    let store = StatusBucket::open(&url, &settings, READ_BOUND).await;
    let mut desired = manifest;
    let mut lines = Vec::new();
    let started = Instant::now();
    let g = gate(
        Some(&store),
        &mut desired,
        &agent.name,
        &mut agent.state,
        Utc::now(),
        &mut lines,
    )
    .await;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The gate must have judged what the reports say: the first wave is not gated, the
    // others wait (on the canaries' soak, on wave 2), and nothing failed to read.
    let held = g.held.len();
    let read_errors = lines.iter().filter(|l| l.contains("cannot read")).count();
    if let Some(first) = lines.iter().find(|l| l.contains("cannot read")) {
        eprintln!("{}: {read_errors} read(s) failed, e.g. {first}", agent.name);
    }
    let sample = if held != usize::from(agent.wave > 0) || store.requests() != g.requests {
        Err(anyhow::anyhow!(
            "{} (wave {}) held {held} service(s), counted {} requests: {lines:?}",
            agent.name,
            agent.wave + 1,
            g.requests
        ))
    } else {
        Ok(Sample {
            wall_ms,
            requests: g.requests,
            read_errors: read_errors as u64,
        })
    };
    (agent, sample)
}

/// One fleet tick: the agents of each wave started one every `TIMER / fleet`, the relay's
/// counts read once a wave is done.
async fn fleet_tick(
    agents: Vec<Agent>,
    url: &BucketUrl,
    settings: &Status,
    manifest: &Manifest,
    counting: &CountingRelay,
    into: &mut BTreeMap<usize, Measured>,
) -> Result<Vec<Agent>> {
    let every = TIMER / agents.len() as u32;
    let mut back = Vec::with_capacity(agents.len());
    let mut by_wave: BTreeMap<usize, Vec<Agent>> = BTreeMap::new();
    for a in agents {
        by_wave.entry(a.wave).or_default().push(a);
    }
    for (wave, agents) in by_wave {
        let before = counting.counts();
        let mut tasks = Vec::new();
        for a in agents {
            tasks.push(tokio::spawn(gate_tick(
                a,
                url.clone(),
                settings.clone(),
                manifest.clone(),
            )));
            tokio::time::sleep(every).await;
        }
        let m = into.entry(wave).or_default();
        for task in tasks {
            let (a, sample) = task.await.context("an agent's task panicked")?;
            m.samples.push(sample?);
            m.ticks += 1;
            back.push(a);
        }
        let got = counting.counts().since(&before);
        m.counts.requests += got.requests;
        for (code, n) in got.statuses {
            *m.counts.statuses.entry(code).or_default() += n;
        }
    }
    Ok(back)
}

fn garage_addr(s3: &S3) -> Result<SocketAddr> {
    s3.endpoint
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("Garage's endpoint {}", s3.endpoint))
}

fn fmt(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(3)?;
    ensure!(rounds > 0, "BENCH_ROUNDS must be at least 1");
    let hosts = hosts();
    let fleet = hosts.len();
    let bed = Bed::start(BedOptions::default())?;
    let status = bed.add_bucket("ferry-status")?;
    let dir = tempfile::tempdir()?;
    let settings = status_settings(dir.path(), &status)?;

    let generation = rfc3339(Utc::now() - chrono::Duration::seconds(60));
    let previous = "2026-11-30T10:00:00Z";
    let manifest = manifest(&generation, &hosts)?;
    // Every host's report, written straight to Garage by the agent's own writer.
    let direct = StatusBucket::open(
        &store_url(&status, &status.endpoint)?,
        &settings,
        READ_BOUND,
    )
    .await;
    for (host, wave) in &hosts {
        let bytes = serde_json::to_vec(&report(host, *wave, &generation, previous))?;
        direct
            .put(&host_status_key(host), bytes)
            .await
            .with_context(|| format!("writing {host}'s report"))?;
    }

    let counting = CountingRelay::start("127.0.0.1", garage_addr(&status)?)?;
    let mut relays = Vec::new();
    for rtt in RTTS_MS {
        let relay = LatencyRelay::start("127.0.0.1", counting.addr(), Duration::from_millis(rtt))?;
        let url = store_url(&status, &relay.endpoint())?;
        relays.push((rtt, relay, url));
    }
    let mut agents: Vec<Agent> = hosts.iter().map(|(h, w)| agent(h, *w, &manifest)).collect();
    let mut measured: BTreeMap<(u64, Case), BTreeMap<usize, Measured>> = BTreeMap::new();
    let run_started = Instant::now();
    for round in 1..=rounds {
        for (rtt, _relay, url) in &relays {
            for case in [Case::First, Case::Unchanged] {
                if case == Case::First {
                    for a in &mut agents {
                        a.state.wave_reports.clear();
                    }
                }
                let into = measured.entry((*rtt, case)).or_default();
                agents = fleet_tick(agents, url, &settings, &manifest, &counting, into)
                    .await
                    .with_context(|| format!("round {round}, {rtt} ms, {}", case.label()))?;
                eprintln!("round {round}: {rtt} ms RTT, {} done", case.label());
            }
        }
    }
    let run_secs = run_started.elapsed().as_secs_f64();

    println!(
        "{fleet} simulated agents (tokio tasks running ferry_agent::tick::gate::gate with a fresh StatusBucket per tick), one service moving v1 → v2 on all of them, rollout waves {PATTERNS:?} ({} hosts), soakSec {SOAK_SEC}; Garage of the bed behind a LatencyRelay and a counting relay; a fleet tick starts one agent every {} ms, wave by wave; {rounds} rounds of (first reads, unchanged) per RTT, {run_secs:.0} s\n",
        WAVES
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        (TIMER / fleet as u32).as_millis()
    );
    let mut table = Table::new(&[
        "RTT, case, wave (hosts)",
        "predicted reads/host",
        "requests/host (Garage side)",
        "÷ predicted",
        "200",
        "304",
        "other",
        "gate's own count/host",
        "failed reads",
        "gate wall ms median",
        "p95",
    ]);
    let mut medians: BTreeMap<(u64, Case, usize), f64> = BTreeMap::new();
    let mut fleet_rows = Vec::new();
    for ((rtt, case), waves) in &measured {
        let mut fleet_requests = 0;
        let mut fleet_ticks_per_round = 0;
        for (wave, m) in waves {
            let ticks = m.ticks as f64;
            let per_host = m.counts.requests as f64 / ticks;
            let want = predicted(*wave);
            let ok = m.counts.status(200);
            let not_modified = m.counts.status(304);
            let other: u64 = m
                .counts
                .statuses
                .iter()
                .filter(|(c, _)| !matches!(c, 200 | 304))
                .map(|(_, n)| n)
                .sum();
            let own: Vec<f64> = m.samples.iter().map(|s| s.requests as f64).collect();
            let walls: Vec<f64> = m.samples.iter().map(|s| s.wall_ms).collect();
            let (own, walls) = (summarize(&own), summarize(&walls));
            let own_cell = own.map_or("-".to_owned(), |s| {
                if s.min == s.max {
                    fmt(s.min, 0)
                } else {
                    format!("{}–{}", s.min, s.max)
                }
            });
            if let Some(w) = walls {
                medians.insert((*rtt, *case, *wave), w.median);
            }
            table.row(vec![
                format!(
                    "{rtt} ms, {}, wave {} ({})",
                    case.label(),
                    wave + 1,
                    WAVES[*wave].1
                ),
                want.to_string(),
                fmt(per_host, 2),
                if want == 0 {
                    if m.counts.requests == 0 {
                        "(0 = 0)".to_owned()
                    } else {
                        "not 0".to_owned()
                    }
                } else {
                    fmt(per_host / want as f64, 3)
                },
                ok.to_string(),
                not_modified.to_string(),
                other.to_string(),
                own_cell,
                m.samples
                    .iter()
                    .map(|s| s.read_errors)
                    .sum::<u64>()
                    .to_string(),
                walls.map_or("-".to_owned(), |s| fmt(s.median, 1)),
                walls.map_or("-".to_owned(), |s| fmt(s.p95, 1)),
            ]);
            fleet_requests += m.counts.requests;
            fleet_ticks_per_round = fleet_ticks_per_round.max(m.ticks / WAVES[*wave].1 as u64);
        }
        fleet_rows.push((*rtt, *case, fleet_requests, fleet_ticks_per_round));
    }
    print!("{}", table.render());

    let fleet_predicted: u64 = WAVES
        .iter()
        .enumerate()
        .map(|(w, (_, n))| *n as u64 * predicted(w))
        .sum();
    println!();
    let mut totals = Table::new(&[
        "fleet per tick",
        "predicted requests",
        "Garage side",
        "÷ predicted",
    ]);
    for (rtt, case, requests, ticks) in &fleet_rows {
        let per_tick = *requests as f64 / *ticks as f64;
        totals.row(vec![
            format!("{rtt} ms, {}", case.label()),
            fleet_predicted.to_string(),
            fmt(per_tick, 1),
            fmt(per_tick / fleet_predicted as f64, 3),
        ]);
    }
    print!("{}", totals.render());

    println!();
    let mut ratios = Table::new(&[
        "gate wall, median",
        "0 ms RTT",
        "50 ms RTT",
        "50 ms ÷ 0 ms",
        "50 ms − 0 ms",
    ]);
    for case in [Case::First, Case::Unchanged] {
        for (wave, _) in WAVES.iter().enumerate().skip(1) {
            let (Some(zero), Some(fifty)) = (
                medians.get(&(0, case, wave)),
                medians.get(&(50, case, wave)),
            ) else {
                bail!("no wall times for wave {} {}", wave + 1, case.label());
            };
            ratios.row(vec![
                format!(
                    "{}, wave {} ({} reads)",
                    case.label(),
                    wave + 1,
                    predicted(wave)
                ),
                fmt(*zero, 1),
                fmt(*fifty, 1),
                fmt(fifty / zero, 1),
                fmt(fifty - zero, 1),
            ]);
        }
    }
    print!("{}", ratios.render());
    Ok(())
}
