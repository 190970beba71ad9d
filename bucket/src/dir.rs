//! A `file://` bucket: a local directory with the bucket's layout. Writes are atomic (temp
//! file, fsync, rename, directory fsync) so a reader — `nix copy --from file://…` or an
//! agent — never sees a torn object. ETags come from size and modification time, which is
//! what a conditional GET needs.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use crate::atomic_file;
use crate::bucket::{Bucket, BucketError, Fetched, ObjectInfo};

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

fn etag_of(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
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
            out.push(ObjectInfo {
                key,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

impl Bucket for DirBucket {
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
        let etag = etag_of(&meta);
        if if_none_match == Some(etag.as_str()) {
            return Ok(Fetched::Unchanged);
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_refused(&path, &e))?;
        Ok(Fetched::Found {
            bytes,
            etag: Some(etag),
        })
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
        assert!(b.exists("nar/a.nar.zst").await.unwrap());
        assert!(!b.exists("nar/c.nar.zst").await.unwrap());

        let nars = b.list("nar/").await.unwrap();
        assert_eq!(
            nars,
            vec![
                ObjectInfo {
                    key: "nar/a.nar.zst".into(),
                    size: 10
                },
                ObjectInfo {
                    key: "nar/b.nar.zst".into(),
                    size: 100_000
                },
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

    impl Fetched {
        fn etag_for_test(&self) -> Option<String> {
            match self {
                Fetched::Found { etag, .. } => etag.clone(),
                _ => None,
            }
        }
    }
}
