//! The `Probe` trait and its network implementation: an HTTP/1 GET (hyper's client over a
//! fresh tokio TCP connection) or a bare TCP connect, always to 127.0.0.1 and bounded by a
//! timeout. A fresh connection per try matters: a kept-alive connection to a process that
//! has since died would say nothing about the new one.

use std::future::Future;
use std::time::Duration;

use http_body_util::Empty;
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// Why a probe got no answer (an answer with a bad status is not an error: the caller
/// judges statuses).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// Nothing accepted the connection (nothing listening, or refused).
    #[error("connection to 127.0.0.1:{port} failed: {reason}")]
    Connect {
        /// Port.
        port: u16,
        /// What the OS said.
        reason: String,
    },
    /// The connection was made but the HTTP exchange failed.
    #[error("HTTP GET {path} on 127.0.0.1:{port} failed: {reason}")]
    Http {
        /// Port.
        port: u16,
        /// Path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the limit.
    #[error("no answer from 127.0.0.1:{port} within {after:?}")]
    Timeout {
        /// Port.
        port: u16,
        /// The limit.
        after: Duration,
    },
}

/// Probes a local service.
pub trait Probe: Send + Sync {
    /// `GET http://127.0.0.1:<port><path>`; the response status.
    fn http_status(
        &self,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<u16, ProbeError>> + Send;
    /// Open (and close) a TCP connection to `127.0.0.1:<port>`.
    fn tcp_connect(
        &self,
        port: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// Probes over the loopback network.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetProbe;

async fn connect(port: u16) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| ProbeError::Connect {
            port,
            reason: e.to_string(),
        })
}

async fn get_status(port: u16, path: &str) -> Result<u16, ProbeError> {
    let http_err = |reason: String| ProbeError::Http {
        port,
        path: path.to_owned(),
        reason,
    };
    let stream = connect(port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    // The connection task ends when the response is dropped or the stream closes; the
    // caller's timeout drops it either way.
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::USER_AGENT, "ferry-agent health check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_err(e.to_string()))?;
    let result = sender
        .send_request(request)
        .await
        .map(|response| response.status().as_u16())
        .map_err(|e| http_err(e.to_string()));
    driver.abort();
    result
}

impl Probe for NetProbe {
    async fn http_status(
        &self,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<u16, ProbeError> {
        tokio::time::timeout(timeout, get_status(port, path))
            .await
            .unwrap_or(Err(ProbeError::Timeout {
                port,
                after: timeout,
            }))
    }

    async fn tcp_connect(&self, port: u16, timeout: Duration) -> Result<(), ProbeError> {
        match tokio::time::timeout(timeout, connect(port)).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProbeError::Timeout {
                port,
                after: timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against real sockets on loopback: a hyper server answering by path, a closed port, and
    //! a listener that accepts but never answers. (The bed tests probe the real test service.)

    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use tokio::net::TcpListener;

    use super::*;

    async fn server() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let status = match req.uri().path() {
                            "/health" => StatusCode::OK,
                            "/sick" => StatusCode::SERVICE_UNAVAILABLE,
                            _ => StatusCode::NOT_FOUND,
                        };
                        let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
                        *r.status_mut() = status;
                        Ok::<_, Infallible>(r)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        port
    }

    async fn closed_port() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn http_statuses_from_a_real_server() {
        let port = server().await;
        let t = Duration::from_secs(5);
        assert_eq!(NetProbe.http_status(port, "/health", t).await, Ok(200));
        assert_eq!(NetProbe.http_status(port, "/sick", t).await, Ok(503));
        assert_eq!(NetProbe.http_status(port, "/", t).await, Ok(404));
        assert_eq!(NetProbe.tcp_connect(port, t).await, Ok(()));
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = closed_port().await;
        let t = Duration::from_secs(5);
        let e = NetProbe.http_status(port, "/", t).await.unwrap_err();
        assert!(
            matches!(&e, ProbeError::Connect { port: p, reason } if *p == port && reason.contains("refused")),
            "{e}"
        );
        assert!(matches!(
            NetProbe.tcp_connect(port, t).await,
            Err(ProbeError::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_times_out() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The kernel completes the handshake from the backlog; nobody ever reads or writes.
        let after = Duration::from_millis(300);
        let started = std::time::Instant::now();
        assert_eq!(
            NetProbe.http_status(port, "/health", after).await,
            Err(ProbeError::Timeout { port, after })
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }
}
