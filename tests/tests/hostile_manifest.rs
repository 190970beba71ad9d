//! Attacks on the desired state itself (issue 14, items 1–4), each played on a real bed host
//! the way someone who can write to the bucket would play it: an unsigned manifest on an
//! agent without manifest keys, a store path already in the host's store with an unsigned
//! narinfo, a stored manifest re-applied after agent.toml was tightened, and old signed
//! manifests copied back over `manifest.json`.

use anyhow::{Context, Result};
use ferry_tests::Output;
use ferry_tests::agent_bed::{AgentBed, manifest, service, sign, summary};
use ferry_tests::binaries::built_binary;
use serde_json::{Value, json};

/// The last line of `out` about `service`.
fn line<'a>(out: &'a Output, service: &str) -> &'a str {
    let prefix = format!("{service}: ");
    out.stdout
        .lines()
        .rfind(|l| l.starts_with(&prefix))
        .unwrap_or("")
}

fn unit_exists(t: &AgentBed, unit: &str) -> bool {
    t.host()
        .path_in_host(&format!("/run/systemd/system/{unit}"))
        .exists()
}

/// A service whose health check is `GET /health` (the broken closure answers 503 there).
fn checked(name: &str, path: &str, port: u16) -> Value {
    let mut s = service(name, path, port);
    s["http"] = json!({"domain": "example.test", "path": "/", "internalPort": port});
    s["healthCheck"] = json!({
        "type": "http", "path": "/health", "startPeriodSec": 0, "intervalSec": 1, "retries": 3,
    });
    s
}

#[tokio::test]
async fn unsigned_manifest_on_an_agent_without_manifest_keys_starts_nothing() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    // agent.toml as the README's key list allowed it until now: closure keys, no
    // manifestKeys (a host configured by hand; the module no longer evaluates like this).
    t.configure("")?;
    t.host()
        .sh_ok("sed -i '/^manifestKeys/d' /etc/ferry/agent.toml")?;
    // Anyone who can write to the bucket writes a manifest with no signature.
    t.publish_unsigned(&manifest(1, vec![service("alpha", &c.v1, 8101)]))
        .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2, "an unsigned manifest was applied");
    let named: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("manifestKeys"))
        .collect();
    assert_eq!(
        named.len(),
        1,
        "one line naming the setting: {}",
        out.stdout
    );
    assert!(
        named[0].contains("allowUnsignedManifests = true"),
        "{}",
        named[0]
    );
    assert!(!unit_exists(&t, "ferry-alpha.service"));
    assert_ne!(t.show("ferry-alpha.service", "ActiveState")?, "active");
    // Nothing was fetched: the refusal does not depend on what the bucket holds.
    let s = summary(&out)?;
    assert_eq!(s.get("requests")?, 0, "{s}");

    // Saying so explicitly is the one way to run unsigned manifests.
    t.configure("allowUnsignedManifests = true")?;
    t.host()
        .sh_ok("sed -i '/^manifestKeys/d' /etc/ferry/agent.toml")?;
    let out = t.reconcile()?;
    assert_eq!(
        out.status, 0,
        "allowUnsignedManifests = true did not deploy"
    );
    assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0");
    Ok(())
}

#[tokio::test]
async fn store_path_added_by_hand_with_an_unsigned_narinfo_is_not_run() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    let h = t.host();
    // A path that reached the host's store without any signature (here `nix-store --add`;
    // any path the host built or fetched itself is the same), holding a working program.
    let testsvc = built_binary("ferry-testsvc", "FERRY_TESTSVC_BIN")?;
    h.put_file(&testsvc, "/tmp/planted/bin/ferry-testsvc", 0o755)?;
    let planted = h.sh_ok("nix-store --add /tmp/planted")?.trim().to_owned();
    // An unsigned narinfo for it in the bucket: enough for `nix copy` to skip the path,
    // which is valid locally, without checking any signature.
    h.sh_ok(&format!(
        "nix --extra-experimental-features nix-command copy --to file:///tmp/planted-cache {planted} \
         && rm /tmp/planted-cache/nix-cache-info && ! grep -q '^Sig:' /tmp/planted-cache/*.narinfo"
    ))?;
    t.bed
        .s3()
        .upload_dir(&h.path_in_host("/tmp/planted-cache"), "")
        .await?;

    t.publish(&manifest(
        1,
        vec![
            service("planted", &planted, 8121),
            service("alpha", &c.v1, 8101),
        ],
    ))
    .await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1, "the planted path was run");
    let l = line(&out, "planted");
    assert!(
        l.contains(&planted) && l.contains("not signed by any key in trustedKeys"),
        "{}",
        out.stdout
    );
    assert!(!unit_exists(&t, "ferry-planted.service"), "unit written");
    assert_ne!(t.show("ferry-planted.service", "ActiveState")?, "active");
    assert!(
        !h.path_in_host("/nix/var/nix/profiles/ferry/planted")
            .exists(),
        "the planted path was pinned"
    );
    // The signed service beside it deploys.
    assert_eq!(t.get(8101, "/version")?.trim(), "1.0.0");
    Ok(())
}

#[tokio::test]
async fn stored_manifest_is_checked_again_when_the_bucket_answers_304() -> Result<()> {
    let t = AgentBed::start().await?;
    let c = t.closures;
    t.host()
        .put_bytes("/var/lib/ferry-secrets/alpha.env", b"WHO=alpha\n", 0o600)?;
    let mut alpha = service("alpha", &c.v1, 8101);
    alpha["envFile"] = json!("/var/lib/ferry-secrets/alpha.env");
    t.publish(&manifest(1, vec![alpha])).await?;
    assert_eq!(t.reconcile()?.status, 0);
    let inv = t.show("ferry-alpha.service", "InvocationID")?;

    // The host stops trusting the key that signed it; manifest.json is unchanged (304).
    let other = t.host().sh_ok(
        "nix-store --generate-binary-cache-key other /tmp/other.sec /tmp/other.pub && cat /tmp/other.pub",
    )?;
    ferry_tests::install_agent_config(
        t.host(),
        t.bed.s3(),
        ferry_tests::agent_bed::HOST,
        std::slice::from_ref(&c.public_key),
        &[other.trim().to_owned()],
        &t.extra_config,
    )?;
    let out = t.reconcile()?;
    let s = summary(&out)?;
    assert_eq!(s.get("requests")?, 1, "{s}");
    assert_eq!(
        out.status, 2,
        "the stored manifest was re-applied unchecked"
    );
    assert!(out.stdout.contains("signature"), "{}", out.stdout);
    // Refused is restore-only: what runs keeps running.
    assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, inv);

    // The host's policy tightens: env files must now live elsewhere.
    t.configure("secretsDir = \"/var/lib/ferry-secrets-2\"")?;
    let out = t.reconcile()?;
    let s = summary(&out)?;
    assert_eq!(s.get("requests")?, 1, "{s}");
    assert_eq!(
        out.status, 1,
        "the stored manifest was re-applied unchecked"
    );
    assert!(
        line(&out, "alpha").contains("envFile /var/lib/ferry-secrets/alpha.env"),
        "{}",
        out.stdout
    );
    assert_eq!(t.show("ferry-alpha.service", "InvocationID")?, inv);
    Ok(())
}

#[tokio::test]
async fn replayed_archives_neither_lift_a_quarantine_nor_roll_back_when_told_not_to() -> Result<()>
{
    let t = AgentBed::start().await?;
    let c = t.closures;
    let port = 8131;
    let key = &c.secret_key_file;
    // Signed once, like the archives `ferry push` leaves in the bucket.
    let gen1 = sign(&manifest(1, vec![checked("web", &c.v1, port)]), key)?;
    let gen2 = sign(&manifest(2, vec![checked("web", &c.broken, port)]), key)?;
    let gen3 = sign(&manifest(3, vec![checked("web", &c.v2, port)]), key)?;
    let copy = |m: &Value| -> Result<Vec<u8>> { Ok(serde_json::to_vec_pretty(m)?) };

    t.publish_bytes(copy(&gen1)?).await?;
    assert_eq!(t.reconcile()?.status, 0);
    t.publish_bytes(copy(&gen2)?).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 1);
    assert!(
        line(&out, "web").contains("rolled back to"),
        "{}",
        out.stdout
    );
    let quarantined = || -> Result<Value> { Ok(t.state()?["quarantine"]["web"].clone()) };
    assert_eq!(quarantined()?["storePath"], c.broken.as_str());
    let inv = t.show("ferry-web.service", "InvocationID")?;

    // The attacker flips between the two archives.
    t.publish_bytes(copy(&gen1)?).await?;
    let out = t.reconcile()?;
    assert!(!out.stdout.contains("lifted"), "{}", out.stdout);
    assert_eq!(
        quarantined()?["storePath"],
        c.broken.as_str(),
        "a replayed archive lifted the quarantine"
    );
    t.publish_bytes(copy(&gen2)?).await?;
    let out = t.reconcile()?;
    assert!(
        line(&out, "web").starts_with(&format!("web: skipped {} (quarantined", c.broken)),
        "the quarantined version was tried again: {}",
        out.stdout
    );
    assert_eq!(t.show("ferry-web.service", "InvocationID")?, inv);
    assert_eq!(t.get(port, "/version")?.trim(), "1.0.0");

    // A host that does not roll back by copy refuses an older generation whole.
    t.configure("rollbackByCopy = false")?;
    t.publish_bytes(copy(&gen3)?).await?;
    assert_eq!(t.reconcile()?.status, 0, "gen 3 did not deploy");
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");
    t.publish_bytes(copy(&gen1)?).await?;
    let out = t.reconcile()?;
    assert_eq!(out.status, 2, "an older generation was applied");
    let refusal = out
        .stdout
        .lines()
        .find(|l| l.contains("refused:"))
        .context("no refusal line")?;
    assert!(
        refusal.contains("older than") && refusal.contains("ferry rollback"),
        "{refusal}"
    );
    assert_eq!(t.get(port, "/version")?.trim(), "2.0.0");
    Ok(())
}
