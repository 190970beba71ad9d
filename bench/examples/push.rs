//! Benchmark: pushing a synthetic closure (200 paths, about 230 MiB of NAR, half text, half
//! random bytes; `bench/push/closure.nix`) to the bed's Garage with the release-built
//! `ferry`, against the usual manual way measured in the same run: `nix copy --to
//! 'file://DIR?compression=zstd&secret-key=…'` then `rclone copy DIR` (rclone's default
//! settings) to the same Garage. Then the incremental push of the same closure with only its
//! top path changed (`ferry push SERVICE PATH`: requests and wall time, goal under 1 s at
//! 50 ms), next to the manual way's incremental run. Each at 0 ms and at an added
//! round-trip time (`BENCH_RTT_MS`, default 50): at 0 ferry and rclone talk to Garage
//! directly, otherwise both go through a `ferry_tests::latency::LatencyRelay` adding it (the
//! kernel has no netem). Run `bench/push.sh` (root; `BENCH_ROUNDS`, default 3).
//!
//! Every round starts from an empty Garage for each side and RTT; the two sides take turns
//! going first, and the store's files are read once before the first round so neither side
//! pays for a cold page cache. The load average is printed before and after: the machine's
//! cores may be shared.

#[path = "../shared/rclone.rs"]
mod rclone;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_bench::stats::{Summary, Table, summarize};
use ferry_tests::latency::LatencyRelay;
use ferry_tests::{Bed, BedOptions, S3};
use serde_json::json;

/// The synthetic closure's expression.
const CLOSURE_NIX: &str = include_str!("../push/closure.nix");
/// The service name the incremental push updates.
const SERVICE: &str = "bench";

/// What one run of a command took.
struct Run {
    secs: f64,
    stdout: String,
    stderr: String,
}

/// Runs `command`, timed; fails with its output unless it exits 0.
fn timed(what: &str, command: &mut Command) -> Result<Run> {
    let started = Instant::now();
    let out = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    let secs = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{stdout}{stderr}", out.status);
    }
    Ok(Run {
        secs,
        stdout,
        stderr,
    })
}

/// Builds the closure (top path `top`) and returns its top store path; `dir/result-<top>`
/// keeps it from garbage collection while the benchmark runs.
fn build_closure(dir: &Path, top: &str) -> Result<String> {
    let file = dir.join("closure.nix");
    std::fs::write(&file, CLOSURE_NIX).with_context(|| format!("writing {}", file.display()))?;
    let mut build = Command::new("nix-build");
    build
        .arg(&file)
        .args(ferry_tests::closures::NIX_BUILD_FLAGS)
        .args(["--argstr", "nonce", "1", "--argstr", "top", top, "-o"])
        .arg(dir.join(format!("result-{top}")));
    let run = timed("nix-build of the synthetic closure", &mut build)?;
    Ok(run.stdout.trim().to_owned())
}

/// Reads every file of `paths`' closure once, so the page cache is warm for both sides.
fn warm_page_cache(top: &str) -> Result<u64> {
    let run = timed(
        "reading the closure",
        Command::new("sh").args([
            "-c",
            "find $(nix-store -qR \"$1\") -type f -print0 | xargs -0 cat | wc -c",
            "sh",
            top,
        ]),
    )?;
    run.stdout
        .trim()
        .parse()
        .context("counting the closure's bytes")
}

fn bucket_url(s3: &S3) -> String {
    format!(
        "s3://{}?endpoint={}&region={}",
        s3.bucket, s3.endpoint, s3.region
    )
}

/// `ferry ARGS` against `s3` with its credentials in the environment.
fn ferry(binary: &Path, s3: &S3, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE")
        .env("XDG_CONFIG_HOME", "/nonexistent-ferry-bench-config")
        .env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
    command
}

/// The request count from ferry's summary line (`…; N requests, S s`).
fn requests(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains(" requests, "))?;
    let before = line.split(" requests, ").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The request count of a whole `ferry push` (`… (N requests in all)`).
fn requests_in_all(stderr: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.ends_with(" requests in all)"))?;
    let before = line.strip_suffix(" requests in all)")?;
    before.rsplit('(').next()?.parse().ok()
}

/// `rclone copy DIR garage:BUCKET`, configured through the environment only.
fn rclone(s3: &S3, dir: &Path) -> Command {
    let mut command = rclone::rclone(s3);
    command
        .arg("copy")
        .arg(dir)
        .arg(format!("garage:{}", s3.bucket));
    command
}

fn nix_copy(dir: &Path, key: &Path, path: &str) -> Command {
    let mut command = Command::new("nix");
    command
        .args(["--extra-experimental-features", "nix-command", "copy"])
        .args(["--option", "substituters", "", "--to"])
        .arg(format!(
            "file://{}?compression=zstd&secret-key={}",
            dir.display(),
            key.display()
        ))
        .arg(path);
    command
}

/// One round's figures.
#[derive(Default)]
struct Round {
    ferry_full: f64,
    ferry_full_requests: Option<u64>,
    ferry_incremental: f64,
    ferry_incremental_requests: Option<u64>,
    nix_copy_full: f64,
    rclone_full: f64,
    nix_copy_incremental: f64,
    rclone_incremental: f64,
}

struct Setup {
    ferry: PathBuf,
    key: PathBuf,
    top1: String,
    top2: String,
    work: PathBuf,
}

/// A fresh Garage and how both sides reach it: directly at 0 ms, through a latency relay
/// adding `rtt_ms` otherwise. Fields drop in order: the relay before the bed.
struct Target {
    s3: S3,
    _relay: Option<LatencyRelay>,
    _bed: Bed,
}

fn garage_addr(s3: &S3) -> Result<SocketAddr> {
    s3.endpoint
        .trim_start_matches("http://")
        .parse()
        .with_context(|| format!("Garage's endpoint {}", s3.endpoint))
}

fn target(rtt_ms: u64) -> Result<Target> {
    let bed = Bed::start(BedOptions::default())?;
    let mut s3 = bed.s3().clone();
    let relay = if rtt_ms == 0 {
        None
    } else {
        let relay = LatencyRelay::start(
            "127.0.0.1",
            garage_addr(&s3)?,
            Duration::from_millis(rtt_ms),
        )?;
        s3.endpoint = relay.endpoint();
        Some(relay)
    };
    Ok(Target {
        s3,
        _relay: relay,
        _bed: bed,
    })
}

fn ferry_side(setup: &Setup, rtt_ms: u64, round: &mut Round) -> Result<()> {
    let target = target(rtt_ms)?;
    let s3 = &target.s3;
    let url = bucket_url(s3);
    let key = setup.key.to_str().context("key path is not UTF-8")?;
    let full = timed(
        "ferry upload",
        &mut ferry(
            &setup.ferry,
            s3,
            &["upload", "--bucket", &url, "--key-file", key, &setup.top1],
        ),
    )?;
    round.ferry_full = full.secs;
    round.ferry_full_requests = requests(&full.stderr);

    let manifest = setup.work.join("manifest.json");
    let value = json!({
        "version": 1,
        "generation": "2025-01-01T00:00:00Z",
        "services": [{
            "name": SERVICE,
            "artifact": {"type": "nix-closure", "storePath": setup.top1},
            "hosts": ["benchhost"],
            "exec": {"command": "bench"},
        }],
    });
    std::fs::write(&manifest, serde_json::to_vec_pretty(&value)?)?;
    let manifest = manifest.to_str().context("work path is not UTF-8")?;
    timed(
        "ferry publish",
        &mut ferry(
            &setup.ferry,
            s3,
            &["publish", manifest, "--bucket", &url, "--key-file", key],
        ),
    )?;
    let incremental = timed(
        "ferry push",
        &mut ferry(
            &setup.ferry,
            s3,
            &[
                "push",
                SERVICE,
                &setup.top2,
                "--bucket",
                &url,
                "--key-file",
                key,
                "--revision",
                "bench",
            ],
        ),
    )?;
    round.ferry_incremental = incremental.secs;
    round.ferry_incremental_requests = requests_in_all(&incremental.stderr);
    if round.ferry_incremental_requests.is_none() {
        eprintln!(
            "ferry push printed no request count:\n{}",
            incremental.stderr
        );
    }
    Ok(())
}

fn manual_side(setup: &Setup, rtt_ms: u64, round: &mut Round) -> Result<()> {
    let target = target(rtt_ms)?;
    let s3 = &target.s3;
    let cache = tempfile::tempdir_in(&setup.work)?;
    round.nix_copy_full = timed(
        "nix copy",
        &mut nix_copy(cache.path(), &setup.key, &setup.top1),
    )?
    .secs;
    round.rclone_full = timed("rclone copy", &mut rclone(s3, cache.path()))?.secs;
    round.nix_copy_incremental = timed(
        "nix copy",
        &mut nix_copy(cache.path(), &setup.key, &setup.top2),
    )?
    .secs;
    round.rclone_incremental = timed("rclone copy", &mut rclone(s3, cache.path()))?.secs;
    Ok(())
}

/// The round-trip times measured at: 0, and the one added by `BENCH_RTT_MS` (default 50),
/// the variable the other whole-flow benchmarks read.
fn rtts() -> Result<Vec<u64>> {
    let added = match std::env::var("BENCH_RTT_MS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("BENCH_RTT_MS must be whole milliseconds ({v:?})"))?,
        Err(_) => 50,
    };
    Ok(if added == 0 { vec![0] } else { vec![0, added] })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(3)?;
    let rtts = rtts()?;
    let work = tempfile::tempdir()?;
    let ferry_binary = ferry_tests::workspace_binary("ferry", "FERRY_BIN")?;
    let key = work.path().join("bench.sec");
    let mut keygen = Command::new("nix-store");
    keygen
        .args(["--generate-binary-cache-key", "ferry-bench-1"])
        .arg(&key)
        .arg(work.path().join("bench.pub"));
    timed("nix-store --generate-binary-cache-key", &mut keygen)?;
    let setup = Setup {
        ferry: ferry_binary,
        key,
        top1: build_closure(work.path(), "1")?,
        top2: build_closure(work.path(), "2")?,
        work: work.path().to_owned(),
    };
    let paths = timed(
        "nix-store -qR",
        Command::new("nix-store").args(["-qR", &setup.top1]),
    )?
    .stdout
    .lines()
    .count();
    let bytes = warm_page_cache(&setup.top1)?;

    let load_before = load_average();
    let started = Instant::now();
    let mut results: Vec<(u64, Round)> = Vec::new();
    for index in 0..rounds {
        for &rtt in &rtts {
            let mut round = Round::default();
            if index % 2 == 0 {
                ferry_side(&setup, rtt, &mut round)?;
                manual_side(&setup, rtt, &mut round)?;
            } else {
                manual_side(&setup, rtt, &mut round)?;
                ferry_side(&setup, rtt, &mut round)?;
            }
            eprintln!(
                "round {}, {rtt} ms: ferry {:.2} s, nix copy + rclone {:.2} + {:.2} s; incremental ferry push {:.2} s, nix copy + rclone {:.2} + {:.2} s",
                index + 1,
                round.ferry_full,
                round.nix_copy_full,
                round.rclone_full,
                round.ferry_incremental,
                round.nix_copy_incremental,
                round.rclone_incremental,
            );
            results.push((rtt, round));
        }
    }
    let run_secs = started.elapsed().as_secs_f64();

    let mut table = Table::new(&[
        "push to Garage",
        "median s",
        "p90 s",
        "requests",
        "manual ÷ ferry",
    ]);
    for &rtt in &rtts {
        let at: Vec<&Round> = results
            .iter()
            .filter(|(r, _)| *r == rtt)
            .map(|(_, round)| round)
            .collect();
        add_rows(&mut table, rtt, &at);
    }
    println!(
        "{rounds} rounds per RTT; closure of {} paths, {:.0} MiB of files; {run_secs:.0} s, load average {load_before} before, {} after; goal: ferry at least 1.5x faster than the manual way at both latencies, incremental push under 1 s at 50 ms\n",
        paths,
        bytes as f64 / (1024.0 * 1024.0),
        load_average(),
    );
    print!("{}", table.render());
    Ok(())
}

/// The table's rows for one RTT.
fn add_rows(table: &mut Table, rtt: u64, results: &[&Round]) {
    let column = |f: fn(&Round) -> f64| -> Vec<f64> { results.iter().map(|r| f(r)).collect() };
    let ferry_full = summarize(&column(|r| r.ferry_full));
    let manual_full = summarize(&column(|r| r.nix_copy_full + r.rclone_full));
    let ferry_inc = summarize(&column(|r| r.ferry_incremental));
    let manual_inc = summarize(&column(|r| r.nix_copy_incremental + r.rclone_incremental));
    let line =
        |table: &mut Table, what: &str, values: Vec<f64>, requests: String, ratio: String| {
            if let Some(s) = summarize(&values) {
                table.row(vec![
                    format!("{rtt} ms: {what}"),
                    format!("{:.2}", s.median),
                    format!("{:.2}", s.p90),
                    requests,
                    ratio,
                ]);
            }
        };
    let ratio = |manual: Option<Summary>, ferry: Option<Summary>| match (manual, ferry) {
        (Some(m), Some(f)) => format!("{:.2}x", m.median / f.median),
        _ => String::new(),
    };
    let requests_text = |f: fn(&Round) -> Option<u64>| -> String {
        let counts: Vec<String> = results
            .iter()
            .map(|r| f(r).map_or("?".to_owned(), |n| n.to_string()))
            .collect();
        counts.join("/")
    };
    line(
        table,
        "full: ferry upload",
        column(|r| r.ferry_full),
        requests_text(|r| r.ferry_full_requests),
        ratio(manual_full, ferry_full),
    );
    line(
        table,
        "full: nix copy file://",
        column(|r| r.nix_copy_full),
        String::new(),
        String::new(),
    );
    line(
        table,
        "full: rclone copy",
        column(|r| r.rclone_full),
        String::new(),
        String::new(),
    );
    line(
        table,
        "full: nix copy + rclone",
        column(|r| r.nix_copy_full + r.rclone_full),
        String::new(),
        String::new(),
    );
    line(
        table,
        "one path changed: ferry push",
        column(|r| r.ferry_incremental),
        requests_text(|r| r.ferry_incremental_requests),
        ratio(manual_inc, ferry_inc),
    );
    line(
        table,
        "one path changed: nix copy + rclone",
        column(|r| r.nix_copy_incremental + r.rclone_incremental),
        String::new(),
        String::new(),
    );
}
