//! `ferry`: the developer's side of Ferry. Parses the command line and hands over to
//! [`cli::run`]; nothing else happens here.

// Tests may panic on a broken precondition; the binary itself may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod command;
mod gc_plan;
mod lease;
mod live_manifest;
mod manifest_edit;
mod manifest_write;
mod nar_dump;
mod nar_stream;
mod narinfo_text;
mod nix_cli;
mod path_info;
mod progress;
mod resolve;
mod revision;
mod settings;
mod upload_plan;
mod uploader;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::EXIT_TROUBLE)
        }
    }
}
