//! `ferry-agent`: keeps one host in line with the manifest in the bucket. This file only
//! parses the command line and dispatches to one module per verb.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod command;

/// Ferry's host agent (run by a systemd timer).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Agent configuration file.
    #[arg(long, global = true, default_value = ferry_agent::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Run one tick: bring this host in line with the manifest.
    Reconcile(command::reconcile::Args),
    /// Take a service one profile generation back: restart, health-check, and hold that
    /// version until the manifest changes again.
    Rollback(command::rollback::Args),
    /// Show what a tick would do, without doing it.
    Plan(command::plan::Args),
    /// Show what this host runs: services, units, routes, quarantined store paths.
    Status(command::status::Args),
    /// Write the unit files the agent would install for a host (no config needed).
    Render(command::render::Args),
    /// Print the effective configuration, the bucket URL as the agent understood it.
    Config(command::config::Args),
    /// Print a shell completion script (for packagers).
    #[command(hide = true)]
    Completions(ferry_cli_docs::CompletionsArgs),
    /// Print the man page, or write one per verb with --out (for packagers).
    #[command(hide = true)]
    Man(ferry_cli_docs::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.verb {
        Verb::Reconcile(a) => command::reconcile::run(&cli.config, a),
        Verb::Rollback(a) => command::rollback::run(&cli.config, a),
        Verb::Plan(a) => command::plan::run(&cli.config, a),
        Verb::Status(a) => command::status::run(&cli.config, a),
        Verb::Render(a) => command::render::run(a),
        Verb::Config(a) => command::config::run(&cli.config, a),
        Verb::Completions(a) => {
            ferry_cli_docs::run_completions(Cli::command(), &a).map(|()| ExitCode::SUCCESS)
        }
        Verb::Man(a) => ferry_cli_docs::run_man(Cli::command(), &a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
