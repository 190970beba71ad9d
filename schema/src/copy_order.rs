//! In which order the cache proxy fetches NARs ahead of `nix copy`: the order Nix asks for
//! them. Nix copies the paths it lacks dependencies first, starting with those whose
//! references it already has, in store-path order, then each path once all it references
//! is in (a FIFO thread pool, one thread per core). Fetching in any other order would fill
//! the proxy's memory budget with NARs Nix asks for last. Pure.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The missing paths (by hash part) in the order Nix copies them: Kahn's algorithm over the
/// graph `references` (hash → referenced hashes) restricted to `missing`, ready paths taken
/// first in, ties in hash order. Self-references and references outside `missing` are
/// ignored, as Nix ignores them; a cycle (which a real store cannot have) is appended in hash
/// order rather than dropped.
pub fn nar_order(
    references: &BTreeMap<String, Vec<String>>,
    missing: &BTreeSet<String>,
) -> Vec<String> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for path in missing {
        let refs: BTreeSet<&str> = references
            .get(path)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|r| *r != path && missing.contains(*r))
            .collect();
        for r in &refs {
            dependents.entry(r).or_default().push(path);
        }
        waiting.insert(path, refs.len());
    }
    let mut ready: VecDeque<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| *p)
        .collect();
    let mut order = Vec::with_capacity(missing.len());
    while let Some(path) = ready.pop_front() {
        order.push(path.to_owned());
        for dependent in dependents.get(path).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(dependent) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(dependent);
                }
            }
        }
    }
    if order.len() < missing.len() {
        let done: BTreeSet<String> = order.iter().cloned().collect();
        order.extend(missing.iter().filter(|p| !done.contains(*p)).cloned());
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(p, refs)| (p.to_string(), refs.iter().map(|r| r.to_string()).collect()))
            .collect()
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn dependencies_come_first_and_ties_in_hash_order() {
        // top → b → a, top → c; c and a are ready at once.
        let refs = graph(&[
            ("top", &["b", "c", "top"]),
            ("b", &["a"]),
            ("a", &[]),
            ("c", &[]),
        ]);
        assert_eq!(
            nar_order(&refs, &set(&["top", "a", "b", "c"])),
            ["a", "c", "b", "top"]
        );
    }

    #[test]
    fn paths_already_present_are_neither_fetched_nor_waited_for() {
        let refs = graph(&[("top", &["b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(nar_order(&refs, &set(&["top", "a"])), ["a", "top"]);
    }

    #[test]
    fn a_cycle_is_fetched_last_rather_than_lost() {
        let refs = graph(&[("x", &["y"]), ("y", &["x"]), ("z", &[])]);
        assert_eq!(nar_order(&refs, &set(&["x", "y", "z"])), ["z", "x", "y"]);
    }

    #[test]
    fn a_path_without_a_narinfo_is_a_leaf() {
        assert_eq!(nar_order(&BTreeMap::new(), &set(&["q", "p"])), ["p", "q"]);
    }
}
