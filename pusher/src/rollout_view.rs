//! `ferry status` wave by wave: for each rollout of the live manifest (the manifest's, and
//! each service's own), its waves in order, each with its hosts and, per service the
//! rollout orders, where the host stands: done (healthy on the generation for `soakSec`),
//! soaking (until when), pending (has not applied it yet), waiting (for which hosts of
//! earlier waves), failed, halted (by which host), stale (no answer within `staleSec`, and
//! what `onStale` makes the later waves do about it) or unreadable.
//!
//! Pure, tested on literals. A host's standing is the schema's `wave_standing`: the very
//! judgement the agents' wave gates make, so "done" here is "done" for the next wave.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ferry_schema::Manifest;
use ferry_schema::host_status::{HostStatus, ServiceState};
use ferry_schema::manifest::{OnStale, Rollout};
use ferry_schema::wave_standing::{Asked, Standing, standing};
use serde::Serialize;

use crate::fleet_view::Read;

/// One rollout of the manifest and its waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The services it orders, in manifest order.
    pub services: Vec<String>,
    /// Whether it is the manifest's own `rollout` (else the services' own).
    pub manifest_level: bool,
    /// `soakSec`, defaults applied.
    pub soak_sec: u32,
    /// `staleSec`, defaults applied.
    pub stale_sec: u32,
    /// `onStale`, defaults applied.
    pub on_stale: OnStale,
    /// The waves in order; hosts no wave matches come last, in a wave of their own.
    pub waves: Vec<Wave>,
}

/// One wave and where its hosts stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Its number, from 1 (the hosts in no wave: one past the last).
    pub wave: usize,
    /// Its entries as the manifest writes them (empty for the hosts in no wave).
    pub matches: Vec<String>,
    /// Its hosts, by name, one entry per service of the rollout the host runs.
    pub hosts: Vec<HostPhase>,
}

/// Where one host stands for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPhase {
    /// Host name.
    pub host: String,
    /// Service name.
    pub service: String,
    /// Where it stands.
    #[serde(flatten)]
    pub phase: Phase,
}

/// Where a host stands for a service of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "phase",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Phase {
    /// Runs the generation's version healthy, and a report shows it lasted `soakSec`.
    Done,
    /// Runs it healthy since `since`; the next wave may go once a report after `until`
    /// says it still does.
    Soaking {
        /// Healthy since.
        since: String,
        /// `since` + `soakSec`.
        until: String,
    },
    /// Has not applied it yet (its tick has not come), and why.
    Pending {
        /// What its report says instead.
        why: String,
    },
    /// Its gate holds the version back for hosts of earlier waves.
    Waiting {
        /// The hosts of earlier waves it still waits for (empty: none any more, it
        /// applies on its next tick).
        on: Vec<String>,
        /// What its report says.
        why: String,
    },
    /// Reports the version failed, rolled back, quarantined, refused, or runs another.
    Failed {
        /// Its state for the service.
        state: ServiceState,
        /// What it said.
        message: String,
    },
    /// Its gate will not apply the version: a host of an earlier wave reports it failed.
    Halted {
        /// That host, when a report of an earlier wave still says so.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// What the halted host said.
        message: String,
    },
    /// No answer within `staleSec` (powered off, or no report reaches the status store).
    Stale {
        /// What was last heard, and since when.
        why: String,
        /// What later waves do about it.
        on_stale: OnStale,
        /// Whether hosts of later waves run the service (else `onStale` changes nothing).
        later_waves: bool,
    },
    /// Its report could not be read.
    Unreadable {
        /// Why.
        why: String,
    },
}

impl Phase {
    /// The word in the status line.
    pub fn word(&self) -> &'static str {
        match self {
            Phase::Done => "done",
            Phase::Soaking { .. } => "soaking",
            Phase::Pending { .. } => "pending",
            Phase::Waiting { .. } => "waiting",
            Phase::Failed { .. } => "failed",
            Phase::Halted { .. } => "halted",
            Phase::Stale { .. } => "stale",
            Phase::Unreadable { .. } => "unreadable",
        }
    }
}

/// The rollouts of `manifest` (services sharing one rollout share a view), wave by wave,
/// from the hosts' `reports` at `now`. Empty without a rollout.
pub fn rollout_views(
    manifest: &Manifest,
    reports: &BTreeMap<String, Read>,
    now: DateTime<Utc>,
) -> Vec<RolloutView> {
    let mut groups: Vec<(&Rollout, bool, Vec<usize>)> = Vec::new();
    for (i, s) in manifest.services.iter().enumerate() {
        let (rollout, manifest_level) = match (&s.rollout, &manifest.rollout) {
            (Some(own), _) => (own, false),
            (None, Some(all)) => (all, true),
            (None, None) => continue,
        };
        match groups
            .iter_mut()
            .find(|(r, level, _)| *r == rollout && *level == manifest_level)
        {
            Some((_, _, members)) => members.push(i),
            None => groups.push((rollout, manifest_level, vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(rollout, manifest_level, members)| {
            view_of(manifest, rollout, manifest_level, &members, reports, now)
        })
        .collect()
}

fn view_of(
    manifest: &Manifest,
    rollout: &Rollout,
    manifest_level: bool,
    members: &[usize],
    reports: &BTreeMap<String, Read>,
    now: DateTime<Utc>,
) -> RolloutView {
    let last = rollout.waves.len();
    let wave_of = |h: &str| rollout.wave_of(h).unwrap_or(last);
    let mut waves: Vec<Wave> = rollout
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| Wave {
            wave: i + 1,
            matches: w.clone(),
            hosts: Vec::new(),
        })
        .chain(std::iter::once(Wave {
            wave: last + 1,
            matches: Vec::new(),
            hosts: Vec::new(),
        }))
        .collect();
    for &i in members {
        let s = &manifest.services[i];
        let asked = Asked {
            service: &s.name,
            store_path: &s.artifact.store_path,
            rollout,
            generation: &manifest.generation,
        };
        let seen = |h: &str| reports.get(h);
        let standing_of = |h: &str| match seen(h) {
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(r)) => Ok(standing(asked, Some(r), now)),
            None => Ok(standing(asked, None, now)),
        };
        let mut hosts: Vec<&String> = s.hosts.iter().collect();
        hosts.sort();
        hosts.dedup();
        for host in hosts {
            let wave = wave_of(host);
            let earlier: Vec<(usize, &String)> = s
                .hosts
                .iter()
                .map(|h| (wave_of(h), h))
                .filter(|(w, _)| *w < wave)
                .collect();
            let later_waves = s.hosts.iter().any(|h| wave_of(h) > wave);
            let report = match seen(host) {
                Some(Ok(r)) => Some(r),
                _ => None,
            };
            let phase = match standing_of(host) {
                Err(why) => Phase::Unreadable { why },
                Ok(st) => phase_of(PhaseInput {
                    standing: st,
                    service: &s.name,
                    report,
                    earlier: &earlier,
                    standing_of: &standing_of,
                    on_stale: rollout.on_stale(),
                    later_waves,
                }),
            };
            waves[wave].hosts.push(HostPhase {
                host: host.clone(),
                service: s.name.clone(),
                phase,
            });
        }
    }
    for w in &mut waves {
        w.hosts
            .sort_by(|a, b| (&a.host, &a.service).cmp(&(&b.host, &b.service)));
    }
    waves.retain(|w| w.wave <= last || !w.hosts.is_empty());
    RolloutView {
        services: members
            .iter()
            .map(|&i| manifest.services[i].name.clone())
            .collect(),
        manifest_level,
        soak_sec: rollout.soak_sec(),
        stale_sec: rollout.stale_sec(),
        on_stale: rollout.on_stale(),
        waves,
    }
}

type StandingOf<'a> = dyn Fn(&str) -> Result<Standing, String> + 'a;

struct PhaseInput<'a> {
    standing: Standing,
    service: &'a str,
    report: Option<&'a HostStatus>,
    earlier: &'a [(usize, &'a String)],
    standing_of: &'a StandingOf<'a>,
    on_stale: OnStale,
    later_waves: bool,
}

fn phase_of(p: PhaseInput<'_>) -> Phase {
    match p.standing {
        Standing::Done => Phase::Done,
        Standing::Soaking { since, until } => Phase::Soaking { since, until },
        Standing::Stale(why) => Phase::Stale {
            why,
            on_stale: p.on_stale,
            later_waves: p.later_waves,
        },
        Standing::Failed {
            state: ServiceState::Halted,
            message,
        } => Phase::Halted {
            by: halted_by(p.earlier, p.standing_of),
            message,
        },
        Standing::Failed { state, message } => Phase::Failed { state, message },
        Standing::Behind(why) => {
            let waiting = p.report.is_some_and(|r| {
                r.services
                    .iter()
                    .any(|s| s.name == p.service && s.state == ServiceState::Waiting)
            });
            if !waiting {
                return Phase::Pending { why };
            }
            // Whom it still waits for, as its gate would judge them now.
            let on = p
                .earlier
                .iter()
                .filter(|(_, h)| match (p.standing_of)(h) {
                    Ok(Standing::Done) => false,
                    Ok(Standing::Stale(_)) => p.on_stale == OnStale::Wait,
                    _ => true,
                })
                .map(|(_, h)| (*h).clone())
                .collect();
            Phase::Waiting { on, why }
        }
    }
}

/// The host of an earlier wave whose failure halts the later ones: the earliest that
/// reports the version failed itself, else the earliest halted one.
fn halted_by(earlier: &[(usize, &String)], standing_of: &StandingOf<'_>) -> Option<String> {
    let mut failed: Vec<(bool, usize, &String)> = earlier
        .iter()
        .filter_map(|(w, h)| match standing_of(h) {
            Ok(Standing::Failed { state, .. }) => Some((state == ServiceState::Halted, *w, *h)),
            _ => None,
        })
        .collect();
    failed.sort();
    failed.first().map(|(_, _, h)| (*h).clone())
}

/// The lines `ferry status` prints after the hosts' verdicts: per rollout a heading, per
/// wave its entries, per host and service where it stands.
pub fn render(views: &[RolloutView]) -> String {
    let mut out = String::new();
    for v in views {
        let whose = if v.manifest_level {
            format!("the manifest's rollout ({})", v.services.join(", "))
        } else {
            format!("rollout of {}", v.services.join(", "))
        };
        out.push_str(&format!(
            "{whose}: soakSec {}, staleSec {}, onStale {}\n",
            v.soak_sec,
            v.stale_sec,
            v.on_stale.as_str()
        ));
        let all = v.waves.iter().flat_map(|w| &w.hosts);
        let host_w = all.clone().map(|h| h.host.len()).max().unwrap_or(0);
        let service_w = all.map(|h| h.service.len()).max().unwrap_or(0);
        for w in &v.waves {
            if w.matches.is_empty() {
                out.push_str("  in no wave (after the last)\n");
            } else {
                out.push_str(&format!("  wave {}: {}\n", w.wave, w.matches.join(", ")));
            }
            if w.hosts.is_empty() {
                out.push_str("    (no host)\n");
            }
            for h in &w.hosts {
                let line = format!(
                    "    {:host_w$}  {:service_w$}  {:8}  {}",
                    h.host,
                    h.service,
                    h.phase.word(),
                    detail(v, h)
                );
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// What follows the phase's word.
fn detail(v: &RolloutView, h: &HostPhase) -> String {
    match &h.phase {
        Phase::Done => String::new(),
        Phase::Soaking { since, until } => format!("healthy since {since}, soaked at {until}"),
        Phase::Pending { why } => why.clone(),
        Phase::Waiting { on, .. } if on.is_empty() => {
            "the earlier waves are done: it applies on its next tick".to_owned()
        }
        Phase::Waiting { on, .. } => format!(
            "for {}",
            on.iter()
                .map(|e| format!("{e} ({})", short(phase_in(v, e, &h.service))))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Phase::Failed { state, message } if message.is_empty() => state.as_str().to_owned(),
        Phase::Failed { state, message } => format!("{}: {message}", state.as_str()),
        Phase::Halted { by: Some(by), .. } => {
            let cause = match phase_in(v, by, &h.service) {
                Some(Phase::Failed { state, message }) if !message.is_empty() => {
                    format!(": {} {}: {message}", h.service, state.as_str())
                }
                Some(Phase::Failed { state, .. }) => format!(": {} {}", h.service, state.as_str()),
                _ => String::new(),
            };
            format!("by {by}{cause}")
        }
        Phase::Halted { by: None, message } => message.clone(),
        Phase::Stale {
            why,
            on_stale,
            later_waves,
        } => match (later_waves, on_stale) {
            (false, _) => format!("{why} (onStale = {}; no later wave)", on_stale.as_str()),
            (true, OnStale::Wait) => format!("{why}; onStale = wait: later waves wait for it"),
            (true, OnStale::Skip) => {
                format!("{why}; onStale = skip: later waves go on without it")
            }
        },
        Phase::Unreadable { why } => why.clone(),
    }
}

/// Where `host` stands for `service` in `v`.
fn phase_in<'a>(v: &'a RolloutView, host: &str, service: &str) -> Option<&'a Phase> {
    v.waves
        .iter()
        .flat_map(|w| &w.hosts)
        .find(|h| h.host == host && h.service == service)
        .map(|h| &h.phase)
}

/// A few words for a host waited on: `soaking until …`, `stale`, `pending`.
fn short(phase: Option<&Phase>) -> String {
    match phase {
        Some(Phase::Soaking { until, .. }) => format!("soaking until {until}"),
        Some(p) => p.word().to_owned(),
        None => "not in this rollout".to_owned(),
    }
}

/// For `push --wait`'s line of `host`: what the waves are doing with it, for each service
/// of a rollout it waits for, soaks or is stale in (`wave 2: web waiting for host-a
/// (soaking until …)`); `None` when none (done, pending, failed or halted say themselves in
/// the host's verdict).
pub fn summary(views: &[RolloutView], host: &str) -> Option<String> {
    let mut parts = Vec::new();
    for v in views {
        for w in &v.waves {
            for h in w.hosts.iter().filter(|h| h.host == host) {
                if matches!(
                    h.phase,
                    Phase::Waiting { .. } | Phase::Soaking { .. } | Phase::Stale { .. }
                ) {
                    parts.push(format!(
                        "wave {}: {} {} {}",
                        w.wave,
                        h.service,
                        h.phase.word(),
                        detail(v, h)
                    ));
                }
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_schema::host_status::{AppliedManifest, LastTick, ServiceStatus, TickOutcome};
    use serde_json::json;

    const V1: &str = "/nix/store/0c8z8wyh1dd6d2ixb5q4w7s4rxw6hvw8-web-1";
    const V2: &str = "/nix/store/fj735d9xf8fidg1pwmkixm4jm21vdbh8-web-2";
    const G1: &str = "2026-12-01T09:00:00Z";
    const G2: &str = "2026-12-01T10:00:00Z";

    fn manifest(rollout: serde_json::Value) -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "generation": G2,
            "services": [{"name": "web", "hosts": ["host-a", "host-b", "host-c"],
                "artifact": {"type": "nix-closure", "storePath": V2},
                "exec": {"command": "web"}}],
            "rollout": rollout,
        }))
        .unwrap()
    }

    fn waves() -> serde_json::Value {
        json!({"waves": [["host-a"], ["host-*"]], "soakSec": 60, "staleSec": 120})
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:01:30Z".parse().unwrap()
    }

    /// `host`'s report written at `time`, having applied `generation`, web in `state` at
    /// `path` since `since`, saying `message`.
    fn report(
        host: &str,
        time: &str,
        generation: &str,
        state: ServiceState,
        path: &str,
        since: &str,
        message: Option<&str>,
    ) -> (String, Read) {
        (
            host.to_owned(),
            Ok(HostStatus {
                version: 1,
                host: host.to_owned(),
                agent_version: "0.1.0".to_owned(),
                time: time.to_owned(),
                every_sec: 60,
                last_tick: LastTick {
                    outcome: TickOutcome::Ok,
                    exit_code: 0,
                    wall_ms: 9,
                    phases: BTreeMap::new(),
                    message: None,
                },
                manifest: Some(AppliedManifest {
                    generation: generation.to_owned(),
                    revision: None,
                    sha256: "ab".to_owned(),
                }),
                services: vec![ServiceStatus {
                    name: "web".to_owned(),
                    store_path: path.to_owned(),
                    state,
                    live_port: None,
                    since: since.to_owned(),
                    message: message.map(str::to_owned),
                }],
                quarantined: Vec::new(),
                system: None,
            }),
        )
    }

    fn phases(v: &RolloutView) -> Vec<(usize, &str, &Phase)> {
        v.waves
            .iter()
            .flat_map(|w| {
                w.hosts
                    .iter()
                    .map(move |h| (w.wave, h.host.as_str(), &h.phase))
            })
            .collect()
    }

    #[test]
    fn no_rollout_no_view() {
        let mut m = manifest(serde_json::Value::Null);
        assert!(rollout_views(&m, &BTreeMap::new(), now()).is_empty());
        // A service's own rollout is a view of its own.
        m.services[0].rollout = serde_json::from_value(waves()).unwrap();
        let views = rollout_views(&m, &BTreeMap::new(), now());
        assert_eq!(views.len(), 1);
        assert!(!views[0].manifest_level);
    }

    #[test]
    fn the_canary_soaks_and_the_next_wave_waits_for_it() {
        let reports = BTreeMap::from([
            report(
                "host-a",
                "2026-12-01T10:01:10Z",
                G2,
                ServiceState::Running,
                V2,
                "2026-12-01T10:01:00Z",
                None,
            ),
            report(
                "host-b",
                "2026-12-01T10:01:20Z",
                G2,
                ServiceState::Waiting,
                V1,
                G1,
                Some("web: wave 2: waiting before …"),
            ),
            // Has not ticked since the push.
            report(
                "host-c",
                "2026-12-01T09:59:00Z",
                G1,
                ServiceState::Running,
                V1,
                G1,
                None,
            ),
        ]);
        let views = rollout_views(&manifest(waves()), &reports, now());
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!(
            (v.soak_sec, v.stale_sec, v.on_stale, v.manifest_level),
            (60, 120, OnStale::Wait, true)
        );
        assert_eq!(
            phases(v),
            vec![
                (
                    1,
                    "host-a",
                    &Phase::Soaking {
                        since: "2026-12-01T10:01:00Z".into(),
                        until: "2026-12-01T10:02:00Z".into()
                    }
                ),
                (
                    2,
                    "host-b",
                    &Phase::Waiting {
                        on: vec!["host-a".into()],
                        why: "web waiting: web: wave 2: waiting before …".into()
                    }
                ),
                (
                    2,
                    "host-c",
                    &Phase::Pending {
                        why: format!("has not applied generation {G2} yet (runs {G1})")
                    }
                ),
            ]
        );
        assert_eq!(
            render(&views),
            "the manifest's rollout (web): soakSec 60, staleSec 120, onStale wait\n\
             \x20 wave 1: host-a\n\
             \x20   host-a  web  soaking   healthy since 2026-12-01T10:01:00Z, soaked at 2026-12-01T10:02:00Z\n\
             \x20 wave 2: host-*\n\
             \x20   host-b  web  waiting   for host-a (soaking until 2026-12-01T10:02:00Z)\n\
             \x20   host-c  web  pending   has not applied generation 2026-12-01T10:00:00Z yet (runs 2026-12-01T09:00:00Z)\n"
        );
        assert_eq!(
            summary(&views, "host-b").as_deref(),
            Some("wave 2: web waiting for host-a (soaking until 2026-12-01T10:02:00Z)")
        );
        // Soaked (a report after the soak says so): done, and the waiter applies next.
        let mut reports = reports;
        reports.extend([report(
            "host-a",
            "2026-12-01T10:02:00Z",
            G2,
            ServiceState::Running,
            V2,
            "2026-12-01T10:01:00Z",
            None,
        )]);
        let views = rollout_views(&manifest(waves()), &reports, now());
        let got = phases(&views[0]);
        assert_eq!(got[0].2, &Phase::Done);
        assert!(matches!(got[1].2, Phase::Waiting { on, .. } if on.is_empty()));
        assert_eq!(summary(&views, "host-a"), None);
        assert!(render(&views).contains(
            "host-b  web  waiting   the earlier waves are done: it applies on its next tick"
        ));
    }

    #[test]
    fn a_failed_canary_halts_the_next_wave_named() {
        let reports = BTreeMap::from([
            report(
                "host-a",
                "2026-12-01T10:01:10Z",
                G2,
                ServiceState::RolledBack,
                V1,
                "2026-12-01T10:01:00Z",
                Some("GET /health: 503"),
            ),
            report(
                "host-b",
                "2026-12-01T10:01:20Z",
                G2,
                ServiceState::Halted,
                V1,
                G1,
                Some("web: wave 2: halted, not applying …"),
            ),
        ]);
        let views = rollout_views(&manifest(waves()), &reports, now());
        let got = phases(&views[0]);
        assert_eq!(
            got[1].2,
            &Phase::Halted {
                by: Some("host-a".into()),
                message: "web: wave 2: halted, not applying …".into()
            }
        );
        let text = render(&views);
        assert!(
            text.contains("host-a  web  failed    rolled-back: GET /health: 503\n"),
            "{text}"
        );
        assert!(
            text.contains("host-b  web  halted    by host-a: web rolled-back: GET /health: 503\n"),
            "{text}"
        );
        // Never reported, and the push is younger than staleSec: pending, not stale.
        assert!(
            text.contains("host-c  web  pending   no report\n"),
            "{text}"
        );
    }

    #[test]
    fn a_silent_canary_is_stale_and_on_stale_says_what_the_next_wave_does() {
        let silent_since = "2026-12-01T09:30:00Z";
        for (on_stale, says, waits) in [
            ("wait", "onStale = wait: later waves wait for it", true),
            (
                "skip",
                "onStale = skip: later waves go on without it",
                false,
            ),
        ] {
            let mut rollout = waves();
            rollout["onStale"] = json!(on_stale);
            let reports = BTreeMap::from([
                report(
                    "host-a",
                    silent_since,
                    G1,
                    ServiceState::Running,
                    V1,
                    G1,
                    None,
                ),
                report(
                    "host-b",
                    "2026-12-01T10:01:20Z",
                    G2,
                    ServiceState::Waiting,
                    V1,
                    G1,
                    Some("waiting"),
                ),
            ]);
            // 90 s after the push: not stale yet (staleSec 120).
            let early = "2026-12-01T10:01:30Z".parse().unwrap();
            let views = rollout_views(&manifest(rollout.clone()), &reports, early);
            assert_eq!(phases(&views[0])[0].2.word(), "pending");
            // 150 s after it: stale.
            let late = "2026-12-01T10:02:30Z".parse().unwrap();
            let views = rollout_views(&manifest(rollout), &reports, late);
            let got = phases(&views[0]);
            assert!(
                matches!(
                    got[0].2,
                    Phase::Stale {
                        later_waves: true,
                        ..
                    }
                ),
                "{got:?}"
            );
            let text = render(&views);
            assert!(
                text.contains(&format!(
                    "host-a  web  stale     has not applied generation {G2} yet (runs {G1}); nothing since {G2}, over rollout.staleSec (120 s); {says}\n"
                )),
                "{text}"
            );
            // Whom host-b waits for: the stale host only while onStale is wait.
            assert_eq!(
                matches!(got[1].2, Phase::Waiting { on, .. } if on == &["host-a".to_owned()]),
                waits,
                "{on_stale}: {got:?}"
            );
            assert!(
                summary(&views, "host-a")
                    .is_some_and(|s| s.starts_with("wave 1: web stale") && s.contains(says))
            );
        }
    }

    #[test]
    fn hosts_in_no_wave_come_last_and_unreadable_reports_say_why() {
        let rollout = json!({"waves": [["host-a"], ["host-b"]]});
        let reports = BTreeMap::from([(
            "host-b".to_owned(),
            Err("hosts/host-b.json: not JSON".to_owned()),
        )]);
        let views = rollout_views(&manifest(rollout), &reports, now());
        let waves: Vec<(usize, Vec<&str>)> = views[0]
            .waves
            .iter()
            .map(|w| (w.wave, w.hosts.iter().map(|h| h.host.as_str()).collect()))
            .collect();
        assert_eq!(
            waves,
            vec![
                (1, vec!["host-a"]),
                (2, vec!["host-b"]),
                (3, vec!["host-c"])
            ]
        );
        let text = render(&views);
        assert!(text.contains("  in no wave (after the last)\n"), "{text}");
        assert!(
            text.contains("host-b  web  unreadable  hosts/host-b.json: not JSON"),
            "{text}"
        );
        assert!(
            text.contains("soakSec 60, staleSec 900, onStale wait"),
            "{text}"
        );
    }

    #[test]
    fn json_names_the_phase_and_its_fields() {
        let reports = BTreeMap::from([report(
            "host-a",
            "2026-12-01T09:30:00Z",
            G1,
            ServiceState::Running,
            V1,
            G1,
            None,
        )]);
        let late = "2026-12-01T10:05:00Z".parse().unwrap();
        let views = rollout_views(&manifest(waves()), &reports, late);
        let doc = serde_json::to_value(&views).unwrap();
        assert_eq!(doc[0]["onStale"], "wait");
        assert_eq!(doc[0]["waves"][0]["matches"], json!(["host-a"]));
        let a = &doc[0]["waves"][0]["hosts"][0];
        assert_eq!(
            (
                &a["host"],
                &a["service"],
                &a["phase"],
                &a["onStale"],
                &a["laterWaves"]
            ),
            (
                &json!("host-a"),
                &json!("web"),
                &json!("stale"),
                &json!("wait"),
                &json!(true)
            )
        );
    }
}
