//! A cgroup of its own for each test host. `systemd-nspawn --keep-unit` without systemd as
//! the machine's init puts the container under the cgroup nspawn runs in, in a `payload`
//! child. Hosts started from one test process would all share `/payload`, so their
//! systemds manage the same cgroup tree: a unit with the same name in two hosts
//! (`ferry-agent.service` in every one) is set up by one and cleaned away by the other, and
//! the start fails with `219/CGROUP` ("Start job ... ended with failed"). Each host's nspawn
//! therefore enters `ferry-bed-<host>` in every hierarchy systemd uses before it starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The script nspawn is started through: it moves itself into the cgroups listed (colon
/// separated) in `$FERRY_BED_CGROUPS`, then becomes nspawn (`exec "$@"`), so nspawn's PID
/// and its children are the same as without it.
pub const ENTER_AND_EXEC: &str = r#"IFS=:
for d in $FERRY_BED_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 70; done
unset IFS
exec "$@""#;

/// The host's cgroup folders, one per hierarchy systemd uses here: the unified root on a
/// pure cgroup v2 machine; `systemd` and `unified` on a hybrid one.
pub fn host_dirs(host: &str) -> Vec<PathBuf> {
    dirs_under(Path::new("/sys/fs/cgroup"), host)
}

fn dirs_under(root: &Path, host: &str) -> Vec<PathBuf> {
    let name = format!("ferry-bed-{host}");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(name)];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| root.join(h))
        .filter(|h| h.join("cgroup.procs").exists())
        .map(|h| h.join(&name))
        .collect()
}

/// Creates the folders (a left-over one from a run that was killed is reused).
pub fn create(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        std::fs::create_dir_all(d)
            .with_context(|| format!("creating the cgroup {}", d.display()))?;
    }
    Ok(())
}

/// Removes the folders and whatever the container's systemd left below them, deepest
/// first (a cgroup folder goes with `rmdir` once it holds no process). Best effort: a
/// cgroup still busy stays, and the next run of the same host reuses it.
pub fn remove(dirs: &[PathBuf]) {
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for d in dirs {
        rmdir_tree(d);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pure_v2_machine_gets_one_folder_a_hybrid_one_two() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            dirs_under(v2.path(), "h0"),
            [v2.path().join("ferry-bed-h0")]
        );

        let hybrid = tempfile::tempdir().unwrap();
        for h in ["systemd", "unified", "memory"] {
            std::fs::create_dir(hybrid.path().join(h)).unwrap();
            std::fs::write(hybrid.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        assert_eq!(
            dirs_under(hybrid.path(), "h0"),
            [
                hybrid.path().join("systemd/ferry-bed-h0"),
                hybrid.path().join("unified/ferry-bed-h0")
            ]
        );
    }
}
