//! The hooks step against real processes and a real HTTP listener: a hook that outlives
//! `hooks.timeoutSec` is killed with the processes it started and the step returns within
//! the bound (hooks run side by side), a hook sees only `PATH` and the `FERRY_*` variables,
//! failures are lines, and the webhook POSTs the status document a listener reads back as a
//! host status report.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_agent::hooks::{Hooks, TickEvent};
use ferry_agent::state::Outcome;
use ferry_agent::tick::hooks::after_tick;
use ferry_schema::host_status::{HostStatus, TickOutcome, parse_report};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn status() -> HostStatus {
    serde_json::from_str(
        r#"{"version": 1, "host": "web-1", "agentVersion": "0.1.0",
            "time": "2026-12-01T10:00:00Z", "everySec": 300,
            "lastTick": {"outcome": "failed", "exitCode": 1, "wallMs": 1831},
            "services": [{"name": "web", "storePath": "/nix/store/x-web",
                          "state": "rolled-back", "since": "2026-12-01T10:00:00Z"}]}"#,
    )
    .unwrap()
}

const CHANGED: &[String] = &[];

fn event<'a>(changed: &'a [String], failed: &'a [String], exit_code: i32) -> TickEvent<'a> {
    TickEvent {
        host: "web-1",
        outcome: if exit_code == 0 {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        exit_code,
        generation: Some("2026-12-01T09:59:00Z"),
        changed,
        failed,
    }
}

fn sh(script: &str, arg: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        arg.display().to_string(),
    ]
}

/// Whether `pid` still runs (a zombie waiting for its parent does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[tokio::test]
async fn hooks_that_outlive_their_time_are_killed_with_what_they_started_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pids"), dir.path().join("b.pids"));
    // Each hook records its own pid and its background child's, then waits for ever.
    let script = "echo $$ > \"$0\"; sleep 300 & echo $! >> \"$0\"; wait";
    let hooks = Hooks {
        on_change: sh(script, &a),
        on_failure: sh(script, &b),
        timeout_sec: 2,
        ..Hooks::default()
    };
    let web = ["web".to_owned()];
    let started = Instant::now();
    let lines = after_tick(&hooks, &event(&web, &web, 1), &status()).await;
    let took = started.elapsed();
    // Both ran side by side and were cut at the bound: well under two timeouts.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    assert_eq!(
        lines,
        [
            "hooks.onChange: /bin/sh still ran after hooks.timeoutSec (2 s) and was killed with the processes it started (the tick's outcome stands)",
            "hooks.onFailure: /bin/sh still ran after hooks.timeoutSec (2 s) and was killed with the processes it started (the tick's outcome stands)",
        ]
    );
    let pids: Vec<u32> = [a, b]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect::<Vec<u32>>()
        })
        .collect();
    assert_eq!(pids.len(), 4, "{pids:?}");
    // SIGKILL is delivered asynchronously: give the kernel a moment, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| running(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alive: Vec<&u32> = pids.iter().filter(|p| running(**p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
}

#[tokio::test]
async fn a_hook_sees_only_path_and_the_ferry_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let hooks = Hooks {
        on_change: sh("exec /usr/bin/env > \"$0\"", &out),
        ..Hooks::default()
    };
    let changed = ["api".to_owned(), "web".to_owned()];
    let lines = after_tick(&hooks, &event(&changed, &[], 0), &status()).await;
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("hooks.onChange: /bin/sh ran ("),
        "{lines:?}"
    );
    let seen: BTreeMap<String, String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut want: BTreeMap<String, String> = [
        ("FERRY_HOOK", "onChange"),
        ("FERRY_HOST", "web-1"),
        ("FERRY_OUTCOME", "ok"),
        ("FERRY_EXIT_CODE", "0"),
        ("FERRY_GENERATION", "2026-12-01T09:59:00Z"),
        ("FERRY_SERVICES_CHANGED", "api web"),
        ("FERRY_SERVICES_FAILED", ""),
        // The shell's own, and the directory the hook runs in.
        ("PWD", "/"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Ok(path) = std::env::var("PATH") {
        want.insert("PATH".into(), path);
    }
    // This process's environment (cargo's variables, the machine's AWS_* ones) stays out.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_failing_or_missing_program_is_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Hooks {
        on_failure: sh("exit 3", dir.path()),
        ..Hooks::default()
    };
    let lines = after_tick(&failing, &event(CHANGED, &[], 2), &status()).await;
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("hooks.onFailure: /bin/sh exited with status 3 after "),
        "{lines:?}"
    );
    let missing = Hooks {
        on_failure: vec!["/nonexistent/ferry-hook".into()],
        ..Hooks::default()
    };
    let lines = after_tick(&missing, &event(CHANGED, &[], 3), &status()).await;
    assert_eq!(
        lines,
        [
            "hooks.onFailure: cannot run /nonexistent/ferry-hook: No such file or directory (os error 2) (the tick's outcome stands)"
        ]
    );
}

/// What the listener got: method, content type, body.
type Received = (String, String, Vec<u8>);

/// A listener on loopback answering every request with `status` (and a `Location`, for
/// redirects); what it receives comes out of the channel.
async fn listener(status: StatusCode) -> (u16, mpsc::UnboundedReceiver<Received>) {
    let socket = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let method = req.method().to_string();
                        let kind = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((method, kind, body.to_vec()));
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = status;
                        r.headers_mut()
                            .insert("location", "http://127.0.0.1:1/elsewhere".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, rx)
}

fn webhook(url: String, timeout_sec: u64) -> Hooks {
    Hooks {
        webhook: Some(url),
        timeout_sec,
        ..Hooks::default()
    }
}

#[tokio::test]
async fn the_webhook_gets_the_status_document_as_json() {
    let (port, mut rx) = listener(StatusCode::NO_CONTENT).await;
    let hooks = webhook(format!("http://127.0.0.1:{port}/ferry?token=s3cret"), 5);
    let web = ["web".to_owned()];
    let lines = after_tick(&hooks, &event(&[], &web, 1), &status()).await;
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with(&format!(
            "hooks.webhook: POST http://127.0.0.1:{port}/ferry answered 204 ("
        )),
        "{lines:?}"
    );
    let (method, kind, body) = rx.recv().await.unwrap();
    assert_eq!(
        (method.as_str(), kind.as_str()),
        ("POST", "application/json")
    );
    let report = parse_report("hooks/web-1.json", "web-1", &body).unwrap();
    assert_eq!(report.host, "web-1");
    assert_eq!(report.last_tick.outcome, TickOutcome::Failed);
    assert_eq!(report, status());
    // A no-op tick calls no hook.
    let lines = after_tick(&hooks, &event(&[], &[], 0), &status()).await;
    assert!(lines.is_empty(), "{lines:?}");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn webhook_failures_are_lines_without_the_token() {
    let web = ["web".to_owned()];
    let tick = event(&web, &[], 0);
    let (port, _rx) = listener(StatusCode::INTERNAL_SERVER_ERROR).await;
    let lines = after_tick(
        &webhook(format!("http://127.0.0.1:{port}/h?token=s3cret"), 5),
        &tick,
        &status(),
    )
    .await;
    assert!(
        lines[0].starts_with(&format!(
            "hooks.webhook: POST http://127.0.0.1:{port}/h answered 500 after "
        )) && lines[0].ends_with("not 2xx (the tick's outcome stands)"),
        "{lines:?}"
    );
    // A redirect is not followed: the document goes only where agent.toml says.
    let (port, mut rx) = listener(StatusCode::FOUND).await;
    let lines = after_tick(
        &webhook(format!("http://127.0.0.1:{port}/h"), 5),
        &tick,
        &status(),
    )
    .await;
    assert!(lines[0].contains("answered 302"), "{lines:?}");
    assert!(rx.recv().await.is_some() && rx.try_recv().is_err());
    // Nothing listening.
    let closed = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let lines = after_tick(
        &webhook(format!("http://127.0.0.1:{port}/h?token=s3cret"), 5),
        &tick,
        &status(),
    )
    .await;
    assert!(
        lines[0].starts_with(&format!(
            "hooks.webhook: POST http://127.0.0.1:{port}/h failed: "
        )) && lines[0].contains("refused")
            && !lines[0].contains("s3cret"),
        "{lines:?}"
    );
    // A listener that accepts and never answers: given up at the bound.
    let silent = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let lines = after_tick(
        &webhook(format!("http://127.0.0.1:{port}/h"), 1),
        &tick,
        &status(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        lines,
        [format!(
            "hooks.webhook: POST http://127.0.0.1:{port}/h failed: no answer within hooks.timeoutSec (1 s) (the tick's outcome stands)"
        )]
    );
    drop(silent);
}
