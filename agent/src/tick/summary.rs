//! The tick in a few figures: how it ended, its exit code, how long it took and where, what
//! it asked of the bucket and Caddy, and which services it changed or failed. `tick::run`
//! makes it once the tick is saved; the steps after it (the status report, metrics, hooks)
//! and the `reconcile` verb read it instead of the tick's internals. Pure: values in, values
//! out.

use std::collections::BTreeMap;

use crate::state::Outcome;

/// What a tick came to, in figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickSummary {
    /// When the tick started, RFC 3339 UTC.
    pub at: String,
    /// How it ended (route and retire steps included).
    pub outcome: Outcome,
    /// The exit code of `ferry-agent reconcile` ([`exit_code`]).
    pub exit_code: u8,
    /// Wall time of the whole pipeline, milliseconds.
    pub wall_ms: u64,
    /// Wall time per phase, milliseconds, by phase: `pull`, `systemd`, `health`, `route`,
    /// `drain`.
    pub phase_ms: BTreeMap<String, u64>,
    /// Requests made to the deploy bucket.
    pub bucket_requests: u64,
    /// Requests made to Caddy's admin API.
    pub caddy_requests: u64,
    /// The agent's peak RSS so far, KiB (`None`: `/proc` could not be read).
    pub peak_rss_kib: Option<u64>,
    /// Services the tick changed on the host (added, updated, started, removed) and that
    /// came out healthy, by name.
    pub changed: Vec<String>,
    /// Services that failed, were refused by host policy, were held back (quarantine) or
    /// are waiting for a later tick, by name.
    pub failed: Vec<String>,
    /// The generation of the manifest the tick worked from, if any.
    pub generation: Option<String>,
    /// Why the tick did not end ok, in one line (`None` when it did).
    pub message: Option<String>,
    /// Requests the wave gate made to the status store (reading earlier waves' reports).
    pub status_requests: u64,
    /// Whether a service's status record changed (a service began or stopped waiting for
    /// an earlier wave): the report must say so even when the host did not change.
    pub records_changed: bool,
}

impl TickSummary {
    /// Whether the tick changed or failed something (as opposed to a no-op).
    pub fn eventful(&self) -> bool {
        self.outcome != Outcome::Ok
            || !self.changed.is_empty()
            || !self.failed.is_empty()
            || self.records_changed
    }
}

/// The exit code of `ferry-agent reconcile`: 0 the host matches the manifest, or a service
/// waits for the earlier waves of its rollout (a wait is not a failure: the host gets there
/// by itself); 1 a service failed, was refused by host policy or halted by an earlier
/// wave's failure (like a quarantined version, it stays off until a new generation), Caddy routes could not be set, the state could not
/// be saved, the tick was cut short or the boot tick restored from state; 2 the manifest
/// was refused; 3 the bucket was unreachable (services restored from state). (75, another
/// tick holds the lock, is the verb's: no tick runs then.)
pub fn exit_code(outcome: Outcome, saved: bool) -> u8 {
    match outcome {
        _ if !saved => 1,
        Outcome::Ok => 0,
        Outcome::Failed => 1,
        Outcome::Refused => 2,
        Outcome::Unreachable => 3,
    }
}

/// The one-line reason of a tick that did not end ok, from its lines: for a refused
/// manifest or an unreachable bucket, the first line with the reasons indented under it;
/// for failed services, their lines; otherwise (routes, a cut-off boot tick) the first line
/// that is not about one of the `fine` services.
pub fn message(
    outcome: Outcome,
    lines: &[String],
    failed: &[String],
    fine: &[String],
) -> Option<String> {
    if outcome == Outcome::Ok {
        return None;
    }
    let first = lines.first()?;
    let joined = match outcome {
        Outcome::Refused | Outcome::Unreachable => std::iter::once(first.trim())
            .chain(
                lines[1..]
                    .iter()
                    .take_while(|l| l.starts_with("  "))
                    .map(|l| l.trim()),
            )
            .collect::<Vec<_>>()
            .join(" "),
        _ => {
            let about = |l: &str, names: &[String]| {
                names.iter().any(|n| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with(": "))
                })
            };
            let of_failed: Vec<&str> = lines
                .iter()
                .filter(|l| about(l, failed))
                .map(String::as_str)
                .collect();
            if of_failed.is_empty() {
                lines
                    .iter()
                    .find(|l| !about(l, fine) && !l.starts_with("  "))
                    .unwrap_or(first)
                    .trim()
                    .to_owned()
            } else {
                of_failed.join("; ")
            }
        }
    };
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exit_codes_follow_the_outcome_and_a_lost_save_is_a_failure() {
        assert_eq!(exit_code(Outcome::Ok, true), 0);
        assert_eq!(exit_code(Outcome::Failed, true), 1);
        assert_eq!(exit_code(Outcome::Refused, true), 2);
        assert_eq!(exit_code(Outcome::Unreachable, true), 3);
        assert_eq!(exit_code(Outcome::Ok, false), 1);
        assert_eq!(exit_code(Outcome::Unreachable, false), 1);
    }

    #[test]
    fn the_message_says_why_in_one_line() {
        assert_eq!(
            message(Outcome::Ok, &lines(&["web: unchanged"]), &[], &[]),
            None
        );
        let refused = lines(&[
            "manifest refused (1 reason); nothing changed:",
            "  refused: signed by an untrusted key",
            "web: unchanged",
        ]);
        assert_eq!(
            message(Outcome::Refused, &refused, &[], &[]).unwrap(),
            "manifest refused (1 reason); nothing changed: refused: signed by an untrusted key"
        );
        let failed = lines(&[
            "web: FAILED (update closure): health check failed; rolled back",
            "web-admin: unchanged",
            "api: unchanged",
        ]);
        assert_eq!(
            message(Outcome::Failed, &failed, &["web".to_owned()], &[]).unwrap(),
            "web: FAILED (update closure): health check failed; rolled back"
        );
        let routes = lines(&["web: unchanged", "caddy: cannot reach the admin API"]);
        assert_eq!(
            message(Outcome::Failed, &routes, &[], &["web".to_owned()]).unwrap(),
            "caddy: cannot reach the admin API"
        );
    }

    #[test]
    fn a_no_op_is_not_eventful() {
        let mut s = TickSummary {
            at: "2026-12-01T10:00:00Z".into(),
            outcome: Outcome::Ok,
            exit_code: 0,
            wall_ms: 40,
            phase_ms: BTreeMap::new(),
            bucket_requests: 1,
            caddy_requests: 1,
            peak_rss_kib: None,
            changed: vec![],
            failed: vec![],
            generation: None,
            status_requests: 0,
            records_changed: false,
            message: None,
        };
        assert!(!s.eventful());
        s.changed.push("web".into());
        assert!(s.eventful());
        s.changed.clear();
        s.outcome = Outcome::Unreachable;
        assert!(s.eventful());
    }
}
