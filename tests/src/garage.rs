//! A single-node Garage for one bed: fresh data folder, one key, one bucket, listening on
//! free ports of the bed's bridge address so both the tests and the hosts reach it.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::capture;
use crate::random::random_hex;
use crate::s3::S3;
use crate::stop::stop_child;

/// The bucket every bed starts with.
pub const BUCKET: &str = "ferry-test";
/// How long Garage may take to answer after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Garage gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running Garage; stopping it (or dropping it) ends the process.
#[derive(Debug)]
pub struct Garage {
    child: Option<Child>,
    dir: PathBuf,
}

/// Ports for one Garage: S3 API and RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The S3 API's port.
    pub s3: u16,
    /// The RPC port (single node: only Garage itself talks to it).
    pub rpc: u16,
}

/// Two ports nothing listens on at `addr` now, picked by the kernel. Fixed ports would clash
/// with anything on the machine that listens on them on every address (a developer's own
/// Garage on `[::]:3900`, say).
pub fn free_ports(addr: &str) -> Result<Ports> {
    // Both held at once, so the kernel cannot hand out the same port twice.
    let bind = || {
        TcpListener::bind((addr, 0))
            .and_then(|listener| Ok((listener.local_addr()?.port(), listener)))
            .with_context(|| format!("finding a free port on {addr}"))
    };
    let (s3, _s3_listener) = bind()?;
    let (rpc, _rpc_listener) = bind()?;
    Ok(Ports { s3, rpc })
}

/// Garage's configuration file for a node in `dir` listening on `addr`. Pure.
pub fn render_config(dir: &Path, addr: &str, ports: Ports, rpc_secret: &str) -> String {
    let (s3_port, rpc_port) = (ports.s3, ports.rpc);
    format!(
        "metadata_dir = \"{meta}\"\n\
         data_dir = \"{data}\"\n\
         db_engine = \"sqlite\"\n\
         replication_factor = 1\n\
         rpc_bind_addr = \"{addr}:{rpc_port}\"\n\
         rpc_public_addr = \"{addr}:{rpc_port}\"\n\
         rpc_secret = \"{rpc_secret}\"\n\
         \n\
         [s3_api]\n\
         s3_region = \"garage\"\n\
         api_bind_addr = \"{addr}:{s3_port}\"\n\
         root_domain = \".s3.garage.localhost\"\n",
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
    )
}

/// The `garage` binary: on PATH, else where `cargo install` puts it.
pub fn garage_binary() -> Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("garage");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let candidate = cargo_home.join("bin/garage");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "garage is not installed (not on PATH nor in ~/.cargo/bin): run tests/bed/install.sh as root"
    )
}

/// Fresh credentials and the endpoint for a Garage whose S3 API listens on `addr:port`.
pub fn new_s3(addr: &str, port: u16) -> Result<S3> {
    Ok(S3 {
        endpoint: format!("http://{addr}:{port}"),
        region: "garage".into(),
        bucket: BUCKET.into(),
        access_key: format!("GK{}", random_hex(12)?),
        secret_key: random_hex(32)?,
    })
}

impl Garage {
    /// Starts Garage in `dir` (created fresh) on `addr` and `ports` (the S3 one is in
    /// `s3`'s endpoint), with the key and bucket of `s3`.
    pub fn start(dir: &Path, addr: &str, ports: Ports, s3: &S3) -> Result<Garage> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("garage.toml");
        std::fs::write(&config, render_config(dir, addr, ports, &random_hex(32)?))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut garage = Garage {
            child: None,
            dir: dir.to_path_buf(),
        };
        garage.spawn(s3)?;
        Ok(garage)
    }

    /// Runs the server on the configuration and data already in the folder, and waits until
    /// the bucket answers.
    fn spawn(&mut self, s3: &S3) -> Result<()> {
        let binary = garage_binary()?;
        let config = self.dir.join("garage.toml");
        let log_path = self.dir.join("garage.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &s3.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &s3.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &s3.bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the Garage log handle")?,
            )
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        crate::stale::record_pid(&self.dir, child.id())?;
        self.child = Some(child);
        self.wait_ready(&binary, &config, &s3.bucket)
    }

    /// Stops the server but keeps its data: an outage the bucket comes back from.
    pub fn halt(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, STOP_GRACE);
        }
    }

    /// Starts the server again after [`Garage::halt`], with the same data, key and bucket.
    pub fn resume(&mut self, s3: &S3) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn(s3)
    }

    /// Creates another bucket with a key of its own that may read and write only it (a
    /// status store: on Garage, as on Spaces, a key is per bucket, so hosts that may write
    /// their reports cannot write the deploy bucket). `main` is the bed's first bucket, whose
    /// endpoint and region the new one shares.
    pub fn add_bucket(&self, main: &S3, name: &str) -> Result<S3> {
        let binary = garage_binary()?;
        let config = self.dir.join("garage.toml");
        let s3 = S3 {
            bucket: name.to_owned(),
            access_key: format!("GK{}", random_hex(12)?),
            secret_key: random_hex(32)?,
            ..main.clone()
        };
        let steps: [Vec<&str>; 3] = [
            vec!["bucket", "create", name],
            vec![
                "key",
                "import",
                "--yes",
                "-n",
                name,
                &s3.access_key,
                &s3.secret_key,
            ],
            vec![
                "bucket",
                "allow",
                "--read",
                "--write",
                name,
                "--key",
                &s3.access_key,
            ],
        ];
        for args in steps {
            let mut cmd = Command::new(&binary);
            cmd.arg("-c").arg(&config).args(&args);
            let out = capture(&mut cmd, b"")?;
            if !out.success() {
                bail!(
                    "garage {} failed: {}{}",
                    args[..2].join(" "),
                    out.stdout,
                    out.stderr
                );
            }
        }
        Ok(s3)
    }

    /// The PID of the Garage process, while it runs.
    /// Grants (`allow`) or revokes read and write access to `bucket.bucket` for its own key,
    /// as an operator would with `garage bucket allow|deny`: revoked, every request with that
    /// key is refused (403) while the bucket and its objects stay.
    pub fn set_access(&self, bucket: &S3, allow: bool) -> Result<()> {
        let binary = garage_binary()?;
        let verb = if allow { "allow" } else { "deny" };
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(self.dir.join("garage.toml")).args([
            "bucket",
            verb,
            "--read",
            "--write",
            &bucket.bucket,
            "--key",
            &bucket.access_key,
        ]);
        let out = capture(&mut cmd, b"")?;
        if !out.success() {
            bail!("garage bucket {verb} failed: {}{}", out.stdout, out.stderr);
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Polls until the bucket exists, which means the node, the key and the bucket are up.
    fn wait_ready(&mut self, binary: &Path, config: &Path, bucket: &str) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("checking on Garage")?
            {
                bail!("garage exited at start ({status}):\n{}", self.log_tail());
            }
            let mut probe = Command::new(binary);
            probe.arg("-c").arg(config).args(["bucket", "info", bucket]);
            if capture(&mut probe, b"")?.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "garage did not create bucket {bucket} within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops Garage (SIGTERM, then SIGKILL) and removes its data.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            // Garage's graceful shutdown waits for idle keep-alive connections, which a
            // test's S3 client pool may hold until its runtime ends; the data goes anyway.
            stop_child(child, STOP_GRACE);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_the_given_address_only() {
        let ports = Ports {
            s3: 40001,
            rpc: 40002,
        };
        let text = render_config(Path::new("/x"), "10.213.1.1", ports, "ab");
        assert!(text.contains("api_bind_addr = \"10.213.1.1:40001\""));
        assert!(text.contains("rpc_bind_addr = \"10.213.1.1:40002\""));
        assert!(text.contains("rpc_public_addr = \"10.213.1.1:40002\""));
        assert!(text.contains("metadata_dir = \"/x/meta\""));
        assert!(text.contains("s3_region = \"garage\""));
    }

    #[test]
    fn free_ports_differ_and_can_be_listened_on() -> Result<()> {
        let ports = free_ports("127.0.0.1")?;
        assert_ne!(ports.s3, ports.rpc);
        let _s3 = TcpListener::bind(("127.0.0.1", ports.s3))?;
        let _rpc = TcpListener::bind(("127.0.0.1", ports.rpc))?;
        Ok(())
    }
}
