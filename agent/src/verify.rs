//! Verify step: decide whether a fetched manifest may be applied — size cap, schema and
//! semantic validation, signatures against the trusted manifest keys, then host policy.
//! Pure: every reason to refuse is collected, so a refusal says everything at once.

use ferry_schema::{Manifest, PublicKey};

use crate::policy::HostPolicy;

/// A manifest this host accepts.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The manifest.
    pub manifest: Manifest,
    /// Validation warnings (applied anyway).
    pub warnings: Vec<String>,
    /// Name of the key whose signature was checked, when keys are configured.
    pub signed_by: Option<String>,
}

/// Check `bytes` as a manifest for this host. `manifest_keys` empty means signatures are not
/// required; otherwise a valid signature by one of them is.
pub fn verify(
    bytes: &[u8],
    size_cap: usize,
    manifest_keys: &[String],
    policy: Option<&HostPolicy>,
) -> Result<Accepted, Vec<String>> {
    let validated = match ferry_schema::validate_bytes(bytes, size_cap) {
        Ok(v) => v,
        Err(problems) => {
            return Err(problems
                .iter()
                .filter(|p| p.is_error())
                .map(|p| format!("manifest {p}"))
                .collect());
        }
    };
    let mut reasons = Vec::new();
    let mut signed_by = None;
    if !manifest_keys.is_empty() {
        let mut keys = Vec::with_capacity(manifest_keys.len());
        for k in manifest_keys {
            match PublicKey::parse(k) {
                Ok(key) => keys.push(key),
                Err(e) => reasons.push(format!("manifestKeys entry {k:?} in agent.toml: {e}")),
            }
        }
        match ferry_schema::verify_manifest(&validated.manifest, &keys) {
            Ok(name) => signed_by = Some(name),
            Err(e) => reasons.push(format!("signature: {e}")),
        }
    }
    if let Some(policy) = policy {
        reasons.extend(policy.check(&validated.manifest));
    }
    if !reasons.is_empty() {
        return Err(reasons);
    }
    Ok(Accepted {
        manifest: validated.manifest,
        warnings: validated.warnings.iter().map(ToString::to_string).collect(),
        signed_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::SecretKey;

    const EXAMPLE: &str = include_str!("../../schema/tests/fixtures/example.json");

    fn policy() -> HostPolicy {
        HostPolicy {
            host: "biz".into(),
            secrets_dir: "/var/lib/biz-secrets".into(),
            allow_root: false,
        }
    }

    #[test]
    fn accepts_example_without_keys() {
        let a = verify(EXAMPLE.as_bytes(), 1 << 20, &[], Some(&policy())).unwrap();
        assert_eq!(a.manifest.services.len(), 1);
        assert_eq!(a.signed_by, None);
    }

    #[test]
    fn signatures_required_when_keys_configured() {
        let key = SecretKey::generate("dev").unwrap();
        let trusted = vec![key.public().to_nix_string()];
        let err = verify(EXAMPLE.as_bytes(), 1 << 20, &trusted, Some(&policy())).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("not signed"), "{err:?}");

        let mut m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        ferry_schema::sign_manifest(&mut m, &key).unwrap();
        let signed = serde_json::to_vec(&m).unwrap();
        let a = verify(&signed, 1 << 20, &trusted, Some(&policy())).unwrap();
        assert_eq!(a.signed_by.as_deref(), Some("dev"));

        m.services[0].env.insert("X".into(), "tampered".into());
        let tampered = serde_json::to_vec(&m).unwrap();
        assert!(verify(&tampered, 1 << 20, &trusted, Some(&policy())).is_err());
    }

    #[test]
    fn all_reasons_are_reported() {
        let other = HostPolicy {
            secrets_dir: "/elsewhere".into(),
            ..policy()
        };
        let key = SecretKey::generate("dev").unwrap();
        let trusted = vec![key.public().to_nix_string()];
        let err = verify(EXAMPLE.as_bytes(), 1 << 20, &trusted, Some(&other)).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        let err = verify(b"{\"version\":1}", 1 << 20, &[], None).unwrap_err();
        assert!(!err.is_empty());
        let err = verify(EXAMPLE.as_bytes(), 10, &[], None).unwrap_err();
        assert!(err[0].contains("size cap"), "{err:?}");
    }
}
