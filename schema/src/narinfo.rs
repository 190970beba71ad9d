//! Pure pieces of Nix's binary cache format: the fingerprint a narinfo signature covers.

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
}
