//! Real, signed Nix closures of the test service for end-to-end tests: v1, v2, a broken
//! one (health answers 503), a crashing one, a multi-path one whose store paths
//! reference each other, and a series of seven healthy versions. Built once per binary (cached on disk under
//! /var/cache/ferry-testbed, keyed by the binary's and the expression's hash) with the
//! machine's nix-build and plain derivations, then copied into a signed and an unsigned
//! `file://` binary cache.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::process::{cmd, run};
use crate::s3::S3;

/// The Nix expression with every test closure.
const EXPRESSION: &str = include_str!("closures.nix");
/// Where built closures and their caches are kept between runs.
const CACHE_ROOT: &str = "/var/cache/ferry-testbed";
/// GC roots so the machine's `nix-collect-garbage` keeps the closures.
const GC_ROOTS: &str = "/nix/var/nix/gcroots/ferry-testbed";
/// The signing key's name, as it appears in `Sig:` lines and `trusted-public-keys`.
pub const KEY_NAME: &str = "ferry-test-1";
/// Flags every `nix` (not `nix-store`) command needs on Nix 2.8.
pub const NIX_FLAGS: [&str; 2] = ["--extra-experimental-features", "nix-command"];
/// Flags for every `nix-build` of the tests' own derivations. They are deliberately impure
/// (no nixpkgs: the builder is the machine's `/bin/sh` with its coreutils), so they ask for
/// no sandbox themselves instead of relying on the machine's nix.conf saying so; and they
/// never look for substitutes (there is no internet, and nothing to find).
pub const NIX_BUILD_FLAGS: [&str; 6] = [
    "--option",
    "sandbox",
    "false",
    "--option",
    "substituters",
    "",
];

/// The test closures and binary caches holding them.
#[derive(Clone, Debug)]
pub struct Closures {
    /// Service version `1.0.0`, healthy.
    pub v1: String,
    /// Service version `2.0.0`, healthy.
    pub v2: String,
    /// Version `3.0.0-broken`: starts, but `/health` answers 503 (baked into the closure).
    pub broken: String,
    /// Version `4.0.0-crashing`: exits 1 at start.
    pub crashing: String,
    /// Version `5.0.0-multi`: healthy, references `multi_deps` (which reference each other).
    pub multi: String,
    /// The other store paths of `multi`'s closure (`ferry-testlib-1`, `ferry-testdata-1`).
    pub multi_deps: Vec<String>,
    /// Seven healthy versions, `6.1.0` to `6.7.0`, in order.
    pub series: Vec<String>,
    /// Stand-ins for NixOS systems (a `bin/switch-to-configuration` that records its calls
    /// in the host's `/var/lib/ferry-bed-system/calls`), for the system step.
    pub systems: StandInSystems,
    /// `ferry-test-1:<base64>`, for `trusted-public-keys`.
    pub public_key: String,
    /// The secret key file (`nix-store --generate-binary-cache-key` format).
    pub secret_key_file: PathBuf,
    /// A `file://` binary cache folder with every closure, signed by the key.
    pub signed_cache: PathBuf,
    /// The same closures without signatures (a host must refuse them).
    pub unsigned_cache: PathBuf,
}

/// Stand-ins for NixOS systems (`closures.nix`: `standInSystem`). On `test`, each does what
/// its name says; all record every call.
#[derive(Debug, Clone)]
pub struct StandInSystems {
    /// A good system: activating it brings `eth0` up and clears the failed unit the `unit`
    /// one leaves, as switching back to a good system would.
    pub ok: String,
    /// A good system with another kernel (needs a reboot).
    pub ok_new_kernel: String,
    /// `switch-to-configuration test` exits 1.
    pub fails: String,
    /// Activates, but leaves the unit `ferry-bed-broken.service` failed.
    pub fails_a_unit: String,
    /// Activates and takes `eth0` down: the bucket is out of reach.
    pub breaks_network: String,
    /// Activates and stops Ferry's service `web`.
    pub stops_web: String,
    /// `switch-to-configuration test` never returns.
    pub hangs: String,
}

/// The attributes of `closures.nix` that are stand-in systems, as [`StandInSystems`] names
/// them.
const SYSTEM_ATTRS: [&str; 7] = [
    "system_ok",
    "system_ok_new_kernel",
    "system_fails",
    "system_fails_a_unit",
    "system_breaks_network",
    "system_stops_web",
    "system_hangs",
];

static CLOSURES: OnceLock<std::result::Result<Closures, String>> = OnceLock::new();

impl Closures {
    /// The closures, built on first use in this process (or found in the disk cache).
    pub fn get() -> Result<&'static Closures> {
        CLOSURES
            .get_or_init(|| build_or_load().map_err(|err| format!("{err:#}")))
            .as_ref()
            .map_err(|err| anyhow!("building the test closures failed: {err}"))
    }

    /// Every service closure's top store path, in order v1, v2, broken, crashing, multi.
    pub fn services(&self) -> [&str; 5] {
        [
            &self.v1,
            &self.v2,
            &self.broken,
            &self.crashing,
            &self.multi,
        ]
    }

    /// Uploads the signed binary cache into the bed's bucket under `prefix` (e.g. `""` or
    /// `"cache/"`), NARs before narinfos.
    pub async fn upload_signed(&self, s3: &S3, prefix: &str) -> Result<usize> {
        s3.upload_dir(&self.signed_cache, prefix).await
    }

    /// Uploads the unsigned binary cache into the bed's bucket under `prefix`.
    pub async fn upload_unsigned(&self, s3: &S3, prefix: &str) -> Result<usize> {
        s3.upload_dir(&self.unsigned_cache, prefix).await
    }
}

/// The ferry-testsvc binary: built first when cargo runs us (a test or a benchmark of any
/// package, so never a stale one), else (the demo, started by scripts/demo.sh after its
/// build) the one beside the running binary.
fn testsvc_binary() -> Result<PathBuf> {
    if std::env::var_os("CARGO").is_some() {
        crate::binaries::built_binary("ferry-testsvc", "FERRY_TESTSVC_BIN")
    } else {
        crate::binaries::workspace_binary("ferry-testsvc", "FERRY_TESTSVC_BIN")
    }
}

fn build_or_load() -> Result<Closures> {
    let binary = testsvc_binary()?;
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    hasher.update(EXPRESSION.as_bytes());
    let digest: String = hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = PathBuf::from(CACHE_ROOT);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // One builder at a time across processes; the others then find the result.
    let lock_path = root.join("closures.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let dir = root.join(format!("closures-{digest}"));
    if let Ok(closures) = load(&dir) {
        mark_used(&dir);
        return Ok(closures);
    }
    let temp = root.join(format!("closures-{digest}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let result = build(&binary, &temp, &dir, &digest);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&temp, &dir)
        .with_context(|| format!("moving {} into place", temp.display()))?;
    mark_used(&dir);
    remove_outdated(&root, Path::new(GC_ROOTS), &digest);
    load(&dir)
}

/// The file whose modification time says when a closure folder was last used.
const LAST_USED: &str = "last-used";
/// Closure folders unused for this long are dropped. Another checkout (another target
/// folder, so another binary hash) may be using a folder right now: only stale ones go.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Records that `dir` is in use, so other checkouts' clean-ups leave it alone.
fn mark_used(dir: &Path) {
    let _ = std::fs::write(dir.join(LAST_USED), b"");
}

/// Drops closure folders (and their GC roots) that no build has used for [`UNUSED_FOR`]:
/// every rebuild of the test service makes new ones.
fn remove_outdated(root: &Path, gc_roots: &Path, digest: &str) {
    let current = format!("closures-{digest}");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("closures-") || name == current || !entry.path().is_dir() {
            continue;
        }
        if !unused_for_long(&entry.path()) {
            continue;
        }
        let _ = std::fs::remove_dir_all(entry.path());
        if let Some(old_digest) = name.strip_prefix("closures-") {
            remove_gc_roots(gc_roots, old_digest);
        }
    }
}

/// Whether `dir` was last used longer than [`UNUSED_FOR`] ago (never marked: by its own
/// modification time).
fn unused_for_long(dir: &Path) -> bool {
    let marker = dir.join(LAST_USED);
    let modified = std::fs::metadata(&marker)
        .or_else(|_| std::fs::metadata(dir))
        .and_then(|meta| meta.modified());
    match modified.map(|time| time.elapsed()) {
        Ok(Ok(age)) => age > UNUSED_FOR,
        // A time in the future or an unreadable folder: leave it alone.
        _ => false,
    }
}

fn remove_gc_roots(gc_roots: &Path, digest: &str) {
    let Ok(entries) = std::fs::read_dir(gc_roots) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(digest) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Builds every closure and both caches into `temp`, which will become `dir`.
fn build(binary: &Path, temp: &Path, dir: &Path, digest: &str) -> Result<()> {
    let expr = temp.join("closures.nix");
    std::fs::write(&expr, EXPRESSION).with_context(|| format!("writing {}", expr.display()))?;
    let binary = binary
        .to_str()
        .context("the ferry-testsvc path is not UTF-8")?;
    let mut paths = serde_json::Map::new();
    std::fs::create_dir_all(GC_ROOTS).with_context(|| format!("creating {GC_ROOTS}"))?;
    let attrs = ["v1", "v2", "broken", "crashing", "multi", "lib", "data"];
    for attr in attrs.into_iter().chain(SYSTEM_ATTRS) {
        let mut build = cmd("nix-build", NIX_BUILD_FLAGS);
        build
            .arg("--no-out-link")
            .arg(&expr)
            .args(["--argstr", "binPath", binary, "-A", attr]);
        let out = run(&mut build)
            .with_context(|| format!("building test closure {attr} with nix-build"))?;
        let path = out.stdout.trim().to_string();
        let root = Path::new(GC_ROOTS).join(format!("{digest}-{attr}"));
        let _ = std::fs::remove_file(&root);
        std::os::unix::fs::symlink(&path, &root)
            .with_context(|| format!("making GC root {}", root.display()))?;
        paths.insert(attr.to_string(), Value::String(path));
    }
    let mut build = cmd("nix-build", NIX_BUILD_FLAGS);
    build
        .arg("--no-out-link")
        .arg(&expr)
        .args(["--argstr", "binPath", binary, "-A", "series"]);
    let out = run(&mut build).context("building the test closures `series` with nix-build")?;
    let series: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    if series.len() != 7 {
        bail!("nix-build -A series printed {} paths, not 7", series.len());
    }
    for (i, path) in series.iter().enumerate() {
        let root = Path::new(GC_ROOTS).join(format!("{digest}-series-{}", i + 1));
        let _ = std::fs::remove_file(&root);
        std::os::unix::fs::symlink(path, &root)
            .with_context(|| format!("making GC root {}", root.display()))?;
    }
    let (secret, public) = (temp.join("key.sec"), temp.join("key.pub"));
    let mut keygen = cmd("nix-store", ["--generate-binary-cache-key", KEY_NAME]);
    keygen.arg(&secret).arg(&public);
    run(&mut keygen).context("generating the test signing key")?;
    let tops: Vec<String> = ["v1", "v2", "broken", "crashing", "multi"]
        .iter()
        .chain(SYSTEM_ATTRS.iter())
        .filter_map(|attr| paths.get(*attr).and_then(Value::as_str).map(str::to_string))
        .chain(series.iter().cloned())
        .collect();
    paths.insert("series".to_owned(), json!(series));
    // The signing key path is recorded as it will be after the rename.
    let final_secret = dir.join("key.sec");
    for (name, key) in [("signed", Some(&secret)), ("unsigned", None)] {
        let mut url = format!("file://{}", temp.join(name).display());
        if let Some(key) = key {
            url.push_str(&format!("?secret-key={}", key.display()));
        }
        let mut copy = cmd("nix", NIX_FLAGS);
        copy.args(["copy", "--option", "substituters", "", "--to", &url])
            .args(&tops);
        run(&mut copy).with_context(|| format!("writing the {name} binary cache"))?;
    }
    let public_key = std::fs::read_to_string(&public).context("reading the test public key")?;
    let manifest = json!({
        "paths": paths,
        "public_key": public_key.trim(),
        "secret_key_file": final_secret,
    });
    let manifest_path = temp.join("closures.json");
    std::fs::write(&manifest_path, manifest.to_string())
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(())
}

/// Reads a finished closure folder.
fn load(dir: &Path) -> Result<Closures> {
    let manifest_path = dir.join("closures.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let path = |attr: &str| -> Result<String> {
        let path = manifest["paths"][attr]
            .as_str()
            .with_context(|| format!("{} lacks path {attr}", manifest_path.display()))?;
        if !Path::new(path).exists() {
            bail!("{path} was garbage-collected; rebuilding");
        }
        Ok(path.to_string())
    };
    Ok(Closures {
        v1: path("v1")?,
        v2: path("v2")?,
        broken: path("broken")?,
        crashing: path("crashing")?,
        multi: path("multi")?,
        multi_deps: vec![path("lib")?, path("data")?],
        systems: StandInSystems {
            ok: path("system_ok")?,
            ok_new_kernel: path("system_ok_new_kernel")?,
            fails: path("system_fails")?,
            fails_a_unit: path("system_fails_a_unit")?,
            breaks_network: path("system_breaks_network")?,
            stops_web: path("system_stops_web")?,
            hangs: path("system_hangs")?,
        },
        series: manifest["paths"]["series"]
            .as_array()
            .with_context(|| format!("{} lacks the series", manifest_path.display()))?
            .iter()
            .map(|p| match p.as_str() {
                Some(p) if Path::new(p).exists() => Ok(p.to_owned()),
                Some(p) => bail!("{p} was garbage-collected; rebuilding"),
                None => bail!(
                    "{} has a series entry that is not a path",
                    manifest_path.display()
                ),
            })
            .collect::<Result<_>>()?,
        public_key: manifest["public_key"]
            .as_str()
            .context("closures.json lacks public_key")?
            .to_string(),
        secret_key_file: dir.join("key.sec"),
        signed_cache: dir.join("signed"),
        unsigned_cache: dir.join("unsigned"),
    })
}
