//! Host facts step: what the host policy needs to know about the host itself, read fresh
//! every tick that judges a manifest — its users and groups (`/etc/passwd`, `/etc/group`),
//! the units named `ferry-*` that Ferry did not write (asked of systemd, so every unit
//! directory counts), root-owned `/var/lib/ferry-*` directories of no Ferry service, and the
//! TCP ports something other than Ferry's services listens on (`/proc/net/tcp{,6}`, whose
//! socket owner is matched against the dynamic users systemd made for Ferry's units and the
//! accounts agent.toml allows). The parsers are pure and tested on literals; a fact that
//! cannot be read becomes the reason, and refuses only what depends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::backend::systemd::Systemd;
use crate::backend::units::Units;
use crate::policy::HostFacts;
use crate::policy::identity::Accounts;
use crate::policy::routing::dialed_ports;
use crate::state::State;

/// Where the facts are read from (the real paths, or a test's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactSources {
    /// `/etc/passwd`.
    pub passwd: PathBuf,
    /// `/etc/group`.
    pub group: PathBuf,
    /// `/var/lib`, where `StateDirectory=ferry-<name>` lands.
    pub state_root: PathBuf,
    /// `/proc/net/tcp` and `/proc/net/tcp6`.
    pub listeners: Vec<PathBuf>,
    /// The agent's unit directory: a Ferry unit is one of the files there it wrote.
    pub unit_dir: PathBuf,
    /// Whether services may run as root (then a root-owned state directory may be one of
    /// theirs, and is not held against a name).
    pub allow_root: bool,
    /// `allowedUsers`: sockets of these accounts count as Ferry's services'.
    pub allowed_users: BTreeSet<String>,
}

impl FactSources {
    /// The host's own files.
    pub fn host(unit_dir: &Path, allow_root: bool, allowed_users: BTreeSet<String>) -> Self {
        Self {
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            state_root: crate::policy::reserved::STATE_ROOT.into(),
            listeners: vec!["/proc/net/tcp".into(), "/proc/net/tcp6".into()],
            unit_dir: unit_dir.to_owned(),
            allow_root,
            allowed_users,
        }
    }
}

/// Read the facts. `state` says which services are Ferry's; `units` lists the files Ferry
/// wrote.
pub async fn gather<D: Systemd, U: Units>(
    sources: &FactSources,
    state: &State,
    systemd: &D,
    units: &U,
) -> HostFacts {
    let accounts =
        read(&sources.passwd).and_then(|p| Ok(Accounts::parse(&p, &read(&sources.group)?)));
    let foreign_units = match (systemd.unit_files("ferry-*").await, units.list()) {
        (Ok(paths), Ok(own)) => Ok(foreign_units(&paths, &sources.unit_dir, &own)),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(format!(
            "cannot read the unit directory {}: {e}",
            sources.unit_dir.display()
        )),
    };
    let foreign_dirs = if sources.allow_root {
        Ok(Vec::new())
    } else {
        state_dirs_owned_by(&sources.state_root, 0, state)
    };
    let foreign_ports = listening(sources, state, systemd, accounts.as_ref().ok()).await;
    HostFacts {
        accounts,
        foreign_units,
        foreign_dirs,
        foreign_ports,
    }
}

/// The host's users and groups.
pub fn accounts(sources: &FactSources) -> Result<Accounts, String> {
    Ok(Accounts::parse(
        &read(&sources.passwd)?,
        &read(&sources.group)?,
    ))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The unit files systemd knows (`paths`) that are not files Ferry wrote in its unit
/// directory (`own`, by file name), by unit name, with their paths.
pub fn foreign_units(
    paths: &[String],
    unit_dir: &Path,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    paths
        .iter()
        .filter_map(|path| {
            let p = Path::new(path);
            let name = p.file_name()?.to_str()?;
            let ours = p.parent() == Some(unit_dir) && own.contains_key(name);
            (!ours).then(|| (name.to_owned(), path.clone()))
        })
        .collect()
}

/// `<state_root>/ferry-*` directories (not symlinks: a DynamicUser's state directory is a
/// link into `private/`) owned by `uid` (root, for the agent) and belonging to no service
/// in `state`. Without `allowRoot` no Ferry service makes a root-owned one.
fn state_dirs_owned_by(root: &Path, uid: u32, state: &State) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::fs::MetadataExt;
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(service) = name
            .to_str()
            .and_then(|n| n.strip_prefix(crate::UNIT_PREFIX))
        else {
            continue;
        };
        if state.services.contains_key(service) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() && meta.uid() == uid {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// A listening TCP socket: its port and the UID that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// Local port.
    pub port: u16,
    /// Owner of the socket.
    pub uid: u32,
}

/// The listening sockets in a `/proc/net/tcp` or `/proc/net/tcp6` text (state `0A`).
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let uid = f.get(7)?.parse().ok()?;
            Some(Listener { port, uid })
        })
        .collect()
}

/// The ports Ferry's applied services may listen on: their routed and checked ports, and
/// `PORT` from their environment (the variable Ferry itself sets for blue-green instances).
pub fn claimed_ports(state: &State) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for applied in state.services.values() {
        let s = &applied.service;
        ports.extend(dialed_ports(s).into_iter().map(|(_, p)| p));
        ports.extend(s.env.get("PORT").and_then(|p| p.parse::<u16>().ok()));
    }
    ports
}

/// Ports of `listeners` that are not Ferry's: a socket is Ferry's when its owner is a dynamic
/// user systemd made for a `ferry-*` unit, an account in `allowedUsers`, or root on a port a
/// service in state claims (a service run as root with `allowRoot`).
pub fn foreign_ports(
    listeners: &[Listener],
    dynamic: &BTreeMap<u32, String>,
    allowed_uids: &BTreeSet<u32>,
    claimed: &BTreeSet<u16>,
) -> BTreeSet<u16> {
    listeners
        .iter()
        .filter(|l| {
            let ferry_dynamic = dynamic
                .get(&l.uid)
                .is_some_and(|name| name.starts_with(crate::UNIT_PREFIX));
            let ours = ferry_dynamic
                || allowed_uids.contains(&l.uid)
                || (l.uid == 0 && claimed.contains(&l.port));
            !ours
        })
        .map(|l| l.port)
        .collect()
}

async fn listening<D: Systemd>(
    sources: &FactSources,
    state: &State,
    systemd: &D,
    accounts: Option<&Accounts>,
) -> Result<BTreeSet<u16>, String> {
    let mut listeners = Vec::new();
    for path in &sources.listeners {
        match std::fs::read_to_string(path) {
            Ok(text) => listeners.extend(parse_listeners(&text)),
            // A host without IPv6 has no tcp6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    let dynamic: BTreeMap<u32, String> = systemd
        .dynamic_users()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let allowed_uids: BTreeSet<u32> = accounts
        .map(|a| {
            sources
                .allowed_users
                .iter()
                .filter_map(|u| a.users.get(u).map(|u| u.uid))
                .filter(|uid| *uid != 0)
                .collect()
        })
        .unwrap_or_default();
    Ok(foreign_ports(
        &listeners,
        &dynamic,
        &allowed_uids,
        &claimed_ports(state),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real lines from a bed host: Caddy's admin API and :80, a Ferry service, sshd.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:07E3 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 31337 1 0000000000000000 100 0 0 10 0
   1: 00000000:1FA5 00000000:0000 0A 00000000:00000000 00:00000000 00000000 61234        0 31338 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1FA5 0100007F:B0F2 01 00000000:00000000 00:00000000 00000000 61234        0 31339 1 0000000000000000 20 4 30 10 -1
   3: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31340 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 41 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_with_their_owners() {
        assert_eq!(
            parse_listeners(TCP),
            [
                Listener {
                    port: 2019,
                    uid: 998
                },
                Listener {
                    port: 8101,
                    uid: 61234
                },
                Listener { port: 22, uid: 0 },
            ]
        );
        assert_eq!(parse_listeners(TCP6), [Listener { port: 80, uid: 998 }]);
        assert!(parse_listeners("header only\n").is_empty());
    }

    #[test]
    fn only_ferrys_own_sockets_are_not_foreign() {
        let mut listeners = parse_listeners(TCP);
        listeners.extend(parse_listeners(TCP6));
        listeners.push(Listener {
            port: 9000,
            uid: 1500,
        });
        listeners.push(Listener {
            port: 9100,
            uid: 61300,
        });
        let dynamic: BTreeMap<u32, String> = [
            (61234, "ferry-web".to_owned()),
            (61300, "prometheus-exporter".to_owned()),
        ]
        .into();
        let foreign = foreign_ports(&listeners, &dynamic, &[1500].into(), &BTreeSet::new());
        assert_eq!(foreign, [22, 80, 2019, 9100].into());
        // Root on a port a root service in state claims is that service.
        let foreign = foreign_ports(&listeners, &dynamic, &BTreeSet::new(), &[22].into());
        assert_eq!(foreign, [80, 2019, 9000, 9100].into());
    }

    #[test]
    fn units_ferry_did_not_write_are_foreign() {
        let own: BTreeMap<String, String> =
            [("ferry-web.service".to_owned(), String::new())].into();
        let paths = [
            "/run/systemd/system/ferry-web.service",
            "/run/systemd/system/ferry-foreign.service",
            "/etc/systemd/system/ferry-web.service",
            "/etc/systemd/system/ferry-agent.timer",
        ]
        .map(str::to_owned);
        let foreign = foreign_units(&paths, Path::new("/run/systemd/system"), &own);
        assert_eq!(
            foreign.keys().collect::<Vec<_>>(),
            [
                "ferry-agent.timer",
                "ferry-foreign.service",
                "ferry-web.service"
            ]
        );
        assert_eq!(
            foreign["ferry-web.service"],
            "/etc/systemd/system/ferry-web.service"
        );
    }

    #[test]
    fn claimed_ports_come_from_the_applied_services() {
        let mut state = State::default();
        let s: ferry_schema::manifest::Service = serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"}, "env": {"PORT": "7000"},
            "http": {"domain": "a.test", "path": "/", "internalPort": 8000, "strategy": "blue-green"},
        }))
        .unwrap();
        state.services.insert(
            "web".into(),
            crate::state::Applied {
                service: s,
                applied_at: "t".into(),
                live_port: None,
            },
        );
        assert_eq!(claimed_ports(&state), [7000, 8000, 8001].into());
    }

    #[test]
    fn state_directories_of_root_and_no_service() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["ferry-backup", "ferry-web", "other"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("other", dir.path().join("ferry-linked")).unwrap();
        let mut state = State::default();
        let s: ferry_schema::manifest::Service = serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
        }))
        .unwrap();
        state.services.insert(
            "web".into(),
            crate::state::Applied {
                service: s,
                applied_at: "t".into(),
                live_port: None,
            },
        );
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let found = state_dirs_owned_by(dir.path(), me, &state).unwrap();
        assert_eq!(found, [dir.path().join("ferry-backup")]);
        assert!(
            state_dirs_owned_by(dir.path(), me + 1, &state)
                .unwrap()
                .is_empty()
        );
        assert!(state_dirs_owned_by(&dir.path().join("missing"), me, &state).is_err());
    }
}
