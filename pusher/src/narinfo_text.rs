//! Rendering a signed `.narinfo` (Nix's binary-cache metadata for one store path), and
//! checking one found in the bucket. Pure: the signature covers ferry-schema's
//! fingerprint of the path, NarHash, NarSize and references, exactly what Nix checks
//! against `trusted-public-keys`.

use ferry_schema::narinfo::fingerprint;
use ferry_schema::{PublicKey, SecretKey};

use ferry_schema::path_info::PathInfo;

/// What uploading a NAR produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedNar {
    /// Object key relative to the cache root, e.g. `nar/<filehash>.nar.zst`.
    pub url: String,
    /// `Compression:` value (`zstd`, `xz`, `none`).
    pub compression: &'static str,
    /// `sha256:<nix base-32>` of the compressed file.
    pub file_hash: String,
    /// Size of the compressed file.
    pub file_size: u64,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The narinfo text for `info` stored as `nar`, signed with `key`.
pub fn render(info: &PathInfo, nar: &UploadedNar, key: &SecretKey) -> String {
    let sig = key.sign_detached(
        fingerprint(&info.path, &info.nar_hash, info.nar_size, &info.references).as_bytes(),
    );
    let mut refs: Vec<&str> = info.references.iter().map(|r| base_name(r)).collect();
    refs.sort_unstable();
    let mut text = format!(
        "StorePath: {}\nURL: {}\nCompression: {}\nFileHash: {}\nFileSize: {}\nNarHash: {}\nNarSize: {}\nReferences: {}\n",
        info.path,
        nar.url,
        nar.compression,
        nar.file_hash,
        nar.file_size,
        info.nar_hash,
        info.nar_size,
        refs.join(" "),
    );
    if let Some(deriver) = &info.deriver {
        text.push_str(&format!("Deriver: {}\n", base_name(deriver)));
    }
    text.push_str(&format!("Sig: {sig}\n"));
    if let Some(ca) = &info.ca {
        text.push_str(&format!("CA: {ca}\n"));
    }
    text
}

/// Whether narinfo `text` describes `store_path` and carries a valid signature by one of
/// `keys` over its own fields, so that a Nix trusting those keys accepts it. A narinfo
/// that is planted, unsigned, signed by a key no longer in use, or for another path is not.
pub fn signed_by(text: &str, store_path: &str, keys: &[PublicKey]) -> bool {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(str::trim)
    };
    let (Some(path), Some(nar_hash), Some(nar_size)) =
        (field("StorePath"), field("NarHash"), field("NarSize"))
    else {
        return false;
    };
    let Ok(nar_size) = nar_size.parse::<u64>() else {
        return false;
    };
    if path != store_path {
        return false;
    }
    let references: Vec<String> = field("References")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let message = fingerprint(path, nar_hash, nar_size, &references);
    text.lines()
        .filter_map(|l| l.strip_prefix("Sig:").map(str::trim))
        .any(|sig| {
            keys.iter()
                .any(|k| k.verify_detached(message.as_bytes(), sig).is_ok())
        })
}

/// The `nix-cache-info` Ferry writes when the bucket has none.
pub const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_field_and_a_signature_nix_would_check() {
        let key = SecretKey::generate("test-1").unwrap();
        let info = PathInfo {
            path: "/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1".into(),
            nar_hash: "sha256:1abc".into(),
            nar_size: 720,
            references: vec![
                "/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1".into(),
                "/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1".into(),
            ],
            deriver: Some("/nix/store/z2ds-ferry-testlib-1.drv".into()),
            ca: None,
            signatures: Vec::new(),
        };
        let nar = UploadedNar {
            url: "nar/0f00.nar.zst".into(),
            compression: "zstd",
            file_hash: "sha256:0f00".into(),
            file_size: 300,
        };
        let text = render(&info, &nar, &key);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "StorePath: /nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1"
        );
        assert_eq!(lines[1], "URL: nar/0f00.nar.zst");
        assert_eq!(lines[2], "Compression: zstd");
        assert_eq!(lines[3], "FileHash: sha256:0f00");
        assert_eq!(lines[4], "FileSize: 300");
        assert_eq!(lines[5], "NarHash: sha256:1abc");
        assert_eq!(lines[6], "NarSize: 720");
        assert_eq!(
            lines[7],
            "References: gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1 p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1"
        );
        assert_eq!(lines[8], "Deriver: z2ds-ferry-testlib-1.drv");
        let sig = lines[9].strip_prefix("Sig: ").unwrap();
        let msg = fingerprint(&info.path, &info.nar_hash, info.nar_size, &info.references);
        key.public().verify_detached(msg.as_bytes(), sig).unwrap();
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn only_a_narinfo_signed_by_a_trusted_key_for_its_path_counts() {
        let key = SecretKey::generate("test-1").unwrap();
        let old = SecretKey::generate("test-0").unwrap();
        let info = PathInfo {
            path: "/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1".into(),
            nar_hash: "sha256:1abc".into(),
            nar_size: 720,
            references: vec!["/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1".into()],
            deriver: None,
            ca: None,
            signatures: Vec::new(),
        };
        let nar = UploadedNar {
            url: "nar/0f00.nar.zst".into(),
            compression: "zstd",
            file_hash: "sha256:0f00".into(),
            file_size: 300,
        };
        let keys = [key.public()];
        let good = render(&info, &nar, &key);
        assert!(signed_by(&good, &info.path, &keys));
        // Signed by a key that is not (any more) trusted.
        assert!(!signed_by(&render(&info, &nar, &old), &info.path, &keys));
        // Both signatures: one good one is enough.
        let both = format!(
            "{good}{}",
            render(&info, &nar, &old)
                .lines()
                .find(|l| l.starts_with("Sig:"))
                .unwrap()
        );
        assert!(signed_by(&both, &info.path, &keys));
        // No signature; a field changed after signing; another path's narinfo.
        let unsigned: String = good
            .lines()
            .filter(|l| !l.starts_with("Sig:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!signed_by(&unsigned, &info.path, &keys));
        assert!(!signed_by(
            &good.replace("NarSize: 720", "NarSize: 721"),
            &info.path,
            &keys
        ));
        assert!(!signed_by(
            &good,
            "/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1",
            &keys
        ));
        assert!(!signed_by("garbage", &info.path, &keys));
    }
}
