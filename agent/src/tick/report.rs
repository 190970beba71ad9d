//! Report step (last, after the final save): write the host status report
//! (`host_report::build`) to the status store as `hosts/<host>.json`, after every tick that
//! changed or failed something, when the last write failed, when a service's rollout soak
//! ended since the last report (so later waves see it), and otherwise once
//! `status.everySec` has passed since the last report; a quiet tick in between writes
//! nothing and makes no request. A failed write never fails the tick: it becomes a line of
//! the tick's and a report owed, written by the next tick. Reads the tick's summary and
//! state; writes the status store and state's record of when it last reported.

use ferry_schema::host_status::HostStatus;
use ferry_schema::layout::host_status_key;

use crate::backend::status_store::StatusStore;
use crate::host_report::{self, Reporter};
use crate::state::State;

use super::summary::TickSummary;

/// Where and how often the report step reports.
#[derive(Debug)]
pub struct Reporting<T> {
    /// The status store.
    pub store: T,
    /// `status.everySec`.
    pub every_sec: u64,
    /// `ferry-agent --version`.
    pub agent_version: String,
}

/// What the report step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The report, when one was due (written or not).
    pub status: HostStatus,
    /// Whether it reached the status store.
    pub written: bool,
}

/// Report after a tick when a report is due. Its line joins `lines` and the recorded last
/// tick; state records when it last reported, or that a report is owed. `None`: no report
/// was due (state unchanged).
pub async fn after_save<T: StatusStore>(
    reporting: &Reporting<T>,
    host: &str,
    system_enabled: bool,
    summary: &TickSummary,
    state: &mut State,
    lines: &mut Vec<String>,
) -> Option<Reported> {
    let now = chrono::Utc::now();
    let soak_ended = state.manifest.as_ref().is_some_and(|m| {
        crate::wave_gate::soak_ended(m, &state.service_status, state.reported_at.as_deref(), now)
    });
    let refresh = state
        .manifest
        .as_ref()
        .and_then(|m| crate::wave_gate::waiting_refresh_sec(m, &state.service_status));
    if !host_report::due(
        summary.eventful() || soak_ended,
        state.reported_at.as_deref(),
        state.report_owed,
        now,
        refresh.map_or(reporting.every_sec, |r| r.min(reporting.every_sec)),
    ) {
        return None;
    }
    let time = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let who = Reporter {
        host,
        agent_version: &reporting.agent_version,
        every_sec: reporting.every_sec,
        now: &time,
        system_enabled,
    };
    let status = host_report::build(state, summary, &who);
    let key = host_status_key(host);
    let written = match serde_json::to_vec_pretty(&status) {
        Ok(bytes) => reporting
            .store
            .put(&key, bytes)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let line = match &written {
        Ok(()) => {
            state.reported_at = Some(time);
            state.report_owed = false;
            format!("status: reported to {key}")
        }
        Err(e) => {
            state.report_owed = true;
            format!(
                "status: cannot write {key} to the status store: {e}; the tick is not affected, the next tick tries again (check status.bucket and status.credentials)"
            )
        }
    };
    if let Some(last) = &mut state.last_tick {
        last.lines.push(line.clone());
    }
    lines.push(line);
    Some(Reported {
        status,
        written: written.is_ok(),
    })
}
