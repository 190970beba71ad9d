//! Route step (after record): make Caddy hold exactly Ferry's routes for the services this host
//! runs successfully, every tick (Caddy forgets API changes on a restart or reload). A
//! converged host costs one GET and no writes. Routes come from the recorded (last good)
//! services, so a service whose update failed keeps routing to the version that still runs,
//! and one that never worked gets no route. A domain the host's own configuration serves (a
//! route in the same server that is not Ferry's matches it) is never routed: Ferry's routes
//! come first and would take the site over, so that route is left out (and any earlier one
//! deleted) and the step reports it and fails.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TickReport;
use crate::backend::caddy::{AdminAddressError, CaddyAdmin, Proxy, ProxyError};
use crate::config::Caddy;
use crate::plan::Action;
use crate::render::unit::is_blue_green;
use crate::routes::{
    Drift, Route, RouteSpec, RouteWrite, claimed_by, dialled_ports, drift, drift_lines, ferry_id,
    host_claims, ordered_routes, repairs,
};
use crate::state::{Outcome, State};

/// Routing for a tick: the proxy and the server that holds Ferry's routes.
#[derive(Debug, Clone)]
pub struct Routing<P> {
    /// The proxy's admin API.
    pub proxy: P,
    /// Server name (`apps.http.servers.<name>`).
    pub server: String,
    /// The server object to create when it is missing (`None`: report instead).
    pub create: Option<Value>,
}

impl Routing<CaddyAdmin> {
    /// Routing as `[caddy]` configures it; `None` when `enable = false`.
    pub fn from_config(config: &Caddy) -> Result<Option<Self>, AdminAddressError> {
        if !config.enable {
            return Ok(None);
        }
        Ok(Some(Self {
            proxy: CaddyAdmin::new(&config.admin, Duration::from_secs(config.timeout_sec))?,
            server: config.server.clone(),
            create: config
                .create_server
                .then(|| server_value(&config.listen, config.automatic_https)),
        }))
    }
}

/// Run the step after a tick, from what the tick recorded: its lines join the tick's report
/// and the recorded last tick, and a routing failure turns an ok tick into a failed one
/// (the services themselves are deployed; only traffic is missing).
pub async fn after_tick<P: Proxy>(
    routing: &Routing<P>,
    state: &mut State,
    report: &mut TickReport,
) -> RouteReport {
    let changed: BTreeSet<String> = match &report.plan {
        Some(plan) => plan
            .services
            .iter()
            .zip(&report.applied.services)
            .filter(|(p, o)| o.ok && p.action != Action::Unchanged)
            .map(|(p, _)| p.name.clone())
            .collect(),
        None => BTreeSet::new(),
    };
    let routed = reassert(routing, &specs_from_state(state), &changed).await;
    report.applied.phases.route = routed.elapsed;
    report.lines.extend(routed.lines.iter().cloned());
    if !routed.ok && report.outcome == Outcome::Ok {
        report.outcome = Outcome::Failed;
    }
    if let Some(last) = &mut state.last_tick {
        last.lines.extend(routed.lines.iter().cloned());
        last.outcome = report.outcome;
        let ms = u64::try_from(routed.elapsed.as_millis()).unwrap_or(u64::MAX);
        last.duration_ms = last.duration_ms.saturating_add(ms);
    }
    routed
}

/// Whether the state may not know which blue-green instance is live: it records no service
/// (a first tick, or `state.json` lost) or a blue-green one without its live port.
pub fn may_not_know_live_instances(state: &State) -> bool {
    state.services.is_empty()
        || state
            .services
            .values()
            .any(|a| is_blue_green(&a.service) && a.live_port.is_none())
}

/// The port each of Ferry's routes dials now, by service (empty when Caddy cannot be read:
/// then only systemd says which blue-green instance is live). Read before a tick that may
/// not know a live instance (state lost), so the tick keeps traffic where it goes.
pub async fn dialled<P: Proxy>(routing: &Routing<P>) -> BTreeMap<String, u16> {
    match routing.proxy.server(&routing.server).await {
        Ok(Some(server)) => match server.get("routes") {
            Some(Value::Array(routes)) => dialled_ports(routes),
            _ => BTreeMap::new(),
        },
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            tracing::warn!("cannot read Caddy's routes to find live instances: {e}");
            BTreeMap::new()
        }
    }
}

/// The server object the agent creates: the listen addresses, and automatic HTTPS off when
/// asked (a plain-HTTP listener).
pub fn server_value(listen: &[String], automatic_https: bool) -> Value {
    let mut v = json!({"listen": listen, "routes": []});
    if !automatic_https {
        v["automatic_https"] = json!({"disable": true});
    }
    v
}

/// What the step did.
#[derive(Debug, Clone, Default)]
pub struct RouteReport {
    /// Lines for the tick's output, each starting with `routes: `.
    pub lines: Vec<String>,
    /// Write requests made to the admin API.
    pub writes: u32,
    /// All requests made to the admin API (a converged host: one GET).
    pub requests: u64,
    /// Whether Caddy now holds the desired routes.
    pub ok: bool,
    /// Time the step took.
    pub elapsed: Duration,
}

/// The routes wanted for the services recorded in `state`.
pub fn specs_from_state(state: &State) -> Vec<RouteSpec> {
    state
        .services
        .iter()
        .filter_map(|(name, applied)| {
            let http = applied.service.http.as_ref()?;
            Some(RouteSpec {
                service: name.clone(),
                domain: http.domain.clone(),
                path: http.path.clone(),
                // A blue-green service's live instance; a plain one listens on its port.
                port: applied.live_port.unwrap_or(http.internal_port),
            })
        })
        .collect()
}

/// Bring Caddy in line with `specs`. `changed` names the services this tick deployed or
/// removed: a route written for them is an expected change, anything else is drift.
pub async fn reassert<P: Proxy>(
    routing: &Routing<P>,
    specs: &[RouteSpec],
    changed: &BTreeSet<String>,
) -> RouteReport {
    let started = Instant::now();
    let before = routing.proxy.requests();
    let mut report = RouteReport::default();
    run(routing, specs, changed, &mut report).await;
    report.elapsed = started.elapsed();
    report.requests = routing.proxy.requests().saturating_sub(before);
    report
}

async fn run<P: Proxy>(
    routing: &Routing<P>,
    specs: &[RouteSpec],
    changed: &BTreeSet<String>,
    report: &mut RouteReport,
) {
    let desired = ordered_routes(specs);
    let server = match routing.proxy.server(&routing.server).await {
        Ok(s) => s,
        // With nothing to route, a host without a reachable Caddy is fine.
        Err(e) if e.is_unreachable() && desired.is_empty() => {
            report.ok = true;
            return;
        }
        Err(e) => return fail(report, &e),
    };
    let Some(server) = server else {
        if desired.is_empty() {
            report.ok = true;
            return;
        }
        let Some(value) = &routing.create else {
            report.lines.push(format!(
                "routes: Caddy at {} has no server {:?}; set caddy.server to one of its servers or caddy.createServer = true; retrying next tick",
                routing.proxy.admin(),
                routing.server
            ));
            return;
        };
        let mut value = value.clone();
        value["routes"] = desired.iter().map(|r| r.value.clone()).collect();
        report.writes += 1;
        match routing.proxy.create_server(&routing.server, &value).await {
            Ok(()) => {
                report.ok = true;
                report.lines.push(format!(
                    "routes: created Caddy server {} with {}",
                    routing.server,
                    desired
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Err(e) => fail(report, &e),
        }
        return;
    };
    let (current, exists) = match server.get("routes") {
        Some(Value::Array(a)) => (a.clone(), true),
        Some(Value::Null) | None => (Vec::new(), false),
        Some(other) => {
            report.lines.push(format!(
                "routes: Caddy server {} has routes that are not an array ({other}); fix Caddy's config; retrying next tick",
                routing.server
            ));
            return;
        }
    };
    let claims = host_claims(&current);
    let (desired, taken): (Vec<Route>, Vec<Route>) = desired
        .into_iter()
        .partition(|r| claimed_by(&r.domain, &claims).is_none());
    for r in &taken {
        report.lines.push(format!(
            "routes: {} not written: {} is served by the host's own Caddy configuration \
             ({} in server {}), which Ferry never takes over; give service {} another domain",
            r.id,
            r.domain,
            claimed_by(&r.domain, &claims).unwrap_or_default(),
            routing.server,
            r.service
        ));
    }
    let d = drift(&desired, &current);
    if d.is_empty() {
        report.ok = taken.is_empty();
        return;
    }
    describe(&d, &desired, &current, changed, report);
    let writes = repairs(&desired, &current, &d);
    for w in &writes {
        report.writes += 1;
        let result = match w {
            RouteWrite::Delete(id) => routing.proxy.delete(id).await,
            RouteWrite::Replace(r) => routing.proxy.upsert(&routing.server, 0, r).await,
            RouteWrite::Insert { index, route } => {
                routing.proxy.upsert(&routing.server, *index, route).await
            }
            RouteWrite::Rewrite(routes) => {
                routing
                    .proxy
                    .set_routes(&routing.server, routes, exists)
                    .await
            }
        };
        if let Err(e) = result {
            return fail(report, &e);
        }
    }
    report.ok = taken.is_empty();
}

/// One line per route: expected changes say what happened, the rest is drift.
fn describe(
    d: &Drift,
    desired: &[crate::routes::Route],
    current: &[Value],
    changed: &BTreeSet<String>,
    report: &mut RouteReport,
) {
    let service_of = |id: &str| {
        desired
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.service.clone())
            .or_else(|| id.strip_prefix(crate::UNIT_PREFIX).map(str::to_owned))
            .unwrap_or_default()
    };
    let upstream = |id: &str| {
        desired
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.value["handle"][0]["upstreams"][0]["dial"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let mut drifted = Drift {
        misordered: d.misordered,
        duplicated: d.duplicated.clone(),
        ..Drift::default()
    };
    for id in &d.missing {
        if changed.contains(&service_of(id)) {
            report
                .lines
                .push(format!("routes: added {id} → {}", upstream(id)));
        } else {
            drifted.missing.push(id.clone());
        }
    }
    for id in &d.changed {
        if changed.contains(&service_of(id)) {
            report
                .lines
                .push(format!("routes: updated {id} → {}", upstream(id)));
        } else {
            drifted.changed.push(id.clone());
        }
    }
    for id in &d.extra {
        if changed.contains(&service_of(id)) {
            report.lines.push(format!("routes: deleted {id}"));
        } else {
            drifted.extra.push(id.clone());
        }
    }
    // A route this tick changed (e.g. a new path) may move: that reorder is expected.
    if drifted.misordered
        && current
            .iter()
            .filter_map(ferry_id)
            .any(|id| changed.contains(&service_of(id)))
    {
        drifted.misordered = false;
        report
            .lines
            .push("routes: reordered Ferry's routes (most specific path first)".to_owned());
    }
    for line in drift_lines(&drifted) {
        report.lines.push(format!("routes: repaired {line}"));
    }
}

fn fail(report: &mut RouteReport, e: &ProxyError) {
    report.ok = false;
    report.lines.push(format!(
        "routes: {e}; services keep running, retrying next tick"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_for(current: &[Value], changed: &[&str]) -> Vec<String> {
        let desired = ordered_routes(&[
            RouteSpec {
                service: "web".into(),
                domain: "a.test".into(),
                path: "/".into(),
                port: 8101,
            },
            RouteSpec {
                service: "api".into(),
                domain: "a.test".into(),
                path: "/api".into(),
                port: 8102,
            },
        ]);
        let d = drift(&desired, current);
        let changed: BTreeSet<String> = changed.iter().map(|s| (*s).to_owned()).collect();
        let mut report = RouteReport::default();
        describe(&d, &desired, current, &changed, &mut report);
        report.lines
    }

    #[test]
    fn a_deployed_service_is_added_and_anything_else_is_drift() {
        assert_eq!(
            lines_for(&[], &["web"]),
            [
                "routes: added ferry-web → 127.0.0.1:8101",
                "routes: repaired ferry-api (missing — Caddy restarted or reloaded?)",
            ]
        );
        let gone = json!({"@id": "ferry-old", "terminal": true});
        let mut stale = ordered_routes(&[RouteSpec {
            service: "web".into(),
            domain: "a.test".into(),
            path: "/".into(),
            port: 9,
        }])[0]
            .value
            .clone();
        let api = json!({"@id": "ferry-api"});
        stale["terminal"] = json!(false);
        assert_eq!(
            lines_for(&[api, stale, gone.clone()], &["old"]),
            [
                "routes: deleted ferry-old",
                "routes: repaired ferry-api (changed in Caddy or in the manifest)",
                "routes: repaired ferry-web (changed in Caddy or in the manifest)",
            ]
        );
        assert_eq!(
            lines_for(&[gone], &["api", "web"])[2],
            "routes: repaired ferry-old (no longer wanted: deleted)"
        );
    }

    #[test]
    fn created_server_is_plain_http_only_when_asked() {
        assert_eq!(
            server_value(&[":80".into()], false),
            json!({"listen": [":80"], "routes": [], "automatic_https": {"disable": true}})
        );
        assert_eq!(
            server_value(&[":443".into()], true),
            json!({"listen": [":443"], "routes": []})
        );
    }
}
