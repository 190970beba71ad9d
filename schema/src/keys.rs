//! Ed25519 keys and detached signatures in Nix's `name:base64` format, so the key that signs
//! closures (`nix-store --generate-binary-cache-key`) also signs manifests.
//!
//! A secret key is 64 bytes (seed then public key, as libsodium lays it out), a public key
//! 32 bytes, a signature 64 bytes; all standard base64 with padding.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

/// What is wrong with a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// No `name:` prefix.
    #[error(
        "expected `name:base64`, found no `:`; key files look like `cache.example.org-1:AbC…=`"
    )]
    MissingName,
    /// The name part is empty or contains whitespace or control characters.
    #[error("key name `{0}` is not usable: use a non-empty name without whitespace or `:`")]
    BadName(String),
    /// The part after `:` is not base64.
    #[error("the part after `{name}:` is not valid base64: {reason}")]
    BadBase64 {
        /// Key or signature name.
        name: String,
        /// Decoder message.
        reason: String,
    },
    /// Decoded to the wrong number of bytes.
    #[error(
        "`{name}`: expected {expected} bytes for {what}, found {found}; is this the right file (secret vs public key)?"
    )]
    WrongLength {
        /// Key or signature name.
        name: String,
        /// What was being decoded.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// The public half stored in a secret key does not belong to its seed.
    #[error("secret key `{0}` is corrupt: its public half does not match its seed")]
    Inconsistent(String),
    /// A public key's bytes are not a valid curve point.
    #[error("public key `{0}` is not a valid ed25519 point")]
    BadPoint(String),
    /// The signature was made by a key with another name.
    #[error("signature is by key `{found}`, not `{expected}`")]
    NameMismatch {
        /// The verifying key's name.
        expected: String,
        /// The signature's key name.
        found: String,
    },
    /// The signature does not match the message under this key.
    #[error(
        "signature by `{0}` does not match: the signed data changed, or another key with the same name signed it"
    )]
    Mismatch(String),
    /// The operating system's random number generator failed.
    #[error("could not get random bytes for a new key: {0}")]
    Random(String),
}

/// An ed25519 secret key with its Nix key name.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

/// An ed25519 public key with its Nix key name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

/// Splits `name:base64` and decodes the base64 part to exactly `N` bytes.
fn decode_named<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<(String, [u8; N]), KeyError> {
    let s = s.trim();
    let (name, b64) = s.split_once(':').ok_or(KeyError::MissingName)?;
    check_name(name)?;
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|e| KeyError::BadBase64 {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    let found = bytes.len();
    let array: [u8; N] = bytes.try_into().map_err(|_| KeyError::WrongLength {
        name: name.to_owned(),
        what,
        expected: N,
        found,
    })?;
    Ok((name.to_owned(), array))
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(KeyError::BadName(name.escape_debug().to_string()));
    }
    Ok(())
}

impl SecretKey {
    /// Parses the contents of a secret key file (`name:base64` of 64 bytes; surrounding
    /// whitespace ignored).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = decode_named::<64>(s, "an ed25519 secret key")?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Inconsistent(name.clone()))?;
        Ok(Self { name, key })
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key (same name).
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg`; returns `name:base64(signature)` as Nix writes it in `Sig:` lines.
    pub fn sign_detached(&self, msg: &[u8]) -> String {
        let sig = self.key.sign(msg);
        format!("{}:{}", self.name, STANDARD.encode(sig.to_bytes()))
    }

    /// The key file contents, `name:base64` of seed and public key (no newline), as
    /// `nix-store --generate-binary-cache-key` writes it.
    pub fn to_nix_string(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            STANDARD.encode(self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    // Never print the secret, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses a public key (`name:base64` of 32 bytes; surrounding whitespace ignored), as in
    /// a public key file or Nix's `trusted-public-keys`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = decode_named::<32>(s, "an ed25519 public key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint(name.clone()))?;
        Ok(Self { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a `name:base64` signature of `msg`. The signature's name must be this key's.
    pub fn verify_detached(&self, msg: &[u8], sig: &str) -> Result<(), KeyError> {
        let (name, bytes) = decode_named::<64>(sig, "an ed25519 signature")?;
        if name != self.name {
            return Err(KeyError::NameMismatch {
                expected: self.name.clone(),
                found: name,
            });
        }
        let signature = Signature::from_bytes(&bytes);
        self.key
            .verify_strict(msg, &signature)
            .map_err(|_| KeyError::Mismatch(name))
    }

    /// The key file contents, `name:base64` (no newline).
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

/// The key name of a `name:base64` signature, if it has one.
pub fn signature_key_name(sig: &str) -> Option<&str> {
    sig.split_once(':').map(|(name, _)| name)
}

/// Checks that `sig` is shaped like a signature (`name:` and 64 base64-encoded bytes)
/// without verifying it.
pub fn check_signature_format(sig: &str) -> Result<(), KeyError> {
    decode_named::<64>(sig, "an ed25519 signature").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_round_trip() {
        let sk = SecretKey::generate("test-1").unwrap();
        let pk = sk.public();
        let sig = sk.sign_detached(b"hello");
        assert!(sig.starts_with("test-1:"));
        pk.verify_detached(b"hello", &sig).unwrap();
        assert!(matches!(
            pk.verify_detached(b"hellO", &sig),
            Err(KeyError::Mismatch(_))
        ));

        let sk2 = SecretKey::parse(&sk.to_nix_string()).unwrap();
        assert_eq!(sk2.public(), pk);
        let pk2 = PublicKey::parse(&format!("{}\n", pk.to_nix_string())).unwrap();
        assert_eq!(pk2, pk);
    }

    #[test]
    fn wrong_name_and_lengths_are_reported() {
        let sk = SecretKey::generate("a").unwrap();
        let other = SecretKey::generate("b").unwrap();
        let sig = other.sign_detached(b"m");
        assert!(matches!(
            sk.public().verify_detached(b"m", &sig),
            Err(KeyError::NameMismatch { .. })
        ));
        // A public key given where a secret key is expected.
        assert!(matches!(
            SecretKey::parse(&sk.public().to_nix_string()),
            Err(KeyError::WrongLength {
                expected: 64,
                found: 32,
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse("nocolon"),
            Err(KeyError::MissingName)
        ));
        assert!(matches!(
            PublicKey::parse(":AAAA"),
            Err(KeyError::BadName(_))
        ));
        assert!(matches!(
            PublicKey::parse("k:!!!"),
            Err(KeyError::BadBase64 { .. })
        ));
        assert!(SecretKey::generate("bad name").is_err());
    }

    #[test]
    fn truncated_signature_is_rejected() {
        let sk = SecretKey::generate("k").unwrap();
        let sig = sk.sign_detached(b"m");
        let truncated = &sig[..sig.len() - 4];
        assert!(sk.public().verify_detached(b"m", truncated).is_err());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let sk = SecretKey::generate("k").unwrap();
        let secret_b64 = sk.to_nix_string();
        let secret_b64 = secret_b64.split_once(':').unwrap().1;
        assert!(!format!("{sk:?}").contains(secret_b64));
    }
}
