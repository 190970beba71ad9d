//! The command line: the list of verbs and dispatch to `command/<verb>.rs`. Adding a verb
//! is a new file under `command/` plus one variant and one match arm here.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::command;

/// Exit status when a check fails (invalid manifest, bad signature).
pub const EXIT_FAILED: u8 = 1;

/// Exit status when ferry could not do its job (unreadable file, bad arguments, I/O).
pub const EXIT_TROUBLE: u8 = 2;

/// Deploy Nix closures to hosts running ferry-agent, through an S3 bucket.
///
/// A manifest (JSON) lists the services, the Nix store path each runs and the hosts it runs
/// on. Start with `ferry init` (config file, signing key, a starter manifest and the NixOS
/// snippet for the hosts) or `ferry validate manifest.json`; create a signing key with `ferry keygen`,
/// sign the manifest with `ferry sign` and check it with `ferry verify`. Put closures in the
/// bucket with `ferry upload`, make a manifest live with `ferry publish`, deploy a new
/// version of a service with `ferry push`; `show`, `history`, `diff` and `rollback` work on
/// the live manifest and its archive; `ferry gc` deletes cached closures no kept manifest
/// needs (safe while others push). Commands that change the live manifest never overwrite a
/// concurrent change: a push re-applies itself when only other services changed meanwhile;
/// otherwise the loser fails with "the manifest changed while pushing — run again". `push`
/// and `rollback` sign only manifests signed by your key or one in `trusted_keys` of the
/// config file (`--force` to override). Every command has its own `--help`.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    Init(command::init::Args),
    Validate(command::validate::Args),
    Schema(command::schema::Args),
    Keygen(command::keygen::Args),
    Sign(command::sign::Args),
    Verify(command::verify::Args),
    Upload(command::upload::Args),
    Push(command::push::Args),
    Publish(command::publish::Args),
    Show(command::show::Args),
    History(command::history::Args),
    Rollback(command::rollback::Args),
    Diff(command::diff::Args),
    Status(command::status::Args),
    Gc(command::gc::Args),
    /// Print a shell completion script (for packagers).
    #[command(hide = true)]
    Completions(ferry_cli_docs::CompletionsArgs),
    /// Print the man page, or write one per verb with --out (for packagers).
    #[command(hide = true)]
    Man(ferry_cli_docs::ManArgs),
}

/// Runs the chosen verb; the exit code says how it went.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => command::init::run(&args),
        Command::Validate(args) => command::validate::run(&args),
        Command::Schema(args) => command::schema::run(&args),
        Command::Keygen(args) => command::keygen::run(&args),
        Command::Sign(args) => command::sign::run(&args),
        Command::Verify(args) => command::verify::run(&args),
        Command::Upload(args) => block_on(command::upload::run(&args)),
        Command::Push(args) => block_on(command::push::run(&args)),
        Command::Publish(args) => block_on(command::publish::run(&args)),
        Command::Show(args) => block_on(command::show::run(&args)),
        Command::History(args) => block_on(command::history::run(&args)),
        Command::Rollback(args) => block_on(command::rollback::run(&args)),
        Command::Diff(args) => block_on(command::diff::run(&args)),
        Command::Status(args) => block_on(command::status::run(&args)),
        Command::Gc(args) => block_on(command::gc::run(&args)),
        Command::Completions(args) => {
            ferry_cli_docs::run_completions(Cli::command(), &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            ferry_cli_docs::run_man(Cli::command(), &args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs an async verb on a fresh multi-threaded runtime (only bucket verbs need one).
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    future: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}
