//! Parsing `nix path-info --recursive --json`: the Nix 2.8 array shape
//! (`[{"path": …, "narHash": "sha256-…"}]`), the object shape keyed by path (Nix ≥ 2.19)
//! and the versioned shape (`{"version": …, "info": {…}}`, structured hashes, base-name
//! keys). Pure: the JSON text in, one normalised record per store path out, signatures
//! included: the agent reads with it who signed what it is about to run. (The pusher's
//! `path_info.rs` predates this module and parses the same shapes; it can use this one.)

use crate::names::STORE_DIR;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use thiserror::Error;

/// What Nix knows about one store path, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// Full store path.
    pub path: String,
    /// `sha256:<nix base-32>`, the form narinfo files and fingerprints use.
    pub nar_hash: String,
    /// NAR size in bytes.
    pub nar_size: u64,
    /// Full store paths this path references (itself included when it does).
    pub references: Vec<String>,
    /// The deriver's full path, when known.
    pub deriver: Option<String>,
    /// Content address (`fixed:…` / `text:…`), when the path has one.
    pub ca: Option<String>,
    /// Signatures (`name:base64`) the store holds for the path; empty when none.
    pub signatures: Vec<String>,
}

/// Why the path-info JSON was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathInfoError {
    /// Not JSON at all.
    #[error("nix path-info printed something that is not JSON: {0}")]
    Json(String),
    /// JSON, but not one of the known shapes.
    #[error("nix path-info JSON has an unknown shape: {0}")]
    Shape(String),
    /// Nix says a path is not valid (not in the store).
    #[error("{0} is not in the local Nix store; build or fetch it first")]
    Invalid(String),
    /// A hash Ferry cannot read.
    #[error("{path}: narHash {hash:?} is not a sha256 hash in a known encoding")]
    Hash {
        /// The store path.
        path: String,
        /// The hash as printed.
        hash: String,
    },
}

/// Parses the output of `nix path-info --recursive --json`, sorted by path.
pub fn parse(json: &str) -> Result<Vec<PathInfo>, PathInfoError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| PathInfoError::Json(e.to_string()))?;
    let mut out = match value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let obj = item
                    .as_object()
                    .ok_or_else(|| PathInfoError::Shape("array item is not an object".into()))?;
                let path = str_field(obj, "path")
                    .ok_or_else(|| PathInfoError::Shape("array item without \"path\"".into()))?;
                if obj.get("valid") == Some(&Value::Bool(false)) {
                    return Err(PathInfoError::Invalid(path.to_owned()));
                }
                one(path, obj)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Object(top) => {
            let store_dir = str_field(&top, "storeDir").unwrap_or(STORE_DIR).to_owned();
            let entries = match top.get("info") {
                Some(Value::Object(info)) if top.contains_key("version") => info.clone(),
                _ => top,
            };
            entries
                .iter()
                .filter(|(k, _)| k.as_str() != "version" && k.as_str() != "storeDir")
                .map(|(key, info)| {
                    let path = full_path(key, &store_dir);
                    match info {
                        Value::Object(obj) => one(&path, obj),
                        Value::Null => Err(PathInfoError::Invalid(path)),
                        _ => Err(PathInfoError::Shape(format!(
                            "{path}: info is not an object"
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(PathInfoError::Shape(
                "neither an array nor an object".into(),
            ));
        }
    };
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn full_path(name: &str, store_dir: &str) -> String {
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("{store_dir}/{name}")
    }
}

fn one(path: &str, obj: &Map<String, Value>) -> Result<PathInfo, PathInfoError> {
    let shape = |what: &str| PathInfoError::Shape(format!("{path}: {what}"));
    let nar_hash = nar_hash_nix32(path, obj.get("narHash").ok_or_else(|| shape("no narHash"))?)?;
    let nar_size = obj
        .get("narSize")
        .and_then(Value::as_u64)
        .ok_or_else(|| shape("no narSize"))?;
    let references = obj
        .get("references")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("no references"))?
        .iter()
        .map(|r| {
            r.as_str()
                .map(|r| full_path(r, STORE_DIR))
                .ok_or_else(|| shape("a reference is not a string"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let deriver = str_field(obj, "deriver").map(|d| full_path(d, STORE_DIR));
    let ca = match obj.get("ca") {
        Some(Value::String(s)) => Some(s.clone()),
        // The versioned shape gives structured content addresses; Ferry does not re-derive
        // their text form, and a path without `CA:` is still valid when signed.
        _ => None,
    };
    let signatures = match obj.get("signatures") {
        Some(Value::Array(sigs)) => sigs
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| shape("a signature is not a string"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(shape("signatures is not a list")),
    };
    Ok(PathInfo {
        path: path.to_owned(),
        nar_hash,
        nar_size,
        references,
        deriver,
        ca,
        signatures,
    })
}

/// Any sha256 spelling Nix prints, as `sha256:<nix base-32>`.
fn nar_hash_nix32(path: &str, hash: &Value) -> Result<String, PathInfoError> {
    let bad = || PathInfoError::Hash {
        path: path.to_owned(),
        hash: hash.to_string(),
    };
    let bytes = match hash {
        Value::String(s) => {
            if let Some(b64) = s.strip_prefix("sha256-") {
                STANDARD.decode(b64).map_err(|_| bad())?
            } else if let Some(text) = s.strip_prefix("sha256:") {
                decode_text(text).ok_or_else(bad)?
            } else {
                return Err(bad());
            }
        }
        Value::Object(obj) => {
            if str_field(obj, "algorithm") != Some("sha256") {
                return Err(bad());
            }
            let text = str_field(obj, "hash").ok_or_else(bad)?;
            match str_field(obj, "format") {
                Some("base64") => STANDARD.decode(text).map_err(|_| bad())?,
                Some("sri") => STANDARD
                    .decode(text.strip_prefix("sha256-").unwrap_or(text))
                    .map_err(|_| bad())?,
                _ => decode_text(text).ok_or_else(bad)?,
            }
        }
        _ => return Err(bad()),
    };
    if bytes.len() != 32 {
        return Err(bad());
    }
    Ok(format!("sha256:{}", nix_base32::to_nix_base32(&bytes)))
}

/// Base-16 (64 chars) or Nix base-32 (52 chars).
fn decode_text(text: &str) -> Option<Vec<u8>> {
    match text.len() {
        64 => (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect(),
        52 => nix_base32::from_nix_base32(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of Nix 2.8 for a two-path closure.
    const NIX_2_8: &str = r#"[{"path":"/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1","narHash":"sha256-yQv/WrPWVIVPXwbrpQSymi7ZK8I5rkzU2Wfd5F+Hv3w=","narSize":720,"references":["/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1"],"deriver":"/nix/store/z2dmsab23vx0b9f33xn5m4ylycnk2gsh-ferry-testlib-1.drv","registrationTime":1795514903,"ultimate":true},{"path":"/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1","narHash":"sha256-R7Y+razyVsBwsB5kwmEOt/zambkapCQcuhpdnGqkNJs=","narSize":632,"references":[],"deriver":"/nix/store/2r3ra9h6mjysqdmb1kk45lqpvn2dh65j-ferry-testdata-1.drv","registrationTime":1795514903,"ultimate":true}]"#;

    fn expected() -> Vec<PathInfo> {
        vec![
            PathInfo {
                path: "/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1".into(),
                nar_hash: format!(
                    "sha256:{}",
                    nix_base32::to_nix_base32(
                        &STANDARD
                            .decode("yQv/WrPWVIVPXwbrpQSymi7ZK8I5rkzU2Wfd5F+Hv3w=")
                            .unwrap()
                    )
                ),
                nar_size: 720,
                references: vec![
                    "/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1".into(),
                ],
                deriver: Some(
                    "/nix/store/z2dmsab23vx0b9f33xn5m4ylycnk2gsh-ferry-testlib-1.drv".into(),
                ),
                ca: None,
                signatures: Vec::new(),
            },
            PathInfo {
                path: "/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1".into(),
                nar_hash: format!(
                    "sha256:{}",
                    nix_base32::to_nix_base32(
                        &STANDARD
                            .decode("R7Y+razyVsBwsB5kwmEOt/zambkapCQcuhpdnGqkNJs=")
                            .unwrap()
                    )
                ),
                nar_size: 632,
                references: vec![],
                deriver: Some(
                    "/nix/store/2r3ra9h6mjysqdmb1kk45lqpvn2dh65j-ferry-testdata-1.drv".into(),
                ),
                ca: None,
                signatures: Vec::new(),
            },
        ]
    }

    #[test]
    fn nix_2_8_array_shape() {
        assert_eq!(parse(NIX_2_8).unwrap(), expected());
    }

    #[test]
    fn signatures_are_read_and_absent_means_none() {
        let signed = NIX_2_8.replacen(
            r#""ultimate":true}"#,
            r#""ultimate":false,"signatures":["k-1:c2ln"]}"#,
            1,
        );
        let infos = parse(&signed).unwrap();
        assert_eq!(infos[0].signatures, ["k-1:c2ln"]);
        assert!(infos[1].signatures.is_empty());
        let bad = NIX_2_8.replacen(r#""ultimate":true}"#, r#""signatures":"k"}"#, 1);
        assert!(matches!(parse(&bad), Err(PathInfoError::Shape(_))));
    }

    #[test]
    fn object_shape_keyed_by_path() {
        let json = r#"{
          "/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1": {"narHash":"sha256-R7Y+razyVsBwsB5kwmEOt/zambkapCQcuhpdnGqkNJs=","narSize":632,"references":[],"deriver":"/nix/store/2r3ra9h6mjysqdmb1kk45lqpvn2dh65j-ferry-testdata-1.drv"},
          "/nix/store/gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1": {"narHash":"sha256-yQv/WrPWVIVPXwbrpQSymi7ZK8I5rkzU2Wfd5F+Hv3w=","narSize":720,"references":["/nix/store/p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1"],"deriver":"/nix/store/z2dmsab23vx0b9f33xn5m4ylycnk2gsh-ferry-testlib-1.drv","ca":null}
        }"#;
        assert_eq!(parse(json).unwrap(), expected());
    }

    #[test]
    fn versioned_shape_with_structured_hashes_and_base_names() {
        let lib = expected()[0]
            .nar_hash
            .trim_start_matches("sha256:")
            .to_owned();
        let json = format!(
            r#"{{"version": 2, "storeDir": "/nix/store", "info": {{
              "p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1": {{"narHash":{{"algorithm":"sha256","format":"base64","hash":"R7Y+razyVsBwsB5kwmEOt/zambkapCQcuhpdnGqkNJs="}},"narSize":632,"references":[],"deriver":"2r3ra9h6mjysqdmb1kk45lqpvn2dh65j-ferry-testdata-1.drv"}},
              "gblmnsv3yvjpggl9pzh3ihp5rywqx0ag-ferry-testlib-1": {{"narHash":{{"algorithm":"sha256","format":"nix32","hash":"{lib}"}},"narSize":720,"references":["p8za439lmhdjgj2gqx06njz2s6fach8z-ferry-testdata-1"],"deriver":"z2dmsab23vx0b9f33xn5m4ylycnk2gsh-ferry-testlib-1.drv"}}
            }}}}"#
        );
        assert_eq!(parse(&json).unwrap(), expected());
    }

    #[test]
    fn hex_and_nix32_strings_decode_to_the_same_hash() {
        let hex = "c90bff5ab3d654854f5f06eba504b29a2ed92bc239ae4cd4d967dde45f87bf7c";
        let v = serde_json::json!(format!("sha256:{hex}"));
        let from_hex = nar_hash_nix32("/nix/store/x-y", &v).unwrap();
        assert_eq!(from_hex, expected()[0].nar_hash);
        let again = nar_hash_nix32("/nix/store/x-y", &serde_json::json!(from_hex)).unwrap();
        assert_eq!(again, expected()[0].nar_hash);
    }

    #[test]
    fn invalid_paths_and_bad_hashes_are_named() {
        assert_eq!(
            parse(r#"{"/nix/store/aaaa-x": null}"#),
            Err(PathInfoError::Invalid("/nix/store/aaaa-x".into()))
        );
        assert_eq!(
            parse(r#"[{"path":"/nix/store/aaaa-x","valid":false}]"#),
            Err(PathInfoError::Invalid("/nix/store/aaaa-x".into()))
        );
        assert!(matches!(
            parse(
                r#"[{"path":"/nix/store/aaaa-x","narHash":"md5-AAAA","narSize":1,"references":[]}]"#
            ),
            Err(PathInfoError::Hash { .. })
        ));
        assert!(matches!(parse("not json"), Err(PathInfoError::Json(_))));
        assert!(matches!(parse("3"), Err(PathInfoError::Shape(_))));
    }
}
