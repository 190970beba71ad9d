//! Runs the real `ferry` binary: exit codes and output of validate, schema, keygen, sign
//! and verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLE: &str = include_str!("../../schema/tests/fixtures/example.json");

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn validate_example_exits_0_with_the_hash_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "m.json", EXAMPLE);
    let out = ferry(&["validate", s(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("/services/0/artifact/storePath: warning: "),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("valid, 1 warning"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_invalid_exits_1_with_one_problem_per_line_pointer_first() {
    let dir = tempfile::tempdir().unwrap();
    let bad = EXAMPLE
        .replace("\"internalPort\": 8000", "\"internalPort\": 0")
        .replace("\"user\": \"pil-web\"", "\"user\": \"Pil Web\"");
    let file = write(dir.path(), "m.json", &bad);
    let out = ferry(&["validate", s(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with('/')), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("/services/0/http/internalPort: service `podcastitlater-web`")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("/services/0/exec/user: ")),
        "{text}"
    );
}

#[test]
fn validate_keeps_one_problem_per_line_whatever_the_keys_hold() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = EXAMPLE.replace(
        "\"AREA\": \"Live\"",
        "\"AREA\": \"Live\", \"A\\nB\\u001b[2J\": \"x\"",
    );
    let file = write(dir.path(), "m.json", &hostile);
    let out = ferry(&["validate", s(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    // The store-hash warning and the bad env key, each on its own line, pointer first.
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[1].starts_with("/services/0/env/A\\nB\\u{1b}[2J: service `podcastitlater-web`: "),
        "{text}"
    );
}

#[test]
fn validate_unreadable_exits_2_even_beside_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "m.json", EXAMPLE);
    let out = ferry(&["validate", s(&file), "/nonexistent/manifest.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read /nonexistent/manifest.json"),
        "{}",
        stderr(&out)
    );
    // The same with --json: the unreadable file has an `error`, the other its verdict.
    let out = ferry(&["validate", "--json", s(&file), "/nonexistent/manifest.json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["valid"], true, "{v}");
    assert_eq!(v[0]["problems"][0]["severity"], "warning", "{v}");
    assert_eq!(v[1]["valid"], false, "{v}");
    assert!(
        v[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read /nonexistent/manifest.json")),
        "{v}"
    );
}

#[test]
fn validate_json_output_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "m.json",
        &EXAMPLE.replace("\"version\": 1", "\"version\": 9"),
    );
    let out = ferry(&["validate", "--json", s(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["valid"], false);
    let problems = v[0]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["pointer"] == "/version" && p["severity"] == "error"),
        "{v}"
    );
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = ferry(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        include_str!("../../schema/manifest.v1.schema.json")
    );
}

#[test]
fn keygen_sign_verify_round_trip_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk, public) = keygen(dir.path(), "test.example-1");
    assert!(public.starts_with("test.example-1:") && !public.ends_with('\n'));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Refuses to overwrite a key without --force.
    let again = ferry(&[
        "keygen",
        "--name",
        "x",
        "--secret-key-file",
        s(&sk),
        "--public-key-file",
        s(&pk),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"));

    let manifest = write(dir.path(), "m.json", EXAMPLE);
    let signed = dir.path().join("signed.json");
    let out = ferry(&[
        "sign",
        s(&manifest),
        "--key-file",
        s(&sk),
        "--out",
        s(&signed),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        EXAMPLE,
        "--out leaves the input alone"
    );

    let out = ferry(&["verify", s(&signed), "--trusted-key-file", s(&pk)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("signed by trusted key `test.example-1`"));

    let out = ferry(&["verify", s(&signed), "--trusted-key", &public]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Change a field: verification fails and says why.
    let tampered_text = std::fs::read_to_string(&signed)
        .unwrap()
        .replace("\"AREA\": \"Live\"", "\"AREA\": \"Test\"");
    let tampered = write(dir.path(), "t.json", &tampered_text);
    let out = ferry(&["verify", s(&tampered), "--trusted-key-file", s(&pk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));

    // Another key: fails and names the signer.
    let (sk2, pk2) = (dir.path().join("o.sec"), dir.path().join("o.pub"));
    ferry(&[
        "keygen",
        "--name",
        "other-1",
        "--secret-key-file",
        s(&sk2),
        "--public-key-file",
        s(&pk2),
    ]);
    let out = ferry(&["verify", s(&signed), "--trusted-key-file", s(&pk2)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("test.example-1"), "{}", stderr(&out));

    // Signing in place, then with a second key: both verify.
    assert_eq!(
        ferry(&["sign", s(&signed), "--key-file", s(&sk2)])
            .status
            .code(),
        Some(0)
    );
    for key in [&pk, &pk2] {
        assert_eq!(
            ferry(&["verify", s(&signed), "--trusted-key-file", s(key)])
                .status
                .code(),
            Some(0)
        );
    }
}

#[test]
fn verify_unsigned_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "m.json", EXAMPLE);
    let out = ferry(&[
        "verify",
        s(&manifest),
        "--trusted-key",
        "k:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not signed"), "{}", stderr(&out));
}

#[test]
fn verify_requires_a_trusted_key() {
    let out = ferry(&["verify", "m.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--trusted-key"), "{}", stderr(&out));
}

#[test]
fn sign_refuses_an_invalid_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _, _) = keygen(dir.path(), "k");
    let manifest = write(
        dir.path(),
        "m.json",
        &EXAMPLE.replace("\"hosts\": [\"biz\"]", "\"hosts\": []"),
    );
    let out = ferry(&["sign", s(&manifest), "--key-file", s(&sk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("/services/0/hosts: service `podcastitlater-web`"),
        "{}",
        stdout(&out)
    );
    // Listed as `ferry validate` lists them: the store hash warning is marked as one.
    assert!(
        stdout(&out).contains("/services/0/artifact/storePath: warning: "),
        "{}",
        stdout(&out)
    );
    assert!(
        !std::fs::read_to_string(&manifest)
            .unwrap()
            .contains("signatures")
    );
}

#[test]
fn every_verb_has_help() {
    for verb in ["validate", "schema", "keygen", "sign", "verify"] {
        let out = ferry(&[verb, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{verb}");
        assert!(stdout(&out).contains("Usage: ferry"), "{verb}");
    }
}

/// Makes a key pair with `ferry keygen` (`<name>.sec`, `<name>.pub` in `dir`); returns
/// (secret file, public file, public key text).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let (sk, pk) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    let out = ferry(&[
        "keygen",
        "--name",
        name,
        "--secret-key-file",
        s(&sk),
        "--public-key-file",
        s(&pk),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let public = std::fs::read_to_string(&pk).unwrap();
    // keygen prints the public key, for pasting into a host's trusted keys.
    assert_eq!(stdout(&out).trim(), public);
    (sk, pk, public)
}

/// The same JSON as text with every object's keys in reverse order and other spacing.
fn reordered(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => {
            let members: Vec<String> = map
                .iter()
                .rev()
                .map(|(k, x)| {
                    format!(
                        "\n   {} : {}",
                        serde_json::Value::from(k.as_str()),
                        reordered(x)
                    )
                })
                .collect();
            format!("{{{} }}", members.join(","))
        }
        serde_json::Value::Array(items) => format!(
            "[ {} ]",
            items.iter().map(reordered).collect::<Vec<_>>().join(" ,")
        ),
        other => other.to_string(),
    }
}

#[test]
fn verify_tamper_cases_and_repeatable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk, public) = keygen(dir.path(), "deploy-1");
    let (_, other_pk, other_public) = keygen(dir.path(), "other-1");
    let manifest = write(dir.path(), "m.json", EXAMPLE);
    assert_eq!(
        ferry(&["sign", s(&manifest), "--key-file", s(&sk)])
            .status
            .code(),
        Some(0)
    );
    let signed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();

    // Keys reordered and re-indented: the canonical form is the same, so it verifies; the
    // trusted keys may be mixed and repeated, the signer is named.
    let text = reordered(&signed);
    assert!(text.starts_with("{\n   \"version\""), "{text}");
    let file = write(dir.path(), "reordered.json", &text);
    let out = ferry(&[
        "verify",
        s(&file),
        "--trusted-key",
        &other_public,
        "--trusted-key-file",
        s(&other_pk),
        "--trusted-key-file",
        s(&pk),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("signed by trusted key `deploy-1`"),
        "{}",
        stdout(&out)
    );

    // A truncated signature: exit 1, and it says the signature is malformed.
    let mut truncated = signed.clone();
    let sig = truncated["signatures"][0].as_str().unwrap().to_owned();
    truncated["signatures"][0] = sig[..sig.len() - 12].into();
    let file = write(dir.path(), "truncated.json", &truncated.to_string());
    let out = ferry(&["verify", s(&file), "--trusted-key", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("/signatures/0: signature 0 is malformed"),
        "{}",
        stdout(&out)
    );

    // A changed field under a valid-looking signature: exit 1, "does not match".
    let mut changed = signed.clone();
    changed["services"][0]["exec"]["command"] = "sh".into();
    let file = write(dir.path(), "changed.json", &changed.to_string());
    let out = ferry(&["verify", s(&file), "--trusted-key", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));

    // A trusted key that is not a public key: exit 2, naming the flag and the problem.
    let out = ferry(&["verify", s(&manifest), "--trusted-key-file", s(&sk)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("secret vs public key"),
        "{}",
        stderr(&out)
    );
    let out = ferry(&["verify", s(&manifest), "--trusted-key", "no-colon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--trusted-key"), "{}", stderr(&out));
}

/// `ferry publish --decommission HOST`: an empty manifest that empties `biz` on purpose,
/// signed with the list in it; without the flag the same publish says that `biz`'s agent
/// will refuse it; a decommissioned host a service still runs on is refused.
#[test]
fn publish_decommission_lists_the_host_and_refuses_a_host_still_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _, public) = keygen(dir.path(), "dec-1");
    let url = format!("file://{}", dir.path().join("bucket").display());
    let run = |file: &Path, extra: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NIX_CACHE_KEY")
            .args(["publish", s(file), "--bucket", &url, "--key-file", s(&sk)])
            .args(["--allow-missing"])
            .args(extra)
            .output()
            .unwrap()
    };
    let example = write(dir.path(), "example.json", EXAMPLE);
    let out = run(&example, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let mut empty: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    empty["services"] = serde_json::json!([]);
    empty["generation"] = serde_json::json!("2030-01-01T00:00:00Z");
    let empty = write(dir.path(), "empty.json", &empty.to_string());
    let out = run(&empty, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: host biz loses every service; its agent refuses this manifest and keeps them running unless you publish with --decommission biz"),
        "{}",
        stderr(&out)
    );

    let out = run(&empty, &["--decommission", "biz"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("- host biz: decommissioned"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stderr(&out).contains("loses every service"),
        "{}",
        stderr(&out)
    );
    let live = dir.path().join("bucket/manifest.json");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&live).unwrap()).unwrap();
    assert_eq!(m["decommission"], serde_json::json!(["biz"]));
    let pk = write(dir.path(), "trusted.pub", &public);
    let verified = ferry(&["verify", s(&live), "--trusted-key-file", s(&pk)]);
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));

    // biz still runs the example's service: decommissioning it is a contradiction.
    let mut later: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    later["generation"] = serde_json::json!("2031-01-01T00:00:00Z");
    let later = write(dir.path(), "later.json", &later.to_string());
    let out = run(&later, &["--decommission", "biz"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("/decommission/0: decommission: host `biz` is to be emptied, but service `podcastitlater-web` runs on it"),
        "{}",
        stdout(&out)
    );
    let help = ferry(&["publish", "--help"]);
    assert!(
        stdout(&help).contains("--decommission <HOST>"),
        "{}",
        stdout(&help)
    );
}
