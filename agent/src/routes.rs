//! Caddy routes as data: the ordered routes Ferry wants for this host's HTTP services, how
//! they differ from what Caddy has (drift), and the writes that repair the difference. Pure:
//! values in, values out; the tick's route step (`tick::route`) runs the writes through the `Proxy` backend.
//!
//! Placement rule: Ferry's routes form one block at the *start* of the server's routes
//! array, in the order [`ordered_routes`] gives. A Caddyfile site without a host (Debian's
//! default `:80 { file_server }`, a catch-all) compiles to a terminal route with no matcher;
//! anything appended after it would never be reached. Ferry's routes always match on a
//! host, so putting them first only claims the domains the manifest names. Every route that
//! is not Ferry's keeps its relative order.

use serde_json::{Value, json};

use ferry_schema::names::{UNIT_PREFIX, route_id};

pub use crate::vocab::Route;

/// What one service's route needs: its name, the domain and path prefix it answers, and the
/// loopback port traffic goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Service name (the route id is `ferry-<service>`).
    pub service: String,
    /// Domain matched on the Host header.
    pub domain: String,
    /// Path prefix starting with `/`; `/` matches everything under the domain.
    pub path: String,
    /// Upstream port on 127.0.0.1.
    pub port: u16,
}

/// The route object for one service.
pub fn route_value(spec: &RouteSpec) -> Value {
    let prefix = spec.path.trim_end_matches('/');
    // `/` (empty after trimming) matches every path; `/api` must match `/api` itself and
    // everything below it, but not `/apix`.
    let paths = if prefix.is_empty() {
        vec!["/*".to_owned()]
    } else {
        vec![prefix.to_owned(), format!("{prefix}/*")]
    };
    json!({
        "@id": route_id(&spec.service),
        "match": [{"host": [spec.domain], "path": paths}],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{"dial": format!("127.0.0.1:{}", spec.port)}],
        }],
        "terminal": true,
    })
}

/// The routes for `specs`, in the order Caddy must hold them: a longer (more specific) path
/// prefix first, so `/api` on a domain wins over `/` on the same domain; ties by domain,
/// then service name, so the order is stable from tick to tick.
pub fn ordered_routes(specs: &[RouteSpec]) -> Vec<Route> {
    let mut sorted: Vec<&RouteSpec> = specs.iter().collect();
    sorted.sort_by(|a, b| {
        let (pa, pb) = (a.path.trim_end_matches('/'), b.path.trim_end_matches('/'));
        pb.len()
            .cmp(&pa.len())
            .then_with(|| a.domain.cmp(&b.domain))
            .then_with(|| a.service.cmp(&b.service))
    });
    sorted
        .into_iter()
        .map(|s| Route {
            id: route_id(&s.service),
            service: s.service.clone(),
            domain: s.domain.clone(),
            value: route_value(s),
        })
        .collect()
}

/// The `@id` of a route object, when it is one of Ferry's.
pub fn ferry_id(route: &Value) -> Option<&str> {
    route
        .get("@id")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with(UNIT_PREFIX))
}

/// The loopback port each of Ferry's routes in `current` dials, by service: what Caddy
/// sends a service's traffic to now. Routes without one `127.0.0.1:<port>` upstream are
/// left out.
pub fn dialled_ports(current: &[Value]) -> std::collections::BTreeMap<String, u16> {
    current
        .iter()
        .filter_map(|r| {
            let service = ferry_id(r)?.strip_prefix(UNIT_PREFIX)?;
            let dials: Vec<&str> = r
                .get("handle")?
                .as_array()?
                .iter()
                .filter_map(|h| h.get("upstreams").and_then(Value::as_array))
                .flatten()
                .filter_map(|u| u.get("dial").and_then(Value::as_str))
                .collect();
            let [dial] = dials.as_slice() else {
                return None;
            };
            let port = dial.strip_prefix("127.0.0.1:")?.parse().ok()?;
            Some((service.to_owned(), port))
        })
        .collect()
}

/// The host patterns the server's routes that are not Ferry's match on (a Caddyfile site
/// `shop.example.com { … }` compiles to a route with that host matcher). A route without a
/// host matcher (a catch-all like Debian's `:80`) claims no domain.
pub fn host_claims(current: &[Value]) -> Vec<String> {
    let mut claims: Vec<String> = current
        .iter()
        .filter(|r| ferry_id(r).is_none())
        .filter_map(|r| r.get("match").and_then(Value::as_array))
        .flatten()
        .filter_map(|m| m.get("host").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    claims.sort();
    claims.dedup();
    claims
}

/// The host's own pattern among `claims` that `domain` falls under, if any: a Ferry route
/// for it would sit before the host's site and take it over.
pub fn claimed_by<'a>(domain: &str, claims: &'a [String]) -> Option<&'a str> {
    claims
        .iter()
        .find(|c| crate::policy::routing::domain_matches(c, domain))
        .map(String::as_str)
}

/// How Caddy's routes differ from the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Desired routes Caddy does not have (ids).
    pub missing: Vec<String>,
    /// Desired routes Caddy has with other content (ids).
    pub changed: Vec<String>,
    /// Ferry routes Caddy has that nothing wants any more (ids).
    pub extra: Vec<String>,
    /// Ferry ids that appear more than once (someone POSTed to `/id/…`).
    pub duplicated: Vec<String>,
    /// Ferry's routes are not one block, first, in the desired order.
    pub misordered: bool,
}

impl Drift {
    /// Whether Caddy already matches.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.changed.is_empty()
            && self.extra.is_empty()
            && self.duplicated.is_empty()
            && !self.misordered
    }
}

/// Compare the desired routes with the server's current routes array.
pub fn drift(desired: &[Route], current: &[Value]) -> Drift {
    let mut d = Drift::default();
    let wanted = |id: &str| desired.iter().any(|r| r.id == id);
    let mut seen: Vec<&str> = Vec::new();
    for id in current.iter().filter_map(ferry_id) {
        if seen.contains(&id) {
            if !d.duplicated.iter().any(|x| x == id) {
                d.duplicated.push(id.to_owned());
            }
        } else {
            seen.push(id);
        }
        if !wanted(id) && !d.extra.iter().any(|x| x == id) {
            d.extra.push(id.to_owned());
        }
    }
    for r in desired {
        match current.iter().find(|v| ferry_id(v) == Some(r.id.as_str())) {
            None => d.missing.push(r.id.clone()),
            // serde_json compares objects by content, whatever the key order Caddy returns.
            Some(v) if *v != r.value => d.changed.push(r.id.clone()),
            Some(_) => {}
        }
    }
    // The wanted routes Caddy has must be a prefix of the array (extras aside, they go), in
    // the desired relative order.
    let kept: Vec<Option<&str>> = current
        .iter()
        .map(ferry_id)
        .filter(|id| id.is_none_or(wanted))
        .collect();
    let block = kept.iter().take_while(|id| id.is_some()).count();
    let in_block_after = kept[block..].iter().any(Option::is_some);
    let order: Vec<&str> = kept[..block].iter().flatten().copied().collect();
    let expected: Vec<&str> = desired
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| order.contains(id))
        .collect();
    d.misordered = in_block_after || order != expected;
    d
}

/// One write to Caddy's routes.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteWrite {
    /// Remove a Ferry route (`DELETE /id/<id>`; absent is fine).
    Delete(String),
    /// Replace a route in place (`PATCH /id/<id>`), keeping its position.
    Replace(Route),
    /// Insert a route at an index of the routes array, shifting the rest down.
    Insert {
        /// Position in the array.
        index: usize,
        /// The route.
        route: Route,
    },
    /// Replace the whole routes array: Ferry's block first, then every other route in its
    /// original order. Used only when Ferry's routes are out of order or duplicated, which
    /// per-id writes cannot fix.
    Rewrite(Vec<Value>),
}

/// The writes that turn `current` into the desired state, smallest first: per-id deletes,
/// replaces and inserts when only content or presence drifted, one whole-array rewrite when
/// the order is wrong. Per-id writes leave routes that are not Ferry's untouched even if
/// someone else changes them between our read and our write; the rewrite cannot, which is
/// why it is the last resort.
pub fn repairs(desired: &[Route], current: &[Value], drift: &Drift) -> Vec<RouteWrite> {
    if drift.misordered || !drift.duplicated.is_empty() {
        let mut routes: Vec<Value> = desired.iter().map(|r| r.value.clone()).collect();
        routes.extend(current.iter().filter(|v| ferry_id(v).is_none()).cloned());
        return vec![RouteWrite::Rewrite(routes)];
    }
    let mut writes: Vec<RouteWrite> = drift
        .extra
        .iter()
        .cloned()
        .map(RouteWrite::Delete)
        .collect();
    for (index, r) in desired.iter().enumerate() {
        if drift.changed.contains(&r.id) {
            writes.push(RouteWrite::Replace(r.clone()));
        } else if drift.missing.contains(&r.id) {
            // After the deletes, the routes Caddy has form a prefix in desired order, so
            // inserting the missing ones in desired order at their desired index keeps it.
            writes.push(RouteWrite::Insert {
                index,
                route: r.clone(),
            });
        }
    }
    writes
}

/// Why a route write happens, for the drift report: `missing`, `changed`, `extra`, …
pub fn drift_lines(drift: &Drift) -> Vec<String> {
    let mut lines = Vec::new();
    for id in &drift.missing {
        lines.push(format!("{id} (missing — Caddy restarted or reloaded?)"));
    }
    for id in &drift.changed {
        lines.push(format!("{id} (changed in Caddy or in the manifest)"));
    }
    for id in &drift.extra {
        lines.push(format!("{id} (no longer wanted: deleted)"));
    }
    for id in &drift.duplicated {
        lines.push(format!("{id} (present more than once)"));
    }
    if drift.misordered {
        lines.push(
            "order of Ferry's routes (rewritten: Ferry's block first, most specific path first)"
                .to_owned(),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(service: &str, domain: &str, path: &str, port: u16) -> RouteSpec {
        RouteSpec {
            service: service.into(),
            domain: domain.into(),
            path: path.into(),
            port,
        }
    }

    fn ids(routes: &[Route]) -> Vec<&str> {
        routes.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn dialled_ports_are_read_from_ferrys_routes_only() {
        let current = vec![
            route_value(&spec("web", "a.test", "/", 8001)),
            route_value(&spec("api", "b.test", "/api", 9000)),
            json!({"@id": "shop", "handle": [{"handler": "reverse_proxy",
                "upstreams": [{"dial": "127.0.0.1:7000"}]}]}),
            json!({"@id": "ferry-odd", "handle": [{"handler": "reverse_proxy",
                "upstreams": [{"dial": "127.0.0.1:1"}, {"dial": "127.0.0.1:2"}]}]}),
            json!({"@id": "ferry-far", "handle": [{"handler": "reverse_proxy",
                "upstreams": [{"dial": "10.0.0.1:80"}]}]}),
        ];
        let ports = dialled_ports(&current);
        assert_eq!(
            ports.into_iter().collect::<Vec<_>>(),
            [("api".to_owned(), 9000), ("web".to_owned(), 8001)]
        );
    }

    #[test]
    fn route_json_for_root_and_prefix() {
        assert_eq!(
            route_value(&spec("web", "example.com", "/", 8000)),
            json!({
                "@id": "ferry-web",
                "match": [{"host": ["example.com"], "path": ["/*"]}],
                "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:8000"}]}],
                "terminal": true,
            })
        );
        for path in ["/api", "/api/"] {
            let v = route_value(&spec("api", "example.com", path, 8001));
            assert_eq!(v["match"][0]["path"], json!(["/api", "/api/*"]), "{path}");
        }
    }

    #[test]
    fn more_specific_path_first_then_stable() {
        let routes = ordered_routes(&[
            spec("web", "a.com", "/", 1),
            spec("api", "a.com", "/api", 2),
            spec("v2", "a.com", "/api/v2/", 3),
            spec("blog", "b.com", "/", 4),
            spec("docs", "b.com", "/docs", 5),
        ]);
        assert_eq!(
            ids(&routes),
            [
                "ferry-v2",
                "ferry-docs",
                "ferry-api",
                "ferry-web",
                "ferry-blog"
            ]
        );
    }

    #[test]
    fn the_hosts_own_sites_claim_their_domains() {
        let current = vec![
            json!({"@id": "ferry-web", "match": [{"host": ["mine.test"]}]}),
            json!({"match": [{"host": ["shop.test", "*.blog.test"]}], "handle": []}),
            json!({"match": [{"path": ["/*"]}]}),
            json!({"handle": [{"handler": "file_server"}]}),
        ];
        let claims = host_claims(&current);
        assert_eq!(claims, ["*.blog.test", "shop.test"]);
        assert_eq!(claimed_by("shop.test", &claims), Some("shop.test"));
        assert_eq!(claimed_by("a.blog.test", &claims), Some("*.blog.test"));
        assert_eq!(claimed_by("mine.test", &claims), None);
        assert_eq!(claimed_by("blog.test", &claims), None);
    }

    fn desired() -> Vec<Route> {
        ordered_routes(&[
            spec("web", "a.com", "/", 1),
            spec("api", "a.com", "/api", 2),
        ])
    }

    fn other() -> Value {
        json!({"handle": [{"handler": "file_server"}], "terminal": true})
    }

    #[test]
    fn no_drift_when_caddy_matches() {
        let d = desired();
        let current = vec![d[0].value.clone(), d[1].value.clone(), other()];
        let drift = drift(&d, &current);
        assert!(drift.is_empty(), "{drift:?}");
        assert!(repairs(&d, &current, &drift).is_empty());
    }

    #[test]
    fn missing_routes_go_before_other_routes_in_order() {
        let d = desired();
        let current = vec![other()];
        let dr = drift(&d, &current);
        assert_eq!(dr.missing, ["ferry-api", "ferry-web"]);
        assert!(!dr.misordered);
        let w = repairs(&d, &current, &dr);
        assert_eq!(
            w,
            vec![
                RouteWrite::Insert {
                    index: 0,
                    route: d[0].clone()
                },
                RouteWrite::Insert {
                    index: 1,
                    route: d[1].clone()
                },
            ]
        );
        // Only the more general one missing: it goes after the specific one.
        let current = vec![d[0].value.clone(), other()];
        let dr = drift(&d, &current);
        assert_eq!(dr.missing, ["ferry-web"]);
        assert_eq!(
            repairs(&d, &current, &dr),
            vec![RouteWrite::Insert {
                index: 1,
                route: d[1].clone()
            }]
        );
    }

    #[test]
    fn changed_and_extra_routes_are_patched_and_deleted_in_place() {
        let d = desired();
        let mut stale = d[1].value.clone();
        stale["handle"][0]["upstreams"][0]["dial"] = json!("127.0.0.1:9999");
        let gone = route_value(&spec("old", "c.com", "/", 7));
        let current = vec![d[0].value.clone(), gone, stale, other()];
        let dr = drift(&d, &current);
        assert_eq!(dr.changed, ["ferry-web"]);
        assert_eq!(dr.extra, ["ferry-old"]);
        assert!(
            !dr.misordered,
            "an extra in the block is deleted, not reordered"
        );
        assert_eq!(
            repairs(&d, &current, &dr),
            vec![
                RouteWrite::Delete("ferry-old".into()),
                RouteWrite::Replace(d[1].clone())
            ]
        );
    }

    #[test]
    fn wrong_order_rewrites_keeping_other_routes_in_their_order() {
        let d = desired();
        let a = json!({"@id": "theirs-a", "terminal": false});
        let b = json!({"@id": "theirs-b"});
        // Ferry's general route before its specific one.
        let current = vec![d[1].value.clone(), d[0].value.clone(), a.clone(), b.clone()];
        let dr = drift(&d, &current);
        assert!(dr.misordered);
        assert_eq!(
            repairs(&d, &current, &dr),
            vec![RouteWrite::Rewrite(vec![
                d[0].value.clone(),
                d[1].value.clone(),
                a.clone(),
                b.clone()
            ])]
        );
        // A Ferry route behind someone else's (e.g. appended after a catch-all).
        let current = vec![d[0].value.clone(), a.clone(), d[1].value.clone(), b.clone()];
        let dr = drift(&d, &current);
        assert!(dr.misordered);
        assert_eq!(
            repairs(&d, &current, &dr),
            vec![RouteWrite::Rewrite(vec![
                d[0].value.clone(),
                d[1].value.clone(),
                a,
                b
            ])]
        );
    }

    #[test]
    fn duplicates_are_collapsed_by_a_rewrite() {
        let d = desired();
        let current = vec![d[0].value.clone(), d[0].value.clone(), d[1].value.clone()];
        let dr = drift(&d, &current);
        assert_eq!(dr.duplicated, ["ferry-api"]);
        assert_eq!(
            repairs(&d, &current, &dr),
            vec![RouteWrite::Rewrite(vec![
                d[0].value.clone(),
                d[1].value.clone()
            ])]
        );
    }

    #[test]
    fn routes_of_others_are_never_ferry_routes() {
        assert_eq!(ferry_id(&json!({"@id": "ferry-web"})), Some("ferry-web"));
        assert_eq!(ferry_id(&json!({"@id": "web"})), None);
        assert_eq!(ferry_id(&json!({"@id": 3})), None);
        assert_eq!(ferry_id(&json!({})), None);
        let dr = drift(&[], &[json!({"@id": "web"}), other()]);
        assert!(dr.is_empty(), "{dr:?}");
    }

    #[test]
    fn drift_lines_say_why() {
        let dr = drift(&desired(), &[]);
        let lines = drift_lines(&dr);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ferry-api (missing"), "{lines:?}");
    }
}
