//! `ferry init`: a developer's first minutes in one command: config file, signing key,
//! starter manifest, and what to put on the hosts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::Utc;
use ferry_bucket::BucketUrl;
use ferry_bucket::atomic_file::write as write_atomic;
use ferry_schema::{DEFAULT_SIZE_CAP, SecretKey, StorePath, validate_bytes};

use crate::manifest_edit::next_generation;
use crate::settings::{config_path, parse_config};
use crate::signing_key::{self, KeySource};
use crate::starter;

/// Set up ferry for a project: `~/.config/ferry/config.toml`, a signing key, a starter
/// `manifest.json`, and the NixOS snippet for the hosts.
///
/// Asks nothing it can infer. The config file names the bucket and the key. The key is
/// the one `--key-file`, $FERRY_KEY_FILE or $NIX_CACHE_KEY name, else
/// `~/.config/nix/cache-priv-key.pem`, created there (0600, public half beside it in
/// `cache-pub-key.pem`) when it does not exist, named after the bucket (`<bucket>-1`).
/// `manifest.json` in the current folder runs one service on one host: the closure that
/// `./result` points to (its package name as the service name), else a placeholder store
/// path and the folder's name. Prints the public key and the `services.ferry-agent` block
/// to add to each host's NixOS configuration.
///
/// Example: `ferry init --bucket
/// 's3://my-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com'
/// --host web-1`
///
/// Exit status: 0 when everything is written, 2 when the config file or manifest.json
/// exists (without `--force`; nothing is written then) or something cannot be read or
/// written. An existing secret key is never replaced, not even with `--force`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bucket (see `ferry push --help`). Default: $FERRY_BUCKET, else the one the
    /// existing config file names.
    #[arg(long, env = "FERRY_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// The host the starter service runs on: its hostname as the agent sees it
    /// (networking.hostName).
    #[arg(long, value_name = "NAME", default_value = "web-1")]
    pub host: String,
    /// The service's name. Default: the package name of `./result`, else the folder's name.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Use this secret key file (it must exist) instead of looking for one.
    #[arg(long, env = "FERRY_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Rewrite an existing config file (keeping its other keys) and manifest.json.
    #[arg(long)]
    pub force: bool,
}

/// Writes what is missing and prints what the hosts need.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config_file = config_path()
        .context("neither XDG_CONFIG_HOME nor HOME is set: ferry cannot place its config file")?;
    let manifest_file = PathBuf::from("manifest.json");
    let existing_config = read_table(&config_file)?;
    if !args.force {
        let present: Vec<String> = [&config_file, &manifest_file]
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !present.is_empty() {
            let verb = if present.len() == 1 {
                "exists"
            } else {
                "exist"
            };
            bail!(
                "{} {verb}; nothing written. Pass --force to rewrite (the signing key is kept)",
                present.join(" and ")
            );
        }
    }
    let bucket = args
        .bucket
        .clone()
        .or_else(|| {
            existing_config
                .as_ref()
                .and_then(|t| t.get("bucket"))
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .context(
            "ferry init needs the bucket: pass --bucket s3://BUCKET?profile=…&scheme=https&endpoint=HOST (Nix's S3 store URL) or file:///DIR, or set FERRY_BUCKET",
        )?;
    let url = BucketUrl::parse(&bucket).context("the bucket URL")?;
    if !starter::host_ok(&args.host) {
        bail!(
            "--host {:?} is not a host name (lowercase letters, digits, `-` and `.`)",
            args.host
        );
    }

    let (key, key_file) = signing_key_for(args, &url)?;
    let public = key.public().to_nix_string();

    let (service, store_path, command) = starter_service(args)?;
    let generation = next_generation(None, Utc::now())?;
    let manifest = starter::manifest(&service, &store_path, &command, &args.host, &generation);
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    if let Err(problems) = validate_bytes(text.as_bytes(), DEFAULT_SIZE_CAP) {
        let problems: Vec<String> = problems.iter().map(super::validate::render).collect();
        bail!(
            "the starter manifest for service {service:?} does not validate: {}; pass --service NAME",
            problems.join("; ")
        );
    }

    let config = starter::config(
        existing_config.unwrap_or_default(),
        &bucket,
        key_file.as_deref().and_then(Path::to_str),
    );
    if let Some(dir) = config_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(&config_file, toml::to_string(&config)?.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", config_file.display()))?;
    write_atomic(&manifest_file, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", manifest_file.display()))?;

    eprintln!("bucket as understood: {url}");
    eprintln!("wrote {} (bucket, key_file)", config_file.display());
    eprintln!(
        "wrote manifest.json: service {service} on host {} (--host to change), running {store_path}/bin/{command}",
        args.host
    );
    if store_path == starter::placeholder_store_path(&service) {
        eprintln!(
            "no ./result here: replace the placeholder storePath in manifest.json with your closure (`nix build`, then its store path), and exec.command with its program"
        );
    }
    println!("Public key (trust it on every host): {public}");
    println!();
    println!("Add to each host's NixOS configuration (imports = [ ferry.nixosModules.default ];):");
    println!();
    print!(
        "{}",
        starter::module_snippet(&bucket, &url, &args.host, &public)
    );
    println!();
    println!("Then: ferry upload ./result && ferry publish manifest.json");
    println!("Later versions: ferry push {service} ./result");
    Ok(ExitCode::SUCCESS)
}

/// The existing config file as a table; `None` when there is none.
fn read_table(path: &Path) -> anyhow::Result<Option<toml::Table>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // The same checks every verb makes (known keys only), then kept as a table so
            // --force rewrites only bucket and key_file.
            parse_config(&text, path)?;
            let table =
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(table))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The signing key and the file the config should name (none for a key held in
/// $NIX_CACHE_KEY): the one named or found, else a new one in the design's place.
fn signing_key_for(args: &Args, url: &BucketUrl) -> anyhow::Result<(SecretKey, Option<PathBuf>)> {
    let folder = signing_key::nix_folder_key();
    let existing = folder.as_deref().filter(|p| p.exists());
    let env = std::env::var(signing_key::NIX_CACHE_KEY).ok();
    if let Some(source) = signing_key::choose(args.key_file.as_deref(), env.as_deref(), existing)? {
        let key = signing_key::read(&source)?;
        let file = match &source {
            KeySource::Named(p) | KeySource::EnvFile(p) | KeySource::NixFolder(p) => {
                Some(p.clone())
            }
            KeySource::EnvText(_) => None,
        };
        if let Some(line) = signing_key::announcement(&source, &key) {
            eprintln!("{line}");
        }
        return Ok((key, file));
    }
    let secret =
        folder.context("neither XDG_CONFIG_HOME nor HOME is set: ferry cannot place the key")?;
    let public_file = secret.with_file_name("cache-pub-key.pem");
    if public_file.exists() {
        bail!(
            "{} exists without its secret key {}; move it away or pass --key-file",
            public_file.display(),
            secret.display()
        );
    }
    let name = starter::key_name(url);
    let key = SecretKey::generate(&name).with_context(|| format!("creating key `{name}`"))?;
    if let Some(dir) = secret.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // As `ferry keygen` and nix-store write them: no trailing newline, secret 0600.
    write_atomic(&secret, key.to_nix_string().as_bytes(), 0o600)
        .with_context(|| format!("writing the secret key to {}", secret.display()))?;
    write_atomic(&public_file, key.public().to_nix_string().as_bytes(), 0o644)
        .with_context(|| format!("writing the public key to {}", public_file.display()))?;
    eprintln!(
        "created signing key {name}: {} (keep it private) and {}",
        secret.display(),
        public_file.display()
    );
    Ok((key, Some(secret)))
}

/// The service's name, store path and command: from `./result` when it is a store path,
/// else a placeholder named after the folder.
fn starter_service(args: &Args) -> anyhow::Result<(String, String, String)> {
    let result = std::fs::read_link("result")
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .and_then(|p| StorePath::parse(&p).ok());
    let inferred = match &result {
        Some(path) => starter::service_name(starter::package_name(path.name_part())),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|n| starter::service_name(&n)),
    };
    let Some(service) = args.service.clone().or(inferred) else {
        bail!("cannot name the service from ./result or this folder: pass --service NAME");
    };
    let store_path = result.map_or_else(
        || starter::placeholder_store_path(&service),
        |p| p.to_string(),
    );
    // The one program in result/bin when there is exactly one, else the service's name.
    let command = std::fs::read_dir(Path::new(&store_path).join("bin"))
        .ok()
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|names| names.len() == 1)
        .and_then(|mut names| names.pop())
        .unwrap_or_else(|| service.clone());
    Ok((service, store_path, command))
}
