//! Crash-safe file replacement, shared by the directory bucket, the agent's state and unit
//! files, and `ferry`'s key and manifest files. It lives in ferry-bucket because that is the
//! one I/O crate every Ferry binary depends on (ferry-schema stays pure).
//!
//! A temp file beside the target (created with the final mode, so a secret is never briefly
//! world-readable), fsync, rename over the target, fsync of the directory so the rename
//! itself survives a crash. Readers see the old contents or the new, never a mix.
//!
//! A temp file's name cannot collide: it is created with `O_EXCL` under a random name, and
//! a name that exists already (a leftover, whoever made it) is skipped for another. Names
//! derived from the PID and thread alone collided after a power loss: the agent gets the
//! same small PID at every boot, so the file a crash left behind made every later write
//! fail with "File exists". What can still go wrong: a crash leaves a stray
//! `.<name>.tmp-…` file beside the target; a sole writer (the agent, under its tick lock)
//! removes those with [`remove_temps`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`; a new file gets permission bits `mode` (minus the umask).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, |file| file.write_all(bytes))
}

/// Replaces `path` with what `fill` writes into the temp file (for streaming copies).
pub fn write_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy(), mode)?;
    let result = (|| {
        fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: do not leave a half-written temp file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// How many random names are tried before giving up (each taken one is a leftover or a
/// concurrent writer's; 64 random bits make even one clash unlikely).
const TEMP_ATTEMPTS: u32 = 16;

/// Creates a new temp file for `name` in `dir`: `.<name>.tmp-<random>`, never an existing
/// file.
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(
            "{}{:016x}",
            temp_prefix(name),
            rand::random::<u64>()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temp file name was free")))
}

/// The start of every temp file name for target `name`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Removes the temp files a crashed writer left beside the files in `dir` whose names start
/// with `target_prefix` (`state.json`, `ferry-`); returns the names removed. Only for a sole
/// writer: another writer's temp file in use would be removed under it.
pub fn remove_temps(dir: &Path, target_prefix: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let start = format!(".{target_prefix}");
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(&start) || !name.contains(".tmp-") {
            continue;
        }
        if !entry.file_type()?.is_file() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_contents_sets_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        super::write(&path, b"new", 0o600).unwrap();
        super::write(&path, b"newer", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"newer");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp file left behind");
        let fresh = dir.path().join("key");
        super::write(&fresh, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_temp_left_by_a_crash_before_a_reboot_does_not_block_later_writes() {
        // Power lost between creating the temp file and renaming it; after the reboot the
        // agent happens to get the same PID (likely: early boot hands out the same small
        // PIDs) and writes from its main thread again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        let leftover = dir.path().join(format!(
            ".state.json.tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&leftover, "half-written").unwrap();
        super::write(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn leftover_temps_of_a_target_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for name in [
            "state.json",
            ".state.json.tmp-4242-ThreadId(1)",
            ".state.json.tmp-0123456789abcdef",
            ".other.json.tmp-1",
            "ferry-web.service",
            ".ferry-web.service.tmp-77",
            ".state.json.lock",
        ] {
            std::fs::write(p.join(name), "x").unwrap();
        }
        std::fs::create_dir(p.join(".state.json.tmp-dir")).unwrap();
        assert_eq!(
            super::remove_temps(p, "state.json").unwrap(),
            [
                ".state.json.tmp-0123456789abcdef",
                ".state.json.tmp-4242-ThreadId(1)"
            ]
        );
        assert_eq!(
            super::remove_temps(p, "ferry-").unwrap(),
            [".ferry-web.service.tmp-77"]
        );
        let mut left: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".other.json.tmp-1",
                ".state.json.lock",
                ".state.json.tmp-dir",
                "ferry-web.service",
                "state.json"
            ]
        );
        assert!(
            super::remove_temps(&p.join("missing"), "x")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.service");
        std::fs::write(&path, "old").unwrap();
        let err = super::write_with(&path, 0o644, |_| Err(std::io::Error::other("boom")));
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
