//! What a bed leaves on the machine — processes, mounts, links, namespaces, files — so a
//! test can check that teardown removed all of it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::network;
use crate::slot::Names;

/// Everything a bed made, recorded while it ran.
#[derive(Clone, Debug)]
pub struct Footprint {
    names: Names,
    /// PIDs the bed started (Garage, nspawn, each container's systemd).
    pub pids: Vec<u32>,
}

impl Footprint {
    /// An empty footprint for the bed in `names`' slot.
    pub fn new(names: Names) -> Footprint {
        Footprint {
            names,
            pids: Vec::new(),
        }
    }

    /// What of the bed is still on the machine, one line per thing; empty after a clean
    /// teardown.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for pid in &self.pids {
            if pid_alive(*pid) {
                found.push(format!("process {pid}"));
            }
        }
        let work = self.names.work_dir();
        for mount in mounts_under(&work)? {
            found.push(format!("mount {mount}"));
        }
        for link in network::leftover_links(&self.names)? {
            found.push(format!("link {link}"));
        }
        for ns in network::leftover_netns(&self.names)? {
            found.push(format!("netns {ns}"));
        }
        if work.exists() {
            found.push(format!("folder {}", work.display()));
        }
        Ok(found)
    }
}

/// Whether `pid` exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => crate::host::parse_stat(&stat).is_some() && !stat.contains(") Z "),
        Err(_) => false,
    }
}

/// Mount points at or under `dir` in this mount namespace, in mount order.
pub fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mount_points(&text)
        .into_iter()
        .filter(|point| PathBuf::from(point).starts_with(dir))
        .collect())
}

/// Mount points (field 5) from /proc/self/mountinfo text. Pure.
pub fn parse_mount_points(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_from_mountinfo() {
        let text = "36 35 98:0 /mnt1 /mnt/a rw - ext3 /dev/root rw\n37 35 0:5 / /var/tmp/ferry-testbed/slot-0/host0/root rw - overlay overlay rw\n";
        assert_eq!(
            parse_mount_points(text),
            vec!["/mnt/a", "/var/tmp/ferry-testbed/slot-0/host0/root"]
        );
    }
}
