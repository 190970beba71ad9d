//! The bed's own smoke test: Garage answers S3, a host boots with D-Bus, nsenter and Caddy.

use ferry_tests::{Bed, BedOptions};

#[test]
fn one_host_bed_starts_and_answers() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
    assert_eq!(host.sh_ok("hostname")?.trim(), host.name());
    assert!(std::path::Path::new(&host.dbus_address()?["unix:path=".len()..]).exists());
    let (status, body) = host.caddy_admin("GET", "/config/", None)?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}
