//! Benchmark (issues 16, 17 and 19): `ferry push --wait` wall time, from the launch of `ferry
//! push` to its return. Run `bench/push_wait.sh [strategies|waves|fleet]` (root;
//! `BENCH_ROUNDS`, default 5, 3 for `fleet`).
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
//!
//! `fleet` (issue 19): `BENCH_HOSTS` bed hosts (default 10, booted in parallel; the run stops
//! with a clear message when the machine lacks the memory or the bed cannot boot them) on
//! one bucket, set up as above but with `status.everySec` 60, run the `restart` service.
//! Everything the hosts send Garage (agent.toml's deploy bucket and status store) passes a
//! `LatencyRelay` (`ferry_tests::latency`) and then a counting relay that counts requests by
//! kind (`http_count::request_kind`); `ferry` has its own pair. First at 0 ms added round
//! trip, then (agent.toml re-rendered, `ferry` pointed anew) at `BENCH_RTT_MS` (default 50):
//! a quiet window of `BENCH_QUIET_SEC` (default 120) with no deploy, then `BENCH_ROUNDS`
//! pushes (default 3; the first phase starts with an untimed push that puts v2 in the
//! stores, counted as a new version's deploy). Each push: launch → the `waiting up to` line
//! (the manifest is written and read back), → the latest of the pollers' first answers (every
//! 25 ms: all hosts serve it), → `--wait` returns (exit 0, all healthy); medians. Requests:
//! the quiet window per minute and each push's window (launch to two no-op ticks on every
//! host after it) by kind, beside the hosts' own `tick:` lines in the window and the
//! formula of PLAN.md ("Fleet scale"). At the end the timers are stopped and Garage's whole
//! count of the hosts' requests must equal what their tick lines account for (requests +
//! statusReads + report writes). The machine's free memory, load and CPU are sampled
//! throughout.

#[path = "../shared/counting_relay.rs"]
mod counting_relay;
#[path = "../shared/serving.rs"]
mod serving;
#[path = "../shared/strategies.rs"]
mod strategies;

use counting_relay::{CountingRelay, Counts};
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
use ferry_tests::latency::{LatencyRelay, s3_behind};
use ferry_tests::module_unit::{self, AGENT};
use ferry_tests::{Bed, BedOptions, BindRo, Closures, Host, Output, S3, TickSummary};
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
/// How often a poller asks a host's Caddy for `/version` (a fresh connection each time).
const POLL: Duration = Duration::from_millis(5);

/// What `ferry ARGS` did and when: its launch, the moment it said it wrote the manifest and
/// began waiting (`waiting up to … for the hosts … to report` on stderr, printed after the
/// write and the read-back of the live manifest), and its return.
struct Timed {
    out: Output,
    launched: Instant,
    waiting: Option<Instant>,
    returned: Instant,
}

/// Runs `ferry ARGS`, reading its stderr as it comes to time the start of the wait.
fn timed(dev: &FleetDev, args: &[&str]) -> Result<Timed> {
    let mut cmd = dev.command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let launched = Instant::now();
    let mut child = cmd.spawn().context("starting ferry")?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("ferry's output is not piped");
    };
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let mut waiting = None;
    let mut err_text = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.context("reading ferry's stderr")?;
        if waiting.is_none() && line.starts_with("waiting up to ") {
            waiting = Some(Instant::now());
        }
        err_text.push_str(&line);
        err_text.push('\n');
    }
    let status = child.wait().context("waiting for ferry")?;
    let returned = Instant::now();
    let out = Output {
        status: status.code().unwrap_or(-1),
        stdout: out_reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader of ferry's stdout panicked"))?,
        stderr: err_text,
    };
    Ok(Timed {
        out,
        launched,
        waiting,
        returned,
    })
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
    /// Push launch → the push wrote the manifest and began waiting (its `waiting up to`
    /// line).
    pushed_ms: f64,
}

/// One `ferry push service path --wait`, timed, with a poller on each of `hosts`' Caddy
/// (bed hosts 0, 1, …) asking every `poll`.
fn push(
    dev: &FleetDev,
    bed: &Bed,
    hosts: &[&str],
    s: &Strategy,
    path: &str,
    want: &str,
    poll: Duration,
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
        .map(|addr| first_answer(*addr, s.domain, want.to_owned(), stop.clone(), poll, None))
        .collect();
    let args = ["push", s.service, path, WAIT];
    let Timed {
        out,
        launched,
        waiting,
        returned,
    } = timed(dev, &args)?;
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
    let waiting = waiting.with_context(|| format!("no `waiting up to` line from {said}"))?;
    Ok(Round {
        serving_ms: host_ms.iter().copied().fold(0.0, f64::max),
        host_ms,
        wait_ms: ms(returned),
        pushed_ms: ms(waiting),
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
    /// It tried to and failed (a `status: cannot write` line): a request all the same.
    report_failed: bool,
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
    let (mut reported, mut report_failed) = (false, false);
    for (at_us, line) in journal_lines(host, since)? {
        if line.starts_with("status: reported to ") {
            reported = true;
        } else if line.starts_with("status: cannot write ") {
            report_failed = true;
        } else if line.starts_with("tick:") {
            ticks.push(Tick {
                host: name,
                at_us,
                summary: TickSummary::parse(&line)?,
                reported,
                report_failed,
            });
            (reported, report_failed) = (false, false);
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
    /// The status store as the bed made it (at Garage's own address).
    status: S3,
    /// `status.everySec` on the hosts.
    every_sec: u64,
}

/// `s3` reached at `endpoint` (a relay in front of Garage) instead.
fn at(s3: &S3, endpoint: &str) -> S3 {
    S3 {
        endpoint: endpoint.to_owned(),
        ..s3.clone()
    }
}

impl Fleet {
    /// The bed's hosts and `ferry` reaching Garage directly; `status.everySec` 300.
    fn start(hosts: &'static [&'static str]) -> Result<Fleet> {
        let (fleet, ()) = Fleet::start_with(hosts, EVERY_SEC, |bed| {
            let garage = bed.s3().endpoint.clone();
            Ok((garage.clone(), garage, ()))
        })?;
        Ok(fleet)
    }

    /// Boots the bed, then asks `route` where the hosts and where `ferry` reach Garage
    /// (endpoints; relays it starts are handed back, so they live as long as the caller
    /// keeps them), then sets up the hosts' agents and uploads both closures.
    fn start_with<R>(
        hosts: &'static [&'static str],
        every_sec: u64,
        route: impl FnOnce(&Bed) -> Result<(String, String, R)>,
    ) -> Result<(Fleet, R)> {
        let agent = ferry_tests::workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?;
        let ferry = ferry_tests::workspace_binary("ferry", "FERRY_BIN")?;
        let closures = Closures::get()?;
        let bed = start_bed(hosts.len(), &agent)?;
        let status = bed.add_bucket("ferry-status")?;
        let (hosts_endpoint, dev_endpoint, kept) = route(&bed)?;
        let key = [closures.public_key.clone()];
        // Every tick from the first timer's first on (whole seconds, so from the second
        // before): a timer starts ticking as soon as its host's units are installed.
        let started = format!("@{}", unix_now()?.as_secs().saturating_sub(1));
        for (i, name) in hosts.iter().enumerate() {
            let host = bed.host(i);
            host.put_bytes(
                STATUS_CREDENTIALS,
                status.credentials_text().as_bytes(),
                0o600,
            )?;
            let (deploy, options) =
                host_options(&bed, &status, &hosts_endpoint, name, &key, every_sec)?;
            install_module_agent_config(host, &deploy, &options)?;
            module_unit::install(host, &options)?;
        }
        let dev = FleetDev::new(
            ferry.clone(),
            &at(bed.s3(), &dev_endpoint),
            &at(&status, &dev_endpoint),
            &closures.secret_key_file,
        )?;
        dev.ok(&["upload", &closures.v1])?;
        dev.ok(&["upload", &closures.v2])?;
        let fleet = Fleet {
            bed,
            dev,
            hosts,
            agent,
            ferry,
            closures,
            started,
            status,
            every_sec,
        };
        Ok((fleet, kept))
    }

    /// Points every host's agent.toml (both buckets) and `ferry` at new endpoints, as a
    /// user would by changing the module's options; the timers keep running.
    fn reroute(&mut self, hosts_endpoint: &str, dev_endpoint: &str) -> Result<()> {
        let key = [self.closures.public_key.clone()];
        for (i, name) in self.hosts.iter().enumerate() {
            let (deploy, options) = host_options(
                &self.bed,
                &self.status,
                hosts_endpoint,
                name,
                &key,
                self.every_sec,
            )?;
            install_module_agent_config(self.bed.host(i), &deploy, &options)?;
        }
        self.dev = FleetDev::new(
            self.ferry.clone(),
            &at(self.bed.s3(), dev_endpoint),
            &at(&self.status, dev_endpoint),
            &self.closures.secret_key_file,
        )?;
        Ok(())
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

/// The module's options for host `name`: the deploy bucket and the status store at
/// `endpoint`, the timer every [`INTERVAL`], reports every `every_sec`. Also the deploy
/// bucket as the host sees it (for its credentials file).
fn host_options(
    bed: &Bed,
    status: &S3,
    endpoint: &str,
    name: &str,
    key: &[String],
    every_sec: u64,
) -> Result<(S3, Value)> {
    let deploy = at(bed.s3(), endpoint);
    let mut options = module_unit_options(&deploy, name, key, key, EXTRA, INTERVAL)?;
    options["status"] = json!({
        "bucket": at(status, endpoint).url(),
        "credentialsFile": STATUS_CREDENTIALS,
        "everySec": every_sec,
    });
    Ok((deploy, options))
}

/// Starts the bed with `hosts` hosts (the release agent bound in), saying plainly when the
/// machine has too little memory for them or they could not boot.
fn start_bed(hosts: usize, agent: &std::path::Path) -> Result<Bed> {
    let before = machine::sample()?;
    let need = hosts as u64 * machine::HOST_MIB + machine::SPARE_MIB;
    ensure!(
        before.available_mib >= need,
        "{hosts} bed hosts need about {need} MiB ({} MiB each and {} MiB to spare) but the machine has {} MiB available (load average {:.1}): lower BENCH_HOSTS or wait for other builds and benchmarks to finish",
        machine::HOST_MIB,
        machine::SPARE_MIB,
        before.available_mib,
        before.load1
    );
    let started = Instant::now();
    let bed = Bed::start(BedOptions {
        hosts,
        bind_ro: vec![BindRo {
            source: agent.to_path_buf(),
            target: AGENT.into(),
        }],
        ..Default::default()
    })
    .with_context(|| {
        let now = machine::sample().map_or_else(
            |e| format!("({e:#})"),
            |m| format!("{} MiB available, load average {:.1}", m.available_mib, m.load1),
        );
        format!(
            "the bed could not start {hosts} hosts (before: {} MiB available, load average {:.1}; now {now}): the machine is too busy or too small for this many; lower BENCH_HOSTS or wait for other builds and benchmarks to finish",
            before.available_mib, before.load1
        )
    })?;
    eprintln!(
        "bed up with {hosts} hosts in {:.0} s ({} MiB available before, {} after)",
        started.elapsed().as_secs_f64(),
        before.available_mib,
        machine::sample().map_or(0, |m| m.available_mib)
    );
    Ok(bed)
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1);
    let fleet_mode = mode.as_deref() == Some("fleet");
    let rounds = ferry_bench::stats::rounds(if fleet_mode { 3 } else { 5 })?;
    ensure!(rounds > 0, "BENCH_ROUNDS must be at least 1");
    match mode.as_deref() {
        None | Some("strategies") => strategies(rounds),
        Some("waves") => waves(rounds),
        Some("fleet") => fleet(rounds),
        Some(other) => {
            bail!("unknown mode {other:?}: bench/push_wait.sh [strategies|waves|fleet]")
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
            let r = push(
                &fleet.dev,
                &fleet.bed,
                fleet.hosts,
                s,
                versions[i],
                want,
                POLL,
            )
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
            let r = push(&fleet.dev, &fleet.bed, fleet.hosts, s, current, want, POLL)
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

/// The `fleet` mode's host names (`BENCH_HOSTS` of them, default 10).
const FLEET_HOSTS: [&str; 20] = [
    "host-a", "host-b", "host-c", "host-d", "host-e", "host-f", "host-g", "host-h", "host-i",
    "host-j", "host-k", "host-l", "host-m", "host-n", "host-o", "host-p", "host-q", "host-r",
    "host-s", "host-t",
];
/// `status.everySec` in the `fleet` mode: one minute, so a two-minute quiet window holds the
/// reports' share of the fleet's requests (at the module's 300 s it would take ten).
const FLEET_EVERY_SEC: u64 = 60;
/// The `fleet` mode's pollers ask every 25 ms: ten pollers every 5 ms would send Caddy 2,000
/// requests a second on a two-core machine.
const FLEET_POLL: Duration = Duration::from_millis(25);
/// The module's defaults, for the formula: `interval` 3 min, `randomizedDelay` 30 s (a
/// uniform delay, 15 s on average, added to each period), `status.everySec` 300.
const MODULE_PERIOD_SEC: f64 = 180.0 + 15.0;

/// The `fleet` mode's manifest: the restart service on every host.
fn fleet_manifest(version: &str, hosts: &[&str]) -> Value {
    json!({
        "version": 1,
        "generation": "2026-01-01T00:00:00Z",
        "services": [service(&STRATEGIES[0], version, hosts)],
    })
}

/// A whole number from the environment, else `default`.
fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a whole number, not {v:?}")),
        Err(_) => Ok(default),
    }
}

/// Everything the hosts send Garage passes one counting relay, everything `ferry` sends
/// another; in front of each, one latency relay per round trip under test, which the hosts'
/// agent.toml (both buckets) and `ferry`'s bucket URLs name.
struct Relays {
    hosts: CountingRelay,
    dev: CountingRelay,
    paths: Vec<RelayPath>,
}

/// The latency relays of one round trip.
struct RelayPath {
    rtt: Duration,
    hosts: LatencyRelay,
    dev: LatencyRelay,
}

impl Relays {
    fn start(bed: &Bed, rtts: &[Duration]) -> Result<Relays> {
        let garage: SocketAddr = bed
            .s3()
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| {
                format!(
                    "Garage's endpoint {} is not http://ip:port",
                    bed.s3().endpoint
                )
            })?;
        // On the bridge's address, like Garage, so the hosts reach them.
        let ip = garage.ip().to_string();
        let hosts = CountingRelay::start(&ip, garage)?;
        let dev = CountingRelay::start(&ip, garage)?;
        let mut paths = Vec::new();
        for &rtt in rtts {
            let counted = |relay: &CountingRelay| at(bed.s3(), &format!("http://{}", relay.addr()));
            let (hosts_relay, _) = s3_behind(&counted(&hosts), rtt)?;
            let (dev_relay, _) = s3_behind(&counted(&dev), rtt)?;
            paths.push(RelayPath {
                rtt,
                hosts: hosts_relay,
                dev: dev_relay,
            });
        }
        Ok(Relays { hosts, dev, paths })
    }
}

/// A moment to count from: the relays' counts and the clock.
struct Mark {
    at: Instant,
    unix_us: u64,
    hosts: Counts,
    dev: Counts,
}

impl Mark {
    fn now(relays: &Relays) -> Result<Mark> {
        Ok(Mark {
            at: Instant::now(),
            unix_us: u64::try_from(unix_now()?.as_micros()).unwrap_or(u64::MAX),
            hosts: relays.hosts.counts(),
            dev: relays.dev.counts(),
        })
    }
}

/// What the hosts and `ferry` asked of Garage between two marks: Garage's side (the
/// counting relays) and the hosts' own `tick:` lines logged in between.
struct Window {
    secs: f64,
    hosts: Counts,
    dev: Counts,
    ticks: Vec<Tick>,
}

impl Window {
    fn since(mark: &Mark, relays: &Relays, fleet: &Fleet) -> Result<Window> {
        let end = Mark::now(relays)?;
        let ticks = fleet
            .ticks()?
            .into_iter()
            .filter(|t| (mark.unix_us..end.unix_us).contains(&t.at_us))
            .collect();
        Ok(Window {
            secs: end.at.duration_since(mark.at).as_secs_f64(),
            hosts: end.hosts.since(&mark.hosts),
            dev: end.dev.since(&mark.dev),
            ticks,
        })
    }

    /// Per minute.
    fn per_min(&self, n: u64) -> f64 {
        n as f64 * 60.0 / self.secs
    }

    /// The hosts' requests of `kind` (`GET narinfo`, …), at Garage.
    fn kind(&self, kind: &str) -> u64 {
        self.hosts.kinds.get(kind).copied().unwrap_or(0)
    }

    /// Reports written (or tried) by the ticks in the window.
    fn reports(&self) -> u64 {
        self.ticks
            .iter()
            .map(|t| u64::from(t.reported) + u64::from(t.report_failed))
            .sum()
    }

    /// Deploy-bucket requests by the ticks' own count.
    fn tick_requests(&self) -> Result<u64> {
        let mut n = 0;
        for t in &self.ticks {
            n += t.summary.get("requests")?;
        }
        Ok(n)
    }

    /// Status reports the ticks in the window read (the wave gate's).
    fn status_reads(&self) -> Result<u64> {
        let mut n = 0;
        for t in &self.ticks {
            n += t.summary.get("statusReads")?;
        }
        Ok(n)
    }

    /// The ticks that touched units (the deploy's), and their deploy-bucket requests beyond
    /// the manifest GET: what went through the cache proxy (`nix copy`).
    fn deploy_ticks(&self) -> Result<(u64, u64)> {
        let (mut ticks, mut cache) = (0, 0);
        for t in &self.ticks {
            if t.summary.get("unitsTouched")? > 0 {
                ticks += 1;
                cache += t.summary.get("requests")?.saturating_sub(1);
            }
        }
        Ok((ticks, cache))
    }
}

/// A figure of one timed push.
type Measure = fn(&Round) -> f64;

/// One RTT's measurements.
struct Phase {
    rtt: Duration,
    quiet: Window,
    /// The first push of v2 (the hosts' stores lack it): untimed, counted.
    warmup: Option<Window>,
    rounds: Vec<(Round, Window)>,
}

impl Fleet {
    /// Stops every host's timer and waits for a tick in flight to end.
    fn stop_timers(&self) -> Result<()> {
        for (i, name) in self.hosts.iter().enumerate() {
            let host = self.bed.host(i);
            host.sh_ok("systemctl stop ferry-agent.timer")?;
            eventually(&format!("{name}'s last tick to end"), LIMIT, || {
                let out = host.sh("systemctl is-active ferry-agent.service")?;
                Ok(!matches!(
                    out.stdout.trim(),
                    "active" | "activating" | "deactivating"
                ))
            })?;
        }
        Ok(())
    }
}

/// Issue 19's figures: push → serving on a fleet of `BENCH_HOSTS` bed hosts (default 10) at
/// 0 ms and `BENCH_RTT_MS` (default 50) of added round trip, and the fleet's bucket requests
/// per minute, quiet and per deploy, against the formula.
fn fleet(rounds: usize) -> Result<()> {
    let n = usize::try_from(env_number("BENCH_HOSTS", 10)?)?;
    ensure!(
        (1..=FLEET_HOSTS.len()).contains(&n),
        "BENCH_HOSTS must be 1 to {}, not {n}",
        FLEET_HOSTS.len()
    );
    let hosts: &'static [&'static str] = &FLEET_HOSTS[..n];
    let quiet_secs = env_number("BENCH_QUIET_SEC", 2 * FLEET_EVERY_SEC)?;
    let rtt = ferry_bench::stats::rtt(50)?;
    let mut rtts = vec![Duration::ZERO];
    if !rtt.is_zero() {
        rtts.push(rtt);
    }
    let watch = machine::Watch::start();
    let run_started = Instant::now();
    let (mut fleet, relays) = Fleet::start_with(hosts, FLEET_EVERY_SEC, |bed| {
        let relays = Relays::start(bed, &rtts)?;
        let first = &relays.paths[0];
        Ok((first.hosts.endpoint(), first.dev.endpoint(), relays))
    })?;
    let s = &STRATEGIES[0];
    let (v1, v2) = (fleet.closures.v1.as_str(), fleet.closures.v2.as_str());
    fleet.publish(&fleet_manifest(v1, hosts))?;
    fleet.serving(std::slice::from_ref(s), "1.0.0")?;
    eprintln!(
        "{} runs v1 on {n} hosts ({:.0} s)",
        s.service,
        run_started.elapsed().as_secs_f64()
    );

    let mut current = v1;
    let mut phases = Vec::new();
    for (index, path) in relays.paths.iter().enumerate() {
        let ms = path.rtt.as_millis();
        if index > 0 {
            fleet.reroute(&path.hosts.endpoint(), &path.dev.endpoint())?;
            fleet.quiet(2)?;
        }
        eprintln!("{ms} ms: counting a quiet {quiet_secs} s");
        let mark = Mark::now(&relays)?;
        std::thread::sleep(Duration::from_secs(quiet_secs));
        let quiet = Window::since(&mark, &relays, &fleet)?;
        eprintln!(
            "{ms} ms: quiet: {} requests from the hosts in {:.0} s ({:?})",
            quiet.hosts.requests, quiet.secs, quiet.hosts.kinds
        );
        let mut phase = Phase {
            rtt: path.rtt,
            quiet,
            warmup: None,
            rounds: Vec::new(),
        };
        // Round 0, the first phase's only, is the untimed warm-up: v2 into the stores.
        for round in usize::from(index > 0)..=rounds {
            let offset = INTERVAL.mul_f64(round.saturating_sub(1) as f64 / rounds as f64);
            std::thread::sleep(offset);
            current = if current == v1 { v2 } else { v1 };
            let want = answer(fleet.closures, current);
            let mark = Mark::now(&relays)?;
            let r = push(&fleet.dev, &fleet.bed, hosts, s, current, want, FLEET_POLL)
                .with_context(|| format!("{ms} ms round {round}"))?;
            fleet.quiet(2)?;
            let window = Window::since(&mark, &relays, &fleet)?;
            eprintln!(
                "{ms} ms round {round}{}: wrote {:.0} ms, all {n} serving {:.0} ms, --wait returned {:.0} ms; hosts {} requests ({:?}), ferry {}",
                if round == 0 { " (warm-up)" } else { "" },
                r.pushed_ms,
                r.serving_ms,
                r.wait_ms,
                window.hosts.requests,
                window.hosts.kinds,
                window.dev.requests
            );
            if round == 0 {
                phase.warmup = Some(window);
            } else {
                phase.rounds.push((r, window));
            }
        }
        phases.push(phase);
    }
    let run_secs = run_started.elapsed().as_secs_f64();

    // The whole run: with the timers stopped, every request Garage saw from the hosts
    // against what their tick lines say they made.
    fleet.stop_timers()?;
    let all = fleet.ticks()?;
    let seen = relays.hosts.counts();
    let mut said = 0;
    for t in &all {
        said += t.summary.get("requests")?
            + t.summary.get("statusReads")?
            + u64::from(t.reported)
            + u64::from(t.report_failed);
    }
    let load = watch.stop()?;

    println!(
        "{n} bed hosts on one bucket, `{}` (restart) on all; {rounds} pushes (v1 ↔ v2, both already in the hosts' stores after one untimed push) per round trip added between the hosts and `ferry` and Garage ({}); {} and {}; each host's agent from the module's timer every {} s (no random delay), reporting to a status store (everySec {FLEET_EVERY_SEC}); settle 1 s; --wait reads the reports every 2 s; pollers ask each host's Caddy every {} ms; {run_secs:.0} s\n",
        s.service,
        rtts.iter()
            .map(|r| format!("{} ms", r.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
        fleet.ferry.display(),
        fleet.agent.display(),
        INTERVAL.as_secs(),
        FLEET_POLL.as_millis()
    );
    let mut header = vec![format!(
        "from `ferry push` launch, ms (median, min–max of {rounds})"
    )];
    header.extend(
        phases
            .iter()
            .map(|p| format!("{} ms RTT", p.rtt.as_millis())),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    let spread = |f: Measure| -> Vec<String> {
        phases
            .iter()
            .map(|p| {
                let values: Vec<f64> = p.rounds.iter().map(|(r, _)| f(r)).collect();
                summarize(&values).map_or_else(
                    || "-".to_owned(),
                    |m| format!("{:.0} ({:.0}–{:.0})", m.median, m.min, m.max),
                )
            })
            .collect()
    };
    let rows: [(String, Measure); 6] = [
        (
            "(a) push wrote the manifest (`waiting up to` line)".to_owned(),
            |r| r.pushed_ms,
        ),
        ("    first host serves the new version".to_owned(), |r| {
            r.host_ms.iter().copied().fold(f64::INFINITY, f64::min)
        }),
        (
            format!("(b) all {n} hosts serve it (latest first answer)"),
            |r| r.serving_ms,
        ),
        (
            "(c) = (b) − (a): push returned → all serving".to_owned(),
            |r| r.serving_ms - r.pushed_ms,
        ),
        ("(d) `ferry push --wait` returns, exit 0".to_owned(), |r| {
            r.wait_ms
        }),
        ("    (d) − (b): waiting for the reports".to_owned(), |r| {
            r.wait_ms - r.serving_ms
        }),
    ];
    for (what, f) in rows {
        let mut cells = vec![what];
        cells.extend(spread(f));
        table.row(cells);
    }
    print!("{}", table.render());

    // Requests.
    let period = |w: &Window| w.secs * n as f64 / w.ticks.len().max(1) as f64;
    println!(
        "\nBucket requests of the {n} hosts, at Garage (a counting relay), by kind; \"tick lines\": the same by the hosts' own tick: lines (requests + statusReads + report writes) in the window:"
    );
    let mut requests = Table::new(&[
        "",
        "s",
        "all",
        "GET manifest (304)",
        "cache: info/narinfo/nar",
        "PUT report",
        "GET report",
        "other",
        "tick lines",
        "formula",
    ]);
    let kinds_row =
        |what: String, w: &Window, scale: &dyn Fn(u64) -> String| -> Result<Vec<String>> {
            let cache = ["GET nix-cache-info", "GET narinfo", "GET nar"].map(|k| w.kind(k));
            let known = w.kind("GET manifest")
                + cache.iter().sum::<u64>()
                + w.kind("PUT host report")
                + w.kind("GET host report");
            Ok(vec![
                what,
                format!("{:.0}", w.secs),
                scale(w.hosts.requests),
                format!(
                    "{} ({})",
                    scale(w.kind("GET manifest")),
                    scale(w.hosts.status(304))
                ),
                cache.map(scale).join("/"),
                scale(w.kind("PUT host report")),
                scale(w.kind("GET host report")),
                scale(w.hosts.requests - known),
                scale(w.tick_requests()? + w.status_reads()? + w.reports()),
            ])
        };
    for p in &phases {
        let q = &p.quiet;
        let ms = p.rtt.as_millis();
        let t = period(q);
        let gets = n as f64 * 60.0 / t;
        let puts = n as f64 * 60.0 / (t * (FLEET_EVERY_SEC as f64 / t).ceil());
        let per_min = |c: u64| format!("{:.1}", q.per_min(c));
        let mut row = kinds_row(format!("{ms} ms: quiet, per minute"), q, &per_min)?;
        row.push(format!(
            "{:.1} = {gets:.1} GET + {puts:.1} PUT (T = {t:.2} s)",
            gets + puts
        ));
        requests.row(row);
        let deploys = p
            .warmup
            .iter()
            .map(|w| ("first push of v2".to_owned(), w))
            .chain(
                p.rounds
                    .iter()
                    .enumerate()
                    .map(|(i, (_, w))| (format!("push {}", i + 1), w)),
            );
        for (label, w) in deploys {
            let (deploy_ticks, cache_by_ticks) = w.deploy_ticks()?;
            let c = cache_by_ticks as f64 / deploy_ticks.max(1) as f64;
            let count = |c: u64| c.to_string();
            let mut row = kinds_row(format!("{ms} ms: {label}"), w, &count)?;
            row.push(format!(
                "{} beyond GET manifest; N (C + 1) = {:.0}, C = {c:.1} ({deploy_ticks} deploying ticks)",
                w.hosts.requests - w.kind("GET manifest"),
                n as f64 * (c + 1.0)
            ));
            requests.row(row);
        }
    }
    print!("{}", requests.render());
    println!("\n`ferry push --wait`'s own requests (a counting relay of its own), per push:");
    let mut dev = Table::new(&[
        "",
        "all",
        "GET list",
        "GET report",
        "GET/PUT manifest",
        "other",
        "polls (GET report / N)",
    ]);
    for p in &phases {
        for (i, (_, w)) in p.rounds.iter().enumerate() {
            let d = &w.dev;
            let k = |kind: &str| d.kinds.get(kind).copied().unwrap_or(0);
            let known =
                k("GET list") + k("GET host report") + k("GET manifest") + k("PUT manifest");
            dev.row(vec![
                format!("{} ms: push {}", p.rtt.as_millis(), i + 1),
                d.requests.to_string(),
                k("GET list").to_string(),
                k("GET host report").to_string(),
                format!("{}/{}", k("GET manifest"), k("PUT manifest")),
                d.requests.saturating_sub(known).to_string(),
                format!("{:.1}", k("GET host report") as f64 / n as f64),
            ]);
        }
    }
    print!("{}", dev.render());
    if let Some((_, w)) = phases.first().and_then(|p| p.rounds.first()) {
        println!("(push 1 by kind: {:?})", w.dev.kinds);
    }
    println!(
        "\nWhole run, timers stopped: {} requests from the hosts at Garage ({:?}); their {} ticks' lines say {said} (requests + statusReads + report writes).",
        seen.requests,
        seen.kinds,
        all.len()
    );
    let f = |period: f64, every: f64, hosts: f64| {
        let gets = hosts * 60.0 / period;
        let puts = hosts * 60.0 / (period * (every / period).ceil());
        (gets, puts)
    };
    for (what, period) in [
        (
            format!(
                "the module's timer (3 min + up to 30 s random, {MODULE_PERIOD_SEC:.0} s on average)"
            ),
            MODULE_PERIOD_SEC,
        ),
        (
            format!("a {} s timer", INTERVAL.as_secs()),
            INTERVAL.as_secs_f64(),
        ),
    ] {
        let (gets, puts) = f(period, 300.0, 1000.0);
        println!(
            "Formula, 1,000 hosts, {what}, everySec 300: {gets:.0} manifest GETs + {puts:.0} report PUTs = {:.0} requests per minute ({:.1} per second), quiet",
            gets + puts,
            (gets + puts) / 60.0
        );
    }
    println!(
        "Machine during the run: {} MiB available at least ({} at the start), load average (1 min) up to {:.1}, CPU busy {:.0} % on average ({} cores)",
        load.min_available_mib,
        load.first_available_mib,
        load.max_load1,
        load.busy_percent,
        load.cores
    );
    ensure!(
        seen.requests == said,
        "Garage saw {} requests from the hosts but their tick lines account for {said}: a request the tick line does not count",
        seen.requests
    );
    Ok(())
}

/// The machine's memory and load, for the fleet mode: 10 nspawn hosts on two cores is heavy,
/// and other builds may share the machine.
mod machine {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use anyhow::{Context, Result};

    /// What one bed host is assumed to need (systemd, journald, Caddy, the service, a tick).
    pub const HOST_MIB: u64 = 200;
    /// Left over for Garage, the relays and the benchmark.
    pub const SPARE_MIB: u64 = 1024;

    /// One look at the machine.
    pub struct Sample {
        pub available_mib: u64,
        pub load1: f64,
    }

    pub fn sample() -> Result<Sample> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        let available_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no MemAvailable in /proc/meminfo")?;
        let loadavg = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
        let load1 = loadavg
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("/proc/loadavg has no 1-minute figure")?;
        Ok(Sample {
            available_mib: available_kib / 1024,
            load1,
        })
    }

    /// CPU time so far, busy and total (clock ticks, all cores), from /proc/stat.
    fn cpu() -> Result<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // idle and iowait
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok((total - idle, total))
    }

    /// The run's figures.
    pub struct Summary {
        pub first_available_mib: u64,
        pub min_available_mib: u64,
        pub max_load1: f64,
        pub busy_percent: f64,
        pub cores: usize,
    }

    /// Samples the machine every 2 s until stopped.
    pub struct Watch {
        stop: Arc<AtomicBool>,
        handle: JoinHandle<Result<Summary>>,
    }

    impl Watch {
        pub fn start() -> Watch {
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = stop.clone();
            let handle = std::thread::spawn(move || {
                let (busy0, total0) = cpu()?;
                let first = sample()?;
                let mut s = Summary {
                    first_available_mib: first.available_mib,
                    min_available_mib: first.available_mib,
                    max_load1: first.load1,
                    busy_percent: 0.0,
                    cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
                };
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(2));
                    let now = sample()?;
                    s.min_available_mib = s.min_available_mib.min(now.available_mib);
                    s.max_load1 = s.max_load1.max(now.load1);
                }
                let (busy1, total1) = cpu()?;
                s.busy_percent = 100.0 * (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
                Ok(s)
            });
            Watch { stop, handle }
        }

        pub fn stop(self) -> Result<Summary> {
            self.stop.store(true, Ordering::Relaxed);
            self.handle
                .join()
                .map_err(|_| anyhow::anyhow!("the machine watcher panicked"))?
        }
    }
}
