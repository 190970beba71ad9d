//! Several hosts and several beds at once, reboots, and a teardown that leaves nothing:
//! every host shuts down cleanly, and no process, mount, link, namespace or folder stays.

use std::time::Duration;

use ferry_tests::{Bed, BedOptions};

// The tests here run in parallel: `tear_down` checks for leftovers while the bed still holds
// its slot, so another test's bed cannot take the slot and make the same names meanwhile.

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
async fn three_hosts_with_own_caddy_files_and_network_reach_garage_and_each_other_and_leave_nothing()
-> anyhow::Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 3,
        ..Default::default()
    })?;
    let mut ips: Vec<String> = bed.hosts().iter().map(|host| host.ip()).collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 3);
    let rootfs = std::fs::canonicalize("/var/cache/ferry-testbed/rootfs")?;
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
        // Its own Caddy, not a shared one: a route added through its admin API answers
        // with its name at its address only.
        let route = format!(
            r#"{{"match":[{{"path":["/whoami"]}}],"handle":[{{"handler":"static_response","body":"{}"}}]}}"#,
            host.name()
        );
        host.add_caddy_route(&route)?;
        // Its own filesystem: a file written in it is in no other host nor in the cache.
        host.put_bytes("/etc/ferry-bed-owner", host.name().as_bytes(), 0o644)?;
        // Its own network: the bed's /24 and nothing else, no way off the machine.
        let routes = host.sh_ok("ip -4 route")?;
        assert!(!routes.contains("default"), "{routes}");
        assert_eq!(routes.lines().count(), 1, "{routes}");
    }
    for host in bed.hosts() {
        let response = client
            .get(format!("http://{}/whoami", host.ip()))
            .send()
            .await?;
        assert_eq!(response.text().await?, host.name());
        assert_eq!(host.sh_ok("cat /etc/ferry-bed-owner")?, host.name());
    }
    assert!(!rootfs.join("etc/ferry-bed-owner").exists());
    // While the bed runs the check sees every kind of thing it looks for; otherwise an
    // empty list after teardown would prove nothing.
    let before = bed.footprint().leftovers()?;
    let count = |kind: &str| before.iter().filter(|item| item.starts_with(kind)).count();
    // Garage, and per host nspawn and the container's systemd.
    assert_eq!(count("process "), 1 + 3 * 2, "{before:?}");
    assert!(count("mount ") >= 3, "{before:?}");
    // The bridge and one veth per host.
    assert_eq!(count("link "), 1 + 3, "{before:?}");
    assert_eq!(count("netns "), 3, "{before:?}");
    assert_eq!(count("folder "), 1, "{before:?}");
    // And it sees what teardown does not remove: a link in the bed's names made behind
    // its back is the one thing reported afterwards.
    let stray = format!("fv{}h9", bed.names().slot());
    let made = std::process::Command::new("ip")
        .args(["link", "add", &stray, "type", "bridge"])
        .status()?;
    assert!(made.success(), "ip link add {stray} failed");
    let after = bed.tear_down();
    let removed = std::process::Command::new("ip")
        .args(["link", "del", &stray])
        .status()?;
    assert_eq!(after?, vec![format!("link {stray}")]);
    assert!(removed.success(), "ip link del {stray} failed");
    Ok(())
}

#[test]
fn two_beds_at_once_get_separate_subnets_and_both_tear_down() -> anyhow::Result<()> {
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
    assert_eq!(first.tear_down()?, Vec::<String>::new());
    assert_eq!(second.tear_down()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn poweroff_and_boot_keep_the_host_filesystem() -> anyhow::Result<()> {
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
    assert_eq!(bed.tear_down()?, Vec::<String>::new());
    Ok(())
}

#[test]
fn a_host_that_does_not_shut_down_cleanly_is_reported() -> anyhow::Result<()> {
    let mut bed = Bed::start(BedOptions {
        hosts: 2,
        ..Default::default()
    })?;
    // The container's systemd ends with status 3, and nspawn with it: not a clean poweroff.
    bed.host(0).sh_ok("systemctl exit 3")?;
    let err = match bed.host_mut(0).poweroff() {
        Ok(()) => anyhow::bail!("an exit with status 3 counted as a clean shutdown"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("shut down uncleanly"), "{err}");
    assert!(!bed.host(0).is_running());
    bed.host_mut(0).boot()?;
    // At teardown the rebooted host 0 stops cleanly; host 1 does not, and is named.
    let unclean = bed.host(1).name();
    bed.host(1).sh_ok("systemctl exit 4")?;
    let problems = bed.tear_down()?;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!("host {unclean} shut down uncleanly")),
        "{problems:?}"
    );
    Ok(())
}
