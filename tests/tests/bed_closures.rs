//! The test closures: distinct paths, a multi-path one whose paths reference each other,
//! signed caches that upload to the bucket, and each closure's version and mode baked in
//! (healthy, failing its health check, crashing at start). Copying them into a host's
//! store (signed yes, unsigned no) is in bed_smoke.

use std::time::{Duration, Instant};

use ferry_tests::{Bed, BedOptions, Closures};

#[test]
fn closures_have_distinct_paths_and_multi_references_its_deps() -> anyhow::Result<()> {
    let closures = Closures::get()?;
    let mut paths: Vec<&str> = closures.services().to_vec();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 5);
    let out = std::process::Command::new("nix-store")
        .args(["-qR", &closures.multi])
        .output()?;
    let requisites = String::from_utf8(out.stdout)?;
    for dep in &closures.multi_deps {
        assert!(
            requisites.contains(dep.as_str()),
            "{dep} missing from the closure of {}",
            closures.multi
        );
    }
    assert!(closures.public_key.starts_with("ferry-test-1:"));
    Ok(())
}

#[tokio::test]
async fn signed_cache_uploads_into_the_bucket_narinfos_last() -> anyhow::Result<()> {
    let closures = Closures::get()?;
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let uploaded = closures.upload_signed(s3, "cache/").await?;
    let listed = s3
        .client()
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix("cache/")
        .send()
        .await?;
    let keys: Vec<&str> = listed
        .contents()
        .iter()
        .filter_map(|object| object.key())
        .collect();
    assert_eq!(keys.len(), uploaded);
    assert!(keys.contains(&"cache/nix-cache-info"), "{keys:?}");
    let narinfo = format!(
        "cache/{}.narinfo",
        &closures.v1["/nix/store/".len()..][..32]
    );
    let body = s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key(&narinfo)
        .send()
        .await?;
    let text = String::from_utf8(body.body.collect().await?.into_bytes().to_vec())?;
    assert!(text.contains("Sig: ferry-test-1:"), "{text}");
    Ok(())
}

/// Starts `<closure>/bin/ferry-testsvc` on the machine with only PORT set (no mode, no
/// version in the environment), so what it does comes from the closure alone.
fn spawn_service(closure: &str) -> anyhow::Result<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(format!("{closure}/bin/ferry-testsvc"))
        .env_clear()
        .env("PORT", port.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok((child, port))
}

async fn get_with_retry(url: &str) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(url).send().await {
            Ok(response) => return Ok((response.status().as_u16(), response.text().await?)),
            Err(err) if Instant::now() > deadline => return Err(err.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn closures_carry_their_version_and_mode() -> anyhow::Result<()> {
    let closures = Closures::get()?;
    for (closure, version, health) in [
        (&closures.v2, "2.0.0", 200),
        (&closures.broken, "3.0.0-broken", 503),
        (&closures.multi, "5.0.0-multi", 200),
    ] {
        let (mut child, port) = spawn_service(closure)?;
        let answers = async {
            let version_answer =
                get_with_retry(&format!("http://127.0.0.1:{port}/version")).await?;
            let health_answer = get_with_retry(&format!("http://127.0.0.1:{port}/health")).await?;
            anyhow::Ok((version_answer, health_answer))
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let ((_, got_version), (got_health, _)) = answers?;
        assert_eq!(got_version, version);
        assert_eq!(got_health, health, "{closure}");
    }
    let crashed = std::process::Command::new(format!("{}/bin/ferry-testsvc", closures.crashing))
        .env_clear()
        .env("PORT", "1")
        .output()?;
    assert_eq!(crashed.status.code(), Some(1));
    Ok(())
}
