//! Planning an upload: which paths of a closure the bucket lacks, and in which order their
//! narinfos may appear (a path's references before the path, so a reader that finds a
//! narinfo also finds everything it references). Pure.

use std::collections::{BTreeMap, BTreeSet};

use ferry_schema::path_info::PathInfo;

use crate::cache_index::IndexPlan;

/// What an upload will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPlan {
    /// Store paths whose narinfo is already in the bucket (signed by a trusted key).
    pub cached: Vec<String>,
    /// Store paths whose narinfo is in the bucket but not signed by a trusted key (planted,
    /// or signed by a key no longer in use): uploaded again.
    pub untrusted: Vec<String>,
    /// Paths to upload, in waves: every reference of a path in wave N is cached or in an
    /// earlier wave.
    pub waves: Vec<Vec<PathInfo>>,
    /// What the cache index said, and which paths lookups found (to add to it).
    pub index: IndexPlan,
}

impl UploadPlan {
    /// Every path to upload.
    pub fn missing(&self) -> impl Iterator<Item = &PathInfo> {
        self.waves.iter().flatten()
    }

    /// Uncompressed bytes to upload.
    pub fn nar_bytes(&self) -> u64 {
        self.missing().map(|p| p.nar_size).sum()
    }
}

/// Plans the upload of `closure` given the paths whose narinfo exists.
pub fn plan(closure: &[PathInfo], cached: &BTreeSet<String>) -> UploadPlan {
    let mut pending: BTreeMap<&str, &PathInfo> = closure
        .iter()
        .filter(|p| !cached.contains(&p.path))
        .map(|p| (p.path.as_str(), p))
        .collect();
    let mut waves = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<&str> = pending
            .iter()
            .filter(|(path, info)| {
                info.references
                    .iter()
                    .all(|r| r == *path || !pending.contains_key(r.as_str()))
            })
            .map(|(path, _)| *path)
            .collect();
        // A reference cycle cannot happen in a Nix store; should the JSON claim one, the
        // rest goes up together rather than never.
        let wave: Vec<&str> = if ready.is_empty() {
            pending.keys().copied().collect()
        } else {
            ready
        };
        waves.push(
            wave.iter()
                .filter_map(|p| pending.remove(p))
                .cloned()
                .collect(),
        );
    }
    UploadPlan {
        cached: closure
            .iter()
            .filter(|p| cached.contains(&p.path))
            .map(|p| p.path.clone())
            .collect(),
        waves,
        untrusted: Vec::new(),
        index: IndexPlan::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path.into(),
            nar_hash: "sha256:0".into(),
            nar_size: 10,
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            deriver: None,
            ca: None,
            signatures: Vec::new(),
        }
    }

    #[test]
    fn references_come_first_and_cached_paths_are_skipped() {
        let closure = vec![
            info(
                "/nix/store/a-app",
                &["/nix/store/b-lib", "/nix/store/c-data", "/nix/store/a-app"],
            ),
            info("/nix/store/b-lib", &["/nix/store/c-data"]),
            info("/nix/store/c-data", &[]),
            info("/nix/store/d-glibc", &[]),
        ];
        let cached: BTreeSet<String> = ["/nix/store/d-glibc".to_owned()].into();
        let p = plan(&closure, &cached);
        assert_eq!(p.cached, vec!["/nix/store/d-glibc"]);
        let waves: Vec<Vec<&str>> = p
            .waves
            .iter()
            .map(|w| w.iter().map(|i| i.path.as_str()).collect())
            .collect();
        assert_eq!(
            waves,
            vec![
                vec!["/nix/store/c-data"],
                vec!["/nix/store/b-lib"],
                vec!["/nix/store/a-app"]
            ]
        );
        assert_eq!(p.nar_bytes(), 30);
    }

    #[test]
    fn all_cached_means_nothing_to_do() {
        let closure = vec![info("/nix/store/c-data", &[])];
        let p = plan(&closure, &["/nix/store/c-data".to_owned()].into());
        assert!(p.waves.is_empty());
        assert_eq!(p.missing().count(), 0);
    }
}
