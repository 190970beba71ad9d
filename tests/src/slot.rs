//! Which bed is which: each running bed holds a numbered slot (a locked file), and every
//! name and address it makes (bridge, veths, namespaces, subnet, work folder) derives from
//! that number, so several beds in one or more processes never clash.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// How many beds can run at once on one machine.
pub const SLOTS: u8 = 32;
/// Where slot locks live (tmpfs: a reboot frees them all).
const LOCK_DIR: &str = "/run/ferry-testbed";
/// Where beds keep their work folders (overlay layers, Garage data, logs).
const WORK_DIR: &str = "/var/tmp/ferry-testbed";

/// The names and addresses of the bed in one slot. Pure: no I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    slot: u8,
}

impl Names {
    /// The names for slot `slot`.
    pub fn new(slot: u8) -> Names {
        Names { slot }
    }

    /// The slot number.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The bridge joining the bed's hosts and the machine.
    pub fn bridge(&self) -> String {
        format!("fbr{}", self.slot)
    }

    /// The machine's address on the bed's bridge (Garage listens here).
    pub fn bridge_ip(&self) -> String {
        format!("10.213.{}.1", self.slot)
    }

    /// The bed's /24, which it alone owns.
    pub fn subnet(&self) -> String {
        format!("10.213.{}.0/24", self.slot)
    }

    /// Host `index`'s network namespace (as in `ip netns`).
    pub fn netns(&self, index: usize) -> String {
        format!("ferry{}h{index}", self.slot)
    }

    /// The machine's end of host `index`'s veth pair (on the bridge).
    pub fn veth(&self, index: usize) -> String {
        format!("fv{}h{index}", self.slot)
    }

    /// The host's end of the veth pair before it moves into the namespace as `eth0`.
    pub fn veth_peer(&self, index: usize) -> String {
        format!("fp{}h{index}", self.slot)
    }

    /// Host `index`'s address on the bridge.
    pub fn host_ip(&self, index: usize) -> String {
        format!("10.213.{}.{}", self.slot, 10 + index)
    }

    /// Host `index`'s machine name and hostname.
    pub fn machine(&self, index: usize) -> String {
        format!("ferry{}h{index}", self.slot)
    }

    /// The bed's work folder.
    pub fn work_dir(&self) -> PathBuf {
        PathBuf::from(WORK_DIR).join(format!("slot-{}", self.slot))
    }

    /// The file whose lock is the slot.
    fn lock_file(&self) -> PathBuf {
        PathBuf::from(LOCK_DIR).join(format!("slot-{}.lock", self.slot))
    }
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    names: Names,
    _lock: File,
}

impl Slot {
    /// Takes the first free slot.
    pub fn take() -> Result<Slot> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        for slot in 0..SLOTS {
            let names = Names::new(slot);
            let path = names.lock_file();
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening the slot lock {}", path.display()))?;
            match file.try_lock() {
                Ok(()) => return Ok(Slot { names, _lock: file }),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        bail!(
            "all {SLOTS} test bed slots are in use: too many beds at once, or stale locks in {LOCK_DIR}"
        )
    }

    /// The slot's names and addresses.
    pub fn names(&self) -> Names {
        self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits_and_differ_by_slot() {
        let names = Names::new(31);
        for name in [names.bridge(), names.veth(9), names.veth_peer(9)] {
            assert!(name.len() <= 15, "{name} is longer than IFNAMSIZ");
        }
        assert_ne!(Names::new(1).bridge_ip(), Names::new(2).bridge_ip());
        assert_eq!(Names::new(3).host_ip(2), "10.213.3.12");
        assert_eq!(Names::new(3).subnet(), "10.213.3.0/24");
    }
}
