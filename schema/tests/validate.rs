//! Validation against literals: the original example, a table of invalid manifests with the
//! pointer each must produce, serde round trip, and the committed schema's freshness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_schema::{
    DEFAULT_SIZE_CAP, Manifest, Problem, Severity, validate_bytes, validate_manifest,
};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("fixtures/example.json");

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

fn problems_of(doc: &Value) -> Vec<Problem> {
    match validate_bytes(&serde_json::to_vec(doc).unwrap(), DEFAULT_SIZE_CAP) {
        Ok(v) => v.warnings,
        Err(p) => p,
    }
}

#[test]
fn example_validates_with_only_the_store_hash_warning() {
    let validated = validate_bytes(EXAMPLE.as_bytes(), DEFAULT_SIZE_CAP).unwrap();
    assert_eq!(validated.manifest.services[0].name, "podcastitlater-web");
    assert_eq!(validated.warnings.len(), 1, "{:?}", validated.warnings);
    let w = &validated.warnings[0];
    assert_eq!(w.pointer, "/services/0/artifact/storePath");
    assert_eq!(w.severity, Severity::Warning);
    assert!(w.message.contains("podcastitlater-web"), "{w}");
}

/// Sets `pointer` in `doc` to `value`, creating objects on the way; `Value::Null` as the
/// value with `remove` semantics is spelled by [`Edit::Remove`].
enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
    /// Appends a copy of service 0 with these edits (pointers relative to the service).
    AddService(Vec<Edit>),
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let mut node = doc;
    for part in parent.split('/').skip(1) {
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            Value::Object(map) => map.entry(part).or_insert_with(|| json!({})),
            _ => panic!("cannot descend into {pointer}"),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.to_owned(), value);
        }
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        _ => panic!("cannot set {pointer}"),
    }
}

fn apply(doc: &mut Value, edits: Vec<Edit>) {
    for edit in edits {
        match edit {
            Edit::Set(p, v) => set(doc, p, v),
            Edit::Remove(p) => {
                let (parent, last) = p.rsplit_once('/').unwrap();
                doc.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(last);
            }
            Edit::AddService(edits) => {
                let mut service = doc["services"][0].clone();
                apply(&mut service, edits);
                doc["services"].as_array_mut().unwrap().push(service);
            }
        }
    }
}

use Edit::{AddService, Remove, Set};

/// (what, edits to the example, pointer that must be reported, text the message must contain)
fn invalid_cases() -> Vec<(&'static str, Vec<Edit>, &'static str, &'static str)> {
    vec![
        (
            "version 2",
            vec![Set("/version", json!(2))],
            "/version",
            "version 1",
        ),
        (
            "generation not RFC 3339",
            vec![Set("/generation", json!("yesterday"))],
            "/generation",
            "RFC 3339",
        ),
        (
            "unknown top-level field",
            vec![Set("/servces", json!([]))],
            "/servces",
            "did you mean `services`",
        ),
        (
            "unknown service field",
            vec![Set("/services/0/htpp", json!({}))],
            "/services/0/htpp",
            "did you mean `http`",
        ),
        (
            "snake_case field",
            vec![Set("/services/0/http/internal_port", json!(1))],
            "/services/0/http/internal_port",
            "did you mean `internalPort`",
        ),
        (
            "missing name",
            vec![Remove("/services/0/name")],
            "/services/0/name",
            "required field `name`",
        ),
        (
            "name with capitals",
            vec![Set("/services/0/name", json!("Web_App"))],
            "/services/0/name",
            "web-app",
        ),
        (
            "name with newline",
            vec![Set("/services/0/name", json!("web\nExecStartPre=/bin/sh"))],
            "/services/0/name",
            "lowercase",
        ),
        (
            "duplicate name",
            vec![AddService(vec![Set("/hosts", json!(["other"]))])],
            "/services/1/name",
            "unique",
        ),
        (
            "no hosts",
            vec![Set("/services/0/hosts", json!([]))],
            "/services/0/hosts",
            "at least one host",
        ),
        (
            "bad host",
            vec![Set("/services/0/hosts", json!(["biz", "Biz!"]))],
            "/services/0/hosts/1",
            "host name",
        ),
        (
            "store path outside store",
            vec![Set(
                "/services/0/artifact/storePath",
                json!("/usr/bin/python3"),
            )],
            "/services/0/artifact/storePath",
            "not under /nix/store",
        ),
        (
            "store path escaping",
            vec![Set(
                "/services/0/artifact/storePath",
                json!("/nix/store/abc-x/../../etc"),
            )],
            "/services/0/artifact/storePath",
            "inside a store path",
        ),
        (
            "store path with space",
            vec![Set(
                "/services/0/artifact/storePath",
                json!("/nix/store/abc-x y"),
            )],
            "/services/0/artifact/storePath",
            "a space",
        ),
        (
            "unknown artifact type",
            vec![Set("/services/0/artifact/type", json!("docker"))],
            "/services/0/artifact/type",
            "podcastitlater-web",
        ),
        (
            "command escapes closure",
            vec![Set("/services/0/exec/command", json!("../../bin/sh"))],
            "/services/0/exec/command",
            "`..`",
        ),
        (
            "absolute command",
            vec![Set("/services/0/exec/command", json!("/bin/sh"))],
            "/services/0/exec/command",
            "outside the service's store path",
        ),
        (
            "command with newline",
            vec![Set(
                "/services/0/exec/command",
                json!("web\nExecStartPre=/bin/rm"),
            )],
            "/services/0/exec/command",
            "a newline",
        ),
        (
            "command with specifier",
            vec![Set("/services/0/exec/command", json!("web%h"))],
            "/services/0/exec/command",
            "`%`",
        ),
        (
            "bad user",
            vec![Set("/services/0/exec/user", json!("Root User"))],
            "/services/0/exec/user",
            "POSIX",
        ),
        (
            "bad group",
            vec![Set("/services/0/exec/group", json!("9group"))],
            "/services/0/exec/group",
            "POSIX",
        ),
        (
            "arg with newline",
            vec![Set("/services/0/exec/args", json!(["--ok", "a\nb"]))],
            "/services/0/exec/args/1",
            "a newline",
        ),
        (
            "bad env key",
            vec![Set("/services/0/env/BAD-KEY", json!("x"))],
            "/services/0/env/BAD-KEY",
            "variable name",
        ),
        (
            "env value with newline",
            vec![Set(
                "/services/0/env/AREA",
                json!("Live\nExecStart=/bin/sh"),
            )],
            "/services/0/env/AREA",
            "a newline",
        ),
        (
            "env value with a Unicode line separator",
            vec![Set("/services/0/env/AREA", json!("Live\u{2028}Test"))],
            "/services/0/env/AREA",
            "U+2028",
        ),
        (
            "env value with NUL",
            vec![Set("/services/0/env/AREA", json!("a\u{0}b"))],
            "/services/0/env/AREA",
            "NUL",
        ),
        (
            "relative envFile",
            vec![Set("/services/0/envFile", json!("secrets.env"))],
            "/services/0/envFile",
            "absolute",
        ),
        (
            "envFile with ..",
            vec![Set(
                "/services/0/envFile",
                json!("/var/lib/../../etc/shadow"),
            )],
            "/services/0/envFile",
            "`..`",
        ),
        (
            "relative readWritePaths",
            vec![Set(
                "/services/0/hardening/readWritePaths",
                json!(["/var/podcastitlater", "data"]),
            )],
            "/services/0/hardening/readWritePaths/1",
            "absolute",
        ),
        (
            "readWritePaths with ..",
            vec![Set(
                "/services/0/hardening/readWritePaths",
                json!(["/var/podcastitlater/../../etc"]),
            )],
            "/services/0/hardening/readWritePaths/0",
            "`..`",
        ),
        (
            "readWritePaths with a space",
            vec![Set(
                "/services/0/hardening/readWritePaths",
                json!(["/var/pod cast"]),
            )],
            "/services/0/hardening/readWritePaths/0",
            "a space",
        ),
        (
            "uppercase domain",
            vec![Set("/services/0/http/domain", json!("PodcastItLater.com"))],
            "/services/0/http/domain",
            "lowercase",
        ),
        (
            "domain with scheme",
            vec![Set(
                "/services/0/http/domain",
                json!("https://podcastitlater.com"),
            )],
            "/services/0/http/domain",
            "no scheme",
        ),
        (
            "relative http path",
            vec![Set("/services/0/http/path", json!("api"))],
            "/services/0/http/path",
            "start with `/`",
        ),
        (
            "port 0",
            vec![Set("/services/0/http/internalPort", json!(0))],
            "/services/0/http/internalPort",
            "1-65535",
        ),
        (
            "port too big",
            vec![Set("/services/0/http/internalPort", json!(70000))],
            "/services/0/http/internalPort",
            "65535",
        ),
        (
            "port as string",
            vec![Set("/services/0/http/internalPort", json!("8000"))],
            "/services/0/http/internalPort",
            "whole number without quotes",
        ),
        (
            "port written with a decimal point",
            vec![Set("/services/0/http/internalPort", json!(8000.0))],
            "/services/0/http/internalPort",
            "service `podcastitlater-web`: 8000.0 is not written as a whole number",
        ),
        (
            "version written with an exponent",
            vec![Set("/version", json!(1e0))],
            "/version",
            "whole number",
        ),
        (
            "restartSec beyond u32",
            vec![Set(
                "/services/0/systemd/restartSec",
                json!(99_999_999_999_u64),
            )],
            "/services/0/systemd/restartSec",
            "service `podcastitlater-web`: 99999999999 is over the maximum of 3600 (at systemd.restartSec); use at most 3600",
        ),
        (
            "health retries beyond u32",
            vec![Set(
                "/services/0/healthCheck",
                json!({"type": "http", "retries": 5_000_000_000_u64}),
            )],
            "/services/0/healthCheck/retries",
            "maximum",
        ),
        (
            "http null",
            vec![Set("/services/0/http", json!(null))],
            "/services/0/http",
            "object",
        ),
        (
            "port clash on shared host",
            vec![AddService(vec![
                Set("/name", json!("other")),
                Set("/http/domain", json!("other.com")),
            ])],
            "/services/1/http/internalPort",
            "port 8000 on host `biz` is also used by service `podcastitlater-web`",
        ),
        (
            "blue-green port + 1 clash",
            vec![
                Set("/services/0/http/strategy", json!("blue-green")),
                AddService(vec![
                    Set("/name", json!("other")),
                    Set("/http/domain", json!("other.com")),
                    Set("/http/internalPort", json!(8001)),
                ]),
            ],
            "/services/1/http/internalPort",
            "blue-green",
        ),
        (
            "route clash on shared host",
            vec![AddService(vec![
                Set("/name", json!("other")),
                Set("/http/internalPort", json!(9000)),
            ])],
            "/services/1/http/path",
            "also claimed by service `podcastitlater-web`",
        ),
        (
            "unit name without type",
            vec![Set("/services/0/systemd/after/1", json!("postgresql"))],
            "/services/0/systemd/after/1",
            "postgresql.service",
        ),
        (
            "unit name with newline",
            vec![Set("/services/0/systemd/requires", json!(["a\nb.service"]))],
            "/services/0/systemd/requires/0",
            "unit name",
        ),
        (
            "bad restart",
            vec![Set("/services/0/systemd/restart", json!("sometimes"))],
            "/services/0/systemd/restart",
            "on-failure",
        ),
        (
            "restartSec too big",
            vec![Set("/services/0/systemd/restartSec", json!(100000))],
            "/services/0/systemd/restartSec",
            "at most 3600",
        ),
        (
            "protectSystem maybe",
            vec![Set("/services/0/hardening/protectSystem", json!("maybe"))],
            "/services/0/hardening/protectSystem",
            "\"strict\"",
        ),
        (
            "protectHome yes",
            vec![Set("/services/0/hardening/protectHome", json!("yes"))],
            "/services/0/hardening/protectHome",
            "\"tmpfs\"",
        ),
        (
            "dependsOn unknown",
            vec![Set("/services/0/dependsOn", json!(["postgres"]))],
            "/services/0/dependsOn/0",
            "not in this manifest",
        ),
        (
            "dependsOn self",
            vec![Set("/services/0/dependsOn", json!(["podcastitlater-web"]))],
            "/services/0/dependsOn/0",
            "itself",
        ),
        (
            "dependsOn cycle",
            vec![
                Set("/services/0/dependsOn", json!(["b"])),
                AddService(vec![
                    Set("/name", json!("b")),
                    Set("/http/domain", json!("b.com")),
                    Set("/http/internalPort", json!(9001)),
                    Set("/dependsOn", json!(["c"])),
                ]),
                AddService(vec![
                    Set("/name", json!("c")),
                    Set("/http/domain", json!("c.com")),
                    Set("/http/internalPort", json!(9002)),
                    Set("/dependsOn", json!(["podcastitlater-web"])),
                ]),
            ],
            "/services/2/dependsOn/0",
            "podcastitlater-web → b → c → podcastitlater-web",
        ),
        (
            "health check kind",
            vec![Set("/services/0/healthCheck", json!({"type": "grpc"}))],
            "/services/0/healthCheck/type",
            "podcastitlater-web",
        ),
        (
            "tcp health check without port",
            vec![
                Remove("/services/0/http"),
                Set("/services/0/healthCheck", json!({"type": "tcp"})),
            ],
            "/services/0/healthCheck/port",
            "no port",
        ),
        (
            "health retries 0",
            vec![Set(
                "/services/0/healthCheck",
                json!({"type": "http", "retries": 0}),
            )],
            "/services/0/healthCheck/retries",
            "1-1000",
        ),
        (
            "health expectStatus not an HTTP status",
            vec![Set(
                "/services/0/healthCheck",
                json!({"type": "http", "expectStatus": 700}),
            )],
            "/services/0/healthCheck/expectStatus",
            "700 is over the maximum of 599 (at healthCheck.expectStatus); use 100-599",
        ),
        (
            "health intervalSec 0",
            vec![Set(
                "/services/0/healthCheck",
                json!({"type": "http", "intervalSec": 0}),
            )],
            "/services/0/healthCheck/intervalSec",
            "under the minimum of 1 (at healthCheck.intervalSec); use 1-3600",
        ),
        (
            "health startPeriodSec over an hour",
            vec![Set(
                "/services/0/healthCheck",
                json!({"type": "http", "startPeriodSec": 3601}),
            )],
            "/services/0/healthCheck/startPeriodSec",
            "use at most 3600",
        ),
        (
            "revision with escape",
            vec![Set("/services/0/revision", json!("abc\u{1b}[2J"))],
            "/services/0/revision",
            "U+001B",
        ),
        (
            "malformed signature",
            vec![Set("/signatures", json!(["garbage"]))],
            "/signatures/0",
            "ferry sign",
        ),
        (
            "missing services",
            vec![Remove("/services")],
            "/services",
            "required field `services`",
        ),
        (
            "a decommissioned host a service still runs on",
            vec![Set("/decommission", json!(["old", "biz"]))],
            "/decommission/1",
            "host `biz` is to be emptied, but service `podcastitlater-web` runs on it",
        ),
        (
            "a decommissioned host that is not a host name",
            vec![Set("/decommission", json!(["Biz!"]))],
            "/decommission/0",
            "not a valid host name",
        ),
        (
            "decommission not a list",
            vec![Set("/decommission", json!("biz"))],
            "/decommission",
            "write a JSON array",
        ),
        (
            "rollout without waves",
            vec![Set("/rollout", json!({"waves": []}))],
            "/rollout/waves",
            "waves is empty",
        ),
        (
            "an empty wave",
            vec![Set("/rollout", json!({"waves": [["biz"], []]}))],
            "/rollout/waves/1",
            "wave 1 is empty",
        ),
        (
            "a misspelt canary",
            vec![Set("/rollout", json!({"waves": [["bix"], ["*"]]}))],
            "/rollout/waves/0/0",
            "names host `bix`, which no service of the manifest runs on",
        ),
        (
            "a wave entry that is no host name",
            vec![Set("/rollout", json!({"waves": [["Web 1"], ["*"]]}))],
            "/rollout/waves/0/0",
            "neither a host name nor a pattern",
        ),
        (
            "a host of a gated service in no wave",
            vec![
                Set("/services/0/hosts", json!(["biz", "web-1"])),
                Set("/rollout", json!({"waves": [["biz"]]})),
            ],
            "/services/0/hosts/1",
            "host `web-1` is in no wave of the manifest's rollout",
        ),
        (
            "a service's own rollout without its host",
            vec![Set("/services/0/rollout", json!({"waves": [["web-*"]]}))],
            "/services/0/hosts/0",
            "in no wave of its own rollout",
        ),
        (
            "onStale not wait or skip",
            vec![Set("/rollout", json!({"waves": [["*"]], "onStale": "go"}))],
            "/rollout/onStale",
            "use one of",
        ),
        (
            "soakSec over a day",
            vec![Set("/rollout", json!({"waves": [["*"]], "soakSec": 86401}))],
            "/rollout/soakSec",
            "86400",
        ),
        (
            "staleSec zero",
            vec![Set("/rollout", json!({"waves": [["*"]], "staleSec": 0}))],
            "/rollout/staleSec",
            "under the minimum",
        ),
        (
            "a misspelt rollout field",
            vec![Set("/rollout", json!({"waves": [["*"]], "soakSecs": 5}))],
            "/rollout/soakSecs",
            "did you mean `soakSec`?",
        ),
        (
            "a system keyed by something not a host name",
            vec![Set(
                "/systems",
                json!({"biz": {"storePath": SYSTEM}, "Biz Host": {"storePath": SYSTEM}}),
            )],
            "/systems/Biz Host",
            "is not a valid host name",
        ),
        (
            "a system without a store path",
            vec![Set("/systems", json!({"biz": {"revision": "abc"}}))],
            "/systems/biz/storePath",
            "missing",
        ),
        (
            "a system path outside the store",
            vec![Set("/systems", json!({"biz": {"storePath": "/etc/nixos"}}))],
            "/systems/biz/storePath",
            "host `biz`",
        ),
        (
            "a misspelt system field",
            vec![Set("/systems", json!({"biz": {"storepath": SYSTEM}}))],
            "/systems/biz/storepath",
            "did you mean `storePath`?",
        ),
    ]
}

const SYSTEM: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-biz-24.05";

/// A system for a host is valid beside its services; a path not named like a NixOS system
/// and systems beside waves (which do not order them) are warnings.
#[test]
fn systems_valid_and_their_warnings() {
    let mut doc = example();
    let base = problems_of(&doc).len();
    doc["systems"] = json!({"biz": {"storePath": SYSTEM, "revision": "abc123"}});
    let validated = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP).unwrap();
    assert_eq!(validated.warnings.len(), base);
    assert_eq!(validated.manifest.systems["biz"].store_path, SYSTEM);
    doc["systems"]["biz"]["storePath"] =
        json!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-web-1.2.3");
    doc["rollout"] = json!({"waves": [["*"]]});
    let warnings: Vec<String> = problems_of(&doc)
        .into_iter()
        .filter(|p| p.pointer.starts_with("/systems"))
        .map(|p| format!("{} {:?}", p.pointer, p.severity))
        .collect();
    assert_eq!(
        warnings,
        ["/systems/biz/storePath Warning", "/systems Warning"]
    );
}

/// An empty `services` list is valid; its warning says what the agents will do with it,
/// with and without hosts to empty on purpose.
#[test]
fn an_empty_manifest_warns_what_each_host_does() {
    let mut doc = example();
    set(&mut doc, "/services", json!([]));
    let v = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP).unwrap();
    let w: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "/services: the manifest has no services: hosts that run no Ferry service do nothing; a host that still runs some refuses it and keeps them (to empty a host on purpose, list it in decommission: `ferry publish --decommission HOST`)"
        ]
    );
    set(&mut doc, "/decommission", json!(["biz", "old"]));
    let v = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP).unwrap();
    assert_eq!(v.manifest.decommission, ["biz", "old"]);
    let w: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "/services: the manifest has no services: `biz`, `old` stop and remove every Ferry service they run; any other host that still runs some refuses it and keeps them"
        ]
    );
}

/// A host the manifest empties while it deploys elsewhere: valid, no warning; a duplicate
/// is a warning.
#[test]
fn decommission_beside_services_elsewhere_is_valid() {
    let mut doc = example();
    set(&mut doc, "/decommission", json!(["old", "old"]));
    let v = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|p| p.pointer == "/decommission/1" && p.message.contains("listed twice")),
        "{:?}",
        v.warnings
    );
    // Without a decommission list the field stays out of the document (old signatures hold).
    let plain: ferry_schema::Manifest = serde_json::from_value(example()).unwrap();
    assert!(
        serde_json::to_value(&plain)
            .unwrap()
            .get("decommission")
            .is_none()
    );
}

/// Waves that are allowed but probably not meant are warnings; a good rollout is valid,
/// round-trips and stays out of a manifest without one.
#[test]
fn rollout_warnings_and_a_valid_rollout() {
    let mut doc = example();
    set(
        &mut doc,
        "/services/0/hosts",
        json!(["biz", "web-1", "web-2"]),
    );
    set(
        &mut doc,
        "/rollout",
        json!({"waves": [["biz"], ["web-*", "db-*"], ["web-1"], ["*"], ["web-*"]], "soakSec": 5, "onStale": "skip"}),
    );
    let v = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP).unwrap();
    let at = |pointer: &str, text: &str| {
        assert!(
            v.warnings
                .iter()
                .any(|p| p.pointer == pointer && p.message.contains(text)),
            "no warning at {pointer} with {text:?}: {:#?}",
            v.warnings
        );
    };
    at("/rollout/waves/1/1", "pattern `db-*` matches no host");
    at("/rollout/waves/2", "wave 2 has no host of its own");
    at("/rollout/waves/4/0", "listed twice");
    let r = v.manifest.rollout.as_ref().unwrap();
    assert_eq!(r.wave_of("biz"), Some(0));
    assert_eq!(r.wave_of("web-2"), Some(1));
    assert_eq!(r.wave_of("other"), Some(3));
    assert_eq!((r.soak_sec(), r.stale_sec()), (5, 900));
    assert_eq!(r.on_stale(), ferry_schema::manifest::OnStale::Skip);
    let back: Value = serde_json::to_value(&v.manifest).unwrap();
    assert_eq!(back["rollout"]["onStale"], "skip");
    let plain: Manifest = serde_json::from_value(example()).unwrap();
    assert!(
        serde_json::to_value(&plain)
            .unwrap()
            .get("rollout")
            .is_none()
    );
    assert!(
        serde_json::to_value(&plain).unwrap()["services"][0]
            .get("rollout")
            .is_none()
    );
}

#[test]
fn invalid_manifests_report_the_expected_pointer() {
    let cases = invalid_cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (what, edits, pointer, text) in cases {
        let mut doc = example();
        apply(&mut doc, edits);
        let bytes = serde_json::to_vec(&doc).unwrap();
        let problems = match validate_bytes(&bytes, DEFAULT_SIZE_CAP) {
            Ok(v) => {
                failures.push(format!("{what}: accepted (warnings: {:?})", v.warnings));
                continue;
            }
            Err(p) => p,
        };
        let hit = problems
            .iter()
            .find(|p| p.pointer == pointer && p.is_error());
        match hit {
            None => failures.push(format!("{what}: no error at {pointer}; got {problems:#?}")),
            Some(p) if !p.message.contains(text) => {
                failures.push(format!("{what}: message lacks {text:?}: {p}"))
            }
            Some(p) if p.message.contains('\n') => {
                failures.push(format!("{what}: message spans lines: {p:?}"))
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut doc = example();
    apply(
        &mut doc,
        vec![
            Set("/version", json!(3)),
            AddService(vec![
                Set("/name", json!("b")),
                Set("/hosts", json!(["other"])),
                Set("/exec/user", json!("Bad")),
            ]),
            // A shape error in service 0 does not hide the semantic error in service 1.
            Set("/services/0/http/internalPort", json!("x")),
            // Nor does a number serde would refuse (JSON Schema calls 5.0 an integer).
            Set("/services/0/systemd/restartSec", json!(5.0)),
        ],
    );
    let problems = problems_of(&doc);
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    for expected in [
        "/version",
        "/services/0/http/internalPort",
        "/services/0/systemd/restartSec",
        "/services/1/exec/user",
    ] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {pointers:?}"
        );
    }
}

#[test]
fn generations_in_other_rfc3339_spellings_are_warnings() {
    for g in [
        "2025-01-15T14:34:56+02:00",
        "2025-01-15 12:34:56Z",
        "2025-01-15t12:34:56z",
    ] {
        let mut doc = example();
        set(&mut doc, "/generation", json!(g));
        let problems = problems_of(&doc);
        let at_generation: Vec<&Problem> = problems
            .iter()
            .filter(|p| p.pointer == "/generation")
            .collect();
        assert!(
            matches!(at_generation.as_slice(), [p] if p.severity == Severity::Warning && p.message.contains("2025-01-15T12:34:56Z")),
            "{g}: {problems:?}"
        );
    }
}

#[test]
fn pointers_keep_keys_exactly_but_display_on_one_line() {
    let mut doc = example();
    set(&mut doc, "/services/0/env/A\nB", json!("x"));
    set(&mut doc, "/x\u{1b}[2J", json!(1));
    // A C1 control (CSI) in a value of the wrong type, which JSON text leaves unescaped.
    set(&mut doc, "/services/0/revision", json!(["\u{9b}2J"]));
    let problems = problems_of(&doc);
    let env = problems
        .iter()
        .find(|p| p.pointer == "/services/0/env/A\nB")
        .unwrap();
    assert_eq!(env.pointer_for_display(), "/services/0/env/A\\nB");
    let unknown = problems
        .iter()
        .find(|p| p.pointer.starts_with("/x"))
        .unwrap();
    assert_eq!(unknown.pointer, "/x\u{1b}[2J");
    assert!(problems.iter().any(|p| p.pointer == "/services/0/revision"));
    for p in &problems {
        assert!(!p.to_string().chars().any(char::is_control), "{p:?}");
    }
}

#[test]
fn a_version_the_schema_refuses_is_one_problem() {
    for version in [json!(99_999_999_999_u64), json!(1.0)] {
        let mut doc = example();
        set(&mut doc, "/version", version.clone());
        let at_version = problems_of(&doc)
            .into_iter()
            .filter(|p| p.pointer == "/version")
            .count();
        assert_eq!(at_version, 1, "{version}");
    }
}

#[test]
fn size_cap_is_checked_before_parsing() {
    let err = validate_bytes(b"{ not even json", 4).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err[0].message.contains("size cap"), "{}", err[0]);
}

#[test]
fn syntax_errors_are_one_problem_with_position() {
    let err = validate_bytes(b"{\"version\": 1,,}", DEFAULT_SIZE_CAP).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err[0].message.contains("line 1"), "{}", err[0]);
}

#[test]
fn absolute_command_inside_the_store_path_is_allowed() {
    let mut doc = example();
    set(
        &mut doc,
        "/services/0/exec/command",
        json!("/nix/store/abc123-podcastitlater-web-1.2.3/libexec/serve"),
    );
    assert!(problems_of(&doc).iter().all(|p| !p.is_error()));
}

#[test]
fn services_on_different_hosts_may_share_ports_and_routes() {
    let mut doc = example();
    apply(
        &mut doc,
        vec![AddService(vec![
            Set("/name", json!("b")),
            Set("/hosts", json!(["other"])),
        ])],
    );
    assert!(
        problems_of(&doc).iter().all(|p| !p.is_error()),
        "{:?}",
        problems_of(&doc)
    );
}

#[test]
fn serde_round_trip_is_lossless() {
    let manifest: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    let text = serde_json::to_string_pretty(&manifest).unwrap();
    let again: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest, again);
    // And the JSON itself is the same document (key order aside).
    assert_eq!(serde_json::to_value(&again).unwrap(), example());
}

#[test]
fn serde_round_trip_keeps_every_extension() {
    // Every optional field and extension, with the string forms of protectSystem and
    // protectHome, in a manifest that validates.
    let mut doc = example();
    apply(
        &mut doc,
        vec![
            Set(
                "/signatures",
                json!([format!("k-1:{}", "A".repeat(86) + "==")]),
            ),
            Set("/services/0/exec/args", json!(["--port", "8000"])),
            Set("/services/0/http/strategy", json!("blue-green")),
            Set("/services/0/hardening/protectSystem", json!("full")),
            Set("/services/0/hardening/protectHome", json!("read-only")),
            Set(
                "/services/0/hardening/readWritePaths",
                json!(["/var/podcastitlater", "/srv/podcastitlater/uploads"]),
            ),
            Set(
                "/services/0/healthCheck",
                json!({"type": "http", "path": "/healthz", "port": 8000, "expectStatus": 200,
                       "startPeriodSec": 1, "intervalSec": 1, "timeoutSec": 2, "retries": 3}),
            ),
            AddService(vec![
                Set("/name", json!("worker")),
                Remove("/http"),
                Set(
                    "/hardening",
                    json!({"protectSystem": false, "protectHome": "tmpfs"}),
                ),
                Set("/healthCheck", json!({"type": "none"})),
                Set("/dependsOn", json!(["podcastitlater-web"])),
            ]),
        ],
    );
    let validated = validate_bytes(&serde_json::to_vec(&doc).unwrap(), DEFAULT_SIZE_CAP)
        .unwrap_or_else(|p| panic!("{p:#?}"));
    let text = serde_json::to_string(&validated.manifest).unwrap();
    let again: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(validated.manifest, again);
    assert_eq!(serde_json::to_value(&again).unwrap(), doc);
}

#[test]
fn validate_manifest_agrees_on_typed_values() {
    let mut manifest: Manifest = serde_json::from_str(EXAMPLE).unwrap();
    assert!(validate_manifest(&manifest).iter().all(|p| !p.is_error()));
    manifest.services[0].hosts.clear();
    let problems = validate_manifest(&manifest);
    assert!(
        problems
            .iter()
            .any(|p| p.pointer == "/services/0/hosts" && p.is_error())
    );
}

#[test]
fn committed_schema_is_fresh() {
    let committed = include_str!("../manifest.v1.schema.json");
    assert!(
        committed == ferry_schema::schema_json(),
        "schema/manifest.v1.schema.json is stale: regenerate it with `cargo run -q -p ferry-schema --example print_schema > schema/manifest.v1.schema.json`"
    );
}
