//! Pure pieces of Nix's binary cache format: the fingerprint a narinfo signature covers, and
//! the fields that link a narinfo to its NAR and to its references.

use crate::names::STORE_DIR;

/// The text Nix signs for a narinfo:
/// `1;<storePath>;<narHash>;<narSize>;<sorted full reference paths, comma-joined>`.
///
/// `references` may be base names (as a narinfo's `References:` line lists them) or full
/// paths; both give the same fingerprint.
pub fn fingerprint(
    store_path: &str,
    nar_hash: &str,
    nar_size: u64,
    references: &[String],
) -> String {
    let mut full: Vec<String> = references
        .iter()
        .map(|r| {
            if r.starts_with('/') {
                r.clone()
            } else {
                format!("{STORE_DIR}/{r}")
            }
        })
        .collect();
    full.sort();
    format!("1;{store_path};{nar_hash};{nar_size};{}", full.join(","))
}

/// What a narinfo says about where its NAR is and what it references: enough to walk a
/// closure through a binary cache. Nothing here is checked against a signature: it is a
/// reader's hint (the agent's cache proxy fetches ahead with it; Nix checks what it gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfoLinks {
    /// `StorePath:`, the full path.
    pub store_path: String,
    /// `URL:`, the NAR's key relative to the cache root.
    pub url: String,
    /// `FileSize:`, the size of the (compressed) NAR file, when given.
    pub file_size: Option<u64>,
    /// `References:`, base names (`<hash>-<name>`).
    pub references: Vec<String>,
}

/// Reads the linking fields of a narinfo; `None` when `StorePath:` or `URL:` is missing or a
/// field appears twice (Nix would refuse such a narinfo too).
pub fn links(text: &str) -> Option<NarInfoLinks> {
    let (mut store_path, mut url, mut file_size, mut references) = (None, None, None, None);
    for line in text.lines() {
        let Some((field, value)) = line.split_once(": ") else {
            continue;
        };
        let slot = match field {
            "StorePath" => &mut store_path,
            "URL" => &mut url,
            "FileSize" => &mut file_size,
            "References" => &mut references,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some(NarInfoLinks {
        store_path: store_path?.to_owned(),
        url: url?.to_owned(),
        file_size: match file_size {
            Some(size) => Some(size.parse().ok()?),
            None => None,
        },
        references: references
            .map(|r| r.split_ascii_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sorts_and_expands_references() {
        let fp = fingerprint(
            "/nix/store/bbbb-hello",
            "sha256:1abc",
            1234,
            &["cccc-glibc".to_owned(), "/nix/store/aaaa-libidn".to_owned()],
        );
        assert_eq!(
            fp,
            "1;/nix/store/bbbb-hello;sha256:1abc;1234;/nix/store/aaaa-libidn,/nix/store/cccc-glibc"
        );
    }

    #[test]
    fn fingerprint_without_references_ends_in_semicolon() {
        assert_eq!(
            fingerprint("/nix/store/x-y", "sha256:0", 8, &[]),
            "1;/nix/store/x-y;sha256:0;8;"
        );
    }

    #[test]
    fn links_reads_path_url_size_and_references() {
        let text = "StorePath: /nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello\n\
URL: nar/1w1f.nar.zst\nCompression: zstd\nFileSize: 1234\nNarHash: sha256:1abc\n\
NarSize: 4000\nReferences: 0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello aaaa-glibc\nSig: k:s\n";
        assert_eq!(
            links(text),
            Some(NarInfoLinks {
                store_path: "/nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello".into(),
                url: "nar/1w1f.nar.zst".into(),
                file_size: Some(1234),
                references: vec![
                    "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello".into(),
                    "aaaa-glibc".into()
                ],
            })
        );
    }

    #[test]
    fn links_without_references_or_size() {
        let got = links("StorePath: /nix/store/x-y\nURL: nar/x.nar\nReferences: \n");
        assert_eq!(
            got.map(|l| (l.file_size, l.references)),
            Some((None, vec![]))
        );
    }

    #[test]
    fn links_refuses_missing_or_repeated_fields_and_bad_sizes() {
        for text in [
            "URL: nar/x.nar\n",
            "StorePath: /nix/store/x-y\n",
            "StorePath: /nix/store/x-y\nURL: nar/x.nar\nURL: nar/z.nar\n",
            "StorePath: /nix/store/x-y\nURL: nar/x.nar\nFileSize: -1\n",
            "StorePath: /nix/store/x-y\nURL: nar/x.nar\nFileSize: 99999999999999999999999\n",
        ] {
            assert_eq!(links(text), None, "{text:?}");
        }
    }
}
