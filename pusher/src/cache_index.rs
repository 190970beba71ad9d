//! The cache index (`ferry-cache-index.json` at the bucket root): the narinfo hashes of the
//! store paths the pusher knows are in the cache — narinfo and NAR, signed by a trusted
//! key — so that an incremental upload reads one object instead of one narinfo per path.
//! Pure: rendering, parsing, signing, checking and the merges; `cache_index_store.rs` does
//! the requests.
//!
//! ```json
//! {"version":1,"epoch":"5f0c…","hashes":["0c9s…","1w1f…"],"signature":"name-1:base64"}
//! ```
//!
//! The signature is an ed25519 signature, in Nix's `name:base64` form, over
//! [`canonical`]: a header line, the epoch, then the sorted hashes, one a line. An index
//! whose hashes no trusted key signed vouches for nothing: a reader uses its epoch and
//! ignores its hashes (an index with no hashes claims nothing and needs no signature,
//! which is what a `ferry gc` without a signing key writes).
//!
//! The epoch changes whenever `ferry gc` deletes narinfos. An upload remembers the epoch
//! it planned with and adds its paths only while the epoch is still that one: a path it
//! found by lookup (or uploaded) before a gc started may be gone by the time it writes.

use std::collections::BTreeSet;

use ferry_schema::{PublicKey, SecretKey, StorePath};
use serde::{Deserialize, Serialize};

use crate::gc_plan::is_hash;

/// The format this ferry reads and writes.
pub const VERSION: u64 = 1;

/// The largest index read (about 1.8 million paths); a larger one is ignored.
pub const MAX_BYTES: u64 = 64 << 20;

/// The first line of the signed text, so an index signature is never valid as a narinfo
/// or manifest signature, nor one of those as an index signature.
const HEADER: &str = "ferry-cache-index 1";

/// The index's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheIndex {
    /// Changes whenever `ferry gc` deletes narinfos (hex).
    pub epoch: String,
    /// Narinfo hashes (the 32-character hash part of each store path).
    pub hashes: BTreeSet<String>,
}

/// The stored document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u64,
    epoch: String,
    hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

/// An index as read: its content and signature, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The content.
    pub index: CacheIndex,
    /// `name:base64`, if signed.
    pub signature: Option<String>,
}

/// The narinfo hash of `store_path`, or `None` when it is not a store path.
pub fn hash_of(store_path: &str) -> Option<String> {
    StorePath::parse(store_path)
        .ok()
        .map(|p| p.hash_part().to_owned())
}

fn is_epoch(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The signed text: header, epoch and the sorted hashes, one a line.
pub fn canonical(index: &CacheIndex) -> String {
    let mut text = format!("{HEADER}\nepoch {}\n", index.epoch);
    for hash in &index.hashes {
        text.push_str(hash);
        text.push('\n');
    }
    text
}

/// The document for `index`, signed with `key` when given.
pub fn render(index: &CacheIndex, key: Option<&SecretKey>) -> Vec<u8> {
    let doc = Document {
        version: VERSION,
        epoch: index.epoch.clone(),
        hashes: index.hashes.iter().cloned().collect(),
        signature: key.map(|k| k.sign_detached(canonical(index).as_bytes())),
    };
    // A struct of strings always serialises.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Reads a document; says what is wrong with one that is not an index this ferry knows.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| format!("not an index: {e}"))?;
    if doc.version != VERSION {
        return Err(format!(
            "version {} (this ferry knows version {VERSION})",
            doc.version
        ));
    }
    if !is_epoch(&doc.epoch) {
        return Err(format!("epoch {:?} is not hex", doc.epoch));
    }
    let mut hashes = BTreeSet::new();
    for hash in doc.hashes {
        if !is_hash(&hash) {
            return Err(format!("{hash:?} is not a store path hash"));
        }
        hashes.insert(hash);
    }
    Ok(Parsed {
        index: CacheIndex {
            epoch: doc.epoch,
            hashes,
        },
        signature: doc.signature,
    })
}

/// The name of the key in `keys` that signed `parsed`, or why none did. An index with no
/// hashes claims nothing and passes unsigned.
pub fn verify(parsed: &Parsed, keys: &[PublicKey]) -> Result<String, String> {
    let Some(sig) = &parsed.signature else {
        if parsed.index.hashes.is_empty() {
            return Ok("(none needed: it lists no paths)".to_owned());
        }
        return Err("it is not signed".to_owned());
    };
    let message = canonical(&parsed.index);
    let name = ferry_schema::keys::signature_key_name(sig).unwrap_or("");
    keys.iter()
        .find(|k| k.verify_detached(message.as_bytes(), sig).is_ok())
        .map(|k| k.name().to_owned())
        .ok_or_else(|| format!("its signature by `{name}` is not valid under any trusted key"))
}

/// What a run takes from the stored index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its epoch; `None` when there is no index, or one that does not parse.
    pub epoch: Option<String>,
    /// The hashes it vouches for: empty unless a trusted key signed it.
    pub hashes: BTreeSet<String>,
    /// Why its hashes were not taken, for a one-line warning.
    pub warning: Option<String>,
}

/// Makes sense of the stored index (`None`: no such object). With `trusted` keys its
/// hashes count only when one of them signed it; without (a dry run, no key loaded) they
/// count as they are.
pub fn seen(stored: Option<&[u8]>, trusted: Option<&[PublicKey]>) -> Seen {
    let Some(bytes) = stored else {
        return Seen::default();
    };
    let parsed = match parse(bytes) {
        Ok(p) => p,
        Err(why) => {
            return Seen {
                warning: Some(why),
                ..Seen::default()
            };
        }
    };
    let check = trusted.map_or(Ok(String::new()), |keys| verify(&parsed, keys));
    match check {
        Ok(_) => Seen {
            epoch: Some(parsed.index.epoch),
            hashes: parsed.index.hashes,
            warning: None,
        },
        Err(why) => Seen {
            epoch: Some(parsed.index.epoch),
            hashes: BTreeSet::new(),
            warning: Some(why),
        },
    }
}

/// What an upload learnt about the index when it planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexPlan {
    /// The epoch it planned with (`None`: no usable index).
    pub epoch: Option<String>,
    /// Closure paths counted as cached because the index lists them (no request).
    pub listed: usize,
    /// Closure paths found by a lookup with a trusted signature: to be added.
    pub verified: Vec<String>,
    /// Why the index was ignored, if it was.
    pub warning: Option<String>,
}

/// What to do with the index after an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Write this.
    Write(CacheIndex),
    /// Leave it: every path is listed already.
    NothingNew,
    /// Leave it: `ferry gc` deleted narinfos since the upload planned (the epoch changed),
    /// so a path it found then may be gone; a later upload looks them up again.
    EpochChanged,
}

/// The update of the index `now` (read just now) adding `ours`, the hashes an upload that
/// planned with `planned` epoch uploaded or found by lookup. `fresh` makes an epoch for a
/// first index.
pub fn add(
    planned: Option<&str>,
    now: &Seen,
    ours: &BTreeSet<String>,
    fresh: impl FnOnce() -> String,
) -> Update {
    if now.epoch.as_deref() != planned {
        return Update::EpochChanged;
    }
    if ours.is_subset(&now.hashes) {
        return Update::NothingNew;
    }
    Update::Write(CacheIndex {
        epoch: now.epoch.clone().unwrap_or_else(fresh),
        hashes: now.hashes.union(ours).cloned().collect(),
    })
}

/// The index `ferry gc` writes before deleting narinfos (and once more at the end): `now`
/// without `removed` and, given the bucket's `present` narinfo hashes, without any that
/// are not there (deleted by another tool), under a new `epoch`. A gc that cannot sign
/// (`can_sign` false) writes an index that lists nothing.
pub fn remove(
    now: &Seen,
    removed: &BTreeSet<String>,
    present: Option<&BTreeSet<String>>,
    can_sign: bool,
    epoch: String,
) -> CacheIndex {
    let hashes = if can_sign {
        now.hashes
            .iter()
            .filter(|h| !removed.contains(*h))
            .filter(|h| present.is_none_or(|p| p.contains(*h)))
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    CacheIndex { epoch, hashes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j";
    const B: &str = "1w1fff338fvdw53sqgamddn1b2xgds47";
    const C: &str = "p8za439lmhdjgj2gqx06njz2s6fach8z";

    fn index(epoch: &str, hashes: &[&str]) -> CacheIndex {
        CacheIndex {
            epoch: epoch.to_owned(),
            hashes: hashes.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn set(hashes: &[&str]) -> BTreeSet<String> {
        hashes.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn renders_sorted_signed_and_reads_back() {
        let key = SecretKey::generate("idx-1").unwrap();
        let i = index("00ff", &[B, A]);
        assert_eq!(
            canonical(&i),
            format!("ferry-cache-index 1\nepoch 00ff\n{A}\n{B}\n")
        );
        let bytes = render(&i, Some(&key));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(&format!(
                "{{\"version\":1,\"epoch\":\"00ff\",\"hashes\":[\"{A}\",\"{B}\"],\"signature\":\"idx-1:"
            )),
            "{text}"
        );
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.index, i);
        assert_eq!(verify(&parsed, &[key.public()]).unwrap(), "idx-1");
        let unsigned = String::from_utf8(render(&i, None)).unwrap();
        assert!(!unsigned.contains("signature"), "{unsigned}");
    }

    #[test]
    fn only_a_trusted_signature_over_these_very_hashes_counts() {
        let own = SecretKey::generate("own-1").unwrap();
        let stranger = SecretKey::generate("stranger-1").unwrap();
        let keys = [own.public()];
        let i = index("0a", &[A, B]);
        let by = |k: Option<&SecretKey>| parse(&render(&i, k)).unwrap();
        assert!(verify(&by(Some(&own)), &keys).is_ok());
        assert!(verify(&by(None), &keys).unwrap_err().contains("not signed"));
        let why = verify(&by(Some(&stranger)), &keys).unwrap_err();
        assert!(why.contains("stranger-1"), "{why}");
        // A signed index with a hash added afterwards (or the epoch changed) fails.
        let mut grown = by(Some(&own));
        grown.index.hashes.insert(C.to_owned());
        assert!(verify(&grown, &keys).is_err());
        let mut moved = by(Some(&own));
        moved.index.epoch = "0b".into();
        assert!(verify(&moved, &keys).is_err());
        // Claiming nothing needs no signature.
        let empty = parse(&render(&index("0c", &[]), None)).unwrap();
        assert!(verify(&empty, &keys).is_ok());
    }

    #[test]
    fn what_does_not_parse_says_why() {
        for (bytes, why) in [
            (&b"{oops"[..], "not an index"),
            (
                br#"{"version":2,"epoch":"0a","hashes":[]}"#,
                "version 2 (this ferry knows version 1)",
            ),
            (br#"{"version":1,"epoch":"zz","hashes":[]}"#, "not hex"),
            (
                br#"{"version":1,"epoch":"0a","hashes":["../manifest.json"]}"#,
                "not a store path hash",
            ),
            (
                br#"{"version":1,"epoch":"0a","hashes":[],"extra":1}"#,
                "unknown field",
            ),
        ] {
            let err = parse(bytes).unwrap_err();
            assert!(err.contains(why), "{err} lacks {why}");
        }
    }

    #[test]
    fn a_reader_takes_the_epoch_always_and_the_hashes_only_when_trusted() {
        let own = SecretKey::generate("own-1").unwrap();
        let keys = [own.public()];
        let i = index("0a", &[A]);
        assert_eq!(seen(None, Some(&keys)), Seen::default());
        let trusted = seen(Some(&render(&i, Some(&own))), Some(&keys));
        assert_eq!(
            (trusted.epoch.as_deref(), trusted.hashes, trusted.warning),
            (Some("0a"), set(&[A]), None)
        );
        let planted = seen(Some(&render(&i, None)), Some(&keys));
        assert_eq!(planted.epoch.as_deref(), Some("0a"));
        assert!(planted.hashes.is_empty());
        assert!(planted.warning.unwrap().contains("not signed"));
        let garbage = seen(Some(b"{}"), Some(&keys));
        assert_eq!(garbage.epoch, None);
        assert!(garbage.warning.is_some());
        // A dry run loads no key: the hashes count as they are.
        assert_eq!(seen(Some(&render(&i, None)), None).hashes, set(&[A]));
    }

    #[test]
    fn an_upload_adds_its_paths_only_under_the_epoch_it_planned_with() {
        let now = Seen {
            epoch: Some("0a".into()),
            hashes: set(&[A]),
            warning: None,
        };
        assert_eq!(
            add(Some("0a"), &now, &set(&[B]), || unreachable!()),
            Update::Write(index("0a", &[A, B]))
        );
        assert_eq!(
            add(Some("0a"), &now, &set(&[A]), || unreachable!()),
            Update::NothingNew
        );
        // gc ran meanwhile (or the index appeared, or went): nothing is added.
        assert_eq!(
            add(Some("09"), &now, &set(&[B]), || unreachable!()),
            Update::EpochChanged
        );
        assert_eq!(
            add(None, &now, &set(&[B]), || unreachable!()),
            Update::EpochChanged
        );
        assert_eq!(
            add(Some("0a"), &Seen::default(), &set(&[B]), || unreachable!()),
            Update::EpochChanged
        );
        // No index before or now: the first one, with a new epoch.
        assert_eq!(
            add(None, &Seen::default(), &set(&[B]), || "0f".into()),
            Update::Write(index("0f", &[B]))
        );
        // An index no trusted key signed is replaced by what this run knows.
        let planted = Seen {
            epoch: Some("0a".into()),
            hashes: BTreeSet::new(),
            warning: Some("it is not signed".into()),
        };
        assert_eq!(
            add(Some("0a"), &planted, &set(&[B]), || unreachable!()),
            Update::Write(index("0a", &[B]))
        );
    }

    #[test]
    fn gc_removes_what_it_deletes_and_what_is_gone_under_a_new_epoch() {
        let now = Seen {
            epoch: Some("0a".into()),
            hashes: set(&[A, B, C]),
            warning: None,
        };
        assert_eq!(
            remove(&now, &set(&[A]), None, true, "0b".into()),
            index("0b", &[B, C])
        );
        assert_eq!(
            remove(&now, &set(&[A]), Some(&set(&[A, B])), true, "0b".into()),
            index("0b", &[B])
        );
        assert_eq!(
            remove(&now, &set(&[A]), None, false, "0b".into()),
            index("0b", &[])
        );
        assert_eq!(
            remove(&Seen::default(), &set(&[A]), None, true, "0b".into()),
            index("0b", &[])
        );
    }

    #[test]
    fn hash_of_a_store_path() {
        assert_eq!(
            hash_of(&format!("/nix/store/{A}-hello-2.12")).as_deref(),
            Some(A)
        );
        assert_eq!(hash_of("/tmp/x"), None);
    }
}
