//! When each narinfo of an upload may be written: once its own NAR is in the bucket and the
//! narinfo of every reference it waits on (each reference the plan puts in an earlier wave)
//! is written. So a narinfo in the bucket always has its whole closure there, as with
//! writing the plan's waves one after the other, but a narinfo waits only for what it needs,
//! not for every NAR and every path of the earlier waves: on a distant store the narinfos
//! go up while NARs are still uploading instead of one round trip per wave at the end. Pure.

use std::collections::HashMap;

use crate::upload_plan::UploadPlan;

/// The narinfos of a plan still waiting, and what each waits for.
#[derive(Debug, Clone, Default)]
pub struct NarinfoOrder {
    /// Each path whose narinfo is not ready yet: how many of its prerequisites (its NAR,
    /// its references' narinfos) are outstanding.
    waiting: HashMap<String, usize>,
    /// Each path: the paths whose narinfo waits for its narinfo.
    dependents: HashMap<String, Vec<String>>,
}

impl NarinfoOrder {
    /// The order for `plan`'s paths: each waits for its NAR and for the narinfos of its
    /// references in earlier waves (a reference in the same wave, which only a reference
    /// cycle the plan broke can give, is not waited for, as the waves do not).
    pub fn new(plan: &UploadPlan) -> Self {
        let wave_of: HashMap<&str, usize> = plan
            .waves
            .iter()
            .enumerate()
            .flat_map(|(n, wave)| wave.iter().map(move |info| (info.path.as_str(), n)))
            .collect();
        let mut order = NarinfoOrder::default();
        for (n, wave) in plan.waves.iter().enumerate() {
            for info in wave {
                let mut prerequisites = 1; // Its NAR.
                let mut references: Vec<&str> = info
                    .references
                    .iter()
                    .map(String::as_str)
                    .filter(|r| wave_of.get(r).is_some_and(|w| *w < n))
                    .collect();
                references.sort_unstable();
                references.dedup();
                for reference in references {
                    prerequisites += 1;
                    order
                        .dependents
                        .entry(reference.to_owned())
                        .or_default()
                        .push(info.path.clone());
                }
                order.waiting.insert(info.path.clone(), prerequisites);
            }
        }
        order
    }

    /// `path`'s NAR is in the bucket: the narinfos now ready to write.
    pub fn nar_uploaded(&mut self, path: &str) -> Vec<String> {
        self.settle([path].into_iter())
    }

    /// `path`'s narinfo is written: the narinfos now ready to write.
    pub fn narinfo_written(&mut self, path: &str) -> Vec<String> {
        let dependents = self.dependents.remove(path).unwrap_or_default();
        self.settle(dependents.iter().map(String::as_str))
    }

    /// Whether any narinfo is still waiting (for a NAR or another narinfo).
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// One prerequisite of each of `paths` is met; the paths left with none are ready.
    fn settle<'a>(&mut self, paths: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut ready = Vec::new();
        for path in paths {
            if let Some(count) = self.waiting.get_mut(path) {
                *count -= 1;
                if *count == 0 {
                    self.waiting.remove(path);
                    ready.push(path.to_owned());
                }
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::upload_plan::plan;
    use ferry_schema::path_info::PathInfo;

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

    /// app → lib → data, app → data; each references itself too; glibc is cached.
    fn closure() -> Vec<PathInfo> {
        vec![
            info("app", &["lib", "data", "app", "glibc"]),
            info("lib", &["data", "lib", "glibc"]),
            info("data", &[]),
            info("other", &["glibc"]),
            info("glibc", &[]),
        ]
    }

    fn cached() -> BTreeSet<String> {
        ["glibc".to_owned()].into()
    }

    #[test]
    fn a_narinfo_waits_for_its_nar_and_its_references_narinfos_only() {
        let mut order = NarinfoOrder::new(&plan(&closure(), &cached()));
        // The app's NAR first: its references are not written yet.
        assert!(order.nar_uploaded("app").is_empty());
        assert!(order.nar_uploaded("lib").is_empty());
        // `other` needs nothing but its NAR (glibc is cached), whatever its wave's others do.
        assert_eq!(order.nar_uploaded("other"), vec!["other"]);
        assert_eq!(order.nar_uploaded("data"), vec!["data"]);
        assert!(order.narinfo_written("other").is_empty());
        // data written: lib is ready; app still waits for lib.
        assert_eq!(order.narinfo_written("data"), vec!["lib"]);
        assert!(order.is_waiting());
        assert_eq!(order.narinfo_written("lib"), vec!["app"]);
        assert!(!order.is_waiting());
        assert!(order.narinfo_written("app").is_empty());
    }

    #[test]
    fn references_written_before_the_nar_leave_only_the_nar() {
        let mut order = NarinfoOrder::new(&plan(&closure(), &cached()));
        for path in ["data", "lib"] {
            order.nar_uploaded(path);
            order.narinfo_written(path);
        }
        assert_eq!(order.nar_uploaded("app"), vec!["app"]);
    }

    #[test]
    fn every_narinfo_of_a_plan_becomes_ready_after_its_references() {
        let closure = closure();
        let p = plan(&closure, &cached());
        let mut order = NarinfoOrder::new(&p);
        let mut written: Vec<String> = Vec::new();
        let mut ready: Vec<String> = Vec::new();
        // NARs in reverse wave order: the worst case for the narinfos.
        for info in p.missing().collect::<Vec<_>>().into_iter().rev() {
            ready.extend(order.nar_uploaded(&info.path));
        }
        while let Some(path) = ready.pop() {
            let info = closure.iter().find(|i| i.path == path).unwrap();
            for reference in &info.references {
                assert!(
                    *reference == path
                        || cached().contains(reference)
                        || written.contains(reference),
                    "{path} ready before its reference {reference}"
                );
            }
            ready.extend(order.narinfo_written(&path));
            written.push(path);
        }
        assert_eq!(
            written.len(),
            4,
            "every missing path's narinfo: {written:?}"
        );
        assert!(!order.is_waiting());
    }

    #[test]
    fn a_cycle_the_plan_broke_does_not_wait_forever() {
        let closure = vec![info("a", &["b"]), info("b", &["a"])];
        let mut order = NarinfoOrder::new(&plan(&closure, &BTreeSet::new()));
        assert_eq!(order.nar_uploaded("a"), vec!["a"]);
        assert_eq!(order.nar_uploaded("b"), vec!["b"]);
        assert!(!order.is_waiting());
    }
}
