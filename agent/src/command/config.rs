//! `ferry-agent config [--defaults] [--json]`: print the effective configuration (or the
//! defaults), as TOML or JSON.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use ferry_agent::config::Config;

/// Arguments of `config`.
#[derive(clap::Args)]
pub struct Args {
    /// Print the built-in defaults instead of the configuration file's effective values.
    #[arg(long)]
    defaults: bool,
    /// Print JSON instead of TOML.
    #[arg(long)]
    json: bool,
}

/// Print the configuration.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = if args.defaults {
        Config::default()
    } else {
        Config::load(config_path)?
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).context("serialising the configuration")?
        );
    } else {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("serialising the configuration")?
        );
    }
    Ok(ExitCode::SUCCESS)
}
