//! Manifest signatures: ed25519 over the RFC 8785 (JCS) canonical JSON of the manifest
//! without its `signatures` field, in Nix's `name:base64` format.
//!
//! The canonical form is taken of the typed manifest, so key order, whitespace and absent
//! versus `null` optional fields do not change what is signed.

use thiserror::Error;

use crate::keys::{KeyError, PublicKey, SecretKey, signature_key_name};
use crate::manifest::Manifest;

/// The manifest could not be put in canonical form.
#[derive(Debug, Error)]
pub enum SignError {
    /// Serialising to canonical JSON failed (cannot happen for a well-formed manifest).
    #[error("could not serialise the manifest to canonical JSON: {0}")]
    Canonical(#[from] serde_json::Error),
}

/// Why a manifest's signatures are not accepted.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// Nothing to check against.
    #[error("no trusted keys given: pass the public key that signs manifests")]
    NoTrustedKeys,
    /// The manifest has no signatures.
    #[error("the manifest is not signed: sign it with `ferry sign MANIFEST --key-file SECRET_KEY`")]
    Unsigned,
    /// Signatures exist but none is valid under a trusted key.
    #[error("no valid signature by a trusted key: {}", .reasons.join("; "))]
    NoValidSignature {
        /// One reason per signature.
        reasons: Vec<String>,
    },
    /// Canonicalisation failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// The bytes a manifest signature covers: RFC 8785 canonical JSON of `m` without
/// `signatures`.
pub fn canonical_bytes(m: &Manifest) -> Result<Vec<u8>, SignError> {
    let unsigned = Manifest {
        signatures: None,
        ..m.clone()
    };
    Ok(serde_json_canonicalizer::to_vec(&unsigned)?)
}

/// Signs `m` with `key`, replacing an earlier signature by a key with the same name and
/// keeping the others.
pub fn sign_manifest(m: &mut Manifest, key: &SecretKey) -> Result<(), SignError> {
    let sig = key.sign_detached(&canonical_bytes(m)?);
    let mut signatures = m.signatures.take().unwrap_or_default();
    signatures.retain(|s| signature_key_name(s) != Some(key.name()));
    signatures.push(sig);
    m.signatures = Some(signatures);
    Ok(())
}

/// Checks that `m` carries a valid signature by one of `trusted`; returns that key's name.
/// A signature is matched by its key name and then checked under every trusted key of that
/// name.
pub fn verify_manifest(m: &Manifest, trusted: &[PublicKey]) -> Result<String, VerifyError> {
    if trusted.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    let signatures = m.signatures.as_deref().unwrap_or_default();
    if signatures.is_empty() {
        return Err(VerifyError::Unsigned);
    }
    let msg = canonical_bytes(m)?;
    let mut reasons = Vec::new();
    for sig in signatures {
        let name = signature_key_name(sig).unwrap_or_default();
        // Every trusted key of that name is tried: rotating a key under the same name
        // trusts the old and the new one at once, and neither may shadow the other.
        let named: Vec<&PublicKey> = trusted.iter().filter(|k| k.name() == name).collect();
        if named.is_empty() {
            reasons.push(format!(
                "signature by `{}` is not from a trusted key (trusted: {})",
                name.escape_debug(),
                trusted_names(trusted)
            ));
            continue;
        }
        let mut mismatch = None;
        for key in &named {
            match key.verify_detached(&msg, sig) {
                Ok(()) => return Ok(key.name().to_owned()),
                Err(e @ (KeyError::Mismatch(_) | KeyError::NameMismatch { .. })) => {
                    mismatch = Some(e.to_string());
                }
                Err(e) => {
                    mismatch = None;
                    reasons.push(format!(
                        "signature by `{}` is malformed: {e}",
                        name.escape_debug()
                    ));
                    break;
                }
            }
        }
        match (mismatch, named.len()) {
            (None, _) => {}
            (Some(one), 1) => reasons.push(one),
            (Some(_), n) => reasons.push(format!(
                "signature by `{}` matches none of the {n} trusted keys named `{}`: the signed \
                 data changed, or another key with that name signed it",
                name.escape_debug(),
                name.escape_debug()
            )),
        }
    }
    Err(VerifyError::NoValidSignature { reasons })
}

fn trusted_names(trusted: &[PublicKey]) -> String {
    trusted
        .iter()
        .map(|k| format!("`{}`", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}
