//! What the pusher is willing to sign: a manifest from the bucket (the live one `push`
//! edits, the archived one `rollback` re-signs) only when it carries a valid signature by
//! the signer's own key or a key listed in `trusted_keys` of the developer's config file.
//! Anyone who can write to the bucket could otherwise have ferry sign their services.
//! `--force` signs anyway, after printing the services that no trusted key vouched for.

use anyhow::{Context, Result};
use ferry_bucket::Bucket;
use ferry_schema::layout::{MANIFEST_KEY, archive_key};
use ferry_schema::{Manifest, PublicKey, SecretKey, verify_manifest};

use crate::live_manifest::{archived_generations, read};
use crate::manifest_edit::service_changes;
use crate::settings::ConfigFile;

/// How many archived manifests, newest first, are searched for one a trusted key signed
/// (the reference a `--force` diff is shown against).
const REFERENCE_SEARCH: usize = 20;

/// The keys whose manifest signatures the pusher accepts.
#[derive(Debug, Clone)]
pub struct Trusted {
    keys: Vec<PublicKey>,
}

impl Trusted {
    /// The signer's own public key and the config file's `trusted_keys`.
    pub fn new(own: &SecretKey, config: &ConfigFile) -> Result<Self> {
        let mut keys = vec![own.public()];
        for (i, text) in config.trusted_keys.iter().flatten().enumerate() {
            let key = PublicKey::parse(text).with_context(|| {
                format!(
                    "trusted_keys[{i}] in the config file ({text:?}): expected a public key `name:base64`, as `ferry keygen` writes it"
                )
            })?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The name of the trusted key that signed `m`, or why none did.
    pub fn check(&self, m: &Manifest) -> std::result::Result<String, String> {
        verify_manifest(m, &self.keys).map_err(|e| e.to_string())
    }

    /// The public keys (the first is the signer's own).
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

/// The refusal of signing `what` (a bucket key), with `why` no trusted key vouches for it.
pub fn refusal(what: &str, why: &str) -> String {
    format!(
        "{what} is not signed by a trusted key ({why}); ferry signs only manifests it can verify. If you know where it came from, pass --force to sign it anyway (the services it would sign are shown first), or add its signer's public key to `trusted_keys` in ~/.config/ferry/config.toml"
    )
}

/// The newest manifest a trusted key signed, among the live one and the newest archived
/// ones (`skip`: a key not to take, the document in question): (its key, it).
pub async fn newest_trusted(
    bucket: &impl Bucket,
    trusted: &Trusted,
    skip: &str,
) -> Result<Option<(String, Manifest)>> {
    let mut keys = vec![MANIFEST_KEY.to_owned()];
    keys.extend(
        archived_generations(bucket)
            .await?
            .iter()
            .take(REFERENCE_SEARCH)
            .map(|g| archive_key(g)),
    );
    for key in keys.into_iter().filter(|k| k != skip) {
        // An archive that does not parse cannot be the reference; look further.
        let Ok(Some(live)) = read(bucket, &key).await else {
            continue;
        };
        if trusted.check(&live.manifest).is_ok() {
            return Ok(Some((key, live.manifest)));
        }
    }
    Ok(None)
}

/// The lines `--force` prints before signing `new`: what it signs compared with the newest
/// trusted manifest (`reference`), or every service when there is none.
pub fn forced_diff(reference: Option<&(String, Manifest)>, new: &Manifest) -> Vec<String> {
    let mut lines = vec![match reference {
        Some((key, _)) => format!(
            "--force: signing what no trusted key signed; its services compared with {key}, the newest manifest a trusted key signed:"
        ),
        None => format!(
            "--force: signing what no trusted key signed; no manifest among the live one and the newest {REFERENCE_SEARCH} archived is signed by a trusted key, so every service is listed:"
        ),
    }];
    let changes = service_changes(reference.map(|(_, m)| m), new);
    if changes.is_empty() {
        lines.push("  (no service-level change)".to_owned());
    }
    lines.extend(changes.into_iter().map(|l| format!("  {l}")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::sign_manifest;

    const EXAMPLE: &str = include_str!("../../schema/tests/fixtures/example.json");

    #[test]
    fn own_and_configured_keys_are_trusted_others_not() {
        let own = SecretKey::generate("own-1").unwrap();
        let colleague = SecretKey::generate("colleague-1").unwrap();
        let stranger = SecretKey::generate("stranger-1").unwrap();
        let config = ConfigFile {
            trusted_keys: Some(vec![colleague.public().to_nix_string()]),
            ..ConfigFile::default()
        };
        let trusted = Trusted::new(&own, &config).unwrap();
        let mut m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        m.signatures = None;
        let unsigned = trusted.check(&m).unwrap_err();
        assert!(unsigned.contains("not signed"), "{unsigned}");
        for (key, ok) in [(&own, true), (&colleague, true), (&stranger, false)] {
            let mut signed = m.clone();
            sign_manifest(&mut signed, key).unwrap();
            assert_eq!(trusted.check(&signed).is_ok(), ok, "{}", key.name());
        }
        let bad = ConfigFile {
            trusted_keys: Some(vec!["nonsense".into()]),
            ..ConfigFile::default()
        };
        let err = format!("{:#}", Trusted::new(&own, &bad).unwrap_err());
        assert!(err.contains("trusted_keys[0]"), "{err}");
    }

    #[test]
    fn the_forced_diff_lists_what_no_trusted_key_signed() {
        let m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        let mut extra = m.clone();
        let mut evil = extra.services[0].clone();
        evil.name = "evil".into();
        extra.services.push(evil);
        let reference = ("manifest.json".to_owned(), m.clone());
        let lines = forced_diff(Some(&reference), &extra);
        assert!(
            lines[0].contains("compared with manifest.json"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "  + evil (/nix/store/abc123-podcastitlater-web-1.2.3)"
        );
        let all = forced_diff(None, &extra);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(
            forced_diff(Some(&reference), &m)[1],
            "  (no service-level change)"
        );
        assert!(refusal("manifests/x.json", "unsigned").contains("--force"));
    }
}
