//! One systemd host of the bed: a Debian container booted by systemd-nspawn from the cached
//! root filesystem (through its own overlay, or a copy), inside a network namespace of its
//! own, with Nix and Caddy. Tests reach it over its D-Bus system bus, by running commands
//! in it with nsenter, and over the bed's bridge at its address.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::network;
use crate::process::{Output, capture, cmd, describe, run};
use crate::slot::Names;
use crate::stop::{Ended, request_stop, wait_or_kill};

/// How long a host may take from nspawn's start to a running system with Caddy up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a clean shutdown may take before the bed kills nspawn.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The hosts' /etc/nix/nix.conf (read by root's direct store access and by nix-daemon):
/// offline, no build users, no sandbox (hosts pull, they never build).
pub const NIX_CONF: &str = "substituters =\nbuild-users-group =\nsandbox = false\n";
/// Where the hosts' Caddy serves its admin API, as the NixOS module's `caddy.enable` sets it
/// up: a unix socket only Caddy's user and group can open, never loopback TCP (which every
/// deployed service could reach).
pub const CADDY_ADMIN_SOCKET: &str = "/run/caddy/admin.sock";
/// The global options the module gives a Caddy older than 2.8 (Debian's is 2.6), prepended
/// to the host's Caddyfile. tests/tests/nix_module_eval.rs checks they are the module's.
pub const CADDY_GLOBAL_OPTIONS: &str = "admin \"unix//run/caddy/admin.sock\"\n";
/// The settings the module adds to caddy.service for that socket (its directory 0750, and a
/// umask that leaves the socket to Caddy's user and group), as a drop-in.
pub const CADDY_UNIT_DROP_IN: &str =
    "[Service]\nRuntimeDirectory=caddy\nRuntimeDirectoryMode=0750\nUMask=0007\n";
/// The PATH commands run with inside the host.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A file or folder of the machine bound read-only into every host.
#[derive(Clone, Debug)]
pub struct BindRo {
    /// Path on the machine.
    pub source: PathBuf,
    /// Absolute path inside the host.
    pub target: String,
}

/// A booted (or powered-off) host. Dropping it shuts it down and removes its namespace,
/// its overlay and its files.
#[derive(Debug)]
pub struct Host {
    index: usize,
    names: Names,
    dir: PathBuf,
    root: PathBuf,
    overlay: bool,
    binds: Vec<BindRo>,
    nspawn: Option<Child>,
    pid: Option<u32>,
    started: Vec<u32>,
    /// Whether SIGTERM went to the running nspawn already (asked once per boot).
    stop_requested: AtomicBool,
}

impl Host {
    /// Makes host `index` of the bed in `names`' slot under `dir` from `rootfs`, and boots it.
    pub fn create(
        names: Names,
        index: usize,
        dir: PathBuf,
        rootfs: &Path,
        binds: &[BindRo],
    ) -> Result<Host> {
        let root = dir.join("root");
        let mut host = Host {
            index,
            names,
            dir,
            root,
            overlay: false,
            binds: binds.to_vec(),
            nspawn: None,
            pid: None,
            started: Vec::new(),
            stop_requested: AtomicBool::new(false),
        };
        host.make_root(rootfs)?;
        // debootstrap copied the machine's own /etc/hostname; each host gets its name.
        let hostname = host.root.join("etc/hostname");
        std::fs::write(&hostname, format!("{}\n", host.name()))
            .with_context(|| format!("writing {}", hostname.display()))?;
        host.write_nix_conf()?;
        host.write_caddy_admin_socket_config()?;
        network::host_up(&names, index)
            .with_context(|| format!("making the network of host {}", host.name()))?;
        host.boot()?;
        Ok(host)
    }

    /// Debian's nix-bin leaves the container without /etc/nix/nix.conf. The hosts have no
    /// internet, and with the default substituter every Nix command that looks a path up
    /// retries cache.nixos.org for 4.5 s; there is no nixbld group either.
    fn write_nix_conf(&self) -> Result<()> {
        let dir = self.root.join("etc/nix");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("nix.conf");
        std::fs::write(&path, NIX_CONF).with_context(|| format!("writing {}", path.display()))
    }

    /// Moves Caddy's admin API from Debian's default (loopback TCP) to the module's unix
    /// socket: the global options go before the Caddyfile's sites, the unit settings in a
    /// drop-in.
    fn write_caddy_admin_socket_config(&self) -> Result<()> {
        let caddyfile = self.root.join("etc/caddy/Caddyfile");
        let sites = std::fs::read_to_string(&caddyfile)
            .with_context(|| format!("reading {}", caddyfile.display()))?;
        std::fs::write(
            &caddyfile,
            format!("{{\n\t{CADDY_GLOBAL_OPTIONS}}}\n\n{sites}"),
        )
        .with_context(|| format!("writing {}", caddyfile.display()))?;
        let dir = self.root.join("etc/systemd/system/caddy.service.d");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let drop_in = dir.join("ferry-admin-socket.conf");
        std::fs::write(&drop_in, CADDY_UNIT_DROP_IN)
            .with_context(|| format!("writing {}", drop_in.display()))
    }

    /// Mounts an overlay of `rootfs` at the host's root, or copies it where overlays fail.
    fn make_root(&mut self, rootfs: &Path) -> Result<()> {
        let lower = std::fs::canonicalize(rootfs).with_context(|| {
            format!(
                "the root filesystem {} is missing: run tests/bed/install.sh",
                rootfs.display()
            )
        })?;
        let (upper, work) = (self.dir.join("upper"), self.dir.join("work"));
        for dir in [&upper, &work, &self.root] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mut mount = cmd("mount", ["-t", "overlay", "overlay", "-o", &options]);
        mount.arg(&self.root);
        if capture(&mut mount, b"")?.success() {
            self.overlay = true;
            return Ok(());
        }
        let mut copy = cmd("cp", ["-a", "--reflink=auto"]);
        copy.arg(lower.join(".")).arg(&self.root);
        run(&mut copy)
            .context("copying the root filesystem for a host (overlayfs is not available)")?;
        Ok(())
    }

    /// The host's machine name and hostname, e.g. `ferry0h1`.
    pub fn name(&self) -> String {
        self.names.machine(self.index)
    }

    /// The host's address on the bed's bridge (its Caddy answers on port 80 there).
    pub fn ip(&self) -> String {
        self.names.host_ip(self.index)
    }

    /// The host's network namespace name (`ip netns exec <it> …`).
    pub fn netns(&self) -> String {
        self.names.netns(self.index)
    }

    /// The PID (on the machine) of the host's systemd, while it runs.
    pub fn pid(&self) -> Result<u32> {
        self.pid
            .with_context(|| format!("host {} is powered off: call boot() first", self.name()))
    }

    /// Whether the host is booted.
    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }

    /// The D-Bus address of the host's system bus, for zbus or busctl on the machine.
    pub fn dbus_address(&self) -> Result<String> {
        Ok(format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid()?
        ))
    }

    /// Where `path` (absolute, inside the host) is on the machine: through the running
    /// host's root (so /run and other mounts inside are seen), else in its filesystem.
    pub fn path_in_host(&self, path: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        match self.pid {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root")).join(relative),
            None => self.root.join(relative),
        }
    }

    /// Runs `argv` inside the host (all its namespaces, root, a clean environment).
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_with_stdin(argv, b"")
    }

    /// Runs `argv` inside the host with `stdin` as its input.
    pub fn exec_with_stdin(&self, argv: &[&str], stdin: &[u8]) -> Result<Output> {
        let mut command = self.nsenter(argv)?;
        capture(&mut command, stdin)
            .with_context(|| format!("running {argv:?} in host {}", self.name()))
    }

    /// Runs a shell script inside the host.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Runs a shell script inside the host and returns its stdout; fails unless it exits 0.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        let out = self.sh(script)?;
        if !out.success() {
            bail!(
                "in host {}: `{script}` failed with status {}: {}{}",
                self.name(),
                out.status,
                out.stderr.trim(),
                out.stdout.trim()
            );
        }
        Ok(out.stdout)
    }

    fn nsenter(&self, argv: &[&str]) -> Result<Command> {
        let pid = self.pid()?.to_string();
        let mut command = cmd("nsenter", ["-t", &pid, "-a", "--", "env", "-i"]);
        command
            .arg(format!("PATH={HOST_PATH}"))
            .args(["HOME=/root", "LANG=C.UTF-8"])
            .args(argv);
        Ok(command)
    }

    /// Writes `bytes` to `path` inside the host with permission `mode`, making parent folders.
    pub fn put_bytes(&self, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let target = self.path_in_host(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("creating {} in host {}", parent.display(), self.name())
            })?;
        }
        let mut temp_name = target.clone().into_os_string();
        temp_name.push(".ferry-tmp");
        let temp = PathBuf::from(temp_name);
        std::fs::write(&temp, bytes)
            .with_context(|| format!("writing {path} in host {}", self.name()))?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {path} in host {}", self.name()))?;
        std::fs::rename(&temp, &target)
            .with_context(|| format!("renaming into {path} in host {}", self.name()))?;
        Ok(())
    }

    /// Copies the machine's file `source` to `path` inside the host with permission `mode`.
    pub fn put_file(&self, source: &Path, path: &str, mode: u32) -> Result<()> {
        let bytes =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        self.put_bytes(path, &bytes, mode)
    }

    /// Copies the machine's folder `source` to `path` inside the host (`cp -a`).
    pub fn put_dir(&self, source: &Path, path: &str) -> Result<()> {
        let target = self.path_in_host(path);
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {path} in host {}", self.name()))?;
        let mut copy = cmd("cp", ["-a"]);
        copy.arg(source.join(".")).arg(&target);
        run(&mut copy)?;
        Ok(())
    }

    /// Calls the host's Caddy admin API (its unix socket, [`CADDY_ADMIN_SOCKET`]) with curl
    /// inside the host, as root; returns the HTTP status and body.
    pub fn caddy_admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let url = format!("http://localhost{path}");
        let mut argv = vec![
            "curl",
            "-sS",
            "--unix-socket",
            CADDY_ADMIN_SOCKET,
            // Caddy wants an empty Host header on its admin socket (`Host;` sends one).
            "-H",
            "Host;",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        if body.is_some() {
            argv.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        argv.push(&url);
        let out = self.exec_with_stdin(&argv, body.unwrap_or("").as_bytes())?;
        if !out.success() {
            bail!(
                "Caddy admin API of host {} unreachable ({method} {path}): {}",
                self.name(),
                out.stderr.trim()
            );
        }
        parse_curl_output(&out.stdout).with_context(|| {
            format!(
                "reading curl's answer for {method} {path} in host {}",
                self.name()
            )
        })
    }

    /// Puts `route` (Caddy route JSON) first in the host's `srv0` routes, ahead of Debian's
    /// catch-all file server (PUT on an array index inserts there); fails unless Caddy
    /// answers 200.
    pub fn add_caddy_route(&self, route: &str) -> Result<()> {
        let path = "/config/apps/http/servers/srv0/routes/0";
        let (status, body) = self.caddy_admin("PUT", path, Some(route))?;
        if status != 200 {
            bail!(
                "Caddy of host {} refused the route (PUT {path}: HTTP {status}): {body}",
                self.name()
            );
        }
        Ok(())
    }

    /// Boots the host (again) from its filesystem and waits until systemd reports the
    /// system running and Caddy's admin API answers.
    pub fn boot(&mut self) -> Result<()> {
        if self.nspawn.is_some() {
            bail!("host {} is already running", self.name());
        }
        let log_path = self.dir.join("console.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        // In a cgroup of its own (see `cgroup`): through a shell that enters it and then
        // becomes nspawn, so the child's PID is nspawn's.
        let cgroups = crate::cgroup::host_dirs(&self.name());
        crate::cgroup::create(&cgroups)?;
        let joined = std::env::join_paths(&cgroups).context("joining the cgroup folders")?;
        let mut nspawn = cmd(
            "/bin/sh",
            [
                "-c",
                crate::cgroup::ENTER_AND_EXEC,
                "sh",
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                "--boot",
                "--console=pipe",
                "--link-journal=no",
                "--resolv-conf=off",
                // Root on a real host can change its own network, and the host has a
                // namespace of its own here: the system tests' stand-in takes eth0 down.
                "--capability=CAP_NET_ADMIN",
            ],
        );
        nspawn
            .env("FERRY_BED_CGROUPS", joined)
            .arg(format!("--machine={}", self.name()))
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns()
            ))
            .arg("--directory")
            .arg(&self.root);
        for bind in &self.binds {
            nspawn.arg(format!(
                "--bind-ro={}:{}",
                bind.source.display(),
                bind.target
            ));
        }
        let shown = describe(&nspawn);
        let child = nspawn
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the console log handle")?,
            )
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting `{shown}`: is systemd-container installed? (run tests/bed/install.sh)"
                )
            })?;
        self.started.push(child.id());
        crate::stale::record_pid(&self.dir, child.id())?;
        self.nspawn = Some(child);
        self.stop_requested.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let result = self.wait_booted(deadline);
        if let Err(err) = result {
            let tail = self.console_tail();
            self.poweroff_now();
            return Err(err.context(format!(
                "booting host {} (console, last lines):\n{tail}",
                self.name()
            )));
        }
        Ok(())
    }

    fn wait_booted(&mut self, deadline: Instant) -> Result<()> {
        let pid = loop {
            self.check_nspawn_alive()?;
            if let Some(child) = &self.nspawn
                && let Some(pid) = find_child_named(child.id(), "systemd")?
            {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("the container's systemd did not start within {BOOT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.pid = Some(pid);
        self.started.push(pid);
        loop {
            self.check_nspawn_alive()?;
            let state = self.exec(&["systemctl", "is-system-running", "--wait"])?;
            let state = state.stdout.trim();
            if state == "running" || state == "degraded" {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "systemd did not reach `running` within {BOOT_TIMEOUT:?} (it says {state:?})"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let probe = self.exec(&[
                "curl",
                "-sf",
                "--unix-socket",
                CADDY_ADMIN_SOCKET,
                "-H",
                "Host;",
                "-o",
                "/dev/null",
                "http://localhost/config/",
            ])?;
            if probe.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Caddy's admin API did not answer within {BOOT_TIMEOUT:?}: {}",
                    probe.stderr.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_nspawn_alive(&mut self) -> Result<()> {
        if let Some(child) = self.nspawn.as_mut()
            && let Some(status) = child.try_wait().context("checking on systemd-nspawn")?
        {
            self.nspawn = None;
            self.pid = None;
            bail!("systemd-nspawn exited ({status})");
        }
        Ok(())
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM to nspawn (a clean shutdown of the container) without waiting.
    pub fn request_poweroff(&self) {
        if let Some(child) = &self.nspawn
            && !self.stop_requested.swap(true, Ordering::SeqCst)
        {
            request_stop(child);
        }
    }

    /// Shuts the host down and waits; its filesystem stays for [`Host::boot`]. Fails when
    /// the shutdown was not clean (nspawn killed after the grace period, or exiting with an
    /// error): the host is off either way.
    pub fn poweroff(&mut self) -> Result<()> {
        let ended = self.poweroff_now();
        match ended {
            None => Ok(()),
            Some(ended) if ended.is_clean() => Ok(()),
            Some(Ended::Killed) => bail!(
                "host {} did not shut down within {SHUTDOWN_GRACE:?}: systemd-nspawn was killed (console: {})",
                self.name(),
                self.dir.join("console.log").display()
            ),
            Some(Ended::Exited(status)) => bail!(
                "host {} shut down uncleanly: systemd-nspawn exited with {status} (console, last lines):\n{}",
                self.name(),
                self.console_tail()
            ),
        }
    }

    /// Stops a running host (SIGTERM, then SIGKILL after the grace period) and says how
    /// nspawn ended; `None` when it was not running.
    fn poweroff_now(&mut self) -> Option<Ended> {
        self.pid = None;
        let mut child = self.nspawn.take()?;
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if !exited && !self.stop_requested.swap(true, Ordering::SeqCst) {
            request_stop(&child);
        }
        Some(wait_or_kill(child, SHUTDOWN_GRACE))
    }

    /// PIDs of processes the host started (nspawn and the container's systemd, per boot).
    pub fn started_pids(&self) -> &[u32] {
        &self.started
    }

    /// The host's root folder on the machine (its overlay mount point).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.poweroff_now();
        crate::cgroup::remove(&crate::cgroup::host_dirs(&self.name()));
        network::host_down(&self.names, self.index);
        if self.overlay {
            let mut umount = cmd("umount", [&self.root]);
            if run(&mut umount).is_err() {
                let _ = run(&mut cmd("umount", ["-l".as_ref(), self.root.as_os_str()]));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child of `parent` whose command name is `name`, from /proc. nspawn starts the
/// container's init as its direct child.
fn find_child_named(parent: u32, name: &str) -> Result<Option<u32>> {
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((comm, ppid)) = parse_stat(&stat)
            && ppid == parent
            && comm == name
        {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// The command name and parent PID from a /proc/<pid>/stat line. Pure.
pub fn parse_stat(stat: &str) -> Option<(&str, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Splits curl's `-w '\n%{http_code}'` output into status and body. Pure.
pub fn parse_curl_output(text: &str) -> Result<(u16, String)> {
    let (body, code) = text.rsplit_once('\n').context("no status line from curl")?;
    let status = code
        .trim()
        .parse()
        .with_context(|| format!("bad status {code:?} from curl"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let stat = "123 (my (odd) proc) S 77 123 123 0 -1";
        assert_eq!(parse_stat(stat), Some(("my (odd) proc", 77)));
    }

    #[test]
    fn curl_output_splits_on_the_last_line() {
        assert_eq!(
            parse_curl_output("{\"a\":1}\n\n200").ok(),
            Some((200, "{\"a\":1}\n".to_string()))
        );
        assert!(parse_curl_output("garbage").is_err());
    }
}
