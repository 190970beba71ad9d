//! Planning benchmark: a 1,000-service manifest against a host already running all 1,000
//! (every unit rendered and compared; goal under 10 ms), and the same with one store path
//! changed. Run: `cargo bench -p ferry-bench --bench plan`.

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_agent::plan::{Action, Observed, ObservedService, Policy, plan};
use ferry_agent::render::unit::{render, unit_file};
use ferry_bench::synthetic_manifest;

fn plan_1000_services(c: &mut Criterion) {
    let mut manifest = synthetic_manifest(1000);
    for s in &mut manifest.services {
        s.hosts = vec!["alpha".to_owned()];
    }
    let mut observed = Observed::default();
    for s in &manifest.services {
        observed.services.insert(
            s.name.clone(),
            ObservedService {
                store_path: Some(s.artifact.store_path.clone()),
                files: [(unit_file(s), render(s))].into_iter().collect(),
                active_state: Some("active".to_owned()),
                pending: false,
                applied: Some(s.clone()),
                live_port: None,
            },
        );
    }
    let policy = Policy {
        host: "alpha".to_owned(),
        ..Policy::default()
    };
    // Guards: the timed calls plan what their names say, or the figures mean nothing (a
    // planner that finds every unit changed does far more work than a no-op tick).
    let unchanged = plan(&manifest, &observed, &policy);
    if unchanged.services.len() != 1000 || !unchanged.is_noop() {
        let busy: Vec<(&str, Action, &str)> = unchanged
            .services
            .iter()
            .filter(|s| s.action != Action::Unchanged)
            .take(3)
            .map(|s| (s.name.as_str(), s.action, s.why.as_str()))
            .collect();
        panic!(
            "the no-change plan of {} services is not a no-op: {busy:?}",
            unchanged.services.len()
        );
    }
    c.bench_function("plan/1000 services, no change", |b| {
        b.iter(|| plan(std::hint::black_box(&manifest), &observed, &policy))
    });
    let mut changed = manifest.clone();
    changed.services[500].artifact.store_path =
        "/nix/store/1c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-svc-500-2.0.0".to_owned();
    let one = plan(&changed, &observed, &policy);
    let touched: Vec<(&str, Action)> = one
        .services
        .iter()
        .filter(|s| s.action != Action::Unchanged)
        .map(|s| (s.name.as_str(), s.action))
        .collect();
    if touched != [("svc-500", Action::UpdateClosure)] {
        panic!("the one-changed plan does not update exactly svc-500's closure: {touched:?}");
    }
    c.bench_function("plan/1000 services, one changed", |b| {
        b.iter(|| plan(std::hint::black_box(&changed), &observed, &policy))
    });
}

criterion_group!(benches, plan_1000_services);
criterion_main!(benches);
