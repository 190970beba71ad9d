//! The agent's backends against the real things: the S3 bucket and the loopback cache proxy
//! against the bed's Garage, and systemd over D-Bus against a bed host's bus.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_s3::primitives::ByteStream;
use ferry_agent::backend::bucket::{BucketError, Fetched, ReadBucket};
use ferry_agent::backend::cache_proxy::CacheProxy;
use ferry_agent::backend::systemd::{DbusSystemd, Systemd};
use ferry_agent::plan::Job;
use ferry_bucket::{S3Bucket, S3Settings};
use ferry_tests::{Bed, BedOptions, S3};

fn settings(s3: &S3, credentials: &std::path::Path) -> S3Settings {
    S3Settings {
        bucket: s3.bucket.clone(),
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        profile: None,
        credentials_file: Some(credentials.to_owned()),
        timeout: Duration::from_secs(10),
    }
}

fn credentials_file(s3: &S3) -> Result<tempfile::NamedTempFile> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(
        file.path(),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key, s3.secret_key
        ),
    )?;
    Ok(file)
}

#[tokio::test]
async fn agent_s3_bucket_conditional_get_missing_unreachable_and_cache_proxy() -> Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let creds = credentials_file(s3)?;
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key("manifest.json")
        .body(ByteStream::from_static(b"{\"v\":1}"))
        .send()
        .await?;
    let bucket = Arc::new(S3Bucket::new(&settings(s3, creds.path())).await);

    let Fetched::Found { bytes, etag } = bucket.get("manifest.json", None).await? else {
        anyhow::bail!("expected the object");
    };
    assert_eq!(bytes, b"{\"v\":1}");
    let etag = etag.ok_or_else(|| anyhow::anyhow!("no ETag"))?;
    assert_eq!(
        bucket.get("manifest.json", Some(&etag)).await?,
        Fetched::Unchanged
    );
    assert!(matches!(
        bucket.get("manifest.json", Some("\"other\"")).await?,
        Fetched::Found { .. }
    ));
    assert_eq!(bucket.get("absent.json", None).await?, Fetched::Missing);
    assert_eq!(bucket.requests(), 4);

    // Through the proxy: binary-cache objects only, under the random prefix only, read-only
    // (tests/tests/hostile_surfaces.rs tries everything else).
    let narinfo = "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo";
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key(narinfo)
        .body(ByteStream::from_static(b"StorePath: x\n"))
        .send()
        .await?;
    let proxy = CacheProxy::start(bucket.clone()).await?;
    let http = reqwest::Client::new();
    let got = http
        .get(format!("{}/{narinfo}", proxy.url()))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await?.as_ref(), b"StorePath: x\n");
    let port_root = proxy
        .url()
        .rsplit_once('/')
        .map_or("", |(root, _)| root)
        .to_owned();
    assert_eq!(
        http.get(format!("{port_root}/{narinfo}"))
            .send()
            .await?
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{}/nar/absent.nar.zst", proxy.url()))
            .send()
            .await?
            .status(),
        404
    );
    assert_eq!(
        http.put(format!("{}/{narinfo}", proxy.url()))
            .body("x")
            .send()
            .await?
            .status(),
        405
    );
    // A NAR-sized object is streamed through with its length; HEAD sends the length only.
    let big: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key("nar/big.nar.zst")
        .body(ByteStream::from(big.clone()))
        .send()
        .await?;
    let got = http
        .get(format!("{}/nar/big.nar.zst", proxy.url()))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.content_length(), Some(big.len() as u64));
    assert!(got.bytes().await?.as_ref() == big.as_slice(), "NAR differs");
    let head = http
        .head(format!("{}/nar/big.nar.zst", proxy.url()))
        .send()
        .await?;
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(big.len().to_string().as_str())
    );
    drop(proxy);

    // Wrong credentials are "refused", a dead endpoint is "unreachable".
    let bad = tempfile::NamedTempFile::new()?;
    std::fs::write(
        bad.path(),
        "[default]\naws_access_key_id = GK000000000000000000000000\naws_secret_access_key = 00\n",
    )?;
    let denied = S3Bucket::new(&settings(s3, bad.path())).await;
    assert!(matches!(
        denied.get("manifest.json", None).await,
        Err(BucketError::Refused(_))
    ));
    let mut dead = settings(s3, creds.path());
    dead.endpoint = Some("http://127.0.0.1:9".into());
    dead.timeout = Duration::from_secs(3);
    let dead = S3Bucket::new(&dead).await;
    assert!(matches!(
        dead.get("manifest.json", None).await,
        Err(BucketError::Unreachable(_))
    ));
    Ok(())
}

/// The proxy's look-ahead against Garage: told a closure's root, it walks the narinfos and
/// fetches the NARs this host lacks; Nix's requests then take them without asking the bucket
/// again, byte for byte. (The closure is made up: nothing here runs Nix, whose pulls through
/// the look-ahead the agent bed tests and `bench/pull.sh` run.)
#[tokio::test]
async fn cache_proxy_fetches_a_closure_ahead_from_garage() -> Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let creds = credentials_file(s3)?;
    // A chain of five paths (0 → 1 → … → 4), NARs of 1 KiB to 3 MiB.
    let hash = |i: usize| format!("{i:0>31}x");
    let mut nars = Vec::new();
    for i in 0..5usize {
        let nar: Vec<u8> = (0..(1024 << (2 * i)))
            .map(|b| (b % 251) as u8 ^ i as u8)
            .collect();
        let refs = if i < 4 {
            format!("{}-p{}", hash(i + 1), i + 1)
        } else {
            String::new()
        };
        let narinfo = format!(
            "StorePath: /nix/store/{}-p{i}\nURL: nar/n{i}.nar.zst\nCompression: zstd\nFileSize: {}\nReferences: {refs}\n",
            hash(i),
            nar.len()
        );
        for (key, body) in [
            (format!("nar/n{i}.nar.zst"), nar.clone()),
            (format!("{}.narinfo", hash(i)), narinfo.into_bytes()),
        ] {
            s3.client()
                .put_object()
                .bucket(&s3.bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await?;
        }
        nars.push(nar);
    }
    let bucket = Arc::new(S3Bucket::new(&settings(s3, creds.path())).await);
    let root = format!("/nix/store/{}-p0", hash(0));
    let mut proxy = CacheProxy::start_with_prefetch(bucket.clone(), &[root]).await?;
    proxy.ahead_done().await;
    assert_eq!(
        bucket.requests(),
        10,
        "five narinfos and five NARs, once each"
    );
    let http = reqwest::Client::new();
    for (i, nar) in nars.iter().enumerate() {
        let info = http
            .get(format!("{}/{}.narinfo", proxy.url(), hash(i)))
            .send()
            .await?;
        assert_eq!(info.status(), 200);
        assert!(info.text().await?.contains(&format!("-p{i}\n")));
        let got = http
            .get(format!("{}/nar/n{i}.nar.zst", proxy.url()))
            .send()
            .await?;
        assert_eq!(got.status(), 200);
        assert_eq!(got.content_length(), Some(nar.len() as u64));
        assert!(
            got.bytes().await?.as_ref() == nar.as_slice(),
            "NAR {i} differs"
        );
    }
    assert_eq!(
        bucket.requests(),
        10,
        "everything Nix asked for was fetched ahead"
    );
    assert_eq!(proxy.served_ahead(), 5);
    // Taken once: asked again, the NAR comes from the bucket.
    let again = http
        .get(format!("{}/nar/n0.nar.zst", proxy.url()))
        .send()
        .await?;
    assert!(again.bytes().await?.as_ref() == nars[0].as_slice());
    assert_eq!(bucket.requests(), 11);
    Ok(())
}

#[tokio::test]
async fn agent_systemd_backend_runs_jobs_and_reads_state_over_a_hosts_bus() -> Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
    host.put_bytes(
        "/run/systemd/system/ferry-bt.service",
        b"[Service]\nType=exec\nExecStart=/bin/sleep 1000\n",
        0o644,
    )?;
    host.put_bytes(
        "/run/systemd/system/ferry-bt-bad.service",
        b"[Service]\nType=exec\nExecStart=/nonexistent/program\n",
        0o644,
    )?;
    let sd = DbusSystemd::connect(Some(&host.dbus_address()?), Duration::from_secs(30)).await?;
    sd.reload().await?;
    assert_eq!(sd.unit_state("ferry-no-such.service").await?, None);

    assert_eq!(sd.run_job("ferry-bt.service", Job::Start).await?, "done");
    let st = sd
        .unit_state("ferry-bt.service")
        .await?
        .ok_or_else(|| anyhow::anyhow!("not loaded"))?;
    assert_eq!(
        (st.active_state.as_str(), st.sub_state.as_str()),
        ("active", "running")
    );
    let pid1 = host.sh_ok("systemctl show -p MainPID --value ferry-bt.service")?;
    assert_eq!(sd.run_job("ferry-bt.service", Job::Restart).await?, "done");
    let pid2 = host.sh_ok("systemctl show -p MainPID --value ferry-bt.service")?;
    assert_ne!(pid1, pid2, "restart kept the old process");
    assert_eq!(sd.run_job("ferry-bt.service", Job::Stop).await?, "done");
    // systemd may unload a stopped unit nothing refers to: gone or inactive are both right.
    let st = sd.unit_state("ferry-bt.service").await?;
    assert!(
        st.as_ref().is_none_or(|s| s.active_state == "inactive"),
        "{st:?}"
    );

    assert_eq!(
        sd.run_job("ferry-bt-bad.service", Job::Start).await?,
        "failed"
    );
    Ok(())
}

// The zbus vs `systemctl` restart measurement is a benchmark: bench/restart_zbus_vs_systemctl.sh.

/// Sends SIGCONT to a stopped process when dropped, so a failing assertion never leaves a
/// host's systemd frozen.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.0)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
        }
    }
}

#[tokio::test]
async fn a_frozen_systemd_does_not_hold_a_call_past_the_timeout() -> Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
    let sd = DbusSystemd::connect(Some(&host.dbus_address()?), Duration::from_secs(2)).await?;
    sd.reload().await?;
    // systemd stops answering (a hung PID 1, a stuck job queue); the bus itself still does.
    let pid = host.pid()?;
    let raw = rustix::process::Pid::from_raw(i32::try_from(pid)?)
        .ok_or_else(|| anyhow::anyhow!("PID 0"))?;
    rustix::process::kill_process(raw, rustix::process::Signal::STOP)?;
    let thaw = Thaw(pid);
    let started = std::time::Instant::now();
    let calls = async { (sd.reload().await, sd.unit_state("ferry-none.service").await) };
    let answered = tokio::time::timeout(Duration::from_secs(20), calls).await;
    let took = started.elapsed();
    drop(thaw);
    let (reload, state) = answered.map_err(|_| anyhow::anyhow!("a call hung for 20 s"))?;
    eprintln!("frozen systemd: both calls gave up after {took:?}");
    assert!(reload.is_err() && state.is_err(), "{reload:?} {state:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // Thawed, it answers again on the same connection.
    sd.reload().await?;
    Ok(())
}
