//! A `file://` bucket: a local directory with the bucket's layout. Writes are atomic (temp
//! file, fsync, rename, directory fsync) so a reader — `nix copy --from file://…` or an
//! agent — never sees a torn object. Small objects (manifests, narinfos, leases) get an
//! ETag from their content, so a conditional write cannot mistake one version for another;
//! large ones (NARs, written once under content-addressed names) one from size and
//! modification time, which spares hashing them on every read. Conditional writes hold an
//! exclusive `flock` on a `.<name>.lock` file beside the object while they compare and
//! replace.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::atomic_file;
use crate::bucket::{
    Bucket, BucketError, Fetched, ObjectInfo, ObjectReader, PutCondition, PutOutcome, Timed,
    within_limit,
};

/// Objects up to this size get a content ETag.
const CONTENT_ETAG_MAX: u64 = 1024 * 1024;

/// A directory used as the bucket.
#[derive(Debug)]
pub struct DirBucket {
    root: PathBuf,
    requests: AtomicU64,
}

impl DirBucket {
    /// A bucket rooted at `root` (created on the first write if missing).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            requests: AtomicU64::new(0),
        }
    }

    /// The directory (usable directly as a `file://` binary cache by `nix copy`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The file for `key`, refusing keys that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, BucketError> {
        let rel = Path::new(key);
        if key.is_empty()
            || rel.is_absolute()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(BucketError::Refused(format!(
                "{key:?} is not a plain relative object key"
            )));
        }
        Ok(self.root.join(rel))
    }

    fn root_missing(&self) -> BucketError {
        BucketError::Unreachable(format!(
            "bucket directory {} is missing",
            self.root.display()
        ))
    }
}

fn io_refused(path: &Path, e: &std::io::Error) -> BucketError {
    BucketError::Refused(format!("{}: {e}", path.display()))
}

/// Writes an object through [`atomic_file::write_with`] (listings skip its `.tmp-` files),
/// creating the key's folders first.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent directory"))?;
    fs::create_dir_all(dir)?;
    // 0o666 minus the umask: what `File::create` gave objects before.
    atomic_file::write_with(path, 0o666, write)
}

/// The ETag of a large object: size and modification time.
fn stat_etag(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
}

/// The ETag of a small object: a hash of its bytes (file timestamps are too coarse to
/// tell two quick writes of the same size apart).
fn content_etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The object at `path` and its ETag; `None` when there is no such file.
fn read_with_etag(path: &Path) -> std::io::Result<Option<(Vec<u8>, String)>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let etag = if bytes.len() as u64 <= CONTENT_ETAG_MAX {
        content_etag(&bytes)
    } else {
        stat_etag(&fs::metadata(path)?)
    };
    Ok(Some((bytes, etag)))
}

/// Compares and replaces `path` under an exclusive lock on `.<name>.lock` beside it.
fn put_if_locked(
    path: &Path,
    bytes: &[u8],
    condition: &PutCondition,
) -> std::io::Result<PutOutcome> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("object path has no file name"))?;
    fs::create_dir_all(dir)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".{}.lock", name.to_string_lossy())))?;
    // Released when `lock` is dropped, also on an early return.
    lock.lock()?;
    let current = read_with_etag(path)?;
    let holds = match (condition, &current) {
        (PutCondition::IfAbsent, None) => true,
        (PutCondition::IfMatch(want), Some((_, etag))) => want == etag,
        _ => false,
    };
    if !holds {
        return Ok(PutOutcome::PreconditionFailed);
    }
    write_atomic(path, |f| f.write_all(bytes))?;
    Ok(PutOutcome::Written)
}

fn list_into(
    dir: &Path,
    rel: &str,
    prefix: &str,
    out: &mut Vec<ObjectInfo>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{rel}{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let sub = format!("{key}/");
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                list_into(&entry.path(), &sub, prefix, out)?;
            }
        } else if kind.is_file() && key.starts_with(prefix) {
            let meta = entry.metadata()?;
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        }
    }
    Ok(())
}

impl Bucket for DirBucket {
    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        self.count();
        let Ok(path) = self.path_of(key) else {
            return Ok(None);
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tokio::fs::metadata(&self.root).await.is_err() {
                    return Err(self.root_missing());
                }
                return Ok(None);
            }
            Err(e) => return Err(io_refused(&path, &e)),
        };
        let meta = file.metadata().await.map_err(|e| io_refused(&path, &e))?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(ObjectReader {
            len: Some(meta.len()),
            body: Box::pin(file),
        }))
    }

    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        self.count();
        let Ok(path) = self.path_of(key) else {
            return Ok(Fetched::Missing);
        };
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(Fetched::Missing),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tokio::fs::metadata(&self.root).await.is_err() {
                    return Err(self.root_missing());
                }
                return Ok(Fetched::Missing);
            }
            Err(e) => return Err(io_refused(&path, &e)),
        };
        if meta.len() > CONTENT_ETAG_MAX && if_none_match == Some(stat_etag(&meta).as_str()) {
            return Ok(Fetched::Unchanged);
        }
        let target = path.clone();
        let read = tokio::task::spawn_blocking(move || read_with_etag(&target))
            .await
            .map_err(|e| BucketError::Refused(format!("{}: {e}", path.display())))?
            .map_err(|e| io_refused(&path, &e))?;
        match read {
            None => Ok(Fetched::Missing),
            Some((_, etag)) if if_none_match == Some(etag.as_str()) => Ok(Fetched::Unchanged),
            Some((bytes, etag)) => Ok(Fetched::Found {
                bytes,
                etag: Some(etag),
            }),
        }
    }

    async fn get_timed(&self, key: &str) -> Result<Option<Timed>, BucketError> {
        // One machine, one clock: the file's mtime and now are both that clock's.
        let modified = match self.path_of(key) {
            Ok(path) => tokio::fs::metadata(&path)
                .await
                .ok()
                .and_then(|m| m.modified().ok()),
            Err(_) => None,
        };
        Ok(match self.get(key, None).await? {
            Fetched::Found { bytes, etag } => Some(Timed {
                bytes,
                etag,
                age: modified.map(|m| SystemTime::now().duration_since(m).unwrap_or_default()),
            }),
            Fetched::Missing | Fetched::Unchanged => None,
        })
    }

    async fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        // The file's size is known before reading: refuse a large one unread.
        if let Ok(path) = self.path_of(key)
            && let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.is_file()
            && meta.len() > limit
        {
            self.count();
            return Err(BucketError::TooLarge {
                key: key.to_owned(),
                limit,
                size: Some(meta.len()),
            });
        }
        // It may have grown between the two looks.
        within_limit(key, limit, self.get(key, if_none_match).await?)
    }

    async fn exists(&self, key: &str) -> Result<bool, BucketError> {
        self.count();
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tokio::fs::metadata(&self.root).await.is_err() {
                    return Err(self.root_missing());
                }
                Ok(false)
            }
            Err(e) => Err(io_refused(&path, &e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        self.count();
        let path = self.path_of(key)?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&target, |f| f.write_all(&bytes)))
            .await
            .map_err(|e| BucketError::Refused(format!("{}: {e}", path.display())))?
            .map_err(|e| io_refused(&path, &e))
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: PutCondition,
    ) -> Result<PutOutcome, BucketError> {
        self.count();
        let path = self.path_of(key)?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || put_if_locked(&target, &bytes, &condition))
            .await
            .map_err(|e| BucketError::Refused(format!("{}: {e}", path.display())))?
            .map_err(|e| io_refused(&path, &e))
    }

    async fn conditional_writes(&self) -> Result<bool, BucketError> {
        Ok(true)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), BucketError> {
        self.count();
        let path = self.path_of(key)?;
        let (target, source) = (path.clone(), file.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut input = File::open(&source).map_err(|e| (source.clone(), e))?;
            write_atomic(&target, |f| std::io::copy(&mut input, f).map(drop))
                .map_err(|e| (target.clone(), e))
        })
        .await
        .map_err(|e| BucketError::Refused(format!("{}: {e}", path.display())))?
        .map_err(|(p, e)| io_refused(&p, &e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        self.count();
        let (root, owned_prefix) = (self.root.clone(), prefix.to_owned());
        let listed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            list_into(&root, "", &owned_prefix, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| BucketError::Refused(format!("{}: {e}", self.root.display())))?;
        match listed {
            Ok(mut out) => {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.root_missing()),
            Err(e) => Err(io_refused(&self.root, &e)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), BucketError> {
        let source = self.path_of(from)?;
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            self.count();
            return Err(BucketError::NotFound(from.to_owned()));
        }
        self.put_file(to, &source).await
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.count();
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_refused(&path, &e)),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_get_refuses_a_file_over_the_limit_unread() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBucket::new(dir.path().to_owned());
        b.put("manifest.json", vec![b' '; 100]).await.unwrap();
        let err = b.get_bounded("manifest.json", None, 99).await.unwrap_err();
        assert!(
            matches!(
                err,
                BucketError::TooLarge {
                    limit: 99,
                    size: Some(100),
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("over the size cap of 99 bytes"),
            "{err}"
        );
        let Fetched::Found { bytes, etag } =
            b.get_bounded("manifest.json", None, 100).await.unwrap()
        else {
            panic!("expected the object")
        };
        assert_eq!(bytes.len(), 100);
        assert_eq!(
            b.get_bounded("manifest.json", etag.as_deref(), 1)
                .await
                .unwrap_err()
                .to_string(),
            err.to_string().replace("99", "1"),
            "the size is checked before the ETag"
        );
        assert_eq!(
            b.get_bounded("absent", None, 1).await.unwrap(),
            Fetched::Missing
        );
    }

    #[tokio::test]
    async fn put_get_list_copy_delete_on_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBucket::new(dir.path().join("bucket"));
        assert!(matches!(
            b.get("manifest.json", None).await,
            Err(BucketError::Unreachable(_))
        ));
        b.put("manifest.json", b"{}".to_vec()).await.unwrap();
        b.put("nar/a.nar.zst", vec![1; 10]).await.unwrap();
        let src = dir.path().join("big");
        std::fs::write(&src, vec![7u8; 100_000]).unwrap();
        b.put_file("nar/b.nar.zst", &src).await.unwrap();

        let Fetched::Found { bytes, etag } = b.get("manifest.json", None).await.unwrap() else {
            panic!("expected the object")
        };
        assert_eq!(bytes, b"{}");
        let etag = etag.unwrap();
        assert_eq!(
            b.get("manifest.json", Some(&etag)).await.unwrap(),
            Fetched::Unchanged
        );
        assert_eq!(b.get("nope", None).await.unwrap(), Fetched::Missing);
        assert_eq!(
            b.get("../etc/passwd", None).await.unwrap(),
            Fetched::Missing
        );
        let mut reader = b.get_reader("nar/b.nar.zst").await.unwrap().unwrap();
        assert_eq!(reader.len, Some(100_000));
        let mut streamed = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader.body, &mut streamed)
            .await
            .unwrap();
        assert_eq!(streamed, vec![7u8; 100_000]);
        assert!(b.get_reader("nope").await.unwrap().is_none());
        assert!(b.get_reader("../etc/passwd").await.unwrap().is_none());
        assert!(b.exists("nar/a.nar.zst").await.unwrap());
        assert!(!b.exists("nar/c.nar.zst").await.unwrap());

        let nars: Vec<(String, u64)> = b
            .list("nar/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| {
                assert!(o.modified.is_some(), "{o:?} has no modification time");
                (o.key, o.size)
            })
            .collect();
        assert_eq!(
            nars,
            vec![
                ("nar/a.nar.zst".to_owned(), 10),
                ("nar/b.nar.zst".to_owned(), 100_000)
            ]
        );
        assert_eq!(b.list("").await.unwrap().len(), 3);

        b.copy("manifest.json", "manifests/manifest-1.json")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(b.root().join("manifests/manifest-1.json")).unwrap(),
            b"{}"
        );
        assert!(matches!(
            b.copy("absent.json", "x.json").await,
            Err(BucketError::NotFound(_))
        ));
        b.delete("nar/a.nar.zst").await.unwrap();
        b.delete("nar/a.nar.zst").await.unwrap();
        assert!(!b.exists("nar/a.nar.zst").await.unwrap());
        // No temp files are left beside the objects.
        let stray: Vec<_> = std::fs::read_dir(b.root().join("nar"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty());
        assert!(b.requests() > 10);
    }

    #[tokio::test]
    async fn overwriting_replaces_the_whole_object() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBucket::new(dir.path().to_owned());
        b.put("k", vec![1; 1000]).await.unwrap();
        b.put("k", vec![2; 3]).await.unwrap();
        assert_eq!(
            b.get("k", None).await.unwrap(),
            Fetched::Found {
                bytes: vec![2; 3],
                etag: b.get("k", None).await.unwrap().etag_for_test()
            }
        );
    }

    #[tokio::test]
    async fn conditional_puts_compare_content_etags() {
        let dir = tempfile::tempdir().unwrap();
        let b = DirBucket::new(dir.path().to_owned());
        assert!(b.conditional_writes().await.unwrap());
        assert_eq!(
            b.put_if("m.json", b"one".to_vec(), PutCondition::IfAbsent)
                .await
                .unwrap(),
            PutOutcome::Written
        );
        assert_eq!(
            b.put_if("m.json", b"two".to_vec(), PutCondition::IfAbsent)
                .await
                .unwrap(),
            PutOutcome::PreconditionFailed
        );
        let etag1 = b
            .get("m.json", None)
            .await
            .unwrap()
            .etag_for_test()
            .unwrap();
        // Same size, written at once: only the content tells the versions apart.
        b.put_if(
            "m.json",
            b"uno".to_vec(),
            PutCondition::IfMatch(etag1.clone()),
        )
        .await
        .unwrap();
        let etag2 = b
            .get("m.json", None)
            .await
            .unwrap()
            .etag_for_test()
            .unwrap();
        assert_ne!(etag1, etag2);
        assert_eq!(
            b.put_if("m.json", b"dos".to_vec(), PutCondition::IfMatch(etag1))
                .await
                .unwrap(),
            PutOutcome::PreconditionFailed
        );
        assert_eq!(std::fs::read(dir.path().join("m.json")).unwrap(), b"uno");
        assert_eq!(
            b.put_if("gone.json", b"x".to_vec(), PutCondition::IfMatch(etag2))
                .await
                .unwrap(),
            PutOutcome::PreconditionFailed
        );
        // The lock file is hidden from listings (and so from `nix copy`).
        let keys: Vec<String> = b
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["m.json"]);
    }

    #[tokio::test]
    async fn racing_conditional_writers_never_both_win() {
        let dir = tempfile::tempdir().unwrap();
        let b = std::sync::Arc::new(DirBucket::new(dir.path().to_owned()));
        b.put("m.json", b"base".to_vec()).await.unwrap();
        let base = b
            .get("m.json", None)
            .await
            .unwrap()
            .etag_for_test()
            .unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (b, base) = (b.clone(), base.clone());
                tokio::spawn(async move {
                    b.put_if(
                        "m.json",
                        format!("w{i}").into_bytes(),
                        PutCondition::IfMatch(base),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for w in writers {
            if w.await.unwrap() == PutOutcome::Written {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    }

    impl Fetched {
        fn etag_for_test(&self) -> Option<String> {
            match self {
                Fetched::Found { etag, .. } => etag.clone(),
                _ => None,
            }
        }
    }
}
