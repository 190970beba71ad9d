//! A bounded HTTP request loop run in a bed host's network namespace (loopback only) while
//! something else happens, e.g. an agent tick: what every request got back, in order.
//!
//! The loop is the machine's curl inside the host's namespace, in batches of one curl
//! process each (the same URL repeated, paced by `--rate`), and it stops at the end of the
//! batch during which the work finished, or after `max_requests`, whichever comes first.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Host;

/// Where the requests go, inside the host.
#[derive(Clone, Debug)]
pub struct Target {
    /// Port on 127.0.0.1 (80 for the host's Caddy, or a service's own port).
    pub port: u16,
    /// Request path, e.g. `/version`.
    pub path: String,
    /// A `Host:` header (the routed domain when going through Caddy).
    pub host_header: Option<String>,
}

impl Target {
    /// `GET http://127.0.0.1:<port><path>` with no Host header of its own.
    pub fn direct(port: u16, path: &str) -> Self {
        Self {
            port,
            path: path.to_owned(),
            host_header: None,
        }
    }

    /// `GET <path>` through the host's Caddy on 127.0.0.1:80 with `Host: <domain>`.
    pub fn via_caddy(domain: &str, path: &str) -> Self {
        Self {
            port: 80,
            path: path.to_owned(),
            host_header: Some(domain.to_owned()),
        }
    }
}

/// How fast and how long the loop runs.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Requests started per second at most.
    pub per_second: u32,
    /// The bound: never more requests than this.
    pub max_requests: usize,
    /// Seconds one request may take (connect included) before it counts as failed.
    pub timeout_sec: u32,
}

/// What one request got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200 with this body.
    Ok(String),
    /// Anything else: the HTTP status, or 0 when no HTTP answer came (refused, timed out).
    Failed(u16),
}

impl Answer {
    /// The body of a 200 answer.
    pub fn body(&self) -> Option<&str> {
        match self {
            Answer::Ok(body) => Some(body),
            Answer::Failed(_) => None,
        }
    }
}

/// How many of `answers` are a 200 with exactly `body`.
pub fn count_ok(answers: &[Answer], body: &str) -> usize {
    answers.iter().filter(|a| a.body() == Some(body)).count()
}

/// How many of `answers` failed.
pub fn count_failed(answers: &[Answer]) -> usize {
    answers
        .iter()
        .filter(|a| matches!(a, Answer::Failed(_)))
        .count()
}

/// Separates one answer's body from its status in curl's output.
const MARK: &str = "\n@@ferry-status ";

/// Runs the loop against `target` in `host` while `during` runs, and returns what `during`
/// returned with every answer. The loop has made its first request before `during` starts.
pub fn answers_during<T>(
    host: &Host,
    target: &Target,
    pace: Pace,
    during: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<Answer>)> {
    let dir = tempfile::tempdir()?;
    let flag = dir.path().join("stop");
    let out_path = dir.path().join("answers");
    let out = File::create(&out_path)?;
    let mut poller = Command::new("ip")
        .args(["netns", "exec", &host.netns(), "sh", "-c"])
        .arg(script(target, pace, &flag))
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .context("starting the request loop (ip netns exec … curl)")?;
    let started = wait_for_first_answer(&out_path, Duration::from_secs(10));
    let result = started.and_then(|()| during());
    std::fs::write(&flag, b"")?;
    let status = poller.wait().context("waiting for the request loop")?;
    let text = std::fs::read_to_string(&out_path)?;
    if !status.success() {
        bail!("the request loop failed ({status}); it printed:\n{text}");
    }
    Ok((result?, parse(&text)?))
}

fn wait_for_first_answer(path: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path)?.contains(MARK) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("the request loop printed no answer within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The shell loop: batches of about a tenth of a second each, until `flag` exists or the
/// bound is reached.
fn script(target: &Target, pace: Pace, flag: &Path) -> String {
    let per_second = pace.per_second.max(1);
    let batch = usize::try_from(per_second / 10).unwrap_or(1).max(1);
    let batches = pace.max_requests.div_ceil(batch);
    let url = format!("http://127.0.0.1:{}{}", target.port, target.path);
    let header = target
        .host_header
        .as_ref()
        .map(|h| format!("-H 'Host: {h}' "))
        .unwrap_or_default();
    let urls = vec![format!("'{url}'"); batch].join(" ");
    let write_out = MARK.replace('\n', "\\n");
    format!(
        "i=0; while [ $i -lt {batches} ] && [ ! -e '{flag}' ]; do \
         curl -s -m {timeout} --rate {per_second}/s {header}-w '{write_out}%{{http_code}}\\n' {urls}; \
         i=$((i+1)); done; true",
        flag = flag.display(),
        timeout = pace.timeout_sec.max(1),
    )
}

/// Reads curl's output: each answer is its body, [`MARK`], its status and a newline.
fn parse(text: &str) -> Result<Vec<Answer>> {
    let mut answers = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let body = &rest[..at];
        let after = &rest[at + MARK.len()..];
        let (code, next) = after.split_once('\n').unwrap_or((after, ""));
        let code: u16 = code
            .trim()
            .parse()
            .with_context(|| format!("curl printed status {code:?}"))?;
        answers.push(if code == 200 {
            Answer::Ok(body.to_owned())
        } else {
            Answer::Failed(code)
        });
        rest = next;
    }
    if !rest.trim().is_empty() {
        bail!("the request loop printed something after its last answer: {rest:?}");
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bodies_statuses_and_failures() -> Result<()> {
        let text = "1.0.0\n@@ferry-status 200\n\n@@ferry-status 502\n\n@@ferry-status 000\n2.0.0\n@@ferry-status 200\n";
        assert_eq!(
            parse(text)?,
            [
                Answer::Ok("1.0.0".into()),
                Answer::Failed(502),
                Answer::Failed(0),
                Answer::Ok("2.0.0".into()),
            ]
        );
        assert_eq!(parse("")?, []);
        assert!(parse("1.0.0\n@@ferry-status x\n").is_err());
        assert!(parse("1.0.0").is_err());
        Ok(())
    }

    #[test]
    fn counts() {
        let answers = [
            Answer::Ok("1.0.0".into()),
            Answer::Failed(502),
            Answer::Ok("1.0.0".into()),
        ];
        assert_eq!(count_ok(&answers, "1.0.0"), 2);
        assert_eq!(count_ok(&answers, "2.0.0"), 0);
        assert_eq!(count_failed(&answers), 1);
    }

    #[test]
    fn script_is_bounded_paced_and_sends_the_host_header() {
        let pace = Pace {
            per_second: 200,
            max_requests: 1000,
            timeout_sec: 1,
        };
        let s = script(
            &Target::via_caddy("example.test", "/version"),
            pace,
            Path::new("/tmp/x/stop"),
        );
        assert!(
            s.starts_with("i=0; while [ $i -lt 50 ] && [ ! -e '/tmp/x/stop' ]"),
            "{s}"
        );
        assert!(s.contains("curl -s -m 1 --rate 200/s -H 'Host: example.test' -w '\\n@@ferry-status %{http_code}\\n'"), "{s}");
        assert_eq!(s.matches("'http://127.0.0.1:80/version'").count(), 20);
        let direct = script(&Target::direct(8201, "/version"), pace, Path::new("/f"));
        assert!(!direct.contains("Host:"), "{direct}");
    }
}
