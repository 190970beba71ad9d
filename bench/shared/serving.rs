//! Asking a host's Caddy which version a domain serves, and a poller that notes the
//! moment it first serves a given one: how `update_to_serving.rs` and `push_wait.rs` (both
//! include this through `#[path]`) see "the new version is serving".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `GET /version` with `Host: domain` on `addr`; the body of a 200, else `None`.
pub fn version(addr: SocketAddr, domain: &str) -> Option<String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET /version HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 ").then(|| body.to_owned())
}

/// Polls `GET /version` every `every` (a fresh connection each time) until Caddy answers
/// `want` for `domain`, `stop` is set, or `limit` (if any) has passed; the moment it
/// answered.
pub fn first_answer(
    addr: SocketAddr,
    domain: &'static str,
    want: String,
    stop: Arc<AtomicBool>,
    every: Duration,
    limit: Option<Duration>,
) -> JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let deadline = limit.map(|l| Instant::now() + l);
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            if version(addr, domain).as_deref() == Some(want.as_str()) {
                return Some(Instant::now());
            }
            std::thread::sleep(every);
        }
        None
    })
}
