//! Benchmark: how long the test bed takes to start and to tear down, with Garage alone (the
//! baseline every bed pays), one host and three hosts, over `BENCH_ROUNDS` rounds (default
//! 5). Run `bench/bed_start_stop.sh` (root).
//!
//! "Start" is `Bed::start` returning: the bridge up, Garage answering with its bucket, and
//! every host's systemd `running` and its Caddy's admin API answering. "Stop" is tearing the
//! bed down: hosts powered off, Garage stopped, namespaces, veths, mounts and files removed.
//! Each stop is `Bed::tear_down`, which also checks that every host shut down cleanly and
//! nothing is left, so a fast stop that kills containers or leaves something behind fails
//! the benchmark instead of flattering it.
//!
//! Every bed is kept up for [`IN_USE`] before it is stopped, as a test would use it: Garage
//! stopped within a second of its start took 890 ms to shut down instead of 150 (its
//! background workers were still starting), which is not what a test pays.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferry_bench::stats::{Table, summarize};
use ferry_tests::{Bed, BedOptions};

/// The bed sizes measured; the first is the baseline the others are compared with.
const SIZES: [usize; 3] = [0, 1, 3];

/// How long each bed stays up between start and stop.
const IN_USE: Duration = Duration::from_secs(3);

/// Start and stop one bed of `hosts` hosts; returns (start ms, stop ms).
fn start_stop(hosts: usize) -> Result<(f64, f64)> {
    let started = Instant::now();
    let bed = Bed::start(BedOptions {
        hosts,
        ..Default::default()
    })?;
    let start_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(IN_USE.saturating_sub(started.elapsed()));
    let stopping = Instant::now();
    // The same teardown as dropping the bed, plus its check (run while the slot is still
    // held): the time includes that check, which is small beside the hosts' shutdown.
    let problems = bed.tear_down()?;
    let stop_ms = stopping.elapsed().as_secs_f64() * 1000.0;
    if !problems.is_empty() {
        bail!("a bed of {hosts} host(s) did not tear down cleanly: {problems:?}");
    }
    Ok((start_ms, stop_ms))
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(5)?;
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); SIZES.len()];
    // Sizes take turns within each round, so a machine that slows down over the run weighs
    // on all of them alike. Round 0 is an untimed warm-up (page cache, first nspawn).
    for round in 0..=rounds {
        for (index, hosts) in SIZES.iter().enumerate() {
            let (start, stop) = start_stop(*hosts)?;
            if round > 0 {
                times[index].0.push(start);
                times[index].1.push(stop);
            }
        }
    }

    let mut table = Table::new(&[
        "bed",
        "start median ms",
        "start p90 ms",
        "stop median ms",
        "stop p90 ms",
        "start ÷ Garage only",
        "stop ÷ Garage only",
    ]);
    let baseline = summarize(&times[0].0).zip(summarize(&times[0].1));
    for (hosts, (start, stop)) in SIZES.iter().zip(&times) {
        let (Some(start), Some(stop)) = (summarize(start), summarize(stop)) else {
            continue;
        };
        let label = match hosts {
            0 => "Garage only".to_owned(),
            1 => "Garage + 1 host".to_owned(),
            n => format!("Garage + {n} hosts"),
        };
        let (start_ratio, stop_ratio) = baseline.map_or((f64::NAN, f64::NAN), |(b0, b1)| {
            (start.median / b0.median, stop.median / b1.median)
        });
        table.row(vec![
            label,
            format!("{:.0}", start.median),
            format!("{:.0}", start.p90),
            format!("{:.0}", stop.median),
            format!("{:.0}", stop.p90),
            format!("{start_ratio:.2}x"),
            format!("{stop_ratio:.2}x"),
        ]);
    }
    println!("{rounds} rounds (after one warm-up round), every size in turn\n");
    print!("{}", table.render());
    Ok(())
}
