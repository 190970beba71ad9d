//! Synthetic manifests for the benchmarks: many valid services with distinct names and
//! ports, spread over a few hosts, shaped like the original design's example; and the
//! summaries ([`stats`]) the whole-flow benchmarks under `bench/examples/` print; and the
//! HTTP message counting ([`http_count`]) of the wave gate's scale benchmark's relay.

pub mod http_count;
pub mod stats;

use ferry_schema::manifest::{
    Artifact, ArtifactKind, Exec, Hardening, Http, Manifest, ProtectHome, ProtectSystem,
    ProtectSystemMode, Service, SystemdOptions,
};

/// Hosts the synthetic services are spread over.
pub const HOSTS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// A valid manifest with `n` services (n ≤ 60,000 so ports stay distinct). Every tenth
/// service depends on the one before it, so dependency checks have edges to walk.
pub fn synthetic_manifest(n: usize) -> Manifest {
    Manifest {
        version: 1,
        generation: "2025-01-15T12:34:56Z".to_owned(),
        services: (0..n).map(synthetic_service).collect(),
        decommission: Vec::new(),
        rollout: None,
        systems: Default::default(),
        signatures: None,
    }
}

fn synthetic_service(i: usize) -> Service {
    let name = format!("svc-{i}");
    let port = u16::try_from(2000 + i).unwrap_or(u16::MAX);
    Service {
        artifact: Artifact {
            kind: ArtifactKind::NixClosure,
            store_path: format!("/nix/store/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j-{name}-1.0.{i}"),
        },
        hosts: vec![HOSTS[i % HOSTS.len()].to_owned()],
        exec: Exec {
            command: name.clone(),
            args: Some(vec!["--listen".to_owned(), format!("127.0.0.1:{port}")]),
            user: Some("svc".to_owned()),
            group: Some("svc".to_owned()),
        },
        env: [
            ("PORT".to_owned(), port.to_string()),
            ("DATA_DIR".to_owned(), format!("/var/lib/{name}")),
        ]
        .into_iter()
        .collect(),
        env_file: Some(format!("/var/lib/ferry-secrets/{name}.env")),
        http: Some(Http {
            domain: format!("{name}.example.com"),
            path: "/".to_owned(),
            internal_port: port,
            strategy: None,
        }),
        systemd: Some(SystemdOptions {
            after: Some(vec!["network-online.target".to_owned()]),
            requires: Some(Vec::new()),
            restart: Some("on-failure".to_owned()),
            restart_sec: Some(5),
        }),
        hardening: Some(Hardening {
            dynamic_user: Some(false),
            private_tmp: Some(true),
            protect_system: Some(ProtectSystem::Mode(ProtectSystemMode::Strict)),
            protect_home: Some(ProtectHome::Bool(true)),
            read_write_paths: None,
        }),
        revision: Some(format!("rev{i}")),
        health_check: None,
        rollout: None,
        depends_on: (i % 10 == 9).then(|| vec![format!("svc-{}", i - 1)]),
        name,
    }
}

/// The synthetic manifest as JSON bytes, as an agent would fetch it.
pub fn synthetic_manifest_bytes(n: usize) -> Vec<u8> {
    serde_json::to_vec(&synthetic_manifest(n)).unwrap_or_default()
}
