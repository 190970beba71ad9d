//! Closure trust: whether every store path of a closure the agent is about to run carries a
//! signature by one of `trustedKeys`, judged from what the host's store says about each path
//! (`nix path-info --json --recursive`). `nix copy` checks signatures only of the paths it
//! copies: a path already valid in the host's store (built there, added by hand, fetched
//! without a check) is skipped as soon as the cache answers for it, and any unsigned narinfo
//! will do. So the check is made here on every path, fetched now or found present, and a
//! content-addressed path gets no exemption: the manifest's signer named a store path, and
//! only a trusted signature says that what the host holds under that name is what was built
//! and uploaded. Pure.

use std::collections::{BTreeMap, BTreeSet};

use ferry_schema::PublicKey;
use ferry_schema::keys::signature_key_name;
use ferry_schema::narinfo::fingerprint;
use ferry_schema::path_info::PathInfo;

/// Whether `info` carries a valid signature by one of `keys`.
pub fn is_signed(info: &PathInfo, keys: &[PublicKey]) -> bool {
    let fp = fingerprint(&info.path, &info.nar_hash, info.nar_size, &info.references);
    info.signatures.iter().any(|sig| {
        keys.iter()
            .filter(|k| signature_key_name(sig) == Some(k.name()))
            .any(|k| k.verify_detached(fp.as_bytes(), sig).is_ok())
    })
}

/// For each of `roots` whose closure holds a path that is not signed by one of `keys` (or
/// that `infos` does not know), why — naming the first such path. Roots absent from the
/// result are trusted.
pub fn untrusted(
    roots: &[String],
    infos: &[PathInfo],
    keys: &[PublicKey],
) -> BTreeMap<String, String> {
    let by_path: BTreeMap<&str, &PathInfo> = infos.iter().map(|i| (i.path.as_str(), i)).collect();
    let mut verdicts: BTreeMap<&str, bool> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for root in roots {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo = vec![root.as_str()];
        let mut bad: Vec<&str> = Vec::new();
        while let Some(path) = todo.pop() {
            if !seen.insert(path) {
                continue;
            }
            let Some(info) = by_path.get(path) else {
                bad.push(path);
                continue;
            };
            if !*verdicts
                .entry(path)
                .or_insert_with(|| is_signed(info, keys))
            {
                bad.push(path);
            }
            todo.extend(info.references.iter().map(String::as_str));
        }
        if bad.is_empty() {
            continue;
        }
        bad.sort_unstable();
        let first = bad[0];
        let signers: Vec<&str> = by_path
            .get(first)
            .map(|i| {
                i.signatures
                    .iter()
                    .filter_map(|s| signature_key_name(s))
                    .collect()
            })
            .unwrap_or_default();
        let why = match (by_path.contains_key(first), signers.is_empty()) {
            (false, _) => "is not in the store".to_owned(),
            (true, true) => "has no signature".to_owned(),
            (true, false) => format!(
                "has no valid signature by those keys (it carries signatures by {})",
                signers.join(", ")
            ),
        };
        let more = match bad.len() {
            1 => String::new(),
            n => format!(" (and {} more of its {} paths)", n - 1, seen.len()),
        };
        out.insert(
            root.clone(),
            format!(
                "closure of {root} is not signed by any key in trustedKeys: {first} {why}{more}; \
                 the host's store holds it, but nothing vouches for it — upload it signed \
                 (`ferry upload`) or add its signer's key to trustedKeys"
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::SecretKey;

    fn info(path: &str, refs: &[&str], key: Option<&SecretKey>) -> PathInfo {
        let mut i = PathInfo {
            path: path.into(),
            nar_hash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into(),
            nar_size: 120,
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            deriver: None,
            ca: None,
            signatures: Vec::new(),
        };
        if let Some(k) = key {
            let fp = fingerprint(&i.path, &i.nar_hash, i.nar_size, &i.references);
            i.signatures.push(k.sign_detached(fp.as_bytes()));
        }
        i
    }

    #[test]
    fn every_path_of_the_closure_needs_a_trusted_signature() {
        let trusted = SecretKey::generate("deploy-1").unwrap();
        let stranger = SecretKey::generate("stranger").unwrap();
        let keys = [trusted.public()];
        let (app, lib, data) = ("/nix/store/a-app", "/nix/store/l-lib", "/nix/store/d-data");
        let good = vec![
            info(app, &[lib, app], Some(&trusted)),
            info(lib, &[data], Some(&trusted)),
            info(data, &[], Some(&trusted)),
        ];
        assert!(untrusted(&[app.into()], &good, &keys).is_empty());

        // A dependency present in the store without a signature (e.g. `nix-store --add`).
        let mut bad = good.clone();
        bad[2] = info(data, &[], None);
        let r = untrusted(&[app.into(), lib.into()], &bad, &keys);
        assert_eq!(r.len(), 2);
        assert!(
            r[app].starts_with(&format!(
                "closure of {app} is not signed by any key in trustedKeys: {data} has no signature"
            )),
            "{}",
            r[app]
        );

        // Signed by someone else, signed over other contents, or unknown.
        bad[2] = info(data, &[], Some(&stranger));
        assert!(
            untrusted(&[data.into()], &bad, &keys)[data].contains("carries signatures by stranger")
        );
        let mut forged = info(data, &[], Some(&trusted));
        forged.nar_size += 1;
        bad[2] = forged;
        assert!(
            untrusted(&[data.into()], &bad, &keys)[data]
                .contains("no valid signature by those keys (it carries signatures by deploy-1)")
        );
        let r = untrusted(&[app.into()], &good[..2], &keys);
        assert!(
            r[app].contains(&format!("{data} is not in the store")),
            "{}",
            r[app]
        );

        // Two bad paths are counted.
        let mut two = good.clone();
        two[1] = info(lib, &[data], None);
        two[2] = info(data, &[], None);
        assert!(untrusted(&[app.into()], &two, &keys)[app].contains("(and 1 more of its 3 paths)"));
    }
}
