//! The `Units` trait and its implementation on the unit directory: list the agent's unit
//! files (`ferry-<service>.service` and blue-green templates `ferry-<service>@.service`),
//! write one atomically only when its text changed, remove one. Files are named by their
//! file name; `render::unit` says which belongs to which service. A file is the agent's only
//! when it starts with the header the agent writes, naming that same service: anything else
//! with the `ferry-` prefix (an operator's unit) is never listed, so never observed, stopped
//! or deleted — and its name is reserved (`policy::reserved`), so never written over.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::vocab::unit::{header_store_path, service_of_file};
use ferry_bucket::atomic_file;

/// The unit files the agent owns.
pub trait Units {
    /// Every unit file the agent wrote (its header names the file's service), by file name,
    /// with its text.
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

/// Whether `text` is a unit the agent wrote for `service`: its first line is the agent's
/// header naming that service.
pub fn is_written_by_ferry(service: &str, text: &str) -> bool {
    header_store_path(text).is_some_and(|(named, _)| named == service)
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
            let Some(service) = service_of_file(name) else {
                continue;
            };
            let text = std::fs::read_to_string(entry.path())?;
            if is_written_by_ferry(service, &text) {
                out.insert(name.to_owned(), text);
            }
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
    use crate::vocab::unit::HEADER_PREFIX;

    #[test]
    fn write_only_when_changed_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let u = UnitDir {
            dir: dir.path().to_owned(),
        };
        let unit = |service: &str, body: &str| {
            format!("{HEADER_PREFIX}{service} storePath=/nix/store/a-{service}\n{body}")
        };
        let (a, b, t) = (unit("web", "A"), unit("web", "B"), unit("bg", "T"));
        std::fs::write(dir.path().join("other.service"), "x").unwrap();
        std::fs::write(dir.path().join("ferry-bg@8000.service"), "x").unwrap();
        // An operator's units with Ferry's prefix: no header, or another service's header.
        std::fs::write(dir.path().join("ferry-foreign.service"), "[Service]\n").unwrap();
        std::fs::write(dir.path().join("ferry-forged.service"), unit("web", "F")).unwrap();
        assert!(u.write("ferry-web.service", &a).unwrap());
        assert!(!u.write("ferry-web.service", &a).unwrap());
        assert!(u.write("ferry-web.service", &b).unwrap());
        assert!(u.write("ferry-bg@.service", &t).unwrap());
        let list = u.list().unwrap();
        assert_eq!(list.len(), 2, "{:?}", list.keys());
        let grouped = by_service(list.clone());
        assert_eq!(grouped.keys().collect::<Vec<_>>(), ["bg", "web"]);
        assert_eq!(grouped["bg"]["ferry-bg@.service"], t);
        assert_eq!(list["ferry-web.service"], b);
        assert_eq!(list["ferry-bg@.service"], t);
        assert!(u.remove("ferry-web.service").unwrap());
        assert!(!u.remove("ferry-web.service").unwrap());
    }
}
