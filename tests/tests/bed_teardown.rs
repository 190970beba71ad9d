//! Several hosts and several beds at once, reboots, and a teardown that leaves nothing.

use std::time::Duration;

use ferry_tests::{Bed, BedOptions};

/// The tests here check that a slot's resources are gone after a bed drops. Run in parallel,
/// another test's bed may take the freed slot at once and recreate them, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn http_status_from(host: &ferry_tests::Host, url: &str) -> anyhow::Result<String> {
    let out = host.exec(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ])?;
    Ok(out.stdout)
}

#[tokio::test]
async fn three_hosts_reach_garage_and_each_other_and_teardown_leaves_nothing() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let bed = Bed::start(BedOptions {
        hosts: 3,
        ..Default::default()
    })?;
    let mut ips: Vec<String> = bed.hosts().iter().map(|host| host.ip()).collect();
    ips.dedup();
    assert_eq!(ips.len(), 3);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    for (index, host) in bed.hosts().iter().enumerate() {
        assert_eq!(host.sh_ok("hostname")?.trim(), host.name());
        // Each host's own Caddy on :80, reachable from the tests at the host's address.
        let response = client.get(format!("http://{}/", host.ip())).send().await?;
        assert_eq!(response.status(), 200);
        // Garage from inside (403: reachable, unauthenticated).
        assert_eq!(http_status_from(host, &bed.s3().endpoint)?, "403");
        let next = bed.host((index + 1) % 3);
        assert_eq!(
            http_status_from(host, &format!("http://{}/", next.ip()))?,
            "200"
        );
    }
    let footprint = bed.footprint();
    let before = footprint.leftovers()?;
    assert!(
        before.iter().any(|item| item.starts_with("process")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|item| item.starts_with("mount")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|item| item.starts_with("netns")),
        "{before:?}"
    );
    drop(bed);
    assert_eq!(footprint.leftovers()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn two_beds_at_once_get_separate_subnets_and_both_tear_down() -> anyhow::Result<()> {
    let _serial = SERIAL.blocking_lock();
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            Bed::start(BedOptions {
                hosts: 1,
                ..Default::default()
            })
        });
        let b = scope.spawn(|| {
            Bed::start(BedOptions {
                hosts: 1,
                ..Default::default()
            })
        });
        (a.join(), b.join())
    });
    let (first, second) = match (first, second) {
        (Ok(first), Ok(second)) => (first?, second?),
        _ => anyhow::bail!("a bed start thread panicked"),
    };
    assert_ne!(first.names().subnet(), second.names().subnet());
    assert_ne!(first.s3().endpoint, second.s3().endpoint);
    assert_ne!(first.s3().access_key, second.s3().access_key);
    let footprints = [first.footprint(), second.footprint()];
    drop(first);
    drop(second);
    for footprint in footprints {
        assert_eq!(footprint.leftovers()?, Vec::<String>::new());
    }
    Ok(())
}

#[test]
fn poweroff_and_boot_keep_the_host_filesystem() -> anyhow::Result<()> {
    let _serial = SERIAL.blocking_lock();
    let mut bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let first_pid = bed.host(0).pid()?;
    bed.host(0)
        .put_bytes("/var/lib/ferry-bed/marker", b"kept", 0o600)?;
    bed.host(0)
        .put_bytes("/run/ferry-bed-volatile", b"gone", 0o600)?;
    bed.host_mut(0).poweroff()?;
    assert!(!bed.host(0).is_running());
    assert!(bed.host(0).dbus_address().is_err());
    bed.host_mut(0).boot()?;
    let host = bed.host(0);
    assert_ne!(host.pid()?, first_pid);
    assert_eq!(host.sh_ok("cat /var/lib/ferry-bed/marker")?, "kept");
    assert!(!host.sh("test -e /run/ferry-bed-volatile")?.success());
    let footprint = bed.footprint();
    drop(bed);
    assert_eq!(footprint.leftovers()?, Vec::<String>::new());
    Ok(())
}
