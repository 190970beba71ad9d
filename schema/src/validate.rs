//! Manifest validation: every problem at once, each with a JSON Pointer and a message that
//! names the service and says what to do.
//!
//! Three steps, in order: the size cap (before parsing), the JSON Schema (types, required
//! and unknown fields, with "did you mean" for near misses), then semantic checks on the
//! typed values (names, paths, ports, clashes, dependency cycles). When some services do not
//! even have the right shape, the semantic checks still run on the ones that do, so one run
//! shows everything. This layer is the first defence against text injected into unit files
//! and paths: anything that reaches a unit file or a path is checked here.

mod budget;
mod decommission;
mod depends;
mod report;
mod rollout;
mod routes;
mod salvage;
mod service;
mod structure;
mod systems;
mod text;
mod top;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{Manifest, Service};

pub use report::Report;

/// Largest manifest accepted by default (4 MiB), checked before parsing.
pub const DEFAULT_SIZE_CAP: usize = 4 * 1024 * 1024;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifest must not be published or applied.
    Error,
    /// Allowed, but probably not what was meant.
    Warning,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON Pointer (RFC 6901) to the offending value, e.g. `/services/1/http/internalPort`;
    /// empty for the whole document.
    pub pointer: String,
    /// What is wrong and what to do, naming the service. One line.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// An error at `pointer`.
    pub fn error(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `pointer`.
    pub fn warning(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
            severity: Severity::Warning,
        }
    }

    /// Whether this problem makes the manifest invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The pointer for a line of text: `/` for the whole document, and control characters
    /// (which an unknown field or an env key may hold) escaped, so the line stays one line
    /// and cannot drive the terminal. [`Problem::pointer`] keeps the exact RFC 6901 form.
    pub fn pointer_for_display(&self) -> String {
        if self.pointer.is_empty() {
            return "/".to_owned();
        }
        self.pointer
            .chars()
            .map(|c| {
                if text::is_line_breaking(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    }
}

impl fmt::Display for Problem {
    /// `pointer: message`, with the pointer as [`Problem::pointer_for_display`] shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer_for_display(), self.message)
    }
}

/// A manifest that passed validation, with the warnings it still has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The typed manifest.
    pub manifest: Manifest,
    /// Problems that do not make it invalid.
    pub warnings: Vec<Problem>,
}

/// Validates a manifest document: size cap, JSON Schema, semantic checks. On failure returns
/// every problem found (errors and warnings, in document order).
pub fn validate_bytes(bytes: &[u8], size_cap: usize) -> Result<Validated, Vec<Problem>> {
    if bytes.len() > size_cap {
        return Err(vec![Problem::error(
            "",
            format!(
                "the manifest is {} bytes, over the size cap of {size_cap} bytes (agents refuse manifests over {DEFAULT_SIZE_CAP}); make it smaller: long values belong in an envFile on the host",
                bytes.len()
            ),
        )]);
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            return Err(vec![Problem::error(
                "",
                format!("not valid JSON ({e}); fix the syntax there"),
            )]);
        }
    };
    validate_value(&value)
}

/// Validates a parsed JSON document (see [`validate_bytes`]; no size cap here).
pub fn validate_value(value: &Value) -> Result<Validated, Vec<Problem>> {
    let mut report = Report::default();
    structure::check(value, &mut report);
    match Manifest::deserialize(value) {
        Ok(manifest) => {
            check_typed(&manifest, &mut report);
            let problems = report.into_problems();
            if problems.iter().any(Problem::is_error) {
                return Err(problems);
            }
            Ok(Validated {
                manifest,
                warnings: problems,
            })
        }
        Err(e) => {
            // Before the salvage, so that it leaves out the numbers reported here.
            structure::check_whole_numbers(value, &mut report);
            check_partial(value, &mut report);
            let mut problems = report.into_problems();
            if !problems.iter().any(Problem::is_error) {
                // The schema should have caught whatever serde refuses; never let it through.
                problems.push(Problem::error(
                    "",
                    format!("the manifest does not fit manifest v1: {e}"),
                ));
            }
            Err(problems)
        }
    }
}

/// The semantic checks on a typed manifest (names, paths, ports, clashes, dependencies,
/// signature format). Returns errors and warnings; the manifest is valid when none is an
/// error. The pusher runs this before publishing a manifest it built.
pub fn validate_manifest(m: &Manifest) -> Vec<Problem> {
    let mut report = Report::default();
    check_typed(m, &mut report);
    report.into_problems()
}

fn check_typed(m: &Manifest, report: &mut Report) {
    let services: Vec<(usize, &Service)> = m.services.iter().enumerate().collect();
    top::check(
        Some(u64::from(m.version)),
        Some(&m.generation),
        m.services.len(),
        &m.decommission,
        report,
    );
    top::check_signatures(m.signatures.as_deref(), report);
    check_services(&services, report);
    decommission::check(&m.decommission, &services, report);
    rollout::check(m.rollout.as_ref(), &services, &m.decommission, report);
    systems::check(&m.systems, m.rollout.as_ref(), &services, report);
}

/// Runs the semantic checks on whatever parts of an ill-shaped document have the right
/// shape (leaving out values the schema layer rejected), keeping the original indices so
/// pointers stay true.
fn check_partial(value: &Value, report: &mut Report) {
    let bad = report.error_pointers();
    // A version the schema layer refused (too big, `1.0`) is not checked twice.
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .filter(|_| !bad.iter().any(|p| p == "/version"));
    let generation = value.get("generation").and_then(Value::as_str);
    let items: &[Value] = value
        .get("services")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let parsed: Vec<(usize, Service)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| salvage::salvage_service(i, v, &bad).map(|s| (i, s)))
        .collect();
    let services: Vec<(usize, &Service)> = parsed.iter().map(|(i, s)| (*i, s)).collect();
    // A decommission list the schema layer refused is left out.
    let decommission: Vec<String> = value
        .get("decommission")
        .filter(|_| !bad.iter().any(|p| p.starts_with("/decommission")))
        .and_then(|v| Vec::<String>::deserialize(v).ok())
        .unwrap_or_default();
    top::check(version, generation, items.len(), &decommission, report);
    if let Some(Ok(sigs)) = value.get("signatures").map(Vec::<String>::deserialize) {
        top::check_signatures(Some(&sigs), report);
    }
    check_services(&services, report);
    decommission::check(&decommission, &services, report);
    // A rollout the schema layer refused is left out.
    let rollout = value
        .get("rollout")
        .filter(|_| !bad.iter().any(|p| p.starts_with("/rollout")))
        .and_then(|v| crate::manifest::Rollout::deserialize(v).ok());
    rollout::check(rollout.as_ref(), &services, &decommission, report);
    // So are systems the schema layer refused.
    let systems: std::collections::BTreeMap<String, crate::manifest::HostSystem> = value
        .get("systems")
        .filter(|_| !bad.iter().any(|p| p.starts_with("/systems")))
        .and_then(|v| Deserialize::deserialize(v).ok())
        .unwrap_or_default();
    systems::check(&systems, rollout.as_ref(), &services, report);
}

fn check_services(services: &[(usize, &Service)], report: &mut Report) {
    for (i, s) in services {
        service::check(*i, s, report);
    }
    routes::check(services, report);
    depends::check(services, report);
    budget::check(services, report);
}
