//! Benchmarks of the agent's per-tick work. Run: `cargo bench -p ferry-bench --bench agent`.
//!
//! Starts with the verify step (signature check of a 1,000-service manifest). The agent's
//! planning benchmark goes here too: add a `fn plan_1000_services(c: &mut Criterion)` below
//! and list it in `criterion_group!` (add `ferry-agent` to this crate's dependencies).

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_bench::synthetic_manifest;
use ferry_schema::{SecretKey, sign_manifest, verify_manifest};

fn verify_signature_1000_services(c: &mut Criterion) {
    let mut manifest = synthetic_manifest(1000);
    let key = match SecretKey::generate("bench-1") {
        Ok(key) => key,
        Err(e) => panic!("cannot make a key: {e}"),
    };
    if let Err(e) = sign_manifest(&mut manifest, &key) {
        panic!("cannot sign: {e}");
    }
    let trusted = [key.public()];
    // Guard: the timed call verifies (a failing check returns early and would time nothing).
    match verify_manifest(&manifest, &trusted) {
        Ok(name) if name == "bench-1" => {}
        other => panic!("the signed manifest does not verify: {other:?}"),
    }
    c.bench_function("verify_manifest/1000 services", |b| {
        b.iter(|| verify_manifest(std::hint::black_box(&manifest), &trusted))
    });
}

// ── Agent benchmarks: add new bench functions above this line and list them here. ──
criterion_group!(benches, verify_signature_1000_services);
criterion_main!(benches);
