//! Rendering a signed `.narinfo` (Nix's binary-cache metadata for one store path). Pure:
//! the signature covers ferry-schema's fingerprint of the path, NarHash, NarSize and
//! references, exactly what Nix checks against `trusted-public-keys`.

use ferry_schema::SecretKey;
use ferry_schema::narinfo::fingerprint;

use crate::path_info::PathInfo;

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
}
