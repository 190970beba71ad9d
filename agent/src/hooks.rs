//! Hooks after a tick, the pure part: the `[hooks]` table of agent.toml, which hooks a tick
//! calls for, the environment a hook command gets, a webhook URL as the tick's lines may
//! show it, and the line that reports each run. `backend::hook` runs them; the tick's
//! `hooks` step ties the two together.
//!
//! A hook is the admin's own command, run as root: it is run as an argument list, never
//! through a shell, and it gets only `PATH` and the `FERRY_*` variables below, not the
//! agent's environment (which may hold the bucket's credentials). The values it gets are
//! the host's name, the outcome, the manifest's generation and service names, which the
//! manifest's validation limits to letters, digits, `-` and `_`; they arrive as environment
//! values and are never spliced into a command line.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Outcome;
use crate::vocab::HookRun;

/// Hooks (`[hooks]`): a command run after a tick that changed a service, another after one
/// that failed (the tick's exit code is not 0), and a URL that gets the host's status
/// document. Each is bounded by `timeoutSec`; a hook that fails, exits non-zero, outlives
/// its time or cannot be reached is reported in the tick's lines and never changes the
/// tick's outcome or exit code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hooks {
    /// A command run after a tick that changed a service and came out healthy (deployed,
    /// updated, restarted, removed; a change that failed and was put back counts as a
    /// failure), as an argument list: the program (an absolute path) and its arguments,
    /// run as they are, never through a shell. Its environment is only `PATH` and
    /// `FERRY_HOOK` (`onChange` or `onFailure`), `FERRY_HOST`, `FERRY_OUTCOME` (`ok`,
    /// `failed`, `refused`, `unreachable`), `FERRY_EXIT_CODE`, `FERRY_GENERATION` (the
    /// manifest's generation, empty before the first), `FERRY_SERVICES_CHANGED` and
    /// `FERRY_SERVICES_FAILED` (service names separated by spaces); not the agent's own
    /// environment. Its output goes to the agent's (the journal). It runs as the agent
    /// (root) while the tick still holds its lock. Default: none.
    #[serde(default = "no_command")]
    pub on_change: Vec<String>,
    /// A command run after every tick whose exit code is not 0 (a service failed or is
    /// held back, the manifest was refused, the bucket was unreachable): a failure that
    /// lasts runs it on every tick, so a hook that pages someone should deduplicate. Same
    /// form and environment as `onChange`; after a tick that changed one service and
    /// failed another, both run. Default: none.
    #[serde(default = "no_command")]
    pub on_failure: Vec<String>,
    /// An `http://` or `https://` URL that gets the host's status document (the report
    /// `ferry status` reads, JSON) as a POST after a tick that changed or failed something.
    /// Any answer but 2xx counts as a failure; redirects are not followed. The tick's lines
    /// show it without user, password, query or fragment, which may hold a token. Default:
    /// none.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Seconds each hook may take: a command still running then is killed with every
    /// process it started, a request is given up. Hooks run side by side, so a tick waits
    /// at most this long for all of them. 1 to 300. Default: 10.
    #[serde(default = "default_timeout_sec")]
    pub timeout_sec: u64,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            on_change: no_command(),
            on_failure: no_command(),
            webhook: None,
            timeout_sec: default_timeout_sec(),
        }
    }
}

/// The longest `hooks.timeoutSec`: hooks run after the tick, inside the unit's own time
/// limit, and a boot tick's hooks hold up the boot for as long.
pub const MAX_TIMEOUT_SEC: u64 = 300;

fn no_command() -> Vec<String> {
    Vec::new()
}
fn default_timeout_sec() -> u64 {
    10
}

impl Hooks {
    /// Checks what `serde` cannot: returns what is wrong, naming the key.
    pub fn problems(&self) -> Option<String> {
        for kind in [HookKind::OnChange, HookKind::OnFailure] {
            let argv = self.command(kind);
            let Some(program) = argv.first() else {
                continue;
            };
            let key = kind.key();
            if !Path::new(program).is_absolute() {
                return Some(format!(
                    "{key}: the program {program:?} must be an absolute path (e.g. /run/current-system/sw/bin/{program}): a hook is run as it is, without a shell or a PATH lookup"
                ));
            }
            if let Some(bad) = argv.iter().find(|a| a.contains('\0')) {
                return Some(format!("{key}: {bad:?} contains a NUL byte"));
            }
        }
        if let Some(url) = &self.webhook {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => {
                    return Some(format!(
                        "hooks.webhook {} must be an http:// or https:// URL with a host",
                        shown_url(url)
                    ));
                }
                Err(e) => {
                    return Some(format!(
                        "hooks.webhook is not a URL ({e}); write it as https://HOST/PATH"
                    ));
                }
            }
        }
        if self.timeout_sec == 0 || self.timeout_sec > MAX_TIMEOUT_SEC {
            return Some(format!(
                "hooks.timeoutSec is {}; it must be between 1 and {MAX_TIMEOUT_SEC}",
                self.timeout_sec
            ));
        }
        None
    }

    /// The command of a hook (empty: none configured; never for the webhook).
    pub fn command(&self, kind: HookKind) -> &[String] {
        match kind {
            HookKind::OnChange => &self.on_change,
            HookKind::OnFailure => &self.on_failure,
            HookKind::Webhook => &[],
        }
    }

    /// `timeoutSec` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_sec)
    }

    /// The hooks configured for what `tick` did, in the order they are reported.
    pub fn due(&self, tick: &TickEvent<'_>) -> Vec<HookKind> {
        let changed = !tick.changed.is_empty();
        let failed = tick.exit_code != 0;
        let mut due = Vec::new();
        if changed && !self.on_change.is_empty() {
            due.push(HookKind::OnChange);
        }
        if failed && !self.on_failure.is_empty() {
            due.push(HookKind::OnFailure);
        }
        if (changed || failed) && self.webhook.is_some() {
            due.push(HookKind::Webhook);
        }
        due
    }
}

/// One of the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookKind {
    /// `hooks.onChange`.
    OnChange,
    /// `hooks.onFailure`.
    OnFailure,
    /// `hooks.webhook`.
    Webhook,
}

impl HookKind {
    /// Its key in agent.toml, as the tick's lines name it.
    pub fn key(self) -> &'static str {
        match self {
            HookKind::OnChange => "hooks.onChange",
            HookKind::OnFailure => "hooks.onFailure",
            HookKind::Webhook => "hooks.webhook",
        }
    }
}

/// What a tick did, as the hooks hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickEvent<'a> {
    /// This host's name.
    pub host: &'a str,
    /// How the tick ended.
    pub outcome: Outcome,
    /// `ferry-agent reconcile`'s exit code.
    pub exit_code: i32,
    /// The generation of the manifest in force, if any.
    pub generation: Option<&'a str>,
    /// Services the tick changed.
    pub changed: &'a [String],
    /// Services that failed in the tick.
    pub failed: &'a [String],
}

/// How an outcome is written in `FERRY_OUTCOME` (as in the `tick:` line and the report).
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Refused => "refused",
        Outcome::Unreachable => "unreachable",
    }
}

/// The `FERRY_*` variables a hook command gets (besides `PATH`, which the runner adds).
pub fn env(kind: HookKind, tick: &TickEvent<'_>) -> Vec<(&'static str, String)> {
    let hook = match kind {
        HookKind::OnChange => "onChange",
        HookKind::OnFailure => "onFailure",
        HookKind::Webhook => "webhook",
    };
    vec![
        ("FERRY_HOOK", hook.to_owned()),
        ("FERRY_HOST", tick.host.to_owned()),
        ("FERRY_OUTCOME", outcome_name(tick.outcome).to_owned()),
        ("FERRY_EXIT_CODE", tick.exit_code.to_string()),
        (
            "FERRY_GENERATION",
            tick.generation.unwrap_or_default().to_owned(),
        ),
        ("FERRY_SERVICES_CHANGED", tick.changed.join(" ")),
        ("FERRY_SERVICES_FAILED", tick.failed.join(" ")),
    ]
}

/// A webhook URL as the tick's lines and errors show it: scheme, host, port and path,
/// without user, password, query or fragment (where tokens go).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The tick's line for one hook run: `what` is the program or the shown URL.
pub fn line(kind: HookKind, what: &str, run: &HookRun) -> String {
    let key = kind.key();
    let ms = |d: &Duration| d.as_millis();
    match run {
        HookRun::Exited {
            code: Some(0),
            took,
            ..
        } => format!("{key}: {what} ran ({} ms)", ms(took)),
        HookRun::Exited {
            code: Some(code),
            took,
            ..
        } => format!(
            "{key}: {what} exited with status {code} after {} ms (the tick's outcome stands)",
            ms(took)
        ),
        HookRun::Exited { signal, took, .. } => format!(
            "{key}: {what} was ended by signal {} after {} ms (the tick's outcome stands)",
            signal.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            ms(took)
        ),
        HookRun::Killed { after } => format!(
            "{key}: {what} still ran after hooks.timeoutSec ({} s) and was killed with the processes it started (the tick's outcome stands)",
            after.as_secs()
        ),
        HookRun::NotStarted { reason } => {
            format!("{key}: cannot run {what}: {reason} (the tick's outcome stands)")
        }
        HookRun::Answered { status, took } if (200..300).contains(status) => {
            format!("{key}: POST {what} answered {status} ({} ms)", ms(took))
        }
        HookRun::Answered { status, took } => format!(
            "{key}: POST {what} answered {status} after {} ms, not 2xx (the tick's outcome stands)",
            ms(took)
        ),
        HookRun::Unreachable { reason } => {
            format!("{key}: POST {what} failed: {reason} (the tick's outcome stands)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick<'a>(changed: &'a [String], failed: &'a [String], exit_code: i32) -> TickEvent<'a> {
        TickEvent {
            host: "web-1",
            outcome: if exit_code == 0 {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            exit_code,
            generation: Some("2026-12-01T10:00:00Z"),
            changed,
            failed,
        }
    }

    fn all_hooks() -> Hooks {
        Hooks {
            on_change: vec!["/bin/true".into()],
            on_failure: vec!["/bin/false".into()],
            webhook: Some("https://hooks.example.com/ferry?token=s3cret".into()),
            timeout_sec: 10,
        }
    }

    #[test]
    fn the_environment_names_host_outcome_generation_and_services() {
        let changed = ["api".to_owned(), "web".to_owned()];
        let failed = ["web".to_owned()];
        let vars = env(HookKind::OnFailure, &tick(&changed, &failed, 1));
        assert_eq!(
            vars,
            [
                ("FERRY_HOOK", "onFailure".to_owned()),
                ("FERRY_HOST", "web-1".to_owned()),
                ("FERRY_OUTCOME", "failed".to_owned()),
                ("FERRY_EXIT_CODE", "1".to_owned()),
                ("FERRY_GENERATION", "2026-12-01T10:00:00Z".to_owned()),
                ("FERRY_SERVICES_CHANGED", "api web".to_owned()),
                ("FERRY_SERVICES_FAILED", "web".to_owned()),
            ]
        );
        // Before any manifest, and with nothing changed: empty values, not missing ones.
        let first = TickEvent {
            generation: None,
            outcome: Outcome::Unreachable,
            exit_code: 3,
            ..tick(&[], &[], 3)
        };
        let vars = env(HookKind::OnChange, &first);
        assert!(vars.contains(&("FERRY_GENERATION", String::new())));
        assert!(vars.contains(&("FERRY_OUTCOME", "unreachable".to_owned())));
        assert!(vars.contains(&("FERRY_SERVICES_CHANGED", String::new())));
    }

    #[test]
    fn hooks_run_after_a_change_or_a_failure_only() {
        let hooks = all_hooks();
        let web = ["web".to_owned()];
        use HookKind::*;
        // A no-op tick: nothing.
        assert_eq!(hooks.due(&tick(&[], &[], 0)), []);
        // A deploy: onChange and the webhook.
        assert_eq!(hooks.due(&tick(&web, &[], 0)), [OnChange, Webhook]);
        // A failed update put back: both commands and the webhook.
        assert_eq!(
            hooks.due(&tick(&web, &web, 1)),
            [OnChange, OnFailure, Webhook]
        );
        // A bucket that stays unreachable, a refused manifest: every such tick.
        assert_eq!(hooks.due(&tick(&[], &[], 3)), [OnFailure, Webhook]);
        assert_eq!(hooks.due(&tick(&[], &[], 2)), [OnFailure, Webhook]);
        // Nothing configured, nothing due.
        assert_eq!(Hooks::default().due(&tick(&web, &web, 1)), []);
    }

    #[test]
    fn a_webhook_url_is_shown_without_its_secrets() {
        assert_eq!(
            shown_url("https://ops:pw@hooks.example.com:8443/ferry/x?token=s3cret#frag"),
            "https://hooks.example.com:8443/ferry/x"
        );
        assert_eq!(shown_url("http://10.0.0.1/h"), "http://10.0.0.1/h");
        assert_eq!(shown_url("::"), "(not a URL)");
    }

    #[test]
    fn bad_hooks_are_refused_by_key() {
        let check = |h: Hooks| h.problems().unwrap_or_default();
        assert_eq!(check(all_hooks()), "");
        let relative = Hooks {
            on_change: vec!["notify-send".into(), "deployed".into()],
            ..all_hooks()
        };
        assert!(
            check(relative).starts_with(
                "hooks.onChange: the program \"notify-send\" must be an absolute path"
            )
        );
        let nul = Hooks {
            on_failure: vec!["/bin/echo".into(), "a\0b".into()],
            ..all_hooks()
        };
        assert_eq!(check(nul), "hooks.onFailure: \"a\\0b\" contains a NUL byte");
        for (url, says) in [
            (
                "ftp://x/y?token=1",
                "hooks.webhook ftp://x/y must be an http",
            ),
            ("file:///tmp/x", "must be an http:// or https:// URL"),
            ("hooks.example.com/x", "hooks.webhook is not a URL"),
        ] {
            let bad = Hooks {
                webhook: Some(url.into()),
                ..all_hooks()
            };
            let msg = check(bad);
            assert!(msg.contains(says) && !msg.contains("token"), "{url}: {msg}");
        }
        for sec in [0, MAX_TIMEOUT_SEC + 1] {
            let bad = Hooks {
                timeout_sec: sec,
                ..all_hooks()
            };
            assert!(check(bad).starts_with("hooks.timeoutSec is"));
        }
    }

    #[test]
    fn each_way_a_hook_ends_has_its_line() {
        let took = Duration::from_millis(42);
        let cases = [
            (
                HookKind::OnChange,
                HookRun::Exited {
                    code: Some(0),
                    signal: None,
                    took,
                },
                "hooks.onChange: /bin/notify ran (42 ms)",
            ),
            (
                HookKind::OnFailure,
                HookRun::Exited {
                    code: Some(3),
                    signal: None,
                    took,
                },
                "hooks.onFailure: /bin/notify exited with status 3 after 42 ms (the tick's outcome stands)",
            ),
            (
                HookKind::OnFailure,
                HookRun::Exited {
                    code: None,
                    signal: Some(9),
                    took,
                },
                "hooks.onFailure: /bin/notify was ended by signal 9 after 42 ms (the tick's outcome stands)",
            ),
            (
                HookKind::OnChange,
                HookRun::Killed {
                    after: Duration::from_secs(10),
                },
                "hooks.onChange: /bin/notify still ran after hooks.timeoutSec (10 s) and was killed with the processes it started (the tick's outcome stands)",
            ),
            (
                HookKind::OnChange,
                HookRun::NotStarted {
                    reason: "No such file or directory (os error 2)".into(),
                },
                "hooks.onChange: cannot run /bin/notify: No such file or directory (os error 2) (the tick's outcome stands)",
            ),
        ];
        for (kind, run, want) in cases {
            assert_eq!(line(kind, "/bin/notify", &run), want);
        }
        let url = "https://h.example.com/ferry";
        assert_eq!(
            line(
                HookKind::Webhook,
                url,
                &HookRun::Answered { status: 204, took }
            ),
            "hooks.webhook: POST https://h.example.com/ferry answered 204 (42 ms)"
        );
        assert_eq!(
            line(
                HookKind::Webhook,
                url,
                &HookRun::Answered { status: 500, took }
            ),
            "hooks.webhook: POST https://h.example.com/ferry answered 500 after 42 ms, not 2xx (the tick's outcome stands)"
        );
        assert_eq!(
            line(
                HookKind::Webhook,
                url,
                &HookRun::Unreachable {
                    reason: "connection refused".into()
                }
            ),
            "hooks.webhook: POST https://h.example.com/ferry failed: connection refused (the tick's outcome stands)"
        );
    }
}
