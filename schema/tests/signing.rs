//! Manifest signatures: sign/verify round trip and the tamper cases (changed field,
//! reordered keys, wrong key, truncated or malformed signature).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_schema::{
    Manifest, PublicKey, SecretKey, VerifyError, canonical_bytes, sign_manifest, verify_manifest,
};

const EXAMPLE: &str = include_str!("fixtures/example.json");

fn signed() -> (Manifest, SecretKey) {
    let key = SecretKey::generate("ferry-test-1").unwrap();
    let mut m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    sign_manifest(&mut m, &key).unwrap();
    (m, key)
}

#[test]
fn signed_manifest_verifies_and_names_the_key() {
    let (m, key) = signed();
    assert_eq!(
        verify_manifest(&m, &[key.public()]).unwrap(),
        "ferry-test-1"
    );
}

#[test]
fn changed_field_fails() {
    let (mut m, key) = signed();
    m.services[0].exec.command = "sh".to_owned();
    let err = verify_manifest(&m, &[key.public()]).unwrap_err();
    assert!(matches!(err, VerifyError::NoValidSignature { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
}

/// The system a host switches to is signed like everything else: swapping it, or adding
/// one to a signed manifest that had none, breaks the signature.
#[test]
fn a_swapped_or_added_system_fails() {
    let good = ferry_schema::manifest::HostSystem {
        store_path: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-biz-1".to_owned(),
        revision: None,
    };
    let key = SecretKey::generate("ferry-test-1").unwrap();
    let mut m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    m.systems.insert("biz".to_owned(), good);
    sign_manifest(&mut m, &key).unwrap();
    assert!(verify_manifest(&m, &[key.public()]).is_ok());
    let mut swapped = m.clone();
    swapped.systems.get_mut("biz").unwrap().store_path =
        "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-biz-evil".to_owned();
    assert!(verify_manifest(&swapped, &[key.public()]).is_err());
    let (mut plain, key) = signed();
    plain.systems = m.systems.clone();
    assert!(verify_manifest(&plain, &[key.public()]).is_err());
}

#[test]
fn reordered_keys_and_whitespace_still_verify() {
    let (m, key) = signed();
    // Re-serialise through a Value with keys in reverse order and odd whitespace.
    let value = serde_json::to_value(&m).unwrap();
    fn reverse(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| {
                        format!(
                            "\n  {} :  {}",
                            serde_json::to_string(k).unwrap(),
                            reverse(v)
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            serde_json::Value::Array(items) => format!(
                "[ {} ]",
                items.iter().map(reverse).collect::<Vec<_>>().join(" , ")
            ),
            other => other.to_string(),
        }
    }
    let text = reverse(&value);
    // JCS sorts `generation` first; here it comes last.
    assert!(text.find("\"version\"").unwrap() < text.find("\"generation\"").unwrap());
    let reparsed: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(
        verify_manifest(&reparsed, &[key.public()]).unwrap(),
        "ferry-test-1"
    );
}

#[test]
fn wrong_key_fails_and_says_which_key_signed() {
    let (m, _) = signed();
    let other = SecretKey::generate("someone-else").unwrap();
    let err = verify_manifest(&m, &[other.public()]).unwrap_err();
    assert!(err.to_string().contains("ferry-test-1"), "{err}");
    assert!(err.to_string().contains("not from a trusted key"), "{err}");
}

#[test]
fn same_name_different_key_fails() {
    let (m, _) = signed();
    let impostor = SecretKey::generate("ferry-test-1").unwrap();
    let err = verify_manifest(&m, &[impostor.public()]).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn two_trusted_keys_with_one_name_are_both_usable() {
    // Key rotation that keeps the name: the old and the new key are both trusted while
    // hosts move over, in either order, and a manifest signed by either verifies.
    let (by_old, old) = signed();
    let new = SecretKey::generate("ferry-test-1").unwrap();
    let mut by_new: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    sign_manifest(&mut by_new, &new).unwrap();
    for trusted in [[old.public(), new.public()], [new.public(), old.public()]] {
        for m in [&by_old, &by_new] {
            assert_eq!(verify_manifest(m, &trusted).unwrap(), "ferry-test-1");
        }
    }
    // A third key of that name is still refused, by name and by key.
    let impostor = SecretKey::generate("ferry-test-1").unwrap();
    let mut forged: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    sign_manifest(&mut forged, &impostor).unwrap();
    let err = verify_manifest(&forged, &[old.public(), new.public()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("matches none of the 2 trusted keys named `ferry-test-1`"),
        "{err}"
    );
}

#[test]
fn truncated_signature_fails() {
    let (mut m, key) = signed();
    let sigs = m.signatures.as_mut().unwrap();
    let cut = sigs[0].len() - 8;
    sigs[0].truncate(cut);
    let err = verify_manifest(&m, &[key.public()]).unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[test]
fn unsigned_and_no_trusted_keys_are_distinct_errors() {
    let m: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    let key = SecretKey::generate("k").unwrap();
    assert!(matches!(
        verify_manifest(&m, &[key.public()]),
        Err(VerifyError::Unsigned)
    ));
    assert!(matches!(
        verify_manifest(&m, &[]),
        Err(VerifyError::NoTrustedKeys)
    ));
}

#[test]
fn resigning_replaces_the_same_keys_signature_and_keeps_others() {
    let (mut m, key) = signed();
    let other = SecretKey::generate("second").unwrap();
    sign_manifest(&mut m, &other).unwrap();
    sign_manifest(&mut m, &key).unwrap();
    let sigs = m.signatures.clone().unwrap();
    assert_eq!(sigs.len(), 2);
    assert_eq!(verify_manifest(&m, &[other.public()]).unwrap(), "second");
    assert_eq!(
        verify_manifest(&m, &[key.public()]).unwrap(),
        "ferry-test-1"
    );
}

#[test]
fn canonical_form_is_jcs_without_signatures() {
    let (m, _) = signed();
    let text = String::from_utf8(canonical_bytes(&m).unwrap()).unwrap();
    assert!(!text.contains("signatures"));
    // JCS: sorted keys, no whitespace.
    assert!(
        text.starts_with("{\"generation\":\"2025-01-15T12:34:56Z\",\"services\":[{\"artifact\":"),
        "{text}"
    );
    assert!(!text.contains(": "));
}

#[test]
fn key_round_trip_through_strings() {
    let key = SecretKey::generate("n").unwrap();
    let public = PublicKey::parse(&key.public().to_nix_string()).unwrap();
    let sig = SecretKey::parse(&key.to_nix_string())
        .unwrap()
        .sign_detached(b"x");
    public.verify_detached(b"x", &sig).unwrap();
}
