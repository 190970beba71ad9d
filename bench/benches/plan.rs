//! Planning benchmark: a 1,000-service manifest against a host already running all 1,000
//! (every unit rendered and compared; goal under 10 ms), and the same with one store path
//! changed. Run: `cargo bench -p ferry-bench --bench plan`.

#[path = "../shared/plan_fixture.rs"]
mod plan_fixture;

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_agent::plan::plan;

fn plan_1000_services(c: &mut Criterion) {
    // Guards: the timed calls plan what their names say, or the figures mean nothing.
    let f = match plan_fixture::plan_fixture() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    c.bench_function("plan/1000 services, no change", |b| {
        b.iter(|| plan(std::hint::black_box(&f.manifest), &f.observed, &f.policy))
    });
    c.bench_function("plan/1000 services, one changed", |b| {
        b.iter(|| plan(std::hint::black_box(&f.changed), &f.observed, &f.policy))
    });
}

criterion_group!(benches, plan_1000_services);
criterion_main!(benches);
