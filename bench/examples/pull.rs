//! Benchmark: a host's pull of a whole closure, the agent's way against the plain way, in the
//! same run. The synthetic closure of `bench/push/closure.nix` (200 paths, about 230 MiB of
//! NAR) is uploaded to the bed's Garage with the release-built `ferry upload`; the same
//! objects are copied out of the bucket into a directory that Caddy's `file-server` serves
//! as a plain HTTP binary cache. Each round deletes the closure from the local store and
//! pulls it back twice, taking turns going first:
//! - **ferry**: the agent's own pull, as a tick runs it: `CacheProxy` (the loopback proxy
//!   over Ferry's S3 client, told the root so it fetches the closure ahead) and
//!   `NixCli::pull` (one `nix copy --from`, signatures checked);
//! - **nix copy**: the same `nix copy` argv (`NixCli::copy_argv`), `--from` the plain cache.
//!
//! Both at 0 ms and at an added round trip (`BENCH_RTT_MS`, default 50) between the client
//! and the server: a user-space relay ([`ferry_tests::latency::LatencyRelay`]) in front of
//! Garage and in front of Caddy alike. Goal: ferry at most 1.3× the plain way. Run
//! `bench/pull.sh` (root; `BENCH_ROUNDS`, default 3).

#[path = "../shared/rclone.rs"]
mod rclone;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_agent::backend::cache_proxy::CacheProxy;
use ferry_agent::backend::store::{NixCli, Store};
use ferry_bench::stats::{Table, summarize};
use ferry_tests::latency::{LatencyRelay, s3_behind};
use ferry_tests::{Bed, BedOptions, S3};

/// The synthetic closure's expression (shared with the push benchmark).
const CLOSURE_NIX: &str = include_str!("../push/closure.nix");

/// Runs `command`; fails with its output unless it exits 0. Returns stdout.
fn run(what: &str, command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the closure and returns its top store path and every path of it. No GC root is
/// kept: the rounds delete it from the store.
fn build_closure(dir: &Path) -> Result<(String, Vec<String>)> {
    let file = dir.join("closure.nix");
    std::fs::write(&file, CLOSURE_NIX).with_context(|| format!("writing {}", file.display()))?;
    let nonce = format!("pull-{}", std::process::id());
    let top = run(
        "nix-build of the synthetic closure",
        Command::new("nix-build")
            .arg(&file)
            .args(ferry_tests::closures::NIX_BUILD_FLAGS)
            .args(["--argstr", "nonce", &nonce, "--no-out-link"]),
    )?
    .trim()
    .to_owned();
    let paths = run(
        "nix-store -qR",
        Command::new("nix-store").args(["-qR", &top]),
    )?
    .lines()
    .map(str::to_owned)
    .collect();
    Ok((top, paths))
}

/// Deletes the closure from the local store, so the next pull copies all of it.
fn delete_closure(paths: &[String]) -> Result<()> {
    run(
        "nix-store --delete of the closure",
        Command::new("nix-store").arg("--delete").args(paths),
    )?;
    if let Some(left) = paths.iter().find(|p| Path::new(p).exists()) {
        bail!("{left} is still in the store after nix-store --delete (a GC root?)");
    }
    Ok(())
}

/// `rclone copy garage:BUCKET DIR`: every object of the bucket into `dir`.
fn mirror(s3: &S3, dir: &Path) -> Result<()> {
    run(
        "rclone copy out of Garage",
        rclone::rclone(s3)
            .arg("copy")
            .arg(format!("garage:{}", s3.bucket))
            .arg(dir),
    )
    .map(drop)
}

/// Caddy serving `dir` as static files; killed when dropped.
struct FileServer {
    child: Child,
    addr: SocketAddr,
}

impl FileServer {
    fn start(dir: &Path) -> Result<Self> {
        let port = ferry_tests::garage::free_ports("127.0.0.1")?.s3;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new("caddy")
            .args(["file-server", "--listen", &addr.to_string(), "--root"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting caddy file-server")?;
        let server = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("caddy file-server did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    s3: S3,
    files: SocketAddr,
    nix: NixCli,
    top: String,
    paths: Vec<String>,
    creds: tempfile::TempDir,
}

/// The agent's pull through relays adding `rtt`: seconds, the bucket requests it made, and
/// the NARs Nix took from the proxy's look-ahead.
fn ferry_pull(
    setup: &Setup,
    rtt: Duration,
    rt: &tokio::runtime::Runtime,
) -> Result<(f64, u64, u64)> {
    let (_relay, s3) = s3_behind(&setup.s3, rtt)?;
    rt.block_on(async {
        let bucket = Arc::new(s3.ferry_bucket(setup.creds.path()).await?);
        let started = Instant::now();
        let proxy =
            CacheProxy::start_with_prefetch(bucket.clone(), std::slice::from_ref(&setup.top))
                .await?;
        setup
            .nix
            .pull(proxy.url(), std::slice::from_ref(&setup.top))
            .await?;
        let secs = started.elapsed().as_secs_f64();
        Ok((
            secs,
            ferry_bucket::Bucket::requests(&*bucket),
            proxy.served_ahead(),
        ))
    })
}

/// `nix copy` of the same closure from the plain HTTP cache, through a relay adding `rtt`.
fn plain_pull(setup: &Setup, rtt: Duration) -> Result<f64> {
    let relay = LatencyRelay::start("127.0.0.1", setup.files, rtt)?;
    let argv = setup
        .nix
        .copy_argv(&relay.endpoint(), std::slice::from_ref(&setup.top));
    let (program, args) = argv.split_first().context("empty nix copy argv")?;
    let started = Instant::now();
    run(
        "nix copy from the plain cache",
        Command::new(program).args(args),
    )?;
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let rounds = ferry_bench::stats::rounds(3)?;
    let added = ferry_bench::stats::rtt(50)?;
    let work = tempfile::tempdir()?;
    let ferry_binary = ferry_tests::workspace_binary("ferry", "FERRY_BIN")?;
    let (key, public) = (work.path().join("bench.sec"), work.path().join("bench.pub"));
    run(
        "nix-store --generate-binary-cache-key",
        Command::new("nix-store")
            .args(["--generate-binary-cache-key", "ferry-bench-pull-1"])
            .arg(&key)
            .arg(&public),
    )?;
    let public = std::fs::read_to_string(&public)?.trim().to_owned();
    let (top, paths) = build_closure(work.path())?;

    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3().clone();
    run(
        "ferry upload",
        Command::new(&ferry_binary)
            .args(["upload", "--quiet", "--bucket", &s3.url(), "--key-file"])
            .arg(&key)
            .arg(&top)
            .env_remove("FERRY_BUCKET")
            .env("XDG_CONFIG_HOME", "/nonexistent-ferry-bench-config")
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
    )?;
    let cache_dir = work.path().join("plain-cache");
    mirror(&s3, &cache_dir)?;
    let objects = std::fs::read_dir(&cache_dir)?.count();
    let files = FileServer::start(&cache_dir)?;
    let setup = Setup {
        s3,
        files: files.addr,
        nix: NixCli {
            nix: "nix".into(),
            trusted_keys: vec![public],
            pull_timeout: Duration::from_secs(600),
            command_timeout: Duration::from_secs(60),
        },
        top,
        paths,
        creds: tempfile::tempdir()?,
    };
    // The agent's own runtime: one thread (`agent/src/command/runtime.rs`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let mut table = Table::new(&[
        "added RTT",
        "ferry pull median s",
        "p90 s",
        "requests",
        "NARs fetched ahead",
        "nix copy from plain HTTP median s",
        "p90 s",
        "ferry ÷ plain",
    ]);
    for rtt in [Duration::ZERO, added] {
        let (mut ferry, mut plain) = (Vec::new(), Vec::new());
        let (mut requests, mut ahead) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let ferry_first = round % 2 == 0;
            for side in 0..2 {
                delete_closure(&setup.paths)?;
                if (side == 0) == ferry_first {
                    let (secs, n, a) = ferry_pull(&setup, rtt, &rt)?;
                    ferry.push(secs);
                    requests.push(n.to_string());
                    ahead.push(a.to_string());
                } else {
                    plain.push(plain_pull(&setup, rtt)?);
                }
            }
            eprintln!(
                "{} ms, round {}: ferry {:.2} s, plain {:.2} s",
                rtt.as_millis(),
                round + 1,
                ferry.last().copied().unwrap_or(f64::NAN),
                plain.last().copied().unwrap_or(f64::NAN)
            );
        }
        let (Some(f), Some(p)) = (summarize(&ferry), summarize(&plain)) else {
            bail!("no measurements");
        };
        table.row(vec![
            format!("{} ms", rtt.as_millis()),
            format!("{:.2}", f.median),
            format!("{:.2}", f.p90),
            requests.join("/"),
            ahead.join("/"),
            format!("{:.2}", p.median),
            format!("{:.2}", p.p90),
            format!("{:.2}x", f.median / p.median),
        ]);
    }
    println!(
        "{rounds} rounds; closure of {} paths, {objects} cache objects; goal: ferry ÷ plain at most 1.30\n",
        setup.paths.len()
    );
    print!("{}", table.render());
    drop(files);
    Ok(())
}
