//! Health-check budgets: a service whose check could run for weeks, and a host whose tick
//! would wait longer than its unit may run, are refused at validation with the service, the
//! field and the limit named; what fits (defaults, parallel services) passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_schema::health_budget::{MAX_SERVICE_SEC, MAX_TICK_SEC, service_sec, tick_sec};
use ferry_schema::{DEFAULT_SIZE_CAP, Manifest, Problem, validate_bytes};
use serde_json::{Value, json};

fn service(name: &str, port: u16, health: Option<Value>, deps: &[&str]) -> Value {
    let mut s = json!({
        "name": name,
        "artifact": {"type": "nix-closure", "storePath": format!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-{name}")},
        "hosts": ["h1"],
        "exec": {"command": name},
        "http": {"domain": format!("{name}.test"), "path": "/", "internalPort": port},
    });
    if let Some(h) = health {
        s["healthCheck"] = h;
    }
    if !deps.is_empty() {
        s["dependsOn"] = json!(deps);
    }
    s
}

fn manifest(services: Vec<Value>) -> Value {
    json!({"version": 1, "generation": "2025-01-15T12:34:56Z", "services": services})
}

fn errors(doc: &Value) -> Vec<Problem> {
    match validate_bytes(&serde_json::to_vec(doc).unwrap(), DEFAULT_SIZE_CAP) {
        Ok(_) => Vec::new(),
        Err(p) => p.into_iter().filter(Problem::is_error).collect(),
    }
}

fn slow(sec_each: u32) -> Value {
    // start 0, then 11 tries: 10 intervals + the last timeout.
    json!({"type": "http", "startPeriodSec": 0, "intervalSec": sec_each / 11,
           "timeoutSec": sec_each / 11, "retries": 11})
}

#[test]
fn a_check_that_could_run_for_weeks_is_refused_naming_service_and_fields() {
    let doc = manifest(vec![service(
        "web",
        8000,
        Some(json!({"type": "http", "intervalSec": 3600, "timeoutSec": 3600, "retries": 1000})),
        &[],
    )]);
    let errs = errors(&doc);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].pointer, "/services/0/healthCheck");
    let msg = &errs[0].message;
    assert!(
        msg.starts_with("service `web`: the health check may take up to 3600002 s")
            && msg.contains(&format!("the limit is {MAX_SERVICE_SEC} s"))
            && msg.contains("healthCheck.deadlineSec, retries"),
        "{msg}"
    );
}

#[test]
fn defaults_and_a_slow_but_sane_check_pass() {
    let doc = manifest(vec![
        service("web", 8000, None, &[]),
        service(
            "jvm",
            8010,
            Some(
                json!({"type": "http", "startPeriodSec": 300, "intervalSec": 30, "timeoutSec": 30, "retries": 20}),
            ),
            &[],
        ),
    ]);
    assert!(errors(&doc).is_empty(), "{:?}", errors(&doc));
    let m: Manifest = serde_json::from_value(doc).unwrap();
    // The default check probes until its 60 s deadline (issue 22 item 9).
    assert_eq!(service_sec(&m.services[0]), 60);
    assert_eq!(service_sec(&m.services[1]), 300 + 19 * 30 + 30);
}

#[test]
fn a_host_whose_tick_would_wait_too_long_is_refused_but_parallel_services_pass() {
    // Three services of 880 s each: at once they fit, in a dependsOn chain they do not.
    let parallel = manifest(vec![
        service("a", 8000, Some(slow(880)), &[]),
        service("b", 8010, Some(slow(880)), &[]),
        service("c", 8020, Some(slow(880)), &[]),
    ]);
    assert!(errors(&parallel).is_empty(), "{:?}", errors(&parallel));
    let chain = manifest(vec![
        service("a", 8000, Some(slow(880)), &[]),
        service("b", 8010, Some(slow(880)), &["a"]),
        service("c", 8020, Some(slow(880)), &["b"]),
    ]);
    let errs = errors(&chain);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].pointer, "/services");
    assert!(
        errs[0]
            .message
            .starts_with("host `h1`: one tick may wait up to 2640 s")
            && errs[0].message.contains("3 dependsOn levels")
            && errs[0]
                .message
                .contains(&format!("the limit is {MAX_TICK_SEC} s")),
        "{}",
        errs[0].message
    );
    let m: Manifest = serde_json::from_value(chain).unwrap();
    let (total, levels) = tick_sec(&m.services, "h1");
    assert_eq!(
        (total, levels),
        (2640, vec![vec!["a"], vec!["b"], vec!["c"]])
    );
    assert_eq!(tick_sec(&m.services, "elsewhere").0, 0);
}

#[test]
fn a_deadline_the_first_probe_cannot_meet_is_refused_and_a_long_one_is_budgeted() {
    let doc = manifest(vec![service(
        "web",
        8000,
        Some(json!({"type": "http", "startPeriodSec": 10, "deadlineSec": 5})),
        &[],
    )]);
    let errs = errors(&doc);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].pointer, "/services/0/healthCheck/deadlineSec");
    assert_eq!(
        errs[0].message,
        "service `web`: healthCheck.deadlineSec 5 is shorter than the first probe takes (startPeriodSec 10 + timeoutSec 2); raise deadlineSec to at least 12"
    );
    // A deadline over the service cap is refused by the budget like any long check.
    let doc = manifest(vec![service(
        "web",
        8000,
        Some(json!({"type": "http", "deadlineSec": 1000})),
        &[],
    )]);
    let errs = errors(&doc);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .message
            .starts_with("service `web`: the health check may take up to 1000 s"),
        "{}",
        errs[0].message
    );
    // Thirty dependsOn levels of default checks fill a tick's budget exactly; a 31st does not fit.
    let chain = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        manifest(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let deps: Vec<&str> = if i == 0 {
                        vec![]
                    } else {
                        vec![names[i - 1].as_str()]
                    };
                    service(name, 8000 + u16::try_from(i).unwrap() * 2, None, &deps)
                })
                .collect(),
        )
    };
    assert!(errors(&chain(30)).is_empty(), "{:?}", errors(&chain(30)));
    let errs = errors(&chain(31));
    assert!(
        errs.len() == 1
            && errs[0]
                .message
                .starts_with("host `h1`: one tick may wait up to 1860 s"),
        "{errs:?}"
    );
}
