//! `ferry`: the developer's side of Ferry. Parses the command line and hands over to
//! [`cli::run`]; nothing else happens here.

use std::process::ExitCode;

use clap::Parser;
use ferry_pusher::cli;

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
