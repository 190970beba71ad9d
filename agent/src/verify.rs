//! Verify step: decide whether a manifest may be applied at all — size cap, schema and
//! semantic validation, a signature by a trusted manifest key, not an older generation than
//! the last one applied (unless rollback by copy is allowed), and not emptying a host that runs
//! services unless it says so (`decommission`).
//! These refuse the manifest whole; what a signed manifest may do on this host is decided
//! service by service afterwards (`policy`). The stored manifest a 304 re-applies goes
//! through the same checks again ([`recheck`]), so a tightened agent.toml takes effect on
//! the next tick. Pure: every reason to refuse is collected, so a refusal says everything at
//! once.

use ferry_schema::{Manifest, PublicKey};

use crate::generation;
use crate::policy::{HostPolicy, Running};

/// A manifest this host accepts.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The manifest.
    pub manifest: Manifest,
    /// Validation warnings (applied anyway).
    pub warnings: Vec<String>,
    /// Name of the key whose signature was checked; `None` when unsigned manifests are
    /// allowed.
    pub signed_by: Option<String>,
}

/// Whose manifests this host applies, from agent.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// `manifestKeys`: a manifest needs a valid signature by one of them.
    pub manifest_keys: Vec<String>,
    /// `allowUnsignedManifests`: with no `manifestKeys`, apply manifests unchecked.
    pub allow_unsigned: bool,
    /// `rollbackByCopy`: apply a generation older than the last one applied.
    pub rollback_by_copy: bool,
}

impl Trust {
    /// When this configuration refuses every manifest (no keys, and unsigned manifests not
    /// allowed), the one line that says so and what to set.
    pub fn refuses_everything(&self) -> Option<String> {
        (self.manifest_keys.is_empty() && !self.allow_unsigned).then(|| {
            "every manifest is refused: manifestKeys in agent.toml is empty, so no signature \
             can be checked; set manifestKeys to the public key that signs manifest.json (the \
             one `ferry keygen` printed), or allowUnsignedManifests = true to run unsigned \
             manifests (anyone who can write to the bucket then runs code here); restoring \
             services from state"
                .to_owned()
        })
    }
}

/// Check `bytes` as a manifest for this host. `last_generation` is the generation of the
/// manifest last applied here, if any.
pub fn verify(
    bytes: &[u8],
    size_cap: usize,
    trust: &Trust,
    host: Option<(&HostPolicy, &Running)>,
    last_generation: Option<&str>,
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
    let signed_by = check(&validated.manifest, trust, host, &mut reasons);
    if let Some(last) = last_generation
        && !trust.rollback_by_copy
        && generation::is_older(&validated.manifest.generation, last)
    {
        reasons.push(format!(
            "generation {} is older than {last}, the last one applied here, and rollbackByCopy \
             = false in agent.toml: an archived manifest copied back is not applied; roll back \
             with `ferry rollback`, which publishes the old content as a new generation",
            validated.manifest.generation
        ));
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

/// Check again a manifest accepted earlier (the stored one a 304 re-applies) against the
/// current keys and whole-manifest rules.
pub fn recheck(
    manifest: &Manifest,
    trust: &Trust,
    host: Option<(&HostPolicy, &Running)>,
) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    check(manifest, trust, host, &mut reasons);
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Signature and whole-manifest host rules; returns the signing key's name.
fn check(
    manifest: &Manifest,
    trust: &Trust,
    host: Option<(&HostPolicy, &Running)>,
    reasons: &mut Vec<String>,
) -> Option<String> {
    let mut signed_by = None;
    if let Some(line) = trust.refuses_everything() {
        reasons.push(line);
    } else if !trust.manifest_keys.is_empty() {
        // An entry that does not parse is refused when agent.toml is loaded; should one get
        // here anyway it only counts when no other key verifies, so it cannot block them.
        let mut keys = Vec::with_capacity(trust.manifest_keys.len());
        let mut unusable = Vec::new();
        for k in &trust.manifest_keys {
            match PublicKey::parse(k) {
                Ok(key) => keys.push(key),
                Err(e) => unusable.push(format!("manifestKeys entry {k:?} in agent.toml: {e}")),
            }
        }
        match ferry_schema::verify_manifest(manifest, &keys) {
            Ok(name) => signed_by = Some(name),
            Err(e) => {
                reasons.extend(unusable);
                reasons.push(format!("signature: {e}"));
            }
        }
    }
    if let Some((policy, running)) = host {
        reasons.extend(policy.check_manifest(manifest, running));
    }
    signed_by
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
            identity: Default::default(),
            allowed_units: Default::default(),
            domains: vec!["*".into()],
            ports: crate::config::PortRange {
                first: 1,
                last: 65535,
            },
            write_prefixes: Vec::new(),
            own_dirs: Vec::new(),
        }
    }

    /// A host that runs a Ferry service.
    fn runs() -> Running {
        Ok(["web".to_owned()].into())
    }

    fn unsigned_ok() -> Trust {
        Trust {
            allow_unsigned: true,
            rollback_by_copy: true,
            ..Trust::default()
        }
    }

    fn signed(key: &SecretKey, generation: &str) -> Vec<u8> {
        let mut m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
        m.generation = generation.into();
        ferry_schema::sign_manifest(&mut m, key).unwrap();
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn no_keys_refuses_everything_unless_unsigned_is_allowed() {
        let none = Trust::default();
        let err = verify(
            EXAMPLE.as_bytes(),
            1 << 20,
            &none,
            Some((&policy(), &runs())),
            None,
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].contains("manifestKeys") && err[0].contains("allowUnsignedManifests = true"),
            "{err:?}"
        );
        let a = verify(
            EXAMPLE.as_bytes(),
            1 << 20,
            &unsigned_ok(),
            Some((&policy(), &runs())),
            None,
        )
        .unwrap();
        assert_eq!(a.manifest.services.len(), 1);
        assert_eq!(a.signed_by, None);
    }

    #[test]
    fn signatures_required_when_keys_configured_even_if_unsigned_is_allowed() {
        let key = SecretKey::generate("dev").unwrap();
        let trust = Trust {
            manifest_keys: vec![key.public().to_nix_string()],
            ..unsigned_ok()
        };
        let err = verify(
            EXAMPLE.as_bytes(),
            1 << 20,
            &trust,
            Some((&policy(), &runs())),
            None,
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("not signed"), "{err:?}");

        let bytes = signed(&key, "2025-01-01T00:00:00Z");
        let a = verify(&bytes, 1 << 20, &trust, Some((&policy(), &runs())), None).unwrap();
        assert_eq!(a.signed_by.as_deref(), Some("dev"));

        let mut m: Manifest = serde_json::from_slice(&bytes).unwrap();
        m.services[0].env.insert("X".into(), "tampered".into());
        let tampered = serde_json::to_vec(&m).unwrap();
        let err = verify(&tampered, 1 << 20, &trust, Some((&policy(), &runs())), None).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("signature: no valid signature by a trusted key"),
            "{err:?}"
        );
    }

    #[test]
    fn rotated_keys_with_one_name_both_verify_and_a_bad_entry_shadows_nothing() {
        const G: &str = "2025-01-01T00:00:00Z";
        let old = SecretKey::generate("deploy").unwrap();
        let new = SecretKey::generate("deploy").unwrap();
        let trust = Trust {
            manifest_keys: vec![
                "deploy:AAAA".into(),
                old.public().to_nix_string(),
                new.public().to_nix_string(),
            ],
            ..Trust::default()
        };
        for key in [&old, &new] {
            let a = verify(
                &signed(key, G),
                1 << 20,
                &trust,
                Some((&policy(), &runs())),
                None,
            )
            .unwrap();
            assert_eq!(a.signed_by.as_deref(), Some("deploy"));
        }
        let stranger = SecretKey::generate("deploy").unwrap();
        let err = verify(&signed(&stranger, G), 1 << 20, &trust, None, None).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].contains("\"deploy:AAAA\""), "{err:?}");
        assert!(err[1].contains("none of the 2 trusted keys"), "{err:?}");
    }

    #[test]
    fn an_older_generation_is_refused_only_without_rollback_by_copy() {
        let key = SecretKey::generate("dev").unwrap();
        let mut trust = Trust {
            manifest_keys: vec![key.public().to_nix_string()],
            rollback_by_copy: true,
            ..Trust::default()
        };
        let old = signed(&key, "2025-01-01T00:00:00Z");
        let last = Some("2025-02-01T00:00:00Z");
        assert!(verify(&old, 1 << 20, &trust, None, last).is_ok());
        trust.rollback_by_copy = false;
        let err = verify(&old, 1 << 20, &trust, None, last).unwrap_err();
        assert!(
            err[0]
                .starts_with("generation 2025-01-01T00:00:00Z is older than 2025-02-01T00:00:00Z")
                && err[0].contains("ferry rollback"),
            "{err:?}"
        );
        // The same generation again (a re-upload) and newer ones pass.
        assert!(verify(&old, 1 << 20, &trust, None, Some("2025-01-01T00:00:00Z")).is_ok());
        assert!(verify(&old, 1 << 20, &trust, None, None).is_ok());
    }

    #[test]
    fn recheck_uses_the_current_keys_and_host() {
        let key = SecretKey::generate("dev").unwrap();
        let other = SecretKey::generate("other").unwrap();
        let m: Manifest = serde_json::from_slice(&signed(&key, "g")).unwrap();
        let trust = |k: &SecretKey| Trust {
            manifest_keys: vec![k.public().to_nix_string()],
            ..Trust::default()
        };
        assert!(recheck(&m, &trust(&key), Some((&policy(), &runs()))).is_ok());
        let err = recheck(&m, &trust(&other), Some((&policy(), &runs()))).unwrap_err();
        assert!(err[0].starts_with("signature:"), "{err:?}");
        let elsewhere = HostPolicy {
            host: "elsewhere".into(),
            ..policy()
        };
        let err = recheck(&m, &trust(&key), Some((&elsewhere, &runs()))).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("the manifest names no service for host \"elsewhere\""),
            "{err:?}"
        );
        let err = recheck(&m, &Trust::default(), None).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("every manifest is refused: manifestKeys in agent.toml is empty"),
            "{err:?}"
        );
    }

    #[test]
    fn all_reasons_are_reported() {
        let other = HostPolicy {
            host: "elsewhere".into(),
            ..policy()
        };
        let key = SecretKey::generate("dev").unwrap();
        let trust = Trust {
            manifest_keys: vec![key.public().to_nix_string()],
            ..Trust::default()
        };
        let err = verify(
            EXAMPLE.as_bytes(),
            1 << 20,
            &trust,
            Some((&other, &runs())),
            None,
        )
        .unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("signature: the manifest is not signed"),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("the manifest names no service for host \"elsewhere\""),
            "{err:?}"
        );
        // Schema problems come with the pointer to the field.
        let err = verify(b"{\"version\":1}", 1 << 20, &unsigned_ok(), None, None).unwrap_err();
        assert_eq!(
            err,
            [
                "manifest /generation: manifest: required field `generation` is missing; add it",
                "manifest /services: manifest: required field `services` is missing; add it",
            ]
        );
        let err = verify(EXAMPLE.as_bytes(), 10, &unsigned_ok(), None, None).unwrap_err();
        assert!(err[0].contains("size cap"), "{err:?}");
    }
}
