//! Measures how long a bed takes to start and to stop with 0, 1 and 3 hosts:
//! `cargo run -p ferry-tests --example bed_timing` (as root, after tests/bed/install.sh).

use std::time::Instant;

use ferry_tests::{Bed, BedOptions};

fn main() -> anyhow::Result<()> {
    for hosts in [0, 1, 3] {
        let started = Instant::now();
        let bed = Bed::start(BedOptions {
            hosts,
            ..Default::default()
        })?;
        let start = started.elapsed();
        let stopping = Instant::now();
        drop(bed);
        let stop = stopping.elapsed();
        println!(
            "hosts={hosts}: start {:.2} s, stop {:.2} s, total {:.2} s",
            start.as_secs_f64(),
            stop.as_secs_f64(),
            (start + stop).as_secs_f64()
        );
    }
    Ok(())
}
