//! Planning benchmark: a 1,000-service manifest against a host already running all 1,000
//! (every unit rendered and compared; goal under 10 ms), and the same with one store path
//! changed. Run: `cargo bench -p ferry-bench --bench plan`.

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_agent::plan::{Observed, ObservedService, Policy, plan};
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
    c.bench_function("plan/1000 services, no change", |b| {
        b.iter(|| plan(std::hint::black_box(&manifest), &observed, &policy))
    });
    let mut changed = manifest.clone();
    changed.services[500].artifact.store_path =
        "/nix/store/1c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-svc-500-2.0.0".to_owned();
    c.bench_function("plan/1000 services, one changed", |b| {
        b.iter(|| plan(std::hint::black_box(&changed), &observed, &policy))
    });
}

criterion_group!(benches, plan_1000_services);
criterion_main!(benches);
