//! `ferry-demo`: Ferry's main job, narrated on the real test bed — the same scenario as the
//! end-to-end test (`ferry_tests::scenario`): `ferry` pushes to Garage, two systemd hosts run
//! `ferry-agent` from its timer, Caddy routes `web`. Afterwards the bed stays up for poking
//! at until Enter or Ctrl-C, unless `--cleanup`. Run through `scripts/demo.sh`, which
//! installs the bed and builds the binaries first.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ferry_tests::scenario::narrate::{banner, say};
use ferry_tests::scenario::{AGENT, Binaries, HOST_A, HOST_B, Options, Scenario, WEB_DOMAIN};
use ferry_tests::workspace_binary;

/// Ferry's main job on the test bed: push → deploy → update → automatic rollback → manual
/// rollbacks → removal → outage and reboot, narrated with timings.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Tear the bed down at the end instead of leaving it running to explore.
    #[arg(long)]
    cleanup: bool,
    /// The agent timer's interval in seconds.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Also measure a push with the timer at 60 s (adds up to a minute).
    #[arg(long)]
    slow_timer: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferry-demo: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nferry-demo: FAILED: {err:#}");
            eprintln!("(the bed has been torn down)");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let bins = Binaries {
        ferry: workspace_binary("ferry", "FERRY_BIN")?,
        agent: workspace_binary("ferry-agent", "FERRY_AGENT_BIN")?,
    };
    let options = Options {
        interval: Duration::from_secs(args.interval.max(1)),
        slow_interval: args.slow_timer.then_some(Duration::from_secs(60)),
    };
    let mut scenario = Scenario::start(&bins, options).await?;
    scenario.run().await?;
    println!(
        "\nEvery step checked out, in {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if args.cleanup {
        println!("Tearing the bed down (--cleanup).");
        return Ok(());
    }
    explore(&scenario).await
}

/// Prints how to look around, then keeps the bed up until Enter or Ctrl-C.
async fn explore(scenario: &Scenario) -> Result<()> {
    let a = scenario.bed.host(0);
    let b = scenario.bed.host(1);
    let s3 = scenario.bed.s3();
    banner("The bed is still running: look around");
    say(&format!(
        "curl -H 'Host: {WEB_DOMAIN}' http://{}/version      # web through Caddy",
        a.ip()
    ));
    say(&format!(
        "nsenter -t {} -a {AGENT} status                # what {HOST_A} runs",
        a.pid()?
    ));
    say(&format!(
        "nsenter -t {} -a journalctl -u ferry-agent -f  # its ticks, every few seconds",
        a.pid()?
    ));
    say(&format!(
        "nsenter -t {} -a systemctl list-units 'ferry-*' # {HOST_B}'s services",
        b.pid()?
    ));
    say(&format!(
        "AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} target/debug/ferry history --bucket 's3://{}?endpoint={}&region={}'",
        s3.access_key, s3.secret_key, s3.bucket, s3.endpoint, s3.region
    ));
    if std::io::stdin().is_terminal() {
        println!("\nPress Enter (or Ctrl-C) to stop the bed and clean up.");
        let enter = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        });
        tokio::select! {
            _ = enter => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        println!("\nSend SIGINT (Ctrl-C) to stop the bed and clean up.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    println!("Stopping the bed…");
    Ok(())
}
