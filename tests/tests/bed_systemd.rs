//! A bed host's systemd is driven over its D-Bus system bus from the machine, the way the
//! agent does it: unit into /run/systemd/system, Reload, StartUnit, wait for the job.

use std::time::Duration;

use ferry_tests::{Bed, BedOptions};
use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

const UNIT: &str = "ferry-bed-smoke.service";

#[tokio::test]
async fn unit_written_to_run_starts_over_dbus_with_dynamic_user() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
    host.put_bytes(
        &format!("/run/systemd/system/{UNIT}"),
        b"[Service]\nExecStart=/bin/sleep infinity\nDynamicUser=yes\n",
        0o644,
    )?;

    let address = host.dbus_address()?;
    let conn = zbus::connection::Builder::address(address.as_str())?
        .build()
        .await?;
    let manager = ManagerProxy::new(&conn).await?;
    manager.subscribe().await?;
    manager.reload().await?;
    // Subscribe before starting, so the job's end cannot slip past.
    let mut removed = manager.receive_job_removed().await?;
    let job = manager.start_unit(UNIT.into(), "replace".into()).await?;
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(signal) = removed.next().await {
            let args = signal.args()?;
            if args.job == job {
                return Ok::<_, zbus::Error>(args.result);
            }
        }
        Err(zbus::Error::Failure("JobRemoved stream ended".into()))
    })
    .await??;
    assert_eq!(result, "done");

    let unit_path = manager.get_unit(UNIT.into()).await?;
    let unit = UnitProxy::builder(&conn).path(unit_path)?.build().await?;
    assert_eq!(unit.active_state().await?, "active");
    // The same answer from inside, and the DynamicUser really is not root.
    assert_eq!(
        host.sh_ok(&format!("systemctl is-active {UNIT}"))?.trim(),
        "active"
    );
    let uid = host.sh_ok(&format!(
        "stat -c %u /proc/$(systemctl show -P MainPID {UNIT})"
    ))?;
    assert_ne!(uid.trim(), "0", "DynamicUser=yes ran as root");
    Ok(())
}
