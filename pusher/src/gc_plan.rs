//! Pure planning for `ferry gc`: which archived manifests to keep, reading a narinfo's
//! references and NAR, the store paths a manifest names, from the reachable narinfos and
//! a bucket listing which narinfos and NARs can go, and the order and batches they go in.
//! `command/gc.rs` does the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use ferry_bucket::ObjectInfo;
use ferry_schema::layout::NAR_PREFIX;

/// Which archived manifests keep their closures (the live one always does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepPolicy {
    /// The newest N.
    Newest(usize),
    /// Every one whose generation is at or after this time.
    Since(DateTime<Utc>),
}

/// The archived generations (newest first, as `live_manifest::archived_generations` lists
/// them) whose closures are kept. A generation that is not a timestamp is kept: its age is
/// unknown, and keeping too much is the safe mistake.
pub fn kept_generations(archived: &[String], policy: KeepPolicy) -> Vec<String> {
    match policy {
        KeepPolicy::Newest(n) => archived.iter().take(n).cloned().collect(),
        KeepPolicy::Since(cutoff) => archived
            .iter()
            .filter(|g| {
                DateTime::parse_from_rfc3339(g).map_or(true, |t| t.with_timezone(&Utc) >= cutoff)
            })
            .cloned()
            .collect(),
    }
}

/// Every `services[].artifact.storePath` and `systems.<host>.storePath` of a manifest's
/// JSON. Read leniently (not through today's validation), so an old archive from an earlier
/// schema still protects its closure.
pub fn manifest_store_paths(bytes: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let services = value
        .get("services")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `services` list")?;
    let mut paths = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let path = s
            .pointer("/artifact/storePath")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("services[{i}] has no artifact.storePath"))?;
        paths.push(path.to_owned());
    }
    let systems = value.get("systems").and_then(serde_json::Value::as_object);
    for (host, system) in systems.into_iter().flatten() {
        let path = system
            .get("storePath")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("systems.{host} has no storePath"))?;
        paths.push(path.to_owned());
    }
    Ok(paths)
}

/// What `ferry gc` needs from a narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarinfoRefs {
    /// `StorePath:`.
    pub store_path: String,
    /// `URL:` of the NAR, relative to the cache root.
    pub url: String,
    /// `References:` as narinfo keys (`<hash>.narinfo`).
    pub references: Vec<String>,
}

/// Reads StorePath, URL and References from narinfo text.
pub fn parse_narinfo(text: &str) -> Result<NarinfoRefs, String> {
    let mut store_path = None;
    let mut url = None;
    let mut references = Vec::new();
    for line in text.lines() {
        let Some((field, value)) = line.split_once(": ").or_else(|| {
            // An empty `References:` line has no space after the colon.
            line.strip_suffix(':').map(|f| (f, ""))
        }) else {
            continue;
        };
        match field {
            "StorePath" => store_path = Some(value.to_owned()),
            "URL" => url = Some(value.to_owned()),
            "References" => {
                for r in value.split_whitespace() {
                    references.push(
                        narinfo_key_of_base(r).ok_or_else(|| format!("bad reference {r:?}"))?,
                    );
                }
            }
            _ => {}
        }
    }
    Ok(NarinfoRefs {
        store_path: store_path.ok_or("no StorePath")?,
        url: url.ok_or("no URL")?,
        references,
    })
}

/// `<hash>.narinfo` for a store path's base name (`<hash>-<name>`).
fn narinfo_key_of_base(base: &str) -> Option<String> {
    let (hash, _) = base.split_once('-')?;
    is_hash(hash).then(|| format!("{hash}.narinfo"))
}

/// Whether `s` looks like a store path hash (32 characters of Nix base-32).
pub fn is_hash(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_lowercase() && !b"eotu".contains(&b)))
}

/// Whether `key` is a narinfo at the cache root.
pub fn is_narinfo_key(key: &str) -> bool {
    key.strip_suffix(".narinfo").is_some_and(is_hash)
}

/// The objects to delete, narinfos first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Narinfos no kept closure needs (delete these first).
    pub narinfos: Vec<ObjectInfo>,
    /// NARs no kept narinfo points at.
    pub nars: Vec<ObjectInfo>,
    /// Narinfos kept.
    pub kept_narinfos: usize,
    /// NARs kept.
    pub kept_nars: usize,
    /// Reachable narinfos whose NAR is not in the bucket (a damaged cache; reported).
    pub missing_nars: Vec<String>,
}

impl GcPlan {
    /// Bytes the deletions free.
    pub fn bytes(&self) -> u64 {
        self.narinfos.iter().chain(&self.nars).map(|o| o.size).sum()
    }

    /// Whether there is nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.narinfos.is_empty() && self.nars.is_empty()
    }
}

/// Whether `object` was written at or after `young_since` (an unknown time counts as young).
fn is_young(object: &ObjectInfo, young_since: Option<SystemTime>) -> bool {
    match (young_since, object.modified) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(since), Some(m)) => m >= since,
    }
}

/// Plans the deletions from the bucket `listing`, the narinfos reachable from the kept
/// manifests (and from young narinfos, which the caller adds as roots), and the age below
/// which nothing is deleted. Objects other than root narinfos and `nar/` files (manifests,
/// `nix-cache-info`, status reports, the lease, the cache index) are never touched.
pub fn plan(
    listing: &[ObjectInfo],
    reachable: &BTreeMap<String, NarinfoRefs>,
    young_since: Option<SystemTime>,
) -> GcPlan {
    let mut out = GcPlan::default();
    let kept_urls: BTreeSet<&str> = reachable.values().map(|r| r.url.as_str()).collect();
    let mut present_nars = BTreeSet::new();
    for object in listing {
        if is_narinfo_key(&object.key) {
            if reachable.contains_key(&object.key) || is_young(object, young_since) {
                out.kept_narinfos += 1;
            } else {
                out.narinfos.push(object.clone());
            }
        } else if object.key.starts_with(NAR_PREFIX) {
            present_nars.insert(object.key.as_str());
            if kept_urls.contains(object.key.as_str()) || is_young(object, young_since) {
                out.kept_nars += 1;
            } else {
                out.nars.push(object.clone());
            }
        }
    }
    out.missing_nars = reachable
        .values()
        .filter(|r| !present_nars.contains(r.url.as_str()))
        .map(|r| r.store_path.clone())
        .collect();
    out
}

/// The narinfos to delete, in levels: a narinfo is in a later level than every doomed
/// narinfo that references it. Deleting level by level keeps the upload's invariant —
/// every narinfo in the bucket has its references there — at every moment, so a push
/// that finds a narinfo (even after a gc was killed half-way) finds its whole closure.
/// `refs` maps a doomed narinfo's key to the keys it references; one missing from it
/// (unreadable) goes in the last level. Cycles cannot happen in a Nix store; should the
/// narinfos claim one, its members go together in the last level.
pub fn referrers_first(
    doomed: &[ObjectInfo],
    refs: &BTreeMap<String, Vec<String>>,
) -> Vec<Vec<ObjectInfo>> {
    let keys: BTreeSet<&str> = doomed.iter().map(|o| o.key.as_str()).collect();
    // How many doomed narinfos reference each doomed narinfo.
    let mut referrers: BTreeMap<&str, usize> = keys.iter().map(|k| (*k, 0)).collect();
    for (key, targets) in refs {
        if !keys.contains(key.as_str()) {
            continue;
        }
        let distinct: BTreeSet<&str> = targets
            .iter()
            .map(String::as_str)
            .filter(|t| *t != key && keys.contains(t))
            .collect();
        for t in distinct {
            if let Some(n) = referrers.get_mut(t) {
                *n += 1;
            }
        }
    }
    let mut left: Vec<&ObjectInfo> = doomed
        .iter()
        .filter(|o| refs.contains_key(&o.key))
        .collect();
    let mut levels = Vec::new();
    while !left.is_empty() {
        let (ready, rest): (Vec<&ObjectInfo>, Vec<&ObjectInfo>) = left
            .iter()
            .partition(|o| referrers.get(o.key.as_str()).copied().unwrap_or(0) == 0);
        if ready.is_empty() {
            levels.push(rest.into_iter().cloned().collect());
            break;
        }
        for o in &ready {
            for t in refs.get(&o.key).into_iter().flatten() {
                if t != &o.key
                    && let Some(n) = referrers.get_mut(t.as_str())
                {
                    *n = n.saturating_sub(1);
                }
            }
        }
        levels.push(ready.into_iter().cloned().collect());
        left = rest;
    }
    let unreadable: Vec<ObjectInfo> = doomed
        .iter()
        .filter(|o| !refs.contains_key(&o.key))
        .cloned()
        .collect();
    if !unreadable.is_empty() {
        levels.push(unreadable);
    }
    levels
}

/// Splits levels into batches of at most `size` objects; a batch never spans two levels.
pub fn batches(levels: Vec<Vec<ObjectInfo>>, size: usize) -> Vec<Vec<ObjectInfo>> {
    levels
        .into_iter()
        .flat_map(|level| {
            level
                .chunks(size.max(1))
                .map(<[ObjectInfo]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: &str = "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j";
    const B: &str = "gblmnsv3yvjpggl9pzh3ihp5rywqx0ag";
    const C: &str = "p8za439lmhdjgj2gqx06njz2s6fach8z";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn object(key: &str, size: u64, age_secs: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.to_owned(),
            size,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs)),
        }
    }

    #[test]
    fn keeps_the_newest_n_or_those_since_a_time() {
        let archived: Vec<String> = [
            "2026-03-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "not-a-time",
            "2026-01-01T00:00:00Z",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            kept_generations(&archived, KeepPolicy::Newest(2)),
            archived[..2]
        );
        assert!(kept_generations(&archived, KeepPolicy::Newest(0)).is_empty());
        assert_eq!(
            kept_generations(&archived, KeepPolicy::Since(at("2026-02-01T00:00:00Z"))),
            ["2026-03-01T00:00:00Z", "2026-02-01T00:00:00Z", "not-a-time"]
        );
    }

    #[test]
    fn store_paths_of_any_manifest_shape() {
        let m = br#"{"version":1,"services":[{"name":"a","artifact":{"storePath":"/nix/store/x-a"}},
                    {"name":"b","artifact":{"type":"old","storePath":"/nix/store/y-b"},"extra":1}]}"#;
        assert_eq!(
            manifest_store_paths(m).unwrap(),
            ["/nix/store/x-a", "/nix/store/y-b"]
        );
        assert!(
            manifest_store_paths(br#"{"services":[{"name":"a"}]}"#)
                .unwrap_err()
                .contains("services[0]")
        );
        // A whole host's system is kept like a service's closure.
        let m = br#"{"services":[{"name":"a","artifact":{"storePath":"/nix/store/x-a"}}],
                    "systems":{"biz":{"storePath":"/nix/store/s-nixos-system-biz"}}}"#;
        assert_eq!(
            manifest_store_paths(m).unwrap(),
            ["/nix/store/x-a", "/nix/store/s-nixos-system-biz"]
        );
        let m = br#"{"services":[],"systems":{"biz":{}}}"#;
        assert!(manifest_store_paths(m).unwrap_err().contains("systems.biz"));
        assert!(manifest_store_paths(b"{}").is_err());
        assert!(manifest_store_paths(b"nope").is_err());
    }

    #[test]
    fn parses_narinfo_references_as_keys() {
        let text = format!(
            "StorePath: /nix/store/{A}-app\nURL: nar/1abc.nar.zst\nCompression: zstd\nReferences: {A}-app {B}-lib\nSig: k:x\n"
        );
        assert_eq!(
            parse_narinfo(&text).unwrap(),
            NarinfoRefs {
                store_path: format!("/nix/store/{A}-app"),
                url: "nar/1abc.nar.zst".into(),
                references: vec![format!("{A}.narinfo"), format!("{B}.narinfo")],
            }
        );
        let leaf = format!("StorePath: /nix/store/{C}-data\nURL: nar/2.nar\nReferences:\n");
        assert!(parse_narinfo(&leaf).unwrap().references.is_empty());
        assert_eq!(parse_narinfo("URL: nar/x").unwrap_err(), "no StorePath");
        assert!(
            parse_narinfo(&format!(
                "StorePath: /nix/store/{A}-a\nURL: u\nReferences: ../etc\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn recognises_narinfo_keys() {
        assert!(is_narinfo_key(&format!("{A}.narinfo")));
        assert!(!is_narinfo_key("nix-cache-info"));
        assert!(!is_narinfo_key("manifests/manifest-x.json"));
        assert!(!is_narinfo_key("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo"));
        assert!(!is_narinfo_key(&format!("sub/{A}.narinfo")));
    }

    #[test]
    fn plans_unreachable_old_objects_and_nothing_else() {
        let listing = vec![
            object(&format!("{A}.narinfo"), 500, 9000),
            object(&format!("{B}.narinfo"), 400, 9000),
            object(&format!("{C}.narinfo"), 300, 9000),
            object("manifest.json", 1000, 9000),
            object("manifests/manifest-2026-01-01T00:00:00Z.json", 1000, 9000),
            object("nix-cache-info", 30, 9000),
            object("manifest.lease", 30, 9000),
            object(ferry_schema::layout::CACHE_INDEX_KEY, 3000, 9000),
            object("nar/a.nar.zst", 50_000, 9000),
            object("nar/b.nar.zst", 40_000, 9000),
            object("nar/c.nar.zst", 30_000, 9000),
            object("nar/orphan.nar.zst", 20_000, 9000),
            object("nar/fresh.nar.zst", 10_000, 10),
        ];
        let mut reachable = BTreeMap::new();
        reachable.insert(
            format!("{A}.narinfo"),
            NarinfoRefs {
                store_path: format!("/nix/store/{A}-app"),
                url: "nar/a.nar.zst".into(),
                references: vec![format!("{B}.narinfo")],
            },
        );
        reachable.insert(
            format!("{B}.narinfo"),
            NarinfoRefs {
                store_path: format!("/nix/store/{B}-lib"),
                url: "nar/b.nar.zst".into(),
                references: vec![],
            },
        );
        let young_since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - 3600));
        let p = plan(&listing, &reachable, young_since);
        let keys = |v: &[ObjectInfo]| v.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&p.narinfos), [format!("{C}.narinfo")]);
        assert_eq!(keys(&p.nars), ["nar/c.nar.zst", "nar/orphan.nar.zst"]);
        assert_eq!((p.kept_narinfos, p.kept_nars), (2, 3));
        assert_eq!(p.bytes(), 300 + 30_000 + 20_000);
        assert!(p.missing_nars.is_empty());

        // Without an age limit the fresh orphan goes too; an empty reachable set with
        // everything young deletes nothing.
        let p = plan(&listing, &reachable, None);
        assert_eq!(p.nars.len(), 3);
        let everything_young = Some(SystemTime::UNIX_EPOCH);
        assert!(plan(&listing, &BTreeMap::new(), everything_young).is_empty());
    }

    #[test]
    fn referrers_go_before_what_they_reference() {
        let key = |h: &str| format!("{h}.narinfo");
        let d = "0000000000000000000000000000000d";
        let doomed: Vec<ObjectInfo> = [A, B, C, d].iter().map(|h| object(&key(h), 1, 1)).collect();
        // A (app) -> B (lib) -> C (data); A -> C; B references itself; D unreadable.
        let refs: BTreeMap<String, Vec<String>> = [
            (key(A), vec![key(B), key(C), key(A)]),
            (key(B), vec![key(C), key(B)]),
            (key(C), vec![]),
        ]
        .into_iter()
        .collect();
        let levels = referrers_first(&doomed, &refs);
        let names: Vec<Vec<String>> = levels
            .iter()
            .map(|l| l.iter().map(|o| o.key.clone()).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec![key(A)], vec![key(B)], vec![key(C)], vec![key(d)]]
        );
        // A reference to something kept (not doomed) does not hold anything back.
        let refs2: BTreeMap<String, Vec<String>> = [(key(A), vec!["kept.narinfo".to_owned()])]
            .into_iter()
            .collect();
        assert_eq!(referrers_first(&doomed[..1], &refs2).len(), 1);
        // A claimed cycle ends up together, last.
        let cycle: BTreeMap<String, Vec<String>> = [(key(A), vec![key(B)]), (key(B), vec![key(A)])]
            .into_iter()
            .collect();
        assert_eq!(
            referrers_first(&doomed[..2], &cycle),
            vec![doomed[..2].to_vec()]
        );
        let b = batches(vec![doomed[..3].to_vec(), doomed[3..].to_vec()], 2);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1]);
    }

    #[test]
    fn reports_reachable_narinfos_without_their_nar() {
        let listing = vec![object(&format!("{A}.narinfo"), 500, 9000)];
        let mut reachable = BTreeMap::new();
        reachable.insert(
            format!("{A}.narinfo"),
            NarinfoRefs {
                store_path: format!("/nix/store/{A}-app"),
                url: "nar/a.nar.zst".into(),
                references: vec![],
            },
        );
        let p = plan(&listing, &reachable, None);
        assert!(p.is_empty());
        assert_eq!(p.missing_nars, [format!("/nix/store/{A}-app")]);
    }
}
