//! `ferry schema`: prints the manifest v1 JSON Schema.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// Print the JSON Schema of manifest v1.
///
/// Editors that understand JSON Schema can use it to complete and check manifests:
/// `ferry schema > manifest.schema.json`. It is the same file as
/// `schema/manifest.v1.schema.json` in Ferry's source.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints the schema to stdout.
pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    std::io::stdout()
        .write_all(ferry_schema::schema_json().as_bytes())
        .context("writing the schema to stdout")?;
    Ok(ExitCode::SUCCESS)
}
