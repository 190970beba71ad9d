//! Document-level checks: version, generation, the service list as a whole, signature
//! format.

use chrono::DateTime;

use super::report::{Report, q};
use crate::keys::check_signature_format;

/// Checks `version`, `generation` and that there is something to deploy. `None` means the
/// field is missing or mistyped (the schema layer reported that already). `decommission`
/// is the hosts the manifest empties on purpose (the empty-manifest warning says what each
/// host will do).
pub fn check(
    version: Option<u64>,
    generation: Option<&str>,
    service_count: usize,
    decommission: &[String],
    report: &mut Report,
) {
    if let Some(v) = version
        && v != 1
    {
        report.error(
            "/version",
            format!("version is {v}, but this ferry reads manifest version 1: set \"version\": 1 or use a ferry that knows version {v}"),
        );
    }
    if let Some(g) = generation {
        check_generation(g, report);
    }
    if service_count == 0 {
        report.warn("/services", empty_manifest_warning(decommission));
    }
}

/// What an agent does with a manifest without services (see `HostPolicy::check_manifest`
/// in the agent): a host that runs no Ferry service does nothing; a host that runs some
/// removes them only when the manifest lists it in `decommission`, and refuses otherwise.
fn empty_manifest_warning(decommission: &[String]) -> String {
    if decommission.is_empty() {
        "the manifest has no services: hosts that run no Ferry service do nothing; a host that still runs some refuses it and keeps them (to empty a host on purpose, list it in decommission: `ferry publish --decommission HOST`)".to_owned()
    } else {
        format!(
            "the manifest has no services: {} stop and remove every Ferry service they run; any other host that still runs some refuses it and keeps them",
            decommission
                .iter()
                .map(|h| q(h))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn check_generation(g: &str, report: &mut Report) {
    match DateTime::parse_from_rfc3339(g) {
        Err(e) => report.error(
            "/generation",
            format!("generation {} is not an RFC 3339 timestamp ({e}): write it like 2025-01-15T12:34:56Z", q(g)),
        ),
        // RFC 3339 also allows an offset, a lowercase `z` or a space before the time; the
        // archive names manifests after their generation and sorts them by name, which
        // matches time order only in one spelling.
        Ok(t) if t.offset().local_minus_utc() != 0
            || !g.ends_with('Z')
            || g.as_bytes().get(10) != Some(&b'T') =>
        {
            report.warn(
                "/generation",
                format!("generation {} is not in UTC written with `T` and `Z`: archived manifests are named after it and sort by name, so write it like 2025-01-15T12:34:56Z", q(g)),
            )
        }
        Ok(_) => {}
    }
}

/// Checks that each signature is shaped like `keyname:base64` of 64 bytes (whether it is
/// valid is for `verify`).
pub fn check_signatures(signatures: Option<&[String]>, report: &mut Report) {
    for (k, sig) in signatures.unwrap_or_default().iter().enumerate() {
        if let Err(e) = check_signature_format(sig) {
            report.error(
                format!("/signatures/{k}"),
                format!(
                    "signature {k} is malformed ({e}): remove it and sign again with `ferry sign`"
                ),
            );
        }
    }
}
