//! What `ferry init` writes and prints, decided without I/O: the service and key names it
//! infers, the starter manifest, the config file and the NixOS module snippet for hosts.

use ferry_bucket::BucketUrl;
use ferry_schema::names::{is_valid_host_name, is_valid_service_name};
use serde_json::{Value, json};

/// The store path a starter manifest names when there is no `./result` yet: well formed, so
/// the manifest validates, and obviously a placeholder.
pub fn placeholder_store_path(service: &str) -> String {
    format!("/nix/store/{}-{service}", "0".repeat(32))
}

/// The package name of a store path's name part, as Nix splits `name-version`: everything
/// before the first `-` that is followed by a digit (`hello-2.12.1` → `hello`).
pub fn package_name(name_part: &str) -> &str {
    let bytes = name_part.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return &name_part[..i];
        }
    }
    name_part
}

/// `text` made into a service name (a lowercase DNS label), or `None` when nothing of it is
/// left: lowercase, runs of other characters become one `-`, cut to 63.
pub fn service_name(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    let out = out.trim_end_matches('-').to_owned();
    is_valid_service_name(&out).then_some(out)
}

/// A key name from the bucket (`<bucket>-1`, the `<name>-<n>` convention), so a host's
/// trusted keys say which bucket they are for.
pub fn key_name(url: &BucketUrl) -> String {
    let base = match url {
        BucketUrl::S3 { bucket, .. } => bucket.clone(),
        BucketUrl::Dir(dir) => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let base: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if base.is_empty() {
        "ferry-1".to_owned()
    } else {
        format!("{base}-1")
    }
}

/// The starter manifest: one service on one host, the least that validates and deploys.
pub fn manifest(
    service: &str,
    store_path: &str,
    command: &str,
    host: &str,
    generation: &str,
) -> Value {
    json!({
        "version": 1,
        "generation": generation,
        "services": [{
            "name": service,
            "artifact": {"type": "nix-closure", "storePath": store_path},
            "hosts": [host],
            "exec": {"command": command},
        }],
    })
}

/// The config file: `existing` (its other keys kept) with `bucket` and `key_file` set;
/// `key_file: None` removes it (a key in `$NIX_CACHE_KEY` is found there every time).
pub fn config(mut existing: toml::Table, bucket: &str, key_file: Option<&str>) -> toml::Table {
    existing.insert("bucket".into(), toml::Value::String(bucket.to_owned()));
    match key_file {
        Some(path) => {
            existing.insert("key_file".into(), toml::Value::String(path.to_owned()));
        }
        None => {
            existing.remove("key_file");
        }
    }
    existing
}

/// `text` as a Nix string literal.
fn nix_string(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The `services.ferry-agent` block for a host's NixOS configuration: the bucket as
/// written, the host name, the public key for closures and manifests, and for an S3 bucket
/// the host's own credentials file (handed over by systemd, never copied into the store).
pub fn module_snippet(
    bucket_as_written: &str,
    url: &BucketUrl,
    host: &str,
    public: &str,
) -> String {
    let key = nix_string(public);
    let mut out = String::from("services.ferry-agent = {\n  enable = true;\n");
    out.push_str(&format!("  bucket = {};\n", nix_string(bucket_as_written)));
    out.push_str(&format!("  hostName = {};\n", nix_string(host)));
    out.push_str(&format!("  trustedKeys = [ {key} ];\n"));
    out.push_str(&format!("  manifestKeys = [ {key} ];\n"));
    if let BucketUrl::S3 { profile, .. } = url {
        let section = profile.as_deref().unwrap_or("default");
        out.push_str(&format!(
            "  # The host's shared credentials file, with a [{section}] section holding\n  \
             # aws_access_key_id and aws_secret_access_key for the bucket.\n"
        ));
        out.push_str("  credentialsFile = \"/root/.aws/credentials\";\n");
    }
    out.push_str("  caddy.enable = true;\n};\n");
    out
}

/// Whether `host` can go in the manifest.
pub fn host_ok(host: &str) -> bool {
    is_valid_host_name(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_closure_or_the_folder() {
        assert_eq!(package_name("hello-2.12.1"), "hello");
        assert_eq!(package_name("ferry-pt-app-123x456-1"), "ferry-pt-app");
        assert_eq!(package_name("my-api"), "my-api");
        assert_eq!(service_name("My API_v2").as_deref(), Some("my-api-v2"));
        assert_eq!(service_name("--x--").as_deref(), Some("x"));
        assert_eq!(service_name("ß"), None);
        assert_eq!(service_name(&"a".repeat(80)).map(|s| s.len()), Some(63));
    }

    #[test]
    fn key_names_name_the_bucket() {
        let s3 = BucketUrl::parse("s3://omni-nix-cache?profile=p").unwrap();
        assert_eq!(key_name(&s3), "omni-nix-cache-1");
        let dir = BucketUrl::parse("file:///srv/my bucket").unwrap();
        assert_eq!(key_name(&dir), "mybucket-1");
        let root = BucketUrl::parse("file:///").unwrap();
        assert_eq!(key_name(&root), "ferry-1");
    }

    #[test]
    fn the_starter_manifest_validates() {
        let m = manifest(
            "my-api",
            &placeholder_store_path("my-api"),
            "my-api",
            "web-1",
            "2026-01-01T00:00:00Z",
        );
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(ferry_schema::validate_bytes(&bytes, 1 << 20).is_ok());
    }

    #[test]
    fn config_keeps_other_keys_and_drops_a_key_file_it_no_longer_needs() {
        let old: toml::Table =
            toml::from_str("bucket = \"file:///a\"\nkey_file = \"/k\"\nzstd_level = 9\n").unwrap();
        let new = config(old.clone(), "s3://b", Some("/n"));
        assert_eq!(new["bucket"].as_str(), Some("s3://b"));
        assert_eq!(new["key_file"].as_str(), Some("/n"));
        assert_eq!(new["zstd_level"].as_integer(), Some(9));
        assert!(!config(old, "s3://b", None).contains_key("key_file"));
    }

    #[test]
    fn the_snippet_quotes_for_nix_and_names_the_credentials_section() {
        let written = "s3://b?profile=do&endpoint=h";
        let url = BucketUrl::parse(written).unwrap();
        let s = module_snippet(written, &url, "web-1", "k-1:abc=");
        assert!(
            s.contains("bucket = \"s3://b?profile=do&endpoint=h\";"),
            "{s}"
        );
        assert!(s.contains("[do] section"), "{s}");
        assert!(s.contains("manifestKeys = [ \"k-1:abc=\" ];"), "{s}");
        assert_eq!(nix_string("a\"${b}\\"), "\"a\\\"\\${b}\\\\\"");
        let dir = BucketUrl::parse("file:///srv/b").unwrap();
        assert!(!module_snippet("file:///srv/b", &dir, "h", "k:x").contains("credentialsFile"));
    }
}
