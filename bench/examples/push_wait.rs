//! Benchmark (issues 16 and 17): `ferry push --wait` wall time, from the launch of `ferry
//! push` to its return. Run `bench/push_wait.sh [strategies|waves]` (root; `BENCH_ROUNDS`,
//! default 5).
//!
//! `strategies` (the default, issue 16): against the moment the new version first answers
//! through both hosts' Caddy; `restart` against `blue-green`; and the agent's no-op ticks
//! with status reporting on. Two bed hosts run the release-built `ferry-agent` from the systemd units the NixOS module
//! renders (`ferry-agent.timer` every 5 s, no random delay), each reporting to a status store
//! (a second Garage bucket with its own key, handed in through the module's
//! `status.credentialsFile`). Both hosts run two services from the signed test closures, one
//! per strategy, on their own domains. Each round is one `ferry push <service> <v1|v2>
//! --wait` by the release-built `ferry` (the versions alternate, the strategies take turns),
//! timed from its launch to its return; it must exit 0 saying every host runs the version
//! healthy. Meanwhile one poller per host asks that host's Caddy for `/version` as the
//! service's domain (a fresh connection every 5 ms): "serving on both hosts" is the later of
//! the two first answers naming the new version — the baseline the wait for the reports adds
//! to. `--wait` reads the reports every 2 s, and a host reports at the end of the tick that
//! applied the version (after the health settle and, for blue-green, the drain).
//!
//! Both closures are uploaded before anything is timed, and one untimed push per strategy
//! puts v2 in the hosts' stores. Between pushes the run waits for two no-op ticks on each
//! host, then for an offset that steps through the timer interval from round to round (so
//! the pushes do not all start at the same point of the hosts' timer cycles). At the end the
//! hosts' journals give every tick's `tick:` line and whether it wrote a report: every no-op
//! tick must have made exactly one bucket request (the manifest GET), and a quiet tick may
//! write a report only `status.everySec` after the host's previous one.
//!
//! `waves` (issue 17): three bed hosts, set up the same way, run the `restart` service.
//! Each round times two pushes, taking turns: one under a manifest without `rollout`, one
//! under `{"waves": [["host-a"], ["host-b", "host-c"]], "soakSec": 5}` (the manifest with
//! the running version and the rollout, or none, is published first, then two no-op ticks
//! per host). `--wait` returns once all three report the version healthy; the pollers give
//! each host's first answer, so host-b and host-c must first serve it at least `soakSec`
//! after host-a. With waves, host-a applies at its next tick as before; host-b and host-c
//! only at their first tick after a report of host-a's written `soakSec` after it became
//! healthy, which host-a's own timer writes (up to one timer period after the soak ends).
//! So the expected floor of the difference is `soakSec` plus up to one timer period (host-a's
//! report) plus up to one more (host-b's and host-c's next tick), less what the hosts'
//! timers cost without waves. Every tick that read reports (`statusReads`) must be one of
//! host-b's or host-c's reading exactly one (host-a's), and every no-op tick one bucket
//! request.

#[path = "../shared/serving.rs"]
mod serving;
#[path = "../shared/strategies.rs"]
mod strategies;

use serving::{first_answer, version};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strategies::{STRATEGIES, Strategy, service};

use anyhow::{Context, Result, bail, ensure};
use ferry_bench::stats::{Table, summarize};
use ferry_tests::agent_bed::eventually;
use ferry_tests::agent_config::{install_module_agent_config, module_unit_options};
use ferry_tests::fleet_dev::FleetDev;
use ferry_tests::module_unit::{self, AGENT};
use ferry_tests::{Bed, BedOptions, BindRo, Closures, Host, Output, TickSummary};
use serde_json::{Value, json};

/// The hosts' names in the manifest (bed hosts 0, 1 and 2; `strategies` uses the first two).
const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
/// The agent timer's interval.
const INTERVAL: Duration = Duration::from_secs(5);
/// `status.everySec`: the module's default, written out so the check below can name it.
const EVERY_SEC: u64 = 300;
/// Where each host keeps the status store's key (handed to the unit by `LoadCredential=`).
const STATUS_CREDENTIALS: &str = "/etc/ferry/status-credentials";
/// agent.toml additions: a 1 s settle and a 1 s drain, as in update_to_serving.
const EXTRA: &str = "[timeouts]\nsettleSec = 1\ndrainSec = 1\nfetchSec = 10\n";
/// `ferry push --wait`'s own timeout.
const WAIT: &str = "--wait=120s";
/// How long a wait for the hosts (first deploy, quiet ticks) may take.
const LIMIT: Duration = Duration::from_secs(180);
/// The `waves` mode's soak.
const SOAK_SEC: u64 = 5;

/// Runs `ferry ARGS` and times it from launch to return.
fn timed(dev: &FleetDev, args: &[&str]) -> Result<(Output, Instant, Instant)> {
    let mut cmd = dev.command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let launched = Instant::now();
    let child = cmd.spawn().context("starting ferry")?;
    let out = child.wait_with_output().context("waiting for ferry")?;
    let returned = Instant::now();
    let out = Output::from(out);
    Ok((out, launched, returned))
}

fn caddy(host: &Host) -> Result<SocketAddr> {
    format!("{}:80", host.ip())
        .parse()
        .context("the host's bridge address")
}

/// What one timed push measured.
struct Round {
    /// Push launch → the new version answering through each host's Caddy, in `HOSTS` order.
    host_ms: Vec<f64>,
    /// Push launch → the new version answering through the latest of the hosts' Caddy.
    serving_ms: f64,
    /// Push launch → `ferry push --wait` returned.
    wait_ms: f64,
}

/// One `ferry push service path --wait`, timed, with a poller on each of `hosts`' Caddy
/// (bed hosts 0, 1, …).
fn push(
    dev: &FleetDev,
    bed: &Bed,
    hosts: &[&str],
    s: &Strategy,
    path: &str,
    want: &str,
) -> Result<Round> {
    let addrs = (0..hosts.len())
        .map(|i| caddy(bed.host(i)))
        .collect::<Result<Vec<_>>>()?;
    for (addr, name) in addrs.iter().zip(hosts) {
        if version(*addr, s.domain).as_deref() == Some(want) {
            bail!(
                "{name} already serves {want} for {} before the push",
                s.domain
            );
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = addrs
        .iter()
        .map(|addr| {
            first_answer(
                *addr,
                s.domain,
                want.to_owned(),
                stop.clone(),
                Duration::from_millis(5),
                None,
            )
        })
        .collect();
    let args = ["push", s.service, path, WAIT];
    let (out, launched, returned) = timed(dev, &args)?;
    // A healthy report comes after the new version listens, so the pollers have seen it by
    // now unless something is wrong; give them a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pollers.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut served = Vec::new();
    for (poller, name) in pollers.into_iter().zip(hosts) {
        let first = poller
            .join()
            .map_err(|_| anyhow::anyhow!("the poller of {name} panicked"))?;
        served.push((name, first));
    }
    let said = format!(
        "`ferry {}` (exit {}):\n{}{}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    if !out.success() {
        bail!("{said}");
    }
    let all = format!("runs healthy on all {} host(s)", hosts.len());
    if !out.stderr.contains(&all) {
        bail!("push --wait returned 0 without saying it {all}: {said}");
    }
    let ms = |to: Instant| to.duration_since(launched).as_secs_f64() * 1000.0;
    let mut host_ms = Vec::new();
    for (name, first) in served {
        let first = first.with_context(|| {
            format!(
                "{name}'s Caddy never answered {want} for {} although {said}",
                s.domain
            )
        })?;
        host_ms.push(ms(first));
    }
    Ok(Round {
        serving_ms: host_ms.iter().copied().fold(0.0, f64::max),
        host_ms,
        wait_ms: ms(returned),
    })
}

/// A tick the timer ran, from a host's journal.
#[derive(Debug)]
struct Tick {
    host: &'static str,
    /// When its `tick:` line was logged (µs since the epoch).
    at_us: u64,
    summary: TickSummary,
    /// It wrote a report to the status store (a `status: reported to` line).
    reported: bool,
}

/// The agent's lines in `host`'s journal since `since` (`@unix seconds`), with their times.
fn journal_lines(host: &Host, since: &str) -> Result<Vec<(u64, String)>> {
    let text = host.sh_ok(&format!(
        "journalctl -q -u ferry-agent.service -o json --output-fields=MESSAGE,__REALTIME_TIMESTAMP --no-pager --since '{since}'"
    ))?;
    let mut lines = Vec::new();
    for entry in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(entry)
            .with_context(|| format!("a journal entry is not JSON: {entry}"))?;
        // MESSAGE is an array of bytes when it is not printable text: not an agent line.
        let (Some(at), Some(message)) = (v["__REALTIME_TIMESTAMP"].as_str(), v["MESSAGE"].as_str())
        else {
            continue;
        };
        let at: u64 = at
            .parse()
            .with_context(|| format!("a journal timestamp is not a number: {entry}"))?;
        lines.push((at, message.to_owned()));
    }
    Ok(lines)
}

/// The ticks in `host`'s journal since `since`, oldest first.
fn ticks(host: &Host, name: &'static str, since: &str) -> Result<Vec<Tick>> {
    let mut ticks = Vec::new();
    let mut reported = false;
    for (at_us, line) in journal_lines(host, since)? {
        if line.starts_with("status: reported to ") {
            reported = true;
        } else if line.starts_with("tick:") {
            ticks.push(Tick {
                host: name,
                at_us,
                summary: TickSummary::parse(&line)?,
                reported,
            });
            reported = false;
        }
    }
    Ok(ticks)
}

/// Waits until the timer of each of `hosts` has run `n` no-op ticks since `since`.
fn quiet_ticks(bed: &Bed, hosts: &[&'static str], since: &str, n: usize) -> Result<()> {
    for (i, name) in hosts.iter().enumerate() {
        let host = bed.host(i);
        let mut seen = Vec::new();
        eventually(&format!("{n} no-op ticks on {name}"), LIMIT, || {
            seen = ticks(host, name, since)?;
            let mut noops = 0;
            for t in &seen {
                noops += usize::from(t.summary.is_noop()?);
            }
            Ok(noops >= n)
        })
        .with_context(|| {
            let seen: Vec<String> = seen.iter().map(|t| t.summary.to_string()).collect();
            format!("{name}'s ticks since {since}: {seen:#?}")
        })?;
    }
    Ok(())
}

fn unix_now() -> Result<Duration> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")
}

/// A `journalctl --since` value for the next whole second (nothing logged before now).
fn since_now() -> Result<String> {
    Ok(format!("@{}", unix_now()?.as_secs() + 1))
}

/// median / p90 / max of `values`, formatted.
fn cells(values: &[f64], decimals: usize) -> Vec<String> {
    match summarize(values) {
        Some(s) => [s.median, s.p90, s.max]
            .iter()
            .map(|v| format!("{v:.decimals$}"))
            .collect(),
        None => vec!["-".to_owned(); 3],
    }
}

/// Both strategies' services on the `strategies` mode's two hosts.
fn manifest(versions: [&str; 2]) -> Value {
    let hosts = &HOSTS[..2];
    json!({
        "version": 1,
        "generation": "2026-01-01T00:00:00Z",
        "services": [service(&STRATEGIES[0], versions[0], hosts), service(&STRATEGIES[1], versions[1], hosts)],
    })
}

/// The `waves` mode's manifest: the restart service on three hosts, with the rollout or
/// without.
fn waves_manifest(version: &str, waves: bool) -> Value {
    let mut m = json!({
        "version": 1,
        "generation": "2026-01-01T00:00:00Z",
        "services": [service(&STRATEGIES[0], version, &HOSTS)],
    });
    if waves {
        m["rollout"] = json!({"waves": [["host-a"], ["host-b", "host-c"]], "soakSec": SOAK_SEC});
    }
    m
}

/// A bed whose first `hosts.len()` hosts run the release agent from the module's timer,
/// reporting to a status store, and the developer's `ferry` beside it.
struct Fleet {
    bed: Bed,
    dev: FleetDev,
    hosts: &'static [&'static str],
    agent: std::path::PathBuf,
    ferry: std::path::PathBuf,
    closures: &'static Closures,
    /// `journalctl --since` for every tick from the timers' first on.
    started: String,
}

impl Fleet {
    fn start(hosts: &'static [&'static str]) -> Result<Fleet> {
        let agent = ferry_tests::workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?;
        let ferry = ferry_tests::workspace_binary("ferry", "FERRY_BIN")?;
        let closures = Closures::get()?;
        let bed = Bed::start(BedOptions {
            hosts: hosts.len(),
            bind_ro: vec![BindRo {
                source: agent.clone(),
                target: AGENT.into(),
            }],
            ..Default::default()
        })?;
        let deploy = bed.s3().clone();
        let status = bed.add_bucket("ferry-status")?;
        let key = [closures.public_key.clone()];
        for (i, name) in hosts.iter().enumerate() {
            let mut options = module_unit_options(&deploy, name, &key, &key, EXTRA, INTERVAL)?;
            options["status"] = json!({
                "bucket": status.url(),
                "credentialsFile": STATUS_CREDENTIALS,
                "everySec": EVERY_SEC,
            });
            let host = bed.host(i);
            host.put_bytes(
                STATUS_CREDENTIALS,
                status.credentials_text().as_bytes(),
                0o600,
            )?;
            install_module_agent_config(host, &deploy, &options)?;
            module_unit::install(host, &options)?;
        }
        // Every tick from the timers' first on (whole seconds, so from the second before).
        let started = format!("@{}", unix_now()?.as_secs().saturating_sub(1));
        let dev = FleetDev::new(ferry.clone(), &deploy, &status, &closures.secret_key_file)?;
        dev.ok(&["upload", &closures.v1])?;
        dev.ok(&["upload", &closures.v2])?;
        Ok(Fleet {
            bed,
            dev,
            hosts,
            agent,
            ferry,
            closures,
            started,
        })
    }

    /// Publishes `manifest` (`ferry publish`).
    fn publish(&self, manifest: &Value) -> Result<()> {
        let file = self.dev.dir().join("manifest.json");
        std::fs::write(&file, serde_json::to_vec_pretty(manifest)?)?;
        self.dev.ok(&["publish", &file.to_string_lossy()])?;
        Ok(())
    }

    /// Waits until every host serves `want` for each of `strategies`' domains, then for two
    /// no-op ticks on each.
    fn serving(&self, strategies: &[Strategy], want: &str) -> Result<()> {
        for (i, name) in self.hosts.iter().enumerate() {
            let addr = caddy(self.bed.host(i))?;
            for s in strategies {
                eventually(
                    &format!("{} {want} through {name}'s Caddy", s.service),
                    LIMIT,
                    || Ok(version(addr, s.domain).as_deref() == Some(want)),
                )?;
            }
        }
        self.quiet(2)
    }

    /// Waits for `n` no-op ticks on each host from now.
    fn quiet(&self, n: usize) -> Result<()> {
        quiet_ticks(&self.bed, self.hosts, &since_now()?, n)
    }

    /// Every tick of every host since the timers started, oldest first.
    fn ticks(&self) -> Result<Vec<Tick>> {
        let mut all = Vec::new();
        for (i, name) in self.hosts.iter().enumerate() {
            all.extend(ticks(self.bed.host(i), name, &self.started)?);
        }
        all.sort_by_key(|t| t.at_us);
        Ok(all)
    }
}

/// What `/version` answers for a closure.
fn answer(closures: &Closures, path: &str) -> &'static str {
    if path == closures.v1 {
        "1.0.0"
    } else {
        "2.0.0"
    }
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(5)?;
    ensure!(rounds > 0, "BENCH_ROUNDS must be at least 1");
    let mode = std::env::args().nth(1);
    match mode.as_deref() {
        None | Some("strategies") => strategies(rounds),
        Some("waves") => waves(rounds),
        Some(other) => {
            bail!("unknown mode {other:?}: bench/push_wait.sh [strategies|waves]")
        }
    }
}

/// Issue 16's figures: `restart` against `blue-green` on two hosts, and the no-op ticks.
fn strategies(rounds: usize) -> Result<()> {
    let fleet = Fleet::start(&HOSTS[..2])?;
    let run_started = Instant::now();
    let (v1, v2) = (fleet.closures.v1.as_str(), fleet.closures.v2.as_str());
    fleet.publish(&manifest([v1, v1]))?;
    fleet.serving(&STRATEGIES, "1.0.0")?;
    eprintln!(
        "both services run v1 on both hosts ({:.0} s)",
        run_started.elapsed().as_secs_f64()
    );

    let mut versions = [v1, v1];
    let mut measured: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    // Round 0 of each strategy is the untimed warm-up (v2 into the hosts' stores).
    for round in 0..=rounds {
        for (i, s) in STRATEGIES.iter().enumerate() {
            // Step through the timer's cycle: round r starts (r-1)/rounds of an interval
            // after the hosts' quiet ticks were seen.
            let offset = INTERVAL.mul_f64(round.saturating_sub(1) as f64 / rounds as f64);
            std::thread::sleep(offset);
            versions[i] = if versions[i] == v1 { v2 } else { v1 };
            let want = answer(fleet.closures, versions[i]);
            let r = push(&fleet.dev, &fleet.bed, fleet.hosts, s, versions[i], want)
                .with_context(|| format!("{} round {round}", s.label))?;
            eprintln!(
                "{} round {round}{}: serving on both hosts {:.0} ms, --wait returned {:.0} ms",
                s.label,
                if round == 0 { " (warm-up)" } else { "" },
                r.serving_ms,
                r.wait_ms
            );
            if round > 0 {
                measured[i].push(r);
            }
            fleet.quiet(2)?;
        }
    }
    let run_secs = run_started.elapsed().as_secs_f64();

    // The ticks: every no-op tick made one request; a quiet tick reported only when due.
    let all = fleet.ticks()?;
    let mut noop_requests = Vec::new();
    let mut noop_ms = Vec::new();
    let mut quiet_reports = Vec::new();
    let mut last_report: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &all {
        if t.summary.is_noop()? {
            let requests = t.summary.get("requests")?;
            ensure!(
                requests == 1,
                "a no-op tick on {} made {requests} bucket requests, not 1: {}",
                t.host,
                t.summary
            );
            noop_requests.push(requests as f64);
            noop_ms.push(t.summary.get("ms")? as f64);
            if t.reported {
                let since_last = last_report
                    .get(t.host)
                    .map(|prev| (t.at_us.saturating_sub(*prev)) / 1_000_000);
                ensure!(
                    since_last.is_none_or(|s| s + 1 >= EVERY_SEC),
                    "a quiet tick on {} reported {since_last:?} s after the previous report (everySec {EVERY_SEC}): {}",
                    t.host,
                    t.summary
                );
                quiet_reports.push(t);
            }
        }
        if t.reported {
            last_report.insert(t.host, t.at_us);
        }
    }
    let deploying = all
        .iter()
        .filter(|t| t.summary.get("unitsTouched").unwrap_or(0) > 0);
    let reported_deploys = deploying.clone().filter(|t| t.reported).count();
    let deploying = deploying.count();

    println!(
        "{rounds} pushes per strategy (v1 ↔ v2, one service on 2 hosts, after one untimed push each) with {} and {}; each host's agent from the module's timer every {} s, reporting to a status store (everySec {EVERY_SEC}); health: first probe at once, then every 1 s, settle 1 s; drain 1 s; --wait reads the reports every 2 s\n",
        fleet.ferry.display(),
        fleet.agent.display(),
        INTERVAL.as_secs()
    );
    let mut table = Table::new(&["from `ferry push` launch, ms", "median", "p90", "max"]);
    for (i, s) in STRATEGIES.iter().enumerate() {
        let rs = &measured[i];
        let serving: Vec<f64> = rs.iter().map(|r| r.serving_ms).collect();
        let wait: Vec<f64> = rs.iter().map(|r| r.wait_ms).collect();
        let overhead: Vec<f64> = rs.iter().map(|r| r.wait_ms - r.serving_ms).collect();
        let ratio: Vec<f64> = rs.iter().map(|r| r.wait_ms / r.serving_ms).collect();
        let mut row = |what: String, values: Vec<String>| {
            let mut cells = vec![what];
            cells.extend(values);
            table.row(cells);
        };
        row(
            format!("{}: new version via Caddy on both hosts", s.label),
            cells(&serving, 0),
        );
        row(
            format!("{}: `ferry push --wait` returns", s.label),
            cells(&wait, 0),
        );
        row(
            format!("{}:   --wait − serving (waiting for reports)", s.label),
            cells(&overhead, 0),
        );
        row(format!("{}:   --wait ÷ serving", s.label), cells(&ratio, 2));
    }
    print!("{}", table.render());
    let mut ticks_table = Table::new(&["timer ticks", "count", "median", "p90", "max"]);
    let count = noop_requests.len().to_string();
    let mut row = vec!["no-op ticks: bucket requests".to_owned(), count.clone()];
    row.extend(cells(&noop_requests, 0));
    ticks_table.row(row);
    let mut row = vec!["no-op ticks: wall ms".to_owned(), count];
    row.extend(cells(&noop_ms, 0));
    ticks_table.row(row);
    println!();
    print!("{}", ticks_table.render());
    println!(
        "\n{} ticks on 2 hosts in {run_secs:.0} s; {deploying} touched units ({reported_deploys} of them reported); quiet ticks that wrote a report: {} (due only every {EVERY_SEC} s)",
        all.len(),
        quiet_reports.len()
    );
    Ok(())
}

/// Issue 17's figure: `push --wait` on three hosts in two waves against the same push
/// without waves, taking turns.
fn waves(rounds: usize) -> Result<()> {
    let fleet = Fleet::start(&HOSTS)?;
    let run_started = Instant::now();
    let s = &STRATEGIES[0];
    let (v1, v2) = (fleet.closures.v1.as_str(), fleet.closures.v2.as_str());
    fleet.publish(&waves_manifest(v1, false))?;
    fleet.serving(std::slice::from_ref(s), "1.0.0")?;
    eprintln!(
        "{} runs v1 on three hosts ({:.0} s)",
        s.service,
        run_started.elapsed().as_secs_f64()
    );
    let mut current = v1;
    // [without waves, with waves]
    let mut measured: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    // Round 0's push without waves is the untimed warm-up (v2 into the hosts' stores).
    for round in 0..=rounds {
        for (i, with_waves) in [false, true].into_iter().enumerate() {
            if round == 0 && with_waves {
                continue;
            }
            let label = if with_waves { "waves" } else { "no waves" };
            fleet.publish(&waves_manifest(current, with_waves))?;
            fleet.quiet(2)?;
            let offset = INTERVAL.mul_f64(round.saturating_sub(1) as f64 / rounds as f64);
            std::thread::sleep(offset);
            current = if current == v1 { v2 } else { v1 };
            let want = answer(fleet.closures, current);
            let r = push(&fleet.dev, &fleet.bed, fleet.hosts, s, current, want)
                .with_context(|| format!("{label} round {round}"))?;
            eprintln!(
                "{label} round {round}{}: serving on host-a {:.0} ms, on all three {:.0} ms, --wait returned {:.0} ms",
                if round == 0 { " (warm-up)" } else { "" },
                r.host_ms[0],
                r.serving_ms,
                r.wait_ms
            );
            if with_waves {
                let later = r.host_ms[1].min(r.host_ms[2]) - r.host_ms[0];
                ensure!(
                    later >= (SOAK_SEC * 1000) as f64,
                    "with waves, host-b or host-c served {want} {later:.0} ms after host-a, less than soakSec ({SOAK_SEC} s)"
                );
            }
            if round > 0 {
                measured[i].push(r);
            }
        }
    }
    let run_secs = run_started.elapsed().as_secs_f64();

    println!(
        "{rounds} pushes each of `{}` (restart, v1 ↔ v2) on 3 hosts without waves and with rollout {{\"waves\": [[\"host-a\"], [\"host-b\", \"host-c\"]], \"soakSec\": {SOAK_SEC}}}, taking turns (the manifest with the running version republished before each, then two no-op ticks per host), after one untimed push; {} and {}; each host's agent from the module's timer every {} s, reporting to a status store; settle 1 s; --wait reads the reports every 2 s; {run_secs:.0} s\n",
        s.service,
        fleet.ferry.display(),
        fleet.agent.display(),
        INTERVAL.as_secs()
    );
    let column =
        |i: usize, f: &dyn Fn(&Round) -> f64| -> Vec<f64> { measured[i].iter().map(f).collect() };
    let mut table = Table::new(&["from `ferry push` launch, ms", "median", "p90", "max"]);
    let mut row = |what: &str, values: Vec<String>| {
        let mut cells = vec![what.to_owned()];
        cells.extend(values);
        table.row(cells);
    };
    for (i, label) in ["no waves", "waves"].iter().enumerate() {
        row(
            &format!("{label}: new version via host-a's Caddy"),
            cells(&column(i, &|r| r.host_ms[0]), 0),
        );
        row(
            &format!("{label}: via host-b's and host-c's (the later)"),
            cells(&column(i, &|r| r.host_ms[1].max(r.host_ms[2])), 0),
        );
        row(
            &format!("{label}: `ferry push --wait` returns"),
            cells(&column(i, &|r| r.wait_ms), 0),
        );
    }
    row(
        "waves: host-b/c first serving − host-a's",
        cells(
            &column(1, &|r| r.host_ms[1].min(r.host_ms[2]) - r.host_ms[0]),
            0,
        ),
    );
    print!("{}", table.render());
    let wait = |i| summarize(&column(i, &|r: &Round| r.wait_ms)).map(|s| s.median);
    let (Some(plain), Some(waved)) = (wait(0), wait(1)) else {
        bail!("no rounds measured");
    };
    println!(
        "\n--wait median with waves ÷ without: {:.2} ({:.0} ms more; soakSec alone is {} ms, one timer period {} ms)",
        waved / plain,
        waved - plain,
        SOAK_SEC * 1000,
        INTERVAL.as_millis()
    );

    // The ticks: only host-b and host-c read reports, one each (host-a's); no-op ticks one
    // bucket request.
    let all = fleet.ticks()?;
    let mut gated = 0;
    let mut noops = 0;
    for t in &all {
        let reads = t.summary.get("statusReads")?;
        if reads > 0 {
            ensure!(
                t.host != "host-a" && reads == 1,
                "a tick on {} read {reads} reports (want: only host-b and host-c, one each): {}",
                t.host,
                t.summary
            );
            gated += 1;
        }
        if t.summary.is_noop()? {
            let requests = t.summary.get("requests")?;
            ensure!(
                requests == 1,
                "a no-op tick on {} made {requests} bucket requests, not 1: {}",
                t.host,
                t.summary
            );
            noops += 1;
        }
    }
    println!(
        "{} ticks on 3 hosts; {gated} read reports (host-b and host-c waiting, 1 read each, the formula's R = 1); {noops} no-op ticks, 1 bucket request each",
        all.len()
    );
    Ok(())
}
