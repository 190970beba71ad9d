//! Profiles of services that left this host. A removed service's profile (its generations,
//! the GC roots of its closures) is kept `removedProfileRetentionDays` after the service
//! left, so a service removed by mistake comes back without a pull; then it is deleted, so
//! Nix's garbage collector can take its closures and the host does not keep them forever.
//!
//! The clock starts the first tick that finds a profile in `profileDir` whose service is
//! neither deployed here (state) nor named for this host by the manifest, and is kept in the
//! state file (`removedProfiles`). That one rule covers a service the manifest removed, a
//! profile left by an agent older than this rule, and one whose state was lost. A service
//! that comes back stops the clock. Deciding what is due is pure; listing and deleting are
//! the only I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use ferry_schema::names::is_valid_service_name;

use crate::vocab::profile_link::generation_link as generation_of;

/// What the retention step decided, before any file is touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Profiles whose clock starts now.
    pub started: Vec<String>,
    /// Services back on this host: their clocks stop.
    pub returned: Vec<String>,
    /// Profiles kept long enough: to delete.
    pub due: Vec<String>,
}

/// Decides what to do with the profiles in `profiles`, given the services that keep theirs
/// (`kept`: deployed here or named for this host), the clocks in `removed` (service → RFC
/// 3339 time) and the retention. A clock that does not parse starts again now (never
/// deleting early is the safe mistake).
pub fn decide(
    profiles: &BTreeSet<String>,
    kept: &BTreeSet<String>,
    removed: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    days: u32,
) -> Decision {
    let mut d = Decision::default();
    let retention = TimeDelta::days(i64::from(days));
    for name in removed.keys() {
        if kept.contains(name) || !profiles.contains(name) {
            d.returned.push(name.clone());
        }
    }
    for name in profiles.difference(kept) {
        let since = removed
            .get(name)
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc));
        match since {
            Some(at) if now.signed_duration_since(at) >= retention => d.due.push(name.clone()),
            Some(_) => {}
            None if days == 0 => d.due.push(name.clone()),
            None => d.started.push(name.clone()),
        }
    }
    d
}

/// Applies `decide` to the state's clocks and the profile directory: starts and stops
/// clocks, deletes due profiles. Returns one line per profile started or deleted (or that
/// could not be deleted: its clock stays, and the next tick tries again).
pub fn step(
    dir: &Path,
    kept: &BTreeSet<String>,
    removed: &mut BTreeMap<String, String>,
    now: DateTime<Utc>,
    days: u32,
) -> Vec<String> {
    let profiles = match profiles_in(dir) {
        Ok(p) => p,
        Err(e) => {
            return vec![format!(
                "cannot list the profiles in {} (profileDir): {e}; removed services' profiles are kept",
                dir.display()
            )];
        }
    };
    let d = decide(&profiles, kept, removed, now, days);
    let mut lines = Vec::new();
    for name in &d.returned {
        removed.remove(name);
    }
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    for name in &d.started {
        removed.insert(name.clone(), stamp.clone());
        let until = now
            .checked_add_signed(TimeDelta::days(i64::from(days)))
            .map_or_else(String::new, |t| {
                format!(" (until {})", t.to_rfc3339_opts(SecondsFormat::Secs, true))
            });
        lines.push(format!(
            "{name}: no longer on this host; its profile {} is kept {days} days{until} \
             (removedProfileRetentionDays), then deleted",
            dir.join(name).display()
        ));
    }
    for name in &d.due {
        match delete_profile(dir, name) {
            Ok(n) => {
                removed.remove(name);
                lines.push(format!(
                    "{name}: profile {} deleted ({n} links), {days} days after the service left \
                     this host (removedProfileRetentionDays); Nix's garbage collector may now \
                     take its closures",
                    dir.join(name).display()
                ));
            }
            Err(e) => lines.push(format!(
                "{name}: cannot delete profile {}: {e}; trying again next tick",
                dir.join(name).display()
            )),
        }
    }
    lines
}

/// The services with a profile in `dir`: symlinks named like a service (`<name>`, not a
/// generation link `<name>-<n>-link`). A missing directory has none.
pub fn profiles_in(dir: &Path) -> io::Result<BTreeSet<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut out = BTreeSet::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if entry.file_type()?.is_symlink()
            && generation_of(&name).is_none()
            && is_valid_service_name(&name)
        {
            out.insert(name);
        }
    }
    Ok(out)
}

/// Deletes profile `name` in `dir`: its generation links first, the profile link last, so
/// a tick killed half-way leaves the profile to find and delete again. Only symlinks are
/// removed (a profile is nothing else). Returns how many links went.
pub fn delete_profile(dir: &Path, name: &str) -> io::Result<usize> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        if let Some(file) = file.to_str()
            && generation_of(file).is_some_and(|(base, _)| base == name)
        {
            links.push(entry.path());
        }
    }
    links.push(dir.join(name));
    let mut n = 0;
    for link in links {
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::remove_file(&link)?;
                n += 1;
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a symlink; remove it by hand",
                    link.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_removed_profile_is_kept_for_the_retention_then_due() {
        let profiles = set(&["web", "gone"]);
        let kept = set(&["web"]);
        let mut removed = BTreeMap::new();
        let now = at("2026-01-01T00:00:00Z");
        let d = decide(&profiles, &kept, &removed, now, 30);
        assert_eq!(d.started, ["gone"]);
        assert!(d.due.is_empty() && d.returned.is_empty());
        removed.insert("gone".to_owned(), "2026-01-01T00:00:00Z".to_owned());
        // 29 days and 23 hours later: still kept; 30 days: due.
        let d = decide(&profiles, &kept, &removed, at("2026-01-30T23:00:00Z"), 30);
        assert_eq!(d, Decision::default());
        let d = decide(&profiles, &kept, &removed, at("2026-01-31T00:00:00Z"), 30);
        assert_eq!(d.due, ["gone"]);
        // Retention 0: due the tick the service leaves.
        let d = decide(&profiles, &kept, &BTreeMap::new(), now, 0);
        assert_eq!(d.due, ["gone"]);
        assert!(d.started.is_empty());
    }

    #[test]
    fn a_returning_service_stops_the_clock_and_a_bad_clock_restarts() {
        let mut removed = BTreeMap::new();
        removed.insert("web".to_owned(), "2020-01-01T00:00:00Z".to_owned());
        removed.insert("vanished".to_owned(), "2020-01-01T00:00:00Z".to_owned());
        removed.insert("odd".to_owned(), "yesterday".to_owned());
        let d = decide(
            &set(&["web", "odd"]),
            &set(&["web"]),
            &removed,
            at("2026-01-01T00:00:00Z"),
            30,
        );
        assert_eq!(d.returned, ["vanished", "web"]);
        assert_eq!(d.started, ["odd"]);
        assert!(d.due.is_empty());
    }

    #[test]
    fn generation_links_are_told_from_profiles() {
        assert_eq!(generation_of("web-12-link"), Some(("web", "12")));
        assert_eq!(generation_of("web-1-1-link"), Some(("web-1", "1")));
        assert_eq!(generation_of("web-link"), None);
        assert_eq!(generation_of("web--link"), None);
        assert_eq!(generation_of("web"), None);
    }

    #[test]
    fn deleting_takes_the_links_of_that_profile_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (link, to) in [
            ("web-1-link", "/nix/store/a-web-1"),
            ("web-2-link", "/nix/store/b-web-2"),
            ("web", "web-2-link"),
            ("web-1-1-link", "/nix/store/c-web-1"),
            ("web-1", "web-1-1-link"),
        ] {
            std::os::unix::fs::symlink(to, d.join(link)).unwrap();
        }
        std::fs::write(d.join("notes"), "").unwrap();
        assert_eq!(profiles_in(d).unwrap(), set(&["web", "web-1"]));
        assert_eq!(delete_profile(d, "web").unwrap(), 3);
        assert_eq!(profiles_in(d).unwrap(), set(&["web-1"]));
        assert!(d.join("web-1-1-link").symlink_metadata().is_ok());
        // A plain file is not a profile to delete.
        assert!(delete_profile(d, "notes").is_err());
        assert!(d.join("notes").exists());

        let mut removed = BTreeMap::new();
        let lines = step(d, &BTreeSet::new(), &mut removed, Utc::now(), 0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("web-1: profile "), "{lines:?}");
        assert!(removed.is_empty());
        assert!(profiles_in(d).unwrap().is_empty());
        assert!(d.join("notes").exists());
        assert!(profiles_in(&d.join("missing")).unwrap().is_empty());
    }
}
