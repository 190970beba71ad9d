//! The whole system as a user meets it (issue 8), on the test bed: `ferry` on the machine,
//! two nspawn hosts running `ferry-agent` from its systemd timer, Garage, Caddy. The steps
//! live in `ferry_tests::scenario`, shared with the README's demo; each one checks its own
//! outcome. This test adds the figures' sanity: they were measured, and every no-op tick
//! stays within the agent's budget (`NoopBudget`: one bucket request, one Caddy request,
//! the median wall time and the peak RSS the README states).

use std::time::Duration;

use anyhow::{Result, ensure};
use ferry_tests::agent_bed::agent_binary;
use ferry_tests::binaries::built_binary;
use ferry_tests::noop_budget::NoopBudget;
use ferry_tests::scenario::{Binaries, Options, Scenario};

#[tokio::test]
async fn push_deploy_update_rollback_remove_outage_reboot_on_two_hosts() -> Result<()> {
    let bins = Binaries {
        ferry: built_binary("ferry", "FERRY_BIN")?,
        agent: agent_binary()?,
    };
    let options = Options {
        interval: Duration::from_secs(5),
        slow_interval: Some(Duration::from_secs(60)),
    };
    let mut scenario = Scenario::start(&bins, options).await?;
    scenario.run().await?;

    let f = &scenario.figures;
    ensure!(f.push_to_serving.len() == 2, "{:?}", f.push_to_serving);
    // A push is picked up by the next timer tick: within one interval plus the tick itself.
    let (interval, fast) = f.push_to_serving[0];
    ensure!(
        fast < interval + Duration::from_secs(20),
        "push → serving took {fast:?} with the timer at {interval:?}"
    );
    // Blue-green: v3 is tried on the idle instance, so v2 answers every request.
    ensure!(
        f.during_bad_push.0 > 0 && f.during_bad_push.1 == 0,
        "v2 was not served throughout while v3 was tried: {} answered by v2, {} not",
        f.during_bad_push.0,
        f.during_bad_push.1
    );
    ensure!(f.ticks.len() >= 5, "too few ticks recorded: {:?}", f.ticks);
    ensure!(!f.phases.is_empty(), "no phases lines recorded");
    // Host A's timer ran through the scenario: the ticks that found nothing to change
    // (between the steps, and while v3 stayed quarantined) are each held to the budget.
    let budget = NoopBudget::for_tests();
    let noop = budget.check(&f.ticks, 3)?;
    eprintln!("{noop} ({} build's budget: {budget:?})", budget.build);
    Ok(())
}
