//! Hooks step, the pipeline's last: after a tick that changed or failed something, runs
//! `hooks.onChange`, `hooks.onFailure` and the webhook (`hooks` says which), side by side,
//! so the tick waits at most `hooks.timeoutSec` for all of them; one line per hook run. A
//! hook cannot fail the tick: its lines say what went wrong, the outcome and exit code
//! stand.

use std::future::Future;
use std::pin::Pin;

use ferry_schema::host_status::HostStatus;

use crate::backend::hook::{post_json, run_command};
use crate::hooks::{HookKind, Hooks, TickEvent, env, line, shown_url};
use crate::vocab::HookRun;

type Run<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;

/// Runs the hooks due after `tick` and gives their lines; `status` is the document the
/// webhook gets.
pub async fn after_tick(hooks: &Hooks, tick: &TickEvent<'_>, status: &HostStatus) -> Vec<String> {
    let timeout = hooks.timeout();
    let mut runs: Vec<Run<'_>> = Vec::new();
    for kind in hooks.due(tick) {
        match kind {
            HookKind::OnChange | HookKind::OnFailure => {
                let argv = hooks.command(kind);
                let vars = env(kind, tick);
                let program = argv.first().cloned().unwrap_or_default();
                runs.push(Box::pin(async move {
                    let run = run_command(argv, &vars, timeout).await;
                    line(kind, &program, &run)
                }));
            }
            HookKind::Webhook => {
                let Some(url) = hooks.webhook.as_deref() else {
                    continue;
                };
                let shown = shown_url(url);
                let body = serde_json::to_vec(status);
                runs.push(Box::pin(async move {
                    let run = match body {
                        Ok(body) => post_json(url, body, timeout).await,
                        Err(e) => HookRun::NotStarted {
                            reason: format!("cannot write the status document: {e}"),
                        },
                    };
                    line(kind, &shown, &run)
                }));
            }
        }
    }
    futures_util::future::join_all(runs).await
}
