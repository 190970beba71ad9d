//! The lock that keeps two ticks from overlapping: an advisory `flock` on
//! `<stateDir>/state.lock`, released when the process exits (even on SIGKILL).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

/// A held tick lock; dropping it releases the lock.
#[derive(Debug)]
pub struct TickLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another tick kept it for the whole wait.
    #[error(
        "another ferry-agent tick holds {path} (waited {waited:?}); it will converge the host — try again after it ends"
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long this tick waited.
        waited: Duration,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl TickLock {
    /// Take the lock, polling until `wait` has passed.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let file = open_for_lock(path).map_err(io)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        path: path.to_owned(),
                        waited: start.elapsed(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}

/// The lock file, created if missing. In a state directory that cannot be written (full or
/// read-only `/var`) it is opened read-only (`flock` needs no write access), or, when it
/// cannot even be created, the directory itself is locked (then no one can hold the file):
/// a tick that only restores services must still run there.
fn open_for_lock(path: &Path) -> std::io::Result<File> {
    let first = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    if let Ok(file) = File::open(path) {
        return Ok(file);
    }
    match path.parent() {
        Some(dir) if !path.exists() => File::open(dir).map_err(|_| first),
        _ => Err(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_fails_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.lock");
        let first = TickLock::acquire(&p, Duration::ZERO).unwrap();
        let started = Instant::now();
        let err = TickLock::acquire(&p, Duration::from_millis(300)).unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "gave up after {waited:?}, before its 300 ms wait"
        );
        assert!(
            matches!(&err, LockError::Busy { waited, .. } if *waited >= Duration::from_millis(300)),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("another ferry-agent tick holds")
                && err.to_string().contains("state.lock"),
            "{err}"
        );
        drop(first);
        TickLock::acquire(&p, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_waiting_holder_gets_the_lock_once_the_first_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.lock");
        let first = TickLock::acquire(&p, Duration::ZERO).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let started = Instant::now();
        let second = TickLock::acquire(&p, Duration::from_secs(10));
        let waited = started.elapsed();
        release.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
        // It waited for the release, and took the lock soon after it (it polls every 100 ms).
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "took the lock after {waited:?}"
        );
    }

    #[test]
    fn a_lock_file_that_cannot_be_opened_for_writing_is_locked_read_only() {
        // Opening a directory for writing fails even for root (EISDIR), like a lock file
        // on a read-only file system; the read-only fallback still excludes a second tick.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.lock");
        std::fs::create_dir(&p).unwrap();
        assert!(OpenOptions::new().write(true).open(&p).is_err());
        let _held = TickLock::acquire(&p, Duration::ZERO).unwrap();
        let err = TickLock::acquire(&p, Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
    }
}
