//! The planner benchmark's calls (`benches/plan.rs`: 1,000 services, no change and one
//! changed), a given number of times, for counting instructions under callgrind, which is
//! repeatable whatever else the machine does: `plan_calls N` plans each case N times.
//! `bench/before_after.sh` runs it with N and with 0 and takes the difference ÷ N, so the
//! fixture's set-up is not counted.

#[path = "../shared/plan_fixture.rs"]
mod plan_fixture;

use ferry_agent::plan::plan;

fn main() -> Result<(), String> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|e| format!("N must be a number ({a:?}: {e})"))?,
        None => 1,
    };
    let case = std::env::args().nth(2).unwrap_or_else(|| "both".to_owned());
    let f = plan_fixture::plan_fixture()?;
    for _ in 0..n {
        if case != "one-changed" {
            std::hint::black_box(plan(
                std::hint::black_box(&f.manifest),
                &f.observed,
                &f.policy,
            ));
        }
        if case != "no-change" {
            std::hint::black_box(plan(
                std::hint::black_box(&f.changed),
                &f.observed,
                &f.policy,
            ));
        }
    }
    Ok(())
}
