//! A hostile bucket for fetch tests: a small HTTP server that speaks just enough S3 for the
//! agent's `GET /<bucket>/manifest.json` (it ignores the signature) and answers it badly —
//! a body trickled a byte at a time, or hundreds of megabytes with or without a
//! `Content-Length`. Each connection is served on its own thread, so the server keeps going
//! while the test blocks on a command inside a host.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};

/// How the server answers every GET.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200` with the body's true `Content-Length`, then one byte every `every`.
    Trickle {
        /// The body (e.g. a valid manifest, so only its pace is wrong).
        body: Vec<u8>,
        /// Pause between bytes.
        every: Duration,
    },
    /// `200` and `len` bytes of a JSON object padded with spaces, as fast as the client
    /// reads; with `declared`, a `Content-Length: len` header, else chunked.
    Huge {
        /// Body size in bytes.
        len: u64,
        /// Whether the size is announced in `Content-Length`.
        declared: bool,
    },
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct SlowBucket {
    addr: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl SlowBucket {
    /// Serves `answer` on `ip` (e.g. the bed's bridge address, which the hosts reach) at a
    /// free port.
    pub fn start(ip: &str, answer: Answer) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (answer, stop, sent) = (answer.clone(), stop2.clone(), sent2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &answer, &stop, &sent);
                });
            }
        });
        Ok(Self {
            addr,
            stop,
            sent,
            accept: Some(accept),
        })
    }

    /// The endpoint URL to put in the agent's bucket URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Body bytes written to clients so far.
    pub fn body_bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for SlowBucket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Reads one request head, then answers; ends when the client goes away or the answer is
/// complete (one request per connection).
fn serve(stream: TcpStream, answer: &Answer, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut out = stream;
    let common = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"slow-1\"\r\nConnection: close\r\n";
    match answer {
        Answer::Trickle { body, every } => {
            write!(out, "{common}Content-Length: {}\r\n\r\n", body.len())?;
            out.flush()?;
            for byte in body {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                out.write_all(&[*byte])?;
                out.flush()?;
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(*every);
            }
        }
        Answer::Huge { len, declared } => {
            if *declared {
                write!(out, "{common}Content-Length: {len}\r\n\r\n")?;
            } else {
                write!(out, "{common}Transfer-Encoding: chunked\r\n\r\n")?;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut left = *len;
            let mut first = true;
            while left > 0 && !stop.load(Ordering::SeqCst) {
                let n = left.min(chunk.len() as u64) as usize;
                let mut piece = chunk[..n].to_vec();
                if first {
                    piece[0] = b'{';
                    first = false;
                }
                if *declared {
                    out.write_all(&piece)?;
                } else {
                    write!(out, "{n:x}\r\n")?;
                    out.write_all(&piece)?;
                    out.write_all(b"\r\n")?;
                }
                sent.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            if !*declared {
                out.write_all(b"0\r\n\r\n")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
