//! Whole-host NixOS systems (`systems` in the manifest), the pure part: what a tick does
//! about its host's entry, whether the host passed its check after a switch, and whether
//! the new system needs a reboot. The step that does it is `tick/system.rs`; the commands
//! run through `backend/system.rs`.

use std::collections::{BTreeMap, BTreeSet};

use ferry_schema::manifest::HostSystem;
use serde::{Deserialize, Serialize};

/// What state keeps about the host's system between ticks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemRecord {
    /// The system this agent switched to and kept (its check passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// Since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A switch under way: saved before the profile changes, cleared once the check passed
    /// or the switch was undone. Found at the start of a tick, the agent was cut off
    /// mid-switch, and the switch is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// A system that failed here, and why: not tried again until the manifest names
    /// another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<(String, String)>,
    /// The running system has another kernel, initrd or kernel modules than the booted
    /// one: the host needs a reboot, which the agent never does by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot_needed: bool,
}

/// What a tick does about its host's system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The manifest has no system for this host: nothing.
    Nothing,
    /// The manifest has one, but agent.toml does not enable system deploys: say so once per
    /// tick, change nothing.
    Disabled(String),
    /// The host runs it already.
    Running(String),
    /// It failed here before: hold it, say why.
    Quarantined {
        /// The held system.
        path: String,
        /// Why it failed.
        why: String,
    },
    /// A tick was cut off during a switch to `pending`: undo it (the profile goes back if it
    /// points there) and quarantine it.
    Recover {
        /// The system the cut-off switch was to.
        pending: String,
    },
    /// Switch to `to`.
    Switch {
        /// The system to switch to.
        to: String,
    },
}

/// What to do, from the manifest's entry for this host, agent.toml's `system.enable`, the
/// system profile's target now and the record. Pure.
pub fn decide(
    wanted: Option<&HostSystem>,
    enabled: bool,
    profile_target: Option<&str>,
    record: &SystemRecord,
) -> Decision {
    if let Some(pending) = &record.pending
        && enabled
    {
        return Decision::Recover {
            pending: pending.clone(),
        };
    }
    let Some(wanted) = wanted else {
        return Decision::Nothing;
    };
    let to = wanted.store_path.clone();
    if !enabled {
        return Decision::Disabled(to);
    }
    if profile_target == Some(to.as_str()) {
        return Decision::Running(to);
    }
    if let Some((path, why)) = &record.quarantined
        && *path == to
    {
        return Decision::Quarantined {
            path: path.clone(),
            why: why.clone(),
        };
    }
    Decision::Switch { to }
}

/// The line `ferry-agent plan` prints for a decision, and whether it is a change. Pure.
pub fn preview(decision: &Decision) -> Option<(String, bool)> {
    Some(match decision {
        Decision::Nothing => return None,
        Decision::Disabled(path) => (
            format!(
                "= system: the manifest names {path} for this host, but system deploys are off here (system.enable)"
            ),
            false,
        ),
        Decision::Running(path) => (format!("= system: {path} (running)"), false),
        Decision::Quarantined { path, why } => {
            (format!("! system: {path} is quarantined: {why}"), false)
        }
        Decision::Recover { pending } => (
            format!(
                "~ system: an earlier tick was cut off switching to {pending}: reconcile undoes that switch"
            ),
            true,
        ),
        Decision::Switch { to } => (
            format!(
                "~ system: switch to {to} (test, check the host, then make it the boot default)"
            ),
            true,
        ),
    })
}

/// The quarantine after a decision: a manifest that names another system lifts it. Pure.
pub fn lift_quarantine(record: &mut SystemRecord, wanted: Option<&HostSystem>) -> Option<String> {
    let (path, _) = record.quarantined.as_ref()?;
    if wanted.is_some_and(|w| w.store_path == *path) {
        return None;
    }
    let lifted = path.clone();
    record.quarantined = None;
    Some(lifted)
}

/// What the agent saw of the host after `switch-to-configuration test`.
#[derive(Debug, Clone)]
pub struct AfterSwitch {
    /// Whether the bucket still answers (the agent's own next fetch), and if not why.
    pub bucket: Result<(), String>,
    /// Units systemd had failed before the switch.
    pub failed_before: BTreeSet<String>,
    /// Units systemd has failed now.
    pub failed_after: BTreeSet<String>,
    /// Ferry's services that ran before the switch and are not active now, with their
    /// state.
    pub services_down: BTreeMap<String, String>,
}

/// Whether the host passed its check after a switch: `Err` names each check that failed.
/// Units that were failed before the switch are not the new system's doing. Pure.
pub fn judge(after: &AfterSwitch) -> Result<(), String> {
    let mut failures = Vec::new();
    if let Err(e) = &after.bucket {
        failures.push(format!("the bucket no longer answers ({e})"));
    }
    let new: Vec<&str> = after
        .failed_after
        .difference(&after.failed_before)
        .map(String::as_str)
        .collect();
    if !new.is_empty() {
        failures.push(format!("units failed by the switch: {}", new.join(", ")));
    }
    if !after.services_down.is_empty() {
        let down: Vec<String> = after
            .services_down
            .iter()
            .map(|(name, state)| format!("{name} ({state})"))
            .collect();
        failures.push(format!("Ferry services down: {}", down.join(", ")));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-biz-1";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-biz-2";

    fn wanted(path: &str) -> HostSystem {
        HostSystem {
            store_path: path.to_owned(),
            revision: None,
        }
    }

    #[test]
    fn what_a_tick_does_about_its_hosts_system() {
        let none = SystemRecord::default();
        let b = wanted(B);
        assert_eq!(decide(None, true, Some(A), &none), Decision::Nothing);
        assert_eq!(
            decide(Some(&b), false, Some(A), &none),
            Decision::Disabled(B.into())
        );
        assert_eq!(
            decide(Some(&b), true, Some(B), &none),
            Decision::Running(B.into())
        );
        assert_eq!(
            decide(Some(&b), true, Some(A), &none),
            Decision::Switch { to: B.into() }
        );
        // No profile yet (a host's first system from Ferry) switches too.
        assert_eq!(
            decide(Some(&b), true, None, &none),
            Decision::Switch { to: B.into() }
        );
        let held = SystemRecord {
            quarantined: Some((B.into(), "units failed by the switch: x".into())),
            ..SystemRecord::default()
        };
        assert_eq!(
            decide(Some(&b), true, Some(A), &held),
            Decision::Quarantined {
                path: B.into(),
                why: "units failed by the switch: x".into()
            }
        );
        let cut_off = SystemRecord {
            pending: Some(B.into()),
            ..SystemRecord::default()
        };
        assert_eq!(
            decide(None, true, Some(B), &cut_off),
            Decision::Recover { pending: B.into() }
        );
        // Disabled since: the mark is left alone, nothing is run.
        assert_eq!(decide(None, false, Some(B), &cut_off), Decision::Nothing);
    }

    #[test]
    fn another_system_in_the_manifest_lifts_the_quarantine() {
        let mut record = SystemRecord {
            quarantined: Some((B.into(), "x".into())),
            ..SystemRecord::default()
        };
        assert_eq!(lift_quarantine(&mut record, Some(&wanted(B))), None);
        assert!(record.quarantined.is_some());
        assert_eq!(
            lift_quarantine(&mut record, Some(&wanted(A))),
            Some(B.to_owned())
        );
        assert_eq!(record.quarantined, None);
    }

    #[test]
    fn the_check_names_every_failure_and_ignores_units_failed_before() {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let fine = AfterSwitch {
            bucket: Ok(()),
            failed_before: set(&["old.service"]),
            failed_after: set(&["old.service"]),
            services_down: BTreeMap::new(),
        };
        assert_eq!(judge(&fine), Ok(()));
        let bad = AfterSwitch {
            bucket: Err("connection refused".into()),
            failed_before: set(&["old.service"]),
            failed_after: set(&["old.service", "postgresql.service"]),
            services_down: [("web".to_owned(), "inactive".to_owned())].into(),
        };
        assert_eq!(
            judge(&bad),
            Err("the bucket no longer answers (connection refused); units failed by the switch: postgresql.service; Ferry services down: web (inactive)".into())
        );
    }
}
