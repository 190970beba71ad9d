//! The bucket layout: which object key holds what. The pusher writes these keys and the
//! agent reads them, so both take them from here.

use crate::names::StorePath;

/// The live manifest the agents follow.
pub const MANIFEST_KEY: &str = "manifest.json";

/// Nix binary cache metadata (`StoreDir: /nix/store`).
pub const CACHE_INFO_KEY: &str = "nix-cache-info";

/// Folder of archived manifests, one per generation.
pub const ARCHIVE_PREFIX: &str = "manifests/";

/// Folder of per-host status reports, in the status store (a bucket of its own: hosts may
/// write there, never to the deploy bucket).
pub const HOSTS_PREFIX: &str = "hosts/";

/// Folder of NAR files.
pub const NAR_PREFIX: &str = "nar/";

/// The pusher's signed list of the store paths it knows are in the cache (narinfo and NAR,
/// signed by a trusted key), so an incremental upload need not look each path up. Never
/// served to hosts; `ferry gc` keeps it and prunes it.
pub const CACHE_INDEX_KEY: &str = "ferry-cache-index.json";

/// The archived copy of the manifest with this generation:
/// `manifests/manifest-<generation>.json`. RFC 3339 generations in UTC sort by time.
pub fn archive_key(generation: &str) -> String {
    format!("{ARCHIVE_PREFIX}manifest-{generation}.json")
}

/// Where the bytes of a live manifest that did not validate go when `ferry publish`
/// replaces it: `manifests/invalid-<stamp>.json`. Not a `manifest-` name, so history,
/// rollback and gc never take it for a generation.
pub fn invalid_archive_key(stamp: &str) -> String {
    format!("{ARCHIVE_PREFIX}invalid-{stamp}.json")
}

/// The status report of one host: `hosts/<host>.json`.
pub fn host_status_key(host: &str) -> String {
    format!("{HOSTS_PREFIX}{host}.json")
}

/// The narinfo of a store path: `<hash>.narinfo`, or `None` when `store_path` is not a
/// store path.
pub fn narinfo_key(store_path: &str) -> Option<String> {
    let path = StorePath::parse(store_path).ok()?;
    Some(format!("{}.narinfo", path.hash_part()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            archive_key("2025-01-15T12:34:56Z"),
            "manifests/manifest-2025-01-15T12:34:56Z.json"
        );
        assert_eq!(
            invalid_archive_key("2026-01-01T00:00:00.123Z"),
            "manifests/invalid-2026-01-01T00:00:00.123Z.json"
        );
        assert_eq!(host_status_key("biz"), "hosts/biz.json");
        assert_eq!(
            narinfo_key("/nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello-2.12").as_deref(),
            Some("0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo")
        );
        assert_eq!(narinfo_key("/tmp/x"), None);
    }
}
