//! The planner benchmark's inputs, shared by `benches/plan.rs` (criterion, time) and
//! `examples/plan_calls.rs` (instruction counts under callgrind) through `#[path]`, so
//! both measure the same calls; `bench/before_after.sh` copies this file and the example
//! into an older revision's tree, so only the planner's public API is used here.

use ferry_agent::plan::{Action, Observed, ObservedService, Plan, Policy, plan};
use ferry_agent::render::unit::{render, unit_file};
use ferry_bench::synthetic_manifest;
use ferry_schema::manifest::Manifest;

/// A 1,000-service manifest for host `alpha`, the host already running all of it, the
/// policy, and the same manifest with one store path changed (svc-500).
pub struct PlanFixture {
    pub manifest: Manifest,
    pub changed: Manifest,
    pub observed: Observed,
    pub policy: Policy,
}

/// Builds the fixture and checks that the calls plan what their names say (a planner that
/// finds every unit changed does far more work than a no-op tick): an error otherwise.
pub fn plan_fixture() -> Result<PlanFixture, String> {
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
    let unchanged = plan(&manifest, &observed, &policy);
    if unchanged.services.len() != 1000 || !unchanged.is_noop() {
        return Err(format!(
            "the no-change plan of {} services is not a no-op: {:?}",
            unchanged.services.len(),
            busy(&unchanged)
        ));
    }
    let mut changed = manifest.clone();
    changed.services[500].artifact.store_path =
        "/nix/store/1c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-svc-500-2.0.0".to_owned();
    let one = plan(&changed, &observed, &policy);
    let touched = busy(&one);
    if touched != [("svc-500".to_owned(), Action::UpdateClosure)] {
        return Err(format!(
            "the one-changed plan does not update exactly svc-500's closure: {touched:?}"
        ));
    }
    Ok(PlanFixture {
        manifest,
        changed,
        observed,
        policy,
    })
}

/// The services a plan changes, by name and action.
fn busy(p: &Plan) -> Vec<(String, Action)> {
    p.services
        .iter()
        .filter(|s| s.action != Action::Unchanged)
        .map(|s| (s.name.clone(), s.action))
        .collect()
}
