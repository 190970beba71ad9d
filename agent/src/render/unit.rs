//! Renders a service's unit from its manifest entry: a `Type=exec` unit with the manifest's
//! settings on top of a strong hardening baseline. A `restart` service gets
//! `ferry-<service>.service`; a `blue-green` one gets the template `ferry-<service>@.service`
//! whose instances are named after their port (`ferry-web@8000.service`) and get `PORT` from
//! the instance name.
//!
//! The baseline aims at `systemd-analyze security` exposure ≤ 2.0 while a normal web service
//! (listens on a loopback TCP port, writes to its own state directory) still runs. Features
//! known to break common runtimes (`MemoryDenyWriteExecute` and JITs) are left off.

use std::fmt::Write as _;

use ferry_schema::manifest::{
    ProtectHome, ProtectHomeMode, ProtectSystem, ProtectSystemMode, Service, Strategy,
};

use super::escape;
pub use crate::vocab::unit::{
    HEADER_PREFIX, header_store_path, instance_name, service_of_file, serving_unit, template_name,
    unit_name,
};

/// The second line of a blue-green template: the ports of its instances, so they can be
/// found and stopped even when the state file is lost.
const PORTS_PREFIX: &str = "# blue-green instances on ports ";

/// The two instance ports of a blue-green service: `internalPort` and the one after it
/// (validation keeps both free and in range).
pub fn instance_ports(service: &Service) -> Option<[u16; 2]> {
    let http = service.http.as_ref()?;
    Some([http.internal_port, http.internal_port.checked_add(1)?])
}

/// The instance ports a template's header names (empty for other units).
pub fn template_ports(text: &str) -> Vec<u16> {
    text.lines()
        .nth(1)
        .and_then(|l| l.strip_prefix(PORTS_PREFIX))
        .map(|rest| rest.split(' ').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether a service updates blue-green (two instances, traffic switched between them).
pub fn is_blue_green(service: &Service) -> bool {
    service.http.as_ref().and_then(|h| h.strategy) == Some(Strategy::BlueGreen)
}

/// The unit file a service is rendered into: its template when blue-green.
pub fn unit_file(service: &Service) -> String {
    if is_blue_green(service) {
        template_name(&service.name)
    } else {
        unit_name(&service.name)
    }
}

/// The absolute program path a service runs: `<storePath>/bin/<command>` for a bare program
/// name, `<storePath>/<command>` for a relative path inside the closure.
pub fn program_path(service: &Service) -> String {
    let store = service.artifact.store_path.trim_end_matches('/');
    if service.exec.command.contains('/') {
        format!("{store}/{}", service.exec.command)
    } else {
        format!("{store}/bin/{}", service.exec.command)
    }
}

/// Whether the unit runs as a systemd-allocated transient user: when asked for, and by default
/// when no user is named (so "no user" never silently means root).
pub fn uses_dynamic_user(service: &Service) -> bool {
    let asked = service.hardening.as_ref().and_then(|h| h.dynamic_user);
    match asked {
        Some(v) => v,
        None => service.exec.user.is_none(),
    }
}

/// The service's full unit text. Deterministic: the same service always renders the same
/// bytes, so comparing texts tells whether a unit changed.
pub fn render(service: &Service) -> String {
    let mut u = String::with_capacity(2048);
    let name = &service.name;
    // `let _ =`: writing to a String cannot fail.
    let _ = writeln!(
        u,
        "{HEADER_PREFIX}{name} storePath={}",
        service.artifact.store_path
    );
    if let (true, Some([a, b])) = (is_blue_green(service), instance_ports(service)) {
        let _ = writeln!(u, "{PORTS_PREFIX}{a} {b}");
    }
    u.push_str("[Unit]\n");
    let mut description = format!("Ferry service {name}");
    if let Some(rev) = &service.revision {
        let _ = write!(description, " ({rev})");
    }
    let _ = writeln!(u, "Description={}", escape::specifiers(&description));

    let sd = service.systemd.clone().unwrap_or_default();
    let deps: Vec<String> = service
        .depends_on
        .iter()
        .flatten()
        .map(|d| unit_name(d))
        .collect();
    let mut after: Vec<String> = vec!["network.target".to_owned()];
    after.extend(sd.after.iter().flatten().cloned());
    after.extend(deps.iter().cloned());
    let _ = writeln!(u, "After={}", after.join(" "));
    let requires: Vec<&String> = sd.requires.iter().flatten().collect();
    if !requires.is_empty() {
        let reqs: Vec<&str> = requires.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(u, "Requires={}", reqs.join(" "));
    }
    if !deps.is_empty() {
        let _ = writeln!(u, "Wants={}", deps.join(" "));
    }

    u.push_str("\n[Service]\nType=exec\n");
    let mut exec = escape::exec_word(&program_path(service));
    for arg in service.exec.args.iter().flatten() {
        exec.push(' ');
        exec.push_str(&escape::exec_word(arg));
    }
    let _ = writeln!(u, "ExecStart={exec}");
    for (k, v) in &service.env {
        let _ = writeln!(u, "Environment={}", escape::environment(k, v));
    }
    if is_blue_green(service) {
        // After the manifest's env, so the instance's port wins over a PORT set there.
        u.push_str("Environment=PORT=%i\n");
    }
    if let Some(file) = &service.env_file {
        let _ = writeln!(u, "EnvironmentFile={}", escape::specifiers(file));
    }
    if uses_dynamic_user(service) {
        u.push_str("DynamicUser=yes\n");
    } else if let Some(user) = &service.exec.user {
        let _ = writeln!(u, "User={user}");
    }
    if let Some(group) = &service.exec.group {
        let _ = writeln!(u, "Group={group}");
    }
    let restart = sd.restart.as_deref().unwrap_or("on-failure");
    let _ = writeln!(u, "Restart={restart}");
    let _ = writeln!(u, "RestartSec={}", sd.restart_sec.unwrap_or(1));
    // A writable place that survives restarts and follows the (possibly dynamic) user.
    let _ = writeln!(u, "StateDirectory=ferry-{name}");

    let h = service.hardening.clone().unwrap_or_default();
    let protect_system = match h.protect_system {
        None | Some(ProtectSystem::Mode(ProtectSystemMode::Strict)) => "strict",
        Some(ProtectSystem::Mode(ProtectSystemMode::Full)) => "full",
        Some(ProtectSystem::Bool(true)) => "yes",
        Some(ProtectSystem::Bool(false)) => "no",
    };
    let protect_home = match h.protect_home {
        None | Some(ProtectHome::Bool(true)) => "yes",
        Some(ProtectHome::Bool(false)) => "no",
        Some(ProtectHome::Mode(ProtectHomeMode::ReadOnly)) => "read-only",
        Some(ProtectHome::Mode(ProtectHomeMode::Tmpfs)) => "tmpfs",
    };
    let private_tmp = if h.private_tmp.unwrap_or(true) {
        "yes"
    } else {
        "no"
    };
    let _ = writeln!(u, "ProtectSystem={protect_system}");
    let _ = writeln!(u, "ProtectHome={protect_home}");
    let _ = writeln!(u, "PrivateTmp={private_tmp}");
    // One line each, so no path needs quoting (validation keeps them to safe characters;
    // host policy to the prefixes agent.toml allows). No `-` prefix: a missing directory
    // fails the start, naming it, rather than leaving the service read-only.
    for path in h.read_write_paths.iter().flatten() {
        let _ = writeln!(u, "ReadWritePaths={}", escape::specifiers(path));
    }
    u.push_str(BASELINE);
    u
}

/// Hardening every Ferry unit gets (REFERENCE.md: these together score about 1.4). A call
/// the filter blocks fails with EPERM, which programs handle as an error (a runtime probing
/// for a newer call falls back), instead of systemd's default of killing the process.
const BASELINE: &str = "\
NoNewPrivileges=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LockPersonality=yes
RemoveIPC=yes
UMask=0077
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
";

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Service {
        let m: ferry_schema::Manifest =
            serde_json::from_str(include_str!("../../../schema/tests/fixtures/example.json"))
                .unwrap();
        m.services[0].clone()
    }

    #[test]
    fn example_service_renders_expected_unit() {
        let text = render(&example());
        let expected = r#"# Managed by ferry-agent; do not edit. service=podcastitlater-web storePath=/nix/store/abc123-podcastitlater-web-1.2.3
[Unit]
Description=Ferry service podcastitlater-web (abc123def)
After=network.target network-online.target postgresql.service

[Service]
Type=exec
ExecStart="/nix/store/abc123-podcastitlater-web-1.2.3/bin/podcastitlater-web"
Environment="AREA=Live"
Environment="BASE_URL=https://podcastitlater.com"
Environment="DATA_DIR=/var/podcastitlater"
Environment="PORT=8000"
EnvironmentFile=/var/lib/biz-secrets/podcastitlater-web.env
User=pil-web
Group=pil
Restart=on-failure
RestartSec=5
StateDirectory=ferry-podcastitlater-web
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
"#;
        assert!(text.starts_with(expected), "got:\n{text}");
        // A call outside the filter fails with EPERM instead of killing the service.
        assert!(
            text.ends_with(
                "SystemCallFilter=~@privileged @resources\nSystemCallErrorNumber=EPERM\n"
            )
        );
        assert!(!text.contains("ReadWritePaths="), "{text}");
        assert_eq!(
            header_store_path(&text),
            Some((
                "podcastitlater-web",
                "/nix/store/abc123-podcastitlater-web-1.2.3"
            ))
        );
    }

    #[test]
    fn args_env_and_deps() {
        let mut s = example();
        s.exec.command = "libexec/web/serve".into();
        s.exec.args = Some(vec!["--port".into(), "8000".into(), "100% \"$x\"".into()]);
        s.env.clear();
        s.env.insert("Q".into(), "a\"b\\c%d$e".into());
        s.depends_on = Some(vec!["db".into()]);
        s.hardening = None;
        s.exec.user = None;
        let text = render(&s);
        assert!(text.contains(
            "ExecStart=\"/nix/store/abc123-podcastitlater-web-1.2.3/libexec/web/serve\" \"--port\" \"8000\" \"100%% \\\"$$x\\\"\"\n"
        ), "{text}");
        assert!(
            text.contains("Environment=\"Q=a\\\"b\\\\c%%d$e\"\n"),
            "{text}"
        );
        assert!(text.contains(
            "After=network.target network-online.target postgresql.service ferry-db.service\n"
        ));
        assert!(text.contains("Wants=ferry-db.service\n"));
        assert!(text.contains("DynamicUser=yes\n"));
        assert!(!text.contains("User=pil-web"));
    }

    #[test]
    fn manifest_hardening_overrides_baseline() {
        let mut s = example();
        s.hardening = Some(ferry_schema::manifest::Hardening {
            dynamic_user: Some(true),
            private_tmp: Some(false),
            protect_system: Some(ProtectSystem::Mode(ProtectSystemMode::Full)),
            protect_home: Some(ProtectHome::Mode(ProtectHomeMode::ReadOnly)),
            read_write_paths: Some(vec!["/var/podcastitlater".into(), "/srv/50%".into()]),
        });
        let text = render(&s);
        assert!(text.contains("DynamicUser=yes\n"));
        assert!(!text.contains("User=pil-web"));
        assert!(
            text.contains(
                "ProtectSystem=full\nProtectHome=read-only\nPrivateTmp=no\n\
             ReadWritePaths=/var/podcastitlater\nReadWritePaths=/srv/50%%\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn blue_green_renders_a_template_whose_instances_get_their_port() {
        let mut s = example();
        s.http.as_mut().unwrap().strategy = Some(Strategy::BlueGreen);
        assert_eq!(unit_file(&s), "ferry-podcastitlater-web@.service");
        let text = render(&s);
        assert!(
            text.contains("Environment=\"PORT=8000\"\nEnvironment=PORT=%i\n"),
            "{text}"
        );
        assert_eq!(
            header_store_path(&text).map(|(n, _)| n),
            Some("podcastitlater-web")
        );
        assert_eq!(template_ports(&text), [8000, 8001]);
        assert!(template_ports(&render(&example())).is_empty());
        assert_eq!(instance_name("web", 8001), "ferry-web@8001.service");
        assert_eq!(unit_file(&example()), "ferry-podcastitlater-web.service");
    }

    #[test]
    fn files_map_back_to_services() {
        assert_eq!(service_of_file("ferry-web.service"), Some("web"));
        assert_eq!(service_of_file("ferry-web@.service"), Some("web"));
        assert_eq!(service_of_file("ferry-web@8000.service"), None);
        assert_eq!(service_of_file("ferry-.service"), None);
        assert_eq!(service_of_file("ferry-web.socket"), None);
        assert_eq!(service_of_file("sshd.service"), None);
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render(&example()), render(&example()));
    }
}
