//! The `Proxy` backend: Caddy's admin API over loopback TCP or a unix socket, with hyper's
//! HTTP/1 client (reqwest cannot speak over a unix socket). Reads one server's config and
//! writes Ferry's routes by `@id`; which writes to make is decided in `routes`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use thiserror::Error;

use crate::vocab::Route;

/// Where Caddy's admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    /// `HOST:PORT`; also the Host header (Caddy refuses other Host values, even `localhost`
    /// without the port).
    Tcp(String),
    /// `unix//path/to/socket`; Caddy wants an empty Host header there.
    Unix(PathBuf),
}

/// Why an admin address is not usable.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{given:?} is not an admin address: {why}; use HOST:PORT like localhost:2019 or unix//run/caddy/admin.sock"
)]
pub struct AdminAddressError {
    given: String,
    why: &'static str,
}

impl AdminAddress {
    /// Parse Caddy's own syntax for the admin listener: `HOST:PORT` or `unix/PATH`, where
    /// Caddy ≥ 2.8 lets the path end in `|MODE` (the socket's octal permissions, which
    /// concern Caddy, not its clients).
    pub fn parse(text: &str) -> Result<Self, AdminAddressError> {
        let err = |why| AdminAddressError {
            given: text.to_owned(),
            why,
        };
        if let Some(path) = text.strip_prefix("unix/") {
            let path = match path.rsplit_once('|') {
                Some((path, mode))
                    if !mode.is_empty() && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
                {
                    path
                }
                Some(_) => return Err(err("after `|` comes an octal socket mode like 0220")),
                None => path,
            };
            if !path.starts_with('/') {
                return Err(err("the socket path must be absolute (unix//run/…)"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.contains('/') {
            return Err(err("no scheme or path is allowed"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| err("no :PORT"))?;
        if host.is_empty() {
            return Err(err("no host before :PORT"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(err("the port is not a number from 1 to 65535"));
        }
        Ok(Self::Tcp(text.to_owned()))
    }

    fn host_header(&self) -> &str {
        match self {
            Self::Tcp(hp) => hp,
            Self::Unix(_) => "",
        }
    }
}

/// What went wrong talking to Caddy. Each names the admin address and the request.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// No connection, or no answer in time.
    #[error("Caddy admin API at {admin} unreachable ({request}): {reason}")]
    Unreachable {
        /// The admin address.
        admin: String,
        /// Method and path.
        request: String,
        /// What failed.
        reason: String,
    },
    /// Caddy answered with an error status.
    #[error("Caddy admin API at {admin}: {request} answered {status}: {message}")]
    Refused {
        /// The admin address.
        admin: String,
        /// Method and path (names the route id).
        request: String,
        /// HTTP status.
        status: u16,
        /// Caddy's `error` text, or the body.
        message: String,
    },
    /// Caddy answered something that is not the expected JSON.
    #[error("Caddy admin API at {admin}: {request} gave unexpected content: {reason}")]
    Unexpected {
        /// The admin address.
        admin: String,
        /// Method and path.
        request: String,
        /// What was wrong.
        reason: String,
    },
}

impl ProxyError {
    /// Whether Caddy could not be reached at all (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// The reverse proxy, as far as Ferry drives it: one server's config and its routes by id.
#[allow(async_fn_in_trait)]
pub trait Proxy {
    /// The admin address, for messages.
    fn admin(&self) -> &str;
    /// Requests made so far (reads and writes), so a tick can show it stays cheap.
    fn requests(&self) -> u64;
    /// The server's config object (`apps.http.servers.<server>`), `None` when absent.
    async fn server(&self, server: &str) -> Result<Option<Value>, ProxyError>;
    /// Create the server `value` under `apps.http.servers.<server>`, creating the parents
    /// Caddy does not create itself.
    async fn create_server(&self, server: &str, value: &Value) -> Result<(), ProxyError>;
    /// Replace the route with this `@id` in place. `false` when Caddy has no such id.
    async fn replace(&self, route: &Route) -> Result<bool, ProxyError>;
    /// Insert a route at `index` of the server's routes array (an index equal to its length
    /// appends).
    async fn insert(&self, server: &str, index: usize, route: &Route) -> Result<(), ProxyError>;
    /// Delete the route with this `@id`; an absent one counts as deleted.
    async fn delete(&self, id: &str) -> Result<(), ProxyError>;
    /// Set the server's whole routes array; `exists` says whether it has one already.
    async fn set_routes(
        &self,
        server: &str,
        routes: &[Value],
        exists: bool,
    ) -> Result<(), ProxyError>;

    /// Upsert without ever duplicating an id: replace by id, and only when Caddy has none,
    /// insert at `index`. (Caddy does not enforce unique ids: a PUT or POST to `/id/<id>`
    /// would add a second copy.)
    async fn upsert(&self, server: &str, index: usize, route: &Route) -> Result<(), ProxyError> {
        if self.replace(route).await? {
            return Ok(());
        }
        self.insert(server, index, route).await
    }
}

/// Caddy's admin API.
#[derive(Debug, Clone)]
pub struct CaddyAdmin {
    address: AdminAddress,
    shown: String,
    timeout: Duration,
    requests: Arc<AtomicU64>,
}

impl CaddyAdmin {
    /// A client for the admin API at `address` (Caddy syntax), each request bounded by
    /// `timeout`.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, AdminAddressError> {
        Ok(Self {
            address: AdminAddress::parse(address)?,
            shown: address.to_owned(),
            timeout,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    fn server_path(server: &str) -> String {
        format!("/config/apps/http/servers/{server}")
    }

    /// One request; returns the status and body. Every status is returned: callers decide
    /// which ones are errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), ProxyError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request = format!("{method} {path}");
        let unreachable = |reason: String| ProxyError::Unreachable {
            admin: self.shown.clone(),
            request: request.clone(),
            reason,
        };
        let exchange = self.exchange(method, path, body);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.map_err(unreachable),
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), String> {
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.address.host_header());
        if body.is_some() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = builder.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        match &self.address {
            AdminAddress::Tcp(hp) => {
                let stream = tokio::net::TcpStream::connect(hp.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                send(stream, req).await
            }
            AdminAddress::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                send(stream, req).await
            }
        }
    }

    /// A request that must answer 2xx; anything else is `Refused` with Caddy's message.
    async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, ProxyError> {
        let request = format!("{method} {path}");
        let (status, bytes) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Err(self.refused(request, status, &bytes))
    }

    fn refused(&self, request: String, status: u16, body: &[u8]) -> ProxyError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        ProxyError::Refused {
            admin: self.shown.clone(),
            request,
            status,
            message,
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, ProxyError> {
        let bytes = self.expect_ok(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ProxyError::Unexpected {
            admin: self.shown.clone(),
            request: format!("GET {path}"),
            reason: e.to_string(),
        })
    }
}

/// Say which route a failed request was for.
fn for_route(e: ProxyError, id: &str) -> ProxyError {
    match e {
        ProxyError::Unreachable {
            admin,
            request,
            reason,
        } => ProxyError::Unreachable {
            admin,
            request: format!("{request} for route {id}"),
            reason,
        },
        ProxyError::Refused {
            admin,
            request,
            status,
            message,
        } => ProxyError::Refused {
            admin,
            request: format!("{request} for route {id}"),
            status,
            message,
        },
        ProxyError::Unexpected {
            admin,
            request,
            reason,
        } => ProxyError::Unexpected {
            admin,
            request: format!("{request} for route {id}"),
            reason,
        },
    }
}

/// Send one request over a fresh HTTP/1 connection on `stream`.
async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection has to be driven while the request is in flight; it is dropped with
    // the response (one connection per request: the API is on loopback and called rarely).
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

impl Proxy for CaddyAdmin {
    fn admin(&self) -> &str {
        &self.shown
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn server(&self, server: &str) -> Result<Option<Value>, ProxyError> {
        let path = Self::server_path(server);
        match self.get_json(&path).await {
            Ok(v) => Ok((!v.is_null()).then_some(v)),
            // Caddy answers 400 ("invalid traversal path") when a parent such as `apps` is
            // missing: read the whole config once to tell that from a real error.
            Err(e @ ProxyError::Refused { status: 400, .. }) => {
                let config = self.get_json("/config/").await?;
                match config.pointer(&format!("/apps/http/servers/{server}")) {
                    None | Some(Value::Null) => Ok(None),
                    Some(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn create_server(&self, server: &str, value: &Value) -> Result<(), ProxyError> {
        // Caddy creates no parents: find the deepest existing one and create below it.
        let config = self.get_json("/config/").await?;
        let servers = serde_json::json!({ server: value });
        let http = serde_json::json!({ "servers": servers });
        let missing = |v: Option<&Value>| v.is_none_or(Value::is_null);
        let apps = config.get("apps");
        let http_app = apps.and_then(|a| a.get("http"));
        let (method, path, body) = if config.is_null() {
            (
                Method::POST,
                "/config/".to_owned(),
                serde_json::json!({"apps": {"http": http}}),
            )
        } else if missing(apps) {
            (
                Method::PUT,
                "/config/apps".to_owned(),
                serde_json::json!({ "http": http }),
            )
        } else if missing(http_app) {
            (Method::PUT, "/config/apps/http".to_owned(), http)
        } else if missing(http_app.and_then(|h| h.get("servers"))) {
            (Method::PUT, "/config/apps/http/servers".to_owned(), servers)
        } else {
            (Method::PUT, Self::server_path(server), value.clone())
        };
        self.expect_ok(method, &path, Some(&body)).await?;
        Ok(())
    }

    async fn replace(&self, route: &Route) -> Result<bool, ProxyError> {
        let path = format!("/id/{}", route.id);
        let (status, body) = self.call(Method::PATCH, &path, Some(&route.value)).await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(format!("PATCH {path}"), status, &body)),
        }
    }

    async fn insert(&self, server: &str, index: usize, route: &Route) -> Result<(), ProxyError> {
        let routes = format!("{}/routes", Self::server_path(server));
        let current = self
            .get_json(&routes)
            .await
            .map_err(|e| for_route(e, &route.id))?;
        let len = current.as_array().map_or(0, Vec::len);
        // PUT at an index inserts there; an index at the end is an append, which is POST to
        // the array (Caddy refuses PUT one past the end).
        let (method, path) = if index < len {
            (Method::PUT, format!("{routes}/{index}"))
        } else {
            (Method::POST, routes.clone())
        };
        let (status, body) = if current.is_null() {
            // No routes array yet: create it holding this route.
            let value = Value::from(vec![route.value.clone()]);
            self.call(Method::PUT, &routes, Some(&value)).await?
        } else {
            self.call(method.clone(), &path, Some(&route.value)).await?
        };
        if !(200..300).contains(&status) {
            return Err(self.refused(
                format!("{method} {path} (route {})", route.id),
                status,
                &body,
            ));
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), ProxyError> {
        let path = format!("/id/{id}");
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refused(format!("DELETE {path}"), status, &body)),
        }
    }

    async fn set_routes(
        &self,
        server: &str,
        routes: &[Value],
        exists: bool,
    ) -> Result<(), ProxyError> {
        let path = format!("{}/routes", Self::server_path(server));
        // PATCH replaces an existing value; PUT creates a missing one. Neither appends.
        let method = if exists { Method::PATCH } else { Method::PUT };
        self.expect_ok(method, &path, Some(&Value::from(routes.to_vec())))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses() {
        assert_eq!(
            AdminAddress::parse("localhost:2019"),
            Ok(AdminAddress::Tcp("localhost:2019".into()))
        );
        assert_eq!(
            AdminAddress::parse("[::1]:2019"),
            Ok(AdminAddress::Tcp("[::1]:2019".into()))
        );
        assert_eq!(
            AdminAddress::parse("unix//run/caddy/admin.sock"),
            Ok(AdminAddress::Unix("/run/caddy/admin.sock".into()))
        );
        assert_eq!(
            AdminAddress::parse("localhost:2019").unwrap().host_header(),
            "localhost:2019"
        );
        assert_eq!(
            AdminAddress::parse("unix//run/caddy/admin.sock|0220"),
            Ok(AdminAddress::Unix("/run/caddy/admin.sock".into()))
        );
        assert_eq!(AdminAddress::parse("unix//s").unwrap().host_header(), "");
        // Each names the address, what is wrong with it and the forms that work.
        for (bad, reason) in [
            ("http://localhost:2019", "no scheme or path is allowed"),
            ("localhost", "no :PORT"),
            (":2019", "no host before :PORT"),
            ("localhost:0", "the port is not a number from 1 to 65535"),
            (
                "localhost:99999",
                "the port is not a number from 1 to 65535",
            ),
            (
                "unix/relative.sock",
                "the socket path must be absolute (unix//run/…)",
            ),
            (
                "unix//s|rw",
                "after `|` comes an octal socket mode like 0220",
            ),
            ("unix//s|", "after `|` comes an octal socket mode like 0220"),
        ] {
            let e = AdminAddress::parse(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "{bad:?} is not an admin address: {reason}; use HOST:PORT like localhost:2019 or unix//run/caddy/admin.sock"
                )
            );
        }
    }
}
