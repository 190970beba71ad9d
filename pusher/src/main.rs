//! `ferry`: the developer's side of Ferry.

use clap::Parser;

/// Deploy Nix closures to hosts running ferry-agent.
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
