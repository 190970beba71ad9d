//! The `Units` trait and its implementation on the unit directory: list the agent's
//! `ferry-*.service` files, write one atomically only when its text changed, remove one.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::render::unit::unit_name;
use ferry_bucket::atomic_file;

/// The unit files the agent owns.
pub trait Units {
    /// Every `ferry-*.service` file, by service name, with its text.
    fn list(&self) -> io::Result<BTreeMap<String, String>>;
    /// Write a service's unit; returns whether the file changed.
    fn write(&self, service: &str, text: &str) -> io::Result<bool>;
    /// Remove a service's unit; returns whether a file was there.
    fn remove(&self, service: &str) -> io::Result<bool>;
}

/// Unit files in a directory (`/run/systemd/system` by default).
#[derive(Debug, Clone)]
pub struct UnitDir {
    /// The directory.
    pub dir: PathBuf,
}

impl Units for UnitDir {
    fn list(&self) -> io::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(service) = name
                .strip_prefix(crate::UNIT_PREFIX)
                .and_then(|n| n.strip_suffix(".service"))
            else {
                continue;
            };
            // Template units (`ferry-x@.service`) belong to blue-green, not to this list.
            if service.contains('@') {
                continue;
            }
            out.insert(service.to_owned(), std::fs::read_to_string(entry.path())?);
        }
        Ok(out)
    }

    fn write(&self, service: &str, text: &str) -> io::Result<bool> {
        let path = self.dir.join(unit_name(service));
        match std::fs::read_to_string(&path) {
            Ok(old) if old == text => return Ok(false),
            _ => {}
        }
        std::fs::create_dir_all(&self.dir)?;
        atomic_file::write(&path, text.as_bytes(), 0o644)?;
        Ok(true)
    }

    fn remove(&self, service: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.dir.join(unit_name(service))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_only_when_changed_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let u = UnitDir {
            dir: dir.path().to_owned(),
        };
        std::fs::write(dir.path().join("other.service"), "x").unwrap();
        std::fs::write(dir.path().join("ferry-bg@.service"), "x").unwrap();
        assert!(u.write("web", "A").unwrap());
        assert!(!u.write("web", "A").unwrap());
        assert!(u.write("web", "B").unwrap());
        let list = u.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list["web"], "B");
        assert!(u.remove("web").unwrap());
        assert!(!u.remove("web").unwrap());
    }
}
