//! Where one host stands in a rollout for one service, from its status report: done
//! (healthy on the generation for `soakSec`, by its own report's clock), soaking, behind,
//! stale (no answer within `staleSec`) or failed. One definition for both readers: the
//! agent's wave gate (which decides from the hosts of earlier waves) and `ferry status`
//! (which shows every host wave by wave), so the two never disagree on "done".
//!
//! Pure: the version asked for, the generation, the report and the time in.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::generation::is_older;
use crate::host_status::{HostStatus, ServiceState};
use crate::manifest::Rollout;

/// The version of one service a rollout is rolling out.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The service.
    pub service: &'a str,
    /// The store path the manifest asks for.
    pub store_path: &'a str,
    /// The rollout that applies to it (its own, or the manifest's).
    pub rollout: &'a Rollout,
    /// The manifest's generation.
    pub generation: &'a str,
}

/// Where one host stands for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Reported the version healthy for `soakSec`.
    Done,
    /// Reports the version healthy since `since`; soaked at `until` (once a report written
    /// after then says so).
    Soaking {
        /// Running since.
        since: String,
        /// `since` + `soakSec`, RFC 3339.
        until: String,
    },
    /// Has not got there yet, and why.
    Behind(String),
    /// Has not answered within `staleSec`, and what was last heard.
    Stale(String),
    /// Reports the version failed (or running something else): the rollout halts.
    Failed {
        /// Its state there.
        state: ServiceState,
        /// What it said.
        message: String,
    },
}

impl Standing {
    /// A few words for a line: `done`, `healthy since …, soaking until …`, `stale: …`.
    pub fn describe(&self) -> String {
        match self {
            Standing::Done => "done".to_owned(),
            Standing::Soaking { since, until } => {
                format!("healthy since {since}, soaking until {until}")
            }
            Standing::Behind(why) => why.clone(),
            Standing::Stale(why) => format!("stale: {why}"),
            Standing::Failed { state, message } => format!("{}: {message}", state.as_str()),
        }
    }
}

/// Where the host whose last report is `seen` (`None`: never read) stands for `asked` at
/// `now`.
pub fn standing(asked: Asked<'_>, seen: Option<&HostStatus>, now: DateTime<Utc>) -> Standing {
    let Asked {
        service,
        store_path,
        rollout,
        generation,
    } = asked;
    let stale_sec = i64::from(rollout.stale_sec());
    // The host had `staleSec` since the generation was published, or since it last spoke,
    // whichever is later.
    let last_word = |report_time: Option<&str>| {
        let mut last = parse(generation);
        if let Some(r) = report_time.and_then(parse) {
            last = Some(last.map_or(r, |g| g.max(r)));
        }
        last
    };
    let is_stale = |report_time: Option<&str>| {
        last_word(report_time).is_some_and(|t| (now - t).num_seconds() > stale_sec)
    };
    let stale_why = |report_time: Option<&str>| {
        last_word(report_time).map_or_else(String::new, |t| {
            format!(
                "nothing since {}, over rollout.staleSec ({stale_sec} s)",
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        })
    };
    let stale_or = |report_time: Option<&str>, why: String| {
        if is_stale(report_time) {
            Standing::Stale(format!("{why}; {}", stale_why(report_time)))
        } else {
            Standing::Behind(why)
        }
    };
    let Some(r) = seen else {
        return stale_or(None, "no report".to_owned());
    };
    let applied = r.manifest.as_ref().map(|m| m.generation.as_str());
    if applied != Some(generation) {
        let why = match applied {
            Some(a) if is_older(generation, a) => {
                format!("has applied a newer generation ({a})")
            }
            Some(a) => format!("has not applied generation {generation} yet (runs {a})"),
            None => format!("has not applied generation {generation} yet"),
        };
        return stale_or(Some(&r.time), why);
    }
    let Some(s) = r.services.iter().find(|s| s.name == service) else {
        return stale_or(Some(&r.time), format!("does not report {service} yet"));
    };
    let said = || s.message.clone().unwrap_or_default();
    match s.state {
        ServiceState::Running if s.store_path == store_path => {}
        ServiceState::Running => {
            return Standing::Failed {
                state: s.state,
                message: format!("runs {} instead of {store_path}", s.store_path),
            };
        }
        ServiceState::Pending | ServiceState::Waiting => {
            return stale_or(
                Some(&r.time),
                format!("{service} {}: {}", s.state.as_str(), said()),
            );
        }
        ServiceState::Failed
        | ServiceState::RolledBack
        | ServiceState::Quarantined
        | ServiceState::Refused
        | ServiceState::Halted => {
            return Standing::Failed {
                state: s.state,
                message: said(),
            };
        }
    }
    let soak = i64::from(rollout.soak_sec());
    let (Some(since), Some(written)) = (parse(&s.since), parse(&r.time)) else {
        return Standing::Behind(format!("its report's times do not parse ({})", r.time));
    };
    if (written - since).num_seconds() >= soak {
        return Standing::Done;
    }
    let until = since + chrono::Duration::seconds(soak);
    let soaking = Standing::Soaking {
        since: s.since.clone(),
        until: until.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    // Soaked by the clock but not yet by a report: a host that never writes it is stale.
    if now >= until && is_stale(Some(&r.time)) {
        return Standing::Stale(format!(
            "healthy since {}, but no report after its soak; {}",
            s.since,
            stale_why(Some(&r.time))
        ));
    }
    soaking
}

/// An RFC 3339 time as UTC, `None` when it does not parse.
pub fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::host_status::{AppliedManifest, LastTick, ServiceStatus, TickOutcome};

    const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const G2: &str = "2026-12-01T10:00:00Z";

    fn seen(time: &str, state: ServiceState) -> HostStatus {
        HostStatus {
            version: 1,
            host: "a".into(),
            agent_version: "0.1.0".into(),
            time: time.into(),
            every_sec: 60,
            last_tick: LastTick {
                outcome: TickOutcome::Ok,
                exit_code: 0,
                wall_ms: 1,
                phases: BTreeMap::new(),
                message: None,
            },
            manifest: Some(AppliedManifest {
                generation: G2.into(),
                revision: None,
                sha256: "ab".into(),
            }),
            services: vec![ServiceStatus {
                name: "web".into(),
                store_path: V2.into(),
                state,
                live_port: None,
                since: "2026-12-01T10:01:00Z".into(),
                message: None,
            }],
            quarantined: Vec::new(),
            system: None,
        }
    }

    /// The soak is proven by the report's own clock; silence past `staleSec` is stale.
    #[test]
    fn done_by_the_reports_clock_and_stale_by_silence() {
        let rollout: Rollout =
            serde_json::from_str(r#"{"waves": [["a"], ["*"]], "soakSec": 60, "staleSec": 120}"#)
                .unwrap();
        let asked = Asked {
            service: "web",
            store_path: V2,
            rollout: &rollout,
            generation: G2,
        };
        let at = |s: &str| parse(s).unwrap();
        let soaking = standing(
            asked,
            Some(&seen("2026-12-01T10:01:59Z", ServiceState::Running)),
            at("2026-12-01T10:02:10Z"),
        );
        assert_eq!(
            soaking.describe(),
            "healthy since 2026-12-01T10:01:00Z, soaking until 2026-12-01T10:02:00Z"
        );
        let done = standing(
            asked,
            Some(&seen("2026-12-01T10:02:00Z", ServiceState::Running)),
            at("2026-12-01T10:02:10Z"),
        );
        assert_eq!(done, Standing::Done);
        assert_eq!(
            standing(asked, None, at("2026-12-01T10:02:00Z")),
            Standing::Behind("no report".into())
        );
        assert_eq!(
            standing(asked, None, at("2026-12-01T10:02:01Z")).describe(),
            "stale: no report; nothing since 2026-12-01T10:00:00Z, over rollout.staleSec (120 s)"
        );
    }
}
