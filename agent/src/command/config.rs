//! `ferry-agent config [--defaults] [--json]`: print the effective configuration (or the
//! defaults), as TOML or JSON, with the bucket URL as the agent understood it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use ferry_agent::config::Config;
use ferry_bucket::BucketUrl;

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

/// Print the configuration. `bucket` is printed as the agent reads it, every default
/// spelled out (e.g. `s3://b?profile=p&scheme=https&endpoint=host` prints as
/// `s3://b?endpoint=https://host&region=us-east-1&profile=p`); the TOML form adds the URL as
/// written in a comment when the two differ.
pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = if args.defaults {
        Config::default()
    } else {
        Config::load(config_path)?
    };
    let written = config.bucket.clone();
    let config = with_understood_bucket(config)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).context("serialising the configuration")?
        );
    } else {
        if let Some(written) = written.filter(|w| Some(w) != config.bucket.as_ref()) {
            println!("# bucket as written: {written}");
        }
        print!(
            "{}",
            toml::to_string_pretty(&config).context("serialising the configuration")?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `config` with its bucket URL replaced by the URL as understood. Pure.
fn with_understood_bucket(mut config: Config) -> anyhow::Result<Config> {
    if let Some(text) = &config.bucket {
        let url = BucketUrl::parse(text).context("bucket in agent.toml")?;
        config.bucket = Some(url.to_string());
    }
    if let Some(text) = &config.status.bucket {
        let url = BucketUrl::parse(text).context("status.bucket in agent.toml")?;
        config.status.bucket = Some(url.to_string());
    }
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_prints_as_understood() {
        let config = Config::parse(
            "bucket = \"s3://omni-nix-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com\"",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(
            with_understood_bucket(config).unwrap().bucket.as_deref(),
            Some(
                "s3://omni-nix-cache?endpoint=https://nyc3.digitaloceanspaces.com&region=us-east-1&profile=digitalocean"
            )
        );
        let none = with_understood_bucket(Config::default()).unwrap();
        assert_eq!(none, Config::default());
    }
}
