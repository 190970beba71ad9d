//! A TCP relay in front of Garage that counts the HTTP requests passing through it, by kind
//! (`http_count::request_kind`: manifest, narinfo, NAR, host report, …), and the status
//! codes of the answers (`ferry_bench::http_count`), so the wave gate's scale benchmark and
//! `push_wait fleet` count the agents' requests where the server sees them, not by the
//! agents' own counters. No delay: latency is `ferry_tests::latency::LatencyRelay`'s job, in front of
//! this one. Its own runtime, like that relay's, so it forwards whatever the caller does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_bench::http_count::{RequestLines, RequestTargets, StatusLines, request_kind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What passed through the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Request lines sent upstream.
    pub requests: u64,
    /// Status lines sent back, by code.
    pub statuses: BTreeMap<u16, u64>,
    /// Request lines sent upstream, by kind (`GET manifest`, `PUT host report`, …).
    pub kinds: BTreeMap<String, u64>,
}

impl Counts {
    /// What passed since `before` (a snapshot of the same relay).
    pub fn since(&self, before: &Counts) -> Counts {
        let mut statuses = self.statuses.clone();
        for (code, n) in &before.statuses {
            if let Some(now) = statuses.get_mut(code) {
                *now -= n;
            }
        }
        statuses.retain(|_, n| *n > 0);
        let mut kinds = self.kinds.clone();
        for (kind, n) in &before.kinds {
            if let Some(now) = kinds.get_mut(kind) {
                *now -= n;
            }
        }
        kinds.retain(|_, n| *n > 0);
        Counts {
            requests: self.requests - before.requests,
            statuses,
            kinds,
        }
    }

    /// Answers with status `code`.
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }
}

/// A running counting relay; stops when dropped.
pub struct CountingRelay {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CountingRelay {
    /// Listens on `listen_ip` at a free port and relays each connection to `upstream`.
    pub fn start(listen_ip: &str, upstream: SocketAddr) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("counting-relay")
            .enable_all()
            .build()
            .context("starting the counting relay's runtime")?;
        let listener = std::net::TcpListener::bind((listen_ip, 0))
            .with_context(|| format!("binding the counting relay on {listen_ip}:0"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(relay(client, upstream, shared.clone()));
            }
        });
        Ok(Self {
            addr,
            counts,
            runtime: Some(runtime),
        })
    }

    /// Where clients (or the latency relay) connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What passed so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One connection. When either side ends, both are dropped, Garage's with an RST (linger
/// 0): a FIN from here would leave this side's port in TIME_WAIT for a minute, and the
/// benchmark's ~4,000 connections per fleet tick from one address to Garage's one port
/// would run out of ephemeral ports within a minute (a real fleet connects from 200
/// addresses). The clients close only once their reads are answered.
async fn relay(client: TcpStream, upstream: SocketAddr, counts: Arc<Mutex<Counts>>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = server.set_zero_linger();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_counts = counts.clone();
    let up = async move {
        let mut lines = RequestLines::default();
        let mut targets = RequestTargets::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            let requests = lines.feed(&buf[..n]);
            let kinds: Vec<String> = targets
                .feed(&buf[..n])
                .iter()
                .map(|r| request_kind(r))
                .collect();
            if let Ok(mut c) = up_counts.lock() {
                c.requests += requests;
                for kind in kinds {
                    *c.kinds.entry(kind).or_default() += 1;
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut lines = StatusLines::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            let codes = lines.feed(&buf[..n]);
            if let Ok(mut c) = counts.lock() {
                for code in codes {
                    *c.statuses.entry(code).or_default() += 1;
                }
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
