//! Crash-safe file replacement, shared by the directory bucket, the agent's state and unit
//! files, and `ferry`'s key and manifest files. It lives in ferry-bucket because that is the
//! one I/O crate every Ferry binary depends on (ferry-schema stays pure).
//!
//! A temp file beside the target (created with the final mode, so a secret is never briefly
//! world-readable), fsync, rename over the target, fsync of the directory so the rename
//! itself survives a crash. Readers see the old contents or the new, never a mix. What can
//! still go wrong: a crash leaves a stray `.<name>.tmp-…` file beside the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
    // Process and thread in the name: concurrent writers of one path never share a temp file.
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:?}",
        name.to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
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
