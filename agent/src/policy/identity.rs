//! Identities: the user and group a service runs as. By default a service runs as systemd's
//! DynamicUser, with a user and group of its own. `exec.user` and `exec.group` may name a
//! host account only when agent.toml lists it, never root (that is `allowRoot`), and never a
//! group with a GID below 1000: those are the distribution's system groups (root, adm,
//! wheel, docker…), whose members read logs, keys or sockets of the host. systemd uses an
//! existing group of that name even for a DynamicUser, so `group: "root"` alone would give
//! the service GID 0. Pure: the accounts come from [`Accounts::parse`].

use std::collections::{BTreeMap, BTreeSet};

use ferry_schema::manifest::Service;

use crate::render::unit::uses_dynamic_user;

/// The lowest GID a service's group may have; below are the system groups.
pub const FIRST_REGULAR_GID: u32 = 1000;

/// A user as `/etc/passwd` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// UID.
    pub uid: u32,
    /// GID of its primary group.
    pub gid: u32,
}

/// The host's users and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Group GIDs by name.
    pub groups: BTreeMap<String, u32>,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` texts (`name:x:uid:gid:…` and `name:x:gid:…`);
    /// lines that do not parse are skipped.
    pub fn parse(passwd: &str, group: &str) -> Self {
        let fields = |line: &str| -> Vec<String> { line.split(':').map(str::to_owned).collect() };
        let mut accounts = Self::default();
        for f in passwd.lines().map(fields) {
            if let (Some(name), Some(Ok(uid)), Some(Ok(gid))) = (
                f.first(),
                f.get(2).map(|u| u.parse()),
                f.get(3).map(|g| g.parse()),
            ) {
                accounts.users.insert(name.clone(), User { uid, gid });
            }
        }
        for f in group.lines().map(fields) {
            if let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|g| g.parse())) {
                accounts.groups.insert(name.clone(), gid);
            }
        }
        accounts
    }
}

/// What this host allows a service to run as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityRules {
    /// Whether root is allowed at all (`allowRoot`).
    pub allow_root: bool,
    /// `allowedUsers`.
    pub users: BTreeSet<String>,
    /// `allowedGroups`.
    pub groups: BTreeSet<String>,
}

/// Every reason `s` may not run as the identity it asks for. `accounts` is the host's, or
/// why they could not be read.
pub fn check(s: &Service, rules: &IdentityRules, accounts: Result<&Accounts, &str>) -> Vec<String> {
    let mut reasons = Vec::new();
    if !uses_dynamic_user(s) {
        check_user(s, rules, accounts, &mut reasons);
    }
    if let Some(group) = &s.exec.group {
        check_group(group, rules, accounts, &mut reasons);
    }
    reasons
}

fn check_user(
    s: &Service,
    rules: &IdentityRules,
    accounts: Result<&Accounts, &str>,
    reasons: &mut Vec<String>,
) {
    let Some(user) = &s.exec.user else {
        if !rules.allow_root {
            reasons.push(
                "would run as root (no exec.user and hardening.dynamicUser = false); set \
                 exec.user, or leave dynamicUser out, or allowRoot = true in agent.toml"
                    .to_owned(),
            );
        }
        return;
    };
    let known = accounts.ok().and_then(|a| a.users.get(user));
    let is_root = user == "root" || user == "0" || known.is_some_and(|u| u.uid == 0);
    if is_root {
        if !rules.allow_root {
            reasons.push(format!(
                "exec.user {user} is root; leave exec.user out (a DynamicUser), or set \
                 allowRoot = true in agent.toml"
            ));
        }
        return;
    }
    if !rules.users.contains(user) {
        reasons.push(format!(
            "exec.user {user} is not in allowedUsers in agent.toml (default: none, services \
             run as a DynamicUser); leave exec.user out, or list the account there"
        ));
        return;
    }
    let account = match accounts {
        Err(e) => {
            reasons.push(format!("exec.user {user} cannot be checked: {e}"));
            return;
        }
        Ok(a) => a.users.get(user),
    };
    match account {
        None => reasons.push(format!(
            "exec.user {user} does not exist on this host; create the account first"
        )),
        Some(u) if s.exec.group.is_none() && u.gid < FIRST_REGULAR_GID => reasons.push(format!(
            "exec.user {user} has primary group GID {}, below {FIRST_REGULAR_GID} (a system \
             group); set exec.group to a group with GID {FIRST_REGULAR_GID} or more",
            u.gid
        )),
        Some(_) => {}
    }
}

fn check_group(
    group: &str,
    rules: &IdentityRules,
    accounts: Result<&Accounts, &str>,
    reasons: &mut Vec<String>,
) {
    let gid = accounts.ok().and_then(|a| a.groups.get(group)).copied();
    if rules.allow_root && (group == "root" || gid == Some(0)) {
        return;
    }
    if !rules.groups.contains(group) {
        reasons.push(format!(
            "exec.group {group} is not in allowedGroups in agent.toml (default: none, each \
             service gets a dynamic group); leave exec.group out, or list a group with GID \
             {FIRST_REGULAR_GID} or more there"
        ));
        return;
    }
    if let Err(e) = accounts {
        reasons.push(format!("exec.group {group} cannot be checked: {e}"));
        return;
    }
    match gid {
        None => reasons.push(format!(
            "exec.group {group} does not exist on this host; create the group first"
        )),
        Some(gid) if gid < FIRST_REGULAR_GID => reasons.push(format!(
            "exec.group {group} has GID {gid}, below {FIRST_REGULAR_GID} (a system group), \
             refused even though allowedGroups lists it; use a group with GID \
             {FIRST_REGULAR_GID} or more"
        )),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        toor:x:0:0::/root:/bin/sh\n\
        caddy:x:999:999:Caddy:/var/lib/caddy:/usr/sbin/nologin\n\
        app:x:1500:1500::/home/app:/bin/sh\n\
        sys:x:1501:4::/:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:\ncaddy:x:999:\napp:x:1500:\nbad:x:notanumber:\n";

    fn accounts() -> Accounts {
        Accounts::parse(PASSWD, GROUP)
    }

    fn svc(user: Option<&str>, group: Option<&str>, dynamic: Option<bool>) -> Service {
        let mut s: Service = serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
        }))
        .unwrap();
        s.exec.user = user.map(Into::into);
        s.exec.group = group.map(Into::into);
        s.hardening.get_or_insert_default().dynamic_user = dynamic;
        s
    }

    fn rules(users: &[&str], groups: &[&str]) -> IdentityRules {
        IdentityRules {
            allow_root: false,
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn reasons(s: &Service, r: &IdentityRules) -> Vec<String> {
        check(s, r, Ok(&accounts()))
    }

    #[test]
    fn passwd_and_group_parse() {
        let a = accounts();
        assert_eq!(a.users["caddy"], User { uid: 999, gid: 999 });
        assert_eq!(a.users.len(), 5);
        assert_eq!(a.groups["adm"], 4);
        assert!(!a.groups.contains_key("bad"));
    }

    #[test]
    fn dynamic_user_with_no_group_is_always_fine() {
        assert!(reasons(&svc(None, None, None), &rules(&[], &[])).is_empty());
        // With dynamicUser the user is not rendered, so it is not judged.
        assert!(reasons(&svc(Some("root"), None, Some(true)), &rules(&[], &[])).is_empty());
    }

    #[test]
    fn root_in_any_spelling_needs_allow_root() {
        let none = rules(&[], &[]);
        for s in [
            svc(None, None, Some(false)),
            svc(Some("root"), None, None),
            svc(Some("toor"), None, None),
        ] {
            let r = reasons(&s, &none);
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(r[0].contains("root") && r[0].contains("allowRoot"), "{r:?}");
            let allow = IdentityRules {
                allow_root: true,
                ..none.clone()
            };
            assert!(reasons(&s, &allow).is_empty());
        }
    }

    #[test]
    fn the_root_group_is_refused_even_for_a_dynamic_user() {
        let r = reasons(&svc(None, Some("root"), None), &rules(&[], &[]));
        assert_eq!(r.len(), 1);
        assert!(
            r[0].starts_with("exec.group root is not in allowedGroups"),
            "{r:?}"
        );
        let allow = IdentityRules {
            allow_root: true,
            ..rules(&[], &[])
        };
        assert!(reasons(&svc(None, Some("root"), None), &allow).is_empty());
    }

    #[test]
    fn host_accounts_must_be_listed_exist_and_have_a_regular_group() {
        let r = reasons(&svc(Some("caddy"), None, None), &rules(&[], &[]));
        assert!(
            r[0].starts_with("exec.user caddy is not in allowedUsers"),
            "{r:?}"
        );
        let allowed = rules(&["caddy", "app", "sys", "ghost"], &["caddy", "app", "adm"]);
        let r = reasons(&svc(Some("caddy"), None, None), &allowed);
        assert!(r[0].contains("primary group GID 999, below 1000"), "{r:?}");
        let r = reasons(&svc(Some("sys"), None, None), &allowed);
        assert!(r[0].contains("GID 4, below 1000"), "{r:?}");
        let r = reasons(&svc(Some("ghost"), None, None), &allowed);
        assert!(r[0].contains("does not exist"), "{r:?}");
        let r = reasons(&svc(None, Some("adm"), None), &allowed);
        assert!(
            r[0].contains("exec.group adm has GID 4, below 1000"),
            "{r:?}"
        );
        let r = reasons(&svc(Some("caddy"), Some("caddy"), None), &allowed);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("exec.group caddy has GID 999"), "{r:?}");
        assert!(reasons(&svc(Some("app"), None, None), &allowed).is_empty());
        assert!(reasons(&svc(Some("sys"), Some("app"), None), &allowed).is_empty());
        assert!(reasons(&svc(None, Some("app"), None), &allowed).is_empty());
    }

    #[test]
    fn unreadable_accounts_refuse_only_what_needs_them() {
        let allowed = rules(&["app"], &["app"]);
        let r = check(
            &svc(Some("app"), Some("app"), None),
            &allowed,
            Err("no /etc/passwd"),
        );
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|r| r.contains("no /etc/passwd")));
        assert!(check(&svc(None, None, None), &allowed, Err("x")).is_empty());
    }
}
