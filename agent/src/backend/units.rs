//! The `Units` trait and its implementation on the unit directory: list the agent's unit
//! files (`ferry-<service>.service` and blue-green templates `ferry-<service>@.service`),
//! write one atomically only when its text changed, remove one. Files are named by their
//! file name; `render::unit` says which belongs to which service.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::render::unit::service_of_file;
use ferry_bucket::atomic_file;

/// The unit files the agent owns.
pub trait Units {
    /// Every unit file of the agent's, by file name, with its text.
    fn list(&self) -> io::Result<BTreeMap<String, String>>;
    /// Write a unit file; returns whether the file changed.
    fn write(&self, file: &str, text: &str) -> io::Result<bool>;
    /// Remove a unit file; returns whether a file was there.
    fn remove(&self, file: &str) -> io::Result<bool>;
}

/// Unit files (as [`Units::list`] gives them) grouped by the service they belong to.
pub fn by_service(files: BTreeMap<String, String>) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (file, text) in files {
        if let Some(service) = service_of_file(&file) {
            out.entry(service.to_owned())
                .or_default()
                .insert(file, text);
        }
    }
    out
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
            if service_of_file(name).is_none() {
                continue;
            }
            out.insert(name.to_owned(), std::fs::read_to_string(entry.path())?);
        }
        Ok(out)
    }

    fn write(&self, file: &str, text: &str) -> io::Result<bool> {
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(old) if old == text => return Ok(false),
            _ => {}
        }
        std::fs::create_dir_all(&self.dir)?;
        atomic_file::write(&path, text.as_bytes(), 0o644)?;
        Ok(true)
    }

    fn remove(&self, file: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.dir.join(file)) {
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
        std::fs::write(dir.path().join("ferry-bg@8000.service"), "x").unwrap();
        assert!(u.write("ferry-web.service", "A").unwrap());
        assert!(!u.write("ferry-web.service", "A").unwrap());
        assert!(u.write("ferry-web.service", "B").unwrap());
        assert!(u.write("ferry-bg@.service", "T").unwrap());
        let list = u.list().unwrap();
        assert_eq!(list.len(), 2);
        let grouped = by_service(list.clone());
        assert_eq!(grouped.keys().collect::<Vec<_>>(), ["bg", "web"]);
        assert_eq!(grouped["bg"]["ferry-bg@.service"], "T");
        assert_eq!(list["ferry-web.service"], "B");
        assert_eq!(list["ferry-bg@.service"], "T");
        assert!(u.remove("ferry-web.service").unwrap());
        assert!(!u.remove("ferry-web.service").unwrap());
    }
}
