//! Units a service may depend on. `systemd.requires` starts the units it names with the
//! service, as root, whatever they are (`debug-shell.service` opens a root shell);
//! `systemd.after` orders the service after them, and after `multi-user.target` or the agent
//! itself it would wait for the boot tick that is starting it. So both may name only the
//! units of this host's Ferry services (`ferry-<service>.service`, or an instance of a
//! blue-green one) and the units agent.toml lists in `allowedUnits`. `dependsOn` turns into
//! `Wants=` and `After=` of `ferry-<target>.service` whatever host the target runs on, so a
//! target whose name is reserved here (`agent`, an operator's `ferry-*` unit) is refused
//! too. Pure.

use std::collections::BTreeSet;

use ferry_schema::manifest::Service;

use super::reserved::service_part;

/// Every reason `s`'s unit dependencies are refused. `own` names this host's services in the
/// manifest whose names are not reserved (their units are Ferry's); `allowed` is
/// `allowedUnits`; `reserved` says why a name is reserved on this host, if it is.
pub fn check(
    s: &Service,
    own: &BTreeSet<&str>,
    allowed: &BTreeSet<String>,
    reserved: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    for target in s.depends_on.iter().flatten() {
        if own.contains(target.as_str()) {
            continue;
        }
        if let Some(why) = reserved(target) {
            reasons.push(format!(
                "dependsOn names {target}, whose unit {}{target}.service is not a Ferry \
                 service's on this host ({why}); depend on another service",
                crate::UNIT_PREFIX
            ));
        }
    }
    let Some(sd) = &s.systemd else {
        return reasons;
    };
    for (field, units) in [
        ("systemd.requires", &sd.requires),
        ("systemd.after", &sd.after),
    ] {
        for unit in units.iter().flatten() {
            if allowed.contains(unit) || is_ferry_unit(unit, own) {
                continue;
            }
            reasons.push(format!(
                "{field} names {unit}, which is not a unit of this host's Ferry services; \
                 list it in allowedUnits in agent.toml if services may depend on it"
            ));
        }
    }
    reasons
}

/// `ferry-<service>.service` or `ferry-<service>@<instance>.service` of a service in `own`.
fn is_ferry_unit(unit: &str, own: &BTreeSet<&str>) -> bool {
    unit.ends_with(".service") && service_part(unit).is_some_and(|s| own.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(requires: &[&str], after: &[&str]) -> Service {
        serde_json::from_value(serde_json::json!({
            "name": "web", "artifact": {"type": "nix-closure", "storePath": "/nix/store/a-web"},
            "hosts": ["h"], "exec": {"command": "web"},
            "systemd": {"requires": requires, "after": after},
        }))
        .unwrap()
    }

    fn own() -> BTreeSet<&'static str> {
        ["web", "db", "bg"].into()
    }

    fn allowed() -> BTreeSet<String> {
        ["network-online.target".to_owned()].into()
    }

    /// `agent` is reserved; nothing else is.
    fn reserved(name: &str) -> Option<String> {
        (name == "agent").then(|| "the Ferry agent's own".to_owned())
    }

    fn reasons(requires: &[&str], after: &[&str]) -> Vec<String> {
        check(&svc(requires, after), &own(), &allowed(), reserved)
    }

    #[test]
    fn depends_on_may_not_name_a_reserved_unit() {
        let mut s = svc(&[], &[]);
        // db runs here; api elsewhere (no order here, harmless); agent is the agent's.
        s.depends_on = Some(vec!["db".into(), "api".into(), "agent".into()]);
        let r = check(&s, &own(), &allowed(), reserved);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("dependsOn names agent, whose unit ferry-agent.service"),
            "{r:?}"
        );
    }

    #[test]
    fn ferry_units_and_the_allowlist_pass() {
        assert!(
            reasons(
                &["ferry-db.service"],
                &[
                    "network-online.target",
                    "ferry-db.service",
                    "ferry-bg@8000.service"
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn host_units_are_refused_by_field() {
        let r = reasons(
            &["debug-shell.service", "ferry-agent.service"],
            &["multi-user.target", "ferry-db.socket"],
        );
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[0].starts_with("systemd.requires names debug-shell.service"));
        assert!(r[1].starts_with("systemd.requires names ferry-agent.service"));
        assert!(r[2].starts_with("systemd.after names multi-user.target"));
        assert!(r[3].contains("ferry-db.socket") && r[3].contains("allowedUnits"));
    }
}
