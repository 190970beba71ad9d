//! The agent's own surfaces under attack (issue 14, items 13–16; issue 21, item 8), each
//! test named after the attack: the loopback cache proxy read by a local user who learnt its
//! token, a bucket that answers slowly or with a huge manifest, Caddy's admin API reached
//! from a deployed service, and a boot with the credentials or the state directory gone.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aws_sdk_s3::primitives::ByteStream;
use ferry_agent::backend::cache_proxy::CacheProxy;
use ferry_bucket::{DirBucket, S3Bucket, S3Settings};
use ferry_tests::agent_bed::{AGENT, AgentBed, manifest, service, summary};
use ferry_tests::slow_bucket::{Answer, SlowBucket};
use ferry_tests::{Bed, BedOptions, Output, S3};

/// A narinfo key (32 characters of Nix base-32) and a NAR key as Nix and `ferry upload`
/// name them.
const NARINFO: &str = "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo";
const NAR: &str = "nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst";

/// What a local user sees from one raw HTTP/1.1 request: the status and the body. Raw, so
/// paths reach the proxy exactly as written (an HTTP client would fold `..` away). Async:
/// the proxy runs on the test's own runtime.
async fn raw_get(url_root: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url_root
        .strip_prefix("http://")
        .context("the proxy URL is not http://")?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request = format!(
            "GET /{prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .with_context(|| format!("no answer to GET {path} within 20 s"))??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {text:.200}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

async fn put(s3: &S3, key: &str, bytes: Vec<u8>) -> Result<()> {
    s3.client()
        .put_object()
        .bucket(&s3.bucket)
        .key(key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .with_context(|| format!("putting {key}"))?;
    Ok(())
}

/// An S3 bucket of the bed read with these keys; the credentials file lives as long as the
/// returned handle (the SDK reads it at the first request).
async fn s3_bucket(
    s3: &S3,
    access_key: &str,
    secret_key: &str,
) -> Result<(S3Bucket, tempfile::NamedTempFile)> {
    let creds = tempfile::NamedTempFile::new()?;
    std::fs::write(
        creds.path(),
        format!(
            "[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
        ),
    )?;
    let bucket = S3Bucket::new(&S3Settings {
        bucket: s3.bucket.clone(),
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        profile: None,
        credentials_file: Some(creds.path().to_owned()),
        timeout: Duration::from_secs(10),
    })
    .await;
    Ok((bucket, creds))
}

/// Item 14: `nix copy --from http://127.0.0.1:PORT/TOKEN` shows the token to every local user
/// (`/proc/<pid>/cmdline`). With it, they must get the binary cache and nothing else of the
/// bucket: not the manifest, its archives, status reports or any other object, whatever
/// the path looks like.
#[tokio::test]
async fn local_user_with_the_proxy_token_reads_only_the_binary_cache() -> Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let secret = "SECRET-9f2c1d";
    put(s3, "nix-cache-info", b"StoreDir: /nix/store\n".to_vec()).await?;
    put(s3, NARINFO, b"StorePath: /nix/store/x\n".to_vec()).await?;
    put(s3, NAR, b"nar bytes".to_vec()).await?;
    for key in [
        "manifest.json",
        "manifests/manifest-2025-01-01T00:00:00Z.json",
        "status/web-1.json",
        "secrets/db.env",
        "nar/notes.txt",
        "0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo.bak",
    ] {
        put(s3, key, format!("{secret} in {key}").into_bytes()).await?;
    }
    let (bucket, _creds) = s3_bucket(s3, &s3.access_key, &s3.secret_key).await?;
    let proxy = CacheProxy::start(Arc::new(bucket)).await?;
    let root = proxy.url().to_owned();

    for (key, body) in [
        ("nix-cache-info", "StoreDir: /nix/store\n"),
        (NARINFO, "StorePath: /nix/store/x\n"),
        (NAR, "nar bytes"),
    ] {
        assert_eq!(
            raw_get(&root, &format!("/{key}")).await?,
            (200, body.to_owned()),
            "{key}"
        );
    }
    let mut served = Vec::new();
    for path in [
        "/manifest.json",
        "/manifests/manifest-2025-01-01T00:00:00Z.json",
        "/status/web-1.json",
        "/secrets/db.env",
        "/nar/notes.txt",
        "/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo.bak",
        "/nar/../manifest.json",
        "/nar/..%2fmanifest.json",
        "//manifest.json",
        "/./manifest.json",
    ] {
        let (status, body) = raw_get(&root, path).await?;
        if status != 404 || body.contains(secret) {
            served.push(format!("{path} → {status} {body:.80}"));
        }
    }
    ensure!(
        served.is_empty(),
        "the proxy served objects that are not the binary cache:\n{}",
        served.join("\n")
    );
    Ok(())
}

/// Item 14: a narinfo is a few hundred bytes to a few hundred KiB. One planted in the bucket
/// at gigabyte size would be read whole by Nix (and held by the proxy): the proxy refuses
/// narinfos over its cap without passing them on.
#[tokio::test]
async fn planted_huge_narinfo_is_not_passed_to_nix() -> Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let mut huge =
        b"StorePath: /nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-x\nReferences:".to_vec();
    while huge.len() < 3 * 1024 * 1024 {
        huge.extend_from_slice(b" 0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-x");
    }
    put(s3, NARINFO, huge).await?;
    let (bucket, _creds) = s3_bucket(s3, &s3.access_key, &s3.secret_key).await?;
    let proxy = CacheProxy::start(Arc::new(bucket)).await?;
    let (status, body) = raw_get(proxy.url(), &format!("/{NARINFO}")).await?;
    ensure!(
        status != 200 && body.len() < 1024,
        "a 3 MiB narinfo was passed on: HTTP {status}, {} bytes",
        body.len()
    );
    Ok(())
}

/// Item 14: when the bucket refuses, its error text (bucket name, key id, request ids) must
/// not reach whoever asked the proxy; the agent's own log has the detail.
#[tokio::test]
async fn bucket_error_text_is_not_echoed_to_the_proxys_client() -> Result<()> {
    let bed = Bed::start(BedOptions::default())?;
    let s3 = bed.s3();
    let key_id = "GK0123456789abcdef01234567";
    let (bucket, _creds) = s3_bucket(s3, key_id, "00").await?;
    let proxy = CacheProxy::start(Arc::new(bucket)).await?;
    let (status, body) = raw_get(proxy.url(), &format!("/{NARINFO}")).await?;
    ensure!(
        status == 502,
        "a refused bucket request answered HTTP {status}"
    );
    for leak in [key_id, s3.bucket.as_str(), "s3://", "HTTP 4"] {
        ensure!(
            !body.contains(leak),
            "the proxy's answer echoes the bucket's error ({leak:?}): {body}"
        );
    }
    Ok(())
}

/// Environment variable that turns the next test into the child it starts.
const ACCEPT_CHILD: &str = "FERRY_TEST_PROXY_ACCEPT_CHILD";

/// Item 14: a process out of file descriptors cannot accept; a proxy that retries at once
/// spins a core for as long as a connection waits (the whole `nix copy`). Run in a child
/// limited to 64 descriptors (so nothing else in this test process is starved), which uses
/// them all and then has a connection waiting.
#[test]
fn proxy_does_not_spin_a_core_when_out_of_file_descriptors() -> Result<()> {
    if std::env::var_os(ACCEPT_CHILD).is_some() {
        return accept_child();
    }
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(exe)
        .args([
            "proxy_does_not_spin_a_core_when_out_of_file_descriptors",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ACCEPT_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the child under prlimit (util-linux)")?;
    let result = (|| -> Result<u64> {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let url = loop {
            let line = lines
                .next()
                .context("the child ended without starting its proxy")??;
            // libtest prints "test NAME ... " first, on the same line.
            if let Some((_, url)) = line.split_once("PROXY ") {
                break url.trim().to_owned();
            }
        };
        let authority = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        // The connection waits in the listener's backlog while accept() fails.
        let _waiting = TcpStream::connect(&authority)?;
        let before = cpu_ticks(child.id())?;
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_ticks(child.id())? - before;
        eprintln!(
            "proxy process used {} ms of CPU in {} ms with a connection waiting",
            used * 10,
            window.elapsed().as_millis()
        );
        Ok(used * 10)
    })();
    let _ = child.kill();
    let _ = child.wait();
    let cpu_ms = result?;
    ensure!(
        cpu_ms < 200,
        "the proxy spun: {cpu_ms} ms of CPU in 2 s while accept() failed"
    );
    Ok(())
}

/// The child: a proxy on a current-thread runtime (as the agent runs it), then every free
/// descriptor taken, then wait to be killed.
fn accept_child() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let proxy = rt.block_on(CacheProxy::start(Arc::new(DirBucket::new(
        dir.path().to_owned(),
    ))))?;
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    println!("PROXY {}", proxy.url());
    std::io::stdout().flush()?;
    rt.block_on(std::future::pending::<()>());
    drop(held);
    Ok(())
}

/// User plus system CPU time of `pid`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A bed whose host runs `alpha` (v1) from a first tick, with `fetchSec = 3`; returns it
/// with the peak RSS of a tick that fetched, verified and applied nothing (the baseline a
/// hostile manifest is compared with).
async fn bed_serving_alpha() -> Result<(AgentBed, u64)> {
    let t = AgentBed::start_with("[timeouts]\nsettleSec = 1\nfetchSec = 3\n").await?;
    let alpha = vec![service("alpha", &t.closures.v1, 8101)];
    t.publish(&manifest(1, alpha.clone())).await?;
    let out = t.reconcile()?;
    ensure!(out.status == 0, "first tick failed: {}", out.stdout);
    // Same services, new generation: fetched and verified in full, nothing to apply.
    t.publish(&manifest(2, alpha)).await?;
    let out = t.reconcile()?;
    ensure!(out.status == 0, "second tick failed: {}", out.stdout);
    let baseline = peak_rss_kib(&out)?;
    Ok((t, baseline))
}

/// `peakRssKiB` of a tick's summary line.
fn peak_rss_kib(out: &Output) -> Result<u64> {
    summary(out)?
        .get("peakRssKiB")
        .with_context(|| format!("no peakRssKiB in the tick's output:\n{}", out.stdout))
}

/// One `ferry-agent reconcile` in the host, cut off after `limit` (coreutils `timeout`,
/// exit 124) so a hung tick fails the test instead of hanging it; with its wall time.
fn timed_reconcile(t: &AgentBed, limit: Duration) -> Result<(Output, Duration)> {
    let started = Instant::now();
    let out = t
        .host()
        .exec(&["timeout", &limit.as_secs().to_string(), AGENT, "reconcile"])?;
    let took = started.elapsed();
    eprintln!(
        "--- reconcile (exit {}, {} ms)\n{}{}",
        out.status,
        took.as_millis(),
        out.stdout,
        out.stderr
    );
    Ok((out, took))
}

/// Item 15: a bucket (or anyone between it and the host) answers `manifest.json` at one
/// byte every 250 ms. The tick must give up after `fetchSec` (3 s here) and bring the
/// host's services back from state, not wait for the body.
#[tokio::test]
async fn trickling_bucket_cannot_hold_a_tick_past_fetch_sec() -> Result<()> {
    let (t, _) = bed_serving_alpha().await?;
    let body = serde_json::to_vec(&manifest(3, vec![service("alpha", &t.closures.v2, 8101)]))?;
    let slow = SlowBucket::start(
        &t.bed.names().bridge_ip(),
        Answer::Trickle {
            body,
            every: Duration::from_millis(250),
        },
    )?;
    t.write_config_with_endpoint(&slow.endpoint())?;
    t.host().sh_ok("systemctl stop ferry-alpha.service")?;

    let (out, took) = timed_reconcile(&t, Duration::from_secs(60))?;
    ensure!(
        out.status != 124,
        "the tick was still reading the trickled manifest after 60 s ({} bytes sent)",
        slow.body_bytes_sent()
    );
    ensure!(
        took < Duration::from_secs(3 + 5),
        "the tick took {took:?} with fetchSec = 3"
    );
    ensure!(
        out.status == 3,
        "a bucket that does not answer in time is unreachable (exit 3), got {}",
        out.status
    );
    ensure!(
        out.stdout.contains("within 3 s") && out.stdout.contains("restoring services from state"),
        "the tick does not say why: {}",
        out.stdout
    );
    ensure!(
        t.show("ferry-alpha.service", "ActiveState")? == "active",
        "alpha was not restored from state"
    );
    ensure!(
        t.get(8101, "/version")?.trim() == "1.0.0",
        "alpha is not v1"
    );
    Ok(())
}

/// Item 15: `manifest.json` is 300 MB, announced in `Content-Length` or not. The issue saw
/// the agent read it whole before refusing it (peak RSS 615 MB). It must be refused having
/// read at most the size cap, with the tick's peak RSS that of an ordinary tick, within
/// `fetchSec`, and the services restored from state.
#[tokio::test]
async fn huge_manifest_is_refused_without_being_read() -> Result<()> {
    let (t, baseline) = bed_serving_alpha().await?;
    let len = 300 * 1024 * 1024;
    for declared in [true, false] {
        let slow = SlowBucket::start(&t.bed.names().bridge_ip(), Answer::Huge { len, declared })?;
        t.write_config_with_endpoint(&slow.endpoint())?;
        t.host().sh_ok("systemctl stop ferry-alpha.service")?;
        let (out, took) = timed_reconcile(&t, Duration::from_secs(120))?;
        let rss = peak_rss_kib(&out).unwrap_or(u64::MAX);
        let sent = slow.body_bytes_sent();
        drop(slow);
        let how = if declared {
            "with Content-Length"
        } else {
            "chunked"
        };
        eprintln!(
            "300 MB manifest {how}: exit {}, {} ms, peak RSS {rss} KiB (baseline {baseline} KiB), {sent} bytes sent",
            out.status,
            took.as_millis()
        );
        ensure!(
            rss <= baseline + 16 * 1024,
            "300 MB manifest {how}: peak RSS {rss} KiB against {baseline} KiB for an ordinary tick"
        );
        ensure!(
            out.status == 2 && out.stdout.contains("size cap"),
            "300 MB manifest {how}: not refused for its size (exit {}): {}",
            out.status,
            out.stdout
        );
        ensure!(
            took < Duration::from_secs(3 + 5),
            "300 MB manifest {how}: the tick took {took:?} with fetchSec = 3"
        );
        ensure!(
            t.show("ferry-alpha.service", "ActiveState")? == "active",
            "300 MB manifest {how}: alpha was not restored from state"
        );
    }
    Ok(())
}

/// Item 13: a deployed service, running exactly as the agent renders it (DynamicUser and the
/// full hardening baseline, which allows AF_INET and AF_UNIX), tries to add a route of its
/// own through Caddy's admin API, over loopback TCP and over Caddy's admin socket. Caddy's
/// config must not change.
#[tokio::test]
async fn deployed_service_cannot_rewrite_caddys_config() -> Result<()> {
    let t = AgentBed::start().await?;
    t.publish(&manifest(1, vec![service("victim", &t.closures.v1, 8101)]))
        .await?;
    let out = t.reconcile()?;
    ensure!(out.status == 0, "deploying victim failed: {}", out.stdout);
    let unit = t
        .host()
        .sh_ok("cat /run/systemd/system/ferry-victim.service")?;
    ensure!(
        unit.contains("DynamicUser=yes\n"),
        "victim does not run as a dynamic user:\n{unit}"
    );
    let before = caddy_config(&t)?;

    // The attacker: the agent's unit for `victim`, its command replaced by the attack.
    let route = r#"{"@id":"attacker-ID","handle":[{"handler":"static_response","body":"owned"}]}"#;
    let attack = format!(
        "/bin/sh -c '\
         curl -sS -m 5 -o /dev/null -w \"tcp %{{http_code}}\\\\n\" -H \"Content-Type: application/json\" \
           --data-binary {tcp} http://127.0.0.1:2019/config/apps/http/servers/srv0/routes; \
         curl -sS -m 5 -o /dev/null -w \"unix %{{http_code}}\\\\n\" --unix-socket {socket} -H \"Host;\" \
           -H \"Content-Type: application/json\" --data-binary {unix} http://localhost/config/apps/http/servers/srv0/routes; \
         ls {socket} 2>&1; id; true'",
        tcp = shell_word(&route.replace("ID", "tcp")),
        unix = shell_word(&route.replace("ID", "unix")),
        socket = ferry_tests::host::CADDY_ADMIN_SOCKET,
    );
    let attacker: String = unit
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                format!("ExecStart={attack}")
            } else if line == "Type=exec" {
                "Type=oneshot".to_owned()
            } else if line.starts_with("Restart=") {
                "Restart=no".to_owned()
            } else {
                line.replace("ferry-victim", "attacker")
            }
        })
        .map(|line| line + "\n")
        .collect();
    t.host().put_bytes(
        "/run/systemd/system/attacker.service",
        attacker.as_bytes(),
        0o644,
    )?;
    t.host()
        .sh_ok("systemctl daemon-reload && systemctl start attacker.service; true")?;
    let said = t
        .host()
        .sh_ok("journalctl -q -o cat --no-pager -u attacker.service")?;
    eprintln!("the attacker's output:\n{said}");
    ensure!(
        said.contains("uid=") && !said.contains("uid=0("),
        "the attack did not run as a dynamic user: {said}"
    );
    let after = caddy_config(&t)?;
    ensure!(
        !after.contains("attacker-"),
        "a deployed service changed Caddy's config:\n{said}\nroutes now: {:?}",
        ferry_tests::agent_bed::route_ids(
            &serde_json::from_str::<serde_json::Value>(&after)?["apps"]["http"]["servers"]["srv0"]
                ["routes"]
        )
    );
    ensure!(
        before == after,
        "Caddy's config changed:\n{before}\n{after}"
    );
    // Why: nothing listens on loopback TCP, and the socket's directory is closed to it.
    ensure!(
        said.contains("tcp 000") && said.contains("Permission denied"),
        "the attack failed for another reason than the one expected:\n{said}"
    );
    Ok(())
}

/// Caddy's whole config, as the bed reads it.
fn caddy_config(t: &AgentBed) -> Result<String> {
    let (status, body) = t.host().caddy_admin("GET", "/config/", None)?;
    ensure!(status == 200, "GET /config/ answered {status}: {body}");
    Ok(body)
}

/// `text` as one double-quoted word inside the single-quoted `sh -c` script of a unit's
/// `ExecStart=` (systemd unquotes it first).
fn shell_word(text: &str) -> String {
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\\\\\"")
    )
}

/// Item 17: the bed runs the agent from the unit nix/module.nix declares, with nix-daemon
/// writing the store, so the module's sandbox is what a tick really runs in. While a tick
/// waits on a health check, the agent process is looked at from outside: no capability,
/// no new privileges, a seccomp filter, Caddy's group, a read-only root. It deploys, and
/// the unit it writes stays at `systemd-analyze security` ≤ 2.0.
#[tokio::test]
async fn agent_ticks_inside_the_modules_sandbox() -> Result<()> {
    let t = AgentBed::start().await?;
    t.use_module_unit()?;
    let mut slow = service("alpha", &t.closures.v1, 8101);
    // A tick that waits long enough to be looked at.
    slow["healthCheck"] =
        serde_json::json!({"type": "http", "path": "/health", "port": 8101, "startPeriodSec": 6});
    t.publish(&manifest(1, vec![slow])).await?;
    let host = t.host();
    host.sh_ok("systemctl start --no-block ferry-agent.service")?;
    let mut pid = 0u32;
    // Once systemd's set-up child "(ry-agent)" has become the agent itself.
    ferry_tests::agent_bed::eventually(
        "the tick's agent process",
        Duration::from_secs(60),
        || {
            pid = t
                .show("ferry-agent.service", "MainPID")?
                .parse()
                .unwrap_or(0);
            Ok(pid != 0
                && host.sh(&format!("cat /proc/{pid}/comm"))?.stdout.trim() == "ferry-agent")
        },
    )?;
    let status = host.sh_ok(&format!("cat /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let caddy_gid = host.sh_ok("getent group caddy | cut -d: -f3")?;
    let mounts = host.sh_ok(&format!("cat /proc/{pid}/mountinfo"))?;
    let root_ro = mounts.lines().any(|l| {
        l.split(' ').nth(4) == Some("/") && l.split(' ').nth(5).is_some_and(|o| o.starts_with("ro"))
    });
    eprintln!(
        "agent pid {pid}: Uid {} CapEff {} CapBnd {} NoNewPrivs {} Seccomp {} Groups {} root ro {root_ro}",
        field("Uid:"),
        field("CapEff:"),
        field("CapBnd:"),
        field("NoNewPrivs:"),
        field("Seccomp:"),
        field("Groups:"),
    );
    ensure!(
        field("Uid:").starts_with('0'),
        "the agent is not root: {status}"
    );
    ensure!(
        field("CapEff:") == "0000000000000000",
        "capabilities: {status}"
    );
    ensure!(
        field("CapBnd:") == "0000000000000000",
        "bounding set: {status}"
    );
    ensure!(field("NoNewPrivs:") == "1", "NoNewPrivs: {status}");
    ensure!(field("Seccomp:") == "2", "no seccomp filter: {status}");
    ensure!(
        field("Groups:")
            .split_whitespace()
            .any(|g| g == caddy_gid.trim()),
        "not in Caddy's group ({}): {status}",
        caddy_gid.trim()
    );
    ensure!(root_ro, "the agent's / is writable:\n{mounts}");

    // That tick deployed alpha (pulled through nix-daemon: the unit cannot write the store);
    // the next one, in the unit too, finds nothing to do.
    let out = t.tick_in_unit()?;
    let s = summary(&out)?;
    ensure!(
        out.status == 0 && s.outcome()? == "ok",
        "a tick in the module's unit failed: {}",
        out.stdout
    );
    ensure!(
        s.get("unitsTouched")? == 0,
        "the second tick changed something: {}",
        out.stdout
    );
    ensure!(
        t.get(8101, "/version")?.trim() == "1.0.0",
        "alpha is not serving v1"
    );
    let exposure =
        host.sh("systemd-analyze security --no-pager --threshold=20 ferry-alpha.service")?;
    let line = exposure
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure"))
        .unwrap_or("")
        .to_owned();
    eprintln!("deployed unit: {line}");
    ensure!(
        exposure.success(),
        "ferry-alpha.service scores over 2.0:\n{}",
        exposure.stdout
    );
    Ok(())
}

/// A bed host running `alpha` (v1) from a first tick in the module's own unit, with the
/// `services.ferry-agent` options changed by `adjust`.
async fn module_bed_serving_alpha(adjust: impl FnOnce(&mut serde_json::Value)) -> Result<AgentBed> {
    let t = AgentBed::start().await?;
    let mut options = t.module_unit_options()?;
    adjust(&mut options);
    t.use_module_unit_with(&options)?;
    t.publish(&manifest(1, vec![service("alpha", &t.closures.v1, 8101)]))
        .await?;
    let out = t.tick_in_unit()?;
    ensure!(out.status == 0, "the first tick failed: {}", out.stdout);
    Ok(t)
}

/// After a reboot: whether alpha serves v1 again, and what the boot tick said.
fn after_reboot(t: &mut AgentBed) -> Result<(bool, String)> {
    t.bed.host_mut(0).poweroff()?;
    t.bed.host_mut(0).boot()?;
    // The boot tick runs before multi-user.target, which boot() waited for.
    let journal = t
        .host()
        .sh_ok("journalctl -q -b -o cat --no-pager -u ferry-agent.service")?;
    eprintln!("--- the boot tick\n{journal}");
    let serving = t.show("ferry-alpha.service", "ActiveState")? == "active"
        && t.get(8101, "/version").is_ok_and(|v| v.trim() == "1.0.0");
    Ok((serving, journal))
}

/// Item 16: the README's own example keeps the S3 credentials in `/run/keys`, which is
/// empty after a reboot until the keys are deployed again. The boot tick must still bring
/// the host's services back from state, and say why it did not ask the bucket.
#[tokio::test]
async fn boot_without_credentials_restores_services_from_state() -> Result<()> {
    let mut t = module_bed_serving_alpha(|options| {
        options["credentialsFile"] = serde_json::json!("/run/keys/ferry-s3");
    })
    .await?;
    let (serving, journal) = after_reboot(&mut t)?;
    ensure!(
        serving,
        "alpha did not come back after a reboot without credentials; the boot tick:\n{journal}"
    );
    ensure!(
        journal.contains("restoring services from state") && journal.contains("credentials"),
        "the boot tick does not say why it restored from state:\n{journal}"
    );
    Ok(())
}

/// Item 16: `/var/lib/ferry` is read-only at boot (a full or read-only /var). The boot tick
/// must still restore the services from the state it can read, and say it could not save.
#[tokio::test]
async fn boot_with_a_read_only_state_directory_restores_services_from_state() -> Result<()> {
    let mut t = module_bed_serving_alpha(|_| {}).await?;
    t.host()
        .sh_ok("echo '/var/lib/ferry /var/lib/ferry none bind,ro 0 0' >> /etc/fstab")?;
    let (serving, journal) = after_reboot(&mut t)?;
    let writable = t.host().sh("touch /var/lib/ferry/probe")?;
    ensure!(
        !writable.success(),
        "the state directory is writable after the reboot: the test did not make it read-only"
    );
    ensure!(
        serving,
        "alpha did not come back after a reboot with a read-only state directory; the boot tick:\n{journal}"
    );
    ensure!(
        journal.contains("cannot save") && journal.contains("Read-only file system"),
        "the boot tick does not say it could not save its state:\n{journal}"
    );
    Ok(())
}

/// Issue 21, item 8: the state directory is full. A tick that only brings back what state
/// records (here: alpha's unit gone and stopped, as after a reboot) must still do it, and
/// say it could not save; what would change the host (a new service, beta) waits, because
/// only a change needs the checkpoint written first.
#[tokio::test]
async fn full_state_directory_still_lets_a_tick_restore_services() -> Result<()> {
    let t = AgentBed::start().await?;
    t.publish(&manifest(1, vec![service("alpha", &t.closures.v1, 8101)]))
        .await?;
    ensure!(t.reconcile()?.status == 0, "the first tick failed");
    t.host().sh_ok(
        "cp -a /var/lib/ferry /var/tmp/ferry-state \
         && mount -t tmpfs -o size=64k tmpfs /var/lib/ferry \
         && cp -a /var/tmp/ferry-state/. /var/lib/ferry/ \
         && (dd if=/dev/zero of=/var/lib/ferry/filler bs=1k 2>/dev/null; true) \
         && systemctl stop ferry-alpha.service \
         && rm /run/systemd/system/ferry-alpha.service && systemctl daemon-reload",
    )?;
    let full = t.host().sh("echo x > /var/lib/ferry/probe")?;
    ensure!(!full.success(), "the state directory is not full");
    t.publish(&manifest(
        2,
        vec![
            service("alpha", &t.closures.v1, 8101),
            service("beta", &t.closures.v1, 8102),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    ensure!(
        t.show("ferry-alpha.service", "ActiveState")? == "active",
        "alpha was not restored with a full state directory: {}",
        out.stdout
    );
    ensure!(
        out.stdout.contains("No space left on device") && out.stdout.contains("cannot save"),
        "the tick does not say it could not save: {}",
        out.stdout
    );
    ensure!(
        t.show("ferry-beta.service", "ActiveState")? != "active",
        "beta was added although its change could not be recorded first"
    );
    ensure!(
        out.status == 1,
        "a tick that could not save exits 1, got {}",
        out.status
    );
    Ok(())
}

/// `service` with a health check that waits `start_period` seconds before its first probe.
fn slow_to_check(name: &str, store_path: &str, port: u16, start_period: u32) -> serde_json::Value {
    let mut s = service(name, store_path, port);
    s["healthCheck"] = serde_json::json!({
        "type": "http", "path": "/health", "port": port,
        "startPeriodSec": start_period, "intervalSec": 1, "timeoutSec": 1, "retries": 3,
    });
    s
}

/// Issue 21, item 10: a tick's total is bounded at run time. With `tickSec = 3`, level 0
/// (alpha v2, 8 s to its first probe) outlasts the deadline, so level 1 (beta, new, depends
/// on alpha) is not started: the tick names it, exits 1, leaves alpha as it runs and
/// records no beta; the next tick carries on and starts beta.
#[tokio::test]
async fn a_tick_starts_nothing_new_after_tick_sec() -> Result<()> {
    let t = AgentBed::start_with("[timeouts]\nsettleSec = 1\ntickSec = 3\n").await?;
    t.publish(&manifest(1, vec![service("alpha", &t.closures.v1, 8101)]))
        .await?;
    ensure!(t.reconcile()?.status == 0, "the first tick failed");
    let mut beta = service("beta", &t.closures.v1, 8102);
    beta["dependsOn"] = serde_json::json!(["alpha"]);
    t.publish(&manifest(
        2,
        vec![slow_to_check("alpha", &t.closures.v2, 8101, 8), beta],
    ))
    .await?;
    let out = t.reconcile()?;
    ensure!(
        out.status == 1,
        "a cut-short tick must exit 1, got {}",
        out.status
    );
    ensure!(
        out.stdout
            .contains("tick cut short after timeouts.tickSec (3 s): not started: beta"),
        "the tick does not say what it cut short: {}",
        out.stdout
    );
    ensure!(
        t.get(8101, "/version")?.trim() == "2.0.0",
        "alpha's update, under way at the deadline, did not finish"
    );
    ensure!(
        t.show("ferry-beta.service", "ActiveState")? != "active",
        "beta was started after the deadline"
    );
    let state: serde_json::Value =
        serde_json::from_str(&t.host().sh_ok("cat /var/lib/ferry/state.json")?)?;
    ensure!(
        state["services"].get("beta").is_none() && state["services"].get("alpha").is_some(),
        "state does not record alpha alone: {}",
        state["services"]
    );
    let out = t.reconcile()?;
    ensure!(
        out.status == 0,
        "the next tick did not carry on: {}",
        out.stdout
    );
    ensure!(
        t.get(8102, "/version")?.trim() == "1.0.0",
        "beta does not serve"
    );
    Ok(())
}

/// Issue 21, item 10: the boot tick cannot hold `multi-user.target`. A manifest pushed
/// while the host was down names alpha v2 with a check that waits 120 s; with `bootSec = 5`
/// the boot tick gives up on it, restores alpha v1 from state, says so, and the boot goes
/// on long before the check would have ended.
#[tokio::test]
async fn boot_tick_gives_up_after_boot_sec_and_restores_from_state() -> Result<()> {
    let mut t = module_bed_serving_alpha(|options| {
        options["settings"]["timeouts"]["bootSec"] = serde_json::json!(5);
    })
    .await?;
    t.publish(&manifest(
        2,
        vec![slow_to_check("alpha", &t.closures.v2, 8101, 120)],
    ))
    .await?;
    let started = Instant::now();
    let (serving, journal) = after_reboot(&mut t)?;
    let took = started.elapsed();
    eprintln!("--- the reboot took {} ms", took.as_millis());
    ensure!(
        took < Duration::from_secs(100),
        "the reboot took {took:?}: the boot tick waited for the 120 s check; the boot tick:\n{journal}"
    );
    ensure!(
        serving,
        "alpha v1 was not restored at boot; the boot tick:\n{journal}"
    );
    ensure!(
        journal.contains("timeouts.bootSec (5 s)")
            && journal.contains("restoring services from state"),
        "the boot tick does not say why it restored from state:\n{journal}"
    );
    Ok(())
}
