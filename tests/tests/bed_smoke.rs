//! The bed's smoke test, on one bed with one host, in the order a deploy uses the parts:
//! Garage answers S3 (put, get, a 304 on a conditional GET) to the bucket Ferry opens from
//! its own settings; the workspace's binary runs inside the host (bound in read-only, and copied in);
//! the host's Nix takes signed test closures (a multi-path one whole) and refuses an
//! unsigned one; a unit running v1, written to /run/systemd/system, is reloaded and started
//! over the host's D-Bus with zbus and is `active` (as a DynamicUser); a route added through
//! the host's Caddy admin API serves the service's /version.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{
    ConfigBag, Intercept, RequestChecksumCalculation, ResponseChecksumValidation, RuntimeComponents,
};
use ferry_bucket::{Bucket, Fetched, S3Bucket};
use ferry_tests::binaries::built_binary;
use ferry_tests::{Bed, BedOptions, BindRo, Closures, Host, S3};
use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

const UNIT: &str = "ferry-smoke.service";
/// Where the service listens inside the host (behind its Caddy).
const SERVICE_PORT: u16 = 8001;
/// Where the workspace's ferry-testsvc is bound into the host.
const BOUND_TESTSVC: &str = "/usr/local/bin/ferry-testsvc";

#[tokio::test]
async fn bed_smoke() -> anyhow::Result<()> {
    let closures = Closures::get()?;
    let testsvc = built_binary("ferry-testsvc", "FERRY_TESTSVC_BIN")?;
    let bed = Bed::start(BedOptions {
        hosts: 1,
        bind_ro: vec![BindRo {
            source: testsvc.clone(),
            target: BOUND_TESTSVC.into(),
        }],
        ..Default::default()
    })?;
    let host = bed.host(0);
    assert_eq!(host.sh_ok("hostname")?.trim(), host.name());

    s3_put_get_and_304(bed.s3()).await?;
    binaries_run_inside(host, &testsvc)?;
    signed_closure_copies_unsigned_is_refused(host, closures)?;
    start_unit_over_dbus(host, &closures.v1).await?;
    version_through_caddy(host).await?;

    assert_eq!(bed.tear_down()?, Vec::<String>::new());
    Ok(())
}

/// Put, get, and a conditional GET with the current ETag that answers 304, through the
/// bucket Ferry opens from its own settings (the `s3://` URL and a credentials file, through
/// `S3Bucket::new`): path style, checksums only when required. The requests are watched on
/// their way out by an interceptor added to Ferry's client, and Ferry's `Bucket::put` sends
/// them.
async fn s3_put_get_and_304(s3: &S3) -> anyhow::Result<()> {
    assert_eq!(s3.region, "garage");
    let dir = tempfile::tempdir()?;
    let ferry = s3.ferry_bucket(dir.path()).await?;
    let config = ferry.client().config();
    assert_eq!(
        config.request_checksum_calculation(),
        Some(&RequestChecksumCalculation::WhenRequired)
    );
    assert_eq!(
        config.response_checksum_validation(),
        Some(&ResponseChecksumValidation::WhenRequired)
    );
    // What went on the wire: the bucket in the path, and no checksum on a plain put...
    let seen = Seen::default();
    let watched = S3Bucket::from_client(
        aws_sdk_s3::Client::from_conf(config.to_builder().interceptor(seen.clone()).build()),
        &s3.bucket,
    );
    watched
        .put("smoke/hello.txt", b"hello, bed".to_vec())
        .await?;
    let sent = seen.take();
    assert_eq!(
        sent.first(),
        Some(&format!(
            "{}/{}/smoke/hello.txt?x-id=PutObject",
            s3.endpoint, s3.bucket
        )),
        "not path style: {sent:?}"
    );
    assert!(
        !sent.iter().any(|line| line.starts_with("x-amz-checksum-")),
        "a checksum was sent: {sent:?}"
    );
    // ...where the SDK's default (WhenSupported) does send one, so its absence means
    // something (Garage may refuse this put; only the request matters).
    let control = Seen::default();
    let default_checksums = S3Bucket::from_client(
        aws_sdk_s3::Client::from_conf(
            config
                .to_builder()
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
                .interceptor(control.clone())
                .build(),
        ),
        &s3.bucket,
    );
    let _ = default_checksums
        .put("smoke/control.txt", b"hello, bed".to_vec())
        .await;
    let control = control.take();
    assert!(
        control
            .iter()
            .any(|line| line.starts_with("x-amz-checksum-")),
        "the SDK's default sent no checksum either: {control:?}"
    );
    let Fetched::Found { bytes, etag } = ferry.get("smoke/hello.txt", None).await? else {
        anyhow::bail!("smoke/hello.txt is missing right after the put");
    };
    assert_eq!(bytes, b"hello, bed");
    let etag = etag.ok_or_else(|| anyhow::anyhow!("Garage sent no ETag"))?;
    assert_eq!(
        ferry.get("smoke/hello.txt", Some(&etag)).await?,
        Fetched::Unchanged,
        "a GET with the current ETag in If-None-Match did not answer 304"
    );
    Ok(())
}

/// The requests a client sent, as they were about to be signed: for each, its URI, then
/// its header names.
#[derive(Clone, Debug, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    /// What was recorded so far; the record starts empty again.
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut seen| std::mem::take(&mut *seen))
            .unwrap_or_default()
    }
}

impl Intercept for Seen {
    fn name(&self) -> &'static str {
        "bed-smoke-seen"
    }

    fn read_before_signing(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let request = context.request();
        let mut lines = vec![request.uri().to_string()];
        lines.extend(request.headers().iter().map(|(name, _)| name.to_string()));
        if let Ok(mut seen) = self.0.lock() {
            seen.extend(lines);
        }
        Ok(())
    }
}

/// The binary bound in read-only and a copy put into the host both run there. Crash mode
/// makes each exit at once with a line naming its version.
fn binaries_run_inside(host: &Host, testsvc: &std::path::Path) -> anyhow::Result<()> {
    host.put_file(testsvc, "/opt/ferry-smoke/ferry-testsvc", 0o755)?;
    for binary in [BOUND_TESTSVC, "/opt/ferry-smoke/ferry-testsvc"] {
        let out = host.exec(&[
            "env",
            "FERRY_TESTSVC_MODE=crash",
            "FERRY_TESTSVC_VERSION=inside",
            binary,
        ])?;
        assert_eq!(out.status, 1, "{binary}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("ferry-testsvc inside: crashing at start"),
            "{binary}: {}",
            out.stderr
        );
    }
    let bound = host.sh(&format!("touch {BOUND_TESTSVC}"))?;
    assert!(!bound.success(), "the bound binary is writable in the host");
    Ok(())
}

/// `nix copy` inside the host from a `file://` cache, trusting only the test key.
fn nix_copy(
    host: &Host,
    cache: &str,
    key: &str,
    paths: &[&str],
) -> anyhow::Result<ferry_tests::Output> {
    let from = format!("file://{cache}");
    let mut argv = vec![
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--from",
        &from,
        "--option",
        "trusted-public-keys",
        key,
        "--option",
        "substituters",
        "",
    ];
    argv.extend_from_slice(paths);
    host.exec(&argv)
}

fn signed_closure_copies_unsigned_is_refused(
    host: &Host,
    closures: &Closures,
) -> anyhow::Result<()> {
    host.put_dir(&closures.unsigned_cache, "/var/tmp/unsigned-cache")?;
    host.put_dir(&closures.signed_cache, "/var/tmp/signed-cache")?;
    let refused = nix_copy(
        host,
        "/var/tmp/unsigned-cache",
        &closures.public_key,
        &[&closures.v1],
    )?;
    assert!(
        !refused.success(),
        "unsigned path was accepted: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("signature"), "{}", refused.stderr);
    assert!(!host.path_in_host(&closures.v1).exists());

    let copied = nix_copy(
        host,
        "/var/tmp/signed-cache",
        &closures.public_key,
        &[&closures.v1, &closures.multi],
    )?;
    assert!(copied.success(), "signed copy failed: {}", copied.stderr);
    // The multi-path closure comes whole: its dependencies were walked and copied too.
    for path in [&closures.v1, &closures.multi]
        .into_iter()
        .chain(&closures.multi_deps)
    {
        assert!(
            host.path_in_host(path).exists(),
            "{path} not in the host's store"
        );
    }
    // The host's own Nix database has it, signature and all.
    let info = host.sh_ok(&format!(
        "nix --extra-experimental-features nix-command path-info --sigs {}",
        closures.v1
    ))?;
    assert!(info.contains("ferry-test-1:"), "{info}");
    Ok(())
}

/// Writes a unit running `closure`'s service to /run/systemd/system, then Reload and
/// StartUnit over the host's system bus, as the agent does; waits for the job and checks
/// the unit is active and not running as root.
async fn start_unit_over_dbus(host: &Host, closure: &str) -> anyhow::Result<()> {
    host.put_bytes(
        &format!("/run/systemd/system/{UNIT}"),
        format!(
            "[Service]\nExecStart={closure}/bin/ferry-testsvc\nEnvironment=PORT={SERVICE_PORT}\nDynamicUser=yes\n"
        )
        .as_bytes(),
        0o644,
    )?;
    let address = host.dbus_address()?;
    let conn = zbus::connection::Builder::address(address.as_str())?
        .build()
        .await?;
    let manager = ManagerProxy::new(&conn).await?;
    manager.subscribe().await?;
    manager.reload().await?;
    // Subscribed before starting, so the job's end cannot slip past.
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
    let uid = host.sh_ok(&format!(
        "stat -c %u /proc/$(systemctl show -P MainPID {UNIT})"
    ))?;
    assert_ne!(uid.trim(), "0", "DynamicUser=yes ran as root");
    Ok(())
}

/// Adds a route to the service through the host's Caddy admin API and gets /version
/// through Caddy on port 80 at the host's address.
async fn version_through_caddy(host: &Host) -> anyhow::Result<()> {
    let route = format!(
        r#"{{"@id":"ferry-smoke","match":[{{"path":["/version","/health"]}}],
        "handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"127.0.0.1:{SERVICE_PORT}"}}]}}],"terminal":true}}"#
    );
    host.add_caddy_route(&route)?;
    let (status, body) = host.caddy_admin("GET", "/id/ferry-smoke", None)?;
    assert_eq!(status, 200, "{body}");

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://{}/version", host.ip());
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => break response,
            other if Instant::now() > deadline => {
                anyhow::bail!("GET {url} never answered 200: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let server = response
        .headers()
        .get("server")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    assert_eq!(server.as_deref(), Some("Caddy"), "not served through Caddy");
    assert_eq!(response.text().await?, "1.0.0");
    Ok(())
}
