//! `ferry-testsvc`: the tiny HTTP service Ferry's end-to-end tests deploy.
//!
//! Routes: `/health` (200, or 503 in `unhealthy` mode), `/version` (its version),
//! `/env/<NAME>` (the raw bytes of that environment variable, 404 when unset).
//! Knobs, environment first, then files baked into its Nix closure next to the binary
//! (`<out>/share/ferry-testsvc/{version,mode}`) so a "broken" closure misbehaves without
//! any change to its unit:
//! - `PORT` (required) and `LISTEN_ADDR` (default `127.0.0.1`);
//! - `FERRY_TESTSVC_VERSION` (default: the baked file, else `dev`);
//! - `FERRY_TESTSVC_MODE`: `ok`, `unhealthy` (health answers 503) or `crash` (exit 1 at start);
//! - `FERRY_TESTSVC_BIND_DELAY_SEC`: seconds to wait before binding the port (a service that
//!   runs a migration at start), default 0;
//! - `DATA_DIR`: when set, a directory the service must be able to write, like an app's data
//!   directory: at start it writes `<DATA_DIR>/ferry-testsvc.written` (its version and PID)
//!   and exits 1 naming the error when it cannot.
//!
//! Standard library only: it must run inside the test hosts with nothing but libc.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;

/// The file written in `DATA_DIR` at start.
const DATA_FILE: &str = "ferry-testsvc.written";

/// How the service behaves, chosen at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    Unhealthy,
    Crash,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.trim() {
            "ok" | "" => Some(Mode::Ok),
            "unhealthy" => Some(Mode::Unhealthy),
            "crash" => Some(Mode::Crash),
            _ => None,
        }
    }
}

/// `<out>/share/ferry-testsvc`, found from the running binary at `<out>/bin/ferry-testsvc`.
fn baked_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("share/ferry-testsvc"))
}

/// An environment variable, else the baked file of the same knob, else nothing.
fn knob(env: &str, file: &str) -> Option<String> {
    if let Ok(value) = std::env::var(env) {
        return Some(value);
    }
    let text = std::fs::read_to_string(baked_dir()?.join(file)).ok()?;
    Some(text.trim().to_string())
}

/// The answer to one request path: status, reason and body.
fn respond(path: &str, mode: Mode, version: &str) -> (u16, &'static str, Vec<u8>) {
    if path == "/health" {
        return match mode {
            Mode::Unhealthy => (503, "Service Unavailable", b"unhealthy\n".to_vec()),
            _ => (200, "OK", b"ok\n".to_vec()),
        };
    }
    if path == "/version" {
        return (200, "OK", version.as_bytes().to_vec());
    }
    if let Some(name) = path.strip_prefix("/env/") {
        return match std::env::var_os(name) {
            Some(value) => (200, "OK", value.into_encoded_bytes()),
            None => (
                404,
                "Not Found",
                format!("{name} is not set\n").into_bytes(),
            ),
        };
    }
    (404, "Not Found", b"not found\n".to_vec())
}

/// The wait before binding, from `FERRY_TESTSVC_BIND_DELAY_SEC` (unset: none).
fn bind_delay(value: Option<&str>) -> Result<std::time::Duration, String> {
    match value {
        None => Ok(std::time::Duration::ZERO),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| {
                format!("FERRY_TESTSVC_BIND_DELAY_SEC={text:?} is not a number of seconds")
            }),
    }
}

fn serve(stream: TcpStream, mode: Mode, version: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; no route reads a body.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, reason, body) = respond(path, mode, version);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

fn main() -> ExitCode {
    let mode_text = knob("FERRY_TESTSVC_MODE", "mode").unwrap_or_default();
    let Some(mode) = Mode::parse(&mode_text) else {
        eprintln!("ferry-testsvc: unknown mode {mode_text:?}: use ok, unhealthy or crash");
        return ExitCode::from(2);
    };
    let version = knob("FERRY_TESTSVC_VERSION", "version").unwrap_or_else(|| "dev".into());
    if mode == Mode::Crash {
        eprintln!("ferry-testsvc {version}: crashing at start, as its mode says");
        return ExitCode::from(1);
    }
    if let Some(dir) = std::env::var_os("DATA_DIR") {
        let file = PathBuf::from(dir).join(DATA_FILE);
        let text = format!("{version} {}\n", std::process::id());
        if let Err(err) = std::fs::write(&file, text) {
            eprintln!("ferry-testsvc: cannot write {}: {err}", file.display());
            return ExitCode::from(1);
        }
    }
    let Ok(port) = std::env::var("PORT") else {
        eprintln!("ferry-testsvc: PORT is not set: set it to the port to listen on");
        return ExitCode::from(2);
    };
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    match bind_delay(
        std::env::var("FERRY_TESTSVC_BIND_DELAY_SEC")
            .ok()
            .as_deref(),
    ) {
        Ok(delay) if !delay.is_zero() => {
            eprintln!("ferry-testsvc {version}: waiting {delay:?} before binding {addr}:{port}");
            std::thread::sleep(delay);
        }
        Ok(_) => {}
        Err(err) => {
            eprintln!("ferry-testsvc: {err}");
            return ExitCode::from(2);
        }
    }
    let listener = match TcpListener::bind(format!("{addr}:{port}")) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("ferry-testsvc: cannot listen on {addr}:{port}: {err}");
            return ExitCode::from(1);
        }
    };
    eprintln!("ferry-testsvc {version} ({mode:?}) listening on {addr}:{port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let version = version.clone();
        std::thread::spawn(move || {
            if let Err(err) = serve(stream, mode, &version) {
                eprintln!("ferry-testsvc: request failed: {err}");
            }
        });
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_mode() {
        assert_eq!(respond("/health", Mode::Ok, "1").0, 200);
        assert_eq!(respond("/health", Mode::Unhealthy, "1").0, 503);
    }

    #[test]
    fn version_and_unknown_paths() {
        assert_eq!(respond("/version", Mode::Ok, "2.0.0").2, b"2.0.0");
        assert_eq!(respond("/nope", Mode::Ok, "2.0.0").0, 404);
    }

    #[test]
    fn bind_delay_parses_seconds() {
        assert_eq!(bind_delay(None), Ok(std::time::Duration::ZERO));
        assert_eq!(
            bind_delay(Some("20")),
            Ok(std::time::Duration::from_secs(20))
        );
        assert!(bind_delay(Some("soon")).is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("crash\n"), Some(Mode::Crash));
        assert_eq!(Mode::parse(""), Some(Mode::Ok));
        assert_eq!(Mode::parse("weird"), None);
    }
}
