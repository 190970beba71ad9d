//! Verify step: decide what the tick may apply. A newly fetched manifest is verified (size,
//! signature, schema, generation, and that it does not empty a host without saying so); an
//! unchanged one (304) is judged again, so a tightened agent.toml takes effect; anything
//! else (unreachable bucket, refused or missing manifest, nothing fetched) falls back to
//! restoring what state records. Reads the fetch step's answer and state; writes nothing.

use ferry_schema::Manifest;
use ferry_schema::layout::MANIFEST_KEY;

use super::TickSettings;
use super::fetch::FetchOutput;
use crate::backend::bucket::{BucketError, Fetched};
use crate::policy::{HostPolicy, Running};
use crate::state::{Outcome, State};
use crate::verify::{Accepted, Trust, recheck, verify};

/// Where the desired state came from.
pub enum Source {
    /// A newly fetched, accepted manifest.
    Fetched {
        /// The manifest.
        manifest: Box<Manifest>,
        /// Its ETag, for the next conditional GET.
        etag: Option<String>,
        /// SHA-256 of its bytes as fetched (`host_status::manifest_sha256`).
        sha256: String,
    },
    /// `manifest.json` unchanged (304): the stored manifest.
    Unchanged(Box<Manifest>),
    /// No usable manifest: restore what state says is deployed, never remove anything.
    Restore(Outcome),
}

impl Source {
    /// The outcome of a tick that only restores (`None`: a trusted manifest is applied).
    pub fn restore_outcome(&self) -> Option<Outcome> {
        match self {
            Self::Restore(o) => Some(*o),
            Self::Fetched { .. } | Self::Unchanged(_) => None,
        }
    }
}

/// Judge what was fetched. `running` is what Ferry runs here now: a manifest that would
/// remove all of it must say so. Lines say what was refused or noticed.
pub fn judge(
    fetched: FetchOutput,
    settings: &TickSettings,
    state: &State,
    running: &Running,
    lines: &mut Vec<String>,
) -> Source {
    let refuse = |lines: &mut Vec<String>, what: &str, reasons: Vec<String>| {
        lines.push(format!(
            "{what} refused ({} reason{}); nothing changed:",
            reasons.len(),
            if reasons.len() == 1 { "" } else { "s" }
        ));
        lines.extend(reasons.into_iter().map(|r| format!("  refused: {r}")));
        Source::Restore(Outcome::Refused)
    };
    let here = Some((&settings.policy, running));
    match fetched {
        FetchOutput::Skipped(line) => {
            lines.push(line);
            // The boot tick's fallback restored what state records; the manifest still waits.
            Source::Restore(if settings.restore_only.is_some() {
                Outcome::Failed
            } else {
                Outcome::Refused
            })
        }
        FetchOutput::Answer(Ok(Fetched::Found { bytes, etag })) => match accept(
            &bytes,
            settings.size_cap,
            &settings.trust,
            &settings.policy,
            running,
            state,
        ) {
            Ok(accepted) => {
                for w in &accepted.warnings {
                    lines.push(format!("manifest warning: {w}"));
                }
                Source::Fetched {
                    manifest: Box::new(accepted.manifest),
                    etag,
                    sha256: ferry_schema::host_status::manifest_sha256(&bytes),
                }
            }
            Err(reasons) => refuse(lines, "manifest", reasons),
        },
        FetchOutput::Answer(Ok(Fetched::Unchanged)) => match &state.manifest {
            Some(m) => match recheck(m, &settings.trust, here) {
                Ok(()) => Source::Unchanged(Box::new(m.clone())),
                Err(reasons) => refuse(
                    lines,
                    "the stored manifest (unchanged in the bucket)",
                    reasons,
                ),
            },
            None => Source::Restore(Outcome::Ok),
        },
        FetchOutput::Answer(Ok(Fetched::Missing)) => {
            lines.push(format!(
                "the bucket has no {MANIFEST_KEY}; publish one with `ferry push` (keeping current services)"
            ));
            Source::Restore(Outcome::Refused)
        }
        // The bucket holds a manifest no agent accepts: refused, like an invalid one.
        FetchOutput::Answer(Err(e @ BucketError::TooLarge { .. })) => {
            lines.push(format!(
                "manifest refused; nothing changed: {e} (make it smaller: long values belong in an envFile on the host)"
            ));
            Source::Restore(Outcome::Refused)
        }
        // Unreachable or refused (the only other errors a GET gives), services keep running
        // from state; the message names which one it was.
        FetchOutput::Answer(Err(e)) => {
            lines.push(format!("{e}; restoring services from state"));
            Source::Restore(Outcome::Unreachable)
        }
    }
}

/// The manifest the rest of the tick works from: the accepted one (with the lines of what
/// this host does not run from it), or the one state records as applied.
pub fn desired(source: &Source, settings: &TickSettings, state: &State) -> (Manifest, Vec<String>) {
    match source {
        Source::Fetched { manifest: m, .. } | Source::Unchanged(m) => (
            (**m).clone(),
            settings.policy.nothing_here(m).into_iter().collect(),
        ),
        Source::Restore(_) => (state.applied_manifest(&settings.policy.host), Vec::new()),
    }
}

/// Verify a newly fetched manifest's bytes for this host: size, signature, schema, not older
/// than the one last accepted, not emptying the host without saying so. `ferry-agent plan`
/// judges the manifest it previews with this same check.
pub fn accept(
    bytes: &[u8],
    size_cap: usize,
    trust: &Trust,
    policy: &HostPolicy,
    running: &Running,
    state: &State,
) -> Result<Accepted, Vec<String>> {
    let last_generation = state.manifest.as_ref().map(|m| m.generation.as_str());
    verify(
        bytes,
        size_cap,
        trust,
        Some((policy, running)),
        last_generation,
    )
}
