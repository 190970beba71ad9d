//! Where `ferry` takes its signing key from. In order: `--key-file` / `$FERRY_KEY_FILE`,
//! `key_file` in the config file, then the places the original design keeps a Nix cache
//! key: `$NIX_CACHE_KEY` (the key itself, as CI secrets are handed over, or the absolute
//! path of its file) and `~/.config/nix/cache-priv-key.pem`. A key found in one of the last
//! two is announced on stderr with where it came from, so nobody signs with a key they did
//! not mean to.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ferry_schema::SecretKey;

/// The environment variable the original design hands the key over in.
pub const NIX_CACHE_KEY: &str = "NIX_CACHE_KEY";

/// Where a key was (or is to be) read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file named by `--key-file`, `$FERRY_KEY_FILE` or `key_file`: used silently.
    Named(PathBuf),
    /// The key's own text in `$NIX_CACHE_KEY`.
    EnvText(String),
    /// A key file whose path is in `$NIX_CACHE_KEY`.
    EnvFile(PathBuf),
    /// `~/.config/nix/cache-priv-key.pem` (under `$XDG_CONFIG_HOME` when set).
    NixFolder(PathBuf),
}

/// `$XDG_CONFIG_HOME/nix/cache-priv-key.pem`, else `$HOME/.config/nix/cache-priv-key.pem`:
/// the design's key location, in the folder Nix reads its own user configuration from.
pub fn nix_folder_key() -> Option<PathBuf> {
    config_home().map(|dir| dir.join("nix/cache-priv-key.pem"))
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_home() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config"))
}

/// Chooses where the key comes from. Pure: `named` is the flag, variable or config entry;
/// `env` the value of `$NIX_CACHE_KEY`; `folder` the design's key file if it exists.
/// `None` when nothing names or holds a key.
pub fn choose(
    named: Option<&Path>,
    env: Option<&str>,
    folder: Option<&Path>,
) -> Result<Option<KeySource>> {
    if let Some(path) = named {
        return Ok(Some(KeySource::Named(path.to_owned())));
    }
    if let Some(value) = env.map(str::trim).filter(|v| !v.is_empty()) {
        if value.starts_with('/') {
            return Ok(Some(KeySource::EnvFile(PathBuf::from(value))));
        }
        if !value.contains(':') {
            bail!(
                "${NIX_CACHE_KEY} holds neither a secret key (`name:base64`, as `ferry keygen` or `nix-store --generate-binary-cache-key` write it) nor the absolute path of a key file; fix or unset it"
            );
        }
        return Ok(Some(KeySource::EnvText(value.to_owned())));
    }
    Ok(folder.map(|p| KeySource::NixFolder(p.to_owned())))
}

/// Reads and parses the key from `source`; its text never appears in an error.
pub fn read(source: &KeySource) -> Result<SecretKey> {
    let (text, from) = match source {
        KeySource::EnvText(text) => (text.clone(), format!("${NIX_CACHE_KEY}")),
        KeySource::Named(path) | KeySource::NixFolder(path) => {
            (read_file(path)?, path.display().to_string())
        }
        KeySource::EnvFile(path) => (
            read_file(path)?,
            format!("{} (${NIX_CACHE_KEY})", path.display()),
        ),
    };
    SecretKey::parse(&text).with_context(|| {
        format!(
            "secret key in {from}: expected `name:base64` of a 64-byte ed25519 secret key, as `ferry keygen` or `nix-store --generate-binary-cache-key` write it"
        )
    })
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the secret key {} (create one with `ferry keygen`)",
            path.display()
        )
    })
}

/// The line saying where a key that nothing named was found; `None` for a named key.
pub fn announcement(source: &KeySource, key: &SecretKey) -> Option<String> {
    let from = match source {
        KeySource::Named(_) => return None,
        KeySource::EnvText(_) => format!("${NIX_CACHE_KEY}"),
        KeySource::EnvFile(path) => format!("{} (${NIX_CACHE_KEY})", path.display()),
        KeySource::NixFolder(path) => path.display().to_string(),
    };
    Some(format!("signing key {} from {from}", key.name()))
}

/// The error for no key anywhere, listing every place looked at.
pub fn missing(folder: Option<&Path>) -> anyhow::Error {
    let folder = folder.map_or_else(
        || "~/.config/nix/cache-priv-key.pem".to_owned(),
        |p| p.display().to_string(),
    );
    anyhow::anyhow!(
        "no signing key: pass --key-file FILE, set FERRY_KEY_FILE, put `key_file = \"…\"` in ~/.config/ferry/config.toml, set ${NIX_CACHE_KEY} (the key or its file's path), or put the key at {folder} (create one with `ferry init` or `ferry keygen`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k-1:Zm9v";

    #[test]
    fn a_named_key_wins_over_the_environment_and_the_folder() {
        let got = choose(
            Some(Path::new("/k")),
            Some("bad"),
            Some(Path::new("/h/.config/nix/cache-priv-key.pem")),
        )
        .unwrap();
        assert_eq!(got, Some(KeySource::Named("/k".into())));
    }

    #[test]
    fn nix_cache_key_is_the_key_or_its_path_and_wins_over_the_folder() {
        let folder = Some(Path::new("/f"));
        assert_eq!(
            choose(None, Some(&format!("{KEY}\n")), folder).unwrap(),
            Some(KeySource::EnvText(KEY.into()))
        );
        assert_eq!(
            choose(None, Some("/keys/ci.sec"), folder).unwrap(),
            Some(KeySource::EnvFile("/keys/ci.sec".into()))
        );
        let err = choose(None, Some("keys/ci.sec"), folder).unwrap_err();
        assert!(err.to_string().contains("NIX_CACHE_KEY"), "{err}");
        assert!(err.to_string().contains("name:base64"), "{err}");
        // Empty counts as unset, as shells leave it.
        assert_eq!(
            choose(None, Some(""), folder).unwrap(),
            Some(KeySource::NixFolder("/f".into()))
        );
        assert_eq!(choose(None, None, None).unwrap(), None);
    }

    #[test]
    fn a_key_in_the_environment_never_appears_in_errors() {
        let secret = "k-1:bm90LWEta2V5LWJ1dC1zZWNyZXQ=";
        let err = read(&KeySource::EnvText(secret.into())).unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("bm90LWEta2V5"), "{text}");
        assert!(text.contains("$NIX_CACHE_KEY"), "{text}");
    }

    #[test]
    fn found_keys_are_announced_with_their_place_named_ones_are_not() {
        let key = SecretKey::generate("k-1").unwrap();
        assert_eq!(announcement(&KeySource::Named("/k".into()), &key), None);
        assert_eq!(
            announcement(&KeySource::EnvText(String::new()), &key).as_deref(),
            Some("signing key k-1 from $NIX_CACHE_KEY")
        );
        assert_eq!(
            announcement(&KeySource::EnvFile("/e".into()), &key).as_deref(),
            Some("signing key k-1 from /e ($NIX_CACHE_KEY)")
        );
        assert_eq!(
            announcement(&KeySource::NixFolder("/f".into()), &key).as_deref(),
            Some("signing key k-1 from /f")
        );
    }
}
