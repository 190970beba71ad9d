//! The test closures reach a host's Nix store only when signed, and the test service in
//! them serves through the host's Caddy, configured over its admin API.

use std::time::{Duration, Instant};

use ferry_tests::{Bed, BedOptions, Closures, Host};

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
async fn signed_closure_copies_unsigned_is_refused_and_service_answers_through_caddy()
-> anyhow::Result<()> {
    let closures = Closures::get()?;
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let host = bed.host(0);
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
    for path in [
        &closures.v1,
        &closures.multi,
        &closures.multi_deps[0],
        &closures.multi_deps[1],
    ] {
        assert!(
            host.path_in_host(path).exists(),
            "{path} not in the host's store"
        );
    }

    host.put_bytes(
        "/run/systemd/system/ferry-testsvc.service",
        format!(
            "[Service]\nExecStart={}/bin/ferry-testsvc\nEnvironment=PORT=8001\nDynamicUser=yes\n",
            closures.v1
        )
        .as_bytes(),
        0o644,
    )?;
    host.sh_ok("systemctl daemon-reload && systemctl start ferry-testsvc.service")?;

    let route = r#"{"@id":"ferry-bed-test","match":[{"path":["/version","/health"]}],
        "handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:8001"}]}],"terminal":true}"#;
    // PUT on an array index inserts there: ahead of Debian's catch-all file server.
    let (status, body) = host.caddy_admin(
        "PUT",
        "/config/apps/http/servers/srv0/routes/0",
        Some(route),
    )?;
    assert_eq!(status, 200, "{body}");

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://{}/version", host.ip());
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => break response.text().await?,
            other if Instant::now() > deadline => {
                anyhow::bail!("GET {url} never answered 200: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(version, "1.0.0");
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
