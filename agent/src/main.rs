//! `ferry-agent`: keeps one host in line with the manifest in the bucket.

use clap::Parser;

/// Ferry's host agent (run by a systemd timer).
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
