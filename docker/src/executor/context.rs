//! The shared context of a running job: the [`Job`] itself, its errors, its plan's steps
//! ([`Planned`], [`Kind`]), the names of its objects on the engine ([`Names`]), its labels, and
//! the small time and control helpers the steps and services use. It imports neither the
//! orchestration (`job`) nor the parts it runs (`step`, `services`), so they can all use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use tokio::sync::watch;
use tokio::time::Instant;

use super::spec::BuildSpec;
use super::standby::{Standby, Standbys};
use super::{Control, ExecutorOptions};
use crate::endpoint::MachineEndpoint;
use crate::image::ImageError;
use crate::labels;
use crate::trace::Trace;

/// Why a job could not go on.
#[derive(Debug)]
pub(crate) enum JobError {
    ImagePull(String),
    System(String),
}

impl From<bollard::errors::Error> for JobError {
    fn from(err: bollard::errors::Error) -> JobError {
        JobError::System(format!("Docker engine: {err}"))
    }
}

impl From<ImageError> for JobError {
    fn from(err: ImageError) -> JobError {
        match err {
            ImageError::Pull { .. } => JobError::ImagePull(err.to_string()),
            ImageError::Engine { .. } => JobError::System(err.to_string()),
        }
    }
}

/// A step of the plan: the sources step (if any) comes first, then the spec's steps in order.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Planned {
    pub index: u16,
    pub kind: Kind,
}

#[derive(Copy, Clone, Debug)]
pub(crate) enum Kind {
    Sources,
    User(usize),
}

/// Names of a job's objects on the engine: deterministic, so a restarted drover finds them.
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(super) fn new(spec: &BuildSpec) -> Names {
        Names {
            prefix: format!(
                "drover-{}-job-{}",
                labels::sanitize(&spec.runner),
                spec.job_id
            ),
        }
    }

    pub(crate) fn step(&self, planned: &Planned, spec: &BuildSpec) -> String {
        format!(
            "{}-{}-{}",
            self.prefix,
            planned.index,
            step_label(planned, spec)
        )
    }

    pub(crate) fn service(&self, i: usize) -> String {
        format!("{}-svc-{i}", self.prefix)
    }

    pub(super) fn network(&self) -> String {
        self.prefix.clone()
    }

    /// The container that serves the archive endpoints for artifact transfers.
    pub(crate) fn transfer(&self) -> String {
        format!("{}-transfer", self.prefix)
    }

    pub(super) fn builds_volume(&self) -> String {
        format!("{}-builds", self.prefix)
    }

    pub(super) fn volume(&self, i: usize) -> String {
        format!("{}-vol-{i}", self.prefix)
    }
}

pub(crate) fn step_label(planned: &Planned, spec: &BuildSpec) -> &'static str {
    match planned.kind {
        Kind::Sources => "get_sources",
        Kind::User(i) => spec.steps[i].name.as_str(),
    }
}

/// Everything a running job needs.
pub(crate) struct Job {
    pub docker: Docker,
    pub spec: Arc<BuildSpec>,
    pub endpoint: MachineEndpoint,
    pub options: ExecutorOptions,
    pub trace: Trace,
    pub control: watch::Receiver<Control>,
    pub control_open: bool,
    pub names: Names,
    /// The job's deadline, Unix epoch milliseconds (a label on every step container).
    pub deadline_ms: u64,
    pub network: String,
    /// Mounts of every step container, in `binds` syntax.
    pub binds: Vec<String>,
    /// Re-attached after a restart of drover (said at the end of the trace).
    pub resumed: bool,
    /// The limit a step hit first, when it was its own timeout rather than the job's.
    pub step_timeout_hit: Option<Duration>,
    /// `CI_JOB_STATUS` for the next step container: `running`, then the outcome so far
    /// (`success`, `failed`, `canceled`) for `after_script`.
    pub job_status: &'static str,
    /// The warm container the job claimed: its steps run there by exec (see `exec_step`).
    pub warm: Option<String>,
    /// Starting the machine's warm container for the next job: from the first byte of the job's
    /// first step on (not to slow its start), awaited before the outcome, so the machine's
    /// removal never races it.
    pub prestart: Option<tokio::task::JoinHandle<()>>,
    /// Whether the machine takes another job after this one (not past its `MaxBuilds`): only
    /// then is a warm container started for it.
    pub more_jobs_on_machine: bool,
    /// The executor's standby execs, and the one waiting in the container this job claimed, for
    /// its first step that can take one (see `standby`).
    pub standbys: Arc<Standbys>,
    /// (In a mutex only to keep `Job` `Sync`: the job alone touches it, through `&mut`.)
    pub standby: std::sync::Mutex<Option<Standby>>,
    /// The standby of a later step, started in the claimed container while a step runs, and
    /// the user it runs as.
    pub next_standby: Option<(Option<String>, tokio::task::JoinHandle<Option<Standby>>)>,
}

/// A step found started after a restart: its container, or its record in the job's warm
/// container.
pub(crate) enum Adopted {
    Container(Box<bollard::models::ContainerSummary>),
    Exec(ExecRecord),
}

/// A step run by exec in a warm container, found on its record there after a restart
/// (`exec_step.rs` writes and reads the records).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExecRecord {
    /// When it started, Unix seconds.
    pub started_s: u64,
    /// Its exit code, once it has ended.
    pub code: Option<i32>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An epoch-milliseconds deadline as a tokio instant.
pub(crate) fn instant_at(deadline_ms: u64) -> Instant {
    later(
        Instant::now(),
        Duration::from_millis(deadline_ms.saturating_sub(now_ms())),
    )
}

/// `start + wait`, where an absurd `wait` (a "no timeout" `Duration::MAX`) means "in a century".
pub(crate) fn later(start: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start.checked_add(wait.min(CENTURY)).unwrap_or(start)
}

impl Job {
    pub(super) fn base_labels(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (labels::RUNNER.to_string(), self.spec.runner.clone()),
            (labels::JOB.to_string(), self.spec.job_id.to_string()),
        ]);
        if let Some(machine) = &self.endpoint.machine {
            map.insert(labels::MACHINE.to_string(), machine.clone());
        }
        map
    }

    pub(crate) fn labels(&self, role: &str) -> HashMap<String, String> {
        let mut map = self.base_labels();
        map.insert(labels::ROLE.to_string(), role.to_string());
        map
    }
}

/// Resolves with the job's control once it is neither `Run` nor `handled` (a value acted on
/// already); never if nobody can steer the job anymore.
pub(crate) async fn next_control(
    control: &mut watch::Receiver<Control>,
    open: &mut bool,
    handled: Control,
) -> Control {
    loop {
        let current = *control.borrow_and_update();
        if current != Control::Run && current != handled {
            return current;
        }
        if !*open || control.changed().await.is_err() {
            *open = false;
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_timeouts_do_not_overflow() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(instant_at(u64::MAX) > now);
    }
}
