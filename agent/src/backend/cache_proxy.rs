//! Serves the bucket read-only on `127.0.0.1:<random port>/<random token>/` while `nix copy`
//! runs, because Nix's own S3 support depends on how Nix was built (Debian's has none). The
//! proxy is not trusted: Nix still checks every narinfo signature against the host's keys.
//! The random prefix keeps other local users from reading the bucket through it, but the
//! URL is on `nix copy`'s command line, which every local user can read: so the proxy serves
//! the binary cache and nothing else (`nix-cache-info`, `<hash>.narinfo`, `nar/<file>`), never
//! the manifest, its archives, status reports or any other object. NARs are streamed through
//! as they arrive, so the agent's memory does not grow with the largest one; narinfos are
//! small and capped ([`NARINFO_CAP`]). What the bucket says when it fails goes to the agent's
//! log, not to whoever asked. Told what it is about to pull, the proxy also fetches ahead
//! of Nix ([`super::cache_prefetch`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

use ferry_schema::names::is_nix_hash;

use super::bucket::ReadBucket;
use super::cache_prefetch::{Cache, NarInfo, prefetch};

/// The largest narinfo the proxy passes on. Real ones are hundreds of bytes, and a few
/// hundred KiB for paths with thousands of references; Nix reads a narinfo whole, so a
/// planted gigabyte one must stop here.
pub const NARINFO_CAP: u64 = 1024 * 1024;

/// The largest piece of a NAR read from the bucket and written to Nix at once: the default
/// 4 KiB made a write (and a frame) per 4 KiB of every NAR.
const STREAM_CHUNK: usize = 64 * 1024;

/// How long the accept loop rests after a failed accept (e.g. out of file descriptors),
/// instead of retrying at once and spinning a core while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a request may ask for: the three kinds of object a Nix binary cache has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheObject {
    /// `nix-cache-info`.
    Info,
    /// `<32 characters of Nix base-32>.narinfo`.
    NarInfo,
    /// `nar/<name>.nar[.<compression>]`, as Nix and `ferry upload` name them.
    Nar,
}

/// Which cache object `key` is, or `None` for anything else (the manifest, archives, status
/// reports, other folders, `..`, empty components). Pure.
pub fn cache_object(key: &str) -> Option<CacheObject> {
    if key == ferry_schema::layout::CACHE_INFO_KEY {
        return Some(CacheObject::Info);
    }
    if let Some(hash) = key.strip_suffix(".narinfo") {
        return is_nix_hash(hash).then_some(CacheObject::NarInfo);
    }
    let file = key.strip_prefix(ferry_schema::layout::NAR_PREFIX)?;
    let (name, rest) = file.split_once(".nar")?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ext_ok = rest.is_empty()
        || rest.strip_prefix('.').is_some_and(|ext| {
            !ext.is_empty()
                && ext
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    (name_ok && ext_ok).then_some(CacheObject::Nar)
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct CacheProxy {
    url: String,
    task: JoinHandle<()>,
    ahead: Option<JoinHandle<()>>,
    cache: Arc<Cache>,
}

impl CacheProxy {
    /// Start serving `bucket` on a random loopback port under a random path prefix.
    pub async fn start<B: ReadBucket>(bucket: Arc<B>) -> std::io::Result<Self> {
        Self::start_with_prefetch(bucket, &[]).await
    }

    /// Like [`CacheProxy::start`], and fetch the closures of `roots` (store paths) ahead of
    /// the `nix copy` about to pull them.
    pub async fn start_with_prefetch<B: ReadBucket>(
        bucket: Arc<B>,
        roots: &[String],
    ) -> std::io::Result<Self> {
        let cache = Arc::new(Cache::default());
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let token: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let url = format!("http://127.0.0.1:{port}/{token}");
        let prefix = Arc::new(format!("/{token}/"));
        let ahead = (!roots.is_empty())
            .then(|| tokio::spawn(prefetch(bucket.clone(), cache.clone(), roots.to_vec())));
        let serving = cache.clone();
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("cache proxy: cannot accept a connection: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Without it, Nagle's algorithm holds each response's first body bytes
                // until Nix acknowledges its headers, and Nix delays that ACK (up to 40 ms):
                // once per NAR, most of a pull's time on loopback.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("cache proxy: cannot set TCP_NODELAY: {e}");
                }
                let bucket = bucket.clone();
                let prefix = prefix.clone();
                let cache = serving.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let bucket = bucket.clone();
                        let prefix = prefix.clone();
                        let cache = cache.clone();
                        async move { Ok::<_, Infallible>(serve(&*bucket, &cache, &prefix, req).await) }
                    });
                    // A client that hangs up mid-transfer is nix's business, not ours.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            task,
            ahead,
            cache,
        })
    }

    /// The binary cache URL to give `nix copy --from`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// NARs served from what the proxy fetched ahead, not streamed from the bucket.
    pub fn served_ahead(&self) -> u64 {
        self.cache.served_ahead()
    }

    /// Waits until the look-ahead has fetched all it will, for tests and benchmarks (a pull
    /// never waits for it: `nix copy` starts at once and shares what is in flight).
    pub async fn ahead_done(&mut self) {
        if let Some(ahead) = self.ahead.as_mut() {
            let _ = ahead.await;
            self.ahead = None;
        }
    }
}

impl Drop for CacheProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(ahead) = &self.ahead {
            ahead.abort();
        }
    }
}

/// A response body: a short literal, or an object streamed from the bucket.
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn reply(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

/// The answer when the bucket fails: the detail goes to the log, the client learns only
/// that the bucket failed.
fn bucket_failed(key: &str, detail: &dyn std::fmt::Display) -> Response<Body> {
    tracing::warn!("cache proxy: {key}: {detail}");
    reply(
        StatusCode::BAD_GATEWAY,
        "the bucket did not answer; see the ferry-agent log\n",
    )
}

async fn serve<B: ReadBucket>(
    bucket: &B,
    cache: &Cache,
    prefix: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let Some(key) = req.uri().path().strip_prefix(prefix) else {
        return reply(StatusCode::NOT_FOUND, "");
    };
    // Anything else is refused exactly like a missing object, so nothing tells a prober
    // whether it exists.
    let Some(kind) = cache_object(key) else {
        return reply(StatusCode::NOT_FOUND, "");
    };
    let head = req.method() == Method::HEAD;
    if kind == CacheObject::NarInfo {
        return narinfo(key, cache.narinfo(bucket, key).await, head);
    }
    if kind == CacheObject::Nar
        && !head
        && let Some(bytes) = cache.take_nar(key).await
    {
        return whole(bytes, false);
    }
    let object = match bucket.get_reader(key).await {
        Ok(Some(object)) => object,
        Ok(None) => return reply(StatusCode::NOT_FOUND, ""),
        Err(e) => return bucket_failed(key, &e),
    };
    let mut r = if head {
        reply(StatusCode::OK, "")
    } else {
        let frames = ReaderStream::with_capacity(object.body, STREAM_CHUNK).map_ok(Frame::data);
        Response::new(StreamBody::new(frames).boxed_unsync())
    };
    if let Some(len) = object.len {
        r.headers_mut().insert(CONTENT_LENGTH, len.into());
    }
    r
}

/// An object held whole, with its length.
fn whole(bytes: Bytes, head: bool) -> Response<Body> {
    let len = bytes.len() as u64;
    let mut r = if head {
        reply(StatusCode::OK, "")
    } else {
        Response::new(
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    };
    r.headers_mut().insert(CONTENT_LENGTH, len.into());
    r
}

/// A narinfo as the bucket answered it; one over [`NARINFO_CAP`] is refused before Nix
/// reads a byte of it.
fn narinfo(key: &str, answer: NarInfo, head: bool) -> Response<Body> {
    match answer {
        NarInfo::Found(bytes) => whole(bytes, head),
        NarInfo::Missing => reply(StatusCode::NOT_FOUND, ""),
        NarInfo::Failed(detail) => bucket_failed(key, &detail),
        NarInfo::TooLarge(size) => {
            tracing::warn!(
                "cache proxy: {key} is {size} bytes, over the narinfo cap of {NARINFO_CAP}; refused (a narinfo this large is not one `ferry upload` writes)"
            );
            reply(
                StatusCode::BAD_GATEWAY,
                "narinfo over ferry-agent's size cap; see the ferry-agent log\n",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binary_cache_objects_are_served() {
        for (key, kind) in [
            ("nix-cache-info", CacheObject::Info),
            (
                "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo",
                CacheObject::NarInfo,
            ),
            (
                "nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst",
                CacheObject::Nar,
            ),
            ("nar/1w1f.nar.xz", CacheObject::Nar),
            ("nar/1w1f.nar", CacheObject::Nar),
        ] {
            assert_eq!(cache_object(key), Some(kind), "{key}");
        }
        for key in [
            "manifest.json",
            ferry_schema::layout::CACHE_INDEX_KEY,
            "manifests/manifest-2025-01-01T00:00:00Z.json",
            "status/web-1.json",
            "/manifest.json",
            "",
            "nar/",
            "nar/x.txt",
            "nar/../manifest.json",
            "nar/a/b.nar",
            "nar/x.nar.",
            "nar/X.nar",
            "nar/x.nar.zst/../../manifest.json",
            "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo.bak",
            "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4e.narinfo",
            "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4.narinfo",
            "../0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo",
            "nix-cache-info/x",
        ] {
            assert_eq!(cache_object(key), None, "{key:?}");
        }
    }
}
