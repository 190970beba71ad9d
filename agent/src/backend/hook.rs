//! Running hooks: a command as an argument list with a given environment, bounded by a
//! timeout after which it is killed with every process of its process group; and a JSON
//! POST to a webhook with reqwest, bounded the same way. Each answers how the run ended
//! ([`HookRun`]) and never fails: a hook cannot fail the tick that called it.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::vocab::HookRun;

/// Runs `argv` (program first) with only `PATH` (the agent's) and `env` in its environment,
/// no input, its output on the agent's, from `/`, in a process group of its own. Past
/// `timeout` the whole group is killed; when the command ends first, whatever it left
/// running in its group is ended too, so a hook never outlives the tick that ran it.
pub async fn run_command(argv: &[String], env: &[(&str, String)], timeout: Duration) -> HookRun {
    let Some((program, args)) = argv.split_first() else {
        return HookRun::NotStarted {
            reason: "no command".to_owned(),
        };
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookRun::NotStarted {
                reason: e.to_string(),
            };
        }
    };
    // The group's id is the child's pid (process_group(0)).
    let group = child.id();
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    kill_group(group);
    match waited {
        Ok(Ok(status)) => HookRun::Exited {
            code: status.code(),
            signal: status.signal(),
            took: started.elapsed(),
        },
        Ok(Err(e)) => HookRun::NotStarted {
            reason: format!("waiting for it failed: {e}"),
        },
        Err(_) => {
            // Reap it: SIGKILL cannot be ignored, so this returns at once.
            let _ = child.wait().await;
            HookRun::Killed { after: timeout }
        }
    }
}

/// SIGKILL to every process of the group `pgid` (the hook and what it started); a group
/// already gone is no error.
fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!("cannot kill the hook's process group {pid:?}: {e}");
    }
}

/// POSTs `body` (JSON) to `url`, within `timeout` for connecting, sending and the answer's
/// headers. Redirects are not followed (a 3xx is an answer like any other). What it says on
/// failure never contains the URL, which may hold a token.
pub async fn post_json(url: &str, body: Vec<u8>, timeout: Duration) -> HookRun {
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ferry-agent/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return HookRun::Unreachable {
                reason: reason(e.without_url()),
            };
        }
    };
    let started = Instant::now();
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => HookRun::Answered {
            status: answer.status().as_u16(),
            took: started.elapsed(),
        },
        Err(e) if e.is_timeout() => HookRun::Unreachable {
            reason: format!(
                "no answer within hooks.timeoutSec ({} s)",
                timeout.as_secs()
            ),
        },
        Err(e) => HookRun::Unreachable {
            reason: reason(e.without_url()),
        },
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message alone says only "error
/// sending request").
fn reason(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
