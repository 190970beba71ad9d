//! How long validating a large manifest takes (goal: under 20 ms for 1,000 services), beside
//! the floor any reader of the manifest pays: parsing the same bytes into the Rust types
//! with serde_json and nothing else. Run `bench/validate.sh` for the ratios, or
//! `cargo bench -p ferry-bench --bench validate` for criterion's own report.

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_bench::synthetic_manifest_bytes;
use ferry_schema::manifest::Manifest;
use ferry_schema::{DEFAULT_SIZE_CAP, validate_bytes};

fn validate_1000_services(c: &mut Criterion) {
    let bytes = synthetic_manifest_bytes(1000);
    // Guards: the bench would be meaningless on a manifest that fails early, or one that
    // does not parse into the types (the baseline would time an error path).
    match validate_bytes(&bytes, DEFAULT_SIZE_CAP) {
        Ok(v) if v.manifest.services.len() == 1000 => {}
        Ok(v) => panic!(
            "validated {} services instead of 1000",
            v.manifest.services.len()
        ),
        Err(problems) => panic!("synthetic manifest is invalid: {problems:?}"),
    }
    if let Err(e) = serde_json::from_slice::<Manifest>(&bytes) {
        panic!("synthetic manifest does not parse: {e}");
    }
    let mut group = c.benchmark_group("validate");
    group.bench_function("parse only (serde_json)", |b| {
        b.iter(|| serde_json::from_slice::<Manifest>(std::hint::black_box(&bytes)))
    });
    group.bench_function("validate_bytes/1000 services", |b| {
        b.iter(|| validate_bytes(std::hint::black_box(&bytes), DEFAULT_SIZE_CAP))
    });
    group.finish();
}

criterion_group!(benches, validate_1000_services);
criterion_main!(benches);
