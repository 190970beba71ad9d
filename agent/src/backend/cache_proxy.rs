//! Serves the bucket read-only on `127.0.0.1:<random port>/<random token>/` while `nix copy`
//! runs, because Nix's own S3 support depends on how Nix was built (Debian's has none). The
//! proxy is not trusted: Nix still checks every narinfo signature against the host's keys.
//! The random prefix keeps other local users from reading the bucket through it.
//! Objects are streamed through as they arrive, so the agent's memory does not grow with
//! the largest NAR.

use std::convert::Infallible;
use std::sync::Arc;

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

use super::bucket::ReadBucket;

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct CacheProxy {
    url: String,
    task: JoinHandle<()>,
}

impl CacheProxy {
    /// Start serving `bucket` on a random loopback port under a random path prefix.
    pub async fn start<B: ReadBucket>(bucket: Arc<B>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let token: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let url = format!("http://127.0.0.1:{port}/{token}");
        let prefix = Arc::new(format!("/{token}/"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let bucket = bucket.clone();
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let bucket = bucket.clone();
                        let prefix = prefix.clone();
                        async move { Ok::<_, Infallible>(serve(&*bucket, &prefix, req).await) }
                    });
                    // A client that hangs up mid-transfer is nix's business, not ours.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { url, task })
    }

    /// The binary cache URL to give `nix copy --from`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for CacheProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response body: a short literal, or an object streamed from the bucket.
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

async fn serve<B: ReadBucket>(bucket: &B, prefix: &str, req: Request<Incoming>) -> Response<Body> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
    }
    let Some(key) = req.uri().path().strip_prefix(prefix) else {
        return reply(StatusCode::NOT_FOUND, Bytes::new());
    };
    match bucket.get_reader(key).await {
        Ok(Some(object)) => {
            let mut r = if req.method() == Method::HEAD {
                reply(StatusCode::OK, Bytes::new())
            } else {
                let frames = ReaderStream::new(object.body).map_ok(Frame::data);
                Response::new(StreamBody::new(frames).boxed_unsync())
            };
            if let Some(len) = object.len {
                r.headers_mut().insert(CONTENT_LENGTH, len.into());
            }
            r
        }
        Ok(None) => reply(StatusCode::NOT_FOUND, Bytes::new()),
        Err(e) => reply(StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
    }
}
