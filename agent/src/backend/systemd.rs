//! The `Systemd` trait and its D-Bus implementation (zbus + zbus_systemd's generated
//! `org.freedesktop.systemd1` proxies), on the system bus or a configured address.
//!
//! Jobs are waited for without races: the `JobRemoved` match is registered before the
//! Start/Restart/Stop call, and the signal whose job path equals the call's reply is the one.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use thiserror::Error;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

pub use crate::vocab::{Job, UnitState};

/// Why a systemd operation failed.
#[derive(Debug, Error)]
pub enum SystemdError {
    /// The bus or systemd could not be reached.
    #[error("cannot reach systemd over D-Bus ({address}): {reason}")]
    Connect {
        /// Bus address used.
        address: String,
        /// What zbus said.
        reason: String,
    },
    /// A D-Bus call failed.
    #[error("systemd {call} {unit}: {reason}")]
    Call {
        /// Method name.
        call: &'static str,
        /// Unit (empty for manager calls).
        unit: String,
        /// What systemd said.
        reason: String,
    },
    /// The job did not finish in time.
    #[error("systemd {job:?} of {unit} did not finish within {after:?}")]
    JobTimeout {
        /// Which job.
        job: Job,
        /// Unit.
        unit: String,
        /// The limit.
        after: Duration,
    },
}

/// systemd, as the agent uses it.
pub trait Systemd: Send + Sync {
    /// `daemon-reload` (the reply comes after the reload finished).
    fn reload(&self) -> impl Future<Output = Result<(), SystemdError>> + Send;
    /// Run a start/restart/stop job and return its result (`done`, `failed`, …).
    fn run_job(
        &self,
        unit: &str,
        job: Job,
    ) -> impl Future<Output = Result<String, SystemdError>> + Send;
    /// The unit's state; `None` when systemd has not loaded it.
    fn unit_state(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<Option<UnitState>, SystemdError>> + Send;
    /// The paths of every unit file systemd finds whose name matches `pattern` (a glob such
    /// as `ferry-*`), in any unit directory (`ListUnitFilesByPatterns`).
    fn unit_files(
        &self,
        pattern: &str,
    ) -> impl Future<Output = Result<Vec<String>, SystemdError>> + Send;
    /// The dynamic users systemd has allocated now, as (UID, user name); a DynamicUser
    /// service's user is named after its unit (`GetDynamicUsers`).
    fn dynamic_users(
        &self,
    ) -> impl Future<Output = Result<Vec<(u32, String)>, SystemdError>> + Send;
    /// Whether systemd is still bringing the system up (`SystemState` is `initializing` or
    /// `starting`): a tick now is the boot tick, which `multi-user.target` waits for.
    fn booting(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }
}

/// Stop `unit` and wait for the job. A unit systemd does not know (a reboot wiped `/run`,
/// an instance never started) is already stopped; any other failure says why.
pub async fn stop<D: Systemd>(systemd: &D, unit: &str) -> Result<(), String> {
    match systemd.run_job(unit, Job::Stop).await {
        Ok(r) if r == "done" => Ok(()),
        Ok(r) => Err(format!("stop job of {unit} ended with {r}")),
        Err(e) if e.to_string().contains("NoSuchUnit") || e.to_string().contains("not loaded") => {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// systemd over D-Bus.
#[derive(Debug, Clone)]
pub struct DbusSystemd {
    conn: zbus::Connection,
    manager: ManagerProxy<'static>,
    job_timeout: Duration,
}

impl DbusSystemd {
    /// Connect to the system bus, or to `address` (e.g. a test host's bus). The connection
    /// and every method call on it are bounded by `job_timeout`.
    pub async fn connect(
        address: Option<&str>,
        job_timeout: Duration,
    ) -> Result<Self, SystemdError> {
        let shown = address.unwrap_or("system bus").to_owned();
        let fail = |e: zbus::Error| SystemdError::Connect {
            address: shown.clone(),
            reason: e.to_string(),
        };
        // Every method call gets `job_timeout` (zbus waits forever by default, so a stuck
        // systemd or bus held a tick), and so does the connection's own handshake, which a
        // peer that accepts and then says nothing would otherwise stall before any call.
        let builder = match address {
            Some(a) => zbus::connection::Builder::address(a).map_err(fail)?,
            None => zbus::connection::Builder::system().map_err(fail)?,
        };
        let conn =
            match tokio::time::timeout(job_timeout, builder.method_timeout(job_timeout).build())
                .await
            {
                Ok(built) => built.map_err(fail)?,
                Err(_) => {
                    return Err(SystemdError::Connect {
                        address: shown,
                        reason: format!("no answer within {job_timeout:?} (timeouts.jobSec)"),
                    });
                }
            };
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(fail)?;
        Ok(Self {
            conn,
            manager,
            job_timeout,
        })
    }
}

impl DbusSystemd {
    /// Runs `commands` one after the other as a transient `Type=oneshot` service `name`,
    /// started by systemd itself and so outside the agent's own sandbox, bounded by `limit`
    /// (systemd kills it there). Returns the start job's result: `done` when every command
    /// exited 0, `failed` or `timeout` otherwise (what they printed is in the journal under
    /// `name`). The unit is garbage-collected once it ends, failed or not.
    pub async fn run_transient(
        &self,
        name: &str,
        commands: &[Vec<String>],
        limit: Duration,
    ) -> Result<String, SystemdError> {
        let err = call_err("StartTransientUnit", name);
        let exec: Vec<(String, Vec<String>, bool)> = commands
            .iter()
            .filter_map(|argv| Some((argv.first()?.clone(), argv.clone(), false)))
            .collect();
        let value = |v: zbus::zvariant::Value<'_>| {
            zbus::zvariant::OwnedValue::try_from(v).map_err(|e| SystemdError::Call {
                call: "StartTransientUnit",
                unit: name.to_owned(),
                reason: e.to_string(),
            })
        };
        let micros = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        let properties = vec![
            ("Type".to_owned(), value("oneshot".into())?),
            ("ExecStart".to_owned(), value(exec.into())?),
            ("TimeoutStartUSec".to_owned(), value(micros.into())?),
            (
                "CollectMode".to_owned(),
                value("inactive-or-failed".into())?,
            ),
            (
                "Description".to_owned(),
                value("Ferry: whole-system switch step".into())?,
            ),
        ];
        let mut removed = self.manager.receive_job_removed().await.map_err(&err)?;
        let path = self
            .manager
            .start_transient_unit(name.to_owned(), "fail".to_owned(), properties, Vec::new())
            .await
            .map_err(&err)?;
        let wait = job_result(&mut removed, &path);
        // systemd stops the unit at `limit`; the margin is for it to say so.
        match tokio::time::timeout(limit + self.job_timeout, wait).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(SystemdError::Call {
                call: "StartTransientUnit",
                unit: name.to_owned(),
                reason: "the bus closed while waiting for the job".into(),
            }),
            Err(_) => Err(SystemdError::JobTimeout {
                job: Job::Start,
                unit: name.to_owned(),
                after: limit + self.job_timeout,
            }),
        }
    }

    /// The units systemd has in the `failed` state now.
    pub async fn failed_units(&self) -> Result<std::collections::BTreeSet<String>, SystemdError> {
        let units = self
            .manager
            .list_units_filtered(vec!["failed".to_owned()])
            .await
            .map_err(call_err("ListUnitsFiltered", "failed"))?;
        Ok(units.into_iter().map(|u| u.0).collect())
    }
}

/// The result systemd gives job `path` when it removes it (`done`, `failed`, …), from the
/// `JobRemoved` signals subscribed to before the job was queued; `None` if the stream ends.
async fn job_result(
    removed: &mut zbus_systemd::systemd1::JobRemovedStream,
    path: &zbus::zvariant::OwnedObjectPath,
) -> Option<String> {
    while let Some(signal) = removed.next().await {
        if let Ok(args) = signal.args()
            && args.job == *path
        {
            return Some(args.result);
        }
    }
    None
}

fn call_err<'a>(
    call: &'static str,
    unit: &'a str,
) -> impl Fn(zbus::Error) -> SystemdError + use<'a> {
    move |e| SystemdError::Call {
        call,
        unit: unit.to_owned(),
        reason: e.to_string(),
    }
}

impl Systemd for DbusSystemd {
    async fn reload(&self) -> Result<(), SystemdError> {
        self.manager.reload().await.map_err(call_err("Reload", ""))
    }

    async fn run_job(&self, unit: &str, job: Job) -> Result<String, SystemdError> {
        let (call, mode) = match job {
            Job::Start => ("StartUnit", "replace"),
            Job::Restart => ("RestartUnit", "replace"),
            Job::Stop => ("StopUnit", "replace"),
        };
        // Registering the match first is what makes the wait race-free.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_err(call, unit))?;
        let name = unit.to_owned();
        let path = match job {
            Job::Start => self.manager.start_unit(name, mode.into()).await,
            Job::Restart => self.manager.restart_unit(name, mode.into()).await,
            Job::Stop => self.manager.stop_unit(name, mode.into()).await,
        }
        .map_err(call_err(call, unit))?;
        let wait = job_result(&mut removed, &path);
        match tokio::time::timeout(self.job_timeout, wait).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(SystemdError::Call {
                call,
                unit: unit.to_owned(),
                reason: "the bus closed while waiting for the job".into(),
            }),
            Err(_) => Err(SystemdError::JobTimeout {
                job,
                unit: unit.to_owned(),
                after: self.job_timeout,
            }),
        }
    }

    async fn unit_files(&self, pattern: &str) -> Result<Vec<String>, SystemdError> {
        let files = self
            .manager
            .list_unit_files_by_patterns(Vec::new(), vec![pattern.to_owned()])
            .await
            .map_err(call_err("ListUnitFilesByPatterns", pattern))?;
        Ok(files.into_iter().map(|(path, _state)| path).collect())
    }

    async fn dynamic_users(&self) -> Result<Vec<(u32, String)>, SystemdError> {
        self.manager
            .get_dynamic_users()
            .await
            .map_err(call_err("GetDynamicUsers", ""))
    }

    async fn booting(&self) -> bool {
        // An unreadable state counts as not booting: the tick is then bounded by tickSec.
        self.manager
            .system_state()
            .await
            .is_ok_and(|s| s == "initializing" || s == "starting")
    }

    async fn unit_state(&self, unit: &str) -> Result<Option<UnitState>, SystemdError> {
        let path = match self.manager.get_unit(unit.to_owned()).await {
            Ok(p) => p,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("NoSuchUnit") => {
                return Ok(None);
            }
            Err(e) => return Err(call_err("GetUnit", unit)(e)),
        };
        let err = call_err("properties of", unit);
        let u = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .map_err(&err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(&err)?;
        let s = ServiceProxy::builder(&self.conn)
            .path(path)
            .map_err(&err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(&err)?;
        Ok(Some(UnitState {
            active_state: u.active_state().await.map_err(&err)?,
            sub_state: u.sub_state().await.map_err(&err)?,
            n_restarts: s.n_restarts().await.map_err(&err)?,
            exec_main_status: s.exec_main_status().await.map_err(&err)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    /// A bus at a socket in `dir` that accepts connections and then stalls: `handshake`
    /// completes the SASL exchange (so the client's first method call, `Hello`, is sent and
    /// never answered); without it nothing is ever said.
    fn stalling_bus(dir: &std::path::Path, handshake: bool) -> String {
        let path = dir.join("bus");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        if lines.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_start_matches('\0').trim();
                        let answer = match text {
                            _ if !handshake => continue,
                            t if t.starts_with("AUTH EXTERNAL") => {
                                "OK 0123456789abcdef0123456789abcdef\r\n"
                            }
                            t if t.starts_with("AUTH") => "REJECTED EXTERNAL\r\n",
                            t if t.starts_with("NEGOTIATE_UNIX_FD") => "AGREE_UNIX_FD\r\n",
                            t if t.starts_with("BEGIN") => {
                                // Read and drop whatever is sent, answer nothing.
                                let mut sink = Vec::new();
                                let _ = tokio::io::AsyncReadExt::read_to_end(
                                    lines.get_mut(),
                                    &mut sink,
                                )
                                .await;
                                return;
                            }
                            _ => "ERROR\r\n",
                        };
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("unix:path={}", path.display())
    }

    #[tokio::test]
    async fn a_bus_that_never_answers_is_given_up_on_within_the_timeout() {
        for handshake in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let address = stalling_bus(dir.path(), handshake);
            let started = Instant::now();
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                DbusSystemd::connect(Some(&address), Duration::from_millis(500)),
            )
            .await
            .expect("connect hung past 10 s");
            let took = started.elapsed();
            let err = result.expect_err("a silent bus counted as connected");
            assert!(
                took < Duration::from_secs(3),
                "handshake={handshake}: waited {took:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("cannot reach systemd over D-Bus"),
                "{err}"
            );
        }
    }
}
