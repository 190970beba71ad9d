//! Added network latency for benchmarks, in user space: a TCP relay that holds every chunk
//! it forwards for a one-way delay in each direction, in front of Garage or any server.
//!
//! The bed would use `tc qdisc … netem delay` on its bridge, but kernels built without
//! `CONFIG_NET_SCH_NETEM` (this machine's among them) have no netem, so the delay is added
//! here instead. What it models: every round trip through the relay costs `rtt` more, and a
//! new connection costs one round trip more before its first request arrives (TCP's
//! handshake, which the kernel completes locally with the relay at once). Bytes keep their
//! order and their pace (chunks are forwarded as they were read, each `rtt / 2` later), so
//! throughput is not capped beyond what the queue holds: what is modelled is distance, not a
//! thin pipe. Neither TLS nor HTTP is looked at.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction and connection: with 64 KiB reads, up to 16 MiB, enough
/// for 25 ms one way at 600 MB/s before the reader waits for the writer (back-pressure).
const QUEUE_CHUNKS: usize = 256;
const CHUNK: usize = 64 * 1024;

/// A running relay; stops, and drops its connections, when dropped.
#[derive(Debug)]
pub struct LatencyRelay {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    // Its own runtime on its own threads, so the relay keeps forwarding while the caller
    // blocks (a test waiting on `nix copy` in a host, say), whatever runtime the caller has.
    runtime: Option<tokio::runtime::Runtime>,
}

impl LatencyRelay {
    /// Listens on `listen_ip` at a free port and relays each connection to `upstream`, adding
    /// `rtt` to every round trip (`rtt / 2` each way). `rtt` zero relays without delay, so a
    /// benchmark can compare 0 and 50 ms through the same path.
    pub fn start(listen_ip: &str, upstream: SocketAddr, rtt: Duration) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("latency-relay")
            .enable_all()
            .build()
            .context("starting the latency relay's runtime")?;
        // Bound here with std (no `block_on`: the caller may be inside a runtime itself).
        let listener = std::net::TcpListener::bind((listen_ip, 0))
            .with_context(|| format!("binding the latency relay on {listen_ip}:0"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let one_way = rtt / 2;
        let counted = connections.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, say: rest instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, one_way));
            }
        });
        Ok(Self {
            addr,
            connections,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect (`ip:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`, for an S3 endpoint or a binary cache URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A relay adding `rtt` in front of the bed's Garage, listening on the same address (so bed
/// hosts reach it too), and `s3` as seen through it: the same bucket and keys, the relay's
/// endpoint. With `rtt` zero it still relays, so both latencies take the same path.
pub fn s3_behind(s3: &crate::S3, rtt: Duration) -> Result<(LatencyRelay, crate::S3)> {
    let upstream: SocketAddr = s3
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("Garage's endpoint {} is not http://ip:port", s3.endpoint))?;
    let relay = LatencyRelay::start(&upstream.ip().to_string(), upstream, rtt)?;
    let through = crate::S3 {
        endpoint: relay.endpoint(),
        ..s3.clone()
    };
    Ok((relay, through))
}

impl Drop for LatencyRelay {
    fn drop(&mut self) {
        // `shutdown_background` may be called from inside another runtime; a plain drop may not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One connection: connect upstream, then pump both ways, each chunk held `one_way`. The
/// client's first bytes are held until a handshake's round trip has passed as well.
async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // The client sees the connection close, as with a refused one.
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let handshake = accepted + one_way * 2;
    let up = tokio::spawn(pump(client_read, server_write, one_way, handshake));
    let down = tokio::spawn(pump(server_read, client_write, one_way, accepted));
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to`, each chunk written `one_way` after it was read and never before
/// `not_before + one_way`; end of stream is passed on the same way (a half close).
async fn pump<R, W>(mut from: R, mut to: W, one_way: Duration, not_before: Instant)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                break; // The reader's end of stream.
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let due = Instant::now().max(not_before) + one_way;
        if tx.send((due, buf[..n].to_vec())).await.is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// An echo server on loopback (threads, so the test's own clock is plain).
    fn echo() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut std::net::TcpStream, len: usize) -> Duration {
        let started = std::time::Instant::now();
        stream.write_all(&vec![7u8; len]).unwrap();
        let mut back = vec![0u8; len];
        stream.read_exact(&mut back).unwrap();
        assert!(back.iter().all(|&b| b == 7), "bytes changed on the way");
        started.elapsed()
    }

    #[test]
    fn every_round_trip_costs_the_rtt_and_a_new_connection_one_more() {
        let rtt = Duration::from_millis(60);
        let relay = LatencyRelay::start("127.0.0.1", echo(), rtt).unwrap();
        let mut stream = std::net::TcpStream::connect(relay.addr()).unwrap();
        let first = round_trip(&mut stream, 100);
        let second = round_trip(&mut stream, 100);
        let big = round_trip(&mut stream, 3 * 1024 * 1024);
        // Lower bounds are what the relay guarantees; the upper ones only catch a relay that
        // adds the delay per chunk instead of once per trip (a 3 MiB echo is ~50 chunks).
        assert!(
            first >= rtt * 2,
            "first request took {first:?}, want ≥ 2 × {rtt:?}"
        );
        assert!(second >= rtt, "second took {second:?}, want ≥ {rtt:?}");
        assert!(
            second < rtt * 2,
            "second took {second:?}: the handshake counted twice"
        );
        assert!(big < rtt * 10, "3 MiB took {big:?}: delay added per chunk");
        assert_eq!(relay.connections(), 1);
    }

    #[test]
    fn zero_rtt_relays_at_once_and_a_close_reaches_the_other_side() {
        let relay = LatencyRelay::start("127.0.0.1", echo(), Duration::ZERO).unwrap();
        let mut stream = std::net::TcpStream::connect(relay.addr()).unwrap();
        assert!(round_trip(&mut stream, 10) < Duration::from_millis(500));
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing more after the close");
    }

    #[tokio::test]
    async fn it_keeps_relaying_while_the_callers_runtime_is_blocked() {
        // A current-thread runtime blocked in a std call must not stop the relay.
        let relay = LatencyRelay::start("127.0.0.1", echo(), Duration::from_millis(10)).unwrap();
        let mut stream = std::net::TcpStream::connect(relay.addr()).unwrap();
        assert!(round_trip(&mut stream, 10) >= Duration::from_millis(20));
        drop(relay); // Dropping inside a runtime must not panic.
    }
}
