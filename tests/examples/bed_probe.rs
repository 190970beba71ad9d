//! Runs one shell command in a fresh one-host bed and prints its output and duration:
//! `cargo run -p ferry-tests --example bed_probe -- 'nix-store -q --references /bin/sh'`.

use std::time::Instant;

use ferry_tests::{Bed, BedOptions};

fn main() -> anyhow::Result<()> {
    let script = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "systemctl is-system-running".into());
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let started = Instant::now();
    let out = bed.host(0).sh(&script)?;
    println!(
        "status {} in {:.2} s\nstdout:\n{}\nstderr:\n{}",
        out.status,
        started.elapsed().as_secs_f64(),
        out.stdout,
        out.stderr
    );
    Ok(())
}
