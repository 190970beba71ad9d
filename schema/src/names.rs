//! Names that end up in unit files, paths and routes: what a valid one looks like, and how a
//! service name turns into a unit name or a route id. Every check is a pure function on
//! a string so validation and the agent agree on one definition.

use std::fmt;

use thiserror::Error;

/// Prefix of every unit and route Ferry owns, so nothing in `/etc/systemd/system` shadows
/// them and the agent never touches what it did not create.
pub const UNIT_PREFIX: &str = "ferry-";

/// Longest service name. 63 keeps `ferry-<name>.service` far below systemd's 255 and keeps
/// the name usable as a DNS label.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// Where Nix keeps store paths. Ferry only deals with the default store directory.
pub const STORE_DIR: &str = "/nix/store";

/// Length of a real Nix store hash (160 bits in Nix's base-32).
pub const NIX_HASH_LEN: usize = 32;

/// Nix's base-32 alphabet (no `e`, `o`, `u`, `t`).
const NIX32_CHARS: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// The systemd unit for a service: `ferry-<service>.service`.
pub fn unit_name(service: &str) -> String {
    format!("{UNIT_PREFIX}{service}.service")
}

/// The Caddy route `@id` for a service: `ferry-<service>`.
pub fn route_id(service: &str) -> String {
    format!("{UNIT_PREFIX}{service}")
}

/// The service rule: a DNS label in lowercase. 1-63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with a letter or digit. Such a name is safe verbatim in a unit name,
/// a file name, a Nix profile name, a Caddy `@id` and a log line.
pub fn is_valid_service_name(name: &str) -> bool {
    is_dns_label(name)
}

/// A lowercase RFC 1123 label: 1-63 of `a-z0-9-`, no leading or trailing `-`.
fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= MAX_SERVICE_NAME_LEN
        && *first != b'-'
        && *last != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A host name as the agent knows itself: lowercase RFC 1123 (dot-separated labels, at most
/// 253 characters).
pub fn is_valid_host_name(host: &str) -> bool {
    host.len() <= 253 && host.split('.').all(is_dns_label)
}

/// A domain Caddy can match on: a lowercase host name with at least one character, no
/// trailing dot, no wildcard.
pub fn is_valid_domain(domain: &str) -> bool {
    is_valid_host_name(domain)
}

/// A POSIX-portable user or group name as `useradd` accepts it by default: starts with a
/// lowercase letter or `_`, then lowercase letters, digits, `_` or `-`, at most 32 characters.
pub fn is_valid_posix_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 32
        && (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// An environment variable name: a letter or `_`, then letters, digits or `_`.
pub fn is_valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The unit types a service may be ordered after or require.
const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// A systemd unit name (`postgresql.service`, `getty@tty1.service`): a known unit type
/// suffix and a non-empty prefix of `A-Za-z0-9:_.\-` (plus one `@` for templates), at most
/// 255 characters. Anything else could not name a unit and might smuggle text into one.
pub fn is_valid_unit_name(unit: &str) -> bool {
    let Some((prefix, suffix)) = unit.rsplit_once('.') else {
        return false;
    };
    unit.len() <= 255
        && !prefix.is_empty()
        && UNIT_SUFFIXES.contains(&suffix)
        && prefix.matches('@').count() <= 1
        && !prefix.starts_with('@')
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '-' | '@'))
}

/// Why a string is not a store path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    /// The path is not directly under the Nix store.
    #[error(
        "`{0}` is not under /nix/store/: give the closure's top store path, e.g. /nix/store/<hash>-<name>"
    )]
    NotInStore(String),
    /// The path has more than one component below the store.
    #[error(
        "`{0}` is a path inside a store path: give the top store path itself (one component below /nix/store/)"
    )]
    Nested(String),
    /// `.` or `..` as the store path's base name.
    #[error("`{0}` is not a store path: `.` and `..` are not allowed")]
    DotComponent(String),
    /// A character Nix never puts in a store path (whitespace and control characters
    /// included).
    #[error("`{path}` contains {what}: store path names use only letters, digits and + - . _ ? =")]
    BadCharacter {
        /// The offending path (control characters escaped).
        path: String,
        /// The character, described.
        what: String,
    },
    /// No `<hash>-<name>` shape.
    #[error("`{0}` has no `<hash>-<name>` base name: give the path `nix build` printed")]
    NoHashName(String),
    /// Longer than Nix allows.
    #[error("`{0}` has a name longer than Nix's 211 characters")]
    TooLong(String),
}

/// A structurally valid store path: `/nix/store/<hash>-<name>`, one component, only the
/// characters Nix allows. The hash part may still be something other than a real 32-character
/// Nix hash: see [`StorePath::has_nix_hash`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

impl StorePath {
    /// Checks the structure of `path` and wraps it.
    pub fn parse(path: &str) -> Result<Self, StorePathError> {
        let escaped = || path.escape_debug().to_string();
        if let Some(bad) = path.chars().find(|c| !is_store_path_char(*c) && *c != '/') {
            return Err(StorePathError::BadCharacter {
                path: escaped(),
                what: describe_char(bad),
            });
        }
        let Some(base) = path
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Err(StorePathError::NotInStore(escaped()));
        };
        if base.contains('/') {
            return Err(StorePathError::Nested(escaped()));
        }
        if base == "." || base == ".." {
            return Err(StorePathError::DotComponent(escaped()));
        }
        let Some((hash, name)) = base.split_once('-') else {
            return Err(StorePathError::NoHashName(escaped()));
        };
        if hash.is_empty() || name.is_empty() || hash.contains('.') {
            return Err(StorePathError::NoHashName(escaped()));
        }
        if name.len() > 211 {
            return Err(StorePathError::TooLong(escaped()));
        }
        Ok(Self(path.to_owned()))
    }

    /// The full path, `/nix/store/<hash>-<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base name, `<hash>-<name>` (what narinfo `References` lists).
    pub fn base_name(&self) -> &str {
        self.0
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&self.0)
    }

    /// The hash part before the first `-` (names the narinfo: `<hash>.narinfo`).
    pub fn hash_part(&self) -> &str {
        self.base_name()
            .split_once('-')
            .map_or("", |(hash, _)| hash)
    }

    /// The name part after the first `-`.
    pub fn name_part(&self) -> &str {
        self.base_name()
            .split_once('-')
            .map_or("", |(_, name)| name)
    }

    /// Whether the hash part looks like a real Nix store hash (32 characters of Nix's
    /// base-32). Paths that fail this cannot come from `nix build`; they are accepted with a
    /// warning because the original design's example uses one.
    pub fn has_nix_hash(&self) -> bool {
        is_nix_hash(self.hash_part())
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StorePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether `hash` is a Nix store hash: 32 characters of Nix's base-32 (no `e`, `o`, `u`,
/// `t`), as in a store path's hash part and a narinfo's key.
pub fn is_nix_hash(hash: &str) -> bool {
    hash.len() == NIX_HASH_LEN && hash.chars().all(|c| NIX32_CHARS.contains(c))
}

/// Characters Nix allows in a store path's base name.
fn is_store_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// A readable description of a character for error messages (control characters would
/// otherwise be invisible or break the line).
pub fn describe_char(c: char) -> String {
    match c {
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        '\t' => "a tab".to_owned(),
        '\0' => "a NUL byte".to_owned(),
        ' ' => "a space".to_owned(),
        c if c.is_control() || c.is_whitespace() => {
            format!("the character U+{:04X}", u32::from(c))
        }
        c => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_route_names_use_the_prefix() {
        assert_eq!(unit_name("web"), "ferry-web.service");
        assert_eq!(route_id("web"), "ferry-web");
    }

    #[test]
    fn service_names_are_dns_labels() {
        for good in ["web", "podcastitlater-web", "a", "0day", &"a".repeat(63)] {
            assert!(is_valid_service_name(good), "{good}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "Web",
            "web_1",
            "web.1",
            "we b",
            "../x",
            "wéb",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn host_names_and_domains() {
        assert!(is_valid_host_name("biz"));
        assert!(is_valid_host_name("web-1.example.com"));
        assert!(!is_valid_host_name("Biz"));
        assert!(!is_valid_host_name("biz."));
        assert!(!is_valid_host_name("a..b"));
        assert!(!is_valid_domain("*.example.com"));
        assert!(!is_valid_domain("exa mple.com"));
    }

    #[test]
    fn posix_names_and_env_keys() {
        assert!(is_valid_posix_name("pil-web"));
        assert!(is_valid_posix_name("_svc"));
        assert!(!is_valid_posix_name("1user"));
        assert!(!is_valid_posix_name("User"));
        assert!(!is_valid_posix_name(&"a".repeat(33)));
        assert!(is_valid_env_key("DATA_DIR"));
        assert!(is_valid_env_key("_x1"));
        assert!(!is_valid_env_key("1X"));
        assert!(!is_valid_env_key("A-B"));
        assert!(!is_valid_env_key("A=B"));
    }

    #[test]
    fn unit_names() {
        for good in [
            "network-online.target",
            "postgresql.service",
            "getty@tty1.service",
            "dev-sda1.device",
            "var-lib.mount",
        ] {
            assert!(is_valid_unit_name(good), "{good}");
        }
        for bad in [
            "postgresql",
            ".service",
            "a b.service",
            "x.servic",
            "x\n.service",
            "a@b@c.service",
        ] {
            assert!(!is_valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn store_paths() {
        let real = "/nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello-2.12";
        let p = StorePath::parse(real).unwrap();
        assert_eq!(p.hash_part(), "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j");
        assert_eq!(p.name_part(), "hello-2.12");
        assert_eq!(p.base_name(), "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-hello-2.12");
        assert!(p.has_nix_hash());

        let example = StorePath::parse("/nix/store/abc123-podcastitlater-web-1.2.3").unwrap();
        assert!(!example.has_nix_hash());
        assert_eq!(example.hash_part(), "abc123");

        assert!(matches!(
            StorePath::parse("/usr/bin/x"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/abc-x/bin/x"),
            Err(StorePathError::Nested(_))
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/.."),
            Err(StorePathError::DotComponent(_))
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/abc-x y"),
            Err(StorePathError::BadCharacter { .. })
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/abc-x\n"),
            Err(StorePathError::BadCharacter { .. })
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/abcx"),
            Err(StorePathError::NoHashName(_))
        ));
        assert!(matches!(
            StorePath::parse("nix/store/abc-x"),
            Err(StorePathError::NotInStore(_))
        ));
        assert!(matches!(
            StorePath::parse("/nix/storeabc-x"),
            Err(StorePathError::NotInStore(_))
        ));
    }
}
