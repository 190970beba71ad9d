//! A whole test bed: a slot, its bridge, a Garage and N hosts, torn down on drop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::footprint::Footprint;
use crate::garage::{Garage, free_ports, garage_binary, new_s3};
use crate::host::{BindRo, Host};
use crate::network;
use crate::process::{cmd, run};
use crate::s3::S3;
use crate::slot::{Names, Slot};

/// The root filesystem `tests/bed/install.sh` builds (a link to the current build).
const DEFAULT_ROOTFS: &str = "/var/cache/ferry-testbed/rootfs";

/// What a bed should contain.
#[derive(Clone, Debug, Default)]
pub struct BedOptions {
    /// How many systemd hosts to boot (0 is fine: Garage only).
    pub hosts: usize,
    /// Files or folders of the machine bound read-only into every host (e.g. the agent).
    pub bind_ro: Vec<BindRo>,
    /// The hosts' root filesystem; default `$FERRY_TESTBED_ROOTFS`, else the one
    /// `tests/bed/install.sh` builds (/var/cache/ferry-testbed/rootfs).
    pub rootfs: Option<PathBuf>,
}

/// A running test bed. Dropping it stops the hosts and Garage and removes every namespace,
/// veth, bridge, mount and file it made.
#[derive(Debug)]
pub struct Bed {
    hosts: Vec<Host>,
    garage: Option<Garage>,
    s3: S3,
    footprint: Footprint,
    bridge_up: bool,
    // Declared last so the slot stays locked until everything above is gone.
    slot: Slot,
}

impl Bed {
    /// Starts a bed: Garage with a bucket, and `options.hosts` booted hosts. Fails with what
    /// is missing when the machine is not prepared (never skips).
    pub fn start(options: BedOptions) -> Result<Bed> {
        let rootfs = options.rootfs.clone().unwrap_or_else(default_rootfs);
        preflight(&rootfs)?;
        let slot = Slot::take()?;
        let names = slot.names();
        clear_stale(&names)?;
        let work = names.work_dir();
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let addr = names.bridge_ip();
        // Garage's ports are free ones on the bridge's address, so the bridge comes first;
        // a half-made bridge is removed at once.
        let bridge_and_s3 = network::bridge_up(&names)
            .context("making the bed's bridge")
            .and_then(|()| {
                let ports = free_ports(&addr)?;
                Ok((ports, new_s3(&addr, ports.s3)?))
            });
        let (ports, s3) = match bridge_and_s3 {
            Ok(found) => found,
            Err(err) => {
                network::bridge_down(&names);
                return Err(err);
            }
        };
        let mut bed = Bed {
            hosts: Vec::new(),
            garage: None,
            s3,
            footprint: Footprint::new(names),
            bridge_up: true,
            slot,
        };
        let garage = Garage::start(&work.join("garage"), &addr, ports, &bed.s3)
            .context("starting Garage")?;
        bed.footprint.pids.extend(garage.pid());
        bed.garage = Some(garage);
        // Hosts boot in parallel: each waits mostly on its own systemd.
        let results: Vec<Result<Host>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..options.hosts)
                .map(|index| {
                    let dir = work.join(format!("host{index}"));
                    let (rootfs, binds) = (&rootfs, &options.bind_ro);
                    scope.spawn(move || Host::create(names, index, dir, rootfs, binds))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("a host's boot thread panicked")),
                })
                .collect()
        });
        let mut first_error = None;
        for result in results {
            match result {
                Ok(host) => {
                    bed.footprint.pids.extend_from_slice(host.started_pids());
                    bed.hosts.push(host);
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        Ok(bed)
    }

    /// The bed's bucket (endpoint reachable from the tests and from the hosts).
    pub fn s3(&self) -> &S3 {
        &self.s3
    }

    /// Host `index` (panics when out of range, like indexing).
    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    /// Host `index`, for poweroff()/boot().
    pub fn host_mut(&mut self, index: usize) -> &mut Host {
        &mut self.hosts[index]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The bed's names and addresses (bridge, subnet, …).
    pub fn names(&self) -> Names {
        self.slot.names()
    }

    /// What the bed has made so far, to check after drop that none of it is left. Prefer
    /// [`Bed::tear_down`], which checks before the slot is free for another bed to reuse.
    pub fn footprint(&self) -> Footprint {
        let mut footprint = self.footprint.clone();
        for host in &self.hosts {
            footprint.pids.extend_from_slice(host.started_pids());
        }
        footprint.pids.sort_unstable();
        footprint.pids.dedup();
        footprint
    }
}

impl Bed {
    /// Stops Garage and drops its data: the bucket is gone for good, as in an outage that
    /// outlasts the test. Hosts keep running.
    pub fn stop_garage(&mut self) {
        self.garage = None;
    }

    /// Another bucket in the bed's Garage with a key that reaches only it (see
    /// [`Garage::add_bucket`]), e.g. the status store hosts report to.
    pub fn add_bucket(&self, name: &str) -> Result<S3> {
        match self.garage.as_ref() {
            Some(garage) => garage.add_bucket(&self.s3, name),
            None => bail!("Garage is not running: no bucket {name} can be added"),
        }
    }

    /// Revokes (`allow = false`) or grants again the access of `bucket`'s own key to it
    /// (see [`Garage::set_access`]): a status store whose key was revoked, then restored.
    pub fn set_bucket_access(&self, bucket: &S3, allow: bool) -> Result<()> {
        match self.garage.as_ref() {
            Some(garage) => garage.set_access(bucket, allow),
            None => bail!("Garage is not running"),
        }
    }

    /// Stops Garage but keeps its data, so [`Bed::resume_garage`] brings the same bucket
    /// back: an outage that ends. Hosts keep running.
    pub fn halt_garage(&mut self) {
        if let Some(garage) = self.garage.as_mut() {
            garage.halt();
        }
    }

    /// Starts Garage again after [`Bed::halt_garage`].
    pub fn resume_garage(&mut self) -> Result<()> {
        match self.garage.as_mut() {
            Some(garage) => {
                garage.resume(&self.s3)?;
                self.footprint.pids.extend(garage.pid());
                Ok(())
            }
            None => bail!("Garage was stopped for good (stop_garage); it cannot be resumed"),
        }
    }
}

impl Bed {
    /// Tears the bed down and checks, while it still holds its slot (so no other bed can
    /// take the slot and make its names again meanwhile), that nothing of it is left:
    /// processes, mounts, links, namespaces, its folder. Returns one line per leftover and
    /// per host that did not shut down cleanly; empty when all went well.
    pub fn tear_down(mut self) -> Result<Vec<String>> {
        let footprint = self.footprint();
        let mut problems = self.stop_everything();
        problems.extend(footprint.leftovers()?);
        Ok(problems)
    }

    /// Stops hosts and Garage and removes what the bed made; says which hosts did not shut
    /// down cleanly. Idempotent.
    fn stop_everything(&mut self) -> Vec<String> {
        // All hosts shut down at once, then each is waited for.
        for host in &self.hosts {
            host.request_poweroff();
        }
        let mut unclean = Vec::new();
        for host in &mut self.hosts {
            if let Err(err) = host.poweroff() {
                unclean.push(format!("{err:#}"));
            }
        }
        self.hosts.clear();
        self.garage = None;
        if self.bridge_up {
            network::bridge_down(&self.names());
            self.bridge_up = false;
        }
        let _ = std::fs::remove_dir_all(self.names().work_dir());
        unclean
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for problem in self.stop_everything() {
            eprintln!("test bed teardown: {problem}");
        }
    }
}

fn default_rootfs() -> PathBuf {
    std::env::var_os("FERRY_TESTBED_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS))
}

/// Checks that the machine can run a bed, naming what is missing.
fn preflight(rootfs: &Path) -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        bail!(
            "the test bed needs root (it boots nspawn containers and makes network namespaces): run the tests as root, e.g. sudo scripts/test.sh"
        );
    }
    if !rootfs.join("lib/systemd/systemd").exists() {
        bail!(
            "the hosts' root filesystem {} is missing: run tests/bed/install.sh as root",
            rootfs.display()
        );
    }
    garage_binary()?;
    for tool in ["systemd-nspawn", "nsenter", "ip", "mount"] {
        if run(&mut cmd("sh", ["-c", &format!("command -v {tool}")])).is_err() {
            bail!("`{tool}` is not installed: run tests/bed/install.sh as root");
        }
    }
    Ok(())
}

/// Removes what a crashed earlier user of this slot left: mounts under its work folder,
/// its namespaces and links, and the folder itself.
fn clear_stale(names: &Names) -> Result<()> {
    let work = names.work_dir();
    crate::stale::stop_recorded(&work);
    for mount in crate::footprint::mounts_under(&work)?.into_iter().rev() {
        let _ = run(&mut cmd("umount", ["-l", &mount]));
    }
    network::clear_slot(names)?;
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing the stale {}", work.display()))?;
    }
    Ok(())
}
